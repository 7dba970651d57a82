//! A dudect-style timing-leak check (Reparaz, Balasch, Verbauwhede 2016) of the verification
//! stage: does an unknown kid take measurably different time from a known kid with a wrong
//! secret? Both answer `invalid_api_key`; if their timing differed, an attacker could tell which
//! kids exist.
//!
//! `cargo bench --bench timing_leak --features cache` prints, per test, the largest Welch t statistic over the
//! cropped runtime distributions; |t| above about 5 indicates a detectable difference.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used, missing_docs)]

use dudect_bencher::ctbench::{BenchMetadata, BenchName, BenchOpts, run_benches_console};
use dudect_bencher::{BenchRng, Class, CtRunner};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use keygate::format::SelectorFormat;
use keygate::secret::{PepperId, Peppers, ct_eq_32};
use keygate::store::{CacheConfig, KeyIds, ListQuery, Page};
use keygate::verify::Lookup;
use keygate::{
    AsyncKeyStore, CachedStore, KeyId, KeyKind, KeyRecord, KeyStore, MemoryStore, Pepper, StoreError, Timestamp,
    Verifier,
};
use rand_chacha::rand_core::Rng;

const SAMPLES: usize = 200_000;
const KEYS: usize = 100_000;
const NOW: Timestamp = Timestamp::from_unix_secs(1_800_000_000);

fn verifier() -> Verifier {
    Verifier::new(SelectorFormat::new("aistats").unwrap(), Peppers::new(Pepper::new(PepperId(1), &[7; 32]).unwrap()))
}

/// A random secret field (43 base64url characters ending canonically).
fn random_secret(rng: &mut BenchRng) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s: String = (0..42).map(|_| char::from(ALPHABET[(rng.next_u32() % 64) as usize])).collect();
    s.push('A');
    s
}

fn random_kid(rng: &mut BenchRng) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    (0..16).map(|_| char::from(BASE62[(rng.next_u32() % 62) as usize])).collect()
}

/// Left: a kid no key has. Right: the kid of a stored key with a wrong secret. Both through the
/// memory store holding 100k keys, so the store's hit and miss paths are part of what is measured.
fn unknown_kid_vs_wrong_secret(runner: &mut CtRunner, rng: &mut BenchRng) {
    let v = verifier();
    let store = MemoryStore::new();
    let mut kids = Vec::with_capacity(KEYS);
    for _ in 0..KEYS {
        let (key, record) = v.issue(rng, KeyKind::STANDARD, NOW).unwrap();
        kids.push(key.id().as_str().to_owned());
        KeyStore::insert(&store, record).unwrap();
    }
    let inputs: Vec<(Class, String)> = (0..SAMPLES)
        .map(|_| {
            let secret = random_secret(rng);
            if rng.next_u32() & 1 == 0 {
                (Class::Left, format!("aistats_v1_sk_{}_{secret}", random_kid(rng)))
            } else {
                let kid = &kids[rng.next_u32() as usize % kids.len()];
                (Class::Right, format!("aistats_v1_sk_{kid}_{secret}"))
            }
        })
        .collect();
    for (class, token) in inputs {
        runner.run_one(class, || v.authenticate(&store, &token, NOW).is_err());
    }
}

/// A store with no stand-ins, as the SQL stores are: a presented kid is looked up exactly. It
/// names its keys for a kid set.
struct Exact(MemoryStore, std::sync::Mutex<Vec<KeyId>>);

impl KeyIds for Exact {
    async fn key_ids(&self) -> Result<Vec<KeyId>, StoreError> {
        Ok(self.1.lock().unwrap().clone())
    }
}

impl AsyncKeyStore for Exact {
    async fn lookup(&self, lookup: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        match lookup {
            Lookup::Kid(id) => KeyStore::lookup(&self.0, &Lookup::Id(*id)),
            other => KeyStore::lookup(&self.0, other),
        }
    }
    async fn insert(&self, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        KeyStore::insert(&self.0, record)
    }
    async fn replace(&self, expected: u64, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        KeyStore::replace(&self.0, expected, record)
    }
    async fn delete(&self, id: &KeyId) -> Result<Arc<KeyRecord>, StoreError> {
        KeyStore::delete(&self.0, id)
    }
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        KeyStore::list(&self.0, query)
    }
}

