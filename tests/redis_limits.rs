//! `RedisLimitStore` against a real Redis (`KEYGATE_REDIS_URL`, or a throwaway server the tests
//! start: `tests/support/servers.rs`) and a real three-node Redis Cluster: the Lua script against
//! `MemoryLimitStore` on random batch sequences (the proof the port is exact), the limit stage
//! over Redis, exact counts under contention from two stores, settlements applied exactly once,
//! one Redis key per API key, a bounded queue, and failures (a closed port, Redis killed under
//! load and restarted).
//!
//! Every test uses its own random key prefix and deletes its keys. Without Redis the tests say
//! so and pass, unless `KEYGATE_CI` is set: then they fail.
#![cfg(feature = "redis")]
#![allow(
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc,
    clippy::cast_possible_truncation,
    clippy::unwrap_used
)]

mod support;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use keygate::limit::{AsyncLimitStore, CellId, Gcra, LimitBatch, LimitError, LimitName, LimitOp, Limiter, RedisConfig};
use keygate::record::KeyShape;
use keygate::secret::StoredDigest;
use keygate::{
    Credits, DenialCode, KeyId, KeyKind, KeyRecord, LimitRequest, LimitStore, MemoryLimitStore, RedisLimitStore,
    SpendCap, SpendPeriod, Timestamp, Usage,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// The servers, a runtime, prefixes, clean-up

fn url() -> String {
    support::servers::redis_url().expect("Redis").to_owned()
}

/// Whether there is a Redis to test against (when there is none, the support module says so,
/// and fails the test when `KEYGATE_CI` is set).
fn redis_up() -> bool {
    support::servers::redis_url().is_some()
}

/// One runtime for every test: a store's connection lives on the runtime that made it.
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    rt().block_on(f)
}

fn random() -> u64 {
    RandomState::new().hash_one(Instant::now())
}

fn admin_at(url: &str) -> redis::Connection {
    let client = redis::Client::open(url).expect("url");
    client.get_connection_with_timeout(Duration::from_secs(2)).expect("connection")
}

fn admin() -> redis::Connection {
    admin_at(&url())
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

    fn keys(&self) -> Vec<String> {
        let mut conn = admin();
        let iter: redis::Iter<'_, String> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(format!("{}:*", self.0))
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
        if !redis_up() {
            return;
        }
        for key in self.keys() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&key).query(&mut admin());
        }
    }
}

/// A field of the hash holding a key's cells.
fn hget(key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET").arg(key).arg(field).query(&mut admin()).expect("HGET")
}

fn fields(key: &str) -> Vec<String> {
    redis::cmd("HKEYS").arg(key).query(&mut admin()).expect("HKEYS")
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
//
// The script works in whole microseconds and in integers below 2^53: the sequences use instants
// and emission intervals in whole microseconds, rate debts below 2^51 us and amounts that stay
// below 2^53, where the store is exact.

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
    Reserve(u64, u64),
    Settle(u64, u64),
    Record(u64),
    Unrecord(u64),
}

fn gcra() -> impl Strategy<Value = Gcra> {
    let every = |us: u64| Gcra::new(1, Duration::from_micros(us));
    prop_oneof![
        // Per minute and per second, with an interval in whole microseconds.
        prop::sample::select(vec![1u32, 2, 3, 4, 5, 6, 8, 10, 60, 1_000, 100_000]).prop_map(Gcra::per_minute),
        prop::sample::select(vec![1u32, 2, 4, 5, 8, 10, 16, 20]).prop_map(Gcra::per_second),
        (1u64..5_000_000, 1u32..12).prop_map(move |(us, b)| every(us).with_burst(b)),
        // A burst of 1: the earliest instant is the TAT itself (see Tick::ToTat).
        (1u64..60_000_000).prop_map(every),
        // Extremes: a 1 us interval, a long interval (an hour), a huge burst.
        Just(every(1).with_burst(1_000)),
        Just(every(3_600 * 1_000_000)),
        Just(every(1).with_burst(u32::MAX)),
    ]
}

fn units() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..200, 1 => (1u64 << 10)..(1u64 << 16)]
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..20, 1 => (1u64 << 30)..(1u64 << 40)]
}

