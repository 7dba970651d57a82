//! The layer and its service: the request flow of the module docs, in one `call`.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderValue};
use http::{Request, Response};
use http_body::Body;

use super::respond::{DenialHook, body_refused, denial_response, insert_rate_limit_headers, is_grpc};
use super::{BodyRefused, Classify, GateBody, Headers, ReadBody};
use crate::events::EventSink;
use crate::http::Realm;
use crate::limit::AsyncLimitStore;
use crate::policy::ScopeError;
use crate::store::AsyncKeyStore;
use crate::{Denial, Gate, Principal, RequiredScopes, Requirements, Timestamp};

/// The layer: the pipeline of a shared [`Gate`] in front of an HTTP service.
///
/// Made by [`KeyGate::layer`](crate::KeyGate::layer), or from a [`Gate`] with
/// [`KeyGateLayer::new`]. The gate's limit store must be cheap to clone into each admission
/// (an `Arc`).
pub struct KeyGateLayer<S, L, C, E = (), R = Headers> {
    gate: Arc<Gate<S, L, E>>,
    classify: C,
    realm: Option<&'static str>,
    read: R,
    on_denial: Option<DenialHook>,
}

impl<S, L, C: Clone, E, R: Clone> Clone for KeyGateLayer<S, L, C, E, R> {
    fn clone(&self) -> Self {
        Self {
            gate: Arc::clone(&self.gate),
            classify: self.classify.clone(),
            realm: self.realm,
            read: self.read.clone(),
            on_denial: self.on_denial.clone(),
        }
    }
}

impl<S, L, C, E> KeyGateLayer<S, L, C, E> {
    /// A layer checking every request against `gate`, with `classify` saying what each
    /// request requires (a fixed [`Requirements`], or any `Fn(&http::Request<B>) ->
    /// Requirements`). Every decision is reported to the gate's event sink, and each
    /// request's usage when its response body ends. It reads no body; see
    /// [`KeyGateLayer::read_json_model`].
    #[must_use]
    pub fn new(gate: Arc<Gate<S, L, E>>, classify: C) -> Self {
        Self { gate, classify, realm: None, read: Headers, on_denial: None }
    }

    /// The same layer, reading the model a JSON body asks for (see
    /// [`JsonModel`](super::JsonModel)) once the key has passed, and before the classifier
    /// runs: a body of at most `max_bytes` is buffered and a `JsonModel` left in the request's
    /// extensions for the classifier. A caller without a valid key gets its 401 before a byte
    /// of its body is read.
    #[cfg(feature = "json")]
    #[must_use]
    pub fn read_json_model(self, max_bytes: usize) -> KeyGateLayer<S, L, C, E, super::ReadJsonModel> {
        let Self { gate, classify, realm, on_denial, .. } = self;
        KeyGateLayer { gate, classify, realm, read: super::ReadJsonModel::new(max_bytes), on_denial }
    }
}

impl<S, L, E, R> KeyGateLayer<S, L, Requirements, E, R> {
    /// The same layer requiring `scopes` (space-separated, as `"chat:write files:read"`) of
    /// every request.
    ///
    /// # Errors
    ///
    /// A [`ScopeError`] if `scopes` are not valid required scopes.
    pub fn require_scopes(mut self, scopes: &str) -> Result<Self, ScopeError> {
        self.classify.scopes = scopes.parse::<RequiredScopes>()?;
        Ok(self)
    }
}

impl<S, L, C, E, R> KeyGateLayer<S, L, C, E, R> {
    /// The same layer, with `classify` saying what each request requires.
    #[must_use]
    pub fn classify<C2>(self, classify: C2) -> KeyGateLayer<S, L, C2, E, R> {
        let Self { gate, realm, read, on_denial, .. } = self;
        KeyGateLayer { gate, classify, realm, read, on_denial }
    }

    /// Names the protection space in `WWW-Authenticate` challenges (`Bearer realm="..."`).
    ///
    /// # Errors
    ///
    /// [`InvalidRealm`](crate::http::InvalidRealm) if the realm has a quote, backslash or
    /// control character.
    pub fn with_realm(mut self, realm: &'static str) -> Result<Self, crate::http::InvalidRealm> {
        Realm::new(realm)?;
        self.realm = Some(realm);
        Ok(self)
    }

