//! The embedded store: sharded hash tables, no global lock on the read path.
//!
//! Records live in 64 shards, each a `RwLock` over two hash tables (by id, and by digest for
//! opaque keys). A key is hashed once; six bits of the hash that the table itself does not use
//! pick the shard, and the table uses the same hash. A lookup takes one shard's read lock, so
//! readers of different keys do not touch the same lock word, and readers of one key do not
//! block each other. Writers also serialise on one mutex that guards the ordered index used for
//! listing; management writes are rare and never on the hot path.
//!
//! # Hash flooding
//!
//! The kid in a request is attacker-chosen, so the hasher is randomly seeded per store
//! (foldhash's `quality` variant, hashbrown's default): nobody can precompute kids that collide
//! in this process. Beyond the seed, the structure itself resists flooding: a flood needs many
//! colliding *stored* keys, and every stored key is a server-generated CSPRNG kid or a keyed
//! digest, neither of which a client chooses. A client controls only lookups, and a lookup in a
//! SwissTable probes at most the run of occupied groups the random keys formed, however its own
//! hash was chosen. SipHash would cost several times more per lookup for protection this layout
//! does not need.
//!
//! # Misses that cost what hits cost
//!
//! A hit reads three places the cache has likely not seen: the table's control bytes, the
//! table entry, and the record behind it. A plain miss reads only the control bytes, so an
//! unknown kid would answer faster than a known kid with a wrong secret, and the time would tell
//! which kids exist (`benches/timing_leak.rs` measured |t| in the hundreds). So
//! a [`Lookup::Kid`] that misses is answered with a *stand-in*: the first record at or
//! after the bucket where the probe began. The probe has just read those control bytes; the
//! stand-in's entry lies in the same array as a hit's, and its record is as cold as any other.
//! Its id is read and then it is cloned, in the order a hit's probe reads and clones its own.
//! Verification then compares against a real record's digest and fields, as for a wrong secret,
//! and rejects the stand-in because its id is not the kid presented.
//!
//! Two details keep the probe itself alike for hits and misses. Each entry keeps its id's hash,
//! so a probe passes over an entry whose 7-bit tag matched by chance without reading its record
//! (a miss meets about twice as many of those as a hit). And the shard bits are not the tag's
//! bits (see the `shard` module).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use foldhash::quality::RandomState;
use hashbrown::HashTable;

use super::{KeyStore, ListQuery, MAX_PAGE, Page, StoreError};
use crate::record::KeyShape;
use crate::secret::DIGEST_LEN;
use crate::shard::shard_of;
use crate::verify::Lookup;
use crate::{KeyId, KeyRecord, Timestamp};

const SHARDS: usize = 64;

type Digest = [u8; DIGEST_LEN];
type OrderKey = (Timestamp, KeyId);

#[derive(Default)]
struct Shard {
    /// Each record with its id's hash, so a probe passes over entries whose 7-bit tag matched
    /// by chance without reading their records (each read a likely cache miss).
    by_id: HashTable<(u64, Arc<KeyRecord>)>,
    by_digest: HashTable<Arc<KeyRecord>>,
}

/// Whether an id table entry is `id`'s, comparing the stored hash first so that a chance tag
/// match does not read its record.
fn entry_of(slot: Slot, id: &KeyId) -> impl Fn(&(u64, Arc<KeyRecord>)) -> bool + '_ {
    move |(h, r)| *h == slot.hash && r.id == *id
}

impl Shard {
    fn find_id(&self, slot: Slot, id: &KeyId) -> Option<&Arc<KeyRecord>> {
        self.by_id.find(slot.hash, entry_of(slot, id)).map(|(_, r)| r)
    }

    /// The stand-in for a kid this shard lacks: the first record at or after the bucket where
    /// the lookup's probe began, wrapping around the table. The probe just read the control
    /// bytes of the first group; the record's entry sits in the same array a hit's entry does,
    /// and the record is as cold as any other. With the load the table keeps, the first group
    /// almost always holds one, so the walk is as short as a probe; a run of empty buckets only
    /// makes it a little longer, never gives up: `None` only when the shard is empty.
    fn stand_in(&self, hash: u64) -> Option<&Arc<KeyRecord>> {
        if self.by_id.is_empty() {
            return None;
        }
        let buckets = self.by_id.num_buckets();
        let mask = buckets.wrapping_sub(1);
        #[allow(clippy::cast_possible_truncation)] // hashbrown probes from the low bits, truncated alike
        let start = hash as usize;
        (0..buckets).find_map(|i| self.by_id.get_bucket(start.wrapping_add(i) & mask)).map(|(_, r)| r)
    }
}

