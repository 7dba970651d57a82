//! Load figure: requests per second on the reference gateway's chat route over loopback, with
//! keygate in front and without it, as a ratio measured in one run.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]
//!
//! `cargo bench --bench gateway_load --features full` serves, in this process, the
//! gateway's router (`examples/gateway/app.rs`: JSON model reader, key check with a key that has
//! a model and provider allowlist, rate limits, a concurrency cap and a spend cap, last-used
//! tracking) and, on a second port, the same chat handler behind the same JSON reader but no
//! key check. A hyper client keeps 32 keep-alive connections busy with `POST
//! /v1/chat/completions` (a paid model, so usage is charged to the key's limits and to a
//! wallet either way), alternating rounds of a few seconds between the two. It prints each
//! round's requests per second and the median of the per-round ratios (with / without).
//! Client and server share the machine's cores, as a gateway's real clients would not.
//!
//! Options (after `--`): `--rounds N` (default 5), `--seconds S` per round (default 3).

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
#[path = "../examples/gateway/mock.rs"]
mod mock;
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
use keygate::tower::JsonModelLayer;
use keygate::{
    KeyKind, KeyStore, MemoryLimitStore, MemoryStore, ModelAllowlist, OsRng, Pepper, PepperId, Peppers, RateLimits,
    Ready, SelectorFormat, SpendCap, SpendPeriod, Timestamp, Usd, Verifier,
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
    let (rounds, seconds) = (option("--rounds", 5), option("--seconds", 3));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(usize::try_from(rounds).unwrap(), Duration::from_secs(seconds)));
}

async fn run(rounds: usize, window: Duration) {
    let (gateway, token) = gateway();
    let with_auth = listen(app::router(Arc::clone(&gateway))).await;
    // The same handler and JSON reader, without the key check.
    let without_auth = listen(
        Router::new()
            .route("/v1/chat/completions", post(app::chat_completions))
            .layer(JsonModelLayer::new(app::MAX_BODY))
            .with_state(Arc::clone(&gateway)),
    )
    .await;
    let authorization = format!("Bearer {token}");

    println!("gateway_load: {CONNECTIONS} keep-alive connections, {rounds} rounds of {window:?} each way");
    // Warm up both (connections, allocator, limiter state).
    load(with_auth, Some(&authorization), Duration::from_millis(500)).await;
    load(without_auth, None, Duration::from_millis(500)).await;

    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let with = load(with_auth, Some(&authorization), window).await;
        let without = load(without_auth, None, window).await;
        let ratio = with / without;
        println!("round {round}: with keygate {with:>9.0} req/s   without {without:>9.0} req/s   ratio {ratio:.3}");
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    println!("gateway_load: median ratio (with keygate / without) = {median:.3} over {rounds} rounds");
}

/// A gateway with one key configured as a customer's would be: allowlists, rate limits well
/// above what the bench reaches, a concurrency cap above the connection count, a spend cap.
fn gateway() -> (Arc<Gateway>, String) {
    let format = SelectorFormat::new("aistats").unwrap().with_kinds(&["sk", "mk"]).unwrap();
    let verifier = Verifier::new(format, Peppers::new(Pepper::new(PepperId(1), &[0x42; 32]).unwrap()));
    let memory = Arc::new(MemoryStore::new());
    let store = Arc::new(backends::Keys::Memory(Ready(Arc::clone(&memory))));
    let limits = Arc::new(backends::Limits::Memory(MemoryLimitStore::new()));
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

/// Serves `router` on a free loopback port.
async fn listen(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(app::serve(listener, router, std::future::pending()));
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
