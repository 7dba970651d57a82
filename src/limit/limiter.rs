//! The limit stage over a key's record: admit or refuse, then reconcile (needs `alloc`).

#![cfg(feature = "alloc")]

use core::fmt;

use super::{CellId, Gcra, LimitBatch, LimitError, LimitName, LimitOp, LimitStore, RateLimitStatus, Refused};
use crate::record::{Credits, SpendCap};
use crate::{Denial, DenialCode, KeyId, KeyRecord, Timestamp};

/// What a request asks of its key's limits before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct LimitRequest {
    /// The token estimate taken from the tokens-per-minute limit now and reconciled with the real
    /// usage in [`Admission::finish`] (for a chat completion: prompt tokens plus `max_tokens`).
    pub tokens: u32,
    /// Credits this request costs (Unkey's `cost`), taken now; 1 unless set.
    pub credits: u32,
}

impl Default for LimitRequest {
    fn default() -> Self {
        Self::new()
    }
}

impl LimitRequest {
    /// One request estimating no tokens and costing one credit.
    #[must_use]
    pub const fn new() -> Self {
        Self { tokens: 0, credits: 1 }
    }

    /// The same request with a token estimate.
    #[must_use]
    pub const fn with_tokens(mut self, tokens: u32) -> Self {
        self.tokens = tokens;
        self
    }

    /// The same request with a credit cost.
    #[must_use]
    pub const fn with_credits(mut self, credits: u32) -> Self {
        self.credits = credits;
        self
    }
}

/// What a request actually used, known after it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub struct Usage {
    /// Tokens used (for a chat completion: `usage.total_tokens`).
    pub tokens: u32,
    /// Money spent, in micro-units of currency (1 USD = 1 000 000).
    pub spend_micros: u64,
}

impl Usage {
    /// `tokens` used and `spend_micros` spent.
    #[must_use]
    pub const fn new(tokens: u32, spend_micros: u64) -> Self {
        Self { tokens, spend_micros }
    }
}

/// The limit stage: a key's rate limits, concurrency cap, spend cap and credits, checked against
/// a [`LimitStore`] all-or-nothing.
///
/// Fails closed: if the store fails, [`check`](Self::check) refuses with `503 auth_unavailable`,
/// unless this limiter was built with [`fail_open`](Self::fail_open), in which case it admits
/// and says so ([`Admission::is_fail_open`]).
///
/// ```
/// use keygate::{KeyKind, Limiter, LimitRequest, MemoryLimitStore, OsRng, Pepper, PepperId, Peppers,
///               SelectorFormat, Timestamp, Usage, Verifier, DenialCode};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let verifier = Verifier::new(SelectorFormat::new("aistats")?, Peppers::new(Pepper::new(PepperId(1), &[7; 32])?));
/// let now = Timestamp::from_unix_secs(1_800_000_000);
/// let (_key, mut record) = verifier.issue(&mut OsRng, KeyKind::STANDARD, now)?;
/// record.rate_limit.requests_per_minute = Some(2);
/// record.rate_limit.tokens_per_minute = Some(10_000);
///
/// let limiter = Limiter::new(MemoryLimitStore::new());
/// let admitted = limiter.check(&record, LimitRequest::new().with_tokens(4_000), now)?;
/// let headers: Vec<_> = admitted.rate_limit().unwrap().headers().map(|(n, v)| format!("{n}: {v}")).collect();
/// assert_eq!(headers[1], "x-ratelimit-remaining-requests: 1");
/// assert_eq!(headers[4], "x-ratelimit-remaining-tokens: 6000");
/// // The request used fewer tokens than estimated: the difference goes back.
/// admitted.finish(Usage::new(1_000, 0), now)?;
///
/// limiter.check(&record, LimitRequest::new(), now)?.finish(Usage::default(), now)?;
/// let refused = limiter.check(&record, LimitRequest::new(), now).unwrap_err();
/// assert_eq!(refused.code(), DenialCode::RateLimited);
/// assert_eq!(refused.retry_after_secs(), Some(30));
/// # Ok(()) }
/// ```
pub struct Limiter<S> {
    store: S,
    fail_open: bool,
}

impl<S: LimitStore> Limiter<S> {
    /// A limiter over `store` that fails closed.
    #[must_use]
    pub const fn new(store: S) -> Self {
        Self { store, fail_open: false }
    }

    /// The same limiter, but admitting requests when the store fails (the admission says so).
    /// Only for limits that protect nothing critical: a broken backend then means no limits.
    #[must_use]
    pub const fn fail_open(mut self) -> Self {
        self.fail_open = true;
        self
    }

    /// Whether this limiter admits requests when its store fails.
    #[must_use]
    pub const fn is_fail_open(&self) -> bool {
        self.fail_open
    }

