//! The management API's JSON: request bodies in, key views and envelopes out (needs `json`).
//!
//! Request bodies are read in two steps: serde_json splits the object into its fields, each
//! kept as raw JSON text ([`RawValue`]); then every field is decoded by its own rule. This is
//! what lets every error name its field (`param`), refuse unknown and repeated fields with their
//! names, tell `null` from absent, and read money and metadata from their exact text, never
//! through a floating-point number (and without serde_json's global `arbitrary_precision`).

#![cfg(feature = "json")]

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeStruct, Serializer};
use serde_json::value::RawValue;

use super::request::MAX_ALLOWED_IPS;
use super::{
    CreateKey, CreatedKey, InvalidValue, KeyPage, ManageError, Metadata, Patch, RateLimitPatch, RotateKey, Rotated,
    UpdateKey, Usd,
};
use crate::{
    IpCidr, KeyRecord, KeyStatus, ModelAllowlist, RateLimits, Scopes, SecretToken, SpendCap, SpendPeriod, Timestamp,
};

// ---- reading ------------------------------------------------------------------------------

/// The members of a JSON object, each value as its raw text, in order.
struct Fields(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    out.push((name, map.next_value::<Box<RawValue>>()?));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The fields of one object checked against the names it may have: `N` slots, one per name.
struct Object<const N: usize> {
    slots: [Option<Box<RawValue>>; N],
}

impl<const N: usize> Object<N> {
    /// Sorts `fields` into the slots of `names`; `prefix` qualifies nested names in errors.
    fn new(fields: Fields, names: &[&'static str; N], prefix: &str) -> Result<Self, ManageError> {
        let mut slots = [const { None }; N];
        for (name, value) in fields.0 {
            let Some(i) = names.iter().position(|n| *n == name) else {
                return Err(ManageError::UnknownField(qualified(prefix, &name)));
            };
            if slots[i].replace(value).is_some() {
                return Err(ManageError::DuplicateField(qualified(prefix, &name)));
            }
        }
        Ok(Self { slots })
    }

    /// The raw value of field `i`, if present (`null` included).
    fn take(&mut self, i: usize) -> Option<Box<RawValue>> {
        self.slots.get_mut(i).and_then(Option::take)
    }
}

/// `prefix.name` for an error, unless the name is too long to repeat (see
/// [`MAX_ECHOED_NAME`](crate::manage::MAX_ECHOED_NAME)).
fn qualified(prefix: &str, name: &str) -> String {
    let name = super::error::echoed_name(name);
    if prefix.is_empty() || name.is_empty() { name } else { format!("{prefix}.{name}") }
}

/// Splits a request body into its fields.
fn fields(body: &[u8]) -> Result<Fields, ManageError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ManageError::Malformed("the body is empty; expected a JSON object".into()));
    }
    serde_json::from_slice(body).map_err(|e| malformed(&e))
}

/// A parse error in words that never repeat the input.
fn malformed(e: &serde_json::Error) -> ManageError {
    use serde_json::error::Category;
    ManageError::Malformed(match e.classify() {
        Category::Eof => format!("unexpected end of JSON at line {} column {}", e.line(), e.column()),
        Category::Syntax => format!("invalid JSON at line {} column {}", e.line(), e.column()),
        Category::Data | Category::Io => "expected a JSON object".into(),
    })
}

/// The JSON type of a raw value, by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

fn kind(raw: &RawValue) -> Kind {
    match raw.get().as_bytes().first() {
        Some(b'n') => Kind::Null,
        Some(b't' | b'f') => Kind::Bool,
        Some(b'"') => Kind::String,
        Some(b'[') => Kind::Array,
        Some(b'{') => Kind::Object,
        _ => Kind::Number,
    }
}

/// Decoders of one field's raw value; `field` names it in errors.
struct Field {
    name: &'static str,
    raw: Box<RawValue>,
}

