//! Command-line flags (clap). Only parsing lives here; every command calls a library stage.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use langadapt::io::ShardSpec;
use langadapt::pipeline::Recipe;
use langadapt::{corpus, shards, wiki, Env, Progress};

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
    /// Token shards for training: mix, tokenize, pack.
    #[command(subcommand)]
    Shards(ShardsCommand),
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

impl Cli {
    /// Runs the parsed command.
    pub fn run(self) -> anyhow::Result<()> {
        let env = Env { threads: self.threads, progress: Progress { quiet: self.quiet } };
        match self.command {
            Command::Run { recipe, out, dry_run } => run_recipe(&recipe, out, dry_run, &env),
            Command::Wiki(WikiCommand::Ingest(a)) => ingest(a, &env),
            Command::Corpus(CorpusCommand::Cat { path, limit }) => cat(&path, limit),
            Command::Shards(ShardsCommand::Build(a)) => shards_build(*a, &env),
            Command::Shards(ShardsCommand::Stats { dir, json }) => shards_stats(&dir, json),
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
            let source = shards::SourceConfig { name, path, lang: a.lang.clone(), share: None, epochs: Some(1.0) };
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
            eprintln!("  warning: {} is more than 0.5% off its share (its documents are large next to its tokens)", s.name);
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
