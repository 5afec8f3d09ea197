//! `langadapt eval ...` flags (clap) and their translation into `langadapt::eval` calls.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use langadapt::eval::backend::BackendKind;
use langadapt::eval::run::ModelInfo;
use langadapt::eval::{self, codeswitch, EvalConfig, Results, TaskRegistry};
use langadapt::hub::HubConfig;
use langadapt::Env;
use serde::Serialize;

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Score a model on tasks; write results.json shaped like lm-evaluation-harness output.
    Run(Box<RunArgs>),
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
        /// English retention: TARGET:ENGLISH language codes (e.g. tur_Latn:eng_Latn,tr:en); with two
        /// results, each target-language task is shown beside its English twin, both with their change.
        #[arg(long, value_delimiter = ',')]
        retention: Vec<String>,
    },
    /// Code-switching rate of responses produced by any model (JSONL with `response`, `text` or `output`).
    Codeswitch {
        /// The responses.
        #[arg(long)]
        input: PathBuf,
        /// Target language: an instance of evals/codeswitch.toml (tr, et, fa, zh) or of --evals-dir's.
        #[arg(long)]
        lang: String,
        /// Extra task definitions (*.toml) whose codeswitch instances add or replace targets.
        #[arg(long)]
        evals_dir: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Corpus score of existing outputs: BLEU/chrF/chrF++ as sacrebleu 2.x, EM/F1 as the SQuAD v1.1 script (JSON).
    Metric {
        /// bleu, chrf, chrf++ or squad.
        name: eval::textmetrics::TextMetric,
        /// One prediction per line.
        #[arg(long)]
        predictions: PathBuf,
        /// References aligned by line (repeat for more reference streams); for squad one JSONL file with a
        /// list of gold answers per line.
        #[arg(long, required = true)]
        references: Vec<PathBuf>,
        /// Target language code (zh picks BLEU's zh tokenizer; the language picks SQuAD's article list).
        #[arg(long)]
        lang: Option<String>,
        /// BLEU tokenizer instead of the language's (13a, zh, intl, none).
        #[arg(long)]
        tokenize: Option<eval::textmetrics::BleuTokenizer>,
        /// Case-insensitive BLEU/chrF.
        #[arg(long)]
        lowercase: bool,
        /// SQuAD: articles removed before comparing, comma-separated (default: the language's; English
        /// without --lang, as the official script); `--articles ''` for none.
        #[arg(long, value_delimiter = ',')]
        articles: Option<Vec<String>>,
    },
    /// List the tasks the task definitions provide.
    Tasks {
        /// Extra task definitions (*.toml).
        #[arg(long)]
        evals_dir: Option<PathBuf>,
    },
}

/// The task keys of [`eval::EvalConfig`].
#[derive(Debug, Args, Serialize)]
pub struct TaskArgs {
    /// Tasks and groups, comma-separated (xcopa_tr, belebele_tur_Latn, ceval-valid, perplexity, codeswitch_tr, ...).
    #[arg(long, value_delimiter = ',', required = true)]
    tasks: Vec<String>,
    /// Root of the downloaded datasets in their released layouts (xcopa/, belebele/, ceval/; default: .).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Few-shot examples per prompt.
    #[arg(long)]
    num_fewshot: Option<usize>,
    /// Only the first N documents of each task.
    #[arg(long)]
    limit: Option<usize>,
    /// Extra task definitions (*.toml) and prompt sets (prompts/*.jsonl).
    #[arg(long)]
    evals_dir: Option<PathBuf>,
    /// Do not also score data with known defects corrected (e.g. `xcopa_tr_fixed`).
    #[arg(long)]
    #[serde(skip)]
    no_fixed: bool,
    /// Tokens to generate per response in generation tasks (default: the task's max_tokens).
    #[arg(long)]
    max_gen_tokens: Option<usize>,
    /// Judge model of LLM-judged tasks (llm_eval_*, pairwise_*), e.g. gpt-4-turbo.
    #[arg(long)]
    judge_model: Option<String>,
    /// OpenAI-compatible server of the judge (default: https://api.openai.com/v1).
    #[arg(long)]
    judge_endpoint: Option<String>,
    /// Environment variable holding the judge's API key (default: OPENAI_API_KEY).
    #[arg(long)]
    judge_api_key_env: Option<String>,
    /// Judgement cache: judgements are appended here and never asked again (default: judgements.jsonl beside --out).
    #[arg(long)]
    judge_cache: Option<PathBuf>,
    /// Reference model's answers for pairwise judging (JSONL with `prompt` and `response`).
    #[arg(long)]
    judge_reference: Option<PathBuf>,
    /// Judge requests in flight at once (default: 4).
    #[arg(long)]
    judge_workers: Option<usize>,
}

/// The model keys of [`eval::EvalConfig`].
#[derive(Debug, Args, Serialize)]
pub struct BackendArgs {
    /// Checkpoint directory (HF layout) or Hub id org/name[@revision], or the served model's name with --backend openai.
    #[arg(long)]
    model: String,
    /// `local` (candle) or `openai` (an OpenAI-compatible /v1/completions server; key in OPENAI_API_KEY).
    #[arg(long)]
    backend: Option<BackendKind>,
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
    #[arg(long)]
    batch_size: Option<usize>,
    /// Padded tokens per scoring batch at most, so long documents make small batches (local backend;
    /// default: a quarter of the available memory over the model's activation bytes per token).
    #[arg(long)]
    max_batch_tokens: Option<usize>,
    /// cpu or cuda[:N] (local backend).
    #[arg(long)]
    device: Option<String>,
}

