//! Everything a server sends for a [`Denial`]: status, headers and JSON body, without a heap.

use core::fmt;

use crate::limit::{InlineHeaderValue, RateLimitHeaders, RateLimitStatus};

use crate::{Denial, DenialCode};

/// The OpenAI-compatible JSON body of a denial:
/// `{"error":{"message":"…","type":"…","code":"…","param":null}}`.
///
/// [`Display`](fmt::Display) writes the JSON text (into any [`fmt::Write`], so `no_std` servers
/// can use [`write_into`] and a stack buffer); with `serde` it is also `serde::Serialize` with
/// the same shape, to hand to a framework's JSON response. The message is the code's fixed text
/// ([`DenialCode::message`]) and never contains request data.
///
/// ```
/// use keygate::{Denial, DenialCode};
/// let denial = Denial::new(DenialCode::ModelNotAllowed);
/// assert_eq!(
///     denial.body().to_string(),
///     r#"{"error":{"message":"This API key may not use the requested model.","type":"permission_error","code":"model_not_allowed","param":null}}"#
/// );
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ErrorBody<'a> {
    denial: &'a Denial,
}

impl ErrorBody<'_> {
    /// The media type of the body.
    pub const CONTENT_TYPE: &'static str = "application/json";
    /// An upper bound on the length of any body, in bytes: a buffer this large always suffices.
    pub const MAX_LEN: usize = 256;

    /// The `error.message` value.
    #[must_use]
    pub fn message(&self) -> &'static str {
        self.denial.code().message()
    }

    /// The `error.type` value.
    #[must_use]
    pub fn error_type(&self) -> &'static str {
        self.denial.code().error_type()
    }

    /// The `error.code` value.
    #[must_use]
    pub fn code(&self) -> &'static str {
        self.denial.code().as_str()
    }
}

impl fmt::Display for ErrorBody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"{"error":{"message":""#)?;
        write_json_str(f, self.message())?;
        f.write_str(r#"","type":""#)?;
        write_json_str(f, self.error_type())?;
        f.write_str(r#"","code":""#)?;
        write_json_str(f, self.code())?;
        f.write_str(r#"","param":null}}"#)
    }
}

/// The inside of a JSON string literal: `"` and `\` escaped, control characters as `\u00XX`.
fn write_json_str(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    let mut rest = s;
    while let Some(i) = rest.find(|c: char| c == '"' || c == '\\' || c < ' ') {
        let (plain, tail) = rest.split_at(i);
        f.write_str(plain)?;
        let c = tail.bytes().next().unwrap_or(b' ');
        match c {
            b'"' => f.write_str("\\\"")?,
            b'\\' => f.write_str("\\\\")?,
            _ => write!(f, "\\u{:04x}", c)?,
        }
        rest = tail.get(1..).unwrap_or("");
    }
    f.write_str(rest)
}

#[cfg(feature = "serde")]
impl serde::Serialize for ErrorBody<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Inner<'b>(&'b ErrorBody<'b>);
        impl serde::Serialize for Inner<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut e = s.serialize_struct("Error", 4)?;
                e.serialize_field("message", self.0.message())?;
                e.serialize_field("type", self.0.error_type())?;
                e.serialize_field("code", self.0.code())?;
                e.serialize_field("param", &None::<&str>)?;
                e.end()
            }
        }
        let mut body = s.serialize_struct("ErrorBody", 1)?;
        body.serialize_field("error", &Inner(self))?;
        body.end()
    }
}

/// The `realm` of a `WWW-Authenticate` challenge: 1 to 128 printable ASCII characters (spaces
/// allowed), without `"` or `\`, so it is a valid quoted-string as it is.
///
/// ```
/// use keygate::http::Realm;
/// const REALM: Realm<'static> = match Realm::new("api.example.com") {
///     Ok(r) => r,
///     Err(_) => panic!("invalid realm"),
/// };
/// assert_eq!(REALM.as_str(), "api.example.com");
/// assert!(Realm::new("a\"b").is_err() && Realm::new("a\r\nb").is_err() && Realm::new("").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Realm<'a>(&'a str);

/// The text cannot be a realm: empty, longer than 128 bytes, or with a character other than
/// printable ASCII, or with `"` or `\`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a realm is 1 to 128 printable ASCII characters without '\"' or '\\'")]
pub struct InvalidRealm;

impl<'a> Realm<'a> {
    /// Checks `realm`.
    ///
    /// # Errors
    ///
    /// [`InvalidRealm`] as described on the type.
    pub const fn new(realm: &'a str) -> Result<Self, InvalidRealm> {
        let b = realm.as_bytes();
        if b.is_empty() || b.len() > 128 {
            return Err(InvalidRealm);
        }
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c < 0x20 || c > 0x7e || c == b'"' || c == b'\\' {
                return Err(InvalidRealm);
            }
            i += 1;
        }
        Ok(Self(realm))
    }

    /// The realm's text.
    #[must_use]
    pub const fn as_str(&self) -> &'a str {
        self.0
    }
}

