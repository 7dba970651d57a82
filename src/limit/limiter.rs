//! The limit stage over a key's record: admit or refuse, then reconcile (needs `alloc`).

#![cfg(feature = "alloc")]

use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::{
    AsyncLimitStore, CellId, Gcra, LimitBatch, LimitError, LimitName, LimitOp, LimitStore, RateLimitStatus, Refused,
};
use crate::record::{Credits, SpendCap};
use crate::{Denial, DenialCode, KeyId, KeyRecord, Timestamp};

/// What a request asks of its key's limits before it runs: estimates, taken now and settled
/// with the real [`Usage`] in [`Admission::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct LimitRequest {
    /// The token estimate taken from the tokens-per-minute limit now and reconciled with the real
    /// usage in [`Admission::finish`] (for a chat completion: prompt tokens plus `max_tokens`).
    pub tokens: u32,
    /// Credits this request costs (Unkey's `cost`), taken now; 1 unless set. A request whose
    /// real cost differs says so with [`Usage::with_credits`].
    pub credits: u32,
    /// The estimated cost in micro-units of currency, reserved from the key's spend cap now and
    /// settled to the real [`Usage::spend_micros`] in [`Admission::finish`]; 0 unless set. For a
    /// chat completion: the model's price of the prompt plus `max_tokens`, rounded up.
    pub spend_micros: u64,
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
        Self { tokens: 0, credits: 1, spend_micros: 0 }
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

    /// The same request with a spend estimate in micro-units of currency (1 USD = 1 000 000).
    ///
    /// A key with a spend cap admits a request only while its period's counter, which holds
    /// what finished requests spent plus the estimates of those in flight, is under the cap,
    /// and reserves the estimate there before the request runs. However many requests run at
    /// once, the cap is passed by less than one request's estimate, plus whatever requests
    /// spend beyond their estimates: an estimate that is an upper bound (price times the most
    /// tokens the request may use, rounded up) makes the cap hold to within one request.
    ///
    /// ```
    /// use keygate::{DenialCode, LimitRequest, MemoryLimitStore, SpendCap, SpendPeriod, Timestamp, Usage};
    /// use keygate::limit::Limiter;
    /// # use keygate::{KeyId, KeyKind, KeyRecord};
    /// # use keygate::record::KeyShape;
    /// # use keygate::secret::StoredDigest;
    /// # let now = Timestamp::from_unix_secs(1_800_000_000);
    /// # let mut record = KeyRecord::new(KeyId::new("4f9TqWm2Lx8RbC1d").unwrap(), KeyShape::Selector,
    /// #     KeyKind::STANDARD, StoredDigest::sha256_of(b"x"), now);
    /// record.spend_cap = Some(SpendCap { amount_micros: 100, period: SpendPeriod::Day });
    /// let limiter = Limiter::new(MemoryLimitStore::new());
    /// let request = LimitRequest::new().with_spend_estimate(60);
    /// let first = limiter.check(&record, request, now).unwrap();
    /// let second = limiter.check(&record, request, now).unwrap(); // 60 reserved: under the cap
    /// // 120 reserved: nobody else starts until a request settles under the cap.
    /// assert_eq!(limiter.check(&record, request, now).unwrap_err().code(), DenialCode::QuotaExceeded);
    /// // The first cost 10 of its 60: 50 go back.
    /// assert_eq!(first.finish(Usage::new(0, 10), now).unwrap().period_spend, Some(70));
    /// assert!(limiter.check(&record, request, now).is_ok());
    /// # drop(second);
    /// ```
    #[must_use]
    pub const fn with_spend_estimate(mut self, micros: u64) -> Self {
        self.spend_micros = micros;
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
    /// Credits the request really cost, if not the cost it was admitted with
    /// ([`LimitRequest::credits`]); `None` keeps that cost.
    pub credits: Option<u32>,
}

impl Usage {
    /// `tokens` used and `spend_micros` spent.
    #[must_use]
    pub const fn new(tokens: u32, spend_micros: u64) -> Self {
        Self { tokens, spend_micros, credits: None }
    }

