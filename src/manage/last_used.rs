//! When each key was last used: recorded in memory on the request path, written to the store at
//! most once per interval per key, off the request path (needs `std`).

#![cfg(feature = "std")]

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::hash::BuildHasher;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use foldhash::quality::RandomState;
use hashbrown::HashMap;

use super::rules::record_use;
use crate::store::resolve;
use crate::{AsyncKeyStore, KeyId, KeyStore, StoreError, Timestamp};

const SHARDS: usize = 32;
/// `written_at` of an entry never written.
const NEVER: u64 = u64::MAX;

/// What the tracker knows about one key, in nanoseconds since the epoch.
struct Entry {
    /// The latest use seen.
    seen: AtomicU64,
    /// The latest use written to the store.
    written: AtomicU64,
    /// When that write happened (the `now` of the flush), or [`NEVER`].
    written_at: AtomicU64,
}

type Shard = RwLock<HashMap<KeyId, Entry, RandomState>>;

/// Last-used timestamps per key, so an operator can see that a key went idle (for example the
/// old key of a rotation) before revoking it.
///
/// - [`LastUsed::touch`] is for the request path, after a key is verified: in the common case
///   one shared (read) lock of one of 32 shards and one atomic `fetch_max`; the first use of a
///   key since its entry was dropped takes the shard's write lock once. It never touches the
///   store.
/// - [`LastUsed::flush`] is for a background task: it writes each key's latest use to the store
///   as [`KeyRecord::last_used_at`](crate::KeyRecord) (compare-and-swap on the revision, leaving
///   `updated_at` alone), **at most once per `interval` per key**, and only when there is a
///   newer use than the one written. Call it about once per `interval`.
/// - For an asynchronous store, [`LastUsed::due`], [`LastUsed::written`] and
///   [`LastUsed::forget`] are the same steps without the I/O.
///
/// The entry of a key that was written and then not used for an interval is dropped, so the map
/// holds the keys used recently. Call `touch` only with the ids of verified keys, never with an
/// id taken from an unverified request, or anyone could grow the map.
///
/// ```
/// use core::time::Duration;
/// use keygate::{KeyStore, MemoryStore, Timestamp};
/// use keygate::manage::LastUsed;
/// # use keygate::{KeyKind, OsRng, Pepper, Verifier};
/// # use keygate::format::SelectorFormat;
/// # use keygate::secret::{PepperId, Peppers};
/// # let verifier = Verifier::new(SelectorFormat::new("aistats").unwrap(), Peppers::new(Pepper::new(PepperId(1), &[7; 32]).unwrap()));
/// # let t0 = Timestamp::from_unix_secs(1_800_000_000);
/// # let (_, record) = verifier.issue(&mut OsRng, KeyKind::STANDARD, t0).unwrap();
/// let store = MemoryStore::new();
/// let id = store.insert(record)?.id;
/// let last_used = LastUsed::new(Duration::from_secs(60));
///
/// last_used.touch(id, t0);                                 // on each request
/// assert_eq!(last_used.flush(&store, t0).written, 1);      // in the background
/// assert_eq!(store.get(&id)?.unwrap().last_used_at, Some(t0));
///
/// let t1 = Timestamp::from_unix_secs(1_800_000_010);
/// last_used.touch(id, t1);
/// assert_eq!(last_used.flush(&store, t1).written, 0);      // not yet: written 10 s ago
/// let t2 = Timestamp::from_unix_secs(1_800_000_060);
/// assert_eq!(last_used.flush(&store, t2).written, 1);      // the use at t1, a minute later
/// assert_eq!(store.get(&id)?.unwrap().last_used_at, Some(t1));
/// # Ok::<(), keygate::StoreError>(())
/// ```
pub struct LastUsed {
    shards: Box<[Shard]>,
    hasher: RandomState,
    interval: Duration,
}

/// What a [`LastUsed::flush`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Flushed {
    /// Records written.
    pub written: usize,
    /// Keys that were due but whose record already said as late a use, or no longer exists.
    pub skipped: usize,
    /// Keys whose write failed (kept due for the next flush).
    pub failed: usize,
}

impl LastUsed {
    /// A tracker that writes each key at most once per `interval`.
    #[must_use]
    pub fn new(interval: Duration) -> Self {
        let hasher = RandomState::default();
        let shards = (0..SHARDS).map(|_| RwLock::new(HashMap::with_hasher(hasher.clone()))).collect();
        Self { shards, hasher, interval }
    }

