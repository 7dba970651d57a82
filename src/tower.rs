//! A `tower` layer that puts the whole pipeline in front of any HTTP service (axum, tonic, hyper).
//!
//! ```text
//! request ──► Classify (what the route requires: scopes, model, provider, client IP, tokens)
//!         ──► Gate::check_async(Authorization, requirements, now)
//!               denial ──► status + WWW-Authenticate / Retry-After / x-ratelimit-* + JSON body
//!                          (for gRPC requests: a trailers-only response with the grpc-status)
//!               pass   ──► Principal into the request's extensions ──► inner service
//!                          response ──► + x-ratelimit-* headers, body wrapped in GateBody
//! ```
//!
//! The layer only translates: the decisions, their codes, headers and bodies come from
//! [`Gate`] and [`Denial`]. Routes say what they require through a [`Classify`] function of the
//! request (any `Fn(&http::Request<B>) -> Requirements`); a model named in a JSON body is read by
//! [`JsonModelLayer`] (with the `json` feature), placed in front of this layer, which buffers
//! the body (bounded) and leaves a [`JsonModel`] in the extensions for the classifier.
//!
//! # The request's lifetime
//!
//! The request's [`Admission`] (its concurrency slot and token estimate)
//! travels with the response body, [`GateBody`], and ends when the body does: at the end of a
//! stream, or when the body is dropped (client gone). Then the usage the handler reported through
//! [`Principal::report`] is reconciled (tokens refunded or charged, spend recorded) and the slot
//! released. A handler that reports nothing is reconciled as having used nothing; an inner
//! service that fails (returns `Err`) releases the slot and keeps the estimate charged.

#![cfg(feature = "tower")]

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use core::future::Future;
use core::net::IpAddr;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use crate::events::EventSink;
use crate::limit::{Admission, Finished, LimitRequest, LimitStore, RateLimitStatus, Usage};
use crate::policy::{RequestAttrs, RequiredScopes};
use crate::store::AsyncKeyStore;
use crate::{Denial, DenialCode, ErrorBody, Gate, KeyId, KeyRecord, Realm, Timestamp};

/// What a route requires of a request, and what the request will use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Requirements {
    /// Scopes the key must grant.
    pub scopes: Option<RequiredScopes>,
    /// The model the request asks for (checked against the key's model allowlist).
    pub model: Option<String>,
    /// The provider the request goes to (checked against the key's provider allowlist).
    pub provider: Option<String>,
    /// The client's address (checked against the key's IP allowlist).
    pub client_ip: Option<IpAddr>,
    /// What the request takes from the key's limits (token estimate, credits).
    pub limits: LimitRequest,
}

impl Requirements {
    /// Nothing required beyond a valid key.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `scopes`.
    #[must_use]
    pub fn with_scopes(mut self, scopes: RequiredScopes) -> Self {
        self.scopes = Some(scopes);
        self
    }

    /// Names the model.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Names the provider.
    #[must_use]
    pub fn with_provider(mut self, provider: impl Into<String>) -> Self {
        self.provider = Some(provider.into());
        self
    }

    /// Names the client's address.
    #[must_use]
    pub fn with_client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = Some(ip);
        self
    }

    /// What the request takes from the limits.
    #[must_use]
    pub fn with_limits(mut self, limits: LimitRequest) -> Self {
        self.limits = limits;
        self
    }
}

/// Says what a request requires. Any `Fn(&http::Request<B>) -> Requirements` is one.
pub trait Classify<B>: Clone + Send + Sync + 'static {
    /// The requirements of `request`.
    fn classify(&self, request: &Request<B>) -> Requirements;
}

impl<B, F> Classify<B> for F
where
    F: Fn(&Request<B>) -> Requirements + Clone + Send + Sync + 'static,
{
    fn classify(&self, request: &Request<B>) -> Requirements {
        self(request)
    }
}

/// The authorized key of a request that passed, in the request's extensions for the handler.
///
/// Only the layer makes one. It is cheap to clone (an `Arc` to the record and one to the usage
/// slot).
#[derive(Clone)]
pub struct Principal {
    record: Arc<KeyRecord>,
    usage: UsageSlot,
}

impl Principal {
    /// The key's record.
    #[must_use]
    pub fn record(&self) -> &Arc<KeyRecord> {
        &self.record
    }

    /// The key's id.
    #[must_use]
    pub fn id(&self) -> KeyId {
        self.record.id
    }

    /// The key's team.
    #[must_use]
    pub fn team_id(&self) -> Option<&str> {
        self.record.team_id.as_deref()
    }

