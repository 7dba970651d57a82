//! Per-key usage counters (requests, denials by code, tokens, spend) for the current day, ISO
//! week and month, served by `GET /v1/management/keys/{id}/usage`.
//!
//! In memory they are keygate's `UsageStats`, counted by this process. With
//! `--store postgres://…` every gateway adds its counts to one table (`keygate_usage`): they
//! are summed in this process and sent as one upsert a second (and before each `/usage`
//! answer and at shutdown), so every gateway answers with the same figures, each at most a
//! second behind the others' traffic.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use keygate::events::{DecisionEvent, EventSink, PeriodUsage, UsageEvent, UsageStats};
use keygate::{DenialCode, KeyId, SpendPeriod, Timestamp};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::wallet::format_usd;

/// How often counts reach PostgreSQL.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The counters, in this process or in PostgreSQL.
#[derive(Debug)]
pub(crate) enum Counters {
    Local(UsageStats),
    Postgres(Shared),
}

/// Counts not yet sent, by key and day (a day lies in one week and one month).
#[derive(Debug, Default)]
struct Pending {
    requests: u64,
    tokens: u64,
    spend_micros: u64,
    denials: HashMap<&'static str, u64>,
    last_used: Option<Timestamp>,
}

/// One upsert's rows, column by column (bound as arrays and read back with `UNNEST`).
#[derive(Default)]
struct Rows {
    keys: Vec<String>,
    periods: Vec<&'static str>,
    starts: Vec<i64>,
    counters: Vec<String>,
    values: Vec<i64>,
}

/// Counters in PostgreSQL.
#[derive(Debug)]
pub(crate) struct Shared {
    pool: PgPool,
    pending: Mutex<HashMap<(KeyId, u64), Pending>>,
}

impl Counters {
    pub(crate) fn local() -> Self {
        Self::Local(UsageStats::new())
    }

    pub(crate) fn postgres(pool: PgPool) -> Self {
        Self::Postgres(Shared { pool, pending: Mutex::new(HashMap::new()) })
    }

    fn add(&self, key: KeyId, at: Timestamp, f: impl FnOnce(&mut Pending)) {
        let Self::Postgres(shared) = self else { return };
        let day = SpendPeriod::Day.bounds(at).0.unix_secs();
        let mut pending = shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
        f(pending.entry((key, day)).or_default());
    }

    /// Sends the counts of this process to PostgreSQL (nothing to do in memory). Counts that
    /// could not be sent are kept for the next flush.
    pub(crate) async fn flush(&self) {
        let Self::Postgres(shared) = self else { return };
        let batch = std::mem::take(&mut *shared.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if batch.is_empty() {
            return;
        }
        let mut rows = Rows::default();
        for ((key, day), p) in &batch {
            let mut push = |period: &'static str, start: u64, counter: String, value: u64| {
                rows.keys.push(key.as_str().to_owned());
                rows.periods.push(period);
                rows.starts.push(i64::try_from(start).unwrap_or(i64::MAX));
                rows.counters.push(counter);
                rows.values.push(i64::try_from(value).unwrap_or(i64::MAX));
            };
            let at = Timestamp::from_unix_secs(*day);
            for (name, period) in
                [("day", SpendPeriod::Day), ("week", SpendPeriod::Week), ("month", SpendPeriod::Month)]
            {
                let start = period.bounds(at).0.unix_secs();
                let counts = [("requests", p.requests), ("tokens", p.tokens), ("spend_micros", p.spend_micros)];
                for (counter, value) in counts.into_iter().filter(|(_, v)| *v > 0) {
                    push(name, start, counter.to_owned(), value);
                }
                for (code, n) in &p.denials {
                    push(name, start, format!("denied:{code}"), *n);
                }
            }
            if let Some(t) = p.last_used {
                push("all", 0, "last_used_ms".to_owned(), t.unix_millis());
            }
        }
        let sent = sqlx::query(
            "INSERT INTO keygate_usage AS u (key_id, period, period_start, counter, value) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[]) \
             ON CONFLICT (key_id, period, period_start, counter) DO UPDATE SET value = \
             CASE WHEN u.counter = 'last_used_ms' THEN GREATEST(u.value, EXCLUDED.value) \
             ELSE u.value + EXCLUDED.value END",
        )
        .bind(&rows.keys)
        .bind(&rows.periods)
        .bind(&rows.starts)
        .bind(&rows.counters)
        .bind(&rows.values)
        .execute(&shared.pool)
        .await;
        if sent.is_err() {
            eprintln!("usage: {} counts could not be written; kept for the next flush", rows.keys.len());
            let mut pending = shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
            for (at, p) in batch {
                let into = pending.entry(at).or_default();
                into.requests += p.requests;
                into.tokens += p.tokens;
                into.spend_micros += p.spend_micros;
                for (code, n) in p.denials {
                    *into.denials.entry(code).or_default() += n;
                }
                into.last_used = into.last_used.max(p.last_used);
            }
        }
    }

