//! Limiter state in Redis, shared by any number of gateway processes (needs the `redis` feature).
//!
//! # Design
//!
//! [`RedisLimitStore`] implements the synchronous [`LimitStore`] with the `redis` crate's blocking
//! client. Its hot path, [`apply`](LimitStore::apply) (and [`apply_one`](LimitStore::apply_one),
//! the same script with one cell), is **one Lua script, one round trip**: the script reads the
//! batch's cells, evaluates every operation exactly as [`LimitBatch::evaluate`] does, and either
//! writes every new state or writes nothing. Redis runs a script atomically, so two gateways
//! updating the same key never interleave. The script is sent by SHA (`EVALSHA`); after a Redis
//! restart or `SCRIPT FLUSH` the client loads it again by itself.
//!
//! ## Keys
//!
//! One Redis string per cell, holding the cell's value in decimal:
//!
//! ```text
//! <prefix>:{<kid>}:<limit name>:<window>      keygate:{4f9TqWm2Lx8RbC1d}:requests:0
//!                                              keygate:{4f9TqWm2Lx8RbC1d}:spend:1767225600
//! ```
//!
//! The `{kid}` hash tag puts all of a key's cells in one Redis Cluster slot, so one script may
//! touch them all. The prefix ([`RedisConfig::prefix`], `keygate` by default) separates
//! deployments sharing a server. A value 0 ("absent") is never stored: the key is deleted.
//!
//! ## The script's arguments
//!
//! ```text
//! EVALSHA <sha> N  key_1 .. key_N   now_s now_ns lease_ms grace_ms   op_1 .. op_N
//!   op_i = kind p1 p2 p3 p4   (decimal u64s; "" for none)
//!   1 rate      t  tau  additional = t·(cost − 1)  mode (0 take, 1 check only: cost 0, 2 never)
//!   2 charge    t·units            3 refund   t·units            (saturated, computed in Rust)
//!   4 acquire   cap                5 release
//!   6 quota     cap  amount  resets_at_ns     7 record / 8 unrecord   amount  –  resets_at_ns
//! reply: {0, new_1 .. new_N}  |  {1, old_1 .. old_N, why_1 .. why_N}  |  {2, i} (cell i corrupt)
//! ```
//!
//! Everything that does not depend on the stored state is computed in Rust: the emission
//! interval `t`, the tolerance `tau`, `additional`, whether a request can never be admitted (a
//! cost above the burst, a limit of zero), `t·units`. On a refusal the script says which
//! operations refused and how long each would wait; the Rust side then picks the code and the
//! retry-after with the same rule as [`LimitBatch::evaluate`] (the first code in decision-table
//! order, the longest wait, "never" dominating) and builds the outcome with [`Refused::new`] or
//! [`Applied::new`].
//!
//! ## Precision
//!
//! Lua numbers are doubles, exact for integers only up to 2^53, and a state is up to 2^63 − 1 (a
//! TAT is nanoseconds since the epoch, about 1.8·10^18 today). So `now` is passed split into whole
//! seconds and nanoseconds, states and arguments travel as decimal strings, and the script holds
//! every u64 as two exact doubles (`value div 10^9`, `value mod 10^9`): its additions,
//! subtractions and comparisons on those pairs are exact over the whole u64 range and saturate
//! where the Rust saturates, and results go back to text with `string.format("%d%09d", s, ns)`.
//! There is no range in which the script rounds or clamps differently from the Rust; the
//! differential test in `tests/redis_limits.rs` checks this against
//! [`MemoryLimitStore`](crate::MemoryLimitStore) on random sequences of batches.
//!
//! ## Expiry
//!
//! As [`CellState::expires_at`] says, with relative TTLs (`PX`, rounded up to whole
//! milliseconds, measured from the caller's `now`, so a clock difference between the gateway and
//! Redis does not matter): a rate cell expires at its TAT; a quota, record or unrecord cell at
//! its `resets_at` (never for a lifetime counter); a value of 0, or an expiry already passed,
//! deletes the key. A concurrency cell gets a **lease**: every `Acquire` sets its TTL to
//! [`RedisConfig::concurrency_lease`] (10 minutes by default; make it longer than the longest
//! request), `Release` keeps it (`KEEPTTL`). A gateway that dies holding slots cannot release
//! them; the lease gives them back once the key has seen no new request for one lease (the
//! counter is one number, so the whole counter expires, not the dead process's slots alone).
//! [`RedisConfig::expiry_grace`] (0 by default) keeps every expiring key that much longer, for
//! gateways whose clocks lag behind each other's: a rate cell kept past its TAT decides exactly
//! as an absent one.
//!
//! [`update`](LimitStore::update), the closure form, reads the cells and their TTLs in one
//! pipeline, runs the closure, and writes its states with a small compare-and-set script iff
//! every cell still holds what was read, retrying on conflict. It writes the states exactly as
//! the closure leaves them (`expires_at: None` persists the key): leases are `apply`'s, which
//! knows the operations.
//!
//! ## Connections and failures
//!
//! [`RedisLimitStore::open`] checks the URL and connects to nothing, so a gateway can start while
//! Redis is restarting; each call takes a connection from a small pool (or opens one, bounded by
//! [`RedisConfig::connect_timeout`]) and every socket read and write on it is bounded by
//! [`RedisConfig::io_timeout`]. A call that fails drops its connection (and, if the server
//! closed it, every idle one, as after a restart), so the next call reconnects; the failed call
//! is not retried, since the script may have run. Failures are [`LimitError::Timeout`],
//! [`LimitError::Unavailable`], or [`LimitError::Corrupt`] for a key holding something that is
//! not a limiter state. The [`Limiter`](crate::Limiter) turns each into `503 auth_unavailable`
//! (fail closed) unless it was built [`fail_open`](crate::Limiter::fail_open).
//!
//! Every call blocks the calling thread for one round trip, at most `io_timeout` per socket
//! operation (plus `connect_timeout` when it must connect). On an async server that is a short
//! blocking call on a worker thread (measured over loopback on the development machine: about
//! 90 µs per `apply_one`, where a bare `PING` takes 70 µs and `MemoryLimitStore` 14 ns), but a
//! slow or unreachable Redis holds the worker for up to the timeouts. Keep them small, or call
//! the limiter from `spawn_blocking`.

