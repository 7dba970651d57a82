//! The verification stage, sans-IO, and a thin driver over a [`KeyStore`](crate::KeyStore).
//!
//! ```text
//! token ──► Verifier::parse  ──► ParsedKey
//!       ──► Verifier::lookup ──► Lookup::Kid(kid) | Lookup::Digest(HMAC of an opaque token)
//!        (the caller's I/O: store.lookup(&lookup) → Option<record>)
//!       ──► Verifier::verify(key, lookup, record, now) ──► Verified<R> | Denial (401)
//! ```
//!
//! # One HMAC, under the current pepper
//!
//! Every verification computes one HMAC of the secret under the *current* pepper. For an opaque
//! key that digest is the lookup key, computed by [`Verifier::lookup`] and carried in
//! [`Lookup::Digest`] to [`Verifier::verify`], so it is computed once. For a selector key,
//! `verify` computes it without waiting to learn the record's pepper: the SHA-256 rounds then do
//! not depend on the record's memory, and the store's lock and reference-count updates happen
//! before them rather than stalled behind them. A record under a previous pepper (during a rotation) needs a second
//! HMAC; [`Peppers`] keeps that equal work.
//!
//! # What is revealed, and when
//!
//! [`Verifier::verify`] is a pure function of the presented key, the record the caller looked up
//! and `now`. It proves the secret first (in constant time, with equal work when there is no
//! record) and only then reveals the record's status: `revoked_api_key`, `disabled_api_key` and
//! `expired_api_key` go only to callers who hold the secret. Everything else is
//! `invalid_api_key`, with one message and one status.
//!
//! A token that does not parse is refused at once, without an HMAC or a lookup: whether it parses
//! depends only on the public format and the caller's own input, so the early answer tells the
//! caller nothing it did not know. What depends on server state (does this kid exist? is this the
//! secret?) costs the same work either way: one lookup, one HMAC, one comparison.
//!
//! [`Verified`] can only be made by [`Verifier::verify`] (rustls's `HandshakeSignatureValid`
//! pattern): a function that takes one knows the secret was checked.

use core::fmt;

use crate::format::{FormatError, KeyFormat, KeyId, ParseError, ParsedKey};
use crate::secret::{Peppers, StoredDigest};

const MAX_FORMATS: usize = 4;

/// What a store is asked for: a record by its id (selector keys) or by digest (opaque keys).
///
/// A presented kid is asked for as [`Lookup::Kid`], which lets a store answer a kid it does not
/// hold with a *stand-in*: another of its records, read the way a hit reads its own, so that a
/// miss costs what a hit costs and the time taken does not tell which kids exist. Verification
/// accepts a record only if its id is the kid presented, so a stand-in is compared against and
/// always rejected (`invalid_api_key`). Because the request travels in the one required method,
/// [`KeyStore::lookup`](crate::KeyStore::lookup), a store that wraps another forwards it by
/// forwarding `lookup`: the property cannot be lost on the way. A store without stand-ins
/// answers `Kid` as it answers `Id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// The record whose id is the kid of a presented key, or a stand-in (see above). Only
    /// verification asks this; everything else wants [`Lookup::Id`].
    Kid(KeyId),
    /// The record with this id, exactly (management, migration, last-used writes).
    Id(KeyId),
    /// The opaque record whose stored digest has these bytes (under this scheme).
    Digest(StoredDigest),
}

/// Parses, digests and verifies presented keys: the formats accepted and the loaded peppers.
///
/// ```
/// use keygate::{Pepper, Verifier};
/// use keygate::format::{KeyFormat, SelectorFormat};
/// use keygate::secret::{PepperId, Peppers};
/// let verifier = Verifier::new(
///     SelectorFormat::new("aistats")?,
///     Peppers::new(Pepper::new(PepperId(1), &[0x42; 32])?),
/// );
/// assert!(verifier.parse("aistats_v1_sk_short").is_err());
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Verifier {
    primary: KeyFormat,
    others: [Option<KeyFormat>; MAX_FORMATS - 1],
    peppers: Peppers,
    /// What verification compares against when the store found no record: a record like any
    /// other, holding the pepper set's dummy digest, so a miss reads the same fields of the same
    /// kind of object, in the same order, as a wrong secret does.
    #[cfg(feature = "alloc")]
    no_record: crate::KeyRecord,
}

impl Verifier {
    /// A verifier for one format. The first format is the one [`Verifier::issue`] uses.
    #[must_use]
    pub fn new(format: impl Into<KeyFormat>, peppers: Peppers) -> Self {
        Self {
            primary: format.into(),
            others: [None; MAX_FORMATS - 1],
            #[cfg(feature = "alloc")]
            no_record: with_alloc::no_record(&peppers),
            peppers,
        }
    }

