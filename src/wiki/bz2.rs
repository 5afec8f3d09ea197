//! bzip2 decoding with exact compressed offsets in errors: a streaming reader over concatenated
//! streams (plain and multistream dumps read front to back), and a one-stream decoder for the
//! streams a multistream index points at.

use std::io::{self, Read};

use bzip2::{Decompress, Status};

/// Magic at the start of every bzip2 stream (`BZh` + block size digit).
pub fn is_bz2_header(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && &bytes[..3] == b"BZh" && (b'1'..=b'9').contains(&bytes[3])
}

fn data_error(offset: u64, e: bzip2::Error) -> io::Error {
    let what = match e {
        bzip2::Error::DataMagic => "not bzip2 data (bad stream header)",
        bzip2::Error::Data => "corrupt bzip2 data (CRC or block error)",
        _ => "bzip2 decoder error",
    };
    io::Error::new(io::ErrorKind::InvalidData, format!("{what} at byte {offset}"))
}

/// The error for input that ends inside a stream.
pub(super) fn truncated(offset: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("truncated bzip2 stream: input ends at byte {offset} inside a stream (file cut short or corrupt)"),
    )
}

/// Decodes a sequence of concatenated bzip2 streams from `inner`, as `bzip2 -dc` does.
pub struct Bz2Reader<R: Read> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    /// Compressed bytes before `buf[0]`.
    buf_offset: u64,
    decoder: Decompress,
    /// Whether a stream has started and not yet ended.
    in_stream: bool,
}

impl<R: Read> Bz2Reader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Bz2Reader {
            inner,
            buf: vec![0; 1 << 20],
            pos: 0,
            len: 0,
            buf_offset: 0,
            decoder: Decompress::new(false),
            in_stream: false,
        }
    }

    /// Compressed bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.buf_offset + self.pos as u64
    }
}

impl<R: Read> Read for Bz2Reader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos == self.len {
                self.buf_offset += self.len as u64;
                self.pos = 0;
                self.len = self.inner.read(&mut self.buf)?;
                if self.len == 0 {
                    return if self.in_stream { Err(truncated(self.offset())) } else { Ok(0) };
                }
            }
            let (in_before, out_before) = (self.decoder.total_in(), self.decoder.total_out());
            let status = self.decoder.decompress(&self.buf[self.pos..self.len], out);
            let used = (self.decoder.total_in() - in_before) as usize;
            let produced = (self.decoder.total_out() - out_before) as usize;
            let start = self.offset();
            self.pos += used;
            match status {
                Err(e) => return Err(data_error(start, e)),
                Ok(Status::StreamEnd) => {
                    // The next stream, if any, starts right after this one.
                    self.decoder = Decompress::new(false);
                    self.in_stream = false;
                }
                Ok(_) => self.in_stream = self.in_stream || used > 0,
            }
            if produced > 0 {
                return Ok(produced);
            }
        }
    }
}

/// Decodes exactly one bzip2 stream at the start of `data`; returns the decoded bytes and the number of
/// compressed bytes the stream took. `base` is `data`'s offset in the file, for error messages.
pub fn decode_one_stream(data: &[u8], base: u64) -> io::Result<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let used = decode_one_stream_into(data, base, &mut out)?;
    Ok((out, used))
}

/// [`decode_one_stream`] into a reused buffer (cleared first), so hot loops do not fault in fresh pages.
pub fn decode_one_stream_into(data: &[u8], base: u64, out: &mut Vec<u8>) -> io::Result<usize> {
    if !is_bz2_header(data) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("no bzip2 stream starts at byte {base}")));
    }
    out.clear();
    out.reserve(data.len() * 6);
    let mut decoder = Decompress::new(false);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(1 << 16));
        }
        let consumed = decoder.total_in() as usize;
        match decoder.decompress_vec(&data[consumed..], out) {
            Err(e) => return Err(data_error(base + decoder.total_in(), e)),
            Ok(Status::StreamEnd) => return Ok(decoder.total_in() as usize),
            Ok(_) => {
                if decoder.total_in() as usize == data.len() && out.len() < out.capacity() {
                    return Err(truncated(base + data.len() as u64));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bzip2::write::BzEncoder;
    use std::io::Write;

    fn bz(data: &[u8]) -> Vec<u8> {
        let mut e = BzEncoder::new(Vec::new(), bzip2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn reads_concatenated_streams() {
        let mut file = bz(b"hello ");
        file.extend(bz(b"world"));
        let mut s = String::new();
        Bz2Reader::new(&file[..]).read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello world");
        let (one, used) = decode_one_stream(&file, 0).unwrap();
        assert_eq!(one, b"hello ");
        assert!(is_bz2_header(&file[used..]));
    }

    #[test]
    fn truncation_and_corruption_name_the_offset() {
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let file = bz(&data);
        let cut = &file[..file.len() / 2];
        let err = Bz2Reader::new(cut).read_to_end(&mut Vec::new()).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!("truncated bzip2 stream: input ends at byte {} inside", cut.len())),
            "{err}"
        );
        let err = decode_one_stream(cut, 100).unwrap_err();
        assert!(err.to_string().starts_with("truncated bzip2 stream"), "{err}");
        // Small blocks, so a flipped byte in an early block fails its CRC before the input ends.
        let mut e = BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        e.write_all(&data).unwrap();
        let mut bad = e.finish().unwrap();
        let mid = bad.len() / 4;
        bad[mid] ^= 0x55;
        let err = Bz2Reader::new(&bad[..]).read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().starts_with("corrupt bzip2 data"), "{err}");
        let err = Bz2Reader::new(&b"BZh9garbage"[..]).read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("at byte"), "{err}");
        let err = decode_one_stream(b"<xml>", 42).unwrap_err();
        assert_eq!(err.to_string(), "no bzip2 stream starts at byte 42");
    }
}
