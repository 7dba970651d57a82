//! Decisions are values: a verified principal or a [`Denial`] with a stable code.
//!
//! [`DenialCode`] is the decision code table as a type: every code has one HTTP status, one
//! OpenAI-compatible error `type`, and one fixed message. Messages are static text; they never
//! contain the presented key or anything derived from it. The order of the variants is the order
//! the checks run in.

use core::fmt;
use core::time::Duration;

use crate::RequiredScopes;
use crate::limit::RateLimitStatus;

/// The stable, machine-readable reason for a denial.
///
/// The string forms (`as_str`) are a public contract: servers put them in the JSON body's
/// `error.code`, and clients match on them.
///
/// ```
/// use keygate::DenialCode;
/// assert_eq!(DenialCode::RevokedApiKey.as_str(), "revoked_api_key");
/// assert_eq!(DenialCode::RevokedApiKey.status(), 401);
/// assert_eq!("quota_exceeded".parse(), Ok(DenialCode::QuotaExceeded));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DenialCode {
    /// 401: no `Authorization: Bearer` value.
    MissingApiKey,
    /// 401: malformed, unknown kid, wrong secret or wrong prefix, indistinguishably.
    InvalidApiKey,
    /// 401: the secret is correct and the key is revoked.
    RevokedApiKey,
    /// 401: the secret is correct and the key (or its team) is disabled.
    DisabledApiKey,
    /// 401: the secret is correct and `now >= expires_at`.
    ExpiredApiKey,
    /// 403: the key is soft-blocked.
    KeyBlocked,
    /// 403: the client address is outside the key's CIDR allowlist.
    IpNotAllowed,
    /// 403: a required scope is not granted.
    InsufficientScope,
    /// 403: the model is outside the key's allowlist.
    ModelNotAllowed,
    /// 403: the provider is outside the key's allowlist.
    ProviderNotAllowed,
    /// 429: a request or token rate limit.
    RateLimited,
    /// 429: too many requests in flight for this key.
    ConcurrencyLimited,
    /// 429: the spend cap of the period is reached.
    QuotaExceeded,
    /// 503: the store or limiter failed, and the check failed closed.
    AuthUnavailable,
}

impl DenialCode {
    /// Every code, in the order the checks run.
    pub const ALL: [Self; 14] = [
        Self::MissingApiKey,
        Self::InvalidApiKey,
        Self::RevokedApiKey,
        Self::DisabledApiKey,
        Self::ExpiredApiKey,
        Self::KeyBlocked,
        Self::IpNotAllowed,
        Self::InsufficientScope,
        Self::ModelNotAllowed,
        Self::ProviderNotAllowed,
        Self::RateLimited,
        Self::ConcurrencyLimited,
        Self::QuotaExceeded,
        Self::AuthUnavailable,
    ];

    /// The stable code string, e.g. `invalid_api_key`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MissingApiKey => "missing_api_key",
            Self::InvalidApiKey => "invalid_api_key",
            Self::RevokedApiKey => "revoked_api_key",
            Self::DisabledApiKey => "disabled_api_key",
            Self::ExpiredApiKey => "expired_api_key",
            Self::KeyBlocked => "key_blocked",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::InsufficientScope => "insufficient_scope",
            Self::ModelNotAllowed => "model_not_allowed",
            Self::ProviderNotAllowed => "provider_not_allowed",
            Self::RateLimited => "rate_limited",
            Self::ConcurrencyLimited => "concurrency_limited",
            Self::QuotaExceeded => "quota_exceeded",
            Self::AuthUnavailable => "auth_unavailable",
        }
    }

    /// The HTTP status: 401, 403, 429 or 503.
    #[must_use]
    pub const fn status(self) -> u16 {
        match self {
            Self::MissingApiKey
            | Self::InvalidApiKey
            | Self::RevokedApiKey
            | Self::DisabledApiKey
            | Self::ExpiredApiKey => 401,
            Self::KeyBlocked
            | Self::IpNotAllowed
            | Self::InsufficientScope
            | Self::ModelNotAllowed
            | Self::ProviderNotAllowed => 403,
            Self::RateLimited | Self::ConcurrencyLimited | Self::QuotaExceeded => 429,
            Self::AuthUnavailable => 503,
        }
    }

    /// The OpenAI-compatible error `type` for the JSON body.
    #[must_use]
    pub const fn error_type(self) -> &'static str {
        match self.status() {
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            _ => "service_unavailable_error",
        }
    }

    /// A fixed, human-readable message. It never contains request data.
    #[must_use]
    pub const fn message(self) -> &'static str {
        match self {
            Self::MissingApiKey => "No API key provided. Send it as 'Authorization: Bearer <key>'.",
            Self::InvalidApiKey => "Invalid API key.",
            Self::RevokedApiKey => "This API key has been revoked.",
            Self::DisabledApiKey => "This API key is disabled.",
            Self::ExpiredApiKey => "This API key has expired.",
            Self::KeyBlocked => "This API key is blocked.",
            Self::IpNotAllowed => "Requests from this IP address are not allowed for this API key.",
            Self::InsufficientScope => "This API key lacks a scope the request requires.",
            Self::ModelNotAllowed => "This API key may not use the requested model.",
            Self::ProviderNotAllowed => "This API key may not use the requested provider.",
            Self::RateLimited => "Rate limit exceeded for this API key. Retry after the indicated time.",
            Self::ConcurrencyLimited => "Too many concurrent requests for this API key.",
            Self::QuotaExceeded => "The spend cap for this API key has been reached for the current period.",
            Self::AuthUnavailable => "Authentication is temporarily unavailable. Retry later.",
        }
    }
}

