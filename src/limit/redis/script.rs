//! The apply script's arguments and reply (the Lua is in `redis.lua`).
//!
//! ```text
//! EVALSHA <sha> 1 <prefix>:{<kid>}   <numbers>   "~" <field> ...
//! ```
//!
//! One call applies one or more batches of the same key, in order, each all-or-nothing: an
//! admission is one batch; the background sender puts up to [`MAX_PARTS`] queued settlements
//! of a key into one call. The numbers travel as one string of little-endian doubles: Redis's
//! Lua turns text into a number through `strtod`, about 0.3 µs a number. Fields are named once
//! per call and referred to by their index in the list. The stored state is decimal text, as
//! the earlier one-batch script wrote it, so both can share a key during an upgrade.
//!
//! The script works in whole microseconds since the epoch and in integers below 2^53, exact in
//! a double (until the year 2255), so it needs no split arithmetic. Everything that does not
//! depend on the stored state is computed here: a rate limit's emission interval `t` and
//! tolerance `tau` in microseconds (`t` rounded up, so a limit is never passed; `tau = t ·
//! (burst − 1)`), whether a request can never be admitted, `t · units`, every field's name.
//! Counters saturate at 2^53 − 1. On a refusal the script says which operations refused and
//! when each would admit; the refusal is combined here with the rule of
//! [`LimitBatch::evaluate`](super::LimitBatch) (the first code in decision-table order, the
//! longest wait, "never" dominating).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use redis::{Script, ScriptInvocation, Value};

use super::super::{Applied, CellId, LimitError, LimitOp, MAX_CELLS, Refused};
use crate::{DenialCode, Timestamp};

/// `LimitBatch::evaluate` in Lua.
pub(super) const LUA: &str = include_str!("redis.lua");

/// The most batches one call applies.
pub(super) const MAX_PARTS: usize = 32;
/// The largest number the script holds: 2^53 − 1.
pub(super) const MAX_NUMBER: u64 = (1 << 53) - 1;
/// The largest span (µs) passed for a rate limit: sums with a TAT stay below 2^53.
const MAX_SPAN_US: u64 = 1 << 51;
/// How much longer than it needs a key's TTL is set, so that it is set again only about once
/// a minute per key in use.
const SLACK_MILLIS: u64 = 60_000;
const NANOS_PER_MICRO: u64 = 1_000;
const NANOS_PER_MILLI: u64 = 1_000_000;

/// What the script did with one batch.
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

/// One batch of a call.
pub(super) struct Part<'a> {
    pub(super) cells: &'a [CellId],
    pub(super) ops: &'a [LimitOp],
    pub(super) now: Timestamp,
    /// A settlement applied only if the lease it releases is still held.
    pub(super) once: bool,
}

/// The call applying `parts`, in order, to the key whose hash is `hash`.
pub(super) struct Call<'a> {
    pub(super) hash: &'a str,
    pub(super) parts: &'a [Part<'a>],
    pub(super) lease_millis: u64,
    pub(super) grace_millis: u64,
    pub(super) instance: u64,
}

/// The script's arguments as they are built: the numbers and the fields they name.
struct Args {
    numbers: Vec<u8>,
    fields: Vec<String>,
}

impl Args {
    fn number(&mut self, v: u64) {
        // Exact: every number passed is below 2^53.
        #[allow(clippy::cast_precision_loss)]
        self.numbers.extend_from_slice(&(v as f64).to_le_bytes());
    }

    fn signed(&mut self, v: i64) {
        #[allow(clippy::cast_precision_loss)]
        self.numbers.extend_from_slice(&(v as f64).to_le_bytes());
    }

    /// The index (from 1) of `name` in the field list, added if it is not there yet.
    fn field(&mut self, name: String) -> u64 {
        let at = match self.fields.iter().position(|f| *f == name) {
            Some(at) => at,
            None => {
                self.fields.push(name);
                self.fields.len() - 1
            }
        };
        at as u64 + 1
    }
}

