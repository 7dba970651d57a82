//! `RedisLimitStore` against a real Redis (`redis://127.0.0.1:6379`, or `KEYGATE_REDIS_URL`):
//! the Lua script against `MemoryLimitStore` on random batch sequences (the proof the port is
//! exact), the limit stage over Redis, exact counts under contention from two stores, the
//! concurrency lease, and failures (a closed port, killed connections).
//!
//! Every test uses its own random key prefix and deletes its keys. Without a reachable Redis the
//! tests print "not run: …" and pass, unless `KEYGATE_CI` is set: then they fail.
#![cfg(feature = "redis")]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::cast_possible_truncation)]

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use keygate::{
    Applied, CellId, CellState, DenialCode, Gcra, KeyId, KeyKind, KeyRecord, KeyShape, LimitBatch, LimitError,
    LimitName, LimitOp, LimitRequest, LimitStore, Limiter, MemoryLimitStore, RedisConfig, RedisLimitStore, Refused,
    SpendCap, SpendPeriod, StoredDigest, Timestamp, Usage,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// The server, prefixes, clean-up

fn url() -> String {
    std::env::var("KEYGATE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Whether Redis answers; probed once. Panics when it does not and `KEYGATE_CI` is set.
fn redis_up() -> bool {
    static UP: OnceLock<Result<(), String>> = OnceLock::new();
    let up = UP.get_or_init(|| {
        let probe = || -> redis::RedisResult<()> {
            let client = redis::Client::open(url())?;
            let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
            redis::cmd("PING").query::<String>(&mut conn).map(|_| ())
        };
        probe().map_err(|e| e.to_string())
    });
    match up {
        Ok(()) => true,
        Err(e) if std::env::var_os("KEYGATE_CI").is_some() => {
            panic!("Redis unreachable at {} and KEYGATE_CI is set: {e}", url())
        }
        Err(e) => {
            eprintln!("not run: Redis unreachable at {} ({e}); start redis-server or set KEYGATE_REDIS_URL", url());
            false
        }
    }
}

fn random() -> u64 {
    RandomState::new().hash_one(Instant::now())
}

fn admin() -> redis::Connection {
    let client = redis::Client::open(url()).expect("url");
    client.get_connection_with_timeout(Duration::from_secs(2)).expect("connection")
}

/// A unique key prefix whose keys are deleted when it is dropped.
struct Prefix(String);

impl Prefix {
    fn new() -> Self {
        Self(format!("kgtest-{:016x}", random()))
    }

    fn config(&self) -> RedisConfig {
        RedisConfig::default().with_prefix(&self.0).with_io_timeout(Duration::from_secs(2))
    }

    fn store(&self) -> RedisLimitStore {
        RedisLimitStore::open(&url(), self.config()).expect("store")
    }

    fn keys(&self, pattern: &str) -> Vec<String> {
        let mut conn = admin();
        let iter: redis::Iter<'_, String> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(format!("{}:{pattern}", self.0))
            .arg("COUNT")
            .arg(1000)
            .clone()
            .iter(&mut conn)
            .expect("scan");
        iter.map(|k| k.expect("key")).collect()
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let keys = self.keys("*");
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(&mut admin());
        }
    }
}

fn get(key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(&mut admin()).expect("GET")
}

fn pttl(key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(&mut admin()).expect("PTTL")
}

fn kid(s: &str) -> KeyId {
    KeyId::new(s).expect("valid id")
}

fn record(id: &str) -> KeyRecord {
    KeyRecord::new(kid(id), KeyShape::Selector, KeyKind::STANDARD, StoredDigest::sha256_of(b"unused"), T0)
}

const T0: Timestamp = Timestamp::from_unix_secs(1_800_000_000);

fn at(ms: u64) -> Timestamp {
    T0.saturating_add(Duration::from_millis(ms))
}

// ---------------------------------------------------------------------------------------------
// The differential test: the Lua script against LimitBatch::evaluate in MemoryLimitStore

/// The cells a sequence touches, each with the kinds of operation the limit stage uses on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Requests,
    Tokens,
    Concurrency,
    /// A spend counter per UTC day.
    Spend,
    /// A counter per hour (short periods, so that jumps cross them).
    Hourly,
    /// A lifetime counter (credits without refill).
    Credits,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Rate(Gcra, u32),
    Charge(Gcra, u64),
    Refund(Gcra, u64),
    Acquire(u32),
    Release,
    Quota(u64, u64),
    Record(u64),
    Unrecord(u64),
}

fn gcra() -> impl Strategy<Value = Gcra> {
    prop_oneof![
        (0u32..5).prop_map(Gcra::per_minute),
        prop::sample::select(vec![10u32, 60, 1_000, 90_000]).prop_map(Gcra::per_minute),
        (1u32..20).prop_map(Gcra::per_second),
        (1u32..8, 1u32..12).prop_map(|(n, b)| Gcra::per_minute(n).with_burst(b)),
        // A burst of 1: the earliest instant is the TAT itself (see Tick::ToTat).
        (1u32..8).prop_map(|n| Gcra::per_minute(n).with_burst(1)),
        (1u32..8).prop_map(|n| Gcra::per_minute(n).with_burst(1)),
        // Extremes: a 1 ns interval, the longest interval (2^61 ns), a huge burst.
        Just(Gcra::new(1_000, Duration::from_nanos(1))),
        Just(Gcra::new(1, Duration::from_secs(u64::MAX / 2))),
        Just(Gcra::per_second(1).with_burst(u32::MAX)),
    ]
}

fn units() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..200, 1 => Just(u64::MAX), 1 => (1u64 << 40)..(1u64 << 62)]
}

