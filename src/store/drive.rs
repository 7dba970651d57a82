//! Runs an operation written once as an `async fn` over an [`AsyncKeyStore`] to completion
//! over a synchronous store.
//!
//! Every [`KeyStore`] is an [`AsyncKeyStore`] whose futures are ready when created, so an
//! operation that awaits only such a store completes in a single poll with no executor (and
//! works without `std`). The pipeline (`Verifier::authenticate`, `Gate::check`), the management
//! operations and the last-used writer are each written once, over [`AsyncKeyStore`], and their
//! synchronous entry points call [`resolve`].
//!
//! [`KeyStore`]: super::KeyStore
//! [`AsyncKeyStore`]: super::AsyncKeyStore

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

/// Runs `operation` to completion in one poll. `None` only if it awaited something that was not
/// ready, which an operation over a synchronous store never does.
#[inline]
pub(crate) fn resolve<F: Future>(operation: F) -> Option<F::Output> {
    let mut operation = pin!(operation);
    match operation.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}
