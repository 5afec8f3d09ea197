//! `shards build` and `shards stats`: mixed-language token shards for the trainer.
//!
//! Sources (text shards, Parquet, JSONL, text files, instruction JSONL) are tokenized in parallel,
//! split into train and validation by document, mixed to the requested token shares, packed into rows of
//! `seq_len` tokens with a loss mask, and written as Parquet parts (DESIGN.md "Data contracts": token
//! shards) with `manifest.json` and `stats.json`.

mod build;
mod config;
mod mix;
mod pack;
mod source;
mod spill;
mod stats;
mod template;
mod writer;

use std::path::PathBuf;

pub use build::{run, BuildReport, SourceReport};
pub use config::{BuildConfig, Kind, LastRow, MaxLenPolicy, SourceConfig};
pub use stats::{stats, stats_of_files, SourceStats, SplitStats, Stats};
pub use template::{AlpacaWords, Instruction, Template};
pub use writer::{token_shard_schema, TokenRow, TokenShardReader};

use crate::corpus::ShardError;
use crate::manifest::ManifestError;
use crate::vocab::VocabError;

/// Errors of `shards build` and `shards stats`; each names the file (and line) or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ShardsError {
    /// mix.toml or the flags do not fit the config.
    #[error(transparent)]
    Settings(#[from] crate::config::ConfigError),
    /// A setting is missing, malformed or inconsistent.
    #[error("{}: {msg}", origin.display())]
    Config {
        /// The config file, or `flags`.
        origin: PathBuf,
        /// What is wrong and what to do.
        msg: String,
    },
    /// File-system error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An input file is malformed.
    #[error("{}: {}{msg}", path.display(), if at.is_empty() { String::new() } else { format!("{at}: ") })]
    Input {
        /// The file.
        path: PathBuf,
        /// Where in it (`line N`), or empty.
        at: String,
        /// What is wrong.
        msg: String,
    },
    /// The output directory cannot be used as asked.
    #[error("{}: {msg}", dir.display())]
    Output {
        /// The directory.
        dir: PathBuf,
        /// What is wrong and what to do.
        msg: String,
    },
    /// Loading the tokenizer or encoding failed.
    #[error(transparent)]
    Vocab(#[from] VocabError),
    /// Reading or writing a Parquet file failed.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// Hashing inputs or writing the manifest failed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}
