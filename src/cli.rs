//! Command-line flags (clap). Only parsing lives here; every command calls a library stage.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use langadapt::io::ShardSpec;
use langadapt::pipeline::Recipe;
use langadapt::{corpus, instruct, model, shards, train, vocab, wiki, Env, Progress};

mod eval;
use eval::EvalCommand;

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
        /// Run this stage and the ones after it (earlier ones are not run or checked).
        #[arg(long)]
        from: Option<String>,
        /// Run only this stage.
        #[arg(long)]
        only: Option<String>,
        /// Lay the recipe's `[smoke]` table over it (bundled samples, tiny model) and cap every training at
        /// a few steps and every eval at a few documents: checks the whole recipe end to end in minutes.
        #[arg(long)]
        smoke: bool,
        /// Print JSON: with --dry-run the resolved recipe (every stage's full settings, absolute paths),
        /// otherwise what each stage did.
        #[arg(long)]
        json: bool,
    },
    /// Wikipedia dumps.
    #[command(subcommand)]
    Wiki(WikiCommand),
    /// Text shards.
    #[command(subcommand)]
    Corpus(CorpusCommand),
    /// LLaMA-family checkpoints: inspect, generate, merge LoRA adapters.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Train a checkpoint on token shards: full, embed-align, lora or sft.
    Train(Box<TrainArgs>),
    /// Re-hash every file the manifests under DIR list and check that they explain each other (exit 1 if not).
    Audit {
        /// A run's output directory.
        dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write DIR/report/report.md and SVG plots (loss, learning rate, mixture, fertility, eval) from a run's stages.
    Report {
        /// A run's output directory (the stages' manifests are read from it).
        dir: PathBuf,
    },
    /// Vocabulary: train, merge, measure, inspect tokenizers.
    #[command(subcommand)]
    Vocab(VocabCommand),
    /// Token shards for training: mix, tokenize, pack.
    #[command(subcommand)]
    Shards(ShardsCommand),
    /// Evaluation: XCOPA, Belebele, C-Eval, perplexity, code-switching (lm-evaluation-harness compatible).
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Instruction data: Alpaca translation, translation-task records.
    #[command(subcommand)]
    Instruct(InstructCommand),
}

#[derive(Debug, Subcommand)]
enum WikiCommand {
    /// Turn a Wikipedia dump into clean text shards (DIR/part-NNNNN.parquet + manifest.json).
    Ingest(IngestArgs),
    /// Download a dump (pages-articles-multistream + its index) by language and date, resumable and sha1-checked.
    Download(WikiDownloadArgs),
}

