//! The verification stage as a user relies on it: the 401 codes, what is revealed when, pepper
//! rotation with migrate-on-verify, opaque and imported keys, and failing closed.
#![cfg(feature = "std")]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use keygate::format::{OpaqueFormat, SelectorFormat};
use keygate::record::KeyShape;
use keygate::secret::{DigestScheme, PepperId, Peppers, StoredDigest};
use keygate::store::{ListQuery, Page};
use keygate::verify::Lookup;
use keygate::{
    DenialCode, KeyId, KeyKind, KeyRecord, KeyStatus, KeyStore, MemoryStore, Pepper, StoreError, Timestamp, Verifier,
};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

const NOW: Timestamp = Timestamp::from_unix_secs(1_800_000_000);

fn pepper(id: u32) -> Pepper {
    Pepper::new(PepperId(id), &[u8::try_from(id).unwrap(); 32]).unwrap()
}

fn selector() -> SelectorFormat {
    SelectorFormat::new("aistats").unwrap().with_kinds(&["sk", "mk"]).unwrap()
}

fn verifier(peppers: Peppers) -> Verifier {
    Verifier::new(selector(), peppers).with_format(OpaqueFormat::new("sk-aisa-").unwrap()).unwrap()
}

/// A store holding one freshly issued key; returns the token.
fn issue(v: &Verifier, store: &MemoryStore, seed: u8) -> (String, Arc<KeyRecord>) {
    let (key, record) = v.issue(&mut ChaCha20Rng::from_seed([seed; 32]), KeyKind::STANDARD, NOW).unwrap();
    (key.token().expose_secret().to_owned(), store.insert(record).unwrap())
}

fn code(result: Result<impl Sized, keygate::Denial>) -> Option<DenialCode> {
    result.err().map(|d| d.code())
}

fn set(store: &MemoryStore, id: &KeyId, change: impl FnOnce(&mut KeyRecord)) {
    let mut r = KeyRecord::clone(&store.get(id).unwrap().unwrap());
    change(&mut r);
    let rev = r.revision;
    store.replace(rev, r).unwrap();
}

#[test]
fn a_valid_key_verifies() {
    let v = verifier(Peppers::new(pepper(1)));
    let store = MemoryStore::new();
    let (token, record) = issue(&v, &store, 1);
    let verified = v.authenticate(&store, &token, NOW).unwrap();
    assert_eq!(verified.id(), record.id);
    assert!(verified.rehash().is_none());
}

#[test]
fn unknown_kid_wrong_secret_and_wrong_kind_are_all_invalid() {
    let v = verifier(Peppers::new(pepper(1)));
    let store = MemoryStore::new();
    let (token, _) = issue(&v, &store, 1);
    let (other, _) = issue(&v, &MemoryStore::new(), 2);
    // Unknown kid: a real token of another store.
    assert_eq!(code(v.authenticate(&store, &other, NOW)), Some(DenialCode::InvalidApiKey));
    // Wrong secret: the right kid with another key's secret.
    let wrong = format!("{}{}", &token[..31], &other[31..]);
    assert_eq!(code(v.authenticate(&store, &wrong, NOW)), Some(DenialCode::InvalidApiKey));
    // Wrong kind: the same kid and secret presented as a management key.
    let as_mk = token.replacen("_sk_", "_mk_", 1);
    assert_eq!(code(v.authenticate(&store, &as_mk, NOW)), Some(DenialCode::InvalidApiKey));
    // Malformed and foreign.
    for t in ["", "aistats", "sk-proj-abc", &token[..token.len() - 1]] {
        assert_eq!(code(v.authenticate(&store, t, NOW)), Some(DenialCode::InvalidApiKey), "{t}");
    }
}

