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
use keygate::tower::{JsonModel, JsonModelLayer, KeyGateLayer, Principal, Requirements};
use keygate::{
    Gate, KeyKind, KeyStore, LimitRequest, Limiter, MemoryLimitStore, MemoryStore, ModelAllowlist, Pepper, PepperId,
    Peppers, Ready, SelectorFormat, Timestamp, Usage, Verifier,
};
use tower::ServiceExt;

type TestGate = Gate<Ready<MemoryStore>, Arc<MemoryLimitStore>>;

fn gate() -> Arc<TestGate> {
    let verifier = Verifier::new(
        SelectorFormat::new("aistats").unwrap(),
        Peppers::new(Pepper::new(PepperId(1), &[3; 32]).unwrap()),
    );
    Arc::new(Gate::new(verifier, Ready(MemoryStore::new()), Limiter::new(Arc::new(MemoryLimitStore::new()))))
}

fn issue(gate: &TestGate, change: impl FnOnce(&mut keygate::KeyRecord)) -> String {
    let (key, mut record) = gate.verifier().issue(&mut keygate::OsRng, KeyKind::STANDARD, Timestamp::now()).unwrap();
    change(&mut record);
    gate.store().0.insert(record).unwrap();
    key.token().expose_secret().to_owned()
}

fn app(gate: Arc<TestGate>) -> Router {
    let classify = |req: &Request<Body>| {
        let json = req.extensions().get::<JsonModel>().cloned().unwrap_or_default();
        let mut r = Requirements::new().with_limits(LimitRequest::new().with_tokens(json.max_tokens.unwrap_or(16)));
        if let Some(model) = json.model {
            r = r.with_model(model);
        }
        r
    };
    Router::new()
        .route(
            "/v1/chat/completions",
            post(|Extension(principal): Extension<Principal>| async move {
                principal.report(Usage::new(5, 0));
                format!("hello {}", principal.id())
            }),
        )
        .layer(KeyGateLayer::new(gate, classify).with_realm("test").unwrap())
        .layer(JsonModelLayer::new(64 * 1024))
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
    let request =
        Request::post("/v1/chat/completions").header("content-type", "application/grpc").body(Body::empty()).unwrap();
    let response = app(gate).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "16");
    assert_eq!(
        response.headers()["grpc-message"],
        "missing_api_key: No API key provided. Send it as 'Authorization: Bearer <key>'."
    );
}
