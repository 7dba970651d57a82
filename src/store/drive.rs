//! Runs an operation written once as an `async fn` over an [`AsyncKeyStore`] to completion
//! over a synchronous store.
//!
//! Every [`KeyStore`] is an [`AsyncKeyStore`] whose futures are ready when created, so an
//! operation that awaits only such a store completes in a single poll with no executor (and
//! works without `std`). The management operations and the last-used writer are each written
//! once, over [`AsyncKeyStore`], and their synchronous entry points call [`resolve`]. The request
//! pipeline (`Verifier::authenticate`, `Limiter::check`, `Gate::check`) is not driven this way:
//! on its hot path the future's state and output moves cost about a third of an HMAC, so each
//! of its stages is one body expanded in both entry points (see `verify.rs`).
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
