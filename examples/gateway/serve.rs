//! Serving the gateway: hyper-util's connection builder with the timers `axum::serve` does not
//! set, so a client cannot hold a connection or the process open by sending slowly.
//!
//! - **Headers** must arrive within `header` (hyper's `header_read_timeout`, which also closes
//!   a keep-alive connection that sends no next request within it).
//! - **A request body** must arrive whole within `body` of its headers: a trickled body fails
//!   its read ([`DeadlineBody`], an `io::Error` of kind `TimedOut`), and the request is
//!   answered with `408`.
//! - **Shutdown** stops accepting, lets the requests in flight finish (streams included), and
//!   after `shutdown` closes whatever is still open.
//!
//! The key is checked before the body is read (keygate's layer authenticates from the headers
//! first), so a client without a valid key gets its 401 without sending a byte of body.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use http_body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

/// How long the gateway waits for a client, and for its requests at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// For a request's headers (and for the next request on an idle keep-alive connection).
    pub(crate) header: Duration,
    /// For a request's whole body, from its headers.
    pub(crate) body: Duration,
    /// For the requests in flight once shutdown begins.
    pub(crate) shutdown: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { header: Duration::from_secs(10), body: Duration::from_secs(30), shutdown: Duration::from_secs(10) }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes the requests in flight
/// within `timeouts.shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(timeouts.header);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(timeouts.header);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Stream events go out as they are written, not held back to fill a packet.
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let body_timeout = timeouts.body;
        let service = tower::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            // The client's address reaches the requests (IP allowlists need it).
            request.extensions_mut().insert(ConnectInfo(peer));
            let deadline = Instant::now() + body_timeout;
            let request: Request = request.map(|body| Body::new(DeadlineBody::new(body, deadline)));
            router.clone().oneshot(request)
        });
        let connection = builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service)).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that hangs up or times out is not an error of the gateway's.
            let _ = connection.await;
        });
    }
    drop(listener);
    let open = graceful.count();
    if tokio::time::timeout(timeouts.shutdown, graceful.shutdown()).await.is_err() {
        eprintln!("shutdown: requests still running after {:?} (of {open} connections); closing", timeouts.shutdown);
    }
    Ok(())
}

pin_project_lite::pin_project! {
    /// A request body that fails once its deadline has passed, however slowly its bytes come.
    pub(crate) struct DeadlineBody<B> {
        #[pin]
        inner: B,
        #[pin]
        deadline: Sleep,
    }
}

impl<B> DeadlineBody<B> {
    fn new(inner: B, deadline: Instant) -> Self {
        Self { inner, deadline: tokio::time::sleep_until(deadline) }
    }
}

impl<B> http_body::Body for DeadlineBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.deadline.poll(cx) {
            // keygate's layer answers a body read that failed this way with 408.
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request body did not arrive in time",
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
