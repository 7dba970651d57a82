//! The public parts of a key: its id ([`KeyId`]) and its kind tag ([`KeyKind`]), which print
//! freely, unlike the secret.

use core::fmt;

use rand_core::TryCryptoRng;

use super::charset::{C_ID, all_in};
use super::generate::{GenerateError, fill_base62};
use super::inline::Inline;
use super::{FormatError, MAX_ID_LEN};

/// The shortest kid a format generates.
pub(super) const MIN_KID_LEN: usize = 12;
/// The longest kind or version tag.
pub(super) const MAX_TAG_LEN: usize = 8;

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
pub struct KeyId(pub(super) Inline<MAX_ID_LEN>);

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
pub struct KeyKind(pub(super) Inline<MAX_TAG_LEN>);

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