fn step_for(slot: Slot) -> BoxedStrategy<Step> {
    match slot {
        Slot::Requests | Slot::Tokens => prop_oneof![
            4 => (gcra(), prop_oneof![6 => 0u32..6, 2 => 6u32..100, 1 => 1_000u32..100_000])
                .prop_map(|(g, c)| Step::Rate(g, c)),
            1 => (gcra(), units()).prop_map(|(g, u)| Step::Charge(g, u)),
            1 => (gcra(), units()).prop_map(|(g, u)| Step::Refund(g, u)),
        ]
        .boxed(),
        Slot::Concurrency => prop_oneof![(0u32..4).prop_map(Step::Acquire), Just(Step::Release)].boxed(),
        Slot::Spend | Slot::Hourly | Slot::Credits => prop_oneof![
            3 => (prop_oneof![0u64..20, Just(1u64 << 45)], amount()).prop_map(|(c, a)| Step::Quota(c, a)),
            2 => (prop_oneof![0u64..20, Just(1u64 << 45)], amount()).prop_map(|(c, a)| Step::Reserve(c, a)),
            2 => (amount(), amount()).prop_map(|(r, u)| Step::Settle(r, u)),
            2 => amount().prop_map(Step::Record),
            1 => amount().prop_map(Step::Unrecord),
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

/// How the clock moves before a batch (in whole microseconds): by a random step (0,
/// microseconds, minutes, days), or to one microsecond before or exactly onto a rate cell's TAT
/// (the GCRA's boundaries).
#[derive(Debug, Clone, Copy)]
enum Tick {
    By(u64),
    ToTat(bool, bool),
}

fn tick() -> impl Strategy<Value = Tick> {
    prop_oneof![
        3 => Just(Tick::By(0)),
        3 => (0u64..2_000_000).prop_map(Tick::By),             // under 2 s
        2 => (0u64..120_000_000).prop_map(Tick::By),           // under 2 minutes
        1 => (0u64..(3 * 86_400 * 1_000_000)).prop_map(Tick::By), // days: new periods
        3 => (any::<bool>(), any::<bool>()).prop_map(|(tokens, early)| Tick::ToTat(tokens, early)),
    ]
}

fn advance(now: Timestamp, tick: Tick, memory: &MemoryLimitStore, key: &KeyId) -> Timestamp {
    let target = match tick {
        Tick::By(dt) => now.unix_nanos() + dt * 1_000,
        Tick::ToTat(tokens, early) => {
            let name = if tokens { LimitName::TOKENS } else { LimitName::REQUESTS };
            let tat = memory.peek(key, CellId::new(name)).value;
            tat.saturating_sub(u64::from(early) * 1_000).max(now.unix_nanos())
        }
    };
    Timestamp::from_unix_nanos(target)
}

/// How long a lease lives in the store of the differential test, with its expiry grace.
const DIFF_LEASE: Duration = Duration::from_secs(365 * 86_400);
const DIFF_GRACE: Duration = Duration::from_secs(3_600);

/// The concurrency leases of a case: each acquisition takes a new one, each release gives back
/// the oldest held (or, with none held, one never acquired), as the limit stage does.
#[derive(Default)]
struct Leases {
    next: u64,
    /// Held leases and the millisecond they were taken at.
    held: std::collections::VecDeque<(u64, u64)>,
}

impl Leases {
    /// The same operation with the lease it would carry now.
    fn lease(&mut self, op: LimitOp) -> LimitOp {
        match op {
            LimitOp::Acquire { cap, .. } => {
                self.next += 1;
                LimitOp::Acquire { cap, lease: self.next }
            }
            LimitOp::Release { .. } => {
                let lease = self.held.front().map_or_else(
                    || {
                        self.next += 1;
                        self.next
                    },
                    |(lease, _)| *lease,
                );
                LimitOp::Release { lease }
            }
            op => op,
        }
    }

    /// Records what an admitted batch did to the leases at `now`.
    fn applied(&mut self, ops: &[LimitOp], now: Timestamp) {
        for op in ops {
            match *op {
                LimitOp::Acquire { lease, .. } => self.held.push_back((lease, now.unix_nanos() / 1_000_000)),
                LimitOp::Release { lease } => self.held.retain(|(l, _)| *l != lease),
                _ => {}
            }
        }
    }

    /// The held leases whose deadline has passed at `now` (the script counts them no more),
    /// forgotten.
    fn expire(&mut self, now: Timestamp) -> Vec<u64> {
        let now_ms = now.unix_nanos() / 1_000_000;
        let life = (DIFF_LEASE + DIFF_GRACE).as_millis() as u64;
        let expired = self.held.iter().filter(|(_, at)| now_ms > at + life).map(|(l, _)| *l).collect();
        self.held.retain(|(_, at)| now_ms <= at + life);
        expired
    }
}

/// The cell and the operation of one step at `now` (with a placeholder lease).
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
        Step::Acquire(cap) => LimitOp::Acquire { cap, lease: 0 },
        Step::Release => LimitOp::Release { lease: 0 },
        Step::Quota(cap, amount) => LimitOp::Quota { cap, amount, resets_at },
        Step::Reserve(cap, amount) => LimitOp::Reserve { cap, amount, resets_at },
        Step::Settle(reserved, used) => LimitOp::Settle { reserved, used, resets_at },
        Step::Record(amount) => LimitOp::Record { amount, resets_at },
        Step::Unrecord(amount) => LimitOp::Unrecord { amount, resets_at },
    };
    (cell, op)
}

/// The store of the differential test on a single server, shared by every case (each case has
/// its own key).
fn diff_store() -> &'static (Prefix, RedisLimitStore) {
    static STORE: OnceLock<(Prefix, RedisLimitStore)> = OnceLock::new();
    STORE.get_or_init(|| {
        let prefix = Prefix::new();
        let store = RedisLimitStore::open(&url(), diff_config(&prefix.0)).expect("store");
        (prefix, store)
    })
}

