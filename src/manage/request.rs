//! What each management operation is asked to do.

use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

pub(crate) use super::validate::{
    check_credits, check_expiry, check_ips, check_name, check_providers, check_rate_limits, check_spend_cap,
    check_team_id, parse_count, percent_decode, range,
};
use super::{InvalidValue, ManageError, Metadata};
use crate::events::SpendAlerts;
use crate::store::MAX_PAGE;
use crate::{Credits, IpCidr, KeyKind, KeyStatus, ModelAllowlist, RateLimits, Scopes, SpendCap, Timestamp};

/// The longest key name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// The longest team id, in bytes.
pub const MAX_TEAM_ID_LEN: usize = 64;
/// The most entries in `allowed_providers`.
pub const MAX_PROVIDERS: usize = 64;
/// The longest provider name, in bytes.
pub const MAX_PROVIDER_LEN: usize = 64;
/// The most entries in `allowed_ips`.
pub const MAX_ALLOWED_IPS: usize = 256;
/// The page size of a listing that names none.
pub const DEFAULT_PAGE: usize = 50;
/// The most credits a key may be given (2^53 − 1: every JSON client reads it exactly).
pub const MAX_CREDITS: u64 = (1 << 53) - 1;

/// Create a key: everything the new key is configured with. The key's id, token and prefix
/// come from the [`Verifier`](crate::Verifier).
///
/// Start from [`CreateKey::new`] and set the fields; every field is validated when the key is
/// created ([`ManageError::Invalid`] names the field).
///
/// ```
/// use keygate::Scopes;
/// use keygate::manage::CreateKey;
/// let mut request = CreateKey::new("ci deploy");
/// request.scopes = Scopes::parse("read write")?;
/// # Ok::<(), keygate::policy::ScopeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreateKey {
    /// A human-readable name: 1 to [`MAX_NAME_LEN`] bytes of UTF-8 without control characters
    /// or surrounding whitespace. Required.
    pub name: String,
    /// The kind of key to issue (default [`KeyKind::STANDARD`]; [`KeyKind::MANAGEMENT`] for a
    /// key that manages keys). The JSON API always issues standard keys.
    pub kind: KeyKind,
    /// The scopes granted; each must be within the caller's own.
    pub scopes: Scopes,
    /// `active` (default) or `disabled`.
    pub status: KeyStatus,
    /// The team; `None` means the caller's team (an operator's `None` makes a key of no team).
    pub team_id: Option<String>,
    /// When the key stops working by itself; must be in the future.
    pub expires_at: Option<Timestamp>,
    /// Models the key may use; empty means any.
    pub allowed_models: ModelAllowlist,
    /// Providers the key may use (exact names); empty means any.
    pub allowed_providers: Vec<String>,
    /// Client networks the key may be used from; empty means any.
    pub allowed_ips: Vec<IpCidr>,
    /// Rate limits and concurrency cap (each at least 1 when set).
    pub rate_limit: RateLimits,
    /// Spend cap per period (at most [`MAX_USD_MICROS`](super::MAX_USD_MICROS)).
    pub spend_cap: Option<SpendCap>,
    /// Credits (at most [`MAX_CREDITS`]).
    pub credits: Option<Credits>,
    /// The spend cap's alert thresholds, in percent; `None`: the gate's.
    pub spend_alerts: Option<SpendAlerts>,
    /// Caller-defined data.
    pub metadata: Option<Metadata>,
}

impl CreateKey {
    /// A request for an active, unrestricted standard key with no scopes, named `name`.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: KeyKind::STANDARD,
            scopes: Scopes::new(),
            status: KeyStatus::Active,
            team_id: None,
            expires_at: None,
            allowed_models: ModelAllowlist::empty(),
            allowed_providers: Vec::new(),
            allowed_ips: Vec::new(),
            rate_limit: RateLimits::default(),
            spend_cap: None,
            credits: None,
            spend_alerts: None,
            metadata: None,
        }
    }
}

/// One field of an update: leave it as it is, clear it, or set it.
///
/// In JSON, an absent field is [`Patch::Keep`], `null` is [`Patch::Clear`] and a value is
/// [`Patch::Set`] (the semantics of JSON Merge Patch, RFC 7396).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Patch<T> {
    /// Leave the field unchanged.
    #[default]
    Keep,
    /// Remove the value (no limit, no expiry, no metadata).
    Clear,
    /// Set the value.
    Set(T),
}

impl<T> Patch<T> {
    /// The value after applying the patch to `current`.
    ///
    /// ```
    /// use keygate::manage::Patch;
    /// assert_eq!(Patch::Keep.apply(Some(1)), Some(1));
    /// assert_eq!(Patch::<i32>::Clear.apply(Some(1)), None);
    /// assert_eq!(Patch::Set(2).apply(None), Some(2));
    /// ```
    #[must_use]
    pub fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Self::Keep => current,
            Self::Clear => None,
            Self::Set(v) => Some(v),
        }
    }

    /// Whether the field is left unchanged.
    #[must_use]
    pub const fn is_keep(&self) -> bool {
        matches!(self, Self::Keep)
    }

    /// The patch of a reference.
    #[must_use]
    pub const fn as_ref(&self) -> Patch<&T> {
        match self {
            Self::Keep => Patch::Keep,
            Self::Clear => Patch::Clear,
            Self::Set(v) => Patch::Set(v),
        }
    }
}