impl Field {
    fn bad<T>(&self, reason: InvalidValue) -> Result<T, ManageError> {
        Err(ManageError::invalid(self.name, reason))
    }

    fn is_null(&self) -> bool {
        kind(&self.raw) == Kind::Null
    }

    fn string(&self) -> Result<String, ManageError> {
        match kind(&self.raw) {
            Kind::String => serde_json::from_str(self.raw.get()).or_else(|_| self.bad(InvalidValue::Type("a string"))),
            Kind::Null => self.bad(InvalidValue::Null),
            _ => self.bad(InvalidValue::Type("a string")),
        }
    }

    fn strings(&self, max: usize) -> Result<Vec<String>, ManageError> {
        const WHAT: &str = "an array of strings";
        if kind(&self.raw) != Kind::Array {
            return self.bad(InvalidValue::Type(WHAT));
        }
        let items: Vec<String> =
            serde_json::from_str(self.raw.get()).or_else(|_| self.bad(InvalidValue::Type(WHAT)))?;
        if items.len() > max {
            return self.bad(InvalidValue::TooMany { max });
        }
        Ok(items)
    }

    fn boolean(&self) -> Result<bool, ManageError> {
        match kind(&self.raw) {
            Kind::Bool => Ok(self.raw.get() == "true"),
            Kind::Null => self.bad(InvalidValue::Null),
            _ => self.bad(InvalidValue::Type("true or false")),
        }
    }

