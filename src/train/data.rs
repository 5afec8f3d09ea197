//! Training rows streamed from token shards, in a seeded order that a step number alone determines (so
//! resuming needs no data cursor beyond the step).
//!
//! Opening reads only the Parquet footers: they give every row group's place (file, group, first row) and
//! are checked there (columns, byte ranges, tokens per row). Rows are read a row group at a time into a
//! small LRU cache, so memory is a few row groups plus 4 bytes per row for the epoch's order, whatever the
//! corpus size.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ListArray, UInt32Array, UInt8Array};
use arrow::datatypes::DataType;
use candle_core::{Device, Tensor};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

use super::TrainError;
use crate::corpus::list_shards;

/// Decoded row groups kept (a row group is 2,048 rows as `shards build` writes them: 20 MB at 2,048 tokens
/// a row). Sequential reads (validation) hit the newest; random reads (training) rarely hit at all.
const CACHE_GROUPS: usize = 4;

/// One token shard: its path and parsed footer.
struct ShardFile {
    path: PathBuf,
    meta: ArrowReaderMetadata,
    /// Root column indices of input_ids, loss_mask and (when present) segment_ids.
    roots: Vec<usize>,
    segments: bool,
}

/// Where a row group's rows are.
struct Group {
    file: usize,
    group: usize,
    /// Index of its first row among all rows.
    first: u64,
    rows: u64,
    /// Index of its first row within its file.
    first_in_file: u64,
}

/// A decoded row group: the rows' columns back to back, `seq_len` values a row.
struct Decoded {
    group: usize,
    ids: Vec<u32>,
    mask: Vec<u8>,
    segments: Option<Vec<u32>>,
}

/// One row, borrowed from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRef<'a> {
    /// Token ids.
    pub input_ids: &'a [u32],
    /// 1 = trained on.
    pub loss_mask: &'a [u8],
    /// Example numbers within the row (packed SFT).
    pub segment_ids: Option<&'a [u32]>,
}

/// The rows of a token-shard directory, read on demand.
pub struct Rows {
    files: Vec<ShardFile>,
    groups: Vec<Group>,
    len: u64,
    seq_len: usize,
    cache: VecDeque<Decoded>,
    /// The order of the epoch last asked for: (seed, epoch, permutation).
    order: Option<(u64, u64, Vec<u32>)>,
}

/// A micro-batch as tensors.
pub struct Batch {
    /// `[b, seq_len-1]` inputs.
    pub input: Tensor,
    /// `[b, seq_len-1]` next-token targets.
    pub target: Tensor,
    /// `[b, seq_len-1]` f32 loss weights (the targets' loss mask).
    pub weight: Tensor,
    /// `[b, seq_len-1]` example ids of packed rows.
    pub segments: Option<Tensor>,
    /// Tokens trained on.
    pub trained_tokens: f64,
}

fn shard_err(path: &Path, at: String, msg: String) -> TrainError {
    TrainError::Shard { path: path.to_path_buf(), at, msg, source: None }
}

