//! Parquet text shards (DESIGN.md "Data contracts"): `id` int64 or utf8, `title`, `text`, `lang`, `source`,
//! `n_chars`, and the `langadapt.manifest` footer key. Written under a temporary name and renamed when
//! complete; rows stream into row groups so memory stays bounded.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, Int64Builder, RecordBatch, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

use crate::manifest::{ShardMeta, PARQUET_META_KEY};

/// Rows buffered before they become a record batch.
const BATCH_ROWS: usize = 4096;
/// Text bytes buffered before a batch is written, whatever the row count (long articles).
const BATCH_BYTES: usize = 4 << 20;
/// Rows per Parquet row group.
const ROW_GROUP_ROWS: usize = 16_384;

/// Errors reading or writing text shards.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// File-system error on a shard.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Parquet or Arrow error on a shard.
    #[error("{path}: {msg}")]
    Parquet { path: PathBuf, msg: String },
    /// The file is Parquet but not a text shard.
    #[error("{path}: not a text shard: {msg}")]
    Layout { path: PathBuf, msg: String },
}

/// A document id: Wikipedia page ids are integers, other sources may use strings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum DocId {
    /// Integer id (int64 column).
    Int(i64),
    /// String id (utf8 column).
    Str(String),
}

/// Which Arrow type a shard's `id` column has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// `id` is int64.
    Int,
    /// `id` is utf8.
    Str,
}

/// One document of a text shard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TextRecord {
    /// Document id.
    pub id: DocId,
    /// Title (may be empty).
    pub title: String,
    /// Clean text.
    pub text: String,
    /// Language code.
    pub lang: String,
    /// Where the document came from, e.g. `wiki:trwiki`.
    pub source: String,
}

