//! Reading a source's documents in a fixed order, whatever its format.
//!
//! - a directory: its `*.parquet` files in name order (text shards from `wiki ingest`), `text` column;
//! - `.parquet`: any Parquet file with a utf8 `text` column (other columns are not read);
//! - `.jsonl`: one JSON object per line with a string `text` field (pretrain), or an instruction record
//!   (`id`, `instruction`, `input`, `output`, `lang`, …) for sft; blank lines are skipped;
//! - `.json` (sft only): an Alpaca file as released, a JSON array of `instruction`/`input`/`output` records
//!   (read by the instruct module's record reader, which also takes JSON lines and Parquet);
//! - `.txt`: documents are blocks of lines separated by one or more blank (whitespace-only) lines; a
//!   document's lines are joined with `\n`, trailing whitespace of the file's lines kept as written.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use arrow::array::{Array, LargeStringArray, RecordBatch, StringArray, StringViewArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::config::Kind;
use super::template::Instruction;
use super::ShardsError;
use crate::corpus::{list_shards, BatchRows, ShardError};

/// One unit of a source, before tokenizing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Doc {
    /// A plain-text document (pretrain).
    Text(String),
    /// An instruction record (sft).
    Example(Instruction),
}

/// The documents of a source, in order.
pub type Docs = Box<dyn Iterator<Item = Result<Doc, ShardsError>> + Send>;

/// How a source path is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Parquet,
    Jsonl,
    Txt,
    /// An Alpaca JSON array of instruction records.
    AlpacaJson,
}

/// The format of `path` for a `kind` run, or why it cannot be a source (checked before any work).
fn format_of(path: &Path, kind: Kind) -> Result<Format, String> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let format = match ext.as_str() {
        _ if path.is_dir() => Format::Parquet,
        "parquet" => Format::Parquet,
        "jsonl" => Format::Jsonl,
        "txt" => Format::Txt,
        "json" if kind == Kind::Sft => Format::AlpacaJson,
        _ => return Err(
            "unknown format: expected a text-shard directory, .parquet, .jsonl or .txt (or, for sft, an Alpaca .json)"
                .into(),
        ),
    };
    if kind == Kind::Sft && !matches!(format, Format::Jsonl | Format::AlpacaJson) {
        return Err(
            "sft sources must be instruction records: .jsonl with instruction/input/output, or an Alpaca .json array"
                .into(),
        );
    }
    Ok(format)
}

/// Checks that `path` can be a source of a `kind` run.
pub fn check(path: &Path, kind: Kind) -> Result<(), String> {
    format_of(path, kind).map(|_| ())
}

/// Opens `path` for a `kind` run; format by extension (a directory = text shards).
pub fn open(path: &Path, kind: Kind) -> Result<Docs, ShardsError> {
    let format =
        format_of(path, kind).map_err(|msg| ShardsError::Input { path: path.into(), at: String::new(), msg })?;
    if format == Format::Parquet {
        let files = list_shards(path)?;
        if files.is_empty() {
            let msg = "no *.parquet files in this directory".into();
            return Err(ShardsError::Input { path: path.into(), at: String::new(), msg });
        }
        let mut iters = Vec::with_capacity(files.len());
        for f in files {
            iters.push(ParquetTexts::open(f)?);
        }
        return Ok(Box::new(iters.into_iter().flatten()));
    }
    if format == Format::AlpacaJson {
        let input = |msg: String| ShardsError::Input { path: path.into(), at: String::new(), msg };
        let records = crate::instruct::RecordReader::open(path).map_err(|e| input(e.to_string()))?;
        let path = path.to_path_buf();
        return Ok(Box::new(records.map(move |r| {
            let r = r.map_err(|e| ShardsError::Input { path: path.clone(), at: String::new(), msg: e.to_string() })?;
            let [instruction, input, output] = r.fields;
            Ok(Doc::Example(Instruction {
                id: serde_json::to_value(&r.id).unwrap_or_default(),
                instruction,
                input,
                output,
                lang: String::new(),
                source_id: None,
                translator: None,
            }))
        })));
    }
    let file = File::open(path).map_err(|source| ShardsError::Io { path: path.into(), source })?;
    let lines = BufReader::with_capacity(1 << 20, file).lines();
    let path = path.to_path_buf();
    Ok(if format == Format::Jsonl {
        Box::new(JsonLines { path, lines, line: 0, kind })
    } else {
        Box::new(TextBlocks { path, lines, line: 0 })
    })
}

/// The `text` column of one Parquet file.
struct ParquetTexts {
    rows: BatchRows,
}

impl ParquetTexts {
    fn open(path: PathBuf) -> Result<Self, ShardsError> {
        let pq = |e: parquet::errors::ParquetError| ShardError::Parquet { path: path.clone(), msg: e.to_string() };
        let file = File::open(&path).map_err(|source| ShardsError::Io { path: path.clone(), source })?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq)?;
        if builder.schema().field_with_name("text").is_err() {
            return Err(ShardsError::Input { path, at: String::new(), msg: "no 'text' column".into() });
        }
        let mask = ProjectionMask::columns(builder.parquet_schema(), ["text"]);
        let reader = builder.with_projection(mask).with_batch_size(1024).build().map_err(pq)?;
        Ok(ParquetTexts { rows: BatchRows::new(&path, reader) })
    }
}

