//! Limiter state in Redis, shared by any number of gateway processes (needs the `redis` feature).
//!
//! [`RedisLimitStore`] is an [`AsyncLimitStore`] on the `redis` crate's multiplexed
//! asynchronous connection (a single server, or a Redis Cluster): no thread waits on Redis, and
//! concurrent requests share one pipelined connection.
//!
//! # One key per API key
//!
//! Every cell of an API key is a field of one hash, `<prefix>:{<kid>}`, whose `{kid}` hash tag
//! keeps it in one Cluster slot. A field is named after its limit (`requests`, `tokens`,
//! `concurrency`, `spend@<period start>`, ...); each lease held has a field of its own, removed
//! when the lease is released. The key expires with its longest-lived cell (a TAT, a period's
//! end, a lease's deadline) and a minute more, or is kept while it holds a lifetime counter; the
//! field `~` remembers when, so the TTL is set only when it must grow, about once a minute. So
//! Redis holds a few fields per key in use, and a field per request in flight: nothing per
//! request served.
//!
//! # One round trip per admission
//!
//! An admission is one script call (`EVALSHA`, the script loaded again on `NOSCRIPT`): it reads
//! the key's fields, evaluates every operation exactly as [`LimitBatch::evaluate`] does, in
//! integer microseconds, and either writes every new state or nothing (see `script.rs` for the
//! arguments). Redis runs a script atomically, so gateways never interleave on a key.
//!
//! # Settlements leave the request path
//!
//! A settlement ([`AsyncLimitStore::settle`]: tokens reconciled, spend and credits settled, a
//! slot released) is queued and returns at once; a background task (on the Tokio runtime that
//! queued the first one) sends queued settlements in batches: one script call per key with up
//! to 32 of its settlements, applied in order, each all-or-nothing; the calls go concurrently on
//! the one connection, so they travel pipelined. A busy key so costs about one call per request. [`RedisLimitStore::flush`] sends what is queued and
//! waits for it: call it on shutdown.
//!
//! **Exactly once, without a key per request.** Every admission that will be settled with
//! money or a slot in it (a key with a concurrency cap, a spend cap or credits) holds a lease:
//! a field `concurrency#<instance>.<lease>` holding its deadline. Its settlement releases that
//! lease, and the script applies a settlement only while its lease is held, removing it in the
//! same step. A settlement whose reply was lost is sent again; if the first attempt ran, the
//! lease is gone and the second changes nothing. A settlement without a lease (a key with only
//! rate limits: a token estimate reconciled) is sent at most once.
//!
//! **Bounded.** The queue holds at most [`RedisConfig::max_pending`] settlements; past it a
//! settlement is refused and counted ([`RedisLimitStore::dropped_settlements`]): its request
//! stays charged its estimates (never less than it used, when the estimates are upper bounds)
//! and its slot comes back when its lease expires. A settlement still unsent when its lease
//! expires is dropped and counted the same way: sending it would change nothing.
//!
//! # Leases
//!
//! A lease lives [`RedisConfig::concurrency_lease`] from its admission. The concurrency cell
//! counts the leases held; those past their deadline are pruned when the earliest deadline
//! passes, so a slot nobody releases (its process died, its admission timed out after the
//! script ran) comes back one lease later while the key's other requests come and go. After
//! a failed admission that may have taken a lease, a release of it is queued at once.
//!
//! # Failures
//!
//! [`RedisLimitStore::open`] connects to nothing; the first call does, and the connection
//! re-establishes itself after Redis restarts. Every call waits at most
//! [`RedisConfig::connect_timeout`] plus [`RedisConfig::io_timeout`]. Failures are
//! [`LimitError::Timeout`], [`LimitError::Unavailable`], or [`LimitError::Corrupt`] for a key
//! holding something that is not a limiter state; the [`Limiter`](crate::limit::Limiter) turns
//! each into `503 auth_unavailable` (fail closed) unless built
//! [`fail_open`](crate::limit::Limiter::fail_open). Queued settlements wait for Redis to answer
//! again, then go out.

#![cfg(feature = "redis")]

mod config;
mod connection;
mod queue;
mod script;
mod send;

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::time::Duration;
use std::time::Instant;

