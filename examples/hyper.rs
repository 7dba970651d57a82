//! keygate in a plain hyper 1 server: the same [`KeyGateLayer`] as with axum, stacked in front of
//! a handler with `tower::ServiceBuilder`, served by hyper-util's connection builder (HTTP/1.1
//! and HTTP/2).
//!
//! `cargo run --example hyper --features tower -- [--addr 127.0.0.1:3002] [--key-file PATH]`
//!
//! hyper has no router and no middleware of its own: each connection gets a `service_fn` that
//! answers the public route itself and hands the protected ones to the layered service. The
//! layer answers a denial with its status, headers and JSON body; a request that passes reaches
//! the handler with a [`Principal`] in its extensions.
//!
//! Routes: `GET /health` (public), `GET /hello` (scope `hello:read`, answers with the caller's
//! kid), `GET /admin` (scope `admin`, which the demo key lacks). The flags and the demo key are
//! the same in the four server examples: see `examples/support/demo.rs`; the token goes to the
//! key file, whose path the example prints.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

#[path = "support/demo.rs"]
mod demo;

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use keygate::{Principal, RequiredScopes, Requirements};
use tower::{ServiceBuilder, ServiceExt};

type Body = UnsyncBoxBody<Bytes, Infallible>;

#[tokio::main]
async fn main() -> demo::Result<()> {
    let demo = demo::start("hyper", "127.0.0.1:3002")?;
    // What each request requires, decided from the request itself (here, its path).
    let hello = RequiredScopes::new(demo::HELLO_SCOPE)?;
    let admin = RequiredScopes::new(demo::ADMIN_SCOPE)?;
    let classify = move |request: &Request<Incoming>| -> Requirements {
        match request.uri().path() {
            "/admin" => Requirements::new().with_scopes(admin),
            _ => Requirements::new().with_scopes(hello),
        }
    };
    let protected = ServiceBuilder::new()
        .layer(demo.keys.layer().classify(classify).with_realm(demo::REALM)?)
        .service_fn(protected_handler);

    let listener = tokio::net::TcpListener::bind(demo.addr).await?;
    demo.key.announce(listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let protected = protected.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let protected = protected.clone();
            async move {
                let response = match (request.method(), request.uri().path()) {
                    (&Method::GET, "/health") => text(StatusCode::OK, "ok\n"),
                    // The layer's response body carries the request's admission to its end.
                    (&Method::GET, "/hello" | "/admin") => protected.oneshot(request).await?.map(BodyExt::boxed_unsync),
                    (_, "/health" | "/hello" | "/admin") => text(StatusCode::METHOD_NOT_ALLOWED, ""),
                    _ => text(StatusCode::NOT_FOUND, ""),
                };
                Ok::<_, Infallible>(response)
            }
        });
        tokio::spawn(async move {
            let connection = auto::Builder::new(TokioExecutor::new());
            if let Err(e) = connection.serve_connection(TokioIo::new(stream), service).await {
                eprintln!("connection failed: {e}");
            }
        });
    }
}

/// The protected routes: the layer let the request through and left the caller's [`Principal`].
async fn protected_handler(request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let Some(caller) = request.extensions().get::<Principal>() else {
        return Ok(text(StatusCode::INTERNAL_SERVER_ERROR, "not behind the layer\n"));
    };
    Ok(match request.uri().path() {
        "/admin" => text(StatusCode::OK, "welcome, admin\n"),
        _ => text(StatusCode::OK, format!("hello, {}\n", caller.id())),
    })
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed_unsync());
    *response.status_mut() = status;
    response
}
