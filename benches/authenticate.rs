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
    KeyFormat, KeyKind, KeyRecord, KeyStore, Lookup, MemoryStore, ModelAllowlist, Pepper, PepperId, Peppers,
    RequestAttrs, RequiredScopes, Scopes, SelectorFormat, Timestamp, Verifier, authorize,
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
    // The measured key has a policy: scopes, a model allowlist and an IP allowlist.
    let mut restricted = KeyRecord::clone(&store.lookup(&lookup).expect("store").expect("present"));
    restricted.scopes = Scopes::parse("chat:* models:read files:write").expect("scopes");
    restricted.allowed_models = ModelAllowlist::new(["gpt-4o", "gpt-4o-mini", "claude-3*"]).expect("models");
    restricted.allowed_ips = vec!["10.0.0.0/8".parse().expect("cidr"), "2001:db8::/32".parse().expect("cidr")];
    store.replace(restricted.revision, restricted).expect("replace");
    let record = store.lookup(&lookup).expect("store").expect("present");
    let required: RequiredScopes = "chat:write".parse().expect("scope");
    let request = RequestAttrs::new()
        .with_scopes(&required)
        .with_model("claude-3-5-sonnet")
        .with_client_ip("::ffff:10.1.2.3".parse().expect("ip"));
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
    g.bench_function("verify_hit_policy", |b| {
        b.iter(|| {
            let verified = verifier.verify(black_box(&parsed), &lookup, Some(&*record), now);
            black_box(verified.and_then(|v| authorize(v, black_box(&request), now)).is_ok())
        })
    });
    g.bench_function("authenticate_policy_memory_store_1m", |b| {
        b.iter(|| {
            let verified = verifier.authenticate(&store, black_box(&token), now);
            black_box(verified.and_then(|v| authorize(v, black_box(&request), now)).is_ok())
        })
    });
    g.finish();
    assert!(
        verifier.authenticate(&store, &token, now).and_then(|v| authorize(v, &request, now)).is_ok(),
        "the measured request is allowed"
    );

    let allocs = support::ALLOCATIONS.load(Relaxed);
    for _ in 0..1000 {
        black_box(verifier.authenticate(&store, black_box(&token), now).is_ok());
    }
    let per_auth = (support::ALLOCATIONS.load(Relaxed) - allocs) as f64 / 1000.0;
    let allocs = support::ALLOCATIONS.load(Relaxed);
    for _ in 0..1000 {
        let verified = verifier.authenticate(&store, black_box(&token), now);
        black_box(verified.and_then(|v| authorize(v, black_box(&request), now)).is_ok());
    }
    let per_policy = (support::ALLOCATIONS.load(Relaxed) - allocs) as f64 / 1000.0;

    support::print_ratios(
        GROUP,
        "hmac_sha256_cloned_state",
        &[
            ("parse", "about 10 ns"),
            ("verify_hit", ""),
            ("verify_miss_unknown_kid", "within 0.9-1.1x of verify_wrong_secret"),
            ("verify_wrong_secret", ""),
            ("authenticate_memory_store_1m", "<= 1.2x"),
            ("verify_hit_policy", ""),
            ("authenticate_policy_memory_store_1m", "<= 1.2x"),
        ],
    );
    if let (Some(a), Some(b)) =
        (support::median_ns(GROUP, "verify_hit_policy"), support::median_ns(GROUP, "verify_hit"))
    {
        println!(
            "{:<40} {:>7.1}   ns added by policy (absolute, for orientation only)",
            "verify_hit_policy - verify_hit",
            a - b
        );
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
    println!("{:<40} {:>8}", "allocations per authenticate + policy", per_policy);
    let _ = KeyFormat::Selector; // the format type is part of the public path above
    let _ = Lookup::Id;
}

criterion_group!(benches, bench);

fn main() {
    benches();
    criterion::Criterion::default().configure_from_args().final_summary();
}
