//! Recipes: one TOML file naming the stages to run and their settings, run in file order into
//! `OUT/<stage>/`, each with its manifest. A stage is a table `[KIND.NAME]` whose keys are those of the
//! command of that kind (`[wiki.trwiki]` takes `wiki ingest`'s settings); NAME is its output folder.
//!
//! Path values: `@NAME/rest` is a file under an earlier stage's output (`OUT/NAME/rest`); `$KEY/rest` is
//! under the recipe's `[inputs]` entry KEY (the paths a user fills in); other relative paths are relative
//! to the recipe file; `out` is relative to the working directory. `--smoke` replaces `[inputs]` by
//! `[smoke.inputs]`, lays the rest of `[smoke]` over the stages, and caps training and evaluation so
//! the whole recipe runs in minutes on the bundled samples.
//!
//! A stage already complete for the same settings (its manifest records them and `audit` finds its
//! files intact) is skipped; an interrupted one resumes where its kind can (wiki parts, training
//! checkpoints, the translation cache) and is redone otherwise.

mod audit;
pub mod report;

pub use audit::{audit, AuditReport, Finding};
pub use report::{write_report, ReportError, ReportSummary};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::manifest::Manifest;
use crate::{eval, instruct, shards, train, vocab, wiki, Env};

/// Errors reading or running a recipe.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The recipe file could not be read.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The recipe is not valid TOML or has unknown/missing keys (the message has line and column).
    #[error("{path}: {msg}")]
    Parse { path: PathBuf, msg: String },
    /// A value of the recipe is wrong (unknown stage or input, a missing file, a bad name).
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    /// A stage failed.
    #[error("stage {stage}: {message}")]
    Stage { stage: String, message: String },
    /// `--from` / `--only` name no stage of the recipe.
    #[error("{0}")]
    Select(String),
    /// Checking an earlier output failed.
    #[error("{0}")]
    Manifest(#[from] crate::manifest::ManifestError),
    /// Writing the run's report failed.
    #[error("report: {0}")]
    Report(#[from] ReportError),
}

/// The settings of one stage: the config of the command of its kind.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", content = "settings")]
pub enum StageConfig {
    /// `wiki ingest`.
    #[serde(rename = "wiki")]
    Wiki(wiki::IngestConfig),
    /// `instruct translate`.
    #[serde(rename = "translate")]
    Translate(instruct::TranslateConfig),
    /// `instruct translation-pairs`.
    #[serde(rename = "translation-pairs")]
    Pairs(instruct::PairsConfig),
    /// `vocab train`.
    #[serde(rename = "vocab-train")]
    VocabTrain(vocab::train::TrainConfig),
    /// `vocab merge` (with the checkpoint resize).
    #[serde(rename = "vocab-merge")]
    VocabMerge(vocab::merge::MergeConfig),
    /// `shards build`.
    #[serde(rename = "shards")]
    Shards(shards::BuildConfig),
    /// `train`.
    #[serde(rename = "train")]
    Train(train::TrainConfig),
    /// `eval run` on a local checkpoint.
    #[serde(rename = "eval")]
    Eval(eval::EvalConfig),
}

/// One stage of a recipe.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    /// Its name: the output folder `OUT/NAME`.
    pub name: String,
    /// Its settings.
    pub config: StageConfig,
}

/// Whether a path key must name an existing file before the run.
#[derive(Clone, Copy, PartialEq)]
enum Need {
    Input,
    /// Read when present, written otherwise (a translation cache).
    Optional,
}

