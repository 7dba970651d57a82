//! The key a request passed with, as a handler sees it; settled once, with its events.

#![cfg(feature = "std")]

use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use core::fmt;
use core::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use super::{Gate, Pass};
use crate::events::{EventSink, RequestInfo};
use crate::limit::{AsyncLimitStore, Finished, LimitError, RateLimitStatus, Usage};
use crate::{KeyId, KeyRecord, Requirements, Timestamp};

/// The key a request passed with: what [`KeyGate::check`](crate::KeyGate::check) returns, and
/// what the tower layer puts into a passing request's extensions.
///
/// It is a cheap handle (clones share one request). The request's admission (its concurrency
/// slot and the estimates it reserved) is settled exactly once, with the gate's events
/// reported: by [`Principal::finish`], or, when the last handle goes, with the usage last
/// given to [`Principal::report`] (none reported: nothing used). The tower layer settles when
/// the response body ends, so a stream holds its slot to its end.
#[derive(Clone)]
pub struct Principal(Arc<Inner>);

struct Inner {
    record: Arc<KeyRecord>,
    rate_limit: Option<RateLimitStatus>,
    request: Described,
    state: Mutex<State>,
}

/// What the request was, for the usage event: from its requirements, when it was admitted.
#[derive(Default)]
struct Described {
    admitted_at: Option<Timestamp>,
    started: Option<Instant>,
    route: Option<Cow<'static, str>>,
    model: Option<String>,
    provider: Option<Cow<'static, str>>,
    client_ip: Option<IpAddr>,
}

/// The settlement not yet made, and what was reported so far.
#[derive(Default)]
struct State {
    usage: Option<Usage>,
    status: Option<u16>,
    tokens: Option<(u32, u32)>,
    settle: Option<Settle>,
}

type Settle = Box<dyn for<'r> FnOnce(Usage, Timestamp, RequestInfo<'r>) -> Result<Finished, LimitError> + Send>;

impl Principal {
    /// The principal of a request that passed `gate`: settling it settles `pass` through
    /// [`Gate::finish`], which reports the usage and any spend alert.
    pub fn new<S, L, E>(gate: Arc<Gate<S, L, E>>, pass: Pass<'static, L>) -> Self
    where
        S: Send + Sync + 'static,
        L: AsyncLimitStore + Send + Sync + 'static,
        E: EventSink + Send + Sync + 'static,
    {
        Self::described(gate, pass, Described::default())
    }

    /// The principal of a request that passed `gate` with `requirements`, its check begun at
    /// `started`: its usage event says what the request was (route, model, provider, client
    /// address, latency), and the status and tokens the server reports.
    pub(crate) fn for_request<S, L, E>(
        gate: Arc<Gate<S, L, E>>,
        pass: Pass<'static, L>,
        requirements: &Requirements,
        started: Instant,
    ) -> Self
    where
        S: Send + Sync + 'static,
        L: AsyncLimitStore + Send + Sync + 'static,
        E: EventSink + Send + Sync + 'static,
    {
        let request = Described {
            admitted_at: Some(Timestamp::now()),
            started: Some(started),
            route: requirements.route.clone(),
            model: requirements.model.name().map(String::from),
            provider: requirements.provider.clone(),
            client_ip: requirements.client_ip,
        };
        Self::described(gate, pass, request)
    }

    fn described<S, L, E>(gate: Arc<Gate<S, L, E>>, pass: Pass<'static, L>, request: Described) -> Self
    where
        S: Send + Sync + 'static,
        L: AsyncLimitStore + Send + Sync + 'static,
        E: EventSink + Send + Sync + 'static,
    {
        let record = Arc::clone(pass.record());
        let rate_limit = pass.rate_limit();
        let settle: Settle = Box::new(move |usage, now, info| gate.finish_request(pass, usage, now, info));
        let state = Mutex::new(State { settle: Some(settle), ..State::default() });
        Self(Arc::new(Inner { record, rate_limit, request, state }))
    }

    /// The key's record.
    #[must_use]
    pub fn record(&self) -> &Arc<KeyRecord> {
        &self.0.record
    }

    /// The key's id.
    #[must_use]
    pub fn id(&self) -> KeyId {
        self.0.record.id
    }

    /// The key's team.
    #[must_use]
    pub fn team_id(&self) -> Option<&str> {
        self.0.record.team_id.as_deref()
    }

    /// The `x-ratelimit-*` status for the response headers, if the key has a rate limit.
    #[must_use]
    pub fn rate_limit(&self) -> Option<RateLimitStatus> {
        self.0.rate_limit
    }

    /// Reports what the request used (tokens, spend, credits), to be settled later (at the end
    /// of the response body, behind the tower layer). A later report replaces an earlier one.
    pub fn report(&self, usage: Usage) {
        self.state().usage = Some(usage);
    }

    /// Reports how the usage's tokens split between the request (a chat's prompt) and the
    /// reply (its completion), for the usage log.
    pub fn report_tokens(&self, input: u32, output: u32) {
        self.state().tokens = Some((input, output));
    }

    /// Reports the response's HTTP status, for the usage log (the tower layer does).
    pub fn report_status(&self, status: u16) {
        self.state().status = Some(status);
    }

    /// Settles the request now: its estimates to `usage`, its concurrency slot released, the
    /// usage and any spend alert reported to the gate's events. `None` if it was settled
    /// already.
    ///
    /// # Errors
    ///
    /// A [`LimitError`] if the limit store fails (the slot is released all the same).
    pub fn finish(&self, usage: Usage) -> Option<Result<Finished, LimitError>> {
        let (settle, status, tokens) = {
            let mut state = self.state();
            (state.settle.take()?, state.status, state.tokens)
        };
        Some(settle(usage, Timestamp::now(), self.0.request.info(status, tokens)))
    }

    /// Settles the request now with the usage last reported (nothing used if none was).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn settle(&self) {
        let (settle, usage, status, tokens) = {
            let mut state = self.state();
            (state.settle.take(), state.usage.take(), state.status, state.tokens)
        };
        if let Some(settle) = settle {
            // A store failure still releases the slot (see `Admission::finish`).
            let _ = settle(usage.unwrap_or_default(), Timestamp::now(), self.0.request.info(status, tokens));
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Described {
    /// The usage event's description of the request.
    fn info(&self, status: Option<u16>, tokens: Option<(u32, u32)>) -> RequestInfo<'_> {
        RequestInfo {
            admitted_at: self.admitted_at,
            route: self.route.as_deref(),
            model: self.model.as_deref(),
            provider: self.provider.as_deref(),
            client_ip: self.client_ip,
            status,
            tokens_in: tokens.map(|(i, _)| i),
            tokens_out: tokens.map(|(_, o)| o),
            latency: self.started.map(|t| t.elapsed()),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(settle) = state.settle.take() {
            let info = self.request.info(state.status, state.tokens);
            let _ = settle(state.usage.take().unwrap_or_default(), Timestamp::now(), info);
        }
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal").field("id", &self.0.record.id).finish_non_exhaustive()
    }
}
