//! Spend quotas and credits: UTC calendar periods (month ends, leap years, ISO weeks, year
//! boundaries), exact `Retry-After` until the period resets, recording after the request.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]
#![cfg(feature = "std")]

use std::time::Duration;

use keygate::limit::{CellId, LimitName, Limiter};
use keygate::record::KeyShape;
use keygate::secret::StoredDigest;
use keygate::time::Date;
use keygate::{
    Credits, DenialCode, KeyId, KeyKind, KeyRecord, LimitRequest, MemoryLimitStore, SpendCap, SpendPeriod, Timestamp,
    Usage,
};

fn t(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).expect("valid RFC 3339")
}

fn record(spend: Option<SpendCap>, credits: Option<Credits>) -> KeyRecord {
    let id = KeyId::new("quotakey00000001").expect("valid id");
    let now = t("2024-01-01T00:00:00Z");
    let mut r = KeyRecord::new(id, KeyShape::Selector, KeyKind::STANDARD, StoredDigest::sha256_of(b"x"), now);
    r.spend_cap = spend;
    r.credits = credits;
    r
}

fn cap(amount_micros: u64, period: SpendPeriod) -> Option<SpendCap> {
    Some(SpendCap { amount_micros, period })
}

fn req() -> LimitRequest {
    LimitRequest::new()
}

// ---------------------------------------------------------------------------------------------
// Period boundaries

#[test]
fn day_bounds() {
    for (now, start, end) in [
        ("2024-02-28T23:59:59.999999999Z", "2024-02-28T00:00:00Z", "2024-02-29T00:00:00Z"),
        ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00Z", "2024-03-01T00:00:00Z"),
        ("2025-12-31T12:00:00Z", "2025-12-31T00:00:00Z", "2026-01-01T00:00:00Z"),
        ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "1970-01-02T00:00:00Z"),
    ] {
        assert_eq!(SpendPeriod::Day.bounds(t(now)), (t(start), t(end)), "{now}");
    }
}

