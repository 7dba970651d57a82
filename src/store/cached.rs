//! A read-through cache in front of any async store (feature `cache`); the design is on
//! [`CachedStore`].

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::hash::BuildHasher;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Instant;

use foldhash::quality::RandomState;
use hashbrown::{HashMap, HashTable};

use self::kids::{KidShard, KidState, ReadBudget};
use super::{AsyncKeyStore, ListQuery, Page, StoreError};
use crate::verify::Lookup;
use crate::{KeyId, KeyRecord};

mod kids;

pub use kids::KeyIds;

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
    /// How many kids the kid set rules out may still be read from the store each second.
    /// Default 100.
    ///
    /// A kid outside the set may be a key another process created a moment ago, whose change
    /// notice has not arrived yet: such kids are read from the store (and the answer cached),
    /// up to this many a second, so a new key is found the moment it is created while a flood
    /// of made-up kids costs the store at most this many reads a second. 0: a kid outside the
    /// set never reaches the store, and a key created elsewhere is found once its notice
    /// arrives.
    pub unknown_kid_reads: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(2),
            capacity: 1_000_000,
            unknown_kid_reads: 100,
        }
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

    /// The same settings with a number of kids outside the kid set read from the store each
    /// second (see [`CacheConfig::unknown_kid_reads`]).
    #[must_use]
    pub fn with_unknown_kid_reads(mut self, per_second: u32) -> Self {
        self.unknown_kid_reads = per_second;
        self
    }
}

struct Entry {
    lookup: Lookup,
    answer: Answer,
    expires: Instant,
}

/// What the store said about a lookup.
enum Answer {
    Found(Arc<KeyRecord>),
    /// The key is absent. For a kid, the entry also holds a stand-in, another record chosen when
    /// the absence was cached, handed out for a presented kid as a hit hands out its record:
    /// the same reads (the entry, then the record's reference count), so an unknown kid costs
    /// what a known one costs.
    Absent(Option<Arc<KeyRecord>>),
}

/// One shard: the entries, the shard's part of the kid set, and a record to stand in for a kid
/// the kid set rules out.
#[derive(Default)]
struct ShardData {
    entries: HashTable<Entry>,
    kids: KidShard,
    stand_in: Option<Arc<KeyRecord>>,
}

type Shard = RwLock<ShardData>;

/// A read-through cache in front of any [`AsyncKeyStore`] (feature `cache`).
///
/// ```text
/// lookup(kid) ──► shard (RwLock<HashMap>, randomly seeded hasher) ──hit, fresh──► record
///                    │ miss or stale      └─ kid not in the kid set ──► stand-in (no store read)
///                    ▼
///                 inner.lookup ──► cache it (unless a change arrived meanwhile) ──► record
/// writes ──► inner ──► invalidate here; other processes learn of it through their change feed
/// change feed (PostgreSQL LISTEN/NOTIFY: `PostgresStore::changes`) ──► invalidate(id) / clear()
/// load_kids ──► inner.key_ids ──► the kid set (again after every resync, with `follow`)
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
///   invalidate the id here before the write and again after it, also when the write's future
///   is dropped midway (a drop guard), so this process sees its own changes on the next lookup
///   even when the client that asked for the change hung up while it committed.
/// - **Unknown kids cost what known ones cost.** A presented kid ([`Lookup::Kid`]) cached as
///   absent is answered with a stand-in, another cached record, as
///   [`MemoryStore`](crate::MemoryStore) does; verification compares against it and rejects it.
/// - **Junk kids never reach the store.** With the kid set loaded ([`CachedStore::load_kids`],
///   from a store that can name its keys: [`KeyIds`]), a kid outside the set is answered with a
///   stand-in at once, and is not cached: a flood of made-up kids costs no store read and no
///   cache space. The set holds a 64-bit fingerprint per stored kid (10 to 21 bytes per kid),
///   never rules out a kid that exists (writes through the cache and change notifications add
///   to it; deletions leave it until the next load), and every presented kid is looked up in
///   it, so a kid found and a kid ruled out do the same reads. A kid that exists but is not
///   cached still costs one store read on its first use in each [`CacheConfig::ttl`]. A key
///   created by another process a moment ago, whose notice is still on its way, is found at
///   once: kids the set rules out are still read from the store up to
///   [`CacheConfig::unknown_kid_reads`] a second (a found key joins the set, an absent one is
///   cached as absent), which bounds what a flood costs the store.
///
/// A `CachedStore` is a handle: clones share one cache, so the gate and the management API can
/// both hold it (and a task following the change feed).
///
/// A lookup that hits costs a shard read lock, a hash and an `Arc` clone; the benches compare
/// it with [`MemoryStore`](crate::MemoryStore) (`cargo bench --bench backends`).
pub struct CachedStore<S>(Arc<Cache<S>>);

