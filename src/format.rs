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

use core::fmt;

use rand_core::TryCryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// No token longer than this is examined by any format.
pub const MAX_TOKEN_LEN: usize = 192;

const CHECKSUM_LEN: usize = 6;
const MAX_PREFIX_LEN: usize = 32;
const MAX_TAG_LEN: usize = 8;
const MAX_KINDS: usize = 4;
const MIN_SECRET_BYTES: usize = 32;
const MAX_SECRET_BYTES: usize = 64;
const MIN_KID_LEN: usize = 12;
/// The longest [`KeyId`].
pub const MAX_ID_LEN: usize = 32;
const OPAQUE_BODY_LEN: usize = 43;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Character classes, one bit each, for [`all_in`].
const C_BASE62: u8 = 1;
const C_B64URL: u8 = 2;
const C_B64TOKEN: u8 = 4;
const C_ID: u8 = 8;

/// `b` without the short `prefix`, compared inline (a prefix is at most 32 bytes; a `memcmp`
/// call costs more than the comparison).
#[inline]
fn strip<'b>(b: &'b [u8], prefix: &[u8]) -> Option<&'b [u8]> {
    let (head, rest) = b.split_at_checked(prefix.len())?;
    head.iter().zip(prefix).fold(true, |eq, (x, y)| eq & (x == y)).then_some(rest)
}

/// Whether byte `b` is in class `C`, by range comparisons the compiler turns into vector
/// instructions (the class is a constant, so the tests it does not need fold away).
#[inline(always)]
const fn in_class<const C: u8>(b: u8) -> bool {
    let alnum = (b.wrapping_sub(b'A') < 26) | (b.wrapping_sub(b'a') < 26) | (b.wrapping_sub(b'0') < 10);
    let url = (C & (C_B64URL | C_B64TOKEN | C_ID) != 0) & ((b == b'-') | (b == b'_'));
    let token = (C & C_B64TOKEN != 0) & ((b == b'.') | (b == b'~') | (b == b'+') | (b == b'/'));
    alnum | url | token
}

/// Whether every byte of `bytes` is in class `C`: branch-free, sixteen lanes at a time (the
/// compiler makes each chunk a handful of vector compares; a table lookup per byte costs about
/// 3x as much here). The last sixteen bytes are checked as one more chunk, overlapping the
/// previous one, so there is no scalar tail.
#[inline(always)]
fn all_in<const C: u8>(bytes: &[u8]) -> bool {
    let Some(last) = bytes.last_chunk::<16>() else {
        return bytes.iter().fold(true, |ok, &b| ok & in_class::<C>(b));
    };
    let (chunks, _) = bytes.as_chunks::<16>();
    let mut bad = [0u8; 16];
    for chunk in chunks.iter().chain(core::iter::once(last)) {
        for (lane, &b) in bad.iter_mut().zip(chunk) {
            *lane |= u8::from(!in_class::<C>(b));
        }
    }
    bad.iter().fold(0, |acc, &lane| acc | lane) == 0
}

/// Whether `t` is an RFC 6750 `b64token`:
/// `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
#[inline]
pub(crate) fn is_b64token(t: &[u8]) -> bool {
    let unpadded = t.iter().rposition(|&c| c != b'=').map_or(0, |i| i + 1);
    unpadded > 0 && all_in::<C_B64TOKEN>(&t[..unpadded])
}

/// The 6-bit value of each base64url character (0 for other bytes, which are refused earlier).
const B64URL_VALUE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 64 {
        let c = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[i];
        #[allow(clippy::cast_possible_truncation)] // i < 64
        let v = i as u8;
        t[c as usize] = v;
        i += 1;
    }
    t
};

/// A short ASCII string stored inline (no allocation).
#[derive(Clone, Copy, Eq, PartialOrd, Ord)]
struct Inline<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

/// Equality without an early exit on the length: an id comparison on the verification path
/// takes the same time whether or not the lengths match (unused bytes are always zero).
impl<const N: usize> PartialEq for Inline<N> {
    fn eq(&self, other: &Self) -> bool {
        (self.len == other.len) & (self.bytes == other.bytes)
    }
}