    /// A whole number in `min..=max`, written as plain digits.
    fn integer(&self, min: u64, max: u64) -> Result<u64, ManageError> {
        let text = self.raw.get();
        let range = InvalidValue::OutOfRange { min, max };
        if kind(&self.raw) == Kind::Null {
            return self.bad(InvalidValue::Null);
        }
        if kind(&self.raw) != Kind::Number || !text.bytes().all(|c| c.is_ascii_digit()) {
            return self.bad(range);
        }
        match text.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => self.bad(range),
        }
    }

    fn timestamp(&self) -> Result<Timestamp, ManageError> {
        let text = self.string().or_else(|_| self.bad(InvalidValue::Timestamp(crate::TimestampError)))?;
        Timestamp::parse_rfc3339(&text).or_else(|e| self.bad(InvalidValue::Timestamp(e)))
    }

    fn status(&self) -> Result<KeyStatus, ManageError> {
        let text = self.string()?;
        text.parse().or_else(|_| self.bad(InvalidValue::OneOf("active, disabled, revoked")))
    }

    fn scopes(&self) -> Result<Scopes, ManageError> {
        match kind(&self.raw) {
            Kind::String => Scopes::parse(&self.string()?).or_else(|e| self.bad(e.into())),
            Kind::Array => Scopes::from_scopes(self.strings(Scopes::MAX)?).or_else(|e| self.bad(e.into())),
            Kind::Null => self.bad(InvalidValue::Null),
            _ => self.bad(InvalidValue::Type("a string or an array of strings")),
        }
    }

    fn models(&self) -> Result<ModelAllowlist, ManageError> {
        match kind(&self.raw) {
            Kind::String => ModelAllowlist::parse(&self.string()?).or_else(|e| self.bad(e.into())),
            Kind::Array => ModelAllowlist::new(self.strings(ModelAllowlist::MAX)?).or_else(|e| self.bad(e.into())),
            Kind::Null => Ok(ModelAllowlist::empty()),
            _ => self.bad(InvalidValue::Type("a string or an array of strings")),
        }
    }

    fn providers(&self) -> Result<Vec<String>, ManageError> {
        if self.is_null() { Ok(Vec::new()) } else { self.strings(super::MAX_PROVIDERS) }
    }

    fn ips(&self) -> Result<Vec<IpCidr>, ManageError> {
        if self.is_null() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (index, text) in self.strings(MAX_ALLOWED_IPS)?.iter().enumerate() {
            out.push(text.parse().or_else(|error| self.bad(InvalidValue::Cidr { index, error }))?);
        }
        Ok(out)
    }

    /// A limit: a whole number from 1, or `null` for none.
    fn limit(&self) -> Result<Patch<u32>, ManageError> {
        if self.is_null() {
            return Ok(Patch::Clear);
        }
        let max = u32::MAX;
        let n = self.integer(1, u64::from(max))?;
        u32::try_from(n).map(Patch::Set).or_else(|_| self.bad(InvalidValue::OutOfRange { min: 1, max: u64::from(max) }))
    }

    fn rate_limit(&self) -> Result<RateLimitPatch, ManageError> {
        const NAMES: [&str; 3] = ["requests_per_minute", "tokens_per_minute", "concurrency"];
        match kind(&self.raw) {
            Kind::Null => return Ok(RateLimitPatch::clear_all()),
            Kind::Object => {}
            _ => return self.bad(InvalidValue::Type("an object or null")),
        }
        let fields = serde_json::from_str(self.raw.get()).map_err(|e| malformed(&e))?;
        let mut o = Object::new(fields, &NAMES, "rate_limit")?;
        let mut patch = RateLimitPatch::default();
        let names = ["rate_limit.requests_per_minute", "rate_limit.tokens_per_minute", "rate_limit.concurrency"];
        let targets = [&mut patch.requests_per_minute, &mut patch.tokens_per_minute, &mut patch.concurrency];
        for (i, (name, target)) in names.into_iter().zip(targets).enumerate() {
            if let Some(raw) = o.take(i) {
                *target = Field { name, raw }.limit()?;
            }
        }
        Ok(patch)
    }

    fn spend_cap(&self) -> Result<Option<SpendCap>, ManageError> {
        const NAMES: [&str; 2] = ["amount_usd", "period"];
        match kind(&self.raw) {
            Kind::Null => return Ok(None),
            Kind::Object => {}
            _ => return self.bad(InvalidValue::Type("an object or null")),
        }
        let fields = serde_json::from_str(self.raw.get()).map_err(|e| malformed(&e))?;
        let mut o = Object::new(fields, &NAMES, "spend_cap")?;
        let amount = o.take(0).ok_or(ManageError::MissingField("spend_cap.amount_usd"))?;
        let period = o.take(1).ok_or(ManageError::MissingField("spend_cap.period"))?;
        let amount = Field { name: "spend_cap.amount_usd", raw: amount }.usd()?;
        let period = Field { name: "spend_cap.period", raw: period }.period()?;
        Ok(Some(SpendCap { amount_micros: amount.micros(), period }))
    }

    /// Dollars as a JSON number or a decimal string, read exactly from the text.
    fn usd(&self) -> Result<Usd, ManageError> {
        let parsed = match kind(&self.raw) {
            Kind::Number => Usd::parse(self.raw.get()),
            Kind::String => Usd::parse(&self.string()?),
            Kind::Null => return self.bad(InvalidValue::Null),
            _ => return self.bad(InvalidValue::Type("a number or a decimal string")),
        };
        parsed.or_else(|e| self.bad(e.into()))
    }

    fn period(&self) -> Result<SpendPeriod, ManageError> {
        match self.string()?.as_str() {
            "day" => Ok(SpendPeriod::Day),
            "week" => Ok(SpendPeriod::Week),
            "month" => Ok(SpendPeriod::Month),
            _ => self.bad(InvalidValue::OneOf("day, week, month")),
        }
    }

    fn metadata(&self) -> Result<Option<Metadata>, ManageError> {
        match kind(&self.raw) {
            Kind::Null => Ok(None),
            _ => Metadata::parse(self.raw.get()).map(Some).or_else(|e| self.bad(e.into())),
        }
    }
}

