//! The read-through cache: hits do not reach the store, every change made through the cache or
//! announced to it is seen by the very next lookup, a read racing a revocation never caches the
//! old record, absent keys are cached briefly, and the size stays bounded.
#![cfg(feature = "cache")]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keygate::record::KeyShape;
use keygate::secret::{DigestScheme, PepperId, StoredDigest};
use keygate::store::{CacheConfig, KeyIds, ListQuery, Page};
use keygate::verify::Lookup;
use keygate::{
    AsyncKeyStore, CachedStore, KeyId, KeyKind, KeyRecord, KeyStatus, KeyStore, MemoryStore, StoreError, Timestamp,
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
    /// Writes commit, then the call never returns (a reply lost, or a caller gone) and says so.
    hang_after_write: Option<Arc<Notify>>,
    /// Answers a presented kid exactly, with no stand-ins (as the SQL stores do).
    exact: bool,
}

impl Backing {
    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }

    /// Changes a record behind the cache's back, as another process would.
    fn revoke(&self, id: &KeyId) {
        let current = KeyStore::get(&self.store, id).unwrap().unwrap();
        let mut revoked = KeyRecord::clone(&current);
        revoked.status = KeyStatus::Revoked;
        KeyStore::replace(&self.store, current.revision, revoked).unwrap();
    }
}

impl AsyncKeyStore for Backing {
    async fn lookup(&self, lookup: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let found = match lookup {
            Lookup::Kid(id) if self.exact => KeyStore::lookup(&self.store, &Lookup::Id(*id)),
            _ => KeyStore::lookup(&self.store, lookup),
        };
        if let Some((entered, release)) = &self.hold {
            entered.notify_one();
            release.notified().await;
        }
        found
    }
    async fn insert(&self, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        KeyStore::insert(&self.store, record)
    }
    async fn replace(&self, expected: u64, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        let stored = KeyStore::replace(&self.store, expected, record);
        if let Some(committed) = &self.hang_after_write {
            committed.notify_one();
            std::future::pending::<()>().await;
        }
        stored
    }
    async fn delete(&self, id: &KeyId) -> Result<Arc<KeyRecord>, StoreError> {
        KeyStore::delete(&self.store, id)
    }
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        KeyStore::list(&self.store, query)
    }
}