/// A miss in the memory store comes back as a stand-in, another stored record. Verification
/// must reject it even when the presented secret is that record's own: the kid decides.
#[test]
fn an_unknown_kid_is_invalid_even_with_its_stand_ins_secret() {
    let v = verifier(Peppers::new(pepper(1)));
    let store = MemoryStore::new();
    let (token, record) = issue(&v, &store, 1);
    let secret = &token["aistats_v1_sk_".len() + 17..];
    assert_eq!(secret.len(), 43);
    // Find a kid whose stand-in is this record (it must fall in the record's shard: 1 in 64).
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    let kid = (0..100_000)
        .map(|_| v.issue(&mut rng, KeyKind::STANDARD, NOW).unwrap().1.id)
        .find(|kid| store.lookup(&Lookup::Kid(*kid)).unwrap().is_some_and(|r| r.id == record.id))
        .expect("a kid in the record's shard");
    assert_ne!(kid, record.id);
    let forged = format!("aistats_v1_sk_{kid}_{secret}");
    assert_eq!(code(v.authenticate(&store, &forged, NOW)), Some(DenialCode::InvalidApiKey));
    assert_eq!(code(block_on(v.authenticate_async(&&store, &forged, NOW))), Some(DenialCode::InvalidApiKey));
    // The sans-IO core, handed the stand-in directly, says the same.
    let parsed = v.parse(&forged).unwrap();
    let lookup = v.lookup(&parsed);
    assert_eq!(code(v.verify(&parsed, &lookup, Some(&*record), NOW)), Some(DenialCode::InvalidApiKey));
    // Even a revoked stand-in reveals nothing: still invalid, not revoked.
    set(&store, &record.id, |r| r.status = KeyStatus::Revoked);
    assert_eq!(code(v.authenticate(&store, &forged, NOW)), Some(DenialCode::InvalidApiKey));
    assert_eq!(code(v.authenticate(&store, &token, NOW)), Some(DenialCode::RevokedApiKey));
}

#[test]
fn status_is_revealed_only_with_the_secret() {
    let v = verifier(Peppers::new(pepper(1)));
    let store = MemoryStore::new();
    let (token, record) = issue(&v, &store, 1);
    let wrong = format!("{}{}", &token[..token.len() - 2], if token.ends_with("AA") { "EA" } else { "AA" });
    for (status, expected) in
        [(KeyStatus::Disabled, DenialCode::DisabledApiKey), (KeyStatus::Revoked, DenialCode::RevokedApiKey)]
    {
        set(&store, &record.id, |r| r.status = status);
        assert_eq!(code(v.authenticate(&store, &token, NOW)), Some(expected));
        assert_eq!(code(v.authenticate(&store, &wrong, NOW)), Some(DenialCode::InvalidApiKey));
    }
}

#[test]
fn expiry_is_exact_and_revealed_only_with_the_secret() {
    let v = verifier(Peppers::new(pepper(1)));
    let store = MemoryStore::new();
    let (token, record) = issue(&v, &store, 1);
    let at = NOW.saturating_add(Duration::from_secs(3600));
    set(&store, &record.id, |r| r.expires_at = Some(at));
    assert!(v.authenticate(&store, &token, at.saturating_sub(Duration::from_nanos(1))).is_ok());
    assert_eq!(code(v.authenticate(&store, &token, at)), Some(DenialCode::ExpiredApiKey));
    let wrong = token.replacen("_sk_", "_mk_", 1);
    assert_eq!(code(v.authenticate(&store, &wrong, at)), Some(DenialCode::InvalidApiKey));
}

#[test]
fn revocation_is_visible_on_the_very_next_request() {
    let v = verifier(Peppers::new(pepper(1)));
    let store = MemoryStore::new();
    let (token, record) = issue(&v, &store, 1);
    assert!(v.authenticate(&store, &token, NOW).is_ok());
    set(&store, &record.id, |r| r.status = KeyStatus::Revoked);
    assert_eq!(code(v.authenticate(&store, &token, NOW)), Some(DenialCode::RevokedApiKey));
    store.delete(&record.id).unwrap();
    assert_eq!(code(v.authenticate(&store, &token, NOW)), Some(DenialCode::InvalidApiKey));
}