    /// Also accepts keys of `format` (up to four formats, tried in order).
    ///
    /// # Errors
    ///
    /// [`FormatError::TooManyFormats`] past four formats.
    pub fn with_format(mut self, format: impl Into<KeyFormat>) -> Result<Self, FormatError> {
        let slot = self.others.iter_mut().find(|f| f.is_none()).ok_or(FormatError::TooManyFormats)?;
        *slot = Some(format.into());
        Ok(self)
    }

    /// The accepted formats, in order.
    pub fn formats(&self) -> impl Iterator<Item = &KeyFormat> {
        core::iter::once(&self.primary).chain(self.others.iter().flatten())
    }

    /// The format new keys are issued in (the first one).
    #[must_use]
    pub fn primary_format(&self) -> &KeyFormat {
        &self.primary
    }

    /// The loaded peppers.
    #[must_use]
    pub fn peppers(&self) -> &Peppers {
        &self.peppers
    }

    /// Parses a token with the first format that accepts it.
    ///
    /// # Errors
    ///
    /// The [`ParseError`] of the first format whose prefix matched, or [`ParseError::Prefix`] if
    /// no format's did.
    pub fn parse<'a>(&self, token: &'a str) -> Result<ParsedKey<'a>, ParseError> {
        let mut err = ParseError::Prefix;
        for f in self.formats() {
            match f.parse(token) {
                Ok(k) => return Ok(k),
                // Report the first format that recognised the prefix.
                Err(e) if err == ParseError::Prefix => err = e,
                Err(_) => {}
            }
        }
        Err(err)
    }

    /// What to look up for `key`: its kid, or for an opaque key its digest under the current
    /// pepper (the verification's one HMAC, carried on to [`Verifier::verify`]).
    #[must_use]
    pub fn lookup(&self, key: &ParsedKey<'_>) -> Lookup {
        match key.key_id() {
            Some(id) => Lookup::Kid(id),
            None => Lookup::Digest(self.peppers.digest(key.secret())),
        }
    }

    /// For an opaque key that [`Verifier::lookup`] did not find: its digests under the previous
    /// peppers, then as an imported plain SHA-256, each to be looked up in turn. Empty for
    /// selector keys.
    pub fn fallback_lookups<'k>(&'k self, key: &ParsedKey<'k>) -> impl Iterator<Item = Lookup> + 'k {
        let secret = key.secret();
        let opaque = key.is_opaque();
        self.peppers
            .previous()
            .filter(move |_| opaque)
            .map(move |p| Lookup::Digest(p.digest(secret)))
            .chain(opaque.then(|| Lookup::Digest(StoredDigest::sha256_of(secret))))
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier").field("formats", &FormatList(self)).field("peppers", &self.peppers).finish()
    }
}

struct FormatList<'a>(&'a Verifier);

impl fmt::Debug for FormatList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.formats()).finish()
    }
}

#[cfg(feature = "alloc")]
pub use with_alloc::Verified;

/// The authentication stage, written once and expanded twice: in [`Verifier::authenticate`]
/// over a [`KeyStore`](crate::KeyStore) (`$Store` is `KeyStore`, no `await`) and in
/// [`Verifier::authenticate_async`] over an [`AsyncKeyStore`](crate::AsyncKeyStore) (each store
/// call followed by `.await`). Not an `async fn` resolved at once: on the hot path the future's
/// state and its output moved out of it cost about a third of one HMAC
/// (`benches/authenticate.rs`), where the direct body costs nothing over the floor.
#[cfg(feature = "alloc")]
macro_rules! authenticate_stage {
    ($self:ident, $store:ident, $token:ident, $now:ident, $Store:ident, $migrate:ident $(, $await:tt)?) => {{
        let key = $self.parse($token).map_err(|_| Denial::new(DenialCode::InvalidApiKey))?;
        let unavailable = |_: StoreError| Denial::new(DenialCode::AuthUnavailable);
        // The store's lock and reference-count updates all happen here, before the HMAC in
        // `verify`: placed after it, each would wait for the SHA-256 rounds to finish.
        // A kid the store does not hold may come back as a stand-in (`Lookup::Kid`): another
        // record, which `verify` compares against and rejects, so a miss does the work of a
        // wrong secret.
        let mut lookup = $self.lookup(&key);
        let mut record = $Store::lookup($store, &lookup)$(.$await)?.map_err(unavailable)?;
        if record.is_none() && key.is_opaque() {
            // Not under the current pepper: an opaque key may be under a previous one, or
            // imported as plain SHA-256.
            for fallback in $self.fallback_lookups(&key) {
                if let Some(r) = $Store::lookup($store, &fallback)$(.$await)?.map_err(unavailable)? {
                    (lookup, record) = (fallback, Some(r));
                    break;
                }
            }
        }
        let verified = $self.verify(&key, &lookup, record, $now)?;
        if let Some(new) = verified.rehash.as_deref() {
            $migrate($store, verified.record(), *new)$(.$await)?;
        }
        Ok(verified)
    }};
}

