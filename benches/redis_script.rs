//! What the Redis limit script costs Redis per request: the load bench's key, admitted and
//! settled through `RedisLimitStore` one request at a time, with Redis's own account of it.
//!
//! `cargo bench --bench redis_script --features full -- --redis URL` sends `--requests N`
//! (default 1024) admissions of a key with requests and tokens per minute, a concurrency cap and
//! a spend cap (as `gateway_load`'s), 32 at a time, each settled; each group's settlements go in
//! one script call, as a busy key's do. It prints, from `INFO commandstats` and `INFO cpu` taken
//! before and after, the calls and microseconds per request of each command Redis ran, and the
//! server's whole CPU per request.
//!
//! Redis's microseconds move with whatever else the machine runs. For a figure that does not,
//! count instructions: start a Redis under callgrind, collecting only inside scripts, and point
//! the bench at it (its timeouts are long enough for valgrind's pace):
//!
//! ```text
//! valgrind --tool=callgrind --toggle-collect='evalGenericCommand*' \
//!     redis-server --port 6391 --save "" --appendonly no &
//! cargo bench --bench redis_script --features full -- --redis redis://127.0.0.1:6391/
//! redis-cli -p 6391 shutdown nosave; callgrind_annotate callgrind.out.*
//! ```
//!
//! The total divided by the requests is the script's instructions per request (the
//! `gateway_load` bench's key: about 250 000 on Redis 7.0.15, where an empty script with the
//! same arguments costs about 26 000 a call; see the README's Sizing section). A Redis built
//! with symbols (Debian: `apt-get source redis`, `make OPTIMIZATION="-O2 -g"`) names the
//! functions.
//!
//! Options (after `--`): `--redis URL` (else `KEYGATE_REDIS_URL`, else
//! `redis://127.0.0.1:6379/`), `--requests N`.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::time::Duration;

use keygate::limit::{Limiter, RedisConfig};
use keygate::record::{KeyShape, RateLimits};
use keygate::secret::StoredDigest;
use keygate::{KeyId, KeyKind, KeyRecord, LimitRequest, RedisLimitStore, SpendCap, SpendPeriod, Timestamp, Usage};

/// Settlements flushed at a time: as many as go in one script call.
const SETTLE_EVERY: usize = 32;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut url = std::env::var("KEYGATE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned());
    let mut requests = 1024usize;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--redis" => url = args.next().expect("--redis URL"),
            "--requests" => requests = args.next().and_then(|n| n.parse().ok()).expect("--requests N"),
            _ => {} // cargo bench passes --bench
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(run(&url, requests));
}

async fn run(url: &str, requests: usize) {
    let Ok(client) = redis::Client::open(url) else {
        println!("redis_script: {url} is not a Redis URL");
        return;
    };
    let Ok(mut admin) = client.get_connection_with_timeout(Duration::from_secs(5)) else {
        println!("redis_script: no Redis answers at {url}: not run");
        return;
    };
    let prefix = format!("kgscript-{}", std::process::id());
    // Long timeouts: the server may run under valgrind.
    let config = RedisConfig::default()
        .with_prefix(&prefix)
        .with_connect_timeout(Duration::from_secs(30))
        .with_io_timeout(Duration::from_secs(30));
    let store = RedisLimitStore::open(url, config).unwrap();
    let limiter = Limiter::new(store.clone());
    let id = KeyId::new("BenchScriptKey01").unwrap();
    let mut record =
        KeyRecord::new(id, KeyShape::Selector, KeyKind::STANDARD, StoredDigest::sha256_of(b"x"), Timestamp::now());
    record.rate_limit = RateLimits {
        requests_per_minute: Some(1_000_000_000),
        tokens_per_minute: Some(4_000_000_000),
        concurrency: Some(1024),
    };
    record.spend_cap = Some(SpendCap { amount_micros: 1_000_000_000_000, period: SpendPeriod::Month });

    let before = stats(&mut admin);
    // A busy key's traffic: 32 admissions in flight together, then their settlements, which the
    // flush sends in one call.
    let mut sent = 0;
    while sent < requests {
        let now = Timestamp::now();
        let group = SETTLE_EVERY.min(requests - sent);
        let admissions =
            futures_util::future::join_all((0..group).map(|_| {
                limiter.check_async(&record, LimitRequest::new().with_tokens(100).with_spend_estimate(50), now)
            }))
            .await;
        for admission in admissions {
            admission.expect("admitted").finish(Usage::new(80, 40), now).unwrap();
        }
        store.flush().await.unwrap();
        sent += group;
    }
    let after = stats(&mut admin);
    let _: redis::RedisResult<()> = redis::cmd("DEL").arg(store.redis_key(&id)).query(&mut admin);

    #[allow(clippy::cast_precision_loss)]
    let n = requests as f64;
    println!(
        "redis_script: {requests} requests ({SETTLE_EVERY} at a time, their settlements in one call) against {url}"
    );
    for (command, (calls, usec)) in &after {
        let (calls0, usec0) = before.get(command).copied().unwrap_or((0.0, 0.0));
        let (calls, usec) = (calls - calls0, usec - usec0);
        if command == PROCESS {
            println!("  redis process, user + system CPU: {:.2} us per request", usec / n);
        } else if calls > 0.0 && command != "info" {
            println!(
                "  {command}: {:.3} calls per request, {:.2} us per call, {:.2} us per request",
                calls / n,
                usec / calls,
                usec / n
            );
        }
    }
    println!("  settlements dropped: {}", store.dropped_settlements());
}

/// `INFO commandstats` (calls and microseconds per command) and `INFO cpu` (the server's whole
/// CPU time, under [`PROCESS`]).
fn stats(admin: &mut redis::Connection) -> BTreeMap<String, (f64, f64)> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(admin).unwrap();
    let mut stats = BTreeMap::new();
    for line in info.lines() {
        let Some((command, fields)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else { continue };
        let field = |name: &str| {
            fields.split(',').find_map(|f| f.strip_prefix(name)?.strip_prefix('=')?.parse::<f64>().ok()).unwrap_or(0.0)
        };
        stats.insert(command.to_owned(), (field("calls"), field("usec")));
    }
    let cpu: String = redis::cmd("INFO").arg("cpu").query(admin).unwrap();
    let seconds = |name: &str| {
        cpu.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    stats.insert(PROCESS.to_owned(), (0.0, (seconds("used_cpu_user") + seconds("used_cpu_sys")) * 1e6));
    stats
}

/// The entry of [`stats`] that holds the server's whole CPU time.
const PROCESS: &str = "(process)";