/// Runs `decode` on the field in slot `i` if present.
fn with<const N: usize, T>(
    o: &mut Object<N>,
    names: &[&'static str; N],
    i: usize,
    decode: impl FnOnce(&Field) -> Result<T, ManageError>,
) -> Result<Option<T>, ManageError> {
    match o.take(i) {
        Some(raw) => decode(&Field { name: names[i], raw }).map(Some),
        None => Ok(None),
    }
}

/// Absent is [`Patch::Keep`], `null` is [`Patch::Clear`].
fn patch<T>(v: Option<Option<T>>) -> Patch<T> {
    match v {
        None => Patch::Keep,
        Some(None) => Patch::Clear,
        Some(Some(v)) => Patch::Set(v),
    }
}

/// `decode` unless the value is `null` (then `None`).
fn unless_null<T>(f: &Field, decode: impl FnOnce(&Field) -> Result<T, ManageError>) -> Result<Option<T>, ManageError> {
    if f.is_null() { Ok(None) } else { decode(f).map(Some) }
}

const CREATE_FIELDS: [&str; 11] = [
    "name",
    "scopes",
    "status",
    "team_id",
    "expires_at",
    "allowed_models",
    "allowed_providers",
    "allowed_ips",
    "rate_limit",
    "spend_cap",
    "metadata",
];

const UPDATE_FIELDS: [&str; 11] = [
    "name",
    "status",
    "soft_blocked",
    "scopes",
    "allowed_models",
    "allowed_providers",
    "allowed_ips",
    "rate_limit",
    "spend_cap",
    "expires_at",
    "metadata",
];

const ROTATE_FIELDS: [&str; 3] = ["name", "overlap_seconds", "expires_at"];

impl CreateKey {
    /// Reads a create request body (`POST /v1/management/keys`).
    ///
    /// Fields: `name` (required), `scopes` (a string such as `"read write"`, an array, or an
    /// array encoded as a string), `status`, `team_id`, `expires_at`, `allowed_models`,
    /// `allowed_providers`, `allowed_ips`, `rate_limit`, `spend_cap`, `metadata`; `null` is the
    /// same as absent. Any other field is refused.
    ///
    /// ```
    /// use keygate::{CreateKey, ManageError};
    /// let r = CreateKey::from_json(br#"{"name": "ci", "scopes": "[\"read\",\"write\"]", "status": "active"}"#)?;
    /// assert_eq!(r.scopes.to_string(), "read write");
    /// let e = CreateKey::from_json(br#"{"name": "ci", "scope": "read"}"#).unwrap_err();
    /// assert_eq!((e.code(), e.param()), ("unknown_field", Some("scope")));
    /// # Ok::<(), ManageError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ManageError::Malformed`], [`ManageError::UnknownField`],
    /// [`ManageError::DuplicateField`], [`ManageError::MissingField`] or
    /// [`ManageError::Invalid`] naming the field.
    pub fn from_json(body: &[u8]) -> Result<Self, ManageError> {
        Self::from_fields(fields(body)?)
    }

    fn from_fields(fields: Fields) -> Result<Self, ManageError> {
        let n = &CREATE_FIELDS;
        let mut o = Object::new(fields, n, "")?;
        let name = with(&mut o, n, 0, Field::string)?.ok_or(ManageError::MissingField("name"))?;
        let mut r = Self::new(name);
        if let Some(v) = with(&mut o, n, 1, |f| unless_null(f, Field::scopes))?.flatten() {
            r.scopes = v;
        }
        if let Some(v) = with(&mut o, n, 2, |f| unless_null(f, Field::status))?.flatten() {
            r.status = v;
        }
        r.team_id = with(&mut o, n, 3, |f| unless_null(f, Field::string))?.flatten();
        r.expires_at = with(&mut o, n, 4, |f| unless_null(f, Field::timestamp))?.flatten();
        if let Some(v) = with(&mut o, n, 5, Field::models)? {
            r.allowed_models = v;
        }
        if let Some(v) = with(&mut o, n, 6, Field::providers)? {
            r.allowed_providers = v;
        }
        if let Some(v) = with(&mut o, n, 7, Field::ips)? {
            r.allowed_ips = v;
        }
        if let Some(v) = with(&mut o, n, 8, Field::rate_limit)? {
            r.rate_limit = v.apply(RateLimits::default());
        }
        r.spend_cap = with(&mut o, n, 9, Field::spend_cap)?.flatten();
        r.metadata = with(&mut o, n, 10, Field::metadata)?.flatten();
        Ok(r)
    }
}

impl UpdateKey {
    /// Reads an update request body (`PATCH /v1/management/keys/{id}`): JSON Merge Patch
    /// semantics, an absent field is unchanged.
    ///
    /// Fields: `name`, `status`, `soft_blocked`, `scopes` (these four cannot be `null`),
    /// `allowed_models`, `allowed_providers`, `allowed_ips` (`null` or `[]` lifts the
    /// restriction), `rate_limit` (each limit patched on its own; `null` clears one, or all),
    /// `spend_cap`, `expires_at`, `metadata` (`null` removes). Any other field, `team_id`
    /// included, is refused.
    ///
    /// ```
    /// use keygate::{ManageError, Patch, UpdateKey};
    /// let u = UpdateKey::from_json(br#"{"soft_blocked": true, "expires_at": null}"#)?;
    /// assert_eq!((u.soft_blocked, u.expires_at), (Some(true), Patch::Clear));
    /// assert_eq!(u.name, None);
    /// # Ok::<(), ManageError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`CreateKey::from_json`].
    pub fn from_json(body: &[u8]) -> Result<Self, ManageError> {
        Self::from_fields(fields(body)?)
    }

    fn from_fields(fields: Fields) -> Result<Self, ManageError> {
        let n = &UPDATE_FIELDS;
        let mut o = Object::new(fields, n, "")?;
        Ok(Self {
            name: with(&mut o, n, 0, Field::string)?,
            status: with(&mut o, n, 1, Field::status)?,
            soft_blocked: with(&mut o, n, 2, Field::boolean)?,
            scopes: with(&mut o, n, 3, Field::scopes)?,
            allowed_models: with(&mut o, n, 4, Field::models)?,
            allowed_providers: with(&mut o, n, 5, Field::providers)?,
            allowed_ips: with(&mut o, n, 6, Field::ips)?,
            rate_limit: with(&mut o, n, 7, Field::rate_limit)?.unwrap_or_default(),
            spend_cap: patch(with(&mut o, n, 8, Field::spend_cap)?),
            expires_at: patch(with(&mut o, n, 9, |f| unless_null(f, Field::timestamp))?),
            metadata: patch(with(&mut o, n, 10, Field::metadata)?),
        })
    }
}

impl RotateKey {
    /// Reads a rotation request body (`POST /v1/management/keys/{id}/rotate`); an empty body
    /// is the default rotation.
    ///
    /// Fields: `name` (the successor's), `overlap_seconds` (the old key expires this many
    /// seconds after the rotation), `expires_at` (the successor's; `null` for none, absent to
    /// copy the old key's).
    ///
    /// ```
    /// use keygate::{ManageError, RotateKey};
    /// let r = RotateKey::from_json(br#"{"overlap_seconds": 86400}"#)?;
    /// assert_eq!(r.overlap.map(|d| d.as_secs()), Some(86_400));
    /// assert_eq!(RotateKey::from_json(b"")?, RotateKey::default());
    /// # Ok::<(), ManageError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`CreateKey::from_json`].
    pub fn from_json(body: &[u8]) -> Result<Self, ManageError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        Self::from_fields(fields(body)?)
    }

    fn from_fields(fields: Fields) -> Result<Self, ManageError> {
        let n = &ROTATE_FIELDS;
        let mut o = Object::new(fields, n, "")?;
        let name = with(&mut o, n, 0, |f| unless_null(f, Field::string))?.flatten();
        let seconds = |f: &Field| f.integer(0, u64::MAX).map(Duration::from_secs);
        let overlap = with(&mut o, n, 1, |f| unless_null(f, seconds))?.flatten();
        let expires_at = patch(with(&mut o, n, 2, |f| unless_null(f, Field::timestamp))?);
        Ok(Self { name, overlap, expires_at })
    }
}

