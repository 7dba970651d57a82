//! The selector/verifier format, `{prefix}_{version}_{kind}_{kid}_{secret}[checksum]`: its
//! configuration, the fixed layout derived from it, and parsing and generating in that layout.

use core::fmt;

use rand_core::TryCryptoRng;

use super::charset::{C_B64URL, C_BASE62, all_in, canonical_b64url_end, strip};
use super::generate::{CHECKSUM_LEN, GenerateError, GeneratedKey, Writer, checksum_ok};
use super::id::{KeyId, KeyKind, MAX_TAG_LEN, MIN_KID_LEN};
use super::inline::Inline;
use super::parse::{ParseError, ParsedKey};
use super::{FormatError, MAX_ID_LEN, MAX_PREFIX_LEN};

const MAX_KINDS: usize = 4;
const MIN_SECRET_BYTES: usize = 32;
const MAX_SECRET_BYTES: usize = 64;

/// The selector/verifier shape `{prefix}_{version}_{kind}_{kid}_{secret}[checksum]`.
///
/// ```
/// use keygate::format::{KeyFormat, SelectorFormat};
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

    /// Whether `token` starts with `{prefix}_`.
    pub(super) fn claims(&self, token: &str) -> bool {
        token.as_bytes().strip_prefix(self.prefix.as_bytes()).is_some_and(|r| r.first() == Some(&b'_'))
    }

    pub(super) fn parse<'a>(&self, token: &'a str) -> Result<ParsedKey<'a>, ParseError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{KeyFormat, MAX_TOKEN_LEN};

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
}
