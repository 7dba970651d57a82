//! The limit stage: rate limits, concurrency caps, spend quotas and credits, the 429 decisions.
//!
//! ```text
//! verified key + policy passed
//!     ──► Limiter::check(record, LimitRequest { tokens, credits, spend estimate }, now)
//!           one all-or-nothing LimitBatch on the key's cells:
//!             requests  GCRA, cost 1                    429 rate_limited      (Retry-After)
//!             tokens    GCRA, cost = estimate           429 rate_limited      (Retry-After)
//!             concurrency  in flight < cap, one lease   429 concurrency_limited
//!             spend     spent + reserved < cap,         429 quota_exceeded    (Retry-After = period end)
//!                       reserve the estimate
//!             credits   used + cost <= budget, take     429 quota_exceeded
//!           store failure                               503 auth_unavailable  (fail closed)
//!     ──► Admission { x-ratelimit-* status, concurrency lease, what was taken }
//!     ──► (the request runs)
//!     ──► Admission::finish(Usage { tokens, spend_micros, credits }, now)
//!           settle each estimate to the real figure (give back or charge), release the lease
//!     or  drop: release the lease, the estimates stay taken
//! ```
//!
//! # The pure core (no `std`, no `alloc`)
//!
//! [`Gcra`] is governor's generic cell rate algorithm as pure functions of one number, the
//! theoretical arrival time (TAT), `now` and a cost: `check`, `charge`, `refund`, `status`. A
//! limit of `n` per minute has an emission interval of `60 s / n` and, by default, a burst of `n`
//! (governor's `Quota::per_minute`): an idle key may use its whole minute at once, then one unit
//! per interval. [`LimitOp`] adds the other kinds of cell (a concurrency counter, a capped
//! counter per window) and [`LimitBatch::evaluate`] applies up to [`MAX_CELLS`] operations to the
//! cells of one key all-or-nothing: if the tokens limit refuses, the requests limit is not taken.
//!
//! # Estimates: reserve, then settle
//!
//! A request takes its token *estimate* before it runs; [`Admission::finish`] gives back what it
//! did not use (never beyond a full burst: the TAT is floored at `now`) or charges what it used
//! beyond the estimate (the key may go into debt and is refused until it is paid off, as
//! OpenAI does).
//!
//! Spend works the same way, in integer micro-units: the caller estimates the request's cost
//! ([`LimitRequest::with_spend_estimate`]), and a key with a spend cap admits the request only
//! while its period's counter, spent plus reserved, is under the cap, and reserves the estimate
//! in the same atomic update ([`LimitOp::Reserve`]). However many requests run at once, on one
//! process or many, the counter passes the cap by less than one estimate; `finish` replaces the
//! reservation by the real spend ([`LimitOp::Settle`]), so the cap holds to within one request's estimate plus what
//! requests spent beyond their estimates (nothing, for an estimate that is an upper bound).
//! Credits are taken at admission and refused when they do not fit, so they are never passed;
//! `finish` settles them to the real cost if the request gives one ([`Usage::with_credits`]).
//! A request counts in the period it was admitted in: its reservation is taken and settled
//! there.
//!
//! `finish` consumes the admission, so usage cannot be counted twice. An admission dropped
//! unfinished (the request was cancelled, failed or panicked) releases its concurrency slot and
//! settles every estimate as used in full: the tokens stay charged, the spend reservation stays
//! recorded, the credits stay taken. A cancelled request may have done its work upstream, and
//! cancelling never buys more than the estimates allowed.
//!
//! # Concurrency leases
//!
//! Each admission of a key with a concurrency cap holds a *lease*, a number the limiter gives it
//! ([`LimitOp::Acquire`]), and gives it back when it ends ([`LimitOp::Release`]).
//! [`MemoryLimitStore`] only counts: in one process a release is never lost nor sent twice. A
//! shared store keeps one entry per lease with its own deadline, so a slot whose admission never
//! released it (its process died, or its call timed out after the store had taken the slot)
//! expires by itself while the key's other requests come and go, and a lease released twice (a
//! failed `finish` kept for replay, then the admission's own release) is released once.
//!
//! # State: the [`LimitStore`] trait
//!
//! All state is one `u64` per cell, keyed by (key id, [`CellId`]): a TAT in nanoseconds, a count
//! in flight, or an amount used in a window. Values are at most [`MAX_STATE`] (`i64::MAX`) and
//! `0` means absent, so a cell that was never written, or was evicted, behaves as fresh.
//! [`LimitStore::update`] is governor's closure-based `measure_and_replace` over several cells
//! of one key at once; [`LimitStore::apply`] (a batch) and [`LimitStore::apply_one`] (one
//! operation, the common case of a key with one rate limit) are provided on top of it and may be
//! overridden by a store that evaluates the operations itself. [`MemoryLimitStore`] (with `std`)
//! implements them with `AtomicU64` compare-and-swap loops, a key's cells side by side in a
//! sharded table, and evicts idle cells (a TAT in the past, a counter of an ended period, a
//! zero). [`DirectLimiter`] is one unkeyed limit in one `AtomicU64` (governor's
//! `RateLimiter::direct`).
//!
//! ## A shared backend (Redis)
//!
//! A Redis store can implement [`LimitStore::update`] with `WATCH`/`MULTI`/`EXEC` (read the
//! cells, run the closure, write iff unchanged), but the fast way is to override
//! [`LimitStore::apply`] (and [`LimitStore::apply_one`], the same script with N = 1) with one Lua
//! script that does what [`LimitBatch::evaluate`] and [`LimitOp::evaluate`] do, in one round
//! trip, returning the outcome as [`Applied::new`] / [`Refused::new`]:
//!
//! ```text
//! EVALSHA apply_batch  N  k1 .. kN   now_ns  op1 a1 b1 c1 .. opN aN bN cN
//!   key i  = "keygate:{<kid>}:<name>:<window>"   the {kid} hash tag keeps one key's cells in one
//!                                                cluster slot, so the script may touch them all
//!   op     = rate | rate_charge | rate_refund | acquire | release | quota | reserve | settle | record | unrecord
//!   a b c  = the op's integers (rate: t_ns, tau_ns, cost; quota: cap, amount, resets_at_ns; ...)
//! script: v_i = tonumber(GET k_i) or 0; evaluate every op on v_i exactly as LimitOp does;
//!         if any refuses: return {code, retry_after_ns, v_1 .. v_N}   -- nothing written
//!         else SET k_i new_i PXAT expiry_i (PERSIST when none); return {0, new_1 .. new_N}
//! ```
//!
//! Values fit Redis's signed 64-bit integers and Lua 5.1 numbers hold integers exactly up to
//! 2^53, so a script should do the TAT arithmetic relative to `now` (differences stay small) or
//! use Redis 7 functions with integer replies. Concurrency cells need leases there (one sorted
//! set member per lease, scored with its deadline), since a process that dies, or a call that
//! times out, cannot release its slot. An async
//! variant of the trait with the same methods (`update`, `apply`, `apply_one`, all returning the
//! same values) will serve async clients, with an async twin of [`Limiter::check`] building the
//! same batches.
//!
//! # Fail closed
//!
//! A store error refuses with `503 auth_unavailable`. [`Limiter::fail_open`] opts one limiter
//! into admitting instead, and every admission it makes that way says so
//! ([`Admission::is_fail_open`]).
//!
//! # Headers
//!
//! Admissions and `rate_limited` denials carry a [`RateLimitStatus`] whose
//! [`headers`](RateLimitStatus::headers) are the `x-ratelimit-*` pairs OpenAI clients read; see
//! [`OpenAiDuration`] for the reset format.

