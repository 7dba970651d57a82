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
//! and the [`Limiter`]. Each stage is written once, as one body expanded in [`Gate::check`] (over
//! a synchronous [`KeyStore`] and limit store) and in [`Gate::check_async`] (over an
//! [`AsyncKeyStore`] and an asynchronous limit store, awaiting each call). Both stop at the first refusal, so limits are only consumed by a
//! request that passed every earlier check. Every stage is the sans-IO function documented in its
//! module; this is only the driver, kept short so that the hot path stays visible.
//!
//! A [`Pass`] is what a request that got through carries onward: who it is ([`Authorized`]) and
//! its [`Admission`] (rate-limit status for the response headers, the concurrency slot, and the
//! estimates of tokens, spend and credits taken from the key's limits, as the request's
//! [`Requirements`] said). [`Gate::finish`] settles it to the real usage and reports it to the
//! events. [`KeyGate`] wraps a gate for the common case; its [`Principal`] settles itself.

#![cfg(feature = "alloc")]

mod facade;
mod principal;

#[cfg(feature = "std")]
pub use facade::{IssueError, KeyGate};
#[cfg(feature = "std")]
pub use principal::Principal;

use alloc::sync::Arc;
use core::fmt;

use crate::events::{DecisionEvent, EventSink, RequestInfo, SpendAlert, SpendAlerts, UsageEvent};
use crate::http::bearer_token;
use crate::limit::LimitError;
use crate::limit::{Admission, AsyncLimitStore, Finished, LimitStore, Limiter, RateLimitStatus, StoreRef, Usage};
use crate::policy::{Authorized, Requirements, authorize};
use crate::store::{AsyncKeyStore, KeyStore};
use crate::verify::Verified;
use crate::{Denial, DenialCode, KeyRecord, Timestamp, Verifier};

/// The pipeline: verifier, key store and limiter.
///
/// ```
/// use keygate::{Gate, KeyKind, KeyStore, MemoryLimitStore, MemoryStore, Pepper, Requirements, Timestamp, Usage, Verifier};
/// use keygate::format::SelectorFormat;
/// use keygate::limit::Limiter;
/// use keygate::secret::{PepperId, Peppers};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let verifier = Verifier::new(SelectorFormat::new("aistats")?, Peppers::new(Pepper::new(PepperId(1), &[7; 32])?));
/// let gate = Gate::new(verifier, MemoryStore::new(), Limiter::new(MemoryLimitStore::new()));
/// let now = Timestamp::now();
/// let (key, mut record) = gate.verifier().issue(&mut keygate::OsRng, KeyKind::STANDARD, now)?;
/// record.rate_limit.requests_per_minute = Some(60);
/// gate.store().insert(record)?;
///
/// let header = format!("Bearer {}", key.token().expose_secret());
/// let pass = gate.check(Some(header.as_bytes()), &Requirements::new(), now)?;
/// assert_eq!(pass.rate_limit().map(|s| s.headers().count()), Some(3));
/// gate.finish(pass, Usage::default(), now)?; // settles the request and reports its usage
/// # Ok(()) }
/// ```
pub struct Gate<S, L, E = ()> {
    verifier: Verifier,
    store: S,
    limiter: Limiter<L>,
    events: E,
    alerts: SpendAlerts,
}

impl<S, L: AsyncLimitStore> Gate<S, L> {
    /// A pipeline over `store` (a [`KeyStore`] or an [`AsyncKeyStore`]) and `limiter`, with no
    /// event sink.
    #[must_use]
    pub fn new(verifier: Verifier, store: S, limiter: Limiter<L>) -> Self {
        Self { verifier, store, limiter, events: (), alerts: SpendAlerts::default() }
    }
}

impl<S, L, E> Gate<S, L, E> {
    /// The same gate reporting to `events` (see [`events`](crate::events)).
    #[must_use]
    pub fn with_events<E2: EventSink>(self, events: E2) -> Gate<S, L, E2> {
        let Self { verifier, store, limiter, alerts, .. } = self;
        Gate { verifier, store, limiter, events, alerts }
    }

