//! The asynchronous store trait, for stores that do I/O (databases, caches over a network).
//!
//! [`AsyncKeyStore`] mirrors [`KeyStore`] with the same contract (compare-and-swap on the
//! revision, stable listing order, a change visible to the next lookup), each operation
//! returning a `Send` future so that it runs on any multi-threaded executor. Nothing here
//! depends on an executor.
//!
//! Every [`KeyStore`] is also an [`AsyncKeyStore`] whose futures are ready at once, so the
//! in-memory store goes wherever an asynchronous store is expected, and code written once over
//! [`AsyncKeyStore`] runs over either. A store that wraps an asynchronous one (a cache) is a
//! cheap-to-clone handle, so that several owners (the gate, the manager) can share it.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;

use super::{BatchError, KeyStore, ListQuery, Page, StoreError};
use crate::verify::Lookup;
use crate::{KeyId, KeyRecord};

/// Where key records live, for stores that do I/O. See [`KeyStore`] for the contract of each
/// operation; the errors are the same. Every [`KeyStore`] that may be shared between threads is
/// one.
pub trait AsyncKeyStore: Send + Sync {
    /// Finds the record a presented key names. This is on the hot path.
    fn lookup(&self, lookup: &Lookup) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send;

    /// Finds a record by id, whatever its shape.
    fn get(&self, id: &KeyId) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        let lookup = Lookup::Id(*id);
        async move { self.lookup(&lookup).await }
    }

    /// Adds a new record; [`StoreError::Conflict`] if its id or opaque digest exists.
    fn insert(&self, record: KeyRecord) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send;

    /// Replaces the record with `record.id` if its revision is still `expected_revision`.
    fn replace(
        &self,
        expected_revision: u64,
        record: KeyRecord,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send;

    /// Adds new records, all or none: [`BatchError::Conflicts`] names every record whose id or
    /// opaque digest the store (or an earlier record of the batch) holds, and nothing is stored.
    ///
    /// The SQL stores insert the batch in one transaction. This default inserts the records one
    /// by one and, if any is refused, deletes those it inserted: until then, a concurrent reader
    /// may see some of them.
    fn insert_batch(
        &self,
        records: Vec<KeyRecord>,
    ) -> impl Future<Output = Result<Vec<Arc<KeyRecord>>, BatchError>> + Send {
        async move {
            let mut stored = Vec::with_capacity(records.len());
            let mut conflicts = Vec::new();
            let mut failure = None;
            for (index, record) in records.into_iter().enumerate() {
                match self.insert(record).await {
                    Ok(r) => stored.push(r),
                    Err(StoreError::Conflict) => conflicts.push(index),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if failure.is_none() && conflicts.is_empty() {
                return Ok(stored);
            }
            for r in &stored {
                let _ = self.delete(&r.id).await;
            }
            Err(failure.map_or(BatchError::Conflicts(conflicts), BatchError::Store))
        }
    }

    /// Removes a record, returning it.
    fn delete(&self, id: &KeyId) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send;

    /// Lists records in the stable order (creation time, then id).
    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<Page, StoreError>> + Send;
}

/// Every synchronous store is an asynchronous one whose futures are ready at once: a
/// [`MemoryStore`](crate::MemoryStore) (or an `Arc` of one) goes wherever an [`AsyncKeyStore`] is
/// expected. A synchronous store that does blocking I/O should not be used this way from an
/// async server; implement [`AsyncKeyStore`] for it over a blocking thread pool instead.
impl<S: KeyStore + Send + Sync + ?Sized> AsyncKeyStore for S {
    fn lookup(&self, lookup: &Lookup) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        core::future::ready(KeyStore::lookup(self, lookup))
    }

    fn get(&self, id: &KeyId) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        core::future::ready(KeyStore::get(self, id))
    }

    fn insert(&self, record: KeyRecord) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        core::future::ready(KeyStore::insert(self, record))
    }

    fn replace(
        &self,
        expected_revision: u64,
        record: KeyRecord,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        core::future::ready(KeyStore::replace(self, expected_revision, record))
    }

    fn delete(&self, id: &KeyId) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        core::future::ready(KeyStore::delete(self, id))
    }

    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<Page, StoreError>> + Send {
        core::future::ready(KeyStore::list(self, query))
    }
}
