//! `langadapt audit DIR`: re-hash what the manifests under DIR list and check that they explain each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::corpus::read_footer;
use crate::manifest::{hash_file, is_manifest_path, Manifest, ManifestError, ShardMeta, PARQUET_META_KEY};
use crate::Progress;

/// One finding of an audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// A listed output is gone.
    MissingOutput {
        /// The manifest listing it.
        manifest: PathBuf,
        /// The file.
        path: PathBuf,
    },
    /// A listed output's bytes changed.
    ChangedOutput {
        /// The manifest listing it.
        manifest: PathBuf,
        /// The file.
        path: PathBuf,
        /// sha256 in the manifest.
        expected: String,
        /// sha256 now.
        found: String,
    },
    /// A listed input exists but its bytes changed.
    ChangedInput {
        /// The manifest listing it.
        manifest: PathBuf,
        /// The file.
        path: PathBuf,
        /// sha256 in the manifest.
        expected: String,
        /// sha256 now.
        found: String,
    },
    /// An input is neither on disk nor the output of another manifest under DIR.
    MissingInput {
        /// The manifest listing it.
        manifest: PathBuf,
        /// The path as recorded.
        path: String,
    },
    /// A Parquet output's footer names another run than its manifest.
    ForeignRun {
        /// The manifest listing it.
        manifest: PathBuf,
        /// The file.
        path: PathBuf,
        /// The manifest's run id.
        expected: String,
        /// The footer's run id.
        found: String,
    },
    /// A file under DIR that no manifest lists.
    Unexplained {
        /// The file.
        path: PathBuf,
    },
    /// A stage that ended without producing everything (its manifest says why).
    Incomplete {
        /// The manifest.
        manifest: PathBuf,
        /// What is missing and what to do.
        reason: String,
    },
    /// A manifest.json that cannot be read.
    BadManifest {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// What an audit found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    /// Manifests read.
    pub manifests: usize,
    /// Outputs re-hashed.
    pub outputs_checked: usize,
    /// Inputs re-hashed from disk.
    pub inputs_checked: usize,
    /// Inputs vouched for by another manifest's output (same sha256).
    pub inputs_chained: usize,
    /// Inputs outside DIR that were found and matched.
    pub external_inputs: Vec<String>,
    /// Everything wrong; empty means the directory is what its manifests say.
    pub findings: Vec<Finding>,
}