impl<const N: usize> core::hash::Hash for Inline<N> {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl<const N: usize> Inline<N> {
    fn new(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() > N || !b.is_ascii() {
            return None;
        }
        let mut bytes = [0; N];
        bytes[..b.len()].copy_from_slice(b);
        Some(Self { len: u8::try_from(b.len()).ok()?, bytes })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked in `new`).
        core::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// A key's public id: the `kid` of a selector key, or the random id of an opaque key.
///
/// 1 to 32 characters from `[A-Za-z0-9_-]`, stored inline (`Copy`, no allocation). It is public:
/// it prints freely and appears in logs and the management API.
///
/// ```
/// use keygate::KeyId;
/// let id: KeyId = "4f9TqWm2Lx8RbC1d".parse().unwrap();
/// assert_eq!(id.as_str(), "4f9TqWm2Lx8RbC1d");
/// assert!("not a valid id!".parse::<KeyId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyId(Inline<MAX_ID_LEN>);

/// Hashes as its text, consistent with `Borrow<str>`, so maps keyed by `KeyId` accept `&str`.
impl core::hash::Hash for KeyId {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl core::borrow::Borrow<str> for KeyId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// A [`KeyId`] must be 1 to 32 characters from `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a key id is 1 to 32 characters from [A-Za-z0-9_-]")]
pub struct InvalidKeyId;

impl KeyId {
    /// Validates `s` as an id.
    ///
    /// # Errors
    ///
    /// [`InvalidKeyId`] if `s` is empty, longer than 32 bytes or has other characters.
    pub fn new(s: &str) -> Result<Self, InvalidKeyId> {
        if s.is_empty() || !all_in::<C_ID>(s.as_bytes()) {
            return Err(InvalidKeyId);
        }
        Inline::new(s).map(Self).ok_or(InvalidKeyId)
    }

    /// A fresh random id of `len` base62 characters (clamped to 12..=32).
    ///
    /// # Errors
    ///
    /// [`GenerateError::Rng`] if the random number generator fails.
    pub fn generate<R: TryCryptoRng + ?Sized>(rng: &mut R, len: usize) -> Result<Self, GenerateError> {
        let len = len.clamp(MIN_KID_LEN, MAX_ID_LEN);
        let mut bytes = [0u8; MAX_ID_LEN];
        fill_base62(rng, &mut bytes[..len])?;
        Ok(Self(Inline { len: u8::try_from(len).map_err(|_| GenerateError::Config)?, bytes }))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The id as bytes.
    #[must_use]
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The empty id, which no key has: the id of the record verification compares against when
    /// the store found none.
    #[cfg(feature = "alloc")]
    pub(crate) const NONE: Self = Self(Inline { len: 0, bytes: [0; MAX_ID_LEN] });
}

impl core::str::FromStr for KeyId {
    type Err = InvalidKeyId;
    fn from_str(s: &str) -> Result<Self, InvalidKeyId> {
        Self::new(s)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.as_str())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for KeyId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = KeyId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key id: 1 to 32 characters from [A-Za-z0-9_-]")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyId, E> {
                KeyId::new(v).map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_str(V)
    }
}

/// A key's kind tag (`sk` for standard keys, for example): 1 to 8 lowercase ASCII letters or digits.
///
/// The format decides which kinds exist; the record remembers which kind a key was issued as,
/// and a token presenting another kind does not verify.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyKind(Inline<MAX_TAG_LEN>);

impl KeyKind {
    /// The standard kind, `sk`.
    pub const STANDARD: Self = Self(Inline { len: 2, bytes: *b"sk\0\0\0\0\0\0" });
    /// The management kind, `mk`: an elevated credential for the management API.
    pub const MANAGEMENT: Self = Self(Inline { len: 2, bytes: *b"mk\0\0\0\0\0\0" });

    /// Validates a kind tag.
    ///
    /// # Errors
    ///
    /// [`FormatError::Kind`] unless `s` is 1 to 8 characters of `[a-z0-9]`.
    pub fn new(s: &str) -> Result<Self, FormatError> {
        let ok = !s.is_empty() && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !ok {
            return Err(FormatError::Kind);
        }
        Inline::new(s).map(Self).ok_or(FormatError::Kind)
    }