/// The store of the differential test on the three-node cluster.
fn diff_cluster_store() -> Option<&'static RedisLimitStore> {
    static STORE: OnceLock<Option<RedisLimitStore>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let urls = support::servers::redis_cluster_urls()?;
            let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
            let prefix = format!("kgtest-{:016x}", random());
            Some(RedisLimitStore::open_cluster(&nodes, diff_config(&prefix)).expect("cluster store"))
        })
        .as_ref()
}

fn diff_config(prefix: &str) -> RedisConfig {
    // Keys must not expire in real time while the simulated clock runs ahead of it, and leases
    // not within the days a case simulates (MemoryLimitStore counts without them).
    RedisConfig::default()
        .with_prefix(prefix)
        .with_io_timeout(Duration::from_secs(2))
        .with_expiry_grace(DIFF_GRACE)
        .with_concurrency_lease(DIFF_LEASE)
}

static CASE: AtomicUsize = AtomicUsize::new(0);

/// One step of a case: how the clock moves, the batch, and whether to repeat it as `apply_one`.
type Batch = (Tick, Vec<(Slot, Step)>, bool);

/// Runs one random sequence on `store` and on a `MemoryLimitStore`: at every step both give the
/// same outcome (the same new values, or the same code, retry-after and unchanged values).
fn differential(store: &RedisLimitStore, start: u64, steps: Vec<Batch>) -> Result<(), TestCaseError> {
    let key = kid(&format!("diff{:012x}{}", random() & 0xffff_ffff_ffff, CASE.fetch_add(1, SeqCst)));
    let memory = MemoryLimitStore::new();
    let mut now = Timestamp::from_unix_nanos(start - start % 1_000);
    let mut leases = Leases::default();
    let concurrency = CellId::new(LimitName::CONCURRENCY);
    let outcome = (|| {
        for (i, (tick, batch_steps, single)) in steps.into_iter().enumerate() {
            now = advance(now, tick, &memory, &key);
            // A lease the clock left behind is no longer counted by the script: MemoryLimitStore,
            // which counts without leases, gets its release.
            let expired = leases.expire(now);
            for (k, &lease) in expired.iter().enumerate() {
                let release = LimitOp::Release { lease };
                let expected = LimitStore::apply_one(&memory, &key, concurrency, release, now).expect("memory");
                let got = block_on(AsyncLimitStore::apply_one(store, &key, concurrency, release, now)).expect("redis");
                if k + 1 == expired.len() {
                    prop_assert_eq!(got, expected, "leases {:?} expired, step {}", expired, i);
                }
            }
            let mut batch = LimitBatch::new();
            for (slot, step) in batch_steps {
                let (cell, op) = cell_op(slot, step, now);
                batch.push(cell, leases.lease(op)).expect("distinct cells");
            }
            let expected = LimitStore::apply(&memory, &key, &batch, now).expect("memory");
            if expected.is_ok() {
                leases.applied(batch.ops(), now);
            }
            let got = block_on(AsyncLimitStore::apply(store, &key, &batch, now)).expect("redis apply");
            prop_assert_eq!(got, expected, "step {}: {:?} at {:?}", i, batch, now);
            if single && batch.len() == 1 {
                // apply_one on both, as a second step at the same instant.
                let (cell, op) = (batch.cells()[0], leases.lease(batch.ops()[0]));
                let expected = LimitStore::apply_one(&memory, &key, cell, op, now).expect("memory");
                if expected.is_ok() {
                    leases.applied(&[op], now);
                }
                let got = block_on(AsyncLimitStore::apply_one(store, &key, cell, op, now)).expect("redis apply_one");
                prop_assert_eq!(got, expected, "apply_one, step {}", i);
            }
        }
        Ok(())
    })();
    // The case's one Redis key.
    let hash = store.redis_key(&key);
    if store.is_cluster() {
        let urls = support::servers::redis_cluster_urls().expect("cluster");
        for url in urls {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&hash).query(&mut admin_at(url));
        }
    } else {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&hash).query(&mut admin());
    }
    outcome
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The proof that the Lua port is exact, on a single server.
    #[test]
    fn the_script_decides_exactly_as_evaluate(
        start in 1_600_000_000_000_000_000u64..2_000_000_000_000_000_000,
        steps in prop::collection::vec((tick(), batch_steps(), any::<bool>()), 1..14),
    ) {
        if !redis_up() {
            return Ok(());
        }
        differential(&diff_store().1, start, steps)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// The same on a three-node Redis Cluster: every cell of a key in the slot of its `{kid}`.
    #[test]
    fn the_script_decides_exactly_as_evaluate_on_a_cluster(
        start in 1_600_000_000_000_000_000u64..2_000_000_000_000_000_000,
        steps in prop::collection::vec((tick(), batch_steps(), any::<bool>()), 1..14),
    ) {
        let Some(store) = diff_cluster_store() else { return Ok(()) };
        differential(store, start, steps)?;
    }
}