#[derive(Debug, Args)]
struct WikiDownloadArgs {
    /// Wikipedia language code (tr, et, fa, zh).
    lang: String,
    /// Dump date YYYYMMDD, or `latest` (the newest finished dump).
    #[arg(long, default_value = "latest")]
    date: String,
    /// Dump site or mirror with the dumps.wikimedia.org layout.
    #[arg(long, default_value = langadapt::hub::dump::DEFAULT_MIRROR)]
    mirror: String,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
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
enum VocabCommand {
    /// Train a SentencePiece model (.model, LLaMA conventions) on text files or Parquet text shards.
    Train(VocabTrainArgs),
    /// Append a new model's pieces to a LLaMA-style tokenizer.model (base ids kept); optionally resize a checkpoint.
    Merge(VocabMergeArgs),
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

#[derive(Debug, Args)]
struct VocabMergeArgs {
    /// Base tokenizer.model (SentencePiece BPE) or a directory holding one.
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
    /// Hugging Face checkpoint to resize into OUT/model/.
    #[arg(long)]
    model: Option<PathBuf>,
    /// New embedding rows: mean, subword-mean or random.
    #[arg(long, default_value = "subword-mean")]
    init: String,
    /// Seed for --init random.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Texts to measure tokens per word on before and after the merge (`OUT/fertility.json`).
    #[arg(long)]
    fertility: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct VocabTrainArgs {
    /// Text files (one sentence per line) or Parquet text shards (files or directories).
    #[arg(long, required = true, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Total pieces (3 special + 256 bytes + alphabet + learned).
    #[arg(long)]
    vocab_size: usize,
    /// bpe or unigram.
    #[arg(long, default_value = "bpe")]
    model_type: String,
    /// The .model file to write (manifest.json goes beside it).
    #[arg(long)]
    out: PathBuf,
    /// Trainer: tokenizers (pure Rust), or sentencepiece (the C++ trainer; build with --features sentencepiece).
    #[arg(long, default_value = "tokenizers")]
    backend: String,
    /// Share of character occurrences the alphabet covers; rarer characters fall back to bytes.
    #[arg(long, default_value_t = 0.9995)]
    character_coverage: f64,
    /// Train on a uniform sample of at most this many sentences.
    #[arg(long)]
    max_sentences: Option<usize>,
    /// Seed of the sample.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Debug, Subcommand)]
enum ShardsCommand {
    /// Mix, tokenize and pack sources into DIR/{train,val}/part-NNNNN.parquet + manifest.json + stats.json.
    Build(Box<ShardsBuildArgs>),
    /// Recompute a shards directory's statistics from its Parquet files alone.
    Stats {
        /// The --out of `shards build`.
        dir: PathBuf,
        /// Print JSON (the layout of stats.json) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Flags of `shards build`: each wins over the same key of --config; without --config they describe
/// one source.
#[derive(Debug, Args)]
struct ShardsBuildArgs {
    /// The mixture (TOML): tokenizer, kind, seq_len, seed, val_share, template, [[sources]], ...
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Tokenizer: tokenizer.json, tokenizer.model, or a checkpoint directory.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The one source (without --config): text-shard dir, .parquet, .jsonl or .txt.
    #[arg(long)]
    source: Option<PathBuf>,
    /// Its name (default: the file stem).
    #[arg(long)]
    name: Option<String>,
    /// Its language code.
    #[arg(long, default_value = "und")]
    lang: String,
    /// pretrain or sft.
    #[arg(long, value_parser = ["pretrain", "sft"])]
    kind: Option<String>,
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
    /// The last partial row: pad or drop.
    #[arg(long, value_parser = ["pad", "drop"])]
    last_row: Option<String>,
    /// SFT: pack several examples per row (segment_ids column).
    #[arg(long)]
    pack: bool,
    /// SFT examples longer than seq_len: truncate or drop.
    #[arg(long, value_parser = ["truncate", "drop"])]
    max_len_policy: Option<String>,
    /// Trained tokens of the training split (all sources by share).
    #[arg(long)]
    train_tokens: Option<u64>,
    /// Rows per output part.
    #[arg(long)]
    rows_per_part: Option<u64>,
    /// This process's documents: those with index % N == i in every source.
    #[arg(long, default_value = "0/1")]
    shard: ShardSpec,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
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
            Command::Run { recipe, out, dry_run, from, only, smoke, json } => {
                run_recipe(&recipe, out, (dry_run, smoke, json), (from.as_deref(), only.as_deref()), &env)
            }
            Command::Wiki(WikiCommand::Ingest(a)) => ingest(a, &env),
            Command::Wiki(WikiCommand::Download(a)) => wiki_download(a, &env),
            Command::Corpus(CorpusCommand::Cat { path, limit }) => cat(&path, limit),
            Command::Model(cmd) => model_command(cmd, &env),
            Command::Train(a) => train_command(*a, &env),
            Command::Audit { dir, json } => audit_command(&dir, json, &env),
            Command::Report { dir } => {
                let summary = langadapt::pipeline::write_report(&dir, &[], &env)?;
                println!("{}", summary.report.display());
                Ok(())
            }
            Command::Shards(ShardsCommand::Build(a)) => shards_build(*a, &env),
            Command::Shards(ShardsCommand::Stats { dir, json }) => shards_stats(&dir, json),
            Command::Eval(c) => eval::run(c, &env),
            Command::Vocab(VocabCommand::Train(a)) => vocab_train(a, &env),
            Command::Vocab(VocabCommand::Merge(a)) => vocab_merge(a, &env),
            Command::Vocab(VocabCommand::Stats { tokenizers, input, json }) => {
                vocab_stats(&tokenizers, &input, json, &env)
            }
            Command::Vocab(VocabCommand::Encode { tokenizer, ids }) => vocab_encode(&tokenizer, ids),
            Command::Instruct(InstructCommand::Translate(a)) => translate(a, &env),
            Command::Instruct(InstructCommand::TranslationPairs(a)) => translation_pairs(a, &env),
        }
    }
}

fn wiki_download(a: WikiDownloadArgs, env: &Env) -> anyhow::Result<()> {
    let cfg = langadapt::hub::dump::DumpConfig {
        lang: a.lang,
        date: a.date,
        mirror: a.mirror,
        out: a.out,
        retry: langadapt::hub::download_retry(),
        progress: env.progress,
    };
    let r = langadapt::hub::dump::download(&cfg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        eprintln!(
            "wiki download: {} dump {} and its index {} ({} bytes fetched, sha1 checked); manifest: {}",
            r.date,
            r.dump.display(),
            r.index.display(),
            r.bytes_fetched,
            r.manifest.display()
        );
    }
    Ok(())
}

/// A checkpoint argument: an existing local path as given, else `org/name[@revision]` fetched from the Hub.
fn checkpoint_path(p: &std::path::Path, env: &Env) -> anyhow::Result<PathBuf> {
    let hub = langadapt::hub::HubConfig::from_env(env.progress);
    Ok(langadapt::hub::resolve_model(&p.to_string_lossy(), &hub)?.path)
}

fn ingest(a: IngestArgs, env: &Env) -> anyhow::Result<()> {
    let cfg = wiki::IngestConfig {
        dump: a.dump,
        date: None,
        mirror: None,
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

fn shards_build(a: ShardsBuildArgs, env: &Env) -> anyhow::Result<()> {
    let (mut cfg, origin) = match &a.config {
        Some(path) => {
            anyhow::ensure!(
                a.source.is_none(),
                "--source describes a single source; with --config add it as [[sources]]"
            );
            (shards::BuildConfig::load(path)?, path.clone())
        }
        None => {
            let (Some(tokenizer), Some(path), Some(seq_len)) = (a.tokenizer.clone(), a.source.clone(), a.seq_len)
            else {
                anyhow::bail!("give --config mix.toml, or --tokenizer, --source and --seq-len for a single source");
            };
            let name = a.name.clone().unwrap_or_else(|| {
                path.file_stem().map_or_else(|| "source".into(), |s| s.to_string_lossy().into_owned())
            });
            let source =
                shards::SourceConfig { name, path, lang: a.lang.clone(), share: None, epochs: Some(1.0), limit: None };
            (shards::BuildConfig::single(tokenizer, source, seq_len, PathBuf::new()), PathBuf::from("flags"))
        }
    };
    cfg.out = a.out;
    cfg.shard = a.shard;
    cfg.pack |= a.pack;
    cfg.tokenizer = a.tokenizer.unwrap_or(cfg.tokenizer);
    cfg.kind = flag_word(a.kind)?.unwrap_or(cfg.kind);
    cfg.seq_len = a.seq_len.unwrap_or(cfg.seq_len);
    cfg.seed = a.seed.unwrap_or(cfg.seed);
    cfg.val_share = a.val_share.unwrap_or(cfg.val_share);
    cfg.template = a.template.or(cfg.template);
    cfg.add_bos = a.add_bos.unwrap_or(cfg.add_bos);
    cfg.add_eos = a.add_eos.unwrap_or(cfg.add_eos);
    cfg.last_row = flag_word(a.last_row)?.unwrap_or(cfg.last_row);
    cfg.max_len_policy = flag_word(a.max_len_policy)?.unwrap_or(cfg.max_len_policy);
    cfg.train_tokens = a.train_tokens.or(cfg.train_tokens);
    cfg.rows_per_part = a.rows_per_part.unwrap_or(cfg.rows_per_part);
    let report = shards::run(&cfg, &origin, env)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let train = &report.stats.splits["train"];
    let val = &report.stats.splits["val"];
    eprintln!(
        "shards build: {} tokens tokenized in {:.1}s ({:.0} tokens/s); train {} rows ({} trained tokens), val {} rows ({} trained tokens); manifest: {}",
        report.tokens_tokenized,
        report.tokenize_seconds,
        report.tokens_tokenized as f64 / report.tokenize_seconds.max(1e-9),
        train.rows,
        train.trained_tokens,
        val.rows,
        val.trained_tokens,
        report.manifest.display()
    );
    for s in &report.sources {
        let requested =
            s.requested_share.map_or_else(|| format!("{} epochs", s.epochs.unwrap_or(1.0)), |p| format!("{p:.4}"));
        eprintln!(
            "  {}: {} documents ({} val, {} empty, {} truncated, {} too long), used x{:.3}, share {:.4} (requested {requested})",
            s.name, s.documents, s.val_documents, s.empty, s.truncated, s.too_long, s.factor, s.achieved_share
        );
        if s.requested_share.is_some_and(|p| (p - s.achieved_share).abs() > 0.005) {
            eprintln!(
                "  warning: {} is more than 0.5% off its share (its documents are large next to its tokens)",
                s.name
            );
        }
    }
    Ok(())
}

/// An enum flag through serde, so its spellings are the config file's.
fn flag_word<T: serde::de::DeserializeOwned>(w: Option<String>) -> serde_json::Result<Option<T>> {
    w.map(|w| serde_json::from_value(serde_json::Value::String(w))).transpose()
}

fn shards_stats(dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let stats = shards::stats(dir)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(());
    }
    println!("split\tsource\trows\ttokens\ttrained_tokens\tshare\tmask_coverage");
    for (split, s) in &stats.splits {
        for (name, src) in &s.sources {
            let coverage = src.trained_tokens as f64 / src.tokens.max(1) as f64;
            println!(
                "{split}\t{name}\t{}\t{}\t{}\t{:.6}\t{coverage:.6}",
                src.rows, src.tokens, src.trained_tokens, src.share
            );
        }
        println!("{split}\t(all)\t{}\t{}\t{}\t1\t{:.6}", s.rows, s.tokens, s.trained_tokens, s.mask_coverage);
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
    let result = instruct::translate::run(&cfg, env);
    // An incomplete run still wrote what it could: summarise it before its error.
    let report = match &result {
        Ok(r) => r,
        Err(instruct::InstructError::Incomplete { report, .. }) => report.as_ref(),
        Err(_) => return result.map(drop).map_err(Into::into),
    };
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
    result.map(drop).map_err(Into::into)
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

fn run_recipe(
    path: &std::path::Path,
    out: Option<PathBuf>,
    (dry_run, smoke, json): (bool, bool, bool),
    (from, only): (Option<&str>, Option<&str>),
    env: &Env,
) -> anyhow::Result<()> {
    let mut recipe = Recipe::load(path, out, smoke)?;
    recipe.select(from, only)?;
    if dry_run {
        if json {
            println!("{}", serde_json::to_string_pretty(&recipe)?);
            return Ok(());
        }
        for (stage, kind, dir) in recipe.plan() {
            println!("{stage}\t{kind}\t{}", dir.display());
        }
        return Ok(());
    }
    let report = recipe.run(env)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    eprintln!("done: outputs under {}; report: {}", report.out.display(), report.report.display());
    Ok(())
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Architecture, parameters, dtype and tokenizer of a Hugging Face checkpoint.
    Info {
        /// Checkpoint directory (config.json + safetensors).
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
        /// Base checkpoint directory.
        base: PathBuf,
        /// Adapter directory (adapter_config.json + adapter_model.safetensors).
        adapter: PathBuf,
        /// Output checkpoint directory.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
struct ScoreArgs {
    /// Checkpoint directory.
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
struct GenerateArgs {
    /// Checkpoint directory.
    ckpt: PathBuf,
    /// The prompt, encoded as transformers does with `add_special_tokens=True` (BOS first when the tokenizer
    /// adds one: `add_bos_token` in tokenizer_config.json, its post-processor, or SentencePiece's default).
    #[arg(long)]
    prompt: String,
    /// New tokens at most.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Greedy decoding (same as --temperature 0).
    #[arg(long)]
    greedy: bool,
    /// Sampling temperature (0 = greedy).
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

fn model_command(cmd: ModelCommand, env: &Env) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Info { ckpt, json } => {
            let info = model::Checkpoint::open(&checkpoint_path(&ckpt, env)?)?.info()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
                return Ok(());
            }
            println!("path\t{}", info.path.display());
            println!("model_type\t{}", info.model_type);
            println!("parameters\t{} ({:.1}M)", info.parameters, info.parameters as f64 / 1e6);
            println!("dtype\t{}", info.dtypes.join(", "));
            for (k, v) in &info.architecture {
                println!("{k}\t{v}");
            }
            for f in &info.files {
                println!("weights\t{}", f.display());
            }
            match &info.tokenizer {
                Some((path, size)) => println!("tokenizer\t{} ({size} ids)", path.display()),
                None => println!("tokenizer\tnone"),
            }
            Ok(())
        }
        ModelCommand::Generate(a) => {
            let ckpt = model::Checkpoint::open(&checkpoint_path(&a.ckpt, env)?)?;
            let device = model::parse_device(&a.device)?;
            let llama = ckpt.load(&device, model::parse_dtype(&a.dtype)?)?;
            let tokenizer = ckpt.tokenizer()?;
            let prompt = tokenizer.encode(&a.prompt, tokenizer.adds_bos())?;
            let opts = model::GenerateOptions {
                max_new_tokens: a.max_new_tokens,
                temperature: if a.greedy { 0.0 } else { a.temperature },
                top_p: a.top_p,
                seed: a.seed,
                stop: a.stop,
                stop_at_eos: !a.ignore_eos,
            };
            let out = model::generate(&llama, &tokenizer, &[prompt], &opts)?;
            println!("{}", out[0].text);
            Ok(())
        }
        ModelCommand::Score(a) => {
            use anyhow::Context as _;
            let ckpt = model::Checkpoint::open(&checkpoint_path(&a.ckpt, env)?)?;
            let device = model::parse_device(&a.device)?;
            let scorer = model::Scorer::new(ckpt.load(&device, model::parse_dtype(&a.dtype)?)?, a.batch_size);
            let text = std::fs::read_to_string(&a.ids).with_context(|| a.ids.display().to_string())?;
            let sequences = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}: line {}", a.ids.display(), i + 1)))
                .collect::<anyhow::Result<Vec<Vec<u32>>>>()?;
            let mut run = model::score_sequences(&scorer, &sequences, a.rounds)?;
            if a.no_logprobs {
                run.logprobs.clear();
            }
            println!("{}", serde_json::to_string(&run)?);
            Ok(())
        }
        ModelCommand::MergeLora { base, adapter, out } => {
            let report = model::merge_lora(&checkpoint_path(&base, env)?, &adapter, &out)?;
            eprintln!(
                "merge-lora: {} projections merged, {} modules replaced ({}); checkpoint in {}",
                report.merged_projections,
                report.replaced_modules.len(),
                report.replaced_modules.join(", "),
                out.display()
            );
            Ok(())
        }
    }
}

/// `train`: every key of train.toml can also be given as a flag, which wins over the file.
#[derive(Debug, Args)]
struct TrainArgs {
    /// train.toml (keys in DESIGN.md / README).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue from OUT/checkpoints/step-N of a run with the same settings.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Hugging Face checkpoint to start from (`model`).
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
    /// full, embed-align, lora or sft.
    #[arg(long)]
    mode: Option<String>,
    /// Rows per forward pass (`micro_batch`).
    #[arg(long)]
    micro_batch: Option<i64>,
    /// Micro-batches per optimizer step; global batch = micro_batch x grad_accum rows (`grad_accum`).
    #[arg(long)]
    grad_accum: Option<i64>,
    /// Optimizer steps; wins over --epochs (`max_steps`).
    #[arg(long)]
    max_steps: Option<i64>,
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
    warmup_steps: Option<i64>,
    /// cosine, linear or constant.
    #[arg(long)]
    schedule: Option<String>,
    /// AdamW decoupled weight decay (`weight_decay`).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Clip the global gradient norm to this, 0 = off (`clip`).
    #[arg(long)]
    clip: Option<f64>,
    /// Validate every N steps, 0 = only at the end when --val is set (`eval_every`).
    #[arg(long)]
    eval_every: Option<i64>,
    /// Save a resumable checkpoint every N steps, 0 = off (`save_every`).
    #[arg(long)]
    save_every: Option<i64>,
    /// Seed of data order, LoRA initialisation and dropout (`seed`).
    #[arg(long)]
    seed: Option<i64>,
    /// cpu, cuda or cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// f32, bf16 or f16 (f16 with dynamic loss scaling).
    #[arg(long)]
    dtype: Option<String>,
    /// f16: the first step's loss scale (`loss_scale_init`, default 65536).
    #[arg(long)]
    loss_scale_init: Option<f64>,
    /// f16: good steps before the loss scale doubles (`loss_scale_window`, default 2000).
    #[arg(long)]
    loss_scale_window: Option<i64>,
    /// Name substrings of weights without weight decay (comma-separated).
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
    /// Validation rows at most (0 = all).
    #[arg(long)]
    eval_rows: Option<i64>,
    /// Base weights trained in embed-align mode (name substrings, comma-separated).
    #[arg(long, value_delimiter = ',')]
    train_modules: Option<Vec<String>>,
    /// For LoRA: also write final/merged/.
    #[arg(long)]
    merge_lora: bool,
    /// [lora] r.
    #[arg(long)]
    lora_r: Option<i64>,
    /// [lora] alpha.
    #[arg(long)]
    lora_alpha: Option<f64>,
    /// [lora] dropout.
    #[arg(long)]
    lora_dropout: Option<f64>,
    /// [lora] targets (comma-separated).
    #[arg(long, value_delimiter = ',')]
    lora_targets: Option<Vec<String>>,
    /// [lora] modules_to_save (comma-separated).
    #[arg(long, value_delimiter = ',')]
    lora_modules_to_save: Option<Vec<String>>,
}

fn train_command(a: TrainArgs, env: &Env) -> anyhow::Result<()> {
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| toml::Value::String(p.to_string_lossy().into_owned()));
    let list = |v: Option<Vec<String>>| v.map(|v| toml::Value::Array(v.into_iter().map(toml::Value::String).collect()));
    let lora: [(&str, Option<toml::Value>); 5] = [
        ("r", a.lora_r.map(toml::Value::Integer)),
        ("alpha", a.lora_alpha.map(toml::Value::Float)),
        ("dropout", a.lora_dropout.map(toml::Value::Float)),
        ("targets", list(a.lora_targets)),
        ("modules_to_save", list(a.lora_modules_to_save)),
    ];
    let lora: toml::Table = lora.into_iter().filter_map(|(k, v)| Some((k.to_string(), v?))).collect();
    let flags: [(&str, Option<toml::Value>); 30] = [
        ("model", path(&a.model)),
        ("train", path(&a.train)),
        ("val", path(&a.val)),
        ("out", path(&a.out)),
        ("mode", a.mode.map(toml::Value::String)),
        ("micro_batch", a.micro_batch.map(toml::Value::Integer)),
        ("grad_accum", a.grad_accum.map(toml::Value::Integer)),
        ("max_steps", a.max_steps.map(toml::Value::Integer)),
        ("epochs", a.epochs.map(toml::Value::Float)),
        ("lr", a.lr.map(toml::Value::Float)),
        ("min_lr", a.min_lr.map(toml::Value::Float)),
        ("warmup_steps", a.warmup_steps.map(toml::Value::Integer)),
        ("schedule", a.schedule.map(toml::Value::String)),
        ("weight_decay", a.weight_decay.map(toml::Value::Float)),
        ("clip", a.clip.map(toml::Value::Float)),
        ("eval_every", a.eval_every.map(toml::Value::Integer)),
        ("save_every", a.save_every.map(toml::Value::Integer)),
        ("seed", a.seed.map(toml::Value::Integer)),
        ("device", a.device.map(toml::Value::String)),
        ("dtype", a.dtype.map(toml::Value::String)),
        ("loss_scale_init", a.loss_scale_init.map(toml::Value::Float)),
        ("loss_scale_window", a.loss_scale_window.map(toml::Value::Integer)),
        ("no_decay", list(a.no_decay)),
        ("beta1", a.beta1.map(toml::Value::Float)),
        ("beta2", a.beta2.map(toml::Value::Float)),
        ("eps", a.eps.map(toml::Value::Float)),
        ("eval_rows", a.eval_rows.map(toml::Value::Integer)),
        ("train_modules", list(a.train_modules)),
        ("merge_lora", a.merge_lora.then_some(toml::Value::Boolean(true))),
        ("lora", (!lora.is_empty()).then_some(toml::Value::Table(lora))),
    ];
    let flags: toml::Table = flags.into_iter().filter_map(|(k, v)| Some((k.to_string(), v?))).collect();
    // A Hub id is fetched by `train::run`, which records it in the manifest.
    let cfg = train::TrainConfig::load(a.config.as_deref(), flags)?;
    let report = train::run(&cfg, a.resume.as_deref(), env)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        eprintln!(
            "train: {} steps, loss {} -> {}, {} parameters trained; checkpoint in {}",
            report.steps,
            report.first_loss.map_or("-".into(), |l| format!("{l:.4}")),
            report.last_loss.map_or("-".into(), |l| format!("{l:.4}")),
            report.trained_parameters,
            report.final_dir.display()
        );
    }
    Ok(())
}

/// A check that ran and failed (exit code 1, unlike errors: 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);

fn audit_command(dir: &std::path::Path, json: bool, env: &Env) -> anyhow::Result<()> {
    let report = langadapt::pipeline::audit(dir, &env.progress)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &report.findings {
            println!("{f}");
        }
        for input in &report.external_inputs {
            println!("external input (matches its sha256): {input}");
        }
        println!(
            "audit: {} manifests, {} outputs and {} inputs re-hashed, {} inputs produced by earlier stages, {} findings",
            report.manifests,
            report.outputs_checked,
            report.inputs_checked,
            report.inputs_chained,
            report.findings.len()
        );
    }
    if report.ok() {
        Ok(())
    } else {
        Err(CheckFailed(format!("audit: {} findings under {}", report.findings.len(), dir.display())).into())
    }
}

fn vocab_train(a: VocabTrainArgs, env: &Env) -> anyhow::Result<()> {
    let backend = serde_json::from_value(serde_json::Value::String(a.backend.clone()))
        .map_err(|_| anyhow::anyhow!("--backend {}: expected tokenizers or sentencepiece", a.backend))?;
    let model_type = serde_json::from_value(serde_json::Value::String(a.model_type.clone()))
        .map_err(|_| anyhow::anyhow!("--model-type {}: expected bpe or unigram", a.model_type))?;
    let cfg = vocab::train::TrainConfig {
        input: a.input,
        out: a.out,
        vocab_size: a.vocab_size,
        model_type,
        character_coverage: a.character_coverage,
        max_sentences: a.max_sentences,
        seed: a.seed,
        backend,
    };
    let r = vocab::train::run(&cfg, env)?;
    eprintln!(
        "vocab train: {} pieces ({} characters of {} seen) from {} of {} sentences in {:.1}s -> {}; manifest: {}",
        r.vocab_size,
        r.alphabet,
        r.characters_seen,
        r.sentences_used,
        r.sentences_read,
        r.seconds,
        r.model.display(),
        r.manifest.display()
    );
    Ok(())
}

fn vocab_merge(a: VocabMergeArgs, env: &Env) -> anyhow::Result<()> {
    let init = serde_json::from_value(serde_json::Value::String(a.init.clone()))
        .map_err(|_| anyhow::anyhow!("--init {}: expected mean, subword-mean or random", a.init))?;
    let cfg = vocab::merge::MergeConfig {
        base: a.base,
        add: a.add,
        out: a.out,
        max_added: a.max_added,
        // Hub ids are fetched by `vocab::merge::run`, which records them in the manifest.
        model: a.model,
        init,
        seed: a.seed,
        fertility: a.fertility,
    };
    let r = vocab::merge::run(&cfg, env)?;
    eprintln!(
        "vocab merge: {} + {} added = {} pieces ({} candidates: {} already in the base, {} unreachable, {} over --max-added) -> {}",
        r.base_size,
        r.added,
        r.final_size,
        r.candidates,
        r.skipped_existing,
        r.skipped_unreachable,
        r.skipped_limit,
        cfg.out.display()
    );
    Ok(())
}

fn vocab_stats(tokenizers: &[PathBuf], input: &[PathBuf], json: bool, env: &Env) -> anyhow::Result<()> {
    let rows = vocab::stats::run(tokenizers, input, env)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("input\ttokenizer\ttokens\ttokens/word\ttokens/char\tbytes/token\tbyte_fallback\tunk");
    for r in rows {
        println!(
            "{}\t{}\t{}\t{:.4}\t{:.4}\t{:.4}\t{:.4}\t{:.4}",
            r.input,
            r.tokenizer,
            r.tokens,
            r.tokens_per_word,
            r.tokens_per_char,
            r.bytes_per_token,
            r.byte_fallback_rate,
            r.unk_rate
        );
    }
    Ok(())
}

fn vocab_encode(path: &std::path::Path, ids: bool) -> anyhow::Result<()> {
    use std::io::BufRead;
    let tok = vocab::Tokenizer::from_path(path)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for line in std::io::stdin().lock().lines() {
        let enc = tok.encode(&line?, false)?;
        let fields: Vec<String> = if ids {
            enc.iter().map(u32::to_string).collect()
        } else {
            enc.iter().map(|&i| tok.id_to_piece(i).unwrap_or_default()).collect()
        };
        writeln!(out, "{}", fields.join(" "))?;
    }
    Ok(out.flush()?)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Issue 19: every flag and argument of every command says what it is in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_long().unwrap_or(arg.get_id().as_str())));
                }
            }
            for sub in cmd.get_subcommands() {
                if cmd.get_name() == "help" {
                    continue;
                }
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (no about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "langadapt", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }
}
