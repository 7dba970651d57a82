//! The gateway's state, its routes, and what each route requires of a key.
//!
//! ```text
//! request ──► KeyGateLayer     the key, from the headers alone (no body is read without one);
//!                              then `model` and `max_tokens` from a JSON body; then policy
//!                              (model, provider, client IP, scopes) and limits; a denial is
//!                              answered here, exactly as the decision table says
//!         ──► track            records the key's last use
//!         ──► handler          chat completions, models, wallet, management API, usage, metrics
//! ```
//!
//! Every decision and every reply's usage also goes to the gate's event sinks: `UsageStats`
//! (per-key counters served by `GET /v1/management/keys/{id}/usage`), `MetricsSink`
//! (counters and histograms rendered in Prometheus text by `GET /metrics`) and the usage log
//! (a record per request, served by `GET /v1/management/keys/{id}/logs`,
//! `/v1/management/usage` and `/v1/management/alerts`). The dashboard (`/dashboard`) is
//! public: its page holds no key, and its calls go through the management API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Extension, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{any, get, post};
use keygate::events::MetricsSink;
use keygate::limit::Limiter;
use keygate::manage::{Access, LastUsed, ManageRequest, ManageResponse, ManageRoute, Usd};
use keygate::tower::{JsonModel, KeyGateLayer};
use keygate::usage_log::{LogRoute, UsageLog, handle_log_request};
use keygate::{
    AsyncKeyStore, Caller, Gate, KeyId, LimitRequest, ManageConfig, Manager, OsRng, Principal, Requirements, Timestamp,
    Verifier,
};
use metrics_exporter_prometheus::PrometheusHandle;
use zeroize::Zeroizing;

use crate::backends::{Keys, Limits};
use crate::billing::{Account, Meter};
use crate::catalog::{self, Model};
use crate::counters::Counters;
use crate::logs::Logs;
use crate::mock::{self, ChatRequest};
use crate::stream::EventStream;
use crate::wallet::{Wallets, format_usd};

/// The pipeline: the key store and the limit state chosen by `--store` and `--limits`, and the
/// event sinks.
pub(crate) type KeyGate = Gate<Keys, Limits, Events>;

/// Where the gate reports decisions and usage: per-key counters, the `metrics` facade, and
/// the usage log (unless it is off).
pub(crate) type Events = (Arc<Counters>, (MetricsSink, Option<UsageLog<Logs>>));

/// The largest request body read (chat and management).
pub(crate) const MAX_BODY: usize = 1024 * 1024;
/// The pause between two events of a streamed reply.
const STREAM_PAUSE: Duration = Duration::from_millis(20);

/// Everything the handlers share.
pub(crate) struct Gateway {
    pub(crate) gate: Arc<KeyGate>,
    /// The management API, over the same store as the gate.
    pub(crate) manager: Manager<Keys>,
    pub(crate) wallets: Arc<Wallets>,
    pub(crate) last_used: LastUsed,
    /// Per-key requests, denials, tokens and spend for the day, week and month.
    pub(crate) usage: Arc<Counters>,
    /// A record per request, flushed to its store in the background; `None` when off.
    pub(crate) log: Option<UsageLog<Logs>>,
    /// Renders the metrics in Prometheus text, once a recorder is installed.
    metrics: Option<PrometheusHandle>,
    stream_pause: Duration,
    completions: AtomicU64,
}

impl Gateway {
    /// A gateway issuing and checking keys with `verifier` in `store`, counting limits in
    /// `limits`, every team's wallet starting at `wallet`. With keys in PostgreSQL, usage
    /// counters and wallets live there too, shared by every gateway on the database.
    #[allow(dead_code)] // a gateway without a usage log, for tests
    pub(crate) fn new(verifier: Verifier, store: Keys, limits: Limits, wallet: Usd) -> Self {
        Self::with_log(verifier, store, limits, wallet, None)
    }

    /// The same, keeping a usage log in `log`.
    pub(crate) fn with_log(
        verifier: Verifier,
        store: Keys,
        limits: Limits,
        wallet: Usd,
        log: Option<UsageLog<Logs>>,
    ) -> Self {
        let limiter = Limiter::new(limits);
        let (usage, wallets) = match store.postgres_pool() {
            Some(pool) => (Counters::postgres(pool.clone()), Wallets::postgres(wallet, pool)),
            None => (Counters::local(), Wallets::new(wallet)),
        };
        let usage = Arc::new(usage);
        let events = (Arc::clone(&usage), (MetricsSink, log.clone()));
        let gate = Gate::new(verifier.clone(), store.clone(), limiter).with_events(events);
        Self {
            log,
            gate: Arc::new(gate),
            manager: Manager::new(store, verifier),
            wallets: Arc::new(wallets),
            last_used: LastUsed::new(Duration::from_secs(10)),
            usage,
            metrics: None,
            stream_pause: STREAM_PAUSE,
            completions: AtomicU64::new(0),
        }
    }

