//! The tower layer in front of an axum router: denials answered with their status, headers and
//! body; a passing request reaches the handler with its Principal; rate-limit headers on the
//! response; the concurrency slot held until the response body ends; reported usage reconciled.
#![cfg(all(feature = "tower", feature = "json"))]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Extension;
use axum::routing::post;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use keygate::format::SelectorFormat;
use keygate::limit::Limiter;
use keygate::secret::{PepperId, Peppers};
use keygate::tower::{JsonModel, KeyGateLayer};
use keygate::{
    Gate, KeyKind, KeyStore, LimitRequest, MemoryLimitStore, MemoryStore, ModelAllowlist, Pepper, Timestamp, Usage,
    Verifier,
};
use keygate::{Principal, Requirements};
use tower::ServiceExt;

type TestGate = Gate<MemoryStore, Arc<MemoryLimitStore>>;

fn gate() -> Arc<TestGate> {
    let verifier = Verifier::new(
        SelectorFormat::new("aistats").unwrap(),
        Peppers::new(Pepper::new(PepperId(1), &[3; 32]).unwrap()),
    );
    Arc::new(Gate::new(verifier, MemoryStore::new(), Limiter::new(Arc::new(MemoryLimitStore::new()))))
}

fn issue(gate: &TestGate, change: impl FnOnce(&mut keygate::KeyRecord)) -> String {
    let (key, mut record) = gate.verifier().issue(&mut keygate::OsRng, KeyKind::STANDARD, Timestamp::now()).unwrap();
    change(&mut record);
    gate.store().insert(record).unwrap();
    key.token().expose_secret().to_owned()
}

fn app(gate: Arc<TestGate>) -> Router {
    let classify = |req: &Request<Body>| {
        let json = req.extensions().get::<JsonModel>().cloned().unwrap_or_default();
        Requirements::new()
            .with_limits(LimitRequest::new().with_tokens(json.max_tokens.unwrap_or(16)))
            .with_model(json.model)
    };
    Router::new()
        .route(
            "/v1/chat/completions",
            post(|Extension(principal): Extension<Principal>| async move {
                principal.report(Usage::new(5, 0));
                format!("hello {}", principal.id())
            }),
        )
        .layer(KeyGateLayer::new(gate, classify).with_realm("test").unwrap().read_json_model(64 * 1024))
}