    /// The same usage with the credits the request really cost: the difference from the cost it
    /// was admitted with goes back to the key's credits, or is taken from them.
    #[must_use]
    pub const fn with_credits(mut self, credits: u32) -> Self {
        self.credits = Some(credits);
        self
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
/// use keygate::{DenialCode, KeyKind, LimitRequest, MemoryLimitStore, OsRng, Pepper, Timestamp, Usage, Verifier};
/// use keygate::limit::Limiter;
/// use keygate::format::SelectorFormat;
/// use keygate::secret::{PepperId, Peppers};
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

impl<S> Limiter<S> {
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
}

/// The limit stage, written once and expanded in [`Limiter::take_now`] over a [`LimitStore`]
/// (no `await`) and in [`Limiter::take`] over an [`AsyncLimitStore`] (each store call followed
/// by `.await`): the record's limits for `request` as one batch (or one cell), applied through
/// `store`. Expanded rather than an `async fn` resolved at once, whose state and output moves
/// cost the synchronous hot path measurably (`benches/authenticate.rs`).
macro_rules! limit_stage {
    ($self:ident, $store:ident, $record:ident, $request:ident, $now:ident, $Store:ident $(, $await:tt)?) => {{
        let (store, record, request, now) = ($store, $record, $request, $now);
        let limits = &record.rate_limit;
        let requests = limits.requests_per_minute.map(Gcra::per_minute);
        let tokens = limits.tokens_per_minute.map(Gcra::per_minute);
        let rate_only = limits.concurrency.is_none() && record.spend_cap.is_none() && record.credits.is_none();
        let lease = (!rate_only).then(next_lease);
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
                let op = LimitOp::Rate { gcra, cost };
                match $Store::apply_one(&*store, &record.budget_id(), CellId::new(name), op, now)$(.$await)? {
                    Ok(Ok(value)) => Ok(Ok([value, value])),
                    Ok(Err(refused)) => Ok(Err(refused)),
                    Err(e) => Err(e),
                }
            }
            None => {
                let mut batch = LimitBatch::new();
                if Plan::fill(&mut batch, record, request, now, (requests, tokens), lease).is_err() {
                    return Err(Denial::new(DenialCode::AuthUnavailable));
                }
                let plan = Plan::of(record);
                $Store::apply(&*store, &record.budget_id(), &batch, now)$(.$await)?.map(|r| {
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
            Err(_) if $self.fail_open => ([0, 0], true),
            Err(_) => return Err(Denial::new(DenialCode::AuthUnavailable)),
        };
        // Failed open, nothing was taken: the usage is charged in full when it is known.
        let taken = |estimate: u64| if fail_open { 0 } else { estimate };
        Ok(Admission {
            store,
            key: record.budget_id(),
            now,
            requests: requests.map(|gcra| Rate { gcra, tat: requests_tat }),
            tokens: tokens.map(|gcra| Rate { gcra, tat: tokens_tat }),
            estimate: if fail_open { 0 } else { request.tokens },
            spend: record.spend_cap,
            spend_reserved: taken(request.spend_micros),
            credits: record.credits,
            credits_cost: request.credits,
            credits_taken: taken(u64::from(request.credits)),
            fail_open,
            lease: if fail_open { None } else { lease },
            permit: record.rate_limit.concurrency.is_some(),
        })
    }};
}

impl<S: LimitStore> Limiter<S> {
    /// Checks a verified key's limits for one request at `now`, taking what it asks for from
    /// every limit or from none.
    ///
    /// Call it only after every earlier stage (verification, policy) has passed. The limits
    /// checked are those of `record`: requests per minute (cost 1), tokens per minute (cost
    /// `request.tokens`), the concurrency cap, the spend cap of the current period (refused at or
    /// over the cap, otherwise `request.spend_micros` is reserved; see
    /// [`LimitRequest::with_spend_estimate`]) and credits (`request.credits`, refused when they
    /// do not fit). [`Admission::finish`] settles each estimate to the real usage. A key without
    /// limits costs no store access. The same code as [`Limiter::check_async`], without
    /// `.await`, over a synchronous store.
    ///
    /// # Errors
    ///
    /// A [`Denial`]: `429 rate_limited` (with `Retry-After` and the `x-ratelimit-*` status),
    /// `429 concurrency_limited`, `429 quota_exceeded` (with `Retry-After` until the period
    /// resets), or `503 auth_unavailable` if the store failed and the limiter fails closed.
    #[inline]
    pub fn check(&self, record: &KeyRecord, request: LimitRequest, now: Timestamp) -> Result<Admission<'_, S>, Denial> {
        self.take_now(StoreRef::Borrowed(&self.store), record, request, now)
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
        self.take_now(StoreRef::Owned(self.store.clone()), record, request, now)
    }

    /// The limit stage over a synchronous store (see [`limit_stage`]).
    #[inline]
    pub(crate) fn take_now<'a>(
        &self,
        store: StoreRef<'a, S>,
        record: &KeyRecord,
        request: LimitRequest,
        now: Timestamp,
    ) -> Result<Admission<'a, S>, Denial> {
        limit_stage!(self, store, record, request, now, LimitStore)
    }
}

