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
use crate::stage::{Need, Stage, StageCtx};
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
    #[error("stage {stage}: {source}")]
    Stage {
        /// The stage's name.
        stage: String,
        /// Why.
        source: crate::stage::StageError,
    },
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

/// The stage kinds a recipe can name: `table name => config type`. A new kind is one type implementing
/// [`Stage`] plus one line here.
macro_rules! stage_kinds {
    ($($field:ident: $kind:literal => $ty:ty),* $(,)?) => {
        /// The recipe file as written: one map of named stages per kind, each stage with its place in the file.
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RecipeFile {
            out: PathBuf,
            #[serde(default)]
            inputs: BTreeMap<String, PathBuf>,
            #[serde(default)]
            smoke: Option<toml::Table>,
            $(
                #[serde(default, rename = $kind)]
                $field: BTreeMap<String, Spanned<$ty>>,
            )*
        }

        impl RecipeFile {
            /// `out`, `[inputs]` and the stages, these in file order.
            fn into_parts(self) -> (PathBuf, BTreeMap<String, PathBuf>, Vec<RecipeStage>) {
                let mut all: Vec<(usize, RecipeStage)> = Vec::new();
                $(
                    for (name, s) in self.$field {
                        let at = s.span().start;
                        all.push((at, RecipeStage { name, config: Box::new(s.into_inner()) }));
                    }
                )*
                all.sort_by_key(|(at, _)| *at);
                (self.out, self.inputs, all.into_iter().map(|(_, s)| s).collect())
            }
        }
    };
}

stage_kinds! {
    wiki: "wiki" => wiki::IngestConfig,
    translate: "translate" => instruct::TranslateConfig,
    pairs: "translation-pairs" => instruct::PairsConfig,
    labelled: "labelled" => instruct::LabelledConfig,
    vocab_train: "vocab-train" => vocab::train::TrainConfig,
    vocab_merge: "vocab-merge" => vocab::merge::MergeConfig,
    shards: "shards" => shards::BuildConfig,
    train: "train" => train::TrainConfig,
    eval: "eval" => eval::EvalConfig,
}

/// One stage of a recipe: its name (the output folder `OUT/NAME`) and its settings.
#[derive(Debug, Clone)]
pub struct RecipeStage {
    /// Its name: the output folder `OUT/NAME`.
    pub name: String,
    /// Its settings.
    pub config: Box<dyn Stage>,
}

impl Serialize for RecipeStage {
    /// `{"name", "config": {"kind", "settings"}}`, what `run --dry-run --json` prints per stage.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_json::json!({
            "name": self.name,
            "config": {"kind": self.config.kind(), "settings": self.config.to_json()},
        })
        .serialize(s)
    }
}