impl ShardFile {
    /// Reads and checks the footer of `path`.
    fn open(path: &Path) -> Result<Self, TrainError> {
        let file = File::open(path).map_err(|e| TrainError::io(path, e))?;
        let bytes = file.metadata().map_err(|e| TrainError::io(path, e))?.len();
        let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|e| TrainError::Shard {
            path: path.to_path_buf(),
            at: String::new(),
            msg: "cannot read the Parquet footer: the file is truncated or not Parquet; rebuild it with \
                  `langadapt shards build`"
                .into(),
            source: Some(e),
        })?;
        let schema = meta.schema().clone();
        let column = |name: &str, item: DataType| -> Result<Option<usize>, TrainError> {
            let Ok(i) = schema.index_of(name) else { return Ok(None) };
            match schema.field(i).data_type() {
                DataType::List(f) if *f.data_type() == item => Ok(Some(i)),
                other => Err(shard_err(
                    path,
                    String::new(),
                    format!("column '{name}' is {other}, expected list<{item}> (not a token shard)"),
                )),
            }
        };
        let missing = |name: &str| shard_err(path, String::new(), format!("no column '{name}' (not a token shard)"));
        let mut roots = vec![
            column("input_ids", DataType::UInt32)?.ok_or_else(|| missing("input_ids"))?,
            column("loss_mask", DataType::UInt8)?.ok_or_else(|| missing("loss_mask"))?,
        ];
        let segments = column("segment_ids", DataType::UInt32)?;
        roots.extend(segments);
        for (g, rg) in meta.metadata().row_groups().iter().enumerate() {
            for c in rg.columns() {
                let (start, len) = c.byte_range();
                if start.saturating_add(len) > bytes {
                    return Err(shard_err(
                        path,
                        format!("row group {g}"),
                        format!(
                            "column '{}' ends at byte {} but the file has {bytes} bytes (truncated); rebuild it",
                            c.column_path(),
                            start + len
                        ),
                    ));
                }
            }
        }
        Ok(ShardFile { path: path.to_path_buf(), meta, roots, segments: segments.is_some() })
    }

    /// Tokens per row of row group `g` from its footer (values of each checked column / rows), or an error
    /// naming the group when the columns disagree or the rows cannot all have the same length.
    fn group_seq_len(&self, g: usize) -> Result<Option<usize>, TrainError> {
        let rg = &self.meta.metadata().row_groups()[g];
        let rows = rg.num_rows() as u64;
        if rows == 0 {
            return Ok(None);
        }
        let mut per_row = None;
        for c in rg.columns() {
            let name = c.column_path().parts()[0].as_str();
            if !matches!(name, "input_ids" | "loss_mask" | "segment_ids") {
                continue;
            }
            let values = c.num_values() as u64;
            if values % rows != 0 || per_row.is_some_and(|n| n != values / rows) {
                return Err(shard_err(
                    &self.path,
                    format!("row group {g}"),
                    format!(
                        "column '{name}' holds {values} values in {rows} rows: the rows do not all have the same \
                         length{}; rebuild the shard",
                        per_row.map(|n| format!(" ({n} per row in the other columns)")).unwrap_or_default()
                    ),
                ));
            }
            per_row = Some(values / rows);
        }
        Ok(per_row.map(|n| n as usize))
    }
}

