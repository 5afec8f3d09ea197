//! Instruction records (DESIGN.md "Data contracts") and streaming readers for the Alpaca formats:
//! a JSON array (`alpaca_data.json`), JSON lines, or Parquet with `instruction`/`input`/`output` columns.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use arrow::array::{Array, Int64Array, LargeStringArray, RecordBatch, StringArray};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde::{Deserialize, Serialize};

use super::InstructError;
use crate::corpus::DocId;

/// One instruction record as written to JSONL: the three Alpaca fields plus language and provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstructRecord {
    /// The input record's own `id`, or its index in the input (0-based).
    pub id: DocId,
    /// The task.
    pub instruction: String,
    /// Optional context for the task (may be empty).
    pub input: String,
    /// The answer.
    pub output: String,
    /// Language code of the texts.
    pub lang: String,
    /// Where the record came from (`FILE:INDEX` of the source record), for derived records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// Who translated it: `backend` or `backend:model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translator: Option<String>,
}

/// A record read from an input file, before translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// Position in the input (0-based).
    pub index: u64,
    /// The record's own `id`, or `index`.
    pub id: DocId,
    /// `instruction`, `input`, `output`.
    pub fields: [String; 3],
}

/// Names of the three translated fields, in [`SourceRecord::fields`] order.
pub const FIELDS: [&str; 3] = ["instruction", "input", "output"];

/// What one JSON record must hold; other keys (`lang`, `source_id`, ...) are ignored.
#[derive(Deserialize)]
struct RawRecord {
    #[serde(default)]
    id: Option<DocId>,
    instruction: String,
    #[serde(default)]
    input: Option<String>,
    output: String,
}

/// Streams the records of an Alpaca file: JSON array, JSON lines or Parquet (by content, not name).
pub struct RecordReader {
    path: PathBuf,
    index: u64,
    inner: Inner,
    /// An error was returned: the reader ends there (a broken array cannot be resynchronized).
    failed: bool,
}

enum Inner {
    Array(JsonArray<BufReader<File>>),
    Lines { lines: std::io::Lines<BufReader<File>>, line: u64 },
    Parquet { reader: ParquetRecordBatchReader, batch: Option<RecordBatch>, row: usize },
}

impl RecordReader {
    /// Opens `path` and tells the format from its first bytes (`PAR1`, `[` or `{`).
    pub fn open(path: &Path) -> Result<Self, InstructError> {
        let io = |source| InstructError::Io { path: path.into(), source };
        let mut file = BufReader::new(File::open(path).map_err(io)?);
        let head = file.fill_buf().map_err(io)?;
        let inner = if head.starts_with(b"PAR1") {
            let file = File::open(path).map_err(io)?;
            let pq = |e: parquet::errors::ParquetError| InstructError::Format { path: path.into(), msg: e.to_string() };
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq)?;
            for name in ["instruction", "output"] {
                if builder.schema().field_with_name(name).is_err() {
                    return Err(InstructError::Format {
                        path: path.into(),
                        msg: format!(
                            "Parquet file has no '{name}' column (need instruction, output, optional input and id)"
                        ),
                    });
                }
            }
            Inner::Parquet { reader: builder.with_batch_size(1024).build().map_err(pq)?, batch: None, row: 0 }
        } else {
            let first = head.iter().copied().find(|b| !b.is_ascii_whitespace() && !matches!(b, 0xEF | 0xBB | 0xBF));
            match first {
                Some(b'[') => Inner::Array(JsonArray::new(file)),
                Some(b'{') => Inner::Lines { lines: file.lines(), line: 0 },
                _ => {
                    return Err(InstructError::Format {
                        path: path.into(),
                        msg: "not an Alpaca file: expected a JSON array, JSON lines or Parquet".into(),
                    })
                }
            }
        };
        Ok(RecordReader { path: path.into(), index: 0, inner, failed: false })
    }

    fn bad(&self, at: String, msg: impl std::fmt::Display) -> InstructError {
        InstructError::Record { path: self.path.clone(), at, msg: msg.to_string() }
    }

    fn record_from(&mut self, raw: RawRecord) -> SourceRecord {
        let index = self.index;
        self.index += 1;
        SourceRecord {
            index,
            id: raw.id.unwrap_or(DocId::Int(index as i64)),
            fields: [raw.instruction, raw.input.unwrap_or_default(), raw.output],
        }
    }

    fn next_json(&mut self) -> Option<Result<SourceRecord, InstructError>> {
        let (at, bytes) = match &mut self.inner {
            Inner::Array(a) => match a.next_element() {
                Ok(None) => return None,
                Ok(Some((offset, bytes))) => (format!("record {} (byte {offset})", self.index), bytes),
                Err((offset, msg)) => return Some(Err(self.bad(format!("byte {offset}"), msg))),
            },
            Inner::Lines { lines, line } => loop {
                *line += 1;
                match lines.next()? {
                    Ok(l) if l.trim().is_empty() => continue,
                    Ok(l) => break (format!("line {line}"), l.into_bytes()),
                    Err(source) => return Some(Err(InstructError::Io { path: self.path.clone(), source })),
                }
            },
            Inner::Parquet { .. } => unreachable!("parquet is read by next_parquet"),
        };
        Some(match serde_json::from_slice::<RawRecord>(&bytes) {
            Ok(raw) => Ok(self.record_from(raw)),
            Err(e) => Err(self.bad(at, e)),
        })
    }

    fn next_parquet(&mut self) -> Option<Result<SourceRecord, InstructError>> {
        let Inner::Parquet { reader, batch, row } = &mut self.inner else { unreachable!("checked by next") };
        loop {
            if let Some(b) = batch.as_ref().filter(|b| *row < b.num_rows()) {
                let r = parquet_row(b, *row);
                *row += 1;
                let at = format!("row {}", self.index);
                return Some(r.map(|raw| self.record_from(raw)).map_err(|m| self.bad(at, m)));
            }
            match reader.next()? {
                Ok(b) => (*batch, *row) = (Some(b), 0),
                Err(e) => return Some(Err(InstructError::Format { path: self.path.clone(), msg: e.to_string() })),
            }
        }
    }
}