// ---------------------------------------------------------------------------------------------
// One key per API key

/// A key with requests and tokens per minute, a concurrency cap and a spend cap is one Redis
/// hash with a handful of fields, however many requests it served: no key per request.
#[test]
fn many_requests_leave_one_small_hash() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let store = p.store();
    let limiter = Limiter::new(store.clone());
    let mut r = record("onehash");
    r.rate_limit.requests_per_minute = Some(1_000_000);
    r.rate_limit.tokens_per_minute = Some(100_000_000);
    r.rate_limit.concurrency = Some(64);
    r.spend_cap = Some(SpendCap { amount_micros: 1_000_000_000, period: SpendPeriod::Month });
    block_on(async {
        for i in 0..500u32 {
            let now = Timestamp::now();
            let request = LimitRequest::new().with_tokens(100).with_spend_estimate(50);
            let a = limiter.check_async(&r, request, now).await.unwrap();
            a.finish(Usage::new(80 + i % 10, 40), now).unwrap();
        }
        store.flush().await.unwrap();
    });
    assert_eq!(p.keys(), [store.redis_key(&r.id)]);
    let names = fields(&store.redis_key(&r.id));
    assert!(names.len() <= 7, "{names:?}");
    assert!(!names.iter().any(|f| f.contains('#') && f.len() > "concurrency#".len()), "no lease left: {names:?}");
    assert_eq!(store.dropped_settlements(), 0);
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
    block_on(async {
        for &(ms, admitted, retry) in script {
            match limiter.check_async(&r, LimitRequest::new(), at(ms)).await {
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
    });
}

#[test]
fn tokens_are_estimated_then_reconciled() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let store = p.store();
    let limiter = Limiter::new(store.clone());
    let mut r = record("tokenskey");
    r.rate_limit.requests_per_minute = Some(100);
    r.rate_limit.tokens_per_minute = Some(10_000);
    block_on(async {
        let check = |tokens| limiter.check_async(&r, LimitRequest::new().with_tokens(tokens), T0);
        let a = check(8_000).await.unwrap();
        assert_eq!(a.rate_limit().unwrap().tokens().unwrap().remaining(), 2_000);
        // 8 000 estimated are taken: 3 000 more do not fit.
        assert_eq!(check(3_000).await.unwrap_err().code(), DenialCode::RateLimited);
        // The request used 1 000: 7 000 go back, once the settlement is sent.
        a.finish(Usage::new(1_000, 0), T0).unwrap();
        store.flush().await.unwrap();
        let b = check(9_000).await.unwrap();
        assert_eq!(b.rate_limit().unwrap().tokens().unwrap().remaining(), 0);
        // It used 12 000, 3 000 beyond its estimate: the key is in debt and refused.
        b.finish(Usage::new(12_000, 0), T0).unwrap();
        store.flush().await.unwrap();
        let refused = check(0).await.unwrap_err();
        assert_eq!(refused.code(), DenialCode::RateLimited);
        // The TAT is 78 s ahead (13 000 tokens at 6 ms), the tolerance 9 999 tokens' time.
        assert_eq!(refused.retry_after(), Some(Duration::from_millis(18_006)));
    });
}

