//! The hot path against its baseline, one `Hmac<Sha256>` from a cloned keyed state over the same
//! secret, measured in the same run.
//!
//! `cargo bench --bench authenticate` runs the group and then prints each benchmark as a ratio to
//! `hmac_sha256_cloned_state` (the median of per-sample ratios, each sample paired with a
//! baseline sample taken just before it), the bytes per stored key at 1M keys, and the heap
//! allocations per authentication.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used, missing_docs)]

mod support;

use std::hint::black_box;
use std::sync::atomic::Ordering::Relaxed;

use criterion::Criterion;
use hmac::{KeyInit, Mac};
use keygate::events::UsageStats;
use keygate::format::SelectorFormat;
use keygate::limit::{DirectLimiter, Gcra, Limiter};
use keygate::policy::authorize;
use keygate::secret::{PepperId, Peppers};
use keygate::verify::Lookup;
use keygate::{
    Gate, KeyId, KeyKind, KeyRecord, KeyStore, LimitRequest, MemoryLimitStore, MemoryStore, ModelAllowlist, Pepper,
    RequiredScopes, Requirements, Scopes, Timestamp, Verifier,
};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use support::{Paired, keep, row};

#[global_allocator]
static ALLOC: support::Counting = support::Counting;

const KEYS: usize = 1_000_000;
const PEPPER: [u8; 32] = [0x5e; 32];
const BASELINE: &str = "hmac_sha256_cloned_state";

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let format = SelectorFormat::new("aistats").unwrap();
    let verifier = Verifier::new(format, Peppers::new(Pepper::new(PepperId(1), &PEPPER).unwrap()));
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let now = Timestamp::from_unix_secs(1_800_000_000);

    // 1M keys in the memory store, and the heap they take.
    let store = MemoryStore::new();
    // The ids, for the floor below; allocated before the count starts.
    let mut ids = Vec::with_capacity(KEYS);
    let before = support::LIVE_BYTES.load(Relaxed);
    let mut token = String::new();
    for i in 0..KEYS {
        let (key, mut record) = verifier.issue(&mut rng, KeyKind::STANDARD, now).unwrap();
        record.name = format!("key-{i}");
        if i == KEYS / 2 {
            token = key.token().expose_secret().to_owned();
        }
        ids.push(record.id);
        store.insert(record).unwrap();
    }
    let bytes_per_key = (support::LIVE_BYTES.load(Relaxed) - before) / KEYS;
    // The floor under any store: the same 1M records in a plain map, read with no lock and no
    // reference count, which no store shared between threads can offer. A yardstick, not a store.
    let mut unsynchronised: hashbrown::HashMap<KeyId, KeyRecord, foldhash::quality::RandomState> =
        hashbrown::HashMap::with_capacity_and_hasher(KEYS, foldhash::quality::RandomState::default());
    for id in ids {
        let record = store.lookup(&Lookup::Id(id)).unwrap().unwrap();
        unsynchronised.insert(id, KeyRecord::clone(&record));
    }
    assert_eq!(unsynchronised.len(), KEYS);

    let parsed = verifier.parse(&token).unwrap();
    let lookup = verifier.lookup(&parsed);
    // The measured key has a policy: scopes, a model allowlist and an IP allowlist.
    let mut restricted = KeyRecord::clone(&store.lookup(&lookup).unwrap().unwrap());
    restricted.scopes = Scopes::parse("chat:* models:read files:write").unwrap();
    restricted.allowed_models = ModelAllowlist::new(["gpt-4o", "gpt-4o-mini", "claude-3*"]).unwrap();
    restricted.allowed_ips = vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
    // One request limit, wide enough that no run exhausts it at a fixed `now`.
    restricted.rate_limit.requests_per_minute = Some(u32::MAX);
    store.replace(restricted.revision, restricted).unwrap();
    let required: RequiredScopes = "chat:write".parse().unwrap();
    let request = Requirements::new()
        .with_scopes(required)
        .with_model("claude-3-5-sonnet")
        .with_client_ip("::ffff:10.1.2.3".parse().unwrap());
    let wrong = format!("{}{}", &token[..token.len() - 2], if token.ends_with("AA") { "EA" } else { "AA" });
    let wrong_parsed = verifier.parse(&wrong).unwrap();
    let unknown = format!("aistats_v1_sk_{}{}", "Z".repeat(16), &token[30..]);
    let unknown_parsed = verifier.parse(&unknown).unwrap();
    let unknown_lookup = verifier.lookup(&unknown_parsed);
    let (Lookup::Kid(id), Lookup::Kid(unknown_id)) = (lookup, unknown_lookup) else { unreachable!("selector keys") };
    assert!(store.lookup(&Lookup::Kid(unknown_id)).unwrap().is_some_and(|r| r.id != unknown_id), "a stand-in");

    let secret = parsed.secret().to_vec();
    let mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&PEPPER).unwrap();
    let mut paired = Paired::new(|| {
        let mut m = mac.clone();
        m.update(black_box(&secret));
        keep(m.finalize().into_bytes());
    });

    let mut g = c.benchmark_group("authenticate");
    g.bench_function(BASELINE, |b| {
        b.iter(|| {
            let mut m = mac.clone();
            m.update(black_box(&secret));
            m.finalize().into_bytes()
        })
    });
    g.bench_function("parse", |b| {
        b.iter_custom(|n| paired.measure("parse", n, || keep(verifier.parse(black_box(&token)).is_ok())))
    });
    let record = store.lookup(&lookup).unwrap().unwrap();
    g.bench_function("verify_hit", |b| {
        b.iter_custom(|n| {
            paired.measure("verify_hit", n, || {
                keep(verifier.verify(black_box(&parsed), &lookup, Some(&*record), now).is_ok());
            })
        })
    });
    g.bench_function("verify_miss_unknown_kid", |b| {
        b.iter_custom(|n| {
            paired.measure("verify_miss_unknown_kid", n, || {
                // The memory store answers the miss with a stand-in, as `authenticate` asks it.
                let found = store.lookup(black_box(&Lookup::Kid(unknown_id))).unwrap();
                keep(verifier.verify(black_box(&unknown_parsed), &unknown_lookup, found, now).is_err());
            })
        })
    });
    g.bench_function("verify_wrong_secret", |b| {
        b.iter_custom(|n| {
            paired.measure("verify_wrong_secret", n, || {
                let found = store.lookup(black_box(&Lookup::Kid(id))).unwrap();
                keep(verifier.verify(black_box(&wrong_parsed), &lookup, found, now).is_err());
            })
        })
    });
    g.bench_function("authenticate_memory_store_1m", |b| {
        b.iter_custom(|n| {
            paired.measure("authenticate_memory_store_1m", n, || {
                keep(verifier.authenticate(&store, black_box(&token), now).is_ok());
            })
        })
    });
    g.bench_function("floor_parse_unsynchronised_map_verify_1m", |b| {
        b.iter_custom(|n| {
            paired.measure("floor_parse_unsynchronised_map_verify_1m", n, || {
                let key = verifier.parse(black_box(&token)).unwrap();
                let lookup = verifier.lookup(&key);
                let Lookup::Kid(id) = &lookup else { unreachable!("a selector key") };
                keep(verifier.verify(&key, &lookup, unsynchronised.get(id), now).is_ok());
            })
        })
    });
    g.bench_function("authenticate_policy_memory_store_1m", |b| {
        b.iter_custom(|n| {
            paired.measure("authenticate_policy_memory_store_1m", n, || {
                let verified = verifier.authenticate(&store, black_box(&token), now);
                keep(verified.and_then(|v| authorize(v, black_box(&request), now)).is_ok());
            })
        })
    });
    let limiter = Limiter::new(MemoryLimitStore::new());
    let one_request = LimitRequest::new();
    g.bench_function("limit_check_memory_store", |b| {
        b.iter_custom(|n| {
            paired.measure("limit_check_memory_store", n, || {
                keep(limiter.check(black_box(&record), one_request, now).is_ok());
            })
        })
    });
    g.bench_function("authenticate_limit_memory_store_1m", |b| {
        b.iter_custom(|n| {
            paired.measure("authenticate_limit_memory_store_1m", n, || {
                let verified = verifier.authenticate(&store, black_box(&token), now);
                keep(verified.and_then(|v| limiter.check(v.record(), one_request, now).map(drop)).is_ok());
            })
        })
    });
    g.bench_function("authenticate_policy_limit_memory_store_1m", |b| {
        b.iter_custom(|n| {
            paired.measure("authenticate_policy_limit_memory_store_1m", n, || {
                let authorized = verifier
                    .authenticate(&store, black_box(&token), now)
                    .and_then(|v| authorize(v, black_box(&request), now));
                keep(authorized.and_then(|a| limiter.check(a.record(), one_request, now).map(drop)).is_ok());
            })
        })
    });

    // The same pipeline through a Gate, without and with an event sink (UsageStats counts every
    // decision per key and period).
    let limit_store = MemoryLimitStore::new();
    let gate = Gate::new(verifier.clone(), &store, Limiter::new(&limit_store));
    let stats = UsageStats::new();
    let observed = Gate::new(verifier.clone(), &store, Limiter::new(&limit_store)).with_events(&stats);
    let header = format!("Bearer {token}");
    g.bench_function("gate_check_memory_store_1m", |b| {
        b.iter_custom(|n| {
            paired.measure("gate_check_memory_store_1m", n, || {
                keep(gate.check(Some(black_box(header.as_bytes())), black_box(&request), now).is_ok());
            })
        })
    });
    g.bench_function("gate_check_with_events_memory_store_1m", |b| {
        b.iter_custom(|n| {
            paired.measure("gate_check_with_events_memory_store_1m", n, || {
                keep(observed.check(Some(black_box(header.as_bytes())), black_box(&request), now).is_ok());
            })
        })
    });
    // Also when a filter skipped the benchmark above: one more check reaches the sink.
    keep(observed.check(Some(header.as_bytes()), &request, now).is_ok());
    assert!(stats.get(&record.id, now).is_some_and(|u| u.day.requests > 0), "the sink saw the requests");

    // GCRA against governor's direct limiter, paired with each other: a burst of 2^32 at one
    // unit per ns admits every check; each side reads its time from an atomic, as governor's
    // FakeRelativeClock does.
    let gcra = Gcra::new(u32::MAX, std::time::Duration::from_secs(1)).with_burst(u32::MAX);
    let direct = DirectLimiter::new(gcra);
    let fake_clock = std::sync::atomic::AtomicU64::new(now.unix_nanos());
    let quota = governor::Quota::with_period(gcra.emission_interval())
        .unwrap()
        .allow_burst(std::num::NonZeroU32::new(u32::MAX).unwrap());
    let theirs = governor::RateLimiter::direct_with_clock(quota, governor::clock::FakeRelativeClock::default());
    let mut vs_governor = Paired::new(|| keep(theirs.check().is_ok()));
    g.bench_function("governor_direct_check", |b| b.iter(|| theirs.check().is_ok()));
    g.bench_function("gcra_check", |b| {
        b.iter_custom(|n| {
            vs_governor.measure("gcra_check", n, || {
                keep(direct.check(Timestamp::from_unix_nanos(fake_clock.load(Relaxed))).is_ok());
            })
        })
    });
    g.finish();
    assert!(direct.check(now).is_ok() && theirs.check().is_ok(), "both limiters still admit");
    assert!(
        verifier.authenticate(&store, &token, now).and_then(|v| authorize(v, &request, now)).is_ok(),
        "the measured request is allowed"
    );

    let allocs = support::ALLOCATIONS.load(Relaxed);
    for _ in 0..1000 {
        let verified = verifier.authenticate(&store, black_box(&token), now);
        keep(verified.and_then(|v| authorize(v, black_box(&request), now)).is_ok());
    }
    let allocs_per_auth = (support::ALLOCATIONS.load(Relaxed) - allocs) as f64 / 1000.0;

    println!();
    println!("ratios to {BASELINE} (median of per-sample ratios, paired within each sample)");
    println!("{:<40} {:>8}  target", "benchmark", "ratio");
    row("parse", paired.ratio("parse"), "about 10 ns");
    row("verify_hit", paired.ratio("verify_hit"), "");
    row("verify_miss_unknown_kid", paired.ratio("verify_miss_unknown_kid"), "");
    row("verify_wrong_secret", paired.ratio("verify_wrong_secret"), "");
    row("authenticate_memory_store_1m", paired.ratio("authenticate_memory_store_1m"), "");
    row(
        "floor_parse_unsynchronised_map_verify_1m",
        paired.ratio("floor_parse_unsynchronised_map_verify_1m"),
        "(no lock, no refcount: the floor)",
    );
    row("authenticate_policy_memory_store_1m", paired.ratio("authenticate_policy_memory_store_1m"), "");
    row("limit_check_memory_store", paired.ratio("limit_check_memory_store"), "");
    row("authenticate_limit_memory_store_1m", paired.ratio("authenticate_limit_memory_store_1m"), "");
    row("authenticate_policy_limit_memory_store_1m", paired.ratio("authenticate_policy_limit_memory_store_1m"), "");
    row("gate_check_memory_store_1m", paired.ratio("gate_check_memory_store_1m"), "");
    row(
        "gate_check_with_events_memory_store_1m",
        paired.ratio("gate_check_with_events_memory_store_1m"),
        "(with an event sink)",
    );
    // The budgets, as ratios to the floor measured in the same run.
    let floor = paired.ratio("floor_parse_unsynchronised_map_verify_1m");
    let to_floor = |name: &str| paired.ratio(name).zip(floor).map(|(a, f)| a / f);
    println!("ratios to the floor (floor_parse_unsynchronised_map_verify_1m)");
    row("authenticate_memory_store_1m", to_floor("authenticate_memory_store_1m"), "<= 1.15x");
    row("gate_check_with_events_memory_store_1m", to_floor("gate_check_with_events_memory_store_1m"), "<= 2.0x");
    row("gcra_check / governor_direct_check", vs_governor.ratio("gcra_check"), "<= 1.0x (paired with governor)");
    let miss_vs_wrong =
        paired.ratio("verify_miss_unknown_kid").zip(paired.ratio("verify_wrong_secret")).map(|(a, b)| a / b);
    row("unknown_kid / wrong_secret", miss_vs_wrong, "0.9-1.1x");
    println!("{:<40} {:>8}", "bytes per stored key at 1M keys", bytes_per_key);
    println!("{:<40} {:>8}", "heap allocations per authenticate + policy", allocs_per_auth);
    c.final_summary();
}