fn step_for(slot: Slot) -> BoxedStrategy<Step> {
    match slot {
        Slot::Requests | Slot::Tokens => prop_oneof![
            4 => (gcra(), prop_oneof![6 => 0u32..6, 2 => 6u32..100, 1 => Just(u32::MAX)])
                .prop_map(|(g, c)| Step::Rate(g, c)),
            1 => (gcra(), units()).prop_map(|(g, u)| Step::Charge(g, u)),
            1 => (gcra(), units()).prop_map(|(g, u)| Step::Refund(g, u)),
        ]
        .boxed(),
        Slot::Concurrency => prop_oneof![(0u32..4).prop_map(Step::Acquire), Just(Step::Release)].boxed(),
        Slot::Spend | Slot::Hourly | Slot::Credits => prop_oneof![
            3 => (prop_oneof![0u64..20, Just(keygate::MAX_STATE), Just(u64::MAX)], prop_oneof![0u64..8, Just(u64::MAX)])
                .prop_map(|(c, a)| Step::Quota(c, a)),
            2 => units().prop_map(Step::Record),
            1 => units().prop_map(Step::Unrecord),
        ]
        .boxed(),
    }
}

fn batch_steps() -> impl Strategy<Value = Vec<(Slot, Step)>> {
    let slots = vec![Slot::Requests, Slot::Tokens, Slot::Concurrency, Slot::Spend, Slot::Hourly, Slot::Credits];
    (1usize..=4).prop_flat_map(move |n| prop::sample::subsequence(slots.clone(), n).prop_shuffle()).prop_flat_map(
        |slots| slots.into_iter().map(|s| step_for(s).prop_map(move |step| (s, step))).collect::<Vec<_>>(),
    )
}

/// How the clock moves before a batch: by a random step (0, nanoseconds, minutes, days), or to
/// one nanosecond before or exactly onto a rate cell's TAT (the GCRA's boundaries).
#[derive(Debug, Clone, Copy)]
enum Tick {
    By(u64),
    ToTat(bool, bool),
}

fn tick() -> impl Strategy<Value = Tick> {
    prop_oneof![
        3 => Just(Tick::By(0)),
        3 => (0u64..2_000_000_000).prop_map(Tick::By),             // under 2 s, to the nanosecond
        2 => (0u64..120_000_000_000).prop_map(Tick::By),           // under 2 minutes
        1 => (0u64..(3 * 86_400 * 1_000_000_000)).prop_map(Tick::By), // days: new periods
        3 => (any::<bool>(), any::<bool>()).prop_map(|(tokens, early)| Tick::ToTat(tokens, early)),
    ]
}

fn advance(now: Timestamp, tick: Tick, memory: &MemoryLimitStore, key: &KeyId) -> Timestamp {
    let target = match tick {
        Tick::By(dt) => now.unix_nanos() + dt,
        Tick::ToTat(tokens, early) => {
            let name = if tokens { LimitName::TOKENS } else { LimitName::REQUESTS };
            let tat = memory.peek(key, CellId::new(name)).value;
            tat.saturating_sub(u64::from(early)).max(now.unix_nanos())
        }
    };
    Timestamp::from_unix_nanos(target)
}

