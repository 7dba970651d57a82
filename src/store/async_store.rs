//! The asynchronous store trait, for stores that do I/O (databases, caches over a network).
//!
//! [`AsyncKeyStore`] mirrors [`KeyStore`] with the same contract (compare-and-swap on the
//! revision, stable listing order, a change visible to the next lookup), each operation
//! returning a `Send` future so that it runs on any multi-threaded executor. Nothing here
//! depends on an executor.
//!
//! [`Ready`] presents a synchronous store whose operations never block for long (such as
//! [`MemoryStore`](crate::MemoryStore)) as an asynchronous one: its futures are ready at once.
//! A synchronous store that does blocking I/O should not be wrapped this way; move its calls to
//! a blocking thread pool instead.

use alloc::sync::Arc;
use core::future::Future;

use super::{KeyStore, ListQuery, Page, StoreError};
use crate::{KeyId, KeyRecord, Lookup};

/// Where key records live, for stores that do I/O. See [`KeyStore`] for the contract of each
/// operation; the errors are the same.
pub trait AsyncKeyStore: Send + Sync {
    /// Finds the record a presented key names. This is on the hot path.
    fn lookup(&self, lookup: &Lookup) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send;

    /// Finds the record of a presented kid, or a stand-in that verification rejects: see
    /// [`KeyStore::lookup_kid_or_stand_in`]. The default is the plain lookup.
    fn lookup_kid_or_stand_in(
        &self,
        id: &KeyId,
    ) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        let lookup = Lookup::Id(*id);
        async move { self.lookup(&lookup).await }
    }

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

    /// Removes a record, returning it.
    fn delete(&self, id: &KeyId) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send;

    /// Lists records in the stable order (creation time, then id).
    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<Page, StoreError>> + Send;
}

/// A synchronous store that never blocks for long, presented as an [`AsyncKeyStore`] whose
/// futures are ready at once.
///
/// ```
/// use keygate::{AsyncKeyStore, MemoryStore, Ready};
/// let store = Ready(MemoryStore::new());
/// # let _: &dyn Fn(&Ready<MemoryStore>) = &|s| { let _ = s; };
/// ```
#[derive(Debug, Clone, Default)]
pub struct Ready<S>(pub S);

impl<S: KeyStore + Send + Sync> AsyncKeyStore for Ready<S> {
    fn lookup(&self, lookup: &Lookup) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        core::future::ready(self.0.lookup(lookup))
    }

    fn lookup_kid_or_stand_in(
        &self,
        id: &KeyId,
    ) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        core::future::ready(self.0.lookup_kid_or_stand_in(id))
    }

    fn get(&self, id: &KeyId) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        core::future::ready(self.0.get(id))
    }

    fn insert(&self, record: KeyRecord) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        core::future::ready(self.0.insert(record))
    }

    fn replace(
        &self,
        expected_revision: u64,
        record: KeyRecord,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        core::future::ready(self.0.replace(expected_revision, record))
    }

    fn delete(&self, id: &KeyId) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        core::future::ready(self.0.delete(id))
    }

    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<Page, StoreError>> + Send {
        core::future::ready(self.0.list(query))
    }
}

impl<S: AsyncKeyStore + ?Sized> AsyncKeyStore for Arc<S> {
    fn lookup(&self, lookup: &Lookup) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        (**self).lookup(lookup)
    }

    fn lookup_kid_or_stand_in(
        &self,
        id: &KeyId,
    ) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        (**self).lookup_kid_or_stand_in(id)
    }

    fn get(&self, id: &KeyId) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        (**self).get(id)
    }

    fn insert(&self, record: KeyRecord) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        (**self).insert(record)
    }

    fn replace(
        &self,
        expected_revision: u64,
        record: KeyRecord,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        (**self).replace(expected_revision, record)
    }

    fn delete(&self, id: &KeyId) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        (**self).delete(id)
    }

    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<Page, StoreError>> + Send {
        (**self).list(query)
    }
}
