//! `langadapt model ...`: inspect a checkpoint, generate, merge a LoRA adapter.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use langadapt::{hub, model, Env};

use super::{emit, To};

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Architecture, parameters, dtype and tokenizer of a Hugging Face checkpoint.
    Info {
        /// Checkpoint directory (config.json + safetensors) or Hub id (org/name[@revision]).
        ckpt: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Generate text from a prompt.
    Generate(GenerateArgs),
    /// Log-probability of every token after the first of each sequence, and the scoring speed (JSON).
    Score(ScoreArgs),
    /// Fold a PEFT LoRA adapter into its base checkpoint.
    MergeLora {
        /// Base checkpoint directory or Hub id.
        base: PathBuf,
        /// Adapter directory (adapter_config.json + adapter_model.safetensors).
        adapter: PathBuf,
        /// Output checkpoint directory.
        #[arg(long)]
        out: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Checkpoint directory or Hub id.
    ckpt: PathBuf,
    /// JSON lines, each an array of token ids (one sequence per line).
    #[arg(long)]
    ids: PathBuf,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Scoring rounds; the fastest after the first is reported.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Leave the per-token log-probabilities out of the JSON.
    #[arg(long)]
    no_logprobs: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Checkpoint directory or Hub id.
    ckpt: PathBuf,
    /// The prompt, encoded as transformers does with `add_special_tokens=True` (BOS first when the tokenizer
    /// adds one: `add_bos_token` in tokenizer_config.json, its post-processor, or SentencePiece's default).
    #[arg(long)]
    prompt: String,
    /// New tokens at most.
    #[arg(long, default_value_t = model::GenerateOptions::default().max_new_tokens)]
    max_new_tokens: usize,
    /// Greedy decoding (same as --temperature 0).
    #[arg(long)]
    greedy: bool,
    /// Sampling temperature (0 = greedy; the library's default is greedy, the command samples unless --greedy).
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 0.9)]
    top_p: f64,
    /// Sampling seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Stop sequence (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Keep generating past EOS.
    #[arg(long)]
    ignore_eos: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

impl GenerateArgs {
    /// The library's generation settings.
    fn options(&self) -> model::GenerateOptions {
        model::GenerateOptions {
            max_new_tokens: self.max_new_tokens,
            temperature: if self.greedy { 0.0 } else { self.temperature },
            top_p: self.top_p,
            seed: self.seed,
            stop: self.stop.clone(),
            stop_at_eos: !self.ignore_eos,
        }
    }
}

/// A checkpoint argument: an existing local path as given, else `org/name[@revision]` fetched from the Hub.
fn checkpoint_path(p: &Path, env: &Env) -> anyhow::Result<PathBuf> {
    Ok(hub::resolve_model(&p.to_string_lossy(), &hub::HubConfig::from_env(env.progress))?.path)
}

/// Runs a `model` subcommand.
pub fn run(cmd: ModelCommand, env: &Env) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Info { ckpt, json } => {
            emit(&model::Checkpoint::open(&checkpoint_path(&ckpt, env)?)?.info()?, json, To::Stdout)
        }
        ModelCommand::Generate(a) => {
            let ckpt = model::Checkpoint::open(&checkpoint_path(&a.ckpt, env)?)?;
            let llama = ckpt.load(&model::parse_device(&a.device)?, model::parse_dtype(&a.dtype)?)?;
            let tokenizer = ckpt.tokenizer()?;
            let prompt = tokenizer.encode(&a.prompt, tokenizer.adds_bos())?;
            let out = model::generate(&llama, &tokenizer, &[prompt], &a.options())?;
            println!("{}", out[0].text);
            Ok(())
        }
        ModelCommand::Score(a) => {
            let ckpt = model::Checkpoint::open(&checkpoint_path(&a.ckpt, env)?)?;
            let device = model::parse_device(&a.device)?;
            let scorer = model::Scorer::new(ckpt.load(&device, model::parse_dtype(&a.dtype)?)?, a.batch_size);
            let sequences = model::read_id_lines(&a.ids)?;
            let mut run = model::score_sequences(&scorer, &sequences, a.rounds)?;
            if a.no_logprobs {
                run.logprobs.clear();
            }
            println!("{}", serde_json::to_string(&run)?);
            Ok(())
        }
        ModelCommand::MergeLora { base, adapter, out, json } => {
            emit(&model::merge_lora(&checkpoint_path(&base, env)?, &adapter, &out)?, json, To::Stderr)
        }
    }
}