impl Iterator for RecordReader {
    type Item = Result<SourceRecord, InstructError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = match self.inner {
            Inner::Parquet { .. } => self.next_parquet(),
            _ => self.next_json(),
        };
        self.failed = matches!(item, Some(Err(_)));
        item
    }
}

fn parquet_row(batch: &RecordBatch, i: usize) -> Result<RawRecord, String> {
    let text = |name: &str| -> Result<Option<String>, String> {
        let Some(col) = batch.column_by_name(name) else { return Ok(None) };
        if col.is_null(i) {
            return Ok(None);
        }
        if let Some(a) = col.as_any().downcast_ref::<StringArray>() {
            Ok(Some(a.value(i).to_string()))
        } else if let Some(a) = col.as_any().downcast_ref::<LargeStringArray>() {
            Ok(Some(a.value(i).to_string()))
        } else {
            Err(format!("column '{name}' is {}, expected utf8", col.data_type()))
        }
    };
    let id = match batch.column_by_name("id") {
        Some(col) if !col.is_null(i) => match col.as_any().downcast_ref::<Int64Array>() {
            Some(a) => Some(DocId::Int(a.value(i))),
            None => Some(DocId::Str(text("id")?.unwrap_or_default())),
        },
        _ => None,
    };
    let required = |name: &str| text(name)?.ok_or_else(|| format!("'{name}' is null"));
    Ok(RawRecord { id, instruction: required("instruction")?, input: text("input")?, output: required("output")? })
}

/// The next array element (start offset, bytes), `None` at the end, or (offset, message).
type Element = Result<Option<(u64, Vec<u8>)>, (u64, String)>;

/// Splits a top-level JSON array into the bytes of its elements without holding the whole array,
/// so a 22 MB `alpaca_data.json` (or a much bigger one) streams with one record in memory.
struct JsonArray<R> {
    r: R,
    /// Bytes consumed so far (for error offsets).
    offset: u64,
    /// `[` seen / final `]` seen.
    opened: bool,
    done: bool,
}

impl<R: BufRead> JsonArray<R> {
    fn new(r: R) -> Self {
        JsonArray { r, offset: 0, opened: false, done: false }
    }