#[test]
fn a_concurrency_permit_is_released_when_dropped() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let store = p.store();
    let limiter = Limiter::new(store.clone());
    let mut r = record("permits");
    r.rate_limit.concurrency = Some(2);
    block_on(async {
        let a = limiter.check_async(&r, LimitRequest::new(), T0).await.unwrap();
        let b = limiter.check_async(&r, LimitRequest::new(), T0).await.unwrap();
        assert!(a.holds_permit() && b.holds_permit());
        let refused = limiter.check_async(&r, LimitRequest::new(), T0).await.unwrap_err();
        assert_eq!((refused.code(), refused.retry_after()), (DenialCode::ConcurrencyLimited, None));
        drop(a); // a cancelled request
        store.flush().await.unwrap();
        let c = limiter.check_async(&r, LimitRequest::new(), T0).await.unwrap();
        b.finish(Usage::default(), T0).unwrap();
        drop(c);
        store.flush().await.unwrap();
    });
    assert_eq!(p.keys(), Vec::<String>::new(), "every slot back: nothing left");
}

#[test]
fn a_spend_cap_refuses_with_retry_after_until_the_period_ends() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let store = p.store();
    let limiter = Limiter::new(store.clone());
    let mut r = record("spender");
    r.spend_cap = Some(SpendCap { amount_micros: 10, period: SpendPeriod::Day });
    let now = at(3_600_000);
    block_on(async {
        for _ in 0..2 {
            let a = limiter.check_async(&r, LimitRequest::new(), now).await.unwrap();
            a.finish(Usage::new(0, 6), now).unwrap();
            store.flush().await.unwrap();
        }
        let refused = limiter.check_async(&r, LimitRequest::new(), now).await.unwrap_err();
        assert_eq!(refused.code(), DenialCode::QuotaExceeded);
        let (_, end) = SpendPeriod::Day.bounds(now);
        assert_eq!(refused.retry_after(), Some(end.saturating_duration_since(now)));
        assert!(limiter.check_async(&r, LimitRequest::new(), end).await.is_ok(), "a new day");
    });
}

// ---------------------------------------------------------------------------------------------
// Contention: two stores (two processes) and many tasks on one key

async fn hammer(attempts: usize, check: impl Fn(usize) -> BoxFuture<bool>) -> usize {
    let checks: Vec<_> = (0..attempts).map(|i| tokio::spawn(check(i))).collect();
    let mut admitted = 0;
    for c in checks {
        admitted += usize::from(c.await.unwrap());
    }
    admitted
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

fn two_stores_admit_exactly(stores: [RedisLimitStore; 2], id: &str) {
    let limiters = std::sync::Arc::new([Limiter::new(stores[0].clone()), Limiter::new(stores[1].clone())]);
    // One rate limit (the single-cell path) and every limit at once (the batch path).
    let mut single = record(&format!("{id}1"));
    single.rate_limit.requests_per_minute = Some(50);
    let mut all = record(&format!("{id}2"));
    all.rate_limit.requests_per_minute = Some(50);
    all.rate_limit.tokens_per_minute = Some(1_000_000);
    all.rate_limit.concurrency = Some(1_000);
    all.spend_cap = Some(SpendCap { amount_micros: 1_000_000, period: SpendPeriod::Day });
    for r in [single, all] {
        let r = std::sync::Arc::new(r);
        let admitted = block_on(hammer(200, |i| {
            let (limiters, r) = (std::sync::Arc::clone(&limiters), std::sync::Arc::clone(&r));
            Box::pin(async move {
                let limiter = &limiters[i % 2];
                match limiter.check_async(&r, LimitRequest::new().with_tokens(10), T0).await {
                    Ok(_) => true,
                    Err(d) => {
                        assert_eq!(d.code(), DenialCode::RateLimited, "refused by the limit, not a failure");
                        false
                    }
                }
            })
        }));
        assert_eq!(admitted, 50, "{:?}", r.id);
    }
}

#[test]
fn two_stores_admit_exactly_the_limit_under_contention() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    two_stores_admit_exactly([p.store(), p.store()], "contended");
}