impl<S> Clone for CachedStore<S> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

/// What the handles of one cache share.
struct Cache<S> {
    inner: S,
    shards: Vec<Shard>,
    hasher: RandomState,
    /// Bumped by every invalidation; a fill started under an older generation is dropped.
    generation: AtomicU64,
    /// Whether the shards' kid sets hold every stored kid.
    kids: KidState,
    /// How many shards have no record to stand in for a ruled-out kid.
    without_stand_in: AtomicUsize,
    /// A kid set was loaded: [`CachedStore::follow`] loads it again after a resync.
    kids_wanted: AtomicBool,
    /// The store reads left this second for kids the set rules out.
    unknown_reads: ReadBudget,
    /// Resyncs seen by [`CachedStore::follow`], so that a reload gives way to a later one.
    #[cfg(feature = "postgres")]
    resyncs: AtomicU64,
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
        Self(Arc::new(Cache {
            inner,
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            kids: KidState::default(),
            without_stand_in: AtomicUsize::new(SHARDS),
            kids_wanted: AtomicBool::new(false),
            unknown_reads: ReadBudget::new(config.unknown_kid_reads),
            #[cfg(feature = "postgres")]
            resyncs: AtomicU64::new(0),
            hasher: RandomState::default(),
            generation: AtomicU64::new(0),
            digests: Mutex::new(HashMap::default()),
            per_shard: config.capacity.div_ceil(SHARDS).max(1),
            config,
        }))
    }

    /// The store behind the cache.
    pub fn inner(&self) -> &S {
        &self.0.inner
    }

    /// The settings.
    pub fn config(&self) -> &CacheConfig {
        &self.0.config
    }

    /// How many entries are cached (found and absent keys), expired ones included.
    pub fn len(&self) -> usize {
        self.0.shards.iter().map(|s| s.read().unwrap_or_else(PoisonError::into_inner).entries.len()).sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many kids the kid set holds (see [`CachedStore::load_kids`]); 0 before a load.
    pub fn kids_len(&self) -> usize {
        self.0.shards.iter().map(|s| s.read().unwrap_or_else(PoisonError::into_inner).kids.len()).sum()
    }

    /// Whether the kid set holds every stored kid, so that a kid outside it is refused without
    /// a store read: after [`CachedStore::load_kids`], until [`CachedStore::clear`].
    pub fn kids_loaded(&self) -> bool {
        self.0.kids.is_ready()
    }

    /// Evicts everything cached about the key `id` (its kid entry and its digest entry), so the
    /// next lookup reads the store, and adds `id` to the kid set. Call it when a change
    /// notification names `id`: a key created elsewhere is then found on its first use.
    pub fn invalidate(&self, id: &KeyId) {
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        let digest = self.0.digests.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
        let kid = Lookup::Id(*id);
        let hash = self.hash(&kid);
        self.shard(hash).write().unwrap_or_else(PoisonError::into_inner).kids.insert(hash);
        for lookup in [Some(kid), digest].into_iter().flatten() {
            self.evict(&lookup);
        }
    }

    /// Adds `ids` to the kid set; the set is complete (it rules kids out) if no
    /// [`clear`](Self::clear) happened since `epoch`. Each shard is locked once.
    fn fill_kids(&self, epoch: u64, ids: &[KeyId]) -> bool {
        let mut by_shard: Vec<Vec<u64>> = (0..SHARDS).map(|_| Vec::new()).collect();
        for id in ids {
            let hash = self.hash(&Lookup::Id(*id));
            by_shard[crate::shard::shard_of(hash, SHARDS)].push(hash);
        }
        for (shard, hashes) in self.0.shards.iter().zip(by_shard) {
            let mut shard = shard.write().unwrap_or_else(PoisonError::into_inner);
            for hash in hashes {
                shard.kids.insert(hash);
            }
        }
        self.0.kids.complete(epoch)
    }

    /// Evicts `id` now, and again when the returned guard is dropped: after the write it wraps
    /// completes, fails, or is cancelled. A write whose caller went away may still commit (the
    /// statement was already sent), and a read between the two evictions may have cached the
    /// old record, so the second eviction cannot be skipped.
    ///
    /// `digest` is the digest lookup of the record being written (an opaque key's): an absence
    /// cached for it (a key tried before it was imported, or a digest a key is moving to on
    /// use) is evicted the same way, so the key verifies on the next request.
    fn evict_around(&self, id: KeyId, digest: Option<Lookup>) -> EvictOnDrop<'_, S> {
        self.invalidate(&id);
        if let Some(digest) = &digest {
            self.evict(digest);
        }
        EvictOnDrop { cache: self, id, digest }
    }

    /// Removes the entry of `lookup`, if any.
    fn evict(&self, lookup: &Lookup) {
        let hash = self.hash(lookup);
        let mut shard = self.shard(hash).write().unwrap_or_else(PoisonError::into_inner);
        if let Ok(entry) = shard.entries.find_entry(hash, |e| e.lookup == *lookup) {
            entry.remove();
        }
    }

    /// Evicts everything, the kid set included: for when notifications may have been missed
    /// (the change feed reconnected). Until the kid set is loaded again
    /// ([`load_kids`](Self::load_kids); [`follow`](Self::follow) does it), every kid not cached
    /// is read from the store.
    pub fn clear(&self) {
        self.0.kids.reset();
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        self.0.digests.lock().unwrap_or_else(PoisonError::into_inner).clear();
        for shard in &self.0.shards {
            let mut shard = shard.write().unwrap_or_else(PoisonError::into_inner);
            if shard.stand_in.is_some() {
                self.0.without_stand_in.fetch_add(1, Ordering::AcqRel);
            }
            *shard = ShardData::default();
        }
    }

    fn hash(&self, lookup: &Lookup) -> u64 {
        self.0.hasher.hash_one(lookup)
    }

    fn shard(&self, hash: u64) -> &Shard {
        &self.0.shards[crate::shard::shard_of(hash, SHARDS)]
    }

    /// The cached answer for `lookup`, if there is a fresh one: `Some(None)` for a key known
    /// to be absent. A presented kid ([`Lookup::Kid`]) known to be absent, cached so or ruled
    /// out by the kid set, is answered with a stand-in (see [`Lookup`]), which verification
    /// rejects.
    ///
    /// Every presented kid is looked up in the kid set and in the entries, whatever either
    /// answers, so a kid ruled out does the reads a kid found does: one lock, one hash, two
    /// probes and a reference count.
    fn cached(&self, lookup: &Lookup, now: Instant) -> Option<Option<Arc<KeyRecord>>> {
        let (key, kid) = entry_key(lookup);
        let hash = self.hash(&key);
        let shard = self.shard(hash).read().unwrap_or_else(PoisonError::into_inner);
        let ruled_out = matches!(key, Lookup::Id(_)) && self.0.kids.is_ready() && !shard.kids.contains(hash);
        match shard.entries.find(hash, |e| e.lookup == key) {
            Some(entry) if now < entry.expires => Some(match &entry.answer {
                Answer::Found(record) => Some(Arc::clone(record)),
                Answer::Absent(stand_in) => stand_in.as_ref().filter(|_| kid.is_some()).cloned(),
            }),
            // Ruled out, but perhaps created elsewhere a moment ago: read, within the budget.
            _ if ruled_out && self.0.unknown_reads.take(now) => None,
            // A record found from where the kid's hash points, as a hit finds its own (the same
            // kinds of reads, of an entry as likely to be out of the processor's caches); never
            // the kid's own record, which a deleted key's may be.
            _ if ruled_out && kid.is_none() => Some(None),
            _ if ruled_out => {
                let stand_in = near_record(&shard.entries, hash).or_else(|| shard.stand_in.clone());
                Some(stand_in.filter(|r| Some(r.id) != kid))
            }
            _ => None,
        }
    }

    /// Caches what the store answered for `lookup`, unless an invalidation happened since
    /// `generation` was read. `stand_in` is what the store answered for an absent kid, if it
    /// has stand-ins; otherwise an absent kid's stand-in is taken from this shard.
    fn fill(
        &self,
        lookup: &Lookup,
        found: Option<&Arc<KeyRecord>>,
        stand_in: Option<&Arc<KeyRecord>>,
        generation: u64,
        now: Instant,
    ) {
        let ttl = if found.is_some() { self.0.config.ttl } else { self.0.config.negative_ttl };
        if ttl.is_zero() {
            return;
        }
        if let (Lookup::Digest(_), Some(record)) = (lookup, found) {
            // Registered before the entry is written: an invalidation of this id from now on
            // finds it, and one that came earlier has bumped the generation checked below.
            let replaced = self.0.digests.lock().unwrap_or_else(PoisonError::into_inner).insert(record.id, *lookup);
            // The key's digest changed (re-digested under a new pepper): its old entry goes.
            if let Some(old) = replaced.filter(|old| old != lookup) {
                self.evict(&old);
            }
        }
        if let Some(record) = found
            && self.0.without_stand_in.load(Ordering::Acquire) > 0
        {
            self.spread_stand_in(record);
        }
        let hash = self.hash(lookup);
        let mut shard = self.shard(hash).write().unwrap_or_else(PoisonError::into_inner);
        // Checked under the shard's lock: an invalidation after this point waits for the lock
        // and then evicts what is written here.
        if self.0.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if found.is_some() && matches!(lookup, Lookup::Id(_)) {
            // Found by a read the kid set ruled out: its change notice has not arrived yet.
            shard.kids.insert(hash);
        }
        let entries = &mut shard.entries;
        if entries.len() >= self.0.per_shard {
            entries.retain(|e| now < e.expires);
            if entries.len() >= self.0.per_shard {
                if found.is_none() {
                    return;
                }
                if let Some(victim) = entries.iter().next().map(|e| e.lookup) {
                    let victim_hash = self.hash(&victim);
                    if let Ok(entry) = entries.find_entry(victim_hash, |e| e.lookup == victim) {
                        entry.remove();
                    }
                }
            }
        }
        let answer = match (found, lookup) {
            (Some(record), _) => Answer::Found(Arc::clone(record)),
            (None, Lookup::Id(_)) => Answer::Absent(stand_in.cloned().or_else(|| any_record(entries, hash))),
            (None, _) => Answer::Absent(None),
        };
        let entry = Entry { lookup: *lookup, answer, expires: now + ttl };
        match entries.find_entry(hash, |e| e.lookup == *lookup) {
            Ok(mut existing) => *existing.get_mut() = entry,
            Err(absent) => {
                let table = absent.into_table();
                table.insert_unique(hash, entry, |e| self.0.hasher.hash_one(e.lookup));
            }
        }
    }
}