    /// Serves `GET /metrics` from `handle` (the process's Prometheus recorder).
    pub(crate) fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// The key store.
    pub(crate) fn store(&self) -> &Keys {
        self.manager.store()
    }

    /// Writes last-used times to the store, drops idle limit state and sends queued
    /// settlements: call it now and then, and on shutdown.
    pub(crate) async fn maintain(&self) {
        self.usage.flush().await;
        let now = Timestamp::now();
        self.last_used.flush_async(self.store(), now).await;
        self.gate.limiter().store().maintain(now).await;
        if let Some(log) = &self.log
            && let Err(e) = log.prune(now).await
        {
            eprintln!("usage log: retention failed ({e})");
        }
    }
}

/// The gateway's routes behind the key check.
pub(crate) fn router(gateway: Arc<Gateway>) -> Router {
    let manage = ManageConfig::default();
    let classify = move |request: &Request| requirements(&manage, request);
    let gated = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/v1/wallet", get(wallet))
        .route("/v1/management/keys", any(management))
        .route("/v1/management/keys/{*rest}", any(management))
        .route("/v1/management/usage", any(management))
        .route("/v1/management/alerts", any(management))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&gateway), track))
        .layer(KeyGateLayer::new(Arc::clone(&gateway.gate), classify).read_json_model(MAX_BODY));
    // The dashboard's page and scripts need no key (its API calls carry one).
    crate::dashboard::routes().merge(gated).with_state(gateway)
}

/// What a request requires of its key: scopes on the management routes; on the chat route,
/// the model, its provider and a token estimate; everywhere, the client's address.
fn requirements(manage: &ManageConfig, request: &Request) -> Requirements {
    let mut required = Requirements::new().with_route(route_label(request.uri().path()));
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        required = required.with_client_ip(peer.ip());
    }
    let path = request.uri().path();
    let reads_usage = path.starts_with("/v1/management/keys/") && path.ends_with("/usage");
    if path == "/metrics" || reads_usage || LogRoute::parse("GET", path).is_some() {
        return required.with_scopes(*manage.required_scopes(Access::Read));
    }
    if let Ok(route) = ManageRoute::parse(request.method().as_str(), path) {
        // Reads need `read`, writes `write`, whatever the key's kind (a standard key with the
        // scopes manages its team's keys). The manager checks again.
        return required.with_scopes(*manage.required_scopes(route.access()));
    }
    if path == "/v1/chat/completions"
        && let Some(json) = request.extensions().get::<JsonModel>()
    {
        // Before the request runs, its tokens are estimated from the body's size (about four
        // bytes a token) plus the completion allowed, and its cost at the model's price (rounded
        // up); both are reserved from the key's limits, and the real usage replaces them.
        let prompt = u32::try_from(json.body_len / 4).unwrap_or(u32::MAX);
        let completion = json.max_tokens.unwrap_or(mock::MAX_COMPLETION_TOKENS).min(mock::MAX_COMPLETION_TOKENS);
        let mut limits = LimitRequest::new().with_tokens(prompt.saturating_add(completion));
        // Absent, named, or unreadable: a key with a model or provider allowlist refuses a
        // model that could not be read.
        if let Some(known) = json.model.name().and_then(catalog::find) {
            required = required.with_provider(known.provider);
            limits = limits.with_spend_estimate(known.price.cost(prompt, completion));
        }
        required = required.with_model(json.model.clone()).with_limits(limits);
    }
    required
}

/// The label events and the usage log give a request: its route, without the key id.
fn route_label(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "chat.completions",
        "/v1/models" => "models",
        "/v1/wallet" => "wallet",
        "/metrics" => "metrics",
        p if p.starts_with("/v1/management/") => "management",
        _ => "other",
    }
}

/// Records each key's last use (written to the store in the background) and tags the response
/// with the key's id for the request log.
async fn track(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let id = request.extensions().get::<Principal>().map(Principal::id);
    if let Some(id) = id {
        gateway.last_used.touch(id, Timestamp::now());
    }
    let mut response = next.run(request).await;
    if let Some(id) = id {
        response.extensions_mut().insert(id);
    }
    response
}