#[test]
fn pepper_rotation_migrates_on_verify() {
    let store = MemoryStore::new();
    let old = verifier(Peppers::new(pepper(1)));
    let (token, record) = issue(&old, &store, 1);
    assert_eq!(record.digest.scheme, DigestScheme::HmacSha256(PepperId(1)));

    // Rotate: pepper 2 is current, pepper 1 still verifies.
    let rotated = verifier(Peppers::new(pepper(2)).with_previous(pepper(1)).unwrap());
    let verified = rotated.authenticate(&store, &token, NOW).unwrap();
    assert_eq!(verified.rehash().map(|d| d.scheme), Some(DigestScheme::HmacSha256(PepperId(2))));
    let migrated = store.get(&record.id).unwrap().unwrap();
    assert_eq!(migrated.digest, pepper(2).digest(&token.as_bytes()[31..]));
    assert_eq!(migrated.revision, record.revision + 1);
    assert!(rotated.authenticate(&store, &token, NOW).unwrap().rehash().is_none());

    // Once pepper 1 is unloaded, only migrated keys verify.
    let (stale, _) = issue(&old, &store, 2);
    let done = verifier(Peppers::new(pepper(2)));
    assert!(done.authenticate(&store, &token, NOW).is_ok());
    assert_eq!(code(done.authenticate(&store, &stale, NOW)), Some(DenialCode::InvalidApiKey));
}

#[test]
fn opaque_keys_and_imports() {
    let store = MemoryStore::new();
    let v = verifier(Peppers::new(pepper(2)).with_previous(pepper(1)).unwrap());
    let format = OpaqueFormat::new("sk-aisa-").unwrap();
    let mut rng = ChaCha20Rng::from_seed([4; 32]);
    let mut opaque = |digest: &dyn Fn(&[u8]) -> StoredDigest| {
        let key = format.generate(&mut rng).unwrap();
        let token = key.token().expose_secret().to_owned();
        let record = KeyRecord::new(key.id(), KeyShape::Opaque, KeyKind::STANDARD, digest(token.as_bytes()), NOW);
        (token, store.insert(record).unwrap())
    };
    let (current, _) = opaque(&|t| pepper(2).digest(t));
    let (older, older_rec) = opaque(&|t| pepper(1).digest(t));
    let (imported, imported_rec) = opaque(&StoredDigest::sha256_of);

    assert!(v.authenticate(&store, &current, NOW).unwrap().rehash().is_none());
    for (token, id) in [(&older, older_rec.id), (&imported, imported_rec.id)] {
        assert!(v.authenticate(&store, token, NOW).unwrap().rehash().is_some());
        // Migrated: found by its current digest now, and the old digest is gone from the index.
        let now_digest = pepper(2).digest(token.as_bytes());
        assert_eq!(store.lookup(&Lookup::Digest(now_digest)).unwrap().map(|r| r.id), Some(id));
        assert!(v.authenticate(&store, token, NOW).unwrap().rehash().is_none());
    }
    // An opaque token nobody issued.
    let unknown = "sk-aisa-000000000000000000000000000000000000000000";
    assert_eq!(code(v.authenticate(&store, unknown, NOW)), Some(DenialCode::InvalidApiKey));
    // A key imported from elsewhere by its plaintext verifies too (any b64token body).
    let foreign = "sk-aisa-Imported.From~Elsewhere+With/Its_Own-Alphabet==";
    let id = KeyId::new("imported1").unwrap();
    store
        .insert(KeyRecord::new(id, KeyShape::Opaque, KeyKind::STANDARD, v.peppers().digest(foreign.as_bytes()), NOW))
        .unwrap();
    assert_eq!(v.authenticate(&store, foreign, NOW).unwrap().id(), id);
}