impl Call<'_> {
    /// The script's invocation.
    pub(super) fn invocation<'s>(&self, script: &'s Script) -> ScriptInvocation<'s> {
        let ops: usize = self.parts.iter().map(|p| p.ops.len()).sum();
        let mut args = Args {
            numbers: Vec::with_capacity(8 * (5 + 3 * self.parts.len() + 8 * ops)),
            fields: Vec::with_capacity(1 + 2 * ops),
        };
        args.fields.push(String::from("~"));
        let latest = self.parts.iter().map(|p| p.now).max().unwrap_or(Timestamp::from_unix_secs(0));
        args.number(latest.unix_nanos() / NANOS_PER_MICRO);
        args.number(self.lease_millis.saturating_add(self.grace_millis));
        args.number(self.grace_millis);
        args.number(self.parts.len() as u64);
        args.number(SLACK_MILLIS);
        for part in self.parts {
            args.number(part.now.unix_nanos() / NANOS_PER_MICRO);
            args.number(u64::from(part.once));
            args.number(part.ops.len() as u64);
            for (cell, op) in part.cells.iter().zip(part.ops) {
                self.push_op(&mut args, *cell, op);
            }
        }
        let mut invocation = script.prepare_invoke();
        invocation.key(self.hash).arg(args.numbers);
        for f in args.fields {
            invocation.arg(f);
        }
        invocation
    }

    /// Appends one operation's eight numbers: kind, field, aux, member, p1, p2, p3, window.
    fn push_op(&self, args: &mut Args, cell: CellId, op: &LimitOp) {
        let count = |v: u64| v.min(MAX_NUMBER);
        let ends = |at: Option<Timestamp>| at.map(|at| at.unix_nanos().div_ceil(NANOS_PER_MILLI));
        let name = field(cell);
        let (kind, p1, p2, p3): (u8, u64, u64, Option<u64>) = match *op {
            LimitOp::Rate { gcra, cost } => {
                let (t, tau) = gcra_parts(&gcra);
                let additional_ns = if cost > 1 { t.saturating_mul(u64::from(cost - 1)) } else { 0 };
                if additional_ns > tau || t == 0 {
                    (0, 0, 0, Some(0))
                } else {
                    let t_us = micros(t).min(MAX_SPAN_US);
                    let burst = u64::from(gcra.burst().max(1) - 1);
                    let tau_us = t_us.saturating_mul(burst).min(MAX_SPAN_US);
                    let additional_us = t_us.saturating_mul(u64::from(cost.max(1) - 1)).min(MAX_SPAN_US);
                    (if cost == 0 { 11 } else { 1 }, t_us, tau_us, Some(additional_us))
                }
            }
            LimitOp::RateCharge { gcra, units } => {
                (2, micros(gcra_parts(&gcra).0).saturating_mul(units).min(MAX_SPAN_US), 0, Some(0))
            }
            LimitOp::RateRefund { gcra, units } => {
                (3, micros(gcra_parts(&gcra).0).saturating_mul(units).min(MAX_SPAN_US), 0, Some(0))
            }
            LimitOp::Acquire { cap, lease } => return self.push_lease(args, 4, u64::from(cap), name, lease),
            LimitOp::Release { lease } => return self.push_lease(args, 5, 0, name, lease),
            LimitOp::Quota { cap, amount, resets_at } => (6, count(cap), count(amount), ends(resets_at)),
            LimitOp::Record { amount, resets_at } => (7, count(amount), 0, ends(resets_at)),
            LimitOp::Unrecord { amount, resets_at } => (8, count(amount), 0, ends(resets_at)),
            LimitOp::Reserve { cap, amount, resets_at } => (9, count(cap), count(amount), ends(resets_at)),
            LimitOp::Settle { reserved, used, resets_at } => (10, count(reserved), count(used), ends(resets_at)),
        };
        let windowed = cell.window != 0 && kind >= 6;
        let aux = if windowed { args.field(format!("{}@", cell.name)) } else { 0 };
        let fi = args.field(name);
        args.number(u64::from(kind));
        args.number(fi);
        args.number(aux);
        args.number(0);
        args.number(p1);
        args.number(p2);
        match p3 {
            Some(v) => args.number(v.min(MAX_NUMBER)),
            None => args.signed(-1),
        }
        args.number(if windowed { cell.window.min(MAX_NUMBER) } else { 0 });
    }

    /// Appends an acquire (kind 4) or release (5) of the lease `lease` in the concurrency cell
    /// `name`: its count, the lower bound of its deadlines `<name>#`, the lease `<name>#<member>`.
    fn push_lease(&self, args: &mut Args, kind: u64, cap: u64, name: String, lease: u64) {
        let leases = format!("{name}#");
        let held = format!("{name}#{}", member(self.instance, lease));
        let fi = args.field(name);
        let ai = args.field(leases);
        let mi = args.field(held);
        for v in [kind, fi, ai, mi, cap, 0, 0, 0] {
            args.number(v);
        }
    }

    /// The script's reply: one outcome per part, refusals combined as `LimitBatch::evaluate`
    /// combines them.
    pub(super) fn decode(&self, reply: &Value) -> Result<Vec<Reply>, LimitError> {
        let Value::Array(items) = reply else { return Err(LimitError::Corrupt) };
        let mut rest = items.as_slice();
        let mut replies = Vec::with_capacity(self.parts.len());
        for part in self.parts {
            let (reply, left) = decode_part(part, rest)?;
            replies.push(reply);
            rest = left;
        }
        if rest.is_empty() { Ok(replies) } else { Err(LimitError::Corrupt) }
    }
}

/// One part's outcome from the front of `items`, and the items after it.
fn decode_part<'v>(part: &Part<'_>, items: &'v [Value]) -> Result<(Reply, &'v [Value]), LimitError> {
    let n = part.ops.len();
    let status = match items.first() {
        Some(Value::Int(status)) => *status,
        _ => return Err(LimitError::Corrupt),
    };
    let len = match status {
        0 => 1 + n,
        1 => 1 + 2 * n,
        3 => return Ok((Reply::LeaseGone, &items[1..])),
        _ => return Err(LimitError::Corrupt),
    };
    if items.len() < len {
        return Err(LimitError::Corrupt);
    }
    let (this, rest) = items.split_at(len);
    let mut values = [0u64; MAX_CELLS];
    for ((v, item), op) in values.iter_mut().zip(&this[1..=n]).zip(part.ops) {
        let raw = integer(item)?;
        *v = if is_rate(op) { raw.saturating_mul(NANOS_PER_MICRO) } else { raw };
    }
    if status == 0 {
        return Ok((Reply::Decided(Ok(Applied::new(values))), rest));
    }
    let mut refusal: Option<(DenialCode, Option<Duration>)> = None;
    for (op, why) in part.ops.iter().zip(&this[1 + n..]) {
        let Value::Int(why) = *why else { return Err(LimitError::Corrupt) };
        if why == 0 {
            continue;
        }
        let code = refusal_code(op).ok_or(LimitError::Corrupt)?;
        let after = match why {
            -1 => None,
            -2 => resets_at(op).map(|at| at.saturating_duration_since(part.now)),
            earliest => {
                let earliest = u64::try_from(earliest).map_err(|_| LimitError::Corrupt)?;
                Some(Duration::from_nanos(
                    earliest.saturating_mul(NANOS_PER_MICRO).saturating_sub(part.now.unix_nanos()),
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
    Ok((Reply::Decided(Err(Refused::new(code, after, values))), rest))
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