impl AuditReport {
    /// True when nothing is missing, changed or unexplained.
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Audits every manifest under `dir` (`manifest.json` and `NAME.manifest.json`).
pub fn audit(dir: &Path, progress: &Progress) -> Result<AuditReport, ManifestError> {
    let files = crate::io::files_under(dir).map_err(|source| ManifestError::Io { path: dir.into(), source })?;
    let mut report = AuditReport::default();
    let mut manifests = Vec::new();
    for f in files.iter().filter(|f| is_manifest_path(f)) {
        match Manifest::read(f) {
            Ok(m) => manifests.push((f.clone(), m)),
            Err(e) => report.findings.push(Finding::BadManifest { path: f.clone(), message: e.to_string() }),
        }
    }
    report.manifests = manifests.len();
    for (mpath, m) in &manifests {
        if let Some(reason) = &m.incomplete {
            report.findings.push(Finding::Incomplete { manifest: mpath.clone(), reason: reason.clone() });
        }
    }
    let mut listed: BTreeSet<PathBuf> = manifests.iter().map(|(p, _)| p.clone()).collect();
    let mut produced: BTreeMap<String, PathBuf> = BTreeMap::new();
    let quiet = Progress { quiet: true };
    for (mpath, m) in &manifests {
        let base = mpath.parent().unwrap_or(Path::new("."));
        for out in &m.outputs {
            let path = base.join(&out.path);
            listed.insert(path.clone());
            produced.insert(out.sha256.clone(), path.clone());
            report.outputs_checked += 1;
            match hash_file(&path, &quiet) {
                Err(_) => report.findings.push(Finding::MissingOutput { manifest: mpath.clone(), path }),
                Ok((sha, _)) if sha != out.sha256 => report.findings.push(Finding::ChangedOutput {
                    manifest: mpath.clone(),
                    path,
                    expected: out.sha256.clone(),
                    found: sha,
                }),
                Ok(_) => check_footer(mpath, m, &path, &mut report.findings),
            }
        }
    }
    for (mpath, m) in &manifests {
        let base = mpath.parent().unwrap_or(Path::new("."));
        for input in &m.inputs {
            let candidates = [PathBuf::from(&input.path), base.join(&input.path), dir.join(&input.path)];
            match candidates.iter().find(|p| p.is_file()) {
                Some(p) => {
                    let (sha, _) = hash_file(p, progress)?;
                    report.inputs_checked += 1;
                    if sha != input.sha256 {
                        report.findings.push(Finding::ChangedInput {
                            manifest: mpath.clone(),
                            path: p.clone(),
                            expected: input.sha256.clone(),
                            found: sha,
                        });
                    } else if !p.starts_with(dir) && !produced.contains_key(&input.sha256) {
                        report.external_inputs.push(input.path.clone());
                    } else if produced.contains_key(&input.sha256) {
                        report.inputs_chained += 1;
                    }
                }
                // Not on disk any more, but another stage's output with the same bytes explains it.
                None if produced.contains_key(&input.sha256) => report.inputs_chained += 1,
                None => {
                    report.findings.push(Finding::MissingInput { manifest: mpath.clone(), path: input.path.clone() })
                }
            }
        }
    }
    for f in files {
        if !listed.contains(&f) {
            report.findings.push(Finding::Unexplained { path: f });
        }
    }
    report.external_inputs.sort();
    report.external_inputs.dedup();
    Ok(report)
}

/// A Parquet output carrying a langadapt footer must name its manifest's run.
fn check_footer(mpath: &Path, m: &Manifest, path: &Path, findings: &mut Vec<Finding>) {
    if path.extension().is_none_or(|e| e != "parquet") {
        return;
    }
    let Ok((kv, _)) = read_footer(path) else { return };
    let Some(meta) = kv.get(PARQUET_META_KEY).and_then(|v| serde_json::from_str::<ShardMeta>(v).ok()) else { return };
    if meta.run_id != m.run_id {
        findings.push(Finding::ForeignRun {
            manifest: mpath.to_path_buf(),
            path: path.to_path_buf(),
            expected: m.run_id.clone(),
            found: meta.run_id,
        });
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::MissingOutput { manifest, path } => {
                write!(f, "missing: {} (an output of {})", path.display(), manifest.display())
            }
            Finding::ChangedOutput { manifest, path, expected, found } => write!(
                f,
                "changed: {} (an output of {}): sha256 {found}, manifest says {expected}",
                path.display(),
                manifest.display()
            ),
            Finding::ChangedInput { manifest, path, expected, found } => write!(
                f,
                "changed input: {} (read by {}): sha256 {found}, manifest says {expected}",
                path.display(),
                manifest.display()
            ),
            Finding::MissingInput { manifest, path } => write!(
                f,
                "missing input: {path} (read by {}; not on disk and no stage under the directory produced it)",
                manifest.display()
            ),
            Finding::ForeignRun { manifest, path, expected, found } => write!(
                f,
                "foreign run: {} has run id {found} in its footer, {} says {expected}",
                path.display(),
                manifest.display()
            ),
            Finding::Unexplained { path } => write!(f, "unexplained: {} (no manifest lists it)", path.display()),
            Finding::Incomplete { manifest, reason } => write!(f, "incomplete: {}: {reason}", manifest.display()),
            Finding::BadManifest { path, message } => write!(f, "bad manifest: {}: {message}", path.display()),
        }
    }
}

impl std::fmt::Display for AuditReport {
    /// What `audit` prints: each finding, each external input, then the counts.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        for input in &self.external_inputs {
            writeln!(f, "external input (matches its sha256): {input}")?;
        }
        write!(
            f,
            "audit: {} manifests, {} outputs and {} inputs re-hashed, {} inputs produced by earlier stages, {} findings",
            self.manifests,
            self.outputs_checked,
            self.inputs_checked,
            self.inputs_chained,
            self.findings.len()
        )
    }
}