    /// Reports what the request used (tokens, spend); reconciled when the response body ends.
    /// A later report replaces an earlier one.
    pub fn report(&self, usage: Usage) {
        *self.usage.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(usage);
    }
}

impl core::fmt::Debug for Principal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Principal").field("id", &self.record.id).finish_non_exhaustive()
    }
}

/// Where the handler's reported usage waits for the end of the response body.
#[derive(Clone, Default)]
struct UsageSlot(Arc<Mutex<Option<Usage>>>);

impl UsageSlot {
    fn take(&self) -> Option<Usage> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The layer: the pipeline of a shared [`Gate`] in front of an HTTP service.
///
/// The gate's key store is asynchronous (wrap an in-memory store in [`Ready`](crate::Ready));
/// its limit store must be cheap to clone into each admission (`Arc<MemoryLimitStore>`).
pub struct KeyGateLayer<S, L, C, E = ()> {
    gate: Arc<Gate<S, L, E>>,
    classify: C,
    realm: Option<&'static str>,
}

impl<S, L, C: Clone, E> Clone for KeyGateLayer<S, L, C, E> {
    fn clone(&self) -> Self {
        Self { gate: Arc::clone(&self.gate), classify: self.classify.clone(), realm: self.realm }
    }
}

impl<S, L, C, E> KeyGateLayer<S, L, C, E> {
    /// A layer checking every request against `gate`, with `classify` saying what each
    /// request requires. If the gate has an event sink, every decision is reported to it, and
    /// each request's usage when its response body ends.
    #[must_use]
    pub fn new(gate: Arc<Gate<S, L, E>>, classify: C) -> Self {
        Self { gate, classify, realm: None }
    }

    /// Names the protection space in `WWW-Authenticate` challenges (`Bearer realm="..."`).
    ///
    /// # Errors
    ///
    /// [`InvalidRealm`](crate::InvalidRealm) if the realm has a quote, backslash or control
    /// character.
    pub fn with_realm(mut self, realm: &'static str) -> Result<Self, crate::InvalidRealm> {
        Realm::new(realm)?;
        self.realm = Some(realm);
        Ok(self)
    }
}

impl<S, L, C, E> core::fmt::Debug for KeyGateLayer<S, L, C, E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyGateLayer").field("realm", &self.realm).finish_non_exhaustive()
    }
}

impl<S, L, C: Clone, E, I> tower_layer::Layer<I> for KeyGateLayer<S, L, C, E> {
    type Service = KeyGate<S, L, C, I, E>;

    fn layer(&self, inner: I) -> Self::Service {
        KeyGate { layer: self.clone(), inner }
    }
}

/// The service made by [`KeyGateLayer`].
pub struct KeyGate<S, L, C, I, E = ()> {
    layer: KeyGateLayer<S, L, C, E>,
    inner: I,
}

impl<S, L, C: Clone, I: Clone, E> Clone for KeyGate<S, L, C, I, E> {
    fn clone(&self) -> Self {
        Self { layer: self.layer.clone(), inner: self.inner.clone() }
    }
}

impl<S, L, C, I, E> core::fmt::Debug for KeyGate<S, L, C, I, E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyGate").field("layer", &self.layer).finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, L, C, I, E, B, ResBody> tower_service::Service<Request<B>> for KeyGate<S, L, C, I, E>
where
    S: AsyncKeyStore + 'static,
    L: LimitStore + Clone + Send + Sync + 'static,
    E: EventSink + 'static,
    C: Classify<B>,
    I: tower_service::Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    I::Future: Send,
    B: Send + 'static,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<GateBody<ResBody, L>>;
    type Error = I::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone that was polled ready serves this request; a fresh clone stays behind.
        let clone = self.inner.clone();
        let mut inner = core::mem::replace(&mut self.inner, clone);
        let gate = Arc::clone(&self.layer.gate);
        let realm = self.layer.realm;
        let required = self.layer.classify.classify(&request);
        let authorization = request.headers().get(AUTHORIZATION).cloned();
        let grpc = is_grpc(&request);
        Box::pin(async move {
            let mut attrs = RequestAttrs::new();
            if let Some(scopes) = &required.scopes {
                attrs = attrs.with_scopes(scopes);
            }
            if let Some(model) = &required.model {
                attrs = attrs.with_model(model);
            }
            if let Some(provider) = &required.provider {
                attrs = attrs.with_provider(provider);
            }
            if let Some(ip) = required.client_ip {
                attrs = attrs.with_client_ip(ip);
            }
            let now = Timestamp::now();
            let checked =
                gate.check_async(authorization.as_ref().map(HeaderValue::as_bytes), &attrs, required.limits, now);
            let pass = match checked.await {
                Ok(pass) => pass,
                Err(denial) => return Ok(deny(&denial, realm, grpc)),
            };
            let (authorized, admission) = pass.into_parts();
            let rate_limit = admission.rate_limit();
            let usage = UsageSlot::default();
            let record = Arc::clone(authorized.verified().handle());
            request.extensions_mut().insert(Principal { record: Arc::clone(&record), usage: usage.clone() });
            let report = gate.events().enabled().then(|| {
                let gate = Arc::clone(&gate);
                Box::new(move |record: &KeyRecord, usage: Usage, finished: Finished| {
                    gate.report_usage(record, usage, finished, Timestamp::now());
                }) as Report
            });
            let response = inner.call(request).await?;
            let (mut parts, body) = response.into_parts();
            if let Some(status) = rate_limit {
                insert_rate_limit_headers(&mut parts.headers, status);
            }
            let finish = Finish { admission: Some(admission), usage, record, report };
            Ok(Response::from_parts(parts, GateBody { kind: Kind::Passed { inner: body, finish: Some(finish) } }))
        })
    }
}