#[cfg(feature = "alloc")]
mod with_alloc {
    use alloc::boxed::Box;
    use alloc::string::ToString;
    use alloc::sync::Arc;
    use core::borrow::Borrow;
    use core::fmt;

    use rand_core::TryCryptoRng;

    use super::{Lookup, Verifier};
    use crate::format::{GenerateError, GeneratedKey, KeyFormat, KeyKind, ParsedKey};
    use crate::record::{KeyRecord, KeyShape, KeyStatus};
    use crate::secret::{DigestCheck, DigestScheme, StoredDigest};
    use crate::store::{AsyncKeyStore, KeyStore, StoreError, resolve};
    use crate::{Denial, DenialCode, Timestamp};

    /// Proof that a presented key's secret matched its record and the key is usable now.
    ///
    /// Only [`Verifier::verify`] constructs one. `R` is how the record is held: `&KeyRecord`
    /// from the sans-IO core, `Arc<KeyRecord>` from a store.
    #[must_use]
    pub struct Verified<R> {
        record: R,
        /// Boxed: wanted only after a pepper rotation or an import, once per key, and a result
        /// that carries 8 bytes here moves through the pipeline at less cost than one that
        /// carries 33 (`benches/authenticate.rs`).
        rehash: Option<Box<StoredDigest>>,
    }

    impl<R: Borrow<KeyRecord>> Verified<R> {
        /// The verified key's record.
        #[must_use]
        pub fn record(&self) -> &KeyRecord {
            self.record.borrow()
        }

        /// The verified key's id.
        #[must_use]
        pub fn id(&self) -> crate::KeyId {
            self.record().id
        }

        /// The digest under the current pepper, when the stored one was made otherwise: store it
        /// (compare-and-swap on the record's revision) to migrate the key.
        #[must_use]
        pub fn rehash(&self) -> Option<&StoredDigest> {
            self.rehash.as_deref()
        }

        /// The record as the store handed it over (an `Arc` from a store).
        #[must_use]
        pub fn handle(&self) -> &R {
            &self.record
        }

        /// The record, consuming the proof.
        pub fn into_record(self) -> R {
            self.record
        }
    }