impl<S: AsyncLimitStore> Limiter<S> {
    /// [`Limiter::check`] over any store (every [`LimitStore`] is an [`AsyncLimitStore`]),
    /// awaiting the store: the admission owns a clone of the store handle, so it is `'static`.
    ///
    /// # Errors
    ///
    /// As [`Limiter::check`].
    pub async fn check_async(
        &self,
        record: &KeyRecord,
        request: LimitRequest,
        now: Timestamp,
    ) -> Result<Admission<'static, S>, Denial>
    where
        S: Clone + 'static,
    {
        self.take(StoreRef::Owned(self.store.clone()), record, request, now).await
    }

    /// The limit stage over any store (see [`limit_stage`]).
    #[inline]
    pub(crate) async fn take<'a>(
        &self,
        store: StoreRef<'a, S>,
        record: &KeyRecord,
        request: LimitRequest,
        now: Timestamp,
    ) -> Result<Admission<'a, S>, Denial> {
        limit_stage!(self, store, record, request, now, AsyncLimitStore, await)
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
    /// `rates` are the requests and tokens limits' parameters, computed from the record, and
    /// `lease` the admission's lease: every admission of a key with a concurrency cap, a spend
    /// cap or credits holds one on the concurrency cell (uncapped without a concurrency cap),
    /// which a shared store uses to apply the admission's settlement exactly once.
    fn fill(
        batch: &mut LimitBatch,
        record: &KeyRecord,
        request: LimitRequest,
        now: Timestamp,
        rates: (Option<Gcra>, Option<Gcra>),
        lease: Option<u64>,
    ) -> Result<(), LimitError> {
        let limits = &record.rate_limit;
        if let Some(gcra) = rates.0 {
            batch.push(CellId::new(LimitName::REQUESTS), LimitOp::Rate { gcra, cost: 1 })?;
        }
        if let Some(gcra) = rates.1 {
            batch.push(CellId::new(LimitName::TOKENS), LimitOp::Rate { gcra, cost: request.tokens })?;
        }
        if let Some(lease) = lease {
            let cap = limits.concurrency.unwrap_or(u32::MAX);
            batch.push(CellId::new(LimitName::CONCURRENCY), LimitOp::Acquire { cap, lease })?;
        }
        if let Some(cap) = record.spend_cap {
            let (cell, resets_at) = spend_cell(cap, now);
            let op = LimitOp::Reserve { cap: cap.amount_micros, amount: request.spend_micros, resets_at };
            batch.push(cell, op)?;
        }
        if let Some(credits) = record.credits {
            let (cell, resets_at) = credits_cell(credits, now);
            let op = LimitOp::Quota { cap: credits.amount, amount: u64::from(request.credits), resets_at };
            batch.push(cell, op)?;
        }
        Ok(())
    }
}

/// The spend counter of the period containing `now`, and the period's end.
fn spend_cell(cap: SpendCap, now: Timestamp) -> (CellId, Option<Timestamp>) {
    let (start, end) = cap.period.bounds(now);
    (CellId::for_period(LimitName::SPEND, start), Some(end))
}

/// The credits counter for `now` (of its refill period, if any), and when it resets.
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
/// and the estimates to settle when it ends.
///
/// The admission is the request's RAII concurrency permit: its slot is released when the
/// admission ends. Call [`finish`](Self::finish) with the real usage when the request ends: it
/// settles every estimate taken at admission (tokens, spend, credits) to the real figure.
/// Dropping an admission without finishing (the request failed, its future was cancelled, it
/// panicked) releases the slot and settles every estimate as used in full: the token estimate
/// stays charged, the spend reservation stays recorded as spent, the credits stay taken. A
/// cancelled request may have done its work upstream, and cancelling cannot buy more than the
/// estimates allowed.
///
/// From [`Limiter::check`] it borrows the limiter's store (no reference counting on the hot
/// path); from [`Limiter::check_owned`] it owns a clone of the store handle and is `'static`.
#[must_use]
pub struct Admission<'a, S: AsyncLimitStore> {
    store: StoreRef<'a, S>,
    key: KeyId,
    now: Timestamp,
    requests: Option<Rate>,
    tokens: Option<Rate>,
    /// The token estimate taken (0 when the limiter failed open: nothing was taken).
    estimate: u32,
    spend: Option<SpendCap>,
    /// The spend estimate reserved in the admission's period (0 when failed open).
    spend_reserved: u64,
    credits: Option<Credits>,
    /// The credit cost the request was admitted with, and what was taken (0 when failed open).
    credits_cost: u32,
    credits_taken: u64,
    fail_open: bool,
    /// The lease held on the concurrency cell, released when the admission ends.
    lease: Option<u64>,
    /// Whether the lease holds a slot under a concurrency cap.
    permit: bool,
}

/// Numbers admissions' concurrency leases, unique in the process (several limiters may share a
/// store; a shared store makes them unique across processes, as `RedisLimitStore` does with
/// its instance id). Wraps after `usize::MAX` admissions, long after any lease ended.
static NEXT_LEASE: AtomicUsize = AtomicUsize::new(1);