/// The cell and the operation of one step at `now`.
fn cell_op(slot: Slot, step: Step, now: Timestamp) -> (CellId, LimitOp) {
    const HOUR: u64 = 3_600_000_000_000;
    let hour_start = now.unix_nanos() - now.unix_nanos() % HOUR;
    let (cell, resets_at) = match slot {
        Slot::Requests => (CellId::new(LimitName::REQUESTS), None),
        Slot::Tokens => (CellId::new(LimitName::TOKENS), None),
        Slot::Concurrency => (CellId::new(LimitName::CONCURRENCY), None),
        Slot::Spend => {
            let (start, end) = SpendPeriod::Day.bounds(now);
            (CellId::for_period(LimitName::SPEND, start), Some(end))
        }
        Slot::Hourly => {
            let name = LimitName::new("hourly").expect("name");
            (
                CellId::for_period(name, Timestamp::from_unix_nanos(hour_start)),
                Some(Timestamp::from_unix_nanos(hour_start + HOUR)),
            )
        }
        Slot::Credits => (CellId::new(LimitName::CREDITS), None),
    };
    let op = match step {
        Step::Rate(gcra, cost) => LimitOp::Rate { gcra, cost },
        Step::Charge(gcra, units) => LimitOp::RateCharge { gcra, units },
        Step::Refund(gcra, units) => LimitOp::RateRefund { gcra, units },
        Step::Acquire(cap) => LimitOp::Acquire { cap },
        Step::Release => LimitOp::Release,
        Step::Quota(cap, amount) => LimitOp::Quota { cap, amount, resets_at },
        Step::Record(amount) => LimitOp::Record { amount, resets_at },
        Step::Unrecord(amount) => LimitOp::Unrecord { amount, resets_at },
    };
    (cell, op)
}

/// Two Redis stores shared by every case (each case has its own key): one answering `apply`
/// with the script, one `update` with a closure running `LimitBatch::evaluate`.
struct Diff {
    _prefix: Prefix,
    script: RedisLimitStore,
    closure: RedisLimitStore,
}

fn diff_stores() -> &'static Diff {
    static STORES: OnceLock<Diff> = OnceLock::new();
    STORES.get_or_init(|| {
        let prefix = Prefix::new();
        // Keys must not expire in real time while the simulated clock runs ahead of it.
        let config = prefix.config().with_expiry_grace(Duration::from_secs(3_600));
        let script = RedisLimitStore::open(&url(), config.clone()).expect("store");
        let closure = RedisLimitStore::open(&url(), config.with_prefix(&format!("{}-u", prefix.0))).expect("store");
        Diff { _prefix: prefix, script, closure }
    })
}

struct CaseKeys {
    key: KeyId,
    cells: Vec<CellId>,
}

impl Drop for CaseKeys {
    fn drop(&mut self) {
        let stores = diff_stores();
        let keys: Vec<String> = [&stores.script, &stores.closure]
            .iter()
            .flat_map(|store| self.cells.iter().map(|c| store.redis_key(&self.key, *c)))
            .collect();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(&mut admin());
        }
    }
}

static CASE: AtomicUsize = AtomicUsize::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// At every step both stores give the same outcome: the same new values, or the same code,
    /// retry-after and unchanged values. This is the proof that the Lua port is exact.
    #[test]
    fn the_script_decides_exactly_as_evaluate(
        start in 1_600_000_000_000_000_000u64..2_000_000_000_000_000_000,
        steps in prop::collection::vec((tick(), batch_steps(), any::<bool>()), 1..14),
    ) {
        if !redis_up() {
            return Ok(());
        }
        let stores = diff_stores();
        let key = kid(&format!("diff{:012x}{}", random() & 0xffff_ffff_ffff, CASE.fetch_add(1, SeqCst)));
        let memory = MemoryLimitStore::new();
        let mut now = Timestamp::from_unix_nanos(start);
        // Deletes the case's keys however the case ends (a failed assertion returns early).
        let mut cleanup = CaseKeys { key, cells: Vec::new() };
        for (i, (tick, batch_steps, single)) in steps.into_iter().enumerate() {
            now = advance(now, tick, &memory, &key);
            let mut batch = LimitBatch::new();
            for (slot, step) in batch_steps {
                let (cell, op) = cell_op(slot, step, now);
                batch.push(cell, op).expect("distinct cells");
                cleanup.cells.push(cell);
            }
            let expected = memory.apply(&key, &batch, now).expect("memory");
            let got = stores.script.apply(&key, &batch, now).expect("redis apply");
            prop_assert_eq!(got, expected, "step {}: {:?} at {:?}", i, batch, now);
            let through_update = stores
                .closure
                .update(&key, batch.cells(), now, |cells: &mut [CellState]| batch.evaluate(cells, now))
                .expect("redis update");
            prop_assert_eq!(through_update, expected, "update, step {}", i);
            if single && batch.len() == 1 {
                // apply_one on both, as a second step at the same instant.
                let (cell, op) = (batch.cells()[0], batch.ops()[0]);
                let expected = memory.apply_one(&key, cell, op, now).expect("memory");
                let got = stores.script.apply_one(&key, cell, op, now).expect("redis apply_one");
                prop_assert_eq!(got, expected, "apply_one, step {}", i);
                let mut one = LimitBatch::new();
                one.push(cell, op).expect("one");
                let through_update = stores
                    .closure
                    .update(&key, &[cell], now, |cells: &mut [CellState]| one.evaluate(cells, now))
                    .expect("redis update");
                prop_assert_eq!(through_update.map(|a| a.value(0)), expected, "update one, step {}", i);
            }
        }
    }
}