    /// The spend thresholds that raise [`SpendAlert`]s for keys without thresholds of their own
    /// ([`KeyRecord::spend_alerts`]); default 50%, 80%, 100% of a key's cap.
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

/// The first stage, written once for [`Gate::check`] (over a synchronous store, with
/// [`Verifier::authenticate`]) and for the asynchronous entry points (with
/// [`Verifier::authenticate_async`] and `.await`): the bearer token and its key, and how long it
/// took (when a timed sink is attached). Expanded in place rather than resolved from a future,
/// for the reason `Verifier::authenticate` is (`benches/authenticate.rs`).
macro_rules! timed_authentication {
    ($self:ident, $authorization:ident, $now:ident, $authenticate:ident $(, $await:tt)?) => {{
        let clock = Clock::start(&$self.events);
        let verified = match bearer_token($authorization) {
            Ok(token) => $self.verifier.$authenticate(&$self.store, token, $now)$(.$await)?,
            Err(denial) => Err(denial),
        };
        let latency = clock.elapsed();
        (verified.map(|verified| Authenticated { verified, latency }), latency)
    }};
}

/// The later stages, written once for [`Gate::check`] (over a synchronous limit store) and
/// for the asynchronous entry points (`$await` is `await`): the policy, then the limits
/// (through `store`: the limiter's, borrowed, or a clone the admission owns), then the
/// decision event. Expanded in place, as [`timed_authentication`] is.
macro_rules! admission_stage {
    ($self:ident, $authenticated:ident, $requirements:ident, $now:ident, $store:ident, $take:ident $(, $await:tt)?) => {{
        let clock = Clock::start(&$self.events);
        // A refusal's event names the key's team too (the record is kept only for a sink).
        let record = $self.events.enabled().then(|| Arc::clone($authenticated.record()));
        let outcome = match authorize($authenticated.verified, $requirements, $now) {
            Ok(authorized) => {
                match $self.limiter.$take($store, authorized.record(), $requirements.limits, $now)$(.$await)? {
                    Ok(admission) => Ok(Pass { authorized, admission }),
                    Err(denial) => Err(denial),
                }
            }
            Err(denial) => Err(denial),
        };
        if let Some(record) = record {
            let latency = $authenticated.latency.zip(clock.elapsed()).map(|(a, b)| a + b);
            $self.report(&outcome, &record, $requirements, $now, latency);
        }
        outcome
    }};
}

impl<S: KeyStore + Send + Sync, L: LimitStore, E: EventSink> Gate<S, L, E> {
    /// Runs the pipeline for one request over a synchronous store: the `Authorization` header
    /// value (`None` if absent), what the route requires and what the request will use (its
    /// estimates of tokens, credits and spend: [`Requirements::limits`]), and `now`. The same
    /// stages as [`Gate::check_async`], from the same source, without `.await`. Reports the
    /// outcome to the event sink, if one is attached.
    ///
    /// # Errors
    ///
    /// The first [`Denial`] of the decision table that applies.
    #[inline]
    pub fn check(
        &self,
        authorization: Option<&[u8]>,
        requirements: &Requirements,
        now: Timestamp,
    ) -> Result<Pass<'_, L>, Denial> {
        let (outcome, latency) = timed_authentication!(self, authorization, now, authenticate);
        let authenticated = outcome.map_err(|denial| self.denied(denial, authorization, requirements, now, latency))?;
        let store = StoreRef::Borrowed(self.limiter.store());
        admission_stage!(self, authenticated, requirements, now, store, take_now)
    }
}

impl<S: AsyncKeyStore, L: AsyncLimitStore, E: EventSink> Gate<S, L, E> {
    /// Runs the pipeline for one request over any store (every [`KeyStore`] is an
    /// [`AsyncKeyStore`]): the key, then the policy and the limits, in the decision table's
    /// order, stopping at the first refusal. The admission owns a clone of the limiter's store
    /// handle, so the [`Pass`] is `'static` and can travel with a response body to the end of a
    /// stream (use an `Arc`'d limit store: the clone is one reference-count increment).
    ///
    /// # Errors
    ///
    /// The first [`Denial`] of the decision table that applies.
    pub async fn check_async(
        &self,
        authorization: Option<&[u8]>,
        requirements: &Requirements,
        now: Timestamp,
    ) -> Result<Pass<'static, L>, Denial>
    where
        L: Clone + 'static,
    {
        let (outcome, latency) = self.authenticate_timed(authorization, now).await;
        let authenticated = outcome.map_err(|denial| self.denied(denial, authorization, requirements, now, latency))?;
        self.admit(authenticated, requirements, now).await
    }

