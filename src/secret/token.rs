//! The token a key generator issues: shown to its owner once, then zeroized.

use core::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::format::MAX_TOKEN_LEN;

/// A token as issued: shown to its owner once, zeroized on drop, redacted in `Debug`.
///
/// It has no `Display`; [`SecretToken::expose_secret`] is the one deliberate way to read it.
#[derive(Clone)]
pub struct SecretToken {
    // Written in place by the key generator (`format::generate`).
    pub(crate) len: u8,
    pub(crate) bytes: [u8; MAX_TOKEN_LEN],
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