#![cfg(feature = "redis")]

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;
use std::sync::{Mutex, MutexGuard, PoisonError};

use redis::{Client, Connection, RedisError, Script, ScriptInvocation, Value};

use super::{Applied, CellId, CellState, LimitBatch, LimitError, LimitOp, LimitStore, MAX_CELLS, MAX_STATE, Refused};
use crate::{DenialCode, KeyId, Timestamp};

const NANOS_PER_SEC: u64 = 1_000_000_000;
const NANOS_PER_MILLI: u64 = 1_000_000;
/// Gcra's longest emission interval and tolerance (2^61 ns).
const MAX_SPAN: u64 = 1 << 61;
/// The longest lease or grace passed to the script: 2^40 ms, 34 years (exact in a Lua double,
/// and far from Redis's limit on expiry times).
const MAX_TTL_MILLIS: u64 = 1 << 40;
/// How often [`LimitStore::update`] retries its compare-and-set before giving up.
const MAX_ATTEMPTS: usize = 100;

/// The apply script: [`LimitBatch::evaluate`] in Lua (see the module docs for its arguments).
const APPLY_LUA: &str = include_str!("redis.lua");

/// The compare-and-set of [`LimitStore::update`]: `ARGV` holds, per cell, the value read (""
/// when absent), the value to write, and its TTL in ms ("" to persist, "0" to delete).
const CAS_LUA: &str = r"
for i = 1, #KEYS do
  local cur = redis.pcall('GET', KEYS[i])
  if type(cur) == 'table' then return 2 end
  if (cur or '') ~= ARGV[3 * i - 2] then return 0 end
end
for i = 1, #KEYS do
  local value, ttl = ARGV[3 * i - 1], ARGV[3 * i]
  if value == '0' or ttl == '0' then
    redis.call('DEL', KEYS[i])
  elseif ttl == '' then
    redis.call('SET', KEYS[i], value)
  else
    redis.call('SET', KEYS[i], value, 'PX', ttl)
  end
end
return 1
";

