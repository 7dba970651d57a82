//! Visibility: every decision, every request's usage and every spend alert as a structured event.
//!
//! Operators watch usage per key: to spot anomalies, to see an old key go idle before revoking
//! it, to be warned before a spend cap is reached. A [`Gate`](crate::Gate) reports to an
//! [`EventSink`] the user supplies:
//!
//! * a [`DecisionEvent`] for every check, allowed or denied (the stable code, the key's id when
//!   known, its team, the route, model and provider, and how long the check took);
//! * a [`UsageEvent`] when a request's usage is reconciled ([`Gate::finish`](crate::Gate::finish):
//!   tokens and spend, and the key's spend so far in the period);
//! * a [`SpendAlert`] when that spend crosses one of the configured [`SpendAlerts`] thresholds
//!   (by default 50%, 80% and 100% of the key's cap).
//!
//! Events are borrowed, allocation-free values handed to the sink synchronously, on the
//! request's thread: a sink that does real work (I/O, aggregation across threads) should hand
//! the event off (copy the fields it needs into a channel). The benchmarks measure the cost of a
//! sink attached ([`UsageStats`], which aggregates in memory). With no sink (`()`, the default)
//! no event is built and no clock is read.
//!
//! # What an event never contains
//!
//! The secret, the presented token, or anything derived from them: a key appears by its public
//! id (the kid). For a refused token that parsed, the event carries the kid it *named*, marked
//! unverified ([`DecisionEvent::verified`] is false), so that guessing against one kid shows up
//! in the logs without anything secret in them.
//!
//! # Spend alerts are exact across instances
//!
//! [`Admission::finish`](crate::limit::Admission::finish) adds the spend with one atomic update of the
//! period's counter and returns the counter's new value; an alert fires when the value before
//! the update was under a threshold and the value after is at or over it. However many gateway
//! instances share one limit store (Redis), exactly one request crosses each threshold in each
//! period, so each alert fires exactly once per period.
//!
//! Adapters: [`UsageStats`] (with `std`) keeps per-key counters for the day, week and month;
//! `TracingSink` (feature `tracing`) emits `tracing` events with stable field names;
//! `MetricsSink` (feature `metrics`) updates counters and histograms through the `metrics`
//! facade so that any exporter (Prometheus and others) can serve them.

use core::time::Duration;

#[cfg(feature = "alloc")]
use crate::SpendPeriod;
use crate::{DenialCode, KeyId, Timestamp};

#[cfg(feature = "metrics")]
mod metrics_sink;
#[cfg(feature = "std")]
mod stats;
#[cfg(feature = "tracing")]
mod tracing_sink;

#[cfg(feature = "metrics")]
pub use metrics_sink::MetricsSink;
#[cfg(feature = "std")]
pub use stats::{KeyUsage, PeriodUsage, UsageStats};
#[cfg(feature = "tracing")]
pub use tracing_sink::TracingSink;

/// One check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecisionEvent<'a> {
    /// When the check ran.
    pub at: Timestamp,
    /// `None` if the request was allowed, else the denial's stable code.
    pub code: Option<DenialCode>,
    /// The key's public id: the verified key's, or for a token refused before its secret was
    /// proven, the kid it named (if it parsed as a selector key).
    pub key: Option<KeyId>,
    /// Whether `key` is a key whose secret was proven (allowed, or denied after verification).
    pub verified: bool,
    /// The verified key's team.
    pub team: Option<&'a str>,
    /// The route label the server gave the request.
    pub route: Option<&'a str>,
    /// The model the request asked for.
    pub model: Option<&'a str>,
    /// The provider the request goes to.
    pub provider: Option<&'a str>,
    /// The client's address, when the server gave it.
    pub client_ip: Option<core::net::IpAddr>,
    /// How long the check took (with `std`, for a sink that is [`EventSink::timed`]).
    pub latency: Option<Duration>,
}

impl DecisionEvent<'_> {
    /// Whether the request was allowed.
    #[must_use]
    pub const fn allowed(&self) -> bool {
        self.code.is_none()
    }

    /// `"allowed"` or the denial's code: the label to count requests by.
    #[must_use]
    pub const fn outcome(&self) -> &'static str {
        match self.code {
            Some(code) => code.as_str(),
            None => "allowed",
        }
    }
}

