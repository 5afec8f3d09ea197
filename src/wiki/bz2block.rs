//! Parallel decoding of a bzip2 file read front to back, as lbzip2 does: blocks are found by their
//! 48-bit magic at any bit offset, each is re-wrapped as a one-block stream (header, block, end marker
//! with the block's CRC as the stream CRC) and decoded on its own thread; output comes in file order.
//! Every block's CRC is checked before its bytes are handed on, so corrupt data never reaches the parser.

use std::fs::File;
use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use indicatif::ProgressBar;
use memchr::memmem;

use super::bz2::{decode_one_stream_into, truncated};

/// The 48-bit magic that starts every compressed block (BCD pi).
const BLOCK_MAGIC: u64 = 0x3141_5926_5359;
/// The 48-bit magic of the end-of-stream marker (BCD sqrt(pi)).
const END_MAGIC: u64 = 0x1772_4538_5090;
/// Compressed bytes read at a time.
const READ_BYTES: usize = 8 << 20;

/// One compressed block: `bytes` hold its bits from bit `first_bit` of `bytes[0]`, `bits` long.
pub struct Block {
    bytes: Vec<u8>,
    first_bit: u32,
    bits: u64,
    level: u8,
    /// File offset of the byte holding the block's first bit, for error messages.
    offset: u64,
}

/// Where the scanner is in the bzip2 grammar.
enum Expect {
    /// A stream header `BZh1`..`BZh9` at this byte, or the end of the file.
    StreamHeader(u64),
    /// A block or end-of-stream magic at this bit.
    Marker(u64),
}

/// Splits a bzip2 file (one or more streams) into its blocks, reading it once front to back.
pub struct BlockScanner<R: Read> {
    inner: R,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
    level: u8,
    expect: Expect,
    done: bool,
}

impl<R: Read> BlockScanner<R> {
    /// Scans `inner` from its start.
    pub fn new(inner: R) -> Self {
        BlockScanner {
            inner,
            buf: Vec::new(),
            base: 0,
            eof: false,
            level: 9,
            expect: Expect::StreamHeader(0),
            done: false,
        }
    }

    /// Reads more input; drops bytes before `keep_from` (a file offset) first.
    fn fill(&mut self, keep_from: u64) -> io::Result<()> {
        let drop = (keep_from.saturating_sub(self.base) as usize).min(self.buf.len());
        self.buf.drain(..drop);
        self.base += drop as u64;
        let old = self.buf.len();
        self.buf.resize(old + READ_BYTES, 0);
        let n = crate::io::read_up_to(&mut self.inner, &mut self.buf[old..])?;
        self.buf.truncate(old + n);
        self.eof = n < READ_BYTES;
        Ok(())
    }

    /// The 48 bits at file bit `bit`, if buffered.
    fn bits48(&self, bit: u64) -> Option<u64> {
        let byte = (bit / 8).checked_sub(self.base)? as usize;
        let window = self.buf.get(byte..byte + 7)?;
        let mut w = [0u8; 8];
        w[..7].copy_from_slice(window);
        Some((u64::from_be_bytes(w) >> (16 - bit % 8)) & 0xFFFF_FFFF_FFFF)
    }

    /// Whether a block magic at `bit` is followed by a plausible header: after the 32-bit CRC, the
    /// "randomised" bit is 0 (bzip2 ≥ 0.9.5 never sets it) and the 24-bit origPtr is below the block
    /// size, which makes a false magic inside compressed data ~40 times rarer still.
    fn plausible_block(&self, bit: u64) -> bool {
        self.bits48(bit + 80).is_some_and(|v| v >> 47 == 0 && (v >> 23) & 0xFF_FFFF < u64::from(self.level) * 100_000)
    }

    /// The first block or end magic strictly after file bit `after`, searching what is buffered.
    /// Searches windows of growing size, so the work is proportional to the distance to the marker
    /// (about one block), not to the whole read-ahead buffer, for each of the 16 magic/shift patterns.
    fn next_marker(&self, after: u64) -> Option<u64> {
        let from = (after / 8 - self.base) as usize;
        let hay = self.buf.get(from..)?;
        let (mut lo, mut width) = (0, 1 << 18);
        while lo < hay.len() {
            let hi = (lo + width).min(hay.len());
            if let Some(bit) = self.first_marker_in(hay, from, lo, hi, after) {
                return Some(bit);
            }
            (lo, width) = (hi, width * 2);
        }
        None
    }

