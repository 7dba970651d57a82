//! Importing keys that exist elsewhere, by their plaintext or their SHA-256, under the rules of
//! create: a pure planner from entries to records ([`plan_import`]), all or nothing.
//!
//! ```text
//! entry (token | SHA-256 hex, + the fields of create)
//!   ──► the key's record: a token of an accepted format → its digest under the current pepper
//!       ("current"); a SHA-256 → stored as given ("imported", moved to the pepper on first use)
//!   ──► its id: a selector token's kid; for an opaque key, derived from the pepper and the
//!       key's SHA-256, so that the same key imported again, either way, has the same id
//!   ──► check_create / plan_create: the same fields, bounds and no-escalation rules as create
//!   ──► duplicates within the batch; then the store's batch insert refuses keys it holds
//! ```

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::rules::plan_create;
use super::{Caller, CreateKey, InvalidValue, ManageConfig, ManageError, RejectedEntry};
use crate::format::{BASE62, KeyFormat};
use crate::record::KeyShape;
use crate::secret::{DIGEST_LEN, Pepper, StoredDigest};
use crate::{KeyId, KeyKind, KeyRecord, Timestamp, Verifier};

/// The most entries one import takes. A larger set of keys is imported in several batches, each
/// all or nothing (the `import` example does this for a file).
pub const MAX_IMPORT_BATCH: usize = 1000;

/// The longest display prefix an imported SHA-256 entry may name, in bytes.
pub const MAX_IMPORTED_PREFIX: usize = 24;

/// How an imported key is known: its plaintext, or the SHA-256 of its plaintext.
#[derive(Clone, PartialEq, Eq)]
pub enum ImportedSecret {
    /// The key itself, as its owner presents it (zeroized on drop, never printed).
    Token(Zeroizing<String>),
    /// `SHA-256(token)`, as a system that stored plain SHA-256 digests has it.
    Sha256([u8; DIGEST_LEN]),
}

impl fmt::Debug for ImportedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token(..)"),
            Self::Sha256(d) => f.debug_tuple("Sha256").field(&StoredDigest::imported_sha256(*d)).finish(),
        }
    }
}

/// One key to import: how it is known, and its configuration, as for create.
///
/// ```
/// use keygate::manage::{CreateKey, ImportKey};
/// let entry = ImportKey::from_json(br#"{"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "name": "legacy"}"#)?;
/// assert_eq!(entry.key.name, "legacy");
/// assert!(format!("{entry:?}").contains("Sha256"));
/// # Ok::<(), keygate::manage::ManageError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportKey {
    /// The key.
    pub secret: ImportedSecret,
    /// For a SHA-256 entry, the public prefix the key is shown by (as the old system showed
    /// it; at most [`MAX_IMPORTED_PREFIX`] bytes of `[A-Za-z0-9_-]`). A token's prefix comes
    /// from the token.
    pub prefix: Option<String>,
    /// The key's configuration, validated and bounded exactly as for create. Its `kind` is not
    /// read: a selector token's kind is the token's; every opaque key is a standard key.
    pub key: CreateKey,
}

impl ImportKey {
    /// An entry for the plaintext `token`, configured as `key`.
    #[must_use]
    pub fn token(token: impl Into<String>, key: CreateKey) -> Self {
        Self { secret: ImportedSecret::Token(Zeroizing::new(token.into())), prefix: None, key }
    }

    /// An entry for the key whose SHA-256 is `digest`, configured as `key`.
    #[must_use]
    pub fn sha256(digest: [u8; DIGEST_LEN], key: CreateKey) -> Self {
        Self { secret: ImportedSecret::Sha256(digest), prefix: None, key }
    }

    /// The entry's field that holds the key, as errors name it: `key` or `sha256`.
    #[must_use]
    pub fn field(&self) -> &'static str {
        match self.secret {
            ImportedSecret::Token(_) => "key",
            ImportedSecret::Sha256(_) => "sha256",
        }
    }
}

/// Whether a stored digest is still the imported SHA-256 (`"imported"`), under the current
/// pepper (`"current"`), or under another loaded pepper (`"previous"`): the `digest` of a key's
/// JSON view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DigestState {
    /// Plain SHA-256 from another system; moved to the current pepper on the key's first use.
    Imported,
    /// HMAC-SHA256 under the current pepper.
    Current,
    /// HMAC-SHA256 under another pepper; moved to the current one on the key's next use.
    Previous,
}

