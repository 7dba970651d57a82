//! The apply script's arguments and reply (the Lua is in `redis.lua`).
//!
//! ```text
//! EVALSHA <sha> 1 <prefix>:{<kid>}   now_us lease_ms grace_ms once   (kind field p1 p2 p3) × N
//! ```
//!
//! The script works in whole microseconds since the epoch and in integers below 2^53, exact in
//! a Lua double (until the year 2255), so it needs no split arithmetic. Everything that does not
//! depend on the stored state is computed here: a rate limit's emission interval `t` and
//! tolerance `tau` in microseconds (`t` rounded up, so a limit is never passed; `tau = t ·
//! (burst − 1)`), whether a request can never be admitted, `t · units`. Counters saturate at
//! 2^53 − 1. On a refusal the script says which operations refused and when each would admit;
//! the refusal is combined here with the rule of [`LimitBatch::evaluate`](super::LimitBatch)
//! (the first code in decision-table order, the longest wait, "never" dominating).

use alloc::format;
use alloc::string::String;
use core::time::Duration;

use redis::{Script, ScriptInvocation, Value};

use super::super::{Applied, CellId, LimitError, LimitOp, MAX_CELLS, Refused};
use crate::{DenialCode, Timestamp};

/// `LimitBatch::evaluate` in Lua.
pub(super) const LUA: &str = include_str!("redis.lua");

/// The largest number the script holds: 2^53 − 1.
pub(super) const MAX_NUMBER: u64 = (1 << 53) - 1;
/// The largest span (µs) passed for a rate limit: sums with a TAT stay below 2^53.
const MAX_SPAN_US: u64 = 1 << 51;
const NANOS_PER_MICRO: u64 = 1_000;
const NANOS_PER_MILLI: u64 = 1_000_000;

/// What a call of the script decided.
pub(super) enum Reply {
    Decided(Result<Applied, Refused>),
    /// A settlement whose lease was no longer held: nothing was done.
    LeaseGone,
}

/// The hash field of `cell`: its limit's name, with `@<window>` for a window other than 0.
fn field(cell: CellId) -> String {
    if cell.window == 0 { String::from(cell.name.as_str()) } else { format!("{}@{}", cell.name, cell.window) }
}

/// The member of a lease in a concurrency cell: unique across processes (the store's random
/// instance id) and admissions (the lease).
fn member(instance: u64, lease: u64) -> String {
    format!("{instance:016x}.{lease:x}")
}

const fn micros(nanos: u64) -> u64 {
    nanos.div_ceil(NANOS_PER_MICRO)
}

/// The call applying `ops` to `cells` of the key whose hash is `hash`.
pub(super) struct Call<'a> {
    pub(super) hash: &'a str,
    pub(super) cells: &'a [CellId],
    pub(super) ops: &'a [LimitOp],
    pub(super) now: Timestamp,
    pub(super) lease_millis: u64,
    pub(super) grace_millis: u64,
    /// A settlement applied only if the lease it releases is still held.
    pub(super) once: bool,
    pub(super) instance: u64,
}

