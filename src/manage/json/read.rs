//! The request bodies. Each object's fields are declared once, as the members of a struct of
//! [`Slot`]s; a body is first sorted into its slots by name (an unknown or repeated name is
//! refused before any value is read), then each slot is decoded by its own rule, in the order
//! the reader lists them.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::Kind;
use super::value::Field;
use zeroize::{Zeroize, Zeroizing};

use crate::manage::error::echoed_name;
use crate::manage::import::{check_batch_len, sha256_hex};
use crate::manage::{
    CreateKey, ImportKey, ImportedSecret, InvalidValue, MAX_CREDITS, ManageError, Patch, RateLimitPatch, RejectedEntry,
    RotateKey, UpdateKey,
};
use crate::{Credits, SpendCap};

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

/// A name the object does not have; `prefix` is the dotted path of a nested object. A name too
/// long to repeat (see [`MAX_ECHOED_NAME`](crate::manage::MAX_ECHOED_NAME)) is left out.
fn unknown(prefix: &str, name: &str) -> ManageError {
    let name = echoed_name(name);
    ManageError::UnknownField(if name.is_empty() { name } else { format!("{prefix}{name}") })
}

/// One member of an object: its name as errors show it, and its raw value if it was given.
struct Slot {
    name: &'static str,
    raw: Option<Box<RawValue>>,
}

impl Slot {
    const fn new(name: &'static str) -> Self {
        Self { name, raw: None }
    }

    /// Takes the member's value; a second one is refused.
    fn fill(&mut self, raw: Box<RawValue>) -> Result<(), ManageError> {
        match self.raw.replace(raw) {
            Some(_) => Err(ManageError::DuplicateField(self.name.into())),
            None => Ok(()),
        }
    }

    fn field(self) -> Option<Field> {
        self.raw.map(|raw| Field { name: self.name, raw })
    }

    /// The member, which must be given.
    fn required(self) -> Result<Field, ManageError> {
        let name = self.name;
        self.field().ok_or(ManageError::MissingField(name))
    }

    /// `decode` of the value if given (`null` included), else `None`.
    fn read<T>(self, decode: impl FnOnce(&Field) -> Result<T, ManageError>) -> Result<Option<T>, ManageError> {
        self.field().as_ref().map(decode).transpose()
    }

    /// `decode` of the value, with `null` the same as absent.
    fn or_null<T>(self, decode: impl FnOnce(&Field) -> Result<T, ManageError>) -> Result<Option<T>, ManageError> {
        self.field().filter(|f| !f.is_null()).as_ref().map(decode).transpose()
    }

    /// JSON Merge Patch: absent keeps, `null` clears, any other value is decoded and set.
    fn patch<T>(self, decode: impl FnOnce(&Field) -> Result<T, ManageError>) -> Result<Patch<T>, ManageError> {
        Ok(match self.field() {
            None => Patch::Keep,
            Some(f) if f.is_null() => Patch::Clear,
            Some(f) => Patch::Set(decode(&f)?),
        })
    }
}