#[test]
fn month_bounds_across_month_ends_and_leap_years() {
    for (now, start, end) in [
        ("2024-01-31T23:59:59Z", "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"),
        ("2024-02-29T12:00:00Z", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"), // leap day
        ("2023-02-28T23:59:59Z", "2023-02-01T00:00:00Z", "2023-03-01T00:00:00Z"),
        ("2000-02-29T00:00:00Z", "2000-02-01T00:00:00Z", "2000-03-01T00:00:00Z"), // 400-year leap
        ("2100-02-28T23:59:59Z", "2100-02-01T00:00:00Z", "2100-03-01T00:00:00Z"), // not a leap year
        ("2024-04-30T23:59:59Z", "2024-04-01T00:00:00Z", "2024-05-01T00:00:00Z"),
        ("2024-12-31T23:59:59.999Z", "2024-12-01T00:00:00Z", "2025-01-01T00:00:00Z"),
        ("2025-01-01T00:00:00Z", "2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z"),
    ] {
        assert_eq!(SpendPeriod::Month.bounds(t(now)), (t(start), t(end)), "{now}");
    }
    assert_eq!(Date::new(2100, 2, 29), None);
    // February 2100 is 28 days long; 2024's and 2000's are 29.
    let len = |y| SpendPeriod::Month.bounds(Timestamp::from_date(Date::new(y, 2, 10).unwrap()).unwrap());
    for (year, days) in [(2100, 28), (2024, 29), (2000, 29), (2023, 28)] {
        let (s, e) = len(year);
        assert_eq!(e.saturating_duration_since(s), Duration::from_secs(days * 86_400), "{year}");
    }
}

#[test]
fn iso_weeks_start_on_monday() {
    for (now, start, end) in [
        // Monday 00:00 starts its own week.
        ("2024-02-26T00:00:00Z", "2024-02-26T00:00:00Z", "2024-03-04T00:00:00Z"),
        // Sunday's last nanosecond still belongs to the week that started on Monday.
        ("2024-03-03T23:59:59.999999999Z", "2024-02-26T00:00:00Z", "2024-03-04T00:00:00Z"),
        // Leap day (a Thursday).
        ("2024-02-29T08:00:00Z", "2024-02-26T00:00:00Z", "2024-03-04T00:00:00Z"),
        // Across a year boundary: 2024-12-31 is a Tuesday, 2023-01-01 a Sunday.
        ("2024-12-31T10:00:00Z", "2024-12-30T00:00:00Z", "2025-01-06T00:00:00Z"),
        ("2023-01-01T10:00:00Z", "2022-12-26T00:00:00Z", "2023-01-02T00:00:00Z"),
        ("2100-03-01T00:00:00Z", "2100-03-01T00:00:00Z", "2100-03-08T00:00:00Z"), // a Monday
    ] {
        let (s, e) = SpendPeriod::Week.bounds(t(now));
        assert_eq!((s, e), (t(start), t(end)), "{now}");
        assert_eq!(s.date().weekday(), 0, "{now}: weeks start on Monday");
    }
}

// ---------------------------------------------------------------------------------------------
// Spend caps

#[test]
fn spend_is_recorded_after_and_refused_at_the_cap_until_the_period_resets() {
    let store = MemoryLimitStore::new();
    let limiter = Limiter::new(&store);
    let r = record(cap(1_000_000, SpendPeriod::Month), None); // 1 USD per month
    let now = t("2024-02-29T23:00:00Z");
    // The cap is checked before, the spend recorded after: the request that crosses the cap
    // is admitted (its cost is unknown until it ran); the next one is refused.
    limiter.check(&r, req(), now).unwrap().finish(Usage::new(0, 999_999), now).unwrap();
    limiter.check(&r, req(), now).unwrap().finish(Usage::new(0, 1), now).unwrap();
    let d = limiter.check(&r, req(), now).unwrap_err();
    assert_eq!((d.code(), d.status()), (DenialCode::QuotaExceeded, 429));
    assert_eq!(d.retry_after(), Some(Duration::from_secs(3_600)));
    assert_eq!(d.retry_after_secs(), Some(3_600));
    assert!(d.rate_limit().is_none());
    // Half a second before the reset: Retry-After rounds up to 1.
    let d = limiter.check(&r, req(), t("2024-02-29T23:59:59.5Z")).unwrap_err();
    assert_eq!(d.retry_after(), Some(Duration::from_millis(500)));
    assert_eq!(d.retry_after_secs(), Some(1));
    // The new month starts from zero.
    assert!(limiter.check(&r, req(), t("2024-03-01T00:00:00Z")).is_ok());
    let cell = |start: &str| store.peek(&r.id, CellId::for_period(LimitName::SPEND, t(start)));
    assert_eq!(cell("2024-02-01T00:00:00Z").value, 1_000_000);
    assert_eq!(cell("2024-03-01T00:00:00Z").value, 0);
}

#[test]
fn spend_over_the_cap_is_recorded_in_full() {
    let store = MemoryLimitStore::new();
    let limiter = Limiter::new(&store);
    let r = record(cap(100, SpendPeriod::Day), None);
    let now = t("2024-06-01T12:00:00Z");
    limiter.check(&r, req(), now).unwrap().finish(Usage::new(0, 250), now).unwrap();
    let spent = store.peek(&r.id, CellId::for_period(LimitName::SPEND, t("2024-06-01T00:00:00Z")));
    assert_eq!(spent.value, 250);
    assert_eq!(spent.expires_at, Some(t("2024-06-02T00:00:00Z")));
    assert_eq!(limiter.check(&r, req(), now).unwrap_err().retry_after(), Some(Duration::from_secs(12 * 3_600)));
}

#[test]
fn weekly_cap_resets_on_monday_across_the_year_boundary() {
    let limiter = Limiter::new(MemoryLimitStore::new());
    let r = record(cap(10, SpendPeriod::Week), None);
    let sunday = t("2023-01-01T22:00:00Z");
    limiter.check(&r, req(), sunday).unwrap().finish(Usage::new(0, 10), sunday).unwrap();
    let d = limiter.check(&r, req(), sunday).unwrap_err();
    assert_eq!(d.retry_after(), Some(Duration::from_secs(2 * 3_600)));
    assert!(limiter.check(&r, req(), t("2023-01-01T23:59:59Z")).is_err());
    assert!(limiter.check(&r, req(), t("2023-01-02T00:00:00Z")).is_ok());
}

#[test]
fn a_zero_cap_refuses_until_the_next_period() {
    let limiter = Limiter::new(MemoryLimitStore::new());
    let r = record(cap(0, SpendPeriod::Day), None);
    let d = limiter.check(&r, req(), t("2024-02-28T18:00:00Z")).unwrap_err();
    assert_eq!((d.code(), d.retry_after()), (DenialCode::QuotaExceeded, Some(Duration::from_secs(6 * 3_600))));
}

#[test]
fn spend_checks_never_consume_and_finish_counts_once() {
    let store = MemoryLimitStore::new();
    let limiter = Limiter::new(&store);
    let r = record(cap(1_000, SpendPeriod::Day), None);
    let now = t("2024-02-29T01:00:00Z");
    let cell = CellId::for_period(LimitName::SPEND, t("2024-02-29T00:00:00Z"));
    for _ in 0..10 {
        drop(limiter.check(&r, req(), now).unwrap()); // admitted, never finished: nothing spent
    }
    assert_eq!(store.peek(&r.id, cell).value, 0);
    let a = limiter.check(&r, req(), now).unwrap();
    let b = limiter.check(&r, req(), now).unwrap();
    a.finish(Usage::new(0, 300), now).unwrap();
    b.finish(Usage::new(0, 200), now).unwrap();
    assert_eq!(store.peek(&r.id, cell).value, 500);
}

#[test]
fn spend_counts_exactly_under_contention() {
    let store = MemoryLimitStore::new();
    let limiter = Limiter::new(&store);
    let r = record(cap(u64::MAX / 2, SpendPeriod::Month), None);
    let now = t("2024-02-29T01:00:00Z");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..1_000 {
                    limiter.check(&r, req(), now).unwrap().finish(Usage::new(0, 7), now).unwrap();
                }
            });
        }
    });
    assert_eq!(store.peek(&r.id, CellId::for_period(LimitName::SPEND, t("2024-02-01T00:00:00Z"))).value, 28_000);
}

