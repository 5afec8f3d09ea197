//! The multistream index (`*-multistream-index.txt.bz2`): lines `OFFSET:PAGEID:TITLE`, where OFFSET is
//! the byte offset of the bzip2 stream holding the page. Grouped here into streams in file order.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::bz2::{is_bz2_header, Bz2Reader};

/// A malformed or unreadable index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Reading failed (including bzip2 errors, which carry their byte offset).
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A line does not have the `OFFSET:PAGEID:TITLE` shape or breaks the order.
    #[error("{path}:{line}: {msg}")]
    Line { path: PathBuf, line: u64, msg: String },
    /// The index holds no lines.
    #[error("{path}: empty index (expected lines OFFSET:PAGEID:TITLE)")]
    Empty { path: PathBuf },
}

/// One bzip2 stream of the dump and the pages it holds, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexStream {
    /// Byte offset of the stream in the dump.
    pub offset: u64,
    /// Ordinal (0-based position in the dump) of the stream's first page.
    pub first_ordinal: u64,
    /// Page ids, in order.
    pub page_ids: Vec<u64>,
}

/// The index of a multistream dump, grouped by stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultistreamIndex {
    /// Streams in file order.
    pub streams: Vec<IndexStream>,
}

impl MultistreamIndex {
    /// Reads an index file, bzip2-compressed (detected by its magic) or plain text.
    pub fn read(path: &Path) -> Result<Self, IndexError> {
        let io_err = |source| IndexError::Io { path: path.into(), source };
        let mut file = std::fs::File::open(path).map_err(io_err)?;
        let mut magic = [0u8; 4];
        let n = crate::io::read_up_to(&mut file, &mut magic).map_err(io_err)?;
        let head = std::io::Cursor::new(magic[..n].to_vec()).chain(file);
        let reader: Box<dyn Read> =
            if is_bz2_header(&magic[..n]) { Box::new(Bz2Reader::new(head)) } else { Box::new(head) };
        Self::parse(BufReader::with_capacity(1 << 20, reader), path)
    }

    fn parse(reader: impl BufRead, path: &Path) -> Result<Self, IndexError> {
        let mut streams: Vec<IndexStream> = Vec::new();
        let mut ordinal = 0u64;
        for (i, line) in reader.split(b'\n').enumerate() {
            let line_no = i as u64 + 1;
            let line = line.map_err(|source| IndexError::Io { path: path.into(), source })?;
            let bad = |msg: String| IndexError::Line { path: path.into(), line: line_no, msg };
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if line.is_empty() {
                continue;
            }
            let mut parts = line.splitn(3, |&b| b == b':');
            let (Some(off), Some(id), Some(_title)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad(format!("expected OFFSET:PAGEID:TITLE, found '{}'", String::from_utf8_lossy(line))));
            };
            let num = |field: &[u8], what: &str| -> Result<u64, IndexError> {
                std::str::from_utf8(field)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad(format!("{what} '{}' is not a number", String::from_utf8_lossy(field))))
            };
            let offset = num(off, "offset")?;
            let page_id = num(id, "page id")?;
            match streams.last_mut() {
                Some(s) if s.offset == offset => s.page_ids.push(page_id),
                Some(s) if s.offset > offset => {
                    return Err(bad(format!("offset {offset} is smaller than the previous line's {}", s.offset)));
                }
                _ => streams.push(IndexStream { offset, first_ordinal: ordinal, page_ids: vec![page_id] }),
            }
            ordinal += 1;
        }
        if streams.is_empty() {
            return Err(IndexError::Empty { path: path.into() });
        }
        Ok(MultistreamIndex { streams })
    }

    /// Number of pages the index lists.
    pub fn pages(&self) -> u64 {
        self.streams.iter().map(|s| s.page_ids.len() as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<MultistreamIndex, IndexError> {
        MultistreamIndex::parse(s.as_bytes(), Path::new("idx.txt"))
    }

    #[test]
    fn groups_pages_by_stream_and_keeps_colons_in_titles() {
        let idx = parse("597:5:Kedi\n597:8:Kediler\n4165:40:Ar-Ge &amp; Tasarım\n4165:41:Masal: Üç Elma\n").unwrap();
        assert_eq!(idx.streams.len(), 2);
        assert_eq!(idx.streams[1], IndexStream { offset: 4165, first_ordinal: 2, page_ids: vec![40, 41] });
        assert_eq!(idx.pages(), 4);
    }

    #[test]
    fn rejects_bad_lines_with_line_numbers() {
        assert_eq!(
            parse("597:5:Kedi\nxyz\n").unwrap_err().to_string(),
            "idx.txt:2: expected OFFSET:PAGEID:TITLE, found 'xyz'"
        );
        assert_eq!(parse("5x:5:Kedi\n").unwrap_err().to_string(), "idx.txt:1: offset '5x' is not a number");
        assert_eq!(
            parse("900:5:A\n100:6:B\n").unwrap_err().to_string(),
            "idx.txt:2: offset 100 is smaller than the previous line's 900"
        );
        assert_eq!(parse("\n").unwrap_err().to_string(), "idx.txt: empty index (expected lines OFFSET:PAGEID:TITLE)");
    }
}
