//! One file over HTTP into place: resumable (a `Range` request from the length of `{dest}.incomplete`),
//! verified (size and digest before the rename; a mismatch deletes the bytes and fetches once more),
//! atomic (renamed to `dest` only when complete), retried with backoff on 429 (waiting `Retry-After`),
//! 408, 5xx and broken connections. Redirects are followed by hand so the token goes only to the host
//! it was meant for.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_RANGE, LOCATION, RANGE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use sha2::Digest;

use super::{HubError, Token};
use crate::net::{describe, retry_after, RetryPolicy};
use crate::Progress;

/// A digest the server announced for a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// Hex sha256 of the bytes (the Hub's `X-Linked-Etag` of LFS files).
    Sha256(String),
    /// Hex sha1 of the bytes (Wikimedia's dumpstatus.json).
    Sha1(String),
    /// Hex sha1 of `blob {len}\0{bytes}`: the git object id, the Hub's `ETag` of small files.
    GitBlobSha1(String),
}

impl Checksum {
    fn algo(&self) -> &'static str {
        match self {
            Checksum::Sha256(_) => "sha256",
            Checksum::Sha1(_) => "sha1",
            Checksum::GitBlobSha1(_) => "git blob sha1",
        }
    }

    fn expected(&self) -> &str {
        match self {
            Checksum::Sha256(h) | Checksum::Sha1(h) | Checksum::GitBlobSha1(h) => h,
        }
    }

    /// The digest of a file, in this checksum's algorithm.
    fn of_file(&self, path: &Path) -> std::io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        let mut buf = vec![0u8; 1 << 20];
        let mut feed = |update: &mut dyn FnMut(&[u8])| -> std::io::Result<()> {
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                update(&buf[..n]);
            }
        };
        Ok(match self {
            Checksum::Sha256(_) => {
                let mut h = sha2::Sha256::new();
                feed(&mut |b| h.update(b))?;
                hex::encode(h.finalize())
            }
            Checksum::Sha1(_) | Checksum::GitBlobSha1(_) => {
                let mut h = sha1::Sha1::new();
                if matches!(self, Checksum::GitBlobSha1(_)) {
                    h.update(format!("blob {len}\0").as_bytes());
                }
                feed(&mut |b| h.update(b))?;
                hex::encode(h.finalize())
            }
        })
    }
}

/// What a download must turn out to be.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// Size in bytes, when announced.
    pub size: Option<u64>,
    /// Digest, when announced.
    pub checksum: Option<Checksum>,
}

/// Why one attempt failed: worth another (with the server's wait), or final.
enum Attempt {
    Retry { reason: String, after: Option<Duration> },
    Fail(HubError),
}

/// The HTTP client of the Hub and dump downloads.
pub struct Http {
    client: Client,
    /// The token and the `host:port` it may be sent to.
    auth: Option<(Token, String)>,
    policy: RetryPolicy,
    progress: Progress,
}

/// `host:port` of a URL (the port spelled out, so http://h and http://h:80 agree).
fn origin(url: &Url) -> String {
    format!("{}:{}", url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0))
}

fn parse_url(url: &str) -> Result<Url, HubError> {
    Url::parse(url).map_err(|e| HubError::Protocol { url: url.into(), message: format!("not a URL: {e}") })
}