    /// The key's usage as JSON (`{"day", "week", "month"}`) and its last use, as of `now`.
    ///
    /// # Errors
    ///
    /// PostgreSQL could not be read.
    pub(crate) async fn json(&self, key: &KeyId, now: Timestamp) -> Result<(Value, Option<Timestamp>), sqlx::Error> {
        let shared = match self {
            Self::Local(stats) => {
                let usage = stats.get(key, now).unwrap_or_default();
                let periods = json!({
                    "day": local_period(&usage.day),
                    "week": local_period(&usage.week),
                    "month": local_period(&usage.month),
                });
                return Ok((periods, usage.last_used));
            }
            Self::Postgres(shared) => shared,
        };
        self.flush().await;
        let starts = [SpendPeriod::Day, SpendPeriod::Week, SpendPeriod::Month].map(|p| p.bounds(now).0);
        let rows: Vec<(String, i64, String, i64)> = sqlx::query_as(
            "SELECT period, period_start, counter, value FROM keygate_usage WHERE key_id = $1 AND \
             ((period = 'day' AND period_start = $2) OR (period = 'week' AND period_start = $3) \
             OR (period = 'month' AND period_start = $4) OR period = 'all')",
        )
        .bind(key.as_str())
        .bind(secs(starts[0]))
        .bind(secs(starts[1]))
        .bind(secs(starts[2]))
        .fetch_all(&shared.pool)
        .await?;
        let mut periods = serde_json::Map::new();
        for (name, start) in ["day", "week", "month"].into_iter().zip(starts) {
            let value = |counter: &str| {
                rows.iter().find(|r| r.0 == name && r.2 == counter).map_or(0, |r| u64::try_from(r.3).unwrap_or(0))
            };
            let denials: serde_json::Map<String, Value> = rows
                .iter()
                .filter(|r| r.0 == name)
                .filter_map(|r| Some((r.2.strip_prefix("denied:")?.to_owned(), r.3.into())))
                .collect();
            let spend = i64::try_from(value("spend_micros")).unwrap_or(i64::MAX);
            let period = json!({
                "start": start.to_string(),
                "requests": value("requests"),
                "denials": denials,
                "tokens": value("tokens"),
                "spend_usd": format_usd(spend),
            });
            periods.insert(name.to_owned(), period);
        }
        let last_used = rows
            .iter()
            .find(|r| r.0 == "all" && r.2 == "last_used_ms")
            .and_then(|r| u64::try_from(r.3).ok())
            .map(Timestamp::from_unix_millis);
        Ok((Value::Object(periods), last_used))
    }
}

fn secs(t: Timestamp) -> i64 {
    i64::try_from(t.unix_secs()).unwrap_or(i64::MAX)
}

/// One period's counters as JSON; spend in exact USD text.
fn local_period(p: &PeriodUsage) -> Value {
    let denials: serde_json::Map<String, Value> =
        p.denials().map(|(code, n)| (code.as_str().to_owned(), n.into())).collect();
    json!({
        "start": p.start.to_string(),
        "requests": p.requests,
        "denials": denials,
        "tokens": p.tokens,
        "spend_usd": format_usd(i64::try_from(p.spend_micros).unwrap_or(i64::MAX)),
    })
}

impl EventSink for Counters {
    fn decision(&self, event: &DecisionEvent<'_>) {
        match self {
            Self::Local(stats) => stats.decision(event),
            Self::Postgres(_) => {
                // Only keys whose secret was proven: made-up kids cannot grow the table.
                let Some(key) = event.key.filter(|_| event.verified) else { return };
                let code: Option<DenialCode> = event.code;
                self.add(key, event.at, |p| match code {
                    Some(code) => *p.denials.entry(code.as_str()).or_default() += 1,
                    None => {
                        p.requests += 1;
                        p.last_used = p.last_used.max(Some(event.at));
                    }
                });
            }
        }
    }

    fn usage(&self, event: &UsageEvent<'_>) {
        match self {
            Self::Local(stats) => stats.usage(event),
            Self::Postgres(_) => self.add(event.key, event.at, |p| {
                p.tokens = p.tokens.saturating_add(u64::from(event.tokens));
                p.spend_micros = p.spend_micros.saturating_add(event.spend_micros);
            }),
        }
    }

    fn timed(&self) -> bool {
        false
    }
}
