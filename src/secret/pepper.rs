//! Peppers: the operator's HMAC keys, each with its id, and the set of them that verifies a
//! secret with equal work whether or not there is a record, and during a rotation.

use core::fmt;

use sha2::{Digest as _, Sha256};
use subtle::Choice;
use zeroize::Zeroizing;

use super::hmac::KeyedSha256;
use super::{DIGEST_LEN, DigestCheck, DigestScheme, StoredDigest, ct_eq_32};

const MIN_PEPPER_LEN: usize = 32;
const MAX_PEPPERS: usize = 4;

/// Identifies a pepper, so that a stored digest says which pepper made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PepperId(pub u32);

impl fmt::Display for PepperId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A pepper that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PepperError {
    /// The key is shorter than 32 bytes.
    #[error("a pepper must be at least 32 bytes")]
    TooShort,
    /// The encoded key is not valid base64 (standard or URL-safe, padded or not) or hex.
    #[error("a pepper must be encoded as base64 or hex")]
    Encoding,
    /// Two peppers share one id.
    #[error("two peppers share one id")]
    DuplicateId,
    /// More than four peppers were loaded.
    #[error("at most four peppers can be loaded at once")]
    TooMany,
}

/// A server-side HMAC key with its id. The keyed state is computed once; it is zeroized on drop.
///
/// ```
/// use keygate::Pepper;
/// use keygate::secret::PepperId;
/// let pepper = Pepper::new(PepperId(1), &[0x42; 32])?;
/// assert_eq!(format!("{pepper:?}"), "Pepper { id: PepperId(1), .. }");
/// # Ok::<(), keygate::secret::PepperError>(())
/// ```
#[derive(Clone)]
pub struct Pepper {
    id: PepperId,
    mac: KeyedSha256,
}

impl Pepper {
    /// A pepper from raw key bytes (at least 32; 32 random bytes is the recommended size).
    ///
    /// # Errors
    ///
    /// [`PepperError::TooShort`] for fewer than 32 bytes.
    pub fn new(id: PepperId, key: &[u8]) -> Result<Self, PepperError> {
        if key.len() < MIN_PEPPER_LEN {
            return Err(PepperError::TooShort);
        }
        Ok(Self { id, mac: KeyedSha256::new(key) })
    }

    /// A pepper from text as it appears in a configuration file or environment variable:
    /// hex, or base64 in any of its four common alphabets/paddings. Surrounding whitespace is
    /// ignored.
    ///
    /// # Errors
    ///
    /// [`PepperError::Encoding`] if the text is none of those encodings;
    /// [`PepperError::TooShort`] if it decodes to fewer than 32 bytes.
    pub fn from_encoded(id: PepperId, text: &str) -> Result<Self, PepperError> {
        use base64ct::{Base64, Base64Unpadded, Base64Url, Base64UrlUnpadded, Encoding};
        let text = text.trim();
        let mut buf = Zeroizing::new([0u8; 128]);
        let decoded = decode_hex(text, &mut buf[..])
            .or_else(|| Base64::decode(text, &mut buf[..]).ok().map(<[u8]>::len))
            .or_else(|| Base64Unpadded::decode(text, &mut buf[..]).ok().map(<[u8]>::len))
            .or_else(|| Base64Url::decode(text, &mut buf[..]).ok().map(<[u8]>::len))
            .or_else(|| Base64UrlUnpadded::decode(text, &mut buf[..]).ok().map(<[u8]>::len))
            .ok_or(PepperError::Encoding)?;
        Self::new(id, &buf[..decoded])
    }

    /// The pepper's id.
    #[must_use]
    pub fn id(&self) -> PepperId {
        self.id
    }

    /// `HMAC-SHA256(pepper, secret)` from the precomputed keyed state.
    #[inline]
    #[must_use]
    pub fn mac(&self, secret: &[u8]) -> [u8; DIGEST_LEN] {
        self.mac.mac(secret)
    }

    /// The stored form of `secret` under this pepper.
    #[must_use]
    pub fn digest(&self, secret: &[u8]) -> StoredDigest {
        StoredDigest { scheme: DigestScheme::HmacSha256(self.id), bytes: self.mac(secret) }
    }
}

/// Parses a pepper as [`Pepper::from_encoded`] does, as pepper 1: the one pepper of a service
/// that has not rotated yet (`std::env::var("KEYGATE_PEPPER")?.parse()?`).
impl core::str::FromStr for Pepper {
    type Err = PepperError;

