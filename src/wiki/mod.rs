//! Wikipedia dumps → clean text shards: `langadapt wiki ingest`.
//!
//! Reading is split by what the dump offers: a multistream dump with its index is decoded stream by
//! stream on all threads; any other bzip2 dump (single-stream, multistream without index) is read front
//! to back with its blocks decoded in parallel (lbzip2's method, `bz2block`), and plain or UTF-16 XML is
//! read as is; pages are then parsed and cleaned on all threads.
//! Pages are numbered in dump order and grouped into parts of `part_pages` pages, so output is the
//! same whatever the thread count, `--shard i/N` takes every N-th part, and `--resume` skips parts
//! already written.

pub mod bz2;
pub mod bz2block;
pub mod encoding;
pub mod index;
mod ingest;
mod parts;
mod reader;
pub mod wikitext;
mod worker;
pub mod xml;

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::corpus::ShardError;
use crate::io::ShardSpec;
use crate::manifest::ManifestError;
use index::IndexError;

pub use ingest::{run, IngestReport};

/// Settings of `wiki ingest` (all flags; also usable from recipes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// The dump: `*-pages-articles[-multistream].xml.bz2` or plain `.xml` (UTF-8 or UTF-16 with BOM).
    pub dump: PathBuf,
    /// In a recipe, instead of `dump`: the date (`YYYYMMDD` or `latest`) of `lang`'s dump to download first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// The dump site for `date` (default: dumps.wikimedia.org).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    /// Output directory for `part-NNNNN.parquet` and `manifest.json` (a recipe sets it per stage).
    pub out: PathBuf,
    /// The multistream index (`*-multistream-index.txt[.bz2]`), for parallel decoding.
    pub index: Option<PathBuf>,
    /// Language code written into every record; default: the dump's `xml:lang` or dbname.
    pub lang: Option<String>,
    /// Articles whose clean text has fewer characters are dropped (counted as `too_short`).
    pub min_chars: usize,
    /// Drop disambiguation pages.
    pub drop_disambiguation: bool,
    /// Extra disambiguation template names.
    pub disambiguation_templates: Vec<String>,
    /// Pages (of any namespace, in dump order) per output part.
    pub part_pages: u64,
    /// This process's share of the parts.
    pub shard: ShardSpec,
    /// Continue a run whose parts are partly written.
    pub resume: bool,
}

impl Default for IngestConfig {
    /// The defaults of every key (the only place they are declared).
    fn default() -> Self {
        IngestConfig {
            dump: PathBuf::new(),
            date: None,
            mirror: None,
            out: PathBuf::new(),
            index: None,
            lang: None,
            min_chars: 0,
            drop_disambiguation: false,
            disambiguation_templates: Vec::new(),
            part_pages: 50_000,
            shard: ShardSpec::WHOLE,
            resume: false,
        }
    }
}

impl IngestConfig {
    /// A config with defaults for everything but the dump and output directory.
    pub fn new(dump: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        IngestConfig { dump: dump.into(), out: out.into(), ..IngestConfig::default() }
    }

    /// The settings that decide the output bytes (not paths, threads, shard or resume): the run id.
    pub fn output_settings(&self) -> serde_json::Value {
        serde_json::json!({
            "lang": self.lang,
            "min_chars": self.min_chars,
            "drop_disambiguation": self.drop_disambiguation,
            "disambiguation_templates": self.disambiguation_templates,
            "part_pages": self.part_pages,
        })
    }
}

/// Errors of `wiki ingest`; each names the file and where in it.
#[derive(Debug, thiserror::Error)]
pub enum WikiError {
    /// Reading failed; bzip2 and UTF-16 errors carry their byte offset in the message.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The file is empty.
    #[error("{path}: empty file (expected a MediaWiki XML dump, .xml or .xml.bz2)")]
    Empty { path: PathBuf },
    /// The file is not a MediaWiki dump.
    #[error("{path}: not a MediaWiki dump: {msg}")]
    NotADump { path: PathBuf, msg: String },
    /// Malformed or truncated XML.
    #[error("{path}: {msg} ({at})")]
    Xml { path: PathBuf, at: String, msg: String },
    /// The multistream index is malformed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The index does not describe this dump.
    #[error("{path}: index {index} does not match the dump: {msg}")]
    IndexMismatch { path: PathBuf, index: PathBuf, msg: String },
    /// The output directory is not usable as asked.
    #[error("{dir}: {msg}")]
    Output { dir: PathBuf, msg: String },
    /// Writing a part failed.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// Hashing inputs or writing the manifest failed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Counters of one part, kept in its footer so a resumed run can report the whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartStats {
    /// Pages seen (any namespace).
    pub pages: u64,
    /// Articles written.
    pub articles: u64,
    /// Namespace-0 redirects.
    pub redirects: u64,
    /// Pages outside namespace 0.
    pub other_namespaces: u64,
    /// Articles shorter than `min_chars`.
    pub too_short: u64,
    /// Disambiguation pages dropped.
    pub disambiguation: u64,
    /// XML bytes of the part's pages.
    pub xml_bytes: u64,
    /// UTF-8 bytes of clean text written.
    pub text_bytes: u64,
}

impl PartStats {
    fn add(&mut self, o: &PartStats) {
        self.pages += o.pages;
        self.articles += o.articles;
        self.redirects += o.redirects;
        self.other_namespaces += o.other_namespaces;
        self.too_short += o.too_short;
        self.disambiguation += o.disambiguation;
        self.xml_bytes += o.xml_bytes;
        self.text_bytes += o.text_bytes;
    }
}