/// The script holds u64s exactly where a double would not: a TAT near 2^63, and counters of
/// 2^53 + 1.
#[test]
fn values_beyond_2_pow_53_are_exact() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let store = p.store();
    let key = kid("bigvalues");
    let cell = CellId::new(LimitName::CREDITS);
    let big = (1u64 << 53) + 1;
    let record = LimitOp::Record { amount: big, resets_at: None };
    assert_eq!(store.apply_one(&key, cell, record, T0).unwrap(), Ok(big));
    assert_eq!(store.apply_one(&key, cell, record, T0).unwrap(), Ok(2 * big));
    assert_eq!(get(&store.redis_key(&key, cell)).as_deref(), Some("18014398509481986"));
    let quota = LimitOp::Quota { cap: 2 * big + 1, amount: 1, resets_at: None };
    assert_eq!(store.apply_one(&key, cell, quota, T0).unwrap(), Ok(2 * big + 1));
    let refused = store.apply_one(&key, cell, quota, T0).unwrap().unwrap_err();
    assert_eq!(
        (refused.code(), refused.retry_after(), refused.value(0)),
        (DenialCode::QuotaExceeded, None, 2 * big + 1)
    );

    // Late in 2262, one nanosecond apart.
    let late = Timestamp::from_unix_nanos(keygate::MAX_STATE - 1_000_000_000_000);
    let rate = LimitOp::Rate { gcra: Gcra::new(1, Duration::from_nanos(999_999_999_999)), cost: 1 };
    let tokens = CellId::new(LimitName::TOKENS);
    assert_eq!(store.apply_one(&key, tokens, rate, late).unwrap(), Ok(keygate::MAX_STATE - 1));
    let refused = store.apply_one(&key, tokens, rate, Timestamp::from_unix_nanos(late.unix_nanos() + 1)).unwrap();
    assert_eq!(refused.unwrap_err().retry_after(), Some(Duration::from_nanos(999_999_999_998)));
}

/// A key holding something other than a decimal state is `Corrupt`, and nothing is written.
#[test]
fn a_foreign_value_is_corrupt() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let store = p.store();
    let key = kid("corrupt");
    let requests = CellId::new(LimitName::REQUESTS);
    let tokens = CellId::new(LimitName::TOKENS);
    let mut conn = admin();
    let _: () = redis::cmd("SET").arg(store.redis_key(&key, tokens)).arg("12abc").query(&mut conn).unwrap();
    let mut batch = LimitBatch::new();
    batch.push(requests, LimitOp::Rate { gcra: Gcra::per_minute(5), cost: 1 }).unwrap();
    batch.push(tokens, LimitOp::Rate { gcra: Gcra::per_minute(5), cost: 1 }).unwrap();
    assert_eq!(store.apply(&key, &batch, T0), Err(LimitError::Corrupt));
    assert_eq!(get(&store.redis_key(&key, requests)), None, "all or nothing");
    let _: () =
        redis::cmd("SET").arg(store.redis_key(&key, tokens)).arg("9223372036854775808").query(&mut conn).unwrap();
    assert_eq!(store.apply(&key, &batch, T0), Err(LimitError::Corrupt), "above MAX_STATE");
    let _: () = redis::cmd("DEL").arg(store.redis_key(&key, tokens)).query(&mut conn).unwrap();
    let _: () = redis::cmd("LPUSH").arg(store.redis_key(&key, tokens)).arg("x").query(&mut conn).unwrap();
    assert_eq!(store.apply(&key, &batch, T0), Err(LimitError::Corrupt), "a list");
    assert_eq!(store.update(&key, &[tokens], T0, |_| Ok::<(), ()>(())), Err(LimitError::Corrupt));
}

