//! Granted scopes: [`Scope`] and the normalised set [`Scopes`] a key holds (needs `alloc`).

#![cfg(feature = "alloc")]

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use super::scope::{ScopeError, ScopeKind, check_scope, grant_permits, list_items};
use crate::RequiredScopes;

/// One granted scope, validated and lowercased: `read`, `keys:write`, `keys:*` or `*`.
///
/// A scope is 1 to [`MAX_SCOPE_LEN`](crate::policy::MAX_SCOPE_LEN) bytes of `:`-separated segments, each
/// made of ASCII letters, digits, `.`, `_`, `-` and `/`. It is case-insensitive: it is stored
/// ASCII-lowercased, so `Keys:Read` and `keys:read` are the same scope.
///
/// A plain scope grants exactly itself. A wildcard grants every scope below its prefix:
/// `keys:*` grants `keys:read` and `keys:admin:write` but not `keys` itself, and `*` grants
/// everything. A plain scope never grants a narrower one (`keys` does not grant `keys:read`), and
/// a narrower grant never satisfies a broader requirement.
///
/// ```
/// use keygate::policy::Scope;
/// let s = Scope::new(" Keys:* ")?;
/// assert_eq!(s.as_str(), "keys:*");
/// assert!(s.is_wildcard());
/// # Ok::<(), keygate::policy::ScopeError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    text: Box<str>,
    wildcard: bool,
}

impl Scope {
    /// Parses one scope; surrounding ASCII whitespace is trimmed.
    ///
    /// # Errors
    ///
    /// A [`ScopeError`] with index 0 saying what is wrong.
    pub fn new(scope: &str) -> Result<Self, ScopeError> {
        Self::parse_at(scope, 0)
    }

    pub(crate) fn parse_at(scope: &str, index: usize) -> Result<Self, ScopeError> {
        let s = scope.trim_ascii();
        let kind = check_scope(s, index)?;
        Ok(Self { text: s.to_ascii_lowercase().into_boxed_str(), wildcard: kind == ScopeKind::Wildcard })
    }

    /// The normalised text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this is `*` or `prefix:*`.
    #[must_use]
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    #[inline]
    fn permits(&self, required: &[u8]) -> bool {
        let kind = if self.wildcard { ScopeKind::Wildcard } else { ScopeKind::Exact };
        grant_permits(self.text.as_bytes(), kind, required)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({:?})", &*self.text)
    }
}

impl FromStr for Scope {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, ScopeError> {
        Self::new(s)
    }
}

/// The scopes granted to a key: normalised, deduplicated and sorted.
///
/// Parsed from any of the forms a management API receives:
///
/// - a space- or comma-separated string: `"read write"`, `"read,write"`, `"read, write"`;
/// - a string array (with `serde`): `["read", "write"]`, each element exactly one scope;
/// - a JSON array encoded as a string (as the AI Stats API returns it): `"[\"read\",\"write\"]"`.
///
/// Every scope is validated; an invalid one is an error naming it ([`ScopeError`]), never
/// silently dropped. Scopes are lowercased (see [`Scope`]), duplicates removed, and the set kept
/// in sorted order, so two sets with the same grants are equal and print the same.
/// At most [`Scopes::MAX`] scopes.
///
/// With `serde`, a `Scopes` deserializes from a string (any form above) or a sequence of strings,
/// and serializes as a sequence of strings. [`Display`](fmt::Display) gives the space-separated
/// form (RFC 6749's `scope` syntax), which parses back to an equal set.
///
/// ```
/// use keygate::{RequiredScopes, Scopes};
/// let granted = Scopes::parse("[\"keys:*\", \"Read\"]")?;
/// assert_eq!(granted, Scopes::parse("read,keys:*")?);
/// assert_eq!(granted.to_string(), "keys:* read");
/// assert!(granted.permits(&"keys:write read".parse()?));
/// assert!(!granted.permits(&"write".parse()?));
/// # Ok::<(), keygate::policy::ScopeError>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// The most scopes a key may hold.
    pub const MAX: usize = 64;

    /// No scopes.
    #[must_use]
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Parses a space- or comma-separated list, or (when the text starts with `[`) a JSON array
    /// of strings. Empty text is the empty set.
    ///
    /// # Errors
    ///
    /// A [`ScopeError`] naming the first invalid scope, [`ScopeError::Json`] for a malformed
    /// array, [`ScopeError::TooMany`] past [`Scopes::MAX`].
    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        let trimmed = text.trim_ascii_start();
        if trimmed.starts_with('[') {
            let offset = text.len() - trimmed.len();
            let items = json_string_array(trimmed).map_err(|at| ScopeError::Json { at: offset + at })?;
            Self::from_scopes(items.iter().map(String::as_str))
        } else {
            Self::collect(list_items(text).enumerate().map(|(i, s)| Scope::parse_at(s, i)))
        }
    }

    /// Builds the set from separate scopes, each exactly one scope (surrounding ASCII
    /// whitespace is trimmed).
    ///
    /// # Errors
    ///
    /// A [`ScopeError`] naming the first invalid scope (an empty item is
    /// [`ScopeError::Empty`]); [`ScopeError::TooMany`] past [`Scopes::MAX`].
    pub fn from_scopes<S: AsRef<str>>(scopes: impl IntoIterator<Item = S>) -> Result<Self, ScopeError> {
        Self::collect(scopes.into_iter().enumerate().map(|(i, s)| Scope::parse_at(s.as_ref(), i)))
    }

    fn collect(scopes: impl Iterator<Item = Result<Scope, ScopeError>>) -> Result<Self, ScopeError> {
        let mut v = scopes.collect::<Result<Vec<_>, _>>()?;
        v.sort_unstable();
        v.dedup();
        if v.len() > Self::MAX {
            return Err(ScopeError::TooMany { max: Self::MAX });
        }
        Ok(Self(v))
    }

    /// Whether every required scope is granted (true when none is required).
    #[must_use]
    #[inline]
    pub fn permits(&self, required: &RequiredScopes) -> bool {
        required.iter_bytes().all(|r| self.permits_one(r))
    }

    #[inline]
    fn permits_one(&self, required: &[u8]) -> bool {
        self.0.iter().any(|g| g.permits(required))
    }

    /// The required scopes that are not granted, in the order required.
    pub fn missing<'r>(&self, required: &'r RequiredScopes) -> impl Iterator<Item = &'r str> {
        required.iter().filter(|r| !self.permits_one(r.as_bytes()))
    }

    /// The scopes, sorted.
    #[must_use]
    pub fn as_slice(&self) -> &[Scope] {
        &self.0
    }

    /// The scopes, sorted.
    pub fn iter(&self) -> core::slice::Iter<'_, Scope> {
        self.0.iter()
    }

    /// The number of scopes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no scope is granted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Scopes {
    type Item = &'a Scope;
    type IntoIter = core::slice::Iter<'a, Scope>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl FromStr for Scopes {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, ScopeError> {
        Self::parse(s)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(s.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(Scope::as_str)).finish()
    }
}

