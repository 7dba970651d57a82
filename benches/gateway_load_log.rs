//! Load figure: requests per second on the reference gateway's chat route over loopback, with
//! keygate in front and without it, as a ratio measured in one run.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]
//!
//! `cargo bench --bench gateway_load_log --features full` serves, in this process, the
//! gateway's router (`examples/gateway/app.rs`: JSON model reader, key check with a key that has
//! a model and provider allowlist, rate limits, a concurrency cap and a spend cap, last-used
//! tracking) and, on a second port, the same chat handler behind the same JSON reader but no
//! key check. A hyper client keeps 32 keep-alive connections busy with `POST
//! /v1/chat/completions` (a paid model, so usage is charged to the key's limits and to a
//! wallet either way), alternating rounds of a few seconds between the two. It prints each
//! round's requests per second and the median of the per-round ratios (with / without).
//! Client and server share the machine's cores, as a gateway's real clients would not.
//!
//! A third server runs the same gateway with its usage log on (a record per request into the
//! in-memory ring, flushed every 250 ms by a background task, as the example does); the
//! figure `log on / log off` is the median of its per-round ratio to the gateway without a
//! log (issue 20's budget: within 5%).
//!
//! Options (after `--`): `--rounds N` (default 6), `--seconds S` per round (default 3).

// The gateway's modules, shared with the example; the bench uses the router and the handler.
#[allow(dead_code)]
#[path = "../examples/gateway/app.rs"]
mod app;
#[allow(dead_code)]
#[path = "../examples/gateway/backends.rs"]
mod backends;
#[allow(dead_code)]
#[path = "../examples/gateway/billing.rs"]
mod billing;
#[allow(dead_code)]
#[path = "../examples/gateway/catalog.rs"]
mod catalog;
#[allow(dead_code)]
#[path = "../examples/gateway/counters.rs"]
mod counters;
#[allow(dead_code)]
#[path = "../examples/gateway/dashboard.rs"]
mod dashboard;
#[allow(dead_code)]
#[path = "../examples/gateway/logs.rs"]
mod logs;
#[allow(dead_code)]
#[path = "../examples/gateway/mock.rs"]
mod mock;
#[allow(dead_code)]
#[path = "../examples/gateway/serve.rs"]
mod serve;
#[allow(dead_code)]
#[path = "../examples/gateway/stream.rs"]
mod stream;
#[allow(dead_code)]
#[path = "../examples/gateway/wallet.rs"]
mod wallet;

// Shared with `gateway_load`, which also reads the p99.
#[allow(dead_code)]
mod load;

use std::sync::Arc;
use std::time::Duration;

use keygate::manage::Usd;
use keygate::usage_log::{LogConfig, MemoryLog, UsageLog};
use keygate::{KeyStore, MemoryLimitStore, MemoryStore};
use load::{BODY, CONNECTIONS, bench_key, listen, verifier, without_keygate};

use crate::app::Gateway;

fn main() {
    let option = |name: &str, default: u64| {
        std::env::args().skip_while(|a| a != name).nth(1).and_then(|n| n.parse().ok()).unwrap_or(default)
    };
    let (rounds, seconds) = (option("--rounds", 6), option("--seconds", 3));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(usize::try_from(rounds).unwrap(), Duration::from_secs(seconds)));
}

async fn run(rounds: usize, window: Duration) {
    let (memory, token) = keys();
    let gateway = gateway(&memory, None);
    let with_auth = listen(app::router(Arc::clone(&gateway))).await;
    // The same gateway and key, with a usage log written in the background.
    let log = UsageLog::new(logs::Logs::Memory(MemoryLog::default()), LogConfig::default());
    let with_log = listen(app::router(self::gateway(&memory, Some(log.clone())))).await;
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(logs::FLUSH_EVERY);
        loop {
            ticks.tick().await;
            logs::flush(&log).await;
        }
    });
    // The same handler and JSON reader, without the key check.
    let without_auth = listen(without_keygate(Arc::clone(&gateway))).await;
    let authorization = [format!("Bearer {token}")];

    println!("gateway_load: {CONNECTIONS} keep-alive connections, {rounds} rounds of {window:?} each way");
    // Warm up both (connections, allocator, limiter state).
    rate(with_auth, &authorization, Duration::from_millis(500)).await;
    rate(without_auth, &[], Duration::from_millis(500)).await;
    rate(with_log, &authorization, Duration::from_millis(500)).await;

    let (mut ratios, mut log_ratios) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Log on and off run back to back, in turn first, so that drift in the machine's load
        // falls on both alike.
        let (with, logged) = if round % 2 == 1 {
            let with = rate(with_auth, &authorization, window).await;
            (with, rate(with_log, &authorization, window).await)
        } else {
            let logged = rate(with_log, &authorization, window).await;
            (rate(with_auth, &authorization, window).await, logged)
        };
        let without = rate(without_auth, &[], window).await;
        let (ratio, log_ratio) = (with / without, logged / with);
        println!(
            "round {round}: with keygate {with:>9.0} req/s   without {without:>9.0} req/s   ratio {ratio:.3}   \
             log on {logged:>9.0} req/s   log on / off {log_ratio:.3}"
        );
        ratios.push(ratio);
        log_ratios.push(log_ratio);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("gateway_load: median ratio (with keygate / without) = {:.3} over {rounds} rounds", median(ratios));
    // Whichever of log on and off runs second in a round tends to do better on a busy machine;
    // over an even number of rounds the geometric mean cancels that out.
    let geometric = (log_ratios.iter().map(|r| r.ln()).sum::<f64>() / log_ratios.len() as f64).exp();
    println!(
        "gateway_load: usage log on / off = {geometric:.3} (geometric mean; median {:.3}) over {rounds} rounds",
        median(log_ratios)
    );
}

/// The bench's key (see [`load::bench_key`]) in a memory store: the store and the key's token.
fn keys() -> (Arc<MemoryStore>, String) {
    let memory = Arc::new(MemoryStore::new());
    let (token, record) = bench_key(&verifier());
    memory.insert(record).unwrap();
    (memory, token)
}

/// A gateway over the keys in `memory`, with limits of its own, and a usage log or none.
fn gateway(memory: &Arc<MemoryStore>, log: Option<UsageLog<logs::Logs>>) -> Arc<Gateway> {
    let store = backends::Keys::Memory(Arc::clone(memory));
    let limits = backends::Limits::Memory(Arc::new(MemoryLimitStore::new()));
    Arc::new(Gateway::with_log(verifier(), store, limits, Usd::MAX, log))
}

/// Requests per second over `window` from [`CONNECTIONS`] connections, each answered 200.
async fn rate(addr: std::net::SocketAddr, authorization: &[String], window: Duration) -> f64 {
    load::load(addr, authorization, 200, BODY, window).await.per_second
}
