//! The Hugging Face cache layout of one repository, as `huggingface_hub` writes it:
//! `{kind}s--{org}--{name}/blobs/{etag}` holds each file's bytes once, `refs/{revision}` holds the commit
//! a branch or tag pointed to, and `snapshots/{commit}/{path}` is a relative symlink to the blob.

use std::path::{Path, PathBuf};

use super::repo::{RepoKind, RepoRef};
use super::HubError;

/// One repository's folder in the cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    /// `{cache}/models--org--name` (or `datasets--`).
    pub dir: PathBuf,
}

impl RepoCache {
    /// The folder of `repo` under the cache root.
    pub fn new(cache: &Path, repo: &RepoRef) -> Self {
        let kind = match repo.kind {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        };
        RepoCache { dir: cache.join(format!("{kind}--{}", repo.id.replace('/', "--"))) }
    }

    /// Where the blob with this etag lies.
    pub fn blob(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(etag)
    }

    /// The snapshot folder of a commit.
    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    /// The commit `revision` names: itself when it is a commit hash, else what `refs/{revision}` says.
    pub fn commit_of(&self, revision: &str) -> Option<String> {
        if is_commit(revision) {
            return Some(revision.to_string());
        }
        let text = std::fs::read_to_string(self.dir.join("refs").join(revision)).ok()?;
        let commit = text.trim();
        is_commit(commit).then(|| commit.to_string())
    }

    /// Records that `revision` points at `commit` (not for commit hashes, which name themselves).
    pub fn set_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        if is_commit(revision) || self.commit_of(revision).as_deref() == Some(commit) {
            return Ok(());
        }
        let path = self.dir.join("refs").join(revision);
        let parent = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        crate::io::write_atomic(&path, commit.as_bytes()).map_err(|e| HubError::io(&path, e))
    }

    /// Makes `snapshots/{commit}/{file}` point at the blob `etag` (relative, so the cache can move).
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> Result<PathBuf, HubError> {
        let link = self.snapshot(commit).join(file);
        if link.exists() {
            return Ok(link);
        }
        let parent = link.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        // A dangling link (its blob was deleted) is replaced.
        let _ = std::fs::remove_file(&link);
        let depth = file.matches('/').count() + 2;
        let target = PathBuf::from("../".repeat(depth)).join("blobs").join(etag);
        symlink_or_copy(&target, &link, &self.blob(etag))?;
        Ok(link)
    }
}

/// 40 lowercase hex digits: a git commit hash.
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(unix)]
fn symlink_or_copy(target: &Path, link: &Path, _blob: &Path) -> Result<(), HubError> {
    std::os::unix::fs::symlink(target, link).map_err(|e| HubError::io(link, e))
}

// Windows without developer mode cannot make symlinks; huggingface_hub then copies the blob.
#[cfg(not(unix))]
fn symlink_or_copy(_target: &Path, link: &Path, blob: &Path) -> Result<(), HubError> {
    std::fs::copy(blob, link).map(drop).map_err(|e| HubError::io(link, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_huggingface_hub() {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoRef::parse("org/tiny@main", RepoKind::Model).unwrap();
        let c = RepoCache::new(dir.path(), &repo);
        assert_eq!(c.dir, dir.path().join("models--org--tiny"));
        let commit = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(c.dir.join("blobs")).unwrap();
        std::fs::write(c.blob("e1"), "x").unwrap();
        let link = c.link(commit, "sub/dir/f.json", "e1").unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("../../../../blobs/e1"));
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "x");
        assert_eq!(c.commit_of("main"), None);
        c.set_ref("main", commit).unwrap();
        assert_eq!(std::fs::read_to_string(c.dir.join("refs/main")).unwrap(), commit);
        assert_eq!(c.commit_of("main").as_deref(), Some(commit));
        c.set_ref("refs/convert/parquet", commit).unwrap();
        assert!(c.dir.join("refs/refs/convert/parquet").is_file());
        assert_eq!(c.commit_of(commit).as_deref(), Some(commit));
        let ds = RepoRef::parse("cambridgeltl/xcopa", RepoKind::Dataset).unwrap();
        assert_eq!(RepoCache::new(dir.path(), &ds).dir, dir.path().join("datasets--cambridgeltl--xcopa"));
    }
}
