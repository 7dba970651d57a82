//! The whole pipeline in one call: bearer → verify → policy → limits.
//!
//! ```text
//! Authorization header ──► bearer_token                      401 missing_api_key / invalid_api_key
//!   ──► Verifier (parse, store lookup, constant-time verify)  401 invalid / revoked / disabled / expired
//!   ──► authorize (soft block, IP, scopes, model, provider)   403
//!   ──► Limiter (rates, concurrency, spend, credits)           429, 503 if the limiter fails
//!   ──► Pass { authorized key, admission }
//! ```
//!
//! A [`Gate`] owns the three stages' state: the [`Verifier`] (formats and peppers), the key store
//! and the [`Limiter`]. [`Gate::check`] drives it over a synchronous [`KeyStore`];
//! [`Gate::check_async`] over an [`AsyncKeyStore`]. Both run the stages in the order of the
//! decision table and stop at the first refusal, so limits are only consumed by a request that
//! passed every earlier check. Every stage is the sans-IO function documented in its module;
//! this is only the driver, kept short so that the hot path stays visible.
//!
//! A [`Pass`] is what a request that got through carries onward: who it is ([`Authorized`]) and
//! its [`Admission`] (rate-limit status for the response headers, the concurrency permit, and the
//! token estimate and spend to reconcile with [`Pass::finish`] when the request ends).

#![cfg(feature = "alloc")]

use alloc::sync::Arc;
use core::fmt;

use crate::events::{DecisionEvent, EventSink, SpendAlert, SpendAlerts, UsageEvent};
use crate::limit::{Admission, Finished, LimitRequest, LimitStore, Limiter, RateLimitStatus, Usage};
use crate::policy::{Authorized, RequestAttrs, authorize};
use crate::store::{AsyncKeyStore, KeyStore};
use crate::{Denial, DenialCode, KeyRecord, LimitError, Timestamp, Verifier, bearer_token};

/// The pipeline: verifier, key store and limiter.
///
/// ```
/// use keygate::{Gate, LimitRequest, Limiter, MemoryLimitStore, MemoryStore, Pepper, PepperId,
///               Peppers, RequestAttrs, SelectorFormat, Timestamp, Usage, Verifier, KeyKind, KeyStore};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let verifier = Verifier::new(SelectorFormat::new("aistats")?, Peppers::new(Pepper::new(PepperId(1), &[7; 32])?));
/// let gate = Gate::new(verifier, MemoryStore::new(), Limiter::new(MemoryLimitStore::new()));
/// let now = Timestamp::now();
/// let (key, mut record) = gate.verifier().issue(&mut keygate::OsRng, KeyKind::STANDARD, now)?;
/// record.rate_limit.requests_per_minute = Some(60);
/// gate.store().insert(record)?;
///
/// let header = format!("Bearer {}", key.token().expose_secret());
/// let pass = gate.check(Some(header.as_bytes()), &RequestAttrs::new(), LimitRequest::new(), now)?;
/// assert_eq!(pass.rate_limit().map(|s| s.headers().count()), Some(3));
/// pass.finish(Usage::default(), now)?;
/// # Ok(()) }
/// ```
pub struct Gate<S, L, E = ()> {
    verifier: Verifier,
    store: S,
    limiter: Limiter<L>,
    events: E,
    alerts: SpendAlerts,
}

impl<S, L: LimitStore> Gate<S, L> {
    /// A pipeline over `store` (a [`KeyStore`] or an [`AsyncKeyStore`]) and `limiter`, with no
    /// event sink.
    #[must_use]
    pub fn new(verifier: Verifier, store: S, limiter: Limiter<L>) -> Self {
        Self { verifier, store, limiter, events: (), alerts: SpendAlerts::default() }
    }
}

impl<S, L: LimitStore, E: EventSink> Gate<S, L, E> {
    /// The same gate reporting to `events` (see [`events`](crate::events)).
    #[must_use]
    pub fn with_events<E2: EventSink>(self, events: E2) -> Gate<S, L, E2> {
        let Self { verifier, store, limiter, alerts, .. } = self;
        Gate { verifier, store, limiter, events, alerts }
    }

    /// The spend thresholds that raise [`SpendAlert`]s (default 50%, 80%, 100% of a key's cap).
    #[must_use]
    pub fn with_spend_alerts(mut self, alerts: SpendAlerts) -> Self {
        self.alerts = alerts;
        self
    }

    /// The event sink.
    #[must_use]
    pub const fn events(&self) -> &E {
        &self.events
    }

