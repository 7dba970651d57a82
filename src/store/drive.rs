//! One implementation of a multi-step store operation for both store traits.
//!
//! The management operations and the last-used writer read a record, decide, and write with
//! compare-and-swap, retrying on a conflict. They are written once, as `async fn`s over
//! [`Backend`]. [`Awaiting`] drives them over an [`AsyncKeyStore`]; [`Blocking`] drives them
//! over a synchronous [`KeyStore`], whose futures are ready at once, so [`resolve`] completes the
//! whole operation in a single poll with no executor (and works without `std`).

use alloc::sync::Arc;
use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use super::{AsyncKeyStore, KeyStore, ListQuery, Page, StoreError};
use crate::{KeyId, KeyRecord};

/// The store operations a multi-step operation needs.
pub(crate) trait Backend {
    fn get(&self, id: &KeyId) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send;
    fn insert(&self, record: KeyRecord) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send;
    fn replace(
        &self,
        expected: u64,
        record: KeyRecord,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send;
    fn delete(&self, id: &KeyId) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send;
    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<Page, StoreError>> + Send;
}

/// A synchronous store: every future is ready when created.
pub(crate) struct Blocking<'a, S: ?Sized>(pub(crate) &'a S);

impl<S: KeyStore + ?Sized> Backend for Blocking<'_, S> {
    fn get(&self, id: &KeyId) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        core::future::ready(self.0.get(id))
    }
    fn insert(&self, record: KeyRecord) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        core::future::ready(self.0.insert(record))
    }
    fn replace(
        &self,
        expected: u64,
        record: KeyRecord,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        core::future::ready(self.0.replace(expected, record))
    }
    fn delete(&self, id: &KeyId) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        core::future::ready(self.0.delete(id))
    }
    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<Page, StoreError>> + Send {
        core::future::ready(self.0.list(query))
    }
}

/// An asynchronous store.
pub(crate) struct Awaiting<'a, S: ?Sized>(pub(crate) &'a S);

impl<S: AsyncKeyStore + ?Sized> Backend for Awaiting<'_, S> {
    fn get(&self, id: &KeyId) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        self.0.get(id)
    }
    fn insert(&self, record: KeyRecord) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        self.0.insert(record)
    }
    fn replace(
        &self,
        expected: u64,
        record: KeyRecord,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        self.0.replace(expected, record)
    }
    fn delete(&self, id: &KeyId) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        self.0.delete(id)
    }
    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<Page, StoreError>> + Send {
        self.0.list(query)
    }
}

/// Runs an operation over [`Blocking`] to completion in one poll. `None` only if it awaited
/// something that was not ready, which a [`Blocking`] backend never does.
pub(crate) fn resolve<F: Future>(operation: F) -> Option<F::Output> {
    let mut operation = pin!(operation);
    match operation.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}