/// Where a key lives: its hash, and the shard `shard_of` gives for it.
#[derive(Clone, Copy)]
struct Slot {
    hash: u64,
    shard: usize,
}

/// The stable listing order, overall and per team.
#[derive(Default)]
struct Order {
    all: BTreeSet<OrderKey>,
    by_team: BTreeMap<String, BTreeSet<OrderKey>>,
}

impl Order {
    fn add(&mut self, r: &KeyRecord) {
        self.all.insert((r.created_at, r.id));
        if let Some(team) = &r.team_id {
            self.by_team.entry(team.clone()).or_default().insert((r.created_at, r.id));
        }
    }

    fn remove(&mut self, r: &KeyRecord) {
        self.all.remove(&(r.created_at, r.id));
        if let Some(team) = &r.team_id
            && let Some(set) = self.by_team.get_mut(team)
        {
            set.remove(&(r.created_at, r.id));
            if set.is_empty() {
                self.by_team.remove(team);
            }
        }
    }
}

/// The embedded in-memory [`KeyStore`]: millions of keys, concurrent readers, no global read lock.
///
/// ```
/// use keygate::{KeyStore, MemoryStore};
/// let store = MemoryStore::new();
/// assert_eq!(store.len(), 0);
/// ```
pub struct MemoryStore {
    shards: Vec<RwLock<Shard>>,
    hasher: RandomState,
    writer: Mutex<Order>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::default(),
            writer: Mutex::default(),
        }
    }

    /// How many records the store holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| read(s).by_id.len()).sum()
    }

    /// Whether the store is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot<K: core::hash::Hash + ?Sized>(&self, key: &K) -> Slot {
        let hash = self.hasher.hash_one(key);
        Slot { hash, shard: shard_of(hash, SHARDS) }
    }

    fn id_slot(&self, id: &KeyId) -> Slot {
        self.slot(id.as_bytes())
    }

    fn digest_slot(&self, d: &Digest) -> Slot {
        self.slot(d)
    }

    fn by_id(&self, id: &KeyId) -> Option<Arc<KeyRecord>> {
        let slot = self.id_slot(id);
        read(&self.shards[slot.shard]).find_id(slot, id).cloned()
    }

    /// The record of `id`, or a stand-in for it (see the module docs).
    fn by_kid_or_stand_in(&self, id: &KeyId) -> Option<Arc<KeyRecord>> {
        let slot = self.id_slot(id);
        let shard = read(&self.shards[slot.shard]);
        shard
            .find_id(slot, id)
            .or_else(|| {
                // Read the stand-in's id as a hit's probe reads its record's, before the clone.
                shard.stand_in(slot.hash).inspect(|r| {
                    let _ = core::hint::black_box(r.id == *id);
                })
            })
            .cloned()
    }

    fn by_digest(&self, d: &Digest) -> Option<Arc<KeyRecord>> {
        let slot = self.digest_slot(d);
        read(&self.shards[slot.shard]).by_digest.find(slot.hash, |r| r.digest.bytes == *d).cloned()
    }

    fn lock_writer(&self) -> MutexGuard<'_, Order> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the id table's entry for `record.id` to `record`: replaced in place under the
    /// shard's write lock when it exists, so a reader never finds the key missing mid-update.
    fn put_id(&self, record: &Arc<KeyRecord>) {
        let slot = self.id_slot(&record.id);
        let mut shard = write(&self.shards[slot.shard]);
        match shard.by_id.find_mut(slot.hash, entry_of(slot, &record.id)) {
            Some((_, entry)) => *entry = Arc::clone(record),
            None => {
                shard.by_id.insert_unique(slot.hash, (slot.hash, Arc::clone(record)), |(h, _)| *h);
            }
        }
    }

    fn take_id(&self, id: &KeyId) {
        let slot = self.id_slot(id);
        if let Ok(entry) = write(&self.shards[slot.shard]).by_id.find_entry(slot.hash, entry_of(slot, id)) {
            entry.remove();
        }
    }

    /// Sets the digest index's entry for an opaque `record` (replacing one with the same digest).
    fn put_digest(&self, record: &Arc<KeyRecord>) {
        if record.shape != KeyShape::Opaque {
            return;
        }
        let d = record.digest.bytes;
        let slot = self.digest_slot(&d);
        let mut shard = write(&self.shards[slot.shard]);
        match shard.by_digest.find_mut(slot.hash, |r| r.digest.bytes == d) {
            Some(entry) => *entry = Arc::clone(record),
            None => {
                shard
                    .by_digest
                    .insert_unique(slot.hash, Arc::clone(record), |r| self.digest_slot(&r.digest.bytes).hash);
            }
        }
    }

    /// Removes the digest index's entry for an opaque `record`, if it still points at that record.
    fn take_digest(&self, record: &KeyRecord) {
        if record.shape != KeyShape::Opaque {
            return;
        }
        let d = record.digest.bytes;
        let slot = self.digest_slot(&d);
        let mut shard = write(&self.shards[slot.shard]);
        if let Ok(entry) = shard.by_digest.find_entry(slot.hash, |r| r.digest.bytes == d && r.id == record.id) {
            entry.remove();
        }
    }

    fn digest_taken_by_other(&self, record: &KeyRecord) -> bool {
        record.shape == KeyShape::Opaque && self.by_digest(&record.digest.bytes).is_some_and(|r| r.id != record.id)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MemoryStore").field("len", &self.len()).finish_non_exhaustive()
    }
}