impl StageConfig {
    /// The table the stage sits in (`wiki`, `translate`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            StageConfig::Wiki(_) => "wiki",
            StageConfig::Translate(_) => "translate",
            StageConfig::Pairs(_) => "translation-pairs",
            StageConfig::VocabTrain(_) => "vocab-train",
            StageConfig::VocabMerge(_) => "vocab-merge",
            StageConfig::Shards(_) => "shards",
            StageConfig::Train(_) => "train",
            StageConfig::Eval(_) => "eval",
        }
    }

    /// Every path-valued key, for resolution and checks.
    fn paths_mut(&mut self) -> Vec<(String, &mut PathBuf, Need)> {
        let one = |k: &str, p, n| (k.to_string(), p, n);
        let mut v = Vec::new();
        match self {
            StageConfig::Wiki(c) => {
                // With `date` the dump is downloaded when the stage runs.
                if c.date.is_none() {
                    v.push(one("dump", &mut c.dump, Need::Input));
                }
                v.extend(c.index.as_mut().map(|p| one("index", p, Need::Input)));
            }
            StageConfig::Translate(c) => {
                v.push(one("input", &mut c.input, Need::Input));
                v.extend(c.cache.as_mut().map(|p| one("cache", p, Need::Optional)));
            }
            StageConfig::Pairs(c) => {
                v.extend(c.parallel.iter_mut().enumerate().map(|(i, p)| (format!("parallel[{i}]"), p, Need::Input)))
            }
            StageConfig::VocabTrain(c) => {
                v.extend(c.input.iter_mut().enumerate().map(|(i, p)| (format!("input[{i}]"), p, Need::Input)))
            }
            StageConfig::VocabMerge(c) => {
                v.push(one("base", &mut c.base, Need::Input));
                v.push(one("add", &mut c.add, Need::Input));
                v.extend(c.model.as_mut().map(|p| one("model", p, Need::Input)));
                v.extend(c.fertility.iter_mut().enumerate().map(|(i, p)| (format!("fertility[{i}]"), p, Need::Input)));
            }
            StageConfig::Shards(c) => {
                v.push(one("tokenizer", &mut c.tokenizer, Need::Input));
                v.extend(c.sources.iter_mut().map(|s| (format!("sources.{}.path", s.name), &mut s.path, Need::Input)));
            }
            StageConfig::Train(c) => {
                v.push(one("model", &mut c.model, Need::Input));
                v.push(one("train", &mut c.train, Need::Input));
                v.extend(c.val.as_mut().map(|p| one("val", p, Need::Input)));
            }
            StageConfig::Eval(c) => {
                v.push(one("model", &mut c.model, Need::Input));
                v.push(one("data_dir", &mut c.data_dir, Need::Input));
                v.extend(c.perplexity_data.as_mut().map(|p| one("perplexity_data", p, Need::Input)));
                v.extend(c.evals_dir.as_mut().map(|p| one("evals_dir", p, Need::Input)));
            }
        }
        v
    }

    /// Points the stage's outputs into `dir`.
    fn set_out(&mut self, dir: &Path) {
        match self {
            StageConfig::Wiki(c) => c.out = dir.into(),
            StageConfig::Translate(c) => c.out = dir.into(),
            StageConfig::Pairs(c) => c.out = dir.join("pairs.jsonl"),
            StageConfig::VocabTrain(c) => c.out = dir.join("spm.model"),
            StageConfig::VocabMerge(c) => c.out = dir.into(),
            StageConfig::Shards(c) => c.out = dir.into(),
            StageConfig::Train(c) => c.out = dir.into(),
            StageConfig::Eval(c) => c.out = dir.into(),
        }
    }

    /// The manifest the stage writes into `dir`.
    fn manifest_path(&self, dir: &Path) -> PathBuf {
        match self {
            StageConfig::Pairs(c) => instruct::pairs::manifest_path(&c.out),
            StageConfig::Eval(c) => eval::run::manifest_path(&c.results_path()),
            _ => dir.join("manifest.json"),
        }
    }

    /// What the stage's manifest records as its `args` when run with these settings (every key of this
    /// value must match; the manifest may hold more).
    fn settings(&self) -> Option<serde_json::Value> {
        let v = |c: serde_json::Result<serde_json::Value>| c.unwrap_or_default();
        Some(match self {
            StageConfig::Wiki(c) => c.output_settings(),
            StageConfig::Translate(c) => c.settings(),
            StageConfig::Pairs(c) => c.settings(),
            StageConfig::VocabTrain(c) => v(serde_json::to_value(c)),
            StageConfig::VocabMerge(c) => v(serde_json::to_value(c)),
            StageConfig::Shards(c) => c.output_settings(),
            StageConfig::Train(c) => v(serde_json::to_value(c)),
            // Only known once the model exists (the weight files are part of the settings).
            StageConfig::Eval(c) => serde_json::to_value(c.run_config().ok()?).ok()?,
        })
    }

    /// Caps for `--smoke`: a few optimizer steps, a few documents per task and translation.
    fn smoke(&mut self) {
        match self {
            StageConfig::Train(c) => {
                c.max_steps = Some(c.max_steps.unwrap_or(SMOKE_STEPS).min(SMOKE_STEPS));
                c.epochs = None;
                c.grad_accum = 1;
                c.warmup_steps = c.warmup_steps.min(1);
                c.eval_every = c.eval_every.min(SMOKE_STEPS);
                c.save_every = c.save_every.min(SMOKE_STEPS / 2);
            }
            StageConfig::Eval(c) => c.limit = Some(c.limit.unwrap_or(SMOKE_DOCS).min(SMOKE_DOCS)),
            StageConfig::Translate(c) => c.limit = Some(c.limit.unwrap_or(SMOKE_RECORDS).min(SMOKE_RECORDS)),
            _ => {}
        }
    }
}