impl fmt::Display for DenialCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not one of the stable denial codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown denial code")]
pub struct UnknownDenialCode;

impl core::str::FromStr for DenialCode {
    type Err = UnknownDenialCode;
    fn from_str(s: &str) -> Result<Self, UnknownDenialCode> {
        Self::ALL.into_iter().find(|c| c.as_str() == s).ok_or(UnknownDenialCode)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for DenialCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A refusal: everything a server needs to answer, without a framework dependency.
///
/// A `Denial` is a value, not an error: it is the expected outcome for a bad key. Its `Debug` and
/// `Display` show the code only.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Denial {
    code: DenialCode,
    retry_after: Option<Duration>,
    detail: Detail,
}

/// What a denial carries beyond its code: the required scopes of an `insufficient_scope`, or
/// the rate-limit status of a `rate_limited`. A denial is never both, so they share the space.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Detail {
    None,
    Scopes(RequiredScopes),
    RateLimit(RateLimitStatus),
}

impl Denial {
    /// A denial with `code` and nothing else.
    pub const fn new(code: DenialCode) -> Self {
        Self { code, retry_after: None, detail: Detail::None }
    }

    /// The same denial naming the scopes the request required, for the `scope` attribute of
    /// `insufficient_scope`'s `WWW-Authenticate` header. Held inline (no heap).
    pub const fn with_required_scopes(mut self, scopes: RequiredScopes) -> Self {
        self.detail = Detail::Scopes(scopes);
        self
    }

    /// The scopes the request required, if the denial names them.
    #[must_use]
    pub const fn required_scopes(&self) -> Option<&RequiredScopes> {
        match &self.detail {
            Detail::Scopes(scopes) => Some(scopes),
            _ => None,
        }
    }

    /// The same denial with a `Retry-After` duration.
    pub const fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The same denial with the `x-ratelimit-*` status of the key's rate limits (429s).
    pub const fn with_rate_limit(mut self, status: RateLimitStatus) -> Self {
        self.detail = Detail::RateLimit(status);
        self
    }

    /// The status of the key's rate limits, for the `x-ratelimit-*` headers, if known.
    #[must_use]
    pub const fn rate_limit(&self) -> Option<&RateLimitStatus> {
        match &self.detail {
            Detail::RateLimit(status) => Some(status),
            _ => None,
        }
    }

    /// The stable code.
    #[must_use]
    pub const fn code(&self) -> DenialCode {
        self.code
    }

    /// The HTTP status.
    #[must_use]
    pub const fn status(&self) -> u16 {
        self.code.status()
    }

    /// How long the client should wait before retrying (429 and 503), if known.
    #[must_use]
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// `Retry-After` in whole seconds, rounded up (at least 1 when set).
    #[must_use]
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(|d| d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))).map(|s| s.max(1))
    }
}

impl From<DenialCode> for Denial {
    fn from(code: DenialCode) -> Self {
        Self::new(code)
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.code)
    }
}

impl core::error::Error for Denial {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for c in DenialCode::ALL {
            assert_eq!(c.as_str().parse(), Ok(c));
            assert!(matches!(c.status(), 401 | 403 | 429 | 503));
            assert!(!c.message().is_empty());
        }
        let mut sorted = DenialCode::ALL;
        sorted.sort();
        assert_eq!(sorted, DenialCode::ALL, "ALL lists the codes in check order");
    }

    #[test]
    fn retry_after_rounds_up() {
        let d = Denial::new(DenialCode::RateLimited).with_retry_after(Duration::from_millis(1500));
        assert_eq!(d.retry_after_secs(), Some(2));
        let d = Denial::new(DenialCode::RateLimited).with_retry_after(Duration::from_millis(10));
        assert_eq!(d.retry_after_secs(), Some(1));
    }
}
