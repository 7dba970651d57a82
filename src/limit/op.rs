//! Limit updates as data: what a store applies, all-or-nothing, to the cells of one key.
//!
//! A [`LimitBatch`] lists up to [`MAX_CELLS`] `(cell, operation)` pairs for one key. Evaluating
//! it ([`LimitBatch::evaluate`]) is a pure function of the cells' current states and `now`:
//! either every operation is admitted and every cell gets its new state, or at least one refuses
//! and no cell changes. This is the function a store runs inside its atomic update, and the one a
//! Redis Lua script reimplements (see the [module docs](crate::limit)).

use core::fmt;
use core::time::Duration;

use super::{Gcra, LimitError, LimitStatus, MAX_STATE};
use crate::{DenialCode, Timestamp};

/// The most cells one batch (one request's limits) may touch.
pub const MAX_CELLS: usize = 6;

const MAX_NAME_LEN: usize = 16;

/// The name of one of a key's limits: 1 to 16 characters from `[a-z0-9_.:-]`, stored inline.
///
/// The limit stage uses [`REQUESTS`](Self::REQUESTS), [`TOKENS`](Self::TOKENS),
/// [`CONCURRENCY`](Self::CONCURRENCY), [`SPEND`](Self::SPEND) and [`CREDITS`](Self::CREDITS);
/// further named limits (Unkey's custom limits) take their own names.
///
/// ```
/// use keygate::LimitName;
/// assert_eq!(LimitName::new("images").map(|n| n.to_string()).as_deref(), Some("images"));
/// assert!(LimitName::new("Not Valid").is_none());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LimitName {
    /// The name, padded with zero bytes (which no name contains).
    bytes: [u8; MAX_NAME_LEN],
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
    /// Take one of `cap` concurrency slots (`concurrency_limited` when all are taken). The state
    /// is the number of requests in flight.
    Acquire {
        /// Requests allowed in flight at once.
        cap: u32,
    },
    /// Give back a concurrency slot.
    Release,
    /// Take `amount` from a counter capped at `cap` per window (`quota_exceeded` when the counter
    /// is at or over the cap, or `amount` does not fit). An `amount` of 0 only checks. The state
    /// is the amount used in the window.
    Quota {
        /// The cap.
        cap: u64,
        /// What this request takes now (0 for spend, which is recorded afterwards).
        amount: u64,
        /// When the window ends (the cell expires then); `None` for a lifetime counter.
        resets_at: Option<Timestamp>,
    },
    /// Add `amount` to a counter unconditionally (spend recorded after the request).
    Record {
        /// What to add.
        amount: u64,
        /// When the window ends; `None` for a lifetime counter.
        resets_at: Option<Timestamp>,
    },
    /// Give back `amount` of a counter (credits taken for a request that did not use them); the
    /// counter never goes below 0.
    Unrecord {
        /// What to give back.
        amount: u64,
        /// When the window ends; `None` for a lifetime counter.
        resets_at: Option<Timestamp>,
    },
}

/// Why one operation refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Refusal {
    code: DenialCode,
    retry_after: Option<Duration>,
}

