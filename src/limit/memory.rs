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
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use foldhash::quality::RandomState;
use hashbrown::HashTable;

use super::{Applied, CellId, CellState, LimitBatch, LimitError, LimitOp, LimitStore, MAX_CELLS, MAX_STATE, Refused};
use crate::{KeyId, Timestamp};

const SHARDS: usize = 64;
const LOCKED: u64 = 1 << 63;
const MIN_SWEEP: usize = 64;
/// In a cell's expiry word: the state itself is the expiry (a GCRA TAT).
const AT_VALUE: u64 = u64::MAX;

struct Cell {
    id: CellId,
    value: AtomicU64,
    /// Nanoseconds since the epoch; 0 for "keep while the value is not 0"; [`AT_VALUE`] when the
    /// value is the expiry (so a GCRA update writes one word, not two).
    expires: AtomicU64,
}

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

impl Cell {
    fn droppable(&self, now: u64) -> bool {
        let v = self.value.load(Relaxed);
        let e = match self.expires.load(Relaxed) {
            AT_VALUE => v,
            e => e,
        };
        v == 0 || (e != 0 && e <= now)
    }

    #[inline]
    fn state(&self, value: u64) -> CellState {
        let e = match self.expires.load(Relaxed) {
            AT_VALUE => value,
            e => e,
        };
        CellState { value, expires_at: (e != 0).then(|| Timestamp::from_unix_nanos(e)) }
    }

    #[inline]
    fn store(&self, state: &CellState) {
        self.value.store(state.value.min(MAX_STATE), Release);
        self.set_expiry(state);
    }

    #[inline]
    fn set_expiry(&self, state: &CellState) {
        let want = match state.expires_at {
            Some(at) if at.unix_nanos() == state.value => AT_VALUE,
            Some(at) => at.unix_nanos().max(1),
            None => 0,
        };
        // A cell's kind, and so its kind of expiry, does not change: after the first update this
        // is one load. A fixed expiry never moves earlier (racing updates keep the later one).
        let current = self.expires.load(Relaxed);
        if current != want {
            if want == AT_VALUE || want == 0 || current == AT_VALUE {
                self.expires.store(want, Relaxed);
            } else {
                self.expires.fetch_max(want, Relaxed);
            }
        }
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
/// use keygate::{CellId, Gcra, KeyId, LimitBatch, LimitName, LimitOp, LimitStore, MemoryLimitStore, Timestamp};
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

/// Waits for a cell's lock bit to clear; returns the unlocked value.
#[inline]
fn load_unlocked(cell: &Cell) -> u64 {
    let mut spins = 0u32;
    loop {
        let v = cell.value.load(Acquire);
        if v & LOCKED == 0 {
            return v;
        }
        backoff(&mut spins);
    }
}

#[inline]
fn backoff(spins: &mut u32) {
    if *spins < 64 {
        core::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
    *spins = spins.saturating_add(1);
}

/// governor's `measure_and_replace_one`: load, compute, compare-and-swap.
#[inline(always)]
fn update_one<T, E, F>(cell: &Cell, mut f: F) -> Result<T, E>
where
    F: FnMut(&mut [CellState]) -> Result<T, E>,
{
    loop {
        let old = load_unlocked(cell);
        let mut state = [cell.state(old)];
        let result = f(&mut state)?;
        let [new] = state;
        let value = new.value.min(MAX_STATE);
        if value == old {
            // Nothing to store (a check that consumed nothing, a refund of nothing).
            cell.set_expiry(&new);
            return Ok(result);
        }
        if cell.value.compare_exchange_weak(old, value, Release, Relaxed).is_ok() {
            cell.set_expiry(&new);
            return Ok(result);
        }
    }
}

/// Restores the locked cells' old states if dropped while armed (the closure panicked).
struct Locked<'a, 'c> {
    cells: &'c [&'a Cell],
    old: [u64; MAX_CELLS],
    /// How many of `cells` (in `order`) hold their lock bit.
    held: usize,
    order: [usize; MAX_CELLS],
    armed: bool,
}

impl Drop for Locked<'_, '_> {
    fn drop(&mut self) {
        if self.armed {
            for &i in self.order.iter().take(self.held) {
                if let (Some(cell), Some(old)) = (self.cells.get(i), self.old.get(i)) {
                    cell.value.store(*old, Release);
                }
            }
        }
    }
}

/// Several cells all-or-nothing: lock each (in the order of `rank`, their places in their entry,
/// the same for every thread), compute, store or restore.
fn update_many<T, E, F>(cells: &[&Cell], rank: &[usize], mut f: F) -> Result<T, E>
where
    F: FnMut(&mut [CellState]) -> Result<T, E>,
{
    let n = cells.len().min(MAX_CELLS);
    let mut guard = Locked { cells, old: [0; MAX_CELLS], held: 0, order: [0, 1, 2, 3, 4, 5], armed: true };
    let rank_of = |i: usize| rank.get(i).copied().unwrap_or(usize::MAX);
    if n == 2 {
        if rank_of(1) < rank_of(0) {
            guard.order.swap(0, 1);
        }
    } else {
        guard.order[..n].sort_unstable_by_key(|&i| rank_of(i));
    }
    for k in 0..n {
        let i = guard.order[k];
        let Some(cell) = cells.get(i) else { continue };
        let mut spins = 0u32;
        loop {
            let v = load_unlocked(cell);
            if cell.value.compare_exchange_weak(v, v | LOCKED, Acquire, Relaxed).is_ok() {
                guard.old[i] = v;
                guard.held = k + 1;
                break;
            }
            backoff(&mut spins);
        }
    }
    let mut states = [CellState::default(); MAX_CELLS];
    for ((state, cell), old) in states.iter_mut().zip(cells).zip(guard.old) {
        *state = cell.state(old);
    }
    let result = f(&mut states[..n]);
    guard.armed = false;
    match result {
        Ok(t) => {
            for (cell, state) in cells.iter().zip(&states) {
                cell.store(state);
            }
            Ok(t)
        }
        Err(e) => {
            for (cell, old) in cells.iter().zip(guard.old) {
                cell.value.store(old, Release);
            }
            Err(e)
        }
    }
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