/// Parses a JSON array of strings (RFC 8259: whitespace, escapes, surrogate pairs), or returns
/// the byte offset where it stops being one.
fn json_string_array(s: &str) -> Result<Vec<String>, usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let ws = |i: &mut usize| {
        while b.get(*i).is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r')) {
            *i += 1;
        }
    };
    let mut out = Vec::new();
    if b.first() != Some(&b'[') {
        return Err(0);
    }
    i += 1;
    ws(&mut i);
    if b.get(i) == Some(&b']') {
        i += 1;
    } else {
        loop {
            ws(&mut i);
            out.push(json_string(s, &mut i)?);
            ws(&mut i);
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b']') => {
                    i += 1;
                    break;
                }
                _ => return Err(i),
            }
        }
    }
    ws(&mut i);
    if i == b.len() { Ok(out) } else { Err(i) }
}

/// One JSON string starting at `*i` (which must be `"`); leaves `*i` after the closing quote.
fn json_string(s: &str, i: &mut usize) -> Result<String, usize> {
    let b = s.as_bytes();
    if b.get(*i) != Some(&b'"') {
        return Err(*i);
    }
    *i += 1;
    let mut out = String::new();
    loop {
        let start = *i;
        while b.get(*i).is_some_and(|&c| c != b'"' && c != b'\\' && c >= 0x20) {
            *i += 1;
        }
        // `start..*i` ends at an ASCII byte or the end, so it is on a char boundary.
        out.push_str(s.get(start..*i).ok_or(start)?);
        match b.get(*i) {
            Some(b'"') => {
                *i += 1;
                return Ok(out);
            }
            Some(b'\\') => {
                let at = *i;
                *i += 2;
                let c = match b.get(at + 1) {
                    Some(b'"') => '"',
                    Some(b'\\') => '\\',
                    Some(b'/') => '/',
                    Some(b'b') => '\u{8}',
                    Some(b'f') => '\u{c}',
                    Some(b'n') => '\n',
                    Some(b'r') => '\r',
                    Some(b't') => '\t',
                    Some(b'u') => {
                        let hi = hex4(b, *i).ok_or(at)?;
                        *i += 4;
                        let code = if (0xD800..0xDC00).contains(&hi) {
                            // A high surrogate must be followed by `\u` and a low surrogate.
                            let lo = match (b.get(*i), b.get(*i + 1)) {
                                (Some(b'\\'), Some(b'u')) => hex4(b, *i + 2).ok_or(at)?,
                                _ => return Err(at),
                            };
                            if !(0xDC00..0xE000).contains(&lo) {
                                return Err(at);
                            }
                            *i += 6;
                            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                        } else {
                            hi
                        };
                        char::from_u32(code).ok_or(at)?
                    }
                    _ => return Err(at),
                };
                out.push(c);
            }
            // A control character or the end of the text.
            _ => return Err(*i),
        }
    }
}

fn hex4(b: &[u8], i: usize) -> Option<u32> {
    let digits = b.get(i..i + 4)?;
    digits.iter().try_fold(0u32, |acc, &c| Some(acc * 16 + char::from(c).to_digit(16)?))
}

#[cfg(feature = "serde")]
impl serde::Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(Scope::as_str))
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Scopes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Scopes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "scopes as a string (\"read write\", \"read,write\" or \"[\\\"read\\\"]\") or an array of strings",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scopes, E> {
                Scopes::parse(v).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scopes, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    if items.len() == Scopes::MAX {
                        // Stop reading an oversized array early; duplicates are not worth the wait.
                        return Err(serde::de::Error::custom(ScopeError::TooMany { max: Scopes::MAX }));
                    }
                    items.push(item);
                }
                Scopes::from_scopes(items).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scope;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scope such as \"keys:read\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scope, E> {
                Scope::new(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests;
