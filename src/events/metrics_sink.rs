//! Events as counters and histograms through the `metrics` facade.

use alloc::string::ToString;

use super::{DecisionEvent, EventSink, SpendAlert, UsageEvent};

/// An [`EventSink`] that updates metrics through the `metrics` facade, for whatever exporter
/// the application installed (Prometheus, StatsD, …):
///
/// | metric | kind | labels |
/// |---|---|---|
/// | `keygate_decisions_total` | counter | `outcome` (`allowed` or the stable code) |
/// | `keygate_check_duration_seconds` | histogram | |
/// | `keygate_tokens_total` | counter | `kid` |
/// | `keygate_spend_micros_total` | counter | `kid` |
/// | `keygate_spend_alerts_total` | counter | `kid`, `percent` |
///
/// Per-key labels make one series per key that has usage: fine for thousands of keys; for
/// millions, aggregate elsewhere (for example with [`UsageStats`](super::UsageStats)).
/// Labels hold the public kid only.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsSink;

impl EventSink for MetricsSink {
    fn decision(&self, e: &DecisionEvent<'_>) {
        metrics::counter!("keygate_decisions_total", "outcome" => e.outcome()).increment(1);
        if let Some(latency) = e.latency {
            metrics::histogram!("keygate_check_duration_seconds").record(latency.as_secs_f64());
        }
    }

    fn usage(&self, e: &UsageEvent<'_>) {
        let kid = e.key.as_str().to_string();
        metrics::counter!("keygate_tokens_total", "kid" => kid.clone()).increment(u64::from(e.tokens));
        metrics::counter!("keygate_spend_micros_total", "kid" => kid).increment(e.spend_micros);
    }

    fn alert(&self, a: &SpendAlert<'_>) {
        metrics::counter!("keygate_spend_alerts_total", "kid" => a.key.as_str().to_string(), "percent" => a.percent.to_string())
            .increment(1);
    }
}
