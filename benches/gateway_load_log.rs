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
use keygate::manage::Usd;
use keygate::secret::{PepperId, Peppers};
use keygate::tower::JsonModel;
use keygate::usage_log::{LogConfig, MemoryLog, UsageLog};
use keygate::{
    KeyKind, KeyStore, MemoryLimitStore, MemoryStore, ModelAllowlist, OsRng, Pepper, RateLimits, SpendCap, SpendPeriod,
    Timestamp, Verifier,
};
use tokio::net::{TcpListener, TcpStream};

use crate::app::Gateway;

const CONNECTIONS: usize = 32;
const BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":64}"#;

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
    let without_auth = listen(
        Router::new()
            .route("/v1/chat/completions", post(app::chat_completions))
            .layer(axum::middleware::from_fn(read_json_model))
            .with_state(Arc::clone(&gateway)),
    )
    .await;
    let authorization = format!("Bearer {token}");

    println!("gateway_load: {CONNECTIONS} keep-alive connections, {rounds} rounds of {window:?} each way");
    // Warm up both (connections, allocator, limiter state).
    load(with_auth, Some(&authorization), Duration::from_millis(500)).await;
    load(without_auth, None, Duration::from_millis(500)).await;
    load(with_log, Some(&authorization), Duration::from_millis(500)).await;

    let (mut ratios, mut log_ratios) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Log on and off run back to back, in turn first, so that drift in the machine's load
        // falls on both alike.
        let (with, logged) = if round % 2 == 1 {
            let with = load(with_auth, Some(&authorization), window).await;
            (with, load(with_log, Some(&authorization), window).await)
        } else {
            let logged = load(with_log, Some(&authorization), window).await;
            (load(with_auth, Some(&authorization), window).await, logged)
        };
        let without = load(without_auth, None, window).await;
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

/// The bench's keys: one key configured as a customer's would be: allowlists, rate limits well
/// above what the bench reaches, a concurrency cap above the connection count, a spend cap.
/// Returns the store and the key's token.
fn keys() -> (Arc<MemoryStore>, String) {
    let memory = Arc::new(MemoryStore::new());
    let (key, mut record) = verifier().issue(&mut OsRng, KeyKind::STANDARD, Timestamp::now()).unwrap();
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
    (memory, key.token().expose_secret().to_owned())
}

fn verifier() -> Verifier {
    let format = SelectorFormat::new("aistats").unwrap().with_kinds(&["sk", "mk"]).unwrap();
    Verifier::new(format, Peppers::new(Pepper::new(PepperId(1), &[0x42; 32]).unwrap()))
}

/// A gateway over the keys in `memory`, with limits of its own, and a usage log or none.
fn gateway(memory: &Arc<MemoryStore>, log: Option<UsageLog<logs::Logs>>) -> Arc<Gateway> {
    let store = backends::Keys::Memory(Arc::clone(memory));
    let limits = backends::Limits::Memory(Arc::new(MemoryLimitStore::new()));
    Arc::new(Gateway::with_log(verifier(), store, limits, Usd::MAX, log))
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

/// Requests per second over `window` from [`CONNECTIONS`] connections.
async fn load(addr: SocketAddr, authorization: Option<&str>, window: Duration) -> f64 {
    let deadline = Instant::now() + window;
    let started = Instant::now();
    let clients: Vec<_> =
        (0..CONNECTIONS).map(|_| tokio::spawn(client(addr, authorization.map(str::to_owned), deadline))).collect();
    let mut total = 0u64;
    for client in clients {
        total += client.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// One keep-alive connection sending chat requests one after another until `deadline`.
async fn client(addr: SocketAddr, authorization: Option<String>, deadline: Instant) -> u64 {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let mut done = 0;
    while Instant::now() < deadline {
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
        done += 1;
    }
    done
}
