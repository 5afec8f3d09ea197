//! Tokenized training units of one source, spilled to disk between the counting pass and the mixing
//! pass, so every document is tokenized once and memory stays bounded whatever the corpus size.
//! Layout: per unit `len: u32 LE`, `prompt_len: u32 LE`, then `len` ids as u32 LE.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::pack::Unit;
use super::ShardsError;

/// Appends units to a spill file.
pub struct SpillWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl SpillWriter {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> Result<Self, ShardsError> {
        let file = File::create(path).map_err(|source| ShardsError::Io { path: path.into(), source })?;
        Ok(SpillWriter { path: path.into(), out: BufWriter::with_capacity(1 << 20, file) })
    }

    /// Appends one unit.
    pub fn write(&mut self, unit: &Unit) -> Result<(), ShardsError> {
        let mut buf = Vec::with_capacity(8 + 4 * unit.ids.len());
        buf.extend_from_slice(&(unit.ids.len() as u32).to_le_bytes());
        buf.extend_from_slice(&unit.prompt_len.to_le_bytes());
        for id in &unit.ids {
            buf.extend_from_slice(&id.to_le_bytes());
        }
        self.out.write_all(&buf).map_err(|source| ShardsError::Io { path: self.path.clone(), source })
    }

    /// Flushes and closes the file.
    pub fn finish(mut self) -> Result<(), ShardsError> {
        self.out.flush().map_err(|source| ShardsError::Io { path: self.path.clone(), source })
    }
}

/// Reads units back in order.
pub struct SpillReader {
    path: PathBuf,
    input: BufReader<File>,
}

impl SpillReader {
    /// Opens `path` at its start.
    pub fn open(path: &Path) -> Result<Self, ShardsError> {
        let file = File::open(path).map_err(|source| ShardsError::Io { path: path.into(), source })?;
        Ok(SpillReader { path: path.into(), input: BufReader::with_capacity(1 << 20, file) })
    }

    /// The next unit into `unit` (reusing its buffer); false at the end.
    pub fn read(&mut self, unit: &mut Unit) -> Result<bool, ShardsError> {
        let io = |source| ShardsError::Io { path: self.path.clone(), source };
        let mut head = [0u8; 8];
        match self.input.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(io(e)),
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        unit.prompt_len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let mut bytes = vec![0u8; 4 * len];
        self.input.read_exact(&mut bytes).map_err(io)?;
        unit.ids.clear();
        unit.ids.extend(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.spill");
        let units = [Unit { ids: vec![1, u32::MAX, 7], prompt_len: 2 }, Unit { ids: vec![], prompt_len: 0 }];
        let mut w = SpillWriter::create(&p).unwrap();
        for u in &units {
            w.write(u).unwrap();
        }
        w.finish().unwrap();
        let mut r = SpillReader::open(&p).unwrap();
        let mut u = Unit::default();
        for want in &units {
            assert!(r.read(&mut u).unwrap());
            assert_eq!(&u, want);
        }
        assert!(!r.read(&mut u).unwrap());
    }
}