    /// The configured interval.
    #[must_use]
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How many keys the tracker holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| read(s).len()).sum()
    }

    /// Whether the tracker holds no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, id: &KeyId) -> &Shard {
        #[allow(clippy::cast_possible_truncation)] // the top 5 bits: < 32
        let i = (self.hasher.hash_one(id) >> 59) as usize;
        &self.shards[i % SHARDS]
    }

    /// Records that the key `id` was used at `now`. Cheap, never blocks on I/O.
    pub fn touch(&self, id: KeyId, now: Timestamp) {
        let at = now.unix_nanos();
        let shard = self.shard(&id);
        if let Some(e) = read(shard).get(&id) {
            e.seen.fetch_max(at, Ordering::Relaxed);
            return;
        }
        let mut map = write(shard);
        let e = map.entry(id).or_insert_with(|| Entry {
            seen: AtomicU64::new(0),
            written: AtomicU64::new(0),
            written_at: AtomicU64::new(NEVER),
        });
        e.seen.fetch_max(at, Ordering::Relaxed);
    }

    /// The keys whose latest use is to be written at `now`, each with that use: a use newer
    /// than the one written, and no write for the key within the interval. Also drops the
    /// entries of keys written an interval ago and not used since.
    #[must_use]
    pub fn due(&self, now: Timestamp) -> Vec<(KeyId, Timestamp)> {
        let now = now.unix_nanos();
        let interval = u64::try_from(self.interval.as_nanos()).unwrap_or(u64::MAX);
        let waited = |e: &Entry| {
            let at = e.written_at.load(Ordering::Relaxed);
            at == NEVER || now.saturating_sub(at) >= interval
        };
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut idle = false;
            for (id, e) in read(shard).iter() {
                let seen = e.seen.load(Ordering::Relaxed);
                if !waited(e) {
                    continue;
                }
                if seen > e.written.load(Ordering::Relaxed) {
                    out.push((*id, Timestamp::from_unix_nanos(seen)));
                } else {
                    idle = true;
                }
            }
            if idle {
                // Checked again under the write lock: a touch may have come in between.
                write(shard)
                    .retain(|_, e| !waited(e) || e.seen.load(Ordering::Relaxed) > e.written.load(Ordering::Relaxed));
            }
        }
        out
    }

    /// Records that the use at `seen` of the key `id` was written to the store at `now`.
    pub fn written(&self, id: &KeyId, seen: Timestamp, now: Timestamp) {
        if let Some(e) = read(self.shard(id)).get(id) {
            e.written.fetch_max(seen.unix_nanos(), Ordering::Relaxed);
            e.written_at.store(now.unix_nanos(), Ordering::Relaxed);
        }
    }

    /// Drops the key `id` (it was deleted).
    pub fn forget(&self, id: &KeyId) {
        write(self.shard(id)).remove(id);
    }

    /// Writes the due uses (see [`LastUsed::due`]) to `store` at `now`. A write that conflicts
    /// with a concurrent change is retried once on the newer record; a key that no longer
    /// exists is forgotten; a failed write stays due for the next flush.
    pub fn flush<S: KeyStore + Send + Sync + ?Sized>(&self, store: &S, now: Timestamp) -> Flushed {
        resolve(self.flush_to(store, now)).unwrap_or_default()
    }

    /// [`LastUsed::flush`] to an asynchronous store (run it from a background task, off the
    /// request path).
    pub async fn flush_async<S: AsyncKeyStore + ?Sized>(&self, store: &S, now: Timestamp) -> Flushed {
        self.flush_to(store, now).await
    }

    async fn flush_to<B: AsyncKeyStore + ?Sized>(&self, store: &B, now: Timestamp) -> Flushed {
        let mut report = Flushed::default();
        for (id, seen) in self.due(now) {
            match write_use(store, &id, seen).await {
                Ok(true) => {
                    report.written += 1;
                    self.written(&id, seen, now);
                }
                Ok(false) => {
                    report.skipped += 1;
                    self.written(&id, seen, now);
                }
                Err(StoreError::NotFound) => {
                    report.skipped += 1;
                    self.forget(&id);
                }
                Err(_) => report.failed += 1,
            }
        }
        report
    }
}

/// Writes one use; `Ok(false)` if the record already says as late a use.
async fn write_use<B: AsyncKeyStore + ?Sized>(store: &B, id: &KeyId, seen: Timestamp) -> Result<bool, StoreError> {
    let mut attempts = 2;
    loop {
        let current = store.get(id).await?.ok_or(StoreError::NotFound)?;
        let Some(new) = record_use(&current, seen) else { return Ok(false) };
        match store.replace(current.revision, new).await {
            Ok(_) => return Ok(true),
            Err(StoreError::Conflict) if attempts > 1 => attempts -= 1,
            Err(e) => return Err(e),
        }
    }
}

impl fmt::Debug for LastUsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LastUsed").field("interval", &self.interval).field("len", &self.len()).finish_non_exhaustive()
    }
}

fn read(lock: &Shard) -> RwLockReadGuard<'_, HashMap<KeyId, Entry, RandomState>> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(lock: &Shard) -> RwLockWriteGuard<'_, HashMap<KeyId, Entry, RandomState>> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