    /// The first half of [`Gate::check_async`]: the key, from the `Authorization` header alone.
    /// A server that must read the request's body to know what it requires (the model of a
    /// chat request) calls this first, reads no body for a caller without a valid key, and
    /// then calls [`Gate::admit`]. A denial is reported to the event sink here.
    ///
    /// # Errors
    ///
    /// The 401 codes of the decision table, or `auth_unavailable` (503) if the store fails.
    pub async fn authenticate_async(
        &self,
        authorization: Option<&[u8]>,
        now: Timestamp,
    ) -> Result<Authenticated, Denial> {
        let (outcome, latency) = self.authenticate_timed(authorization, now).await;
        outcome.map_err(|denial| self.denied(denial, authorization, &Requirements::new(), now, latency))
    }

    /// The first stage over any store (see [`timed_authentication`]). The callers report a
    /// denial, with what they know of the request.
    async fn authenticate_timed(
        &self,
        authorization: Option<&[u8]>,
        now: Timestamp,
    ) -> (Result<Authenticated, Denial>, Option<core::time::Duration>) {
        timed_authentication!(self, authorization, now, authenticate_async, await)
    }
}

impl<S, L: AsyncLimitStore, E: EventSink> Gate<S, L, E> {
    /// The second half of [`Gate::check_async`]: the policy and the limits for a key that
    /// [`Gate::authenticate_async`] proved, now that the request's requirements are known,
    /// awaiting the limit store. Reports the decision to the event sink.
    ///
    /// # Errors
    ///
    /// The 403 and 429 codes of the decision table, or `auth_unavailable` (503) if the limit
    /// store fails.
    pub async fn admit(
        &self,
        authenticated: Authenticated,
        requirements: &Requirements,
        now: Timestamp,
    ) -> Result<Pass<'static, L>, Denial>
    where
        L: Clone + 'static,
    {
        let store = StoreRef::Owned(self.limiter.store().clone());
        self.admit_with(authenticated, requirements, now, store).await
    }

    /// The later stages over any limit store (see [`admission_stage`]).
    #[inline]
    async fn admit_with<'a>(
        &self,
        authenticated: Authenticated,
        requirements: &Requirements,
        now: Timestamp,
        store: StoreRef<'a, L>,
    ) -> Result<Pass<'a, L>, Denial> {
        admission_stage!(self, authenticated, requirements, now, store, take, await)
    }
}

/// A key proven from a request's `Authorization` header by [`Gate::authenticate_async`],
/// waiting for [`Gate::admit`] once the request's requirements are known. Only the gate makes
/// one.
#[must_use]
pub struct Authenticated {
    verified: Verified<Arc<KeyRecord>>,
    latency: Option<core::time::Duration>,
}

impl Authenticated {
    /// The key's record.
    #[must_use]
    pub fn record(&self) -> &Arc<KeyRecord> {
        self.verified.handle()
    }
}

impl fmt::Debug for Authenticated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticated").field("id", &self.verified.record().id).finish_non_exhaustive()
    }
}

