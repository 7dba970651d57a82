//! Load figures: requests per second and p99 latency on the reference gateway's chat route over
//! loopback, with keygate in front (limits in memory, and limits in Redis) and without it, as
//! ratios measured in one run.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]
//!
//! `cargo bench --bench gateway_load_redis --features full` serves, in this process, the
//! gateway's router (`examples/gateway/app.rs`: JSON model reader, key check with a key that has
//! a model and provider allowlist, rate limits, a concurrency cap and a spend cap, last-used
//! tracking) and, on a second port, the same chat handler behind the same JSON reader but no
//! key check. A hyper client keeps 32 keep-alive connections busy with `POST
//! /v1/chat/completions` (a paid model, so usage is charged to the key's limits and to a
//! wallet either way), alternating rounds of a few seconds between the modes. It prints each
//! round's requests per second and p99, and the median of the per-round ratios: with keygate
//! (limits in memory) / without, and limits in Redis / limits in memory. For the Redis mode it
//! also prints what Redis did per request, from `INFO commandstats` (calls and CPU per command).
//! Client and server share the machine's cores, as a gateway's real clients would not.
//!
//! Options (after `--`): `--rounds N` (default 5), `--seconds S` per round (default 3),
//! `--redis URL` (default `KEYGATE_REDIS_URL`, else `redis://127.0.0.1:6379`; the Redis mode is
//! skipped when it does not answer). The bench's keys in Redis use a prefix of their own.

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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use keygate::format::SelectorFormat;
use keygate::limit::RedisConfig;
use keygate::manage::Usd;
use keygate::secret::{PepperId, Peppers};
use keygate::tower::JsonModel;
use keygate::{
    KeyKind, KeyStore, MemoryLimitStore, MemoryStore, ModelAllowlist, OsRng, Pepper, RateLimits, RedisLimitStore,
    SpendCap, SpendPeriod, Timestamp, Verifier,
};
use tokio::net::{TcpListener, TcpStream};

use crate::app::Gateway;

const CONNECTIONS: usize = 32;
const BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":64}"#;

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

/// One round's figures for one mode.
#[derive(Clone, Copy)]
struct Figures {
    per_second: f64,
    p99: Duration,
}

