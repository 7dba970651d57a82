//! Limit updates as data: the cells of a key and the operations on them.
//!
//! A [`LimitBatch`](super::LimitBatch) lists up to [`MAX_CELLS`] `(cell, operation)` pairs for one key. Evaluating
//! it ([`LimitBatch::evaluate`]) is a pure function of the cells' current states and `now`:
//! either every operation is admitted and every cell gets its new state, or at least one refuses
//! and no cell changes. This is the function a store runs inside its atomic update, and the one a
//! Redis Lua script reimplements (see the [module docs](crate::limit)).

use core::fmt;
use core::time::Duration;

use super::batch::{Refused, nanos_or_never};
use super::{Gcra, LimitStatus, MAX_STATE};
use crate::{DenialCode, Timestamp};

/// The most cells one batch (one request's limits) may touch.
pub const MAX_CELLS: usize = 6;

pub(super) const MAX_NAME_LEN: usize = 16;

/// The name of one of a key's limits: 1 to 16 characters from `[a-z0-9_.:-]`, stored inline.
///
/// The limit stage uses [`REQUESTS`](Self::REQUESTS), [`TOKENS`](Self::TOKENS),
/// [`CONCURRENCY`](Self::CONCURRENCY), [`SPEND`](Self::SPEND) and [`CREDITS`](Self::CREDITS);
/// further named limits (Unkey's custom limits) take their own names.
///
/// ```
/// use keygate::limit::LimitName;
/// assert_eq!(LimitName::new("images").map(|n| n.to_string()).as_deref(), Some("images"));
/// assert!(LimitName::new("Not Valid").is_none());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LimitName {
    /// The name, padded with zero bytes (which no name contains).
    pub(super) bytes: [u8; MAX_NAME_LEN],
}

impl LimitName {
    /// Requests per minute.
    pub const REQUESTS: Self = Self::known("requests");
    /// Tokens per minute.
    pub const TOKENS: Self = Self::known("tokens");
    /// Requests in flight.
    pub const CONCURRENCY: Self = Self::known("concurrency");
    /// Spend per calendar period.
    pub const SPEND: Self = Self::known("spend");
    /// Credits (Unkey's `remaining`), with or without a refill period.
    pub const CREDITS: Self = Self::known("credits");

    /// A name, or `None` if `s` is empty, longer than 16 bytes or has other characters.
    #[must_use]
    #[inline]
    pub const fn new(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.is_empty() || b.len() > MAX_NAME_LEN {
            return None;
        }
        let mut bytes = [0; MAX_NAME_LEN];
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b':' | b'-')) {
                return None;
            }
            bytes[i] = c;
            i += 1;
        }
        Some(Self { bytes })
    }

    const fn known(s: &str) -> Self {
        match Self::new(s) {
            Some(n) => n,
            None => Self { bytes: [0; MAX_NAME_LEN] },
        }
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        let len = self.bytes.iter().position(|&b| b == 0).unwrap_or(MAX_NAME_LEN);
        core::str::from_utf8(&self.bytes[..len]).unwrap_or_default()
    }
}

impl fmt::Debug for LimitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for LimitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One cell of limiter state of a key: a limit's name and its window.
///
/// The window is 0 for limits whose state carries over (rate limits, concurrency, credits
/// without refill) and the period's start in Unix seconds for per-period counters (spend per
/// day/week/month, refilled credits), so a new period starts from an empty cell and the old one
/// simply expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CellId {
    /// The limit's name.
    pub name: LimitName,
    /// The window: 0, or the start of the period in Unix seconds.
    pub window: u64,
}

impl CellId {
    /// The cell of `name` that carries over (window 0).
    #[must_use]
    #[inline]
    pub const fn new(name: LimitName) -> Self {
        Self { name, window: 0 }
    }

    /// The cell of `name` for the period starting at `start`.
    #[must_use]
    #[inline]
    pub const fn for_period(name: LimitName, start: Timestamp) -> Self {
        Self { name, window: start.unix_secs() }
    }
}

