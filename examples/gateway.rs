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
#[path = "gateway/counters.rs"]
mod counters;
#[path = "gateway/dashboard.rs"]
mod dashboard;
#[path = "gateway/formats.rs"]
mod formats;
#[path = "gateway/logs.rs"]
mod logs;
#[path = "gateway/mock.rs"]
mod mock;
#[path = "gateway/serve.rs"]
mod serve;
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
use keygate::KeyId;

use crate::app::Gateway;
use crate::args::{Args, Command};
use crate::backends::{Keys, Limits};
use crate::logs::Logs;
use keygate::usage_log::UsageLog;

#[tokio::main]
async fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(Command::Run(args)) => *args,
        Ok(Command::Help) => {
            print!("{}", args::help());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("gateway: {e}\n\n{}", args::help());
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
    // Standard keys (`sk`) for the API, in the shape `--key-format` names (both shapes verify);
    // any key with the `read`/`write` scopes manages keys. The operator's own key is of the
    // management kind (`mk`).
    let verifier = args.formats.verifier(setup::pepper(args.pepper_file.as_deref())?)?;
    let store = Keys::open(&args.store).await.map_err(|e| format!("--store: {e}"))?;
    let limits = Limits::open(&args.limits).map_err(|e| format!("--limits: {e}"))?;
    let admin = setup::admin_key(&verifier, &store, &args.admin_key_file).await?;
    // The metrics facade reports to a Prometheus recorder, served at `GET /metrics`.
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let log = match args.usage_log.enabled {
        true => Some(UsageLog::new(Logs::open(&args.store).await?, args.usage_log.config())),
        false => None,
    };
    let gateway = Arc::new(Gateway::with_log(verifier, store, limits, args.wallet, log).with_metrics(metrics));

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

    // The usage log's records reach its store in batches, a few times a second.
    // Stopped between flushes, never during one: a batch being written is not lost.
    let (stop_writer, mut stopped) = tokio::sync::watch::channel(false);
    let log_writer = gateway.log.clone().map(|log| {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(logs::FLUSH_EVERY);
            loop {
                tokio::select! {
                    _ = ticks.tick() => logs::flush(&log).await,
                    _ = stopped.changed() => break,
                }
            }
        })
    });
    // Usage counts reach a shared store once a second, and wallet leases are renewed or given
    // back (nothing to do in memory).
    let flusher = tokio::spawn({
        let gateway = Arc::clone(&gateway);
        async move {
            let mut ticks = tokio::time::interval(counters::FLUSH_EVERY);
            loop {
                ticks.tick().await;
                gateway.usage.flush().await;
                gateway.wallets.maintain().await;
            }
        }
    });

    let app = app::router(Arc::clone(&gateway)).layer(middleware::from_fn(app::log_request));
    serve::serve(listener, app, args.timeouts, shutdown_signal()).await?;
    background.abort();
    flusher.abort();
    gateway.maintain().await;
    // What is left of this gateway's wallet leases goes back to the wallets.
    gateway.wallets.release().await;
    // Every request has ended: the last records are written.
    let _ = stop_writer.send(true);
    if let Some(writer) = log_writer {
        let _ = writer.await;
    }
    if let Some(log) = &gateway.log {
        logs::flush(log).await;
    }
    println!("stopped");
    Ok(())
}

fn print_welcome(args: &Args, addr: SocketAddr, admin: KeyId) {
    let file = args.admin_key_file.display();
    println!("admin key: id {admin} (management key, scopes read write), stored in {file}");
    println!("keys: {}; limits: {}", args.store_display(), args.limits_display());
    println!("key formats: {}", args.formats.describe());
    println!("wallets: every team starts with {} USD", args.wallet);
    println!("dashboard: http://{addr}/dashboard");
    println!("listening on http://{addr}");
    println!("try: curl -s http://{addr}/v1/models -H \"Authorization: Bearer $(cat {file})\"");
}

/// Resolves on Ctrl-C (or SIGTERM): the server stops accepting connections and finishes the
/// requests in flight, streams included, within `--shutdown-timeout`.
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
