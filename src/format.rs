//! Key formats: parsing presented tokens and generating new ones.
//!
//! Two shapes, one [`KeyFormat`] each:
//!
//! * **Selector/verifier** ([`SelectorFormat`], the AI Stats shape):
//!   `{prefix}_{version}_{kind}_{kid}_{secret}[checksum]`, e.g.
//!   `aistats_v1_sk_4f9TqWm2Lx8RbC1d_<43 base64url chars>`. The `kid` is a public, random,
//!   fixed-length base62 id that selects the record; the `secret` is at least 256 bits from a CSPRNG
//!   in unpadded base64url (it may contain `_` and `-`: only the first four `_` separate fields).
//!   An optional checksum, six base62 characters of CRC32 over everything before it (as GitHub's
//!   tokens carry), lets a secret scanner or the server reject typos and junk before any lookup.
//! * **Opaque** ([`OpaqueFormat`], the AIsa shape): `sk-aisa-<random>`. There is no kid: the store
//!   finds the record by the keyed digest of the whole token. Its body accepts any RFC 6750
//!   `b64token` characters so that keys issued elsewhere can be imported; generated bodies are
//!   43 base62 characters (256 bits) plus the optional checksum.
//!
//! # Parsing rules
//!
//! [`KeyFormat::parse`] is zero-copy, allocation-free and never panics. It checks the length
//! bound before reading anything else, so nothing longer than [`MAX_TOKEN_LEN`] is examined.
//! It accepts exactly one spelling of each key: fixed field lengths, the configured prefix,
//! version and kinds byte for byte (case-sensitive), a canonical base64url secret (the unused low
//! bits of its last character are zero), and a checksum, if configured, in its one encoding.
//! The errors say which part failed, for diagnostics; the verification stage collapses them all
//! into `invalid_api_key`.
//!
//! # What is hashed
//!
//! [`ParsedKey::secret`] is what gets digested: the secret field's ASCII text for selector keys,
//! the whole token for opaque keys.

mod charset;
mod generate;
mod id;
mod inline;
mod opaque;
mod parse;
mod selector;

use rand_core::TryCryptoRng;

#[cfg(feature = "alloc")]
pub(crate) use charset::BASE62;
pub(crate) use charset::is_b64token;
pub use generate::{GenerateError, GeneratedKey};
pub use id::{InvalidKeyId, KeyId, KeyKind};
pub use opaque::OpaqueFormat;
pub use parse::{ParseError, ParsedKey};
pub use selector::SelectorFormat;

pub use crate::secret::SecretToken;

/// No token longer than this is examined by any format.
pub const MAX_TOKEN_LEN: usize = 192;
/// The longest [`KeyId`].
pub const MAX_ID_LEN: usize = 32;
/// The longest prefix of either format.
const MAX_PREFIX_LEN: usize = 32;

/// A configuration value a format cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The prefix is empty, too long (over 32 bytes) or has characters outside its alphabet.
    #[error("invalid key prefix: 1 to 32 characters; letters and digits, plus '-' for opaque prefixes")]
    Prefix,
    /// The version is not 1 to 8 characters of `[a-z0-9]`.
    #[error("invalid key version: 1 to 8 characters of [a-z0-9]")]
    Version,
    /// A kind is not 1 to 8 characters of `[a-z0-9]`, is repeated, or there are none or over four.
    #[error("invalid key kinds: one to four distinct tags of 1 to 8 characters of [a-z0-9]")]
    Kind,
    /// The kid length is outside 12..=32.
    #[error("invalid kid length: 12 to 32 characters")]
    KidLength,
    /// The secret length is outside 32..=64 bytes.
    #[error("invalid secret length: 32 to 64 bytes")]
    SecretLength,
    /// The opaque body bounds are outside 16..=128 or inverted.
    #[error("invalid opaque body length bounds: 16 to 128 characters, min <= max")]
    BodyLength,
    /// More than four formats were given to one verifier.
    #[error("a verifier accepts at most four formats")]
    TooManyFormats,
}

/// One key format: selector/verifier or opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// `{prefix}_{version}_{kind}_{kid}_{secret}[checksum]`.
    Selector(SelectorFormat),
    /// `{prefix}<random>`, found by digest.
    Opaque(OpaqueFormat),
}

impl KeyFormat {
    /// Splits a presented token into its parts without copying.
    ///
    /// # Errors
    ///
    /// A [`ParseError`] naming the first part that does not fit; the length bound is checked first.
    pub fn parse<'a>(&self, token: &'a str) -> Result<ParsedKey<'a>, ParseError> {
        match self {
            Self::Selector(f) => f.parse(token),
            Self::Opaque(f) => f.parse(token),
        }
    }

    /// Generates a key of `kind` (opaque formats have only [`KeyKind::STANDARD`]).
    ///
    /// # Errors
    ///
    /// As [`SelectorFormat::generate`] and [`OpaqueFormat::generate`].
    pub fn generate<R: TryCryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        kind: KeyKind,
    ) -> Result<GeneratedKey, GenerateError> {
        match self {
            Self::Selector(f) => f.generate(rng, kind),
            Self::Opaque(f) if kind == KeyKind::STANDARD => f.generate(rng),
            Self::Opaque(_) => Err(GenerateError::Kind),
        }
    }

    /// Whether a token starts with this format's prefix (a cheap pre-check, not validation).
    #[must_use]
    pub fn claims(&self, token: &str) -> bool {
        match self {
            Self::Selector(f) => f.claims(token),
            Self::Opaque(f) => f.claims(token),
        }
    }
}

impl From<SelectorFormat> for KeyFormat {
    fn from(f: SelectorFormat) -> Self {
        Self::Selector(f)
    }
}

impl From<OpaqueFormat> for KeyFormat {
    fn from(f: OpaqueFormat) -> Self {
        Self::Opaque(f)
    }
}