    /// The verifier (formats and peppers); also issues keys.
    #[must_use]
    pub const fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The key store.
    #[must_use]
    pub const fn store(&self) -> &S {
        &self.store
    }

    /// The limiter.
    #[must_use]
    pub const fn limiter(&self) -> &Limiter<L> {
        &self.limiter
    }
}

impl<S: KeyStore, L: LimitStore, E: EventSink> Gate<S, L, E> {
    /// Runs the pipeline for one request over the synchronous store: the `Authorization` header
    /// value (`None` if absent), what the route requires, what the request will use, and `now`.
    /// Reports the outcome to the event sink, if one is attached.
    ///
    /// # Errors
    ///
    /// The first [`Denial`] of the decision table that applies.
    pub fn check(
        &self,
        authorization: Option<&[u8]>,
        attrs: &RequestAttrs<'_>,
        limits: LimitRequest,
        now: Timestamp,
    ) -> Result<Pass<'_, L>, Denial> {
        let clock = Clock::start(&self.events);
        let outcome = self.run(authorization, attrs, limits, now);
        if self.events.enabled() {
            self.report(&outcome, authorization, attrs, now, clock);
        }
        outcome
    }

    /// The stages, in the decision table's order.
    fn run(
        &self,
        authorization: Option<&[u8]>,
        attrs: &RequestAttrs<'_>,
        limits: LimitRequest,
        now: Timestamp,
    ) -> Result<Pass<'_, L>, Denial> {
        let token = bearer_token(authorization)?;
        let verified = self.verifier.authenticate(&self.store, token, now)?;
        let authorized = authorize(verified, attrs, now)?;
        let admission = self.limiter.check(authorized.record(), limits, now)?;
        Ok(Pass { authorized, admission })
    }
}

impl<S: AsyncKeyStore, L: LimitStore, E: EventSink> Gate<S, L, E> {
    /// [`Gate::check`] over an asynchronous store. The admission owns a clone of the limiter's
    /// store handle, so the [`Pass`] is `'static` and can travel with a response body to the
    /// end of a stream (use an `Arc`'d limit store: the clone is one reference-count increment).
    ///
    /// # Errors
    ///
    /// The first [`Denial`] of the decision table that applies.
    pub async fn check_async(
        &self,
        authorization: Option<&[u8]>,
        attrs: &RequestAttrs<'_>,
        limits: LimitRequest,
        now: Timestamp,
    ) -> Result<Pass<'static, L>, Denial>
    where
        L: Clone + 'static,
    {
        let clock = Clock::start(&self.events);
        let outcome = self.run_async(authorization, attrs, limits, now).await;
        if self.events.enabled() {
            self.report(&outcome, authorization, attrs, now, clock);
        }
        outcome
    }

    async fn run_async(
        &self,
        authorization: Option<&[u8]>,
        attrs: &RequestAttrs<'_>,
        limits: LimitRequest,
        now: Timestamp,
    ) -> Result<Pass<'static, L>, Denial>
    where
        L: Clone + 'static,
    {
        let token = bearer_token(authorization)?;
        let verified = self.verifier.authenticate_async(&self.store, token, now).await?;
        let authorized = authorize(verified, attrs, now)?;
        let admission = self.limiter.check_owned(authorized.record(), limits, now)?;
        Ok(Pass { authorized, admission })
    }
}