impl<S, L: AsyncLimitStore, E: EventSink> Gate<S, L, E> {
    /// Settles a request to its real usage (see [`Admission::finish`]) and reports it to the event
    /// sink, with a [`SpendAlert`] for each spend threshold this request's spend crossed.
    ///
    /// # Errors
    ///
    /// A [`LimitError`] if the limit store fails (the concurrency slot is still released).
    pub fn finish<'a>(&self, pass: Pass<'a, L>, usage: Usage, now: Timestamp) -> Result<Finished, LimitError> {
        self.finish_request(pass, usage, now, RequestInfo::default())
    }

    /// [`Gate::finish`], with what the server knows of the request for the usage event (its
    /// route, status, tokens in and out, latency: see [`RequestInfo`]).
    ///
    /// # Errors
    ///
    /// As [`Gate::finish`].
    pub fn finish_request<'a>(
        &self,
        pass: Pass<'a, L>,
        usage: Usage,
        now: Timestamp,
        request: RequestInfo<'_>,
    ) -> Result<Finished, LimitError> {
        let (authorized, admission) = pass.into_parts();
        let finished = admission.finish(usage, now)?;
        if self.events.enabled() {
            self.report_request_usage(authorized.record(), usage, finished, now, request);
        }
        Ok(finished)
    }

    /// Reports a reconciled usage and any spend alerts it raised (for servers that finish the
    /// admission themselves, such as the tower layer at the end of a response body).
    pub fn report_usage(&self, record: &KeyRecord, usage: Usage, finished: Finished, now: Timestamp) {
        self.report_request_usage(record, usage, finished, now, RequestInfo::default());
    }

    /// [`Gate::report_usage`], with what the server knows of the request.
    pub fn report_request_usage(
        &self,
        record: &KeyRecord,
        usage: Usage,
        finished: Finished,
        now: Timestamp,
        request: RequestInfo<'_>,
    ) {
        let team = record.team_id.as_deref();
        let event = UsageEvent {
            at: now,
            key: record.id,
            team,
            tokens: usage.tokens,
            spend_micros: usage.spend_micros,
            period_spend: finished.period_spend,
            request,
        };
        self.events.usage(&event);
        if let (Some(cap), Some(after)) = (record.spend_cap, finished.period_spend) {
            let before = after.saturating_sub(usage.spend_micros);
            // The key's own thresholds, or the gate's.
            let alerts = record.spend_alerts.unwrap_or(self.alerts);
            for percent in alerts.crossed(cap.amount_micros, before, after) {
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

    /// Reports the decision on a proven key.
    #[cold]
    fn report<'p>(
        &self,
        outcome: &Result<Pass<'p, L>, Denial>,
        record: &KeyRecord,
        requirements: &Requirements,
        now: Timestamp,
        latency: Option<core::time::Duration>,
    ) {
        // Allowed, or refused by the policy or the limits: a key whose secret was proven.
        let code = outcome.as_ref().err().map(Denial::code);
        let team = record.team_id.as_deref();
        self.decided(code, Some(record.id), true, team, requirements, now, latency);
    }

    /// Reports a denial of the first stage (if a sink is attached) and returns it.
    fn denied(
        &self,
        denial: Denial,
        authorization: Option<&[u8]>,
        requirements: &Requirements,
        now: Timestamp,
        latency: Option<core::time::Duration>,
    ) -> Denial {
        if self.events.enabled() {
            self.report_denied(&denial, authorization, requirements, now, latency);
        }
        denial
    }

    /// Reports a denial's decision event.
    #[cold]
    fn report_denied(
        &self,
        denial: &Denial,
        authorization: Option<&[u8]>,
        requirements: &Requirements,
        now: Timestamp,
        latency: Option<core::time::Duration>,
    ) {
        let code = denial.code();
        // The kid a refused token named: public, and only what parsing validated.
        let named = bearer_token(authorization).ok().and_then(|t| self.verifier.parse(t).ok()).and_then(|k| k.key_id());
        let proven =
            !matches!(code, DenialCode::MissingApiKey | DenialCode::InvalidApiKey | DenialCode::AuthUnavailable);
        self.decided(Some(code), named, proven, None, requirements, now, latency);
    }

    #[allow(clippy::too_many_arguments)]
    fn decided(
        &self,
        code: Option<DenialCode>,
        key: Option<crate::KeyId>,
        verified: bool,
        team: Option<&str>,
        requirements: &Requirements,
        now: Timestamp,
        latency: Option<core::time::Duration>,
    ) {
        let event = DecisionEvent {
            at: now,
            code,
            key,
            verified,
            team,
            route: requirements.route.as_deref(),
            model: requirements.model.name(),
            provider: requirements.provider.as_deref(),
            client_ip: requirements.client_ip,
            latency,
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
/// Only [`Gate::check`] and [`Gate::check_async`] make one. [`Gate::finish`] settles it to the
/// request's real usage and reports that to the events; dropping it releases the request's
/// concurrency slot and keeps its estimates (tokens, spend, credits) taken, unreported.
#[must_use]
pub struct Pass<'a, L: AsyncLimitStore> {
    authorized: Authorized<Arc<KeyRecord>>,
    admission: Admission<'a, L>,
}

impl<L: AsyncLimitStore> Pass<'_, L> {
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
}

impl<'a, L: AsyncLimitStore> Pass<'a, L> {
    /// The parts, for a server that keeps them apart (the key for the handler, the admission for
    /// the response body).
    pub fn into_parts(self) -> (Authorized<Arc<KeyRecord>>, Admission<'a, L>) {
        (self.authorized, self.admission)
    }
}

impl<L: AsyncLimitStore> fmt::Debug for Pass<'_, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pass")
            .field("id", &self.authorized.id())
            .field("rate_limit", &self.admission.rate_limit())
            .finish_non_exhaustive()
    }
}
