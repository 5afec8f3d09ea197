//! Command-line flags (clap). Only parsing lives here; every command calls a library stage.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use langadapt::io::ShardSpec;
use langadapt::pipeline::Recipe;
use langadapt::{corpus, vocab, wiki, Env, Progress};

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
    /// Vocabulary: train, merge, measure, inspect tokenizers.
    #[command(subcommand)]
    Vocab(VocabCommand),
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
    /// Trainer: tokenizers (pure Rust). The sentencepiece backend is not built in.
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

impl Cli {
    /// Runs the parsed command.
    pub fn run(self) -> anyhow::Result<()> {
        let env = Env { threads: self.threads, progress: Progress { quiet: self.quiet } };
        match self.command {
            Command::Run { recipe, out, dry_run } => run_recipe(&recipe, out, dry_run, &env),
            Command::Wiki(WikiCommand::Ingest(a)) => ingest(a, &env),
            Command::Corpus(CorpusCommand::Cat { path, limit }) => cat(&path, limit),
            Command::Vocab(VocabCommand::Train(a)) => vocab_train(a, &env),
            Command::Vocab(VocabCommand::Merge(a)) => vocab_merge(a, &env),
            Command::Vocab(VocabCommand::Stats { tokenizers, input, json }) => {
                vocab_stats(&tokenizers, &input, json, &env)
            }
            Command::Vocab(VocabCommand::Encode { tokenizer, ids }) => vocab_encode(&tokenizer, ids),
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

fn vocab_train(a: VocabTrainArgs, env: &Env) -> anyhow::Result<()> {
    if a.backend != "tokenizers" {
        anyhow::bail!("--backend {}: this build trains with the tokenizers backend only (the sentencepiece backend is not built in)", a.backend);
    }
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
        model: a.model,
        init,
        seed: a.seed,
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
