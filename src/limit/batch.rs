//! A batch of limit operations on the cells of one key, applied all-or-nothing, and its
//! outcome ([`Applied`] or [`Refused`]).

use core::time::Duration;

use super::op::{CellId, CellState, LimitName, LimitOp, MAX_CELLS, MAX_NAME_LEN, Refusal};
use super::{Gcra, LimitError, LimitStatus};
use crate::{DenialCode, Timestamp};

/// Up to [`MAX_CELLS`] updates of distinct cells of one key, applied all-or-nothing.
///
/// ```
/// use keygate::Timestamp;
/// use keygate::limit::{CellId, CellState, Gcra, LimitBatch, LimitName, LimitOp};
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
/// # Ok::<(), keygate::limit::LimitError>(())
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
    pub(super) code: DenialCode,
    /// [`NEVER`] for none (keeps the outcome small: it travels on every refused request).
    pub(super) retry_after_nanos: u64,
    pub(super) values: [u64; MAX_CELLS],
}

const NEVER: u64 = u64::MAX;

#[inline]
pub(super) fn nanos_or_never(d: Option<Duration>) -> u64 {
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