/// `--smoke`: optimizer steps per training stage.
const SMOKE_STEPS: usize = 4;
/// `--smoke`: documents per eval task.
const SMOKE_DOCS: usize = 10;
/// `--smoke`: records per translation.
const SMOKE_RECORDS: u64 = 50;

/// The recipe file as written: one map of named stages per kind, each stage with its place in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    out: PathBuf,
    #[serde(default)]
    inputs: BTreeMap<String, PathBuf>,
    #[serde(default)]
    smoke: Option<toml::Table>,
    #[serde(default)]
    wiki: BTreeMap<String, Spanned<wiki::IngestConfig>>,
    #[serde(default)]
    translate: BTreeMap<String, Spanned<instruct::TranslateConfig>>,
    #[serde(default, rename = "translation-pairs")]
    pairs: BTreeMap<String, Spanned<instruct::PairsConfig>>,
    #[serde(default, rename = "vocab-train")]
    vocab_train: BTreeMap<String, Spanned<vocab::train::TrainConfig>>,
    #[serde(default, rename = "vocab-merge")]
    vocab_merge: BTreeMap<String, Spanned<vocab::merge::MergeConfig>>,
    #[serde(default)]
    shards: BTreeMap<String, Spanned<shards::BuildConfig>>,
    #[serde(default)]
    train: BTreeMap<String, Spanned<train::TrainConfig>>,
    #[serde(default)]
    eval: BTreeMap<String, Spanned<eval::EvalConfig>>,
}

impl RecipeFile {
    /// `out`, `[inputs]` and the stages, these in file order.
    fn into_parts(self) -> (PathBuf, BTreeMap<String, PathBuf>, Vec<Stage>) {
        let mut all = Vec::new();
        fn add<T>(all: &mut Vec<(usize, Stage)>, map: BTreeMap<String, Spanned<T>>, wrap: fn(T) -> StageConfig) {
            for (name, s) in map {
                let at = s.span().start;
                all.push((at, Stage { name, config: wrap(s.into_inner()) }));
            }
        }
        add(&mut all, self.wiki, StageConfig::Wiki);
        add(&mut all, self.translate, StageConfig::Translate);
        add(&mut all, self.pairs, StageConfig::Pairs);
        add(&mut all, self.vocab_train, StageConfig::VocabTrain);
        add(&mut all, self.vocab_merge, StageConfig::VocabMerge);
        add(&mut all, self.shards, StageConfig::Shards);
        add(&mut all, self.train, StageConfig::Train);
        add(&mut all, self.eval, StageConfig::Eval);
        all.sort_by_key(|(at, _)| *at);
        (self.out, self.inputs, all.into_iter().map(|(_, s)| s).collect())
    }
}

