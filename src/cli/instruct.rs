//! `langadapt instruct ...`: Alpaca translation and translation-task records.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use langadapt::instruct::{self, translate::ApiKey, Backend};
use langadapt::io::ShardSpec;
use langadapt::Env;
use serde::Serialize;

use super::{emit, To};

#[derive(Debug, Subcommand)]
pub enum InstructCommand {
    /// Translate Alpaca records through a translation API into DIR/translated.jsonl + manifest.json.
    Translate(TranslateArgs),
    /// Make EN<->X translation instructions from a parallel corpus.
    TranslationPairs(PairsArgs),
}

/// `instruct translate` flags: the keys of [`instruct::TranslateConfig`].
#[derive(Debug, Args, Serialize)]
pub struct TranslateArgs {
    /// Alpaca data: JSON array, JSON lines or Parquet (instruction, input, output[, id]).
    #[arg(long)]
    input: PathBuf,
    /// Target language code (e.g. et, tr, fa).
    #[arg(long)]
    target: String,
    /// Source language code (default: en).
    #[arg(long)]
    source: Option<String>,
    /// The translation service (keys from OPENAI_API_KEY, DEEPL_AUTH_KEY, GOOGLE_API_KEY, LIBRETRANSLATE_API_KEY).
    #[arg(long, ignore_case = true)]
    backend: Backend,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Service URL (default: the backend's public API).
    #[arg(long)]
    endpoint: Option<String>,
    /// Model (openai: required; deepl: model_type; google: nmt/base; replay: whose cache entries).
    #[arg(long)]
    model: Option<String>,
    /// Requests in flight at once.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Request rate limit over all workers: R, R/s or R/min.
    #[arg(long, value_parser = instruct::translate::parse_rate)]
    rate: Option<f64>,
    /// Seconds before a request times out.
    #[arg(long)]
    #[serde(rename = "timeout_s")]
    timeout: Option<f64>,
    /// Retries per request after the first attempt.
    #[arg(long)]
    max_retries: Option<u32>,
    /// First retry backoff in milliseconds (doubles per retry, with jitter).
    #[arg(long)]
    backoff_ms: Option<u64>,
    /// Translation cache (default: OUT/cache.jsonl); reruns reuse it.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Translate only the first N records.
    #[arg(long)]
    limit: Option<u64>,
    /// Of those, only records k with k % N == i (one array job per shard, each with its own --out).
    #[arg(long)]
    shard: Option<ShardSpec>,
    #[command(flatten)]
    qa: QaArgs,
    /// Print the report as JSON.
    #[arg(long)]
    #[serde(skip)]
    json: bool,
}

/// The `[qa]` keys of `instruct translate`.
#[derive(Debug, Args, Serialize)]
pub struct QaArgs {
    /// QA: smallest allowed translated/source length ratio.
    #[arg(long = "qa-min-ratio")]
    min_ratio: Option<f64>,
    /// QA: largest allowed translated/source length ratio.
    #[arg(long = "qa-max-ratio")]
    max_ratio: Option<f64>,
}

/// `instruct translation-pairs` flags: the keys of [`instruct::PairsConfig`].
#[derive(Debug, Args, Serialize)]
pub struct PairsArgs {
    /// A TSV or JSONL file of pairs, or two line-aligned files (give --parallel twice: src then tgt).
    #[arg(long, required = true)]
    parallel: Vec<PathBuf>,
    /// Source language code (first column / first file).
    #[arg(long)]
    src: String,
    /// Target language code.
    #[arg(long)]
    tgt: String,
    /// Output JSONL file.
    #[arg(long)]
    out: PathBuf,
    /// Share of pairs per direction, FROM-TO:SHARE (e.g. en-et:0.5; default: half each way).
    #[arg(long)]
    #[serde(skip)]
    ratio: Option<String>,
    /// Share of prompts written in English (the rest in the other language).
    #[arg(long)]
    english_prompts: Option<f64>,
    /// Seed of the per-pair choices.
    #[arg(long)]
    seed: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    #[serde(skip)]
    json: bool,
}

/// Runs an `instruct` subcommand.
pub fn run(cmd: InstructCommand, env: &Env) -> anyhow::Result<()> {
    match cmd {
        InstructCommand::Translate(a) => {
            let mut cfg: instruct::TranslateConfig = langadapt::config::layered(None, &[], &a)?;
            cfg.api_key = ApiKey::from_env(cfg.backend);
            let result = instruct::translate::run(&cfg, env);
            // An incomplete run still wrote what it could: summarise it before its error.
            match &result {
                Ok(report) => emit(report, a.json, To::Stderr)?,
                Err(instruct::InstructError::Incomplete { report, .. }) => emit(report.as_ref(), a.json, To::Stderr)?,
                Err(_) => {}
            }
            result.map(drop).map_err(Into::into)
        }
        InstructCommand::TranslationPairs(a) => {
            let mut cfg: instruct::PairsConfig = langadapt::config::layered(None, &[], &a)?;
            if let Some(r) = &a.ratio {
                cfg.src_to_tgt = instruct::pairs::parse_ratio(r, &cfg.src, &cfg.tgt).map_err(anyhow::Error::msg)?;
            }
            emit(&instruct::pairs::run(&cfg, env)?, a.json, To::Stderr)
        }
    }
}