fn schema(id: IdKind) -> SchemaRef {
    let id_type = match id {
        IdKind::Int => DataType::Int64,
        IdKind::Str => DataType::Utf8,
    };
    Arc::new(Schema::new(vec![
        Field::new("id", id_type, false),
        Field::new("title", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("lang", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("n_chars", DataType::Int64, false),
    ]))
}

/// One Parquet file written under a temporary name with the `langadapt.manifest` footer key, renamed
/// into place by [`ParquetPart::finish`]: the pattern every shard writer (text, tokens) shares.
pub struct ParquetPart {
    path: PathBuf,
    tmp: PathBuf,
    writer: ArrowWriter<File>,
}

impl ParquetPart {
    /// Creates `path` (as `path.tmp` until finished) with `schema`, the writer settings in `props` and
    /// `meta` in the footer.
    pub fn create(
        path: &Path,
        schema: SchemaRef,
        props: WriterPropertiesBuilder,
        meta: &ShardMeta,
    ) -> Result<Self, ShardError> {
        let tmp = crate::io::tmp_path(path);
        let file = File::create(&tmp).map_err(|source| ShardError::Io { path: tmp.clone(), source })?;
        let meta_json = serde_json::to_string(meta).expect("ShardMeta serializes");
        let props =
            props.set_key_value_metadata(Some(vec![KeyValue::new(PARQUET_META_KEY.to_string(), meta_json)])).build();
        let writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| pq(&tmp, e))?;
        Ok(ParquetPart { path: path.to_path_buf(), tmp, writer })
    }

    /// Appends a batch (its schema must be the file's).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), ShardError> {
        self.writer.write(batch).map_err(|e| pq(&self.tmp, e))
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary path the file is written under.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Adds footer key-value pairs, writes the footer, syncs and renames the file into place.
    pub fn finish(mut self, extra: &[(String, String)]) -> Result<PathBuf, ShardError> {
        for (k, v) in extra {
            self.writer.append_key_value_metadata(KeyValue::new(k.clone(), v.clone()));
        }
        let file = self.writer.into_inner().map_err(|e| pq(&self.tmp, e))?;
        crate::io::commit(file, &self.tmp, &self.path)
            .map_err(|source| ShardError::Io { path: self.path.clone(), source })?;
        Ok(self.path)
    }
}

/// Streams [`TextRecord`]s into one Parquet file, renamed into place by [`TextShardWriter::finish`].
pub struct TextShardWriter {
    id_kind: IdKind,
    schema: SchemaRef,
    part: ParquetPart,
    pending: Vec<TextRecord>,
    pending_bytes: usize,
    rows: u64,
}

impl TextShardWriter {
    /// Creates `path` (as `path.tmp` until finished) with `meta` in the footer.
    pub fn create(path: &Path, meta: &ShardMeta, id_kind: IdKind) -> Result<Self, ShardError> {
        let props = WriterProperties::builder()
            .set_compression(Compression::LZ4_RAW)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            // Long unique strings: a dictionary never pays off and min/max statistics are useless.
            .set_column_dictionary_enabled(ColumnPath::from("text"), false)
            .set_column_statistics_enabled(ColumnPath::from("text"), EnabledStatistics::None)
            .set_column_dictionary_enabled(ColumnPath::from("title"), false);
        let schema = schema(id_kind);
        let part = ParquetPart::create(path, schema.clone(), props, meta)?;
        Ok(TextShardWriter { id_kind, schema, part, pending: Vec::new(), pending_bytes: 0, rows: 0 })
    }

    /// Appends one record.
    pub fn write(&mut self, record: TextRecord) -> Result<(), ShardError> {
        let ok = matches!((&record.id, self.id_kind), (DocId::Int(_), IdKind::Int) | (DocId::Str(_), IdKind::Str));
        if !ok {
            return Err(ShardError::Layout {
                path: self.part.path().to_path_buf(),
                msg: format!("record id {:?} does not match the shard's id type {:?}", record.id, self.id_kind),
            });
        }
        self.pending_bytes += record.text.len() + record.title.len();
        self.pending.push(record);
        if self.pending.len() >= BATCH_ROWS || self.pending_bytes >= BATCH_BYTES {
            self.flush_pending()?;
        }
        Ok(())
    }

    fn flush_pending(&mut self) -> Result<(), ShardError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let n = self.pending.len();
        let id: ArrayRef = match self.id_kind {
            IdKind::Int => {
                let mut b = Int64Builder::with_capacity(n);
                for r in &self.pending {
                    if let DocId::Int(v) = r.id {
                        b.append_value(v);
                    }
                }
                Arc::new(b.finish())
            }
            IdKind::Str => {
                let mut b = StringBuilder::new();
                for r in &self.pending {
                    if let DocId::Str(v) = &r.id {
                        b.append_value(v);
                    }
                }
                Arc::new(b.finish())
            }
        };
        let col = |f: fn(&TextRecord) -> &str| -> ArrayRef {
            Arc::new(self.pending.iter().map(|r| Some(f(r))).collect::<StringArray>())
        };
        let n_chars: ArrayRef =
            Arc::new(self.pending.iter().map(|r| Some(r.text.chars().count() as i64)).collect::<Int64Array>());
        let columns = vec![id, col(|r| &r.title), col(|r| &r.text), col(|r| &r.lang), col(|r| &r.source), n_chars];
        let batch = RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| pq(self.part.tmp_path(), e))?;
        self.part.write(&batch)?;
        self.rows += n as u64;
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(())
    }

    /// Rows written so far (including buffered ones).
    pub fn rows(&self) -> u64 {
        self.rows + self.pending.len() as u64
    }

    /// Adds footer key-value pairs (e.g. per-part counters), writes the footer, syncs and renames the
    /// file into place. Returns the path and the row count.
    pub fn finish(mut self, extra: &[(String, String)]) -> Result<(PathBuf, u64), ShardError> {
        self.flush_pending()?;
        Ok((self.part.finish(extra)?, self.rows))
    }
}

pub(crate) fn pq(path: &Path, e: impl std::fmt::Display) -> ShardError {
    ShardError::Parquet { path: path.to_path_buf(), msg: e.to_string() }
}

/// The footer key-value metadata of a Parquet file, and its row count.
pub fn read_footer(path: &Path) -> Result<(BTreeMap<String, String>, u64), ShardError> {
    let file = File::open(path).map_err(|source| ShardError::Io { path: path.into(), source })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| pq(path, e))?;
    let meta = builder.metadata().file_metadata();
    let kv = meta
        .key_value_metadata()
        .map(|kvs| kvs.iter().filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?))).collect())
        .unwrap_or_default();
    Ok((kv, meta.num_rows() as u64))
}

