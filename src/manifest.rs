//! Provenance for every stage output: `manifest.json` with inputs and their sha256, settings, seed,
//! tool version, counts, timings and outputs; and the run id that ties outputs to their settings.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::progress::Progress;

/// Version of the manifest layout (schemas/manifest.schema.json).
pub const MANIFEST_SCHEMA: &str = "langadapt.manifest/1";
/// The tool version written into every manifest and Parquet footer.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Parquet key-value metadata key holding [`ShardMeta`].
pub const PARQUET_META_KEY: &str = "langadapt.manifest";

/// Errors while hashing inputs or writing a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Reading an input or writing the manifest failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// An existing manifest could not be parsed.
    #[error("{path}: not a langadapt manifest: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
}

/// An input file: path as given, sha256 and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// Path as the user gave it.
    pub path: String,
    /// Hex sha256 of the file's bytes.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// An output file: path relative to the manifest's directory, sha256, rows (for tables) and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Path relative to the directory holding manifest.json.
    pub path: String,
    /// Hex sha256 of the file's bytes.
    pub sha256: String,
    /// Rows, for tabular outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Size in bytes.
    pub bytes: u64,
}

/// What a stage writes into each Parquet footer under [`PARQUET_META_KEY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// Stage name, e.g. `wiki ingest`.
    pub stage: String,
    /// Tool version.
    pub version: String,
    /// The run id (see [`ManifestBuilder::run_id`]).
    pub run_id: String,
}

/// The contents of manifest.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_SCHEMA`].
    pub schema: String,
    /// Stage name, e.g. `wiki ingest`.
    pub stage: String,
    /// Tool version.
    pub version: String,
    /// sha256 of the stage name, settings and input hashes.
    pub run_id: String,
    /// The resolved settings (never secrets).
    pub args: serde_json::Value,
    /// Seed, for stages that draw random numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Inputs with their hashes.
    pub inputs: Vec<InputFile>,
    /// Outputs with their hashes.
    pub outputs: Vec<OutputFile>,
    /// Stage-specific counters.
    pub counts: BTreeMap<String, u64>,
    /// Set when the stage ended without producing all it should (e.g. records that failed to translate):
    /// why, and what to do. Such a stage is never skipped by `run` and is a finding of `audit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
    /// Seconds spent per phase.
    pub timings: BTreeMap<String, f64>,
    /// RFC 3339 start time (UTC).
    pub started: String,
    /// RFC 3339 end time (UTC).
    pub finished: String,
}

impl Manifest {
    /// Reads `dir/name`.
    pub fn read(path: &Path) -> Result<Manifest, ManifestError> {
        let bytes = std::fs::read(path).map_err(|source| ManifestError::Io { path: path.into(), source })?;
        serde_json::from_slice(&bytes).map_err(|source| ManifestError::Parse { path: path.into(), source })
    }

    /// Writes the manifest atomically as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<(), ManifestError> {
        let mut json =
            serde_json::to_vec_pretty(self).map_err(|source| ManifestError::Parse { path: path.into(), source })?;
        json.push(b'\n');
        crate::io::write_atomic(path, &json).map_err(|source| ManifestError::Io { path: path.into(), source })
    }
}

/// Settings keys that only say where a stage writes; they are recorded in `args` but not part of the run id.
pub const OUTPUT_KEYS: &[&str] = &["out", "log_samples"];

/// Collects what a stage needs for its manifest while it runs.
#[derive(Debug)]
pub struct ManifestBuilder {
    stage: String,
    args: serde_json::Value,
    seed: Option<u64>,
    inputs: Vec<InputFile>,
    /// Per input: whether its bytes decide the output (and so enter the run id).
    decides_output: Vec<bool>,
    started: String,
    clock: Instant,
    /// Counters; stages add to them.
    pub counts: BTreeMap<String, u64>,
    /// Seconds per phase; stages set them.
    pub timings: BTreeMap<String, f64>,
}

impl ManifestBuilder {
    /// Starts a manifest for `stage` with its resolved settings; the clock starts now.
    pub fn new(stage: &str, args: serde_json::Value, seed: Option<u64>) -> Self {
        ManifestBuilder {
            stage: stage.to_string(),
            args,
            seed,
            inputs: Vec::new(),
            decides_output: Vec::new(),
            started: now_rfc3339(),
            clock: Instant::now(),
            counts: BTreeMap::new(),
            timings: BTreeMap::new(),
        }
    }

    /// Hashes `path` (with a progress bar on bytes) and records it as an input.
    pub fn add_input(&mut self, path: &Path, progress: &Progress) -> Result<&InputFile, ManifestError> {
        self.push_input(path, progress, true)
    }

    /// Records an input that only speeds the work up (e.g. a dump's index, checked against the dump):
    /// listed and hashed, but not part of the run id, so outputs are the same bytes with or without it.
    pub fn add_helper_input(&mut self, path: &Path, progress: &Progress) -> Result<&InputFile, ManifestError> {
        self.push_input(path, progress, false)
    }

    fn push_input(&mut self, path: &Path, progress: &Progress, decides: bool) -> Result<&InputFile, ManifestError> {
        let (sha256, bytes) = hash_file(path, progress)?;
        self.inputs.push(InputFile { path: path.display().to_string(), sha256, bytes });
        self.decides_output.push(decides);
        Ok(self.inputs.last().expect("just pushed"))
    }