    /// Next byte that is not whitespace (or a UTF-8 BOM at the start), not consumed.
    fn peek_token(&mut self) -> Result<Option<u8>, (u64, String)> {
        loop {
            let buf = self.r.fill_buf().map_err(|e| (self.offset, e.to_string()))?;
            let Some(&b) = buf.first() else { return Ok(None) };
            let bom = self.offset < 3 && matches!(b, 0xEF | 0xBB | 0xBF);
            if !(b.is_ascii_whitespace() || bom) {
                return Ok(Some(b));
            }
            self.r.consume(1);
            self.offset += 1;
        }
    }

    fn expect(&mut self, what: &str) -> Result<u8, (u64, String)> {
        let b = self.peek_token()?.ok_or_else(|| (self.offset, format!("unexpected end of file, expected {what}")))?;
        Ok(b)
    }

    /// The next element's start offset and bytes, or `None` after the closing `]`.
    fn next_element(&mut self) -> Element {
        if self.done {
            return Ok(None);
        }
        if !self.opened {
            if self.expect("'['")? != b'[' {
                return Err((self.offset, "expected '[' (a JSON array of records)".into()));
            }
            self.r.consume(1);
            self.offset += 1;
            self.opened = true;
            if self.expect("a record or ']'")? == b']' {
                return self.close();
            }
        }
        let first = self.expect("a record")?;
        let start = self.offset;
        if first != b'{' {
            return Err((start, "expected a JSON object (a record with instruction, input, output)".into()));
        }
        let mut out = Vec::new();
        let (mut depth, mut in_str, mut escaped) = (0u32, false, false);
        'scan: loop {
            let buf = self.r.fill_buf().map_err(|e| (self.offset, e.to_string()))?;
            if buf.is_empty() {
                return Err((start, "unexpected end of file inside a record".into()));
            }
            let mut used = buf.len();
            for (k, &b) in buf.iter().enumerate() {
                if in_str {
                    match (escaped, b) {
                        (true, _) => escaped = false,
                        (false, b'\\') => escaped = true,
                        (false, b'"') => in_str = false,
                        _ => {}
                    }
                    continue;
                }
                match b {
                    b'"' => in_str = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            used = k + 1;
                            out.extend_from_slice(&buf[..used]);
                            self.r.consume(used);
                            self.offset += used as u64;
                            break 'scan;
                        }
                    }
                    _ => {}
                }
            }
            out.extend_from_slice(&buf[..used]);
            self.r.consume(used);
            self.offset += used as u64;
        }
        match self.expect("',' or ']'")? {
            b',' => {
                self.r.consume(1);
                self.offset += 1;
            }
            b']' => {
                self.close()?;
            }
            _ => return Err((self.offset, "expected ',' or ']' after a record".into())),
        }
        Ok(Some((start, out)))
    }

    /// Consumes the closing `]` and checks nothing but whitespace follows.
    fn close(&mut self) -> Element {
        self.r.consume(1);
        self.offset += 1;
        self.done = true;
        match self.peek_token()? {
            None => Ok(None),
            Some(_) => Err((self.offset, "trailing data after the array".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elements(s: &str) -> Result<Vec<String>, (u64, String)> {
        let mut a = JsonArray::new(std::io::BufReader::with_capacity(3, s.as_bytes()));
        let mut v = Vec::new();
        while let Some((_, b)) = a.next_element()? {
            v.push(String::from_utf8(b).unwrap());
        }
        Ok(v)
    }

    #[test]
    fn array_splits_across_tiny_buffers_and_strings_with_brackets() {
        let s = "\u{feff} [ {\"a\": \"}]\\\"{\"}, {\"b\": [1, {\"c\": 2}]} ]\n";
        assert_eq!(elements(s).unwrap(), vec![r#"{"a": "}]\"{"}"#, r#"{"b": [1, {"c": 2}]}"#]);
        assert_eq!(elements("[]").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn array_errors_say_where() {
        assert_eq!(elements("[{\"a\":1} {\"b\":2}]").unwrap_err(), (9, "expected ',' or ']' after a record".into()));
        assert_eq!(elements("[{\"a\":1}, 3]").unwrap_err().0, 10);
        assert_eq!(elements("[{\"a\":1}").unwrap_err().1, "unexpected end of file, expected ',' or ']'");
        assert_eq!(elements("[{\"a\":1}] x").unwrap_err(), (10, "trailing data after the array".into()));
        assert_eq!(elements("[{\"a\":\"1}]").unwrap_err(), (1, "unexpected end of file inside a record".into()));
    }
}