    /// The earliest verified marker whose 7-byte window starts at `hay[w]` with `lo <= w < hi`.
    fn first_marker_in(&self, hay: &[u8], from: usize, lo: usize, hi: usize, after: u64) -> Option<u64> {
        let mut best: Option<u64> = None;
        for magic in [BLOCK_MAGIC, END_MAGIC] {
            for shift in 0..8u32 {
                // The magic placed at bit `shift` of a 7-byte window: its bytes 1..=5 are entirely magic.
                let window = (magic << (16 - shift)).to_be_bytes();
                let inner = &window[1..6];
                let slice = &hay[lo..(hi + 6).min(hay.len())];
                // A match at 0 would put the window before `lo`: the previous window covered it.
                for at in memmem::find_iter(slice, inner).filter(|&at| at > 0) {
                    let w = lo + at - 1;
                    if w >= hi {
                        break;
                    }
                    let bit = (self.base + (from + w) as u64) * 8 + u64::from(shift);
                    let plausible = magic == END_MAGIC || self.plausible_block(bit);
                    if bit > after && self.bits48(bit) == Some(magic) && plausible {
                        best = Some(best.map_or(bit, |b| b.min(bit)));
                        break;
                    }
                }
            }
        }
        best
    }

    fn step(&mut self) -> io::Result<Option<Block>> {
        loop {
            match self.expect {
                Expect::StreamHeader(at) => {
                    let rel = (at - self.base) as usize;
                    if self.buf.len() < rel + 4 && !self.eof {
                        self.fill(at)?;
                        continue;
                    }
                    let rel = (at - self.base) as usize;
                    let rest = &self.buf[rel.min(self.buf.len())..];
                    if rest.is_empty() {
                        return Ok(None);
                    }
                    if !super::bz2::is_bz2_header(rest) {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("not bzip2 data (bad stream header) at byte {at}"),
                        ));
                    }
                    self.level = rest[3] - b'0';
                    self.expect = Expect::Marker((at + 4) * 8);
                }
                Expect::Marker(bit) => {
                    let Some(magic) = self.bits48(bit) else {
                        if self.eof {
                            return Err(truncated(self.base + self.buf.len() as u64));
                        }
                        self.fill(bit / 8)?;
                        continue;
                    };
                    if magic == END_MAGIC {
                        // 48-bit magic, 32-bit stream CRC, then padding to a byte.
                        let end = bit + 80;
                        if (end.div_ceil(8) - self.base) as usize > self.buf.len() {
                            if self.eof {
                                return Err(truncated(self.base + self.buf.len() as u64));
                            }
                            self.fill(bit / 8)?;
                            continue;
                        }
                        self.expect = Expect::StreamHeader(end.div_ceil(8));
                        continue;
                    }
                    if magic != BLOCK_MAGIC {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("corrupt bzip2 data (no block or end marker) at byte {}", bit / 8),
                        ));
                    }
                    let Some(next) = self.next_marker(bit + 48) else {
                        if self.eof {
                            return Err(truncated(self.base + self.buf.len() as u64));
                        }
                        self.fill(bit / 8)?;
                        continue;
                    };
                    let first = (bit / 8 - self.base) as usize;
                    let last = (next.div_ceil(8) - self.base) as usize;
                    let block = Block {
                        bytes: self.buf[first..last].to_vec(),
                        first_bit: (bit % 8) as u32,
                        bits: next - bit,
                        level: self.level,
                        offset: bit / 8,
                    };
                    self.expect = Expect::Marker(next);
                    return Ok(Some(block));
                }
            }
        }
    }
}

impl<R: Read> Iterator for BlockScanner<R> {
    type Item = io::Result<Block>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.step().transpose();
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}

/// Appends bits MSB first.
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn bits(&mut self, value: u64, count: u32) {
        for i in (0..count).rev() {
            self.acc = (self.acc << 1) | ((value >> i) & 1);
            self.n += 1;
            if self.n == 8 {
                self.out.push(self.acc as u8);
                self.acc = 0;
                self.n = 0;
            }
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push((self.acc << (8 - self.n)) as u8);
        }
        self.out
    }
}

