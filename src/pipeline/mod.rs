//! Recipes: one TOML file naming the stages to run and their settings, run in order into
//! `OUT/<stage>/`, each with its manifest. A stage already complete for the same inputs and settings
//! is not redone (its parts are kept by resume and only the manifest is re-checked).
//!
//! Paths inside a recipe are relative to the recipe file; `out` is relative to the working directory.

mod audit;
pub mod report;

pub use audit::{audit, AuditReport, Finding};
pub use report::{write_report, ReportError, ReportSummary};

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;
use crate::{shards, train, wiki, Env};

/// Errors reading or running a recipe.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The recipe file could not be read.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The recipe is not valid TOML or has unknown/missing keys (the message has line and column).
    #[error("{path}: {msg}")]
    Parse { path: PathBuf, msg: String },
    /// A path the recipe names does not exist.
    #[error("{path}: [{stage}] {key} = {value}: no such file (paths are relative to the recipe file)")]
    Missing { path: PathBuf, stage: String, key: String, value: PathBuf },
    /// The `wiki` stage failed.
    #[error("stage wiki: {0}")]
    Wiki(#[from] wiki::WikiError),
    /// The `shards` stage failed.
    #[error("stage shards: {0}")]
    Shards(#[from] shards::ShardsError),
    /// The `train` stage failed.
    #[error("stage train: {0}")]
    Train(#[from] train::TrainError),
    /// `--from` / `--only` name no stage of the recipe.
    #[error("{0}")]
    Select(String),
    /// Checking an earlier output failed.
    #[error("{0}")]
    Manifest(#[from] crate::manifest::ManifestError),
}

/// A recipe file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Output root; each stage writes into `out/<stage>/`.
    pub out: PathBuf,
    /// The recipe file's folder (relative paths start there).
    #[serde(skip)]
    base: PathBuf,
    /// `wiki ingest` settings (`out` is set by the runner).
    #[serde(default)]
    pub wiki: Option<wiki::IngestConfig>,
    /// `shards build` settings (`out` is set by the runner).
    #[serde(default)]
    pub shards: Option<shards::BuildConfig>,
    /// `train` settings (`out` is set by the runner).
    #[serde(default)]
    pub train: Option<train::TrainConfig>,
}

/// `@stage/rest` names a file under an earlier stage's output (`OUT/stage/rest`); other relative paths are
/// relative to the recipe file.
fn resolve(path: &Path, base: &Path, out: &Path) -> PathBuf {
    match path.to_str().and_then(|p| p.strip_prefix('@')) {
        Some(rest) => out.join(rest),
        None => base.join(path),
    }
}

/// What a recipe run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Output root.
    pub out: PathBuf,
    /// `(stage, output directory)` in the order run.
    pub stages: Vec<(String, PathBuf)>,
}

impl Recipe {
    /// Reads a recipe and resolves its paths against the recipe's directory.
    pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Io { path: path.into(), source })?;
        let mut recipe: Recipe = toml::from_str(&text)
            .map_err(|e| RecipeError::Parse { path: path.into(), msg: crate::io::toml_error(&e, &text) })?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(w) = &mut recipe.wiki {
            w.dump = base.join(&w.dump);
            w.index = w.index.as_ref().map(|i| base.join(i));
            for (key, value) in [("dump", Some(&w.dump)), ("index", w.index.as_ref())] {
                if let Some(v) = value.filter(|v| !v.exists()) {
                    return Err(RecipeError::Missing {
                        path: path.into(),
                        stage: "wiki".into(),
                        key: key.into(),
                        value: v.clone(),
                    });
                }
            }
        }
        recipe.base = base.to_path_buf();
        Ok(recipe)
    }

    /// Resolves `@stage` references against the output root (call after `out` is final).
    fn resolved(&self) -> Recipe {
        let mut r = self.clone();
        let (base, out) = (self.base.clone(), self.out.clone());
        if let Some(s) = &mut r.shards {
            s.tokenizer = resolve(&s.tokenizer, &base, &out);
            for src in &mut s.sources {
                src.path = resolve(&src.path, &base, &out);
            }
            s.out = out.join("shards");
        }
        if let Some(t) = &mut r.train {
            t.model = resolve(&t.model, &base, &out);
            t.train = resolve(&t.train, &base, &out);
            t.val = t.val.as_ref().map(|v| resolve(v, &base, &out));
            t.out = out.join("train");
        }
        r
    }

    /// The stages this recipe runs, in order, with their output directories.
    pub fn plan(&self) -> Vec<(String, PathBuf)> {
        let mut stages = Vec::new();
        for (name, present) in
            [("wiki", self.wiki.is_some()), ("shards", self.shards.is_some()), ("train", self.train.is_some())]
        {
            if present {
                stages.push((name.to_string(), self.out.join(name)));
            }
        }
        stages
    }

    /// Keeps only the stages `--only STAGE`, or `--from STAGE` and the ones after it, name (the others are
    /// neither run nor checked).
    pub fn select(&mut self, from: Option<&str>, only: Option<&str>) -> Result<(), RecipeError> {
        let names: Vec<String> = self.plan().into_iter().map(|(n, _)| n).collect();
        let position = |stage: &str| {
            names.iter().position(|n| n == stage).ok_or_else(|| {
                RecipeError::Select(format!("no stage `{stage}` in this recipe; its stages: {}", names.join(", ")))
            })
        };
        let keep: Vec<bool> = match (from, only) {
            (Some(f), None) => {
                let k = position(f)?;
                (0..names.len()).map(|i| i >= k).collect()
            }
            (None, Some(o)) => {
                let k = position(o)?;
                (0..names.len()).map(|i| i == k).collect()
            }
            (None, None) => return Ok(()),
            (Some(_), Some(_)) => return Err(RecipeError::Select("--from and --only cannot be combined".into())),
        };
        for (name, keep) in names.iter().zip(keep) {
            if !keep {
                match name.as_str() {
                    "wiki" => self.wiki = None,
                    "shards" => self.shards = None,
                    _ => self.train = None,
                }
            }
        }
        Ok(())
    }

    /// Runs every stage in order.
    pub fn run(&self, env: &Env) -> Result<RunReport, RecipeError> {
        if let Some(w) = &self.wiki {
            let mut cfg = w.clone();
            cfg.out = self.out.join("wiki");
            // A finished stage is kept: resume skips its parts and rewrites the same manifest.
            cfg.resume = true;
            wiki::run(&cfg, env)?;
        }
        let r = self.resolved();
        if let Some(cfg) = &r.shards {
            if !up_to_date(&cfg.out, &cfg.output_settings(), env)? {
                let _ = std::fs::remove_dir_all(&cfg.out);
                shards::run(cfg, &self.base, env)?;
            }
        }
        if let Some(cfg) = &r.train {
            let args = serde_json::to_value(cfg).unwrap_or_default();
            if !up_to_date(&cfg.out, &args, env)? {
                let _ = std::fs::remove_dir_all(&cfg.out);
                train::run(cfg, None, env)?;
            }
        }
        Ok(RunReport { out: self.out.clone(), stages: self.plan() })
    }
}

/// A stage is done when its manifest records these settings and everything it lists re-hashes the same.
fn up_to_date(dir: &Path, args: &serde_json::Value, env: &Env) -> Result<bool, RecipeError> {
    let Ok(m) = Manifest::read(&dir.join("manifest.json")) else { return Ok(false) };
    if &m.args != args {
        return Ok(false);
    }
    Ok(audit(dir, &env.progress)?.ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(&p, "out = \"x\"\n[wiki]\ndump = \"d.xml\"\nmin_char = 3\n").unwrap();
        let err = Recipe::load(&p).unwrap_err().to_string();
        assert!(err.contains("line 4, column 1: unknown field `min_char`"), "{err}");
        std::fs::write(&p, "out = \"x\"\n[wiki]\ndump = \"d.xml\"\n").unwrap();
        let err = Recipe::load(&p).unwrap_err().to_string();
        let want = format!(
            "[wiki] dump = {}: no such file (paths are relative to the recipe file)",
            dir.path().join("d.xml").display()
        );
        assert!(err.ends_with(&want), "{err}");
    }
}
