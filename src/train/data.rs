//! Training rows from token shards, in a seeded order that a step number alone determines (so resuming needs
//! no data cursor beyond the step).

use std::path::Path;

use candle_core::{Device, Tensor};

use super::TrainError;
use crate::corpus::list_shards;
use crate::shards::{TokenRow, TokenShardReader};

/// Every row of a token-shard directory, in memory (4 bytes per token + 1 for the mask).
pub struct Rows {
    rows: Vec<TokenRow>,
    seq_len: usize,
    /// The order of the epoch last asked for: (seed, epoch, permutation).
    order: Option<(u64, u64, Vec<usize>)>,
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

impl Rows {
    /// Reads every row under `path` (a directory of .parquet token shards or one file).
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let files = list_shards(path).map_err(|e| TrainError::Data(e.to_string()))?;
        if files.is_empty() {
            return Err(TrainError::Data(format!(
                "{}: no .parquet token shards here (run `langadapt shards build`)",
                path.display()
            )));
        }
        let mut rows = Vec::new();
        let mut seq_len = None;
        for file in &files {
            for (i, row) in TokenShardReader::open(file).map_err(|e| TrainError::Data(e.to_string()))?.enumerate() {
                let row = row.map_err(|e| TrainError::Data(e.to_string()))?;
                let n = row.input_ids.len();
                let bad_mask = row.loss_mask.len() != n;
                let bad_seg = row.segment_ids.as_ref().is_some_and(|s| s.len() != n);
                if n < 2 || bad_mask || bad_seg || seq_len.is_some_and(|l| l != n) {
                    return Err(TrainError::Data(format!(
                        "{} row {i}: {n} ids, {} mask values{}; every row needs the same length >= 2 (seq_len {})",
                        file.display(),
                        row.loss_mask.len(),
                        row.segment_ids.as_ref().map(|s| format!(", {} segment ids", s.len())).unwrap_or_default(),
                        seq_len.map_or("not set".into(), |l: usize| l.to_string())
                    )));
                }
                seq_len = Some(n);
                rows.push(row);
            }
        }
        let seq_len =
            seq_len.ok_or_else(|| TrainError::Data(format!("{}: the shards hold no rows", path.display())))?;
        Ok(Self { rows, seq_len, order: None })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Tokens per row.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The row indices of micro-batch `micro` (global count since the start), `size` rows, for `seed`:
    /// epoch e visits the rows in a Fisher–Yates order drawn from (seed, e). The current epoch's order is kept,
    /// so a step costs its rows, not a new permutation of the whole set.
    pub fn indices(&mut self, seed: u64, micro: u64, size: usize) -> Vec<usize> {
        let n = self.rows.len() as u64;
        (0..size as u64)
            .map(|k| {
                let pos = micro * size as u64 + k;
                let (epoch, at) = (pos / n, pos % n);
                if self.order.as_ref().is_none_or(|(s, e, _)| (*s, *e) != (seed, epoch)) {
                    self.order = Some((seed, epoch, permutation(seed, epoch, n as usize)));
                }
                self.order.as_ref().map_or(0, |(_, _, p)| p[at as usize])
            })
            .collect()
    }

    /// The tensors of the rows `idx`.
    pub fn batch(&self, idx: &[usize], device: &Device) -> Result<Batch, TrainError> {
        let t = self.seq_len - 1;
        let b = idx.len();
        let (mut input, mut target, mut weight) =
            (Vec::with_capacity(b * t), Vec::with_capacity(b * t), Vec::with_capacity(b * t));
        let mut segments = Vec::new();
        let packed = idx.iter().any(|&i| self.rows[i].segment_ids.is_some());
        for &i in idx {
            let row = &self.rows[i];
            input.extend_from_slice(&row.input_ids[..t]);
            target.extend_from_slice(&row.input_ids[1..]);
            weight.extend(row.loss_mask[1..].iter().map(|&m| f32::from(m)));
            if packed {
                match &row.segment_ids {
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
fn permutation(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut rng = crate::rng::SplitMix(seed ^ epoch.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
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