// ---------------------------------------------------------------------------------------------
// Expiry

#[test]
fn keys_expire_as_the_states_say() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let store = p.store();
    let key = kid("expiry");
    let k = |c: CellId| store.redis_key(&key, c);
    // A rate cell lives until its TAT (20 s ahead after one of 3 per minute)...
    let requests = CellId::new(LimitName::REQUESTS);
    let rate = LimitOp::Rate { gcra: Gcra::per_minute(3), cost: 1 };
    assert_eq!(store.apply_one(&key, requests, rate, T0).unwrap(), Ok(at(20_000).unix_nanos()));
    assert!((19_900..=20_000).contains(&pttl(&k(requests))), "{}", pttl(&k(requests)));
    // ...rounded up to whole milliseconds.
    let tokens = CellId::new(LimitName::TOKENS);
    let odd = LimitOp::Rate { gcra: Gcra::new(1, Duration::from_nanos(5_000_000_001)), cost: 1 };
    store.apply_one(&key, tokens, odd, T0).unwrap().unwrap();
    assert!((4_900..=5_001).contains(&pttl(&k(tokens))), "{}", pttl(&k(tokens)));
    // A refund back to now leaves nothing worth keeping: the key goes.
    let refund = LimitOp::RateRefund { gcra: Gcra::per_minute(3), units: 5 };
    assert_eq!(store.apply_one(&key, requests, refund, T0).unwrap(), Ok(T0.unix_nanos()));
    assert_eq!(get(&k(requests)), None);

    // A period counter lives until its period ends; a lifetime counter persists; 0 deletes.
    let (start, end) = SpendPeriod::Day.bounds(at(3_600_000));
    let spend = CellId::for_period(LimitName::SPEND, start);
    let now = at(3_600_000);
    store.apply_one(&key, spend, LimitOp::Record { amount: 7, resets_at: Some(end) }, now).unwrap().unwrap();
    let left = end.saturating_duration_since(now).as_millis() as i64;
    assert!((left - 100..=left).contains(&pttl(&k(spend))), "{} vs {left}", pttl(&k(spend)));
    let credits = CellId::new(LimitName::CREDITS);
    store.apply_one(&key, credits, LimitOp::Record { amount: 1, resets_at: None }, now).unwrap().unwrap();
    assert_eq!(pttl(&k(credits)), -1);
    store.apply_one(&key, credits, LimitOp::Unrecord { amount: 5, resets_at: None }, now).unwrap().unwrap();
    assert_eq!(pttl(&k(credits)), -2, "0 is absent");
}

/// An acquired slot that is never released (its process died) comes back after the lease.
#[test]
fn a_leaked_concurrency_slot_comes_back_after_the_lease() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let store = RedisLimitStore::open(&url(), p.config().with_concurrency_lease(Duration::from_millis(300))).unwrap();
    let key = kid("lease");
    let cell = CellId::new(LimitName::CONCURRENCY);
    let acquire = LimitOp::Acquire { cap: 2 };
    assert_eq!(store.apply_one(&key, cell, acquire, T0).unwrap(), Ok(1));
    assert_eq!(store.apply_one(&key, cell, acquire, T0).unwrap(), Ok(2));
    assert!((200..=300).contains(&pttl(&store.redis_key(&key, cell))));
    // Release keeps the lease (KEEPTTL) rather than making the cell permanent.
    assert_eq!(store.apply_one(&key, cell, LimitOp::Release, T0).unwrap(), Ok(1));
    let left = pttl(&store.redis_key(&key, cell));
    assert!((1..=300).contains(&left), "{left}");
    assert_eq!(store.apply_one(&key, cell, acquire, T0).unwrap(), Ok(2));
    let refused = store.apply_one(&key, cell, acquire, T0).unwrap().unwrap_err();
    assert_eq!((refused.code(), refused.retry_after()), (DenialCode::ConcurrencyLimited, None));
    // Both holders die: nobody releases. After the lease the slots are free again.
    std::thread::sleep(Duration::from_millis(450));
    assert_eq!(store.apply_one(&key, cell, acquire, T0).unwrap(), Ok(1));
}

// ---------------------------------------------------------------------------------------------
// The limit stage over Redis

