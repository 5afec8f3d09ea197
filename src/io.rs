//! Small file-system helpers shared by every stage: atomic writes and `i/N` shard specs.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Suffix of files being written; a file with it is never a finished output.
pub const TMP_SUFFIX: &str = ".tmp";

/// The temporary name a file is written under before [`commit`] renames it.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

/// Flushes `file` to disk and renames `tmp` to `path`, so a crash never leaves a finished-looking file.
pub fn commit(file: File, tmp: &Path, path: &Path) -> io::Result<()> {
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)
}

/// Writes `bytes` to `path` atomically (temporary name, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    commit(file, &tmp, path)
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub fn read_up_to(r: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// `--shard i/N`: this process handles part `k` when `k % N == i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardSpec {
    /// This shard's index, `0..count`.
    pub index: u32,
    /// How many shards split the work.
    pub count: u32,
}

impl ShardSpec {
    /// The whole input in one shard.
    pub const WHOLE: ShardSpec = ShardSpec { index: 0, count: 1 };

    /// Whether work unit `k` belongs to this shard.
    pub fn owns(&self, k: u64) -> bool {
        k % u64::from(self.count) == u64::from(self.index)
    }

    /// True for `0/1`.
    pub fn is_whole(&self) -> bool {
        self.count == 1
    }
}

impl FromStr for ShardSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid shard '{s}': expected i/N with 0 <= i < N, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(ShardSpec { index, count })
    }
}

impl std::fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Every file under `dir` (recursively), sorted.
pub fn files_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Memory the kernel says can be used now without swapping (`MemAvailable` of /proc/meminfo), in bytes;
/// `None` where that file does not exist (not Linux).
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A toml error as one line, `line L, column C: message` (toml's own text spans several lines with a
/// source excerpt); `text` is the document that was parsed.
pub fn toml_error(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {msg}")
        }
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_spec_parses_and_rejects() {
        assert_eq!("1/4".parse::<ShardSpec>(), Ok(ShardSpec { index: 1, count: 4 }));
        for bad in ["4/4", "1", "a/2", "0/0", "-1/2"] {
            let err = bad.parse::<ShardSpec>().unwrap_err();
            assert!(err.contains("expected i/N"), "{bad}: {err}");
        }
        let s = ShardSpec { index: 1, count: 3 };
        assert_eq!((0..7).filter(|k| s.owns(*k)).collect::<Vec<_>>(), vec![1, 4]);
    }

    #[test]
    fn write_atomic_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"{}").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"{}");
        assert!(!tmp_path(&p).exists());
    }
}
