//! One tokenizer type for every stage: ids exactly as the reference encoders give them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors of the vocabulary stage.
#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    /// No tokenizer file where one was expected.
    #[error("{0}: no tokenizer.json or tokenizer.model here; pass a tokenizer file or a checkpoint directory holding one")]
    NotFound(PathBuf),
    /// The tokenizer file could not be read or parsed.
    #[error("{path}: cannot load tokenizer: {message}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Encoding or decoding failed.
    #[error("tokenizer: {0}")]
    Codec(String),
}

/// A loaded tokenizer. Cheap to clone; safe to share between threads.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    path: PathBuf,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("path", &self.path).field("vocab_size", &self.vocab_size()).finish()
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json`, or a directory holding one.
    pub fn from_path(path: &Path) -> Result<Self, VocabError> {
        let file = if path.is_dir() { path.join("tokenizer.json") } else { path.to_path_buf() };
        if !file.is_file() {
            return Err(VocabError::NotFound(path.to_path_buf()));
        }
        let inner = tokenizers::Tokenizer::from_file(&file)
            .map_err(|e| VocabError::Load { path: file.clone(), message: e.to_string() })?;
        let id = |t: &str| inner.token_to_id(t);
        let (bos, eos, unk) = (id("<s>"), id("</s>"), id("<unk>"));
        Ok(Self { inner: Arc::new(inner), path: file, bos, eos, unk })
    }

    /// Token ids of `text`, with the BOS id first when `add_bos` (never EOS).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, VocabError> {
        let enc = self.inner.encode(text, false).map_err(|e| VocabError::Codec(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String, VocabError> {
        self.inner.decode(ids, true).map_err(|e| VocabError::Codec(e.to_string()))
    }

    /// The piece of `id`, if it is in the vocabulary.
    pub fn id_to_piece(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of ids (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Beginning-of-sequence id.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence id.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Unknown-token id.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }

    /// The file this tokenizer was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
