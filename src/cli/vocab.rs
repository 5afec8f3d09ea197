//! `langadapt vocab ...`: train, merge, measure and inspect tokenizers.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use langadapt::vocab::{self, merge::Init, train::Backend, ModelType};
use langadapt::Env;
use serde::Serialize;

use super::{emit, To};

#[derive(Debug, Subcommand)]
pub enum VocabCommand {
    /// Train a SentencePiece model (.model, LLaMA conventions) on text files or Parquet text shards.
    Train(TrainArgs),
    /// Append a new model's pieces to a LLaMA-style tokenizer.model (base ids kept); optionally resize a checkpoint.
    Merge(MergeArgs),
    /// Tokens per word/char, bytes per token, byte-fallback and unknown rates, per input and tokenizer.
    Stats {
        /// Tokenizer (tokenizer.model, tokenizer.json or a directory); repeat to compare.
        #[arg(long = "tokenizer", required = true)]
        tokenizers: Vec<PathBuf>,
        /// Text files or Parquet text shards.
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Encode stdin line by line: pieces (default) or ids.
    Encode {
        /// Tokenizer (tokenizer.model, tokenizer.json or a directory).
        #[arg(long)]
        tokenizer: PathBuf,
        /// Print ids instead of pieces.
        #[arg(long)]
        ids: bool,
    },
}

/// `vocab merge` flags: the keys of [`vocab::merge::MergeConfig`].
#[derive(Debug, Args, Serialize)]
pub struct MergeArgs {
    /// Base tokenizer.model (SentencePiece BPE), a directory holding one, or a Hub model id.
    #[arg(long)]
    base: PathBuf,
    /// SentencePiece model whose pieces are added.
    #[arg(long)]
    add: PathBuf,
    /// Output directory (tokenizer files, merge_report.json, manifest.json, model/).
    #[arg(long)]
    out: PathBuf,
    /// Add at most this many pieces.
    #[arg(long)]
    max_added: Option<usize>,
    /// Hugging Face checkpoint (directory or Hub id) to resize into OUT/model/.
    #[arg(long)]
    model: Option<PathBuf>,
    /// How the new embedding rows start.
    #[arg(long)]
    init: Option<Init>,
    /// Seed for --init random.
    #[arg(long)]
    seed: Option<u64>,
    /// Texts to measure tokens per word on before and after the merge (`OUT/fertility.json`).
    #[arg(long)]
    fertility: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    #[serde(skip)]
    json: bool,
}

/// `vocab train` flags: the keys of [`vocab::train::TrainConfig`].
#[derive(Debug, Args, Serialize)]
pub struct TrainArgs {
    /// Text files (one sentence per line) or Parquet text shards (files or directories).
    #[arg(long, required = true, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Total pieces (3 special + 256 bytes + alphabet + learned).
    #[arg(long)]
    vocab_size: usize,
    /// Segmentation model.
    #[arg(long)]
    model_type: Option<ModelType>,
    /// The .model file to write (manifest.json goes beside it).
    #[arg(long)]
    out: PathBuf,
    /// Trainer: tokenizers (pure Rust), or sentencepiece (the C++ trainer; build with --features sentencepiece).
    #[arg(long)]
    backend: Option<Backend>,
    /// Share of character occurrences the alphabet covers; rarer characters fall back to bytes.
    #[arg(long)]
    character_coverage: Option<f64>,
    /// Train on a uniform sample of at most this many sentences.
    #[arg(long)]
    max_sentences: Option<usize>,
    /// Seed of the sample.
    #[arg(long)]
    seed: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    #[serde(skip)]
    json: bool,
}

/// Runs a `vocab` subcommand.
pub fn run(cmd: VocabCommand, env: &Env) -> anyhow::Result<()> {
    match cmd {
        VocabCommand::Train(a) => {
            let cfg: vocab::train::TrainConfig = langadapt::config::layered(None, &[], &a)?;
            emit(&vocab::train::run(&cfg, env)?, a.json, To::Stderr)
        }
        VocabCommand::Merge(a) => {
            // Hub ids are fetched by `vocab::merge::run`, which records them in the manifest.
            let cfg: vocab::merge::MergeConfig = langadapt::config::layered(None, &[], &a)?;
            emit(&vocab::merge::run(&cfg, env)?, a.json, To::Stderr)
        }
        VocabCommand::Stats { tokenizers, input, json } => {
            let rows = vocab::stats::run(&tokenizers, &input, env)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{}", vocab::stats::table(&rows));
            }
            Ok(())
        }
        VocabCommand::Encode { tokenizer, ids } => {
            let tok = vocab::Tokenizer::from_path(&tokenizer)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            Ok(vocab::encode_lines(&tok, std::io::stdin().lock(), &mut out, ids)?)
        }
    }
}
