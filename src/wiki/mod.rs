//! Wikipedia dumps → clean text shards: `langadapt wiki ingest`.
//!
//! Reading is split by what the dump offers: a multistream dump with its index is decoded stream by
//! stream on all threads; any other dump (single-stream bz2, multistream without index, plain or
//! UTF-16 XML) is decoded front to back on one thread while pages are parsed and cleaned on the others.
//! Pages are numbered in dump order and grouped into parts of `part_pages` pages, so output is the
//! same whatever the thread count, `--shard i/N` takes every N-th part, and `--resume` skips parts
//! already written.

pub mod bz2;
pub mod encoding;
pub mod index;
mod ingest;
mod parts;
mod reader;
pub mod wikitext;
mod worker;
pub mod xml;

pub use ingest::{run, IngestConfig, IngestReport, PartStats, WikiError};