pub use config::RedisConfig;
use connection::Connector;
use queue::{Queue, Settlement};
use redis::Script;
use script::{Call, Part, Reply};
use send::send_in_background;

use super::{Applied, AsyncLimitStore, CellId, LimitBatch, LimitError, LimitOp, MAX_CELLS, Refused};
use crate::{KeyId, Timestamp};

const NANOS_PER_MILLI: u64 = 1_000_000;
/// The longest lease or grace passed to the script: 2^40 ms, 34 years.
const MAX_TTL_MILLIS: u64 = 1 << 40;
/// The most settlements sent at once by the background task.
const BATCH: usize = 512;
/// The pause before sending again after a failure.
const BACKOFF: Duration = Duration::from_millis(50);

/// An [`AsyncLimitStore`] in Redis, shared by every gateway process using the same server (or
/// Cluster) and prefix. A cheap handle: clones share one connection and one settlement queue.
///
/// - **One round trip per admission**: one Lua script, all-or-nothing, exactly as
///   [`LimitBatch::evaluate`] (in whole microseconds; counters up to 2^53 − 1).
/// - **One key per API key**, `<prefix>:{<kid>}`, a hash of its cells: the `{kid}` hash tag
///   keeps it in one Cluster slot; it expires with its longest-lived cell.
/// - **Settlements queued**, sent in batches by a background task, applied exactly once;
///   [`flush`](Self::flush) on shutdown.
/// - **Fail closed**: a failure or a timeout is `503 auth_unavailable`.
///
/// See the [module docs](crate::limit) for the design.
///
/// ```no_run
/// use keygate::RedisLimitStore;
/// use keygate::limit::{Limiter, RedisConfig};
///
/// # async fn run() -> Result<(), keygate::limit::LimitError> {
/// // Connects on first use: the gateway starts even while Redis is restarting.
/// let store = RedisLimitStore::open("redis://127.0.0.1:6379", RedisConfig::default())?;
/// let limiter = Limiter::new(store.clone()); // fails closed: a Redis failure is 503 auth_unavailable
/// // ... serve; on shutdown:
/// store.flush().await?;
/// # drop(limiter); Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisLimitStore {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    script: Script,
    prefix: String,
    lease_millis: u64,
    grace_millis: u64,
    lease: Duration,
    /// Makes lease members unique across processes.
    instance: u64,
    queue: Queue,
    /// The servers, without credentials, for `Debug`.
    target: String,
}

impl RedisLimitStore {
    /// A store over the Redis server at `url` (`redis://[user:password@]host[:port][/db]`,
    /// `redis+unix:///path`).
    ///
    /// Connects to nothing: the first call connects, from within a Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`LimitError::Unavailable`] if `url` is not a Redis URL, or the prefix contains `{` or
    /// `}` (which would move the cluster hash tag).
    pub fn open(url: &str, config: RedisConfig) -> Result<Self, LimitError> {
        check(&config)?;
        let connector = Connector::server(url, config.connect_timeout, config.io_timeout)?;
        Ok(Self::new(connector, config, redact(url)))
    }

    /// A store over the Redis Cluster that `urls` (one or more of its nodes) belong to.
    ///
    /// # Errors
    ///
    /// As [`RedisLimitStore::open`].
    pub fn open_cluster(urls: &[&str], config: RedisConfig) -> Result<Self, LimitError> {
        check(&config)?;
        let connector = Connector::cluster(urls, config.connect_timeout, config.io_timeout)?;
        let target = urls.iter().map(|u| redact(u)).collect::<Vec<_>>().join(",");
        Ok(Self::new(connector, config, format!("cluster {target}")))
    }

    fn new(connector: Connector, config: RedisConfig, target: String) -> Self {
        let millis =
            |d: Duration| u64::try_from(d.as_nanos().div_ceil(u128::from(NANOS_PER_MILLI))).unwrap_or(u64::MAX);
        let lease_millis = millis(config.concurrency_lease).clamp(1, MAX_TTL_MILLIS);
        let grace_millis = millis(config.expiry_grace).min(MAX_TTL_MILLIS);
        Self {
            inner: Arc::new(Inner {
                connector,
                script: Script::new(script::LUA),
                prefix: config.prefix,
                lease_millis,
                grace_millis,
                lease: Duration::from_millis(lease_millis),
                instance: instance_id(),
                queue: Queue::new(config.max_pending),
                target,
            }),
        }
    }

