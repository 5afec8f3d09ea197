//! HTTP for the translation backends: one reqwest blocking client, a shared rate limiter, and the
//! retry rules (429 waits for `Retry-After`; 5xx, timeouts, connection errors and malformed JSON
//! back off exponentially with jitter). Every message passes through [`Http::redact`] so API keys
//! never reach logs, errors or files.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

pub use crate::net::RetryPolicy;
use crate::net::{describe, retry_after};

/// Why one attempt failed, and whether another may succeed.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// Worth retrying (429, 5xx, timeout, connection error, malformed response); `after` is the
    /// server's `Retry-After`.
    Retry { reason: String, after: Option<Duration> },
    /// This request will not succeed (e.g. 400, text not in the replay cache): the texts fail.
    Fail(String),
    /// No request will succeed (bad key, quota exhausted): the run stops.
    Abort(String),
}

impl CallError {
    /// The message, whatever the kind.
    pub fn reason(&self) -> &str {
        match self {
            CallError::Retry { reason, .. } | CallError::Fail(reason) | CallError::Abort(reason) => reason,
        }
    }
}

/// Counters shared by all workers.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Requests sent (attempts).
    pub requests: AtomicU64,
    /// Attempts that were retries.
    pub retried: AtomicU64,
}

/// Spaces requests `1/rate` seconds apart over all workers; a 429 pauses everyone.
#[derive(Debug)]
struct RateLimiter {
    interval: Option<Duration>,
    next: Mutex<Instant>,
}

impl RateLimiter {
    fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval.unwrap_or_default();
            slot
        };
        std::thread::sleep(slot.saturating_duration_since(Instant::now()));
    }

    fn pause_until(&self, t: Instant) {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        *next = (*next).max(t);
    }
}

/// The shared HTTP client of one run.
pub struct Http {
    client: reqwest::blocking::Client,
    limiter: RateLimiter,
    policy: RetryPolicy,
    /// Values never to show (API keys).
    secrets: Vec<String>,
    /// Counters.
    pub stats: HttpStats,
}

impl Http {
    /// A client with a per-request `timeout`, at most `rate` requests per second (None: no limit),
    /// and the `secrets` to scrub from every message.
    pub fn new(
        timeout: Duration,
        rate: Option<f64>,
        policy: RetryPolicy,
        secrets: Vec<String>,
    ) -> Result<Self, String> {
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("langadapt/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.without_url().to_string())?;
        let interval = rate.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(1.0 / r));
        Ok(Http {
            client,
            limiter: RateLimiter { interval, next: Mutex::new(Instant::now()) },
            policy,
            secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(),
            stats: HttpStats::default(),
        })
    }

    /// `msg` with every secret and every `key=...` URL parameter replaced by `***`.
    pub fn redact(&self, msg: &str) -> String {
        let mut out = msg.to_string();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "***");
        }
        let mut clean = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(p) = rest.find("key=") {
            let value_start = p + 4;
            let value_len =
                rest[value_start..].find(['&', ' ', '"', '\'', ')', '\n']).unwrap_or(rest.len() - value_start);
            clean.push_str(&rest[..value_start]);
            clean.push_str("***");
            rest = &rest[value_start + value_len..];
        }
        clean.push_str(rest);
        clean
    }

    /// One POST of a JSON body; the response parsed as `T`. Waits for the rate limiter first.
    pub fn post_json<T: DeserializeOwned>(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: &serde_json::Value,
    ) -> Result<T, CallError> {
        self.limiter.acquire();
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = self.client.post(url).json(body);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let retry = |reason: String| CallError::Retry { reason, after: None };
        let resp = req.send().map_err(|e| retry(self.redact(&describe(&e))))?;
        let status = resp.status();
        let after =
            resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(retry_after);
        let bytes = resp.bytes().map_err(|e| retry(self.redact(&describe(&e))))?;
        if !status.is_success() {
            let snippet: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
            let reason = self.redact(&format!("HTTP {status}: {}", snippet.trim()));
            return Err(match status.as_u16() {
                429 => {
                    if let Some(a) = after {
                        self.limiter.pause_until(Instant::now() + a);
                    }
                    CallError::Retry { reason, after }
                }
                408 | 500..=599 => CallError::Retry { reason, after },
                // Bad key or forbidden; DeepL's 456 = quota exceeded: nothing else will get through.
                401 | 403 | 456 => CallError::Abort(reason),
                _ => CallError::Fail(reason),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            let snippet: String = String::from_utf8_lossy(&bytes).chars().take(100).collect();
            retry(self.redact(&format!("malformed response ({e}): {snippet}")))
        })
    }

    /// Runs `attempt` until it succeeds, fails for good, or retries run out.
    pub fn with_retries<T>(&self, mut attempt: impl FnMut() -> Result<T, CallError>) -> Result<T, CallError> {
        let mut n = 0u32;
        loop {
            match attempt() {
                Err(CallError::Retry { after, .. }) if n < self.policy.max_retries => {
                    std::thread::sleep(after.unwrap_or_else(|| self.policy.backoff(n)));
                    n += 1;
                    self.stats.retried.fetch_add(1, Ordering::Relaxed);
                }
                Err(CallError::Retry { reason, .. }) => {
                    return Err(CallError::Fail(format!(
                        "{reason} (gave up after {} retries)",
                        self.policy.max_retries
                    )))
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(secrets: &[&str]) -> Http {
        let policy = RetryPolicy {
            max_retries: 2,
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(4),
        };
        Http::new(Duration::from_secs(1), Some(100.0), policy, secrets.iter().map(|s| s.to_string()).collect()).unwrap()
    }

    #[test]
    fn redacts_keys_and_url_parameters() {
        let h = http(&["s3cr3t-k3y"]);
        assert_eq!(
            h.redact("GET https://x/v2?key=AIzaXYZ&q=1 failed: bad s3cr3t-k3y"),
            "GET https://x/v2?key=***&q=1 failed: bad ***"
        );
    }

    #[test]
    fn retries_then_gives_up_with_the_last_reason() {
        let h = http(&[]);
        let mut calls = 0;
        let r: Result<(), _> = h.with_retries(|| {
            calls += 1;
            Err(CallError::Retry { reason: "HTTP 503".into(), after: None })
        });
        assert_eq!(r, Err(CallError::Fail("HTTP 503 (gave up after 2 retries)".into())));
        assert_eq!((calls, h.stats.retried.load(Ordering::Relaxed)), (3, 2));
        let mut calls = 0;
        let r = h.with_retries(|| {
            calls += 1;
            if calls < 2 {
                Err(CallError::Retry { reason: "x".into(), after: Some(Duration::ZERO) })
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r, Ok(2));
    }

    #[test]
    fn rate_limiter_spaces_requests() {
        let h = http(&[]);
        let t = Instant::now();
        for _ in 0..6 {
            h.limiter.acquire();
        }
        assert!(t.elapsed() >= Duration::from_millis(50), "{:?}", t.elapsed());
    }
}
