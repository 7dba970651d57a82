//! The read-through cache: hits do not reach the store, every change made through the cache or
//! announced to it is seen by the very next lookup, a read racing a revocation never caches the
//! old record, absent keys are cached briefly, and the size stays bounded.
#![cfg(feature = "cache")]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keygate::{
    AsyncKeyStore, CacheConfig, CachedStore, DigestScheme, KeyId, KeyKind, KeyRecord, KeyShape, KeyStatus, KeyStore,
    ListQuery, Lookup, MemoryStore, Page, PepperId, Ready, StoreError, StoredDigest, Timestamp,
};
use tokio::sync::Notify;

fn digest(n: u64) -> StoredDigest {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    StoredDigest { scheme: DigestScheme::HmacSha256(PepperId(1)), bytes }
}

fn record(n: u64, shape: KeyShape) -> KeyRecord {
    let id = KeyId::new(&format!("key{n:012}")).unwrap();
    KeyRecord::new(id, shape, KeyKind::STANDARD, digest(n), Timestamp::from_unix_secs(1_000 + n))
}

/// An in-memory store that counts lookups and can hold one lookup after it has read.
#[derive(Default)]
struct Backing {
    store: MemoryStore,
    lookups: AtomicUsize,
    hold: Option<(Arc<Notify>, Arc<Notify>)>,
}

impl Backing {
    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }

    /// Changes a record behind the cache's back, as another process would.
    fn revoke(&self, id: &KeyId) {
        let current = self.store.get(id).unwrap().unwrap();
        let mut revoked = KeyRecord::clone(&current);
        revoked.status = KeyStatus::Revoked;
        self.store.replace(current.revision, revoked).unwrap();
    }
}

impl AsyncKeyStore for Backing {
    async fn lookup(&self, lookup: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let found = self.store.lookup(lookup);
        if let Some((entered, release)) = &self.hold {
            entered.notify_one();
            release.notified().await;
        }
        found
    }
    async fn insert(&self, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        self.store.insert(record)
    }
    async fn replace(&self, expected: u64, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        self.store.replace(expected, record)
    }
    async fn delete(&self, id: &KeyId) -> Result<Arc<KeyRecord>, StoreError> {
        self.store.delete(id)
    }
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        self.store.list(query)
    }
}

fn status(found: Option<Arc<KeyRecord>>) -> Option<KeyStatus> {
    found.map(|r| r.status)
}

#[tokio::test]
async fn hits_do_not_reach_the_store_and_writes_through_the_cache_are_seen_at_once() {
    let cache = CachedStore::new(Backing::default());
    let r = cache.insert(record(1, KeyShape::Selector)).await.unwrap();
    let by_id = Lookup::Id(r.id);
    for _ in 0..10 {
        assert_eq!(status(cache.lookup(&by_id).await.unwrap()), Some(KeyStatus::Active));
    }
    assert_eq!(cache.inner().lookups(), 1);

    let mut revoked = KeyRecord::clone(&r);
    revoked.status = KeyStatus::Revoked;
    cache.replace(r.revision, revoked).await.unwrap();
    assert_eq!(status(cache.lookup(&by_id).await.unwrap()), Some(KeyStatus::Revoked));
    cache.delete(&r.id).await.unwrap();
    assert_eq!(status(cache.lookup(&by_id).await.unwrap()), None);
}

#[tokio::test]
async fn a_change_elsewhere_is_seen_after_invalidation_or_the_ttl() {
    let cache =
        CachedStore::with_config(Backing::default(), CacheConfig::default().with_ttl(Duration::from_millis(200)));
    let a = cache.insert(record(1, KeyShape::Selector)).await.unwrap();
    let b = cache.insert(record(2, KeyShape::Selector)).await.unwrap();
    for r in [&a, &b] {
        assert_eq!(status(cache.lookup(&Lookup::Id(r.id)).await.unwrap()), Some(KeyStatus::Active));
    }
    cache.inner().revoke(&a.id);
    cache.inner().revoke(&b.id);
    // Not announced yet: served from the cache.
    assert_eq!(status(cache.lookup(&Lookup::Id(a.id)).await.unwrap()), Some(KeyStatus::Active));
    // Announced (a change notification): seen at once.
    cache.invalidate(&a.id);
    assert_eq!(status(cache.lookup(&Lookup::Id(a.id)).await.unwrap()), Some(KeyStatus::Revoked));
    // Never announced: seen once the TTL has passed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(cache.lookup(&Lookup::Id(b.id)).await.unwrap()), Some(KeyStatus::Revoked));
}