impl Rows {
    /// Indexes the rows under `path` (a directory of .parquet token shards or one file) from the footers.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let paths = list_shards(path).map_err(|e| TrainError::Data(e.to_string()))?;
        if paths.is_empty() {
            return Err(TrainError::Data(format!(
                "{}: no .parquet token shards here (run `langadapt shards build`)",
                path.display()
            )));
        }
        let (mut files, mut groups, mut len) = (Vec::new(), Vec::new(), 0u64);
        let mut seq_len: Option<(usize, PathBuf, usize)> = None;
        for p in &paths {
            let file = ShardFile::open(p)?;
            let mut first_in_file = 0;
            for (g, rg) in file.meta.metadata().row_groups().iter().enumerate() {
                let rows = rg.num_rows() as u64;
                if let Some(n) = file.group_seq_len(g)? {
                    match &seq_len {
                        Some((want, first, fg)) if *want != n => {
                            return Err(shard_err(
                                p,
                                format!("row group {g}"),
                                format!(
                                    "rows of {n} tokens, but {} row group {fg} has rows of {want}; every row needs \
                                     the same length",
                                    first.display()
                                ),
                            ));
                        }
                        Some(_) => {}
                        None if n < 2 => {
                            return Err(shard_err(
                                p,
                                format!("row group {g}"),
                                format!("rows of {n} tokens; a training row needs at least 2"),
                            ));
                        }
                        None => seq_len = Some((n, p.clone(), g)),
                    }
                }
                groups.push(Group { file: files.len(), group: g, first: len, rows, first_in_file });
                len += rows;
                first_in_file += rows;
            }
            files.push(file);
        }
        let (seq_len, _, _) =
            seq_len.ok_or_else(|| TrainError::Data(format!("{}: the shards hold no rows", path.display())))?;
        if len > u64::from(u32::MAX) {
            return Err(TrainError::Data(format!(
                "{}: {len} rows; at most {} are supported (pack longer rows)",
                path.display(),
                u32::MAX
            )));
        }
        groups.retain(|g| g.rows > 0);
        Ok(Self { files, groups, len, seq_len, cache: VecDeque::new(), order: None })
    }

    /// Number of rows.
    // No `is_empty`: `load` refuses shards without rows.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Tokens per row.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The row indices of micro-batch `micro` (global count since the start), `size` rows, for `seed`:
    /// epoch e visits the rows in a Fisher–Yates order drawn from (seed, e). The current epoch's order is kept,
    /// so a step costs its rows, not a new permutation of the whole set.
    pub fn indices(&mut self, seed: u64, micro: u64, size: usize) -> Vec<usize> {
        let n = self.len;
        (0..size as u64)
            .map(|k| {
                let pos = micro * size as u64 + k;
                let (epoch, at) = (pos / n, pos % n);
                if self.order.as_ref().is_none_or(|(s, e, _)| (*s, *e) != (seed, epoch)) {
                    self.order = Some((seed, epoch, permutation(seed, epoch, n as u32)));
                }
                self.order.as_ref().map_or(0, |(_, _, p)| p[at as usize] as usize)
            })
            .collect()
    }

    /// Row `i` (0-based over all files in name order), reading its row group unless cached.
    pub fn row(&mut self, i: usize) -> Result<RowRef<'_>, TrainError> {
        let g = self
            .group_of(i)
            .ok_or_else(|| TrainError::Data(format!("row {i} asked for, the shards hold {} rows", self.len)))?;
        let i = i as u64;
        match self.cache.iter().position(|d| d.group == g) {
            Some(at) => {
                let hit = self.cache.remove(at).expect("position is in range");
                self.cache.push_back(hit);
            }
            None => {
                if self.cache.len() == CACHE_GROUPS {
                    self.cache.pop_front();
                }
                let decoded = self.decode(g)?;
                self.cache.push_back(decoded);
            }
        }
        let d = self.cache.back().expect("pushed above");
        let at = (i - self.groups[g].first) as usize * self.seq_len;
        let span = at..at + self.seq_len;
        Ok(RowRef {
            input_ids: &d.ids[span.clone()],
            loss_mask: &d.mask[span.clone()],
            segment_ids: d.segments.as_ref().map(|s| &s[span]),
        })
    }

    /// The index in `self.groups` of the row group holding row `i`.
    fn group_of(&self, i: usize) -> Option<usize> {
        let g = self.groups.partition_point(|g| g.first + g.rows <= i as u64);
        (g < self.groups.len()).then_some(g)
    }

    /// Reads row group `g` (of `self.groups`) and checks that every row has `seq_len` values in every column.
    fn decode(&self, g: usize) -> Result<Decoded, TrainError> {
        let group = &self.groups[g];
        let shard = &self.files[group.file];
        let path = &shard.path;
        let at = |row: Option<u64>| match row {
            Some(r) => format!("row group {}, row {r} (row {} of the file)", group.group, group.first_in_file + r),
            None => format!("row group {}", group.group),
        };
        let pq = |e: parquet::errors::ParquetError| TrainError::Shard {
            path: path.clone(),
            at: at(None),
            msg: "cannot decode the row group; rebuild the shard".into(),
            source: Some(e),
        };
        let arrow_err = |e: arrow::error::ArrowError| pq(e.into());
        let file = File::open(path).map_err(|e| TrainError::io(path, e))?;
        let mask = ProjectionMask::roots(shard.meta.parquet_schema(), shard.roots.iter().copied());
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, shard.meta.clone())
            .with_row_groups(vec![group.group])
            .with_projection(mask)
            .with_batch_size(group.rows as usize)
            .build()
            .map_err(pq)?;
        let cells = group.rows as usize * self.seq_len;
        let mut out = Decoded {
            group: g,
            ids: Vec::with_capacity(cells),
            mask: Vec::with_capacity(cells),
            segments: shard.segments.then(|| Vec::with_capacity(cells)),
        };
        let mut row = 0u64;
        for batch in reader {
            let batch = batch.map_err(arrow_err)?;
            let list = |name: &str| batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<ListArray>());
            let (Some(ids), Some(mask)) = (list("input_ids"), list("loss_mask")) else {
                return Err(shard_err(path, at(None), "input_ids or loss_mask is not a list column".into()));
            };
            let segs = list("segment_ids");
            for r in 0..batch.num_rows() {
                let (n, m) = (ids.value_length(r) as usize, mask.value_length(r) as usize);
                let s = segs.map(|s| s.value_length(r) as usize);
                if n != self.seq_len || m != self.seq_len || s.is_some_and(|s| s != self.seq_len) {
                    return Err(shard_err(
                        path,
                        at(Some(row)),
                        format!(
                            "{n} ids, {m} mask values{}; every row needs {} (the shards' seq_len); rebuild the shard",
                            s.map(|s| format!(", {s} segment ids")).unwrap_or_default(),
                            self.seq_len
                        ),
                    ));
                }
                let (iv, mv) = (ids.value(r), mask.value(r));
                let u32s = |a: &Arc<dyn Array>| a.as_any().downcast_ref::<UInt32Array>().map(|a| a.values().to_vec());
                out.ids.extend(u32s(&iv).unwrap_or_default());
                out.mask
                    .extend(mv.as_any().downcast_ref::<UInt8Array>().map(|a| a.values().to_vec()).unwrap_or_default());
                if let (Some(dst), Some(s)) = (out.segments.as_mut(), segs) {
                    dst.extend(u32s(&s.value(r)).unwrap_or_default());
                }
                row += 1;
            }
        }
        if row != group.rows {
            return Err(shard_err(
                path,
                at(Some(row)),
                format!("the footer promises {} rows, the data ends after {row}; rebuild the shard", group.rows),
            ));
        }
        Ok(out)
    }

    /// The tensors of the rows `idx`.
    pub fn batch(&mut self, idx: &[usize], device: &Device) -> Result<Batch, TrainError> {
        let t = self.seq_len - 1;
        let b = idx.len();
        let (mut input, mut target, mut weight) =
            (Vec::with_capacity(b * t), Vec::with_capacity(b * t), Vec::with_capacity(b * t));
        let mut segments = Vec::new();
        let packed = idx.iter().any(|&i| self.group_of(i).is_some_and(|g| self.files[self.groups[g].file].segments));
        for &i in idx {
            let row = self.row(i)?;
            input.extend_from_slice(&row.input_ids[..t]);
            target.extend_from_slice(&row.input_ids[1..]);
            weight.extend(row.loss_mask[1..].iter().map(|&m| f32::from(m)));
            if packed {
                match row.segment_ids {
                    Some(s) => segments.extend_from_slice(&s[..t]),
                    None => segments.extend(std::iter::repeat_n(1, t)),
                }
            }
        }
        let trained_tokens = weight.iter().map(|&w| f64::from(w)).sum();
        Ok(Batch {
            input: Tensor::from_vec(input, (b, t), device)?,
            target: Tensor::from_vec(target, (b, t), device)?,
            weight: Tensor::from_vec(weight, (b, t), device)?,
            segments: if packed { Some(Tensor::from_vec(segments, (b, t), device)?) } else { None },
            trained_tokens,
        })
    }
}

/// A seeded permutation of 0..n (splitmix64 + Fisher–Yates), the same on every machine.
fn permutation(seed: u64, epoch: u64, n: u32) -> Vec<u32> {
    let mut rng = crate::rng::SplitMix(seed ^ epoch.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let mut p: Vec<u32> = (0..n).collect();
    for i in (1..n as usize).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::permutation;

    #[test]
    fn permutations_are_seeded_and_complete() {
        let a = permutation(42, 0, 100);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, permutation(42, 0, 100));
        assert_ne!(a, permutation(42, 1, 100));
        assert_ne!(a, permutation(43, 0, 100));
    }
}
