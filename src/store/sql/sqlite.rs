//! [`SqliteStore`]: keys in an embedded SQLite database (feature `sqlite`).
//!
//! The gateway's persistent default: one file, no server. The database runs in WAL mode, so
//! readers never wait for the writer and several processes can open the same file; a writer
//! waits for another's lock up to the busy timeout ([`SqlConfig::timeout`]). The key store
//! operations are the generic store's; this engine opens the database, and runs the embedded
//! migrations inside `BEGIN IMMEDIATE`, so two processes opening a new file at once create the
//! schema once.

#![cfg(feature = "sqlite")]

use core::future::Future;
use core::str::FromStr;
use core::time::Duration;
use std::path::PathBuf;

use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteQueryResult};

use super::store::{Engine, SqlStore};
use super::{MigrationSql, SqlConfig, error, migrate_error, migrator, timed};
use crate::store::StoreError;

/// The schema, version by version (`migrations/sqlite/`).
const MIGRATIONS: &[MigrationSql] = &[
    (700_000_001, "keygate keys", include_str!("../../../migrations/sqlite/700000001_keygate_keys.sql")),
    (
        700_000_002,
        "keygate keys inherits budget",
        include_str!("../../../migrations/sqlite/700000002_keygate_keys_inherits_budget.sql"),
    ),
    (700_000_030, "keygate usage log", include_str!("../../../migrations/sqlite/700000030_keygate_usage_log.sql")),
];

/// The SQLite engine of [`SqliteStore`].
#[derive(Debug, Clone, Copy)]
pub struct Sqlite;

impl Engine for Sqlite {
    type Db = sqlx::Sqlite;
    /// The database file.
    type Target = PathBuf;
    const NAME: &'static str = "SqliteStore";
    const SIGIL: char = '?';

    /// A read transaction: SQLite's reads in one transaction see one snapshot.
    fn snapshot(
        pool: &SqlitePool,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error>> + Send {
        pool.begin()
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}

/// Key records in a SQLite database file, created (with its schema) if missing.
///
/// One row per key in the table `keygate_keys`; [`replace`](crate::AsyncKeyStore::replace) is one
/// `UPDATE … WHERE id = ? AND revision = ?`. The database runs in WAL mode: readers never wait,
/// and other processes may open the same file (a writer waits for another's lock up to
/// [`SqlConfig::timeout`]). Every call fails with
/// [`StoreError::Timeout`] past that timeout; a unique id or opaque digest taken is
/// [`StoreError::Conflict`], a row that is not a valid record [`StoreError::Corrupt`], any
/// other failure [`StoreError::Unavailable`].
///
/// ```no_run
/// use keygate::{AsyncKeyStore, SqliteStore};
/// use keygate::store::SqlConfig;
/// # async fn run() -> Result<(), keygate::StoreError> {
/// let store = SqliteStore::open("keys.db", SqlConfig::default()).await?;
/// let id = "4f9TqWm2Lx8RbC1d".parse().expect("a valid id");
/// assert!(store.get(&id).await?.is_none());
/// # Ok(()) }
/// ```
pub type SqliteStore = SqlStore<Sqlite>;

impl SqlStore<Sqlite> {
    /// Opens the database at `location` (a file path, or a `sqlite:` URL such as
    /// `sqlite://keys.db?mode=rwc`), creating the file if it is missing and bringing its schema
    /// up to date. WAL mode; the busy timeout is [`SqlConfig::timeout`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the URL is invalid or the file cannot be opened, created
    /// or migrated; [`StoreError::Timeout`] past
    /// [`SqlConfig::open_timeout`].
    pub async fn open(location: &str, config: SqlConfig) -> Result<Self, StoreError> {
        let options = if location.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(location).map_err(error)?
        } else {
            SqliteConnectOptions::new().filename(location)
        };
        let in_memory = location.contains(":memory:") || location.contains("mode=memory");
        Self::open_with(options.create_if_missing(true), in_memory, config).await
    }

    /// Opens a database with options of your own (WAL mode and the busy timeout are set on
    /// top of them). `in_memory` keeps one connection open for the pool's lifetime, as an
    /// in-memory database lives only as long as a connection does.
    ///
    /// # Errors
    ///
    /// As [`SqliteStore::open`].
    pub async fn open_with(
        options: SqliteConnectOptions,
        in_memory: bool,
        config: SqlConfig,
    ) -> Result<Self, StoreError> {
        let options = options.journal_mode(SqliteJournalMode::Wal).busy_timeout(config.timeout);
        let filename = options.get_filename().to_path_buf();
        let mut pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.acquire_timeout);
        if in_memory {
            pool = pool.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
        }
        let open = async {
            // Switching a new file to WAL needs the exclusive lock; when two processes open the
            // same new file at once, SQLite answers one of them "busy" at once (it does not wait:
            // waiting could deadlock), so the open tries again until `open_timeout`.
            let pool = loop {
                match pool.clone().connect_with(options.clone()).await {
                    Ok(pool) => break pool,
                    Err(e) if is_busy(&e) => tokio::time::sleep(BUSY_RETRY).await,
                    Err(e) => return Err(error(e)),
                }
            };
            let mut conn = pool.acquire().await.map_err(error)?;
            // One writer at a time from here to the commit: a second process opening the file
            // waits (busy timeout) and then finds the migrations applied.
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(error)?;
            migrator(MIGRATIONS).run(&mut tx).await.map_err(migrate_error)?;
            tx.commit().await.map_err(error)?;
            drop(conn);
            Ok(pool)
        };
        let pool = timed(config.open_timeout, open).await?;
        Ok(Self::new(pool, config, filename))
    }
}

/// How long an open waits before trying again when SQLite says the file is busy.
const BUSY_RETRY: Duration = Duration::from_millis(10);

/// Whether SQLite refused because another connection held a lock (`SQLITE_BUSY`, with any of
/// its extended codes).
fn is_busy(e: &sqlx::Error) -> bool {
    const SQLITE_BUSY: i32 = 5;
    matches!(e, sqlx::Error::Database(db)
        if db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| c & 0xff == SQLITE_BUSY))
}
