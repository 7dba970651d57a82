//! keygate in front of an axum router: `KeyGate::layer`, one per set of required scopes.
//! `cargo run --example axum --features tower`; the demo key: `examples/support/demo.rs`.
#![allow(clippy::std_instead_of_core, clippy::unwrap_used)]
#[path = "support/demo.rs"]
mod demo;

use axum::{Extension, Router, routing::get};
use keygate::Principal;

#[tokio::main]
async fn main() -> demo::Result<()> {
    let demo = demo::start("axum", "127.0.0.1:3001")?; // a KeyGate holding the demo key
    let layer = |scopes| Ok::<_, demo::Error>(demo.keys.layer().require_scopes(scopes)?.with_realm(demo::REALM)?);
    let app = Router::new()
        .route("/hello", get(|Extension(key): Extension<Principal>| async move { format!("hello, {}\n", key.id()) }))
        .route_layer(layer(demo::HELLO_SCOPE)?)
        .merge(
            Router::new().route("/admin", get(|| async { "welcome, admin\n" })).route_layer(layer(demo::ADMIN_SCOPE)?),
        )
        .route("/health", get(|| async { "ok\n" }));
    let listener = tokio::net::TcpListener::bind(demo.addr).await?;
    demo.key.announce(listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
