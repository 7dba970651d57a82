//! The embedded limiter state: sharded hash tables of atomic cells (needs `std`).
//!
//! Keys live in 64 shards, each a `RwLock` over a hash table of `key id → entry`; an entry holds
//! the key's cells side by side (requests, tokens, concurrency, the current spend period, …), so
//! an update of any number of a key's cells hashes the key once, takes one read lock and probes
//! the table once. A cell is two `AtomicU64`s: the state and its expiry. Each shard's lock sits on
//! its own cache lines, so threads working on different keys share no written memory.
//!
//! # Updating
//!
//! An update of one cell is governor's `InMemoryState`: load, compute, compare-and-swap, retry on
//! conflict. It takes no lock beyond the shard's read lock.
//!
//! An update of several cells (a request's requests and tokens limits, all-or-nothing) locks its
//! cells by setting the top bit of each state word with a compare-and-swap, in the order the
//! cells have in their entry (so two such updates cannot deadlock), computes, then stores the new states, which
//! clears the bits. A single-cell update that finds the bit set waits for it; its
//! compare-and-swap fails against a locked word anyway. The state words hold at most
//! [`MAX_STATE`](super::MAX_STATE) (`i64::MAX`), so the top bit is free. If the closure panics
//! while cells are locked, the old states are put back.
//!
//! # Eviction
//!
//! A cell whose value is 0 or whose expiry has passed holds nothing that a fresh cell would not
//! (a GCRA TAT in the past, a counter of an ended period). Such cells are dropped, and a key's
//! entry with them once it has none left, when a shard grows: inserting a cell into a shard that holds at least twice as many cells as after its last
//! sweep sweeps it first, at the `now` of that update, so memory tracks the keys active recently
//! at amortised O(1) per insertion. [`MemoryLimitStore::evict_expired`] sweeps every shard on
//! demand. Eviction takes the shard's write lock, so it never races an update: an update holds
//! the read lock from its lookup to its store.

#![cfg(feature = "std")]

use alloc::vec::Vec;
use core::hash::BuildHasher;
use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::Acquire;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use foldhash::quality::RandomState;
use hashbrown::HashTable;

use super::{Applied, CellId, CellState, LimitBatch, LimitError, LimitOp, LimitStore, MAX_CELLS, Refused};
use crate::{KeyId, Timestamp};

mod cell;
use cell::{Cell, LOCKED, update_many, update_one};

const SHARDS: usize = 64;
const MIN_SWEEP: usize = 64;

/// A key's cells.
struct Entry {
    key: KeyId,
    hash: u64,
    cells: Vec<Cell>,
}

impl Entry {
    #[inline]
    fn cell(&self, id: CellId) -> Option<&Cell> {
        self.cells.iter().find(|c| c.id == id)
    }
}

/// A shard's lock on its own cache lines, so threads working on different shards share none.
#[derive(Default)]
#[repr(align(128))]
struct Padded(RwLock<Shard>);

#[derive(Default)]
struct Shard {
    entries: HashTable<Entry>,
    /// Cells in all entries.
    cells: usize,
    next_sweep: usize,
}

/// The embedded [`LimitStore`]: lock-free single-cell updates, all-or-nothing multi-cell updates,
/// eviction of idle state.
///
/// ```
/// use keygate::{KeyId, LimitStore, MemoryLimitStore, Timestamp};
/// use keygate::limit::{CellId, Gcra, LimitBatch, LimitName, LimitOp};
///
/// let store = MemoryLimitStore::new();
/// let key: KeyId = "4f9TqWm2Lx8RbC1d".parse()?;
/// let mut batch = LimitBatch::new();
/// batch.push(CellId::new(LimitName::REQUESTS), LimitOp::Rate { gcra: Gcra::per_minute(1), cost: 1 })?;
/// let now = Timestamp::from_unix_secs(1_000);
/// assert!(store.apply(&key, &batch, now)?.is_ok());
/// assert!(store.apply(&key, &batch, now)?.is_err()); // one per minute
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MemoryLimitStore {
    shards: Vec<Padded>,
    hasher: RandomState,
}

impl MemoryLimitStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| Padded::default()).collect(), hasher: RandomState::default() }
    }

    /// How many cells the store holds (including expired ones not yet swept).
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| read(&s.0).cells).sum()
    }

    /// Whether the store holds no cells.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every cell that holds nothing at `now` (value 0 or expired); returns how many.
    pub fn evict_expired(&self, now: Timestamp) -> usize {
        self.shards.iter().map(|s| sweep(&mut write(&s.0), now.unix_nanos())).sum()
    }

    /// The state of one cell, for inspection and tests (`CellState::default()` if absent).
    #[must_use]
    pub fn peek(&self, key: &KeyId, cell: CellId) -> CellState {
        let (shard, hk) = self.key_slot(key);
        let guard = read(&self.shards[shard].0);
        find(&guard, key, hk).and_then(|e| e.cell(cell)).map_or_else(CellState::default, |c| {
            let v = c.value.load(Acquire) & !LOCKED;
            c.state(v)
        })
    }

    /// The key's shard and hash; the key is hashed once per update.
    #[inline]
    fn key_slot(&self, key: &KeyId) -> (usize, u64) {
        let hk = self.hasher.hash_one(key.as_bytes());
        (crate::shard::shard_of(hk, SHARDS), hk)
    }
}

impl Default for MemoryLimitStore {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for MemoryLimitStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MemoryLimitStore").field("cells", &self.len()).finish_non_exhaustive()
    }
}

