//! The response bodies: a key's view, the envelopes of each answer, and the error body.

use core::fmt;

use alloc::sync::Arc;
use serde::ser::{Serialize, SerializeMap, SerializeStruct, Serializer};

use serde_json::value::RawValue;

use super::Kind;
use crate::events::SpendAlerts;
use crate::manage::{CreatedKey, DigestState, KeyPage, ManageError, RejectedEntry, Rotated, ScopesWire};
use crate::secret::{DigestScheme, PepperId, SecretToken};
use crate::{Credits, KeyRecord, RateLimits, Scopes, SpendCap};

/// A key as the management API shows it, in this field order:
///
/// `id`, `name`, `prefix` (the display prefix, safe to show), `status`, `scopes` (an array),
/// `created_at`, `kind` (`sk`, `mk`, ...), `team_id`, `soft_blocked`, `expires_at`,
/// `last_used_at`, `updated_at`, `allowed_models`, `allowed_providers`, `allowed_ips`,
/// `rate_limit` (`{"requests_per_minute", "tokens_per_minute", "concurrency"}`, each a number or
/// `null`), `spend_cap` (`{"amount_usd", "period"}` or `null`), `metadata` (an object or `null`),
/// `credits` (`{"amount", "refill"}` or `null`), `spend_alerts` (the key's own thresholds in
/// percent of its spend cap, or `null` for the gate's), `digest` (`imported` for a plain SHA-256
/// brought in by an import, moved to the pepper on the key's first use; `current`; or
/// `previous` for a digest under an older pepper, which [`KeyView::with_current_pepper`] tells
/// apart), and `key`, the full token, only in the view made by [`KeyView::created`].
///
/// `scopes` is an array, or the array encoded as a JSON string (`"[\"read\",\"write\"]"`,
/// the AI Stats documentation's form) with [`KeyView::with_scopes_wire`].
///
/// Absent values are `null`, never omitted. Timestamps are RFC 3339. `amount_usd` is a JSON
/// number with the exact decimal value: every amount has at most 15 significant digits (see
/// [`MAX_USD_MICROS`](crate::manage::MAX_USD_MICROS)), so it prints exactly and a client reading it as
/// a double gets the exact amount back.
#[derive(Clone, Copy)]
pub struct KeyView<'a> {
    record: &'a KeyRecord,
    token: Option<&'a SecretToken>,
    scopes: ScopesWire,
    pepper: Option<PepperId>,
}

impl<'a> KeyView<'a> {
    /// The view of a stored key, without its token.
    #[must_use]
    pub fn new(record: &'a KeyRecord) -> Self {
        Self { record, token: None, scopes: ScopesWire::Array, pepper: None }
    }

    /// The view of a key just created, with its token: serialize it once, in the response to
    /// the creation.
    #[must_use]
    pub fn created(created: &'a CreatedKey) -> Self {
        Self { record: created.record(), token: Some(created.token()), scopes: ScopesWire::Array, pepper: None }
    }

    /// The same view writing `scopes` in the form `wire` says.
    ///
    /// ```
    /// use keygate::{KeyId, KeyKind, KeyRecord, Scopes, Timestamp};
    /// use keygate::manage::{KeyView, ScopesWire};
    /// use keygate::record::KeyShape;
    /// use keygate::secret::StoredDigest;
    /// let mut r = KeyRecord::new(KeyId::new("k1")?, KeyShape::Selector, KeyKind::STANDARD, StoredDigest::sha256_of(b""), Timestamp::EPOCH);
    /// r.scopes = Scopes::parse("read write")?;
    /// let json = serde_json::to_string(&KeyView::new(&r).with_scopes_wire(ScopesWire::JsonString))?;
    /// assert!(json.contains(r#""scopes":"[\"read\",\"write\"]""#));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn with_scopes_wire(mut self, wire: ScopesWire) -> Self {
        self.scopes = wire;
        self
    }

    /// The same view, told which pepper is current: a digest under another one shows as
    /// `"digest": "previous"` (without it, every HMAC digest shows as `current`).
    #[must_use]
    pub fn with_current_pepper(mut self, pepper: PepperId) -> Self {
        self.pepper = Some(pepper);
        self
    }

    fn digest_state(&self) -> DigestState {
        let current = match (self.pepper, self.record.digest.scheme) {
            (Some(p), _) => p,
            (None, DigestScheme::HmacSha256(p)) => p,
            (None, DigestScheme::Sha256) => PepperId(0),
        };
        DigestState::of(&self.record.digest, current)
    }
}

/// A key's scopes as an array, or as the text of that array.
struct ScopesView<'a>(&'a Scopes, ScopesWire);

impl Serialize for ScopesView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.1 {
            ScopesWire::Array => self.0.serialize(s),
            ScopesWire::JsonString => {
                s.serialize_str(&serde_json::to_string(self.0).map_err(<S::Error as serde::ser::Error>::custom)?)
            }
        }
    }
}

struct CreditsView<'a>(&'a Credits);

impl Serialize for CreditsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Credits", 2)?;
        m.serialize_field("amount", &self.0.amount)?;
        m.serialize_field("refill", &self.0.refill)?;
        m.end()
    }
}