/// How a [`RedisLimitStore`] connects and names its keys.
///
/// ```
/// use core::time::Duration;
/// use keygate::RedisConfig;
///
/// let config = RedisConfig::default()
///     .with_prefix("gw-eu")
///     .with_io_timeout(Duration::from_millis(100))
///     .with_concurrency_lease(Duration::from_secs(300));
/// assert_eq!(config.prefix, "gw-eu");
/// assert_eq!(config.pool_size, RedisConfig::default().pool_size);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The longest wait for a new connection (TCP connect and handshake); 1 s by default.
    pub connect_timeout: Duration,
    /// The longest wait for each socket read or write of a call; 250 ms by default.
    pub io_timeout: Duration,
    /// Idle connections kept for reuse; 8 by default. More calls at once open more connections,
    /// which are closed afterwards.
    pub pool_size: usize,
    /// The first part of every key; `keygate` by default. Must not contain `{` or `}`.
    pub prefix: String,
    /// How long a concurrency cell lives after its last `Acquire`; 10 minutes by default
    /// (rounded up to whole milliseconds, at least 1 ms).
    pub concurrency_lease: Duration,
    /// How much longer than its state needs every expiring key is kept; 0 by default.
    pub expiry_grace: Duration,
    /// A name each connection gives itself (`CLIENT SETNAME`, shown by `CLIENT LIST`), at the
    /// cost of one more command per new connection; none by default. Printable ASCII without
    /// spaces.
    pub client_name: Option<String>,
    /// How long a settlement that failed (a call that timed out or found Redis down) is kept
    /// to be sent again, and how long Redis remembers each settlement's marker so that one sent
    /// twice counts once. Default 10 minutes; zero turns replays (and markers) off.
    pub replay_window: Duration,
    /// The most failed settlements kept for replay (default 100 000); past it, the oldest are
    /// dropped and counted ([`RedisLimitStore::dropped_settlements`]).
    pub max_pending: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_millis(250),
            pool_size: 8,
            prefix: String::from("keygate"),
            concurrency_lease: Duration::from_secs(600),
            expiry_grace: Duration::ZERO,
            client_name: None,
            replay_window: Duration::from_secs(600),
            max_pending: 100_000,
        }
    }
}

impl RedisConfig {
    /// The same configuration with this key prefix.
    #[must_use]
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = String::from(prefix);
        self
    }

    /// The same configuration with this connect timeout.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The same configuration with this timeout per socket read or write.
    #[must_use]
    pub fn with_io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = timeout;
        self
    }

    /// The same configuration keeping up to `size` idle connections.
    #[must_use]
    pub fn with_pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// The same configuration with this concurrency lease.
    #[must_use]
    pub fn with_concurrency_lease(mut self, lease: Duration) -> Self {
        self.concurrency_lease = lease;
        self
    }

    /// The same configuration with this expiry grace.
    #[must_use]
    pub fn with_expiry_grace(mut self, grace: Duration) -> Self {
        self.expiry_grace = grace;
        self
    }

    /// The same configuration naming each connection `name`.
    #[must_use]
    pub fn with_client_name(mut self, name: &str) -> Self {
        self.client_name = Some(String::from(name));
        self
    }

    /// The same configuration with this replay window (zero: no replays, no markers).
    #[must_use]
    pub fn with_replay_window(mut self, window: Duration) -> Self {
        self.replay_window = window;
        self
    }
}

/// A settlement whose call failed, kept to be sent again.
struct Pending {
    key: KeyId,
    batch: LimitBatch,
    now: Timestamp,
    marker: String,
    /// When it stops being worth sending (its marker would have expired).
    until: std::time::Instant,
}

/// Whether every operation of `ops` only settles what a request did (never refuses, and must
/// not be lost): reconciled tokens, recorded spend, given-back credits, a released slot.
fn settles(ops: &[LimitOp]) -> bool {
    ops.iter().all(|op| {
        matches!(
            op,
            LimitOp::RateCharge { .. }
                | LimitOp::RateRefund { .. }
                | LimitOp::Release
                | LimitOp::Record { .. }
                | LimitOp::Unrecord { .. }
        )
    })
}

