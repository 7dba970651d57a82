//! The limit stage: GCRA sequences on a deterministic clock, all-or-nothing batches, token
//! reconciliation, concurrency permits (dropped futures, panics), contention, fail closed/open,
//! eviction, and GCRA against a reference model and against governor itself.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]
#![cfg(feature = "std")]

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use keygate::limit::{CellId, CellState, Gcra, LimitBatch, LimitError, LimitName, LimitOp, Limiter};
use keygate::record::KeyShape;
use keygate::secret::StoredDigest;
use keygate::{DenialCode, KeyId, KeyKind, KeyRecord, LimitRequest, LimitStore, MemoryLimitStore, Timestamp, Usage};
use proptest::prelude::*;

const T0: Timestamp = Timestamp::from_unix_secs(1_800_000_000);

fn at(ms: u64) -> Timestamp {
    T0.saturating_add(Duration::from_millis(ms))
}

fn record(id: &str) -> KeyRecord {
    let id = KeyId::new(id).expect("valid id");
    KeyRecord::new(id, KeyShape::Selector, KeyKind::STANDARD, StoredDigest::sha256_of(b"unused"), T0)
}

fn with_limits(rpm: Option<u32>, tpm: Option<u32>, concurrency: Option<u32>) -> KeyRecord {
    let mut r = record("limitedkey000001");
    r.rate_limit.requests_per_minute = rpm;
    r.rate_limit.tokens_per_minute = tpm;
    r.rate_limit.concurrency = concurrency;
    r
}

fn req() -> LimitRequest {
    LimitRequest::new()
}

fn requests_cell(store: &MemoryLimitStore, r: &KeyRecord) -> u64 {
    store.peek(&r.id, CellId::new(LimitName::REQUESTS)).value
}

fn tokens_cell(store: &MemoryLimitStore, r: &KeyRecord) -> u64 {
    store.peek(&r.id, CellId::new(LimitName::TOKENS)).value
}

// ---------------------------------------------------------------------------------------------
// GCRA on a deterministic clock

#[test]
fn burst_then_one_per_interval() {
    let g = Gcra::per_minute(3);
    assert_eq!(g.emission_interval(), Duration::from_secs(20));
    let mut tat = 0;
    // An idle key may use the whole burst at once.
    for _ in 0..3 {
        tat = g.check(tat, T0, 1).unwrap();
    }
    assert_eq!(tat, at(60_000).unix_nanos());
    let refused = g.check(tat, T0, 1).unwrap_err();
    assert_eq!(refused.wait_time_from(T0), Some(Duration::from_secs(20)));
    assert_eq!(refused.earliest_possible(), Some(at(20_000)));
    // One millisecond early is still refused, with exactly that millisecond to wait.
    let refused = g.check(tat, at(19_999), 1).unwrap_err();
    assert_eq!(refused.wait_time_from(at(19_999)), Some(Duration::from_millis(1)));
    // Exactly on time: admitted, and the next one waits a full interval again.
    tat = g.check(tat, at(20_000), 1).unwrap();
    assert_eq!(g.check(tat, at(20_000), 1).unwrap_err().wait_time_from(at(20_000)), Some(Duration::from_secs(20)));
    // After a long idle period the burst is back in full, and never more than the burst.
    let mut tat2 = tat;
    for _ in 0..3 {
        tat2 = g.check(tat2, at(3_600_000), 1).unwrap();
    }
    assert!(g.check(tat2, at(3_600_000), 1).is_err());
}

#[test]
fn exact_admit_deny_sequence_with_small_burst() {
    // 10 per second with a burst of 2: one per 100 ms, two at once.
    let g = Gcra::per_second(10).with_burst(2);
    let mut tat = 0;
    let schedule = [
        (0, true),
        (0, true),
        (0, false),
        (99, false),
        (100, true),
        (150, false),
        (200, true),
        (1_000, true),
        (1_000, true),
        (1_000, false),
    ];
    let mut seen = Vec::new();
    for (ms, _) in schedule {
        match g.check(tat, at(ms), 1) {
            Ok(t) => {
                tat = t;
                seen.push((ms, true));
            }
            Err(_) => seen.push((ms, false)),
        }
    }
    assert_eq!(seen, schedule);
}

