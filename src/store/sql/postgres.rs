//! [`PostgresStore`]: keys in PostgreSQL, with change notifications (feature `postgres`).
//!
//! Any number of gateway processes share one database. The key store operations are the
//! generic store's; this engine connects, migrates under sqlx's lock, and listens for changes.
//! A trigger announces every change on the channel `keygate_keys` when its transaction commits; [`PostgresStore::changes`] listens there, so a read-through cache in
//! another process drops a changed key at once. The channel is per database: stores in other
//! schemas of the same database announce on it too, which costs a cache only extra evictions.
//!
//! # Notifications and lost connections
//!
//! PostgreSQL keeps no backlog of notifications: while a listener is disconnected, what is
//! announced is lost. [`KeyChanges::next`] therefore reconnects by itself (with exponential
//! backoff from 100 ms to 10 s, never a busy loop) and, once it listens again, yields
//! [`KeyChange::Resync`]: the cache must forget everything it holds, since any key may have
//! changed meanwhile. A listener that has heard nothing for 30 s pings its connection, so a
//! dead connection is found even when no error arrives.

#![cfg(feature = "postgres")]

use core::future::Future;
use core::str::FromStr;
use core::time::Duration;

use sqlx::Executor as _;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgQueryResult};

use super::store::{Engine, SqlStore};
use super::{MigrationSql, SqlConfig, error, migrate_error, migrator, timed};
use crate::KeyId;
use crate::store::StoreError;

/// The schema, version by version (`migrations/postgres/`).
const MIGRATIONS: &[MigrationSql] = &[
    (700_000_001, "keygate keys", include_str!("../../../migrations/postgres/700000001_keygate_keys.sql")),
    (
        700_000_002,
        "keygate keys inherits budget",
        include_str!("../../../migrations/postgres/700000002_keygate_keys_inherits_budget.sql"),
    ),
    (
        700_000_003,
        "keygate quiet last used",
        include_str!("../../../migrations/postgres/700000003_keygate_quiet_last_used.sql"),
    ),
    (
        700_000_010,
        "keygate usage and wallets",
        include_str!("../../../migrations/postgres/700000010_keygate_usage_and_wallets.sql"),
    ),
    (
        700_000_011,
        "keygate wallet reserve",
        include_str!("../../../migrations/postgres/700000011_keygate_wallet_reserve.sql"),
    ),
    (
        700_000_012,
        "keygate wallet leases",
        include_str!("../../../migrations/postgres/700000012_keygate_wallet_leases.sql"),
    ),
    (700_000_030, "keygate usage log", include_str!("../../../migrations/postgres/700000030_keygate_usage_log.sql")),
];

/// The channel the trigger announces changes on.
const CHANNEL: &str = "keygate_keys";
/// The first wait before reconnecting a listener.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait before reconnecting a listener.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long a listener waits in silence before it checks its connection.
const PING_AFTER: Duration = Duration::from_secs(30);

/// Key records in PostgreSQL; the schema is brought up to date on connect.
///
/// One row per key in the table `keygate_keys` (in the connection's `search_path` schema);
/// [`replace`](crate::AsyncKeyStore::replace) is one `UPDATE … WHERE id = $1 AND revision = $n`.
/// Every call fails with [`StoreError::Timeout`] past
/// [`SqlConfig::timeout`]; a unique id or opaque digest taken is
/// [`StoreError::Conflict`], a row that is not a valid record [`StoreError::Corrupt`], any other
/// failure [`StoreError::Unavailable`]. A trigger announces each committed change on the
/// channel `keygate_keys`, which [`PostgresStore::changes`] listens to.
///
/// ```no_run
/// use keygate::{AsyncKeyStore, PostgresStore};
/// use keygate::store::{KeyChange, SqlConfig};
/// # async fn run() -> Result<(), keygate::StoreError> {
/// let store = PostgresStore::connect("postgres://keygate@db.internal/keys", SqlConfig::default()).await?;
/// let mut changes = store.changes().await?;
/// tokio::spawn(async move {
///     loop {
///         match changes.next().await {
///             KeyChange::Changed(id) => println!("evict {id}"),
///             KeyChange::Resync => println!("evict everything"),
///         }
///     }
/// });
/// # Ok(()) }
/// ```
pub type PostgresStore = SqlStore<Postgres>;

/// The PostgreSQL engine of [`PostgresStore`].
#[derive(Debug, Clone, Copy)]
pub struct Postgres;

impl Engine for Postgres {
    type Db = sqlx::Postgres;
    type Target = Target;
    const NAME: &'static str = "PostgresStore";
    const SIGIL: char = '$';

    /// A read-only transaction at repeatable read: every read in it sees one snapshot.
    fn snapshot(
        pool: &PgPool,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error>> + Send {
        pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }
}

impl SqlStore<Postgres> {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, with
    /// the usual parameters such as `sslmode` or `options=-csearch_path%3Dkeys`) and brings its
    /// schema up to date, under sqlx's migration lock.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the URL is invalid, or the database cannot be reached or
    /// migrated; [`StoreError::Timeout`] past
    /// [`SqlConfig::open_timeout`].
    pub async fn connect(url: &str, config: SqlConfig) -> Result<Self, StoreError> {
        Self::connect_with(PgConnectOptions::from_str(url).map_err(error)?, config).await
    }