macro_rules! deserialize_via_fields {
    ($($ty:ty),*) => {$(
        /// Deserializes from a JSON object by the rules of `from_json` (with serde_json; the
        /// error's text is the [`ManageError`]'s).
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::from_fields(Fields::deserialize(d)?).map_err(de::Error::custom)
            }
        }
    )*};
}

deserialize_via_fields!(CreateKey, UpdateKey, RotateKey);

// ---- writing ------------------------------------------------------------------------------

/// A key as the management API shows it, in this field order:
///
/// `id`, `name`, `prefix` (the display prefix, safe to show), `status`, `scopes` (an array),
/// `created_at`, `kind` (`sk`, `mk`, ...), `team_id`, `soft_blocked`, `expires_at`,
/// `last_used_at`, `updated_at`, `allowed_models`, `allowed_providers`, `allowed_ips`,
/// `rate_limit` (`{"requests_per_minute", "tokens_per_minute", "concurrency"}`, each a number or
/// `null`), `spend_cap` (`{"amount_usd", "period"}` or `null`), `metadata` (an object or `null`),
/// and `key`, the full token, only in the view made by [`KeyView::created`].
///
/// Absent values are `null`, never omitted. Timestamps are RFC 3339. `amount_usd` is a JSON
/// number with the exact decimal value: every amount has at most 15 significant digits (see
/// [`MAX_USD_MICROS`](crate::MAX_USD_MICROS)), so it prints exactly and a client reading it as
/// a double gets the exact amount back.
#[derive(Clone, Copy)]
pub struct KeyView<'a> {
    record: &'a KeyRecord,
    token: Option<&'a SecretToken>,
}