impl KeyIds for Backing {
    async fn key_ids(&self) -> Result<Vec<KeyId>, StoreError> {
        let mut ids = Vec::new();
        loop {
            let query = ListQuery { offset: ids.len(), limit: 250, ..ListQuery::default() };
            let page = KeyStore::list(&self.store, &query)?;
            ids.extend(page.records.iter().map(|r| r.id));
            if page.records.is_empty() || ids.len() >= page.total {
                return Ok(ids);
            }
        }
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
    KeyStore::insert(&cache.inner().store, r.clone()).unwrap();
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
    let r = KeyStore::insert(&backing.store, record(5, KeyShape::Selector)).unwrap();
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
        KeyStore::insert(&cache.inner().store, r.clone()).unwrap();
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
    let cache = CachedStore::new(MemoryStore::new());
    let r = cache.insert(record(6, KeyShape::Selector)).await.unwrap();
    assert!(cache.lookup(&Lookup::Id(r.id)).await.unwrap().is_some());
    assert!(!cache.is_empty());
    cache.clear();
    assert!(cache.is_empty());
}

/// A revoking write whose caller goes away after the store committed it (a client that hung up
/// while the write waited on a lock) still evicts the key: the next lookup sees the revocation.
#[tokio::test]
async fn a_cancelled_write_that_committed_still_evicts() {
    let committed = Arc::new(Notify::new());
    let backing = Backing { hang_after_write: Some(Arc::clone(&committed)), ..Backing::default() };
    let r = KeyStore::insert(&backing.store, record(7, KeyShape::Selector)).unwrap();
    let cache = Arc::new(CachedStore::new(backing));
    let by_id = Lookup::Id(r.id);
    assert_eq!(status(cache.lookup(&by_id).await.unwrap()), Some(KeyStatus::Active));

    let mut revoked = KeyRecord::clone(&r);
    revoked.status = KeyStatus::Revoked;
    let revision = r.revision;
    let write = tokio::spawn({
        let cache = Arc::clone(&cache);
        async move { cache.replace(revision, revoked).await }
    });
    committed.notified().await;
    // A read between the commit and the cancellation caches nothing that outlives the write.
    let _ = cache.lookup(&by_id).await.unwrap();
    write.abort();
    assert!(write.await.unwrap_err().is_cancelled());
    assert_eq!(status(cache.lookup(&by_id).await.unwrap()), Some(KeyStatus::Revoked));
    assert_eq!(status(cache.lookup(&Lookup::Kid(r.id)).await.unwrap()), Some(KeyStatus::Revoked));
}

/// A presented kid the cache knows to be absent is answered with a stand-in, a live record of
/// the cache that is not the kid's, even when the store behind it has no stand-ins; the exact
/// lookup still says absent, and a kid that is there is answered with its own record.
#[tokio::test]
async fn unknown_kids_get_cached_stand_ins() {
    let cache = CachedStore::new(Backing { exact: true, ..Backing::default() });
    let known: Vec<_> = (0..500).map(|n| record(n, KeyShape::Selector)).collect();
    for r in &known {
        KeyStore::insert(&cache.inner().store, r.clone()).unwrap();
        assert_eq!(cache.lookup(&Lookup::Kid(r.id)).await.unwrap().map(|f| f.id), Some(r.id));
    }
    let mut distinct = std::collections::BTreeSet::new();
    for n in 0..500u64 {
        let unknown = KeyId::new(&format!("unk{n:012}")).unwrap();
        // The first miss goes to the store, which has no stand-in to give.
        assert!(cache.lookup(&Lookup::Kid(unknown)).await.unwrap().is_none());
        // From then on the cache knows the kid is absent and answers with a stand-in.
        let stand_in = cache.lookup(&Lookup::Kid(unknown)).await.unwrap().expect("a stand-in");
        assert_ne!(stand_in.id, unknown);
        assert!(known.iter().any(|r| r.id == stand_in.id), "a live record");
        assert!(cache.lookup(&Lookup::Id(unknown)).await.unwrap().is_none());
        distinct.insert(stand_in.id);
    }
    assert!(distinct.len() > 100, "{} distinct stand-ins", distinct.len());
    // The store was asked once per kid: stand-ins come from the cache.
    assert_eq!(cache.inner().lookups(), 1_000);
}

// ---- the kid set ---------------------------------------------------------------------------------

/// A cache in front of a store without stand-ins (as in front of PostgreSQL) holding `n` keys,
/// with its kid set loaded; no kid the set rules out is read from the store.
async fn loaded(n: u64) -> (CachedStore<Backing>, Vec<KeyRecord>) {
    loaded_with(n, CacheConfig::default().with_unknown_kid_reads(0)).await
}

async fn loaded_with(n: u64, config: CacheConfig) -> (CachedStore<Backing>, Vec<KeyRecord>) {
    let cache = CachedStore::with_config(Backing { exact: true, ..Backing::default() }, config);
    let known: Vec<_> = (0..n).map(|n| record(n, KeyShape::Selector)).collect();
    for r in &known {
        KeyStore::insert(&cache.inner().store, r.clone()).unwrap();
    }
    assert!(!cache.kids_loaded());
    assert_eq!(cache.load_kids().await.unwrap(), known.len());
    assert!(cache.kids_loaded());
    assert_eq!(cache.kids_len(), known.len());
    (cache, known)
}

/// With the kid set loaded, a flood of unknown kids never reaches the store and leaves nothing
/// in the cache; each is answered with a stand-in (a live record that is not the kid's) once
/// the cache holds a record, and known kids are still found.
#[tokio::test]
async fn a_flood_of_unknown_kids_never_reaches_the_store() {
    let (cache, known) = loaded(200).await;
    for r in &known {
        assert_eq!(cache.lookup(&Lookup::Kid(r.id)).await.unwrap().map(|f| f.id), Some(r.id));
    }
    let (lookups, entries) = (cache.inner().lookups(), cache.len());
    assert_eq!(lookups, known.len());
    let mut stand_ins = 0;
    for n in 0..50_000u64 {
        let unknown = KeyId::new(&format!("unk{n:012}")).unwrap();
        if let Some(stand_in) = cache.lookup(&Lookup::Kid(unknown)).await.unwrap() {
            assert_ne!(stand_in.id, unknown);
            assert!(known.iter().any(|r| r.id == stand_in.id), "a live record");
            stand_ins += 1;
        }
        // The exact lookup of management: absent, and not from the store either.
        assert!(cache.lookup(&Lookup::Id(unknown)).await.unwrap().is_none());
    }
    assert_eq!(cache.inner().lookups(), lookups, "an unknown kid reached the store");
    assert_eq!(cache.len(), entries, "an unknown kid was cached");
    // 200 records over 64 shards: every shard has had a record to stand in.
    assert_eq!(stand_ins, 50_000);
}

/// A kid created by another process is found on its first use after its change notification
/// (before it, the set rules it out: the test could fail); one created through the cache is
/// found at once.
#[tokio::test]
async fn a_kid_created_elsewhere_is_found_on_its_first_use_after_the_notice() {
    let (cache, _) = loaded(10).await;
    let r = record(100, KeyShape::Selector);
    KeyStore::insert(&cache.inner().store, r.clone()).unwrap();
    let lookups = cache.inner().lookups();
    assert!(cache.lookup(&Lookup::Id(r.id)).await.unwrap().is_none(), "not announced yet");
    assert_eq!(cache.inner().lookups(), lookups);
    cache.invalidate(&r.id); // the change feed's notice
    assert_eq!(cache.lookup(&Lookup::Kid(r.id)).await.unwrap().map(|f| f.id), Some(r.id));
    assert_eq!(cache.kids_len(), 11);

    let mine = cache.insert(record(101, KeyShape::Selector)).await.unwrap();
    assert_eq!(cache.lookup(&Lookup::Kid(mine.id)).await.unwrap().map(|f| f.id), Some(mine.id));
}

/// A resync (the feed lost notices) clears the set: until it is loaded again every kid is read
/// from the store; the reload finds keys created while notices were lost.
#[tokio::test]
async fn a_resync_reloads_the_kid_set() {
    let (cache, _) = loaded(10).await;
    let lost = record(200, KeyShape::Selector);
    KeyStore::insert(&cache.inner().store, lost.clone()).unwrap(); // its notice is lost
    cache.clear();
    assert!(!cache.kids_loaded());
    let lookups = cache.inner().lookups();
    assert_eq!(cache.lookup(&Lookup::Kid(lost.id)).await.unwrap().map(|f| f.id), Some(lost.id));
    let unknown = KeyId::new("unk000000000001").unwrap();
    assert!(cache.lookup(&Lookup::Kid(unknown)).await.unwrap().is_none());
    assert_eq!(cache.inner().lookups(), lookups + 2, "without a set, kids are read from the store");

    assert_eq!(cache.load_kids().await.unwrap(), 11);
    cache.invalidate(&lost.id);
    assert_eq!(cache.lookup(&Lookup::Kid(lost.id)).await.unwrap().map(|f| f.id), Some(lost.id));
    let lookups = cache.inner().lookups();
    let unknown = KeyId::new("unk000000000002").unwrap();
    assert!(cache.lookup(&Lookup::Kid(unknown)).await.unwrap().is_none_or(|r| r.id != unknown));
    assert_eq!(cache.inner().lookups(), lookups);
}

/// A deleted key stays in the set until the next load (a false positive costs one store read),
/// and its record, if it stood in for others, never answers its own kid.
#[tokio::test]
async fn a_deleted_kid_is_read_from_the_store_and_never_stands_in_for_itself() {
    let (cache, known) = loaded(1).await;
    let r = &known[0];
    assert!(cache.lookup(&Lookup::Kid(r.id)).await.unwrap().is_some());
    KeyStore::delete(&cache.inner().store, &r.id).unwrap();
    cache.invalidate(&r.id);
    assert!(cache.lookup(&Lookup::Kid(r.id)).await.unwrap().is_none_or(|f| f.id != r.id));
    // Reloaded: the kid is ruled out now, and the stand-ins were dropped with the cache.
    cache.clear();
    cache.load_kids().await.unwrap();
    assert_eq!(cache.kids_len(), 0);
    assert!(cache.lookup(&Lookup::Kid(r.id)).await.unwrap().is_none());
}

/// With the default budget of reads for kids the set rules out, a key created elsewhere is
/// found on its first use, before its change notice arrives; a flood of unknown kids reaches
/// the store at most that many times a second, and a kid read once is then answered from the
/// cache.
#[tokio::test]
async fn a_kid_created_elsewhere_is_found_before_its_notice_and_a_flood_stays_within_the_budget() {
    let (cache, _) = loaded_with(10, CacheConfig::default().with_unknown_kid_reads(5)).await;
    let r = record(300, KeyShape::Selector);
    KeyStore::insert(&cache.inner().store, r.clone()).unwrap(); // no notice
    let lookups = cache.inner().lookups();
    let started = std::time::Instant::now();
    assert_eq!(cache.lookup(&Lookup::Kid(r.id)).await.unwrap().map(|f| f.id), Some(r.id));
    assert_eq!(cache.inner().lookups(), lookups + 1);
    assert_eq!(cache.kids_len(), 11, "found: added to the set");
    assert_eq!(cache.lookup(&Lookup::Kid(r.id)).await.unwrap().map(|f| f.id), Some(r.id));
    assert_eq!(cache.inner().lookups(), lookups + 1, "then cached");

    for n in 0..10_000u64 {
        let unknown = KeyId::new(&format!("unk{n:012}")).unwrap();
        assert!(cache.lookup(&Lookup::Kid(unknown)).await.unwrap().is_none_or(|f| f.id != unknown));
    }
    let seconds = started.elapsed().as_secs() + 1;
    let reads = cache.inner().lookups() - lookups - 1;
    assert!(reads >= 4 && u64::try_from(reads).unwrap() <= 5 * seconds, "{reads} reads in {seconds} s");
}