#[test]
fn requests_per_minute_admit_and_deny_exactly() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let limiter = Limiter::new(p.store());
    let mut r = record("rpmkey");
    r.rate_limit.requests_per_minute = Some(3);
    // (ms, admitted?, retry-after in ms when refused)
    let script: &[(u64, bool, u64)] = &[
        (0, true, 0),
        (0, true, 0),
        (0, true, 0),
        (0, false, 20_000),
        (19_999, false, 1),
        (20_000, true, 0),
        (20_000, false, 20_000),
        (60_000, true, 0),
        (60_000, true, 0),
        (60_000, false, 20_000),
        (3_600_000, true, 0),
    ];
    for &(ms, admitted, retry) in script {
        match limiter.check(&r, LimitRequest::new(), at(ms)) {
            Ok(a) => {
                assert!(admitted, "admitted at {ms} ms");
                a.finish(Usage::default(), at(ms)).unwrap();
            }
            Err(d) => {
                assert!(!admitted, "refused at {ms} ms: {d:?}");
                assert_eq!(d.code(), DenialCode::RateLimited);
                assert_eq!(d.retry_after(), Some(Duration::from_millis(retry)), "at {ms} ms");
            }
        }
    }
}

#[test]
fn tokens_are_estimated_then_reconciled() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let limiter = Limiter::new(p.store());
    let mut r = record("tokenskey");
    r.rate_limit.requests_per_minute = Some(100);
    r.rate_limit.tokens_per_minute = Some(10_000);
    let a = limiter.check(&r, LimitRequest::new().with_tokens(8_000), T0).unwrap();
    assert_eq!(a.rate_limit().unwrap().tokens().unwrap().remaining(), 2_000);
    // 8 000 estimated are taken: 3 000 more do not fit.
    assert_eq!(
        limiter.check(&r, LimitRequest::new().with_tokens(3_000), T0).unwrap_err().code(),
        DenialCode::RateLimited
    );
    // The request used 1 000: 7 000 go back.
    a.finish(Usage::new(1_000, 0), T0).unwrap();
    let b = limiter.check(&r, LimitRequest::new().with_tokens(9_000), T0).unwrap();
    assert_eq!(b.rate_limit().unwrap().tokens().unwrap().remaining(), 0);
    // It used 12 000, 3 000 beyond its estimate: the key is in debt and refused a cost-0 request.
    b.finish(Usage::new(12_000, 0), T0).unwrap();
    let refused = limiter.check(&r, LimitRequest::new(), T0).unwrap_err();
    assert_eq!(refused.code(), DenialCode::RateLimited);
    // The TAT is 78 s ahead (13 000 tokens at 6 ms), the tolerance 9 999 tokens' time (59.994 s).
    assert_eq!(refused.retry_after(), Some(Duration::from_millis(18_006)));
    assert_eq!(limiter.check(&r, LimitRequest::new(), at(18_005)).unwrap_err().code(), DenialCode::RateLimited);
    assert!(limiter.check(&r, LimitRequest::new(), at(18_006)).is_ok());
}

#[test]
fn a_refused_batch_takes_nothing() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let store = p.store();
    let requests_key = store.redis_key(&kid("allornothing"), CellId::new(LimitName::REQUESTS));
    let limiter = Limiter::new(store);
    let mut r = record("allornothing");
    r.rate_limit.requests_per_minute = Some(2);
    r.rate_limit.tokens_per_minute = Some(100);
    // 500 tokens exceed the burst: refused for good, and the request is not counted.
    let refused = limiter.check(&r, LimitRequest::new().with_tokens(500), T0).unwrap_err();
    assert_eq!((refused.code(), refused.retry_after()), (DenialCode::RateLimited, None));
    assert_eq!(get(&requests_key), None);
    for _ in 0..2 {
        limiter.check(&r, LimitRequest::new().with_tokens(10), T0).unwrap().finish(Usage::new(10, 0), T0).unwrap();
    }
    assert_eq!(get(&requests_key), Some(at(60_000).unix_nanos().to_string()));
    assert_eq!(limiter.check(&r, LimitRequest::new().with_tokens(10), T0).unwrap_err().code(), DenialCode::RateLimited);
}