impl<S> CachedStore<S> {
    /// Gives `record` to every shard that has no record to stand in for a ruled-out kid yet
    /// (at most once per shard between two [`clear`](Self::clear)s).
    #[cold]
    fn spread_stand_in(&self, record: &Arc<KeyRecord>) {
        for shard in &self.0.shards {
            let mut shard = shard.write().unwrap_or_else(PoisonError::into_inner);
            if shard.stand_in.is_none() {
                shard.stand_in = Some(Arc::clone(record));
                self.0.without_stand_in.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// Evicts a key when dropped (see [`CachedStore::evict_around`]).
struct EvictOnDrop<'a, S> {
    cache: &'a CachedStore<S>,
    id: KeyId,
    digest: Option<Lookup>,
}

impl<S> Drop for EvictOnDrop<'_, S> {
    fn drop(&mut self) {
        self.cache.invalidate(&self.id);
        if let Some(digest) = &self.digest {
            self.cache.evict(digest);
        }
    }
}

/// The lookup an opaque key is found by under its stored digest.
fn opaque_digest(record: &KeyRecord) -> Option<Lookup> {
    (record.shape == crate::record::KeyShape::Opaque).then_some(Lookup::Digest(record.digest))
}

/// The entry a lookup is cached under (a kid's is its id's: one entry answers both), and the
/// presented kid, for a [`Lookup::Kid`].
fn entry_key(lookup: &Lookup) -> (Lookup, Option<KeyId>) {
    match *lookup {
        Lookup::Kid(id) => (Lookup::Id(id), Some(id)),
        other => (other, None),
    }
}

/// A record to stand in for a kid the kid set rules out: the first of the few entries from where
/// the probe for `hash` begins that holds a record, if any does (the shard's own stand-in
/// otherwise).
#[inline]
fn near_record(entries: &HashTable<Entry>, hash: u64) -> Option<Arc<KeyRecord>> {
    const NEAR: usize = 8;
    let mask = entries.num_buckets().wrapping_sub(1);
    #[allow(clippy::cast_possible_truncation)] // hashbrown probes from the low bits, truncated alike
    let start = hash as usize;
    (0..NEAR.min(entries.num_buckets())).find_map(|i| match &entries.get_bucket(start.wrapping_add(i) & mask)?.answer {
        Answer::Found(record) => Some(Arc::clone(record)),
        Answer::Absent(_) => None,
    })
}

/// A record to stand in for an absent kid, found when its absence is cached (off the hot path):
/// the first entry holding a record at or after the bucket where the probe for `hash` began,
/// wrapping around; `None` only if the shard holds no record at all.
fn any_record(shard: &HashTable<Entry>, hash: u64) -> Option<Arc<KeyRecord>> {
    let buckets = shard.num_buckets();
    let mask = buckets.wrapping_sub(1);
    #[allow(clippy::cast_possible_truncation)] // hashbrown probes from the low bits, truncated alike
    let start = hash as usize;
    (0..buckets).find_map(|i| match &shard.get_bucket(start.wrapping_add(i) & mask)?.answer {
        Answer::Found(record) => Some(Arc::clone(record)),
        Answer::Absent(_) => None,
    })
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
            let generation = self.0.generation.load(Ordering::Acquire);
            // Asked as it was asked: an inner store with stand-ins answers an unknown kid with one.
            let found = self.0.inner.lookup(&lookup).await?;
            let (key, kid) = entry_key(&lookup);
            // What is cached is the exact answer: a stand-in means the kid is absent.
            let (exact, stand_in) = match (&found, kid) {
                (Some(r), Some(kid)) if r.id != kid => (None, Some(r)),
                (found, _) => (found.as_ref(), None),
            };
            self.fill(&key, exact, stand_in, generation, Instant::now());
            Ok(found)
        }
    }

