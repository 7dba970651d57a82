//! Peppers, stored digests, constant-time verification, and the tokens a key generator issues.
//!
//! A key's secret is never stored. The store holds
//! `digest = HMAC-SHA256(pepper, secret)` together with the pepper's [`PepperId`]; the pepper
//! comes from the operator's configuration, never from the store, so a leaked database alone
//! lets nobody test a guess.
//!
//! # Design
//!
//! * **Keyed state once.** [`Pepper::new`] runs the HMAC key schedule once: the SHA-256 states
//!   after the inner (`key ^ ipad`) and outer (`key ^ opad`) blocks. Each verification starts
//!   from copies of those two 32-byte states and runs exactly two compressions for a secret of up
//!   to 55 bytes, building the padded blocks on the stack. This is RFC 2104 HMAC-SHA256
//!   (checked against RFC 4231 and Python's `hmac` in the tests), without the per-call clone,
//!   buffering and wiping of a whole `Hmac<Sha256>` object.
//! * **Constant time.** Digests are fixed 32-byte arrays compared as four `u64` words folded into
//!   one [`subtle::Choice`]; no early exit, no slice-length branch (`subtle`'s slice `ct_eq` goes
//!   byte by byte through a call).
//! * **Timing-equalised misses.** [`Peppers::verify`] given no record still runs one HMAC with
//!   the current pepper and one comparison against a dummy digest, the same work as a wrong
//!   secret, so response time does not tell whether a kid exists.
//! * **Rotation.** [`Peppers`] holds the current pepper and up to three previous ones. A digest
//!   made with a previous pepper still verifies, and the result carries the re-digest under the
//!   current pepper for the caller to store (migrate on verify). Digests imported as plain
//!   SHA-256 of the token verify the same way and are always flagged for migration.
//! * **Why not argon2 or bcrypt.** Those slow KDFs exist to protect low-entropy passwords. A key
//!   secret carries at least 256 bits from a CSPRNG: nobody can enumerate it, slow hashing or not,
//!   and a slow KDF would spend on every request the CPU it is tuned to spend on a login,
//!   turning the gateway into its own denial-of-service target. A keyed HMAC is the right tool.
//! * **Issued tokens.** A generated key's plaintext is a [`SecretToken`]: shown to its owner once,
//!   zeroized on drop, redacted in `Debug`, with no `Display`.

mod digest;
mod hmac;
mod pepper;
mod token;

pub use digest::{DigestCheck, DigestScheme, StoredDigest, ct_eq_32};
pub use pepper::{Pepper, PepperError, PepperId, Peppers};
pub use token::SecretToken;

/// The length of every digest, in bytes.
pub const DIGEST_LEN: usize = 32;
