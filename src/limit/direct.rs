//! One rate limit in one `AtomicU64`: governor's direct limiter, without the clock (needs `std`).

#![cfg(feature = "std")]

use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use super::{Gcra, LimitStatus, NotUntil};
use crate::Timestamp;

/// A single, unkeyed rate limit (governor's `RateLimiter::direct`): a global limit, or the
/// building block of a custom store. The state is one TAT in an `AtomicU64`, updated with a
/// compare-and-swap loop; `now` comes from the caller.
///
/// ```
/// use keygate::Timestamp;
/// use keygate::limit::{DirectLimiter, Gcra};
/// let limiter = DirectLimiter::new(Gcra::per_second(2));
/// let now = Timestamp::from_unix_secs(1_000);
/// assert!(limiter.check(now).is_ok());
/// assert!(limiter.check(now).is_ok());
/// assert!(limiter.check(now).is_err());
/// ```
#[derive(Debug)]
pub struct DirectLimiter {
    gcra: Gcra,
    tat: AtomicU64,
}

impl DirectLimiter {
    /// A limiter that has admitted nothing yet.
    #[must_use]
    pub const fn new(gcra: Gcra) -> Self {
        Self { gcra, tat: AtomicU64::new(0) }
    }

    /// The limit's parameters.
    #[must_use]
    pub const fn gcra(&self) -> Gcra {
        self.gcra
    }

    /// Takes one unit at `now`.
    ///
    /// # Errors
    ///
    /// [`NotUntil`] when refused.
    #[inline]
    pub fn check(&self, now: Timestamp) -> Result<(), NotUntil> {
        self.check_n(now, 1)
    }

    /// Takes `cost` units at `now`, all or none.
    ///
    /// # Errors
    ///
    /// [`NotUntil`] when refused (without an instant if `cost` exceeds the burst).
    #[inline]
    pub fn check_n(&self, now: Timestamp, cost: u32) -> Result<(), NotUntil> {
        let mut old = self.tat.load(Acquire);
        loop {
            let new = self.gcra.check(old, now, cost)?;
            match self.tat.compare_exchange_weak(old, new, Release, Acquire) {
                Ok(_) => return Ok(()),
                Err(current) => old = current,
            }
        }
    }

    /// The limit's status at `now`.
    #[must_use]
    pub fn status(&self, now: Timestamp) -> LimitStatus {
        self.gcra.status(self.tat.load(Acquire), now)
    }

    /// Forgets all use: the limit is back to a full burst.
    pub fn reset(&self) {
        self.tat.store(0, Relaxed);
    }
}
