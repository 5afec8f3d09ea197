//! Resize a Hugging Face checkpoint's vocabulary matrices (input embedding, LM head) to a larger
//! vocabulary, initializing the new rows; everything else is copied unchanged. Works on
//! `model.safetensors` or sharded checkpoints (`model.safetensors.index.json`), f32/f16/bf16 kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// How the new rows are initialized.
#[derive(Debug, Clone)]
pub enum RowInit {
    /// Every new row is the mean of the old rows.
    Mean,
    /// New row `i` is the mean of the old rows listed in `rows[i]` (the base tokenizer's pieces of
    /// the new piece's text); the overall mean where the list is empty.
    SubwordMean(Vec<Vec<u32>>),
    /// Normal noise with the old rows' standard deviation, from `seed`.
    Random {
        /// Seed of the generator.
        seed: u64,
    },
}

/// Errors of [`resize_checkpoint`].
#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The checkpoint is not usable.
    #[error("{path}: {message}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
}

/// What was resized.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResizeReport {
    /// Tensor names whose rows were extended.
    pub resized: Vec<String>,
    /// Vocabulary size before.
    pub old_vocab: usize,
    /// Vocabulary size after.
    pub new_vocab: usize,
}

fn ckpt_err(path: &Path, message: impl Into<String>) -> ResizeError {
    ResizeError::Checkpoint { path: path.into(), message: message.into() }
}

fn is_vocab_matrix(name: &str) -> bool {
    name.ends_with("embed_tokens.weight") || name == "lm_head.weight"
}

/// Copies checkpoint `src` to `dst` with `embed_tokens` and `lm_head` (only the embedding when the
/// head is tied) grown to `new_vocab` rows and `config.json`'s `vocab_size` updated. Files named in
/// `skip` (e.g. tokenizer files the caller writes itself) are not copied.
pub fn resize_checkpoint(
    src: &Path,
    dst: &Path,
    new_vocab: usize,
    init: &RowInit,
    skip: &[&str],
) -> Result<ResizeReport, ResizeError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ResizeError::Io { path: path.clone(), source }
    };
    let config_path = src.join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&config_path).map_err(io(&config_path))?)
        .map_err(|e| ckpt_err(&config_path, format!("not JSON: {e}")))?;
    let old_vocab = config["vocab_size"].as_u64().ok_or_else(|| ckpt_err(&config_path, "no vocab_size"))? as usize;
    if new_vocab < old_vocab {
        return Err(ckpt_err(
            &config_path,
            format!("new vocabulary ({new_vocab}) is smaller than the checkpoint's ({old_vocab})"),
        ));
    }
    let index_path = src.join("model.safetensors.index.json");
    let weight_files: Vec<String> = if index_path.is_file() {
        let index: Value = serde_json::from_slice(&std::fs::read(&index_path).map_err(io(&index_path))?)
            .map_err(|e| ckpt_err(&index_path, format!("not JSON: {e}")))?;
        let mut files: Vec<String> = index["weight_map"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, f)| f.as_str().map(String::from))
            .collect();
        files.sort();
        files.dedup();
        files
    } else if src.join("model.safetensors").is_file() {
        vec!["model.safetensors".into()]
    } else {
        return Err(ckpt_err(
            src,
            "no model.safetensors or model.safetensors.index.json; langadapt resizes safetensors checkpoints",
        ));
    };
    std::fs::create_dir_all(dst).map_err(io(dst))?;
    let mut resized = Vec::new();
    let mut added_bytes = 0i64;
    for file in &weight_files {
        let path = src.join(file);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let st =
            SafeTensors::deserialize(&bytes).map_err(|e| ckpt_err(&path, format!("not a safetensors file: {e}")))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| ckpt_err(&path, e.to_string()))?;
        let mut grown: HashMap<String, Vec<u8>> = HashMap::new();
        for (name, view) in st.iter() {
            if !is_vocab_matrix(name) {
                continue;
            }
            let shape = view.shape();
            if shape.len() != 2 || shape[0] != old_vocab {
                return Err(ckpt_err(&path, format!("{name}: shape {shape:?}, expected [{old_vocab}, hidden]")));
            }
            let data = grow_rows(view.dtype(), view.data(), shape[1], new_vocab - old_vocab, init)
                .map_err(|m| ckpt_err(&path, format!("{name}: {m}")))?;
            added_bytes += (data.len() - view.data().len()) as i64;
            grown.insert(name.to_string(), data);
            resized.push(name.to_string());
        }
        let out = dst.join(file);
        if grown.is_empty() {
            std::fs::copy(&path, &out).map_err(io(&out))?;
            continue;
        }
        let mut views = Vec::new();
        for (name, view) in st.iter() {
            let v = match grown.get(name) {
                Some(d) => safetensors::tensor::TensorView::new(view.dtype(), vec![new_vocab, view.shape()[1]], d)
                    .map_err(|e| ckpt_err(&path, e.to_string()))?,
                None => view,
            };
            views.push((name.to_string(), v));
        }
        let serialized =
            safetensors::serialize(views, meta.metadata().clone()).map_err(|e| ckpt_err(&out, e.to_string()))?;
        crate::io::write_atomic(&out, &serialized).map_err(io(&out))?;
    }
    if !resized.iter().any(|n| n.ends_with("embed_tokens.weight")) {
        return Err(ckpt_err(src, "no *embed_tokens.weight tensor found"));
    }
    config["vocab_size"] = Value::from(new_vocab);
    let mut text = serde_json::to_vec_pretty(&config).map_err(|e| ckpt_err(&config_path, e.to_string()))?;
    text.push(b'\n');
    let out_config = dst.join("config.json");
    crate::io::write_atomic(&out_config, &text).map_err(io(&out_config))?;
    if index_path.is_file() {
        let mut index: Value = serde_json::from_slice(&std::fs::read(&index_path).map_err(io(&index_path))?)
            .map_err(|e| ckpt_err(&index_path, e.to_string()))?;
        if let Some(total) = index["metadata"]["total_size"].as_i64() {
            index["metadata"]["total_size"] = Value::from(total + added_bytes);
        }
        let out = dst.join("model.safetensors.index.json");
        crate::io::write_atomic(&out, &serde_json::to_vec_pretty(&index).unwrap_or_default()).map_err(io(&out))?;
    }
    // Everything else (generation_config.json, README, ...) is copied as is.
    for entry in std::fs::read_dir(src).map_err(io(src))? {
        let entry = entry.map_err(io(src))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let handled = name == "config.json" || name == "model.safetensors.index.json" || weight_files.contains(&name);
        if handled || skip.contains(&name.as_str()) || !entry.path().is_file() {
            continue;
        }
        std::fs::copy(entry.path(), dst.join(&name)).map_err(io(&dst.join(&name)))?;
    }
    Ok(ResizeReport { resized, old_vocab, new_vocab })
}

