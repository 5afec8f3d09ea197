//! langadapt: take an English-centric LLaMA-family model to a new language and measure the result.
//!
//! Every stage is a module with a typed config and a `run` that reads files and writes files plus a
//! `manifest.json` (see DESIGN.md). The binary in `main.rs` only parses flags and calls these.

pub mod alloc;
pub mod config;
pub mod corpus;
pub mod dist;
pub mod error;
pub mod eval;
pub mod hub;
pub mod instruct;
pub mod io;
pub mod manifest;
pub mod model;
pub mod net;
pub mod parallel;
pub mod pipeline;
pub mod progress;
pub mod rng;
pub mod shards;
pub mod stage;
pub mod train;
pub mod vocab;
pub mod wiki;

pub use progress::Progress;

/// How a stage may use the machine: threads and progress display.
#[derive(Debug, Clone, Copy, Default)]
pub struct Env {
    /// Worker threads; 0 = all cores.
    pub threads: usize,
    /// Progress bar settings.
    pub progress: Progress,
}

impl Env {
    /// Worker threads to use: `threads`, or all cores when 0.
    pub fn threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}
