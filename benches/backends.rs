//! Figures for the backends (issue 7), each measured against a baseline in the same run.
//!
//! `cargo bench --bench backends --features full` prints:
//!
//! 1. `authenticate through CachedStore / MemoryStore`: the whole authentication (parse, lookup,
//!    HMAC, compare) of a cached key through `CachedStore` (`authenticate_async`, whose future is
//!    ready at once on a hit) against the same through `MemoryStore`, 100 000 keys, as paired
//!    samples (see `support::Paired`). A hit never reaches the store behind the cache, so this
//!    is the cache's cost whatever that store is.
//! 2. Uncached PostgreSQL lookups per second with N concurrent tasks (N = 1, 4, 16, 64) on a
//!    two-thread tokio runtime and a pool of 16 connections, with each N's throughput as a ratio
//!    to N = 1 measured in the same run. Needs PostgreSQL: `KEYGATE_POSTGRES_URL`, or a
//!    throwaway server started as the tests start theirs (`tests/support/servers.rs`); without
//!    either this part says "not run".
//!    Loopback, client and server on the same two cores: a lower bound for a real deployment.
//!
//! Options (after `--`): `--seconds S` per PostgreSQL round (default 3).
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used, missing_docs)]

#[path = "support/mod.rs"]
mod support;

#[path = "../tests/support/servers.rs"]
mod servers;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::Criterion;
use keygate::format::SelectorFormat;
use keygate::secret::{PepperId, Peppers};
use keygate::store::SqlConfig;
use keygate::verify::Lookup;
use keygate::{
    AsyncKeyStore, CachedStore, KeyId, KeyKind, KeyStore, MemoryStore, Pepper, PostgresStore, Timestamp, Verifier,
};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use support::{Paired, keep, row};

const KEYS: usize = 100_000;

/// Polls a future that is ready at once (a cache hit) to its output.
fn now_or_never<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a cache hit must be ready at once"),
    }
}

fn main() {
    let seconds = std::env::args().skip_while(|a| a != "--seconds").nth(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut c = Criterion::default().configure_from_args();
    let verifier = Verifier::new(
        SelectorFormat::new("aistats").unwrap(),
        Peppers::new(Pepper::new(PepperId(1), &[0x5e; 32]).unwrap()),
    );
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    let now = Timestamp::from_unix_secs(1_800_000_000);
    let memory = Arc::new(MemoryStore::new());
    let mut tokens = Vec::new();
    for _ in 0..KEYS {
        let (key, record) = verifier.issue(&mut rng, KeyKind::STANDARD, now).unwrap();
        if tokens.len() < 1024 {
            tokens.push(key.token().expose_secret().to_owned());
        }
        KeyStore::insert(&memory, record).unwrap();
    }
    let cached = CachedStore::new(Arc::clone(&memory));
    for token in &tokens {
        assert!(now_or_never(verifier.authenticate_async(&cached, token, now)).is_ok());
    }

    let mut i = 0usize;
    let mut next = || {
        i = (i + 1) % tokens.len();
        tokens[i].as_str()
    };
    let (base_verifier, base_store) = (verifier.clone(), Arc::clone(&memory));
    let base_tokens = tokens.clone();
    let mut j = 0usize;
    let mut paired = Paired::new(move || {
        j = (j + 1) % base_tokens.len();
        keep(base_verifier.authenticate(&*base_store, black_box(&base_tokens[j]), now).is_ok());
    });
    let mut g = c.benchmark_group("backends");
    g.bench_function("authenticate_cached_store", |b| {
        b.iter_custom(|n| {
            paired.measure("authenticate_cached_store", n, || {
                keep(now_or_never(verifier.authenticate_async(&cached, black_box(next()), now)).is_ok());
            })
        })
    });
    g.finish();

    println!();
    println!("{:<48} {:>8}  target", "benchmark", "ratio");
    row("authenticate through CachedStore / MemoryStore", paired.ratio("authenticate_cached_store"), "close to 1.0x");
    postgres_lookups(&verifier, seconds);
    c.final_summary();
}

/// Uncached PostgreSQL lookups per second with N concurrent tasks.
fn postgres_lookups(verifier: &Verifier, seconds: u64) {
    let Some(url) = servers::postgres_url() else {
        println!("uncached PostgreSQL lookups: not run (no PostgreSQL; see above)");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let mut config = SqlConfig::default();
        config.max_connections = 16;
        let store = match PostgresStore::connect(url, config).await {
            Ok(store) => Arc::new(store),
            Err(e) => {
                println!("uncached PostgreSQL lookups: not run ({e}; set KEYGATE_POSTGRES_URL)");
                return;
            }
        };
        // 1 000 keys of a bench team, removed again at the end.
        let now = Timestamp::now();
        let mut rng = ChaCha20Rng::from_seed([9; 32]);
        let mut ids = Vec::new();
        for _ in 0..1_000 {
            let (_, mut record) = verifier.issue(&mut rng, KeyKind::STANDARD, now).unwrap();
            record.team_id = Some("keygate-bench".to_owned());
            ids.push(store.insert(record).await.unwrap().id);
        }
        let ids = Arc::new(ids);
        println!("{:<48} {:>10} {:>8}", "uncached PostgreSQL lookups, N tasks", "lookups/s", "vs N=1");
        let mut single = None;
        for tasks in [1usize, 4, 16, 64] {
            let done = Arc::new(AtomicU64::new(0));
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let workers: Vec<_> = (0..tasks)
                .map(|t| {
                    let (store, ids, done) = (Arc::clone(&store), Arc::clone(&ids), Arc::clone(&done));
                    tokio::spawn(async move {
                        let mut rng = ChaCha20Rng::seed_from_u64(t as u64);
                        while Instant::now() < deadline {
                            let id: KeyId = ids[(rng.next_u32() as usize) % ids.len()];
                            assert!(store.lookup(&Lookup::Id(id)).await.unwrap().is_some());
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            let started = Instant::now();
            for w in workers {
                w.await.unwrap();
            }
            let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
            let base = *single.get_or_insert(rate);
            println!("{:<48} {rate:>10.0} {:>7.2}x", format!("  N = {tasks}"), rate / base);
        }
        for id in ids.iter() {
            let _ = store.delete(id).await;
        }
    });
}
