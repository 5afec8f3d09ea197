//! `train.toml`: the keys pinned in DESIGN.md, plus optimizer details; every key can also be a flag.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::model::{LoraConfig, LoraTarget};

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every weight (continual pre-training).
    #[default]
    Full,
    /// Only `train_modules` (embeddings and LM head); the transformer is frozen.
    EmbedAlign,
    /// LoRA factors on `[lora] targets` plus `[lora] modules_to_save`.
    Lora,
    /// Instruction tuning on loss-masked rows: full, or LoRA when `[lora]` is given.
    Sft,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = clap::ValueEnum::to_possible_value(self).ok_or(std::fmt::Error)?;
        f.write_str(value.get_name())
    }
}

/// Learning-rate decay after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Half-cosine from `lr` to `min_lr`.
    #[default]
    Cosine,
    /// Straight line from `lr` to `min_lr`.
    Linear,
    /// `lr` throughout.
    Constant,
}

/// The `[lora]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSection {
    /// Rank.
    #[serde(default = "d_r")]
    pub r: usize,
    /// Scale numerator.
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    /// Dropout on the adapter input.
    #[serde(default = "d_dropout")]
    pub dropout: f32,
    /// Adapted projections.
    #[serde(default = "d_targets")]
    pub targets: Vec<String>,
    /// Modules trained in full beside the adapter.
    #[serde(default)]
    pub modules_to_save: Vec<String>,
}

fn d_r() -> usize {
    8
}
fn d_alpha() -> f64 {
    32.0
}
fn d_dropout() -> f32 {
    0.05
}
fn d_targets() -> Vec<String> {
    LoraTarget::ALL.iter().map(|t| t.name().to_string()).collect()
}

/// A training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Hugging Face checkpoint to start from.
    pub model: PathBuf,
    /// Token-shard directory (or one .parquet) to train on.
    pub train: PathBuf,
    /// Token shards to validate on.
    #[serde(default)]
    pub val: Option<PathBuf>,
    /// Output directory: `final/`, `checkpoints/step-N/`, `metrics.jsonl`, `manifest.json` (a recipe sets it).
    #[serde(default)]
    pub out: PathBuf,
    /// What is trained.
    #[serde(default)]
    pub mode: Mode,
    /// Rows per forward pass.
    #[serde(default = "d_micro")]
    pub micro_batch: usize,
    /// Micro-batches per optimizer step (global batch = micro_batch × grad_accum rows).
    #[serde(default = "d_one")]
    pub grad_accum: usize,
    /// Optimizer steps (wins over `epochs`).
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// Passes over the training rows, when `max_steps` is not given.
    #[serde(default)]
    pub epochs: Option<f64>,
    /// Peak learning rate.
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// Learning rate at the end of the decay.
    #[serde(default)]
    pub min_lr: f64,
    /// Linear warm-up steps from 0.
    #[serde(default)]
    pub warmup_steps: usize,
    /// Decay after warm-up.
    #[serde(default)]
    pub schedule: Schedule,
    /// AdamW decoupled weight decay.
    #[serde(default)]
    pub weight_decay: f64,
    /// Weights whose name contains one of these get no weight decay.
    #[serde(default = "d_no_decay")]
    pub no_decay: Vec<String>,
    /// AdamW β1.
    #[serde(default = "d_beta1")]
    pub beta1: f64,
    /// AdamW β2.
    #[serde(default = "d_beta2")]
    pub beta2: f64,
    /// AdamW ε.
    #[serde(default = "d_eps")]
    pub eps: f64,
    /// Clip the global gradient norm to this (0 = off).
    #[serde(default = "d_clip")]
    pub clip: f64,
    /// Validate every N steps (0 = only at the end when `val` is set).
    #[serde(default)]
    pub eval_every: usize,
    /// Validation rows at most (0 = all).
    #[serde(default)]
    pub eval_rows: usize,
    /// Save a resumable checkpoint every N steps (0 = off).
    #[serde(default)]
    pub save_every: usize,
    /// Seed of data order and dropout.
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "d_device")]
    pub device: String,
    /// Compute dtype: `f32`, `bf16` or `f16` (weights cast from f32 master copies every step; loss in f32;
    /// f16 with dynamic loss scaling).
    #[serde(default = "d_dtype")]
    pub dtype: String,
    /// f16 only: the loss scale of the first step (default 65536 = 2^16, PyTorch GradScaler's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale_init: Option<f64>,
    /// f16 only: good steps in a row before the loss scale doubles (default 2000); an inf/NaN step halves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale_window: Option<usize>,
    /// Base-model weights trained in `embed-align` mode (name substrings).
    #[serde(default = "d_align")]
    pub train_modules: Vec<String>,
    /// For LoRA: also write `final/merged/`, the adapter folded into the base.
    #[serde(default)]
    pub merge_lora: bool,
    /// LoRA settings (mode `lora`, or `sft` with LoRA).
    #[serde(default)]
    pub lora: Option<LoraSection>,
}