/// A request's reconciled usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageEvent<'a> {
    /// When the usage was recorded.
    pub at: Timestamp,
    /// The key.
    pub key: KeyId,
    /// The key's team.
    pub team: Option<&'a str>,
    /// Tokens used.
    pub tokens: u32,
    /// Spend in micro-units.
    pub spend_micros: u64,
    /// The key's spend in the current period after this request, if it has a spend cap.
    pub period_spend: Option<u64>,
    /// What the server said of the request (route, status, tokens in and out, latency), when
    /// it described it: a [`Principal`](crate::Principal) does, behind the tower layer or
    /// [`KeyGate::check`](crate::KeyGate::check); [`Gate::finish`](crate::Gate::finish) leaves
    /// it empty.
    pub request: RequestInfo<'a>,
}

/// A settled request as the server saw it; every field is optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestInfo<'a> {
    /// When the request was admitted.
    pub admitted_at: Option<Timestamp>,
    /// The route label the server gave the request.
    pub route: Option<&'a str>,
    /// The model the request asked for.
    pub model: Option<&'a str>,
    /// The provider the request went to.
    pub provider: Option<&'a str>,
    /// The client's address (the usage log keeps it only when told to).
    pub client_ip: Option<core::net::IpAddr>,
    /// The response's HTTP status.
    pub status: Option<u16>,
    /// Tokens of the request (a chat's prompt), when the handler split its usage.
    pub tokens_in: Option<u32>,
    /// Tokens of the reply (a chat's completion), when the handler split its usage.
    pub tokens_out: Option<u32>,
    /// From the start of the check to the end of the response body.
    pub latency: Option<Duration>,
}

/// A key's spend in a period crossed a threshold of its cap.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpendAlert<'a> {
    /// When the crossing request's spend was recorded.
    pub at: Timestamp,
    /// The key.
    pub key: KeyId,
    /// The key's team.
    pub team: Option<&'a str>,
    /// The threshold crossed, in percent of the cap (100 = the cap is reached).
    pub percent: u8,
    /// The key's spend in the period, in micro-units.
    pub spend_micros: u64,
    /// The cap, in micro-units.
    pub cap_micros: u64,
    /// The cap's period.
    pub period: SpendPeriod,
}

/// Receives events. Every method has a default that ignores the event.
///
/// ```
/// use keygate::events::{DecisionEvent, EventSink};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// #[derive(Default)]
/// struct Denials(AtomicU64);
///
/// impl EventSink for Denials {
///     fn decision(&self, event: &DecisionEvent<'_>) {
///         if !event.allowed() {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
/// ```
pub trait EventSink: Send + Sync {
    /// A check's outcome.
    fn decision(&self, event: &DecisionEvent<'_>) {
        let _ = event;
    }

    /// A request's reconciled usage.
    fn usage(&self, event: &UsageEvent<'_>) {
        let _ = event;
    }

    /// A spend threshold was crossed.
    #[cfg(feature = "alloc")]
    fn alert(&self, alert: &SpendAlert<'_>) {
        let _ = alert;
    }

    /// Whether the sink wants events at all. `()` says no, so that a gate without a sink
    /// builds no events and reads no clock.
    fn enabled(&self) -> bool {
        true
    }

    /// Whether the sink reads [`DecisionEvent::latency`]. A sink that does not (a counter, say)
    /// returns `false` and the gate skips the two clock reads that measure it; its events then
    /// carry no latency.
    fn timed(&self) -> bool {
        true
    }
}

/// No sink: nothing is built, nothing is reported.
impl EventSink for () {
    #[inline]
    fn enabled(&self) -> bool {
        false
    }
    #[inline]
    fn timed(&self) -> bool {
        false
    }
}

impl<T: EventSink + ?Sized> EventSink for &T {
    fn decision(&self, event: &DecisionEvent<'_>) {
        (**self).decision(event);
    }
    fn usage(&self, event: &UsageEvent<'_>) {
        (**self).usage(event);
    }
    #[cfg(feature = "alloc")]
    fn alert(&self, alert: &SpendAlert<'_>) {
        (**self).alert(alert);
    }
    fn enabled(&self) -> bool {
        (**self).enabled()
    }
    fn timed(&self) -> bool {
        (**self).timed()
    }
}

#[cfg(feature = "alloc")]
impl<T: EventSink + ?Sized> EventSink for alloc::sync::Arc<T> {
    fn decision(&self, event: &DecisionEvent<'_>) {
        (**self).decision(event);
    }
    fn usage(&self, event: &UsageEvent<'_>) {
        (**self).usage(event);
    }
    #[cfg(feature = "alloc")]
    fn alert(&self, alert: &SpendAlert<'_>) {
        (**self).alert(alert);
    }
    fn enabled(&self) -> bool {
        (**self).enabled()
    }
    fn timed(&self) -> bool {
        (**self).timed()
    }
}

