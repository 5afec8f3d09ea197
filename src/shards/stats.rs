//! Statistics of token shards computed from the files alone (`shards stats DIR`, and `stats.json`).
//! Arrow directly, column by column, not polars (which DESIGN.md lists): polars would add more than ten
//! minutes to the 2-core CI cold build for a few sums and counts.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, UInt8Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use super::writer::Columns;
use super::ShardsError;
use crate::corpus::{list_shards, ShardError};

/// Counts of one source within a split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceStats {
    /// Rows.
    pub rows: u64,
    /// Token positions (padding included).
    pub tokens: u64,
    /// Tokens with loss_mask 1.
    pub trained_tokens: u64,
    /// This source's share of the split's trained tokens.
    pub share: f64,
}

/// Counts of one split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitStats {
    /// Part files.
    pub files: u64,
    /// Rows.
    pub rows: u64,
    /// Token positions (padding included).
    pub tokens: u64,
    /// Tokens with loss_mask 1.
    pub trained_tokens: u64,
    /// `trained_tokens / tokens`.
    pub mask_coverage: f64,
    /// Shortest and longest row (equal when every row has `seq_len` tokens).
    pub row_len: [u64; 2],
    /// Per source, by name.
    pub sources: BTreeMap<String, SourceStats>,
}

/// Statistics of a shards directory: per split (`train`, `val`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// By split name.
    pub splits: BTreeMap<String, SplitStats>,
}

/// The splits a shards directory has.
pub const SPLITS: [&str; 2] = ["train", "val"];

/// Statistics of every part under `dir/train` and `dir/val`.
pub fn stats(dir: &Path) -> Result<Stats, ShardsError> {
    let mut files = Vec::new();
    for split in SPLITS {
        let d = dir.join(split);
        if d.is_dir() {
            files.extend(list_shards(&d)?.into_iter().map(|f| (split.to_string(), f)));
        }
    }
    if files.is_empty() {
        return Err(ShardsError::Input {
            path: dir.into(),
            at: String::new(),
            msg: "no train/*.parquet or val/*.parquet here; pass the --out of `shards build`".into(),
        });
    }
    stats_of_files(&files)
}

/// Statistics of the given `(split, file)` parts.
pub fn stats_of_files(files: &[(String, PathBuf)]) -> Result<Stats, ShardsError> {
    let mut out = Stats::default();
    for split in SPLITS {
        out.splits.insert(split.to_string(), SplitStats::default());
    }
    for (split, path) in files {
        let s = out.splits.entry(split.clone()).or_default();
        s.files += 1;
        add_file(s, path)?;
    }
    for s in out.splits.values_mut() {
        s.mask_coverage = ratio(s.trained_tokens, s.tokens);
        for src in s.sources.values_mut() {
            src.share = ratio(src.trained_tokens, s.trained_tokens);
        }
    }
    Ok(out)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn add_file(s: &mut SplitStats, path: &Path) -> Result<(), ShardsError> {
    let pq = |e: &dyn std::fmt::Display| ShardError::Parquet { path: path.into(), msg: e.to_string() };
    let file = File::open(path).map_err(|source| ShardsError::Io { path: path.into(), source })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| pq(&e))?;
    for batch in builder.build().map_err(|e| pq(&e))? {
        let batch = batch.map_err(|e| pq(&e))?;
        let c = Columns::of(&batch, path)?;
        let offsets = c.mask.value_offsets();
        let values = c.mask.values();
        let mask = values.as_any().downcast_ref::<UInt8Array>().expect("checked by Columns::of");
        for i in 0..batch.num_rows() {
            let (a, b) = (offsets[i] as usize, offsets[i + 1] as usize);
            let len = c.ids.value_length(i) as u64;
            if len != (b - a) as u64 {
                return Err(ShardError::Layout {
                    path: path.into(),
                    msg: format!("row {i} of a batch has {len} input_ids but {} loss_mask values", b - a),
                }
                .into());
            }
            let trained: u64 = mask.values()[a..b].iter().map(|&m| u64::from(m != 0)).sum();
            s.row_len = if s.rows == 0 { [len, len] } else { [s.row_len[0].min(len), s.row_len[1].max(len)] };
            s.rows += 1;
            s.tokens += len;
            s.trained_tokens += trained;
            let src = s.sources.entry(c.source.value(i).to_string()).or_default();
            src.rows += 1;
            src.tokens += len;
            src.trained_tokens += trained;
        }
    }
    Ok(())
}

impl std::fmt::Display for Stats {
    /// The tab-separated table `shards stats` prints: one row per split and source, then the split's total.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "split\tsource\trows\ttokens\ttrained_tokens\tshare\tmask_coverage")?;
        for (split, s) in &self.splits {
            for (name, src) in &s.sources {
                let coverage = src.trained_tokens as f64 / src.tokens.max(1) as f64;
                write!(
                    f,
                    "\n{split}\t{name}\t{}\t{}\t{}\t{:.6}\t{coverage:.6}",
                    src.rows, src.tokens, src.trained_tokens, src.share
                )?;
            }
            write!(f, "\n{split}\t(all)\t{}\t{}\t{}\t1\t{:.6}", s.rows, s.tokens, s.trained_tokens, s.mask_coverage)?;
        }
        Ok(())
    }
}