    impl<R: Borrow<KeyRecord>> fmt::Debug for Verified<R> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Verified")
                .field("id", &self.record().id)
                .field("kind", &self.record().kind)
                .field("rehash", &self.rehash.is_some())
                .finish_non_exhaustive()
        }
    }

    impl Verifier {
        /// Checks `key` against the `record` found for `lookup`, at `now`.
        ///
        /// The secret is proven first; only then are revoked, disabled and expired keys told
        /// apart. `record` is `None` when the store found nothing (the same work is done).
        ///
        /// # Errors
        ///
        /// A [`Denial`] with `invalid_api_key`, `revoked_api_key`, `disabled_api_key` or
        /// `expired_api_key`.
        pub fn verify<R: Borrow<KeyRecord>>(
            &self,
            key: &ParsedKey<'_>,
            lookup: &Lookup,
            record: Option<R>,
            now: Timestamp,
        ) -> Result<Verified<R>, Denial> {
            let invalid = || Denial::new(DenialCode::InvalidApiKey);
            // Opaque to the optimiser: otherwise it specialises the no-record path (knowing
            // `same_key` is false there, it drops the comparisons) and that path runs faster.
            let found = core::hint::black_box(record.as_ref().map(Borrow::borrow));
            let current = self.peppers.current();
            let rehash = match lookup {
                Lookup::Kid(id) | Lookup::Id(id) => {
                    let mac = current.mac(key.secret());
                    // Equal work without a record: the digest and the same fields are compared,
                    // without short-circuiting, on a placeholder record (measured by
                    // `benches/timing_leak.rs`).
                    let r = found.unwrap_or(&self.no_record);
                    let check = self.peppers.check(key.secret(), &mac, Some(&r.digest));
                    let same_key =
                        found.is_some() & (r.shape == KeyShape::Selector) & (r.id == *id) & key.is_kind(r.kind);
                    match check {
                        DigestCheck::Match { rehash } if same_key => rehash,
                        _ => return Err(invalid()),
                    }
                }
                Lookup::Digest(d) => {
                    // The store found the record by this digest; confirm it in constant time.
                    let confirmed = found.is_some_and(|r| {
                        r.shape == KeyShape::Opaque
                            && r.digest.scheme == d.scheme
                            && bool::from(r.digest.ct_eq_bytes(&d.bytes))
                    });
                    if !confirmed {
                        return Err(invalid());
                    }
                    (d.scheme != DigestScheme::HmacSha256(current.id())).then(|| current.digest(key.secret()))
                }
            };
            let Some(record) = record else { return Err(invalid()) };
            let r = record.borrow();
            match r.status {
                KeyStatus::Revoked => return Err(Denial::new(DenialCode::RevokedApiKey)),
                KeyStatus::Disabled => return Err(Denial::new(DenialCode::DisabledApiKey)),
                KeyStatus::Active => {}
            }
            if r.is_expired(now) {
                return Err(Denial::new(DenialCode::ExpiredApiKey));
            }
            Ok(Verified { record, rehash: rehash.map(Box::new) })
        }

        /// The whole stage over a synchronous store: parse `token`, look it up (with the
        /// fallback digests for opaque keys), verify, and migrate a key whose digest wants a
        /// re-digest (best effort: a failed migration does not fail the request). The same
        /// steps as [`Verifier::authenticate_async`], from the same source, without `.await`.
        ///
        /// # Errors
        ///
        /// A [`Denial`]: the 401 codes of [`Verifier::verify`], or `auth_unavailable` (503) if
        /// the store fails (fail closed).
        #[inline]
        pub fn authenticate<S: KeyStore + Send + Sync + ?Sized>(
            &self,
            store: &S,
            token: &str,
            now: Timestamp,
        ) -> Result<Verified<Arc<KeyRecord>>, Denial> {
            authenticate_stage!(self, store, token, now, KeyStore, migrate_now)
        }

        /// The whole stage over any store (every [`KeyStore`] is an [`AsyncKeyStore`]): parse
        /// `token`, look it up (with the fallback digests for opaque keys), verify, and migrate
        /// a key whose digest wants a re-digest (best effort: a failed migration does not fail
        /// the request).
        ///
        /// # Errors
        ///
        /// As [`Verifier::authenticate`].
        pub async fn authenticate_async<S: AsyncKeyStore + ?Sized>(
            &self,
            store: &S,
            token: &str,
            now: Timestamp,
        ) -> Result<Verified<Arc<KeyRecord>>, Denial> {
            authenticate_stage!(self, store, token, now, AsyncKeyStore, migrate, await)
        }

        /// Issues a new key of `kind` in the primary format (or, for a kind the primary format
        /// does not have, such as a management kind beside an opaque primary format, in the first
        /// accepted format that has it): the token (show it once) and the record to store, active
        /// and unrestricted, created at `now`.
        ///
        /// # Errors
        ///
        /// [`GenerateError`] if the RNG fails or no accepted format has such a kind.
        pub fn issue<G: TryCryptoRng + ?Sized>(
            &self,
            rng: &mut G,
            kind: KeyKind,
            now: Timestamp,
        ) -> Result<(GeneratedKey, KeyRecord), GenerateError> {
            let (format, generated) = self.generate(rng, kind)?;
            let parsed = format.parse(generated.token().expose_secret()).map_err(|_| GenerateError::Config)?;
            let shape = match format {
                KeyFormat::Selector(_) => KeyShape::Selector,
                KeyFormat::Opaque(_) => KeyShape::Opaque,
            };
            let mut record = KeyRecord::new(generated.id(), shape, kind, self.peppers.digest(parsed.secret()), now);
            record.prefix = generated.display_prefix().to_string();
            Ok((generated, record))
        }
    }

    impl Verifier {
        /// A key of `kind` from the primary format, or from the first format that has the kind.
        fn generate<G: TryCryptoRng + ?Sized>(
            &self,
            rng: &mut G,
            kind: KeyKind,
        ) -> Result<(&KeyFormat, GeneratedKey), GenerateError> {
            for format in self.formats() {
                match format.generate(rng, kind) {
                    Err(GenerateError::Kind) => {}
                    generated => return generated.map(|g| (format, g)),
                }
            }
            Err(GenerateError::Kind)
        }
    }

    /// The placeholder verification compares against when the store found no record: no key's
    /// id, and the dummy digest under the current pepper, so the comparison takes exactly the
    /// path a real record's does (and cannot match: `verify` also requires a record).
    pub(super) fn no_record(peppers: &crate::secret::Peppers) -> KeyRecord {
        KeyRecord::new(crate::KeyId::NONE, KeyShape::Selector, KeyKind::STANDARD, peppers.dummy(), Timestamp::EPOCH)
    }

    /// [`migrate`] over a synchronous store, at once.
    #[cold]
    fn migrate_now<S: KeyStore + Send + Sync + ?Sized>(store: &S, record: &KeyRecord, digest: StoredDigest) {
        let _ = resolve(migrate(store, record, digest));
    }

    /// Stores the re-digested record; a conflict means another request migrated it first.
    #[cold]
    async fn migrate<S: AsyncKeyStore + ?Sized>(store: &S, record: &KeyRecord, digest: StoredDigest) {
        let mut migrated = record.clone();
        migrated.digest = digest;
        let _ = store.replace(record.revision, migrated).await;
    }
}