    /// The store.
    #[must_use]
    pub const fn store(&self) -> &S {
        &self.store
    }

    /// Checks a verified key's limits for one request at `now`, taking what it asks for from
    /// every limit or from none.
    ///
    /// Call it only after every earlier stage (verification, policy) has passed. The limits
    /// checked are those of `record`: requests per minute (cost 1), tokens per minute (cost
    /// `request.tokens`), the concurrency cap, the spend cap of the current period (refused at or
    /// over the cap; spend is recorded by [`Admission::finish`]) and credits (`request.credits`).
    /// A key without limits costs no store access.
    ///
    /// # Errors
    ///
    /// A [`Denial`]: `429 rate_limited` (with `Retry-After` and the `x-ratelimit-*` status),
    /// `429 concurrency_limited`, `429 quota_exceeded` (with `Retry-After` until the period
    /// resets), or `503 auth_unavailable` if the store failed and the limiter fails closed.
    pub fn check(&self, record: &KeyRecord, request: LimitRequest, now: Timestamp) -> Result<Admission<'_, S>, Denial> {
        self.admit(StoreRef::Borrowed(&self.store), record, request, now)
    }

    /// [`Limiter::check`], with an admission that owns a clone of the store handle instead of
    /// borrowing the limiter: for a server whose response body (a stream, say) outlives the
    /// handler and must hold the concurrency permit to its end. With a store shared as
    /// `Arc<…>`, the clone is a reference-count increment.
    ///
    /// # Errors
    ///
    /// As [`Limiter::check`].
    pub fn check_owned(
        &self,
        record: &KeyRecord,
        request: LimitRequest,
        now: Timestamp,
    ) -> Result<Admission<'static, S>, Denial>
    where
        S: Clone + 'static,
    {
        self.admit(StoreRef::Owned(self.store.clone()), record, request, now)
    }

    fn admit<'a>(
        &self,
        store: StoreRef<'a, S>,
        record: &KeyRecord,
        request: LimitRequest,
        now: Timestamp,
    ) -> Result<Admission<'a, S>, Denial> {
        let limits = &record.rate_limit;
        let requests = limits.requests_per_minute.map(Gcra::per_minute);
        let tokens = limits.tokens_per_minute.map(Gcra::per_minute);
        let rate_only = limits.concurrency.is_none() && record.spend_cap.is_none() && record.credits.is_none();
        let single = match (requests, tokens) {
            (None, None) if rate_only => Some(None),
            (Some(gcra), None) if rate_only => Some(Some((LimitName::REQUESTS, gcra, 1))),
            (None, Some(gcra)) if rate_only => Some(Some((LimitName::TOKENS, gcra, request.tokens))),
            _ => None,
        };
        let outcome = match single {
            // No limits: no store access.
            Some(None) => Ok(Ok([0, 0])),
            // One rate limit (the common case): the store's single-cell path, no batch.
            Some(Some((name, gcra, cost))) => {
                match self.store.apply_one(&record.id, CellId::new(name), LimitOp::Rate { gcra, cost }, now) {
                    Ok(Ok(value)) => Ok(Ok([value, value])),
                    Ok(Err(refused)) => Ok(Err(refused)),
                    Err(e) => Err(e),
                }
            }
            None => {
                let mut batch = LimitBatch::new();
                if Plan::fill(&mut batch, record, request, now, (requests, tokens)).is_err() {
                    return Err(Denial::new(DenialCode::AuthUnavailable));
                }
                let plan = Plan::of(record);
                self.store.apply(&record.id, &batch, now).map(|r| {
                    r.map(|applied| {
                        let value = |i: Option<usize>| i.map_or(0, |i| applied.value(i));
                        [value(plan.requests), value(plan.tokens)]
                    })
                })
            }
        };
        let ([requests_tat, tokens_tat], fail_open) = match outcome {
            Ok(Ok(values)) => (values, false),
            Ok(Err(refused)) => return Err(refusal(record, now, &refused)),
            Err(_) if self.fail_open => ([0, 0], true),
            Err(_) => return Err(Denial::new(DenialCode::AuthUnavailable)),
        };
        Ok(Admission {
            store,
            key: record.id,
            now,
            requests: requests.map(|gcra| Rate { gcra, tat: requests_tat }),
            tokens: tokens.map(|gcra| Rate { gcra, tat: tokens_tat }),
            // Failed open, nothing was taken: the tokens are charged in full when the usage is known.
            estimate: if fail_open { 0 } else { request.tokens },
            spend: record.spend_cap,
            fail_open,
            holds_permit: !fail_open && limits.concurrency.is_some(),
        })
    }
}