#[test]
fn two_stores_admit_exactly_the_limit_on_a_cluster() {
    let Some(urls) = support::servers::redis_cluster_urls() else { return };
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    let config = RedisConfig::default()
        .with_prefix(&format!("kgtest-{:016x}", random()))
        .with_io_timeout(Duration::from_secs(2));
    // Two processes, each knowing a different node first.
    let a = RedisLimitStore::open_cluster(&nodes, config.clone()).unwrap();
    let b = RedisLimitStore::open_cluster(&[nodes[2], nodes[0]], config).unwrap();
    assert!(a.is_cluster());
    two_stores_admit_exactly([a, b], "clustered");
}

// ---------------------------------------------------------------------------------------------
// Settlements: exactly once, bounded

/// Spend reserved by admissions from two stores, then settled: the counter ends at what was
/// used; a settlement sent twice (its first reply lost) counts once, because the script applies
/// it only while its lease is held.
#[test]
fn settlements_apply_exactly_once() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let stores = [p.store(), p.store()];
    let limiters = [Limiter::new(stores[0].clone()), Limiter::new(stores[1].clone())];
    let mut r = record("reservespend");
    r.spend_cap = Some(SpendCap { amount_micros: 1_000, period: SpendPeriod::Day });
    let now = at(3_600_000);
    let (start, _) = SpendPeriod::Day.bounds(now);
    let field = format!("spend@{}", start.unix_nanos() / 1_000_000_000);
    let hash = stores[0].redis_key(&r.id);
    block_on(async {
        let mut held = Vec::new();
        for i in 0..20 {
            if let Ok(a) = limiters[i % 2].check_async(&r, LimitRequest::new().with_spend_estimate(100), now).await {
                held.push(a);
            }
        }
        assert_eq!(held.len(), 10, "cap / estimate");
        assert_eq!(hget(&hash, &field).as_deref(), Some("1000"));
        // Each cost 60: 40 of each reservation goes back.
        for a in held {
            a.finish(Usage::new(0, 60), now).unwrap();
        }
        for s in &stores {
            s.flush().await.unwrap();
        }
        assert_eq!(hget(&hash, &field).as_deref(), Some("600"));

        // A settlement sent twice: the second finds its lease gone and changes nothing.
        let concurrency = CellId::new(LimitName::CONCURRENCY);
        let spend = CellId::for_period(LimitName::SPEND, start);
        let (_, end) = SpendPeriod::Day.bounds(now);
        let mut admit = LimitBatch::new();
        admit.push(concurrency, LimitOp::Acquire { cap: u32::MAX, lease: 1 << 40 }).unwrap();
        admit.push(spend, LimitOp::Reserve { cap: 1_000, amount: 100, resets_at: Some(end) }).unwrap();
        stores[0].apply(&r.id, &admit, now).await.unwrap().unwrap();
        let mut settle = LimitBatch::new();
        settle.push(concurrency, LimitOp::Release { lease: 1 << 40 }).unwrap();
        settle.push(spend, LimitOp::Settle { reserved: 100, used: 30, resets_at: Some(end) }).unwrap();
        for _ in 0..2 {
            assert_eq!(stores[0].settle(&r.id, &settle, now), Ok(None), "queued");
            stores[0].flush().await.unwrap();
        }
        assert_eq!(hget(&hash, &field).as_deref(), Some("630"), "settled once");
    });
    assert_eq!(stores[0].dropped_settlements() + stores[1].dropped_settlements(), 0);
}