#[test]
fn cost_weighted_tokens_refill_linearly() {
    // 600 tokens per minute: one token per 100 ms, a burst of 600.
    let g = Gcra::per_minute(600);
    let tat = g.check(0, T0, 600).unwrap();
    let refused = g.check(tat, T0, 1).unwrap_err();
    assert_eq!(refused.wait_time_from(T0), Some(Duration::from_millis(100)));
    // 100 tokens back after 10 s: 100 fit, 101 do not (wait 100 ms for the last one).
    assert!(g.check(tat, at(10_000), 100).is_ok());
    assert_eq!(g.check(tat, at(10_000), 101).unwrap_err().wait_time_from(at(10_000)), Some(Duration::from_millis(100)));
    // More than the burst never fits.
    let never = g.check(0, T0, 601).unwrap_err();
    assert_eq!(never.earliest_possible(), None);
    assert_eq!(never.wait_time_from(T0), None);
}

#[test]
fn zero_cost_checks_without_consuming_and_refuses_a_key_in_debt() {
    let g = Gcra::per_minute(60);
    assert_eq!(g.check(0, T0, 0), Ok(0));
    let debt = g.charge(0, T0, 120); // a minute beyond the burst
    let refused = g.check(debt, T0, 0).unwrap_err();
    assert_eq!(refused.wait_time_from(T0), Some(Duration::from_secs(61)));
}

#[test]
fn a_zero_limit_refuses_everything_forever() {
    let g = Gcra::per_minute(0);
    assert!(g.is_closed());
    assert_eq!(g.check(0, T0, 1).unwrap_err().earliest_possible(), None);
    assert_eq!(g.status(0, T0).remaining(), 0);
}

#[test]
fn refund_never_goes_below_now_or_zero() {
    let g = Gcra::per_minute(60); // 1 s per unit
    let tat = g.check(0, T0, 10).unwrap();
    assert_eq!(tat, at(10_000).unix_nanos());
    assert_eq!(g.refund(tat, T0, 4), at(6_000).unix_nanos());
    // Refunding more than was taken stops at `now`: no capacity beyond a full burst.
    assert_eq!(g.refund(tat, T0, 1_000), T0.unix_nanos());
    // A state already in the past is untouched.
    assert_eq!(g.refund(tat, at(20_000), 5), tat);
    assert_eq!(g.refund(0, T0, 5), 0);
}

#[test]
fn status_matches_openai_examples() {
    // 60 rpm after one request: 59 left, back to full in 1 s.
    let g = Gcra::per_minute(60);
    let tat = g.check(0, T0, 1).unwrap();
    let s = g.status(tat, T0);
    assert_eq!((s.limit(), s.remaining(), s.reset()), (60, 59, Duration::from_secs(1)));
    // 150 000 tpm after 16 tokens: 149 984 left, 6.4 ms to reset.
    let g = Gcra::per_minute(150_000);
    let tat = g.check(0, T0, 16).unwrap();
    let s = g.status(tat, T0);
    assert_eq!((s.limit(), s.remaining(), s.reset()), (150_000, 149_984, Duration::from_micros(6_400)));
    // Untouched: full, reset 0.
    let s = g.status(0, T0);
    assert_eq!((s.remaining(), s.reset()), (150_000, Duration::ZERO));
}

// ---------------------------------------------------------------------------------------------
// The stage: all-or-nothing, headers, reconcile

#[test]
fn admission_headers_on_the_allow_path() {
    let limiter = Limiter::new(MemoryLimitStore::new());
    let r = with_limits(Some(60), Some(150_000), None);
    let a = limiter.check(&r, req().with_tokens(16), T0).unwrap();
    let headers: Vec<(&str, String)> =
        a.rate_limit().unwrap().headers().map(|(n, v)| (n, v.as_str().to_owned())).collect();
    assert_eq!(
        headers,
        [
            ("x-ratelimit-limit-requests", "60".to_owned()),
            ("x-ratelimit-remaining-requests", "59".to_owned()),
            ("x-ratelimit-reset-requests", "1s".to_owned()),
            ("x-ratelimit-limit-tokens", "150000".to_owned()),
            ("x-ratelimit-remaining-tokens", "149984".to_owned()),
            ("x-ratelimit-reset-tokens", "7ms".to_owned()),
        ]
    );
    assert!(!a.is_fail_open());
}

