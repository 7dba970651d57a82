//! An OpenAI-compatible gateway on localhost, backed by keygate: chat completions from a mock
//! model, the model list, team wallets, and the AI Stats management API for keys.
//!
//! ```sh
//! cargo run --example gateway --features full
//! ```
//!
//! On its first start the gateway mints the operator's management key into `keygate-admin.key`
//! (mode 0600) and prints only the key's id. Create keys with it, then use them as any OpenAI
//! client would. The README's "Reference gateway" section walks through a session.
//!
//! Every request goes through keygate's tower layer: the key, its policy (model and provider
//! allowlists, IP allowlist, scopes) and its limits (requests and tokens per minute,
//! concurrency, spend cap). The reply's real usage is charged to the key's limits and to the
//! wallet of its team; `:free` models cost nothing, and a paid model with an empty wallet is
//! refused with `402 insufficient_balance`.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

#[path = "gateway/app.rs"]
mod app;
#[path = "gateway/args.rs"]
mod args;
#[path = "gateway/backends.rs"]
mod backends;
#[path = "gateway/billing.rs"]
mod billing;
#[path = "gateway/catalog.rs"]
mod catalog;
#[path = "gateway/mock.rs"]
mod mock;
#[path = "gateway/setup.rs"]
mod setup;
#[path = "gateway/stream.rs"]
mod stream;
#[path = "gateway/wallet.rs"]
mod wallet;

use std::error::Error;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use axum::middleware;
use keygate::{KeyId, Peppers, SelectorFormat, Verifier};

use crate::app::Gateway;
use crate::args::{Args, Command};
use crate::backends::{Keys, Limits};

#[tokio::main]
async fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            print!("{}", args::HELP);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("gateway: {e}\n\n{}", args::HELP);
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    // Standard keys (`sk`) for the API, management keys (`mk`) for the management API.
    let format = SelectorFormat::new(&args.prefix)?.with_kinds(&["sk", "mk"])?;
    let verifier = Verifier::new(format, Peppers::new(setup::pepper(args.pepper_file.as_deref())?));
    let store = Keys::open(&args.store).await.map_err(|e| format!("--store: {e}"))?;
    let limits = Arc::new(Limits::open(&args.limits).map_err(|e| format!("--limits: {e}"))?);
    let admin = setup::admin_key(&verifier, &store, &args.admin_key_file).await?;
    // The metrics facade reports to a Prometheus recorder, served at `GET /metrics`.
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let gateway = Arc::new(Gateway::new(verifier, store, limits, args.wallet).with_metrics(metrics));

    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let addr = listener.local_addr()?;
    print_welcome(&args, addr, admin);

    // Last-used times reach the store in the background, never on the request path.
    let background = tokio::spawn({
        let gateway = Arc::clone(&gateway);
        async move {
            let mut ticks = tokio::time::interval(gateway.last_used.interval());
            loop {
                ticks.tick().await;
                gateway.maintain().await;
            }
        }
    });

    let app = app::router(Arc::clone(&gateway)).layer(middleware::from_fn(app::log_request));
    app::serve(listener, app, shutdown_signal()).await?;
    background.abort();
    gateway.maintain().await;
    println!("stopped");
    Ok(())
}

fn print_welcome(args: &Args, addr: SocketAddr, admin: KeyId) {
    let file = args.admin_key_file.display();
    println!("admin key: id {admin} (management key, scopes read write), stored in {file}");
    println!("keys: {}; limits: {}", args.store_display(), args.limits_display());
    println!("wallets: every team starts with {} USD", args.wallet);
    println!("listening on http://{addr}");
    println!("try: curl -s http://{addr}/v1/models -H \"Authorization: Bearer $(cat {file})\"");
}

/// Resolves on Ctrl-C (or SIGTERM): the server stops accepting connections and finishes the
/// requests in flight, streams included.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    println!("shutting down: finishing the requests in flight");
}