fn d_micro() -> usize {
    4
}
fn d_one() -> usize {
    1
}
fn d_lr() -> f64 {
    2e-5
}
fn d_no_decay() -> Vec<String> {
    vec!["norm".into(), "bias".into()]
}
fn d_beta1() -> f64 {
    0.9
}
fn d_beta2() -> f64 {
    0.999
}
fn d_eps() -> f64 {
    1e-8
}
fn d_clip() -> f64 {
    1.0
}
fn d_seed() -> u64 {
    42
}
fn d_device() -> String {
    "cpu".into()
}
fn d_dtype() -> String {
    "f32".into()
}
fn d_align() -> Vec<String> {
    vec!["embed_tokens".into(), "lm_head".into()]
}

impl TrainConfig {
    /// Reads `train.toml` (when given; paths relative to its folder) with `flags` (keys as in the file,
    /// see [`crate::config::layered`]) winning over its keys.
    pub fn load(file: Option<&Path>, flags: &impl Serialize) -> Result<Self, TrainError> {
        Ok(crate::config::layered(file, &["model", "train", "val", "out"], flags)?)
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.out.as_os_str().is_empty() {
            return bad("out is required (the output directory)".into());
        }
        if self.micro_batch == 0 || self.grad_accum == 0 {
            return bad("micro_batch and grad_accum must be >= 1".into());
        }
        if self.max_steps.is_none() && self.epochs.is_none() {
            return bad("set max_steps or epochs".into());
        }
        // NaN fails every comparison, so it is refused too.
        if self.lr.is_nan() || self.lr <= 0.0 || self.min_lr < 0.0 || self.min_lr > self.lr {
            return bad(format!("need 0 <= min_lr ({}) <= lr ({}) and lr > 0", self.min_lr, self.lr));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("beta1 and beta2 must be in [0, 1)".into());
        }
        if !matches!(self.dtype.as_str(), "f32" | "bf16" | "f16") {
            return bad(format!(
                "dtype {:?}: use f32, bf16 or f16 (bf16/f16 compute, f32 master weights and optimizer state)",
                self.dtype
            ));
        }
        let scaling = self.loss_scale_init.is_some() || self.loss_scale_window.is_some();
        if scaling && self.dtype != "f16" {
            return bad(format!(
                "loss_scale_init and loss_scale_window are for dtype = \"f16\" only (dtype is {:?})",
                self.dtype
            ));
        }
        if self.loss_scale_init.is_some_and(|s| !(s.is_finite() && s > 0.0)) || self.loss_scale_window == Some(0) {
            return bad("loss_scale_init must be a finite number > 0 and loss_scale_window >= 1".into());
        }
        match (self.mode, &self.lora) {
            (Mode::Lora, None) => return bad("mode = \"lora\" needs a [lora] table".into()),
            (Mode::Full | Mode::EmbedAlign, Some(_)) => {
                return bad(format!(
                    "[lora] is only used with mode lora or sft, not {}: drop the [lora] table (or the --lora-* \
                     flags), or set mode = \"lora\"",
                    self.mode
                ));
            }
            _ => {}
        }
        self.lora_config()?;
        Ok(())
    }

    /// The loss scaler's starting state and window, for `dtype = "f16"`.
    pub(crate) fn loss_scale(&self) -> Option<(super::scale::LossScale, usize)> {
        (self.dtype == "f16").then(|| {
            let init = self.loss_scale_init.unwrap_or(super::scale::DEFAULT_INIT);
            (super::scale::LossScale::new(init), self.loss_scale_window.unwrap_or(super::scale::DEFAULT_WINDOW))
        })
    }

    /// The LoRA configuration, when training an adapter.
    pub fn lora_config(&self) -> Result<Option<LoraConfig>, TrainError> {
        let Some(l) = &self.lora else { return Ok(None) };
        let targets = l.targets.iter().map(|t| LoraTarget::parse(t)).collect::<Result<Vec<_>, _>>()?;
        let cfg = LoraConfig {
            r: l.r,
            alpha: l.alpha,
            dropout: l.dropout,
            targets,
            modules_to_save: l.modules_to_save.clone(),
            use_rslora: false,
        };
        cfg.validate()?;
        Ok(Some(cfg))
    }
}