/// What a store holds for one cell, as its update closure sees and sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CellState {
    /// The value, `0..=MAX_STATE`; 0 is "absent" (a cell never used, or evicted, reads as 0).
    pub value: u64,
    /// When the cell's state is worth nothing any more and may be dropped (Redis `PEXPIREAT`);
    /// `None` while it must be kept (a cell is also droppable whenever its value is 0).
    pub expires_at: Option<Timestamp>,
}

/// One update of one cell. Each refusing kind maps to one denial code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitOp {
    /// Take `cost` units from a GCRA rate limit (`rate_limited` when refused). The state is the TAT.
    Rate {
        /// The limit's parameters.
        gcra: Gcra,
        /// Units this request takes (1 per request; the token estimate for a tokens limit).
        cost: u32,
    },
    /// Charge `units` to a rate limit unconditionally: usage beyond an estimate, already spent.
    RateCharge {
        /// The limit's parameters.
        gcra: Gcra,
        /// Units to charge.
        units: u64,
    },
    /// Give back `units` of an estimate that were not used.
    RateRefund {
        /// The limit's parameters.
        gcra: Gcra,
        /// Units to give back.
        units: u64,
    },
    /// Take one of `cap` concurrency slots for the admission `lease` (`concurrency_limited` when
    /// all are taken). The state is the number of requests in flight.
    ///
    /// A lease names one admission: unique among the admissions in flight from one store handle
    /// (the [`Limiter`](crate::limit::Limiter) numbers them). [`LimitBatch::evaluate`](super::LimitBatch::evaluate) only counts;
    /// a shared store whose caller can lose track of a call (Redis: a timeout after the script
    /// ran) keeps one entry per lease with its own deadline, so that a lease nobody releases
    /// expires by itself and a lease released twice is released once.
    Acquire {
        /// Requests allowed in flight at once.
        cap: u32,
        /// The admission taking the slot.
        lease: u64,
    },
    /// Give back the concurrency slot of the admission `lease`. Each lease is released at most
    /// once by the limit stage; a store that keeps leases ignores a lease it does not hold.
    Release {
        /// The admission giving its slot back.
        lease: u64,
    },
    /// Take `amount` from a counter capped at `cap` per window (`quota_exceeded` when the counter
    /// is at or over the cap, or `amount` does not fit). An `amount` of 0 only checks. The state
    /// is the amount used in the window.
    Quota {
        /// The cap.
        cap: u64,
        /// What this request takes now (its credit cost); 0 only checks.
        amount: u64,
        /// When the window ends (the cell expires then); `None` for a lifetime counter.
        resets_at: Option<Timestamp>,
    },
    /// Reserve `amount` from a counter capped at `cap` per window (`quota_exceeded` when the
    /// counter is already at or over the cap). Unlike [`Quota`](Self::Quota), an amount that
    /// does not fit is still taken as long as the counter is under the cap: the counter passes
    /// the cap by less than one reservation. A spend cap reserves each request's estimated cost
    /// this way, and [`Settle`](Self::Settle)s it when the real cost is known.
    Reserve {
        /// The cap.
        cap: u64,
        /// What this request reserves (its estimate; 0 only checks).
        amount: u64,
        /// When the window ends (the cell expires then); `None` for a lifetime counter.
        resets_at: Option<Timestamp>,
    },
    /// Replace what a request took from a counter (`reserved`: its spend estimate, or its credit
    /// cost) by what it used: the counter loses `reserved`, never going below 0, and gains
    /// `used`. Never refused. On a counter that holds the reservation this adds `used −
    /// reserved`; on one that lost it (a Redis that restarted empty before a kept settlement
    /// was sent again), it still records `used`.
    Settle {
        /// What the request took at admission.
        reserved: u64,
        /// What it used.
        used: u64,
        /// When the window ends; `None` for a lifetime counter.
        resets_at: Option<Timestamp>,
    },
    /// Add `amount` to a counter unconditionally (usage recorded after the request).
    Record {
        /// What to add.
        amount: u64,
        /// When the window ends; `None` for a lifetime counter.
        resets_at: Option<Timestamp>,
    },
    /// Give back `amount` of a counter; the counter never goes below 0.
    Unrecord {
        /// What to give back.
        amount: u64,
        /// When the window ends; `None` for a lifetime counter.
        resets_at: Option<Timestamp>,
    },
}