// ---------------------------------------------------------------------------------------------
// Credits

#[test]
fn credits_without_refill_run_out_for_good() {
    let limiter = Limiter::new(MemoryLimitStore::new());
    let r = record(None, Some(Credits { amount: 3, refill: None }));
    let now = t("2024-02-29T01:00:00Z");
    for _ in 0..3 {
        drop(limiter.check(&r, req(), now).unwrap());
    }
    let d = limiter.check(&r, req(), now).unwrap_err();
    assert_eq!((d.code(), d.retry_after()), (DenialCode::QuotaExceeded, None));
    assert!(limiter.check(&r, req(), t("2030-01-01T00:00:00Z")).is_err());
}

#[test]
fn credits_refill_each_period_and_cost_weighs() {
    let limiter = Limiter::new(MemoryLimitStore::new());
    let r = record(None, Some(Credits { amount: 10, refill: Some(SpendPeriod::Day) }));
    let now = t("2024-12-31T20:00:00Z");
    drop(limiter.check(&r, req().with_credits(7), now).unwrap());
    // 3 left: a cost of 4 does not fit, and takes nothing.
    let d = limiter.check(&r, req().with_credits(4), now).unwrap_err();
    assert_eq!(d.retry_after(), Some(Duration::from_secs(4 * 3_600)));
    drop(limiter.check(&r, req().with_credits(3), now).unwrap());
    assert!(limiter.check(&r, req().with_credits(0), now).is_err()); // at the cap
    // Refilled at midnight, in the new year.
    drop(limiter.check(&r, req().with_credits(10), t("2025-01-01T00:00:00Z")).unwrap());
}

#[test]
fn a_quota_refusal_takes_nothing_from_the_rate_limits() {
    let store = MemoryLimitStore::new();
    let limiter = Limiter::new(&store);
    let mut r = record(cap(0, SpendPeriod::Day), None);
    r.rate_limit.requests_per_minute = Some(5);
    r.rate_limit.concurrency = Some(1);
    let now = t("2024-02-29T01:00:00Z");
    assert_eq!(limiter.check(&r, req(), now).unwrap_err().code(), DenialCode::QuotaExceeded);
    assert_eq!(store.peek(&r.id, CellId::new(LimitName::REQUESTS)).value, 0);
    assert_eq!(store.peek(&r.id, CellId::new(LimitName::CONCURRENCY)).value, 0);
}