/// A recipe, validated and with every path resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Recipe {
    /// Output root; each stage writes into `out/<stage>/`.
    pub out: PathBuf,
    /// The stages in file order.
    pub stages: Vec<Stage>,
    /// The recipe file.
    #[serde(skip)]
    path: PathBuf,
    /// Stage names before `--from`/`--only` (their outputs may still be referenced).
    #[serde(skip)]
    all_names: Vec<String>,
}

/// How a stage was handled by [`Recipe::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Run from the start.
    Ran,
    /// Continued from what an interrupted run left.
    Resumed,
    /// Already complete for these settings.
    Skipped,
}

/// What a recipe run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Output root.
    pub out: PathBuf,
    /// `(stage, output directory, outcome)` in the order run.
    pub stages: Vec<(String, PathBuf, Outcome)>,
    /// `OUT/report/report.md`.
    pub report: PathBuf,
}

/// Lays `over` onto `base`, table by table; `path` is the key path so far. New tables are refused at
/// the top and kind levels, where they would silently add a stage (`[inputs]` excepted).
fn overlay(base: &mut toml::Table, over: toml::Table, path: &[&str]) -> Result<(), String> {
    for (k, v) in over {
        let mut here = path.to_vec();
        here.push(&k);
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => overlay(b, o, &here)?,
            (None, toml::Value::Table(_)) if path.len() < 2 && k != "inputs" => {
                return Err(format!("[smoke.{}] names no table of the recipe", here.join(".")));
            }
            (_, v) => {
                base.insert(k.clone(), v);
            }
        }
    }
    Ok(())
}