impl fmt::Debug for KeyView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyView").field("id", &self.record.id).field("with_token", &self.token.is_some()).finish()
    }
}

struct RateLimitView<'a>(&'a RateLimits);

impl Serialize for RateLimitView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("RateLimit", 3)?;
        m.serialize_field("requests_per_minute", &self.0.requests_per_minute)?;
        m.serialize_field("tokens_per_minute", &self.0.tokens_per_minute)?;
        m.serialize_field("concurrency", &self.0.concurrency)?;
        m.end()
    }
}

struct SpendCapView<'a>(&'a SpendCap);

impl Serialize for SpendCapView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Exact: the micro-dollars are below 2^53 and 1e6 is exact, so the quotient is the
        // double nearest the decimal amount, which has at most 15 significant digits and so
        // prints back as exactly that decimal.
        #[allow(clippy::cast_precision_loss)]
        let usd = self.0.amount_micros as f64 / 1_000_000.0;
        let mut m = s.serialize_struct("SpendCap", 2)?;
        m.serialize_field("amount_usd", &usd)?;
        m.serialize_field("period", &self.0.period)?;
        m.end()
    }
}

/// Stored metadata as raw JSON (it was validated on the way in; anything else reads as `null`).
struct MetadataView<'a>(Option<&'a str>);

impl Serialize for MetadataView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw =
            self.0.and_then(|t| serde_json::from_str::<&RawValue>(t).ok()).filter(|r| Kind::of(r) == Kind::Object);
        match raw {
            Some(raw) => raw.serialize(s),
            None => s.serialize_none(),
        }
    }
}

impl Serialize for KeyView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.record;
        let mut m = s.serialize_struct("Key", 21 + usize::from(self.token.is_some()))?;
        m.serialize_field("id", &r.id)?;
        m.serialize_field("name", &r.name)?;
        m.serialize_field("prefix", &r.prefix)?;
        m.serialize_field("status", &r.status)?;
        m.serialize_field("scopes", &ScopesView(&r.scopes, self.scopes))?;
        m.serialize_field("created_at", &r.created_at)?;
        m.serialize_field("kind", r.kind.as_str())?;
        m.serialize_field("team_id", &r.team_id)?;
        m.serialize_field("soft_blocked", &r.soft_blocked)?;
        m.serialize_field("expires_at", &r.expires_at)?;
        m.serialize_field("last_used_at", &r.last_used_at)?;
        m.serialize_field("updated_at", &r.updated_at)?;
        m.serialize_field("allowed_models", &r.allowed_models)?;
        m.serialize_field("allowed_providers", &r.allowed_providers)?;
        m.serialize_field("allowed_ips", &r.allowed_ips)?;
        m.serialize_field("rate_limit", &RateLimitView(&r.rate_limit))?;
        m.serialize_field("spend_cap", &r.spend_cap.as_ref().map(SpendCapView))?;
        m.serialize_field("metadata", &MetadataView(r.metadata.as_deref()))?;
        m.serialize_field("credits", &r.credits.as_ref().map(CreditsView))?;
        m.serialize_field("spend_alerts", &r.spend_alerts.as_ref().map(SpendAlerts::percents))?;
        m.serialize_field("digest", self.digest_state().as_str())?;
        match self.token {
            Some(token) => m.serialize_field("key", token.expose_secret())?,
            None => m.skip_field("key")?,
        }
        m.end()
    }
}

/// `{"ok": true, "key": {...}}`: the answer to create, get and update.
#[derive(Debug, Clone, Copy)]
pub struct KeyResponse<'a>(pub KeyView<'a>);

impl Serialize for KeyResponse<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("KeyResponse", 2)?;
        m.serialize_field("ok", &true)?;
        m.serialize_field("key", &self.0)?;
        m.end()
    }
}

/// `{"ok": true, "keys": [...], "total": n, "limit": l, "offset": o}`: the answer to a listing.
/// `total` counts every key the listing covers, across pages.
#[derive(Debug, Clone, Copy)]
pub struct KeyListResponse<'a>(pub &'a KeyPage);

impl Serialize for KeyListResponse<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ListBody(self.0, ScopesWire::Array, None).serialize(s)
    }
}

/// [`KeyListResponse`] with the scopes in the form given, and the current pepper known.
pub(in crate::manage) struct ListBody<'a>(
    pub(in crate::manage) &'a KeyPage,
    pub(in crate::manage) ScopesWire,
    pub(in crate::manage) Option<PepperId>,
);

impl Serialize for ListBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Keys<'b>(&'b ListBody<'b>);
        impl Serialize for Keys<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let ListBody(page, wire, pepper) = *self.0;
                s.collect_seq(page.records.iter().map(|r| {
                    let view = KeyView::new(r).with_scopes_wire(wire);
                    if let Some(p) = pepper { view.with_current_pepper(p) } else { view }
                }))
            }
        }
        let mut m = s.serialize_struct("KeyListResponse", 5)?;
        m.serialize_field("ok", &true)?;
        m.serialize_field("keys", &Keys(self))?;
        m.serialize_field("total", &self.0.total)?;
        m.serialize_field("limit", &self.0.limit)?;
        m.serialize_field("offset", &self.0.offset)?;
        m.end()
    }
}

