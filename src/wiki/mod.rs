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

pub use ingest::{run, IngestConfig, IngestReport, PartStats, WikiError};