/// The denial for a refused request, with the rate limits' status as they stand.
#[cold]
fn refusal(record: &KeyRecord, now: Timestamp, refused: &Refused) -> Denial {
    let mut denial = Denial::new(refused.code());
    if let Some(after) = refused.retry_after() {
        denial = denial.with_retry_after(after);
    }
    let plan = Plan::of(record);
    let status =
        |limit: Option<u32>, index: Option<usize>| Some(Gcra::per_minute(limit?).status(refused.value(index?), now));
    let status = RateLimitStatus::new(
        status(record.rate_limit.requests_per_minute, plan.requests),
        status(record.rate_limit.tokens_per_minute, plan.tokens),
    );
    if !status.is_empty() {
        denial = denial.with_rate_limit(status);
    }
    denial
}

impl<S> fmt::Debug for Limiter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter").field("fail_open", &self.fail_open).finish_non_exhaustive()
    }
}

/// Where a record's rate limits go in its batch (pushed first, in this order).
struct Plan {
    requests: Option<usize>,
    tokens: Option<usize>,
}

impl Plan {
    fn of(record: &KeyRecord) -> Self {
        let limits = &record.rate_limit;
        let requests = limits.requests_per_minute.map(|_| 0);
        let tokens = limits.tokens_per_minute.map(|_| usize::from(requests.is_some()));
        Self { requests, tokens }
    }

    /// Pushes the record's limits for `request` into `batch`, in the order of [`Plan::of`];
    /// `rates` are the requests and tokens limits' parameters, computed from the record.
    fn fill(
        batch: &mut LimitBatch,
        record: &KeyRecord,
        request: LimitRequest,
        now: Timestamp,
        rates: (Option<Gcra>, Option<Gcra>),
    ) -> Result<(), LimitError> {
        let limits = &record.rate_limit;
        if let Some(gcra) = rates.0 {
            batch.push(CellId::new(LimitName::REQUESTS), LimitOp::Rate { gcra, cost: 1 })?;
        }
        if let Some(gcra) = rates.1 {
            batch.push(CellId::new(LimitName::TOKENS), LimitOp::Rate { gcra, cost: request.tokens })?;
        }
        if let Some(cap) = limits.concurrency {
            batch.push(CellId::new(LimitName::CONCURRENCY), LimitOp::Acquire { cap })?;
        }
        if let Some(SpendCap { amount_micros, period }) = record.spend_cap {
            let (start, end) = period.bounds(now);
            let op = LimitOp::Quota { cap: amount_micros, amount: 0, resets_at: Some(end) };
            batch.push(CellId::for_period(LimitName::SPEND, start), op)?;
        }
        if let Some(credits) = record.credits {
            let (cell, resets_at) = credits_cell(credits, now);
            let op = LimitOp::Quota { cap: credits.amount, amount: u64::from(request.credits), resets_at };
            batch.push(cell, op)?;
        }
        Ok(())
    }
}

fn credits_cell(credits: Credits, now: Timestamp) -> (CellId, Option<Timestamp>) {
    match credits.refill {
        Some(period) => {
            let (start, end) = period.bounds(now);
            (CellId::for_period(LimitName::CREDITS, start), Some(end))
        }
        None => (CellId::new(LimitName::CREDITS), None),
    }
}

/// An admitted request: its rate-limit status for the response headers, its concurrency permit,
/// and what to reconcile when it ends.
///
/// The admission is the request's RAII concurrency permit: its slot is released when the
/// admission ends. Call [`finish`](Self::finish) with the real usage when the request ends.
/// Dropping an admission without finishing (the request failed, its future was cancelled, it
/// panicked) releases the slot, keeps the token estimate charged and records no spend.
///
/// From [`Limiter::check`] it borrows the limiter's store (no reference counting on the hot
/// path); from [`Limiter::check_owned`] it owns a clone of the store handle and is `'static`.
#[must_use]
pub struct Admission<'a, S: LimitStore> {
    store: StoreRef<'a, S>,
    key: KeyId,
    now: Timestamp,
    requests: Option<Rate>,
    tokens: Option<Rate>,
    /// The token estimate taken (0 when the limiter failed open: nothing was taken).
    estimate: u32,
    spend: Option<SpendCap>,
    fail_open: bool,
    holds_permit: bool,
}

/// How an admission reaches the store it must update when it ends.
enum StoreRef<'a, S> {
    Borrowed(&'a S),
    Owned(S),
}

impl<S> core::ops::Deref for StoreRef<'_, S> {
    type Target = S;
    fn deref(&self) -> &S {
        match self {
            Self::Borrowed(s) => s,
            Self::Owned(s) => s,
        }
    }
}

/// A rate limit of the key and its state after the request was counted (unknown, 0, when the
/// limiter failed open).
#[derive(Debug, Clone, Copy)]
struct Rate {
    gcra: Gcra,
    tat: u64,
}