impl Recipe {
    /// Reads a recipe (`smoke`: with its `[smoke]` settings laid over), resolves its paths and checks
    /// that the files it reads exist.
    pub fn load(path: &Path, out: Option<PathBuf>, smoke: bool) -> Result<Recipe, RecipeError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Io { path: path.into(), source })?;
        let parse_err = |msg| RecipeError::Parse { path: path.into(), msg };
        let mut file: RecipeFile = toml::from_str(&text).map_err(|e| parse_err(crate::io::toml_error(&e, &text)))?;
        let over = file.smoke.take().unwrap_or_default();
        let invalid = |msg: String| RecipeError::Invalid { path: path.into(), msg };
        let (file_out, inputs, mut ordered) = file.into_parts();
        let mut seen: BTreeMap<&str, &'static str> = BTreeMap::new();
        for s in &ordered {
            if let Some(other) = seen.insert(&s.name, s.config.kind()) {
                return Err(invalid(format!(
                    "stage name `{}` is used by [{other}.{0}] and [{}.{0}]; names are output folders and must differ",
                    s.name,
                    s.config.kind()
                )));
            }
        }
        // The smoke variant is the same file with [smoke] laid over it; stage order stays the file's (the
        // overlay adds no stage).
        let (file_out, inputs) = if smoke {
            let mut table: toml::Table = toml::from_str(&text).map_err(|e| parse_err(e.to_string()))?;
            table.remove("smoke");
            overlay(&mut table, over, &[]).map_err(invalid)?;
            let merged = toml::to_string(&table).map_err(|e| parse_err(e.to_string()))?;
            let merged: RecipeFile =
                toml::from_str(&merged).map_err(|e| parse_err(format!("with [smoke] applied: {}", e.message())))?;
            let (merged_out, merged_inputs, merged_stages) = merged.into_parts();
            let mut by_name: BTreeMap<String, StageConfig> =
                merged_stages.into_iter().map(|s| (s.name, s.config)).collect();
            for s in &mut ordered {
                s.config = by_name.remove(&s.name).expect("the overlay keeps every stage");
            }
            (merged_out, merged_inputs)
        } else {
            (file_out, inputs)
        };
        let base = path.parent().unwrap_or(Path::new("."));
        // Absolute, canonical paths: the settings a manifest records do not depend on how the recipe or
        // the working directory spelled them.
        let out = out.unwrap_or(file_out);
        let out = std::path::absolute(&out).map_err(|e| invalid(format!("out = {}: {e}", out.display())))?;
        let inputs: BTreeMap<String, PathBuf> = inputs.into_iter().map(|(k, v)| (k, base.join(v))).collect();
        let order: Vec<String> = ordered.iter().map(|s| s.name.clone()).collect();
        let mut stages = Vec::new();
        let mut missing = Vec::new();
        for (i, mut stage) in ordered.into_iter().enumerate() {
            let name = &order[i];
            let ok =
                !name.is_empty() && name != "report" && name.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c));
            if !ok || name.starts_with('.') {
                return Err(invalid(format!(
                    "stage name `{name}`: use letters, digits, `-`, `_` or `.` (not `report`, which the report uses)"
                )));
            }
            let earlier: Vec<&str> = order[..i].iter().map(String::as_str).collect();
            let kind = stage.config.kind();
            for (key, value, need) in stage.config.paths_mut() {
                let at = format!("[{kind}.{name}] {key} = \"{}\"", value.display());
                let (resolved, produced) =
                    resolve(value, base, &out, &inputs, &earlier).map_err(|m| invalid(format!("{at}: {m}")))?;
                if !produced && need == Need::Input && !resolved.exists() {
                    // Every missing file once, with the first key that names it: a user fills them all in
                    // from one dry run.
                    if !missing.iter().any(|(_, p): &(String, PathBuf)| *p == resolved) {
                        missing.push((format!("{at}: {} does not exist", resolved.display()), resolved.clone()));
                    }
                }
                *value = std::fs::canonicalize(&resolved).unwrap_or(resolved);
            }
            if smoke {
                stage.config.smoke();
            }
            stage.config.set_out(&out.join(name));
            stages.push(stage);
        }
        match missing.len() {
            0 => {}
            1 => return Err(invalid(format!("{} (relative paths start at the recipe's folder)", missing[0].0))),
            n => {
                let lines: Vec<String> = missing.iter().map(|(m, _)| format!("  {m}")).collect();
                return Err(invalid(format!(
                    "{n} input files do not exist (relative paths start at the recipe's folder):\n{}",
                    lines.join("\n")
                )));
            }
        }
        Ok(Recipe { out, stages, path: path.into(), all_names: order })
    }

    /// The stages this recipe runs, in order: `(name, kind, output directory)`.
    pub fn plan(&self) -> Vec<(String, &'static str, PathBuf)> {
        self.stages.iter().map(|s| (s.name.clone(), s.config.kind(), self.out.join(&s.name))).collect()
    }

    /// Keeps only the stage `--only STAGE`, or `--from STAGE` and the ones after it (the others are
    /// neither run nor checked; their outputs are used as they are).
    pub fn select(&mut self, from: Option<&str>, only: Option<&str>) -> Result<(), RecipeError> {
        let position = |stage: &str| {
            self.stages.iter().position(|s| s.name == stage).ok_or_else(|| {
                RecipeError::Select(format!(
                    "no stage `{stage}` in this recipe; its stages: {}",
                    self.all_names.join(", ")
                ))
            })
        };
        match (from, only) {
            (Some(f), None) => {
                let k = position(f)?;
                self.stages.drain(..k);
            }
            (None, Some(o)) => {
                let k = position(o)?;
                self.stages = vec![self.stages.swap_remove(k)];
            }
            (None, None) => {}
            (Some(_), Some(_)) => return Err(RecipeError::Select("--from and --only cannot be combined".into())),
        }
        Ok(())
    }

    /// Outputs of stages left out by `--from`/`--only` that the selected stages read must already exist.
    fn check_skipped_outputs(&self) -> Result<(), RecipeError> {
        let selected: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
        let dropped: Vec<&String> = self.all_names.iter().filter(|n| !selected.contains(&n.as_str())).collect();
        for stage in &self.stages {
            let mut config = stage.config.clone();
            for (key, path, need) in config.paths_mut() {
                let Some(from) = dropped.iter().find(|n| path.starts_with(self.out.join(n))) else { continue };
                if need == Need::Input && !path.exists() {
                    return Err(RecipeError::Select(format!(
                        "[{}.{}] {key} reads {}, which does not exist: run stage `{from}` first (without --from/--only)",
                        stage.config.kind(),
                        stage.name,
                        path.display()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Runs every stage in order, skipping complete ones and resuming interrupted ones.
    pub fn run(&self, env: &Env) -> Result<RunReport, RecipeError> {
        self.check_skipped_outputs()?;
        std::fs::create_dir_all(&self.out).map_err(|source| RecipeError::Io { path: self.out.clone(), source })?;
        let base = self.path.parent().unwrap_or(Path::new("."));
        let mut done = Vec::new();
        for stage in &self.stages {
            let dir = self.out.join(&stage.name);
            let outcome = run_stage(stage, &dir, base, env)?;
            if !env.progress.quiet {
                eprintln!("{:<8} {} ({})", format!("{outcome:?}").to_lowercase(), stage.name, stage.config.kind());
            }
            done.push((stage.name.clone(), dir, outcome));
        }
        let summary = write_report(&self.out, &self.all_names, env)?;
        Ok(RunReport { out: self.out.clone(), stages: done, report: summary.report })
    }
}

/// Resolves a recipe path: `@stage/rest` (an earlier stage's output; the bool says so), `$input/rest`, or
/// a path relative to the recipe's folder.
fn resolve(
    value: &Path,
    base: &Path,
    out: &Path,
    inputs: &BTreeMap<String, PathBuf>,
    earlier: &[&str],
) -> Result<(PathBuf, bool), String> {
    let Some(text) = value.to_str() else { return Ok((base.join(value), false)) };
    let split = |s: &str| match s.split_once('/') {
        Some((head, rest)) => (head.to_string(), Some(rest.to_string())),
        None => (s.to_string(), None),
    };
    let join = |p: PathBuf, rest: Option<String>| rest.map_or(p.clone(), |r| p.join(r));
    if let Some(r) = text.strip_prefix('@') {
        let (stage, rest) = split(r);
        if !earlier.contains(&stage.as_str()) {
            return Err(format!(
                "`@{stage}` is not a stage before this one (stages run in file order; earlier: {})",
                if earlier.is_empty() { "none".to_string() } else { earlier.join(", ") }
            ));
        }
        return Ok((join(out.join(stage), rest), true));
    }
    if let Some(r) = text.strip_prefix('$') {
        let (key, rest) = split(r);
        let p = inputs.get(&key).ok_or_else(|| {
            let have: Vec<&str> = inputs.keys().map(String::as_str).collect();
            format!(
                "`${key}` is not in [inputs] (it has: {})",
                if have.is_empty() { "nothing".into() } else { have.join(", ") }
            )
        })?;
        return Ok((join(p.clone(), rest), false));
    }
    Ok((base.join(value), false))
}

/// Runs one stage unless it is complete; resumes what an interrupted run left where the kind can.
fn run_stage(stage: &Stage, dir: &Path, base: &Path, env: &Env) -> Result<Outcome, RecipeError> {
    let fail = |e: &dyn std::fmt::Display| RecipeError::Stage { stage: stage.name.clone(), message: e.to_string() };
    let manifest = Manifest::read(&stage.config.manifest_path(dir)).ok();
    if let (Some(m), Some(want)) = (&manifest, stage.config.settings()) {
        if matches_settings(&m.args, &want) && audit(dir, &env.progress)?.ok() {
            return Ok(Outcome::Skipped);
        }
    }
    // A finished run with other settings (or damaged files) is redone from scratch; an unfinished one
    // (no manifest) keeps what its kind can resume from. A translation keeps its cache either way: every
    // answer in it was paid for.
    let interrupted = manifest.is_none() && dir.exists();
    let resumable = match &stage.config {
        StageConfig::Wiki(_) => interrupted,
        StageConfig::Translate(_) => true,
        StageConfig::Train(_) => interrupted && train::latest_checkpoint(dir).is_some(),
        _ => false,
    };
    if !resumable {
        remove_dir(dir)?;
    }
    create_dir(dir)?;
    match &stage.config {
        StageConfig::Wiki(c) => {
            let mut cfg = wiki::IngestConfig { resume: resumable, ..c.clone() };
            if let Some(date) = &c.date {
                let dump = download_dump(c, date, dir, env).map_err(|e| fail(&e))?;
                (cfg.dump, cfg.index) = (dump.dump, Some(dump.index));
            }
            wiki::run(&cfg, env).map(drop).map_err(|e| fail(&e))?
        }
        StageConfig::Translate(c) => {
            let cfg =
                instruct::TranslateConfig { api_key: instruct::translate::ApiKey::from_env(c.backend), ..c.clone() };
            instruct::translate::run(&cfg, env).map(drop).map_err(|e| fail(&e))?
        }
        StageConfig::Train(c) => {
            let resume = if resumable { train::latest_checkpoint(dir) } else { None };
            match train::run(c, resume.as_deref(), env) {
                // Checkpoints of a run with other settings: start over.
                Err(train::TrainError::Resume(why)) if resume.is_some() => {
                    if !env.progress.quiet {
                        eprintln!("{}: not resuming ({why}); starting over", stage.name);
                    }
                    remove_dir(dir)?;
                    train::run(c, None, env).map(drop)
                }
                r => r.map(drop),
            }
            .map_err(|e| fail(&e))?
        }
        StageConfig::Pairs(c) => instruct::pairs::run(c, env).map(drop).map_err(|e| fail(&e))?,
        StageConfig::VocabTrain(c) => vocab::train::run(c, env).map(drop).map_err(|e| fail(&e))?,
        StageConfig::VocabMerge(c) => vocab::merge::run(c, env).map(drop).map_err(|e| fail(&e))?,
        StageConfig::Shards(c) => shards::run(c, base, env).map(drop).map_err(|e| fail(&e))?,
        StageConfig::Eval(c) => c.run(env).map(drop).map_err(|e| fail(&e))?,
    }
    Ok(if resumable && interrupted { Outcome::Resumed } else { Outcome::Ran })
}

/// A `wiki` stage's `lang` + `date` dump, downloaded (or completed) into `{stage}.dump/` beside the stage's
/// folder, which a rerun with other settings keeps.
fn download_dump(
    c: &wiki::IngestConfig,
    date: &str,
    dir: &Path,
    env: &Env,
) -> Result<crate::hub::dump::DumpReport, String> {
    let lang = c.lang.clone().ok_or("`date` needs `lang` (the Wikipedia language code) to name the dump")?;
    let mut out = dir.as_os_str().to_owned();
    out.push(".dump");
    let cfg = crate::hub::dump::DumpConfig {
        lang,
        date: date.to_string(),
        mirror: c.mirror.clone().unwrap_or_else(|| crate::hub::dump::DEFAULT_MIRROR.into()),
        out: out.into(),
        retry: crate::hub::download_retry(),
        progress: env.progress,
    };
    crate::hub::dump::download(&cfg).map_err(|e| e.to_string())
}

/// Every key of `want` has the same value in `args` (stages may record more, e.g. which translator).
fn matches_settings(args: &serde_json::Value, want: &serde_json::Value) -> bool {
    match (args, want) {
        (serde_json::Value::Object(a), serde_json::Value::Object(w)) => w.iter().all(|(k, v)| a.get(k) == Some(v)),
        _ => args == want,
    }
}

fn remove_dir(dir: &Path) -> Result<(), RecipeError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RecipeError::Io { path: dir.into(), source: e }),
        _ => Ok(()),
    }
}

fn create_dir(dir: &Path) -> Result<(), RecipeError> {
    std::fs::create_dir_all(dir).map_err(|source| RecipeError::Io { path: dir.into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Recipe, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("d.xml"), "<mediawiki/>").unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(&p, text).unwrap();
        Recipe::load(&p, None, false).map_err(|e| {
            let s = e.to_string();
            s.strip_prefix(&format!("{}: ", p.display())).unwrap_or(&s).to_string()
        })
    }

    #[test]
    fn unknown_keys_missing_files_and_bad_references_are_errors() {
        let err = load("out = \"x\"\n[wiki.w]\ndump = \"d.xml\"\nmin_char = 3\n").unwrap_err();
        assert!(err.starts_with("line 4, column 1: unknown field `min_char`"), "{err}");
        let err = load("out = \"x\"\n[wiki.w]\ndump = \"nope.xml\"\n").unwrap_err();
        assert!(
            err.starts_with("[wiki.w] dump = \"nope.xml\": ")
                && err.ends_with("nope.xml does not exist (relative paths start at the recipe's folder)"),
            "{err}"
        );
        let err =
            load("out = \"x\"\n[wiki.w]\ndump = \"a.xml\"\n[wiki.v]\ndump = \"b.xml\"\n[wiki.u]\ndump = \"a.xml\"\n")
                .unwrap_err();
        assert!(err.starts_with("2 input files do not exist (relative paths start at the recipe's folder):\n  [wiki.w] dump = \"a.xml\": "), "{err}");
        assert!(err.contains("\n  [wiki.v] dump = \"b.xml\": ") && !err.contains("[wiki.u]"), "{err}");
        let err = load("out = \"x\"\n[wiki.w]\ndump = \"$dump\"\n").unwrap_err();
        assert_eq!(err, "[wiki.w] dump = \"$dump\": `$dump` is not in [inputs] (it has: nothing)");
        // A reference to a later stage is an ordering error.
        let err = load("out = \"x\"\n[shards.s]\ntokenizer = \"d.xml\"\nseq_len = 8\n[[shards.s.sources]]\nname = \"w\"\npath = \"@w\"\nlang = \"tr\"\nshare = 1.0\n[wiki.w]\ndump = \"d.xml\"\n").unwrap_err();
        assert_eq!(err, "[shards.s] sources.w.path = \"@w\": `@w` is not a stage before this one (stages run in file order; earlier: none)");
        let err = load("out = \"x\"\n[wiki.report]\ndump = \"d.xml\"\n").unwrap_err();
        assert!(err.starts_with("stage name `report`"), "{err}");
    }

    #[test]
    fn stages_run_in_file_order_and_references_resolve() {
        let r =
            load("out = \"x\"\n[inputs]\ndump = \"d.xml\"\n[wiki.b]\ndump = \"$dump\"\n[wiki.a]\ndump = \"d.xml\"\n")
                .unwrap();
        let plan = r.plan();
        let names: Vec<&str> = plan.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(plan[0].2, std::env::current_dir().unwrap().join("x/b"));
        // `$dump` and the plain relative path name the same canonical file.
        let dumps: Vec<PathBuf> = r
            .stages
            .iter()
            .map(|s| match &s.config {
                StageConfig::Wiki(w) => w.dump.clone(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(dumps[0], dumps[1]);
        assert!(dumps[0].is_absolute());
    }

    #[test]
    fn smoke_overlays_and_refuses_unknown_stages() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("small.xml"), "<mediawiki/>").unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(
            &p,
            "out = \"x\"\n[inputs]\ndump = \"/data/big.xml\"\n[wiki.w]\ndump = \"$dump\"\nmin_chars = 100\n\
             [smoke.inputs]\ndump = \"small.xml\"\n[smoke.wiki.w]\nmin_chars = 0\n",
        )
        .unwrap();
        assert!(Recipe::load(&p, None, false).unwrap_err().to_string().contains("big.xml does not exist"));
        let r = Recipe::load(&p, None, true).unwrap();
        let StageConfig::Wiki(w) = &r.stages[0].config else { panic!() };
        assert_eq!((w.dump.clone(), w.min_chars), (dir.path().join("small.xml"), 0));
        std::fs::write(&p, "out = \"x\"\n[wiki.w]\ndump = \"small.xml\"\n[smoke.wiki.ww]\nmin_chars = 0\n").unwrap();
        let err = Recipe::load(&p, None, true).unwrap_err().to_string();
        assert!(err.ends_with("[smoke.wiki.ww] names no table of the recipe"), "{err}");
    }
}
