//! Events as `tracing` events, with stable field names.

use tracing::Level;

#[cfg(feature = "alloc")]
use super::SpendAlert;
use super::{DecisionEvent, EventSink, UsageEvent};
use crate::{DenialCode, KeyId};

/// An [`EventSink`] that emits each event as a `tracing` event.
///
/// Targets and levels: `keygate::decision` (allowed at `DEBUG`, denied at `INFO`,
/// `auth_unavailable` at `WARN`), `keygate::usage` (`DEBUG`), `keygate::alert` (`WARN`). Fields
/// (stable names): `outcome` (`allowed` or the code), `status`, `kid`, `verified`, `team`,
/// `route`, `model`, `provider`, `latency_us`; `tokens`, `spend_micros`, `period_spend_micros`;
/// `percent`, `cap_micros`, `period`. Never the secret or the token.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

fn kid(key: Option<&KeyId>) -> Option<&str> {
    key.map(KeyId::as_str)
}

impl EventSink for TracingSink {
    fn decision(&self, e: &DecisionEvent<'_>) {
        let latency_us = e.latency.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let status = e.code.map_or(200, DenialCode::status);
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(
                    target: "keygate::decision",
                    $level,
                    outcome = e.outcome(),
                    status,
                    kid = kid(e.key.as_ref()),
                    verified = e.verified,
                    team = e.team,
                    route = e.route,
                    model = e.model,
                    provider = e.provider,
                    latency_us,
                )
            };
        }
        match e.code {
            None => emit!(Level::DEBUG),
            Some(DenialCode::AuthUnavailable) => emit!(Level::WARN),
            Some(_) => emit!(Level::INFO),
        }
    }

    fn usage(&self, e: &UsageEvent<'_>) {
        tracing::event!(
            target: "keygate::usage",
            Level::DEBUG,
            kid = e.key.as_str(),
            team = e.team,
            tokens = e.tokens,
            spend_micros = e.spend_micros,
            period_spend_micros = e.period_spend,
        );
    }

    #[cfg(feature = "alloc")]
    fn alert(&self, a: &SpendAlert<'_>) {
        tracing::event!(
            target: "keygate::alert",
            Level::WARN,
            kid = a.key.as_str(),
            team = a.team,
            percent = a.percent,
            spend_micros = a.spend_micros,
            cap_micros = a.cap_micros,
            period = ?a.period,
        );
    }
}