/// A change to some of a key's rate limits; each limit is patched on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub struct RateLimitPatch {
    /// Requests per minute.
    pub requests_per_minute: Patch<u32>,
    /// Tokens per minute.
    pub tokens_per_minute: Patch<u32>,
    /// Requests in flight at once.
    pub concurrency: Patch<u32>,
}

impl RateLimitPatch {
    /// A patch that clears every limit.
    #[must_use]
    pub const fn clear_all() -> Self {
        Self { requests_per_minute: Patch::Clear, tokens_per_minute: Patch::Clear, concurrency: Patch::Clear }
    }

    /// The limits after the patch.
    #[must_use]
    pub fn apply(self, current: RateLimits) -> RateLimits {
        RateLimits {
            requests_per_minute: self.requests_per_minute.apply(current.requests_per_minute),
            tokens_per_minute: self.tokens_per_minute.apply(current.tokens_per_minute),
            concurrency: self.concurrency.apply(current.concurrency),
        }
    }
}

/// Update a key: every field `None` (or [`Patch::Keep`]) is left unchanged.
///
/// Lists are replaced whole; an empty list (JSON `null` or `[]`) removes the restriction. The
/// team and the key's kind cannot be changed.
///
/// ```
/// use keygate::KeyStatus;
/// use keygate::manage::UpdateKey;
/// let mut request = UpdateKey::default();
/// request.status = Some(KeyStatus::Disabled);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct UpdateKey {
    /// A new name.
    pub name: Option<String>,
    /// A new status; a revoked key stays revoked.
    pub status: Option<KeyStatus>,
    /// Set or lift the soft block (403 `key_blocked`).
    pub soft_blocked: Option<bool>,
    /// New scopes, within the caller's own.
    pub scopes: Option<Scopes>,
    /// A new model allowlist.
    pub allowed_models: Option<ModelAllowlist>,
    /// A new provider allowlist.
    pub allowed_providers: Option<Vec<String>>,
    /// A new IP allowlist.
    pub allowed_ips: Option<Vec<IpCidr>>,
    /// Changes to the rate limits.
    pub rate_limit: RateLimitPatch,
    /// A new spend cap, or none.
    pub spend_cap: Patch<SpendCap>,
    /// A new expiry (in the future), or none.
    pub expires_at: Patch<Timestamp>,
    /// New credits, or none.
    pub credits: Patch<Credits>,
    /// New spend alert thresholds, or none (the gate's).
    pub spend_alerts: Patch<SpendAlerts>,
    /// New metadata, or none.
    pub metadata: Patch<Metadata>,
}

impl UpdateKey {
    /// Whether the update changes only what a revoked key may still change: its name, its
    /// metadata, and a status that stays revoked.
    #[must_use]
    pub fn is_bookkeeping(&self) -> bool {
        let Self {
            name: _,
            status,
            soft_blocked,
            scopes,
            allowed_models,
            allowed_providers,
            allowed_ips,
            rate_limit,
            spend_cap,
            expires_at,
            credits,
            spend_alerts,
            metadata: _,
        } = self;
        matches!(status, None | Some(KeyStatus::Revoked))
            && soft_blocked.is_none()
            && scopes.is_none()
            && allowed_models.is_none()
            && allowed_providers.is_none()
            && allowed_ips.is_none()
            && *rate_limit == RateLimitPatch::default()
            && spend_cap.is_keep()
            && expires_at.is_keep()
            && credits.is_keep()
            && spend_alerts.is_keep()
    }
}

/// Rotate a key: issue a successor with the same configuration, optionally letting the old key
/// expire after an overlap window.
///
/// ```
/// use core::time::Duration;
/// use keygate::manage::RotateKey;
/// let mut request = RotateKey::default();
/// request.overlap = Some(Duration::from_secs(24 * 3600));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RotateKey {
    /// The successor's name; by default the old name with its version suffix bumped
    /// (`deploy` → `deploy-v2`, `deploy-v2` → `deploy-v3`).
    pub name: Option<String>,
    /// If set, the old key expires this long after the rotation (`0` at once); its expiry is
    /// only ever brought forward. If `None`, the old key is left as it is.
    pub overlap: Option<Duration>,
    /// The successor's expiry: [`Patch::Keep`] copies the old key's, [`Patch::Clear`] gives
    /// none, [`Patch::Set`] a new one. It must be in the future.
    pub expires_at: Patch<Timestamp>,
}