/// Declares the members an object may have: a struct with a [`Slot`] per member, named as the
/// member (after the dotted `prefix` of a nested object), and `sort`, which fills the slots
/// from the object's fields.
macro_rules! members {
    ($(#[$doc:meta])* $object:ident($prefix:literal) { $($member:ident),+ $(,)? }) => {
        $(#[$doc])*
        struct $object {
            $($member: Slot,)+
        }

        impl $object {
            /// Sorts `fields` into the slots; the first unknown or repeated name is refused.
            fn sort(fields: Fields) -> Result<Self, ManageError> {
                let mut object = Self { $($member: Slot::new(concat!($prefix, stringify!($member))),)+ };
                for (name, raw) in fields.0 {
                    match name.as_str() {
                        $(stringify!($member) => object.$member.fill(raw)?,)+
                        _ => return Err(unknown($prefix, &name)),
                    }
                }
                Ok(object)
            }
        }
    };
}

members! {
    /// The fields of a create request.
    CreateMembers("") {
        name, scopes, status, team_id, expires_at, allowed_models, allowed_providers, allowed_ips,
        rate_limit, spend_cap, metadata, credits, spend_alerts,
    }
}

members! {
    /// The fields of an update request.
    UpdateMembers("") {
        name, status, soft_blocked, scopes, allowed_models, allowed_providers, allowed_ips,
        rate_limit, spend_cap, expires_at, metadata, credits, spend_alerts,
    }
}

members! {
    /// The fields of a rotation request.
    RotateMembers("") { name, overlap_seconds, expires_at }
}

members! {
    /// The members of `rate_limit`.
    RateLimitMembers("rate_limit.") { requests_per_minute, tokens_per_minute, concurrency }
}

members! {
    /// The members of `spend_cap`.
    SpendCapMembers("spend_cap.") { amount_usd, period }
}

members! {
    /// The members of `credits`.
    CreditsMembers("credits.") { amount, refill }
}

/// The nested objects' rules.
impl Field {
    /// The fields of an object value.
    fn object(&self) -> Result<Fields, ManageError> {
        if self.kind() != Kind::Object {
            return self.bad(InvalidValue::Type("an object or null"));
        }
        serde_json::from_str(self.raw.get()).map_err(|e| malformed(&e))
    }

    /// Each limit patched on its own; `null` clears them all.
    fn rate_limit(&self) -> Result<RateLimitPatch, ManageError> {
        if self.is_null() {
            return Ok(RateLimitPatch::clear_all());
        }
        let RateLimitMembers { requests_per_minute, tokens_per_minute, concurrency } =
            RateLimitMembers::sort(self.object()?)?;
        Ok(RateLimitPatch {
            requests_per_minute: requests_per_minute.patch(Field::limit)?,
            tokens_per_minute: tokens_per_minute.patch(Field::limit)?,
            concurrency: concurrency.patch(Field::limit)?,
        })
    }

    fn spend_cap(&self) -> Result<SpendCap, ManageError> {
        let SpendCapMembers { amount_usd, period } = SpendCapMembers::sort(self.object()?)?;
        let (amount_usd, period) = (amount_usd.required()?, period.required()?);
        Ok(SpendCap { amount_micros: amount_usd.usd()?.micros(), period: period.period()? })
    }

    fn credits(&self) -> Result<Credits, ManageError> {
        let CreditsMembers { amount, refill } = CreditsMembers::sort(self.object()?)?;
        Ok(Credits { amount: amount.required()?.integer(0, MAX_CREDITS)?, refill: refill.or_null(Field::period)? })
    }
}

impl CreateKey {
    /// Reads a create request body (`POST /v1/management/keys`).
    ///
    /// Fields: `name` (required), `scopes` (a string such as `"read write"`, an array, or an
    /// array encoded as a string), `status`, `team_id`, `expires_at`, `allowed_models`,
    /// `allowed_providers`, `allowed_ips`, `rate_limit`, `spend_cap`, `credits`
    /// (`{"amount": n, "refill": "day" | "week" | "month" | null}`), `spend_alerts` (percents
    /// of the spend cap, such as `[50, 80, 100]`), `metadata`; `null` is the same as absent. Any other field is refused.
    ///
    /// ```
    /// use keygate::manage::{CreateKey, ManageError};
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
        let CreateMembers {
            name,
            scopes,
            status,
            team_id,
            expires_at,
            allowed_models,
            allowed_providers,
            allowed_ips,
            rate_limit,
            spend_cap,
            metadata,
            credits,
            spend_alerts,
        } = CreateMembers::sort(fields)?;
        let new = Self::new(name.required()?.string()?);
        Ok(Self {
            scopes: scopes.or_null(Field::scopes)?.unwrap_or(new.scopes),
            status: status.or_null(Field::status)?.unwrap_or(new.status),
            team_id: team_id.or_null(Field::string)?,
            expires_at: expires_at.or_null(Field::timestamp)?,
            allowed_models: allowed_models.or_null(Field::models)?.unwrap_or(new.allowed_models),
            allowed_providers: allowed_providers.or_null(Field::providers)?.unwrap_or(new.allowed_providers),
            allowed_ips: allowed_ips.or_null(Field::ips)?.unwrap_or(new.allowed_ips),
            rate_limit: rate_limit.or_null(Field::rate_limit)?.map_or(new.rate_limit, |p| p.apply(new.rate_limit)),
            spend_cap: spend_cap.or_null(Field::spend_cap)?,
            metadata: metadata.or_null(Field::metadata)?,
            credits: credits.or_null(Field::credits)?,
            spend_alerts: spend_alerts.or_null(Field::spend_alerts)?,
            ..new
        })
    }
}

impl UpdateKey {
    /// Reads an update request body (`PATCH /v1/management/keys/{id}`): JSON Merge Patch
    /// semantics, an absent field is unchanged.
    ///
    /// Fields: `name`, `status`, `soft_blocked`, `scopes` (these four cannot be `null`),
    /// `allowed_models`, `allowed_providers`, `allowed_ips` (`null` or `[]` lifts the
    /// restriction), `rate_limit` (each limit patched on its own; `null` clears one, or all),
    /// `spend_cap`, `expires_at`, `credits`, `spend_alerts`, `metadata` (`null` removes: a key
    /// without thresholds of its own has the gate's). Any other field,
    /// `team_id` included, is refused.
    ///
    /// ```
    /// use keygate::manage::{ManageError, Patch, UpdateKey};
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
        let UpdateMembers {
            name,
            status,
            soft_blocked,
            scopes,
            allowed_models,
            allowed_providers,
            allowed_ips,
            rate_limit,
            spend_cap,
            expires_at,
            metadata,
            credits,
            spend_alerts,
        } = UpdateMembers::sort(fields)?;
        Ok(Self {
            name: name.read(Field::string)?,
            status: status.read(Field::status)?,
            soft_blocked: soft_blocked.read(Field::boolean)?,
            scopes: scopes.read(Field::scopes)?,
            allowed_models: allowed_models.read(Field::models)?,
            allowed_providers: allowed_providers.read(Field::providers)?,
            allowed_ips: allowed_ips.read(Field::ips)?,
            rate_limit: rate_limit.read(Field::rate_limit)?.unwrap_or_default(),
            spend_cap: spend_cap.patch(Field::spend_cap)?,
            expires_at: expires_at.patch(Field::timestamp)?,
            metadata: metadata.patch(Field::metadata)?,
            credits: credits.patch(Field::credits)?,
            spend_alerts: spend_alerts.patch(Field::spend_alerts)?,
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
    /// use keygate::manage::{ManageError, RotateKey};
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
        let RotateMembers { name, overlap_seconds, expires_at } = RotateMembers::sort(fields)?;
        let seconds = |f: &Field| f.integer(0, u64::MAX).map(Duration::from_secs);
        Ok(Self {
            name: name.or_null(Field::string)?,
            overlap: overlap_seconds.or_null(seconds)?,
            expires_at: expires_at.patch(Field::timestamp)?,
        })
    }
}

members! {
    /// The fields of an import request.
    ImportMembers("") { keys }
}

/// The members of an import entry besides those of create: how the key is known.
struct SecretMembers {
    key: Slot,
    sha256: Slot,
    prefix: Slot,
}

impl ImportKey {
    /// Reads one import entry: the fields of a create request ([`CreateKey::from_json`]) and
    /// exactly one of `key` (the key's plaintext) and `sha256` (64 hex digits of its SHA-256),
    /// with, for a `sha256` entry, an optional `prefix` (the key's public start, shown in its
    /// view). This is also one line of the `import` example's JSON Lines files.
    ///
    /// ```
    /// use keygate::manage::{ImportKey, ImportedSecret, ManageError};
    /// let e = ImportKey::from_json(br#"{"key": "sk-aisa-0123456789abcdefghij", "name": "ci", "scopes": "read"}"#)?;
    /// assert!(matches!(e.secret, ImportedSecret::Token(_)));
    /// let bad = ImportKey::from_json(br#"{"sha256": "abc", "name": "ci"}"#).unwrap_err();
    /// assert_eq!((bad.code(), bad.param()), ("invalid_value", Some("sha256")));
    /// # Ok::<(), ManageError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`CreateKey::from_json`]; [`ManageError::MissingField`] naming `key` when neither
    /// `key` nor `sha256` is given; [`ManageError::Invalid`] naming `sha256` when both are, or
    /// when it is not 64 hex digits. No error repeats the key.
    pub fn from_json(body: &[u8]) -> Result<Self, ManageError> {
        Self::from_fields(fields(body)?)
    }

    fn from_fields(fields: Fields) -> Result<Self, ManageError> {
        let mut secret =
            SecretMembers { key: Slot::new("key"), sha256: Slot::new("sha256"), prefix: Slot::new("prefix") };
        let mut rest = Vec::with_capacity(fields.0.len());
        for (name, raw) in fields.0 {
            match name.as_str() {
                "key" => secret.key.fill(raw)?,
                "sha256" => secret.sha256.fill(raw)?,
                "prefix" => secret.prefix.fill(raw)?,
                _ => rest.push((name, raw)),
            }
        }
        let SecretMembers { key: token, sha256, prefix } = secret;
        let secret = match (token.field(), sha256.field()) {
            (Some(token), None) => {
                let text = token.string().map(Zeroizing::new);
                wipe(token.raw);
                ImportedSecret::Token(text?)
            }
            (None, Some(sha256)) => ImportedSecret::Sha256(sha256.sha256()?),
            (Some(token), Some(sha256)) => {
                wipe(token.raw);
                return sha256.bad(InvalidValue::With("key"));
            }
            (None, None) => return Err(ManageError::MissingField("key")),
        };
        Ok(Self { secret, prefix: prefix.or_null(Field::string)?, key: CreateKey::from_fields(Fields(rest))? })
    }
}

impl Field {
    /// A SHA-256 as 64 hex digits.
    fn sha256(&self) -> Result<[u8; crate::secret::DIGEST_LEN], ManageError> {
        let text = self.string()?;
        sha256_hex(&text)
            .map_or_else(|| self.bad(InvalidValue::Type("64 hexadecimal digits (the SHA-256 of the key)")), Ok)
    }
}

/// Overwrites the text of a value that held a key before letting it go.
fn wipe(raw: Box<RawValue>) {
    let text: Box<str> = raw.into();
    let mut bytes = text.into_boxed_bytes();
    bytes.zeroize();
}

/// Reads an import request body (`POST /v1/management/keys/import`): `{"keys": [entry, ...]}`,
/// 1 to [`MAX_IMPORT_BATCH`](crate::manage::MAX_IMPORT_BATCH) entries, each read by
/// [`ImportKey::from_json`].
///
/// # Errors
///
/// [`ManageError::Malformed`], [`ManageError::UnknownField`] or [`ManageError::MissingField`]
/// for the body; [`ManageError::Invalid`] naming `keys` for a batch that is not an array, is
/// empty or too long; [`ManageError::ImportRejected`] with every entry that does not read.
pub(in crate::manage) fn import_request(body: &[u8]) -> Result<Vec<ImportKey>, ManageError> {
    let ImportMembers { keys } = ImportMembers::sort(fields(body)?)?;
    let keys = keys.required()?;
    if keys.kind() != Kind::Array {
        return keys.bad(InvalidValue::Type("an array of objects"));
    }
    let raws: Vec<Box<RawValue>> = serde_json::from_str(keys.raw.get()).map_err(|e| malformed(&e))?;
    wipe(keys.raw);
    check_batch_len(raws.len())?;
    let mut entries = Vec::with_capacity(raws.len());
    let mut rejected = Vec::new();
    for (index, raw) in raws.into_iter().enumerate() {
        let read = match Kind::of(&raw) {
            Kind::Object => serde_json::from_str(raw.get()).map_err(|e| malformed(&e)).and_then(ImportKey::from_fields),
            _ => Err(ManageError::Malformed("expected a JSON object".into())),
        };
        wipe(raw);
        match read {
            Ok(entry) => entries.push(entry),
            Err(error) => rejected.push(RejectedEntry::new(index, error)),
        }
    }
    if rejected.is_empty() { Ok(entries) } else { Err(ManageError::ImportRejected(rejected)) }
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