fn chat(token: Option<&str>, model: &str) -> Request<Body> {
    let mut b = Request::post("/v1/chat/completions").header("content-type", "application/json");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::from(format!(r#"{{"model":"{model}","max_tokens":10,"messages":[]}}"#))).unwrap()
}

async fn body(
    response: http::Response<impl http_body::Body<Data = bytes::Bytes, Error = impl std::fmt::Debug>>,
) -> String {
    String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn denials_have_status_headers_and_json() {
    let gate = gate();
    let response = app(gate.clone()).oneshot(chat(None, "gpt-4o")).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], r#"Bearer realm="test""#);
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = body(response).await;
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["error"]["code"], "missing_api_key");

    let token = issue(&gate, |r| r.allowed_models = ModelAllowlist::new(["gpt-4o"]).unwrap());
    let response = app(gate.clone()).oneshot(chat(Some(&token), "claude-3")).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(body(response).await.contains("model_not_allowed"));
}

#[tokio::test]
async fn a_passing_request_reaches_the_handler_with_rate_limit_headers() {
    let gate = gate();
    let token = issue(&gate, |r| {
        r.rate_limit.requests_per_minute = Some(2);
        r.rate_limit.tokens_per_minute = Some(100);
    });
    let response = app(gate.clone()).oneshot(chat(Some(&token), "gpt-4o")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-ratelimit-limit-requests"], "2");
    assert_eq!(response.headers()["x-ratelimit-remaining-requests"], "1");
    assert_eq!(response.headers()["x-ratelimit-remaining-tokens"], "90");
    assert!(body(response).await.starts_with("hello "));
    // The usage reported (5 tokens) replaced the estimate (10): 5 came back when the body ended.
    let response = app(gate.clone()).oneshot(chat(Some(&token), "gpt-4o")).await.unwrap();
    assert_eq!(response.headers()["x-ratelimit-remaining-tokens"], "85");
    drop(response);
    let response = app(gate).oneshot(chat(Some(&token), "gpt-4o")).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["x-ratelimit-remaining-requests"], "0");
    assert!(response.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn the_concurrency_slot_is_held_until_the_body_ends() {
    let gate = gate();
    let token = issue(&gate, |r| r.rate_limit.concurrency = Some(1));
    let first = app(gate.clone()).oneshot(chat(Some(&token), "gpt-4o")).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    // The first response's body has not been read: its request is still in flight.
    let second = app(gate.clone()).oneshot(chat(Some(&token), "gpt-4o")).await.unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(body(second).await.contains("concurrency_limited"));
    let _ = body(first).await;
    let third = app(gate).oneshot(chat(Some(&token), "gpt-4o")).await.unwrap();
    assert_eq!(third.status(), StatusCode::OK);
}

#[tokio::test]
async fn grpc_requests_get_a_grpc_status() {
    let gate = gate();
    let request = Request::post("/v1/chat/completions")
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .body(Body::empty())
        .unwrap();
    let response = app(gate).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "16");
    assert_eq!(
        response.headers()["grpc-message"],
        "missing_api_key: No API key provided. Send it as 'Authorization: Bearer <key>'."
    );
}

// Issue 15, item 3: for a key with a model or provider allowlist, a request whose model cannot
// be read unambiguously is refused, never admitted. Each case names `gpt-4o` (outside the key's
// allowlist) in a way the reader once lost; the gate must refuse it, and never call the handler.

/// A key limited to `gpt-4o-mini`.
fn restricted(gate: &TestGate) -> String {
    issue(gate, |r| r.allowed_models = ModelAllowlist::new(["gpt-4o-mini"]).unwrap())
}

fn send(token: &str, content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::post("/v1/chat/completions").header("authorization", format!("Bearer {token}"));
    if let Some(content_type) = content_type {
        b = b.header("content-type", content_type);
    }
    b.body(body.into()).unwrap()
}

/// The status and the denial code (if any) of `request` through the layers.
async fn outcome(gate: &Arc<TestGate>, request: Request<Body>) -> (StatusCode, String) {
    let response = app(Arc::clone(gate)).oneshot(request).await.unwrap();
    let status = response.status();
    let text = body(response).await;
    let code = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|json| json["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or(text);
    (status, code)
}

async fn assert_refused(gate: &Arc<TestGate>, token: &str, content_type: &str, json: &str) {
    let (status, code) = outcome(gate, send(token, Some(content_type), json.to_owned())).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "model_not_allowed"), "{content_type}: {json}");
}

#[tokio::test]
async fn a_fractional_max_tokens_does_not_hide_the_model() {
    let gate = gate();
    let token = restricted(&gate);
    assert_refused(&gate, &token, "application/json", r#"{"model":"gpt-4o","max_tokens":1.5,"messages":[]}"#).await;
    // The model is read on its own: the same body with the allowed model passes.
    let allowed = r#"{"model":"gpt-4o-mini","max_tokens":1.5,"messages":[]}"#;
    let (status, _) = outcome(&gate, send(&token, Some("application/json"), allowed)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_negative_max_tokens_does_not_hide_the_model() {
    let gate = gate();
    let token = restricted(&gate);
    assert_refused(&gate, &token, "application/json", r#"{"model":"gpt-4o","max_tokens":-1,"messages":[]}"#).await;
    let allowed = r#"{"model":"gpt-4o-mini","max_completion_tokens":-1,"messages":[]}"#;
    let (status, _) = outcome(&gate, send(&token, Some("application/json"), allowed)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_duplicate_model_key_is_refused() {
    let gate = gate();
    let token = restricted(&gate);
    for json in [
        r#"{"model":"gpt-4o-mini","model":"gpt-4o","messages":[]}"#,
        r#"{"model":"gpt-4o","model":"gpt-4o-mini","messages":[]}"#,
        r#"{"model":"gpt-4o-mini","messages":[],"model":"gpt-4o-mini"}"#,
        // The same key, spelled with an escape.
        r#"{"model":"gpt-4o-mini","mod\u0065l":"gpt-4o","messages":[]}"#,
    ] {
        assert_refused(&gate, &token, "application/json", json).await;
    }
}

#[tokio::test]
async fn json_media_types_compare_case_insensitively_and_take_parameters() {
    let gate = gate();
    let token = restricted(&gate);
    let forbidden = r#"{"model":"gpt-4o","messages":[]}"#;
    let allowed = r#"{"model":"gpt-4o-mini","messages":[]}"#;
    for content_type in [
        "Application/JSON",
        "APPLICATION/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "Application/Json ; Charset=\"utf-8\"",
    ] {
        assert_refused(&gate, &token, content_type, forbidden).await;
        // Read, not merely refused: the allowed model passes with the same media type.
        let (status, _) = outcome(&gate, send(&token, Some(content_type), allowed)).await;
        assert_eq!(status, StatusCode::OK, "{content_type}");
    }
}

// The suspected gRPC case: a plain HTTP client sending `content-type: application/grpc` to an
// HTTP route. gRPC answers denials as trailers-only responses (HTTP 200 and a `grpc-status`);
// only a request that is gRPC (a POST over HTTP/2, or gRPC-Web) gets one.

#[tokio::test]
async fn a_grpc_content_type_over_http1_gets_an_http_denial() {
    let gate = gate();
    for content_type in ["application/grpc", "application/grpc+proto", "Application/GRPC"] {
        let request = Request::post("/v1/chat/completions")
            .version(http::Version::HTTP_11)
            .header("content-type", content_type)
            .body(Body::from(r#"{"model":"gpt-4o","messages":[]}"#))
            .unwrap();
        let (status, code) = outcome(&gate, request).await;
        assert_eq!((status, code.as_str()), (StatusCode::UNAUTHORIZED, "missing_api_key"), "{content_type}");
    }
}

#[tokio::test]
async fn a_grpc_content_type_does_not_carry_a_forbidden_model_past_the_gate() {
    let gate = gate();
    let token = restricted(&gate);
    for version in [http::Version::HTTP_11, http::Version::HTTP_2] {
        let request = Request::post("/v1/chat/completions")
            .version(version)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/grpc")
            .body(Body::from(r#"{"model":"gpt-4o","messages":[]}"#))
            .unwrap();
        let response = app(Arc::clone(&gate)).oneshot(request).await.unwrap();
        let grpc_status = response.headers().get("grpc-status").cloned();
        let grpc_message = response.headers().get("grpc-message").cloned();
        let status = response.status();
        let text = body(response).await;
        assert!(!text.starts_with("hello"), "{version:?}: the handler ran");
        if version == http::Version::HTTP_2 {
            assert_eq!((status, grpc_status.unwrap().to_str().unwrap()), (StatusCode::OK, "7"), "{version:?}");
            assert!(grpc_message.unwrap().to_str().unwrap().starts_with("model_not_allowed: "));
            assert_eq!(text, "", "a trailers-only response");
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "{version:?}");
            assert!(text.contains("model_not_allowed"), "{version:?}: {text}");
        }
    }
}

/// Bodies that name `gpt-4o` (or a model of the allowlist) in a way that cannot be read
/// unambiguously, each with the content type it is sent with.
const UNREADABLE: &[(&str, &str, &[u8])] = &[
    ("not JSON", "application/json", b"model=gpt-4o"),
    ("a trailing comma", "application/json", br#"{"model":"gpt-4o","messages":[],}"#),
    ("a second document", "application/json", br#"{"model":"gpt-4o-mini"}{"model":"gpt-4o"}"#),
    ("a comment", "application/json", br#"{"model":"gpt-4o" /* ,"model":"gpt-4o-mini" */}"#),
    ("an array", "application/json", br#"[{"model":"gpt-4o"}]"#),
    ("a model list", "application/json", br#"{"model":["gpt-4o-mini","gpt-4o"]}"#),
    ("a model object", "application/json", br#"{"model":{"model":"gpt-4o-mini"}}"#),
    ("a null model", "application/json", br#"{"model":null,"messages":[]}"#),
    ("a numeric model", "application/json", br#"{"model":4,"messages":[]}"#),
    ("invalid UTF-8", "application/json", b"{\"model\":\"gpt-4o\",\"x\":\"\xff\"}"),
    ("a byte order mark", "application/json", b"\xef\xbb\xbf{\"model\":\"gpt-4o\"}"),
    ("a lone surrogate key", "application/json", br#"{"model":"gpt-4o","mod\ud800el":"gpt-4o-mini"}"#),
    ("UTF-16 declared", "application/json; charset=utf-16", br#"{"model":"gpt-4o"}"#),
    ("another JSON-like type", "application/jsonx", br#"{"model":"gpt-4o"}"#),
    ("text/plain", "text/plain", br#"{"model":"gpt-4o"}"#),
    ("form data", "application/x-www-form-urlencoded", br#"{"model":"gpt-4o"}"#),
];

#[tokio::test]
async fn a_model_that_cannot_be_read_is_refused_for_a_restricted_key() {
    let gate = gate();
    let token = restricted(&gate);
    for &(case, content_type, json) in UNREADABLE {
        let (status, code) = outcome(&gate, send(&token, Some(content_type), json.to_vec())).await;
        assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "model_not_allowed"), "{case}");
    }
    // No content type at all, and two content types.
    let (status, code) = outcome(&gate, send(&token, None, r#"{"model":"gpt-4o"}"#)).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "model_not_allowed"), "no content type");
    let mut twice = send(&token, Some("application/json"), r#"{"model":"gpt-4o"}"#);
    twice.headers_mut().append("content-type", "text/plain".parse().unwrap());
    let (status, code) = outcome(&gate, twice).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "model_not_allowed"), "two content types");
}

#[tokio::test]
async fn a_provider_allowlist_also_refuses_a_model_that_cannot_be_read() {
    let gate = gate();
    let token = issue(&gate, |r| r.allowed_providers = vec!["openai".to_owned()]);
    let body = r#"{"model":"gpt-4o","model":"claude-3","messages":[]}"#;
    let (status, code) = outcome(&gate, send(&token, Some("application/json"), body)).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "model_not_allowed"));
}

#[tokio::test]
async fn a_key_without_allowlists_passes_a_model_that_cannot_be_read() {
    // The gate has nothing to protect: the handler answers the malformed request itself.
    let gate = gate();
    let token = issue(&gate, |_| {});
    for &(case, content_type, json) in UNREADABLE {
        let (status, text) = outcome(&gate, send(&token, Some(content_type), json.to_vec())).await;
        assert_eq!(status, StatusCode::OK, "{case}");
        assert!(text.starts_with("hello "), "{case}: {text}");
    }
}

#[tokio::test]
async fn the_model_is_read_where_it_is_and_only_there() {
    let gate = gate();
    let token = restricted(&gate);
    // A `model` inside another field is not the request's model.
    let nested =
        r#"{"messages":[{"role":"user","model":"gpt-4o-mini"}],"metadata":{"model":"gpt-4o-mini"},"model":"gpt-4o"}"#;
    assert_refused(&gate, &token, "application/json", nested).await;
    let nested = r#"{"messages":[{"role":"user","model":"gpt-4o"}],"model":"gpt-4o-mini"}"#;
    let (status, _) = outcome(&gate, send(&token, Some("application/json"), nested)).await;
    assert_eq!(status, StatusCode::OK);
    // Deeply nested fields before it do not hide it.
    let deep = |model: &str| format!(r#"{{"x":{}0{},"model":"{model}"}}"#, "[{\"a\":".repeat(500), "}]".repeat(500));
    assert_refused(&gate, &token, "application/json", &deep("gpt-4o")).await;
    let (status, _) = outcome(&gate, send(&token, Some("application/json"), deep("gpt-4o-mini"))).await;
    assert_eq!(status, StatusCode::OK);
    // A request with no body asks for no model.
    let (status, text) = outcome(&gate, send(&token, None, Body::empty())).await;
    assert_eq!(status, StatusCode::OK, "{text}");
}

/// A request body delivered in pieces, like a chunked upload, that may fail after them.
struct Chunks {
    pieces: std::collections::VecDeque<bytes::Bytes>,
    fail: bool,
}

impl Chunks {
    fn body(body: &str, piece: usize, fail: bool) -> Body {
        let pieces = body.as_bytes().chunks(piece).map(bytes::Bytes::copy_from_slice).collect();
        Body::new(Self { pieces, fail })
    }
}

impl http_body::Body for Chunks {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        let next = match self.pieces.pop_front() {
            Some(piece) => Some(Ok(http_body::Frame::data(piece))),
            None if std::mem::take(&mut self.fail) => Some(Err(std::io::ErrorKind::ConnectionReset.into())),
            None => None,
        };
        std::task::Poll::Ready(next)
    }
}

#[tokio::test]
async fn chunked_bodies_are_read_whole_and_fail_closed() {
    let gate = gate();
    let token = restricted(&gate);
    let forbidden = r#"{"messages":[],"model":"gpt-4o","max_tokens":10}"#;
    let allowed = r#"{"messages":[],"model":"gpt-4o-mini","max_tokens":10}"#;
    for piece in [1, 3, 7] {
        let (status, code) =
            outcome(&gate, send(&token, Some("application/json"), Chunks::body(forbidden, piece, false))).await;
        assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "model_not_allowed"), "{piece}");
        let (status, _) =
            outcome(&gate, send(&token, Some("application/json"), Chunks::body(allowed, piece, false))).await;
        assert_eq!(status, StatusCode::OK, "{piece}");
    }
    // A body cut short is refused before the gate (400), whatever model it named.
    let (status, text) = outcome(&gate, send(&token, Some("application/json"), Chunks::body(allowed, 5, true))).await;
    assert_eq!((status, text.as_str()), (StatusCode::BAD_REQUEST, "invalid_body"));
    // So is a body over the limit (413), in one piece or many.
    let padding = "x".repeat(64 * 1024);
    let large = format!(r#"{{"model":"gpt-4o-mini","padding":"{padding}"}}"#);
    let (status, text) = outcome(&gate, send(&token, Some("application/json"), large.clone())).await;
    assert_eq!((status, text.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large"));
    let (status, text) =
        outcome(&gate, send(&token, Some("application/json"), Chunks::body(&large, 4096, false))).await;
    assert_eq!((status, text.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large"));
}

#[tokio::test]
async fn a_max_tokens_that_is_not_a_count_takes_the_default_estimate() {
    let gate = gate();
    let token = issue(&gate, |r| {
        r.allowed_models = ModelAllowlist::new(["gpt-4o-mini"]).unwrap();
        r.rate_limit.tokens_per_minute = Some(1000);
    });
    let mut remaining = 1000;
    for (max_tokens, estimate) in [("10", 10), ("1.5", 16), ("-1", 16), ("\"10\"", 16), ("1e3", 16), ("100", 100)] {
        let json = format!(r#"{{"model":"gpt-4o-mini","max_tokens":{max_tokens},"messages":[]}}"#);
        let response = app(Arc::clone(&gate)).oneshot(send(&token, Some("application/json"), json)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{max_tokens}");
        remaining -= estimate;
        assert_eq!(response.headers()["x-ratelimit-remaining-tokens"], remaining.to_string().as_str(), "{max_tokens}");
        // Hold the response: its reconciliation (5 tokens used) would change the count.
        std::mem::forget(response);
    }
}

#[test]
fn json_model_reads_one_model_or_none_or_says_it_cannot() {
    use keygate::RequestedModel::{Absent, Named, Unreadable};
    let cases: &[(&[u8], keygate::RequestedModel<&str>, Option<u32>)] = &[
        (b"", Absent, None),
        (br#"{}"#, Absent, None),
        (br#" {"messages":[]} "#, Absent, None),
        (br#"{"model":"gpt-4o"}"#, Named("gpt-4o"), None),
        (br#"{"model":"gpt-\u0034o","max_tokens":7}"#, Named("gpt-4o"), Some(7)),
        (br#"{"max_tokens":7,"max_completion_tokens":9,"model":"m"}"#, Named("m"), Some(9)),
        (br#"{"max_tokens":5000000000,"model":"m"}"#, Named("m"), Some(u32::MAX)),
        (br#"{"model":"m","max_tokens":1.5}"#, Named("m"), None),
        (br#"{"model":"m","max_tokens":-1}"#, Named("m"), None),
        (br#"{"model":"m","model":"m"}"#, Unreadable, None),
        (br#"{"model":"a","mod\u0065l":"b"}"#, Unreadable, None),
        (br#"{"model":"a","x":1,}"#, Unreadable, None),
        (br#"{"model":"a"} x"#, Unreadable, None),
        (br#"{"model":true}"#, Unreadable, None),
        (br#""gpt-4o""#, Unreadable, None),
        (b" ", Unreadable, None),
    ];
    for &(body, expected, max_tokens) in cases {
        let read = JsonModel::read(body);
        let shown = String::from_utf8_lossy(body);
        assert_eq!(read.model.as_deref(), expected, "{shown}");
        assert_eq!(read.max_tokens, max_tokens, "{shown}");
        assert_eq!(read.body_len, body.len());
        assert!(read.json);
    }
}

/// A body that records whether anyone polled it, and sends nothing: the 10 MB a slow or hostile
/// client announces and never finishes, or finishes with a timeout.
struct Watched {
    polled: Arc<std::sync::atomic::AtomicBool>,
    fail: Option<std::io::ErrorKind>,
}

impl http_body::Body for Watched {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        self.polled.store(true, std::sync::atomic::Ordering::SeqCst);
        match self.fail {
            Some(kind) => std::task::Poll::Ready(Some(Err(std::io::Error::new(kind, "body failed")))),
            None => std::task::Poll::Pending,
        }
    }
}

fn watched_chat(
    token: Option<&str>,
    fail: Option<std::io::ErrorKind>,
) -> (Request<Body>, Arc<std::sync::atomic::AtomicBool>) {
    let polled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut b = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("content-length", "10485760");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    (b.body(Body::new(Watched { polled: Arc::clone(&polled), fail })).unwrap(), polled)
}

/// A caller without a valid key is answered 401 from the headers alone: its body is never read.
#[tokio::test]
async fn the_key_is_checked_before_the_body_is_read() {
    let gate = gate();
    for token in [None, Some("aistats_v1_sk_0000000000000000_nope")] {
        let (request, polled) = watched_chat(token, None);
        let response = tokio::time::timeout(std::time::Duration::from_secs(5), app(Arc::clone(&gate)).oneshot(request))
            .await
            .expect("answered without waiting for the body")
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(!polled.load(std::sync::atomic::Ordering::SeqCst), "the body was read");
    }
}

/// A key's body that fails to arrive in time (the server's deadline, an `io::Error` of kind
/// `TimedOut`) is answered 408; one that breaks off, 400; neither reaches the handler.
#[tokio::test]
async fn a_body_that_does_not_arrive_is_408_or_400() {
    let gate = gate();
    let token = issue(&gate, |_| {});
    for (kind, status, code) in [
        (std::io::ErrorKind::TimedOut, StatusCode::REQUEST_TIMEOUT, "request_timeout"),
        (std::io::ErrorKind::ConnectionReset, StatusCode::BAD_REQUEST, "invalid_body"),
    ] {
        let (request, polled) = watched_chat(Some(&token), Some(kind));
        let response = app(Arc::clone(&gate)).oneshot(request).await.unwrap();
        assert!(polled.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(response.status(), status);
        let text = body(response).await;
        assert!(text.contains(&format!(r#""code":"{code}""#)), "{text}");
    }
}
