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

use crate::{KeyId, KeyRecord, Lookup};

mod async_store;
#[cfg(feature = "cache")]
mod cached;
mod drive;
#[cfg(feature = "std")]
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
pub use async_store::{AsyncKeyStore, Ready};
#[cfg(feature = "cache")]
pub use cached::{CacheConfig, CachedStore};
pub(crate) use drive::{Awaiting, Backend, Blocking, resolve};
#[cfg(feature = "std")]
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{KeyChange, KeyChanges, PostgresStore};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sql::SqlConfig;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

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
    /// # Errors
    ///
    /// A [`StoreError`] if the backend fails; the caller then fails closed.
    fn lookup(&self, lookup: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError>;

    /// Finds the record of a presented kid as verification wants it: like
    /// `lookup(&Lookup::Id(*id))`, except that a store may answer a kid it does not hold with a
    /// *stand-in*, another of its records read the way a hit reads its own, so that a miss
    /// costs what a hit costs and the time taken does not tell which kids exist.
    ///
    /// Verification accepts a record only if its id is the kid presented, so a stand-in is
    /// compared against and always rejected (`invalid_api_key`). Only verification should call
    /// this; everything else wants [`KeyStore::lookup`] or [`KeyStore::get`]. The default is the
    /// plain lookup; [`MemoryStore`] answers misses with stand-ins. A store that wraps another
    /// should forward this method, or the inner store's stand-ins are lost.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the backend fails; the caller then fails closed.
    fn lookup_kid_or_stand_in(&self, id: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        self.lookup(&Lookup::Id(*id))
    }

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
            fn lookup_kid_or_stand_in(&self, id: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
                (**self).lookup_kid_or_stand_in(id)
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