/// Decodes one block by wrapping it as a one-block stream; the block CRC is checked by the decoder.
pub fn decode_block(block: &Block, out: &mut Vec<u8>) -> io::Result<()> {
    let s = block.first_bit;
    let b = &block.bytes;
    // The block's bits realigned to byte 0.
    let at = |i: usize| -> u8 {
        let hi = b.get(i).copied().unwrap_or(0) << s;
        let lo = if s == 0 { 0 } else { b.get(i + 1).copied().unwrap_or(0) >> (8 - s) };
        hi | lo
    };
    let full = (block.bits / 8) as usize;
    let mut w = BitWriter { out: Vec::with_capacity(full + 20), acc: 0, n: 0 };
    w.out.extend_from_slice(&[b'B', b'Z', b'h', b'0' + block.level]);
    w.out.extend((0..full).map(at));
    let rest = (block.bits % 8) as u32;
    w.bits(u64::from(at(full) >> (8 - rest.max(1))) * u64::from(rest > 0), rest);
    // A one-block stream's CRC is the block's CRC, stored right after the block magic.
    let crc = u64::from(u32::from_be_bytes([at(6), at(7), at(8), at(9)]));
    w.bits(END_MAGIC, 48);
    w.bits(crc, 32);
    let stream = w.finish();
    decode_one_stream_into(&stream, block.offset, out).map(|_| ()).map_err(|_| {
        // Offsets inside the re-wrapped stream mean nothing to the user: name the block instead.
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("corrupt bzip2 data (CRC or block error) in the block at byte {}", block.offset),
        )
    })
}

/// Reads decoded bytes of a bzip2 file whose blocks are decoded in parallel on `threads` threads.
pub struct ParallelBz2Reader {
    rx: Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
    worker: Option<JoinHandle<()>>,
}

impl ParallelBz2Reader {
    /// Starts decoding `file` in the background.
    pub fn new(file: File, threads: usize, bar: ProgressBar) -> Self {
        let lookahead = 4 * threads.max(1);
        let (tx, rx) = sync_channel(lookahead);
        let worker = std::thread::spawn(move || {
            let scanner = BlockScanner::new(file);
            let result = crate::parallel::ordered_map(
                scanner,
                threads,
                lookahead,
                |block| {
                    let mut out = Vec::new();
                    decode_block(&block, &mut out).map(|()| (out, block.bits / 8))
                },
                |(bytes, compressed)| {
                    // Progress counts compressed bytes as their text is handed on, not as they are read ahead.
                    bar.inc(compressed);
                    tx.send(Ok(bytes)).map_err(|_| io::Error::other("reader dropped"))
                },
            );
            if let Err(e) = result {
                let _ = tx.send(Err(e));
            }
        });
        ParallelBz2Reader { rx, current: Vec::new(), pos: 0, worker: Some(worker) }
    }
}

impl Read for ParallelBz2Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.recv() {
                Ok(Ok(bytes)) => {
                    self.current = bytes;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    if let Some(w) = self.worker.take() {
                        let _ = w.join();
                    }
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn bz(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn data(n: usize) -> Vec<u8> {
        let mut x = 1u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"abcdefghij klmnopq\n<>&"[(x % 22) as usize]
            })
            .collect()
    }

    fn decode(file: &[u8], threads: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), file).unwrap();
        let f = File::open(tmp.path()).unwrap();
        ParallelBz2Reader::new(f, threads, ProgressBar::hidden()).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn many_blocks_and_streams_decode_like_bzip2() {
        // Level 1 = 100 kB blocks: a dozen blocks, their magics at every bit offset.
        let a = data(1_300_000);
        let mut file = bz(&a, 1);
        let b = data(250_000);
        file.extend(bz(&b, 9));
        file.extend(bz(b"", 5));
        let blocks = BlockScanner::new(&file[..]).collect::<io::Result<Vec<_>>>().unwrap();
        assert!(blocks.len() >= 14, "{}", blocks.len());
        assert!(blocks.iter().map(|b| b.first_bit).collect::<std::collections::BTreeSet<_>>().len() > 3);
        let mut want = a.clone();
        want.extend(&b);
        for threads in [1, 3] {
            assert!(decode(&file, threads).unwrap() == want, "threads {threads}");
        }
    }

    #[test]
    fn corruption_and_truncation_are_errors_with_offsets() {
        let file = bz(&data(500_000), 1);
        let mut bad = file.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x10;
        let err = decode(&bad, 2).unwrap_err().to_string();
        let at: u64 =
            err.strip_prefix("corrupt bzip2 data (CRC or block error) in the block at byte ").unwrap().parse().unwrap();
        assert!(at <= mid as u64 && mid as u64 - at < 200_000, "{err}");
        let cut = &file[..file.len() - 30];
        let err = decode(cut, 2).unwrap_err().to_string();
        assert!(err.starts_with("truncated bzip2 stream"), "{err}");
        let err = decode(b"BZh9nonsense-nonsense", 1).unwrap_err().to_string();
        assert_eq!(err, "corrupt bzip2 data (no block or end marker) at byte 4");
        let err = decode(&[file.clone(), b"trailing".to_vec()].concat(), 1).unwrap_err().to_string();
        assert_eq!(err, format!("not bzip2 data (bad stream header) at byte {}", file.len()));
    }
}
