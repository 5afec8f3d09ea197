//! Repositories on the Hub: `org/name[@revision]`, the files a checkpoint needs, and fetching files
//! into the cache (online: `HEAD .../resolve/{revision}/{file}` for the commit, etag and size, then
//! the blob if the cache lacks it; offline: `refs/` and `snapshots/` only).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use reqwest::header::{HeaderMap, CONTENT_LENGTH, ETAG, LOCATION};
use reqwest::{Method, StatusCode};
use serde::Serialize;

use super::cache::{is_commit, RepoCache};
use super::download::{status_error, Checksum, Expected, Http};
use super::{HubConfig, HubError};

/// Model or dataset repository (they live under different URLs and cache folders).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoKind {
    /// `{endpoint}/org/name`.
    Model,
    /// `{endpoint}/datasets/org/name`.
    Dataset,
}

/// A repository at a revision (branch, tag or commit; `main` when not given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    /// Model or dataset.
    pub kind: RepoKind,
    /// `org/name`.
    pub id: String,
    /// Branch, tag or commit.
    pub revision: String,
}

impl RepoRef {
    /// `org/name` or `org/name@revision`; None for anything else (a local path such as `./x`, `a/b/c`).
    pub fn parse(spec: &str, kind: RepoKind) -> Option<RepoRef> {
        let (id, revision) = match spec.split_once('@') {
            Some((id, rev)) if !rev.is_empty() && !rev.contains(char::is_whitespace) => (id, rev),
            Some(_) => return None,
            None => (spec, "main"),
        };
        let (org, name) = id.split_once('/')?;
        let part = |s: &str| {
            !s.is_empty()
                && !s.starts_with(['.', '-'])
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        (part(org) && part(name)).then(|| RepoRef { kind, id: id.to_string(), revision: revision.to_string() })
    }

    /// `{endpoint}/org/name` or `{endpoint}/datasets/org/name`.
    fn page(&self, endpoint: &str) -> String {
        match self.kind {
            RepoKind::Model => format!("{endpoint}/{}", self.id),
            RepoKind::Dataset => format!("{endpoint}/datasets/{}", self.id),
        }
    }

    /// The download URL of `file` at this revision (`refs/convert/parquet` is spelled `refs%2Fconvert%2Fparquet`).
    fn resolve_url(&self, endpoint: &str, file: &str) -> String {
        format!("{}/resolve/{}/{file}", self.page(endpoint), self.revision.replace('/', "%2F"))
    }

    fn at(&self) -> String {
        format!("{}@{}", self.id, self.revision)
    }
}

/// Where fetched files came from: written into results.json and manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HubSource {
    /// `org/name`.
    pub repo: String,
    /// Model or dataset.
    pub kind: RepoKind,
    /// The revision asked for.
    pub revision: String,
    /// The commit it resolved to.
    pub commit: String,
}

/// Files of one commit, in the cache.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// `.../snapshots/{commit}`.
    pub dir: PathBuf,
    /// The repository, revision and commit.
    pub source: HubSource,
}

/// Files a checkpoint needs besides its weights (as transformers reads them).
const CHECKPOINT_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
];

/// A client of one Hub with its cache.
pub struct Hub {
    cfg: HubConfig,
    http: Http,
}

impl Hub {
    /// A client for `cfg`'s endpoint, token and cache.
    pub fn new(cfg: HubConfig) -> Result<Self, HubError> {
        let http = Http::new(cfg.token.clone(), &cfg.endpoint, cfg.retry.clone(), cfg.progress)?;
        Ok(Hub { cfg, http })
    }

    /// A checkpoint: config, tokenizer files and safetensors weights (sharded ones through their index);
    /// pickle-only repositories are refused.
    pub fn model(&self, repo: &RepoRef) -> Result<Snapshot, HubError> {
        let cache = RepoCache::new(&self.cfg.cache, repo);
        let (commit, listed) = if self.cfg.offline {
            let commit = self.offline_commit(repo, &cache)?;
            (commit.clone(), list_dir(&cache.snapshot(&commit)))
        } else {
            self.list(repo)?
        };
        // Pin the listing's commit so every file comes from the same one even if the branch moves.
        let pinned = RepoRef { revision: commit.clone(), ..repo.clone() };
        let mut files: Vec<String> =
            CHECKPOINT_FILES.iter().filter(|f| listed.contains(**f)).map(|f| f.to_string()).collect();
        if !listed.contains("config.json") {
            return Err(HubError::Weights {
                repo: repo.at(),
                message: "no config.json: not a transformers checkpoint".into(),
            });
        }
        if listed.contains("model.safetensors.index.json") {
            let index = self.files(&pinned, &["model.safetensors.index.json".to_string()])?;
            files.extend(shards_of_index(&index.dir.join("model.safetensors.index.json"))?);
        } else if listed.contains("model.safetensors") {
            files.push("model.safetensors".into());
        } else if listed
            .iter()
            .any(|f| !f.contains('/') && (f.ends_with(".bin") || f.ends_with(".pt") || f.ends_with(".pth")))
        {
            return Err(HubError::Weights { repo: repo.at(), message: crate::model::PICKLE_HINT.into() });
        } else {
            return Err(HubError::Weights {
                repo: repo.at(),
                message: "no model.safetensors or model.safetensors.index.json in the repository".into(),
            });
        }
        let snap = self.files(&pinned, &files)?;
        if !is_commit(&repo.revision) {
            cache.set_ref(&repo.revision, &commit)?;
        }
        Ok(Snapshot { dir: snap.dir, source: HubSource { revision: repo.revision.clone(), ..snap.source } })
    }