/// The `*.parquet` files of a directory in name order (a single file is returned as is).
pub fn list_shards(path: &Path) -> Result<Vec<PathBuf>, ShardError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let rd = std::fs::read_dir(path).map_err(|source| ShardError::Io { path: path.into(), source })?;
    let mut files = Vec::new();
    for entry in rd {
        let p = entry.map_err(|source| ShardError::Io { path: path.into(), source })?.path();
        if p.extension().is_some_and(|e| e == "parquet") {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// The rows of a Parquet file one at a time, as (record batch, row index in it): the loop every
/// shard reader needs on top of Arrow's batch reader.
pub struct BatchRows {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    row: usize,
}

impl BatchRows {
    /// Rows of `reader`, which reads `path` (named in errors).
    pub fn new(path: &Path, reader: ParquetRecordBatchReader) -> Self {
        BatchRows { path: path.into(), reader, batch: None, row: 0 }
    }

    /// The batch holding the next row, the row's index in it, and the file's path; `None` at the end.
    pub fn next_row(&mut self) -> Option<Result<(&RecordBatch, usize, &Path), ShardError>> {
        loop {
            if self.batch.as_ref().is_some_and(|b| self.row < b.num_rows()) {
                self.row += 1;
                return Some(Ok((self.batch.as_ref().expect("checked above"), self.row - 1, &self.path)));
            }
            match self.reader.next()? {
                Ok(b) => {
                    self.batch = Some(b);
                    self.row = 0;
                }
                Err(e) => return Some(Err(pq(&self.path, e))),
            }
        }
    }
}

/// Reads the records of one text shard, batch by batch.
pub struct TextShardReader {
    rows: BatchRows,
}

impl TextShardReader {
    /// Opens a text shard and checks its columns.
    pub fn open(path: &Path) -> Result<Self, ShardError> {
        let file = File::open(path).map_err(|source| ShardError::Io { path: path.into(), source })?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| pq(path, e))?;
        for name in ["id", "title", "text", "lang", "source"] {
            if builder.schema().field_with_name(name).is_err() {
                return Err(ShardError::Layout { path: path.into(), msg: format!("missing column '{name}'") });
            }
        }
        let reader = builder.build().map_err(|e| pq(path, e))?;
        Ok(TextShardReader { rows: BatchRows::new(path, reader) })
    }
}

/// The record at row `i` of `batch`, read from `path`.
fn record_at(path: &Path, batch: &RecordBatch, i: usize) -> Result<TextRecord, ShardError> {
    let layout = |msg: String| ShardError::Layout { path: path.into(), msg };
    let string = |name: &str| -> Result<String, ShardError> {
        let col = batch.column_by_name(name).ok_or_else(|| layout(format!("missing column '{name}'")))?;
        let arr = col
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| layout(format!("column '{name}' is {}, expected utf8", col.data_type())))?;
        Ok(if arr.is_null(i) { String::new() } else { arr.value(i).to_string() })
    };
    let id_col = batch.column_by_name("id").ok_or_else(|| layout("missing column 'id'".into()))?;
    let id = if let Some(a) = id_col.as_any().downcast_ref::<Int64Array>() {
        DocId::Int(a.value(i))
    } else if let Some(a) = id_col.as_any().downcast_ref::<StringArray>() {
        DocId::Str(a.value(i).to_string())
    } else {
        return Err(layout(format!("column 'id' is {}, expected int64 or utf8", id_col.data_type())));
    };
    Ok(TextRecord {
        id,
        title: string("title")?,
        text: string("text")?,
        lang: string("lang")?,
        source: string("source")?,
    })
}

impl Iterator for TextShardReader {
    type Item = Result<TextRecord, ShardError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.rows.next_row()?.and_then(|(batch, i, path)| record_at(path, batch, i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ShardMeta {
        ShardMeta { stage: "test".into(), version: "0".into(), run_id: "abc".into() }
    }

    fn rec(id: i64, text: &str) -> TextRecord {
        TextRecord {
            id: DocId::Int(id),
            title: format!("t{id}"),
            text: text.into(),
            lang: "tr".into(),
            source: "s".into(),
        }
    }

    #[test]
    fn writes_reads_and_keeps_footer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("part-00000.parquet");
        let mut w = TextShardWriter::create(&p, &meta(), IdKind::Int).unwrap();
        let recs: Vec<_> = (0..5000).map(|i| rec(i, &"ğ".repeat((i % 7) as usize))).collect();
        for r in &recs {
            w.write(r.clone()).unwrap();
        }
        assert!(!p.exists(), "unfinished shard must not have its final name");
        let (path, rows) = w.finish(&[("k".into(), "v".into())]).unwrap();
        assert_eq!((path, rows), (p.clone(), 5000));
        let back: Vec<_> = TextShardReader::open(&p).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(back, recs);
        let (kv, n) = read_footer(&p).unwrap();
        assert_eq!(n, 5000);
        assert_eq!(kv["k"], "v");
        let m: ShardMeta = serde_json::from_str(&kv[PARQUET_META_KEY]).unwrap();
        assert_eq!(m, meta());
    }

    #[test]
    fn rejects_mixed_id_types_and_non_shards() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.parquet");
        let mut w = TextShardWriter::create(&p, &meta(), IdKind::Str).unwrap();
        let err = w.write(rec(1, "x")).unwrap_err().to_string();
        assert!(err.contains("does not match the shard's id type"), "{err}");
        let bogus = dir.path().join("b.parquet");
        std::fs::write(&bogus, b"not parquet").unwrap();
        let err = TextShardReader::open(&bogus).err().unwrap().to_string();
        assert!(err.starts_with(&bogus.display().to_string()), "{err}");
    }
}