#[derive(Debug, Args, Serialize)]
pub struct RunArgs {
    #[command(flatten)]
    #[serde(flatten)]
    tasks: TaskArgs,
    #[command(flatten)]
    #[serde(flatten)]
    backend: BackendArgs,
    /// Text for the perplexity task: .txt, .jsonl (`text`), text-shard .parquet, or a directory.
    #[arg(long)]
    #[serde(rename = "perplexity_data")]
    data: Option<PathBuf>,
    /// results.json path.
    #[arg(long)]
    #[serde(rename = "results")]
    out: PathBuf,
    /// Write DIR/samples_{task}.jsonl with every request and its score (lm-eval --log_samples).
    #[arg(long)]
    log_samples: Option<PathBuf>,
    /// Recorded in results.json (prompts and greedy decoding draw no random numbers).
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Debug, Args, Serialize)]
pub struct RequestsArgs {
    #[command(flatten)]
    #[serde(flatten)]
    tasks: TaskArgs,
    /// Output JSONL.
    #[arg(long)]
    #[serde(skip)]
    out: PathBuf,
}

#[derive(Debug, Args, Serialize)]
pub struct ScoreArgs {
    #[command(flatten)]
    #[serde(flatten)]
    backend: BackendArgs,
    /// Requests JSONL (`id`, `context`, `continuation`).
    #[arg(long)]
    #[serde(skip)]
    requests: PathBuf,
    /// Output JSONL (`id`, `ll`, `is_greedy`, `n_cont_tokens`).
    #[arg(long)]
    #[serde(skip)]
    out: PathBuf,
}

/// The settings the flags give (the library's defaults for the rest).
fn config(flags: &impl Serialize, tasks: Option<&TaskArgs>) -> anyhow::Result<EvalConfig> {
    let mut cfg: EvalConfig = langadapt::config::layered(None, &[], flags)?;
    cfg.fixed_variants &= !tasks.is_some_and(|t| t.no_fixed);
    Ok(cfg)
}

/// Runs an `eval` subcommand.
pub fn run(cmd: EvalCommand, env: &Env) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::Run(a) => {
            let cfg = config(&a, Some(&a.tasks))?;
            // Warnings (e.g. known data defects) are printed by the run and kept in results.json.
            let results = cfg.run(env)?;
            print!("{}", eval::results::compare(&[(cfg.model.display().to_string(), results)]));
            eprintln!("results: {}", a.out.display());
        }
        EvalCommand::Requests(a) => {
            let cfg = config(&a, Some(&a.tasks))?;
            let n = eval::write_requests(&cfg.run_config(ModelInfo::none()), &a.out)?;
            eprintln!("{n} requests: {}", a.out.display());
        }
        EvalCommand::Score(a) => {
            let mut spec = config(&a, None)?.backend_spec();
            spec.fetch_model(&HubConfig::from_env(env.progress))?;
            let n = eval::score_requests(spec.open(env)?.as_mut(), &a.requests, &a.out)?;
            eprintln!("{n} requests scored: {}", a.out.display());
        }
        EvalCommand::Compare { results, labels, retention } => {
            let mut runs = Vec::new();
            for (i, path) in results.iter().enumerate() {
                let label = labels.get(i).cloned().unwrap_or_else(|| path.display().to_string());
                runs.push((label, Results::read(path)?));
            }
            if retention.is_empty() {
                print!("{}", eval::results::compare(&runs));
            } else {
                let pairs = retention
                    .iter()
                    .map(|p| {
                        p.split_once(':').map(|(t, e)| (t.to_string(), e.to_string())).with_context(|| {
                            format!("--retention {p}: expected TARGET:ENGLISH codes, e.g. tur_Latn:eng_Latn")
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let [before, after] = &runs[..] else {
                    anyhow::bail!("--retention compares two results.json (before, after); {} given", runs.len());
                };
                print!("{}", eval::results::retention(before, after, &pairs));
            }
        }
        EvalCommand::Codeswitch { input, lang, json, evals_dir } => {
            let registry = TaskRegistry::load(evals_dir.as_deref())?;
            let target = registry.codeswitch_target(&lang).with_context(|| {
                format!("no code-switching target `{lang}`; known: {}", registry.codeswitch_langs().join(", "))
            })?;
            let rep = codeswitch::measure(&codeswitch::read_responses(&input)?, target)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                println!("{lang}: {rep}");
            }
        }
        EvalCommand::Metric { name, predictions, references, lang, tokenize, lowercase, articles } => {
            let articles = articles.map(|a| a.into_iter().filter(|w| !w.is_empty()).collect());
            let opts = eval::textmetrics::MetricOptions { lang, tokenize, lowercase, articles };
            let scores = eval::textmetrics::score_files(name, &predictions, &references, &opts)?;
            let out =
                if scores.len() == 1 { serde_json::to_value(&scores[0])? } else { serde_json::to_value(&scores)? };
            println!("{}", serde_json::to_string_pretty(&out)?);
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
