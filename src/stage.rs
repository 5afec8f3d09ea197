//! The one shape every recipe stage has: a typed config that knows its kind, the paths it reads, where it
//! writes, what its manifest must record to be skipped, how `--smoke` caps it, whether it resumes, and how
//! it runs. Each stage's module implements [`Stage`] for its config; the recipe runner only sees the trait.

use std::path::{Path, PathBuf};

use crate::Env;

/// Whether a path key must name an existing file before the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Read: must exist (or be produced by an earlier stage).
    Input,
    /// Read when present, written otherwise (a translation cache).
    Optional,
    /// A checkpoint folder, or a Hub model id `org/name[@revision]` fetched when the stage runs.
    Checkpoint,
}

/// One path-valued setting: its key as the recipe writes it, the value to resolve in place, and the need.
pub type PathKey<'a> = (String, &'a mut PathBuf, Need);

/// What a stage's `run` gets besides its own settings.
#[derive(Debug, Clone, Copy)]
pub struct StageCtx<'a> {
    /// The stage's output folder (its settings already point there).
    pub dir: &'a Path,
    /// The recipe's folder (relative paths inside data files start there).
    pub base: &'a Path,
    /// Continue from what an interrupted run left in `dir` (see [`Stage::resumable`]).
    pub resume: bool,
    /// Threads and progress.
    pub env: &'a Env,
}

/// Why a stage failed, with its error chain kept.
pub type StageError = Box<dyn std::error::Error + Send + Sync>;

/// What every stage config gets from being a plain `Clone + Serialize` struct.
pub trait StageBase {
    /// The full settings, for `run --dry-run --json`.
    fn to_json(&self) -> serde_json::Value;

    /// A boxed copy.
    fn clone_box(&self) -> Box<dyn Stage>;
}

impl<T: Stage + Clone + serde::Serialize + 'static> StageBase for T {
    fn to_json(&self) -> serde_json::Value {
        // Plain serde structs: a failure would be a bug, shown as null.
        serde_json::to_value(self).unwrap_or_default()
    }

    fn clone_box(&self) -> Box<dyn Stage> {
        Box::new(self.clone())
    }
}

/// A recipe stage: the settings of one command of kind [`Stage::kind`], run into its own folder.
pub trait Stage: StageBase + std::fmt::Debug + Send + Sync {
    /// The table the stage sits in (`wiki`, `translate`, ...).
    fn kind(&self) -> &'static str;

    /// Every path-valued key, for resolution and checks.
    fn paths_mut(&mut self) -> Vec<PathKey<'_>>;

    /// Points the stage's outputs into `dir`.
    fn set_out(&mut self, dir: &Path);

    /// The manifest the stage writes into `dir`.
    fn manifest_path(&self, dir: &Path) -> PathBuf {
        dir.join("manifest.json")
    }

    /// What the manifest records as `args` when run with these settings (every key must match for the stage
    /// to be skipped; the manifest may hold more). `None` when it cannot be known before running. Default:
    /// the whole config, as most stages record it.
    fn settings(&self) -> Option<serde_json::Value> {
        Some(self.to_json())
    }

    /// Caps for `--smoke` (a few steps, documents or records).
    fn smoke(&mut self) {}

    /// Whether a run in `dir` continues what is there instead of starting over; `interrupted`: a run left
    /// files but no complete manifest.
    fn resumable(&self, _dir: &Path, _interrupted: bool) -> bool {
        false
    }

    /// Runs the stage.
    fn run(&self, ctx: &StageCtx) -> Result<(), StageError>;

    /// A training stage: the token shards it trains on, when `model` is its final checkpoint.
    fn trained_model_data(&self, _model: &Path) -> Option<PathBuf> {
        None
    }

    /// An SFT shards stage: its instruction template, when `data` is its training split.
    fn sft_template(&self, _data: &Path) -> Option<String> {
        None
    }

    /// An evaluation without a prompt template: the model it scores (to look up how it was tuned).
    fn model_without_template(&self) -> Option<PathBuf> {
        None
    }

    /// Sets the prompt template of an evaluation (see [`Stage::model_without_template`]).
    fn set_prompt_template(&mut self, _template: String) {}
}

/// Whether two paths name the same file (canonical forms compared when both exist).
pub fn same_path(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

impl Clone for Box<dyn Stage> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// `key[i]` entries for a list of input paths.
pub fn indexed<'a>(key: &str, paths: &'a mut [PathBuf], need: Need) -> impl Iterator<Item = PathKey<'a>> + 'a {
    let key = key.to_string();
    paths.iter_mut().enumerate().map(move |(i, p)| (format!("{key}[{i}]"), p, need))
}

/// `--smoke`: optimizer steps per training stage.
pub const SMOKE_STEPS: usize = 4;
/// `--smoke`: documents per eval task.
pub const SMOKE_DOCS: usize = 10;
/// `--smoke`: records per translation.
pub const SMOKE_RECORDS: u64 = 50;