#[test]
fn a_key_without_limits_touches_no_state() {
    let store = MemoryLimitStore::new();
    let limiter = Limiter::new(&store);
    let r = record("nolimits00000001");
    let a = limiter.check(&r, req().with_tokens(1_000_000), T0).unwrap();
    assert!(a.rate_limit().is_none() && !a.holds_permit());
    a.finish(Usage::new(5, 5), T0).unwrap();
    assert!(store.is_empty());
}

#[test]
fn rate_limited_denial_carries_retry_after_and_status() {
    let limiter = Limiter::new(MemoryLimitStore::new());
    let r = with_limits(Some(2), None, None);
    for _ in 0..2 {
        limiter.check(&r, req(), T0).unwrap().finish(Usage::default(), T0).unwrap();
    }
    let d = limiter.check(&r, req(), at(1_500)).unwrap_err();
    assert_eq!((d.code(), d.status()), (DenialCode::RateLimited, 429));
    assert_eq!(d.retry_after(), Some(Duration::from_millis(28_500)));
    assert_eq!(d.retry_after_secs(), Some(29));
    let s = d.rate_limit().unwrap().requests().unwrap();
    assert_eq!((s.limit(), s.remaining(), s.reset()), (2, 0, Duration::from_millis(58_500)));
    assert!(d.rate_limit().unwrap().tokens().is_none());
    assert!(limiter.check(&r, req(), at(30_000)).is_ok());
}

#[test]
fn token_refusal_does_not_consume_the_request_limit() {
    let store = MemoryLimitStore::new();
    let limiter = Limiter::new(&store);
    let r = with_limits(Some(10), Some(100), None);
    // Larger than the token burst: refused for good, and the request limit untouched.
    let d = limiter.check(&r, req().with_tokens(500), T0).unwrap_err();
    assert_eq!(d.code(), DenialCode::RateLimited);
    assert_eq!(d.retry_after(), None);
    assert_eq!(requests_cell(&store, &r), 0);
    assert_eq!(tokens_cell(&store, &r), 0);
    // Use all 100 tokens; then a request for 50 more is refused and takes no request either.
    let a = limiter.check(&r, req().with_tokens(100), T0).unwrap();
    assert_eq!(a.rate_limit().unwrap().requests().unwrap().remaining(), 9);
    drop(a);
    let before = requests_cell(&store, &r);
    let d = limiter.check(&r, req().with_tokens(50), T0).unwrap_err();
    assert_eq!(d.retry_after(), Some(Duration::from_secs(30))); // 50 tokens at 0.6 s each
    assert_eq!(requests_cell(&store, &r), before);
    let s = d.rate_limit().unwrap();
    assert_eq!(s.requests().unwrap().remaining(), 9);
    assert_eq!(s.tokens().unwrap().remaining(), 0);
    // Nothing leaked: once one token is back (0.6 s), the next request sees 8 requests left, not 7.
    let a = limiter.check(&r, req().with_tokens(1), at(600)).unwrap();
    assert_eq!(a.rate_limit().unwrap().requests().unwrap().remaining(), 8);
}

#[test]
fn the_request_limit_refusing_takes_no_tokens() {
    let store = MemoryLimitStore::new();
    let limiter = Limiter::new(&store);
    let r = with_limits(Some(1), Some(1_000), None);
    drop(limiter.check(&r, req().with_tokens(10), T0).unwrap());
    let tokens = tokens_cell(&store, &r);
    let d = limiter.check(&r, req().with_tokens(10), T0).unwrap_err();
    assert_eq!(d.retry_after(), Some(Duration::from_secs(60)));
    assert_eq!(tokens_cell(&store, &r), tokens);
}