/// One line per request on stderr: method, path, status, the key's id (never the key), time.
pub(crate) async fn log_request(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let kid = response.extensions().get::<KeyId>().map_or_else(|| "-".to_owned(), KeyId::to_string);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    eprintln!("{method} {path} {} key={kid} {ms:.1}ms", response.status().as_u16());
    response
}

/// `POST /v1/chat/completions`: the mock model's reply, whole or streamed, charged to the key
/// and its team's wallet.
pub(crate) async fn chat_completions(
    State(gateway): State<Arc<Gateway>>,
    principal: Option<Extension<Principal>>,
    checked: Option<Extension<JsonModel>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let account = Account::new(principal.map(|Extension(p)| p), Arc::clone(&gateway.wallets));
    let (request, model) = read_chat(checked.map(|Extension(c)| c), &body)?;
    let completion = mock::complete(&request);
    // The whole reply's cost is reserved before it runs; a stream left early gives some back.
    let reserved = model.price.cost(completion.prompt_tokens, completion.completion_tokens);
    let paid = if model.is_free() { Ok(true) } else { account.reserve(reserved).await };
    match paid {
        Ok(true) => {}
        Ok(false) => {
            // 402, not 429: OpenAI's SDKs retry a 429 by themselves, and waiting refills no wallet.
            let message = "The wallet of this key's team is empty: add funds, or use a `:free` model.";
            return Err(ApiError::new(StatusCode::PAYMENT_REQUIRED, "billing_error", "insufficient_balance", message));
        }
        Err(_) => {
            let message = "The wallet could not be read; try again shortly.";
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", "wallet_unavailable", message));
        }
    }
    let reserved = if model.is_free() { 0 } else { reserved };
    let id = format!("chatcmpl-{:08}", gateway.completions.fetch_add(1, Ordering::Relaxed));
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut meter = Meter::new(account, model.price, reserved, completion.prompt_tokens);
    if request.stream {
        // Charged when the last event is sent (or for what was sent, if the client leaves).
        let events = completion.to_events(&id, created, model.id, request.include_usage());
        let body = EventStream::new(events, gateway.stream_pause, meter);
        let headers = [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")];
        Ok((headers, Body::new(body)).into_response())
    } else {
        meter.add(completion.completion_tokens);
        meter.charge();
        Ok(([(header::CONTENT_TYPE, "application/json")], completion.to_json(&id, created, model.id)).into_response())
    }
}

/// The chat request and its model, or why it is refused.
fn read_chat(checked: Option<JsonModel>, body: &[u8]) -> Result<(ChatRequest, &'static Model), ApiError> {
    // Only a JSON body had its model read, and checked against the key's allowlists.
    let checked = checked.filter(|checked| checked.json).ok_or_else(|| {
        let message = "Send the request as Content-Type: application/json.";
        ApiError::invalid(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
    })?;
    let request: ChatRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(StatusCode::BAD_REQUEST, "invalid_request", format!("Invalid body: {e}.")))?;
    if checked.model.name() != Some(request.model.as_str()) {
        // Cannot happen with one JSON parser, but the model served must be the model checked.
        let message = "The model could not be read unambiguously.";
        return Err(ApiError::invalid(StatusCode::BAD_REQUEST, "invalid_request", message));
    }
    if request.messages.is_empty() {
        let message = "`messages` must not be empty.";
        return Err(ApiError::invalid(StatusCode::BAD_REQUEST, "invalid_request", message));
    }
    let model = catalog::find(&request.model).ok_or_else(|| {
        let message = format!("The model `{}` does not exist.", request.model);
        ApiError::invalid(StatusCode::NOT_FOUND, "model_not_found", message)
    })?;
    Ok((request, model))
}

/// `GET /v1/models`.
async fn models() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], catalog::list()).into_response()
}

/// `GET /v1/wallet`: the balance of the caller's team wallet.
async fn wallet(State(gateway): State<Arc<Gateway>>, Extension(principal): Extension<Principal>) -> Response {
    #[derive(serde::Serialize)]
    struct Wallet<'a> {
        object: &'static str,
        team_id: Option<&'a str>,
        balance_usd: String,
    }
    let team_id = principal.team_id();
    let Ok(balance) = gateway.wallets.balance(team_id).await else {
        let message = "The wallet could not be read; try again shortly.";
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", "wallet_unavailable", message)
            .into_response();
    };
    let balance_usd = format_usd(balance);
    Json(Wallet { object: "wallet", team_id, balance_usd }).into_response()
}