    /// The Redis key holding every cell of `key`: `<prefix>:{<kid>}`.
    ///
    /// ```
    /// use keygate::{KeyId, RedisLimitStore};
    /// use keygate::limit::RedisConfig;
    /// let store = RedisLimitStore::open("redis://127.0.0.1", RedisConfig::default())?;
    /// let kid: KeyId = "4f9TqWm2Lx8RbC1d".parse().unwrap();
    /// assert_eq!(store.redis_key(&kid), "keygate:{4f9TqWm2Lx8RbC1d}");
    /// # Ok::<(), keygate::limit::LimitError>(())
    /// ```
    #[must_use]
    pub fn redis_key(&self, key: &KeyId) -> String {
        format!("{}:{{{}}}", self.inner.prefix, key)
    }

    /// Whether the store is on a Redis Cluster.
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        self.inner.connector.is_cluster()
    }

    /// Settlements queued or being sent.
    #[must_use]
    pub fn pending_settlements(&self) -> usize {
        self.inner.queue.pending()
    }

    /// Settlements given up: refused by a full queue, unsent when their lease expired, sent
    /// without a lease by a call that failed, or refused by Redis as unreadable state.
    #[must_use]
    pub fn dropped_settlements(&self) -> u64 {
        self.inner.queue.dropped()
    }

    /// Sends every queued settlement and waits until each is answered (including those the
    /// background task is sending). Call it on graceful shutdown.
    ///
    /// # Errors
    ///
    /// The error of a batch that failed (its settlements stay queued), or
    /// [`LimitError::Timeout`] if the settlements in the background task's hands are not
    /// answered within the store's timeouts.
    pub async fn flush(&self) -> Result<(), LimitError> {
        let inner = &self.inner;
        let deadline = Instant::now() + inner.connector.wait() * 2;
        loop {
            let batch = inner.queue.take(BATCH);
            if !batch.is_empty() {
                inner.send(batch).await?;
            } else if inner.queue.pending() == 0 {
                return Ok(());
            } else if Instant::now() > deadline {
                return Err(LimitError::Timeout);
            } else {
                // The background task is sending some: wait for its answers.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    /// Runs the script for an admission (`once` false) or a settlement sent now.
    async fn call(
        &self,
        key: &KeyId,
        cells: &[CellId],
        ops: &[LimitOp],
        now: Timestamp,
    ) -> Result<Result<Applied, Refused>, LimitError> {
        if cells.is_empty() {
            return Ok(Ok(Applied::new([0; MAX_CELLS])));
        }
        if cells.len() > MAX_CELLS || ops.len() != cells.len() {
            return Err(LimitError::TooManyCells);
        }
        let hash = self.redis_key(key);
        let parts = [Part { cells, ops, now, once: false }];
        let call = self.inner.call(&hash, &parts);
        let outcome = match self.inner.connector.eval(&call.invocation(&self.inner.script)).await {
            Ok(reply) => match call.decode(&reply)?.pop() {
                Some(Reply::Decided(outcome)) => Ok(outcome),
                _ => Err(LimitError::Corrupt),
            },
            Err(e) => Err(e),
        };
        if let Err(LimitError::Timeout | LimitError::Unavailable) = outcome {
            // The script may have run and taken a lease nobody will release: give it back as
            // soon as Redis answers (the lease would expire anyway, later).
            for (cell, op) in cells.iter().zip(ops) {
                if let LimitOp::Acquire { lease, .. } = *op {
                    let mut release = LimitBatch::new();
                    if release.push(*cell, LimitOp::Release { lease }).is_ok() {
                        let _ = self.queue(key, &release, now);
                    }
                }
            }
        }
        outcome
    }

    /// Queues a settlement, starting the background sender if it is not running.
    fn queue(&self, key: &KeyId, batch: &LimitBatch, now: Timestamp) -> Result<(), LimitError> {
        let once = batch.ops().iter().any(|op| matches!(op, LimitOp::Release { .. }));
        let until = Instant::now() + self.inner.lease;
        self.inner.queue.push(Settlement { key: *key, batch: *batch, now, once, until })?;
        self.start();
        Ok(())
    }

    /// Starts the background sender on the current Tokio runtime, once. Without a runtime,
    /// settlements wait for [`flush`](Self::flush).
    fn start(&self) {
        use core::sync::atomic::Ordering;
        let queue = &self.inner.queue;
        if queue.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if queue.started.swap(true, Ordering::AcqRel) {
            return;
        }
        runtime.spawn(send_in_background(Arc::clone(&self.inner)));
    }
}

impl Inner {
    fn call<'a>(&self, hash: &'a str, parts: &'a [Part<'a>]) -> Call<'a> {
        Call { hash, parts, lease_millis: self.lease_millis, grace_millis: self.grace_millis, instance: self.instance }
    }
}

