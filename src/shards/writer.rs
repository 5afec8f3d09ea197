//! Token shards (DESIGN.md "Data contracts"): `input_ids` list<uint32>, `loss_mask` list<uint8>,
//! `source` utf8, and `segment_ids` list<uint32> when SFT examples are packed. Parts of `rows_per_part`
//! rows are written streaming, each under a temporary name until complete.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ListArray, ListBuilder, RecordBatch, StringArray, StringBuilder, UInt32Array, UInt32Builder,
    UInt8Array, UInt8Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::pack::Row;
use super::ShardsError;
use crate::corpus::{BatchRows, ParquetPart, ShardError};
use crate::manifest::ShardMeta;

/// Rows per record batch.
const BATCH_ROWS: usize = 256;
/// Rows per Parquet row group.
const ROW_GROUP_ROWS: usize = 2048;

/// The Arrow schema of a token shard; `segments` adds the `segment_ids` column.
pub fn token_shard_schema(segments: bool) -> SchemaRef {
    let list = |t: DataType| DataType::List(Arc::new(Field::new("item", t, false)));
    let mut fields = vec![
        Field::new("input_ids", list(DataType::UInt32), false),
        Field::new("loss_mask", list(DataType::UInt8), false),
        Field::new("source", DataType::Utf8, false),
    ];
    if segments {
        fields.push(Field::new("segment_ids", list(DataType::UInt32), false));
    }
    Arc::new(Schema::new(fields))
}

/// Writes the rows of one split (`train` or `val`) into `part-…NNNNN.parquet` files.
pub struct SplitWriter {
    dir: PathBuf,
    /// File name prefix, `part-` or `part-SSSSS-` for `--shard`.
    prefix: String,
    rows_per_part: u64,
    meta: ShardMeta,
    schema: SchemaRef,
    open: Option<(ParquetPart, u64)>,
    pending: Vec<(Row, Arc<str>)>,
    /// Finished parts and their row counts.
    pub written: Vec<(PathBuf, u64)>,
}

impl SplitWriter {
    /// A writer into `dir` (created); `segments` adds the `segment_ids` column.
    pub fn new(
        dir: PathBuf,
        prefix: String,
        rows_per_part: u64,
        meta: ShardMeta,
        segments: bool,
    ) -> Result<Self, ShardsError> {
        std::fs::create_dir_all(&dir).map_err(|source| ShardsError::Io { path: dir.clone(), source })?;
        Ok(SplitWriter {
            dir,
            prefix,
            rows_per_part,
            meta,
            schema: token_shard_schema(segments),
            open: None,
            pending: Vec::new(),
            written: Vec::new(),
        })
    }

