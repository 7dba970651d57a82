//! What the gateway load benches (`gateway_load`, `gateway_load_log`) share: the bench's key,
//! the baseline router without keygate, a loopback listener, and the load generator. Each bench
//! includes the gateway's modules at its root (`crate::app`, `crate::serve`).

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
use keygate::secret::{PepperId, Peppers};
use keygate::tower::JsonModel;
use keygate::{
    KeyKind, KeyRecord, ModelAllowlist, OsRng, Pepper, RateLimits, SpendCap, SpendPeriod, Timestamp, Verifier,
};
use tokio::net::{TcpListener, TcpStream};

use crate::app::{self, Gateway};
use crate::serve;

/// Keep-alive connections kept busy.
pub(crate) const CONNECTIONS: usize = 32;
/// A chat request to a paid model.
pub(crate) const BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":64}"#;

/// One mode's figures over one window.
#[derive(Clone, Copy)]
pub(crate) struct Figures {
    pub(crate) per_second: f64,
    pub(crate) p99: Duration,
}

/// The benches' verifier (every gateway of a run shares its pepper).
pub(crate) fn verifier() -> Verifier {
    let format = SelectorFormat::new("aistats").unwrap().with_kinds(&["sk", "mk"]).unwrap();
    Verifier::new(format, Peppers::new(Pepper::new(PepperId(1), &[0x42; 32]).unwrap()))
}

/// One key configured as a customer's would be: allowlists, rate limits well above what the
/// bench reaches, a concurrency cap above the connection count, a spend cap. Its token and the
/// record to store.
pub(crate) fn bench_key(verifier: &Verifier) -> (String, KeyRecord) {
    let (key, mut record) = verifier.issue(&mut OsRng, KeyKind::STANDARD, Timestamp::now()).unwrap();
    record.name = "bench".to_owned();
    record.allowed_models = ModelAllowlist::new(["gpt-4o*", "*:free"]).unwrap();
    record.allowed_providers = vec!["openai".to_owned(), "meta".to_owned()];
    record.rate_limit = RateLimits {
        requests_per_minute: Some(1_000_000_000),
        tokens_per_minute: Some(4_000_000_000),
        concurrency: Some(1024),
    };
    record.spend_cap = Some(SpendCap { amount_micros: 1_000_000_000_000, period: SpendPeriod::Month });
    (key.token().expose_secret().to_owned(), record)
}

/// The same chat handler behind the same JSON reader, without the key check: the baseline.
pub(crate) fn without_keygate(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(app::chat_completions))
        .layer(axum::middleware::from_fn(read_json_model))
        .with_state(gateway)
}

/// The JSON model reading keygate's layer does, for the baseline: the body buffered and its
/// model read, as the handler expects.
async fn read_json_model(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let (mut parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, app::MAX_BODY).await.unwrap();
    parts.extensions.insert(JsonModel::read(&bytes));
    next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

/// Serves `router` on a free loopback port.
pub(crate) async fn listen(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve::serve(listener, router, serve::Timeouts::default(), std::future::pending()));
    addr
}

/// Requests per second and p99 latency over `window` from [`CONNECTIONS`] connections, with
/// the `authorization` values in turn (none if empty), each answered `status`.
pub(crate) async fn load(
    addr: SocketAddr,
    authorization: &[String],
    status: u16,
    body: &'static str,
    window: Duration,
) -> Figures {
    let deadline = Instant::now() + window;
    let started = Instant::now();
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            // Each connection starts at its own place in the list.
            let n = authorization.len();
            let tokens: Vec<String> = (0..n).map(|j| authorization[(i * 131 + j) % n].clone()).collect();
            tokio::spawn(client(addr, tokens, status, body, deadline))
        })
        .collect();
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await.unwrap());
    }
    let per_second = latencies.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let p99 = latencies.get(latencies.len() * 99 / 100).copied().unwrap_or_default();
    Figures { per_second, p99 }
}

/// One keep-alive connection sending chat requests one after another until `deadline`, with the
/// `authorization` values in turn (none if empty), each expected to be answered `status`: the
/// latency of each.
async fn client(
    addr: SocketAddr,
    authorization: Vec<String>,
    status: u16,
    body: &'static str,
    deadline: Instant,
) -> Vec<Duration> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let mut latencies = Vec::with_capacity(1 << 14);
    let mut next = authorization.iter().cycle();
    while Instant::now() < deadline {
        let sent = Instant::now();
        let mut request = Request::post("/v1/chat/completions")
            .header("host", addr.to_string())
            .header("content-type", "application/json");
        if let Some(authorization) = next.next() {
            request = request.header("authorization", authorization);
        }
        let request = request.body(Full::new(Bytes::from_static(body.as_bytes()))).unwrap();
        sender.ready().await.unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), status);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        if status == 200 {
            assert!(body.starts_with(b"{\"id\":\"chatcmpl-"));
        }
        latencies.push(sent.elapsed());
    }
    latencies
}
