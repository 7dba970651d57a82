//! The embedded limiter state: sharded hash tables of atomic cells (needs `std`).
//!
//! Cells live in 64 shards, each a `RwLock` over a hash table of `(key id, cell id) → cell`. The
//! shard is picked by the key id alone, so every cell of one key sits in one shard and an update
//! takes one read lock. A cell is two `AtomicU64`s: the state and its expiry. Each shard's lock
//! sits on its own cache lines, so threads working on different keys share no written memory.
//!
//! # Updating
//!
//! An update of one cell is governor's `InMemoryState`: load, compute, compare-and-swap, retry on
//! conflict. It takes no lock beyond the shard's read lock.
//!
//! An update of several cells (a request's requests and tokens limits, all-or-nothing) locks its
//! cells by setting the top bit of each state word with a compare-and-swap, in the cells' sorted
//! order (so two such updates cannot deadlock), computes, then stores the new states, which
//! clears the bits. A single-cell update that finds the bit set waits for it; its
//! compare-and-swap fails against a locked word anyway. The state words hold at most
//! [`MAX_STATE`](super::MAX_STATE) (`i64::MAX`), so the top bit is free. If the closure panics
//! while cells are locked, the old states are put back.
//!
//! # Eviction
//!
//! A cell whose value is 0 or whose expiry has passed holds nothing that a fresh cell would not
//! (a GCRA TAT in the past, a counter of an ended period). Such cells are dropped when a shard
//! grows: inserting a cell into a shard that holds at least twice as many cells as after its last
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
    key: KeyId,
    id: CellId,
    hash: u64,
    value: AtomicU64,
    /// Nanoseconds since the epoch; 0 for "keep while the value is not 0"; [`AT_VALUE`] when the
    /// value is the expiry (so a GCRA update writes one word, not two).
    expires: AtomicU64,
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
    cells: HashTable<Cell>,
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
        self.shards.iter().map(|s| read(&s.0).cells.len()).sum()
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
        let (shard, hash) = self.slot(key, &cell);
        let guard = read(&self.shards[shard].0);
        guard.cells.find(hash, |c| c.key == *key && c.id == cell).map_or_else(CellState::default, |c| {
            let v = c.value.load(Acquire) & !LOCKED;
            c.state(v)
        })
    }

    /// The key's shard and hash; the key is hashed once per update.
    #[inline]
    fn key_slot(&self, key: &KeyId) -> (usize, u64) {
        let hk = self.hasher.hash_one(key.as_bytes());
        #[allow(clippy::cast_possible_truncation)] // the top 6 bits: < 64
        let shard = (hk >> 58) as usize;
        (shard, hk)
    }

    #[inline]
    fn slot(&self, key: &KeyId, cell: &CellId) -> (usize, u64) {
        let (shard, hk) = self.key_slot(key);
        (shard, cell_hash(hk, cell))
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

/// A cell's table hash from its key's (seeded) hash: a multiply-fold of the key hash and the
/// cell id. Cell ids are chosen by the server, not by clients, and a key reaches the limiter only
/// after it verified, so the key hash's seed is all the flooding resistance this needs.
#[inline]
fn cell_hash(hk: u64, cell: &CellId) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let (a, b) = cell.name.words();
    let x = hk ^ a.wrapping_mul(K) ^ b.rotate_left(21).wrapping_mul(K.rotate_left(17)) ^ cell.window.rotate_left(43);
    let m = u128::from(x) * u128::from(K);
    #[allow(clippy::cast_possible_truncation)] // the two halves of the product
    let folded = (m as u64) ^ ((m >> 64) as u64);
    folded
}

#[inline]
fn read(lock: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(lock: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[inline]
fn find<'a>(shard: &'a Shard, key: &KeyId, id: CellId, hash: u64) -> Option<&'a Cell> {
    shard.cells.find(hash, |c| c.id == id && c.key == *key)
}

fn sweep(shard: &mut Shard, now: u64) -> usize {
    let before = shard.cells.len();
    shard.cells.retain(|c| !c.droppable(now));
    shard.next_sweep = (shard.cells.len() * 2).max(MIN_SWEEP);
    before - shard.cells.len()
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
struct Locked<'a> {
    cells: [Option<&'a Cell>; MAX_CELLS],
    old: [u64; MAX_CELLS],
    armed: bool,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if self.armed {
            for (cell, old) in self.cells.iter().zip(self.old) {
                if let Some(cell) = cell {
                    cell.value.store(old, Release);
                }
            }
        }
    }
}