/// `{"ok": true, "id": "...", "deleted": true}`: the answer to a delete.
#[derive(Debug, Clone, Copy)]
pub struct DeletedResponse<'a>(pub &'a KeyRecord);

impl Serialize for DeletedResponse<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("DeletedResponse", 3)?;
        m.serialize_field("ok", &true)?;
        m.serialize_field("id", &self.0.id)?;
        m.serialize_field("deleted", &true)?;
        m.end()
    }
}

/// `{"ok": true, "key": {... "key": "<token>"}, "previous": {...}}`: the answer to a rotation,
/// with the successor (and its token, shown once) and the old key after the rotation.
#[derive(Debug, Clone, Copy)]
pub struct RotatedResponse<'a>(pub &'a Rotated);

impl Serialize for RotatedResponse<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("RotatedResponse", 3)?;
        m.serialize_field("ok", &true)?;
        m.serialize_field("key", &KeyView::created(self.0.key()))?;
        m.serialize_field("previous", &KeyView::new(self.0.previous()))?;
        m.end()
    }
}

/// `{"ok": true, "imported": n, "keys": [{"index", "id", "name", "prefix", "digest"}, ...]}`:
/// the answer to an import, one entry per key in the order given. It holds no secret.
#[derive(Debug, Clone, Copy)]
pub struct ImportedResponse<'a> {
    records: &'a [Arc<KeyRecord>],
    pepper: PepperId,
}

impl<'a> ImportedResponse<'a> {
    /// The answer for the imported `records`, `pepper` being the current one.
    #[must_use]
    pub fn new(records: &'a [Arc<KeyRecord>], pepper: PepperId) -> Self {
        Self { records, pepper }
    }
}

impl Serialize for ImportedResponse<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Entry<'b>(usize, &'b KeyRecord, PepperId);
        impl Serialize for Entry<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let Self(index, r, pepper) = *self;
                let mut m = s.serialize_struct("Imported", 5)?;
                m.serialize_field("index", &index)?;
                m.serialize_field("id", &r.id)?;
                m.serialize_field("name", &r.name)?;
                m.serialize_field("prefix", &r.prefix)?;
                m.serialize_field("digest", DigestState::of(&r.digest, pepper).as_str())?;
                m.end()
            }
        }
        struct Entries<'b>(&'b ImportedResponse<'b>);
        impl Serialize for Entries<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.records.iter().enumerate().map(|(i, r)| Entry(i, r, self.0.pepper)))
            }
        }
        let mut m = s.serialize_struct("ImportedResponse", 3)?;
        m.serialize_field("ok", &true)?;
        m.serialize_field("imported", &self.records.len())?;
        m.serialize_field("keys", &Entries(self))?;
        m.end()
    }
}

/// The OpenAI-compatible error body of a [`ManageError`]:
/// `{"error": {"message": "...", "type": "...", "code": "...", "param": "<field>" | null}}`;
/// an import's refusal adds `"rejected": [{"index", "field", "code", "message"}, ...]`, one
/// member per refused entry.
///
/// ```
/// use keygate::manage::{ErrorResponse, ListKeys};
/// let e = ListKeys::from_query("limit=251").unwrap_err();
/// assert_eq!(e.status(), 400);
/// assert_eq!(
///     serde_json::to_string(&ErrorResponse(&e))?,
///     r#"{"error":{"message":"invalid `limit`: must be an integer from 1 to 250","type":"invalid_request_error","code":"invalid_value","param":"limit"}}"#
/// );
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ErrorResponse<'a>(pub &'a ManageError);

impl Serialize for ErrorResponse<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Inner<'b>(&'b ManageError);
        impl Serialize for Inner<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let rejected = match self.0 {
                    ManageError::ImportRejected(entries) => Some(entries),
                    _ => None,
                };
                let mut m = s.serialize_map(Some(4 + usize::from(rejected.is_some())))?;
                m.serialize_entry("message", &format_args!("{}", self.0))?;
                m.serialize_entry("type", self.0.error_type())?;
                m.serialize_entry("code", self.0.code())?;
                m.serialize_entry("param", &self.0.param())?;
                if let Some(entries) = rejected {
                    m.serialize_entry("rejected", &Rejected(entries))?;
                }
                m.end()
            }
        }
        let mut m = s.serialize_struct("ErrorResponse", 1)?;
        m.serialize_field("error", &Inner(self.0))?;
        m.end()
    }
}

/// The refused entries of an import: `[{"index", "field", "code", "message"}, ...]`.
struct Rejected<'a>(&'a [RejectedEntry]);

impl Serialize for Rejected<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct One<'b>(&'b RejectedEntry);
        impl Serialize for One<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(4))?;
                m.serialize_entry("index", &self.0.index)?;
                m.serialize_entry("field", &self.0.error.param())?;
                m.serialize_entry("code", self.0.error.code())?;
                m.serialize_entry("message", &format_args!("{}", self.0.error))?;
                m.end()
            }
        }
        s.collect_seq(self.0.iter().map(One))
    }
}
