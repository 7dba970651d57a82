//! What the store keeps instead of a secret ([`StoredDigest`], with the [`DigestScheme`] that
//! made it), its constant-time comparison, and the outcome of a check ([`DigestCheck`]).

use core::fmt;

use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::{DIGEST_LEN, PepperId};

/// How a stored digest was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum DigestScheme {
    /// `HMAC-SHA256(pepper, secret)` with the pepper of this id: the current scheme.
    HmacSha256(PepperId),
    /// Plain `SHA-256(token)`, as imported from another system. It verifies, and is always
    /// flagged for migration to the current pepper.
    Sha256,
}

/// A digest as stored in a key record: the scheme and 32 bytes.
///
/// It is not the secret, but it is not for display either: `Debug` shows the scheme and the first
/// four bytes as a fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoredDigest {
    /// How the bytes were made.
    pub scheme: DigestScheme,
    /// The digest.
    pub bytes: [u8; DIGEST_LEN],
}

impl StoredDigest {
    /// A digest imported from a system that stored plain `SHA-256(token)`.
    #[must_use]
    pub fn imported_sha256(bytes: [u8; DIGEST_LEN]) -> Self {
        Self { scheme: DigestScheme::Sha256, bytes }
    }

    /// The digest of a plaintext opaque token imported from elsewhere, as `SHA-256(token)`.
    /// Prefer [`Pepper::digest`](super::Pepper::digest) when the pepper is at hand.
    #[must_use]
    pub fn sha256_of(token: &[u8]) -> Self {
        Self::imported_sha256(Sha256::digest(token).into())
    }

    /// Constant-time equality of the digest bytes.
    #[inline]
    #[must_use]
    pub fn ct_eq_bytes(&self, other: &[u8; DIGEST_LEN]) -> Choice {
        ct_eq_32(&self.bytes, other)
    }
}

impl fmt::Debug for StoredDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, ..] = self.bytes;
        write!(f, "StoredDigest {{ scheme: {:?}, fingerprint: {a:02x}{b:02x}{c:02x}{d:02x}.. }}", self.scheme)
    }
}

/// Constant-time equality of two 32-byte arrays, as four `u64` words and one [`Choice`].
///
/// ```
/// let a = [7u8; 32];
/// let mut b = a;
/// assert!(bool::from(keygate::secret::ct_eq_32(&a, &b)));
/// b[31] ^= 1;
/// assert!(!bool::from(keygate::secret::ct_eq_32(&a, &b)));
/// ```
#[inline]
#[must_use]
pub fn ct_eq_32(a: &[u8; DIGEST_LEN], b: &[u8; DIGEST_LEN]) -> Choice {
    let word = |x: &[u8; DIGEST_LEN], i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&x[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(w)
    };
    let diff = (0..4).fold(0u64, |acc, i| acc | (word(a, i) ^ word(b, i)));
    diff.ct_eq(&0)
}

/// The outcome of checking a secret against a stored digest.
#[derive(Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum DigestCheck {
    /// The secret matches. `rehash` is the digest under the current pepper when the stored one
    /// was made otherwise (an older pepper, or imported SHA-256): store it to migrate.
    Match {
        /// The replacement digest to store, if migration is wanted.
        rehash: Option<StoredDigest>,
    },
    /// The secret does not match, there was no record, or the record's pepper is not loaded.
    Mismatch,
}

impl fmt::Debug for DigestCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Match { rehash } => f.debug_struct("Match").field("rehash", &rehash.is_some()).finish(),
            Self::Mismatch => f.write_str("Mismatch"),
        }
    }
}