/// Checks the cell list of an update: at most [`MAX_CELLS`], no duplicates.
///
/// # Errors
///
/// [`LimitError::TooManyCells`] or [`LimitError::DuplicateCell`].
#[inline]
fn check_cells(cells: &[CellId]) -> Result<(), LimitError> {
    if cells.len() > MAX_CELLS {
        return Err(LimitError::TooManyCells);
    }
    for (i, c) in cells.iter().enumerate() {
        if cells[..i].contains(c) {
            return Err(LimitError::DuplicateCell);
        }
    }
    Ok(())
}

#[inline]
fn read(lock: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(lock: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[inline]
fn find<'a>(shard: &'a Shard, key: &KeyId, hash: u64) -> Option<&'a Entry> {
    shard.entries.find(hash, |e| e.key == *key)
}

fn sweep(shard: &mut Shard, now: u64) -> usize {
    let before = shard.cells;
    let mut after = 0;
    shard.entries.retain(|e| {
        e.cells.retain(|c| !c.droppable(now));
        after += e.cells.len();
        !e.cells.is_empty()
    });
    shard.cells = after;
    shard.next_sweep = (after * 2).max(MIN_SWEEP);
    before - after
}

/// The cells `ids` of `entry` and their places in it, or `None` if one is missing.
#[inline]
fn find_cells<'a>(entry: &'a Entry, ids: &[CellId]) -> Option<([&'a Cell; MAX_CELLS], [usize; MAX_CELLS])> {
    let first = entry.cells.first()?;
    let mut cells = [first; MAX_CELLS];
    let mut rank = [0; MAX_CELLS];
    for ((id, cell), r) in ids.iter().zip(&mut cells).zip(&mut rank) {
        *r = entry.cells.iter().position(|c| c.id == *id)?;
        *cell = entry.cells.get(*r)?;
    }
    Some((cells, rank))
}

impl LimitStore for MemoryLimitStore {
    fn update<T, E, F>(&self, key: &KeyId, ids: &[CellId], now: Timestamp, f: F) -> Result<Result<T, E>, LimitError>
    where
        F: FnMut(&mut [CellState]) -> Result<T, E>,
    {
        check_cells(ids)?;
        let n = ids.len();
        if n == 0 {
            let mut f = f;
            return Ok(f(&mut []));
        }
        let (shard, hk) = self.key_slot(key);
        let lock = &self.shards[shard].0;
        {
            // The common case: every cell exists; one read lock, one probe, no write.
            let guard = read(lock);
            if let Some((cells, rank)) = find(&guard, key, hk).and_then(|e| find_cells(e, ids)) {
                return Ok(match &cells[..n] {
                    [one] => update_one(one, f),
                    many => update_many(many, &rank[..n], f),
                });
            }
        }
        // First use of a cell: insert the missing ones under the write lock and update there
        // (the atomics work the same under it; this happens once per key and window).
        let mut guard = write(lock);
        let missing = find(&guard, key, hk).map_or(n, |e| ids.iter().filter(|id| e.cell(**id).is_none()).count());
        if guard.cells + missing > guard.next_sweep {
            // Before inserting: the new cells hold 0 and would be swept themselves.
            sweep(&mut guard, now.unix_nanos());
        }
        let shard = &mut *guard;
        let entry = match shard.entries.find_mut(hk, |e| e.key == *key) {
            Some(entry) => entry,
            None => {
                let entry = Entry { key: *key, hash: hk, cells: Vec::with_capacity(n) };
                shard.entries.insert_unique(hk, entry, |e| e.hash).into_mut()
            }
        };
        for id in ids {
            if entry.cell(*id).is_none() {
                entry.cells.push(Cell { id: *id, value: AtomicU64::new(0), expires: AtomicU64::new(0) });
                shard.cells += 1;
            }
        }
        let (cells, rank) = find_cells(entry, ids).ok_or(LimitError::Corrupt)?;
        Ok(match &cells[..n] {
            [one] => update_one(one, f),
            many => update_many(many, &rank[..n], f),
        })
    }

    /// A batch of one operation runs as [`apply_one`](Self::apply_one); anything else goes through
    /// [`update`](Self::update) and [`LimitBatch::evaluate`].
    #[inline]
    fn apply(&self, key: &KeyId, batch: &LimitBatch, now: Timestamp) -> Result<Result<Applied, Refused>, LimitError> {
        if let ([id], [op]) = (batch.cells(), batch.ops()) {
            let outcome = self.apply_one(key, *id, *op, now)?;
            return Ok(outcome.map(|value| {
                let mut values = [0; MAX_CELLS];
                values[0] = value;
                Applied::new(values)
            }));
        }
        self.update(key, batch.cells(), now, |cells| batch.evaluate(cells, now))
    }

    /// A compare-and-swap loop on the cell's state word, running the operation directly (the
    /// store-native evaluation the trait allows): one hash, one read lock, one compare-and-swap.
    #[inline(always)] // lets the outcome stay in registers on the hot path
    fn apply_one(
        &self,
        key: &KeyId,
        id: CellId,
        op: LimitOp,
        now: Timestamp,
    ) -> Result<Result<u64, Refused>, LimitError> {
        let run = |states: &mut [CellState]| {
            let state = states
                .first_mut()
                .ok_or_else(|| Refused::new(crate::DenialCode::AuthUnavailable, None, [0; MAX_CELLS]))?;
            *state = op.evaluate(*state, now)?;
            Ok(state.value)
        };
        let (shard, hk) = self.key_slot(key);
        {
            let guard = read(&self.shards[shard].0);
            if let Some(cell) = find(&guard, key, hk).and_then(|e| e.cell(id)) {
                return Ok(update_one(cell, run));
            }
        }
        self.update(key, &[id], now, run)
    }
}