    /// Connects with options of your own, as [`PostgresStore::connect`].
    ///
    /// # Errors
    ///
    /// As [`PostgresStore::connect`].
    pub async fn connect_with(options: PgConnectOptions, config: SqlConfig) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.acquire_timeout)
            .connect_lazy_with(options.clone());
        let migrate = async {
            migrator(MIGRATIONS).run(&pool).await.map_err(migrate_error)?;
            Ok(())
        };
        timed(config.open_timeout, migrate).await?;
        Ok(Self::new(pool, config, Target(options)))
    }

    /// Starts listening for changes to any key, on a connection of its own. Every change
    /// committed after this returns is announced.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the database cannot be reached; [`StoreError::Timeout`]
    /// past [`SqlConfig::open_timeout`].
    pub async fn changes(&self) -> Result<KeyChanges, StoreError> {
        let listener = timed(self.config.open_timeout, listen(&self.target.0, &self.config)).await?;
        Ok(KeyChanges {
            target: self.target.clone(),
            config: self.config.clone(),
            listener: Some(listener),
            lost: false,
            backoff: BACKOFF_MIN,
        })
    }
}

/// The options a store connects with, shown as host, port, database and user: never the
/// password.
#[derive(Clone)]
pub struct Target(PgConnectOptions);

impl core::fmt::Debug for Target {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let o = &self.0;
        match o.get_socket() {
            Some(socket) => write!(f, "{}@{}", o.get_username(), socket.display())?,
            None => write!(f, "{}@{}:{}", o.get_username(), o.get_host(), o.get_port())?,
        }
        write!(f, "/{}", o.get_database().unwrap_or_default())
    }
}

/// What [`KeyChanges::next`] reports.
///
/// Exhaustive on purpose: a cache must handle each case, and a new kind of notice would need
/// its attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    /// The key with this id was inserted, replaced or deleted: drop it from a cache.
    Changed(KeyId),
    /// Changes may have gone unannounced (the connection was lost and is back, or the table
    /// was truncated): drop everything from a cache.
    Resync,
}

/// Changes to keys as they are committed, from [`PostgresStore::changes`].
///
/// The listener holds one connection of its own and re-establishes it by itself after a loss,
/// reporting [`KeyChange::Resync`] once it listens again.
pub struct KeyChanges {
    target: Target,
    config: SqlConfig,
    listener: Option<PgListener>,
    /// The connection was lost since the last [`KeyChange::Resync`].
    lost: bool,
    backoff: Duration,
}

impl core::fmt::Debug for KeyChanges {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyChanges")
            .field("target", &self.target)
            .field("connected", &self.listener.is_some())
            .finish_non_exhaustive()
    }
}

/// A listener on [`CHANNEL`], over a pool of one connection of its own.
async fn listen(options: &PgConnectOptions, config: &SqlConfig) -> Result<PgListener, StoreError> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(config.acquire_timeout)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(options.clone());
    let mut listener = PgListener::connect_with(&pool).await.map_err(error)?;
    // A lost connection is ours to re-establish: `next` reports it.
    listener.eager_reconnect(false);
    listener.ignore_pool_close_event(true);
    listener.listen(CHANNEL).await.map_err(error)?;
    Ok(listener)
}

impl KeyChanges {
    /// Waits for the next change. Never fails: while the database is unreachable it keeps
    /// reconnecting (waiting longer between attempts, up to 10 s), then reports
    /// [`KeyChange::Resync`].
    ///
    /// Cancel-safe at the granularity that matters: dropping the future loses at most a
    /// notification being received, which a cache must then treat as a resync; a caller
    /// that selects over `next` and a shutdown signal should stop using the listener after
    /// cancelling.
    pub async fn next(&mut self) -> KeyChange {
        loop {
            let Some(listener) = self.listener.as_mut() else {
                if self.lost {
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
                if let Ok(listener) = timed(self.config.open_timeout, listen(&self.target.0, &self.config)).await {
                    self.listener = Some(listener);
                    self.lost = false;
                    return KeyChange::Resync;
                }
                continue;
            };
            match tokio::time::timeout(PING_AFTER, listener.try_recv()).await {
                Ok(Ok(Some(notification))) => {
                    self.backoff = BACKOFF_MIN;
                    return match KeyId::new(notification.payload()) {
                        Ok(id) => KeyChange::Changed(id),
                        Err(_) => KeyChange::Resync,
                    };
                }
                // The connection is gone (`None`) or broken: reconnect, then resync.
                Ok(Ok(None) | Err(_)) => self.lose(),
                Err(_silence) => {
                    let ping = tokio::time::timeout(self.config.timeout, listener.execute("SELECT 1")).await;
                    match ping {
                        Ok(Ok(_)) => self.backoff = BACKOFF_MIN,
                        _ => self.lose(),
                    }
                }
            }
        }
    }

    fn lose(&mut self) {
        self.listener = None;
        self.lost = true;
    }
}
