//! `langadapt wiki ...`: dump download and ingest.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use langadapt::io::ShardSpec;
use langadapt::{hub, wiki, Env};
use serde::Serialize;

use super::{emit, To};

#[derive(Debug, Subcommand)]
pub enum WikiCommand {
    /// Turn a Wikipedia dump into clean text shards (DIR/part-NNNNN.parquet + manifest.json).
    Ingest(IngestArgs),
    /// Download a dump (pages-articles-multistream + its index) by language and date, resumable and sha1-checked.
    Download(DownloadArgs),
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Wikipedia language code (tr, et, fa, zh).
    lang: String,
    /// Dump date YYYYMMDD, or `latest` (the newest finished dump).
    #[arg(long, default_value = "latest")]
    date: String,
    /// Dump site or mirror with the dumps.wikimedia.org layout.
    #[arg(long, default_value = hub::dump::DEFAULT_MIRROR)]
    mirror: String,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// `wiki ingest` flags: the keys of [`wiki::IngestConfig`] (its defaults apply to what is not given).
#[derive(Debug, Args, Serialize)]
pub struct IngestArgs {
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
    #[arg(long)]
    min_chars: Option<usize>,
    /// Drop disambiguation pages.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    drop_disambiguation: bool,
    /// Extra disambiguation template name (repeatable).
    #[arg(long = "disambiguation-template")]
    disambiguation_templates: Vec<String>,
    /// Pages (any namespace, dump order) per output part.
    #[arg(long)]
    part_pages: Option<u64>,
    /// Process only parts k with k % N == i.
    #[arg(long)]
    shard: Option<ShardSpec>,
    /// Continue an interrupted run in the same --out.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    resume: bool,
    /// Print the report as JSON.
    #[arg(long)]
    #[serde(skip)]
    json: bool,
}

/// Runs a `wiki` subcommand.
pub fn run(cmd: WikiCommand, env: &Env) -> anyhow::Result<()> {
    match cmd {
        WikiCommand::Ingest(a) => {
            let cfg: wiki::IngestConfig = langadapt::config::layered(None, &[], &a)?;
            emit(&wiki::run(&cfg, env)?, a.json, To::Stderr)
        }
        WikiCommand::Download(a) => {
            let cfg = hub::dump::DumpConfig {
                lang: a.lang,
                date: a.date,
                mirror: a.mirror,
                out: a.out,
                retry: hub::download_retry(),
                progress: env.progress,
            };
            emit(&hub::dump::download(&cfg)?, a.json, To::Stderr)
        }
    }
}
