//! Byte-order marks and UTF-16 → UTF-8 transcoding, so UTF-16 dumps go through the UTF-8 parser.

use std::io::{self, Read};

/// The text encoding a dump starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    /// UTF-8, with or without BOM.
    Utf8,
    /// UTF-16 little endian (BOM `FF FE`).
    Utf16Le,
    /// UTF-16 big endian (BOM `FE FF`).
    Utf16Be,
}

/// Detects the encoding from the first bytes; returns it and the BOM length to skip.
pub fn detect(start: &[u8]) -> (TextEncoding, usize) {
    match start {
        [0xEF, 0xBB, 0xBF, ..] => (TextEncoding::Utf8, 3),
        [0xFF, 0xFE, ..] => (TextEncoding::Utf16Le, 2),
        [0xFE, 0xFF, ..] => (TextEncoding::Utf16Be, 2),
        _ => (TextEncoding::Utf8, 0),
    }
}

fn is_high_surrogate(u: u16) -> bool {
    (0xD800..0xDC00).contains(&u)
}

/// Appends the UTF-8 form of UTF-16 code units to `out` (unpaired surrogates become U+FFFD).
fn push_units(units: &[u16], out: &mut Vec<u8>) {
    let mut tmp = [0u8; 4];
    for c in char::decode_utf16(units.iter().copied()) {
        out.extend_from_slice(c.unwrap_or(char::REPLACEMENT_CHARACTER).encode_utf8(&mut tmp).as_bytes());
    }
}

fn units(bytes: &[u8], le: bool) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|p| if le { u16::from_le_bytes([p[0], p[1]]) } else { u16::from_be_bytes([p[0], p[1]]) })
        .collect()
}

/// Transcodes a whole UTF-16 buffer (no BOM) to UTF-8.
pub fn utf16_to_utf8(bytes: &[u8], le: bool) -> io::Result<Vec<u8>> {
    if bytes.len() % 2 != 0 {
        return Err(odd_length());
    }
    let mut out = Vec::with_capacity(bytes.len());
    push_units(&units(bytes, le), &mut out);
    Ok(out)
}

fn odd_length() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "UTF-16 input has an odd number of bytes")
}

/// A reader that turns a UTF-16 byte stream (BOM already consumed) into UTF-8.
pub struct Utf16Reader<R: Read> {
    inner: R,
    le: bool,
    raw: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    eof: bool,
}

impl<R: Read> Utf16Reader<R> {
    /// Wraps `inner`; `le` selects little endian.
    pub fn new(inner: R, le: bool) -> Self {
        Utf16Reader { inner, le, raw: Vec::new(), out: Vec::new(), out_pos: 0, eof: false }
    }

    fn fill(&mut self) -> io::Result<()> {
        let old = self.raw.len();
        self.raw.resize(old + (1 << 16), 0);
        let n = self.inner.read(&mut self.raw[old..])?;
        self.raw.truncate(old + n);
        self.eof = n == 0;
        let mut u = units(&self.raw, self.le);
        // A high surrogate at the end may pair with the next read's first unit.
        if !self.eof && u.last().is_some_and(|&x| is_high_surrogate(x)) {
            u.pop();
        }
        self.out.clear();
        self.out_pos = 0;
        push_units(&u, &mut self.out);
        self.raw.drain(..u.len() * 2);
        if self.eof && !self.raw.is_empty() {
            return Err(odd_length());
        }
        Ok(())
    }
}

impl<R: Read> Read for Utf16Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.out_pos == self.out.len() {
            if self.eof {
                return Ok(0);
            }
            self.fill()?;
        }
        let n = buf.len().min(self.out.len() - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcodes_both_endians_and_surrogates() {
        let text = "<title>Işık 😺 中</title>";
        for le in [true, false] {
            let bytes: Vec<u8> =
                text.encode_utf16().flat_map(|u| if le { u.to_le_bytes() } else { u.to_be_bytes() }).collect();
            assert_eq!(utf16_to_utf8(&bytes, le).unwrap(), text.as_bytes());
            // One byte at a time: surrogate pairs split across reads still decode.
            let slow = ByteByByte(&bytes[..], 0);
            let mut out = String::new();
            Utf16Reader::new(slow, le).read_to_string(&mut out).unwrap();
            assert_eq!(out, text);
        }
        assert_eq!(detect(&[0xFF, 0xFE, b'<', 0]), (TextEncoding::Utf16Le, 2));
        assert_eq!(detect(b"<m"), (TextEncoding::Utf8, 0));
        assert!(utf16_to_utf8(&[1, 2, 3], true).is_err());
    }

    struct ByteByByte<'a>(&'a [u8], usize);
    impl Read for ByteByByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.1 >= self.0.len() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[self.1];
            self.1 += 1;
            Ok(1)
        }
    }
}