impl DigestState {
    /// The state of `digest` when the current pepper is `current`.
    #[must_use]
    pub fn of(digest: &StoredDigest, current: crate::secret::PepperId) -> Self {
        match digest.scheme {
            crate::secret::DigestScheme::Sha256 => Self::Imported,
            crate::secret::DigestScheme::HmacSha256(id) if id == current => Self::Current,
            crate::secret::DigestScheme::HmacSha256(_) => Self::Previous,
        }
    }

    /// `imported`, `current` or `previous`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Imported => "imported",
            Self::Current => "current",
            Self::Previous => "previous",
        }
    }
}

/// Plans importing `entries`: one record per entry, in order, each held to the rules of create
/// ([`check_create`](crate::manage::check_create): the caller's write access and team, every
/// field, and no escalation beyond the caller's own key), with the digest and id the key's
/// form gives (see the module docs). Nothing is written; pass the records to
/// [`AsyncKeyStore::insert_batch`](crate::AsyncKeyStore::insert_batch).
///
/// # Errors
///
/// [`ManageError::Invalid`] naming `keys` for an empty batch or one over
/// [`MAX_IMPORT_BATCH`]; the caller's access errors; otherwise
/// [`ManageError::ImportRejected`] with every refused entry, each with its own error: the
/// errors of create, [`InvalidValue::KeyFormat`] for a token no accepted format parses,
/// [`ManageError::DuplicateKey`] for a key given twice.
pub fn plan_import(
    caller: &Caller,
    config: &ManageConfig,
    verifier: &Verifier,
    entries: &[ImportKey],
    now: Timestamp,
) -> Result<Vec<KeyRecord>, ManageError> {
    caller.authorize(super::Access::Write, config)?;
    check_batch_len(entries.len())?;
    let mut records = Vec::with_capacity(entries.len());
    let mut rejected = Vec::new();
    let mut seen = BTreeMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let planned = imported_record(verifier, entry, now).and_then(|issued| {
            let mut request = entry.key.clone();
            request.kind = issued.kind;
            plan_create(caller, config, &request, issued, now)
        });
        match planned {
            Ok(record) => match seen.insert(record.id, index) {
                Some(earlier) => rejected.push(RejectedEntry::new(
                    index,
                    ManageError::DuplicateKey { field: entry.field(), earlier: Some(earlier) },
                )),
                None => records.push(record),
            },
            Err(error) => rejected.push(RejectedEntry::new(index, error)),
        }
    }
    if rejected.is_empty() { Ok(records) } else { Err(ManageError::ImportRejected(rejected)) }
}

/// An import batch holds 1 to [`MAX_IMPORT_BATCH`] entries.
pub(super) fn check_batch_len(n: usize) -> Result<(), ManageError> {
    match n {
        0 => Err(ManageError::invalid("keys", InvalidValue::Empty)),
        n if n > MAX_IMPORT_BATCH => Err(ManageError::invalid("keys", InvalidValue::TooMany { max: MAX_IMPORT_BATCH })),
        _ => Ok(()),
    }
}

/// The record of an imported key before its configuration: id, shape, kind, digest, prefix.
fn imported_record(verifier: &Verifier, entry: &ImportKey, now: Timestamp) -> Result<KeyRecord, ManageError> {
    let pepper = verifier.peppers().current();
    match &entry.secret {
        ImportedSecret::Token(token) => {
            if entry.prefix.is_some() {
                return Err(ManageError::invalid("prefix", InvalidValue::With("key")));
            }
            let parsed = verifier.parse(token).map_err(|_| ManageError::invalid("key", InvalidValue::KeyFormat))?;
            let digest = pepper.digest(parsed.secret());
            let mut record = match parsed.key_id() {
                Some(kid) => {
                    let kind = KeyKind::new(parsed.kind())
                        .map_err(|_| ManageError::invalid("key", InvalidValue::KeyFormat))?;
                    KeyRecord::new(kid, KeyShape::Selector, kind, digest, now)
                }
                None => {
                    let id = import_id(pepper, &Sha256::digest(token.as_bytes()).into());
                    KeyRecord::new(id, KeyShape::Opaque, KeyKind::STANDARD, digest, now)
                }
            };
            record.prefix = parsed.display_prefix().to_string();
            Ok(record)
        }
        ImportedSecret::Sha256(sha256) => {
            let digest = StoredDigest::imported_sha256(*sha256);
            let mut record =
                KeyRecord::new(import_id(pepper, sha256), KeyShape::Opaque, KeyKind::STANDARD, digest, now);
            if let Some(prefix) = &entry.prefix {
                check_prefix(verifier, prefix)?;
                record.prefix.clone_from(prefix);
            }
            Ok(record)
        }
    }
}

