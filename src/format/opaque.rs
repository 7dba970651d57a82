//! The opaque format, `{prefix}<random>`: no kid, so the store finds the record by the keyed
//! digest of the whole token; its body accepts any `b64token` so that keys issued elsewhere import.

use core::fmt;

use rand_core::TryCryptoRng;

use super::charset::{is_b64token, strip};
use super::generate::{CHECKSUM_LEN, GenerateError, GeneratedKey, Writer, checksum_ok};
use super::id::{KeyId, KeyKind};
use super::inline::Inline;
use super::parse::{ParseError, ParsedKey};
use super::{FormatError, MAX_PREFIX_LEN, MAX_TOKEN_LEN};

/// The length of a generated body, in base62 characters (256 bits).
const OPAQUE_BODY_LEN: usize = 43;

/// The opaque shape `sk-aisa-<random>`: no kid; found by the keyed digest of the whole token.
///
/// ```
/// use keygate::format::{KeyFormat, OpaqueFormat};
/// let format = KeyFormat::from(OpaqueFormat::new("sk-aisa-")?);
/// let parsed = format.parse("sk-aisa-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG")?;
/// assert!(parsed.is_opaque());
/// assert!(format.parse("sk-other-0123456789abcdefghijklmnopqrstuvwxyz").is_err());
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OpaqueFormat {
    prefix: Inline<MAX_PREFIX_LEN>,
    min_body: u8,
    max_body: u8,
    checksum: bool,
}

impl OpaqueFormat {
    /// A format with `prefix` (letters, digits and `-`) accepting bodies of 20 to 128 `b64token`
    /// characters, generating 43 base62 characters, without a checksum.
    ///
    /// # Errors
    ///
    /// [`FormatError::Prefix`] unless the prefix is 1 to 32 characters of `[A-Za-z0-9-]`.
    pub fn new(prefix: &str) -> Result<Self, FormatError> {
        let ok = !prefix.is_empty() && prefix.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-');
        let prefix = Inline::new(prefix).filter(|_| ok).ok_or(FormatError::Prefix)?;
        Ok(Self { prefix, min_body: 20, max_body: 128, checksum: false })
    }

    /// The accepted body length range for imported keys, within 16..=128 characters.
    ///
    /// # Errors
    ///
    /// [`FormatError::BodyLength`] if the bounds are out of range or inverted.
    pub fn with_body_len(mut self, min: usize, max: usize) -> Result<Self, FormatError> {
        if !(16..=128).contains(&min) || !(min..=128).contains(&max) {
            return Err(FormatError::BodyLength);
        }
        self.min_body = u8::try_from(min).map_err(|_| FormatError::BodyLength)?;
        self.max_body = u8::try_from(max).map_err(|_| FormatError::BodyLength)?;
        Ok(self)
    }

    /// Whether tokens end in a six-character base62 CRC32 checksum (default off). With it on,
    /// only keys generated with a checksum parse; keep it off to import keys issued elsewhere.
    #[must_use]
    pub fn with_checksum(mut self, on: bool) -> Self {
        self.checksum = on;
        self
    }

    /// The prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        self.prefix.as_str()
    }

    /// Whether `token` starts with the prefix.
    pub(super) fn claims(&self, token: &str) -> bool {
        token.starts_with(self.prefix())
    }

    pub(super) fn parse<'a>(&self, token: &'a str) -> Result<ParsedKey<'a>, ParseError> {
        let b = token.as_bytes();
        if b.len() > MAX_TOKEN_LEN {
            return Err(ParseError::Length);
        }
        let body = strip(b, self.prefix.as_bytes()).ok_or(ParseError::Prefix)?;
        if body.len() < usize::from(self.min_body) || body.len() > usize::from(self.max_body) {
            return Err(ParseError::Length);
        }
        if !is_b64token(body) {
            return Err(ParseError::Secret);
        }
        if self.checksum && !checksum_ok(b) {
            return Err(ParseError::Checksum);
        }
        let end = u8::try_from(b.len()).map_err(|_| ParseError::Length)?;
        Ok(ParsedKey {
            token,
            prefix_end: self.prefix.len,
            version: (0, 0),
            kind: (0, 0),
            kid: (0, 0),
            secret: (0, end),
        })
    }

    /// Generates a key: the prefix, 43 random base62 characters (256 bits) and the checksum if on,
    /// with a fresh random 16-character [`KeyId`] for the record.
    ///
    /// # Errors
    ///
    /// [`GenerateError::Rng`] if the RNG fails; [`GenerateError::Config`] if the body length
    /// bounds exclude generated bodies.
    pub fn generate<R: TryCryptoRng + ?Sized>(&self, rng: &mut R) -> Result<GeneratedKey, GenerateError> {
        let body_len = OPAQUE_BODY_LEN + if self.checksum { CHECKSUM_LEN } else { 0 };
        if body_len < usize::from(self.min_body) || body_len > usize::from(self.max_body) {
            return Err(GenerateError::Config);
        }
        let id = KeyId::generate(rng, 16)?;
        let mut out = Writer::new();
        out.push(self.prefix.as_bytes());
        out.push_base62(rng, OPAQUE_BODY_LEN)?;
        if self.checksum {
            out.push_checksum();
        }
        out.finish(id, KeyKind::STANDARD, self.prefix.len + 4)
    }
}

impl fmt::Debug for OpaqueFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpaqueFormat")
            .field("prefix", &self.prefix())
            .field("body_len", &(self.min_body..=self.max_body))
            .field("checksum", &self.checksum)
            .finish()
    }
}
