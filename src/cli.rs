//! Command-line flags (clap). Only parsing lives here; every command calls a library stage.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use langadapt::io::ShardSpec;
use langadapt::pipeline::Recipe;
use langadapt::{corpus, instruct, wiki, Env, Progress};

/// Take an English-centric LLaMA-family model to a new language and measure the result.
#[derive(Debug, Parser)]
#[command(name = "langadapt", version, about)]
pub struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a recipe: every stage it lists, in order, into OUT/<stage>/.
    Run {
        /// The recipe (TOML).
        recipe: PathBuf,
        /// Output root (overrides the recipe's `out`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Check the recipe and print the plan without running anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Wikipedia dumps.
    #[command(subcommand)]
    Wiki(WikiCommand),
    /// Text shards.
    #[command(subcommand)]
    Corpus(CorpusCommand),
    /// Instruction data: Alpaca translation, translation-task records.
    #[command(subcommand)]
    Instruct(InstructCommand),
}

#[derive(Debug, Subcommand)]
enum WikiCommand {
    /// Turn a Wikipedia dump into clean text shards (DIR/part-NNNNN.parquet + manifest.json).
    Ingest(IngestArgs),
}

#[derive(Debug, Args)]
struct IngestArgs {
    /// The dump: *-pages-articles[-multistream].xml.bz2, or .xml (UTF-8 or UTF-16 with BOM).
    dump: PathBuf,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Multistream index (*-multistream-index.txt.bz2): decode streams in parallel.
    #[arg(long)]
    index: Option<PathBuf>,
    /// Language code for the records (default: from the dump's siteinfo).
    #[arg(long)]
    lang: Option<String>,
    /// Drop articles whose clean text has fewer characters.
    #[arg(long, default_value_t = 0)]
    min_chars: usize,
    /// Drop disambiguation pages.
    #[arg(long)]
    drop_disambiguation: bool,
    /// Extra disambiguation template name (repeatable).
    #[arg(long = "disambiguation-template")]
    disambiguation_templates: Vec<String>,
    /// Pages (any namespace, dump order) per output part.
    #[arg(long, default_value_t = 50_000)]
    part_pages: u64,
    /// Process only parts k with k % N == i.
    #[arg(long, default_value = "0/1")]
    shard: ShardSpec,
    /// Continue an interrupted run in the same --out.
    #[arg(long)]
    resume: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum CorpusCommand {
    /// Print text shards (a .parquet file or a directory of them) as JSON lines.
    Cat {
        /// Shard file or directory.
        path: PathBuf,
        /// Stop after this many records.
        #[arg(long)]
        limit: Option<usize>,
    },
}

#[derive(Debug, Subcommand)]
enum InstructCommand {
    /// Translate Alpaca records through a translation API into DIR/translated.jsonl + manifest.json.
    Translate(TranslateArgs),
    /// Make EN<->X translation instructions from a parallel corpus.
    TranslationPairs(PairsArgs),
}

#[derive(Debug, Args)]
struct TranslateArgs {
    /// Alpaca data: JSON array, JSON lines or Parquet (instruction, input, output[, id]).
    #[arg(long)]
    input: PathBuf,
    /// Target language code (e.g. et, tr, fa).
    #[arg(long)]
    target: String,
    /// Source language code.
    #[arg(long, default_value = "en")]
    source: String,
    /// openai | deepl | google | libre | replay (keys from OPENAI_API_KEY, DEEPL_AUTH_KEY, GOOGLE_API_KEY, LIBRETRANSLATE_API_KEY).
    #[arg(long)]
    backend: instruct::Backend,
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
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Request rate limit over all workers: R, R/s or R/min.
    #[arg(long, value_parser = instruct::translate::parse_rate)]
    rate: Option<f64>,
    /// Seconds before a request times out.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Retries per request after the first attempt.
    #[arg(long, default_value_t = 5)]
    max_retries: u32,
    /// First retry backoff in milliseconds (doubles per retry, with jitter).
    #[arg(long, default_value_t = 500)]
    backoff_ms: u64,
    /// Translation cache (default: OUT/cache.jsonl); reruns reuse it.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Translate only the first N records.
    #[arg(long)]
    limit: Option<u64>,
    /// QA: smallest allowed translated/source length ratio.
    #[arg(long, default_value_t = 0.5)]
    qa_min_ratio: f64,
    /// QA: largest allowed translated/source length ratio.
    #[arg(long, default_value_t = 2.0)]
    qa_max_ratio: f64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct PairsArgs {
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
    /// Share of pairs per direction, FROM-TO:SHARE (e.g. en-et:0.5).
    #[arg(long)]
    ratio: Option<String>,
    /// Share of prompts written in English (the rest in the other language).
    #[arg(long, default_value_t = 0.5)]
    english_prompts: f64,
    /// Seed of the per-pair choices.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

impl Cli {
    /// Runs the parsed command.
    pub fn run(self) -> anyhow::Result<()> {
        let env = Env { threads: self.threads, progress: Progress { quiet: self.quiet } };
        match self.command {
            Command::Run { recipe, out, dry_run } => run_recipe(&recipe, out, dry_run, &env),
            Command::Wiki(WikiCommand::Ingest(a)) => ingest(a, &env),
            Command::Corpus(CorpusCommand::Cat { path, limit }) => cat(&path, limit),
            Command::Instruct(InstructCommand::Translate(a)) => translate(a, &env),
            Command::Instruct(InstructCommand::TranslationPairs(a)) => translation_pairs(a, &env),
        }
    }
}

fn ingest(a: IngestArgs, env: &Env) -> anyhow::Result<()> {
    let cfg = wiki::IngestConfig {
        dump: a.dump,
        out: a.out,
        index: a.index,
        lang: a.lang,
        min_chars: a.min_chars,
        drop_disambiguation: a.drop_disambiguation,
        disambiguation_templates: a.disambiguation_templates,
        part_pages: a.part_pages,
        shard: a.shard,
        resume: a.resume,
    };
    let report = wiki::run(&cfg, env)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let s = &report.stats;
        let mb = report.bytes_in as f64 / 1e6;
        eprintln!(
            "wiki ingest: {} pages, {} articles written ({} redirects, {} other namespaces, {} too short, {} disambiguation) \
             into {} parts ({} resumed) in {:.1}s ({:.1} MB/s of dump); manifest: {}",
            s.pages,
            s.articles,
            s.redirects,
            s.other_namespaces,
            s.too_short,
            s.disambiguation,
            report.parts.len(),
            report.resumed_parts,
            report.seconds,
            mb / report.seconds.max(1e-9),
            report.manifest.display()
        );
    }
    Ok(())
}

fn translate(a: TranslateArgs, env: &Env) -> anyhow::Result<()> {
    let mut cfg = instruct::TranslateConfig::new(a.input, &a.target, a.backend, a.out);
    cfg.source = a.source;
    cfg.endpoint = a.endpoint;
    cfg.model = a.model;
    cfg.concurrency = a.concurrency;
    cfg.rate = a.rate;
    cfg.timeout_s = a.timeout;
    cfg.max_retries = a.max_retries;
    cfg.backoff_ms = a.backoff_ms;
    cfg.cache = a.cache;
    cfg.limit = a.limit;
    cfg.qa.min_ratio = a.qa_min_ratio;
    cfg.qa.max_ratio = a.qa_max_ratio;
    cfg.api_key = instruct::translate::ApiKey::from_env(a.backend);
    let report = instruct::translate::run(&cfg, env)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    let c = |k: &str| report.counts.get(k).copied().unwrap_or(0);
    eprintln!(
        "instruct translate: {} of {} records translated ({} fields sent, {} from cache, {} requests, {} retried, \
         {} characters billed, {} LLM tokens) in {:.1}s; QA: {} empty, {} identical, {} length ratio, {} source language; \
         manifest: {}",
        c("records_translated"),
        c("records"),
        c("fields_sent"),
        c("fields_from_cache"),
        c("requests"),
        c("retried"),
        c("characters_billed"),
        c("llm_tokens"),
        report.seconds,
        c("qa_empty"),
        c("qa_identical"),
        c("qa_length_ratio"),
        c("qa_source_language"),
        report.manifest.display()
    );
    let failed = c("records_failed");
    anyhow::ensure!(
        failed == 0,
        "{failed} records could not be translated (ids and reasons in {}); rerun to retry them, the cache keeps the rest",
        report.failed.display()
    );
    Ok(())
}

fn translation_pairs(a: PairsArgs, env: &Env) -> anyhow::Result<()> {
    let src_to_tgt = match &a.ratio {
        Some(r) => instruct::pairs::parse_ratio(r, &a.src, &a.tgt).map_err(anyhow::Error::msg)?,
        None => 0.5,
    };
    let cfg = instruct::PairsConfig {
        parallel: a.parallel,
        src: a.src,
        tgt: a.tgt,
        out: a.out,
        src_to_tgt,
        english_prompts: a.english_prompts,
        seed: a.seed,
    };
    let r = instruct::pairs::run(&cfg, env)?;
    eprintln!(
        "instruct translation-pairs: {} records ({} {}->{}, {} {}->{}; {} English prompts; {} empty pairs skipped); manifest: {}",
        r.records,
        r.src_to_tgt,
        cfg.src,
        cfg.tgt,
        r.tgt_to_src,
        cfg.tgt,
        cfg.src,
        r.english_prompts,
        r.skipped_empty,
        r.manifest.display()
    );
    Ok(())
}

fn cat(path: &std::path::Path, limit: Option<usize>) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut n = 0usize;
    for file in corpus::list_shards(path)? {
        for rec in corpus::TextShardReader::open(&file)? {
            if limit.is_some_and(|l| n >= l) {
                return Ok(out.flush()?);
            }
            let rec = rec?;
            let mut line = serde_json::to_string(&rec)?;
            line.push('\n');
            out.write_all(line.as_bytes())?;
            n += 1;
        }
    }
    Ok(out.flush()?)
}

fn run_recipe(path: &std::path::Path, out: Option<PathBuf>, dry_run: bool, env: &Env) -> anyhow::Result<()> {
    let mut recipe = Recipe::load(path)?;
    if let Some(out) = out {
        recipe.out = out;
    }
    if dry_run {
        for (stage, dir) in recipe.plan() {
            println!("{stage}\t{}", dir.display());
        }
        return Ok(());
    }
    let report = recipe.run(env)?;
    for (stage, dir) in &report.stages {
        eprintln!("{stage}: {}", dir.display());
    }
    eprintln!("done: outputs under {}", report.out.display());
    Ok(())
}