    /// The tag as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyKind({})", self.as_str())
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// The random number generator failed, or the format cannot generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// The random number generator reported an error.
    #[error("random number generator failed")]
    Rng,
    /// The requested kind is not one of the format's kinds.
    #[error("the format has no such kind")]
    Kind,
    /// The format's configuration cannot produce a token within bounds.
    #[error("format configuration cannot produce a token")]
    Config,
}

/// A presented token split into its parts, borrowing from the token (zero-copy).
///
/// It holds the token and the offsets of its parts; the accessors slice on demand. Its `Debug`
/// output shows the public parts only, never the secret.
#[derive(Clone, Copy)]
pub struct ParsedKey<'a> {
    token: &'a str,
    prefix_end: u8,
    version: (u8, u8),
    kind: (u8, u8),
    /// `(0, 0)` for opaque keys.
    kid: (u8, u8),
    secret: (u8, u8),
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

/// A token as issued: shown to its owner once, zeroized on drop, redacted in `Debug`.
///
/// It has no `Display`; [`SecretToken::expose_secret`] is the one deliberate way to read it.
#[derive(Clone)]
pub struct SecretToken {
    len: u8,
    bytes: [u8; MAX_TOKEN_LEN],
}

impl Drop for SecretToken {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl ZeroizeOnDrop for SecretToken {}

impl SecretToken {
    /// The token text. Hand it to its owner; never log it.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretToken").finish_non_exhaustive()
    }
}

/// A newly generated key: the token (once) and its public parts.
#[derive(Clone)]
pub struct GeneratedKey {
    token: SecretToken,
    id: KeyId,
    kind: KeyKind,
    display_len: u8,
}

impl GeneratedKey {
    /// The full token, to be returned to its owner exactly once.
    #[must_use]
    pub fn token(&self) -> &SecretToken {
        &self.token
    }

    /// The key's public id (the kid of a selector key, a fresh random id for an opaque key).
    #[must_use]
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The kind the key was issued as.
    #[must_use]
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// A prefix of the token that is safe to display: everything up to and including the kid
    /// (`aistats_v1_sk_<kid>`), or the opaque prefix and the body's first four characters.
    #[must_use]
    pub fn display_prefix(&self) -> &str {
        let t = self.token.expose_secret();
        t.get(..usize::from(self.display_len)).unwrap_or_default()
    }
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("display_prefix", &self.display_prefix())
            .finish_non_exhaustive()
    }
}

/// The selector/verifier shape `{prefix}_{version}_{kind}_{kid}_{secret}[checksum]`.
///
/// ```
/// use keygate::{KeyFormat, SelectorFormat};
/// let format = SelectorFormat::new("aistats")?.with_checksum(true);
/// let mut rng = rand_chacha::ChaCha20Rng::from_seed([7; 32]);
/// # use rand_chacha::rand_core::SeedableRng;
/// let key = format.generate(&mut rng, keygate::KeyKind::STANDARD)?;
/// let token = key.token().expose_secret();
/// assert!(token.starts_with("aistats_v1_sk_"));
/// let parsed = KeyFormat::from(format).parse(token)?;
/// assert_eq!(parsed.kid(), Some(key.id().as_str()));
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SelectorFormat {
    prefix: Inline<MAX_PREFIX_LEN>,
    version: Inline<MAX_TAG_LEN>,
    kinds: [KeyKind; MAX_KINDS],
    kind_count: u8,
    kid_len: u8,
    secret_bytes: u8,
    checksum: bool,
    layout: Layout,
}

/// The fixed layout every token of a selector format has, derived from its configuration.
///
/// All kinds of a format have one length, so every token of the format has exactly one length
/// and every field a fixed offset: `parse` checks the length first and then reads fields in place.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// `{prefix}_{version}_`, zero-padded, and the mask of its meaningful bytes.
    head: [u8; HEAD_WINDOW],
    head_mask: [u8; HEAD_WINDOW],
    head_len: u8,
    /// Each kind as little-endian bytes in a `u64`, and the mask of the kind's length.
    kind_words: [u64; MAX_KINDS],
    kind_mask: u64,
    kind_len: u8,
    /// The whole token's length.
    len: u8,
}

/// The head (`{prefix}_{version}_`, at most 42 bytes) is compared as one fixed 48-byte window;
/// every selector token is longer than that (at least 62 bytes).
const HEAD_WINDOW: usize = 48;

impl Layout {
    const EMPTY: Self = Self {
        head: [0; HEAD_WINDOW],
        head_mask: [0; HEAD_WINDOW],
        head_len: 0,
        kind_words: [0; MAX_KINDS],
        kind_mask: 0,
        kind_len: 0,
        len: 0,
    };
}

impl SelectorFormat {
    /// A format with `prefix`, version `v1`, the one kind `sk`, 16-character kids, 32-byte secrets
    /// and no checksum.
    ///
    /// # Errors
    ///
    /// [`FormatError::Prefix`] unless the prefix is 1 to 32 ASCII letters or digits.
    pub fn new(prefix: &str) -> Result<Self, FormatError> {
        let ok = !prefix.is_empty() && all_in::<C_BASE62>(prefix.as_bytes());
        let prefix = Inline::new(prefix).filter(|_| ok).ok_or(FormatError::Prefix)?;
        Ok(Self {
            prefix,
            version: Inline { len: 2, bytes: *b"v1\0\0\0\0\0\0" },
            kinds: [KeyKind::STANDARD; MAX_KINDS],
            kind_count: 1,
            kid_len: 16,
            secret_bytes: 32,
            checksum: false,
            layout: Layout::EMPTY,
        }
        .laid_out())
    }