#[inline]
fn next_lease() -> u64 {
    NEXT_LEASE.fetch_add(1, Ordering::Relaxed) as u64
}

/// The operation that settles a counter from what was `taken` at admission to what was `used`.
const fn settle(taken: u64, used: u64, resets_at: Option<Timestamp>) -> LimitOp {
    LimitOp::Settle { reserved: taken, used, resets_at }
}

/// How an admission reaches the store it must update when it ends.
pub(crate) enum StoreRef<'a, S> {
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

impl<S: AsyncLimitStore> Admission<'_, S> {
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
        self.permit && self.lease.is_some()
    }

    /// Settles the request's estimates to its real usage at `now` and releases its concurrency
    /// slot, in one store update: unused estimated tokens go back (never below a full burst),
    /// tokens beyond the estimate are charged (the key may go into debt, refusing later requests
    /// until it is paid off); the spend reservation is replaced by the real spend (the
    /// difference goes back, or the excess is added), and the credits taken by the real credit
    /// cost ([`Usage::credits`], if given). Spend and credits settle in the counters they were
    /// taken from: a request counts in the period it was admitted in. Consuming the admission
    /// makes double counting impossible:
    ///
    /// ```compile_fail
    /// # use keygate::{MemoryLimitStore, Timestamp, Usage};
    /// # use keygate::limit::Admission;
    /// fn twice(admission: Admission<'_, MemoryLimitStore>, now: Timestamp) {
    ///     let _ = admission.finish(Usage::new(10, 0), now);
    ///     let _ = admission.finish(Usage::new(10, 0), now); // use of moved value
    /// }
    /// ```
    ///
    /// The settlement goes through [`AsyncLimitStore::settle`]: a local store applies it now, a
    /// shared one may queue it (then [`Finished::period_spend`] is `None`).
    ///
    /// # Errors
    ///
    /// A [`LimitError`] if the store fails or cannot take the settlement. Nothing is recorded
    /// then, and the concurrency slot is released by a separate update.
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
            && (usage.spend_micros > 0 || self.spend_reserved > 0)
        {
            // In the period of the reservation; an exact settlement also reads the counter.
            let (cell, resets_at) = spend_cell(cap, self.now);
            spend_at = Some(batch.push(cell, settle(self.spend_reserved, usage.spend_micros, resets_at))?);
        }
        if let Some(credits) = self.credits {
            let used = u64::from(usage.credits.unwrap_or(self.credits_cost));
            if used != self.credits_taken {
                let (cell, resets_at) = credits_cell(credits, self.now);
                batch.push(cell, settle(self.credits_taken, used, resets_at))?;
            }
        }
        if let Some(lease) = self.lease {
            batch.push(CellId::new(LimitName::CONCURRENCY), LimitOp::Release { lease })?;
        }
        if batch.is_empty() {
            return Ok(Finished { period_spend: None });
        }
        let applied = self.store.settle(&self.key, &batch, now)?;
        self.lease = None;
        Ok(Finished { period_spend: spend_at.zip(applied).map(|(i, applied)| applied.value(i)) })
    }
}

/// What [`Admission::finish`] recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Finished {
    /// The key's spend counter of the request's period after this request settled, read from
    /// the same atomic update (so across instances exactly one request crosses any amount):
    /// what finished requests spent plus what requests still in flight reserved. `None` if the
    /// key has no spend cap, the request neither reserved nor spent anything, or the store
    /// queued the settlement (as [`RedisLimitStore`](crate::RedisLimitStore) does).
    pub period_spend: Option<u64>,
}

/// The concurrency slot is released when the admission ends: finished, dropped because the
/// request's future was cancelled, or unwound by a panic. The estimates stay taken.
impl<S: AsyncLimitStore> Drop for Admission<'_, S> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease {
            release(&*self.store, &self.key, lease, self.now);
        }
    }
}

/// Gives back the concurrency slot of `lease`: after a `finish` that failed, or for an
/// admission dropped unfinished. A store that keeps leases releases each once; a store that
/// fails here leaks the slot until its lease expires (see the module docs).
#[cold]
fn release<S: AsyncLimitStore>(store: &S, key: &KeyId, lease: u64, now: Timestamp) {
    let mut batch = LimitBatch::new();
    if batch.push(CellId::new(LimitName::CONCURRENCY), LimitOp::Release { lease }).is_ok() {
        let _ = store.settle(key, &batch, now);
    }
}

impl<S: AsyncLimitStore> fmt::Debug for Admission<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("key", &self.key)
            .field("rate_limit", &self.rate_limit())
            .field("fail_open", &self.fail_open)
            .field("holds_permit", &self.holds_permit())
            .finish_non_exhaustive()
    }
}
