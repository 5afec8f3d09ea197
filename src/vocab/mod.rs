//! Vocabulary: SentencePiece model files, tokenizers (tokenizer.json, tokenizer.model), encode and decode.

pub mod bytelevel;
pub mod export;
pub mod merge;
pub mod proto;
pub mod spm;
#[cfg(feature = "sentencepiece")]
mod spm_cpp;
pub mod stats;
pub mod text;
mod tokenizer;
pub mod train;

pub use proto::ModelProto;
pub use tokenizer::{Tokenizer, VocabError};