// ---------------------------------------------------------------------------------------------
// Reservations: spend and credits under concurrency, settled to the real usage

/// Admissions held open from 8 threads at once (streams that have not ended), 400 attempts.
fn admit_held(limiter: &Limiter<&MemoryLimitStore>, r: &KeyRecord, request: LimitRequest, now: Timestamp) -> usize {
    let barrier = std::sync::Barrier::new(8);
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    (0..50).filter_map(|_| limiter.check(r, request, now).ok()).collect::<Vec<_>>()
                })
            })
            .collect();
        let held: Vec<_> = threads.into_iter().flat_map(|t| t.join().expect("thread")).collect();
        held.len()
    })
}

/// Ten streams at once under a cap of 100 micro-dollars a day, each estimated at 615 (a
/// `gpt-4o-mini` reply of up to 1 024 tokens): one is admitted, nine are refused. Spend used to
/// be checked at admission and recorded only at the end, so all ten ran.
#[test]
fn parallel_streams_cannot_spend_past_a_cap() {
    let store = MemoryLimitStore::new();
    let limiter = Limiter::new(&store);
    let r = record(cap(100, SpendPeriod::Day), None);
    let now = t("2024-06-01T12:00:00Z");
    let request = req().with_spend_estimate(615);
    let outcomes: Vec<_> = (0..10).map(|_| limiter.check(&r, request, now)).collect();
    let admitted: Vec<_> = outcomes.iter().filter(|o| o.is_ok()).collect();
    assert_eq!(admitted.len(), 1);
    for refused in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!((refused.code(), refused.status()), (DenialCode::QuotaExceeded, 429));
        assert_eq!(refused.retry_after(), Some(Duration::from_secs(12 * 3_600)));
    }
    // The stream ends having cost 35: the reservation is settled, and the next one may start.
    let first = outcomes.into_iter().find_map(Result::ok).unwrap();
    assert_eq!(first.finish(Usage::new(0, 35), now).unwrap().period_spend, Some(35));
    assert!(limiter.check(&r, request, now).is_ok());
}

/// However many requests are admitted at once, the counter (spent plus reserved) passes the cap
/// by less than one estimate: with a cap of 1 000 and estimates of 100, exactly 10 of 400.
#[test]
fn concurrent_admissions_reserve_their_spend_estimate() {
    let store = MemoryLimitStore::new();
    let limiter = Limiter::new(&store);
    let r = record(cap(1_000, SpendPeriod::Day), None);
    let now = t("2024-06-01T12:00:00Z");
    assert_eq!(admit_held(&limiter, &r, req().with_spend_estimate(100), now), 10);
    // An estimate that does not divide the cap: 1 000 / 300 admits 4 (the last passes the cap
    // by 200, less than its own 300).
    let mut r = record(cap(1_000, SpendPeriod::Day), None);
    r.id = KeyId::new("quotakey00000002").unwrap();
    assert_eq!(admit_held(&limiter, &r, req().with_spend_estimate(300), now), 4);
    let spend = store.peek(&r.id, CellId::for_period(LimitName::SPEND, t("2024-06-01T00:00:00Z")));
    assert_eq!(spend.value, 1_200, "what the held admissions reserved");
}

/// Streams that start and end all the time, each spending at most its estimate: the period's
/// spend never passes the cap by a whole estimate.
#[test]
fn streaming_under_contention_passes_a_cap_by_less_than_one_estimate() {
    let store = MemoryLimitStore::new();
    let limiter = Limiter::new(&store);
    let r = record(cap(10_000, SpendPeriod::Day), None);
    let now = t("2024-06-01T12:00:00Z");
    std::thread::scope(|s| {
        for thread in 0..8u64 {
            let (limiter, r) = (&limiter, &r);
            s.spawn(move || {
                for i in 0..500u64 {
                    if let Ok(a) = limiter.check(r, req().with_spend_estimate(250), now) {
                        std::thread::yield_now();
                        a.finish(Usage::new(0, 150 + (thread * 7 + i * 13) % 101), now).unwrap();
                    }
                }
            });
        }
    });
    let spent = store.peek(&r.id, CellId::for_period(LimitName::SPEND, t("2024-06-01T00:00:00Z"))).value;
    // Less than the cap plus one estimate (and, with 4 000 attempts, the cap was reached).
    assert!((5_000..10_250).contains(&spent), "{spent}");
}

