//! The common case in one type: a key prefix and a pepper in, a checked request or a tower layer
//! out, with the embedded stores unless others are given.

#![cfg(feature = "std")]

use alloc::sync::Arc;
use core::fmt;

use rand_core::TryCryptoRng;

use super::{Gate, Principal};
use crate::events::EventSink;
use crate::format::{FormatError, GenerateError, GeneratedKey, SelectorFormat};
use crate::limit::{AsyncLimitStore, Limiter};
use crate::secret::Peppers;
use crate::store::{AsyncKeyStore, StoreError};
use crate::{Denial, KeyKind, KeyRecord, MemoryLimitStore, MemoryStore, Pepper, Requirements, Timestamp, Verifier};

/// API-key authentication in front of a service: keys shaped `{prefix}_v1_sk_<kid>_<secret>`,
/// digested with a pepper, kept in a key store, limited in a limit store; in memory unless
/// [`KeyGate::with_stores`] says otherwise. Cheap to clone: clones share one gate.
///
/// ```
/// use keygate::{KeyGate, Requirements};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pepper = "42".repeat(32); // from the configuration: std::env::var("KEYGATE_PEPPER")?
/// let keys = KeyGate::new("aistats", pepper.parse()?)?;
/// let token = keys.issue(|key| key.rate_limit.requests_per_minute = Some(60)).await?;
/// let header = format!("Bearer {}", token.token().expose_secret());
/// match keys.check(Some(header.as_bytes()), &Requirements::new()).await {
///     Ok(principal) => println!("key {} may go on", principal.id()), // settled when dropped
///     Err(denial) => println!("{} {}", denial.status(), denial.body()),
/// }
/// # Ok(()) }
/// ```
pub struct KeyGate<S = MemoryStore, L = MemoryLimitStore, E = ()> {
    gate: Arc<Gate<S, Arc<L>, E>>,
}

impl<S, L, E> Clone for KeyGate<S, L, E> {
    fn clone(&self) -> Self {
        Self { gate: Arc::clone(&self.gate) }
    }
}

impl KeyGate {
    /// Keys with `prefix` (`"aistats"`: `aistats_v1_sk_<kid>_<secret>`) digested with `pepper`,
    /// in the embedded key and limit stores.
    ///
    /// # Errors
    ///
    /// A [`FormatError`] if `prefix` is not a valid key prefix.
    pub fn new(prefix: &str, pepper: Pepper) -> Result<Self, FormatError> {
        Self::with_stores(prefix, pepper, MemoryStore::new(), MemoryLimitStore::new())
    }
}

impl<S, L> KeyGate<S, L>
where
    Arc<L>: AsyncLimitStore,
{
    /// The same, with keys in `store` (a database, a cache in front of one) and limit state in
    /// `limits` (Redis, when several processes serve the same keys).
    ///
    /// # Errors
    ///
    /// A [`FormatError`] if `prefix` is not a valid key prefix.
    pub fn with_stores(prefix: &str, pepper: Pepper, store: S, limits: L) -> Result<Self, FormatError> {
        let verifier = Verifier::new(SelectorFormat::new(prefix)?, Peppers::new(pepper));
        Ok(Self::from_gate(Gate::new(verifier, store, Limiter::new(Arc::new(limits)))))
    }
}

impl<S, L, E> KeyGate<S, L, E> {
    /// A facade over a [`Gate`] built by hand (several key formats, several peppers, an event
    /// sink, a fail-open limiter).
    pub fn from_gate(gate: Gate<S, Arc<L>, E>) -> Self {
        Self { gate: Arc::new(gate) }
    }

    /// The gate: the stages, the verifier, the stores.
    #[must_use]
    pub fn gate(&self) -> &Arc<Gate<S, Arc<L>, E>> {
        &self.gate
    }

    /// The key store.
    #[must_use]
    pub fn store(&self) -> &S {
        self.gate.store()
    }

    /// A tower layer checking every request that reaches it: a valid key, nothing more, until
    /// [`require_scopes`](crate::tower::KeyGateLayer::require_scopes) or
    /// [`classify`](crate::tower::KeyGateLayer::classify) say what a route requires. A passing
    /// request reaches the handler with its [`Principal`] in its extensions.
    #[cfg(feature = "tower")]
    #[must_use]
    pub fn layer(&self) -> crate::tower::KeyGateLayer<S, Arc<L>, Requirements, E> {
        crate::tower::KeyGateLayer::new(Arc::clone(&self.gate), Requirements::new())
    }
}

impl<S, L, E> KeyGate<S, L, E>
where
    S: AsyncKeyStore + 'static,
    L: Send + Sync + 'static,
    Arc<L>: AsyncLimitStore,
    E: EventSink + Send + Sync + 'static,
{
    /// Checks one request now: the `Authorization` header value (`None` if absent) against
    /// `requirements`. The [`Principal`] settles the request when dropped (or with
    /// [`Principal::finish`]).
    ///
    /// # Errors
    ///
    /// The first [`Denial`] of the decision table that applies.
    pub async fn check(&self, authorization: Option<&[u8]>, requirements: &Requirements) -> Result<Principal, Denial> {
        let started = std::time::Instant::now();
        let pass = self.gate.check_async(authorization, requirements, Timestamp::now()).await?;
        Ok(Principal::for_request(Arc::clone(&self.gate), pass, requirements, started))
    }

    /// Issues a standard key, lets `configure` set its policy and limits, and stores it. The
    /// token in the answer is shown once; the store keeps only a digest.
    ///
    /// # Errors
    ///
    /// [`IssueError`] if the random number generator or the store fails.
    pub async fn issue(&self, configure: impl FnOnce(&mut KeyRecord)) -> Result<GeneratedKey, IssueError> {
        self.issue_with(&mut crate::OsRng, configure).await
    }

    /// [`KeyGate::issue`] with a random number generator of the caller's.
    ///
    /// # Errors
    ///
    /// [`IssueError`] if `rng` or the store fails.
    pub async fn issue_with<G: TryCryptoRng + ?Sized>(
        &self,
        rng: &mut G,
        configure: impl FnOnce(&mut KeyRecord),
    ) -> Result<GeneratedKey, IssueError> {
        let (key, mut record) = self.gate.verifier().issue(rng, KeyKind::STANDARD, Timestamp::now())?;
        configure(&mut record);
        self.gate.store().insert(record).await?;
        Ok(key)
    }
}

impl<S, L, E> fmt::Debug for KeyGate<S, L, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyGate").field("gate", &self.gate).finish()
    }
}

/// [`KeyGate::issue`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The key could not be generated (the random number generator failed).
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// The store refused it or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
