//! Reads the model a request's JSON body asks for, so that the gate can check the key's
//! allowlists before the request runs; a model that cannot be read unambiguously is reported as
//! [`RequestedModel::Unreadable`], never as "no model", so restricted keys fail closed.
//!
//! ```text
//! request ──► Content-Type: one header, media type application/json (any case, any parameters,
//!             charset utf-8 if named)?
//!               no  ──► body untouched; model Absent if the body is empty, else Unreadable
//!               yes ──► body buffered (bounded: 413 past it, 400 if it fails to arrive)
//!                       ──► JsonModel::read: UTF-8, strict JSON, a top-level object,
//!                           exactly one `model` key whose value is a string ──► Named
//!                           no `model` key ──► Absent;  anything else ──► Unreadable
//!         ──► JsonModel into the request's extensions ──► the classifier, then the gate
//! ```

#![cfg(feature = "json")]

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;
use core::future::Future;

use bytes::Bytes;
use http::Request;
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::respond::media_type;
use super::{BodyRefused, ReadBody};
use crate::RequestedModel;

/// What [`ReadJsonModel`] read from a request body, in the request's extensions for the
/// classifier: the `model` field, the `max_completion_tokens` (or `max_tokens`) field, and the
/// body's size.
///
/// The layer puts one into every request it passes on. `model` is
/// [`Named`](RequestedModel::Named) only when the body is a JSON object with exactly one `model`
/// key whose value is a string; [`Absent`](RequestedModel::Absent) when the body is empty or a
/// JSON object without a `model` key; [`Unreadable`](RequestedModel::Unreadable) otherwise
/// (not JSON, not UTF-8, a syntax error anywhere, not an object, `model` twice, `model` not a
/// string, a body sent with another content type). Pass it on unchanged for the routes whose
/// body carries the model, and a key with a model or provider allowlist refuses what could not
/// be read. (On a route whose upstream picks a default model when none is named, name that
/// default for `Absent`, or pass `Unreadable`.)
///
/// ```
/// use keygate::Requirements;
/// use keygate::tower::JsonModel;
///
/// fn requirements(json: &JsonModel) -> Requirements {
///     Requirements::new().with_model(json.model.clone())
/// }
/// let read = JsonModel::read(br#"{"model":"gpt-4o","max_tokens":1.5}"#);
/// assert_eq!(read.model.name(), Some("gpt-4o"));
/// assert_eq!(read.max_tokens, None); // not a count of tokens: the caller's default estimate
/// assert_eq!(requirements(&read).model.name(), Some("gpt-4o"));
/// let twice = JsonModel::read(br#"{"model":"gpt-4o-mini","model":"gpt-4o"}"#);
/// assert_eq!(twice.model, keygate::RequestedModel::Unreadable);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JsonModel {
    /// The `model` field: absent, this model, or unreadable.
    pub model: RequestedModel<String>,
    /// The `max_completion_tokens` field, else the `max_tokens` field, when it is a
    /// non-negative integer (saturated at `u32::MAX`); `None` when both are absent or not a
    /// count (`1.5`, `-1`, `"10"`), so that the caller applies its default estimate. It never
    /// affects `model`.
    pub max_tokens: Option<u32>,
    /// The body's length in bytes (a rough prompt size, for a token estimate); 0 for a body
    /// that was not read.
    pub body_len: usize,
    /// Whether the body was sent as JSON and read; `false` for a body passed on unread (another
    /// content type, or none), whose model is then absent (empty body) or unreadable.
    pub json: bool,
}

impl JsonModel {
    /// Reads a request body that was sent as JSON.
    ///
    /// The model is read on its own: other fields are skipped whatever their values, but the
    /// whole body must be UTF-8 and strict JSON (RFC 8259), since a body that parsers read
    /// differently has no single model. An empty body asks for no model.
    #[must_use]
    pub fn read(body: &[u8]) -> Self {
        let body_len = body.len();
        if body.is_empty() {
            return Self { model: RequestedModel::Absent, max_tokens: None, body_len, json: true };
        }
        let fields = core::str::from_utf8(body).ok().and_then(|text| serde_json::from_str::<Fields>(text).ok());
        match fields {
            Some(f) => {
                Self { model: f.model, max_tokens: f.max_completion_tokens.or(f.max_tokens), body_len, json: true }
            }
            None => Self { model: RequestedModel::Unreadable, max_tokens: None, body_len, json: true },
        }
    }
}

/// The fields read from the top-level object.
struct Fields {
    model: RequestedModel<String>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
}