    fn get(&self, id: &KeyId) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        // Management reads go to the store: they must see the latest revision for
        // compare-and-swap, and they are not on the hot path.
        self.0.inner.get(id)
    }

    fn insert(&self, record: KeyRecord) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        let (id, digest) = (record.id, opaque_digest(&record));
        async move {
            let _evict = self.evict_around(id, digest);
            self.0.inner.insert(record).await
        }
    }

    fn insert_batch(
        &self,
        records: Vec<KeyRecord>,
    ) -> impl Future<Output = Result<Vec<Arc<KeyRecord>>, super::BatchError>> + Send {
        let keys: Vec<(KeyId, Option<Lookup>)> = records.iter().map(|r| (r.id, opaque_digest(r))).collect();
        async move {
            // The store's own batch (one transaction in the SQL stores), each key evicted
            // around it as a single insert evicts its key.
            let _evict: Vec<_> = keys.into_iter().map(|(id, digest)| self.evict_around(id, digest)).collect();
            self.0.inner.insert_batch(records).await
        }
    }

    fn replace(
        &self,
        expected_revision: u64,
        record: KeyRecord,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        let (id, digest) = (record.id, opaque_digest(&record));
        async move {
            let _evict = self.evict_around(id, digest);
            self.0.inner.replace(expected_revision, record).await
        }
    }

    fn delete(&self, id: &KeyId) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        let id = *id;
        async move {
            let _evict = self.evict_around(id, None);
            self.0.inner.delete(&id).await
        }
    }

    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<Page, StoreError>> + Send {
        self.0.inner.list(query)
    }
}

