//! LLaMA in candle: load and save Hugging Face checkpoints, score, generate, resize, LoRA.
//!
//! The model is ours rather than candle-transformers' because training needs logits at every position
//! and a backward pass through every op (candle's fused rms_norm/rope/softmax kernels have none).

mod checkpoint;
mod config;
mod cpu_attention;
mod fused;
mod generate;
pub(crate) mod kernels;
mod linear;
mod llama;
mod lora;
mod resize;
mod score;

pub use checkpoint::{
    parse_device, parse_dtype, write_sharded, Checkpoint, CheckpointInfo, SaveOptions, Train, Trainable, PICKLE_HINT,
};
pub use config::{HfConfig, LlamaConfig, LoraConfig, LoraTarget, RopeScaling};
pub use generate::{generate, GenerateOptions, Generation, StopReason};
pub use llama::{ForwardOptions, KvCache, Llama};
pub use lora::{merge_lora, save_adapter, MergeReport};
pub use resize::{resize_checkpoint, ResizeError, ResizeReport, RowInit};
pub use score::{read_id_lines, score_sequences, scoring_bytes_per_token, ContinuationScore, ScoreRun, Scorer};

pub(crate) use checkpoint::{read_safetensors, write_safetensors};

use std::path::{Path, PathBuf};

/// Errors of the model core.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `config.json` (or `adapter_config.json`) is malformed or describes an unsupported model.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The checkpoint directory lacks something or holds a format we refuse.
    #[error("{path}: {message}")]
    Checkpoint {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// A tensor is missing or has the wrong shape.
    #[error("{path}: tensor {name}: {message}")]
    Tensor {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A request the model cannot answer (empty input, too long, bad option).
    #[error("{0}")]
    Request(String),
    /// A `--device` that cannot be opened: CUDA not compiled in, or no driver/GPU.
    #[error("device {spec}: {message}")]
    Device {
        /// What was asked for (`cuda:0`).
        spec: String,
        /// Why it cannot be had and what to do.
        message: String,
        /// candle's (cudarc's) error, when the driver answered.
        #[source]
        source: Option<Box<candle_core::Error>>,
    },
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] crate::vocab::VocabError),
    /// A candle operation failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }

    pub(crate) fn checkpoint(path: &Path, message: impl Into<String>) -> Self {
        Self::Checkpoint { path: path.to_path_buf(), message: message.into() }
    }
}
