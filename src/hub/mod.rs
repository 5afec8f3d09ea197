//! Models, datasets and dumps fetched by name. `org/name[@revision]` resolves through the Hugging Face
//! Hub into the cache layout that `huggingface_hub` and transformers use
//! (`$HF_HOME/hub/models--org--name/{blobs,refs,snapshots}`), so files either side fetched are
//! reused by the other. Every download is resumable (HTTP Range from the `.incomplete` file),
//! verified (size and the Hub's sha256 for LFS files or git blob sha1 for small ones) and atomic
//! (renamed into place when complete). `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE=1` work as
//! in `huggingface_hub`.
//!
//! Why not the `hf-hub` crate: its blocking API (0.4) brings a second HTTP stack (ureq), has no
//! offline mode, does not verify the sha256 of what it downloads and does not honour `Retry-After`;
//! this module is a small client on the crate's reqwest instead.

mod cache;
mod download;
pub mod dump;
mod repo;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cache::RepoCache;
pub use download::{Checksum, Expected, Http};
pub use repo::{Hub, HubSource, RepoKind, RepoRef, Snapshot};

use crate::net::RetryPolicy;
use crate::Progress;

/// The public Hub, when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Errors of fetching from the Hub or a dump mirror. Messages never hold the token.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A cache or output file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The server could not be reached or kept failing (after the retries).
    #[error("{url}: {message}")]
    Http {
        /// What was asked for.
        url: String,
        /// What went wrong and what to do.
        message: String,
    },
    /// A gated repository and no token, or a token without access.
    #[error("{repo} is a gated repository{why}: accept its terms at {page} while logged in, then set HF_TOKEN to an access token of that account ({endpoint}/settings/tokens)")]
    Gated {
        /// `org/name`.
        repo: String,
        /// Whether a token was sent, in words.
        why: String,
        /// The repository's page.
        page: String,
        /// The Hub.
        endpoint: String,
    },
    /// The repository, revision or file does not exist (or is private and no token has access).
    #[error("{what}: {message}")]
    NotFound {
        /// `org/name@revision` or `org/name@revision: file`.
        what: String,
        /// The Hub's explanation and what to do.
        message: String,
    },
    /// Downloaded bytes do not match the checksum the server announced, twice.
    #[error("{url}: {algo} mismatch after a refetch (expected {expected}, got {got}); the file was deleted, nothing was used; retry later or try another mirror")]
    Checksum {
        /// What was downloaded.
        url: String,
        /// `sha256`, `sha1` or `git blob sha1`.
        algo: &'static str,
        /// The announced digest.
        expected: String,
        /// The digest of the bytes received.
        got: String,
    },
    /// `HF_HUB_OFFLINE=1` and the cache does not hold what is needed.
    #[error("HF_HUB_OFFLINE=1 and {what} is not in the cache {cache}; run once online (unset HF_HUB_OFFLINE) or fetch it with transformers / huggingface-cli into the same HF_HOME")]
    Offline {
        /// `org/name@revision` or `org/name@revision: file`.
        what: String,
        /// The repository's cache folder.
        cache: PathBuf,
    },
    /// A model repository without safetensors weights.
    #[error("{repo}: {message}")]
    Weights {
        /// `org/name@revision`.
        repo: String,
        /// What is there and what to do.
        message: String,
    },
    /// manifest.json could not be written.
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    /// The server answered something that is not what the Hub or a dump site sends.
    #[error("{url}: {message}")]
    Protocol {
        /// What was asked for.
        url: String,
        /// What was odd.
        message: String,
    },
}

impl HubError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        HubError::Io { path: path.to_path_buf(), source }
    }
}

/// A Hub access token. It has no `Display` and no `Serialize`, and `Debug` prints `***`, so it can only
/// reach the `Authorization` header.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Wraps a token string.
    pub fn new(token: impl Into<String>) -> Self {
        Token(token.into())
    }

    pub(crate) fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// How to reach the Hub and where its cache is.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Hub URL (`HF_ENDPOINT`, default [`DEFAULT_ENDPOINT`]).
    pub endpoint: String,
    /// The cache root holding `models--org--name/` folders (`HF_HUB_CACHE`, else `$HF_HOME/hub`).
    pub cache: PathBuf,
    /// Sent to the endpoint's host only (`HF_TOKEN`, else the file `$HF_HOME/token` of `huggingface-cli login`).
    pub token: Option<Token>,
    /// Use only the cache (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Retries on 429, 5xx and broken connections.
    pub retry: RetryPolicy,
    /// Files downloaded at once.
    pub parallel: usize,
    /// Progress bars.
    pub progress: Progress,
}