impl<S: KeyIds> CachedStore<S> {
    /// Reads the id of every stored key and from then on refuses a presented kid outside that
    /// set without reading the store, answering it with a stand-in as a cached absence is
    /// answered. Returns how many ids were read.
    ///
    /// The set stays current through the writes made through this cache and through
    /// [`invalidate`](Self::invalidate), which a change feed calls for every key it announces:
    /// follow the feed (with `postgres`: [`follow`](Self::follow), which also loads the set
    /// again after a [`clear`](Self::clear)), and start following *before* loading, so that no
    /// key created in between is missed. Until a load completes, and after a `clear`, every kid
    /// not cached is read from the store, as without a kid set.
    ///
    /// # Errors
    ///
    /// The store's [`StoreError`]; the set is then not used until a load succeeds.
    pub async fn load_kids(&self) -> Result<usize, StoreError> {
        self.0.kids_wanted.store(true, Ordering::Release);
        let epoch = self.0.kids.reset();
        for shard in &self.0.shards {
            shard.write().unwrap_or_else(PoisonError::into_inner).kids.clear();
        }
        let ids = self.0.inner.key_ids().await?;
        self.fill_kids(epoch, &ids);
        Ok(ids.len())
    }
}

#[cfg(feature = "postgres")]
impl<S> CachedStore<S> {
    /// Applies one change notification: evicts the key it names (and adds it to the kid set),
    /// or everything after the feed reconnected.
    pub fn apply(&self, change: &super::KeyChange) {
        match change {
            super::KeyChange::Changed(id) => self.invalidate(id),
            super::KeyChange::Resync => self.clear(),
        }
    }
}

