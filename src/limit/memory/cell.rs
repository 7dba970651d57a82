//! A cell: two atomic words (the state and its expiry), updated alone by compare-and-swap or
//! with others under lock bits (see the [parent module](super)).

use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::Timestamp;
use crate::limit::{CellId, CellState, MAX_CELLS, MAX_STATE};

/// The lock bit of a cell's state word.
pub(super) const LOCKED: u64 = 1 << 63;
/// In a cell's expiry word: the state itself is the expiry (a GCRA TAT).
const AT_VALUE: u64 = u64::MAX;

pub(super) struct Cell {
    pub(super) id: CellId,
    pub(super) value: AtomicU64,
    /// Nanoseconds since the epoch; 0 for "keep while the value is not 0"; [`AT_VALUE`] when the
    /// value is the expiry (so a GCRA update writes one word, not two).
    pub(super) expires: AtomicU64,
}

impl Cell {
    pub(super) fn droppable(&self, now: u64) -> bool {
        let v = self.value.load(Relaxed);
        let e = match self.expires.load(Relaxed) {
            AT_VALUE => v,
            e => e,
        };
        v == 0 || (e != 0 && e <= now)
    }

    #[inline]
    pub(super) fn state(&self, value: u64) -> CellState {
        let e = match self.expires.load(Relaxed) {
            AT_VALUE => value,
            e => e,
        };
        CellState { value, expires_at: (e != 0).then(|| Timestamp::from_unix_nanos(e)) }
    }

    #[inline]
    pub(super) fn store(&self, state: &CellState) {
        self.value.store(state.value.min(MAX_STATE), Release);
        self.set_expiry(state);
    }

    #[inline]
    pub(super) fn set_expiry(&self, state: &CellState) {
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
pub(super) fn update_one<T, E, F>(cell: &Cell, mut f: F) -> Result<T, E>
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
pub(super) fn update_many<T, E, F>(cells: &[&Cell], rank: &[usize], mut f: F) -> Result<T, E>
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
