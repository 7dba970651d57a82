//! Two threads against one: authentications per second, each with one request-limit check.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]
//!
//! `cargo bench --bench scaling` issues 100 000 keys into a `MemoryStore`, then alternates, for
//! several rounds, a timed window of one thread authenticating (parse, lookup, verify, one GCRA
//! check in a `MemoryLimitStore`) with a window of two threads doing the same with different
//! keys. It prints the median ratio of two-thread to one-thread throughput (target: at least
//! 1.8x). Interleaving the windows makes the ratio robust to a shared machine's slow phases;
//! absolute rates are printed for orientation only.

use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use keygate::format::SelectorFormat;
use keygate::limit::Limiter;
use keygate::secret::{PepperId, Peppers};
use keygate::{KeyKind, KeyStore, LimitRequest, MemoryLimitStore, MemoryStore, Pepper, Timestamp, Verifier};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

const KEYS: usize = 100_000;
const WINDOW: Duration = Duration::from_millis(300);

fn main() {
    let rounds: usize =
        std::env::args().skip_while(|a| a != "--rounds").nth(1).and_then(|n| n.parse().ok()).unwrap_or(9);
    let format = SelectorFormat::new("aistats").expect("valid prefix");
    let verifier = Verifier::new(format, Peppers::new(Pepper::new(PepperId(1), &[0x5e; 32]).expect("32 bytes")));
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    let now = Timestamp::from_unix_secs(1_800_000_000);
    let store = MemoryStore::new();
    let mut tokens = Vec::new();
    for i in 0..KEYS {
        let (key, mut record) = verifier.issue(&mut rng, KeyKind::STANDARD, now).expect("issue");
        record.rate_limit.requests_per_minute = Some(u32::MAX);
        if i % 10_000 == 0 {
            tokens.push(key.token().expose_secret().to_owned());
        }
        store.insert(record).expect("insert");
    }
    let limiter = Limiter::new(MemoryLimitStore::new());

    // One thread's work: authenticate + one limit check, counted until `stop`.
    let work = |token: &str, stop: &AtomicBool, start: &Barrier| -> u64 {
        start.wait();
        let mut n = 0u64;
        while !stop.load(Relaxed) {
            for _ in 0..64 {
                let ok = verifier
                    .authenticate(&store, black_box(token), now)
                    .and_then(|v| limiter.check(v.record(), LimitRequest::new(), now).map(|_| ()))
                    .is_ok();
                assert!(black_box(ok));
            }
            n += 64;
        }
        n
    };
    let run = |threads: usize| -> f64 {
        let stop = AtomicBool::new(false);
        let start = Barrier::new(threads + 1);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|i| {
                    s.spawn({
                        let (stop, start, token) = (&stop, &start, &tokens[i]);
                        move || work(token, stop, start)
                    })
                })
                .collect();
            start.wait();
            let began = Instant::now();
            std::thread::sleep(WINDOW);
            stop.store(true, Relaxed);
            let total = handles.into_iter().map(|h| h.join().expect("worker")).sum::<u64>();
            // Throughput over the window actually measured.
            let secs = began.elapsed().as_secs_f64();
            total as f64 / secs
        })
    };

    run(1); // warm up: caches, the limit cells' first insertion
    run(2);
    let mut ratios = Vec::new();
    let (mut one_sum, mut two_sum) = (0.0, 0.0);
    for _ in 0..rounds {
        let one = run(1);
        let two = run(2);
        one_sum += one;
        two_sum += two;
        ratios.push(two / one);
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    println!("scaling: authenticate + one limit check, {KEYS} keys, {rounds} interleaved rounds of {WINDOW:?}");
    println!("{:<40} {:>10.0}/s  (absolute, for orientation only)", "one thread", one_sum / rounds as f64);
    println!("{:<40} {:>10.0}/s", "two threads", two_sum / rounds as f64);
    println!(
        "{:<40} {:>9.3}x  >= 1.8x  (min {:.3}, max {:.3})",
        "two threads / one thread (median)",
        median,
        ratios[0],
        ratios[ratios.len() - 1]
    );
}
