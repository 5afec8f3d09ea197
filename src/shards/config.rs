//! Settings of `shards build` (DESIGN.md "Stage configs": the pinned keys plus a few more), loading from
//! `mix.toml` with paths relative to the file, and the checks that refuse a bad mixture before any work.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::template::Template;
use super::ShardsError;
use crate::io::ShardSpec;

/// What kind of shards to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Plain text documents packed back to back, EOS between them, loss on every token.
    Pretrain,
    /// Instruction examples formatted by a template, loss on the response (+EOS) only.
    Sft,
}

/// What happens to the last, partly filled row of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LastRow {
    /// Fill it up with the pad id (EOS, else UNK) under loss_mask 0.
    Pad,
    /// Leave it out (its tokens are counted as `dropped_tail_tokens`).
    Drop,
}

/// What happens to an SFT example longer than `seq_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MaxLenPolicy {
    /// Keep its first `seq_len` tokens (counted as `truncated`).
    Truncate,
    /// Leave it out (counted as `too_long`).
    Drop,
}

/// One input of the mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Name written into every row's `source` column and used in reports.
    pub name: String,
    /// Text-shard directory, `.parquet` with a `text` column, `.jsonl` (a `text` field, or instruction
    /// records for sft), or `.txt` (documents separated by blank lines).
    pub path: PathBuf,
    /// Language code (reported; not used to filter).
    pub lang: String,
    /// Share of the training tokens (loss_mask = 1) this source should have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
    /// How many times to use every training document (fractions take a seeded subset for the rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<f64>,
    /// Read only the first N documents (records) of the source, e.g. an SFT data size (1K, 5K, …) taken
    /// from one larger file; earlier sizes are then subsets of later ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// Settings of `shards build`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// SentencePiece `tokenizer.model`, a `tokenizer.json`, or a checkpoint directory holding one.
    pub tokenizer: PathBuf,
    /// `pretrain` or `sft`.
    #[serde(default = "default_kind")]
    pub kind: Kind,
    /// Tokens per row (at least 2).
    pub seq_len: usize,
    /// Seed of the validation split and of the document subsets a fractional mixture needs.
    #[serde(default)]
    pub seed: u64,
    /// Share of documents (not rows) held out for validation.
    #[serde(default)]
    pub val_share: f64,
    /// SFT prompt template (see [`Template::NAMES`]); default `alpaca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// BOS at the start of every document/example.
    #[serde(default = "yes")]
    pub add_bos: bool,
    /// EOS after every document/example.
    #[serde(default = "yes")]
    pub add_eos: bool,
    /// Trained tokens of the training split when every source has a share (default: the most that uses
    /// no document twice); more than that repeats documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_tokens: Option<u64>,
    /// The last partial row of each source: `pad` or `drop`.
    #[serde(default = "default_last_row")]
    pub last_row: LastRow,
    /// SFT: several examples per row, with `segment_ids` marking them (pretrain always packs).
    #[serde(default)]
    pub pack: bool,
    /// SFT examples longer than `seq_len`: `truncate` or `drop`.
    #[serde(default = "default_max_len_policy")]
    pub max_len_policy: MaxLenPolicy,
    /// Rows per output part file.
    #[serde(default = "default_rows_per_part")]
    pub rows_per_part: u64,
    /// The inputs.
    pub sources: Vec<SourceConfig>,
    /// Output directory (`--out`; a recipe sets it per stage).
    #[serde(default)]
    pub out: PathBuf,
    /// This process's share of the documents (`--shard i/N`).
    #[serde(default = "default_shard")]
    pub shard: ShardSpec,
}

fn default_kind() -> Kind {
    Kind::Pretrain
}
fn yes() -> bool {
    true
}
fn default_last_row() -> LastRow {
    LastRow::Pad
}
fn default_max_len_policy() -> MaxLenPolicy {
    MaxLenPolicy::Truncate
}
fn default_rows_per_part() -> u64 {
    8192
}
fn default_shard() -> ShardSpec {
    ShardSpec::WHOLE
}

/// How far shares may be from summing to 1 (they are written as decimals).
const SHARE_SUM_TOLERANCE: f64 = 1e-6;

impl BuildConfig {
    /// A pretrain config with the defaults for one source.
    pub fn single(tokenizer: PathBuf, source: SourceConfig, seq_len: usize, out: PathBuf) -> Result<Self, ShardsError> {
        #[derive(Serialize)]
        struct One {
            tokenizer: PathBuf,
            sources: [SourceConfig; 1],
            seq_len: usize,
            out: PathBuf,
        }
        Self::load(None, &One { tokenizer, sources: [source], seq_len, out })
    }

    /// Reads `mix.toml` (when given; `tokenizer` and source paths relative to its folder) with `flags` (keys
    /// as in the file, see [`crate::config::layered`]) winning over its keys.
    pub fn load(file: Option<&Path>, flags: &impl Serialize) -> Result<Self, ShardsError> {
        Ok(crate::config::layered(file, &["tokenizer", "sources[].path"], flags)?)
    }