impl<'de> de::Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut fields = Fields { model: RequestedModel::Absent, max_tokens: None, max_completion_tokens: None };
        // Keys are compared after unescaping: `"mod\u0065l"` is `model`.
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Model => {
                    let value: &'de RawValue = map.next_value()?;
                    fields.model = match fields.model {
                        // A second `model`: parsers disagree on which one counts.
                        RequestedModel::Absent => match serde_json::from_str::<String>(value.get()) {
                            Ok(model) => RequestedModel::Named(model),
                            Err(_) => RequestedModel::Unreadable,
                        },
                        RequestedModel::Named(_) | RequestedModel::Unreadable => RequestedModel::Unreadable,
                    };
                }
                Key::MaxTokens => {
                    let value: &'de RawValue = map.next_value()?;
                    fields.max_tokens = fields.max_tokens.max(token_count(value));
                }
                Key::MaxCompletionTokens => {
                    let value: &'de RawValue = map.next_value()?;
                    fields.max_completion_tokens = fields.max_completion_tokens.max(token_count(value));
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// A count of tokens: a non-negative integer, saturated at `u32::MAX`.
fn token_count(value: &RawValue) -> Option<u32> {
    let count = serde_json::from_str::<u64>(value.get()).ok()?;
    Some(u32::try_from(count).unwrap_or(u32::MAX))
}

/// A top-level key, matched without allocating.
enum Key {
    Model,
    MaxTokens,
    MaxCompletionTokens,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "model" => Key::Model,
            "max_tokens" => Key::MaxTokens,
            "max_completion_tokens" => Key::MaxCompletionTokens,
            _ => Key::Other,
        })
    }
}

/// Whether a request's body is JSON: exactly one `Content-Type` header whose media type is
/// `application/json` in any case, with any parameters, and a `charset`, if named, of UTF-8.
fn is_json(headers: &http::HeaderMap) -> bool {
    let Some((essence, parameters)) = media_type(headers) else {
        return false;
    };
    essence.eq_ignore_ascii_case("application/json")
        && parameters.split(';').all(|parameter| {
            let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            !name.trim_matches([' ', '\t']).eq_ignore_ascii_case("charset")
                || value.trim_matches([' ', '\t', '"']).eq_ignore_ascii_case("utf-8")
        })
}

/// The body reader of [`KeyGateLayer::read_json_model`](super::KeyGateLayer::read_json_model):
/// reads the model from JSON request bodies (as OpenAI-compatible APIs carry it), after the key
/// passed and before the classifier runs, so the gate can check the model and provider
/// allowlists and estimate tokens before the request runs.
///
/// A JSON body (see [`JsonModel`]) is buffered whole, however it arrives (one piece or
/// chunked), up to `max_bytes`: a longer one is refused with `413`, one that does not arrive in
/// time with `408`, one that breaks off with `400`, and none of them reaches the inner service.
/// Any other body is passed on unread, with the model
/// [`Unreadable`](RequestedModel::Unreadable) unless the body is empty. Every request passed on
/// carries a [`JsonModel`].
#[derive(Debug, Clone, Copy)]
pub struct ReadJsonModel {
    max_bytes: usize,
}

impl ReadJsonModel {
    /// Buffers JSON bodies of at most `max_bytes`.
    #[must_use]
    pub const fn new(max_bytes: usize) -> Self {
        Self { max_bytes }
    }
}

impl<B> ReadBody<B> for ReadJsonModel
where
    B: Body + From<Bytes> + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn core::error::Error + Send + Sync>>,
{
    fn read(&self, request: Request<B>) -> impl Future<Output = Result<Request<B>, BodyRefused>> + Send {
        let max = self.max_bytes;
        let json = is_json(request.headers());
        async move {
            let (mut parts, body) = request.into_parts();
            if !json {
                // Not read: whatever model such a body names is unknown.
                let model = if body.is_end_stream() { RequestedModel::Absent } else { RequestedModel::Unreadable };
                parts.extensions.insert(JsonModel { model, max_tokens: None, body_len: 0, json: false });
                return Ok(Request::from_parts(parts, body));
            }
            let bytes = match http_body_util::Limited::new(body, max).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
                    return Err(BodyRefused::TooLarge);
                }
                Err(error) => return Err(BodyRefused::of(&*error)),
            };
            parts.extensions.insert(JsonModel::read(&bytes));
            Ok(Request::from_parts(parts, B::from(bytes)))
        }
    }
}