/// The value of a denial's `WWW-Authenticate` header: an RFC 6750 `Bearer` challenge.
///
/// | denial | challenge |
/// |---|---|
/// | `missing_api_key` | `Bearer realm="…"` (no `error`: RFC 6750 §3.1, the request had no credentials) |
/// | other 401s | `Bearer realm="…", error="invalid_token"` |
/// | `insufficient_scope` | `Bearer realm="…", error="insufficient_scope", scope="a b"` |
/// | other 403s, 429, 503 | none |
///
/// The other 403s (`key_blocked`, `ip_not_allowed`, `model_not_allowed`,
/// `provider_not_allowed`) carry no challenge: the token is valid and RFC 6750 has no error code
/// for a refusal that another token with more scope would not fix, and a challenge would invite
/// the client to re-authenticate in vain. The body's `code` says why. The `realm` is omitted
/// unless set with [`Challenge::with_realm`]; `scope` lists every scope the request required
/// (RFC 6750 §3), when the denial names them.
///
/// ```
/// use keygate::{Denial, DenialCode, RequiredScopes};
/// use keygate::http::Realm;
/// let realm = Realm::new("api")?;
/// let scopes: RequiredScopes = "keys:read keys:write".parse()?;
/// let denial = Denial::new(DenialCode::InsufficientScope).with_required_scopes(scopes);
/// let challenge = denial.challenge().map(|c| c.with_realm(realm).to_string());
/// assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="api", error="insufficient_scope", scope="keys:read keys:write""#));
/// assert!(Denial::new(DenialCode::KeyBlocked).challenge().is_none());
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Challenge<'a> {
    denial: &'a Denial,
    realm: Option<Realm<'a>>,
}

impl<'a> Challenge<'a> {
    /// The same challenge with a `realm` attribute.
    #[must_use]
    pub const fn with_realm(mut self, realm: Realm<'a>) -> Self {
        self.realm = Some(realm);
        self
    }
}

impl fmt::Display for Challenge<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bearer")?;
        let mut sep = " ";
        if let Some(realm) = self.realm {
            write!(f, "{sep}realm=\"{}\"", realm.as_str())?;
            sep = ", ";
        }
        match self.denial.code() {
            DenialCode::MissingApiKey => {}
            DenialCode::InsufficientScope => {
                write!(f, "{sep}error=\"insufficient_scope\"")?;
                // Scopes are `[a-z0-9._/:-]` and single spaces: a valid quoted-string as they are.
                if let Some(scopes) = self.denial.required_scopes().filter(|s| !s.is_empty()) {
                    write!(f, ", scope=\"{}\"", scopes.as_str())?;
                }
            }
            _ => write!(f, "{sep}error=\"invalid_token\"")?,
        }
        Ok(())
    }
}

/// One response header of a denial: a lowercase name and a value that writes itself.
#[derive(Debug, Clone, Copy)]
pub struct DenialHeader<'a> {
    name: &'static str,
    value: HeaderValue<'a>,
}

impl<'a> DenialHeader<'a> {
    /// The header name, lowercase (as HTTP/2 requires and `http::HeaderName::from_static` accepts).
    #[must_use]
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The header value; [`Display`](fmt::Display) writes it (`to_string()` with `alloc`,
    /// [`write_into`] without).
    #[must_use]
    pub const fn value(&self) -> HeaderValue<'a> {
        self.value
    }
}

/// The value of a [`DenialHeader`]; its [`Display`](fmt::Display) writes visible ASCII and
/// spaces only.
#[derive(Debug, Clone, Copy)]
pub struct HeaderValue<'a>(Value<'a>);

impl HeaderValue<'_> {
    /// An upper bound on the length of any value, in bytes (the longest is an
    /// `insufficient_scope` challenge with a 128-byte realm and 64 bytes of scopes).
    pub const MAX_LEN: usize = 256;
}

#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Challenge(Challenge<'a>),
    Number(u64),
    Inline(InlineHeaderValue),
}

impl fmt::Display for HeaderValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Value::Challenge(c) => fmt::Display::fmt(c, f),
            Value::Number(n) => write!(f, "{n}"),
            Value::Inline(v) => fmt::Display::fmt(v, f),
        }
    }
}

/// The headers that go with a denial, in order: `www-authenticate` (see [`Challenge`]);
/// `retry-after` (whole seconds, rounded up) and `retry-after-ms` (milliseconds, rounded up; the
/// OpenAI SDKs read it first) when the denial has a retry time; and the six `x-ratelimit-*`
/// headers when it carries a [`RateLimitStatus`](crate::limit::RateLimitStatus). Content-Type is not
/// among them: send [`ErrorBody::CONTENT_TYPE`] with the body.
///
/// ```
/// use keygate::{Denial, DenialCode};
/// use keygate::http::Realm;
/// let denial = Denial::new(DenialCode::RevokedApiKey);
/// let headers: Vec<(&str, String)> =
///     denial.headers().with_realm(Realm::new("api")?).map(|h| (h.name(), h.value().to_string())).collect();
/// assert_eq!(headers, [("www-authenticate", r#"Bearer realm="api", error="invalid_token""#.to_string())]);
/// # Ok::<(), keygate::http::InvalidRealm>(())
/// ```
#[derive(Debug, Clone)]
pub struct DenialHeaders<'a> {
    denial: &'a Denial,
    realm: Option<Realm<'a>>,
    next: Slot,
    rate_limit: Option<RateLimitHeaders>,
}