    /// The name of the template SFT examples are formatted with (`alpaca` unless set).
    pub fn template_name(&self) -> &str {
        self.template.as_deref().unwrap_or("alpaca")
    }

    /// The template SFT examples are formatted with.
    pub fn template(&self) -> Result<Template, String> {
        Template::by_name(self.template_name())
    }

    /// Refuses settings that cannot make the requested shards; `origin` names the config file (or the flags).
    pub fn validate(&self, origin: &Path) -> Result<(), ShardsError> {
        let bad = |msg: String| Err(ShardsError::Config { origin: origin.into(), msg });
        if self.seq_len < 2 {
            return bad(format!("seq_len = {} is too small: a row needs at least 2 tokens", self.seq_len));
        }
        if !(0.0..1.0).contains(&self.val_share) {
            return bad(format!("val_share = {} must be at least 0 and below 1", self.val_share));
        }
        if self.out.as_os_str().is_empty() {
            return bad("no output directory: pass --out DIR".into());
        }
        if self.rows_per_part == 0 {
            return bad("rows_per_part must be at least 1".into());
        }
        if let Err(msg) = self.template() {
            return bad(msg);
        }
        if self.kind == Kind::Pretrain && (self.template.is_some() || self.pack) {
            return bad("template and pack are sft settings; set kind = \"sft\" or remove them".into());
        }
        if self.sources.is_empty() {
            return bad("no [[sources]]: name at least one input".into());
        }
        if !self.tokenizer.exists() {
            return bad(format!("tokenizer {} does not exist", self.tokenizer.display()));
        }
        let mut share_sum = 0.0;
        let mut shares = 0;
        for (i, s) in self.sources.iter().enumerate() {
            if s.name.is_empty() || self.sources[..i].iter().any(|o| o.name == s.name) {
                return bad(format!(
                    "source {}: name '{}' is empty or used twice; names must be unique",
                    i + 1,
                    s.name
                ));
            }
            if !s.path.exists() {
                return bad(format!("source '{}': {} does not exist", s.name, s.path.display()));
            }
            if let Err(msg) = super::source::check(&s.path, self.kind) {
                return bad(format!("source '{}': {}: {msg}", s.name, s.path.display()));
            }
            match (s.share, s.epochs) {
                (Some(p), None) if p > 0.0 && p <= 1.0 => {
                    share_sum += p;
                    shares += 1;
                }
                (None, Some(e)) if e > 0.0 && e.is_finite() => {}
                (Some(_), Some(_)) | (None, None) => {
                    return bad(format!("source '{}': give exactly one of share or epochs", s.name));
                }
                (Some(p), None) => return bad(format!("source '{}': share = {p} must be in (0, 1]", s.name)),
                (None, Some(e)) => return bad(format!("source '{}': epochs = {e} must be above 0", s.name)),
            }
            if s.limit == Some(0) {
                return bad(format!(
                    "source '{}': limit = 0 reads nothing; remove the source or raise the limit",
                    s.name
                ));
            }
        }
        if shares == self.sources.len() && (share_sum - 1.0).abs() > SHARE_SUM_TOLERANCE {
            return bad(format!("shares sum to {share_sum}, not 1; adjust them (or give some sources epochs)"));
        }
        if self.train_tokens.is_some() && shares < self.sources.len() {
            return bad("train_tokens needs every source to have a share (epochs fix their own tokens)".into());
        }
        if shares > 0 && shares < self.sources.len() && share_sum >= 1.0 - SHARE_SUM_TOLERANCE {
            return bad(format!(
                "shares sum to {share_sum}; with sources given by epochs they must sum to less than 1 (the rest is theirs)"
            ));
        }
        Ok(())
    }

    /// The settings that decide the output bytes (not paths or out): the run id. `--shard` is left out so
    /// every shard of one run carries the same id, as with `wiki ingest`.
    pub fn output_settings(&self) -> serde_json::Value {
        let sources: Vec<_> = self
            .sources
            .iter()
            .map(|s| {
                let mut v = serde_json::json!({"name": s.name, "lang": s.lang, "share": s.share, "epochs": s.epochs});
                // Only when set, so runs without a limit keep their run ids.
                if let Some(n) = s.limit {
                    v["limit"] = n.into();
                }
                v
            })
            .collect();
        serde_json::json!({
            "kind": self.kind,
            "seq_len": self.seq_len,
            "seed": self.seed,
            "val_share": self.val_share,
            "template": self.template,
            "add_bos": self.add_bos,
            "add_eos": self.add_eos,
            "last_row": self.last_row,
            "pack": self.pack,
            "max_len_policy": self.max_len_policy,
            "rows_per_part": self.rows_per_part,
            "train_tokens": self.train_tokens,
            "sources": sources,
        })
    }
}
