//! Instruction data: Alpaca records, their translation through real translation APIs (OpenAI-
//! compatible chat, DeepL, Google, LibreTranslate, or a cache replay), and translation-task
//! instructions made from parallel text.

pub mod cache;
pub mod deepl;
pub mod google;
pub mod http;
pub mod labelled;
pub mod libre;
pub mod openai;
pub mod pairs;
pub mod protect;
pub mod qa;
pub mod record;
pub mod replay;
pub mod translate;

use std::path::PathBuf;

pub use cache::{CacheScope, TranslationCache};
pub use http::{CallError, Http};
pub use labelled::{LabelledConfig, LabelledReport};
pub use pairs::{PairsConfig, PairsReport};
pub use qa::QaConfig;
pub use record::{InstructRecord, RecordReader, SourceRecord};
pub use translate::{Backend, TranslateConfig, TranslateReport};

/// Errors of the instruct stages; each names the file and where in it, or the setting to change.
#[derive(Debug, thiserror::Error)]
pub enum InstructError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The file is not in a format the stage reads.
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    /// One record of the input is malformed.
    #[error("{path}: {at}: {msg}")]
    Record { path: PathBuf, at: String, msg: String },
    /// A setting is missing or wrong.
    #[error("{0}")]
    Config(String),
    /// The API refused every request (bad key, quota): the run stopped.
    #[error("{backend}: {msg} (stopped: check the API key and quota)")]
    Aborted { backend: String, msg: String },
    /// Some records could not be translated: everything else is written and the manifest is marked
    /// incomplete, so a rerun (which retries only these, the cache keeps the rest) is never skipped.
    #[error(
        "{failed} of {records} records could not be translated (ids and reasons in {}); the stage is incomplete: \
         rerun to retry them, the cache keeps the rest",
        report.failed.display()
    )]
    Incomplete {
        /// Records that failed.
        failed: u64,
        /// Records read.
        records: u64,
        /// What the run wrote.
        report: Box<translate::TranslateReport>,
    },
    /// Writing the manifest failed.
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
}

/// How many texts and bytes one request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Texts per request.
    pub max_texts: usize,
    /// Bytes of text per request.
    pub max_bytes: usize,
}

/// What one request brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// The translations, in request order.
    pub texts: Vec<String>,
    /// Characters the service bills for the request.
    pub billed_chars: u64,
    /// Tokens used (LLM backends).
    pub tokens: u64,
}

/// `backend` or `backend:model`: how records, cache and manifest name a translator.
fn translator_name(backend: &str, model: Option<&str>) -> String {
    match model {
        Some(m) => format!("{backend}:{m}"),
        None => backend.to_string(),
    }
}

/// A translation service: one request (one attempt) of up to [`Limits`] texts.
pub trait Translator: Send + Sync {
    /// `backend` or `backend:model`, as written into records, cache and manifest.
    fn name(&self) -> String;
    /// How protected spans are hidden from this service.
    fn mask_style(&self) -> protect::MaskStyle;
    /// Request size limits.
    fn limits(&self) -> Limits;
    /// Translates `texts` (already masked) in one request.
    fn translate(&self, http: &Http, texts: &[&str]) -> Result<Translation, CallError>;
}