#[tokio::test]
async fn opaque_keys_are_evicted_by_their_id() {
    let cache = CachedStore::new(Backing::default());
    let o = cache.insert(record(3, KeyShape::Opaque)).await.unwrap();
    let by_digest = Lookup::Digest(o.digest);
    assert_eq!(status(cache.lookup(&by_digest).await.unwrap()), Some(KeyStatus::Active));
    cache.inner().revoke(&o.id);
    cache.invalidate(&o.id);
    assert_eq!(status(cache.lookup(&by_digest).await.unwrap()), Some(KeyStatus::Revoked));
    assert_eq!(cache.inner().lookups(), 2);
}

#[tokio::test]
async fn absent_keys_are_cached_briefly_and_a_creation_announced_is_seen() {
    let config = CacheConfig::default().with_negative_ttl(Duration::from_millis(200));
    let cache = CachedStore::with_config(Backing::default(), config);
    let r = record(4, KeyShape::Selector);
    let by_id = Lookup::Id(r.id);
    for _ in 0..5 {
        assert!(cache.lookup(&by_id).await.unwrap().is_none());
    }
    assert_eq!(cache.inner().lookups(), 1);
    // Created by another process: announced, then found.
    cache.inner().store.insert(r.clone()).unwrap();
    cache.invalidate(&r.id);
    assert!(cache.lookup(&by_id).await.unwrap().is_some());
    // And an unknown kid is asked again once the negative TTL has passed.
    let unknown = Lookup::Id(KeyId::new("key999999999999").unwrap());
    assert!(cache.lookup(&unknown).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(cache.lookup(&unknown).await.unwrap().is_none());
    assert_eq!(cache.inner().lookups(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_a_revocation_does_not_cache_the_old_record() {
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let backing = Backing { hold: Some((Arc::clone(&entered), Arc::clone(&release))), ..Backing::default() };
    let r = backing.store.insert(record(5, KeyShape::Selector)).unwrap();
    let cache = Arc::new(CachedStore::new(backing));
    let by_id = Lookup::Id(r.id);

    // A lookup reads the active record, and is held before it can cache it.
    let reader = {
        let cache = Arc::clone(&cache);
        tokio::spawn(async move { cache.lookup(&by_id).await })
    };
    entered.notified().await;
    // Meanwhile the key is revoked and the change announced.
    cache.inner().revoke(&r.id);
    cache.invalidate(&r.id);
    release.notify_one();
    // The racing read answers what it read, but does not keep it.
    assert_eq!(status(reader.await.unwrap().unwrap()), Some(KeyStatus::Active));
    let next = tokio::spawn({
        let cache = Arc::clone(&cache);
        async move { cache.lookup(&by_id).await }
    });
    entered.notified().await;
    release.notify_one();
    assert_eq!(status(next.await.unwrap().unwrap()), Some(KeyStatus::Revoked));
}

#[tokio::test]
async fn a_flood_of_unknown_kids_stays_bounded_and_keeps_found_keys() {
    let cache = CachedStore::with_config(Backing::default(), CacheConfig::default().with_capacity(640));
    let known: Vec<_> = (0..64).map(|n| record(n, KeyShape::Selector)).collect();
    for r in &known {
        cache.inner().store.insert(r.clone()).unwrap();
        assert!(cache.lookup(&Lookup::Id(r.id)).await.unwrap().is_some());
    }
    for n in 0..20_000u64 {
        let unknown = KeyId::new(&format!("unk{n:012}")).unwrap();
        assert!(cache.lookup(&Lookup::Id(unknown)).await.unwrap().is_none());
    }
    assert!(cache.len() <= 640 + 64, "{} entries", cache.len());
    let before = cache.inner().lookups();
    for r in &known {
        assert!(cache.lookup(&Lookup::Id(r.id)).await.unwrap().is_some());
    }
    // Absent keys are not cached in a full shard, so found keys are not pushed out by them.
    assert_eq!(cache.inner().lookups(), before);
}

#[tokio::test]
async fn clear_drops_everything() {
    let cache = CachedStore::new(Ready(MemoryStore::new()));
    let r = cache.insert(record(6, KeyShape::Selector)).await.unwrap();
    assert!(cache.lookup(&Lookup::Id(r.id)).await.unwrap().is_some());
    assert!(!cache.is_empty());
    cache.clear();
    assert!(cache.is_empty());
}
