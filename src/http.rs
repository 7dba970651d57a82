//! HTTP without a framework: the bearer token in, the status, headers and body of a denial out.
//!
//! # Reading the key
//!
//! [`bearer_token`] follows RFC 6750 §2.1 (`Authorization: Bearer <b64token>`): the scheme is
//! case-insensitive, one or more spaces separate it from the token, and whitespace around the
//! whole value is tolerated. Anything else is refused: a header that is absent, empty, or of
//! another scheme carries no bearer key (`missing_api_key`); a bearer value that is not a single
//! `b64token` (`1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`) or is longer than
//! any key format accepts is `invalid_api_key`.
//!
//! # Answering a denial
//!
//! A [`Denial`] gives everything the response needs: [`Denial::status`], [`Denial::headers`]
//! (`www-authenticate` per RFC 6750 as [`Challenge`] describes, `retry-after`) and
//! [`Denial::body`], the OpenAI-compatible JSON error. None of it allocates: values implement
//! [`Display`](core::fmt::Display), so they go into a `String` with `alloc` or into a caller's
//! buffer with [`write_into`]. With `serde`, [`ErrorBody`] is also `Serialize`.
//!
//! ```
//! use keygate::http::{ErrorBody, Realm, bearer_token};
//! let realm = Realm::new("api.example.com")?;
//! let denial = bearer_token(None).unwrap_err();
//! assert_eq!(denial.status(), 401);
//! for header in denial.headers().with_realm(realm) {
//!     assert_eq!((header.name(), header.value().to_string().as_str()),
//!                ("www-authenticate", r#"Bearer realm="api.example.com""#));
//! }
//! let mut buf = [0u8; ErrorBody::MAX_LEN];
//! let body = keygate::http::write_into(&mut buf, denial.body())?;
//! assert!(body.contains(r#""code":"missing_api_key""#));
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```

use crate::format::MAX_TOKEN_LEN;
use crate::{Denial, DenialCode};

mod response;

pub use response::{
    BufferTooSmall, Challenge, DenialHeader, DenialHeaders, ErrorBody, HeaderValue, InvalidRealm, Realm, write_into,
};

/// Extracts the bearer token from the raw value of an `Authorization` header (`None` if the
/// request has no such header).
///
/// ```
/// use keygate::DenialCode;
/// use keygate::http::bearer_token;
/// assert_eq!(bearer_token(Some(b"Bearer abc.def")), Ok("abc.def"));
/// assert_eq!(bearer_token(Some(b"  bEaReR   abc  ")), Ok("abc"));
/// assert_eq!(bearer_token(None).unwrap_err().code(), DenialCode::MissingApiKey);
/// assert_eq!(bearer_token(Some(b"Basic dXNlcjpwYXNz")).unwrap_err().code(), DenialCode::MissingApiKey);
/// assert_eq!(bearer_token(Some(b"Bearer a b")).unwrap_err().code(), DenialCode::InvalidApiKey);
/// ```
///
/// # Errors
///
/// A [`Denial`] with `missing_api_key` or `invalid_api_key` as described in the module docs.
pub fn bearer_token(header: Option<&[u8]>) -> Result<&str, Denial> {
    let missing = || Denial::new(DenialCode::MissingApiKey);
    let invalid = || Denial::new(DenialCode::InvalidApiKey);
    let value = header.ok_or_else(missing)?.trim_ascii();
    let (scheme, rest) = value.split_at_checked(6).ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(missing());
    }
    let token = rest.trim_ascii_start();
    if token.is_empty() {
        return Err(missing());
    }
    if token.len() == rest.len() || !rest.starts_with(b" ") {
        // `BearerX…` is another scheme; a tab is not the separator RFC 7235 allows.
        return Err(missing());
    }
    if token.len() > MAX_TOKEN_LEN || !crate::format::is_b64token(token) {
        return Err(invalid());
    }
    // b64token is ASCII, so this always succeeds.
    core::str::from_utf8(token).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn rfc6750_cases() {
        let ok: &[(&[u8], &str)] = &[
            (b"Bearer tok", "tok"),
            (b"bearer tok", "tok"),
            (b"BEARER tok==", "tok=="),
            (b"\t Bearer  tok \t", "tok"),
            (b"Bearer a-._~+/Z9", "a-._~+/Z9"),
        ];
        for (h, t) in ok {
            assert_eq!(bearer_token(Some(h)), Ok(*t));
        }
        let missing: &[&[u8]] =
            &[b"", b"   ", b"Bearer", b"Bearer   ", b"Basic abc", b"Bearertok", b"Bearer\ttok", b"Token tok"];
        for h in missing {
            assert_eq!(
                bearer_token(Some(h)).unwrap_err().code(),
                DenialCode::MissingApiKey,
                "{:?}",
                core::str::from_utf8(h)
            );
        }
        let invalid: &[&[u8]] =
            &[b"Bearer a b", b"Bearer a,b", b"Bearer ===", b"Bearer a=b", b"Bearer \xff\xfe", b"Bearer t\x00k"];
        for h in invalid {
            assert_eq!(bearer_token(Some(h)).unwrap_err().code(), DenialCode::InvalidApiKey, "{h:?}");
        }
        let long = [b'a'; MAX_TOKEN_LEN + 1];
        let mut h: Vec<u8> = b"Bearer ".to_vec();
        h.extend_from_slice(&long);
        assert_eq!(bearer_token(Some(&h)).unwrap_err().code(), DenialCode::InvalidApiKey);
    }
}