    /// The run id: sha256 over stage name, settings and the hashes of the inputs that decide the
    /// output (not paths, not times).
    pub fn run_id(&self) -> String {
        let mut args = self.args.clone();
        if let Some(map) = args.as_object_mut() {
            // Where outputs go does not change what they are: a run resumed into another folder is the same run.
            for key in OUTPUT_KEYS {
                map.remove(*key);
            }
        }
        let mut h = Sha256::new();
        h.update(self.stage.as_bytes());
        h.update([0]);
        h.update(args.to_string().as_bytes());
        for (input, _) in self.inputs.iter().zip(&self.decides_output).filter(|(_, d)| **d) {
            h.update([0]);
            h.update(input.sha256.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// The footer metadata every Parquet output of this run carries.
    pub fn shard_meta(&self) -> ShardMeta {
        ShardMeta { stage: self.stage.clone(), version: TOOL_VERSION.to_string(), run_id: self.run_id() }
    }

    /// Adds `n` to counter `key`.
    pub fn count(&mut self, key: &str, n: u64) {
        *self.counts.entry(key.to_string()).or_default() += n;
    }

    /// Hashes the outputs (paths relative to `dir`) and returns the finished manifest.
    pub fn finish(self, dir: &Path, outputs: &[(PathBuf, Option<u64>)]) -> Result<Manifest, ManifestError> {
        let mut files = Vec::with_capacity(outputs.len());
        for (path, rows) in outputs {
            let (sha256, bytes) = hash_file(path, &Progress { quiet: true })?;
            let rel = path.strip_prefix(dir).unwrap_or(path);
            files.push(OutputFile { path: rel.display().to_string(), sha256, rows: *rows, bytes });
        }
        let run_id = self.run_id();
        let mut timings = self.timings;
        timings.insert("total_s".into(), self.clock.elapsed().as_secs_f64());
        Ok(Manifest {
            schema: MANIFEST_SCHEMA.to_string(),
            stage: self.stage,
            version: TOOL_VERSION.to_string(),
            run_id,
            args: self.args,
            seed: self.seed,
            inputs: self.inputs,
            outputs: files,
            counts: self.counts,
            incomplete: None,
            timings,
            started: self.started,
            finished: now_rfc3339(),
        })
    }
}

/// sha256 (hex) and size of a file, read in 1 MiB blocks with a byte progress bar.
pub fn hash_file(path: &Path, progress: &Progress) -> Result<(String, u64), ManifestError> {
    let io_err = |source| ManifestError::Io { path: path.into(), source };
    let mut file = File::open(path).map_err(io_err)?;
    let total = file.metadata().map_err(io_err)?.len();
    // Small files hash in well under a second: no bar at all.
    let bar = if total > 64 << 20 { progress.bytes(total, "hashing") } else { indicatif::ProgressBar::hidden() };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok((hex::encode(hasher.finalize()), bytes))
}

/// Whether `path` is a manifest: `manifest.json` (a stage's directory) or `NAME.manifest.json` (beside a
/// single-file output, e.g. `eval run`'s `results.manifest.json`).
pub fn is_manifest_path(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n == "manifest.json" || n.ends_with(".manifest.json"))
}

/// Current UTC time as RFC 3339.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_depends_on_settings_and_input_bytes_not_paths() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"same").unwrap();
        std::fs::write(&b, b"same").unwrap();
        let q = Progress { quiet: true };
        let mut m1 = ManifestBuilder::new("s", serde_json::json!({"k": 1}), None);
        m1.add_input(&a, &q).unwrap();
        let mut m2 = ManifestBuilder::new("s", serde_json::json!({"k": 1}), None);
        m2.add_input(&b, &q).unwrap();
        assert_eq!(m1.run_id(), m2.run_id());
        let mut m3 = ManifestBuilder::new("s", serde_json::json!({"k": 2}), None);
        m3.add_input(&a, &q).unwrap();
        assert_ne!(m1.run_id(), m3.run_id());
        let before = m1.run_id();
        m1.add_helper_input(&b, &q).unwrap();
        assert_eq!((m1.run_id(), m1.inputs.len()), (before, 2));
        // Output folders are not part of the run (issue 19: resume into another directory).
        let out = |o: &str| ManifestBuilder::new("s", serde_json::json!({"k": 1, "out": o, "log_samples": o}), None);
        assert_eq!(out("A").run_id(), out("B").run_id());
        assert_eq!(out("A").args["out"], "A");
        // sha256("same")
        assert_eq!(m1.inputs[0].sha256, "0967115f2813a3541eaef77de9d9d5773f1c0c04314b0bbfe4ff3b3b1c55b5d5");
    }

    #[test]
    fn manifest_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x.txt");
        std::fs::write(&out, b"abc").unwrap();
        let mut b = ManifestBuilder::new("t", serde_json::json!({}), Some(7));
        b.count("rows", 3);
        let m = b.finish(dir.path(), &[(out, Some(1))]).unwrap();
        assert_eq!(m.outputs[0].path, "x.txt");
        assert_eq!(m.outputs[0].sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let p = dir.path().join("manifest.json");
        m.write(&p).unwrap();
        assert_eq!(Manifest::read(&p).unwrap(), m);
    }
}