impl LimitOp {
    /// Applies the operation to one cell at `now`: the new state, or the refusal.
    #[inline]
    fn apply(&self, cell: CellState, now: Timestamp) -> Result<CellState, Refusal> {
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
            Self::Acquire { cap } => {
                if cell.value >= u64::from(cap) {
                    return Err(Refusal { code: DenialCode::ConcurrencyLimited, retry_after: None });
                }
                counter(cell.value + 1, None)
            }
            Self::Release => counter(cell.value.saturating_sub(1), None),
            Self::Quota { cap, amount, resets_at } => {
                let used = cell.value;
                if used >= cap || used.saturating_add(amount) > cap {
                    return Err(Refusal { code: DenialCode::QuotaExceeded, retry_after: until(resets_at) });
                }
                counter(used.saturating_add(amount), resets_at)
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
    fn status(&self, cell: CellState, now: Timestamp) -> Option<LimitStatus> {
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

/// Up to [`MAX_CELLS`] updates of distinct cells of one key, applied all-or-nothing.
///
/// ```
/// use keygate::{CellId, CellState, Gcra, LimitBatch, LimitName, LimitOp, Timestamp};
///
/// let now = Timestamp::from_unix_secs(1_000);
/// let mut batch = LimitBatch::new();
/// batch.push(CellId::new(LimitName::REQUESTS), LimitOp::Rate { gcra: Gcra::per_minute(60), cost: 1 })?;
/// batch.push(CellId::new(LimitName::TOKENS), LimitOp::Rate { gcra: Gcra::per_minute(100), cost: 500 })?;
///
/// // 500 tokens do not fit a burst of 100: refused, and neither cell changes.
/// let mut cells = [CellState::default(); 2];
/// let refused = batch.evaluate(&mut cells, now).unwrap_err();
/// assert_eq!(refused.code(), keygate::DenialCode::RateLimited);
/// assert_eq!(cells, [CellState::default(); 2]);
/// # Ok::<(), keygate::LimitError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitBatch {
    cells: [CellId; MAX_CELLS],
    ops: [LimitOp; MAX_CELLS],
    len: usize,
}

impl Default for LimitBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl LimitBatch {
    /// An empty batch.
    #[must_use]
    #[inline]
    pub const fn new() -> Self {
        // All-zero fillers, so that a new batch is a zeroed block of memory.
        const NO_CELL: CellId = CellId { name: LimitName { bytes: [0; MAX_NAME_LEN] }, window: 0 };
        const NO_OP: LimitOp = LimitOp::Rate { gcra: Gcra::per_minute(0), cost: 0 };
        Self { cells: [NO_CELL; MAX_CELLS], ops: [NO_OP; MAX_CELLS], len: 0 }
    }

    /// Adds an update of `cell`; returns its index (the index of its status in [`Applied`]).
    ///
    /// # Errors
    ///
    /// [`LimitError::TooManyCells`] past [`MAX_CELLS`]; [`LimitError::DuplicateCell`] if the
    /// batch already updates `cell`.
    #[inline]
    pub fn push(&mut self, cell: CellId, op: LimitOp) -> Result<usize, LimitError> {
        if self.cells().contains(&cell) {
            return Err(LimitError::DuplicateCell);
        }
        let i = self.len;
        if i >= MAX_CELLS {
            return Err(LimitError::TooManyCells);
        }
        self.cells[i] = cell;
        self.ops[i] = op;
        self.len += 1;
        Ok(i)
    }

    /// The cells, in the order they were pushed.
    #[must_use]
    #[inline]
    pub fn cells(&self) -> &[CellId] {
        &self.cells[..self.len]
    }

    /// The operations, in the order they were pushed.
    #[must_use]
    #[inline]
    pub fn ops(&self) -> &[LimitOp] {
        &self.ops[..self.len]
    }

    /// How many updates the batch holds.
    #[must_use]
    #[inline]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch is empty.
    #[must_use]
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Evaluates every operation against `cells` (the current states, in push order) at `now`.
    ///
    /// If all are admitted, `cells` receives the new states. If any refuses, `cells` is left as
    /// it was and the [`Refused`] names the first refusing limit in the order of the decision
    /// table (`rate_limited`, `concurrency_limited`, `quota_exceeded`), with the longest wait of
    /// all refusing limits (`None` if one of them can never admit the request).
    ///
    /// # Errors
    ///
    /// [`Refused`] as above. `cells` must have [`len`](Self::len) entries; a shorter slice refuses
    /// with `auth_unavailable` rather than panic.
    #[inline]
    pub fn evaluate(&self, cells: &mut [CellState], now: Timestamp) -> Result<Applied, Refused> {
        let n = self.len;
        let mut values = [0u64; MAX_CELLS];
        if cells.len() != n {
            return Err(Refused { code: DenialCode::AuthUnavailable, retry_after_nanos: NEVER, values });
        }
        let mut next = [CellState::default(); MAX_CELLS];
        let mut refusal: Option<Refusal> = None;
        for ((op, cell), new) in self.ops().iter().zip(cells.iter()).zip(next.iter_mut()) {
            match op.apply(*cell, now) {
                Ok(state) => *new = state,
                Err(r) => {
                    refusal = Some(match refusal {
                        None => r,
                        Some(prev) => Refusal {
                            code: if r.code < prev.code { r.code } else { prev.code },
                            retry_after: match (prev.retry_after, r.retry_after) {
                                (Some(a), Some(b)) => Some(a.max(b)),
                                _ => None,
                            },
                        },
                    });
                }
            }
        }
        if let Some(r) = refusal {
            // A refusal shows the limits as they stand.
            for (v, cell) in values.iter_mut().zip(cells.iter()) {
                *v = cell.value;
            }
            return Err(Refused { code: r.code, retry_after_nanos: nanos_or_never(r.retry_after), values });
        }
        for ((cell, new), v) in cells.iter_mut().zip(next).zip(values.iter_mut()) {
            *cell = new;
            *v = new.value;
        }
        Ok(Applied { values })
    }

    /// The `x-ratelimit-*` status of the rate limit pushed at `index`, given its cell's `value`
    /// (from [`Applied::value`] or [`Refused::value`]); `None` for other kinds of limit.
    #[must_use]
    pub fn status(&self, index: usize, value: u64, now: Timestamp) -> Option<LimitStatus> {
        self.ops().get(index)?.status(CellState { value, expires_at: None }, now)
    }
}

/// A batch was applied: each cell's new value, by push index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Applied {
    values: [u64; MAX_CELLS],
}

impl Applied {
    /// An outcome with these new values (for stores that evaluate a batch elsewhere, such as in a
    /// server-side script).
    #[must_use]
    #[inline]
    pub const fn new(values: [u64; MAX_CELLS]) -> Self {
        Self { values }
    }

    /// The new value of the cell pushed at `index` (0 past the batch's end).
    #[must_use]
    #[inline]
    pub fn value(&self, index: usize) -> u64 {
        self.values.get(index).copied().unwrap_or(0)
    }
}

/// A batch was refused and nothing changed: the decisive code, the wait, and each cell's value as
/// it stands, by push index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refused {
    code: DenialCode,
    /// [`NEVER`] for none (keeps the outcome small: it travels on every refused request).
    retry_after_nanos: u64,
    values: [u64; MAX_CELLS],
}

const NEVER: u64 = u64::MAX;

#[inline]
fn nanos_or_never(d: Option<Duration>) -> u64 {
    d.map_or(NEVER, |d| u64::try_from(d.as_nanos()).unwrap_or(NEVER - 1))
}

impl Refused {
    /// An outcome with these parts (for stores that evaluate a batch elsewhere).
    #[must_use]
    pub fn new(code: DenialCode, retry_after: Option<Duration>, values: [u64; MAX_CELLS]) -> Self {
        Self { code, retry_after_nanos: nanos_or_never(retry_after), values }
    }

    /// `rate_limited`, `concurrency_limited` or `quota_exceeded`.
    #[must_use]
    #[inline]
    pub const fn code(&self) -> DenialCode {
        self.code
    }

    /// How long until a retry can succeed as far as the refusing limits tell; `None` if unknown
    /// or never (a concurrency slot frees when another request ends; a request larger than a
    /// limit's burst never fits).
    #[must_use]
    #[inline]
    pub const fn retry_after(&self) -> Option<Duration> {
        if self.retry_after_nanos == NEVER { None } else { Some(Duration::from_nanos(self.retry_after_nanos)) }
    }

    /// The unchanged value of the cell pushed at `index` (0 past the batch's end).
    #[must_use]
    #[inline]
    pub fn value(&self, index: usize) -> u64 {
        self.values.get(index).copied().unwrap_or(0)
    }
}
