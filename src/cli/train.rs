//! `langadapt train`: every key of train.toml can also be given as a flag, which wins over the file.

use std::path::PathBuf;

use clap::Args;
use langadapt::train::{self, Mode, Schedule};
use langadapt::Env;
use serde::Serialize;

use super::{emit, To};

/// `train` flags: the keys of [`train::TrainConfig`] (README "train.toml"), each winning over --config.
#[derive(Debug, Args, Serialize)]
pub struct TrainArgs {
    /// train.toml (keys in DESIGN.md / README).
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Continue from OUT/checkpoints/step-N of a run with the same settings (another --out is allowed).
    #[arg(long)]
    #[serde(skip)]
    resume: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    #[serde(skip)]
    json: bool,
    /// Hugging Face checkpoint to start from: a directory or a Hub id org/name[@revision] (`model`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Token-shard directory (or one .parquet) to train on (`train`).
    #[arg(long)]
    train: Option<PathBuf>,
    /// Token shards to validate on (`val`).
    #[arg(long)]
    val: Option<PathBuf>,
    /// Output directory: final/, checkpoints/step-N/, metrics.jsonl, manifest.json (`out`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// What is trained (`mode`).
    #[arg(long)]
    mode: Option<Mode>,
    /// Rows per forward pass (`micro_batch`).
    #[arg(long)]
    micro_batch: Option<usize>,
    /// Micro-batches per optimizer step; global batch = micro_batch x grad_accum rows (`grad_accum`).
    #[arg(long)]
    grad_accum: Option<usize>,
    /// Optimizer steps; wins over --epochs (`max_steps`).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Passes over the training rows when --max-steps is not given (`epochs`).
    #[arg(long)]
    epochs: Option<f64>,
    /// Peak learning rate (`lr`).
    #[arg(long)]
    lr: Option<f64>,
    /// Learning rate at the end of the decay (`min_lr`).
    #[arg(long)]
    min_lr: Option<f64>,
    /// Linear warm-up steps from 0 (`warmup_steps`).
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// Decay after warm-up (`schedule`).
    #[arg(long)]
    schedule: Option<Schedule>,
    /// AdamW decoupled weight decay (`weight_decay`).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Clip the global gradient norm to this, 0 = off (`clip`).
    #[arg(long)]
    clip: Option<f64>,
    /// Validate every N steps, 0 = only at the end when --val is set (`eval_every`).
    #[arg(long)]
    eval_every: Option<usize>,
    /// Save a resumable checkpoint every N steps, 0 = off (`save_every`).
    #[arg(long)]
    save_every: Option<usize>,
    /// Seed of data order, LoRA initialisation and dropout (`seed`).
    #[arg(long)]
    seed: Option<u64>,
    /// cpu, cuda or cuda:N (`device`).
    #[arg(long)]
    device: Option<String>,
    /// Compute dtype: f32, bf16, or f16 with dynamic loss scaling (`dtype`).
    #[arg(long)]
    dtype: Option<String>,
    /// f16: the first step's loss scale (`loss_scale_init`).
    #[arg(long)]
    loss_scale_init: Option<f64>,
    /// f16: good steps before the loss scale doubles (`loss_scale_window`).
    #[arg(long)]
    loss_scale_window: Option<usize>,
    /// Name substrings of weights without weight decay, comma-separated (`no_decay`).
    #[arg(long, value_delimiter = ',')]
    no_decay: Option<Vec<String>>,
    /// AdamW beta1 (`beta1`).
    #[arg(long)]
    beta1: Option<f64>,
    /// AdamW beta2 (`beta2`).
    #[arg(long)]
    beta2: Option<f64>,
    /// AdamW epsilon (`eps`).
    #[arg(long)]
    eps: Option<f64>,
    /// Validation rows at most, 0 = all (`eval_rows`).
    #[arg(long)]
    eval_rows: Option<usize>,
    /// Base weights trained in embed-align mode, name substrings, comma-separated (`train_modules`).
    #[arg(long, value_delimiter = ',')]
    train_modules: Option<Vec<String>>,
    /// For LoRA: also write final/merged/ (`merge_lora`).
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    merge_lora: bool,
    #[command(flatten)]
    lora: LoraArgs,
    /// Start N local ranks of a data-parallel run (like torchrun --nproc-per-node); without it, ranks come
    /// from RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT or SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID.
    #[arg(long, value_name = "N")]
    #[serde(skip)]
    nproc_per_node: Option<usize>,
}

/// The `[lora]` keys, each changing one key of the file's table.
#[derive(Debug, Args, Serialize)]
pub struct LoraArgs {
    /// [lora] r: the rank.
    #[arg(long = "lora-r")]
    r: Option<usize>,
    /// [lora] alpha: the scale numerator.
    #[arg(long = "lora-alpha")]
    alpha: Option<f64>,
    /// [lora] dropout on the adapter input.
    #[arg(long = "lora-dropout")]
    dropout: Option<f64>,
    /// [lora] targets: adapted projections, comma-separated.
    #[arg(long = "lora-targets", value_delimiter = ',')]
    targets: Option<Vec<String>>,
    /// [lora] modules_to_save: modules trained in full beside the adapter, comma-separated.
    #[arg(long = "lora-modules-to-save", value_delimiter = ',')]
    modules_to_save: Option<Vec<String>>,
}

/// Runs `train`.
pub fn run(a: TrainArgs, env: &Env) -> anyhow::Result<()> {
    if let Some(n) = a.nproc_per_node {
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        return Ok(langadapt::dist::launch_local(n, &args)?);
    }
    let ranks = langadapt::dist::RankEnv::from_env()?;
    // A Hub id is fetched by `train::run_ranked`, which records it in the manifest.
    let cfg = train::TrainConfig::load(a.config.as_deref(), &a)?;
    let report = train::run_ranked(&cfg, a.resume.as_deref(), env, ranks.as_ref())?;
    // Rank 0 reports for the job.
    if ranks.is_some_and(|r| r.rank > 0) {
        return Ok(());
    }
    emit(&report, a.json, To::Stderr)
}
