//! One tokenizer type for every stage: ids exactly as the reference encoders give them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::export::special_pieces;
use super::proto::{ModelProto, PieceType};
use super::spm::{byte_of_piece, SpmModel};

/// Errors of the vocabulary stage.
#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    /// No tokenizer file where one was expected.
    #[error(
        "{0}: no tokenizer.json or tokenizer.model here; pass a tokenizer file or a checkpoint directory holding one"
    )]
    NotFound(PathBuf),
    /// The tokenizer file could not be read or parsed.
    #[error("{path}: cannot load tokenizer: {message}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A `.model` file that is not a valid SentencePiece model.
    #[error("{path}: not a valid SentencePiece model at byte {offset}: {message}")]
    Proto {
        /// The file.
        path: PathBuf,
        /// Byte offset of the problem.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// Encoding or decoding failed.
    #[error("tokenizer: {0}")]
    Codec(String),
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
    /// Reading an input or writing an output failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line of a text input could not be read.
    #[error("{path}: line {line}: {message}")]
    Input {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What went wrong.
        message: String,
    },
    /// No training text.
    #[error("{0}: no non-empty lines to train on; check the input paths")]
    EmptyCorpus(String),
    /// The vocabulary cannot hold the required pieces.
    #[error("--vocab-size {vocab_size} is smaller than the {needed} pieces required (3 special + 256 byte pieces + {chars} characters for coverage {coverage}); raise --vocab-size or lower --character-coverage")]
    VocabTooSmall {
        /// Requested size.
        vocab_size: usize,
        /// Minimum size.
        needed: usize,
        /// Characters the coverage requires.
        chars: usize,
        /// The coverage.
        coverage: f64,
    },
    /// The trainer failed.
    #[error("training failed: {0}")]
    Train(String),
    /// A merge input is unusable.
    #[error("{path}: {message}")]
    Merge {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// The checkpoint's vocabulary matrices could not be resized into `dst`.
    #[error("resizing the checkpoint into {}", dst.display())]
    Resize {
        /// The output checkpoint directory.
        dst: PathBuf,
        /// What failed (it names the file).
        #[source]
        source: crate::model::ResizeError,
    },
    /// Text shards could not be read.
    #[error(transparent)]
    Shard(#[from] crate::corpus::ShardError),
    /// Fetching a base or model from the Hub failed.
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
    /// Hashing inputs or writing the manifest failed.
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
}

/// What does the work: the tokenizers crate (tokenizer.json) or our SentencePiece port (.model).
// Built once per tokenizer and shared behind an Arc: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Json(tokenizers::Tokenizer),
    Spm(SpmModel),
}

/// A loaded tokenizer. Cheap to clone; safe to share between threads.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Backend>,
    path: PathBuf,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    adds_bos: bool,
}

/// A special token as the Hugging Face files beside a tokenizer name it.
#[derive(Debug, Clone, PartialEq)]
enum Special {
    /// By content (`tokenizer_config.json`'s `bos_token`).
    Name(String),
    /// By id (`config.json` / `generation_config.json`'s `bos_token_id`).
    Id(u32),
}

/// What transformers reads beside a tokenizer to find its special tokens. The tokenizer's own files name
/// them (`tokenizer_config.json`, then `special_tokens_map.json`: `bos_token`, `eos_token`, `add_bos_token`)
/// and win over the tokenizer's defaults (`<s>`/`</s>`, SentencePiece's control pieces); the model's
/// `config.json` / `generation_config.json` ids (`bos_token_id`, `eos_token_id`; a list gives its first)
/// only fill in what the tokenizer has none of (byte-level BPE files without a tokenizer_config.json).
#[derive(Debug, Default)]
struct SpecialConfig {
    /// From the tokenizer's files.
    bos: Option<Special>,
    eos: Option<Special>,
    add_bos: Option<bool>,
    /// From the model's files.
    bos_id: Option<Special>,
    eos_id: Option<Special>,
}