/// A [`LimitStore`] in Redis, shared by every gateway process using the same server and prefix.
///
/// - **One round trip per request.** [`apply`](LimitStore::apply) and
///   [`apply_one`](LimitStore::apply_one) run one Lua script (`EVALSHA`, reloaded by itself after
///   a restart) that evaluates the batch exactly as [`LimitBatch::evaluate`] does, all-or-nothing,
///   with exact 64-bit arithmetic (states travel as decimal text, never as Lua doubles).
/// - **Keys** `<prefix>:{<kid>}:<limit name>:<window>`, one string per cell: the `{kid}` hash tag
///   keeps a key's cells in one Redis Cluster slot.
/// - **Expiry** as [`CellState::expires_at`] says, as relative TTLs from the caller's `now`: a
///   rate cell at its TAT, a period counter at its period's end, 0 deleted. A concurrency cell
///   has a lease ([`RedisConfig::concurrency_lease`], renewed by every acquisition, kept by a
///   release), so slots held by a process that died come back once the key has been idle for
///   one lease.
/// - **Blocking, bounded, fail closed.** Each call blocks its thread for one round trip, every
///   socket read and write bounded by [`RedisConfig::io_timeout`] (plus
///   [`RedisConfig::connect_timeout`] when it must connect). On an async server that is a short
///   blocking call on a worker thread; a slow Redis holds it for up to those timeouts. A failure
///   is [`LimitError::Timeout`], [`LimitError::Unavailable`] or [`LimitError::Corrupt`], which
///   the [`Limiter`](crate::Limiter) answers with `503 auth_unavailable` (unless built
///   [`fail_open`](crate::Limiter::fail_open)). A failed call is not retried (the script may
///   have run); it drops its connection, and the next call reconnects.
/// - [`update`](LimitStore::update), the closure form, reads, runs the closure and writes with a
///   compare-and-set script, retrying on conflict: correct, but two round trips or more.
///
/// The design notes at the top of `src/limit/redis.rs` give the script's argument layout.
///
/// ```no_run
/// use keygate::{Limiter, RedisConfig, RedisLimitStore};
///
/// // Connects on first use: the gateway starts even while Redis is restarting.
/// let store = RedisLimitStore::open("redis://127.0.0.1:6379", RedisConfig::default())?;
/// let limiter = Limiter::new(store); // fails closed: a Redis failure is 503 auth_unavailable
/// # Ok::<(), keygate::LimitError>(())
/// ```
pub struct RedisLimitStore {
    client: Client,
    pool: Mutex<Vec<Connection>>,
    prefix: String,
    connect_timeout: Duration,
    io_timeout: Duration,
    pool_size: usize,
    lease_millis: u64,
    grace_millis: u64,
    client_name: Option<String>,
    apply_script: Script,
    cas_script: Script,
    /// Settlements whose call failed, oldest first; `parked` mirrors its length so the hot path
    /// checks it without a lock.
    pending: Mutex<VecDeque<Pending>>,
    parked: AtomicUsize,
    dropped: AtomicU64,
    /// Makes settlement markers unique across processes: a random instance id and a counter.
    instance: u64,
    sequence: AtomicU64,
    replay_window: Duration,
    max_pending: usize,
    /// The URL without credentials, for `Debug`.
    target: String,
}

impl RedisLimitStore {
    /// A store over the Redis server at `url` (`redis://[user:password@]host[:port][/db]`,
    /// `rediss://` if the `redis` crate was built with TLS, `redis+unix:///path`).
    ///
    /// Connects to nothing: the first call connects, and every call reconnects if it must, so
    /// the store can be built while Redis is down.
    ///
    /// # Errors
    ///
    /// [`LimitError::Unavailable`] if `url` is not a Redis URL, the prefix contains `{` or `}`
    /// (which would move the cluster hash tag), or the client name is empty or has characters
    /// other than printable ASCII without spaces.
    pub fn open(url: &str, config: RedisConfig) -> Result<Self, LimitError> {
        let bad_name = |n: &String| n.is_empty() || !n.bytes().all(|b| b.is_ascii_graphic());
        if config.prefix.contains(['{', '}']) || config.client_name.as_ref().is_some_and(bad_name) {
            return Err(LimitError::Unavailable);
        }
        let client = Client::open(url).map_err(|_| LimitError::Unavailable)?;
        let millis =
            |d: Duration| u64::try_from(d.as_nanos().div_ceil(u128::from(NANOS_PER_MILLI))).unwrap_or(u64::MAX);
        let floor = Duration::from_millis(1);
        Ok(Self {
            client,
            pool: Mutex::new(Vec::new()),
            connect_timeout: config.connect_timeout.max(floor),
            io_timeout: config.io_timeout.max(floor),
            pool_size: config.pool_size,
            lease_millis: millis(config.concurrency_lease).clamp(1, MAX_TTL_MILLIS),
            grace_millis: millis(config.expiry_grace).min(MAX_TTL_MILLIS),
            prefix: config.prefix,
            client_name: config.client_name,
            apply_script: Script::new(APPLY_LUA),
            cas_script: Script::new(CAS_LUA),
            pending: Mutex::new(VecDeque::new()),
            parked: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            instance: instance_id(),
            sequence: AtomicU64::new(0),
            replay_window: config.replay_window,
            max_pending: config.max_pending,
            target: redact(url),
        })
    }