    /// The version tag (default `v1`).
    ///
    /// # Errors
    ///
    /// [`FormatError::Version`] unless it is 1 to 8 characters of `[a-z0-9]`.
    pub fn with_version(mut self, version: &str) -> Result<Self, FormatError> {
        self.version = KeyKind::new(version).map_err(|_| FormatError::Version)?.0;
        Ok(self.laid_out())
    }

    /// The kinds this format issues and accepts (default `["sk"]`). All kinds of a format have
    /// the same length, so that every token of the format has one length.
    ///
    /// # Errors
    ///
    /// [`FormatError::Kind`] for an invalid or repeated tag, tags of different lengths, or fewer
    /// than one or more than four.
    pub fn with_kinds(mut self, kinds: &[&str]) -> Result<Self, FormatError> {
        if kinds.is_empty() || kinds.len() > MAX_KINDS || kinds.iter().any(|k| k.len() != kinds[0].len()) {
            return Err(FormatError::Kind);
        }
        for (i, k) in kinds.iter().enumerate() {
            if kinds[..i].contains(k) {
                return Err(FormatError::Kind);
            }
            self.kinds[i] = KeyKind::new(k)?;
        }
        self.kind_count = u8::try_from(kinds.len()).map_err(|_| FormatError::Kind)?;
        Ok(self.laid_out())
    }

    /// The kid length in base62 characters, 12..=32 (default 16, about 95 bits).
    ///
    /// # Errors
    ///
    /// [`FormatError::KidLength`] outside 12..=32.
    pub fn with_kid_len(mut self, len: usize) -> Result<Self, FormatError> {
        if !(MIN_KID_LEN..=MAX_ID_LEN).contains(&len) {
            return Err(FormatError::KidLength);
        }
        self.kid_len = u8::try_from(len).map_err(|_| FormatError::KidLength)?;
        Ok(self.laid_out())
    }

    /// The secret length in random bytes, 32..=64 (default 32: 43 base64url characters).
    ///
    /// # Errors
    ///
    /// [`FormatError::SecretLength`] outside 32..=64.
    pub fn with_secret_bytes(mut self, n: usize) -> Result<Self, FormatError> {
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&n) {
            return Err(FormatError::SecretLength);
        }
        self.secret_bytes = u8::try_from(n).map_err(|_| FormatError::SecretLength)?;
        Ok(self.laid_out())
    }