/// A sink or none (a sink switched off by configuration).
impl<T: EventSink> EventSink for Option<T> {
    fn decision(&self, event: &DecisionEvent<'_>) {
        if let Some(sink) = self {
            sink.decision(event);
        }
    }
    fn usage(&self, event: &UsageEvent<'_>) {
        if let Some(sink) = self {
            sink.usage(event);
        }
    }
    #[cfg(feature = "alloc")]
    fn alert(&self, alert: &SpendAlert<'_>) {
        if let Some(sink) = self {
            sink.alert(alert);
        }
    }
    fn enabled(&self) -> bool {
        self.as_ref().is_some_and(EventSink::enabled)
    }
    fn timed(&self) -> bool {
        self.as_ref().is_some_and(EventSink::timed)
    }
}

/// Both sinks, in order.
impl<A: EventSink, B: EventSink> EventSink for (A, B) {
    fn decision(&self, event: &DecisionEvent<'_>) {
        self.0.decision(event);
        self.1.decision(event);
    }
    fn usage(&self, event: &UsageEvent<'_>) {
        self.0.usage(event);
        self.1.usage(event);
    }
    #[cfg(feature = "alloc")]
    fn alert(&self, alert: &SpendAlert<'_>) {
        self.0.alert(alert);
        self.1.alert(alert);
    }
    fn enabled(&self) -> bool {
        self.0.enabled() || self.1.enabled()
    }
    fn timed(&self) -> bool {
        (self.0.enabled() && self.0.timed()) || (self.1.enabled() && self.1.timed())
    }
}

/// Spend thresholds, in percent of a key's cap (up to eight; default 50, 80 and 100): the
/// gate's ([`Gate::with_spend_alerts`](crate::Gate::with_spend_alerts)), or a key's own
/// ([`KeyRecord::spend_alerts`](crate::KeyRecord::spend_alerts)).
///
/// ```
/// use keygate::events::SpendAlerts;
/// let alerts = SpendAlerts::default();
/// // A request takes the period's spend from 70 to 85 of a cap of 100: the 80% threshold.
/// assert_eq!(alerts.crossed(100, 70, 85).collect::<Vec<_>>(), [80]);
/// // From 40 to 100: 50%, 80% and 100% at once.
/// assert_eq!(alerts.crossed(100, 40, 100).collect::<Vec<_>>(), [50, 80, 100]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpendAlerts {
    percents: [u8; 8],
    len: u8,
}

impl Default for SpendAlerts {
    fn default() -> Self {
        Self { percents: [50, 80, 100, 0, 0, 0, 0, 0], len: 3 }
    }
}

impl SpendAlerts {
    /// No thresholds: no alerts.
    pub const NONE: Self = Self { percents: [0; 8], len: 0 };

    /// These thresholds (1..=100 percent, at most eight; others are ignored), sorted.
    #[must_use]
    pub fn new(percents: &[u8]) -> Self {
        let mut alerts = Self::NONE;
        for &p in percents.iter().filter(|p| (1..=100).contains(*p)) {
            let len = usize::from(alerts.len);
            if len < alerts.percents.len() && !alerts.percents[..len].contains(&p) {
                alerts.percents[len] = p;
                alerts.len += 1;
            }
        }
        alerts.percents[..usize::from(alerts.len)].sort_unstable();
        alerts
    }

    /// The most thresholds a set holds.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        self.percents.len()
    }

    /// The thresholds, ascending.
    ///
    /// ```
    /// use keygate::events::SpendAlerts;
    /// assert_eq!(SpendAlerts::new(&[100, 0, 50, 50, 101]).percents(), [50, 100]);
    /// ```
    #[must_use]
    pub fn percents(&self) -> &[u8] {
        &self.percents[..usize::from(self.len)]
    }

    /// The thresholds crossed by spend going from `before` to `after` against `cap`: those with
    /// `before < cap * percent / 100 <= after`.
    pub fn crossed(&self, cap: u64, before: u64, after: u64) -> impl Iterator<Item = u8> + '_ {
        self.percents[..usize::from(self.len)].iter().copied().filter(move |&p| {
            let level = u128::from(cap) * u128::from(p) / 100;
            u128::from(before) < level && level <= u128::from(after)
        })
    }
}