    /// The Redis key holding `cell` of `key`: `<prefix>:{<kid>}:<name>:<window>`.
    ///
    /// ```
    /// use keygate::{CellId, KeyId, LimitName, RedisConfig, RedisLimitStore};
    /// let store = RedisLimitStore::open("redis://127.0.0.1", RedisConfig::default())?;
    /// let kid: KeyId = "4f9TqWm2Lx8RbC1d".parse().unwrap();
    /// assert_eq!(store.redis_key(&kid, CellId::new(LimitName::REQUESTS)), "keygate:{4f9TqWm2Lx8RbC1d}:requests:0");
    /// # Ok::<(), keygate::LimitError>(())
    /// ```
    #[must_use]
    pub fn redis_key(&self, key: &KeyId, cell: CellId) -> String {
        format!("{}:{{{}}}:{}:{}", self.prefix, key, cell.name, cell.window)
    }

    /// Runs `call` on a pooled connection (or a new one): the connection goes back to the pool
    /// on success and is dropped on any error.
    fn with_connection<T>(&self, call: impl FnOnce(&mut Connection) -> Result<T, RedisError>) -> Result<T, LimitError> {
        let pooled = lock(&self.pool).pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.connect()?,
        };
        match call(&mut conn) {
            Ok(value) => {
                let mut pool = lock(&self.pool);
                if pool.len() < self.pool_size {
                    pool.push(conn);
                }
                Ok(value)
            }
            Err(e) => {
                if e.is_connection_dropped() || e.is_connection_refusal() {
                    // The server went away (a restart, a kill): the idle connections are as dead.
                    lock(&self.pool).clear();
                }
                Err(error(&e))
            }
        }
    }

    fn connect(&self) -> Result<Connection, LimitError> {
        let conn = self.client.get_connection_with_timeout(self.connect_timeout).map_err(|e| error(&e))?;
        conn.set_read_timeout(Some(self.io_timeout)).map_err(|e| error(&e))?;
        conn.set_write_timeout(Some(self.io_timeout)).map_err(|e| error(&e))?;
        let mut conn = conn;
        if let Some(name) = &self.client_name {
            redis::cmd("CLIENT").arg("SETNAME").arg(name).query::<()>(&mut conn).map_err(|e| error(&e))?;
        }
        Ok(conn)
    }

    /// Settlements kept because their call failed, waiting to be sent again.
    #[must_use]
    pub fn pending_settlements(&self) -> usize {
        self.parked.load(Ordering::Acquire)
    }

    /// Settlements given up: older than the replay window when Redis came back, or pushed out
    /// of a full queue, or refused by Redis as unreadable state.
    #[must_use]
    pub fn dropped_settlements(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sends the kept settlements again, oldest first, until one fails; returns how many were
    /// sent. Every call of the store does this first when any are kept, so calling it is only
    /// needed to settle without other traffic.
    ///
    /// # Errors
    ///
    /// The error of the settlement that failed (it stays kept).
    pub fn replay_pending(&self) -> Result<usize, LimitError> {
        // One thread replays at a time; the others go on with their own calls.
        let Ok(mut pending) = self.pending.try_lock() else { return Ok(0) };
        let mut sent = 0;
        while let Some(next) = pending.pop_front() {
            if std::time::Instant::now() > next.until {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                match self.run(&next.key, next.batch.cells(), next.batch.ops(), next.now, Some(&next.marker)) {
                    Ok(_) => sent += 1,
                    Err(LimitError::Corrupt) => {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        pending.push_front(next);
                        self.parked.store(pending.len(), Ordering::Release);
                        return Err(e);
                    }
                }
            }
            self.parked.store(pending.len(), Ordering::Release);
        }
        Ok(sent)
    }

    /// Applies `batch`; a settlement gets a marker, and is kept to be sent again if its call
    /// fails.
    fn apply_batch(
        &self,
        key: &KeyId,
        cells: &[CellId],
        ops: &[LimitOp],
        now: Timestamp,
    ) -> Result<Result<Applied, Refused>, LimitError> {
        if self.parked.load(Ordering::Acquire) > 0 {
            // Redis answered before this call, or is back: settle what is owed first.
            let _ = self.replay_pending();
        }
        if self.replay_window.is_zero() || !settles(ops) {
            return self.run(key, cells, ops, now, None);
        }
        let marker = format!(
            "{}:{{{}}}:settled:{:016x}{:x}",
            self.prefix,
            key,
            self.instance,
            self.sequence.fetch_add(1, Ordering::Relaxed)
        );
        let outcome = self.run(key, cells, ops, now, Some(&marker));
        if let Err(e) = outcome
            && e != LimitError::Corrupt
        {
            self.park(key, cells, ops, now, marker);
        }
        outcome
    }

    fn park(&self, key: &KeyId, cells: &[CellId], ops: &[LimitOp], now: Timestamp, marker: String) {
        let mut batch = LimitBatch::new();
        for (cell, op) in cells.iter().zip(ops) {
            if batch.push(*cell, *op).is_err() {
                return;
            }
        }
        let until = std::time::Instant::now() + self.replay_window;
        let mut pending = lock(&self.pending);
        while pending.len() >= self.max_pending.max(1) {
            pending.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        pending.push_back(Pending { key: *key, batch, now, marker, until });
        self.parked.store(pending.len(), Ordering::Release);
    }

    /// Runs the apply script for `ops` on `cells` of `key`, with a settlement's marker.
    fn run(
        &self,
        key: &KeyId,
        cells: &[CellId],
        ops: &[LimitOp],
        now: Timestamp,
        marker: Option<&str>,
    ) -> Result<Result<Applied, Refused>, LimitError> {
        let n = cells.len();
        if n == 0 {
            return Ok(Ok(Applied::new([0; MAX_CELLS])));
        }
        if n > MAX_CELLS || ops.len() != n {
            return Err(LimitError::TooManyCells);
        }
        let mut invocation = self.apply_script.prepare_invoke();
        for cell in cells {
            invocation.key(self.redis_key(key, *cell));
        }
        let nanos = now.unix_nanos();
        invocation.arg(nanos / NANOS_PER_SEC).arg(nanos % NANOS_PER_SEC).arg(self.lease_millis).arg(self.grace_millis);
        for op in ops {
            push_op(&mut invocation, op);
        }
        if let Some(marker) = marker {
            invocation.key(marker);
            invocation
                .arg(u64::try_from(self.replay_window.as_millis()).unwrap_or(MAX_TTL_MILLIS).clamp(1, MAX_TTL_MILLIS));
        }
        let reply: Value = self.with_connection(|conn| invocation.invoke(conn))?;
        decode(&reply, ops)
    }
}

impl fmt::Debug for RedisLimitStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimitStore")
            .field("target", &self.target)
            .field("prefix", &self.prefix)
            .field("io_timeout", &self.io_timeout)
            .field("idle_connections", &lock(&self.pool).len())
            .finish_non_exhaustive()
    }
}