    /// Whether tokens end in a six-character base62 CRC32 checksum (default off).
    #[must_use]
    pub fn with_checksum(mut self, on: bool) -> Self {
        self.checksum = on;
        self.laid_out()
    }

    /// The prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        self.prefix.as_str()
    }

    /// The length of every token of this format.
    #[must_use]
    pub fn token_len(&self) -> usize {
        usize::from(self.layout.len)
    }

    /// Derives the fixed layout from the configuration. The bounds on each part keep every
    /// offset within `MAX_TOKEN_LEN` (at most 32 + 8 + 8 + 32 + 86 + 6 + 4 = 176 bytes).
    fn laid_out(mut self) -> Self {
        let mut l = Layout::EMPTY;
        let parts: [&[u8]; 4] = [self.prefix.as_bytes(), b"_", self.version.as_bytes(), b"_"];
        let mut at = 0;
        for part in parts {
            for &c in part {
                l.head[at] = c;
                l.head_mask[at] = 0xFF;
                at += 1;
            }
        }
        let kind_len = usize::from(self.kinds[0].0.len);
        for (word, kind) in l.kind_words.iter_mut().zip(self.kinds()) {
            let mut w = [0u8; 8];
            w[..kind_len].copy_from_slice(kind.0.as_bytes());
            *word = u64::from_le_bytes(w);
        }
        l.kind_mask = u64::MAX >> (64 - 8 * kind_len);
        let len = at + kind_len + 1 + usize::from(self.kid_len) + 1 + self.secret_len() + self.checksum_len();
        // Bounded by construction (see above); `u8::MAX` would make every token fail to parse.
        l.head_len = u8::try_from(at).unwrap_or(u8::MAX);
        l.kind_len = u8::try_from(kind_len).unwrap_or(u8::MAX);
        l.len = u8::try_from(len).unwrap_or(u8::MAX);
        self.layout = l;
        self
    }

    /// The version tag.
    #[must_use]
    pub fn version(&self) -> &str {
        self.version.as_str()
    }

    /// The kinds this format accepts.
    #[must_use]
    pub fn kinds(&self) -> &[KeyKind] {
        &self.kinds[..usize::from(self.kind_count)]
    }

    fn secret_len(&self) -> usize {
        (usize::from(self.secret_bytes) * 4).div_ceil(3)
    }

    fn checksum_len(&self) -> usize {
        if self.checksum { CHECKSUM_LEN } else { 0 }
    }

    fn parse<'a>(&self, token: &'a str) -> Result<ParsedKey<'a>, ParseError> {
        let b = token.as_bytes();
        let l = &self.layout;
        // Every token of the format has one length: nothing else is read unless it matches.
        if b.len() != usize::from(l.len) {
            return Err(ParseError::Length);
        }
        let head = b.first_chunk::<HEAD_WINDOW>().ok_or(ParseError::Length)?;
        let diff = head.iter().zip(&l.head).zip(&l.head_mask).fold(0, |d, ((x, y), m)| d | ((x ^ y) & m));
        if diff != 0 {
            return Err(self.head_error(b));
        }
        let kind_at = usize::from(l.head_len);
        let kid_at = kind_at + usize::from(l.kind_len) + 1;
        let secret_at = kid_at + usize::from(self.kid_len) + 1;
        let secret_end = secret_at + self.secret_len();
        let word = b.get(kind_at..kind_at + 8).and_then(|w| w.first_chunk::<8>()).ok_or(ParseError::Kind)?;
        let word = u64::from_le_bytes(*word) & l.kind_mask;
        if !l.kind_words[..usize::from(self.kind_count)].contains(&word) || b.get(kid_at - 1) != Some(&b'_') {
            return Err(ParseError::Kind);
        }
        let secret = match (b.get(kid_at..secret_at - 1), b.get(secret_at - 1), b.get(secret_at..secret_end)) {
            (Some(kid), Some(b'_'), Some(secret)) if all_in::<C_BASE62>(kid) => secret,
            _ => return Err(ParseError::Kid),
        };
        if !all_in::<C_B64URL>(secret) || !canonical_b64url_end(secret, usize::from(self.secret_bytes)) {
            return Err(ParseError::Secret);
        }
        if self.checksum && !checksum_ok(b) {
            return Err(ParseError::Checksum);
        }
        // Offsets are below `MAX_TOKEN_LEN`, so they fit a `u8`.
        let at = |i: usize| u8::try_from(i).unwrap_or(u8::MAX);
        let version_at = self.prefix.len + 1;
        Ok(ParsedKey {
            token,
            prefix_end: self.prefix.len,
            version: (version_at, version_at + self.version.len),
            kind: (at(kind_at), at(kind_at + usize::from(l.kind_len))),
            kid: (at(kid_at), at(secret_at - 1)),
            secret: (at(secret_at), at(secret_end)),
        })
    }

    /// Which part of the head (`{prefix}_{version}_`) differs: only computed for a refusal.
    #[cold]
    fn head_error(&self, b: &[u8]) -> ParseError {
        match strip(b, self.prefix.as_bytes()).and_then(|r| strip(r, b"_")) {
            None => ParseError::Prefix,
            Some(_) => ParseError::Version,
        }
    }

    /// Generates a key of `kind` from a cryptographically secure RNG.
    ///
    /// # Errors
    ///
    /// [`GenerateError::Kind`] if the format has no such kind; [`GenerateError::Rng`] if the RNG
    /// fails.
    pub fn generate<R: TryCryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        kind: KeyKind,
    ) -> Result<GeneratedKey, GenerateError> {
        if !self.kinds().contains(&kind) {
            return Err(GenerateError::Kind);
        }
        let mut out = Writer::new();
        out.push(self.prefix.as_bytes());
        out.push(b"_");
        out.push(self.version.as_bytes());
        out.push(b"_");
        out.push(kind.0.as_bytes());
        out.push(b"_");
        let kid_at = out.len;
        out.push_base62(rng, usize::from(self.kid_len))?;
        let id = KeyId::new(out.str_from(kid_at)).map_err(|_| GenerateError::Config)?;
        let display_len = out.len;
        out.push(b"_");
        let mut raw = zeroize::Zeroizing::new([0u8; MAX_SECRET_BYTES]);
        let raw = &mut raw[..usize::from(self.secret_bytes)];
        rng.try_fill_bytes(raw).map_err(|_| GenerateError::Rng)?;
        out.push_b64url(raw)?;
        if self.checksum {
            out.push_checksum();
        }
        out.finish(id, kind, display_len)
    }
}

