//! The generic cell rate algorithm, as `governor` implements it, as pure functions of the state.
//!
//! A limit of `amount` units per `period` admits one unit every *emission interval*
//! `t = period / amount` (truncated to whole nanoseconds, at least 1 ns, as governor's
//! `Quota::per_minute` computes it) and lets `burst` units through at once: the *tolerance*
//! `tau = t · (burst − 1)`. The whole state of a limit is one number, the theoretical arrival time
//! (TAT): the instant at which the limit would be back to full if nothing else arrived. A state of
//! `0` means "never used", which is the same as any TAT at or before `now`.
//!
//! A request of `n` units at `t0` is admitted iff `t0 >= tat + t·(n − 1) − tau`; it then sets
//! `tat = max(tat, t0) + t·n`. A request of more units than the burst can never be admitted
//! (governor's `InsufficientCapacity`): the answer is a [`NotUntil`] without an instant.

use core::time::Duration;

use crate::Timestamp;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// The largest value a limit's state holds: `i64::MAX`, so that every value fits a signed 64-bit
/// integer (Redis's integers) and the top bit stays free for a store's own use.
///
/// For a rate limit the state is a TAT in nanoseconds since the epoch, so limits work until
/// 2262-04-11 (later instants saturate here).
pub const MAX_STATE: u64 = i64::MAX.unsigned_abs();

/// The longest emission interval and tolerance: 2^61 ns, 73 years. With `now` clamped to
/// [`MAX_STATE`], `max(tat, now) + t + additional` then cannot overflow, so the hot path adds
/// without saturating.
const MAX_SPAN: u64 = 1 << 61;

/// A rate limit's parameters: `amount` units per `period`, with a burst capacity.
///
/// ```
/// use core::time::Duration;
/// use keygate::Timestamp;
/// use keygate::limit::Gcra;
///
/// // 3 requests per minute, all three at once if the key was idle.
/// let rpm = Gcra::per_minute(3);
/// assert_eq!(rpm.emission_interval(), Duration::from_secs(20));
/// let now = Timestamp::from_unix_secs(1_000);
/// let mut tat = 0; // never used
/// for _ in 0..3 {
///     tat = rpm.check(tat, now, 1).expect("within the burst");
/// }
/// let refused = rpm.check(tat, now, 1).unwrap_err();
/// assert_eq!(refused.wait_time_from(now), Some(Duration::from_secs(20)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gcra {
    /// Emission interval in nanoseconds; 0 for a limit of zero units (refuses everything).
    t: u64,
    /// Tolerance in nanoseconds: `t · (burst − 1)`.
    tau: u64,
    amount: u32,
    burst: u32,
}

impl Gcra {
    /// `amount` units per `period`, with a burst of `amount` (governor's default: an idle key may
    /// spend a whole period's allowance at once). A limit of 0 units refuses every request.
    #[must_use]
    #[inline]
    pub const fn new(amount: u32, period: Duration) -> Self {
        // In u64 (a u128 division is a slow library call): periods up to 584 years.
        let secs = period.as_secs();
        let period_nanos = if secs >= u64::MAX / NANOS_PER_SEC {
            u64::MAX
        } else {
            secs * NANOS_PER_SEC + period.subsec_nanos() as u64
        };
        let t = if amount == 0 {
            0
        } else {
            let nanos = period_nanos / amount as u64;
            if nanos == 0 {
                1
            } else if nanos > MAX_SPAN {
                MAX_SPAN
            } else {
                nanos
            }
        };
        Self { t, tau: 0, amount, burst: 0 }.with_burst(amount)
    }

    /// `amount` units per minute (requests per minute, tokens per minute).
    #[must_use]
    #[inline]
    pub const fn per_minute(amount: u32) -> Self {
        Self::new(amount, Duration::from_secs(60))
    }

    /// `amount` units per second.
    #[must_use]
    #[inline]
    pub const fn per_second(amount: u32) -> Self {
        Self::new(amount, Duration::from_secs(1))
    }

    /// The same rate with a burst capacity of `burst` units (at least 1).
    #[must_use]
    #[inline]
    pub const fn with_burst(mut self, burst: u32) -> Self {
        let burst = if burst == 0 { 1 } else { burst };
        self.burst = burst;
        self.tau = self.t.saturating_mul((burst - 1) as u64);
        if self.tau > MAX_SPAN {
            self.tau = MAX_SPAN;
        }
        self
    }

    /// The configured amount per period (what `x-ratelimit-limit-*` reports).
    #[must_use]
    #[inline]
    pub const fn amount(&self) -> u32 {
        self.amount
    }

    /// How many units an idle key may use at once.
    #[must_use]
    #[inline]
    pub const fn burst(&self) -> u32 {
        self.burst
    }

