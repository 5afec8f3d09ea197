//! `langadapt eval ...` flags (clap) and their translation into `langadapt::eval` calls.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use langadapt::eval::backend::{BackendKind, BackendSpec};
use langadapt::eval::run::ModelInfo;
use langadapt::eval::{self, codeswitch, Results, RunConfig, TaskRegistry};
use langadapt::hub::HubConfig;
use langadapt::Env;

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Score a model on tasks; write results.json shaped like lm-evaluation-harness output.
    Run(RunArgs),
    /// Only build the loglikelihood requests of multiple-choice tasks (JSONL), to diff prompts against lm-eval.
    Requests(RequestsArgs),
    /// Answer loglikelihood requests from a JSONL file (`id`, `context`, `continuation`).
    Score(ScoreArgs),
    /// Side-by-side markdown table of several results.json (e.g. before/after adaptation).
    Compare {
        /// results.json files, in column order.
        #[arg(required = true, num_args = 1..)]
        results: Vec<PathBuf>,
        /// Column labels (default: the file names), comma-separated.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
    },
    /// Code-switching rate of responses produced by any model (JSONL with `response`, `text` or `output`).
    Codeswitch {
        /// The responses.
        #[arg(long)]
        input: PathBuf,
        /// Target language: tr, et, fa, zh (evals/codeswitch.toml).
        #[arg(long)]
        lang: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the tasks the task definitions provide.
    Tasks {
        /// Extra task definitions (*.toml).
        #[arg(long)]
        evals_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct TaskArgs {
    /// Tasks and groups, comma-separated (xcopa_tr, belebele_tur_Latn, ceval-valid, perplexity, codeswitch_tr, ...).
    #[arg(long, value_delimiter = ',', required = true)]
    tasks: Vec<String>,
    /// Root of the downloaded datasets in their released layouts (xcopa/, belebele/, ceval/).
    #[arg(long, default_value = ".")]
    data_dir: PathBuf,
    /// Few-shot examples per prompt.
    #[arg(long, default_value_t = 0)]
    num_fewshot: usize,
    /// Only the first N documents of each task.
    #[arg(long)]
    limit: Option<usize>,
    /// Extra task definitions (*.toml) and prompt sets (prompts/*.jsonl).
    #[arg(long)]
    evals_dir: Option<PathBuf>,
    /// Do not also score data with known defects corrected (e.g. `xcopa_tr_fixed`).
    #[arg(long)]
    no_fixed: bool,
    /// Tokens to generate per response in generation tasks (default: the task's max_tokens).
    #[arg(long)]
    max_gen_tokens: Option<usize>,
}

#[derive(Debug, Args)]
pub struct BackendArgs {
    /// Checkpoint directory (HF layout), or the served model's name with --backend openai.
    #[arg(long)]
    model: String,
    /// `local` (candle) or `openai` (an OpenAI-compatible /v1/completions server; key in OPENAI_API_KEY).
    #[arg(long, default_value = "local")]
    backend: BackendKind,
    /// Server URL for --backend openai.
    #[arg(long)]
    endpoint: Option<String>,
    /// Tokenizer for --backend openai (default: the one in --model when it is a directory).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Context length (default: the model's max_position_embeddings).
    #[arg(long)]
    max_length: Option<usize>,
    /// Requests per batch.
    #[arg(long, default_value_t = eval::backend::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// cpu or cuda[:N] (local backend).
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    tasks: TaskArgs,
    #[command(flatten)]
    backend: BackendArgs,
    /// Text for the perplexity task: .txt, .jsonl (`text`), text-shard .parquet, or a directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// results.json path.
    #[arg(long)]
    out: PathBuf,
    /// Write DIR/{task}.jsonl with every request and its score.
    #[arg(long)]
    log_samples: Option<PathBuf>,
    /// Recorded in results.json (prompts and greedy decoding draw no random numbers).
    #[arg(long, default_value_t = 1234)]
    seed: u64,
}

#[derive(Debug, Args)]
pub struct RequestsArgs {
    #[command(flatten)]
    tasks: TaskArgs,
    /// Output JSONL.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    backend: BackendArgs,
    /// Requests JSONL (`id`, `context`, `continuation`).
    #[arg(long)]
    requests: PathBuf,
    /// Output JSONL (`id`, `ll`, `is_greedy`, `n_cont_tokens`).
    #[arg(long)]
    out: PathBuf,
}

/// Runs an `eval` subcommand.
pub fn run(cmd: EvalCommand, env: &Env) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::Run(a) => {
            let hub = HubConfig::from_env(env.progress);
            let mut spec = a.backend.spec();
            let fetched = spec.fetch_model(&hub)?;
            let mut model = spec.model_info()?;
            if let Some((asked, source)) = fetched {
                (model.model, model.hub) = (asked, Some(source));
            }
            let cfg = run_config(&a.tasks, model, a.out.clone(), Some(hub));
            let perplexity_data = a.data.map(eval::PerplexityData::One);
            let cfg = RunConfig { perplexity_data, log_samples: a.log_samples, seed: a.seed, ..cfg };
            let mut lm = spec.open(env)?;
            // Warnings (e.g. known data defects) are printed by the run and kept in results.json.
            let results = eval::run(&cfg, lm.as_mut(), env)?;
            let label = cfg.model.model.clone();
            print!("{}", eval::results::compare(&[(label, results)]));
            eprintln!("results: {}", a.out.display());
        }
        EvalCommand::Requests(a) => {
            let cfg = run_config(&a.tasks, ModelInfo::none(), a.out.clone(), Some(HubConfig::from_env(env.progress)));
            let n = eval::write_requests(&cfg, &a.out)?;
            eprintln!("{n} requests: {}", a.out.display());
        }
        EvalCommand::Score(a) => {
            let mut spec = a.backend.spec();
            spec.fetch_model(&HubConfig::from_env(env.progress))?;
            let mut lm = spec.open(env)?;
            let n = eval::score_requests(lm.as_mut(), &a.requests, &a.out)?;
            eprintln!("{n} requests scored: {}", a.out.display());
        }
        EvalCommand::Compare { results, labels } => {
            let mut runs = Vec::new();
            for (i, path) in results.iter().enumerate() {
                let label = labels.get(i).cloned().unwrap_or_else(|| path.display().to_string());
                runs.push((label, Results::read(path)?));
            }
            print!("{}", eval::results::compare(&runs));
        }
        EvalCommand::Codeswitch { input, lang, json } => {
            let target = codeswitch::builtin_target(&lang).with_context(|| {
                format!("no code-switching target `{lang}`; known: tr, et, fa, zh (evals/codeswitch.toml)")
            })?;
            let responses = codeswitch::read_responses(&input)?;
            let rep = codeswitch::measure(&responses, &target)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                println!(
                    "{lang}: {}/{} responses code-switch ({:.2}%), {}/{} words foreign ({:.2}%); intruders: {}",
                    rep.switched_responses,
                    rep.responses,
                    100.0 * rep.codeswitch_rate,
                    rep.foreign_words,
                    rep.words,
                    100.0 * rep.foreign_word_share,
                    rep.intruders.iter().take(5).map(|(l, n)| format!("{l} {n}")).collect::<Vec<_>>().join(", ")
                );
            }
        }
        EvalCommand::Tasks { evals_dir } => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            for t in TaskRegistry::load(evals_dir.as_deref())?.patterns() {
                // `?` so that `| head` ends the listing quietly instead of panicking.
                writeln!(out, "{t}")?;
            }
        }
    }
    Ok(())
}

impl BackendArgs {
    /// The library's backend settings.
    fn spec(&self) -> BackendSpec {
        BackendSpec {
            kind: self.backend,
            model: self.model.clone(),
            endpoint: self.endpoint.clone(),
            tokenizer: self.tokenizer.clone(),
            max_length: self.max_length,
            batch_size: self.batch_size,
            device: self.device.clone(),
        }
    }
}

fn run_config(t: &TaskArgs, model: ModelInfo, out: PathBuf, hub: Option<HubConfig>) -> RunConfig {
    RunConfig {
        tasks: t.tasks.clone(),
        data_dir: t.data_dir.clone(),
        num_fewshot: t.num_fewshot,
        limit: t.limit,
        seed: 1234,
        perplexity_data: None,
        prompt_template: None,
        log_samples: None,
        evals_dir: t.evals_dir.clone(),
        fixed_variants: !t.no_fixed,
        max_gen_tokens: t.max_gen_tokens,
        out,
        model,
        hub,
    }
}
