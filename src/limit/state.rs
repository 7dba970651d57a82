//! Where limiter state lives: the [`LimitStore`] trait, in governor's `StateStore` style.

use super::{Applied, CellId, CellState, LimitBatch, LimitOp, Refused};
use crate::{KeyId, Timestamp};

/// A limiter backend failed, or was misused. Backend details stay opaque, as with
/// [`StoreError`](crate::StoreError).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// The backend could not be reached or refused the operation.
    #[error("the limiter store is unavailable")]
    Unavailable,
    /// The backend did not answer in time.
    #[error("the limiter store timed out")]
    Timeout,
    /// The backend holds a value that is not a limiter state.
    #[error("the limiter store holds an unreadable state")]
    Corrupt,
    /// More cells than [`MAX_CELLS`](super::MAX_CELLS) in one update.
    #[error("too many cells in one limiter update")]
    TooManyCells,
    /// The same cell twice in one update.
    #[error("the same cell twice in one limiter update")]
    DuplicateCell,
}

/// Limiter state: one `u64` per cell, keyed by (key id, [`CellId`]), updated atomically.
///
/// This is governor's `StateStore::measure_and_replace` generalised to several cells of one key:
/// [`update`](Self::update) reads the cells, runs the closure on their states, and writes the
/// states the closure left only if it returned `Ok`, as one atomic step with respect to every
/// other update of those cells. A cell never written reads as `CellState::default()`.
///
/// The limit stage calls [`apply`](Self::apply), which by default runs
/// [`LimitBatch::evaluate`] inside `update`. A backend that cannot run Rust closures next to
/// its data (Redis) overrides `apply` with a server-side script implementing the same
/// evaluation; see the [module docs](crate::limit) for its shape.
pub trait LimitStore {
    /// Atomically updates the cells `cells` of `key`: `f` sees their current states (in the order
    /// of `cells`) and may change them; the changes are stored iff it returns `Ok`.
    ///
    /// `f` may run more than once (on a conflicting concurrent update), so it must compute its
    /// result from its argument alone. `now` is the time of the update; the store may use it to
    /// drop expired state.
    ///
    /// # Errors
    ///
    /// [`LimitError::TooManyCells`] or [`LimitError::DuplicateCell`] on misuse; another
    /// [`LimitError`] if the backend fails. The closure's own `Err` is the inner result.
    fn update<T, E, F>(&self, key: &KeyId, cells: &[CellId], now: Timestamp, f: F) -> Result<Result<T, E>, LimitError>
    where
        F: FnMut(&mut [CellState]) -> Result<T, E>;

    /// Applies `batch` to `key` at `now`, all-or-nothing.
    ///
    /// # Errors
    ///
    /// A [`LimitError`] if the backend fails (nothing was applied, as far as the backend can
    /// tell). A refusal is the inner `Err`.
    fn apply(&self, key: &KeyId, batch: &LimitBatch, now: Timestamp) -> Result<Result<Applied, Refused>, LimitError> {
        self.update(key, batch.cells(), now, |cells| batch.evaluate(cells, now))
    }

    /// Applies one operation to one cell of `key` at `now`: the cell's new value, or the refusal.
    /// The same as [`apply`](Self::apply) with a batch of one (which the default does); a store
    /// may answer it faster.
    ///
    /// # Errors
    ///
    /// A [`LimitError`] if the backend fails. A refusal is the inner `Err`.
    #[inline]
    fn apply_one(
        &self,
        key: &KeyId,
        cell: CellId,
        op: LimitOp,
        now: Timestamp,
    ) -> Result<Result<u64, Refused>, LimitError> {
        let mut batch = LimitBatch::new();
        batch.push(cell, op)?;
        Ok(self.apply(key, &batch, now)?.map(|applied| applied.value(0)))
    }
}

impl<S: LimitStore + ?Sized> LimitStore for &S {
    fn update<T, E, F>(&self, key: &KeyId, cells: &[CellId], now: Timestamp, f: F) -> Result<Result<T, E>, LimitError>
    where
        F: FnMut(&mut [CellState]) -> Result<T, E>,
    {
        (**self).update(key, cells, now, f)
    }

    fn apply(&self, key: &KeyId, batch: &LimitBatch, now: Timestamp) -> Result<Result<Applied, Refused>, LimitError> {
        (**self).apply(key, batch, now)
    }

    fn apply_one(
        &self,
        key: &KeyId,
        cell: CellId,
        op: LimitOp,
        now: Timestamp,
    ) -> Result<Result<u64, Refused>, LimitError> {
        (**self).apply_one(key, cell, op, now)
    }
}

#[cfg(feature = "alloc")]
macro_rules! forward_limit_store {
    ($($ty:ty),*) => {$(
        impl<S: LimitStore + ?Sized> LimitStore for $ty {
            fn update<T, E, F>(
                &self,
                key: &KeyId,
                cells: &[CellId],
                now: Timestamp,
                f: F,
            ) -> Result<Result<T, E>, LimitError>
            where
                F: FnMut(&mut [CellState]) -> Result<T, E>,
            {
                (**self).update(key, cells, now, f)
            }

            fn apply(
                &self,
                key: &KeyId,
                batch: &LimitBatch,
                now: Timestamp,
            ) -> Result<Result<Applied, Refused>, LimitError> {
                (**self).apply(key, batch, now)
            }

            fn apply_one(
                &self,
                key: &KeyId,
                cell: CellId,
                op: LimitOp,
                now: Timestamp,
            ) -> Result<Result<u64, Refused>, LimitError> {
                (**self).apply_one(key, cell, op, now)
            }
        }
    )*};
}

#[cfg(feature = "alloc")]
forward_limit_store!(alloc::sync::Arc<S>, alloc::boxed::Box<S>);
