//! The `x-ratelimit-*` headers OpenAI clients read, rendered without allocation.
//!
//! OpenAI sends, on successes and on 429s alike:
//!
//! | header | example | meaning |
//! |---|---|---|
//! | `x-ratelimit-limit-requests` | `60` | requests permitted per period |
//! | `x-ratelimit-remaining-requests` | `59` | requests that could be made now |
//! | `x-ratelimit-reset-requests` | `1s` | time until the limit is back to its initial state |
//! | `x-ratelimit-limit-tokens` | `150000` | tokens permitted per period |
//! | `x-ratelimit-remaining-tokens` | `149984` | tokens that could be used now |
//! | `x-ratelimit-reset-tokens` | `6m0s` | time until the limit is back to its initial state |
//!
//! The reset values are in Go's `time.Duration` notation, which is what OpenAI emits (`6m0s`,
//! `1s`, `1.5s`, `12ms`): hours and minutes appear only when non-zero or followed by a larger
//! unit, seconds carry up to three decimals with trailing zeros trimmed, and durations under a
//! second are whole milliseconds. keygate rounds up to the next millisecond, so a client that
//! waits the advertised time is never early (and never sees Go's non-ASCII `µs`); zero is `0s`.

use core::fmt;
use core::time::Duration;

use super::LimitStatus;

/// The rate-limit status of a request: the requests and tokens limits that apply to its key.
///
/// Available on the allow path and on `429 rate_limited` denials alike; [`headers`] yields the
/// `x-ratelimit-*` pairs.
///
/// ```
/// use core::time::Duration;
/// use keygate::limit::{LimitStatus, RateLimitStatus};
///
/// let status = RateLimitStatus::new(
///     Some(LimitStatus::new(60, 59, Duration::from_secs(1))),
///     Some(LimitStatus::new(150_000, 149_984, Duration::from_secs(360))),
/// );
/// let headers: Vec<(&str, String)> =
///     status.headers().map(|(name, value)| (name, value.to_string())).collect();
/// assert_eq!(headers[0], ("x-ratelimit-limit-requests", "60".into()));
/// assert_eq!(headers[2], ("x-ratelimit-reset-requests", "1s".into()));
/// assert_eq!(headers[5], ("x-ratelimit-reset-tokens", "6m0s".into()));
/// ```
///
/// [`headers`]: RateLimitStatus::headers
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RateLimitStatus {
    requests: Option<LimitStatus>,
    tokens: Option<LimitStatus>,
}

impl RateLimitStatus {
    /// A status from its parts; `None` where the key has no such limit.
    #[must_use]
    pub const fn new(requests: Option<LimitStatus>, tokens: Option<LimitStatus>) -> Self {
        Self { requests, tokens }
    }

    /// The requests-per-period limit, if the key has one.
    #[must_use]
    #[inline]
    pub const fn requests(&self) -> Option<LimitStatus> {
        self.requests
    }

    /// The tokens-per-period limit, if the key has one.
    #[must_use]
    #[inline]
    pub const fn tokens(&self) -> Option<LimitStatus> {
        self.tokens
    }

    /// Whether neither limit applies (no headers).
    #[must_use]
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none()
    }

    /// The `(header name, value)` pairs, lowercase names, requests first: three per limit the key
    /// has, none for a limit it has not.
    pub fn headers(&self) -> RateLimitHeaders {
        RateLimitHeaders { status: *self, next: 0 }
    }
}

/// The iterator of [`RateLimitStatus::headers`].
#[derive(Debug, Clone)]
pub struct RateLimitHeaders {
    status: RateLimitStatus,
    next: u8,
}

const NAMES: [&str; 6] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];

impl Iterator for RateLimitHeaders {
    type Item = (&'static str, InlineHeaderValue);

    fn next(&mut self) -> Option<Self::Item> {
        while self.next < 6 {
            let i = self.next;
            self.next += 1;
            let limit = if i < 3 { self.status.requests } else { self.status.tokens };
            let Some(limit) = limit else { continue };
            let mut value = InlineHeaderValue::EMPTY;
            let written = match i % 3 {
                0 => fmt::write(&mut value, format_args!("{}", limit.limit())),
                1 => fmt::write(&mut value, format_args!("{}", limit.remaining())),
                _ => write_duration(&mut value, limit.reset()),
            };
            // The buffer fits every value (at most 10 digits, or 18 characters of duration).
            if written.is_err() {
                continue;
            }
            return Some((NAMES[usize::from(i)], value));
        }
        None
    }
}

/// A header value in an inline buffer: ASCII, at most 32 bytes, no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct InlineHeaderValue {
    buf: [u8; 32],
    len: u8,
}