#[test]
fn the_sans_io_core_needs_no_store() {
    let v = verifier(Peppers::new(pepper(1)));
    let (key, record) = v.issue(&mut ChaCha20Rng::from_seed([1; 32]), KeyKind::MANAGEMENT, NOW).unwrap();
    let parsed = v.parse(key.token().expose_secret()).unwrap();
    let lookup = v.lookup(&parsed);
    assert_eq!(lookup, Lookup::Kid(record.id));
    assert!(v.verify(&parsed, &lookup, Some(&record), NOW).is_ok());
    assert_eq!(code(v.verify(&parsed, &lookup, None::<&KeyRecord>, NOW)), Some(DenialCode::InvalidApiKey));
}

/// A store that is down.
struct Down;

impl KeyStore for Down {
    fn lookup(&self, _: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        Err(StoreError::Unavailable)
    }
    fn insert(&self, _: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        Err(StoreError::Unavailable)
    }
    fn replace(&self, _: u64, _: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        Err(StoreError::Unavailable)
    }
    fn delete(&self, _: &KeyId) -> Result<Arc<KeyRecord>, StoreError> {
        Err(StoreError::Unavailable)
    }
    fn list(&self, _: &ListQuery) -> Result<Page, StoreError> {
        Err(StoreError::Unavailable)
    }
}

#[test]
fn a_failing_store_fails_closed() {
    let v = verifier(Peppers::new(pepper(1)));
    let (key, _) = v.issue(&mut ChaCha20Rng::from_seed([1; 32]), KeyKind::STANDARD, NOW).unwrap();
    let denial = v.authenticate(&Down, key.token().expose_secret(), NOW).unwrap_err();
    assert_eq!((denial.code(), denial.status()), (DenialCode::AuthUnavailable, 503));
    // A malformed token needs no store and is still just invalid.
    assert_eq!(code(v.authenticate(&Down, "nope", NOW)), Some(DenialCode::InvalidApiKey));
}

/// The async driver agrees with the sync one, on a store whose futures are ready at once.
#[test]
fn the_async_driver_agrees() {
    let v = verifier(Peppers::new(pepper(2)).with_previous(pepper(1)).unwrap());
    let store = MemoryStore::new();
    let old = verifier(Peppers::new(pepper(1)));
    let (token, record) = issue(&old, &store, 1);
    let run = |t: &str| block_on(v.authenticate_async(&store, t, NOW));
    let verified = run(&token).unwrap();
    assert_eq!(verified.id(), record.id);
    assert!(verified.rehash().is_some(), "migrated on verify");
    assert!(run(&token).unwrap().rehash().is_none());
    assert_eq!(code(run("aistats_v1_sk_nope")), Some(DenialCode::InvalidApiKey));
    set(&store, &record.id, |r| r.status = KeyStatus::Revoked);
    assert_eq!(code(run(&token)), Some(DenialCode::RevokedApiKey));
}

/// Polls a future whose I/O is ready at once (no executor needed).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// Through a cache, an imported SHA-256 key verifies on every request, before and after its
/// first use moves it to the pepper: the first request caches the absence of its peppered
/// digest, which the migration's write evicts.
#[cfg(feature = "cache")]
#[tokio::test]
async fn an_imported_key_verifies_through_a_cache_after_it_moves() {
    let store = keygate::CachedStore::new(MemoryStore::new());
    let v = verifier(Peppers::new(pepper(1)));
    let token = "sk-aisa-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
    let id = KeyId::new("imported2").unwrap();
    let record =
        KeyRecord::new(id, KeyShape::Opaque, KeyKind::STANDARD, StoredDigest::sha256_of(token.as_bytes()), NOW);
    keygate::AsyncKeyStore::insert(&store, record).await.unwrap();
    let first = v.authenticate_async(&store, token, NOW).await.unwrap();
    assert!(first.rehash().is_some(), "the first use moves the key");
    for _ in 0..3 {
        let again = v.authenticate_async(&store, token, NOW).await.unwrap();
        assert_eq!((again.id(), again.rehash().is_none()), (id, true));
    }
}