/// The headers a denial may carry, in the order they are produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    WwwAuthenticate,
    RetryAfter,
    RetryAfterMs,
    RateLimit,
    End,
}

impl Slot {
    const fn after(self) -> Self {
        match self {
            Self::WwwAuthenticate => Self::RetryAfter,
            Self::RetryAfter => Self::RetryAfterMs,
            Self::RetryAfterMs => Self::RateLimit,
            Self::RateLimit | Self::End => Self::End,
        }
    }
}

impl<'a> DenialHeaders<'a> {
    /// The same headers with a `realm` in the challenge.
    #[must_use]
    pub const fn with_realm(mut self, realm: Realm<'a>) -> Self {
        self.realm = Some(realm);
        self
    }

    fn header(&self, slot: Slot) -> Option<DenialHeader<'a>> {
        let d = self.denial;
        let (name, value) = match slot {
            Slot::WwwAuthenticate => {
                let mut challenge = d.challenge()?;
                challenge.realm = self.realm;
                ("www-authenticate", Value::Challenge(challenge))
            }
            Slot::RetryAfter => ("retry-after", Value::Number(d.retry_after_secs()?)),
            Slot::RetryAfterMs => {
                let after = d.retry_after()?;
                let ms = after.as_millis().saturating_add(u128::from(after.subsec_nanos() % 1_000_000 != 0));
                ("retry-after-ms", Value::Number(u64::try_from(ms).unwrap_or(u64::MAX)))
            }
            Slot::RateLimit | Slot::End => return None,
        };
        Some(DenialHeader { name, value: HeaderValue(value) })
    }
}

impl<'a> Iterator for DenialHeaders<'a> {
    type Item = DenialHeader<'a>;
    fn next(&mut self) -> Option<DenialHeader<'a>> {
        while self.next != Slot::End {
            if self.next == Slot::RateLimit {
                match self.rate_limit.as_mut().and_then(Iterator::next) {
                    Some((name, value)) => {
                        return Some(DenialHeader { name, value: HeaderValue(Value::Inline(value)) });
                    }
                    None => self.next = Slot::End,
                }
                continue;
            }
            let slot = self.next;
            self.next = slot.after();
            if let Some(h) = self.header(slot) {
                return Some(h);
            }
        }
        None
    }
}

impl core::iter::FusedIterator for DenialHeaders<'_> {}

impl Denial {
    /// The OpenAI-compatible JSON body.
    pub const fn body(&self) -> ErrorBody<'_> {
        ErrorBody { denial: self }
    }

    /// The `WWW-Authenticate` challenge: for 401s and `insufficient_scope`, `None` otherwise.
    #[must_use]
    pub fn challenge(&self) -> Option<Challenge<'_>> {
        let needs = self.status() == 401 || self.code() == DenialCode::InsufficientScope;
        needs.then_some(Challenge { denial: self, realm: None })
    }

    /// The response headers (name, value), in a fixed order.
    pub fn headers(&self) -> DenialHeaders<'_> {
        DenialHeaders {
            denial: self,
            realm: None,
            next: Slot::WwwAuthenticate,
            rate_limit: self.rate_limit().map(RateLimitStatus::headers),
        }
    }
}

/// `buf` is too small for what was to be written into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("buffer too small")]
pub struct BufferTooSmall;

/// Writes `value` (a body, header value or challenge) into `buf`, for servers without a heap.
///
/// ```
/// use keygate::{Denial, DenialCode, http::write_into};
/// use keygate::http::ErrorBody;
/// let denial = Denial::new(DenialCode::MissingApiKey);
/// let mut buf = [0u8; ErrorBody::MAX_LEN];
/// let body = write_into(&mut buf, denial.body())?;
/// assert!(body.starts_with(r#"{"error":{"message":"No API key provided."#));
/// # Ok::<(), keygate::http::BufferTooSmall>(())
/// ```
///
/// # Errors
///
/// [`BufferTooSmall`] if the text does not fit.
pub fn write_into(buf: &mut [u8], value: impl fmt::Display) -> Result<&str, BufferTooSmall> {
    struct Cursor<'b> {
        buf: &'b mut [u8],
        len: usize,
    }
    impl fmt::Write for Cursor<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
            self.buf.get_mut(self.len..end).ok_or(fmt::Error)?.copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
    let mut cursor = Cursor { buf, len: 0 };
    fmt::write(&mut cursor, format_args!("{value}")).map_err(|_| BufferTooSmall)?;
    let Cursor { buf, len } = cursor;
    // Only whole `str`s were copied in.
    buf.get(..len).and_then(|b| core::str::from_utf8(b).ok()).ok_or(BufferTooSmall)
}

#[cfg(test)]
mod tests;