/// Reports a reconciled usage to the gate's event sink.
type Report = Box<dyn Fn(&KeyRecord, Usage, Finished) + Send + Sync>;

/// Reconciles an admission with the reported usage when dropped: at the end of the response
/// body, or when the body is dropped early.
struct Finish<L: LimitStore + 'static> {
    admission: Option<Admission<'static, L>>,
    usage: UsageSlot,
    record: Arc<KeyRecord>,
    report: Option<Report>,
}

impl<L: LimitStore + 'static> Drop for Finish<L> {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            let usage = self.usage.take().unwrap_or_default();
            // A store failure releases the slot anyway (see Admission::finish).
            if let (Ok(finished), Some(report)) = (admission.finish(usage, Timestamp::now()), &self.report) {
                report(&self.record, usage, finished);
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The response body: the inner service's, carrying the request's admission to its end; or
    /// a denial's JSON body.
    pub struct GateBody<B, L>
    where
        L: LimitStore,
        L: 'static,
    {
        #[pin]
        kind: Kind<B, L>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<B, L>
    where
        L: LimitStore,
        L: 'static,
    {
        Passed { #[pin] inner: B, finish: Option<Finish<L>> },
        Denied { body: Option<Bytes> },
    }
}

impl<B: Body<Data = Bytes>, L: LimitStore + 'static> Body for GateBody<B, L> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Passed { inner, finish } => {
                let polled = inner.poll_frame(cx);
                if let Poll::Ready(None) = polled {
                    // The stream ended: reconcile now rather than when the body is dropped.
                    drop(finish.take());
                }
                polled
            }
            KindProj::Denied { body } => Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Passed { inner, .. } => inner.is_end_stream(),
            Kind::Denied { body } => body.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Passed { inner, .. } => inner.size_hint(),
            Kind::Denied { body } => SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

impl<B, L: LimitStore + 'static> core::fmt::Debug for GateBody<B, L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.kind {
            Kind::Passed { .. } => f.write_str("GateBody::Passed"),
            Kind::Denied { .. } => f.write_str("GateBody::Denied"),
        }
    }
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request.headers().get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The `x-ratelimit-*` headers of an admission, on a successful response.
fn insert_rate_limit_headers(headers: &mut http::HeaderMap, status: RateLimitStatus) {
    for (name, value) in status.headers() {
        if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// The response for a denial: its status, headers and JSON body, or for a gRPC request a
/// trailers-only response with the matching `grpc-status`.
pub fn denial_response<B, L: LimitStore + 'static>(
    denial: &Denial,
    realm: Option<&'static str>,
    grpc: bool,
) -> Response<GateBody<B, L>> {
    deny(denial, realm, grpc)
}

fn deny<B, L: LimitStore + 'static>(
    denial: &Denial,
    realm: Option<&'static str>,
    grpc: bool,
) -> Response<GateBody<B, L>> {
    let mut headers = http::HeaderMap::new();
    let mut all = denial.headers();
    if let Some(realm) = realm.and_then(|r| Realm::new(r).ok()) {
        all = all.with_realm(realm);
    }
    for h in all {
        if let Ok(value) = HeaderValue::from_str(&h.value().to_string()) {
            headers.append(HeaderName::from_static(h.name()), value);
        }
    }
    let (status, body) = if grpc {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from_static(grpc_status(denial.code())));
        if let Ok(message) = HeaderValue::from_str(&grpc_message(denial)) {
            headers.insert("grpc-message", message);
        }
        (StatusCode::OK, None)
    } else {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(ErrorBody::CONTENT_TYPE));
        let status = StatusCode::from_u16(denial.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        (status, Some(Bytes::from(denial.body().to_string())))
    };
    let mut response = Response::new(GateBody { kind: Kind::Denied { body } });
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The gRPC status code for a denial (grpc/doc/statuscodes.md).
const fn grpc_status(code: DenialCode) -> &'static str {
    match code.status() {
        401 => "16", // UNAUTHENTICATED
        403 => "7",  // PERMISSION_DENIED
        429 => "8",  // RESOURCE_EXHAUSTED
        _ => "14",   // UNAVAILABLE
    }
}