/// The text at row `i` of `batch` (its one column), read from `path`.
fn text_at(batch: &RecordBatch, i: usize, path: &Path) -> Result<String, ShardsError> {
    let col = batch.column(0);
    let any = col.as_any();
    let value = if let Some(a) = any.downcast_ref::<StringArray>() {
        a.is_valid(i).then(|| a.value(i))
    } else if let Some(a) = any.downcast_ref::<LargeStringArray>() {
        a.is_valid(i).then(|| a.value(i))
    } else if let Some(a) = any.downcast_ref::<StringViewArray>() {
        a.is_valid(i).then(|| a.value(i))
    } else {
        let msg = format!("column 'text' is {}, expected utf8", col.data_type());
        return Err(ShardsError::Input { path: path.into(), at: String::new(), msg });
    };
    // A null text is an empty document: it still has its place (and index) in the source.
    Ok(value.unwrap_or_default().to_string())
}

impl Iterator for ParquetTexts {
    type Item = Result<Doc, ShardsError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(match self.rows.next_row()? {
            Ok((batch, i, path)) => text_at(batch, i, path).map(Doc::Text),
            Err(e) => Err(e.into()),
        })
    }
}

/// A `.jsonl` file: `{"text": …}` objects or instruction records.
struct JsonLines {
    path: PathBuf,
    lines: std::io::Lines<BufReader<File>>,
    line: u64,
    kind: Kind,
}

#[derive(serde::Deserialize)]
struct TextLine {
    text: String,
}

impl Iterator for JsonLines {
    type Item = Result<Doc, ShardsError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.line += 1;
            let line = match self.lines.next()? {
                Ok(l) => l,
                Err(source) => return Some(Err(ShardsError::Io { path: self.path.clone(), source })),
            };
            if line.trim().is_empty() {
                continue;
            }
            let doc = match self.kind {
                Kind::Pretrain => serde_json::from_str::<TextLine>(&line).map(|t| Doc::Text(t.text)),
                Kind::Sft => serde_json::from_str::<Instruction>(&line).map(Doc::Example),
            };
            return Some(doc.map_err(|e| ShardsError::Input {
                path: self.path.clone(),
                at: format!("line {}", self.line),
                msg: e.to_string(),
            }));
        }
    }
}

/// A `.txt` file: documents separated by blank lines.
struct TextBlocks {
    path: PathBuf,
    lines: std::io::Lines<BufReader<File>>,
    line: u64,
}

impl Iterator for TextBlocks {
    type Item = Result<Doc, ShardsError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut doc = String::new();
        loop {
            self.line += 1;
            match self.lines.next() {
                None => return (!doc.is_empty()).then_some(Ok(Doc::Text(doc))),
                Some(Err(e)) => {
                    let at = format!("line {}", self.line);
                    return Some(Err(ShardsError::Input { path: self.path.clone(), at, msg: e.to_string() }));
                }
                Some(Ok(l)) if l.trim().is_empty() => {
                    if !doc.is_empty() {
                        return Some(Ok(Doc::Text(doc)));
                    }
                }
                Some(Ok(l)) => {
                    if !doc.is_empty() {
                        doc.push('\n');
                    }
                    doc.push_str(&l);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(path: &Path) -> Vec<String> {
        open(path, Kind::Pretrain)
            .unwrap()
            .map(|d| match d.unwrap() {
                Doc::Text(t) => t,
                Doc::Example(_) => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn txt_blocks_split_at_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        std::fs::write(&p, "\n\nfirst line\nsecond\n \t\n\n\nthird\r\n\nlast").unwrap();
        assert_eq!(texts(&p), ["first line\nsecond", "third", "last"]);
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        std::fs::write(&p, "{\"text\": \"a\"}\n\n{\"txt\": \"b\"}\n").unwrap();
        let got: Vec<_> = open(&p, Kind::Pretrain).unwrap().collect();
        assert_eq!(got[0].as_ref().unwrap(), &Doc::Text("a".into()));
        let err = got[1].as_ref().unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: line 3: missing field `text`", p.display())), "{err}");
        let err = open(&dir.path().join("a.csv"), Kind::Pretrain).err().unwrap().to_string();
        assert!(err.contains("unknown format"), "{err}");
        let err = open(&p.with_extension("txt"), Kind::Sft).err().unwrap().to_string();
        assert!(err.contains("sft sources must be instruction records"), "{err}");
    }

    #[test]
    fn an_alpaca_json_array_reads_like_its_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let (json, jsonl) = (dir.path().join("alpaca.json"), dir.path().join("alpaca.jsonl"));
        std::fs::write(
            &json,
            r#"[{"instruction": "Add.", "input": "1, 2", "output": "3"}, {"instruction": "Greet.", "input": "", "output": "Hi"}]"#,
        )
        .unwrap();
        std::fs::write(
            &jsonl,
            "{\"id\": 0, \"instruction\": \"Add.\", \"input\": \"1, 2\", \"output\": \"3\"}\n\
             {\"id\": 1, \"instruction\": \"Greet.\", \"input\": \"\", \"output\": \"Hi\"}\n",
        )
        .unwrap();
        let read = |p: &Path| open(p, Kind::Sft).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
        let docs = read(&json);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs, read(&jsonl));
        // Pretrain runs do not take instruction arrays.
        assert!(open(&json, Kind::Pretrain).err().unwrap().to_string().contains("unknown format"));
    }
}