impl fmt::Debug for SelectorFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelectorFormat")
            .field("prefix", &self.prefix())
            .field("version", &self.version())
            .field("kinds", &self.kinds())
            .field("kid_len", &self.kid_len)
            .field("secret_bytes", &self.secret_bytes)
            .field("checksum", &self.checksum)
            .finish()
    }
}

/// The opaque shape `sk-aisa-<random>`: no kid; found by the keyed digest of the whole token.
///
/// ```
/// use keygate::{KeyFormat, OpaqueFormat};
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

    fn parse<'a>(&self, token: &'a str) -> Result<ParsedKey<'a>, ParseError> {
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
            Self::Selector(f) => {
                token.as_bytes().strip_prefix(f.prefix.as_bytes()).is_some_and(|r| r.first() == Some(&b'_'))
            }
            Self::Opaque(f) => token.starts_with(f.prefix()),
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

/// Whether the last character of a canonical unpadded base64url encoding of `n` bytes has its
/// unused low bits zero (so each byte string has exactly one accepted spelling).
fn canonical_b64url_end(secret: &[u8], n: usize) -> bool {
    let unused_bits = match n % 3 {
        1 => 4,
        2 => 2,
        _ => 0,
    };
    secret.last().is_some_and(|&c| B64URL_VALUE[usize::from(c)] & ((1 << unused_bits) - 1) == 0)
}

/// The six-character base62 encoding of a CRC32, most significant digit first.
fn checksum_chars(data: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut v = crc32fast::hash(data);
    let mut out = [b'0'; CHECKSUM_LEN];
    for c in out.iter_mut().rev() {
        *c = BASE62[(v % 62) as usize];
        v /= 62;
    }
    out
}