impl SpecialConfig {
    fn read(dir: &Path) -> Result<Self, VocabError> {
        let mut cfg = SpecialConfig::default();
        for name in ["tokenizer_config.json", "special_tokens_map.json", "config.json", "generation_config.json"] {
            let path = dir.join(name);
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| VocabError::Load { path: path.clone(), message: format!("not valid JSON: {e}") })?;
            let name_of = |key: &str| match &v[key] {
                serde_json::Value::String(s) => Some(Special::Name(s.clone())),
                // AddedToken as a dict: {"content": "<s>", "special": true, ...}
                serde_json::Value::Object(o) => o.get("content")?.as_str().map(|s| Special::Name(s.to_string())),
                _ => None,
            };
            let id_of = |key: &str| match &v[key] {
                serde_json::Value::Array(a) => a.first()?.as_u64().map(|i| Special::Id(i as u32)),
                other => other.as_u64().map(|i| Special::Id(i as u32)),
            };
            cfg.bos = cfg.bos.or_else(|| name_of("bos_token"));
            cfg.eos = cfg.eos.or_else(|| name_of("eos_token"));
            cfg.add_bos = cfg.add_bos.or(v["add_bos_token"].as_bool());
            cfg.bos_id = cfg.bos_id.or_else(|| id_of("bos_token_id"));
            cfg.eos_id = cfg.eos_id.or_else(|| id_of("eos_token_id"));
        }
        Ok(cfg)
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("path", &self.path).field("vocab_size", &self.vocab_size()).finish()
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json`, a SentencePiece `tokenizer.model`, or a directory holding either
    /// (tokenizer.json first when both are there: they encode identically).
    pub fn from_path(path: &Path) -> Result<Self, VocabError> {
        let file = if path.is_dir() {
            ["tokenizer.json", "tokenizer.model"].iter().map(|n| path.join(n)).find(|p| p.is_file())
        } else {
            Some(path.to_path_buf()).filter(|p| p.is_file())
        };
        let file = file.ok_or_else(|| VocabError::NotFound(path.to_path_buf()))?;
        let load_err = |message: String| VocabError::Load { path: file.clone(), message };
        let head = std::fs::read(&file).map_err(|e| load_err(e.to_string()))?;
        let is_json = head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        let tok = if is_json {
            let inner = tokenizers::Tokenizer::from_bytes(&head).map_err(|e| load_err(e.to_string()))?;
            let id = |t: &str| inner.token_to_id(t);
            let (bos, eos, unk) = (id("<s>"), id("</s>"), id("<unk>"));
            // Whether the post-processor puts a special token in front (LLaMA's TemplateProcessing does,
            // GPT-2-style byte-level BPE does not).
            let with = inner.encode("a", true).map_err(|e| load_err(e.to_string()))?;
            let without = inner.encode("a", false).map_err(|e| load_err(e.to_string()))?;
            let adds_bos =
                with.get_ids().len() > without.get_ids().len() && with.get_special_tokens_mask().first() == Some(&1);
            Self { inner: Arc::new(Backend::Json(inner)), path: file.clone(), bos, eos, unk, adds_bos }
        } else {
            let proto = ModelProto::from_bytes(&head).map_err(|e| VocabError::Proto {
                path: file.clone(),
                offset: e.offset,
                message: e.message,
            })?;
            Self::from_proto(proto, &file)?
        };
        let dir = file.parent().unwrap_or(Path::new("."));
        tok.with_special_config(SpecialConfig::read(dir)?)
    }

    /// Applies the special tokens the files beside the tokenizer name; the names `<s>`/`</s>` (or the
    /// SentencePiece control pieces) only when they name none. A name that is not in the vocabulary is
    /// an error: encoding with the wrong BOS would silently shift every score.
    fn with_special_config(mut self, cfg: SpecialConfig) -> Result<Self, VocabError> {
        let resolve = |s: Special, what: &str| match s {
            Special::Id(id) if (id as usize) < self.vocab_size() => Ok(id),
            Special::Id(id) => Err(VocabError::Load {
                path: self.path.clone(),
                message: format!(
                    "{what} id {id} (from config.json/generation_config.json) is outside the vocabulary of {}",
                    self.vocab_size()
                ),
            }),
            Special::Name(n) => self.piece_to_id(&n).ok_or_else(|| VocabError::Load {
                path: self.path.clone(),
                message: format!("{what} {n:?} (from tokenizer_config.json) is not in the vocabulary"),
            }),
        };
        let bos = cfg.bos.map(|b| resolve(b, "bos_token")).transpose()?;
        let eos = cfg.eos.map(|e| resolve(e, "eos_token")).transpose()?;
        let bos_id = cfg.bos_id.map(|b| resolve(b, "bos_token")).transpose()?;
        let eos_id = cfg.eos_id.map(|e| resolve(e, "eos_token")).transpose()?;
        self.bos = bos.or(self.bos).or(bos_id);
        self.eos = eos.or(self.eos).or(eos_id);
        if let Some(add) = cfg.add_bos {
            self.adds_bos = add;
        }
        Ok(self)
    }

    /// A tokenizer for an in-memory SentencePiece model; `path` names it in messages.
    pub fn from_proto(proto: ModelProto, path: &Path) -> Result<Self, VocabError> {
        let model = SpmModel::new(proto).map_err(|message| VocabError::Load { path: path.into(), message })?;
        // SentencePiece's bos_id()/eos_id(): the named piece, if it is a control symbol.
        let sp = special_pieces(model.proto());
        let (bos, eos, unk) = (sp.bos.map(|b| b.0), sp.eos.map(|e| e.0), Some(model.unk_id()));
        // LlamaTokenizer's default add_bos_token = True.
        Ok(Self {
            inner: Arc::new(Backend::Spm(model)),
            path: path.to_path_buf(),
            bos,
            eos,
            unk,
            adds_bos: bos.is_some(),
        })
    }

    /// Token ids of `text`, with the BOS id first when `add_bos` (never EOS).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, VocabError> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos {
            ids.extend(self.bos);
        }
        match self.inner.as_ref() {
            Backend::Json(t) => {
                let enc = t.encode(text, false).map_err(|e| VocabError::Codec(e.to_string()))?;
                ids.extend_from_slice(enc.get_ids());
            }
            Backend::Spm(m) => ids.extend(m.encode(text)),
        }
        Ok(ids)
    }

    /// Text of `ids`, special tokens skipped (a `.model` decodes by SentencePiece's rules, a
    /// tokenizer.json by its decoder).
    pub fn decode(&self, ids: &[u32]) -> Result<String, VocabError> {
        match self.inner.as_ref() {
            Backend::Json(t) => t.decode(ids, true).map_err(|e| VocabError::Codec(e.to_string())),
            Backend::Spm(m) => m.decode(ids).map_err(VocabError::Codec),
        }
    }

    /// The piece of `id`, if it is in the vocabulary.
    pub fn id_to_piece(&self, id: u32) -> Option<String> {
        match self.inner.as_ref() {
            Backend::Json(t) => t.id_to_token(id),
            Backend::Spm(m) => m.proto().pieces.get(id as usize).map(|p| p.piece.clone()),
        }
    }

    /// The id of `piece`, if it is in the vocabulary.
    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        match self.inner.as_ref() {
            Backend::Json(t) => t.token_to_id(piece),
            Backend::Spm(m) => m.lookup(piece),
        }
    }

    /// True when `id` is a byte-fallback piece `<0xNN>`.
    pub fn is_byte(&self, id: u32) -> bool {
        match self.inner.as_ref() {
            Backend::Json(t) => t.id_to_token(id).is_some_and(|p| byte_of_piece(&p).is_some()),
            Backend::Spm(m) => m.proto().pieces.get(id as usize).is_some_and(|p| p.kind == PieceType::Byte),
        }
    }

    /// Number of ids (added tokens included).
    pub fn vocab_size(&self) -> usize {
        match self.inner.as_ref() {
            Backend::Json(t) => t.get_vocab_size(true),
            Backend::Spm(m) => m.len(),
        }
    }

    /// The SentencePiece model, when this tokenizer was loaded from one.
    pub fn sentencepiece(&self) -> Option<&ModelProto> {
        match self.inner.as_ref() {
            Backend::Json(_) => None,
            Backend::Spm(m) => Some(m.proto()),
        }
    }

    /// Beginning-of-sequence id.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence id.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether the tokenizer itself starts every encoding with BOS (transformers' `add_special_tokens=True`):
    /// `add_bos_token` of tokenizer_config.json, else its post-processor (tokenizer.json) or SentencePiece's
    /// LLaMA default (yes).
    pub fn adds_bos(&self) -> bool {
        self.adds_bos && self.bos.is_some()
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