impl Call<'_> {
    /// The script's invocation.
    pub(super) fn invocation<'s>(&self, script: &'s Script) -> ScriptInvocation<'s> {
        let mut invocation = script.prepare_invoke();
        invocation.key(self.hash);
        invocation
            .arg(self.now.unix_nanos() / NANOS_PER_MICRO)
            .arg(self.lease_millis.saturating_add(self.grace_millis))
            .arg(self.grace_millis)
            .arg(if self.once { "1" } else { "0" });
        for (cell, op) in self.cells.iter().zip(self.ops) {
            self.push_op(&mut invocation, *cell, op);
        }
        invocation
    }

    /// Appends one operation's five arguments: kind, field, p1, p2, p3.
    fn push_op(&self, invocation: &mut ScriptInvocation<'_>, cell: CellId, op: &LimitOp) {
        let count = |v: u64| v.min(MAX_NUMBER);
        let ends = |at: Option<Timestamp>| at.map(|at| at.unix_nanos().div_ceil(NANOS_PER_MILLI));
        let (kind, p1, p2, p3): (u8, Option<u64>, Option<u64>, Option<u64>) = match *op {
            LimitOp::Rate { gcra, cost } => {
                let (t, tau) = gcra_parts(&gcra);
                let additional_ns = if cost > 1 { t.saturating_mul(u64::from(cost - 1)) } else { 0 };
                if additional_ns > tau || t == 0 {
                    (0, None, None, None)
                } else {
                    let t_us = micros(t).min(MAX_SPAN_US);
                    let burst = u64::from(gcra.burst().max(1) - 1);
                    let tau_us = t_us.saturating_mul(burst).min(MAX_SPAN_US);
                    let additional_us = t_us.saturating_mul(u64::from(cost.max(1) - 1)).min(MAX_SPAN_US);
                    (if cost == 0 { 11 } else { 1 }, Some(t_us), Some(tau_us), Some(additional_us))
                }
            }
            LimitOp::RateCharge { gcra, units } => {
                (2, Some(micros(gcra_parts(&gcra).0).saturating_mul(units).min(MAX_SPAN_US)), None, None)
            }
            LimitOp::RateRefund { gcra, units } => {
                (3, Some(micros(gcra_parts(&gcra).0).saturating_mul(units).min(MAX_SPAN_US)), None, None)
            }
            LimitOp::Acquire { cap, lease } => {
                invocation.arg(4).arg(field(cell)).arg(cap).arg(member(self.instance, lease)).arg("");
                return;
            }
            LimitOp::Release { lease } => {
                invocation.arg(5).arg(field(cell)).arg("").arg(member(self.instance, lease)).arg("");
                return;
            }
            LimitOp::Quota { cap, amount, resets_at } => (6, Some(count(cap)), Some(count(amount)), ends(resets_at)),
            LimitOp::Record { amount, resets_at } => (7, Some(count(amount)), None, ends(resets_at)),
            LimitOp::Unrecord { amount, resets_at } => (8, Some(count(amount)), None, ends(resets_at)),
            LimitOp::Reserve { cap, amount, resets_at } => (9, Some(count(cap)), Some(count(amount)), ends(resets_at)),
            LimitOp::Settle { reserved, used, resets_at } => {
                (10, Some(count(reserved)), Some(count(used)), ends(resets_at))
            }
        };
        invocation.arg(kind).arg(field(cell));
        for p in [p1, p2, p3] {
            match p {
                Some(v) => invocation.arg(v),
                None => invocation.arg(""),
            };
        }
    }

    /// The script's reply as an outcome, combining refusals as `LimitBatch::evaluate` does.
    pub(super) fn decode(&self, reply: &Value) -> Result<Reply, LimitError> {
        let Value::Array(items) = reply else { return Err(LimitError::Corrupt) };
        let n = self.ops.len();
        let status = match items.first() {
            Some(Value::Int(status)) => *status,
            _ => return Err(LimitError::Corrupt),
        };
        let expected = match status {
            0 => 1 + n,
            1 => 1 + 2 * n,
            3 if items.len() == 1 => return Ok(Reply::LeaseGone),
            _ => return Err(LimitError::Corrupt),
        };
        if items.len() != expected {
            return Err(LimitError::Corrupt);
        }
        let mut values = [0u64; MAX_CELLS];
        for ((v, item), op) in values.iter_mut().zip(&items[1..=n]).zip(self.ops) {
            let raw = integer(item)?;
            *v = if is_rate(op) { raw.saturating_mul(NANOS_PER_MICRO) } else { raw };
        }
        if status == 0 {
            return Ok(Reply::Decided(Ok(Applied::new(values))));
        }
        let mut refusal: Option<(DenialCode, Option<Duration>)> = None;
        for (op, why) in self.ops.iter().zip(&items[1 + n..]) {
            let Value::Int(why) = *why else { return Err(LimitError::Corrupt) };
            if why == 0 {
                continue;
            }
            let code = refusal_code(op).ok_or(LimitError::Corrupt)?;
            let after = match why {
                -1 => None,
                -2 => resets_at(op).map(|at| at.saturating_duration_since(self.now)),
                earliest => {
                    let earliest = u64::try_from(earliest).map_err(|_| LimitError::Corrupt)?;
                    Some(Duration::from_nanos(
                        earliest.saturating_mul(NANOS_PER_MICRO).saturating_sub(self.now.unix_nanos()),
                    ))
                }
            };
            refusal = Some(match refusal {
                None => (code, after),
                Some((prev_code, prev_after)) => (
                    if code < prev_code { code } else { prev_code },
                    match (prev_after, after) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    },
                ),
            });
        }
        let (code, after) = refusal.ok_or(LimitError::Corrupt)?;
        Ok(Reply::Decided(Err(Refused::new(code, after, values))))
    }
}

/// The emission interval and tolerance of `gcra`, in nanoseconds, as `Gcra` holds them.
fn gcra_parts(gcra: &super::super::Gcra) -> (u64, u64) {
    const MAX_SPAN: u64 = 1 << 61;
    let t = u64::try_from(gcra.emission_interval().as_nanos()).unwrap_or(MAX_SPAN);
    let tau = t.saturating_mul(u64::from(gcra.burst().max(1) - 1)).min(MAX_SPAN);
    (t, tau)
}

const fn is_rate(op: &LimitOp) -> bool {
    matches!(op, LimitOp::Rate { .. } | LimitOp::RateCharge { .. } | LimitOp::RateRefund { .. })
}

const fn resets_at(op: &LimitOp) -> Option<Timestamp> {
    match *op {
        LimitOp::Quota { resets_at, .. } | LimitOp::Reserve { resets_at, .. } => resets_at,
        _ => None,
    }
}

/// The code an operation refuses with (the same as `LimitOp::apply`'s).
const fn refusal_code(op: &LimitOp) -> Option<DenialCode> {
    match op {
        LimitOp::Rate { .. } => Some(DenialCode::RateLimited),
        LimitOp::Acquire { .. } => Some(DenialCode::ConcurrencyLimited),
        LimitOp::Quota { .. } | LimitOp::Reserve { .. } => Some(DenialCode::QuotaExceeded),
        _ => None,
    }
}

fn integer(value: &Value) -> Result<u64, LimitError> {
    match *value {
        Value::Int(v) => u64::try_from(v).map_err(|_| LimitError::Corrupt),
        _ => Err(LimitError::Corrupt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::LimitName;

    #[test]
    fn fields_name_the_window_only_when_there_is_one() {
        assert_eq!(field(CellId::new(LimitName::REQUESTS)), "requests");
        let day = CellId::for_period(LimitName::SPEND, Timestamp::from_unix_secs(1_767_225_600));
        assert_eq!(field(day), "spend@1767225600");
    }

    #[test]
    fn refusal_codes_follow_the_decision_table() {
        assert!(DenialCode::RateLimited < DenialCode::ConcurrencyLimited);
        assert!(DenialCode::ConcurrencyLimited < DenialCode::QuotaExceeded);
    }
}