impl AsyncLimitStore for RedisLimitStore {
    /// One round trip: the apply script.
    fn apply(
        &self,
        key: &KeyId,
        batch: &LimitBatch,
        now: Timestamp,
    ) -> impl Future<Output = Result<Result<Applied, Refused>, LimitError>> + Send {
        self.call(key, batch.cells(), batch.ops(), now)
    }

    /// The apply script with one cell.
    async fn apply_one(
        &self,
        key: &KeyId,
        cell: CellId,
        op: LimitOp,
        now: Timestamp,
    ) -> Result<Result<u64, Refused>, LimitError> {
        Ok(self.call(key, &[cell], &[op], now).await?.map(|applied| applied.value(0)))
    }

    /// Queues the settlement (see the module docs): `Ok(None)` at once.
    fn settle(&self, key: &KeyId, batch: &LimitBatch, now: Timestamp) -> Result<Option<Applied>, LimitError> {
        self.queue(key, batch, now).map(|()| None)
    }
}

/// A store shared as `Arc<RedisLimitStore>` (as [`KeyGate::with_stores`](crate::KeyGate::with_stores)
/// keeps it) is the same store.
impl AsyncLimitStore for Arc<RedisLimitStore> {
    fn apply(
        &self,
        key: &KeyId,
        batch: &LimitBatch,
        now: Timestamp,
    ) -> impl Future<Output = Result<Result<Applied, Refused>, LimitError>> + Send {
        (**self).apply(key, batch, now)
    }

    fn apply_one(
        &self,
        key: &KeyId,
        cell: CellId,
        op: LimitOp,
        now: Timestamp,
    ) -> impl Future<Output = Result<Result<u64, Refused>, LimitError>> + Send {
        (**self).apply_one(key, cell, op, now)
    }

    fn settle(&self, key: &KeyId, batch: &LimitBatch, now: Timestamp) -> Result<Option<Applied>, LimitError> {
        (**self).settle(key, batch, now)
    }
}

impl fmt::Debug for RedisLimitStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimitStore")
            .field("target", &self.inner.target)
            .field("prefix", &self.inner.prefix)
            .field("pending_settlements", &self.pending_settlements())
            .finish_non_exhaustive()
    }
}

fn check(config: &RedisConfig) -> Result<(), LimitError> {
    if config.prefix.contains(['{', '}']) { Err(LimitError::Unavailable) } else { Ok(()) }
}

/// A random id for this store, so that lease members of different processes never collide.
fn instance_id() -> u64 {
    use core::hash::BuildHasher;
    // Randomly seeded per process (and per call), mixed with the time and the process id.
    let nanos = Timestamp::now().unix_nanos();
    std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id()))
}

/// `scheme://host:port/path` of `url`, without user, password or query (which may hold a
/// password).
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return String::from("<invalid>");
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_credentials() {
        let store = RedisLimitStore::open("redis://user:s3cret@example.com:6380/2?password=x", RedisConfig::default())
            .expect("valid url");
        let shown = format!("{store:?}");
        assert!(shown.contains("redis://example.com:6380/2"), "{shown}");
        assert!(!shown.contains("s3cret") && !shown.contains("password"), "{shown}");
    }

    #[test]
    fn bad_urls_and_prefixes_are_refused() {
        assert_eq!(RedisLimitStore::open("not a url", RedisConfig::default()).err(), Some(LimitError::Unavailable));
        let braces = RedisConfig::default().with_prefix("a{b}");
        assert_eq!(RedisLimitStore::open("redis://127.0.0.1", braces).err(), Some(LimitError::Unavailable));
    }
}
