//! `langadapt shards ...` and `langadapt corpus cat`: token shards for training, text shards as JSON lines.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use langadapt::io::ShardSpec;
use langadapt::shards::{self, Kind, LastRow, MaxLenPolicy, SourceConfig};
use langadapt::{corpus, Env};
use serde::Serialize;

use super::{emit, To};

#[derive(Debug, Subcommand)]
pub enum ShardsCommand {
    /// Mix, tokenize and pack sources into DIR/{train,val}/part-NNNNN.parquet + manifest.json + stats.json.
    Build(Box<BuildArgs>),
    /// Recompute a shards directory's statistics from its Parquet files alone.
    Stats {
        /// The --out of `shards build`.
        dir: PathBuf,
        /// Print JSON (the layout of stats.json) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CorpusCommand {
    /// Print text shards (a .parquet file or a directory of them) as JSON lines.
    Cat {
        /// Shard file or directory.
        path: PathBuf,
        /// Stop after this many records.
        #[arg(long)]
        limit: Option<usize>,
    },
}

/// `shards build` flags: the keys of [`shards::BuildConfig`], each winning over the same key of --config;
/// without --config, --source describes the one source.
#[derive(Debug, Args, Serialize)]
pub struct BuildArgs {
    /// The mixture (TOML): tokenizer, kind, seq_len, seed, val_share, template, [[sources]], ...
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Tokenizer: tokenizer.json, tokenizer.model, or a checkpoint directory.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    #[command(flatten)]
    #[serde(rename = "sources")]
    source: OneSource,
    /// Documents become pretraining rows or SFT examples.
    #[arg(long)]
    kind: Option<Kind>,
    /// Tokens per row.
    #[arg(long)]
    seq_len: Option<usize>,
    /// Seed of the validation split and of mixture subsets.
    #[arg(long)]
    seed: Option<u64>,
    /// Share of documents held out for validation.
    #[arg(long)]
    val_share: Option<f64>,
    /// SFT template: alpaca, alpaca_tr, alpaca_et, alpaca_fa, alpaca_zh, chat.
    #[arg(long)]
    template: Option<String>,
    /// BOS at the start of every document (true/false).
    #[arg(long)]
    add_bos: Option<bool>,
    /// EOS after every document (true/false).
    #[arg(long)]
    add_eos: Option<bool>,
    /// The last partial row.
    #[arg(long)]
    last_row: Option<LastRow>,
    /// SFT: pack several examples per row (segment_ids column).
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pack: bool,
    /// SFT examples longer than seq_len.
    #[arg(long)]
    max_len_policy: Option<MaxLenPolicy>,
    /// Trained tokens of the training split (all sources by share).
    #[arg(long)]
    train_tokens: Option<u64>,
    /// Rows per output part.
    #[arg(long)]
    rows_per_part: Option<u64>,
    /// This process's documents: those with index % N == i in every source.
    #[arg(long)]
    shard: Option<ShardSpec>,
    /// Print the report as JSON.
    #[arg(long)]
    #[serde(skip)]
    json: bool,
}

/// The one source of a `shards build` without --config, as the `sources` key: a list of one, or nothing.
#[derive(Debug, Args)]
pub struct OneSource {
    /// The one source (without --config): text-shard dir, .parquet, .jsonl or .txt.
    #[arg(long)]
    source: Option<PathBuf>,
    /// Its name (default: the file stem).
    #[arg(long)]
    name: Option<String>,
    /// Its language code (default: und).
    #[arg(long)]
    lang: Option<String>,
}

impl Serialize for OneSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Some(path) = &self.source else { return s.serialize_none() };
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| path.file_stem().map_or_else(|| "source".into(), |n| n.to_string_lossy().into_owned()));
        let lang = self.lang.clone().unwrap_or_else(|| "und".into());
        let one = SourceConfig { name, path: path.clone(), lang, share: None, epochs: Some(1.0), limit: None };
        [one].serialize(s)
    }
}

/// Runs a `shards` subcommand.
pub fn run(cmd: ShardsCommand, env: &Env) -> anyhow::Result<()> {
    match cmd {
        ShardsCommand::Build(a) => {
            match &a.config {
                Some(_) => anyhow::ensure!(
                    a.source.source.is_none(),
                    "--source describes a single source; with --config add it as [[sources]]"
                ),
                None => anyhow::ensure!(
                    a.tokenizer.is_some() && a.source.source.is_some() && a.seq_len.is_some(),
                    "give --config mix.toml, or --tokenizer, --source and --seq-len for a single source"
                ),
            }
            let cfg = shards::BuildConfig::load(a.config.as_deref(), &*a)?;
            let origin = a.config.clone().unwrap_or_else(|| PathBuf::from("flags"));
            emit(&shards::run(&cfg, &origin, env)?, a.json, To::Stderr)
        }
        ShardsCommand::Stats { dir, json } => emit(&shards::stats(&dir)?, json, To::Stdout),
    }
}

/// Runs a `corpus` subcommand.
pub fn run_corpus(cmd: CorpusCommand) -> anyhow::Result<()> {
    let CorpusCommand::Cat { path, limit } = cmd;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    Ok(corpus::write_jsonl(&path, limit, &mut out)?)
}