/// `finish` replaces the reservation by the real spend, in the period of the reservation; a
/// dropped admission keeps it.
#[test]
fn finish_settles_the_spend_reservation_exactly() {
    let store = MemoryLimitStore::new();
    let limiter = Limiter::new(&store);
    let r = record(cap(1_000_000, SpendPeriod::Day), None);
    let now = t("2024-06-01T23:59:59Z");
    let today = CellId::for_period(LimitName::SPEND, t("2024-06-01T00:00:00Z"));
    let spent = || store.peek(&r.id, today).value;
    let estimate = |micros| req().with_spend_estimate(micros);

    let a = limiter.check(&r, estimate(300), now).unwrap();
    assert_eq!(spent(), 300, "reserved at admission");
    assert_eq!(a.finish(Usage::new(0, 120), now).unwrap().period_spend, Some(120), "180 back");
    let b = limiter.check(&r, estimate(300), now).unwrap();
    assert_eq!(b.finish(Usage::new(0, 450), now).unwrap().period_spend, Some(570), "150 more");
    let c = limiter.check(&r, estimate(200), now).unwrap();
    assert_eq!(c.finish(Usage::new(0, 200), now).unwrap().period_spend, Some(770), "as estimated");
    let d = limiter.check(&r, req(), now).unwrap();
    assert_eq!(d.finish(Usage::new(0, 30), now).unwrap().period_spend, Some(800), "no estimate");
    let e = limiter.check(&r, req(), now).unwrap();
    assert_eq!(e.finish(Usage::default(), now).unwrap().period_spend, None, "nothing reserved, nothing spent");
    drop(limiter.check(&r, estimate(90), now).unwrap());
    assert_eq!(spent(), 890, "a dropped admission keeps its reservation");

    // Admitted before midnight, finished after: it settles in the day it was admitted in.
    let late = limiter.check(&r, estimate(100), now).unwrap();
    let after_midnight = t("2024-06-02T00:00:01Z");
    assert_eq!(late.finish(Usage::new(0, 40), after_midnight).unwrap().period_spend, Some(930));
    assert_eq!(store.peek(&r.id, CellId::for_period(LimitName::SPEND, after_midnight)).value, 0);
}

/// Credits are taken at admission (refused when they do not fit, so concurrent admissions never
/// take more than the budget) and settled to the real cost when the request says it differs.
#[test]
fn credits_are_reserved_then_settled_to_the_real_cost() {
    let store = MemoryLimitStore::new();
    let limiter = Limiter::new(&store);
    let r = record(None, Some(Credits { amount: 10, refill: None }));
    let now = t("2024-06-01T12:00:00Z");
    assert_eq!(admit_held(&limiter, &r, req().with_credits(3), now), 3);
    let used = |r: &KeyRecord| store.peek(&r.id, CellId::new(LimitName::CREDITS)).value;
    assert_eq!(used(&r), 9, "the held admissions were dropped: their credits stay taken");

    let mut r = r;
    r.id = KeyId::new("quotakey00000003").unwrap();
    let a = limiter.check(&r, req().with_credits(4), now).unwrap();
    assert_eq!(used(&r), 4);
    a.finish(Usage::default().with_credits(1), now).unwrap();
    assert_eq!(used(&r), 1, "3 back");
    let b = limiter.check(&r, req().with_credits(2), now).unwrap();
    b.finish(Usage::default().with_credits(6), now).unwrap();
    assert_eq!(used(&r), 7, "4 more");
    let c = limiter.check(&r, req().with_credits(2), now).unwrap();
    c.finish(Usage::default(), now).unwrap();
    assert_eq!(used(&r), 9, "the cost admitted with");
    // 1 left: a cost of 2 does not fit.
    assert_eq!(limiter.check(&r, req().with_credits(2), now).unwrap_err().code(), DenialCode::QuotaExceeded);
}