/// State written by the earlier one-batch script (without "~", the key's expiry) is read as
/// it was: an upgrade keeps every counter, lease and window, and gateways of both versions can
/// share a key.
#[test]
fn state_written_as_text_by_earlier_versions_is_kept() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let store = p.store();
    let mut r = record("textstate");
    r.credits = Some(Credits { amount: 10, refill: None });
    r.spend_cap = Some(SpendCap { amount_micros: 1_000, period: SpendPeriod::Day });
    r.rate_limit.concurrency = Some(2);
    let hash = store.redis_key(&r.id);
    let now = at(3_600_000);
    let (start, _) = SpendPeriod::Day.bounds(now);
    let day = start.unix_nanos() / 1_000_000_000;
    let spend = format!("spend@{day}");
    // As the text-writing script left it: 4 credits used, 900 of the day's spend, one lease
    // held (until well after `now`), yesterday's window retired.
    let deadline = (now.unix_nanos() / 1_000_000 + 600_000).to_string();
    let index = format!("{day} {}", day - 86_400);
    let _: () = redis::cmd("HSET")
        .arg(&hash)
        .arg(&["credits", "4", &spend, "900", "spend@", &index, "concurrency", "1", "concurrency#", &deadline])
        .arg(&["concurrency#0000000000000001.1", &deadline])
        .query(&mut admin())
        .expect("HSET");
    let limiter = Limiter::new(store.clone());
    block_on(async {
        // One slot of two is taken by the old lease: one admission, then a refusal.
        let request = || LimitRequest::new().with_credits(3).with_spend_estimate(100);
        let a = limiter.check_async(&r, request(), now).await.expect("admitted");
        let refused = limiter.check_async(&r, request(), now).await.expect_err("the old lease holds a slot");
        assert_eq!(refused.code(), DenialCode::ConcurrencyLimited);
        assert_eq!(hget(&hash, "credits").as_deref(), Some("7"), "4 + 3 reserved");
        assert_eq!(hget(&hash, &spend).as_deref(), Some("1000"), "900 + 100 reserved");
        a.finish(Usage::new(0, 50).with_credits(2), now).unwrap();
        store.flush().await.unwrap();
        assert_eq!(hget(&hash, "credits").as_deref(), Some("6"));
        assert_eq!(hget(&hash, &spend).as_deref(), Some("950"));
    });
    assert_eq!(hget(&hash, "concurrency").as_deref(), Some("1"), "the old lease is still held");
}

/// Credits are reserved on admission and settled to what each request used.
#[test]
fn credits_settle_to_what_was_used() {
    if !redis_up() {
        return;
    }
    let p = Prefix::new();
    let store = p.store();
    let limiter = Limiter::new(store.clone());
    let mut r = record("reservecredits");
    r.credits = Some(Credits { amount: 10, refill: None });
    block_on(async {
        let mut held = Vec::new();
        for _ in 0..6 {
            if let Ok(a) = limiter.check_async(&r, LimitRequest::new().with_credits(3), at(0)).await {
                held.push(a);
            }
        }
        assert_eq!(held.len(), 3);
        for (a, cost) in held.into_iter().zip([1, 3, 5]) {
            a.finish(Usage::default().with_credits(cost), at(0)).unwrap();
        }
        store.flush().await.unwrap();
    });
    assert_eq!(hget(&store.redis_key(&r.id), "credits").as_deref(), Some("9"), "settled to 1 + 3 + 5");
}

/// While Redis does not answer, settlements wait in the queue; past its bound a new one is
/// refused and counted, and `flush` reports the failure.
#[test]
fn the_settlement_queue_is_bounded() {
    let config = RedisConfig::default()
        .with_connect_timeout(Duration::from_millis(100))
        .with_io_timeout(Duration::from_millis(100))
        .with_max_pending(3);
    let store = RedisLimitStore::open("redis://127.0.0.1:1", config).unwrap();
    let mut batch = LimitBatch::new();
    batch.push(CellId::new(LimitName::CONCURRENCY), LimitOp::Release { lease: 7 }).unwrap();
    // Queued from within the runtime: the background sender tries, and keeps them.
    block_on(async {
        for _ in 0..3 {
            assert_eq!(store.settle(&kid("bounded"), &batch, T0), Ok(None));
        }
        assert!(store.settle(&kid("bounded"), &batch, T0).is_err(), "full");
        assert_eq!(store.dropped_settlements(), 1);
        assert_eq!(store.pending_settlements(), 3);
        assert!(store.flush().await.is_err());
        assert_eq!(store.pending_settlements(), 3, "kept for when Redis answers");
    });
}

// ---------------------------------------------------------------------------------------------
// Failures

#[test]
fn an_unreachable_server_fails_fast_and_closed() {
    let config = RedisConfig::default()
        .with_connect_timeout(Duration::from_millis(200))
        .with_io_timeout(Duration::from_millis(200));
    let store = RedisLimitStore::open("redis://127.0.0.1:1", config).expect("a valid URL opens without connecting");
    let limiter = Limiter::new(store);
    let mut r = record("nowhere");
    r.rate_limit.requests_per_minute = Some(10);
    let started = Instant::now();
    let denial = block_on(limiter.check_async(&r, LimitRequest::new(), T0)).unwrap_err();
    assert_eq!(denial.code(), DenialCode::AuthUnavailable);
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
}