#[test]
fn a_concurrency_permit_is_released_when_dropped() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let limiter = Limiter::new(p.store());
    let mut r = record("permits");
    r.rate_limit.concurrency = Some(2);
    let a = limiter.check(&r, LimitRequest::new(), T0).unwrap();
    let b = limiter.check(&r, LimitRequest::new(), T0).unwrap();
    assert!(a.holds_permit() && b.holds_permit());
    let refused = limiter.check(&r, LimitRequest::new(), T0).unwrap_err();
    assert_eq!((refused.code(), refused.retry_after()), (DenialCode::ConcurrencyLimited, None));
    drop(a); // a cancelled request
    let c = limiter.check(&r, LimitRequest::new(), T0).unwrap();
    b.finish(Usage::default(), T0).unwrap();
    drop(c);
    let key = limiter.store().redis_key(&r.id, CellId::new(LimitName::CONCURRENCY));
    assert_eq!(get(&key), None, "every slot back");
}

#[test]
fn a_spend_cap_refuses_with_retry_after_until_the_period_ends() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let limiter = Limiter::new(p.store());
    let mut r = record("spender");
    r.spend_cap = Some(SpendCap { amount_micros: 10, period: SpendPeriod::Day });
    let now = at(3_600_000);
    let a = limiter.check(&r, LimitRequest::new(), now).unwrap();
    assert_eq!(a.finish(Usage::new(0, 6), now).unwrap().period_spend, Some(6));
    let b = limiter.check(&r, LimitRequest::new(), now).unwrap();
    assert_eq!(b.finish(Usage::new(0, 6), now).unwrap().period_spend, Some(12));
    let refused = limiter.check(&r, LimitRequest::new(), now).unwrap_err();
    assert_eq!(refused.code(), DenialCode::QuotaExceeded);
    let (_, end) = SpendPeriod::Day.bounds(now);
    assert_eq!(refused.retry_after(), Some(end.saturating_duration_since(now)));
    assert!(limiter.check(&r, LimitRequest::new(), end).is_ok(), "a new day");
}

// ---------------------------------------------------------------------------------------------
// Contention: two stores (two processes) and several threads each on one key

fn hammer(limit: u32, attempts_per_thread: usize, check: impl Fn() -> bool + Sync) -> usize {
    let admitted = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..attempts_per_thread {
                    if check() {
                        admitted.fetch_add(1, SeqCst);
                    }
                }
            });
        }
    });
    let n = admitted.load(SeqCst);
    assert!(attempts_per_thread * 8 > limit as usize);
    n
}

#[test]
fn two_stores_admit_exactly_the_limit_under_contention() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let stores = [Limiter::new(p.store()), Limiter::new(p.store())];
    let next = AtomicUsize::new(0);
    // One rate limit (the single-cell path) and requests + tokens (the batch path).
    let mut single = record("contended1");
    single.rate_limit.requests_per_minute = Some(50);
    let mut both = record("contended2");
    both.rate_limit.requests_per_minute = Some(50);
    both.rate_limit.tokens_per_minute = Some(1_000_000);
    for r in [&single, &both] {
        let admitted = hammer(50, 25, || {
            let limiter = &stores[next.fetch_add(1, SeqCst) % 2];
            limiter.check(r, LimitRequest::new().with_tokens(10), T0).is_ok()
        });
        assert_eq!(admitted, 50, "{:?}", r.id);
    }
}

#[test]
fn the_closure_form_is_exact_under_contention() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let stores = [p.store(), p.store()];
    let next = AtomicUsize::new(0);
    let key = kid("casquota");
    let cells = [CellId::new(LimitName::CREDITS), CellId::new(LimitName::REQUESTS)];
    let mut batch = LimitBatch::new();
    batch.push(cells[0], LimitOp::Quota { cap: 40, amount: 1, resets_at: None }).unwrap();
    batch.push(cells[1], LimitOp::Record { amount: 1, resets_at: None }).unwrap();
    let admitted = hammer(40, 10, || {
        let store = &stores[next.fetch_add(1, SeqCst) % 2];
        store.update(&key, &cells, T0, |c: &mut [CellState]| batch.evaluate(c, T0)).expect("update").is_ok()
    });
    assert_eq!(admitted, 40);
    let stored: Vec<Option<String>> = cells.iter().map(|c| get(&stores[0].redis_key(&key, *c))).collect();
    assert_eq!(stored, [Some("40".to_owned()), Some("40".to_owned())], "both cells, all or nothing");
}

// ---------------------------------------------------------------------------------------------
// Failures

