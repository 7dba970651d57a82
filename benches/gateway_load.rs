//! Load figures: requests per second and p99 latency on the reference gateway's chat route over
//! loopback, in every mode of keys and limits, as ratios to memory mode measured in one run.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]
//!
//! `cargo bench --bench gateway_load --features full` serves, in this process, the
//! gateway's router (`examples/gateway/app.rs`: JSON model reader, key check with a key that has
//! a model and provider allowlist, rate limits, a concurrency cap and a spend cap, last-used
//! tracking) and, on a second port, the same chat handler behind the same JSON reader but no
//! key check. A hyper client keeps 32 keep-alive connections busy with `POST
//! /v1/chat/completions` (a paid model, so usage is charged to the key's limits and to a
//! wallet either way), alternating rounds of a few seconds between the modes. It prints each
//! round's requests per second and the median of the per-round ratios.
//! Client and server share the machine's cores, as a gateway's real clients would not.
//!
//! Modes, each round measuring every one in turn: `memory` (the key above, keys and limits in
//! memory), `without keygate`, `junk keys, memory` (well-formed keys never stored, each
//! answered 401), and with PostgreSQL (`KEYGATE_POSTGRES_URL`, by default the local server's
//! `test` database, in which a fresh database is created and dropped) `postgres + cache` (keys
//! in PostgreSQL behind the `CachedStore` with its kid set; usage counters and wallets in
//! PostgreSQL, as the example runs) and `junk keys, postgres`. It prints the median of the
//! per-round ratios: with/without keygate, 401/200 in memory, postgres/memory, and the junk
//! flood on postgres/memory. With PostgreSQL, two more modes send a free model (no wallet
//! write), in memory and in PostgreSQL, to show what the paid model's wallet reservation costs.
//! With Redis (`--redis URL`, else `KEYGATE_REDIS_URL`, else `redis://127.0.0.1:6379`; skipped
//! when it does not answer), `redis limits`: the same key in memory with its limits in Redis
//! (under a prefix of the bench's own), with requests/s and p99 as ratios to memory mode, and
//! what Redis did per request from `INFO commandstats` (calls and CPU per command) and `INFO
//! cpu` (the server's whole CPU time, network I/O included).
//!
//! Options (after `--`): `--rounds N` (default 5), `--seconds S` per round (default 3),
//! `--redis URL`.

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

mod load;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keygate::limit::RedisConfig;
use keygate::manage::Usd;
use keygate::{AsyncKeyStore, KeyKind, MemoryLimitStore, MemoryStore, OsRng, RedisLimitStore, Timestamp};
use load::{BODY, CONNECTIONS, Figures, bench_key, listen, load, verifier, without_keygate};

use crate::app::Gateway;

/// The same request to a free model: no wallet is touched.
const FREE: &str = r#"{"model":"llama-3.1-8b-instruct:free","messages":[{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":64}"#;

fn main() {
    let option = |name: &str| std::env::args().skip_while(|a| a != name).nth(1);
    let number = |name: &str, default: u64| option(name).and_then(|n| n.parse().ok()).unwrap_or(default);
    let (rounds, seconds) = (number("--rounds", 5), number("--seconds", 3));
    let redis = option("--redis")
        .or_else(|| std::env::var("KEYGATE_REDIS_URL").ok())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(usize::try_from(rounds).unwrap(), Duration::from_secs(seconds), &redis));
}