impl InlineHeaderValue {
    const EMPTY: Self = Self { buf: [0; 32], len: 0 };

    /// The value as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written.
        core::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The value as bytes (for `http::InlineHeaderValue::from_bytes` and the like).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl fmt::Write for InlineHeaderValue {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let start = usize::from(self.len);
        let end = start + s.len();
        let dst = self.buf.get_mut(start..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = u8::try_from(end).map_err(|_| fmt::Error)?;
        Ok(())
    }
}

impl fmt::Display for InlineHeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for InlineHeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Formats `d` as OpenAI's reset headers do (Go's `time.Duration` notation, rounded up to whole
/// milliseconds): `0s`, `20ms`, `1s`, `1.5s`, `6m0s`, `1h0m0s`.
///
/// ```
/// use core::time::Duration;
/// use keygate::limit::OpenAiDuration;
/// assert_eq!(OpenAiDuration(Duration::from_millis(1500)).to_string(), "1.5s");
/// assert_eq!(OpenAiDuration(Duration::from_secs(360)).to_string(), "6m0s");
/// assert_eq!(OpenAiDuration(Duration::from_micros(19_001)).to_string(), "20ms");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpenAiDuration(pub Duration);

impl fmt::Display for OpenAiDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_duration(f, self.0)
    }
}

fn write_duration<W: fmt::Write + ?Sized>(w: &mut W, d: Duration) -> fmt::Result {
    let ms = d.as_secs().saturating_mul(1000).saturating_add(u64::from(d.subsec_nanos().div_ceil(1_000_000)));
    if ms == 0 {
        return w.write_str("0s");
    }
    if ms < 1000 {
        return write!(w, "{ms}ms");
    }
    let (secs, frac) = (ms / 1000, ms % 1000);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        write!(w, "{h}h")?;
    }
    if h > 0 || m > 0 {
        write!(w, "{m}m")?;
    }
    write!(w, "{s}")?;
    if frac > 0 {
        let (mut frac, mut width) = (frac, 3);
        while frac % 10 == 0 {
            frac /= 10;
            width -= 1;
        }
        write!(w, ".{frac:0width$}")?;
    }
    w.write_str("s")
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn go_duration_notation() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ms"),
            (Duration::from_millis(20), "20ms"),
            (Duration::from_millis(999), "999ms"),
            (Duration::from_nanos(999_000_001), "1s"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(1250), "1.25s"),
            (Duration::from_millis(59_999), "59.999s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(360), "6m0s"),
            (Duration::from_millis(61_500), "1m1.5s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(86_400 + 61), "24h1m1s"),
            (Duration::from_nanos(u64::MAX), "5124095h34m33.71s"),
        ];
        for (d, s) in cases {
            assert_eq!(OpenAiDuration(*d).to_string(), *s, "{d:?}");
            let mut v = InlineHeaderValue::EMPTY;
            write_duration(&mut v, *d).unwrap();
            assert_eq!(v.as_str(), *s);
        }
    }

    #[test]
    fn headers_skip_absent_limits() {
        let only_tokens = RateLimitStatus::new(None, Some(LimitStatus::new(u32::MAX, u32::MAX, Duration::ZERO)));
        let h: alloc::vec::Vec<_> = only_tokens.headers().map(|(n, v)| (n, v.to_string())).collect();
        assert_eq!(
            h,
            [
                ("x-ratelimit-limit-tokens", "4294967295".to_string()),
                ("x-ratelimit-remaining-tokens", "4294967295".to_string()),
                ("x-ratelimit-reset-tokens", "0s".to_string()),
            ]
        );
        assert_eq!(RateLimitStatus::default().headers().count(), 0);
    }
}
