//! Output parts: page results in dump order become `part-NNNNN.parquet` files; finished parts of
//! an earlier run are found again for `--resume`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::worker::{Outcome, PageResult};
use super::{PartStats, WikiError};
use crate::corpus::{IdKind, TextShardWriter};
use crate::manifest::{ShardMeta, PARQUET_META_KEY};

/// Footer key holding a part's [`PartStats`].
const PART_STATS_KEY: &str = "langadapt.wiki.part";

/// Receives page results in dump order and writes them into parts.
pub(super) struct PartSink {
    pub(super) dir: PathBuf,
    pub(super) meta: ShardMeta,
    pub(super) part_pages: u64,
    pub(super) open: Option<(u64, TextShardWriter, PartStats)>,
    pub(super) written: Vec<(u64, PathBuf, PartStats)>,
}

impl PartSink {
    pub(super) fn push(&mut self, r: PageResult) -> Result<(), WikiError> {
        let k = r.ordinal / self.part_pages;
        if self.open.as_ref().map(|o| o.0) != Some(k) {
            self.close()?;
            let w = TextShardWriter::create(&part_path(&self.dir, k), &self.meta, IdKind::Int)?;
            self.open = Some((k, w, PartStats::default()));
        }
        let (_, w, stats) = self.open.as_mut().expect("opened above");
        stats.pages += 1;
        stats.xml_bytes += r.xml_bytes;
        match r.outcome {
            Outcome::Article(rec) => {
                stats.articles += 1;
                stats.text_bytes += rec.text.len() as u64;
                w.write(rec)?;
            }
            Outcome::Redirect => stats.redirects += 1,
            Outcome::OtherNamespace => stats.other_namespaces += 1,
            Outcome::TooShort => stats.too_short += 1,
            Outcome::Disambiguation => stats.disambiguation += 1,
        }
        Ok(())
    }

    pub(super) fn close(&mut self) -> Result<(), WikiError> {
        if let Some((k, w, stats)) = self.open.take() {
            let json = serde_json::to_string(&stats).expect("stats serialize");
            let (path, _) = w.finish(&[(PART_STATS_KEY.to_string(), json)])?;
            self.written.push((k, path, stats));
        }
        Ok(())
    }

    /// Removes the unfinished part, so a failed run leaves no half-written file behind.
    pub(super) fn abort(&mut self) {
        if let Some((k, w, _)) = self.open.take() {
            drop(w);
            let _ = std::fs::remove_file(crate::io::tmp_path(&part_path(&self.dir, k)));
        }
    }
}

pub(super) fn part_path(dir: &Path, k: u64) -> PathBuf {
    dir.join(format!("part-{k:05}.parquet"))
}

pub(super) fn part_number(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("part-")?.strip_suffix(".parquet")?.parse().ok()
}

/// Finds finished parts of this run in `dir`; refuses parts of another run. Removes stale temporaries.
pub(super) fn existing_parts(dir: &Path, run_id: &str) -> Result<BTreeMap<u64, (PathBuf, PartStats)>, WikiError> {
    let mut found = BTreeMap::new();
    let rd = std::fs::read_dir(dir).map_err(|source| WikiError::Io { path: dir.into(), source })?;
    for entry in rd {
        let path = entry.map_err(|source| WikiError::Io { path: dir.into(), source })?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("part-") && name.ends_with(crate::io::TMP_SUFFIX) {
            std::fs::remove_file(&path).map_err(|source| WikiError::Io { path: path.clone(), source })?;
            continue;
        }
        let Some(k) = part_number(&path) else { continue };
        let (kv, _) = crate::corpus::read_footer(&path)?;
        let meta: Option<ShardMeta> = kv.get(PARQUET_META_KEY).and_then(|v| serde_json::from_str(v).ok());
        if meta.as_ref().map(|m| m.run_id.as_str()) != Some(run_id) {
            return Err(WikiError::Output {
                dir: dir.into(),
                msg: format!(
                    "{} was written by a different run (other dump or settings); use a new --out directory or delete the old parts",
                    path.display()
                ),
            });
        }
        let stats =
            kv.get(PART_STATS_KEY).and_then(|v| serde_json::from_str(v).ok()).ok_or_else(|| WikiError::Output {
                dir: dir.into(),
                msg: format!("{} has no part statistics in its footer; delete it and resume", path.display()),
            })?;
        found.insert(k, (path, stats));
    }
    Ok(found)
}