impl<S: LimitStore> Admission<'_, S> {
    /// The `x-ratelimit-*` status after this request was counted (`None` if the key has no
    /// requests or tokens limit, or the limiter failed open). Computed when asked for.
    #[must_use]
    pub fn rate_limit(&self) -> Option<RateLimitStatus> {
        if self.fail_open {
            return None;
        }
        let status = |r: Option<Rate>| r.map(|r| r.gcra.status(r.tat, self.now));
        let status = RateLimitStatus::new(status(self.requests), status(self.tokens));
        (!status.is_empty()).then_some(status)
    }

    /// Whether the store failed and the request was admitted unchecked, because the limiter was
    /// built with [`Limiter::fail_open`].
    #[must_use]
    pub const fn is_fail_open(&self) -> bool {
        self.fail_open
    }

    /// The key the request was admitted for.
    #[must_use]
    pub const fn key_id(&self) -> KeyId {
        self.key
    }

    /// Whether the request holds a concurrency slot (released when the admission ends).
    #[must_use]
    pub const fn holds_permit(&self) -> bool {
        self.holds_permit
    }

    /// Reconciles the request's real usage at `now` and releases its concurrency slot, in one
    /// store update: unused estimated tokens go back (never below a full burst), tokens beyond the
    /// estimate are charged (the key may go into debt, refusing later requests until it is paid
    /// off), and the spend is added to the current period's counter. Consuming the admission
    /// makes double counting impossible:
    ///
    /// ```compile_fail
    /// # use keygate::{Admission, MemoryLimitStore, Timestamp, Usage};
    /// fn twice(admission: Admission<'_, MemoryLimitStore>, now: Timestamp) {
    ///     let _ = admission.finish(Usage::new(10, 0), now);
    ///     let _ = admission.finish(Usage::new(10, 0), now); // use of moved value
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A [`LimitError`] if the store fails; nothing is recorded then, and the concurrency slot is
    /// released by a separate update.
    pub fn finish(mut self, usage: Usage, now: Timestamp) -> Result<Finished, LimitError> {
        let mut batch = LimitBatch::new();
        let mut spend_at = None;
        if let Some(Rate { gcra, .. }) = self.tokens {
            let (used, estimate) = (u64::from(usage.tokens), u64::from(self.estimate));
            let cell = CellId::new(LimitName::TOKENS);
            if used > estimate {
                batch.push(cell, LimitOp::RateCharge { gcra, units: used - estimate })?;
            } else if used < estimate {
                batch.push(cell, LimitOp::RateRefund { gcra, units: estimate - used })?;
            }
        }
        if let Some(cap) = self.spend
            && usage.spend_micros > 0
        {
            let (start, end) = cap.period.bounds(now);
            let op = LimitOp::Record { amount: usage.spend_micros, resets_at: Some(end) };
            spend_at = Some(batch.len());
            batch.push(CellId::for_period(LimitName::SPEND, start), op)?;
        }
        if self.holds_permit {
            batch.push(CellId::new(LimitName::CONCURRENCY), LimitOp::Release)?;
        }
        if batch.is_empty() {
            return Ok(Finished { period_spend: None });
        }
        // These updates only add or give back: they are never refused.
        let applied = self.store.apply(&self.key, &batch, now)?.map_err(|_| LimitError::Corrupt)?;
        self.holds_permit = false;
        Ok(Finished { period_spend: spend_at.map(|i| applied.value(i)) })
    }
}

/// What [`Admission::finish`] recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Finished {
    /// The key's spend in the current period after this request's spend was added, read from
    /// the same atomic update (so across instances exactly one request crosses any amount), or
    /// `None` if the key has no spend cap or the request spent nothing.
    pub period_spend: Option<u64>,
}

/// The concurrency slot is released when the admission ends: finished, dropped because the
/// request's future was cancelled, or unwound by a panic.
impl<S: LimitStore> Drop for Admission<'_, S> {
    fn drop(&mut self) {
        if self.holds_permit {
            release(&*self.store, &self.key, self.now);
        }
    }
}

/// Gives back one concurrency slot. A store that fails here leaks the slot until the cell
/// expires: a shared backend must give concurrency cells a lease (see the module docs).
#[cold]
fn release<S: LimitStore>(store: &S, key: &KeyId, now: Timestamp) {
    let mut batch = LimitBatch::new();
    if batch.push(CellId::new(LimitName::CONCURRENCY), LimitOp::Release).is_ok() {
        let _ = store.apply(key, &batch, now);
    }
}

impl<S: LimitStore> fmt::Debug for Admission<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("key", &self.key)
            .field("rate_limit", &self.rate_limit())
            .field("fail_open", &self.fail_open)
            .field("holds_permit", &self.holds_permit)
            .finish_non_exhaustive()
    }
}
