//! The kid set: which kids exist in the store behind a [`CachedStore`](super::CachedStore), so
//! that a kid outside it is refused without a store read.
//!
//! Each kid is held as its 64-bit fingerprint, the cache's own randomly seeded hash of the kid,
//! in the cache shard the kid's entry would live in (one lock, one hash for both). The set only
//! grows between loads: a change notification or a write through the cache adds its id, and a
//! deleted kid stays until the next load (a false positive costs one store read, then a cached
//! absence). A fingerprint shared by a stored kid and a presented one (about one chance in
//! 2^64 divided by the number of kids) costs the same store read. So the set never rules out a
//! kid that exists, and costs 8 bytes per kid plus hashbrown's control byte and free slots:
//! 10 to 21 bytes per kid, 10 to 21 MB per million.

use alloc::vec::Vec;
use core::future::Future;
use core::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashTable;

use crate::KeyId;
use crate::store::StoreError;

/// A store that can name every key it holds at once: what [`CachedStore::load_kids`] reads its
/// kid set from (the SQL stores do it with one `SELECT id`).
///
/// [`CachedStore::load_kids`]: super::CachedStore::load_kids
pub trait KeyIds: Send + Sync {
    /// The id of every stored key.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the store fails.
    fn key_ids(&self) -> impl Future<Output = Result<Vec<KeyId>, StoreError>> + Send;
}

/// One shard's part of the kid set: fingerprints, hashed by themselves.
#[derive(Default)]
pub(super) struct KidShard(HashTable<u64>);

impl KidShard {
    #[inline]
    pub(super) fn contains(&self, fingerprint: u64) -> bool {
        self.0.find(fingerprint, |&f| f == fingerprint).is_some()
    }

    pub(super) fn insert(&mut self, fingerprint: u64) {
        if !self.contains(fingerprint) {
            self.0.insert_unique(fingerprint, fingerprint, |&f| f);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn clear(&mut self) {
        self.0 = HashTable::new();
    }
}

/// Whether the set is complete, and which load may complete it: one word, the epoch (bumped by
/// every reset) shifted left once, with the low bit set while the set is complete.
#[derive(Default)]
pub(super) struct KidState(AtomicU64);

impl KidState {
    /// The set holds every stored kid: a kid outside it is ruled out.
    #[inline]
    pub(super) fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire) & 1 == 1
    }

    /// The set may be missing kids from now on (it was cleared, or notices were lost): nothing
    /// is ruled out until a load that begins after this completes. Returns the new epoch.
    pub(super) fn reset(&self) -> u64 {
        let previous = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| Some(((s >> 1) + 1) << 1));
        (previous.unwrap_or_else(|s| s) >> 1) + 1
    }

    /// Marks the set complete if no reset happened since the one that returned `epoch`.
    pub(super) fn complete(&self, epoch: u64) -> bool {
        self.0.compare_exchange(epoch << 1, (epoch << 1) | 1, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

/// How many ruled-out kids may still be read from the store in the current second: one word,
/// the second (counted from `start`) shifted left by [`ReadBudget::COUNT_BITS`], plus the reads
/// taken in it.
pub(super) struct ReadBudget {
    start: std::time::Instant,
    per_second: u32,
    state: AtomicU64,
}

impl ReadBudget {
    const COUNT_BITS: u32 = 32;

    pub(super) fn new(per_second: u32) -> Self {
        Self { start: std::time::Instant::now(), per_second, state: AtomicU64::new(0) }
    }

    /// Takes one read if the second at `now` has one left.
    pub(super) fn take(&self, now: std::time::Instant) -> bool {
        if self.per_second == 0 {
            return false;
        }
        let second = now.saturating_duration_since(self.start).as_secs();
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                let (window, used) = (state >> Self::COUNT_BITS, state & u64::from(u32::MAX));
                if window != second {
                    Some((second << Self::COUNT_BITS) | 1)
                } else if used < u64::from(self.per_second) {
                    Some(state + 1)
                } else {
                    None
                }
            })
            .is_ok()
    }
}