impl HubConfig {
    /// The settings `huggingface_hub` would use in this process's environment.
    pub fn from_env(progress: Progress) -> Self {
        Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.is_empty()), progress)
    }

    /// The settings from environment variables looked up by `var` (testable without touching the process env).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>, progress: Progress) -> Self {
        let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let cache = var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(var("HOME").unwrap_or_else(|| ".".into())).join(".cache"));
            cache.join("huggingface")
        });
        let cache = var("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| home.join("hub"));
        let token = var("HF_TOKEN")
            .or_else(|| std::fs::read_to_string(home.join("token")).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .map(Token);
        let offline = var("HF_HUB_OFFLINE")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        HubConfig {
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.into()).trim_end_matches('/').to_string(),
            cache,
            token,
            offline,
            retry: download_retry(),
            parallel: 4,
            progress,
        }
    }
}

/// Retries of downloads: 8, from half a second doubling up to a minute (a CDN hiccup or a short outage).
pub fn download_retry() -> RetryPolicy {
    RetryPolicy { max_retries: 8, backoff_base: Duration::from_millis(500), backoff_max: Duration::from_secs(60) }
}

/// A checkpoint argument resolved to a directory: a local path as given, or a Hub snapshot.
#[derive(Debug, Clone)]
pub struct ModelPath {
    /// The directory (or file) to load.
    pub path: PathBuf,
    /// Where it came from, when it came from the Hub.
    pub hub: Option<HubSource>,
}

/// Resolves a checkpoint argument: an existing local path wins; otherwise `org/name[@revision]` is
/// fetched from the Hub (config, safetensors weights, tokenizer files); anything else is returned as
/// given so the loader names the missing path.
pub fn resolve_model(spec: &str, cfg: &HubConfig) -> Result<ModelPath, HubError> {
    let local = PathBuf::from(spec);
    match RepoRef::parse(spec, RepoKind::Model) {
        Some(repo) if !local.exists() => {
            let snap = Hub::new(cfg.clone())?.model(&repo).map_err(|e| match e {
                // A typo in a local path also lands here: say that both were tried.
                HubError::NotFound { what, message } if what == format!("{}@{}", repo.id, repo.revision) => {
                    HubError::NotFound { what, message: format!("{message}; nor is there a local path {spec}") }
                }
                e => e,
            })?;
            Ok(ModelPath { path: snap.dir, hub: Some(snap.source) })
        }
        _ => Ok(ModelPath { path: local, hub: None }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn config_follows_huggingface_hub_variables() {
        let c = HubConfig::from_vars(vars(&[("HOME", "/home/u")]), Progress::default());
        assert_eq!(
            (c.endpoint.as_str(), c.cache.as_path(), c.offline),
            ("https://huggingface.co", Path::new("/home/u/.cache/huggingface/hub"), false)
        );
        assert!(c.token.is_none());
        let c = HubConfig::from_vars(
            vars(&[
                ("HF_HOME", "/h"),
                ("HF_ENDPOINT", "http://127.0.0.1:9/"),
                ("HF_HUB_OFFLINE", "1"),
                ("HF_TOKEN", "hf_x"),
            ]),
            Progress::default(),
        );
        assert_eq!(
            (c.endpoint.as_str(), c.cache.as_path(), c.offline),
            ("http://127.0.0.1:9", Path::new("/h/hub"), true)
        );
        assert_eq!(format!("{:?}", c.token), "Some(Token(***))");
        let c = HubConfig::from_vars(
            vars(&[("HF_HOME", "/h"), ("HF_HUB_CACHE", "/c"), ("HF_HUB_OFFLINE", "0")]),
            Progress::default(),
        );
        assert_eq!((c.cache.as_path(), c.offline), (Path::new("/c"), false));
    }

    #[test]
    fn token_comes_from_the_login_file_when_the_variable_is_unset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "hf_file\n").unwrap();
        let home = dir.path().to_str().unwrap();
        let c = HubConfig::from_vars(vars(&[("HF_HOME", home)]), Progress::default());
        assert_eq!(c.token.map(|t| t.bearer()), Some("Bearer hf_file".to_string()));
    }
}