#[cfg(feature = "postgres")]
impl<S: KeyIds + 'static> CachedStore<S> {
    /// Applies every notification of `changes` as it arrives; runs until the task is dropped.
    /// After a resync, if a kid set was loaded ([`load_kids`](Self::load_kids)), it is loaded
    /// again in a task of its own (retrying with backoff while the store fails), while the
    /// notifications that arrive meanwhile are applied. Spawn it next to the server, with the
    /// feed opened before the kid set is first loaded:
    ///
    /// ```no_run
    /// # async fn run(store: keygate::PostgresStore) -> Result<(), keygate::StoreError> {
    /// let changes = store.changes().await?;
    /// let cache = keygate::CachedStore::new(store);
    /// cache.load_kids().await?;
    /// tokio::spawn({
    ///     let cache = cache.clone();
    ///     async move { cache.follow(changes).await }
    /// });
    /// # Ok(()) }
    /// ```
    pub async fn follow(&self, mut changes: super::KeyChanges) {
        loop {
            let change = changes.next().await;
            self.apply(&change);
            if change == super::KeyChange::Resync && self.0.kids_wanted.load(Ordering::Acquire) {
                let resync = self.0.resyncs.fetch_add(1, Ordering::AcqRel) + 1;
                tokio::spawn(self.clone().reload_kids(resync));
            }
        }
    }

    /// Loads the kid set until a load succeeds or a later resync starts its own.
    async fn reload_kids(self, resync: u64) {
        let mut backoff = core::time::Duration::from_millis(100);
        while self.load_kids().await.is_err() {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(core::time::Duration::from_secs(10));
            if self.0.resyncs.load(Ordering::Acquire) != resync {
                return;
            }
        }
    }
}

impl<S> fmt::Debug for CachedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedStore").field("config", &self.0.config).field("len", &self.len()).finish_non_exhaustive()
    }
}