async fn run(rounds: usize, window: Duration, redis_url: &str) {
    let memory_limits = || backends::Limits::Memory(Arc::new(MemoryLimitStore::new()));
    let (gateway, token, junk) = start_gateway(None, memory_limits()).await;
    let with_auth = listen(app::router(Arc::clone(&gateway))).await;
    // The same handler and JSON reader, without the key check.
    let without_auth = listen(without_keygate(Arc::clone(&gateway))).await;
    let key = Tokens::one(&token);
    // Keys in PostgreSQL behind the cache, when a server answers.
    let database = BenchDatabase::create().await;
    let postgres = match &database {
        Some(db) => {
            let (gateway, token, _) = start_gateway(Some(db.url()), memory_limits()).await;
            Some((listen(app::router(gateway)).await, Tokens::one(&token)))
        }
        None => None,
    };
    // Keys in memory, limits in Redis, when Redis answers.
    let redis = match redis_admin(redis_url) {
        Some(admin) => {
            let config = RedisConfig::default().with_prefix(&format!("kgbench-{}", std::process::id()));
            let store = RedisLimitStore::open(redis_url, config).unwrap();
            let (gateway, token, _) = start_gateway(None, backends::Limits::Redis(store.clone())).await;
            Some((listen(app::router(gateway)).await, Tokens::one(&token), store, admin))
        }
        None => {
            println!("gateway_load: no Redis at {redis_url}: the Redis mode is skipped");
            None
        }
    };

    println!("gateway_load: {CONNECTIONS} keep-alive connections, {rounds} rounds of {window:?} per mode");
    let modes: Vec<(&str, SocketAddr, &[String], u16, &'static str)> = [
        Some(("memory", with_auth, &key.0[..], 200, BODY)),
        Some(("without keygate", without_auth, &[], 200, BODY)),
        Some(("junk keys, memory", with_auth, &junk.0[..], 401, BODY)),
        // Before the paid mode, whose wallet writes leave PostgreSQL busy (vacuuming the
        // wallet's row) for a while after.
        postgres.as_ref().map(|(addr, _)| ("junk keys, postgres", *addr, &junk.0[..], 401, BODY)),
        postgres.as_ref().map(|(addr, key)| ("postgres + cache", *addr, &key.0[..], 200, BODY)),
        postgres.as_ref().map(|_| ("free model, memory", with_auth, &key.0[..], 200, FREE)),
        postgres.as_ref().map(|(addr, key)| ("free model, postgres", *addr, &key.0[..], 200, FREE)),
        redis.as_ref().map(|(addr, key, _, _)| ("redis limits", *addr, &key.0[..], 200, BODY)),
    ]
    .into_iter()
    .flatten()
    .collect();
    // Warm up every mode (connections, allocator, limiter state, caches).
    for (_, addr, tokens, status, body) in &modes {
        load(*addr, tokens, *status, body, Duration::from_millis(500)).await;
    }
    let mode = |name: &str| modes.iter().position(|m| m.0 == name);
    let mut figures: Vec<Vec<Figures>> = vec![Vec::new(); modes.len()];
    // Redis's `INFO commandstats` around each Redis round, and the requests those rounds sent.
    let (mut redis_stats, mut redis_requests) = (Vec::new(), 0.0);
    for round in 1..=rounds {
        let mut line = format!("round {round}:");
        for ((name, addr, tokens, status, body), figures) in modes.iter().zip(&mut figures) {
            let admin = redis.as_ref().filter(|_| *name == "redis limits").map(|r| &r.3);
            let before = admin.map(commandstats);
            let round = load(*addr, tokens, *status, body, window).await;
            if let (Some(admin), Some(before)) = (admin, before) {
                redis_stats.push((before, commandstats(admin)));
                redis_requests += round.per_second * window.as_secs_f64();
            }
            line += &format!("  {name} {:.0} ({:.2?})", round.per_second, round.p99);
            figures.push(round);
        }
        println!("{line} (req/s, p99)");
    }
    // Each ratio is taken per round (both figures of one round), then the median over rounds.
    let median_of = |a: usize, b: usize, of: fn(&Figures) -> f64| -> f64 {
        let mut r: Vec<f64> = figures[a].iter().zip(&figures[b]).map(|(a, b)| of(a) / of(b)).collect();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    let ratio = |a: usize, b: usize| median_of(a, b, |f| f.per_second);
    println!("gateway_load: median ratios over {rounds} rounds:");
    println!("  with keygate / without            {:.3} (target >= 0.9)", ratio(0, 1));
    println!("  401 junk keys / 200, memory       {:.3} (target >= 1.0)", ratio(2, 0));
    if postgres.is_some() {
        println!("  keys in postgres + cache / memory {:.3} (target >= 0.95)", ratio(4, 0));
        println!("  junk keys: postgres / memory      {:.3} (target >= 0.9)", ratio(3, 2));
        println!("  free model: postgres / memory     {:.3} (no wallet write)", ratio(6, 5));
    } else {
        println!("  (no PostgreSQL: set KEYGATE_POSTGRES_URL for the postgres modes)");
    }
    if let (Some((_, _, store, _)), Some(r)) = (&redis, mode("redis limits")) {
        println!("  redis limits / memory, req/s      {:.3} (target >= 0.8)", ratio(r, 0));
        println!("  redis limits / memory, p99        {:.3} (target <= 1.5)", median_of(r, 0, |f| f.p99.as_secs_f64()));
        // Redis's own account of the Redis rounds: calls and CPU per request, by command.
        let mut per_command: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
        for (before, after) in &redis_stats {
            for (command, (calls, usec)) in after {
                let (calls0, usec0) = before.get(command).copied().unwrap_or((0.0, 0.0));
                let entry = per_command.entry(command.clone()).or_default();
                entry.0 += calls - calls0;
                entry.1 += usec - usec0;
            }
        }
        for (command, (calls, usec)) in per_command.iter().filter(|(_, (calls, _))| *calls > 0.0) {
            println!(
                "  redis {command}: {:.3} calls per request, {:.2} us per call, {:.2} us of Redis CPU per request",
                calls / redis_requests,
                usec / calls,
                usec / redis_requests
            );
        }
        if let Some((_, usec)) = per_command.get(PROCESS) {
            println!("  redis process, user + system CPU: {:.2} us per request", usec / redis_requests);
        }
        store.flush().await.unwrap();
        println!("  redis settlements dropped {}", store.dropped_settlements());
    } else {
        println!("  (no Redis: start one or pass --redis URL for the Redis mode)");
    }
    drop(postgres);
    if let Some(db) = database {
        db.drop().await;
    }
}

/// The tokens a mode's clients send, in turn.
struct Tokens(Vec<String>);

impl Tokens {
    fn one(token: &str) -> Self {
        Self(vec![format!("Bearer {token}")])
    }
}

/// A fresh PostgreSQL database for the postgres modes (`KEYGATE_POSTGRES_URL`, by default the
/// local server's `test` database, is where it is created from), dropped at the end.
struct BenchDatabase {
    admin: String,
    name: String,
}

impl BenchDatabase {
    async fn create() -> Option<Self> {
        use sqlx::Connection;
        let admin = std::env::var("KEYGATE_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let mut connection = sqlx::PgConnection::connect(&admin).await.ok()?;
        let name = format!("keygate_bench_{}", std::process::id());
        sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut connection).await.ok()?;
        Some(Self { admin, name })
    }

    fn url(&self) -> String {
        let (base, _) = self.admin.rsplit_once('/').unwrap();
        format!("{base}/{}", self.name)
    }

    async fn drop(self) {
        use sqlx::Connection;
        if let Ok(mut connection) = sqlx::PgConnection::connect(&self.admin).await {
            let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
                .execute(&mut connection)
                .await;
        }
    }
}

/// A gateway with the bench's key (see [`load::bench_key`]). Keys
/// in memory, or in the PostgreSQL database `postgres` names (behind the cache with its kid
/// set, as the example runs it). Also returns well-formed keys that were never stored.
async fn start_gateway(postgres: Option<String>, limits: backends::Limits) -> (Arc<Gateway>, String, Tokens) {
    let verifier = verifier();
    let store = match postgres {
        Some(url) => backends::Keys::open(&backends::StoreUrl::Postgres(url)).await.unwrap(),
        None => backends::Keys::Memory(Arc::new(MemoryStore::new())),
    };
    let (token, record) = bench_key(&verifier);
    store.insert(record).await.unwrap();
    let junk = (0..4096)
        .map(|_| {
            let (key, _) = verifier.issue(&mut OsRng, KeyKind::STANDARD, Timestamp::now()).unwrap();
            format!("Bearer {}", key.token().expose_secret())
        })
        .collect();
    let gateway = Arc::new(Gateway::new(verifier, store, limits, Usd::MAX));
    (gateway, token, Tokens(junk))
}

/// A plain connection to Redis for `INFO`, if Redis answers at `url`.
fn redis_admin(url: &str) -> Option<std::sync::Mutex<redis::Connection>> {
    let client = redis::Client::open(url).ok()?;
    let mut connection = client.get_connection_with_timeout(Duration::from_secs(1)).ok()?;
    let _: String = redis::cmd("PING").query(&mut connection).ok()?;
    Some(std::sync::Mutex::new(connection))
}

/// `INFO commandstats`: calls and microseconds of CPU per command, since the server started;
/// and `INFO cpu`, the whole server's.
fn commandstats(admin: &std::sync::Mutex<redis::Connection>) -> std::collections::BTreeMap<String, (f64, f64)> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut *admin.lock().unwrap()).unwrap();
    let mut stats = std::collections::BTreeMap::new();
    for line in info.lines() {
        let Some((command, fields)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else { continue };
        let field = |name: &str| {
            fields.split(',').find_map(|f| f.strip_prefix(name)?.strip_prefix('=')?.parse::<f64>().ok()).unwrap_or(0.0)
        };
        stats.insert(command.to_owned(), (field("calls"), field("usec")));
    }
    // The server's whole CPU time (user and system: commands, and the network I/O around them),
    // under a name no command has.
    let cpu: String = redis::cmd("INFO").arg("cpu").query(&mut *admin.lock().unwrap()).unwrap();
    let seconds = |name: &str| {
        cpu.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    stats.insert(String::from(PROCESS), (0.0, (seconds("used_cpu_user") + seconds("used_cpu_sys")) * 1e6));
    stats
}

/// The entry of [`commandstats`] that holds the server's whole CPU time.
const PROCESS: &str = "(process)";
