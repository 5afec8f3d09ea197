//! The evaluation harness (`langadapt eval`): lm-evaluation-harness request types and the
//! `LanguageModel` trait, a local backend over any [`TokenScorer`] and an OpenAI-compatible one,
//! tasks as data (`evals/*.toml`), metrics, results.json, perplexity and code-switching rates.

pub mod backend;
pub mod codeswitch;
pub mod generation;
pub mod judge;
pub mod lm;
pub mod local;
pub mod metrics;
pub mod openai;
pub mod perplexity;
pub mod pyrandom;
pub mod results;
pub mod run;
pub mod task;
pub mod tasks;
pub mod textmetrics;

use std::path::PathBuf;

pub use lm::{
    GenerateUntil, LanguageModel, LocalLm, Loglikelihood, LoglikelihoodResult, LoglikelihoodRolling, RollingResult,
    TokenGenerateRequest, TokenScore, TokenScoreRequest, TokenScorer,
};
pub use local::{open_local_lm, CandleScorer};
pub use results::Results;
pub use run::{run, score_requests, write_requests, EvalConfig, PerplexityData, RunConfig};
pub use task::{TaskRegistry, TaskSpec};

/// Errors of the evaluation harness.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The model backend failed (a shape, a count).
    #[error("model: {0}")]
    Model(String),
    /// The local model failed: loading the checkpoint, its device, a forward pass.
    #[error("model: {0}")]
    Local(#[from] crate::model::ModelError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A data row is malformed (missing field, wrong label, bad CSV/JSON).
    #[error("{path}:{line}: {message}")]
    Data {
        /// The data file.
        path: PathBuf,
        /// One-based line number where the row starts.
        line: u64,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A task definition (evals/*.toml) is invalid.
    #[error("task definition {file}: {message}")]
    TaskDef {
        /// The TOML file (or the built-in name).
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A task name that no definition provides.
    #[error("unknown task `{name}`{hint}; known families: {known}")]
    UnknownTask {
        /// The name asked for.
        name: String,
        /// " (did you mean `x`?)" or empty.
        hint: String,
        /// Task families that exist.
        known: String,
    },
    /// Fetching the model or data from the Hub failed.
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] crate::vocab::VocabError),
    /// The remote completions server failed or answered something unusable.
    #[error("{endpoint}: {message}")]
    Remote {
        /// The endpoint URL.
        endpoint: String,
        /// What went wrong (never the API key).
        message: String,
    },
    /// A request the model cannot answer (e.g. a continuation longer than the context).
    #[error("{0}")]
    Request(String),
    /// Bad settings (flags or config).
    #[error("{0}")]
    Config(String),
    /// Reading text shards failed.
    #[error(transparent)]
    Shard(#[from] crate::corpus::ShardError),
    /// Writing the manifest failed.
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
}

impl EvalError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EvalError::Io { path: path.into(), source }
    }

    /// A malformed row at `path:line`.
    pub fn data(path: impl Into<PathBuf>, line: u64, message: impl Into<String>) -> Self {
        EvalError::Data { path: path.into(), line, message: message.into() }
    }
}