/// Which page of which keys to list.
///
/// ```
/// use keygate::manage::ListKeys;
/// let q = ListKeys::from_query("limit=50&offset=0")?;
/// assert_eq!((q.limit, q.offset, q.team_id), (50, 0, None));
/// assert_eq!(ListKeys::from_query("limit=251").unwrap_err().param(), Some("limit"));
/// # Ok::<(), keygate::manage::ManageError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListKeys {
    /// Only this team's keys (callers of a team may name only their own).
    pub team_id: Option<String>,
    /// The page size, 1 to [`MAX_PAGE`] (default [`DEFAULT_PAGE`]).
    pub limit: usize,
    /// How many keys of the stable order (creation time, then id) to skip.
    pub offset: usize,
}

impl Default for ListKeys {
    fn default() -> Self {
        Self { team_id: None, limit: DEFAULT_PAGE, offset: 0 }
    }
}

impl ListKeys {
    /// A listing of one page: `limit` keys after skipping `offset`.
    #[must_use]
    pub fn page(limit: usize, offset: usize) -> Self {
        Self { team_id: None, limit, offset }
    }

    /// Parses a URL query string (`team_id=...&limit=50&offset=0`, percent-encoded, without
    /// the `?`). Absent parameters take their defaults.
    ///
    /// # Errors
    ///
    /// [`ManageError::UnknownParameter`] for another or a repeated parameter;
    /// [`ManageError::Invalid`] naming `team_id`, `limit` or `offset` for a bad value (a `limit`
    /// outside 1 to 250 included).
    pub fn from_query(query: &str) -> Result<Self, ManageError> {
        let mut out = Self::default();
        let mut seen = [false; 3];
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode(raw_name).unwrap_or_default();
            let slot = match name.as_str() {
                "team_id" => 0,
                "limit" => 1,
                "offset" => 2,
                _ => return Err(ManageError::UnknownParameter(super::error::echoed_name(&name))),
            };
            if core::mem::replace(&mut seen[slot], true) {
                return Err(ManageError::UnknownParameter(name));
            }
            match slot {
                0 => {
                    let team = percent_decode(raw_value)
                        .ok_or(ManageError::invalid("team_id", InvalidValue::Type("percent-encoded UTF-8")))?;
                    check_team_id(&team)?;
                    out.team_id = Some(team);
                }
                1 => out.limit = parse_count("limit", raw_value, 1, MAX_PAGE)?,
                _ => out.offset = parse_count("offset", raw_value, 0, usize::MAX)?,
            }
        }
        Ok(out)
    }

    /// Checks the page bounds.
    ///
    /// # Errors
    ///
    /// [`ManageError::Invalid`] naming `limit` unless it is 1 to [`MAX_PAGE`]; naming `team_id`
    /// for an invalid team id.
    pub fn validate(&self) -> Result<(), ManageError> {
        if !(1..=MAX_PAGE).contains(&self.limit) {
            return Err(ManageError::invalid("limit", range(1, MAX_PAGE)));
        }
        if let Some(team) = &self.team_id {
            check_team_id(team)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("name", "prod key · 東京").is_ok());
        for (bad, reason) in [
            ("", InvalidValue::Empty),
            ("   ", InvalidValue::Empty),
            (" x", InvalidValue::Whitespace),
            ("x\n", InvalidValue::Whitespace),
            ("a\u{7}b", InvalidValue::ControlChar { at: 1 }),
        ] {
            assert_eq!(check_name("name", bad), Err(ManageError::invalid("name", reason)), "{bad:?}");
        }
        let long = "é".repeat(MAX_NAME_LEN / 2 + 1);
        assert_eq!(
            check_name("name", &long),
            Err(ManageError::invalid("name", InvalidValue::TooLong { max: MAX_NAME_LEN }))
        );
    }

    #[test]
    fn queries() {
        assert_eq!(ListKeys::from_query(""), Ok(ListKeys::default()));
        let q = ListKeys::from_query("team_id=team%2Da&limit=250&offset=7&").unwrap();
        assert_eq!((q.team_id.as_deref(), q.limit, q.offset), (Some("team-a"), 250, 7));
        for (query, param) in [
            ("limit=0", "limit"),
            ("limit=251", "limit"),
            ("limit=-1", "limit"),
            ("limit=", "limit"),
            ("limit=1e2", "limit"),
            ("offset=x", "offset"),
            ("offset=99999999999999999999999", "offset"),
            ("team_id=", "team_id"),
            ("team_id=a%20b", "team_id"),
            ("team_id=%zz", "team_id"),
            ("page=2", "page"),
            ("%ff=2", ""),
            ("limit=1&limit=2", "limit"),
        ] {
            let e = ListKeys::from_query(query).unwrap_err();
            assert_eq!(e.param().unwrap_or_default(), param, "{query}: {e}");
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a+b%41%c3%a9").as_deref(), Some("a bAé"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