fn read(lock: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(lock: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl KeyStore for MemoryStore {
    fn lookup(&self, lookup: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        Ok(match lookup {
            Lookup::Kid(id) => self.by_kid_or_stand_in(id),
            Lookup::Id(id) => self.by_id(id),
            Lookup::Digest(d) => self.by_digest(&d.bytes),
        })
    }

    fn insert(&self, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        let mut order = self.lock_writer();
        if self.by_id(&record.id).is_some() || self.digest_taken_by_other(&record) {
            return Err(StoreError::Conflict);
        }
        let record = Arc::new(record);
        self.put_digest(&record);
        self.put_id(&record);
        order.add(&record);
        Ok(record)
    }

    fn replace(&self, expected_revision: u64, mut record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        let mut order = self.lock_writer();
        let old = self.by_id(&record.id).ok_or(StoreError::NotFound)?;
        if old.revision != expected_revision || self.digest_taken_by_other(&record) {
            return Err(StoreError::Conflict);
        }
        record.revision = expected_revision.checked_add(1).ok_or(StoreError::Conflict)?;
        let record = Arc::new(record);
        // New digest first, then the id entry in place, then the old digest: at every moment a
        // reader finds the key by id, and by whichever digest it presents.
        self.put_digest(&record);
        self.put_id(&record);
        if old.shape == KeyShape::Opaque
            && (record.shape != KeyShape::Opaque || old.digest.bytes != record.digest.bytes)
        {
            self.take_digest(&old);
        }
        order.remove(&old);
        order.add(&record);
        Ok(record)
    }

    fn delete(&self, id: &KeyId) -> Result<Arc<KeyRecord>, StoreError> {
        let mut order = self.lock_writer();
        let old = self.by_id(id).ok_or(StoreError::NotFound)?;
        self.take_id(id);
        self.take_digest(&old);
        order.remove(&old);
        Ok(old)
    }

    fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let order = self.lock_writer();
        let set = match &query.team_id {
            None => Some(&order.all),
            Some(team) => order.by_team.get(team),
        };
        let Some(set) = set else { return Ok(Page::default()) };
        let records = set
            .iter()
            .skip(query.offset)
            .take(query.limit.clamp(1, MAX_PAGE))
            .filter_map(|(_, id)| self.by_id(id))
            .collect();
        Ok(Page { records, total: set.len() })
    }
}
