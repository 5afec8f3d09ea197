//! Recipes: one TOML file naming the stages to run and their settings, run in order into
//! `OUT/<stage>/`, each with its manifest. A stage already complete for the same inputs and settings
//! is not redone (its parts are kept by resume and only the manifest is re-checked).
//!
//! Paths inside a recipe are relative to the recipe file; `out` is relative to the working directory.

mod audit;

pub use audit::{audit, AuditReport, Finding};

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::wiki;
use crate::Env;

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
}

/// A recipe file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Output root; each stage writes into `out/<stage>/`.
    pub out: PathBuf,
    /// `wiki ingest` settings (`out` is set by the runner).
    #[serde(default)]
    pub wiki: Option<wiki::IngestConfig>,
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
            .map_err(|e| RecipeError::Parse { path: path.into(), msg: one_line_toml(&e, &text) })?;
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
        Ok(recipe)
    }

    /// The stages this recipe runs, in order, with their output directories.
    pub fn plan(&self) -> Vec<(String, PathBuf)> {
        let mut stages = Vec::new();
        if self.wiki.is_some() {
            stages.push(("wiki".to_string(), self.out.join("wiki")));
        }
        stages
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
        Ok(RunReport { out: self.out.clone(), stages: self.plan() })
    }
}

/// toml's errors span several lines (a source excerpt); keep the message with its line and column.
fn one_line_toml(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {col}: {msg}")
        }
        None => msg,
    }
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