#[test]
fn an_unreachable_server_fails_fast_and_closed() {
    let config = RedisConfig::default()
        .with_connect_timeout(Duration::from_millis(200))
        .with_io_timeout(Duration::from_millis(200));
    let store = RedisLimitStore::open("redis://127.0.0.1:1", config).expect("a valid URL opens without connecting");
    let key = kid("nowhere");
    let started = Instant::now();
    let err = store.apply_one(&key, CellId::new(LimitName::REQUESTS), LimitOp::Release, T0).unwrap_err();
    assert!(matches!(err, LimitError::Unavailable | LimitError::Timeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());

    let limiter = Limiter::new(store);
    let mut r = record("nowhere");
    r.rate_limit.requests_per_minute = Some(10);
    let denial = limiter.check(&r, LimitRequest::new(), T0).unwrap_err();
    assert_eq!(denial.code(), DenialCode::AuthUnavailable);
    assert_eq!(denial.code().status(), 503);
    let limiter = limiter.fail_open();
    assert!(limiter.check(&r, LimitRequest::new(), T0).unwrap().is_fail_open());
}

#[test]
fn a_store_reconnects_after_its_connections_are_killed() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let name = format!("kgkill-{:x}", random());
    let store = RedisLimitStore::open(&url(), p.config().with_client_name(&name)).unwrap();
    let key = kid("killed");
    let cell = CellId::new(LimitName::CREDITS);
    let op = LimitOp::Record { amount: 1, resets_at: None };
    let mut conn = admin();
    let named = |conn: &mut redis::Connection| -> Vec<String> {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(conn).unwrap();
        list.lines()
            .filter(|l| l.split(' ').any(|f| f == format!("name={name}")))
            .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")).map(str::to_owned))
            .collect()
    };
    // Calls from several threads at once, until the pool holds at least two connections.
    let mut calls = 0;
    while named(&mut conn).len() < 2 {
        assert!(calls < 400, "never two connections at once");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| store.apply_one(&key, cell, op, T0).unwrap().unwrap());
            }
        });
        calls += 4;
    }
    for id in named(&mut conn) {
        let _: i64 = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query(&mut conn).unwrap();
    }
    // The call that finds its connection dead fails (it is not retried at once: the script may
    // have run) and drops every idle connection (as dead). Being a settlement (spend recorded),
    // it is kept, and sent again, with its marker, before the next call, on a fresh connection:
    // nothing recorded is lost.
    assert_eq!(store.apply_one(&key, cell, op, T0), Err(LimitError::Unavailable));
    assert_eq!(store.pending_settlements(), 1);
    assert_eq!(store.apply_one(&key, cell, op, T0), Ok(Ok(calls + 2)));
    assert_eq!(store.pending_settlements(), 0);
    assert_eq!(store.dropped_settlements(), 0);
    assert_eq!(named(&mut conn).len(), 1);
}

/// A settlement sent twice (its first reply lost) counts once: the script writes the batch only
/// if the settlement's marker did not exist, and keeps the marker for the replay window.
#[test]
fn a_settlement_sent_twice_counts_once() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let script = redis::Script::new(include_str!("../src/limit/redis.lua"));
    let cell = format!("{}:{{k}}:spend:0", p.0);
    let marker = format!("{}:{{k}}:settled:1", p.0);
    let mut conn = admin();
    let record = |conn: &mut redis::Connection| -> redis::Value {
        // record 5 micro-units, lifetime counter; marker kept for 60 s.
        script
            .key(&cell)
            .key(&marker)
            .arg(1_800_000_000u64)
            .arg(0)
            .arg(1000)
            .arg(0)
            .arg(7)
            .arg(5)
            .arg("")
            .arg("")
            .arg("")
            .arg(60_000)
            .invoke(conn)
            .unwrap()
    };
    let first = record(&mut conn);
    assert_eq!(first, redis::Value::Array(vec![redis::Value::Int(0), redis::Value::BulkString(b"5".to_vec())]));
    let again = record(&mut conn);
    assert_eq!(again, redis::Value::Array(vec![redis::Value::Int(3)]));
    let stored: String = redis::cmd("GET").arg(&cell).query(&mut conn).unwrap();
    assert_eq!(stored, "5");
    let ttl: i64 = redis::cmd("PTTL").arg(&marker).query(&mut conn).unwrap();
    assert!((1..=60_000).contains(&ttl), "{ttl}");
}

// ---------------------------------------------------------------------------------------------
// Sanity of the helpers above: an outcome type comparison cannot pass vacuously.

#[test]
fn outcomes_compare_by_value() {
    let a = Applied::new([1, 0, 0, 0, 0, 0]);
    assert_ne!(a, Applied::new([2, 0, 0, 0, 0, 0]));
    let r = Refused::new(DenialCode::RateLimited, None, [0; 6]);
    assert_ne!(r, Refused::new(DenialCode::RateLimited, Some(Duration::ZERO), [0; 6]));
}
