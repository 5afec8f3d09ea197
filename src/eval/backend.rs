//! Which language model answers the requests: a local checkpoint scored with candle, or a model behind an
//! OpenAI-compatible completions server. One factory for the CLI, recipes and tests.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::openai::OpenAiLm;
use super::run::ModelInfo;
use super::{EvalError, LanguageModel};
use crate::vocab::Tokenizer;
use crate::Env;

/// The kind of model server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A local checkpoint, scored with candle.
    Local,
    /// An OpenAI-compatible `/v1/completions` server (vLLM, llama.cpp server, ...); key in OPENAI_API_KEY.
    Openai,
}

/// Default requests per batch.
pub const DEFAULT_BATCH_SIZE: usize = 16;

/// Everything needed to open a model for evaluation.
#[derive(Debug, Clone)]
pub struct BackendSpec {
    /// The server kind.
    pub kind: BackendKind,
    /// Checkpoint directory, or the served model's name for `openai`.
    pub model: String,
    /// Server URL (`openai`).
    pub endpoint: Option<String>,
    /// Tokenizer for `openai` (default: the one in `model` when it is a directory).
    pub tokenizer: Option<PathBuf>,
    /// Context length (default: the model's `max_position_embeddings`).
    pub max_length: Option<usize>,
    /// Requests per batch.
    pub batch_size: usize,
    /// Padded tokens per scoring batch (`local`; default: chosen from free memory, see [`Self::batch_budget`]).
    pub max_batch_tokens: Option<usize>,
    /// `cpu` or `cuda[:N]` (`local`).
    pub device: String,
}

impl BackendSpec {
    /// With the local backend, a `model` of the form `org/name[@revision]` (not a local path) is fetched from
    /// the Hub and replaced by its snapshot folder; returns what was asked for and where it came from.
    pub fn fetch_model(
        &mut self,
        hub: &crate::hub::HubConfig,
    ) -> Result<Option<(String, crate::hub::HubSource)>, EvalError> {
        if self.kind != BackendKind::Local {
            return Ok(None);
        }
        let resolved = crate::hub::resolve_model(&self.model, hub)?;
        let Some(source) = resolved.hub else { return Ok(None) };
        let asked = std::mem::replace(&mut self.model, resolved.path.to_string_lossy().into_owned());
        Ok(Some((asked, source)))
    }

    /// What results.json records about the model (the weight files of a local checkpoint are hashed).
    pub fn model_info(&self) -> Result<ModelInfo, EvalError> {
        match self.kind {
            BackendKind::Local => Ok(ModelInfo {
                max_batch_tokens: self.max_batch_tokens,
                ..ModelInfo::local(Path::new(&self.model), self.batch_size, &self.device)?
            }),
            BackendKind::Openai => Ok(ModelInfo {
                backend: "openai".into(),
                model: self.model.clone(),
                weight_files: Vec::new(),
                endpoint: self.endpoint.clone(),
                batch_size: self.batch_size,
                device: self.device.clone(),
                max_batch_tokens: None,
                hub: None,
            }),
        }
    }

    /// Opens the model.
    pub fn open(&self, env: &Env) -> Result<Box<dyn LanguageModel>, EvalError> {
        match self.kind {
            BackendKind::Local => {
                let lm = super::open_local_lm(
                    Path::new(&self.model),
                    &self.device,
                    self.batch_size,
                    self.max_length,
                    env.progress,
                )?;
                let lm = lm.with_max_batch_tokens(self.batch_budget());
                Ok(Box::new(lm))
            }
            BackendKind::Openai => {
                let config = |m: &str| EvalError::Config(m.into());
                let endpoint = self
                    .endpoint
                    .as_deref()
                    .ok_or_else(|| config("--backend openai needs --endpoint URL (e.g. http://127.0.0.1:8000/v1)"))?;
                let model_dir = Path::new(&self.model);
                let tok_path =
                    self.tokenizer.clone().or_else(|| model_dir.is_dir().then(|| model_dir.to_path_buf())).ok_or_else(
                        || {
                            config(
                                "--backend openai needs the model's tokenizer to build token prompts: --tokenizer PATH \
                                 (or --model as a checkpoint directory)",
                            )
                        },
                    )?;
                let tokenizer = Tokenizer::from_path(&tok_path)?;
                let max_length = self
                    .max_length
                    .or_else(|| config_max_length(model_dir))
                    .ok_or_else(|| config("--backend openai needs --max-length (the served model's context length)"))?;
                Ok(Box::new(OpenAiLm::new(
                    endpoint,
                    &self.model,
                    tokenizer,
                    max_length,
                    self.batch_size,
                    env.progress,
                )?))
            }
        }
    }

    /// The token budget of a local model's scoring batches: `max_batch_tokens`, else a quarter of the memory
    /// available now over the model's activation bytes per token ([`crate::model::scoring_bytes_per_token`]),
    /// at least one full context. `None` (rows only) for a served model or where memory cannot be read.
    pub fn batch_budget(&self) -> Option<usize> {
        if self.kind != BackendKind::Local {
            return None;
        }
        if self.max_batch_tokens.is_some() {
            return self.max_batch_tokens;
        }
        let cfg = crate::model::HfConfig::load(&Path::new(&self.model).join("config.json")).ok()?;
        let per_token = crate::model::scoring_bytes_per_token(&cfg).max(1) as u64;
        let budget = (crate::io::available_memory()? / 4 / per_token) as usize;
        Some(budget.max(self.max_length.unwrap_or(cfg.max_position_embeddings)))
    }
}

/// The model's context length from a checkpoint's config.json.
pub fn config_max_length(model: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(model.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("max_position_embeddings")?.as_u64().map(|n| n as usize)
}
