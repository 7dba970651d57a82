//! A read-through cache in front of any async store (feature `cache`); the design is on
//! [`CachedStore`].

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::hash::BuildHasher;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Instant;

use foldhash::quality::RandomState;
use hashbrown::{HashMap, HashTable};

use super::{AsyncKeyStore, ListQuery, Page, StoreError};
use crate::{KeyId, KeyRecord, Lookup};

const SHARDS: usize = 64;

/// How long entries live and how many there may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheConfig {
    /// The longest a found record is served from the cache without reading the store again
    /// (the bound on staleness if a change notification is lost). Default 30 s.
    pub ttl: Duration,
    /// The same for a key the store does not have. Default 2 s.
    pub negative_ttl: Duration,
    /// The most entries held. Default 1 000 000.
    pub capacity: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { ttl: Duration::from_secs(30), negative_ttl: Duration::from_secs(2), capacity: 1_000_000 }
    }
}

impl CacheConfig {
    /// The default settings with a time to live for found records.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The same settings with a time to live for absent keys.
    #[must_use]
    pub fn with_negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// The same settings with a capacity.
    #[must_use]
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }
}

struct Entry {
    lookup: Lookup,
    record: Option<Arc<KeyRecord>>,
    expires: Instant,
}

type Shard = RwLock<HashTable<Entry>>;

/// A read-through cache in front of any [`AsyncKeyStore`] (feature `cache`).
///
/// ```text
/// lookup(kid) ──► shard (RwLock<HashMap>, randomly seeded hasher) ──hit, fresh──► record
///                    │ miss or stale
///                    ▼
///                 inner.lookup ──► cache it (unless a change arrived meanwhile) ──► record
/// writes ──► inner ──► invalidate here; other processes learn of it through their change feed
/// change feed (PostgreSQL LISTEN/NOTIFY: `PostgresStore::changes`) ──► invalidate(id) / clear()
/// ```
///
/// # Design
///
/// - **Keys.** Entries are keyed by the [`Lookup`] itself (a kid or an opaque key's digest);
///   the hasher is foldhash's randomly seeded one, because kids are chosen by whoever sends a
///   request. A side map from id to digest lets a change to an opaque key's id evict its digest
///   entry; an invalidation touches two entries, whatever the cache's size.
/// - **Absent keys are cached too**, for [`CacheConfig::negative_ttl`] (short), so a flood of
///   unknown kids costs one store read per kid and period, not one per request.
/// - **Invalidation at once, TTL as the safety net.** [`CachedStore::invalidate`] evicts one
///   key and [`CachedStore::clear`] everything; a change feed calls them as notifications
///   arrive (with `postgres`: [`CachedStore::follow`]). A record is never served older than
///   [`CacheConfig::ttl`], so a lost notification heals by itself.
/// - **No stale fill.** A miss reads the store, then caches what it read only if no
///   invalidation happened in between (a generation counter bumped by every invalidation);
///   otherwise the answer is returned uncached. A revocation is therefore never overwritten by
///   a read that started before it.
/// - **Bounded.** At most [`CacheConfig::capacity`] entries: a full shard first drops its
///   expired entries, then stops caching absent keys, then evicts an arbitrary entry.
/// - **Writes go through.** `insert`, `replace` and `delete` write to the inner store and
///   invalidate the id here, so this process sees its own changes on the next lookup.
///
/// A lookup that hits costs a shard read lock, a hash and an `Arc` clone; the benches compare
/// it with [`MemoryStore`](crate::MemoryStore) (`cargo bench --bench backends`).
pub struct CachedStore<S> {
    inner: S,
    shards: Vec<Shard>,
    hasher: RandomState,
    /// Bumped by every invalidation; a fill started under an older generation is dropped.
    generation: AtomicU64,
    /// The digest entry of each opaque key found by digest, so that a change to its id evicts it.
    digests: Mutex<HashMap<KeyId, Lookup, RandomState>>,
    config: CacheConfig,
    per_shard: usize,
}

impl<S> CachedStore<S> {
    /// A cache in front of `inner` with the default [`CacheConfig`].
    pub fn new(inner: S) -> Self {
        Self::with_config(inner, CacheConfig::default())
    }

    /// A cache in front of `inner` with `config`.
    pub fn with_config(inner: S, config: CacheConfig) -> Self {
        Self {
            inner,
            shards: (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect(),
            hasher: RandomState::default(),
            generation: AtomicU64::new(0),
            digests: Mutex::new(HashMap::default()),
            per_shard: config.capacity.div_ceil(SHARDS).max(1),
            config,
        }
    }

    /// The store behind the cache.
    pub const fn inner(&self) -> &S {
        &self.inner
    }

    /// The settings.
    pub const fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// How many entries are cached (found and absent keys), expired ones included.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len()).sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evicts everything cached about the key `id` (its kid entry and its digest entry), so the
    /// next lookup reads the store. Call it when a change notification names `id`.
    pub fn invalidate(&self, id: &KeyId) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let digest = self.digests.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
        for lookup in [Some(Lookup::Id(*id)), digest].into_iter().flatten() {
            self.evict(&lookup);
        }
    }

    /// Removes the entry of `lookup`, if any.
    fn evict(&self, lookup: &Lookup) {
        let hash = self.hash(lookup);
        let mut shard = self.shard(hash).write().unwrap_or_else(PoisonError::into_inner);
        if let Ok(entry) = shard.find_entry(hash, |e| e.lookup == *lookup) {
            entry.remove();
        }
    }

