//! What the store keeps about a key (needs `alloc`).
//!
//! A [`KeyRecord`] holds everything the pipeline evaluates (the decision table): the digest and
//! status the verification stage checks; the soft block, IP allowlist, scopes and model and
//! provider allowlists of the policy stage; the rate limits, concurrency cap and spend cap of the
//! limit stage; and the team, name, timestamps and metadata the management API shows.
//!
//! The struct is `#[non_exhaustive]` so fields can be added without a breaking change: build one
//! with [`KeyRecord::new`] and set the public fields.

#![cfg(feature = "alloc")]

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::events::SpendAlerts;
use crate::secret::StoredDigest;
use crate::{IpCidr, KeyId, KeyKind, ModelAllowlist, Scopes, Timestamp};

/// A key's lifecycle state. Revoked is terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum KeyStatus {
    /// The key may be used.
    #[default]
    Active,
    /// The key is switched off and may be switched on again.
    Disabled,
    /// The key is permanently withdrawn.
    Revoked,
}

impl KeyStatus {
    /// `active`, `disabled` or `revoked`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Revoked => "revoked",
        }
    }
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not `active`, `disabled` or `revoked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("status must be one of: active, disabled, revoked")]
pub struct InvalidStatus;

impl core::str::FromStr for KeyStatus {
    type Err = InvalidStatus;
    fn from_str(s: &str) -> Result<Self, InvalidStatus> {
        match s {
            "active" => Ok(Self::Active),
            "disabled" => Ok(Self::Disabled),
            "revoked" => Ok(Self::Revoked),
            _ => Err(InvalidStatus),
        }
    }
}

/// How a presented key finds its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum KeyShape {
    /// By the kid embedded in the token; the record's id is the kid.
    Selector,
    /// By the keyed digest of the whole token.
    Opaque,
}

/// Per-key rate limits and concurrency cap; `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RateLimits {
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Tokens (model usage units) per minute.
    pub tokens_per_minute: Option<u32>,
    /// Requests in flight at once.
    pub concurrency: Option<u32>,
}

/// The calendar period a spend cap applies to, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum SpendPeriod {
    /// From 00:00 UTC to the next 00:00 UTC.
    Day,
    /// From Monday 00:00 UTC (ISO 8601 weeks).
    Week,
    /// From the first of the month, 00:00 UTC.
    Month,
}

/// A spend cap: at most `amount_micros` micro-units of currency per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpendCap {
    /// The cap in micro-units (1 USD = 1 000 000); integers, never floating point.
    pub amount_micros: u64,
    /// The period the cap resets on.
    pub period: SpendPeriod,
}

/// Credits (Unkey's `remaining` and `refill`): at most `amount` units per refill period, or in
/// total without one. Each request takes its credit cost before it runs (`429 quota_exceeded`
/// when they do not fit).
///
/// `amount` is the budget, not a balance: what has been used lives in the limiter's state (one
/// counter per period, like a spend cap), so the record does not change on every request. To
/// top up a key, raise `amount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Credits {
    /// Credits per refill period (or in total).
    pub amount: u64,
    /// The calendar period after which the credits are back to `amount`; `None` for never.
    pub refill: Option<SpendPeriod>,
}