#[cfg(feature = "alloc")]
mod async_store;
mod batch;
#[cfg(feature = "std")]
mod direct;
mod gcra;
#[cfg(feature = "alloc")]
mod limiter;
#[cfg(feature = "std")]
mod memory;
mod op;
#[cfg(feature = "alloc")]
mod quota;
#[cfg(feature = "redis")]
mod redis;
mod state;
mod status;

#[cfg(feature = "alloc")]
pub use async_store::AsyncLimitStore;
pub use batch::{Applied, LimitBatch, Refused};
#[cfg(feature = "std")]
pub use direct::DirectLimiter;
pub use gcra::{Gcra, LimitStatus, MAX_STATE, NotUntil};
#[cfg(feature = "alloc")]
pub(crate) use limiter::StoreRef;
#[cfg(feature = "alloc")]
pub use limiter::{Admission, Finished, LimitRequest, Limiter, Usage};
#[cfg(feature = "std")]
pub use memory::MemoryLimitStore;
pub use op::{CellId, CellState, LimitName, LimitOp, MAX_CELLS};
#[cfg(feature = "redis")]
pub use redis::{RedisConfig, RedisLimitStore};
pub use state::{LimitError, LimitStore};
pub use status::{InlineHeaderValue, OpenAiDuration, RateLimitHeaders, RateLimitStatus};