#[test]
fn longest_wait_among_refusing_limits() {
    let limiter = Limiter::new(MemoryLimitStore::new());
    // 1 rpm (60 s per request) and 60 tpm (1 s per token).
    let r = with_limits(Some(1), Some(60), None);
    drop(limiter.check(&r, req().with_tokens(60), T0).unwrap());
    let d = limiter.check(&r, req().with_tokens(10), at(5_000)).unwrap_err();
    // requests: 55 s; tokens: 10 tokens → 15 s. Waiting 55 s satisfies both.
    assert_eq!(d.retry_after(), Some(Duration::from_secs(55)));
}

#[test]
fn reconcile_refunds_and_charges_once() {
    let store = MemoryLimitStore::new();
    let limiter = Limiter::new(&store);
    let r = with_limits(None, Some(6_000), None); // 10 ms per token
    let a = limiter.check(&r, req().with_tokens(1_000), T0).unwrap();
    assert_eq!(tokens_cell(&store, &r), at(10_000).unix_nanos());
    a.finish(Usage::new(200, 0), T0).unwrap();
    assert_eq!(tokens_cell(&store, &r), at(2_000).unix_nanos());

    // Used more than estimated: charged, even past the burst (debt).
    let a = limiter.check(&r, req().with_tokens(100), T0).unwrap();
    a.finish(Usage::new(700, 0), T0).unwrap();
    assert_eq!(tokens_cell(&store, &r), at(9_000).unix_nanos());

    // An unused estimate reconciled after its time has passed changes nothing (never negative).
    let a = limiter.check(&r, req().with_tokens(1_000), at(60_000)).unwrap();
    let after_take = tokens_cell(&store, &r);
    assert_eq!(after_take, at(70_000).unix_nanos());
    a.finish(Usage::new(0, 0), at(80_000)).unwrap();
    assert_eq!(tokens_cell(&store, &r), after_take);

    // Dropped unfinished: the estimate stays charged.
    let a = limiter.check(&r, req().with_tokens(50), at(100_000)).unwrap();
    drop(a);
    assert_eq!(tokens_cell(&store, &r), at(100_500).unix_nanos());
}

#[test]
fn reconcile_race_never_over_refunds() {
    // Two requests take 500 each; both refund 400 in either order: 200 net.
    let store = MemoryLimitStore::new();
    let limiter = Limiter::new(&store);
    let r = with_limits(None, Some(6_000), None);
    let a = limiter.check(&r, req().with_tokens(500), T0).unwrap();
    let b = limiter.check(&r, req().with_tokens(500), T0).unwrap();
    b.finish(Usage::new(100, 0), T0).unwrap();
    a.finish(Usage::new(100, 0), T0).unwrap();
    assert_eq!(tokens_cell(&store, &r), at(2_000).unix_nanos());
}

// ---------------------------------------------------------------------------------------------
// Concurrency permits

#[test]
fn concurrency_cap_and_release_on_finish_and_drop() {
    let store = MemoryLimitStore::new();
    let limiter = Limiter::new(&store);
    let r = with_limits(None, None, Some(2));
    let a = limiter.check(&r, req(), T0).unwrap();
    let b = limiter.check(&r, req(), T0).unwrap();
    assert!(a.holds_permit());
    let d = limiter.check(&r, req(), T0).unwrap_err();
    assert_eq!((d.code(), d.status(), d.retry_after()), (DenialCode::ConcurrencyLimited, 429, None));
    a.finish(Usage::default(), T0).unwrap();
    let c = limiter.check(&r, req(), T0).unwrap();
    drop(b);
    drop(c);
    assert_eq!(store.peek(&r.id, CellId::new(LimitName::CONCURRENCY)).value, 0);
}

/// Polls a future once with a no-op waker.
fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn a_permit_returns_when_its_future_is_dropped() {
    let store = MemoryLimitStore::new();
    let limiter = Limiter::new(&store);
    let r = with_limits(None, None, Some(1));
    {
        let handler = async {
            let admission = limiter.check(&r, req(), T0).unwrap();
            std::future::pending::<()>().await; // the upstream call that never answers
            admission.finish(Usage::default(), T0).unwrap();
        };
        let mut handler = pin!(handler);
        assert!(poll_once(handler.as_mut()).is_pending());
        // In flight: the cap is reached.
        assert_eq!(limiter.check(&r, req(), T0).unwrap_err().code(), DenialCode::ConcurrencyLimited);
        // The client disconnects: the server drops the future here.
    }
    assert_eq!(store.peek(&r.id, CellId::new(LimitName::CONCURRENCY)).value, 0);
    assert!(limiter.check(&r, req(), T0).is_ok());
}