/// Redis killed under load: every request in the outage is refused with 503 `auth_unavailable`
/// (none panics, none is admitted unchecked), and admissions resume within a second of Redis
/// coming back on the same port.
#[test]
fn redis_killed_under_load_fails_closed_then_recovers() {
    // The servers other tests share are started first, so that none of them takes the port of
    // the killed server while it is down.
    let _ = (support::servers::redis_url(), support::servers::redis_cluster_urls());
    let Some(server) = support::servers::redis_server(None) else { return };
    let port = server.port;
    let url = server.url.clone();
    let config = RedisConfig::default()
        .with_connect_timeout(Duration::from_millis(200))
        .with_io_timeout(Duration::from_millis(200));
    let store = RedisLimitStore::open(&url, config).unwrap();
    let limiter = std::sync::Arc::new(Limiter::new(store.clone()));
    let mut r = record("killed");
    r.rate_limit.requests_per_minute = Some(1_000_000_000);
    r.rate_limit.concurrency = Some(1_000);
    r.spend_cap = Some(SpendCap { amount_micros: u64::from(u32::MAX), period: SpendPeriod::Month });
    let r = std::sync::Arc::new(r);
    let codes = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Instant, Option<DenialCode>)>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (limiter, r, codes, stop) = (limiter.clone(), r.clone(), codes.clone(), stop.clone());
            rt().spawn(async move {
                while !stop.load(SeqCst) {
                    let (now, started) = (Timestamp::now(), Instant::now());
                    let outcome = limiter.check_async(&r, LimitRequest::new().with_spend_estimate(1), now).await;
                    let code = match outcome {
                        Ok(a) => {
                            let _ = a.finish(Usage::new(0, 1), now);
                            None
                        }
                        Err(d) => Some(d.code()),
                    };
                    codes.lock().unwrap().push((started, code));
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    drop(server); // killed, state and all (returns once it is gone)
    let gone = Instant::now();
    std::thread::sleep(Duration::from_millis(800));
    let restarting = Instant::now();
    let restarted = support::servers::redis_server(Some(port)).expect("restart on the same port");
    let back = Instant::now();
    std::thread::sleep(Duration::from_millis(1_500));
    stop.store(true, SeqCst);
    for task in load {
        block_on(task).expect("no panic");
    }
    let codes = codes.lock().unwrap();
    // Admitted before the kill, once connected.
    let before = codes.iter().filter(|(t, _)| *t < killed).skip(50).collect::<Vec<_>>();
    assert!(!before.is_empty() && before.iter().all(|(_, c)| c.is_none()), "refused before the kill");
    // Each request is filed under the instant it started. One that started within a timeout of
    // the restart may reach the restarted server and be admitted by it, rightly: it is not counted.
    let outage_end = restarting.checked_sub(Duration::from_millis(300)).unwrap();
    let outage: Vec<_> = codes.iter().filter(|(t, _)| *t > gone && *t < outage_end).collect();
    assert!(!outage.is_empty());
    let wrong: Vec<_> = outage
        .iter()
        .filter(|(_, c)| *c != Some(DenialCode::AuthUnavailable))
        .map(|(t, c)| (t.duration_since(gone), *c))
        .collect();
    assert!(wrong.is_empty(), "503 during the outage: {wrong:?} of {}", outage.len());
    let first_admitted = codes.iter().filter(|(t, c)| *t >= restarting && c.is_none()).map(|(t, _)| *t).min();
    let recovered = first_admitted.expect("admissions resume").saturating_duration_since(back);
    assert!(recovered < Duration::from_secs(1), "recovered after {recovered:?}");
    drop(codes);
    block_on(store.flush()).unwrap();
    drop(restarted);
}

// ---------------------------------------------------------------------------------------------
// Sanity of the helpers above: an outcome type comparison cannot pass vacuously.

#[test]
fn outcomes_compare_by_value() {
    let memory = MemoryLimitStore::new();
    let key = kid("sanity");
    let cell = CellId::new(LimitName::REQUESTS);
    let rate = LimitOp::Rate { gcra: Gcra::per_minute(1), cost: 1 };
    let first = LimitStore::apply_one(&memory, &key, cell, rate, T0).unwrap();
    let second = LimitStore::apply_one(&memory, &key, cell, rate, T0).unwrap();
    assert_ne!(first, second);
    assert!(matches!(LimitError::Timeout, LimitError::Timeout));
}