    fn from_str(text: &str) -> Result<Self, PepperError> {
        Self::from_encoded(PepperId(1), text)
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pepper").field("id", &self.id).finish_non_exhaustive()
    }
}

/// The loaded peppers: the current one, which makes new digests, and up to three previous ones
/// that still verify during a rotation.
///
/// ```
/// use keygate::Pepper;
/// use keygate::secret::{DigestCheck, PepperId, Peppers};
/// let old = Pepper::new(PepperId(1), &[1; 32])?;
/// let stored = old.digest(b"secret");
/// let peppers = Peppers::new(Pepper::new(PepperId(2), &[2; 32])?).with_previous(old)?;
/// match peppers.verify(b"secret", Some(&stored)) {
///     DigestCheck::Match { rehash: Some(new) } => assert_eq!(new, peppers.current().digest(b"secret")),
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), keygate::secret::PepperError>(())
/// ```
#[derive(Clone)]
pub struct Peppers {
    current: Pepper,
    previous: [Option<Pepper>; MAX_PEPPERS - 1],
    /// Compared against when there is no record: a digest under the current pepper, so the
    /// comparison takes exactly the path a real record's does.
    dummy: StoredDigest,
}

impl Peppers {
    /// A set with one pepper, the current one.
    #[must_use]
    pub fn new(current: Pepper) -> Self {
        let dummy = current.digest(b"keygate: digest compared on a miss");
        Self { current, previous: [None, None, None], dummy }
    }

    /// Adds a previous pepper whose digests still verify (and are flagged for re-digest).
    ///
    /// # Errors
    ///
    /// [`PepperError::DuplicateId`] if a loaded pepper has its id; [`PepperError::TooMany`] past
    /// four peppers.
    pub fn with_previous(mut self, pepper: Pepper) -> Result<Self, PepperError> {
        if self.get(pepper.id).is_some() {
            return Err(PepperError::DuplicateId);
        }
        let slot = self.previous.iter_mut().find(|p| p.is_none()).ok_or(PepperError::TooMany)?;
        *slot = Some(pepper);
        Ok(self)
    }

    /// The pepper that makes new digests.
    #[must_use]
    pub fn current(&self) -> &Pepper {
        &self.current
    }

    /// The previous peppers, in the order they were added.
    pub fn previous(&self) -> impl Iterator<Item = &Pepper> {
        self.previous.iter().flatten()
    }

    /// The loaded pepper with this id.
    #[must_use]
    pub fn get(&self, id: PepperId) -> Option<&Pepper> {
        core::iter::once(&self.current).chain(self.previous()).find(|p| p.id == id)
    }

    /// The digest of `secret` under the current pepper.
    #[must_use]
    pub fn digest(&self, secret: &[u8]) -> StoredDigest {
        self.current.digest(secret)
    }

    /// Checks `secret` against `stored` in constant time; with no record, does the same work
    /// against a dummy digest and reports a mismatch.
    pub fn verify(&self, secret: &[u8], stored: Option<&StoredDigest>) -> DigestCheck {
        self.check(secret, &self.current.mac(secret), stored)
    }

    /// The digest compared against when there is no record.
    #[cfg(feature = "alloc")]
    pub(crate) fn dummy(&self) -> StoredDigest {
        self.dummy
    }

    /// [`Peppers::verify`] given `current_mac`, the secret's HMAC under the current pepper, which
    /// the caller computed once (it is also the lookup key of an opaque key).
    ///
    /// Equal work: one HMAC (the one already computed) and one comparison, whether or not there
    /// is a record and whether or not the secret matches; with no record the comparison runs
    /// against a dummy digest under the current pepper, through the same code path. While a
    /// previous pepper is loaded, a record under it needs a second HMAC; then every other path
    /// computes a second one too, so a rotation costs time but does not tell who has a record.
    pub(crate) fn check(
        &self,
        secret: &[u8],
        current_mac: &[u8; DIGEST_LEN],
        stored: Option<&StoredDigest>,
    ) -> DigestCheck {
        let present = Choice::from(u8::from(stored.is_some()));
        let stored = stored.unwrap_or(&self.dummy);
        let current = DigestScheme::HmacSha256(self.current.id);
        let second_mac = |secret: &[u8]| {
            if let Some(p) = self.previous().next() {
                core::hint::black_box(p.mac(secret));
            }
        };
        // The digest to compare, whether a match is possible at all, and whether a match wants
        // migrating to the current pepper.
        let (candidate, usable, migrate) = match stored.scheme {
            scheme if scheme == current => {
                second_mac(secret);
                (*current_mac, 1, false)
            }
            DigestScheme::HmacSha256(id) => match self.previous().find(|p| p.id == id) {
                Some(p) => (p.mac(secret), 1, true),
                None => {
                    // A pepper that is not loaded: nothing can match; equal work regardless.
                    second_mac(secret);
                    (*current_mac, 0, false)
                }
            },
            DigestScheme::Sha256 => (Sha256::digest(secret).into(), 1, true),
        };
        let matched = ct_eq_32(&candidate, &stored.bytes) & Choice::from(usable) & present;
        if !bool::from(matched) {
            return DigestCheck::Mismatch;
        }
        DigestCheck::Match { rehash: migrate.then_some(StoredDigest { scheme: current, bytes: *current_mac }) }
    }
}