#[test]
fn a_panicking_request_releases_its_permit() {
    let store = MemoryLimitStore::new();
    let limiter = Limiter::new(&store);
    let r = with_limits(None, None, Some(1));
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let _admission = limiter.check(&r, req(), T0).unwrap();
            panic!("the handler panicked");
        });
        assert!(h.join().is_err());
    });
    assert_eq!(store.peek(&r.id, CellId::new(LimitName::CONCURRENCY)).value, 0);
    assert!(limiter.check(&r, req(), T0).is_ok());
}

#[test]
fn a_panicking_update_closure_unlocks_its_cells() {
    let store = MemoryLimitStore::new();
    let key = KeyId::new("panickykey000001").unwrap();
    let cells = [CellId::new(LimitName::REQUESTS), CellId::new(LimitName::TOKENS)];
    let set = |c: &mut [CellState]| -> Result<(), ()> {
        c[0].value = 7;
        Ok(())
    };
    store.update(&key, &cells, T0, set).unwrap().unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = store.update(&key, &cells, T0, |c: &mut [CellState]| -> Result<(), ()> {
            c[0].value = 99;
            panic!("closure panicked");
        });
    }));
    assert!(caught.is_err());
    // Old state back, nothing left locked: both kinds of update go through.
    assert_eq!(store.peek(&key, cells[0]).value, 7);
    let bump = |i: usize| {
        move |c: &mut [CellState]| -> Result<(), ()> {
            c[i].value += 1;
            Ok(())
        }
    };
    store.update(&key, &cells[..1], T0, bump(0)).unwrap().unwrap();
    store.update(&key, &cells, T0, bump(1)).unwrap().unwrap();
    assert_eq!((store.peek(&key, cells[0]).value, store.peek(&key, cells[1]).value), (8, 1));
}

// ---------------------------------------------------------------------------------------------
// Contention: N threads × M attempts admit exactly L

const THREADS: usize = 8;
const ATTEMPTS: usize = 2_000;

fn contend(rpm: u32, tpm: Option<u32>) -> usize {
    let limiter = Limiter::new(MemoryLimitStore::new());
    let r = with_limits(Some(rpm), tpm, None);
    let admitted = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..ATTEMPTS {
                    if limiter.check(&r, req().with_tokens(1), T0).is_ok() {
                        admitted.fetch_add(1, SeqCst);
                    }
                }
            });
        }
    });
    admitted.into_inner()
}

#[test]
fn contention_admits_exactly_the_limit_single_cell() {
    assert_eq!(contend(1_000, None), 1_000);
}

#[test]
fn contention_admits_exactly_the_limit_all_or_nothing() {
    // The request limit decides: two cells updated together under contention.
    assert_eq!(contend(1_000, Some(1_000_000)), 1_000);
    // The token limit decides: the request limit must not leak capacity for refused requests.
    assert_eq!(contend(1_000_000, Some(700)), 700);
}

#[test]
fn contention_never_exceeds_the_concurrency_cap() {
    let limiter = Limiter::new(MemoryLimitStore::new());
    let r = with_limits(None, None, Some(3));
    let (inside, peak) = (AtomicU32::new(0), AtomicU32::new(0));
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..500 {
                    if let Ok(a) = limiter.check(&r, req(), T0) {
                        let n = inside.fetch_add(1, SeqCst) + 1;
                        peak.fetch_max(n, SeqCst);
                        std::hint::spin_loop();
                        inside.fetch_sub(1, SeqCst);
                        drop(a);
                    }
                }
            });
        }
    });
    assert!(peak.into_inner() <= 3);
    assert_eq!(limiter.store().peek(&r.id, CellId::new(LimitName::CONCURRENCY)).value, 0);
}

// ---------------------------------------------------------------------------------------------
// Fail closed, fail open

struct BrokenStore;