/// A display prefix given for a SHA-256 entry: short, in the token alphabet, and not itself a
/// key of an accepted format.
fn check_prefix(verifier: &Verifier, prefix: &str) -> Result<(), ManageError> {
    let bad = |reason| Err(ManageError::invalid("prefix", reason));
    if prefix.is_empty() {
        return bad(InvalidValue::Empty);
    }
    if prefix.len() > MAX_IMPORTED_PREFIX {
        return bad(InvalidValue::TooLong { max: MAX_IMPORTED_PREFIX });
    }
    if let Some((at, ch)) = prefix.char_indices().find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
        return bad(InvalidValue::InvalidChar { at, ch, allowed: "ASCII letters, digits, '-' and '_'" });
    }
    if verifier.formats().any(|f| matches!(f, KeyFormat::Opaque(_)) && f.parse(prefix).is_ok()) {
        return bad(InvalidValue::Type("the start of the key, not the key"));
    }
    Ok(())
}

/// The id of an imported opaque key: 16 base62 characters of
/// `HMAC-SHA256(pepper, "keygate import id" 0x00 SHA-256(token))`. The same key imported twice,
/// as its plaintext or its SHA-256, gets the same id, which the store refuses the second time;
/// without the pepper the id says nothing about the key.
pub(super) fn import_id(pepper: &Pepper, sha256: &[u8; DIGEST_LEN]) -> KeyId {
    const LABEL: &[u8] = b"keygate import id\0";
    let mut input = [0u8; LABEL.len() + DIGEST_LEN];
    input[..LABEL.len()].copy_from_slice(LABEL);
    input[LABEL.len()..].copy_from_slice(sha256);
    let mac = pepper.mac(&input);
    let mut text = [0u8; 16];
    for (c, pair) in text.iter_mut().zip(mac.chunks_exact(2)) {
        // 65 536 values onto 62: a bias of under 0.01%, irrelevant for an id.
        *c = BASE62[usize::from(u16::from_be_bytes([pair[0], pair[1]]) % 62)];
    }
    let text = core::str::from_utf8(&text).unwrap_or_default();
    KeyId::new(text).unwrap_or(KeyId::NONE)
}

/// Decodes 64 hex digits (either case) into a SHA-256.
#[cfg(feature = "json")]
pub(super) fn sha256_hex(text: &str) -> Option<[u8; DIGEST_LEN]> {
    let b = text.as_bytes();
    if b.len() != 2 * DIGEST_LEN {
        return None;
    }
    let mut out = [0u8; DIGEST_LEN];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        *o = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{OpaqueFormat, SelectorFormat};
    use crate::secret::{PepperId, Peppers};

    fn verifier() -> Verifier {
        let peppers = Peppers::new(Pepper::new(PepperId(1), &[7; 32]).unwrap());
        Verifier::new(OpaqueFormat::new("sk-aisa-").unwrap(), peppers)
            .with_format(SelectorFormat::new("aistats").unwrap())
            .unwrap()
    }

    const TOKEN: &str = "sk-aisa-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

    #[test]
    fn a_key_has_one_id_whether_given_as_plaintext_or_sha256() {
        let v = verifier();
        let now = Timestamp::from_unix_secs(1_800_000_000);
        let by_token = imported_record(&v, &ImportKey::token(TOKEN, CreateKey::new("a")), now).unwrap();
        let sha: [u8; 32] = Sha256::digest(TOKEN.as_bytes()).into();
        let by_digest = imported_record(&v, &ImportKey::sha256(sha, CreateKey::new("a")), now).unwrap();
        assert_eq!(by_token.id, by_digest.id);
        assert_eq!(by_token.id.as_str().len(), 16);
        assert_eq!(by_token.prefix, "sk-aisa-0123");
        assert_eq!(DigestState::of(&by_token.digest, PepperId(1)), DigestState::Current);
        assert_eq!(DigestState::of(&by_digest.digest, PepperId(1)), DigestState::Imported);
        assert_eq!(DigestState::of(&by_token.digest, PepperId(2)), DigestState::Previous);
        // Another pepper, another id.
        let other = Pepper::new(PepperId(1), &[8; 32]).unwrap();
        assert_ne!(import_id(&other, &sha), by_token.id);
    }

    #[cfg(feature = "json")]
    #[test]
    fn hex() {
        let h = "9F86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert_eq!(sha256_hex(h).unwrap()[..2], [0x9f, 0x86]);
        assert!(sha256_hex(&h[1..]).is_none());
        assert!(sha256_hex(&h.replace('F', "g")).is_none());
        assert!(sha256_hex(&alloc::format!("{}é", &h[..62])).is_none());
    }
}
