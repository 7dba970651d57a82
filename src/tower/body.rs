//! The two bodies the layer handles: the request's, read (or not) between the key check and
//! the classifier; and the response's, which carries the request's [`Principal`] to its end.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body::{Body, Frame, SizeHint};

use crate::Principal;

/// How [`KeyGateLayer`](super::KeyGateLayer) treats a request's body between the key check and
/// the classifier.
pub trait ReadBody<B>: Clone + Send + Sync + 'static {
    /// The request, its body read as far as classifying it needs, or why it is refused.
    fn read(&self, request: Request<B>) -> impl Future<Output = Result<Request<B>, BodyRefused>> + Send;
}

/// Reads no body: the requirements come from the method, path and headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Headers;

impl<B: Send + 'static> ReadBody<B> for Headers {
    fn read(&self, request: Request<B>) -> impl Future<Output = Result<Request<B>, BodyRefused>> + Send {
        core::future::ready(Ok(request))
    }
}

/// Why a request's body was refused before the policy stage: answered with a status and an
/// OpenAI-compatible error body, and the request goes no further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyRefused {
    /// Longer than the bound: 413 `request_too_large`.
    TooLarge,
    /// The body did not arrive in time (the server's body deadline, reported as an
    /// [`std::io::Error`] of kind `TimedOut` by the body): 408 `request_timeout`.
    TimedOut,
    /// The body broke off: 400 `invalid_body`.
    Broken,
}

impl BodyRefused {
    /// The error of a body that failed to arrive: [`BodyRefused::TimedOut`] if its source says
    /// it timed out, [`BodyRefused::Broken`] otherwise.
    pub fn of(error: &(dyn core::error::Error + 'static)) -> Self {
        let mut source = Some(error);
        while let Some(e) = source {
            if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
                return Self::TimedOut;
            }
            source = e.source();
        }
        Self::Broken
    }

    pub(super) fn answer(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", "The request body is too large."),
            Self::TimedOut => {
                (StatusCode::REQUEST_TIMEOUT, "request_timeout", "The request body did not arrive in time.")
            }
            Self::Broken => (StatusCode::BAD_REQUEST, "invalid_body", "The request body could not be read."),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response body: the inner service's, carrying the request's [`Principal`] to its end
    /// (then the request is settled with the usage the handler reported; a body dropped early,
    /// the client gone, lets go of its handle, and the request is settled with the last one);
    /// or a refusal's body.
    pub struct GateBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Passed { #[pin] inner: B, principal: Option<Principal> },
        Refused { body: Option<Bytes> },
    }
}

impl<B> GateBody<B> {
    /// The body of a passing request's response: settled when it ends or is dropped.
    pub(super) fn passed(inner: B, principal: Principal) -> Self {
        Self { kind: Kind::Passed { inner, principal: Some(principal) } }
    }

    /// The body of a refusal.
    pub(super) fn refused(body: Bytes) -> Self {
        Self { kind: Kind::Refused { body: (!body.is_empty()).then_some(body) } }
    }
}

impl<B: Body<Data = Bytes>> Body for GateBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Passed { inner, principal } => {
                let polled = inner.poll_frame(cx);
                if let (Poll::Ready(None), Some(principal)) = (&polled, principal.take()) {
                    // The stream ended: settle now rather than when the body is dropped.
                    principal.settle();
                }
                polled
            }
            KindProj::Refused { body } => Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Passed { inner, .. } => inner.is_end_stream(),
            Kind::Refused { body } => body.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Passed { inner, .. } => inner.size_hint(),
            Kind::Refused { body } => SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

impl<B> core::fmt::Debug for GateBody<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.kind {
            Kind::Passed { .. } => f.write_str("GateBody::Passed"),
            Kind::Refused { .. } => f.write_str("GateBody::Refused"),
        }
    }
}
