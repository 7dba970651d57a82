//! The hot path against its baseline: one `Hmac<Sha256>` from a cloned keyed state.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]
//!
//! `cargo bench --bench authenticate` runs the group and prints each benchmark as a ratio to
//! `hmac_sha256_cloned_state` measured in the same run, plus the bytes per stored key at 1M keys
//! and the allocations per authentication.

mod support;

use std::hint::black_box;
use std::sync::atomic::Ordering::Relaxed;

use criterion::{Criterion, criterion_group};
use hmac::{KeyInit, Mac};
use keygate::{
    DirectLimiter, Gcra, KeyFormat, KeyKind, KeyStore, LimitRequest, Limiter, Lookup, MemoryLimitStore, MemoryStore,
    Pepper, PepperId, Peppers, SelectorFormat, Timestamp, Verifier,
};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

#[global_allocator]
static ALLOC: support::Counting = support::Counting;

const GROUP: &str = "authenticate";
const KEYS: usize = 1_000_000;
const PEPPER: [u8; 32] = [0x5e; 32];

fn verifier() -> Verifier {
    let format = SelectorFormat::new("aistats").expect("valid prefix");
    Verifier::new(format, Peppers::new(Pepper::new(PepperId(1), &PEPPER).expect("32 bytes")))
}

fn bench(c: &mut Criterion) {
    let verifier = verifier();
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let now = Timestamp::from_unix_secs(1_800_000_000);

    // The population: 1M keys in the memory store; measure the heap they take.
    let store = MemoryStore::new();
    let before = support::LIVE_BYTES.load(Relaxed);
    let mut tokens = Vec::new();
    for i in 0..KEYS {
        let (key, mut record) = verifier.issue(&mut rng, KeyKind::STANDARD, now).expect("issue");
        record.name = format!("key-{i}");
        if i % 1000 == 0 {
            tokens.push(key.token().expose_secret().to_owned());
        }
        store.insert(record).expect("insert");
    }
    let bytes_per_key =
        (support::LIVE_BYTES.load(Relaxed) - before - tokens.capacity() * 24 - tokens.len() * 71) / KEYS;

    let token = tokens[tokens.len() / 2].clone();
    let parsed = verifier.parse(&token).expect("parses");
    let lookup = verifier.lookup(&parsed);
    let record = store.lookup(&lookup).expect("store").expect("present");
    let mut wrong = token.clone();
    wrong.replace_range(token.len() - 2..token.len() - 1, if token.ends_with("AA") { "B" } else { "A" });
    let wrong_parsed = verifier.parse(&wrong).expect("still parses");
    let unknown = format!("aistats_v1_sk_{}_{}", "Z".repeat(16), &token[token.len() - 43..]);
    let unknown_parsed = verifier.parse(&unknown).expect("parses");
    let unknown_lookup = verifier.lookup(&unknown_parsed);

    let mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&PEPPER).expect("any length");
    let secret = parsed.secret();

    let mut g = c.benchmark_group(GROUP);
    g.bench_function("hmac_sha256_cloned_state", |b| {
        b.iter(|| {
            let mut m = mac.clone();
            m.update(black_box(secret));
            black_box(m.finalize().into_bytes())
        })
    });
    g.bench_function("parse", |b| b.iter(|| black_box(verifier.parse(black_box(&token)).is_ok())));
    g.bench_function("verify_hit", |b| {
        b.iter(|| black_box(verifier.verify(black_box(&parsed), &lookup, Some(&*record), now).is_ok()))
    });
    g.bench_function("verify_miss_unknown_kid", |b| {
        b.iter(|| {
            let found = store.lookup(black_box(&unknown_lookup)).expect("store");
            black_box(verifier.verify(black_box(&unknown_parsed), &unknown_lookup, found, now).is_err())
        })
    });
    g.bench_function("verify_wrong_secret", |b| {
        b.iter(|| {
            let found = store.lookup(black_box(&lookup)).expect("store");
            black_box(verifier.verify(black_box(&wrong_parsed), &lookup, found, now).is_err())
        })
    });
    g.bench_function("authenticate_memory_store_1m", |b| {
        b.iter(|| black_box(verifier.authenticate(&store, black_box(&token), now).is_ok()))
    });

    // The limit stage. Every check admits: the limits are wide enough (a burst of 2^32 units at
    // one unit per nanosecond or per 14 ns) that no run exhausts them at a fixed `now`.
    let gcra = Gcra::new(u32::MAX, std::time::Duration::from_secs(1)).with_burst(u32::MAX);
    let direct = DirectLimiter::new(gcra);
    // Each side reads its time from an atomic, as governor's FakeRelativeClock does.
    let fake_clock = std::sync::atomic::AtomicU64::new(now.unix_nanos());
    g.bench_function("gcra_check", |b| {
        b.iter(|| black_box(direct.check(Timestamp::from_unix_nanos(fake_clock.load(Relaxed))).is_ok()))
    });
    let clock = governor::clock::FakeRelativeClock::default();
    let quota = governor::Quota::with_period(gcra.emission_interval())
        .expect("non-zero")
        .allow_burst(std::num::NonZeroU32::new(u32::MAX).expect("non-zero"));
    let theirs = governor::RateLimiter::direct_with_clock(quota, clock);
    g.bench_function("governor_direct_check", |b| b.iter(|| black_box(theirs.check().is_ok())));
    assert!(direct.check(now).is_ok() && theirs.check().is_ok(), "both limiters still admit");

    let mut limited = (*record).clone();
    limited.rate_limit.requests_per_minute = Some(u32::MAX);
    store.replace(record.revision, limited).expect("replace");
    let limiter = Limiter::new(MemoryLimitStore::new());
    let one_request = LimitRequest::new();
    g.bench_function("limit_check_memory_store", |b| {
        let r = store.lookup(&lookup).expect("store").expect("present");
        b.iter(|| {
            black_box(limiter.check(black_box(&r), one_request, now).map(|a| a.rate_limit().is_some()) == Ok(true))
        })
    });
    g.bench_function("authenticate_limit_memory_store_1m", |b| {
        b.iter(|| {
            let admitted = verifier
                .authenticate(&store, black_box(&token), now)
                .and_then(|v| limiter.check(v.record(), one_request, now).map(|a| a.rate_limit().is_some()));
            black_box(admitted == Ok(true))
        })
    });
    g.finish();

    let allocs = support::ALLOCATIONS.load(Relaxed);
    for _ in 0..1000 {
        black_box(verifier.authenticate(&store, black_box(&token), now).is_ok());
    }
    let per_auth = (support::ALLOCATIONS.load(Relaxed) - allocs) as f64 / 1000.0;

    support::print_ratios(
        GROUP,
        "hmac_sha256_cloned_state",
        &[
            ("parse", "about 10 ns"),
            ("verify_hit", ""),
            ("verify_miss_unknown_kid", "within 0.9-1.1x of verify_wrong_secret"),
            ("verify_wrong_secret", ""),
            ("authenticate_memory_store_1m", "<= 1.2x"),
            ("gcra_check", ""),
            ("governor_direct_check", ""),
            ("limit_check_memory_store", ""),
            ("authenticate_limit_memory_store_1m", "<= 1.2x"),
        ],
    );
    if let (Some(a), Some(b)) =
        (support::median_ns(GROUP, "gcra_check"), support::median_ns(GROUP, "governor_direct_check"))
    {
        println!("{:<40} {:>7.3}x  <= 1.0x", "gcra_check / governor_direct_check", a / b);
    }
    if let (Some(a), Some(b), Some(h)) = (
        support::median_ns(GROUP, "authenticate_limit_memory_store_1m"),
        support::median_ns(GROUP, "authenticate_memory_store_1m"),
        support::median_ns(GROUP, "hmac_sha256_cloned_state"),
    ) {
        println!("{:<40} {:>7.3}x  (of the HMAC baseline)", "one limit check adds", (a - b) / h);
    }
    if let (Some(a), Some(b)) =
        (support::median_ns(GROUP, "verify_miss_unknown_kid"), support::median_ns(GROUP, "verify_wrong_secret"))
    {
        println!("{:<40} {:>7.3}x  0.9-1.1x", "unknown_kid / wrong_secret", a / b);
    }
    if let Some(p) = support::median_ns(GROUP, "parse") {
        println!("{:<40} {:>7.1}   about 10 ns (absolute, for orientation only)", "parse (ns)", p);
    }
    println!("{:<40} {:>8}", "bytes per stored key at 1M keys", bytes_per_key);
    println!("{:<40} {:>8}", "allocations per authenticate", per_auth);
    let _ = KeyFormat::Selector; // the format type is part of the public path above
    let _ = Lookup::Id;
}

criterion_group!(benches, bench);

fn main() {
    benches();
    criterion::Criterion::default().configure_from_args().final_summary();
}
