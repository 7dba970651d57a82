//! Why a management request was refused, and the HTTP answer for each reason.

use alloc::string::String;
use alloc::vec::Vec;

use crate::cidr::CidrError;
use crate::format::GenerateError;
use crate::policy::{ModelPatternError, ScopeError};
use crate::time::TimestampError;
use crate::{RequiredScopes, StoreError};

use super::{MetadataError, MoneyError};

/// What is wrong with one field's value. [`ManageError::Invalid`] says which field.
///
/// Messages describe the value's problem without repeating the value (at most one offending
/// character), so an error never echoes a secret someone pasted into the wrong field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidValue {
    /// `null` where the field cannot be cleared.
    #[error("must not be null")]
    Null,
    /// The JSON value has the wrong type; the text names the expected one (`"a string"`).
    #[error("must be {0}")]
    Type(&'static str),
    /// The text is empty (or only whitespace).
    #[error("must not be empty")]
    Empty,
    /// The text is longer than the bound.
    #[error("must be at most {max} bytes")]
    TooLong {
        /// The most bytes allowed.
        max: usize,
    },
    /// The list has more entries than the bound.
    #[error("must have at most {max} entries")]
    TooMany {
        /// The most entries allowed.
        max: usize,
    },
    /// The text starts or ends with whitespace.
    #[error("must not start or end with whitespace")]
    Whitespace,
    /// A character outside the field's alphabet.
    #[error("contains {ch:?} at byte {at}; allowed are {allowed}")]
    InvalidChar {
        /// The byte offset of the character (in the entry, for a list).
        at: usize,
        /// The character.
        ch: char,
        /// The allowed characters, in words.
        allowed: &'static str,
    },
    /// A control character (names may be any other Unicode).
    #[error("contains a control character at byte {at}")]
    ControlChar {
        /// The byte offset of the character.
        at: usize,
    },
    /// An integer outside its range.
    #[error("must be an integer from {min} to {max}")]
    OutOfRange {
        /// The smallest value allowed.
        min: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// Not one of the listed words.
    #[error("must be one of: {0}")]
    OneOf(&'static str),
    /// A time that must be later than now is not.
    #[error("must be in the future")]
    NotInFuture,
    /// A new key cannot start revoked.
    #[error("a new key cannot be created revoked")]
    CreateRevoked,
    /// An entry of a list is invalid (`index` counts from 0).
    #[error("entry {index}: {reason}")]
    Entry {
        /// The entry's position.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A scope list is invalid.
    #[error(transparent)]
    Scope(#[from] ScopeError),
    /// A model allowlist is invalid.
    #[error(transparent)]
    Model(#[from] ModelPatternError),
    /// A CIDR block is invalid.
    #[error("entry {index}: {error}")]
    Cidr {
        /// The entry's position.
        index: usize,
        /// What is wrong with it.
        error: CidrError,
    },
    /// An amount of money is invalid.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// Metadata is invalid.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// A timestamp is not RFC 3339.
    #[error("must be an RFC 3339 date-time such as \"2026-11-24T22:41:00Z\"")]
    Timestamp(#[from] TimestampError),
    /// An imported key is not in a format this server accepts, so it could never verify.
    #[error("is not a key in a format this server accepts (its prefix must be one of the accepted formats)")]
    KeyFormat,
    /// The field cannot be given together with the one named.
    #[error("cannot be given together with `{0}`")]
    With(&'static str),
}

/// A management operation was refused. Each variant maps to an HTTP status, an OpenAI-style
/// error `type` and a stable `code` ([`ManageError::status`], [`ManageError::error_type`],
/// [`ManageError::code`]) and, where one field is at fault, its name ([`ManageError::param`]).
///
/// | variant | status | type | code |
/// |---|---|---|---|
/// | `Malformed` | 400 | `invalid_request_error` | `invalid_json` |
/// | `UnknownField` | 400 | `invalid_request_error` | `unknown_field` |
/// | `DuplicateField` | 400 | `invalid_request_error` | `duplicate_field` |
/// | `MissingField` | 400 | `invalid_request_error` | `missing_field` |
/// | `UnknownParameter` | 400 | `invalid_request_error` | `unknown_parameter` |
/// | `Invalid` | 400 | `invalid_request_error` | `invalid_value` |
/// | `NotManagementKey` | 403 | `permission_error` | `management_key_required` |
/// | `MissingScope` | 403 | `permission_error` | `insufficient_scope` |
/// | `ScopeEscalation` | 403 | `permission_error` | `scope_escalation` |
/// | `Escalation` | 403 | `permission_error` | `escalation` |
/// | `TeamMismatch` | 403 | `permission_error` | `team_mismatch` |
/// | `NotFound` | 404 | `not_found_error` | `key_not_found` |
/// | `RouteNotFound` | 404 | `not_found_error` | `route_not_found` |
/// | `MethodNotAllowed` | 405 | `invalid_request_error` | `method_not_allowed` |
/// | `Revoked` | 409 | `conflict_error` | `key_revoked` |
/// | `Conflict` | 409 | `conflict_error` | `conflict` |
/// | `BodyTooLarge` | 413 | `invalid_request_error` | `body_too_large` |
/// | `DuplicateKey` | 409 | `conflict_error` | `duplicate_key` |
/// | `ImportRejected` | the status its entries share, else 400 | as the status says | `import_rejected` |
/// | `Generate` | 500 | `api_error` | `key_generation_failed` |
/// | `Store` | 503 | `api_error` | `store_unavailable` |
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManageError {
    /// The body is not JSON, or not a JSON object; the text says where.
    #[error("malformed request body: {0}")]
    Malformed(String),
    /// A field the endpoint does not take (names are case-sensitive). The name is empty when
    /// it was longer than [`MAX_ECHOED_NAME`] bytes: it is then not repeated (it might be a
    /// pasted key).
    #[error("unknown field {}", Quoted(.0))]
    UnknownField(String),
    /// A field given twice.
    #[error("duplicate field `{0}`")]
    DuplicateField(String),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A query parameter the endpoint does not take, or given twice (the name as for
    /// [`ManageError::UnknownField`]).
    #[error("unknown or repeated query parameter {}", Quoted(.0))]
    UnknownParameter(String),
    /// A field (or query parameter) has an invalid value.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The field's name, dotted for nested fields (`rate_limit.concurrency`).
        field: &'static str,
        /// What is wrong with the value.
        reason: InvalidValue,
    },
    /// The caller's key is not of the kind [`ManageConfig::required_kind`](crate::ManageConfig)
    /// names.
    #[error("only management keys may use the management API")]
    NotManagementKey,
    /// The caller lacks the scope this operation requires.
    #[error("the caller lacks the scope this operation requires ({0})")]
    MissingScope(RequiredScopes),
    /// The operation would give a key a scope the caller does not hold itself, or change a key
    /// holding one.
    #[error("scope `{0}` is beyond the caller's own scopes")]
    ScopeEscalation(String),
    /// The operation would give a key something broader than the caller's own key has: the
    /// field named (`expires_at`, `allowed_models`, `allowed_providers`, `allowed_ips`,
    /// `rate_limit.requests_per_minute`, `rate_limit.tokens_per_minute`,
    /// `rate_limit.concurrency`, `spend_cap`, `credits` or `kind`).
    #[error("`{0}` may not be broader than the caller's own")]
    Escalation(&'static str),
    /// The caller named a team other than its own.
    #[error("the caller may only manage keys of its own team")]
    TeamMismatch,
    /// No key with this id is visible to the caller (it does not exist, or belongs to another
    /// team: the two are not told apart).
    #[error("no key with this id")]
    NotFound,
    /// The path is not one of the management endpoints.
    #[error("no such endpoint")]
    RouteNotFound,
    /// The endpoint exists but not with this method; the value is the allowed methods.
    #[error("method not allowed; use {0}")]
    MethodNotAllowed(&'static str),
    /// The key is revoked, which is terminal.
    #[error("the key is revoked; a revoked key cannot be changed or re-activated")]
    Revoked,
    /// The key kept changing concurrently, or the id exists already.
    #[error("the key was changed concurrently; retry the request")]
    Conflict,
    /// The body is larger than the handler accepts.
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// The random number generator failed while issuing a key.
    #[error("could not generate a key")]
    Generate(GenerateError),
    /// The key store failed.
    #[error("the key store is unavailable")]
    Store(StoreError),
    /// An imported key is stored already, or appears twice in one import.
    #[error("{}", DuplicateText(*.earlier))]
    DuplicateKey {
        /// The entry's field that holds the key: `key` or `sha256`.
        field: &'static str,
        /// The earlier entry of the same import with the same key; `None` if the store has it.
        earlier: Option<usize>,
    },
    /// An import refused some of its entries, each with its own reason, and imported none.
    #[error("{} of the entries were refused; nothing was imported", .0.len())]
    ImportRejected(Vec<RejectedEntry>),
}

/// One entry of an import that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RejectedEntry {
    /// The entry's position in the import, from 0.
    pub index: usize,
    /// Why it was refused: its field ([`ManageError::param`]), code and message.
    pub error: ManageError,
}

impl RejectedEntry {
    /// Entry `index` refused for `error`.
    #[must_use]
    pub fn new(index: usize, error: ManageError) -> Self {
        Self { index, error }
    }
}

/// The message of [`ManageError::DuplicateKey`].
struct DuplicateText(Option<usize>);

impl core::fmt::Display for DuplicateText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(i) => write!(f, "the same key as entry {i}"),
            None => f.write_str("the key is stored already"),
        }
    }
}

impl ManageError {
    pub(crate) const fn invalid(field: &'static str, reason: InvalidValue) -> Self {
        Self::Invalid { field, reason }
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::ImportRejected(entries) => {
                let first = entries.first().map_or(400, |e| e.error.status());
                if entries.iter().all(|e| e.error.status() == first) { first } else { 400 }
            }
            Self::Malformed(_)
            | Self::UnknownField(_)
            | Self::DuplicateField(_)
            | Self::MissingField(_)
            | Self::UnknownParameter(_)
            | Self::Invalid { .. } => 400,
            Self::NotManagementKey
            | Self::MissingScope(_)
            | Self::ScopeEscalation(_)
            | Self::Escalation(_)
            | Self::TeamMismatch => 403,
            Self::NotFound | Self::RouteNotFound => 404,
            Self::MethodNotAllowed(_) => 405,
            Self::Revoked | Self::Conflict | Self::DuplicateKey { .. } => 409,
            Self::BodyTooLarge(_) => 413,
            Self::Generate(_) => 500,
            Self::Store(_) => 503,
        }
    }

    /// The OpenAI-style `error.type`.
    #[must_use]
    pub fn error_type(&self) -> &'static str {
        match self.status() {
            403 => "permission_error",
            404 => "not_found_error",
            409 => "conflict_error",
            500 | 503 => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// The stable `error.code`.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "invalid_json",
            Self::UnknownField(_) => "unknown_field",
            Self::DuplicateField(_) => "duplicate_field",
            Self::MissingField(_) => "missing_field",
            Self::UnknownParameter(_) => "unknown_parameter",
            Self::Invalid { .. } => "invalid_value",
            Self::NotManagementKey => "management_key_required",
            Self::MissingScope(_) => "insufficient_scope",
            Self::ScopeEscalation(_) => "scope_escalation",
            Self::Escalation(_) => "escalation",
            Self::TeamMismatch => "team_mismatch",
            Self::NotFound => "key_not_found",
            Self::RouteNotFound => "route_not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Revoked => "key_revoked",
            Self::Conflict => "conflict",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::Generate(_) => "key_generation_failed",
            Self::Store(_) => "store_unavailable",
            Self::DuplicateKey { .. } => "duplicate_key",
            Self::ImportRejected(_) => "import_rejected",
        }
    }

    /// The field or parameter at fault (`error.param`), if one is.
    #[must_use]
    pub fn param(&self) -> Option<&str> {
        match self {
            Self::UnknownField(f) | Self::UnknownParameter(f) if f.is_empty() => None,
            Self::UnknownField(f) | Self::DuplicateField(f) | Self::UnknownParameter(f) => Some(f),
            Self::MissingField(f)
            | Self::Invalid { field: f, .. }
            | Self::Escalation(f)
            | Self::DuplicateKey { field: f, .. } => Some(f),
            Self::ImportRejected(_) => Some("keys"),
            Self::ScopeEscalation(_) => Some("scopes"),
            Self::TeamMismatch => Some("team_id"),
            Self::NotFound => Some("id"),
            _ => None,
        }
    }
}

/// The longest field or parameter name an error repeats, in bytes. Every key format's tokens
/// are longer (a 256-bit secret alone takes 43 characters), so an error never echoes a key, or
/// part of one, that was pasted as a name.
pub const MAX_ECHOED_NAME: usize = 40;

/// A name as an error repeats it: itself if short enough, else empty.
pub(crate) fn echoed_name(name: &str) -> String {
    if name.len() <= MAX_ECHOED_NAME { name.into() } else { String::new() }
}

/// `` `name` ``, or a note that the name is not shown.
struct Quoted<'a>(&'a str);

impl core::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0.is_empty() { f.write_str("(name not shown)") } else { write!(f, "`{}`", self.0) }
    }
}

impl From<StoreError> for ManageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            StoreError::Conflict => Self::Conflict,
            other => Self::Store(other),
        }
    }
}

impl From<GenerateError> for ManageError {
    fn from(e: GenerateError) -> Self {
        Self::Generate(e)
    }
}