impl Http {
    /// A client that sends `token` to `token_url`'s host only, retries per `policy`, and draws `progress`.
    pub fn new(
        token: Option<Token>,
        token_url: &str,
        policy: RetryPolicy,
        progress: Progress,
    ) -> Result<Self, HubError> {
        let client = Client::builder()
            // Per read, not per download: a 10 GB file takes longer than any total limit.
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("langadapt/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HubError::Http { url: token_url.into(), message: describe(&e) })?;
        let auth = match token {
            Some(t) => Some((t, origin(&parse_url(token_url)?))),
            None => None,
        };
        Ok(Http { client, auth, policy, progress })
    }

    /// One request (no retries); follows relative redirects always, absolute ones when `follow_all`.
    fn send_once(&self, method: &Method, url: &str, range_from: u64, follow_all: bool) -> Result<Response, Attempt> {
        let mut url = parse_url(url).map_err(Attempt::Fail)?;
        for _ in 0..10 {
            let mut req = self.client.request(method.clone(), url.clone()).header("Accept-Encoding", "identity");
            if range_from > 0 {
                req = req.header(RANGE, format!("bytes={range_from}-"));
            }
            if let Some((token, host)) = &self.auth {
                if origin(&url) == *host {
                    req = req.header(AUTHORIZATION, token.bearer());
                }
            }
            let resp = req.send().map_err(|e| Attempt::Retry { reason: describe(&e), after: None })?;
            let status = resp.status();
            let location = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
            match location {
                Some(loc) if status.is_redirection() => {
                    let relative = Url::parse(&loc).is_err();
                    if !(relative || follow_all) {
                        return Ok(resp);
                    }
                    url = url.join(&loc).map_err(|e| {
                        Attempt::Fail(HubError::Protocol {
                            url: url.to_string(),
                            message: format!("bad Location {loc:?}: {e}"),
                        })
                    })?;
                }
                _ => return Ok(resp),
            }
        }
        Err(Attempt::Fail(HubError::Protocol { url: url.to_string(), message: "more than 10 redirects".into() }))
    }

    /// A request retried on 429/408/5xx and connection errors; any other status is returned.
    pub fn send(&self, method: Method, url: &str, follow_all: bool) -> Result<Response, HubError> {
        self.retrying(url, |_| {
            let resp = self.send_once(&method, url, 0, follow_all)?;
            match retryable(&resp) {
                Some(a) => Err(a),
                None => Ok(resp),
            }
        })
    }

    /// Runs `attempt(n)` until it succeeds, fails for good, or the retries run out.
    fn retrying<T>(&self, url: &str, mut attempt: impl FnMut(u32) -> Result<T, Attempt>) -> Result<T, HubError> {
        let mut n = 0;
        loop {
            match attempt(n) {
                Ok(v) => return Ok(v),
                Err(Attempt::Fail(e)) => return Err(e),
                Err(Attempt::Retry { reason, .. }) if n >= self.policy.max_retries => {
                    return Err(HubError::Http {
                        url: url.into(),
                        message: format!(
                            "{reason} (gave up after {} retries; run again later: downloads resume where they stopped)",
                            self.policy.max_retries
                        ),
                    })
                }
                Err(Attempt::Retry { after, .. }) => {
                    std::thread::sleep(after.unwrap_or_else(|| self.policy.backoff(n)));
                    n += 1;
                }
            }
        }
    }

    /// Downloads `url` to `dest` (resuming `{dest}.incomplete`), checks `expected`, renames into place.
    /// Returns the bytes transferred now (0 when the partial file was already complete).
    pub fn download(&self, url: &str, dest: &Path, expected: &Expected, label: &str) -> Result<u64, HubError> {
        let parent = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        let partial = incomplete_path(dest);
        let bar = self.progress.bytes(expected.size.unwrap_or(0), label);
        let mut refetched = false;
        let mut fetched = 0u64;
        let result = self.retrying(url, |_| loop {
            let mut have = std::fs::metadata(&partial).map_or(0, |m| m.len());
            if expected.size.is_some_and(|s| have > s) {
                truncate(&partial).map_err(Attempt::Fail)?;
                have = 0;
            }
            if expected.size != Some(have) || have == 0 {
                bar.set_position(have);
                self.fetch_into(url, &partial, have, &bar, &mut fetched)?;
            }
            let got = std::fs::metadata(&partial).map_err(|e| Attempt::Fail(HubError::io(&partial, e)))?.len();
            if let Some(size) = expected.size.filter(|s| *s != got) {
                // Longer than announced cannot be resumed; shorter resumes on the next attempt.
                if got > size {
                    truncate(&partial).map_err(Attempt::Fail)?;
                }
                return Err(Attempt::Retry { reason: format!("got {got} of {size} bytes"), after: None });
            }
            let Some(sum) = &expected.checksum else { return Ok(()) };
            let digest = sum.of_file(&partial).map_err(|e| Attempt::Fail(HubError::io(&partial, e)))?;
            if digest == sum.expected() {
                return Ok(());
            }
            // Corrupted bytes are never kept: delete, fetch once more from the start, then give up.
            std::fs::remove_file(&partial).map_err(|e| Attempt::Fail(HubError::io(&partial, e)))?;
            if refetched {
                return Err(Attempt::Fail(HubError::Checksum {
                    url: url.into(),
                    algo: sum.algo(),
                    expected: sum.expected().into(),
                    got: digest,
                }));
            }
            refetched = true;
        });
        bar.finish_and_clear();
        result?;
        std::fs::rename(&partial, dest).map_err(|e| HubError::io(dest, e))?;
        Ok(fetched)
    }

    /// One GET appended to `partial` from byte `have`; every byte written is added to `fetched`, also
    /// those of an attempt that is cut off.
    fn fetch_into(
        &self,
        url: &str,
        partial: &Path,
        have: u64,
        bar: &indicatif::ProgressBar,
        fetched: &mut u64,
    ) -> Result<(), Attempt> {
        let mut resp = self.send_once(&Method::GET, url, have, true)?;
        if let Some(a) = retryable(&resp) {
            return Err(a);
        }
        let start = match resp.status() {
            StatusCode::OK => 0,
            StatusCode::PARTIAL_CONTENT => content_range_start(resp.headers()).unwrap_or(u64::MAX),
            StatusCode::RANGE_NOT_SATISFIABLE => {
                // The partial file is longer than the file is now: start over.
                truncate(partial).map_err(Attempt::Fail)?;
                return Err(Attempt::Retry { reason: "HTTP 416 for the partial file's range".into(), after: None });
            }
            s => return Err(Attempt::Fail(status_error(url, s, resp.headers()))),
        };
        if start != 0 && start != have {
            truncate(partial).map_err(Attempt::Fail)?;
            return Err(Attempt::Retry {
                reason: format!("asked for bytes from {have}, got from {start}"),
                after: None,
            });
        }
        let io = |e| Attempt::Fail(HubError::io(partial, e));
        let mut file = OpenOptions::new()
            .create(true)
            .append(start != 0)
            .write(true)
            .truncate(start == 0)
            .open(partial)
            .map_err(io)?;
        bar.set_position(start);
        let mut buf = vec![0u8; 1 << 16];
        let mut written = 0u64;
        loop {
            let n = match resp.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    file.flush().map_err(io)?;
                    return Err(Attempt::Retry {
                        reason: format!("response cut off after {} bytes: {e}", start + written),
                        after: None,
                    });
                }
            };
            file.write_all(&buf[..n]).map_err(io)?;
            written += n as u64;
            *fetched += n as u64;
            bar.inc(n as u64);
        }
        file.sync_all().map_err(io)?;
        Ok(())
    }
}

