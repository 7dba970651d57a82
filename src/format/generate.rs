//! Generating keys: the token written into a zeroizing buffer from a CSPRNG (base62 without
//! modulo bias, base64url), the CRC32 checksum in six base62 characters, and the result,
//! [`GeneratedKey`].

use core::fmt;

use rand_core::TryCryptoRng;

use super::MAX_TOKEN_LEN;
use super::charset::BASE62;
use super::id::{KeyId, KeyKind};
use crate::secret::SecretToken;

/// The length of the checksum, in base62 characters.
pub(super) const CHECKSUM_LEN: usize = 6;

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

/// Whether `token` ends in the checksum of what precedes it (the parsers check this).
pub(super) fn checksum_ok(token: &[u8]) -> bool {
    match token.len().checked_sub(CHECKSUM_LEN) {
        Some(split) => {
            let (body, sum) = token.split_at(split);
            checksum_chars(body) == sum
        }
        None => false,
    }
}

/// Fills `out` with uniformly random base62 characters (rejection sampling, no modulo bias).
pub(super) fn fill_base62<R: TryCryptoRng + ?Sized>(rng: &mut R, out: &mut [u8]) -> Result<(), GenerateError> {
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
pub(super) struct Writer {
    token: SecretToken,
    /// How many bytes are written (the generators read it to note where a part starts).
    pub(super) len: usize,
    overflow: bool,
}

impl Writer {
    pub(super) fn new() -> Self {
        Self { token: SecretToken { len: 0, bytes: [0; MAX_TOKEN_LEN] }, len: 0, overflow: false }
    }

    pub(super) fn push(&mut self, s: &[u8]) {
        match self.token.bytes.get_mut(self.len..self.len + s.len()) {
            Some(dst) => {
                dst.copy_from_slice(s);
                self.len += s.len();
            }
            None => self.overflow = true,
        }
    }

    pub(super) fn push_base62<R: TryCryptoRng + ?Sized>(&mut self, rng: &mut R, n: usize) -> Result<(), GenerateError> {
        let dst = self.token.bytes.get_mut(self.len..self.len + n).ok_or(GenerateError::Config)?;
        fill_base62(rng, dst)?;
        self.len += n;
        Ok(())
    }

    pub(super) fn push_b64url(&mut self, raw: &[u8]) -> Result<(), GenerateError> {
        use base64ct::{Base64UrlUnpadded, Encoding};
        let dst = self.token.bytes.get_mut(self.len..).ok_or(GenerateError::Config)?;
        let n = Base64UrlUnpadded::encode(raw, dst).map_err(|_| GenerateError::Config)?.len();
        self.len += n;
        Ok(())
    }

    pub(super) fn push_checksum(&mut self) {
        let sum = checksum_chars(&self.token.bytes[..self.len]);
        self.push(&sum);
    }

    pub(super) fn str_from(&self, at: usize) -> &str {
        core::str::from_utf8(self.token.bytes.get(at..self.len).unwrap_or_default()).unwrap_or_default()
    }

    pub(super) fn finish(
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

    #[test]
    fn checksum_known_answer() {
        // The CRC32 check value, and its base62 digits decoding back to it.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        let v: u32 = 0xCBF4_3926;
        let s = checksum_chars(b"123456789");
        let back = s.iter().fold(0u64, |acc, &c| acc * 62 + BASE62.iter().position(|&x| x == c).unwrap() as u64);
        assert_eq!(back, u64::from(v));
    }
}
