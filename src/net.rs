//! HTTP rules shared by every client of the crate (translation APIs, the Hugging Face Hub, dump
//! mirrors): the retry policy with its backoff, `Retry-After` parsing, and reqwest errors in words
//! without their URL (which may carry a key).

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Retry and timing settings.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubles per retry.
    pub backoff_base: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
}

impl RetryPolicy {
    /// Exponential backoff before retry number `retry` (0-based) with "equal jitter": half fixed, half
    /// random, so clients that failed together do not come back together.
    pub fn backoff(&self, retry: u32) -> Duration {
        let full = self.backoff_base.saturating_mul(1u32 << retry.min(16)).min(self.backoff_max);
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let share = 0.5 + 0.5 * (random as f64 / u64::MAX as f64);
        full.mul_f64(share)
    }
}

/// Month names of HTTP-dates.
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// A `Retry-After` value: delay-seconds, or an HTTP-date (`Wed, 21 Oct 2015 07:28:00 GMT`).
pub fn retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<f64>() {
        return (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s));
    }
    let [_, day, month, year, hms, "GMT"] = v.split_whitespace().collect::<Vec<_>>()[..] else { return None };
    let month = MONTHS.iter().position(|m| *m == month)? as u8 + 1;
    let date = time::Date::from_calendar_date(year.parse().ok()?, month.try_into().ok()?, day.parse().ok()?).ok()?;
    let mut t = hms.split(':').map(|x| x.parse::<u8>());
    let (h, m, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let at = date.with_hms(h, m, s).ok()?.assume_utc();
    let wait = at - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// A reqwest error in words, without its URL (which may carry a key) and with its cause.
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response cut off"
    } else {
        "request failed"
    };
    let mut msg = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(30);
        let (m, (h, min, sec)) = (MONTHS[soon.month() as usize - 1], soon.to_hms());
        let date = format!("Mon, {:02} {m} {} {h:02}:{min:02}:{sec:02} GMT", soon.day(), soon.year());
        let d = retry_after(&date).unwrap();
        assert!(d > Duration::from_secs(28) && d <= Duration::from_secs(30), "{d:?}");
        assert_eq!((retry_after("-1"), retry_after("soon")), (None, None));
    }

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let p = RetryPolicy {
            max_retries: 5,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(300),
        };
        let (b0, b1, b5) = (p.backoff(0), p.backoff(1), p.backoff(5));
        assert!(b0 >= Duration::from_millis(50) && b0 <= Duration::from_millis(100), "{b0:?}");
        assert!(b1 >= Duration::from_millis(100) && b1 <= Duration::from_millis(200), "{b1:?}");
        assert!(b5 >= Duration::from_millis(150) && b5 <= Duration::from_millis(300), "{b5:?}");
    }
}