impl fmt::Debug for Peppers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peppers")
            .field("current", &self.current.id)
            .field("previous", &self.previous().map(Pepper::id).collect::<PepperIds>())
            .finish_non_exhaustive()
    }
}

/// Formats a short list of pepper ids without allocating.
#[derive(Default)]
struct PepperIds([Option<PepperId>; MAX_PEPPERS]);

impl FromIterator<PepperId> for PepperIds {
    fn from_iter<I: IntoIterator<Item = PepperId>>(iter: I) -> Self {
        let mut ids = Self::default();
        for (slot, id) in ids.0.iter_mut().zip(iter) {
            *slot = Some(id);
        }
        ids
    }
}

impl fmt::Debug for PepperIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().flatten()).finish()
    }
}

/// Decodes hex text into `out`, returning the length, or `None` for anything else.
fn decode_hex(text: &str, out: &mut [u8]) -> Option<usize> {
    let b = text.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(2) || b.len() / 2 > out.len() {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(b.len() / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peppers() -> Peppers {
        Peppers::new(Pepper::new(PepperId(2), &[2; 32]).unwrap())
            .with_previous(Pepper::new(PepperId(1), &[1; 32]).unwrap())
            .unwrap()
    }

    #[test]
    fn current_pepper_matches_without_rehash() {
        let p = peppers();
        let d = p.digest(b"s3cret");
        assert_eq!(p.verify(b"s3cret", Some(&d)), DigestCheck::Match { rehash: None });
        assert_eq!(p.verify(b"s3creT", Some(&d)), DigestCheck::Mismatch);
        assert_eq!(p.verify(b"s3cret", None), DigestCheck::Mismatch);
    }

    #[test]
    fn previous_pepper_and_imported_sha256_want_rehash() {
        let p = peppers();
        let old = Pepper::new(PepperId(1), &[1; 32]).unwrap().digest(b"s3cret");
        let want = DigestCheck::Match { rehash: Some(p.digest(b"s3cret")) };
        assert_eq!(p.verify(b"s3cret", Some(&old)), want);
        let imported = StoredDigest::sha256_of(b"s3cret");
        assert_eq!(p.verify(b"s3cret", Some(&imported)), want);
        assert_eq!(p.verify(b"other", Some(&imported)), DigestCheck::Mismatch);
    }

    #[test]
    fn unknown_pepper_never_matches_even_the_dummy() {
        let p = peppers();
        let stored = StoredDigest { scheme: DigestScheme::HmacSha256(PepperId(9)), bytes: p.dummy.bytes };
        assert_eq!(p.verify(b"keygate: digest compared on a miss", Some(&stored)), DigestCheck::Mismatch);
    }

    #[test]
    fn pepper_rules() {
        assert_eq!(Pepper::new(PepperId(1), &[0; 31]).unwrap_err(), PepperError::TooShort);
        let p = Peppers::new(Pepper::new(PepperId(1), &[0; 32]).unwrap());
        assert_eq!(p.with_previous(Pepper::new(PepperId(1), &[1; 32]).unwrap()).unwrap_err(), PepperError::DuplicateId);
        let hex = "42".repeat(32);
        let a = Pepper::from_encoded(PepperId(1), &hex).unwrap();
        let b = Pepper::from_encoded(PepperId(1), " QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=\n").unwrap();
        assert_eq!(a.mac(b"x"), b.mac(b"x"));
        assert_eq!(Pepper::from_encoded(PepperId(1), "not base64!").unwrap_err(), PepperError::Encoding);
    }
}