/// The management API: `Manager::handle` routes, checks and answers; this only translates.
async fn management(
    State(gateway): State<Arc<Gateway>>,
    Extension(principal): Extension<Principal>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let usage_of = uri.path().strip_prefix("/v1/management/keys/").and_then(|rest| rest.strip_suffix("/usage"));
    if let (&Method::GET, Some(id)) = (&method, usage_of) {
        return key_usage(&gateway, &principal, id).await;
    }
    let caller = Caller::from_record(principal.record());
    let request =
        ManageRequest::new(method.as_str(), uri.path()).with_query(uri.query().unwrap_or("")).with_body(&body);
    if LogRoute::parse(method.as_str(), uri.path()).is_some() {
        let Some(log) = &gateway.log else {
            return ApiError::invalid(StatusCode::NOT_FOUND, "not_found", "The usage log is off.").into_response();
        };
        return manage_response(&handle_log_request(&gateway.manager, log.store(), &caller, &request).await);
    }
    let answer = gateway.manager.handle_async(&caller, &request, Timestamp::now(), &mut OsRng).await;
    manage_response(&answer)
}

/// A management answer as an HTTP response. A body holding a new key's token is copied into a
/// buffer that is zeroized when sent, and marked not to be cached.
fn manage_response(answer: &ManageResponse) -> Response {
    let status = StatusCode::from_u16(answer.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = if answer.contains_secret() {
        Body::from(Bytes::from_owner(Zeroizing::new(answer.body().as_bytes().to_vec())))
    } else {
        Body::from(answer.body().to_owned())
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ManageResponse::CONTENT_TYPE));
    if let Some(allow) = answer.allow() {
        headers.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if answer.contains_secret() {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// `GET /v1/management/keys/{id}/usage`: a key's requests, denials by code, tokens and spend for
/// the current day, ISO week and month (by every gateway on the database when keys live in
/// PostgreSQL; by this process otherwise), and its last use. Keys with
/// the `read` scope only, and only for keys the caller may see (another team's key is a 404, as
/// for `GET`).
async fn key_usage(gateway: &Gateway, principal: &Principal, id: &str) -> Response {
    let caller = Caller::from_record(principal.record());
    let path = format!("/v1/management/keys/{id}");
    let get = ManageRequest::new("GET", &path);
    let answer = gateway.manager.handle_async(&caller, &get, Timestamp::now(), &mut OsRng).await;
    if answer.status() != 200 {
        // No `read` scope, not found, another team's: the same answer `GET` would give.
        return manage_response(&answer);
    }
    let Ok(id) = id.parse::<KeyId>() else { return manage_response(&answer) };
    let now = Timestamp::now();
    let Ok((periods, counted)) = gateway.usage.json(&id, now).await else {
        let message = "Usage could not be read; try again shortly.";
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", "usage_unavailable", message)
            .into_response();
    };
    let stored = gateway.store().get(&id).await.ok().flatten().and_then(|r| r.last_used_at);
    let last_used = counted.max(stored);
    let body = serde_json::json!({
        "ok": true,
        "id": id.as_str(),
        "usage": periods,
        "last_used_at": last_used.map(|t| t.to_string()),
    });
    Json(body).into_response()
}

/// `GET /metrics`: the metrics in Prometheus text format, for operator keys only (no team, and
/// the `read` scope the route requires): they name every team's keys and spend.
async fn metrics(State(gateway): State<Arc<Gateway>>, Extension(principal): Extension<Principal>) -> Response {
    if !Caller::from_record(principal.record()).is_operator() {
        let message = "Metrics are for operator keys (keys of no team).";
        return ApiError::new(StatusCode::FORBIDDEN, "permission_error", "operator_key_required", message)
            .into_response();
    }
    match &gateway.metrics {
        Some(handle) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response(),
        None => ApiError::invalid(StatusCode::NOT_FOUND, "not_found", "Metrics are not enabled.").into_response(),
    }
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::invalid(StatusCode::NOT_FOUND, "not_found", format!("Unknown path {}.", uri.path()))
}

/// An error answered in the OpenAI-compatible shape the key check also uses:
/// `{"error": {"message", "type", "code", "param"}}`.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'static str,
    param: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), kind, code, param: None }
    }

    fn invalid(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self::new(status, "invalid_request_error", code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(serde::Serialize)]
        struct Body {
            error: ApiError,
        }
        (self.status, Json(Body { error: self })).into_response()
    }
}