/// `{dest}.incomplete`, where the bytes of an unfinished download wait.
pub fn incomplete_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".incomplete");
    dest.with_file_name(name)
}

fn truncate(path: &Path) -> Result<(), HubError> {
    File::create(path).map(drop).map_err(|e| HubError::io(path, e))
}

/// A 429/408/5xx response as a retry, with the server's `Retry-After`.
fn retryable(resp: &Response) -> Option<Attempt> {
    let s = resp.status();
    if s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::REQUEST_TIMEOUT || s.is_server_error() {
        let after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(retry_after);
        return Some(Attempt::Retry { reason: format!("HTTP {s}"), after });
    }
    None
}

/// The first byte of `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(h: &HeaderMap) -> Option<u64> {
    let v = h.get(CONTENT_RANGE)?.to_str().ok()?;
    v.strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

/// An unexpected status in words, with the server's `X-Error-Message` when it sent one.
pub(crate) fn status_error(url: &str, status: StatusCode, h: &HeaderMap) -> HubError {
    let why = h.get("x-error-message").and_then(|v| v.to_str().ok()).map(|m| format!(": {m}")).unwrap_or_default();
    HubError::Http { url: url.into(), message: format!("HTTP {status}{why}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "hello\n").unwrap();
        // `printf 'hello\n' | sha256sum`, `| sha1sum`, `| git hash-object --stdin`.
        let sha256 = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        assert_eq!(Checksum::Sha256(String::new()).of_file(&p).unwrap(), sha256);
        assert_eq!(Checksum::Sha1(String::new()).of_file(&p).unwrap(), "f572d396fae9206628714fb2ce00f72e94f2258f");
        assert_eq!(
            Checksum::GitBlobSha1(String::new()).of_file(&p).unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }

    #[test]
    fn content_range_and_incomplete_names() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_RANGE, "bytes 100-199/200".parse().unwrap());
        assert_eq!(content_range_start(&h), Some(100));
        assert_eq!(incomplete_path(Path::new("/c/blobs/abc")), Path::new("/c/blobs/abc.incomplete"));
    }
}
