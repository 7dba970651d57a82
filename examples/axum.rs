//! keygate in front of an axum router: the canonical integration, [`KeyGateLayer`].
//!
//! `cargo run --example axum --features tower -- [--addr 127.0.0.1:3001] [--key-file PATH]`
//!
//! The layer runs the whole pipeline (bearer key, verification, scopes, rate limit) before any
//! handler. A denial never reaches the router: the layer answers it with the denial's status,
//! its headers (`WWW-Authenticate`, `Retry-After`, `x-ratelimit-*`) and its JSON error body. A
//! request that passes reaches the handler with a [`Principal`] in its extensions, and its
//! response gets the key's `x-ratelimit-*` headers.
//!
//! Routes: `GET /health` (public), `GET /hello` (scope `hello:read`, answers with the caller's
//! kid), `GET /admin` (scope `admin`, which the demo key lacks). The flags and the demo key are
//! the same in the four server examples: see `examples/support/demo.rs`; the token goes to the
//! key file, whose path the example prints.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

#[path = "support/demo.rs"]
mod demo;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Extension;
use axum::http::Request;
use axum::routing::get;
use keygate::tower::{KeyGateLayer, Principal, Requirements};
use keygate::{Gate, Limiter, MemoryLimitStore, Ready, RequiredScopes};

#[tokio::main]
async fn main() -> demo::Result<()> {
    let demo = demo::start("axum", "127.0.0.1:3001")?;
    // The layer drives the asynchronous pipeline: the in-memory store is wrapped in `Ready`, and
    // the limit store is an `Arc` so that each request's admission (its concurrency slot) can
    // travel with the response body to its end.
    let limits = Limiter::new(Arc::new(MemoryLimitStore::new()));
    let gate = Arc::new(Gate::new(demo.verifier, Ready(demo.store), limits));

    // What each request requires, decided from the request itself (here, its path).
    let hello = RequiredScopes::new(demo::HELLO_SCOPE)?;
    let admin = RequiredScopes::new(demo::ADMIN_SCOPE)?;
    let classify = move |request: &Request<Body>| match request.uri().path() {
        "/admin" => Requirements::new().with_scopes(admin),
        _ => Requirements::new().with_scopes(hello),
    };

    let app = Router::new()
        .route("/hello", get(hello_handler))
        .route("/admin", get(|| async { "welcome, admin\n" }))
        // `route_layer` guards the routes above it, and only requests that match one of them:
        // an unknown path is a plain 404, not a 401.
        .route_layer(KeyGateLayer::new(gate, classify).with_realm(demo::REALM)?)
        .route("/health", get(|| async { "ok\n" }));

    let listener = tokio::net::TcpListener::bind(demo.addr).await?;
    demo.key.announce(listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

/// `GET /hello`: the layer let the request through and left the caller's [`Principal`].
async fn hello_handler(Extension(caller): Extension<Principal>) -> String {
    format!("hello, {}\n", caller.id())
}