impl LimitStore for BrokenStore {
    fn update<T, E, F>(&self, _: &KeyId, _: &[CellId], _: Timestamp, _: F) -> Result<Result<T, E>, LimitError>
    where
        F: FnMut(&mut [CellState]) -> Result<T, E>,
    {
        Err(LimitError::Unavailable)
    }
}

#[test]
fn a_broken_store_fails_closed_by_default() {
    let r = with_limits(Some(10), None, None);
    let d = Limiter::new(BrokenStore).check(&r, req(), T0).unwrap_err();
    assert_eq!((d.code(), d.status()), (DenialCode::AuthUnavailable, 503));
    assert!(d.rate_limit().is_none());
}

#[test]
fn fail_open_is_explicit_and_visible() {
    let limiter = Limiter::new(BrokenStore).fail_open();
    assert!(limiter.is_fail_open());
    let r = with_limits(Some(10), Some(100), Some(1));
    let a = limiter.check(&r, req().with_tokens(10), T0).unwrap();
    assert!(a.is_fail_open());
    assert!(a.rate_limit().is_none() && !a.holds_permit());
    assert_eq!(a.finish(Usage::new(10, 0), T0), Err(LimitError::Unavailable));
}

// ---------------------------------------------------------------------------------------------
// State: eviction, misuse

#[test]
fn idle_state_is_evicted_and_reads_as_fresh() {
    let store = MemoryLimitStore::new();
    let limiter = Limiter::new(&store);
    for i in 0..100 {
        let mut r = record(&format!("evictkey{i:08}"));
        r.rate_limit.requests_per_minute = Some(60);
        drop(limiter.check(&r, req(), T0).unwrap());
    }
    assert_eq!(store.len(), 100);
    // Each TAT is T0 + 1 s: nothing is idle before that.
    assert_eq!(store.evict_expired(at(999)), 0);
    assert_eq!(store.evict_expired(at(1_000)), 100);
    assert!(store.is_empty());
}

#[test]
fn growth_sweeps_idle_cells_automatically() {
    let store = MemoryLimitStore::new();
    let g = Gcra::per_minute(60);
    let mut batch = LimitBatch::new();
    batch.push(CellId::new(LimitName::REQUESTS), LimitOp::Rate { gcra: g, cost: 1 }).unwrap();
    for round in 0..20u64 {
        let now = T0.saturating_add(Duration::from_secs(round * 10));
        for i in 0..1_000 {
            let key = KeyId::new(&format!("r{round:03}k{i:06}")).unwrap();
            store.apply(&key, &batch, now).unwrap().unwrap();
        }
    }
    // 20 000 keys were used, 1 000 per 10 s, each idle 1 s later: far fewer remain.
    assert!(store.len() < 8_000, "{} cells kept", store.len());
}

#[test]
fn batches_reject_duplicates_and_overflow() {
    let mut b = LimitBatch::new();
    let op = LimitOp::Release { lease: 1 };
    b.push(CellId::new(LimitName::CONCURRENCY), op).unwrap();
    assert_eq!(b.push(CellId::new(LimitName::CONCURRENCY), op), Err(LimitError::DuplicateCell));
    for i in 1..6 {
        b.push(CellId::new(LimitName::new(&format!("n{i}")).unwrap()), op).unwrap();
    }
    assert_eq!(b.push(CellId::new(LimitName::new("n9").unwrap()), op), Err(LimitError::TooManyCells));
    let store = MemoryLimitStore::new();
    let key = KeyId::new("misusekey0000001").unwrap();
    let dup = [CellId::new(LimitName::SPEND); 2];
    assert_eq!(store.update(&key, &dup, T0, |_| Ok::<_, ()>(())), Err(LimitError::DuplicateCell));
}

// ---------------------------------------------------------------------------------------------
// Property tests: GCRA against a bucket model and against governor

/// The same limit as a bucket of debt measured in nanoseconds: it drains one nanosecond per
/// nanosecond, a unit adds `t`, and a request fits iff the debt after it is at most `t · burst`.
struct Bucket {
    t: u64,
    capacity: u64,
    debt: u64,
    last: u64,
}