/// `grpc-message`: the stable code and the fixed message, percent-encoded as gRPC requires.
fn grpc_message(denial: &Denial) -> String {
    let text = alloc::format!("{}: {}", denial.code(), denial.code().message());
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&alloc::format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(feature = "json")]
pub use json_model::{JsonModel, JsonModelLayer, JsonModelService};

#[cfg(feature = "json")]
mod json_model {
    use alloc::boxed::Box;
    use alloc::string::String;
    use core::task::{Context, Poll};

    use bytes::Bytes;
    use http::header::CONTENT_TYPE;
    use http::{Request, Response, StatusCode};
    use http_body::Body;
    use http_body_util::BodyExt;

    use super::BoxFuture;

    /// What [`JsonModelLayer`] read from a JSON request body: the `model` and the `max_tokens`
    /// (or `max_completion_tokens`) fields, for the classifier.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct JsonModel {
        /// The `model` field.
        pub model: Option<String>,
        /// The `max_completion_tokens` or `max_tokens` field.
        pub max_tokens: Option<u32>,
        /// The body's length in bytes (a rough prompt size, for a token estimate).
        pub body_len: usize,
    }

    #[derive(serde::Deserialize)]
    struct Fields {
        model: Option<String>,
        max_tokens: Option<u32>,
        max_completion_tokens: Option<u32>,
    }

    /// Reads the model from JSON request bodies (as OpenAI-compatible APIs carry it) so that
    /// [`KeyGateLayer`](super::KeyGateLayer), placed after it, can check the model allowlist and
    /// estimate tokens before the request runs. The body is buffered up to a bound; a longer
    /// body is refused with `413`. Requests without a JSON content type pass untouched.
    #[derive(Debug, Clone, Copy)]
    pub struct JsonModelLayer {
        max_bytes: usize,
    }

    impl JsonModelLayer {
        /// Buffers JSON bodies of at most `max_bytes`.
        #[must_use]
        pub const fn new(max_bytes: usize) -> Self {
            Self { max_bytes }
        }
    }

    impl<I> tower_layer::Layer<I> for JsonModelLayer {
        type Service = JsonModelService<I>;
        fn layer(&self, inner: I) -> JsonModelService<I> {
            JsonModelService { inner, max_bytes: self.max_bytes }
        }
    }

    /// The service made by [`JsonModelLayer`].
    #[derive(Debug, Clone)]
    pub struct JsonModelService<I> {
        inner: I,
        max_bytes: usize,
    }

    impl<I, B, ResBody> tower_service::Service<Request<B>> for JsonModelService<I>
    where
        I: tower_service::Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
        I::Future: Send,
        B: Body + From<Bytes> + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn core::error::Error + Send + Sync>>,
        ResBody: Default,
    {
        type Response = Response<ResBody>;
        type Error = I::Error;
        type Future = BoxFuture<Result<Response<ResBody>, I::Error>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), I::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, request: Request<B>) -> Self::Future {
            let clone = self.inner.clone();
            let mut inner = core::mem::replace(&mut self.inner, clone);
            let max = self.max_bytes;
            let json =
                request.headers().get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
            Box::pin(async move {
                if !json {
                    return inner.call(request).await;
                }
                let (mut parts, body) = request.into_parts();
                let Ok(collected) = http_body_util::Limited::new(body, max).collect().await else {
                    let mut response = Response::new(ResBody::default());
                    *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
                    return Ok(response);
                };
                let bytes = collected.to_bytes();
                let fields: Option<Fields> = serde_json::from_slice(&bytes).ok();
                parts.extensions.insert(JsonModel {
                    model: fields.as_ref().and_then(|f| f.model.clone()),
                    max_tokens: fields.and_then(|f| f.max_completion_tokens.or(f.max_tokens)),
                    body_len: bytes.len(),
                });
                inner.call(Request::from_parts(parts, B::from(bytes))).await
            })
        }
    }
}