impl<S, L: LimitStore, E: EventSink> Gate<S, L, E> {
    /// Reconciles a request's real usage (see [`Pass::finish`]) and reports it to the event
    /// sink, with a [`SpendAlert`] for each spend threshold this request's spend crossed.
    ///
    /// # Errors
    ///
    /// A [`LimitError`] if the limit store fails (the concurrency slot is still released).
    pub fn finish<'a>(&self, pass: Pass<'a, L>, usage: Usage, now: Timestamp) -> Result<Finished, LimitError> {
        let (authorized, admission) = pass.into_parts();
        let finished = admission.finish(usage, now)?;
        if self.events.enabled() {
            self.report_usage(authorized.record(), usage, finished, now);
        }
        Ok(finished)
    }

    /// Reports a reconciled usage and any spend alerts it raised (for servers that finish the
    /// admission themselves, such as the tower layer at the end of a response body).
    pub fn report_usage(&self, record: &KeyRecord, usage: Usage, finished: Finished, now: Timestamp) {
        let team = record.team_id.as_deref();
        let event = UsageEvent {
            at: now,
            key: record.id,
            team,
            tokens: usage.tokens,
            spend_micros: usage.spend_micros,
            period_spend: finished.period_spend,
        };
        self.events.usage(&event);
        if let (Some(cap), Some(after)) = (record.spend_cap, finished.period_spend) {
            let before = after.saturating_sub(usage.spend_micros);
            for percent in self.alerts.crossed(cap.amount_micros, before, after) {
                let alert = SpendAlert {
                    at: now,
                    key: record.id,
                    team,
                    percent,
                    spend_micros: after,
                    cap_micros: cap.amount_micros,
                    period: cap.period,
                };
                self.events.alert(&alert);
            }
        }
    }

    /// Builds and reports a check's decision event.
    #[cold]
    fn report<'p>(
        &self,
        outcome: &Result<Pass<'p, L>, Denial>,
        authorization: Option<&[u8]>,
        attrs: &RequestAttrs<'_>,
        now: Timestamp,
        clock: Clock,
    ) {
        let (code, key, verified, team) = match outcome {
            Ok(pass) => (None, Some(pass.record().id), true, pass.record().team_id.as_deref()),
            Err(denial) => {
                let code = denial.code();
                // The kid a refused token named: public, and only what parsing validated.
                let named =
                    bearer_token(authorization).ok().and_then(|t| self.verifier.parse(t).ok()).and_then(|k| k.key_id());
                let proven = !matches!(
                    code,
                    DenialCode::MissingApiKey | DenialCode::InvalidApiKey | DenialCode::AuthUnavailable
                );
                (Some(code), named, proven, None)
            }
        };
        let event = DecisionEvent {
            at: now,
            code,
            key,
            verified,
            team,
            route: attrs.route,
            model: attrs.model,
            provider: attrs.provider,
            latency: clock.elapsed(),
        };
        self.events.decision(&event);
    }
}

/// Times a check when a sink is attached (std only; no clock is read otherwise).
#[derive(Clone, Copy)]
struct Clock(#[cfg(feature = "std")] Option<std::time::Instant>);

impl Clock {
    #[inline]
    fn start<E: EventSink>(events: &E) -> Self {
        #[cfg(feature = "std")]
        return Self((events.enabled() && events.timed()).then(std::time::Instant::now));
        #[cfg(not(feature = "std"))]
        {
            let _ = events;
            Self()
        }
    }

    fn elapsed(self) -> Option<core::time::Duration> {
        #[cfg(feature = "std")]
        return self.0.map(|t| t.elapsed());
        #[cfg(not(feature = "std"))]
        None
    }
}

impl<S, L, E> fmt::Debug for Gate<S, L, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate").field("verifier", &self.verifier).finish_non_exhaustive()
    }
}

/// A request that passed every stage: the authorized key and its admission.
///
/// Only [`Gate::check`] and [`Gate::check_async`] make one. Dropping it releases the request's
/// concurrency slot and keeps its token estimate charged; [`Pass::finish`] reconciles the real
/// usage instead.
#[must_use]
pub struct Pass<'a, L: LimitStore> {
    authorized: Authorized<Arc<KeyRecord>>,
    admission: Admission<'a, L>,
}

impl<L: LimitStore> Pass<'_, L> {
    /// The authorized key.
    pub fn authorized(&self) -> &Authorized<Arc<KeyRecord>> {
        &self.authorized
    }

    /// The key's record.
    #[must_use]
    pub fn record(&self) -> &Arc<KeyRecord> {
        self.authorized.verified().handle()
    }

    /// The `x-ratelimit-*` status for the response headers, if the key has a rate limit.
    #[must_use]
    pub fn rate_limit(&self) -> Option<RateLimitStatus> {
        self.admission.rate_limit()
    }

    /// Reconciles the request's real usage at `now` and releases its concurrency slot.
    ///
    /// # Errors
    ///
    /// A [`LimitError`] if the limit store fails (the slot is still released).
    pub fn finish(self, usage: Usage, now: Timestamp) -> Result<Finished, LimitError> {
        self.admission.finish(usage, now)
    }
}

impl<'a, L: LimitStore> Pass<'a, L> {
    /// The parts, for a server that keeps them apart (the key for the handler, the admission for
    /// the response body).
    pub fn into_parts(self) -> (Authorized<Arc<KeyRecord>>, Admission<'a, L>) {
        (self.authorized, self.admission)
    }
}

impl<L: LimitStore> fmt::Debug for Pass<'_, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pass")
            .field("id", &self.authorized.id())
            .field("rate_limit", &self.admission.rate_limit())
            .finish_non_exhaustive()
    }
}