impl Bucket {
    fn take(&mut self, now: u64, cost: u64) -> Result<(), Option<u64>> {
        self.debt = self.debt.saturating_sub(now - self.last);
        self.last = now;
        let need = self.t * cost;
        if need > self.capacity {
            return Err(None);
        }
        if self.debt + need > self.capacity {
            return Err(Some(self.debt + need - self.capacity));
        }
        self.debt += need;
        Ok(())
    }
}

proptest! {
    #[test]
    fn gcra_matches_a_bucket_model(
        amount in 1u32..200,
        period_ms in 1u64..120_000,
        burst in 1u32..50,
        steps in prop::collection::vec((0u64..3_000_000_000, 1u32..30), 1..200),
    ) {
        let g = Gcra::new(amount, Duration::from_millis(period_ms)).with_burst(burst);
        let t = u64::try_from(g.emission_interval().as_nanos()).unwrap();
        let mut model = Bucket { t, capacity: t * u64::from(burst), debt: 0, last: T0.unix_nanos() };
        let (mut tat, mut now) = (0, T0);
        for (advance, cost) in steps {
            now = now.saturating_add(Duration::from_nanos(advance));
            let ours = g.check(tat, now, cost);
            let theirs = model.take(now.unix_nanos(), u64::from(cost));
            match (ours, theirs) {
                (Ok(next), Ok(())) => tat = next,
                (Err(not), Err(wait)) => {
                    prop_assert_eq!(not.wait_time_from(now), wait.map(Duration::from_nanos));
                }
                (a, b) => prop_assert!(false, "gcra {:?} vs model {:?} at {:?}", a, b, now),
            }
        }
    }

    /// Any parameters, state and time: no overflow (tests run with overflow checks), and an
    /// admitted request moves the state to at least `now`.
    #[test]
    fn gcra_never_overflows(
        amount in 0u32..=u32::MAX,
        period_ns in 0u64..=u64::MAX,
        burst in 0u32..=u32::MAX,
        tat in prop_oneof![Just(0u64), Just(keygate::limit::MAX_STATE), Just(u64::MAX), 0u64..=u64::MAX],
        now in prop_oneof![Just(u64::MAX), Just(keygate::limit::MAX_STATE), 0u64..=u64::MAX],
        cost in prop_oneof![Just(0u32), Just(1u32), 0u32..=u32::MAX],
        units in 0u64..=u64::MAX,
    ) {
        let g = Gcra::new(amount, Duration::from_nanos(period_ns)).with_burst(burst);
        let now = Timestamp::from_unix_nanos(now);
        if let Ok(next) = g.check(tat, now, cost) {
            prop_assert!(cost == 0 || next >= now.unix_nanos().min(keygate::limit::MAX_STATE));
        }
        let _ = (g.charge(tat, now, units), g.refund(tat, now, units), g.status(tat, now));
    }

    #[test]
    fn gcra_matches_governor(
        interval_ns in 1u64..10_000_000_000,
        burst in 1u32..100,
        steps in prop::collection::vec((0u64..20_000_000_000, 1u32..120), 1..100),
    ) {
        use governor::clock::FakeRelativeClock;
        use governor::{Quota, RateLimiter};
        use std::num::NonZeroU32;

        let quota = Quota::with_period(Duration::from_nanos(interval_ns)).unwrap()
            .allow_burst(NonZeroU32::new(burst).unwrap());
        let clock = FakeRelativeClock::default();
        let theirs = RateLimiter::direct_with_clock(quota, clock.clone());
        // The same parameters: an interval of `interval_ns` is 1 unit per that period.
        let g = Gcra::new(1, Duration::from_nanos(interval_ns)).with_burst(burst);
        let (mut tat, mut now) = (0, T0);
        for (advance, cost) in steps {
            clock.advance(Duration::from_nanos(advance));
            now = now.saturating_add(Duration::from_nanos(advance));
            let ours = g.check(tat, now, cost);
            match (ours, theirs.check_n(NonZeroU32::new(cost).unwrap())) {
                (Ok(next), Ok(Ok(()))) => tat = next,
                (Err(not), Ok(Err(nu))) => {
                    prop_assert_eq!(not.wait_time_from(now), Some(nu.wait_time_from(governor::clock::Clock::now(&clock))));
                }
                (Err(not), Err(_insufficient)) => prop_assert_eq!(not.earliest_possible(), None),
                (a, b) => prop_assert!(false, "ours {:?} vs governor {:?}", a, b.map(|r| r.is_ok())),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The trait's defaults: a store that implements only `update` (as a WATCH/MULTI/EXEC Redis
// store would) gives the same decisions as the memory store.

#[derive(Default)]
struct MutexStore(std::sync::Mutex<std::collections::HashMap<(KeyId, CellId), CellState>>);

impl LimitStore for MutexStore {
    fn update<T, E, F>(&self, key: &KeyId, cells: &[CellId], _: Timestamp, mut f: F) -> Result<Result<T, E>, LimitError>
    where
        F: FnMut(&mut [CellState]) -> Result<T, E>,
    {
        let mut map = self.0.lock().map_err(|_| LimitError::Unavailable)?;
        let mut states: Vec<CellState> =
            cells.iter().map(|c| map.get(&(*key, *c)).copied().unwrap_or_default()).collect();
        let outcome = f(&mut states);
        if outcome.is_ok() {
            for (c, s) in cells.iter().zip(states) {
                map.insert((*key, *c), s);
            }
        }
        Ok(outcome)
    }
}

#[test]
fn a_store_with_only_update_gives_the_same_decisions() {
    let mem = Limiter::new(MemoryLimitStore::new());
    let plain = Limiter::new(MutexStore::default());
    let mut r = with_limits(Some(3), Some(100), Some(2));
    r.spend_cap = Some(keygate::SpendCap { amount_micros: 10, period: keygate::SpendPeriod::Day });
    let mut only_rpm = record("onlyrpmkey000001");
    only_rpm.rate_limit.requests_per_minute = Some(2);
    let script: &[(u64, u32, u64)] =
        &[(0, 40, 3), (0, 40, 3), (0, 40, 3), (10, 90, 0), (20_000, 30, 5), (60_000, 200, 0), (60_000, 10, 0)];
    let mut codes = Vec::new();
    for &(ms, tokens, spend) in script {
        let now = at(ms);
        let a = mem.check(&r, req().with_tokens(tokens), now);
        let b = plain.check(&r, req().with_tokens(tokens), now);
        match (a, b) {
            (Ok(a), Ok(b)) => {
                codes.push(None);
                assert_eq!(a.rate_limit(), b.rate_limit(), "at {ms} ms");
                a.finish(Usage::new(tokens / 2, spend), now).unwrap();
                b.finish(Usage::new(tokens / 2, spend), now).unwrap();
            }
            (Err(a), Err(b)) => {
                codes.push(Some(a.code()));
                assert_eq!(a, b, "at {ms} ms");
            }
            (a, b) => panic!("at {ms} ms: {:?} vs {:?}", a.map(|_| ()), b.map(|_| ())),
        }
        let a = mem.check(&only_rpm, req(), now).map(|a| a.rate_limit());
        let b = plain.check(&only_rpm, req(), now).map(|a| a.rate_limit());
        assert_eq!(a, b, "at {ms} ms");
    }
    // The script exercises admissions, token debt, a request over the burst (rate_limited wins
    // over quota_exceeded in table order) and the spend cap.
    let rate = Some(DenialCode::RateLimited);
    let quota = Some(DenialCode::QuotaExceeded);
    assert_eq!(codes, [None, None, None, rate, None, rate, quota]);
}

/// An admission from `check_owned` owns its store handle: it is `'static`, can travel to the
/// thread that finishes the response (a stream), and releases its slot there.
#[test]
fn owned_admissions_outlive_the_check() {
    let limiter = Limiter::new(std::sync::Arc::new(MemoryLimitStore::new()));
    let mut r = record("owned");
    r.rate_limit.concurrency = Some(1);
    let admission: keygate::limit::Admission<'static, _> = limiter.check_owned(&r, LimitRequest::new(), T0).unwrap();
    assert!(admission.holds_permit());
    assert_eq!(limiter.check(&r, LimitRequest::new(), T0).unwrap_err().code(), DenialCode::ConcurrencyLimited);
    std::thread::spawn(move || drop(admission)).join().unwrap();
    assert!(limiter.check(&r, LimitRequest::new(), T0).is_ok(), "released on the other thread");
}