    /// Changes every denial's response before it is sent: `hook` gets the [`Denial`] and the
    /// response the layer built (status, `WWW-Authenticate`, `Retry-After`, `x-ratelimit-*`,
    /// the OpenAI-compatible JSON body) and may change any of it.
    #[must_use]
    pub fn on_denial(mut self, hook: impl Fn(&Denial, &mut Response<Bytes>) + Send + Sync + 'static) -> Self {
        self.on_denial = Some(Arc::new(hook));
        self
    }
}

impl<S, L, C, E, R> core::fmt::Debug for KeyGateLayer<S, L, C, E, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyGateLayer").field("realm", &self.realm).finish_non_exhaustive()
    }
}

impl<S, L, C: Clone, E, R: Clone, I> tower_layer::Layer<I> for KeyGateLayer<S, L, C, E, R> {
    type Service = KeyGateService<S, L, C, I, E, R>;

    fn layer(&self, inner: I) -> Self::Service {
        KeyGateService { layer: self.clone(), inner }
    }
}

/// The service made by [`KeyGateLayer`].
pub struct KeyGateService<S, L, C, I, E = (), R = Headers> {
    layer: KeyGateLayer<S, L, C, E, R>,
    inner: I,
}

impl<S, L, C: Clone, I: Clone, E, R: Clone> Clone for KeyGateService<S, L, C, I, E, R> {
    fn clone(&self) -> Self {
        Self { layer: self.layer.clone(), inner: self.inner.clone() }
    }
}

impl<S, L, C, I, E, R> core::fmt::Debug for KeyGateService<S, L, C, I, E, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyGateService").field("layer", &self.layer).finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, L, C, I, E, R, B, ResBody> tower_service::Service<Request<B>> for KeyGateService<S, L, C, I, E, R>
where
    S: AsyncKeyStore + 'static,
    L: AsyncLimitStore + Clone + Send + Sync + 'static,
    E: EventSink + Send + Sync + 'static,
    C: Classify<B>,
    R: ReadBody<B>,
    I: tower_service::Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    I::Future: Send,
    B: Send + 'static,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<GateBody<ResBody>>;
    type Error = I::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone that was polled ready serves this request; a fresh clone stays behind.
        let clone = self.inner.clone();
        let mut inner = core::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let started = std::time::Instant::now();
            let gate = &layer.gate;
            let grpc = is_grpc(&request);
            // The key first, from the headers alone: no body is read for a caller without one.
            let authorization = request.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
            let authenticated = match gate.authenticate_async(authorization, Timestamp::now()).await {
                Ok(authenticated) => authenticated,
                Err(denial) => return Ok(layer.deny(&denial, grpc)),
            };
            let mut request = match layer.read.read(request).await {
                Ok(request) => request,
                Err(refused) => return Ok(refuse(refused)),
            };
            let required = layer.classify.classify(&request);
            let pass = match gate.admit(authenticated, &required, Timestamp::now()).await {
                Ok(pass) => pass,
                Err(denial) => return Ok(layer.deny(&denial, grpc)),
            };
            let principal = Principal::for_request(Arc::clone(gate), pass, &required, started);
            request.extensions_mut().insert(principal.clone());
            let response = inner.call(request).await?;
            let (mut parts, body) = response.into_parts();
            principal.report_status(parts.status.as_u16());
            if let Some(status) = principal.rate_limit() {
                insert_rate_limit_headers(&mut parts.headers, status);
            }
            Ok(Response::from_parts(parts, GateBody::passed(body, principal)))
        })
    }
}

impl<S, L, C, E, R> KeyGateLayer<S, L, C, E, R> {
    /// The response for a denial, through the hook if there is one.
    fn deny<B>(&self, denial: &Denial, grpc: bool) -> Response<GateBody<B>> {
        let mut response = denial_response(denial, self.realm, grpc);
        if let Some(hook) = &self.on_denial {
            hook(denial, &mut response);
        }
        response.map(GateBody::refused)
    }
}

fn refuse<B>(refused: BodyRefused) -> Response<GateBody<B>> {
    body_refused(refused).map(GateBody::refused)
}
