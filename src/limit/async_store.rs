//! The limit-store trait for backends that do I/O: [`AsyncLimitStore`].
//!
//! The limit stage is written once, as one body expanded over [`LimitStore`] in the synchronous
//! entry points ([`Limiter::check`](super::Limiter::check), `Gate::check`) and over this trait,
//! awaited, in [`Limiter::check_async`](super::Limiter::check_async) and the tower layer. Every
//! [`LimitStore`] is also an [`AsyncLimitStore`] whose futures are ready at once, so a memory
//! store goes wherever an asynchronous one is expected.

use core::future::Future;

use super::{Applied, CellId, LimitBatch, LimitError, LimitOp, LimitStore, Refused};
use crate::{KeyId, Timestamp};

/// Limiter state behind I/O: the operations of [`LimitStore`] that the limit stage needs, the
/// admission awaited, the settlement handed over at once.
///
/// - [`apply`](Self::apply) and [`apply_one`](Self::apply_one) decide an admission: all-or-nothing,
///   exactly as [`LimitBatch::evaluate`] does, awaited by the request.
/// - [`settle`](Self::settle) records what a request did (reconciled tokens, settled spend and
///   credits, a released concurrency slot): updates that never refuse. It does not wait: a store
///   over a network may queue the settlement and send it later, exactly once (see
///   [`RedisLimitStore`](crate::RedisLimitStore)); a local store applies it at once.
///
/// Every method is required, so a wrapper forwards each one on purpose.
pub trait AsyncLimitStore {
    /// Applies `batch` to `key` at `now`, all-or-nothing (see [`LimitStore::apply`]).
    ///
    /// # Errors
    ///
    /// A [`LimitError`] if the backend fails. A refusal is the inner `Err`.
    fn apply(
        &self,
        key: &KeyId,
        batch: &LimitBatch,
        now: Timestamp,
    ) -> impl Future<Output = Result<Result<Applied, Refused>, LimitError>> + Send;

    /// Applies one operation to one cell of `key` at `now` (see [`LimitStore::apply_one`]).
    ///
    /// # Errors
    ///
    /// A [`LimitError`] if the backend fails. A refusal is the inner `Err`.
    fn apply_one(
        &self,
        key: &KeyId,
        cell: CellId,
        op: LimitOp,
        now: Timestamp,
    ) -> impl Future<Output = Result<Result<u64, Refused>, LimitError>> + Send;

    /// Records a settlement: a batch of operations that never refuse (`RateCharge`,
    /// `RateRefund`, `Release`, `Settle`, `Record`, `Unrecord`). `Some` with the cells' new
    /// values if it was applied now; `None` if it was queued, to be applied later.
    ///
    /// # Errors
    ///
    /// A [`LimitError`] if the backend failed, or could not take the settlement (a full queue).
    fn settle(&self, key: &KeyId, batch: &LimitBatch, now: Timestamp) -> Result<Option<Applied>, LimitError>;
}

/// Every synchronous store is an asynchronous one whose futures are ready at once, and whose
/// settlements are applied at once: a [`MemoryLimitStore`](crate::MemoryLimitStore) (or an
/// `Arc` of one) goes wherever an [`AsyncLimitStore`] is expected.
impl<S: LimitStore + ?Sized> AsyncLimitStore for S {
    #[inline]
    fn apply(
        &self,
        key: &KeyId,
        batch: &LimitBatch,
        now: Timestamp,
    ) -> impl Future<Output = Result<Result<Applied, Refused>, LimitError>> + Send {
        core::future::ready(LimitStore::apply(self, key, batch, now))
    }

    #[inline]
    fn apply_one(
        &self,
        key: &KeyId,
        cell: CellId,
        op: LimitOp,
        now: Timestamp,
    ) -> impl Future<Output = Result<Result<u64, Refused>, LimitError>> + Send {
        core::future::ready(LimitStore::apply_one(self, key, cell, op, now))
    }

    #[inline]
    fn settle(&self, key: &KeyId, batch: &LimitBatch, now: Timestamp) -> Result<Option<Applied>, LimitError> {
        // These updates only add or give back: a refusal means the store is broken.
        LimitStore::apply(self, key, batch, now)?.map(Some).map_err(|_| LimitError::Corrupt)
    }
}
