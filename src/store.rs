//! Storage: the [`KeyStore`] trait and the embedded [`MemoryStore`] (needs `alloc`).
//!
//! The hot path needs one operation, [`KeyStore::lookup`]; the management API needs the rest.
//! Records are shared as `Arc<KeyRecord>`: a lookup is a reference-count increment, not a copy,
//! and a record the store has replaced stays valid for the request already holding it.
//!
//! Updates are compare-and-swap on [`KeyRecord::revision`](crate::KeyRecord): a writer reads a
//! record, changes it, and [`KeyStore::replace`]s it naming the revision it read. A concurrent
//! change makes the second writer fail with [`StoreError::Conflict`] rather than silently undo
//! the first, which a persistent backend implements as `UPDATE … WHERE id = $1 AND revision = $2`.
//!
//! Listing is in a stable order, by creation time and then id, so paging with `offset` visits
//! every key exactly once while keys are added.

#![cfg(feature = "alloc")]

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::verify::Lookup;
use crate::{KeyId, KeyRecord};

mod async_store;
#[cfg(feature = "cache")]
mod cached;
mod drive;
#[cfg(feature = "std")]
mod memory;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
pub use async_store::AsyncKeyStore;
#[cfg(feature = "cache")]
pub use cached::{CacheConfig, CachedStore, KeyIds};
pub(crate) use drive::resolve;
#[cfg(feature = "std")]
pub use memory::MemoryStore;
#[cfg(feature = "sqlite")]
pub use sql::SqliteStore;
#[cfg(feature = "postgres")]
pub use sql::{KeyChange, KeyChanges, PostgresStore};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sql::{SqlConfig, SqlStore};

/// The largest page [`KeyStore::list`] returns (the AI Stats API's maximum).
pub const MAX_PAGE: usize = 250;

/// A store failed. Dependency errors stay opaque so that upgrading a backend is not a breaking
/// change; backends report details through their own logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No record has this id.
    #[error("no key with this id")]
    NotFound,
    /// The id or digest exists already, or the record changed since it was read.
    #[error("the key already exists or was changed concurrently")]
    Conflict,
    /// The backend could not be reached or refused the operation.
    #[error("the key store is unavailable")]
    Unavailable,
    /// The backend did not answer in time.
    #[error("the key store timed out")]
    Timeout,
    /// The backend holds data that is not a valid record.
    #[error("the key store holds an unreadable record")]
    Corrupt,
}

/// A batch insert ([`AsyncKeyStore::insert_batch`]) stored none of its records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// These records (their positions in the batch, in order) have an id, or an opaque
    /// digest, that the store holds already or that an earlier record of the batch has.
    #[error("{} records of the batch exist already", .0.len())]
    Conflicts(Vec<usize>),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for BatchError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Which page of which keys to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Only keys of this team; `None` for all.
    pub team_id: Option<String>,
    /// At most this many records (clamped to 1..=[`MAX_PAGE`]).
    pub limit: usize,
    /// Skip this many records of the stable order first.
    pub offset: usize,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self { team_id: None, limit: 50, offset: 0 }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// The records of this page, in the stable order.
    pub records: Vec<Arc<KeyRecord>>,
    /// How many records match the query in all.
    pub total: usize,
}

/// Where key records live. Synchronous and usable without `std` (with `alloc`).
///
/// Implementations must make a change visible to the next [`KeyStore::lookup`] after the change
/// returns: a revoked key fails on the very next request.
pub trait KeyStore {
    /// Finds the record a presented key names. This is on the hot path.
    ///
    /// [`Lookup::Kid`] may be answered with a stand-in for a kid the store does not hold (see
    /// [`Lookup`]); [`MemoryStore`] does, a store without stand-ins answers it as
    /// [`Lookup::Id`]. A store wrapping another forwards the lookup as it is.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the backend fails; the caller then fails closed.
    fn lookup(&self, lookup: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError>;

    /// Finds a record by id, whatever its shape.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the backend fails.
    fn get(&self, id: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        self.lookup(&Lookup::Id(*id))
    }

    /// Adds a new record.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] if a record with the id (or, for an opaque key, the digest)
    /// exists; another [`StoreError`] if the backend fails.
    fn insert(&self, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError>;

    /// Replaces the record with `record.id` if its revision is still `expected_revision`; the
    /// stored record gets revision `expected_revision + 1`, and is returned.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] if there is no such record; [`StoreError::Conflict`] if its
    /// revision differs or the new digest belongs to another record.
    fn replace(&self, expected_revision: u64, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError>;

    /// Removes a record, returning it.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] if there is no such record; another [`StoreError`] if the
    /// backend fails.
    fn delete(&self, id: &KeyId) -> Result<Arc<KeyRecord>, StoreError>;

    /// Lists records in the stable order (creation time, then id).
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the backend fails.
    fn list(&self, query: &ListQuery) -> Result<Page, StoreError>;
}

macro_rules! forward_key_store {
    ($($ty:ty),*) => {$(
        impl<S: KeyStore + ?Sized> KeyStore for $ty {
            fn lookup(&self, lookup: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError> {
                (**self).lookup(lookup)
            }
            fn get(&self, id: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
                (**self).get(id)
            }
            fn insert(&self, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
                (**self).insert(record)
            }
            fn replace(&self, expected_revision: u64, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
                (**self).replace(expected_revision, record)
            }
            fn delete(&self, id: &KeyId) -> Result<Arc<KeyRecord>, StoreError> {
                (**self).delete(id)
            }
            fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
                (**self).list(query)
            }
        }
    )*};
}

forward_key_store!(&S, Arc<S>, Box<S>);