    /// Appends one row of `source`.
    pub fn write(&mut self, row: Row, source: &Arc<str>) -> Result<(), ShardsError> {
        if self.open.is_none() {
            let path = self.dir.join(format!("{}{:05}.parquet", self.prefix, self.written.len()));
            let props = WriterProperties::builder()
                .set_compression(Compression::LZ4_RAW)
                .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
            self.open = Some((ParquetPart::create(&path, self.schema.clone(), props, &self.meta)?, 0));
        }
        self.pending.push((row, source.clone()));
        let (_, rows) = self.open.as_mut().expect("opened above");
        *rows += 1;
        if *rows == self.rows_per_part {
            self.close()?;
        } else if self.pending.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ShardsError> {
        let Some((part, _)) = self.open.as_mut() else { return Ok(()) };
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut ids = ListBuilder::new(UInt32Builder::new()).with_field(Field::new("item", DataType::UInt32, false));
        let mut mask = ListBuilder::new(UInt8Builder::new()).with_field(Field::new("item", DataType::UInt8, false));
        let mut segs = ListBuilder::new(UInt32Builder::new()).with_field(Field::new("item", DataType::UInt32, false));
        let mut source = StringBuilder::new();
        for (row, src) in &self.pending {
            ids.values().append_slice(&row.ids);
            ids.append(true);
            mask.values().append_slice(&row.mask);
            mask.append(true);
            if let Some(s) = &row.segments {
                segs.values().append_slice(s);
                segs.append(true);
            }
            source.append_value(src);
        }
        let mut columns: Vec<ArrayRef> =
            vec![Arc::new(ids.finish()), Arc::new(mask.finish()), Arc::new(source.finish())];
        if self.schema.fields().len() == 4 {
            columns.push(Arc::new(segs.finish()));
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| ShardError::Parquet { path: part.tmp_path().into(), msg: e.to_string() })?;
        part.write(&batch)?;
        self.pending.clear();
        Ok(())
    }

    /// Finishes the open part, if any.
    pub fn close(&mut self) -> Result<(), ShardsError> {
        self.flush()?;
        if let Some((part, rows)) = self.open.take() {
            self.written.push((part.finish(&[])?, rows));
        }
        Ok(())
    }

    /// Removes every part of this writer, finished or not: a failed build has no manifest to make its
    /// parts usable, and leaving them would make the directory look like a build.
    pub fn abort(&mut self) {
        if let Some((part, _)) = self.open.take() {
            let tmp = part.tmp_path().to_path_buf();
            drop(part);
            let _ = std::fs::remove_file(tmp);
        }
        for (path, _) in self.written.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One row of a token shard, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// 1 = trained on.
    pub loss_mask: Vec<u8>,
    /// Source name.
    pub source: String,
    /// Example numbers within the row (packed SFT), 0 on padding.
    pub segment_ids: Option<Vec<u32>>,
}

/// Reads the rows of one token shard.
pub struct TokenShardReader {
    rows: BatchRows,
}

impl TokenShardReader {
    /// Opens a token shard.
    pub fn open(path: &Path) -> Result<Self, ShardsError> {
        let pq = |e: parquet::errors::ParquetError| ShardError::Parquet { path: path.into(), msg: e.to_string() };
        let file = File::open(path).map_err(|source| ShardsError::Io { path: path.into(), source })?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq)?;
        Ok(TokenShardReader { rows: BatchRows::new(path, builder.build().map_err(pq)?) })
    }
}

/// The columns of a token-shard batch, checked.
pub(super) struct Columns<'a> {
    pub ids: &'a ListArray,
    pub mask: &'a ListArray,
    pub source: &'a StringArray,
    pub segments: Option<&'a ListArray>,
}

impl<'a> Columns<'a> {
    pub(super) fn of(batch: &'a RecordBatch, path: &Path) -> Result<Self, ShardsError> {
        let layout = |msg: String| ShardError::Layout { path: path.into(), msg };
        let list = |name: &str, item: DataType| -> Result<Option<&'a ListArray>, ShardError> {
            let Some(col) = batch.column_by_name(name) else { return Ok(None) };
            match col.as_any().downcast_ref::<ListArray>() {
                Some(l) if l.value_type() == item => Ok(Some(l)),
                _ => Err(layout(format!("column '{name}' is {}, expected list<{item}>", col.data_type()))),
            }
        };
        let missing = |name: &str| layout(format!("missing column '{name}' (not a token shard)"));
        let source = batch.column_by_name("source").ok_or_else(|| missing("source"))?;
        Ok(Columns {
            ids: list("input_ids", DataType::UInt32)?.ok_or_else(|| missing("input_ids"))?,
            mask: list("loss_mask", DataType::UInt8)?.ok_or_else(|| missing("loss_mask"))?,
            source: source
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| layout(format!("column 'source' is {}, expected utf8", source.data_type())))?,
            segments: list("segment_ids", DataType::UInt32)?,
        })
    }
}

fn u32s(list: &ListArray, i: usize) -> Vec<u32> {
    let v = list.value(i);
    v.as_any().downcast_ref::<UInt32Array>().map(|a| a.values().to_vec()).unwrap_or_default()
}

impl Iterator for TokenShardReader {
    type Item = Result<TokenRow, ShardsError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (batch, i, path) = match self.rows.next_row()? {
            Ok(r) => r,
            Err(e) => return Some(Err(e.into())),
        };
        Some(Columns::of(batch, path).map(|c| TokenRow {
            input_ids: u32s(c.ids, i),
            loss_mask:
                c.mask.value(i).as_any().downcast_ref::<UInt8Array>().map(|a| a.values().to_vec()).unwrap_or_default(),
            source: c.source.value(i).to_string(),
            segment_ids: c.segments.map(|s| u32s(s, i)),
        }))
    }
}