async fn run(rounds: usize, window: Duration, redis_url: &str) {
    let (memory, token) = gateway(backends::Limits::Memory(Arc::new(MemoryLimitStore::new())));
    let with_auth = listen(app::router(Arc::clone(&memory))).await;
    // The same handler and JSON reader, without the key check.
    let without_auth = listen(
        Router::new()
            .route("/v1/chat/completions", post(app::chat_completions))
            .layer(axum::middleware::from_fn(read_json_model))
            .with_state(Arc::clone(&memory)),
    )
    .await;
    let authorization = format!("Bearer {token}");
    // The same gateway with its limits in Redis, when Redis answers.
    let redis = match redis_admin(redis_url) {
        Some(admin) => {
            let prefix = format!("kgbench-{}", std::process::id());
            let config = RedisConfig::default().with_prefix(&prefix);
            let store = RedisLimitStore::open(redis_url, config).unwrap();
            let (gateway, token) = gateway(backends::Limits::Redis(store.clone()));
            let addr = listen(app::router(gateway)).await;
            Some((addr, format!("Bearer {token}"), store, admin))
        }
        None => {
            println!("gateway_load: no Redis at {redis_url}: the Redis mode is skipped");
            None
        }
    };

    println!("gateway_load: {CONNECTIONS} keep-alive connections, {rounds} rounds of {window:?} per mode");
    // Warm up every mode (connections, allocator, limiter state, the script in Redis).
    load(with_auth, Some(&authorization), Duration::from_millis(500)).await;
    load(without_auth, None, Duration::from_millis(500)).await;
    if let Some((addr, authorization, _, _)) = &redis {
        load(*addr, Some(authorization), Duration::from_millis(500)).await;
    }

    let (mut keygate_ratios, mut redis_ratios, mut p99_ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut redis_requests = 0.0;
    let mut stats_before = None;
    for round in 1..=rounds {
        let with = load(with_auth, Some(&authorization), window).await;
        let without = load(without_auth, None, window).await;
        let ratio = with.per_second / without.per_second;
        print!(
            "round {round}: without keygate {:>7.0} req/s p99 {:>6.2?} | memory limits {:>7.0} req/s p99 {:>6.2?} (x{ratio:.3})",
            without.per_second, without.p99, with.per_second, with.p99
        );
        keygate_ratios.push(ratio);
        if let Some((addr, authorization, _, admin)) = &redis {
            let before = commandstats(admin);
            let shared = load(*addr, Some(authorization), window).await;
            let after = commandstats(admin);
            stats_before.get_or_insert_with(Vec::new).push((before, after));
            redis_requests += shared.per_second * window.as_secs_f64();
            let (rps, p99) = (shared.per_second / with.per_second, ratio_of(shared.p99, with.p99));
            print!(
                " | redis limits {:>7.0} req/s p99 {:>6.2?} (x{rps:.3} req/s, x{p99:.3} p99 of memory)",
                shared.per_second, shared.p99
            );
            redis_ratios.push(rps);
            p99_ratios.push(p99);
        }
        println!();
    }
    println!(
        "gateway_load: median ratio (with keygate / without) = {:.3} over {rounds} rounds",
        median(&mut keygate_ratios)
    );
    if let Some((_, _, store, _)) = &redis {
        println!(
            "gateway_load: limits in Redis / in memory: requests/s x{:.3}, p99 x{:.3} (medians over {rounds} rounds)",
            median(&mut redis_ratios),
            median(&mut p99_ratios)
        );
        // Redis's own account of the Redis rounds: calls and CPU per request, by command.
        let mut per_command: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
        for (before, after) in stats_before.unwrap_or_default() {
            for (command, (calls, usec)) in &after {
                let (calls0, usec0) = before.get(command).copied().unwrap_or((0.0, 0.0));
                let entry = per_command.entry(command.clone()).or_default();
                entry.0 += calls - calls0;
                entry.1 += usec - usec0;
            }
        }
        for (command, (calls, usec)) in per_command.iter().filter(|(_, (calls, _))| *calls > 0.0) {
            println!(
                "gateway_load: redis {command}: {:.3} calls per request, {:.2} us per call, {:.2} us of Redis CPU per request",
                calls / redis_requests,
                usec / calls,
                usec / redis_requests
            );
        }
        store.flush().await.unwrap();
        println!("gateway_load: settlements dropped {}", store.dropped_settlements());
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn ratio_of(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// A plain connection to Redis for `INFO`, if Redis answers at `url`.
fn redis_admin(url: &str) -> Option<std::sync::Mutex<redis::Connection>> {
    let client = redis::Client::open(url).ok()?;
    let mut connection = client.get_connection_with_timeout(Duration::from_secs(1)).ok()?;
    let _: String = redis::cmd("PING").query(&mut connection).ok()?;
    Some(std::sync::Mutex::new(connection))
}

/// `INFO commandstats`: calls and microseconds of CPU per command, since the server started.
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
    stats
}

/// A gateway over `limits` with one key configured as a customer's would be: allowlists, rate
/// limits well above what the bench reaches, a concurrency cap above the connection count, a
/// spend cap.
fn gateway(limits: backends::Limits) -> (Arc<Gateway>, String) {
    let format = SelectorFormat::new("aistats").unwrap().with_kinds(&["sk", "mk"]).unwrap();
    let verifier = Verifier::new(format, Peppers::new(Pepper::new(PepperId(1), &[0x42; 32]).unwrap()));
    let memory = Arc::new(MemoryStore::new());
    let store = backends::Keys::Memory(Arc::clone(&memory));
    let (key, mut record) = verifier.issue(&mut OsRng, KeyKind::STANDARD, Timestamp::now()).unwrap();
    record.name = "bench".to_owned();
    record.allowed_models = ModelAllowlist::new(["gpt-4o*", "*:free"]).unwrap();
    record.allowed_providers = vec!["openai".to_owned()];
    record.rate_limit = RateLimits {
        requests_per_minute: Some(1_000_000_000),
        tokens_per_minute: Some(4_000_000_000),
        concurrency: Some(1024),
    };
    record.spend_cap = Some(SpendCap { amount_micros: 1_000_000_000_000, period: SpendPeriod::Month });
    memory.insert(record).unwrap();
    let gateway = Arc::new(Gateway::new(verifier, store, limits, Usd::MAX));
    (gateway, key.token().expose_secret().to_owned())
}

/// The JSON model reading keygate's layer does (`read_json_model`), for the baseline without
/// the key check: the body buffered and its model read, as the handler expects.
async fn read_json_model(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let (mut parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, app::MAX_BODY).await.unwrap();
    parts.extensions.insert(JsonModel::read(&bytes));
    next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

/// Serves `router` on a free loopback port.
async fn listen(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve::serve(listener, router, serve::Timeouts::default(), std::future::pending()));
    addr
}

/// Requests per second and p99 latency over `window` from [`CONNECTIONS`] connections.
async fn load(addr: SocketAddr, authorization: Option<&str>, window: Duration) -> Figures {
    let deadline = Instant::now() + window;
    let started = Instant::now();
    let clients: Vec<_> =
        (0..CONNECTIONS).map(|_| tokio::spawn(client(addr, authorization.map(str::to_owned), deadline))).collect();
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await.unwrap());
    }
    let per_second = latencies.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let p99 = latencies.get(latencies.len() * 99 / 100).copied().unwrap_or_default();
    Figures { per_second, p99 }
}

/// One keep-alive connection sending chat requests one after another until `deadline`: the
/// latency of each.
async fn client(addr: SocketAddr, authorization: Option<String>, deadline: Instant) -> Vec<Duration> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let mut latencies = Vec::with_capacity(1 << 14);
    while Instant::now() < deadline {
        let sent = Instant::now();
        let mut request = Request::post("/v1/chat/completions")
            .header("host", addr.to_string())
            .header("content-type", "application/json");
        if let Some(authorization) = &authorization {
            request = request.header("authorization", authorization);
        }
        let request = request.body(Full::new(Bytes::from_static(BODY.as_bytes()))).unwrap();
        sender.ready().await.unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.starts_with(b"{\"id\":\"chatcmpl-"));
        latencies.push(sent.elapsed());
    }
    latencies
}
