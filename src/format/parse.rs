//! What parsing yields: a presented token split into its parts ([`ParsedKey`], zero-copy), or
//! the part that did not fit ([`ParseError`]). Each format's `parse` builds it.

use core::fmt;

use super::MAX_ID_LEN;
use super::id::KeyId;
#[cfg(feature = "alloc")]
use super::id::{KeyKind, MAX_TAG_LEN};
use super::inline::Inline;

/// Why a token did not parse. Every variant becomes `invalid_api_key` at the verification stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Longer than the format allows (checked before anything else), or shorter than it needs.
    #[error("token length does not fit the format")]
    Length,
    /// The prefix does not match.
    #[error("token prefix does not match")]
    Prefix,
    /// The version does not match.
    #[error("token version does not match")]
    Version,
    /// The kind is not one the format allows.
    #[error("token kind is not allowed")]
    Kind,
    /// The kid has the wrong length or characters.
    #[error("token kid is malformed")]
    Kid,
    /// The secret (or opaque body) has the wrong length, characters or a non-canonical ending.
    #[error("token secret is malformed")]
    Secret,
    /// The checksum does not match the rest of the token.
    #[error("token checksum does not match")]
    Checksum,
}

/// A presented token split into its parts, borrowing from the token (zero-copy).
///
/// It holds the token and the offsets of its parts; the accessors slice on demand. Its `Debug`
/// output shows the public parts only, never the secret.
#[derive(Clone, Copy)]
pub struct ParsedKey<'a> {
    pub(super) token: &'a str,
    pub(super) prefix_end: u8,
    pub(super) version: (u8, u8),
    pub(super) kind: (u8, u8),
    /// `(0, 0)` for opaque keys.
    pub(super) kid: (u8, u8),
    pub(super) secret: (u8, u8),
}

impl<'a> ParsedKey<'a> {
    fn part(&self, (start, end): (u8, u8)) -> &'a str {
        // Offsets come from `parse`, which validated that every part is ASCII and in bounds.
        self.token.get(usize::from(start)..usize::from(end)).unwrap_or_default()
    }

    /// The configured prefix the token starts with (`aistats`, `sk-aisa-`).
    #[must_use]
    pub fn prefix(&self) -> &'a str {
        self.part((0, self.prefix_end))
    }

    /// The version tag (`v1`); empty for opaque keys.
    #[must_use]
    pub fn version(&self) -> &'a str {
        self.part(self.version)
    }

    /// The kind tag (`sk`); `sk` for opaque keys.
    #[must_use]
    pub fn kind(&self) -> &'a str {
        if self.is_opaque() { "sk" } else { self.part(self.kind) }
    }

    /// The public key id of a selector key; `None` for opaque keys.
    #[must_use]
    pub fn kid(&self) -> Option<&'a str> {
        (!self.is_opaque()).then(|| self.part(self.kid))
    }

    /// Whether this key presents `kind`, compared as one word.
    #[cfg(feature = "alloc")]
    pub(crate) fn is_kind(&self, kind: KeyKind) -> bool {
        if self.is_opaque() {
            return kind == KeyKind::STANDARD;
        }
        let tag = self.token.as_bytes().get(usize::from(self.kind.0)..usize::from(self.kind.1)).unwrap_or_default();
        let mut word = [0u8; MAX_TAG_LEN];
        for (w, t) in word.iter_mut().zip(tag) {
            *w = *t;
        }
        (usize::from(kind.0.len) == tag.len()) & (word == kind.0.bytes)
    }

    /// The kid as a [`KeyId`], without validating again what `parse` validated.
    pub(crate) fn key_id(&self) -> Option<KeyId> {
        if self.is_opaque() {
            return None;
        }
        let kid = self.token.as_bytes().get(usize::from(self.kid.0)..usize::from(self.kid.1))?;
        let mut bytes = [0u8; MAX_ID_LEN];
        for (b, k) in bytes.iter_mut().zip(kid) {
            *b = *k;
        }
        Some(KeyId(Inline { len: self.kid.1 - self.kid.0, bytes }))
    }

    /// The part of the token that is safe to display, as a key's `prefix` shows it: everything
    /// up to and including the kid (`aistats_v1_sk_<kid>`), or an opaque key's prefix and the
    /// first four characters of its body (`sk-aisa-AbC1`).
    #[must_use]
    pub fn display_prefix(&self) -> &'a str {
        let end = if self.is_opaque() { usize::from(self.prefix_end) + 4 } else { usize::from(self.kid.1) };
        self.token.get(..end.min(self.token.len())).unwrap_or_default()
    }

    /// Whether this is an opaque key (looked up by digest, not by kid).
    #[must_use]
    pub fn is_opaque(&self) -> bool {
        self.kid.1 == 0
    }

    /// The bytes that are digested: the secret field (selector) or the whole token (opaque).
    ///
    /// This is secret material; do not log it.
    #[must_use]
    pub fn secret(&self) -> &'a [u8] {
        self.token.as_bytes().get(usize::from(self.secret.0)..usize::from(self.secret.1)).unwrap_or_default()
    }

    /// The whole token. This is secret material; do not log it.
    #[must_use]
    pub fn token(&self) -> &'a str {
        self.token
    }
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedKey")
            .field("prefix", &self.prefix())
            .field("version", &self.version())
            .field("kind", &self.kind())
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use crate::format::{KeyFormat, KeyKind, OpaqueFormat, SelectorFormat};

    #[test]
    fn is_kind_compares_the_whole_tag() {
        let f: KeyFormat = SelectorFormat::new("acme").unwrap().with_kinds(&["sk", "mk"]).unwrap().into();
        let kind = |t: &str| KeyKind::new(t).unwrap();
        let k = f.parse("acme_v1_sk_4f9TqWm2Lx8RbC1d_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert!(k.is_kind(kind("sk")) && !k.is_kind(kind("mk")) && !k.is_kind(kind("skx")) && !k.is_kind(kind("s")));
        let f: KeyFormat = SelectorFormat::new("acme").unwrap().with_kinds(&["skx"]).unwrap().into();
        let k = f.parse("acme_v1_skx_4f9TqWm2Lx8RbC1d_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert!(k.is_kind(kind("skx")) && !k.is_kind(kind("sk")));
        let opaque = KeyFormat::from(OpaqueFormat::new("sk-aisa-").unwrap());
        let k = opaque.parse("sk-aisa-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG").unwrap();
        assert!(k.is_kind(KeyKind::STANDARD) && !k.is_kind(kind("mk")));
    }
}