/// Why one operation refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Refusal {
    pub(super) code: DenialCode,
    pub(super) retry_after: Option<Duration>,
}

impl LimitOp {
    /// Applies the operation to one cell at `now`: the new state, or the refusal.
    #[inline]
    pub(super) fn apply(&self, cell: CellState, now: Timestamp) -> Result<CellState, Refusal> {
        let counter = |value: u64, resets_at: Option<Timestamp>| CellState { value, expires_at: resets_at };
        let until = |at: Option<Timestamp>| at.map(|at| at.saturating_duration_since(now));
        Ok(match *self {
            Self::Rate { gcra, cost } => match gcra.check(cell.value, now, cost) {
                Ok(tat) => rate(tat),
                Err(not) => {
                    return Err(Refusal { code: DenialCode::RateLimited, retry_after: not.wait_time_from(now) });
                }
            },
            Self::RateCharge { gcra, units } => rate(gcra.charge(cell.value, now, units)),
            Self::RateRefund { gcra, units } => rate(gcra.refund(cell.value, now, units)),
            Self::Acquire { cap, .. } => {
                if cell.value >= u64::from(cap) {
                    return Err(Refusal { code: DenialCode::ConcurrencyLimited, retry_after: None });
                }
                counter(cell.value + 1, None)
            }
            Self::Release { .. } => counter(cell.value.saturating_sub(1), None),
            Self::Quota { cap, amount, resets_at } => {
                let used = cell.value;
                if used >= cap || used.saturating_add(amount) > cap {
                    return Err(Refusal { code: DenialCode::QuotaExceeded, retry_after: until(resets_at) });
                }
                counter(used.saturating_add(amount), resets_at)
            }
            Self::Reserve { cap, amount, resets_at } => {
                if cell.value >= cap {
                    return Err(Refusal { code: DenialCode::QuotaExceeded, retry_after: until(resets_at) });
                }
                counter(cell.value.saturating_add(amount).min(MAX_STATE), resets_at)
            }
            Self::Settle { reserved, used, resets_at } => {
                counter(cell.value.saturating_sub(reserved).saturating_add(used).min(MAX_STATE), resets_at)
            }
            Self::Record { amount, resets_at } => counter(cell.value.saturating_add(amount).min(MAX_STATE), resets_at),
            Self::Unrecord { amount, resets_at } => counter(cell.value.saturating_sub(amount), resets_at),
        })
    }

    /// Evaluates this operation alone on one cell at `now`: the cell's new state, or the refusal
    /// (whose [`Refused::value`] at index 0 is the cell's unchanged value). This is what a store
    /// that implements [`LimitStore::apply_one`](super::LimitStore::apply_one) natively runs
    /// inside its atomic update.
    ///
    /// # Errors
    ///
    /// [`Refused`] when the operation refuses.
    #[inline(always)]
    pub fn evaluate(&self, cell: CellState, now: Timestamp) -> Result<CellState, Refused> {
        self.apply(cell, now).map_err(|r| {
            let mut values = [0; MAX_CELLS];
            values[0] = cell.value;
            Refused { code: r.code, retry_after_nanos: nanos_or_never(r.retry_after), values }
        })
    }

    /// The `x-ratelimit-*` status of a rate limit given its cell's state.
    #[inline]
    pub(super) fn status(&self, cell: CellState, now: Timestamp) -> Option<LimitStatus> {
        match self {
            Self::Rate { gcra, .. } | Self::RateCharge { gcra, .. } | Self::RateRefund { gcra, .. } => {
                Some(gcra.status(cell.value, now))
            }
            _ => None,
        }
    }
}

#[inline]
fn rate(tat: u64) -> CellState {
    // Once `now` passes the TAT the state is the same as no state.
    CellState { value: tat, expires_at: Some(Timestamp::from_unix_nanos(tat)) }
}
