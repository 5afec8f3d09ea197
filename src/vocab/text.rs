//! Text inputs of the vocabulary commands: plain text files (one sentence per line) and Parquet
//! text shards (the lines of each record's text), streamed line by line.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::PathBuf;

use indicatif::ProgressBar;

use super::VocabError;
use crate::corpus::{self, TextShardReader};

/// The files behind `paths`: Parquet shard directories and `.parquet` files expand to their
/// shards, anything else is a text file.
pub fn input_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, VocabError> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() || path.extension().is_some_and(|e| e == "parquet") {
            out.extend(corpus::list_shards(path)?);
        } else if path.is_file() {
            out.push(path.clone());
        } else {
            return Err(VocabError::Io {
                path: path.clone(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
    }
    Ok(out)
}

enum Current {
    Text { reader: std::io::BufReader<std::fs::File>, path: PathBuf, line: u64 },
    Shard { reader: TextShardReader, lines: VecDeque<String> },
}

/// Non-empty lines of a list of files, in order; advances `bar` by bytes read.
pub struct Lines {
    files: VecDeque<PathBuf>,
    current: Option<Current>,
    bar: ProgressBar,
}

impl Lines {
    /// Lines of `files` (as given by [`input_files`]).
    pub fn new(files: Vec<PathBuf>, bar: ProgressBar) -> Self {
        Lines { files: files.into(), current: None, bar }
    }

    fn open(&mut self, path: PathBuf) -> Result<(), VocabError> {
        self.current = Some(if path.extension().is_some_and(|e| e == "parquet") {
            self.bar.inc(std::fs::metadata(&path).map_or(0, |m| m.len()));
            Current::Shard { reader: TextShardReader::open(&path)?, lines: VecDeque::new() }
        } else {
            let file = std::fs::File::open(&path).map_err(|source| VocabError::Io { path: path.clone(), source })?;
            Current::Text { reader: std::io::BufReader::new(file), path, line: 0 }
        });
        Ok(())
    }

    fn next_line(&mut self) -> Result<Option<String>, VocabError> {
        loop {
            match &mut self.current {
                None => match self.files.pop_front() {
                    Some(path) => self.open(path)?,
                    None => return Ok(None),
                },
                Some(Current::Text { reader, path, line }) => {
                    let mut buf = String::new();
                    *line += 1;
                    let n = reader.read_line(&mut buf).map_err(|e| VocabError::Input {
                        path: path.clone(),
                        line: *line,
                        message: e.to_string(),
                    })?;
                    if n == 0 {
                        self.current = None;
                        continue;
                    }
                    self.bar.inc(n as u64);
                    let text = buf.trim_end_matches(['\n', '\r']);
                    if !text.is_empty() {
                        return Ok(Some(text.to_string()));
                    }
                }
                Some(Current::Shard { reader, lines }) => {
                    if let Some(l) = lines.pop_front() {
                        return Ok(Some(l));
                    }
                    match reader.next() {
                        Some(rec) => lines.extend(rec?.text.lines().filter(|l| !l.is_empty()).map(String::from)),
                        None => self.current = None,
                    }
                }
            }
        }
    }
}

impl Iterator for Lines {
    type Item = Result<String, VocabError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_line().transpose()
    }
}

/// Total size in bytes of `files` (for progress bars).
pub fn total_bytes(files: &[PathBuf]) -> u64 {
    files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum()
}