fn to_f32(dtype: Dtype, data: &[u8]) -> Result<Vec<f32>, String> {
    Ok(match dtype {
        Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        d => return Err(format!("dtype {d:?} is not supported (f32, f16, bf16)")),
    })
}

fn push_as(dtype: Dtype, v: f32, out: &mut Vec<u8>) {
    match dtype {
        Dtype::F16 => out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
        Dtype::BF16 => out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
        _ => out.extend_from_slice(&v.to_le_bytes()),
    }
}

/// The old matrix's bytes followed by `extra` new rows in the same dtype.
fn grow_rows(dtype: Dtype, data: &[u8], hidden: usize, extra: usize, init: &RowInit) -> Result<Vec<u8>, String> {
    let old = to_f32(dtype, data)?;
    let rows = old.len() / hidden.max(1);
    let mean_of = |ids: &mut dyn Iterator<Item = usize>| {
        let mut acc = vec![0f64; hidden];
        let mut n = 0usize;
        for r in ids {
            for (a, v) in acc.iter_mut().zip(&old[r * hidden..(r + 1) * hidden]) {
                *a += f64::from(*v);
            }
            n += 1;
        }
        acc.into_iter().map(|a| (a / n.max(1) as f64) as f32).collect::<Vec<f32>>()
    };
    let mean = mean_of(&mut (0..rows));
    let mut out = Vec::with_capacity(data.len() + extra * hidden * dtype.bitsize() / 8);
    out.extend_from_slice(data);
    match init {
        RowInit::Mean => (0..extra).for_each(|_| mean.iter().for_each(|&v| push_as(dtype, v, &mut out))),
        RowInit::SubwordMean(lists) => {
            if lists.len() != extra {
                return Err(format!("{} subword lists for {extra} new rows", lists.len()));
            }
            for list in lists {
                if let Some(bad) = list.iter().find(|&&i| i as usize >= rows) {
                    return Err(format!("subword id {bad} is outside the {rows} old rows"));
                }
                let row = if list.is_empty() { mean.clone() } else { mean_of(&mut list.iter().map(|&i| i as usize)) };
                row.iter().for_each(|&v| push_as(dtype, v, &mut out));
            }
        }
        RowInit::Random { seed } => {
            let var = old.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / old.len().max(1) as f64
                - mean.iter().map(|&m| f64::from(m).powi(2)).sum::<f64>() / hidden.max(1) as f64;
            let std = var.max(0.0).sqrt();
            let mut rng = crate::rng::SplitMix(*seed);
            for _ in 0..extra * hidden {
                // Box-Muller from two uniforms in (0, 1].
                let u1 = ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
                let u2 = rng.next_f64();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                push_as(dtype, (z * std) as f32, &mut out);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_grow_in_every_dtype_with_exact_means() {
        let rows = [1.0f32, 2.0, 3.0, 6.0]; // 2 rows of hidden 2
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            let mut data = Vec::new();
            rows.iter().for_each(|&v| push_as(dtype, v, &mut data));
            let grown = grow_rows(dtype, &data, 2, 2, &RowInit::SubwordMean(vec![vec![1], vec![]])).unwrap();
            assert_eq!(to_f32(dtype, &grown).unwrap(), [1.0, 2.0, 3.0, 6.0, 3.0, 6.0, 2.0, 4.0], "{dtype:?}");
            let grown = grow_rows(dtype, &data, 2, 1, &RowInit::Mean).unwrap();
            assert_eq!(to_f32(dtype, &grown).unwrap()[4..], [2.0, 4.0]);
        }
        let data: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = grow_rows(Dtype::F32, &data, 2, 3, &RowInit::Random { seed: 1 }).unwrap();
        assert_eq!(a, grow_rows(Dtype::F32, &data, 2, 3, &RowInit::Random { seed: 1 }).unwrap());
        assert_ne!(a, grow_rows(Dtype::F32, &data, 2, 3, &RowInit::Random { seed: 2 }).unwrap());
        assert!(grow_rows(Dtype::F32, &data, 2, 1, &RowInit::SubwordMean(vec![vec![5]]))
            .unwrap_err()
            .contains("outside"));
    }
}