    /// Fetches `files` of `repo` into the cache (several at once) and returns their snapshot.
    pub fn files(&self, repo: &RepoRef, files: &[String]) -> Result<Snapshot, HubError> {
        let cache = RepoCache::new(&self.cfg.cache, repo);
        if self.cfg.offline {
            let commit = self.offline_commit(repo, &cache)?;
            for f in files {
                if !cache.snapshot(&commit).join(f).is_file() {
                    return Err(HubError::Offline { what: format!("{}: {f}", repo.at()), cache: cache.dir.clone() });
                }
            }
            return Ok(self.snapshot(repo, &cache, commit));
        }
        // The same file twice would race on its `.incomplete` (Belebele scores and draws shots from one split).
        let files: Vec<&String> = files.iter().collect::<BTreeSet<_>>().into_iter().collect();
        let next = AtomicUsize::new(0);
        let commits = Mutex::new(BTreeSet::new());
        let first_error = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..self.cfg.parallel.clamp(1, files.len().max(1)) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(f) = files.get(i) else { return };
                    match self.file(repo, &cache, f) {
                        Ok(commit) => drop(commits.lock().map(|mut c| c.insert(commit))),
                        Err(e) => {
                            // Stop handing out files; the first error is the one reported.
                            next.store(files.len(), Ordering::SeqCst);
                            let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            slot.get_or_insert(e);
                            return;
                        }
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        let commits = commits.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut it = commits.into_iter();
        let commit = match (it.next(), it.next()) {
            (Some(c), None) => c,
            (None, _) => self.offline_commit(repo, &cache)?,
            (Some(a), Some(b)) => {
                return Err(HubError::Protocol {
                    url: repo.page(&self.cfg.endpoint),
                    message: format!("{} moved from commit {a} to {b} during the download; run again", repo.revision),
                })
            }
        };
        cache.set_ref(&repo.revision, &commit)?;
        Ok(self.snapshot(repo, &cache, commit))
    }

    fn snapshot(&self, repo: &RepoRef, cache: &RepoCache, commit: String) -> Snapshot {
        let source = HubSource {
            repo: repo.id.clone(),
            kind: repo.kind,
            revision: repo.revision.clone(),
            commit: commit.clone(),
        };
        Snapshot { dir: cache.snapshot(&commit), source }
    }

    /// The commit the cache holds for `repo`'s revision (offline mode).
    fn offline_commit(&self, repo: &RepoRef, cache: &RepoCache) -> Result<String, HubError> {
        cache
            .commit_of(&repo.revision)
            .filter(|c| cache.snapshot(c).is_dir())
            .ok_or_else(|| HubError::Offline { what: repo.at(), cache: cache.dir.clone() })
    }

    /// The repository's files at the revision and its commit (`GET /api/{models,datasets}/{id}/revision/{rev}`).
    fn list(&self, repo: &RepoRef) -> Result<(String, BTreeSet<String>), HubError> {
        let kind = match repo.kind {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        };
        let url =
            format!("{}/api/{kind}/{}/revision/{}", self.cfg.endpoint, repo.id, repo.revision.replace('/', "%2F"));
        let resp = self.http.send(Method::GET, &url, true)?;
        if !resp.status().is_success() {
            return Err(self.refusal(repo, None, resp.status(), resp.headers(), &url));
        }
        let info: serde_json::Value =
            resp.json().map_err(|e| HubError::Protocol { url: url.clone(), message: format!("not JSON: {e}") })?;
        let commit = info["sha"].as_str().filter(|c| is_commit(c)).ok_or_else(|| HubError::Protocol {
            url: url.clone(),
            message: "no commit `sha` in the repository info".into(),
        })?;
        let files = info["siblings"]
            .as_array()
            .map(|s| s.iter().filter_map(|f| f["rfilename"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        Ok((commit.to_string(), files))
    }

    /// One file into the cache; its commit. Its blob is reused when present with the announced size.
    fn file(&self, repo: &RepoRef, cache: &RepoCache, file: &str) -> Result<String, HubError> {
        let url = repo.resolve_url(&self.cfg.endpoint, file);
        let resp = self.http.send(Method::HEAD, &url, false)?;
        let (status, h) = (resp.status(), resp.headers());
        if !(status.is_success() || status.is_redirection()) {
            return Err(self.refusal(repo, Some(file), status, h, &url));
        }
        let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let commit = header("x-repo-commit").filter(|c| is_commit(c)).ok_or_else(|| HubError::Protocol {
            url: url.clone(),
            message: "no X-Repo-Commit header: is HF_ENDPOINT a Hugging Face Hub?".into(),
        })?;
        let linked = header("x-linked-etag");
        let etag = linked
            .clone()
            .or_else(|| header(ETAG.as_str()))
            .map(|e| clean_etag(&e))
            .ok_or_else(|| HubError::Protocol { url: url.clone(), message: "no ETag header".into() })?;
        let size = header("x-linked-size").or_else(|| header(CONTENT_LENGTH.as_str())).and_then(|s| s.parse().ok());
        let blob = cache.blob(&etag);
        let cached = std::fs::metadata(&blob).ok().map(|m| m.len());
        if cached.is_none() || size.is_some_and(|s| cached != Some(s)) {
            let download = match header(LOCATION.as_str()) {
                Some(loc) if status.is_redirection() => loc,
                _ => url.clone(),
            };
            // LFS files are named by their sha256, small files by their git blob id.
            let checksum = match (linked.is_some(), etag.len()) {
                (true, 64) => Some(Checksum::Sha256(etag.clone())),
                (false, 40) => Some(Checksum::GitBlobSha1(etag.clone())),
                _ => None,
            };
            let _ = std::fs::remove_file(&blob);
            self.http.download(&download, &blob, &Expected { size, checksum }, &format!("{} {file}", repo.id))?;
        }
        cache.link(&commit, file, &etag)?;
        Ok(commit)
    }

    /// A 401/403/404 in words: gated, missing repository, revision or file.
    fn refusal(&self, repo: &RepoRef, file: Option<&str>, status: StatusCode, h: &HeaderMap, url: &str) -> HubError {
        let code = h.get("x-error-code").and_then(|v| v.to_str().ok()).unwrap_or("");
        let what = match file {
            Some(f) => format!("{}: {f}", repo.at()),
            None => repo.at(),
        };
        let token = self.cfg.token.is_some();
        match (code, status.as_u16()) {
            ("GatedRepo", _) => HubError::Gated {
                repo: repo.id.clone(),
                why: if token {
                    " and HF_TOKEN's account has no access yet".into()
                } else {
                    " and HF_TOKEN is not set".into()
                },
                page: repo.page(&self.cfg.endpoint),
                endpoint: self.cfg.endpoint.clone(),
            },
            ("RevisionNotFound", _) => HubError::NotFound {
                what,
                message: format!(
                    "no revision `{}`; see the branches, tags and commits at {}/tree/main",
                    repo.revision,
                    repo.page(&self.cfg.endpoint)
                ),
            },
            ("EntryNotFound", _) => HubError::NotFound { what, message: "no such file at this revision".into() },
            ("RepoNotFound", _) | (_, 401) => HubError::NotFound {
                what,
                message: format!(
                    "no such repository on {}{}",
                    self.cfg.endpoint,
                    if token { " that HF_TOKEN can see" } else { " (a private one needs HF_TOKEN)" }
                ),
            },
            (_, 404) => HubError::NotFound { what, message: "not found".into() },
            _ => status_error(url, status, h),
        }
    }
}

/// `"abc"` or `W/"abc"` → `abc`.
fn clean_etag(e: &str) -> String {
    e.trim().trim_start_matches("W/").trim_matches('"').to_string()
}

/// The shard files a `model.safetensors.index.json` names.
fn shards_of_index(path: &std::path::Path) -> Result<Vec<String>, HubError> {
    let text = std::fs::read_to_string(path).map_err(|e| HubError::io(path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| HubError::Protocol { url: path.display().to_string(), message: format!("not JSON: {e}") })?;
    let files: BTreeSet<String> = json["weight_map"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    if files.is_empty() {
        return Err(HubError::Protocol {
            url: path.display().to_string(),
            message: "no weight_map in the index".into(),
        });
    }
    Ok(files.into_iter().collect())
}

/// Every file under a snapshot folder, as repository paths.
fn list_dir(dir: &std::path::Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_local_paths() {
        let r = RepoRef::parse("meta-llama/Llama-2-7b-hf", RepoKind::Model).unwrap();
        assert_eq!((r.id.as_str(), r.revision.as_str()), ("meta-llama/Llama-2-7b-hf", "main"));
        let r = RepoRef::parse("org/m.v1@refs/pr/3", RepoKind::Model).unwrap();
        assert_eq!(r.revision, "refs/pr/3");
        assert_eq!(r.resolve_url("http://h", "config.json"), "http://h/org/m.v1/resolve/refs%2Fpr%2F3/config.json");
        let d = RepoRef::parse("cambridgeltl/xcopa@refs/convert/parquet", RepoKind::Dataset).unwrap();
        assert_eq!(
            d.resolve_url("http://h", "tr/test/0000.parquet"),
            "http://h/datasets/cambridgeltl/xcopa/resolve/refs%2Fconvert%2Fparquet/tr/test/0000.parquet"
        );
        for local in ["./ckpt", "/abs/ckpt", "runs/train/final", "ckpt", "../a/b", "a/b@", "a /b", ".a/b"] {
            assert_eq!(RepoRef::parse(local, RepoKind::Model), None, "{local}");
        }
        assert_eq!(clean_etag("W/\"abc\""), "abc");
    }
}