/// Several cells all-or-nothing: lock each (in sorted order), compute, store or restore.
fn update_many<T, E, F>(cells: &[&Cell], mut f: F) -> Result<T, E>
where
    F: FnMut(&mut [CellState]) -> Result<T, E>,
{
    let n = cells.len();
    let mut order: [usize; MAX_CELLS] = [0, 1, 2, 3, 4, 5];
    order[..n].sort_unstable_by_key(|&i| cells[i].id);
    let mut guard = Locked { cells: [None; MAX_CELLS], old: [0; MAX_CELLS], armed: true };
    for &i in &order[..n] {
        let cell = cells[i];
        let mut spins = 0u32;
        loop {
            let v = load_unlocked(cell);
            if cell.value.compare_exchange_weak(v, v | LOCKED, Acquire, Relaxed).is_ok() {
                guard.cells[i] = Some(cell);
                guard.old[i] = v;
                break;
            }
            backoff(&mut spins);
        }
    }
    let mut states = [CellState::default(); MAX_CELLS];
    for (i, cell) in cells.iter().enumerate() {
        states[i] = cell.state(guard.old[i]);
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

#[inline]
fn run<T, E, F>(cells: &[&Cell], f: F) -> Result<T, E>
where
    F: FnMut(&mut [CellState]) -> Result<T, E>,
{
    match cells {
        [one] => update_one(one, f),
        _ => update_many(cells, f),
    }
}

impl LimitStore for MemoryLimitStore {
    fn update<T, E, F>(&self, key: &KeyId, cells: &[CellId], now: Timestamp, f: F) -> Result<Result<T, E>, LimitError>
    where
        F: FnMut(&mut [CellState]) -> Result<T, E>,
    {
        check_cells(cells)?;
        let n = cells.len();
        if n == 0 {
            let mut f = f;
            return Ok(f(&mut []));
        }
        let (shard, hk) = self.key_slot(key);
        let lock = &self.shards[shard].0;
        if let [id] = cells {
            // The most common update: one cell that exists. One read lock, one compare-and-swap.
            let guard = read(lock);
            if let Some(cell) = find(&guard, key, *id, cell_hash(hk, id)) {
                return Ok(update_one(cell, f));
            }
        }
        let mut hashes = [0u64; MAX_CELLS];
        for (h, cell) in hashes.iter_mut().zip(cells) {
            *h = cell_hash(hk, cell);
        }
        {
            // The common case: every cell exists; one read lock, no allocation, no write.
            let guard = read(lock);
            if let Some(found) = find_all(&guard, key, cells, &hashes) {
                return Ok(run(&found[..n], f));
            }
        }
        // First use of a cell: insert the missing ones under the write lock and update there
        // (the atomics work the same under it; this happens once per key and window).
        let mut guard = write(lock);
        let missing = cells.iter().zip(&hashes).filter(|(id, h)| find(&guard, key, **id, **h).is_none()).count();
        if guard.cells.len() + missing > guard.next_sweep {
            // Before inserting: the new cells hold 0 and would be swept themselves.
            sweep(&mut guard, now.unix_nanos());
        }
        for (id, &hash) in cells.iter().zip(&hashes) {
            if find(&guard, key, *id, hash).is_none() {
                let cell = Cell { key: *key, id: *id, hash, value: AtomicU64::new(0), expires: AtomicU64::new(0) };
                guard.cells.insert_unique(hash, cell, |c| c.hash);
            }
        }
        let found = find_all(&guard, key, cells, &hashes).ok_or(LimitError::Corrupt)?;
        Ok(run(&found[..n], f))
    }

    /// A batch of one operation on a cell that exists runs as [`apply_one`](Self::apply_one);
    /// anything else goes through [`update`](Self::update) and [`LimitBatch::evaluate`].
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
        let (shard, hk) = self.key_slot(key);
        {
            let guard = read(&self.shards[shard].0);
            if let Some(cell) = find(&guard, key, id, cell_hash(hk, &id)) {
                return Ok(update_one(cell, |states| {
                    let new = op.evaluate(states[0], now)?;
                    states[0] = new;
                    Ok(new.value)
                }));
            }
        }
        self.update(key, &[id], now, |states| {
            let new = op.evaluate(states[0], now)?;
            states[0] = new;
            Ok(new.value)
        })
    }
}

/// Every cell of `cells`, or `None` if one is missing. An empty list finds nothing to update.
#[inline]
fn find_all<'a>(shard: &'a Shard, key: &KeyId, cells: &[CellId], hashes: &[u64]) -> Option<[&'a Cell; MAX_CELLS]> {
    let first = find(shard, key, *cells.first()?, hashes[0])?;
    let mut found = [first; MAX_CELLS];
    for ((out, id), &h) in found.iter_mut().zip(cells).zip(hashes).skip(1) {
        *out = find(shard, key, *id, h)?;
    }
    Some(found)
}