/// Everything stored about one key. The secret itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyRecord {
    /// The public id: the kid of a selector key, a random id for an opaque key.
    pub id: KeyId,
    /// How presented tokens find this record.
    pub shape: KeyShape,
    /// The kind the key was issued as; a token presenting another kind does not verify.
    pub kind: KeyKind,
    /// The digest of the secret.
    pub digest: StoredDigest,
    /// Bumped by the store on every update; used for compare-and-swap.
    pub revision: u64,
    /// A human-readable name.
    pub name: String,
    /// A prefix of the token that is safe to display (`aistats_v1_sk_<kid>`).
    pub prefix: String,
    /// Lifecycle state.
    pub status: KeyStatus,
    /// A temporary block (403 `key_blocked`) that leaves the status as it is.
    pub soft_blocked: bool,
    /// The team (workspace) the key belongs to.
    pub team_id: Option<String>,
    /// Granted scopes, normalised (see [`Scopes`]).
    pub scopes: Scopes,
    /// Models the key may use (exact names or `family*` patterns, see [`ModelAllowlist`]);
    /// empty means any.
    pub allowed_models: ModelAllowlist,
    /// Providers the key may use (exact, case-sensitive names); empty means any.
    pub allowed_providers: Vec<String>,
    /// Client networks the key may be used from; empty means any.
    pub allowed_ips: Vec<IpCidr>,
    /// Rate limits and concurrency cap.
    pub rate_limit: RateLimits,
    /// Spend cap per period.
    pub spend_cap: Option<SpendCap>,
    /// Credits consumed per request.
    pub credits: Option<Credits>,
    /// The thresholds of the spend cap that raise a [`SpendAlert`](crate::events::SpendAlert)
    /// for this key, once per period each; `None`: the gate's (by default 50%, 80% and 100%).
    pub spend_alerts: Option<SpendAlerts>,
    /// Caller-defined data, as the text of a JSON object.
    pub metadata: Option<String>,
    /// When the key was created.
    pub created_at: Timestamp,
    /// When the record last changed.
    pub updated_at: Timestamp,
    /// When the key stops working by itself (`now >= expires_at`).
    pub expires_at: Option<Timestamp>,
    /// When the key was last used (written at most once per interval, off the hot path).
    pub last_used_at: Option<Timestamp>,
    /// The key whose limit counters this key continues (its spend, credits, rates and
    /// concurrency), set when the key is rotated out of that one; `None`: its own. Read it
    /// through [`KeyRecord::budget_id`].
    pub inherits_budget: Option<KeyId>,
}

impl KeyRecord {
    /// A new active record with no restrictions, created at `now`.
    #[must_use]
    pub const fn new(id: KeyId, shape: KeyShape, kind: KeyKind, digest: StoredDigest, now: Timestamp) -> Self {
        Self {
            id,
            shape,
            kind,
            digest,
            revision: 0,
            name: String::new(),
            prefix: String::new(),
            status: KeyStatus::Active,
            soft_blocked: false,
            team_id: None,
            scopes: Scopes::new(),
            allowed_models: ModelAllowlist::empty(),
            allowed_providers: Vec::new(),
            allowed_ips: Vec::new(),
            rate_limit: RateLimits { requests_per_minute: None, tokens_per_minute: None, concurrency: None },
            spend_cap: None,
            credits: None,
            spend_alerts: None,
            metadata: None,
            created_at: now,
            updated_at: now,
            expires_at: None,
            last_used_at: None,
            inherits_budget: None,
        }
    }

    /// The id the limiter keeps this key's counters under: the key it was rotated out of (see
    /// [`KeyRecord::inherits_budget`]), or its own. A successor and its predecessor share one
    /// budget, so a rotation neither refills credits nor restarts a spend cap.
    ///
    /// ```
    /// use keygate::{KeyId, KeyKind, KeyRecord, Timestamp};
    /// use keygate::record::KeyShape;
    /// use keygate::secret::StoredDigest;
    /// let id = KeyId::new("successor")?;
    /// let mut r = KeyRecord::new(id, KeyShape::Selector, KeyKind::STANDARD, StoredDigest::sha256_of(b""), Timestamp::EPOCH);
    /// assert_eq!(r.budget_id(), id);
    /// r.inherits_budget = Some(KeyId::new("predecessor")?);
    /// assert_eq!(r.budget_id().as_str(), "predecessor");
    /// # Ok::<(), Box<dyn core::error::Error>>(())
    /// ```
    #[must_use]
    #[inline]
    pub fn budget_id(&self) -> KeyId {
        self.inherits_budget.unwrap_or(self.id)
    }

    /// Whether the key has expired at `now`.
    #[must_use]
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}