/// A random id for this store, so that settlement markers of different processes never collide.
fn instance_id() -> u64 {
    use core::hash::BuildHasher;
    // Randomly seeded per process (and per call), mixed with the time and the process id.
    let nanos = Timestamp::now().unix_nanos();
    std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id()))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn error(e: &RedisError) -> LimitError {
    if e.is_timeout() { LimitError::Timeout } else { LimitError::Unavailable }
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

/// The emission interval and tolerance of `gcra`, in nanoseconds, as `Gcra` holds them.
fn gcra_parts(gcra: &super::Gcra) -> (u64, u64) {
    let t = u64::try_from(gcra.emission_interval().as_nanos()).unwrap_or(MAX_SPAN);
    let tau = t.saturating_mul(u64::from(gcra.burst().max(1) - 1)).min(MAX_SPAN);
    (t, tau)
}

/// Appends one operation's five arguments: kind, p1, p2, p3, p4.
fn push_op(invocation: &mut ScriptInvocation<'_>, op: &LimitOp) {
    let (kind, params): (u64, [Option<u64>; 4]) = match *op {
        LimitOp::Rate { gcra, cost } => {
            let (t, tau) = gcra_parts(&gcra);
            let additional = if cost > 1 { t.saturating_mul(u64::from(cost - 1)) } else { 0 };
            let mode = if additional > tau || t == 0 {
                2
            } else if cost == 0 {
                1
            } else {
                0
            };
            (1, [Some(t), Some(tau), Some(additional), Some(mode)])
        }
        LimitOp::RateCharge { gcra, units } => (2, [Some(gcra_parts(&gcra).0.saturating_mul(units)), None, None, None]),
        LimitOp::RateRefund { gcra, units } => (3, [Some(gcra_parts(&gcra).0.saturating_mul(units)), None, None, None]),
        LimitOp::Acquire { cap } => (4, [Some(u64::from(cap)), None, None, None]),
        LimitOp::Release => (5, [None; 4]),
        LimitOp::Quota { cap, amount, resets_at } => {
            (6, [Some(cap), Some(amount), resets_at.map(Timestamp::unix_nanos), None])
        }
        LimitOp::Record { amount, resets_at } => (7, [Some(amount), None, resets_at.map(Timestamp::unix_nanos), None]),
        LimitOp::Unrecord { amount, resets_at } => {
            (8, [Some(amount), None, resets_at.map(Timestamp::unix_nanos), None])
        }
    };
    invocation.arg(kind);
    for p in params {
        match p {
            Some(v) => invocation.arg(v),
            None => invocation.arg(""),
        };
    }
}

/// The code an operation refuses with (the same as `LimitOp::apply`'s).
fn refusal_code(op: &LimitOp) -> Option<DenialCode> {
    match op {
        LimitOp::Rate { .. } => Some(DenialCode::RateLimited),
        LimitOp::Acquire { .. } => Some(DenialCode::ConcurrencyLimited),
        LimitOp::Quota { .. } => Some(DenialCode::QuotaExceeded),
        _ => None,
    }
}

fn text(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<u64> {
    core::str::from_utf8(text(value)?).ok()?.parse().ok()
}

/// The apply script's reply as an outcome, combining refusals as [`LimitBatch::evaluate`] does.
fn decode(reply: &Value, ops: &[LimitOp]) -> Result<Result<Applied, Refused>, LimitError> {
    let Value::Array(items) = reply else { return Err(LimitError::Corrupt) };
    let n = ops.len();
    let status = match items.first() {
        Some(Value::Int(status)) => *status,
        _ => return Err(LimitError::Corrupt),
    };
    let mut values = [0u64; MAX_CELLS];
    let expected = match status {
        0 => 1 + n,
        1 => 1 + 2 * n,
        // A settlement sent again that had been applied: nothing more to do. (Its new values
        // are not known; nobody waits for them.)
        3 if items.len() == 1 => return Ok(Ok(Applied::new(values))),
        _ => return Err(LimitError::Corrupt),
    };
    if items.len() != expected {
        return Err(LimitError::Corrupt);
    }
    for (v, item) in values.iter_mut().zip(&items[1..=n]) {
        *v = number(item).ok_or(LimitError::Corrupt)?;
    }
    if status == 0 {
        return Ok(Ok(Applied::new(values)));
    }
    let mut refusal: Option<(DenialCode, Option<Duration>)> = None;
    for (op, why) in ops.iter().zip(&items[1 + n..]) {
        let why = text(why).ok_or(LimitError::Corrupt)?;
        if why.is_empty() {
            continue;
        }
        let code = refusal_code(op).ok_or(LimitError::Corrupt)?;
        let after = if why == b"never" {
            None
        } else {
            Some(Duration::from_nanos(
                core::str::from_utf8(why).ok().and_then(|s| s.parse().ok()).ok_or(LimitError::Corrupt)?,
            ))
        };
        refusal = Some(match refusal {
            None => (code, after),
            Some((prev_code, prev_after)) => (
                if code < prev_code { code } else { prev_code },
                match (prev_after, after) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                },
            ),
        });
    }
    let (code, after) = refusal.ok_or(LimitError::Corrupt)?;
    Ok(Err(Refused::new(code, after, values)))
}

/// Checks the cell list of an update: at most [`MAX_CELLS`], no duplicates.
fn check_cells(cells: &[CellId]) -> Result<(), LimitError> {
    if cells.len() > MAX_CELLS {
        return Err(LimitError::TooManyCells);
    }
    for (i, c) in cells.iter().enumerate() {
        if cells[..i].contains(c) {
            return Err(LimitError::DuplicateCell);
        }
    }
    Ok(())
}

impl LimitStore for RedisLimitStore {
    /// Reads the cells and their TTLs (one pipeline), runs `f`, and writes its states with a
    /// compare-and-set script iff no cell changed meanwhile; on a conflict, reads again and runs
    /// `f` again (up to 100 times, then [`LimitError::Timeout`]). A cell's `expires_at` reads as
    /// `now` plus its remaining TTL.
    fn update<T, E, F>(
        &self,
        key: &KeyId,
        cells: &[CellId],
        now: Timestamp,
        mut f: F,
    ) -> Result<Result<T, E>, LimitError>
    where
        F: FnMut(&mut [CellState]) -> Result<T, E>,
    {
        check_cells(cells)?;
        let n = cells.len();
        if n == 0 {
            return Ok(f(&mut []));
        }
        let keys: Vec<String> = cells.iter().map(|c| self.redis_key(key, *c)).collect();
        let mut read = redis::pipe();
        read.cmd("MGET").arg(&keys);
        for k in &keys {
            read.cmd("PTTL").arg(k);
        }
        for _ in 0..MAX_ATTEMPTS {
            let reply: Vec<Value> = self.with_connection(|conn| read.query(conn))?;
            let (Some(Value::Array(raw)), Some(ttls)) = (reply.first(), reply.get(1..)) else {
                return Err(LimitError::Corrupt);
            };
            if raw.len() != n || ttls.len() != n {
                return Err(LimitError::Corrupt);
            }
            let mut states = [CellState::default(); MAX_CELLS];
            let mut seen: [&[u8]; MAX_CELLS] = [b""; MAX_CELLS];
            for (((state, seen), value), ttl) in states.iter_mut().zip(&mut seen).zip(raw).zip(ttls) {
                if let Value::Nil = value {
                    continue;
                }
                *seen = text(value).ok_or(LimitError::Corrupt)?;
                state.value = number(value).filter(|v| *v <= MAX_STATE).ok_or(LimitError::Corrupt)?;
                if let Value::Int(ms) = ttl
                    && let Ok(ms) = u64::try_from(*ms)
                {
                    state.expires_at = Some(now.saturating_add(Duration::from_millis(ms)));
                }
            }
            let result = match f(&mut states[..n]) {
                Ok(t) => t,
                Err(e) => return Ok(Err(e)),
            };
            let mut cas = self.cas_script.prepare_invoke();
            for ((k, seen), state) in keys.iter().zip(seen).zip(&states) {
                cas.key(k).arg(seen).arg(state.value.min(MAX_STATE));
                match state.expires_at {
                    None => cas.arg(""),
                    Some(at) => {
                        let left = at.unix_nanos().saturating_sub(now.unix_nanos()).div_ceil(NANOS_PER_MILLI);
                        cas.arg(left.saturating_add(self.grace_millis))
                    }
                };
            }
            match self.with_connection(|conn| cas.invoke::<i64>(conn))? {
                1 => return Ok(Ok(result)),
                0 => {}
                _ => return Err(LimitError::Corrupt),
            }
        }
        Err(LimitError::Timeout)
    }

    /// One round trip: the apply script.
    fn apply(&self, key: &KeyId, batch: &LimitBatch, now: Timestamp) -> Result<Result<Applied, Refused>, LimitError> {
        self.apply_batch(key, batch.cells(), batch.ops(), now)
    }

    /// The apply script with one cell.
    fn apply_one(
        &self,
        key: &KeyId,
        cell: CellId,
        op: LimitOp,
        now: Timestamp,
    ) -> Result<Result<u64, Refused>, LimitError> {
        Ok(self.apply_batch(key, &[cell], &[op], now)?.map(|applied| applied.value(0)))
    }
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

    #[test]
    fn refusal_codes_follow_the_decision_table() {
        assert!(DenialCode::RateLimited < DenialCode::ConcurrencyLimited);
        assert!(DenialCode::ConcurrencyLimited < DenialCode::QuotaExceeded);
    }
}