impl<'a> KeyView<'a> {
    /// The view of a stored key, without its token.
    #[must_use]
    pub fn new(record: &'a KeyRecord) -> Self {
        Self { record, token: None }
    }

    /// The view of a key just created, with its token: serialize it once, in the response to
    /// the creation.
    #[must_use]
    pub fn created(created: &'a CreatedKey) -> Self {
        Self { record: created.record(), token: Some(created.token()) }
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
        let raw = self.0.and_then(|t| serde_json::from_str::<&RawValue>(t).ok()).filter(|r| kind(r) == Kind::Object);
        match raw {
            Some(raw) => raw.serialize(s),
            None => s.serialize_none(),
        }
    }
}

impl Serialize for KeyView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.record;
        let mut m = s.serialize_struct("Key", 19 + usize::from(self.token.is_some()))?;
        m.serialize_field("id", &r.id)?;
        m.serialize_field("name", &r.name)?;
        m.serialize_field("prefix", &r.prefix)?;
        m.serialize_field("status", &r.status)?;
        m.serialize_field("scopes", &r.scopes)?;
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
        struct Keys<'b>(&'b KeyPage);
        impl Serialize for Keys<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.records.iter().map(|r| KeyView::new(r)))
            }
        }
        let mut m = s.serialize_struct("KeyListResponse", 5)?;
        m.serialize_field("ok", &true)?;
        m.serialize_field("keys", &Keys(self.0))?;
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

/// The OpenAI-compatible error body of a [`ManageError`]:
/// `{"error": {"message": "...", "type": "...", "code": "...", "param": "<field>" | null}}`.
///
/// ```
/// use keygate::{ErrorResponse, ListKeys};
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
                let mut m = s.serialize_map(Some(4))?;
                m.serialize_entry("message", &format_args!("{}", self.0))?;
                m.serialize_entry("type", self.0.error_type())?;
                m.serialize_entry("code", self.0.code())?;
                m.serialize_entry("param", &self.0.param())?;
                m.end()
            }
        }
        let mut m = s.serialize_struct("ErrorResponse", 1)?;
        m.serialize_field("error", &Inner(self.0))?;
        m.end()
    }
}