/// Polls a future that is ready at once (a cache hit) to its answer.
fn ready<F: Future>(future: F) -> F::Output {
    match std::pin::pin!(future).poll(&mut Context::from_waker(std::task::Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("every lookup here is answered from the cache"),
    }
}

/// The same through `CachedStore` in front of a store without stand-ins (as in front of
/// PostgreSQL), in its steady state under a flood: every kid has been asked before, so the
/// cache holds the known kids' records and knows the unknown kids are absent. Left: an unknown
/// kid (answered with a cached stand-in). Right: a known kid with a wrong secret.
fn cached_unknown_kid_vs_wrong_secret(runner: &mut CtRunner, rng: &mut BenchRng) {
    cached_flood(runner, rng, false);
}

/// The same with the cache's kid set loaded: an unknown kid is ruled out by the set (it never
/// reaches the store, nor the cache's entries) and answered with a stand-in found from where
/// its hash points.
fn cached_ruled_out_kid_vs_wrong_secret(runner: &mut CtRunner, rng: &mut BenchRng) {
    cached_flood(runner, rng, true);
}

fn cached_flood(runner: &mut CtRunner, rng: &mut BenchRng, kid_set: bool) {
    let v = verifier();
    let config = CacheConfig::default()
        .with_ttl(Duration::from_secs(3_600))
        .with_negative_ttl(Duration::from_secs(3_600))
        .with_unknown_kid_reads(0);
    let cache = CachedStore::with_config(Exact(MemoryStore::new(), Default::default()), config);
    let mut known = Vec::with_capacity(KEYS);
    for _ in 0..KEYS {
        let (key, record) = v.issue(rng, KeyKind::STANDARD, NOW).unwrap();
        known.push(key.id().as_str().to_owned());
        cache.inner().1.lock().unwrap().push(record.id);
        KeyStore::insert(&cache.inner().0, record).unwrap();
    }
    if kid_set {
        ready(cache.load_kids()).unwrap();
    }
    let unknown: Vec<String> = (0..KEYS).map(|_| random_kid(rng)).collect();
    for kid in known.iter().chain(&unknown) {
        let _ = ready(v.authenticate_async(&cache, &format!("aistats_v1_sk_{kid}_{}", random_secret(rng)), NOW));
    }
    let inputs: Vec<(Class, String)> = (0..SAMPLES)
        .map(|_| {
            let secret = random_secret(rng);
            let (class, kids) = if rng.next_u32() & 1 == 0 { (Class::Left, &unknown) } else { (Class::Right, &known) };
            let kid = &kids[rng.next_u32() as usize % kids.len()];
            (class, format!("aistats_v1_sk_{kid}_{secret}"))
        })
        .collect();
    for (class, token) in inputs {
        runner.run_one(class, || ready(v.authenticate_async(&cache, &token, NOW)).is_err());
    }
}

/// The sans-IO core alone: no record (Left) vs a record with a wrong secret (Right).
fn verify_core_no_record_vs_wrong_secret(runner: &mut CtRunner, rng: &mut BenchRng) {
    let v = verifier();
    let (key, record): (_, KeyRecord) = v.issue(rng, KeyKind::STANDARD, NOW).unwrap();
    let kid = key.id().as_str().to_owned();
    let inputs: Vec<(Class, String)> = (0..SAMPLES)
        .map(|_| {
            let class = if rng.next_u32() & 1 == 0 { Class::Left } else { Class::Right };
            (class, format!("aistats_v1_sk_{kid}_{}", random_secret(rng)))
        })
        .collect();
    for (class, token) in inputs {
        let parsed = v.parse(&token).unwrap();
        let lookup = v.lookup(&parsed);
        let found = if matches!(class, Class::Left) { None } else { Some(&record) };
        runner.run_one(class, || v.verify(&parsed, &lookup, found, NOW).is_err());
    }
}

/// The digest comparison: equal (Left) vs differing in the first byte (Right).
fn digest_compare(runner: &mut CtRunner, rng: &mut BenchRng) {
    let inputs: Vec<(Class, [u8; 32], [u8; 32])> = (0..SAMPLES)
        .map(|_| {
            let mut a = [0u8; 32];
            rng.fill_bytes(&mut a);
            let mut b = a;
            let class = if rng.next_u32() & 1 == 0 { Class::Left } else { Class::Right };
            if matches!(class, Class::Right) {
                b[0] ^= 0x80;
            }
            (class, a, b)
        })
        .collect();
    for (class, a, b) in inputs {
        runner.run_one(class, || bool::from(ct_eq_32(&a, &b)));
    }
}

/// `cargo bench` passes `--bench`, which dudect's own argument parser refuses, so this main takes
/// only `--filter NAME` and uses fixed seeds (a run is reproducible up to timing noise).
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let filter = args.iter().position(|a| a == "--filter").and_then(|i| args.get(i + 1)).cloned();
    let bench = |name, benchfn, seed| BenchMetadata { name: BenchName(name), seed: Some(seed), benchfn };
    let benches = vec![
        bench("unknown_kid_vs_wrong_secret", unknown_kid_vs_wrong_secret, 1),
        bench("verify_core_no_record_vs_wrong_secret", verify_core_no_record_vs_wrong_secret, 2),
        bench("digest_compare", digest_compare, 3),
        bench("cached_unknown_kid_vs_wrong_secret", cached_unknown_kid_vs_wrong_secret, 4),
        bench("cached_ruled_out_kid_vs_wrong_secret", cached_ruled_out_kid_vs_wrong_secret, 5),
    ];
    let opts = BenchOpts { filter, ..BenchOpts::default() };
    run_benches_console(opts, benches).expect("write the results to stdout");
}