    /// The time one unit takes to replenish.
    #[must_use]
    #[inline]
    pub const fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.t)
    }

    /// Whether this limit refuses everything (0 units per period).
    #[must_use]
    #[inline]
    pub const fn is_closed(&self) -> bool {
        self.t == 0
    }

    /// Tests `cost` units at `now` against the state `tat` (0 if never used).
    ///
    /// Returns the new state when admitted. A `cost` of 0 consumes nothing and is admitted iff one
    /// unit would be: a key in debt (after a reconciliation charged more than the estimate) is
    /// refused even a request that estimates nothing.
    ///
    /// # Errors
    ///
    /// [`NotUntil`] when refused: with the earliest instant a retry can succeed, or without one when
    /// `cost` exceeds the burst or the limit is 0 units (a retry never succeeds).
    #[inline]
    pub const fn check(&self, tat: u64, now: Timestamp, cost: u32) -> Result<u64, NotUntil> {
        let t0 = clamp(now.unix_nanos());
        // governor's `test_and_update` for one unit, `test_n_all_and_update` for more.
        let additional = if cost > 1 { self.t.saturating_mul((cost - 1) as u64) } else { 0 };
        if additional > self.tau || self.t == 0 {
            return Err(NotUntil::NEVER);
        }
        let tat_eff = if tat == 0 { t0 } else { tat };
        let earliest = tat_eff.saturating_add(additional).saturating_sub(self.tau);
        if t0 < earliest {
            return Err(NotUntil { earliest: Some(Timestamp::from_unix_nanos(earliest)) });
        }
        if cost == 0 {
            return Ok(tat);
        }
        // Admitted, so tat_eff <= t0 + tau - additional and the sum is at most t0 + tau + t, below
        // 2^63 + 2^62 (t0 <= 2^63, t and tau <= 2^61): no overflow. A result above MAX_STATE
        // (only after the year 2262) is clamped by the store that keeps it.
        let base = if tat_eff > t0 { tat_eff } else { t0 };
        Ok(base + self.t + additional)
    }

    /// Charges `units` unconditionally (usage that already happened): the new state.
    #[must_use]
    #[inline]
    pub const fn charge(&self, tat: u64, now: Timestamp, units: u64) -> u64 {
        let t0 = clamp(now.unix_nanos());
        let base = if tat > t0 { tat } else { t0 };
        clamp(base.saturating_add(self.t.saturating_mul(units)))
    }

    /// Gives back `units` charged earlier: the new state. Never below `now` (a refund cannot
    /// create capacity beyond a full burst) and never negative; a state already in the past is
    /// left as it is.
    #[must_use]
    #[inline]
    pub const fn refund(&self, tat: u64, now: Timestamp, units: u64) -> u64 {
        let t0 = clamp(now.unix_nanos());
        if tat <= t0 {
            return tat;
        }
        let back = tat.saturating_sub(self.t.saturating_mul(units));
        if back > t0 { back } else { t0 }
    }

    /// The limit's status at `now` for the state `tat`: what the `x-ratelimit-*` headers report.
    #[must_use]
    #[inline]
    pub const fn status(&self, tat: u64, now: Timestamp) -> LimitStatus {
        let t0 = clamp(now.unix_nanos());
        let tat_eff = if tat > t0 { tat } else { t0 };
        let remaining = if self.is_closed() {
            0
        } else {
            // governor's `remaining_burst_capacity`.
            let left = t0.saturating_add(self.tau).saturating_add(self.t).saturating_sub(tat_eff) / self.t;
            if left > self.burst as u64 {
                self.burst
            } else {
                #[allow(clippy::cast_possible_truncation)] // <= burst
                let l = left as u32;
                l
            }
        };
        LimitStatus { limit: self.amount, remaining, reset_nanos: tat_eff - t0 }
    }
}

#[inline]
const fn clamp(v: u64) -> u64 {
    if v > MAX_STATE { MAX_STATE } else { v }
}

/// A refusal by a rate limit: when a retry can first succeed (governor's `NotUntil`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NotUntil {
    earliest: Option<Timestamp>,
}

impl NotUntil {
    const NEVER: Self = Self { earliest: None };

    /// The earliest instant a retry can be admitted, or `None` if it never can (the request is
    /// larger than the burst, or the limit is zero).
    #[must_use]
    #[inline]
    pub const fn earliest_possible(&self) -> Option<Timestamp> {
        self.earliest
    }

    /// How long after `now` a retry can first be admitted (zero if that instant has passed), or
    /// `None` if never.
    #[must_use]
    #[inline]
    pub const fn wait_time_from(&self, now: Timestamp) -> Option<Duration> {
        match self.earliest {
            Some(at) => Some(at.saturating_duration_since(now)),
            None => None,
        }
    }
}

/// One limit's state as clients see it: the data of the `x-ratelimit-{limit,remaining,reset}-*`
/// headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LimitStatus {
    limit: u32,
    remaining: u32,
    reset_nanos: u64,
}

impl LimitStatus {
    /// A status with these values (`reset` saturates at `u64::MAX` nanoseconds, 584 years).
    #[must_use]
    #[inline]
    pub const fn new(limit: u32, remaining: u32, reset: Duration) -> Self {
        let nanos = reset.as_nanos();
        #[allow(clippy::cast_possible_truncation)] // checked
        let reset_nanos = if nanos > u64::MAX as u128 { u64::MAX } else { nanos as u64 };
        Self { limit, remaining, reset_nanos }
    }

    /// The configured amount per period (`x-ratelimit-limit-*`).
    #[must_use]
    #[inline]
    pub const fn limit(&self) -> u32 {
        self.limit
    }

    /// Units that could be used right now (`x-ratelimit-remaining-*`).
    #[must_use]
    #[inline]
    pub const fn remaining(&self) -> u32 {
        self.remaining
    }

    /// The time until the limit is back to its initial, full state (`x-ratelimit-reset-*`).
    #[must_use]
    #[inline]
    pub const fn reset(&self) -> Duration {
        Duration::from_nanos(self.reset_nanos)
    }
}