/// A recipe, validated and with every path resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Recipe {
    /// Output root; each stage writes into `out/<stage>/`.
    pub out: PathBuf,
    /// The stages in file order.
    pub stages: Vec<RecipeStage>,
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
/// the top and kind levels, where they would silently add a stage (`[inputs]` excepted). An array of
/// tables that all have a `name` (`[[smoke.shards.S.sources]]`) is laid element by element onto the
/// recipe's elements of those names, so a smoke run can change one source's path or size and keep the
/// rest; a name the recipe lacks is refused (it would silently add a source). Other arrays (`tasks`)
/// are replaced whole.
fn overlay(base: &mut toml::Table, over: toml::Table, path: &[&str]) -> Result<(), String> {
    for (k, v) in over {
        let mut here = path.to_vec();
        here.push(&k);
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => overlay(b, o, &here)?,
            (Some(toml::Value::Array(b)), toml::Value::Array(o)) => match named_tables(o) {
                Ok(named) => {
                    for (name, e) in named {
                        let Some(target) = b.iter_mut().find(|x| name_of(x) == Some(name.as_str())) else {
                            let have: Vec<&str> = b.iter().filter_map(name_of).collect();
                            return Err(format!(
                                "[[smoke.{}]] name = \"{name}\" names no element of the recipe's {k} (it has: {})",
                                here.join("."),
                                have.join(", ")
                            ));
                        };
                        if let toml::Value::Table(t) = target {
                            overlay(t, e, &here)?;
                        }
                    }
                }
                Err(o) => *b = o,
            },
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

/// The `name` of an array element that is a table with a string `name`.
fn name_of(v: &toml::Value) -> Option<&str> {
    v.as_table()?.get("name")?.as_str()
}

/// The elements of an array, with their names, when every one is a table with a string `name` (and
/// there is at least one); else the array back.
fn named_tables(array: Vec<toml::Value>) -> Result<Vec<(String, toml::Table)>, Vec<toml::Value>> {
    if array.is_empty() || !array.iter().all(|e| name_of(e).is_some()) {
        return Err(array);
    }
    Ok(array
        .into_iter()
        .filter_map(|e| match e {
            toml::Value::Table(t) => Some((t.get("name")?.as_str()?.to_string(), t)),
            _ => None,
        })
        .collect())
}

/// Eval stages without `prompt_template` get the template of the SFT shards their model was tuned on
/// (the model is `@T/final` of a train stage T that reads `@S/train` of an sft shards stage S), so
/// generation prompts are in the model's own instruction format. Other models keep the task's format.
fn model_templates(stages: &mut [RecipeStage]) {
    let found: Vec<Option<String>> = stages
        .iter()
        .map(|s| {
            let model = s.config.model_without_template()?;
            let data = stages.iter().find_map(|t| t.config.trained_model_data(&model))?;
            stages.iter().find_map(|d| d.config.sft_template(&data))
        })
        .collect();
    for (s, t) in stages.iter_mut().zip(found) {
        if let Some(t) = t {
            s.config.set_prompt_template(t);
        }
    }
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
            let mut by_name: BTreeMap<String, Box<dyn Stage>> =
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
        // `[inputs]` as written: a checkpoint input may be a Hub id (`org/name[@revision]`), not a path.
        let raw_inputs = inputs.clone();
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
                if need == Need::Checkpoint && !produced && !resolved.exists() {
                    if let Some(id) = hub_id(value, &raw_inputs) {
                        // Fetched into the Hugging Face cache when the stage runs; the manifest keeps the name.
                        *value = PathBuf::from(id);
                        continue;
                    }
                }
                if !produced && need != Need::Optional && !resolved.exists() {
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
        model_templates(&mut stages);
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
                if need != Need::Optional && !path.exists() {
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

/// The Hub model id a checkpoint value names (`org/name[@revision]`, directly or as a whole `$KEY`), if any.
fn hub_id(value: &Path, raw_inputs: &BTreeMap<String, PathBuf>) -> Option<String> {
    let text = value.to_str()?;
    let spec = match text.strip_prefix('$') {
        Some(key) => raw_inputs.get(key)?.to_str()?,
        None => text,
    };
    crate::hub::RepoRef::parse(spec, crate::hub::RepoKind::Model).map(|_| spec.to_string())
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
fn run_stage(stage: &RecipeStage, dir: &Path, base: &Path, env: &Env) -> Result<Outcome, RecipeError> {
    let manifest = Manifest::read(&stage.config.manifest_path(dir)).ok();
    // An incomplete stage (its manifest says what is missing) is never skipped.
    let complete = manifest.as_ref().filter(|m| m.incomplete.is_none());
    if let (Some(m), Some(want)) = (complete, stage.config.settings()) {
        if matches_settings(&m.args, &want) && audit(dir, &env.progress)?.ok() {
            return Ok(Outcome::Skipped);
        }
    }
    // A finished run with other settings (or damaged files) is redone from scratch; an unfinished one
    // keeps what its kind can resume from.
    let interrupted = complete.is_none() && dir.exists();
    let resume = stage.config.resumable(dir, interrupted);
    if !resume {
        remove_dir(dir)?;
    }
    create_dir(dir)?;
    let ctx = StageCtx { dir, base, resume, env };
    stage.config.run(&ctx).map_err(|source| RecipeError::Stage { stage: stage.name.clone(), source })?;
    Ok(if resume && interrupted { Outcome::Resumed } else { Outcome::Ran })
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
        let dumps: Vec<PathBuf> =
            r.stages.iter().map(|s| PathBuf::from(s.config.to_json()["dump"].as_str().unwrap())).collect();
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
        let w = r.stages[0].config.to_json();
        assert_eq!(
            (w["dump"].as_str().unwrap(), w["min_chars"].as_u64()),
            (dir.path().join("small.xml").to_str().unwrap(), Some(0))
        );
        std::fs::write(&p, "out = \"x\"\n[wiki.w]\ndump = \"small.xml\"\n[smoke.wiki.ww]\nmin_chars = 0\n").unwrap();
        let err = Recipe::load(&p, None, true).unwrap_err().to_string();
        assert!(err.ends_with("[smoke.wiki.ww] names no table of the recipe"), "{err}");
    }

    #[test]
    fn smoke_merges_named_sources_and_evals_take_their_models_sft_template() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["tok.model", "a.jsonl", "b.jsonl", "small.jsonl"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("m")).unwrap();
        let p = dir.path().join("r.toml");
        let recipe = "out = \"x\"\n\
            [shards.sft-data]\ntokenizer = \"tok.model\"\nkind = \"sft\"\ntemplate = \"alpaca_tr\"\nseq_len = 64\n\
            [[shards.sft-data.sources]]\nname = \"a\"\npath = \"a.jsonl\"\nlang = \"tr\"\nepochs = 1.0\n\
            [[shards.sft-data.sources]]\nname = \"b\"\npath = \"b.jsonl\"\nlang = \"tr\"\nepochs = 2.0\n\
            [train.sft]\nmodel = \"m\"\ntrain = \"@sft-data/train\"\nmode = \"sft\"\n\
            [eval.after]\nmodel = \"@sft/final\"\ntasks = [\"codeswitch_tr\"]\n\
            [eval.base]\nmodel = \"m\"\ntasks = [\"codeswitch_tr\"]\n\
            [eval.pinned]\nmodel = \"@sft/final\"\ntasks = [\"codeswitch_tr\"]\nprompt_template = \"chat\"\n";
        let smoke = "[[smoke.shards.sft-data.sources]]\nname = \"b\"\npath = \"small.jsonl\"\nlimit = 3\n";
        std::fs::write(&p, format!("{recipe}{smoke}")).unwrap();
        let r = Recipe::load(&p, None, true).unwrap();
        let b = r.stages[0].config.to_json();
        let got: Vec<_> = b["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap(),
                    PathBuf::from(s["path"].as_str().unwrap()),
                    s["epochs"].as_f64(),
                    s["limit"].as_u64(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a", dir.path().join("a.jsonl"), Some(1.0), None),
                ("b", dir.path().join("small.jsonl"), Some(2.0), Some(3))
            ]
        );
        let templates: Vec<_> =
            r.stages[2..].iter().map(|s| (s.name.as_str(), s.config.to_json()["prompt_template"].clone())).collect();
        let t = |v: Option<&str>| v.map_or(serde_json::Value::Null, |s| s.into());
        assert_eq!(templates, [("after", t(Some("alpaca_tr"))), ("base", t(None)), ("pinned", t(Some("chat")))]);
        std::fs::write(&p, format!("{recipe}{}", smoke.replace("\"b\"", "\"c\""))).unwrap();
        let err = Recipe::load(&p, None, true).unwrap_err().to_string();
        assert!(
            err.ends_with("[[smoke.shards.sft-data.sources]] name = \"c\" names no element of the recipe's sources (it has: a, b)"),
            "{err}"
        );
    }
}