fn checksum_ok(token: &[u8]) -> bool {
    match token.len().checked_sub(CHECKSUM_LEN) {
        Some(split) => {
            let (body, sum) = token.split_at(split);
            checksum_chars(body) == sum
        }
        None => false,
    }
}

/// Fills `out` with uniformly random base62 characters (rejection sampling, no modulo bias).
fn fill_base62<R: TryCryptoRng + ?Sized>(rng: &mut R, out: &mut [u8]) -> Result<(), GenerateError> {
    let mut pool = zeroize::Zeroizing::new([0u8; 64]);
    let mut used = pool.len();
    for c in out.iter_mut() {
        loop {
            if used == pool.len() {
                rng.try_fill_bytes(&mut pool[..]).map_err(|_| GenerateError::Rng)?;
                used = 0;
            }
            let r = pool[used];
            used += 1;
            if r < 248 {
                *c = BASE62[usize::from(r % 62)];
                break;
            }
        }
    }
    Ok(())
}

/// Builds a token in a zeroizing inline buffer.
struct Writer {
    token: SecretToken,
    len: usize,
    overflow: bool,
}

impl Writer {
    fn new() -> Self {
        Self { token: SecretToken { len: 0, bytes: [0; MAX_TOKEN_LEN] }, len: 0, overflow: false }
    }

    fn push(&mut self, s: &[u8]) {
        match self.token.bytes.get_mut(self.len..self.len + s.len()) {
            Some(dst) => {
                dst.copy_from_slice(s);
                self.len += s.len();
            }
            None => self.overflow = true,
        }
    }

    fn push_base62<R: TryCryptoRng + ?Sized>(&mut self, rng: &mut R, n: usize) -> Result<(), GenerateError> {
        let dst = self.token.bytes.get_mut(self.len..self.len + n).ok_or(GenerateError::Config)?;
        fill_base62(rng, dst)?;
        self.len += n;
        Ok(())
    }

    fn push_b64url(&mut self, raw: &[u8]) -> Result<(), GenerateError> {
        use base64ct::{Base64UrlUnpadded, Encoding};
        let dst = self.token.bytes.get_mut(self.len..).ok_or(GenerateError::Config)?;
        let n = Base64UrlUnpadded::encode(raw, dst).map_err(|_| GenerateError::Config)?.len();
        self.len += n;
        Ok(())
    }

    fn push_checksum(&mut self) {
        let sum = checksum_chars(&self.token.bytes[..self.len]);
        self.push(&sum);
    }

    fn str_from(&self, at: usize) -> &str {
        core::str::from_utf8(self.token.bytes.get(at..self.len).unwrap_or_default()).unwrap_or_default()
    }