    /// Evicts everything: for when notifications may have been missed (the change feed
    /// reconnected).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.digests.lock().unwrap_or_else(PoisonError::into_inner).clear();
        for shard in &self.shards {
            shard.write().unwrap_or_else(PoisonError::into_inner).clear();
        }
    }

    fn hash(&self, lookup: &Lookup) -> u64 {
        self.hasher.hash_one(lookup)
    }

    fn shard(&self, hash: u64) -> &Shard {
        &self.shards[crate::shard::shard_of(hash, SHARDS)]
    }

    /// The cached answer for `lookup`, if there is a fresh one: `Some(None)` for a key known
    /// to be absent.
    fn cached(&self, lookup: &Lookup, now: Instant) -> Option<Option<Arc<KeyRecord>>> {
        let hash = self.hash(lookup);
        let shard = self.shard(hash).read().unwrap_or_else(PoisonError::into_inner);
        let entry = shard.find(hash, |e| e.lookup == *lookup)?;
        (now < entry.expires).then(|| entry.record.clone())
    }

    /// Caches what the store answered for `lookup`, unless an invalidation happened since
    /// `generation` was read.
    fn fill(&self, lookup: &Lookup, found: Option<&Arc<KeyRecord>>, generation: u64, now: Instant) {
        let ttl = if found.is_some() { self.config.ttl } else { self.config.negative_ttl };
        if ttl.is_zero() {
            return;
        }
        if let (Lookup::Digest(_), Some(record)) = (lookup, found) {
            // Registered before the entry is written: an invalidation of this id from now on
            // finds it, and one that came earlier has bumped the generation checked below.
            let replaced = self.digests.lock().unwrap_or_else(PoisonError::into_inner).insert(record.id, *lookup);
            // The key's digest changed (re-digested under a new pepper): its old entry goes.
            if let Some(old) = replaced.filter(|old| old != lookup) {
                self.evict(&old);
            }
        }
        let hash = self.hash(lookup);
        let mut shard = self.shard(hash).write().unwrap_or_else(PoisonError::into_inner);
        // Checked under the shard's lock: an invalidation after this point waits for the lock
        // and then evicts what is written here.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if shard.len() >= self.per_shard {
            shard.retain(|e| now < e.expires);
            if shard.len() >= self.per_shard {
                if found.is_none() {
                    return;
                }
                if let Some(victim) = shard.iter().next().map(|e| e.lookup) {
                    let victim_hash = self.hash(&victim);
                    if let Ok(entry) = shard.find_entry(victim_hash, |e| e.lookup == victim) {
                        entry.remove();
                    }
                }
            }
        }
        let entry = Entry { lookup: *lookup, record: found.cloned(), expires: now + ttl };
        match shard.find_entry(hash, |e| e.lookup == *lookup) {
            Ok(mut existing) => *existing.get_mut() = entry,
            Err(absent) => {
                let table = absent.into_table();
                table.insert_unique(hash, entry, |e| self.hasher.hash_one(e.lookup));
            }
        }
    }
}

impl<S: AsyncKeyStore> AsyncKeyStore for CachedStore<S> {
    fn lookup(&self, lookup: &Lookup) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        let now = Instant::now();
        let cached = self.cached(lookup, now);
        let lookup = *lookup;
        async move {
            if let Some(answer) = cached {
                return Ok(answer);
            }
            let generation = self.generation.load(Ordering::Acquire);
            let found = self.inner.lookup(&lookup).await?;
            self.fill(&lookup, found.as_ref(), generation, Instant::now());
            Ok(found)
        }
    }

    fn get(&self, id: &KeyId) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        // Management reads go to the store: they must see the latest revision for
        // compare-and-swap, and they are not on the hot path.
        self.inner.get(id)
    }

    fn insert(&self, record: KeyRecord) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        let id = record.id;
        async move {
            let stored = self.inner.insert(record).await;
            self.invalidate(&id);
            stored
        }
    }

    fn replace(
        &self,
        expected_revision: u64,
        record: KeyRecord,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        let id = record.id;
        async move {
            let stored = self.inner.replace(expected_revision, record).await;
            self.invalidate(&id);
            stored
        }
    }

    fn delete(&self, id: &KeyId) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        let id = *id;
        async move {
            let deleted = self.inner.delete(&id).await;
            self.invalidate(&id);
            deleted
        }
    }

    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<Page, StoreError>> + Send {
        self.inner.list(query)
    }
}

#[cfg(feature = "postgres")]
impl<S> CachedStore<S> {
    /// Applies one change notification: evicts the key it names, or everything after the feed
    /// reconnected.
    pub fn apply(&self, change: &super::KeyChange) {
        match change {
            super::KeyChange::Changed(id) => self.invalidate(id),
            super::KeyChange::Resync => self.clear(),
        }
    }

    /// Applies every notification of `changes` as it arrives; runs until the task is dropped.
    /// Spawn it next to the server:
    /// `tokio::spawn(async move { cache.follow(store.changes().await?).await })`.
    pub async fn follow(&self, mut changes: super::KeyChanges) {
        loop {
            let change = changes.next().await;
            self.apply(&change);
        }
    }
}

impl<S> fmt::Debug for CachedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedStore").field("config", &self.config).field("len", &self.len()).finish_non_exhaustive()
    }
}