    fn finish(
        mut self,
        id: KeyId,
        kind: KeyKind,
        display_len: impl Into<usize>,
    ) -> Result<GeneratedKey, GenerateError> {
        if self.overflow {
            return Err(GenerateError::Config);
        }
        self.token.len = u8::try_from(self.len).map_err(|_| GenerateError::Config)?;
        let display_len = u8::try_from(display_len.into()).map_err(|_| GenerateError::Config)?;
        let token = core::mem::replace(&mut self.token, SecretToken { len: 0, bytes: [0; MAX_TOKEN_LEN] });
        Ok(GeneratedKey { token, id, kind, display_len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt() -> KeyFormat {
        SelectorFormat::new("aistats").unwrap().into()
    }

    const VALID: &str = "aistats_v1_sk_4f9TqWm2Lx8RbC1d_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn parses_the_parts() {
        let k = fmt().parse(VALID).unwrap();
        assert_eq!((k.prefix(), k.version(), k.kind(), k.kid()), ("aistats", "v1", "sk", Some("4f9TqWm2Lx8RbC1d")));
        assert_eq!(k.secret(), &b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"[..]);
    }

    #[test]
    fn secret_may_contain_separators() {
        let t = "aistats_v1_sk_4f9TqWm2Lx8RbC1d_A_-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(fmt().parse(t).unwrap().secret(), &t.as_bytes()[31..]);
    }

    #[test]
    fn rejects_each_part() {
        let cases = [
            ("Aistats_v1_sk_4f9TqWm2Lx8RbC1d_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ParseError::Prefix),
            ("aistats-v1_sk_4f9TqWm2Lx8RbC1d_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ParseError::Prefix),
            ("aistats_V1_sk_4f9TqWm2Lx8RbC1d_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ParseError::Version),
            ("aistats_v1_mk_4f9TqWm2Lx8RbC1d_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ParseError::Kind),
            ("aistats_v1_sk_4f9TqWm2Lx8RbC1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ParseError::Kid),
            ("aistats_v1_sk_4f9TqWm2Lx8Rb-1d_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ParseError::Kid),
            ("aistats_v1_sk_4f9TqWm2Lx8RbC1d_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB", ParseError::Secret),
            ("aistats_v1_sk_4f9TqWm2Lx8RbC1d_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", ParseError::Secret),
            ("aistats_v1_sk_4f9TqWm2Lx8RbC1d_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ParseError::Length),
            ("aistats_v1_sk_4f9TqWm2Lx8RbC1d_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ParseError::Length),
            ("", ParseError::Length),
        ];
        for (t, e) in cases {
            assert_eq!(fmt().parse(t).unwrap_err(), e, "{t}");
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(fmt().parse(&long).unwrap_err(), ParseError::Length);
    }

    #[test]
    fn checksum_known_answer() {
        // The CRC32 check value, and its base62 digits decoding back to it.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        let v: u32 = 0xCBF4_3926;
        let s = checksum_chars(b"123456789");
        let back = s.iter().fold(0u64, |acc, &c| acc * 62 + BASE62.iter().position(|&x| x == c).unwrap() as u64);
        assert_eq!(back, u64::from(v));
    }

    #[test]
    fn kinds_and_versions_configurable() {
        let f: KeyFormat =
            SelectorFormat::new("acme").unwrap().with_version("v2").unwrap().with_kinds(&["sk", "mk"]).unwrap().into();
        assert!(f.parse("acme_v2_mk_4f9TqWm2Lx8RbC1d_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").is_ok());
        assert!(f.parse("acme_v2_sk_4f9TqWm2Lx8RbC1d_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").is_ok());
        let wrong_kind = "acme_v2_xk_4f9TqWm2Lx8RbC1d_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(f.parse(wrong_kind).unwrap_err(), ParseError::Kind);
        assert_eq!(SelectorFormat::new("acme").unwrap().with_kinds(&["sk", "mgmt"]), Err(FormatError::Kind));
        assert_eq!(SelectorFormat::new("acme").unwrap().with_kinds(&["sk", "sk"]), Err(FormatError::Kind));
        assert_eq!(SelectorFormat::new("ac_me"), Err(FormatError::Prefix));
        assert_eq!(SelectorFormat::new("acme").unwrap().with_kid_len(11), Err(FormatError::KidLength));
    }

    /// The vector classifier agrees with a per-byte reference for every class, every byte
    /// value in every position, and lengths around the sixteen-byte chunks (the tail, the
    /// overlapping last chunk, and inputs shorter than a chunk).
    #[test]
    fn all_in_agrees_with_the_reference() {
        fn reference(c: u8, b: u8) -> bool {
            let url = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
            match c {
                C_BASE62 => b.is_ascii_alphanumeric(),
                C_B64URL | C_ID => url,
                _ => url || matches!(b, b'.' | b'~' | b'+' | b'/'),
            }
        }
        fn check<const C: u8>(bytes: &[u8]) {
            let want = bytes.iter().all(|&b| reference(C, b));
            assert_eq!(all_in::<C>(bytes), want, "class {C} on {bytes:?}");
        }
        for len in 0..=49 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = alloc::vec![b'A'; len];
                    bytes[at] = b;
                    check::<C_BASE62>(&bytes);
                    check::<C_B64URL>(&bytes);
                    check::<C_B64TOKEN>(&bytes);
                    check::<C_ID>(&bytes);
                }
            }
        }
    }

    #[test]
    #[cfg(feature = "alloc")]
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
