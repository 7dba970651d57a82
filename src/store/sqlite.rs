//! [`SqliteStore`]: keys in an embedded SQLite database (feature `sqlite`).
//!
//! The gateway's persistent default: one file, no server. The database runs in WAL mode, so
//! readers never wait for the writer and several processes can open the same file; a writer
//! waits for another's lock up to the busy timeout ([`SqlConfig::timeout`](sql::SqlConfig)).
//! The schema, the compare-and-swap and the error mapping are the design notes of `sql.rs`
//! beside this file; on open the embedded migrations run inside `BEGIN IMMEDIATE`, so two
//! processes opening a new file at once create the schema once.

#![cfg(feature = "sqlite")]

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use core::future::Future;
use core::str::FromStr;
use std::path::PathBuf;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Connection, Row as _};

use super::sql::{self, COLUMNS, MigrationSql, Row, count_param, count_result, error, signed, timed};
use super::{AsyncKeyStore, ListQuery, MAX_PAGE, Page, StoreError};
use crate::{KeyId, KeyRecord, Lookup};

/// The schema, version by version (`migrations/sqlite/`).
const MIGRATIONS: &[MigrationSql] =
    &[(700_000_001, "keygate keys", include_str!("../../migrations/sqlite/700000001_keygate_keys.sql"))];

/// Key records in a SQLite database file, created (with its schema) if missing.
///
/// One row per key in the table `keygate_keys`; [`replace`](AsyncKeyStore::replace) is one
/// `UPDATE … WHERE id = ? AND revision = ?`. The database runs in WAL mode: readers never wait,
/// and other processes may open the same file (a writer waits for another's lock up to
/// [`SqlConfig::timeout`](sql::SqlConfig::timeout)). Every call fails with
/// [`StoreError::Timeout`] past that timeout; a unique id or opaque digest taken is
/// [`StoreError::Conflict`], a row that is not a valid record [`StoreError::Corrupt`], any
/// other failure [`StoreError::Unavailable`].
///
/// ```no_run
/// use keygate::{AsyncKeyStore, SqlConfig, SqliteStore};
/// # async fn run() -> Result<(), keygate::StoreError> {
/// let store = SqliteStore::open("keys.db", SqlConfig::default()).await?;
/// let id = "4f9TqWm2Lx8RbC1d".parse().expect("a valid id");
/// assert!(store.get(&id).await?.is_none());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    config: sql::SqlConfig,
    filename: PathBuf,
    queries: Arc<Queries>,
}

/// The statements, built once.
struct Queries {
    by_id: String,
    by_digest: String,
    insert: String,
    replace: String,
    delete: String,
    page_all: String,
    page_team: String,
}

impl Queries {
    fn new() -> Self {
        Self {
            by_id: format!("SELECT {COLUMNS} FROM keygate_keys WHERE id = ?1"),
            by_digest: format!("SELECT {COLUMNS} FROM keygate_keys WHERE shape = 'opaque' AND digest = ?1"),
            insert: format!("INSERT INTO keygate_keys ({COLUMNS}) VALUES ({})", sql::values_clause('?')),
            replace: format!(
                "UPDATE keygate_keys SET {} WHERE id = ?1 AND revision = ?{}",
                sql::set_clause('?'),
                sql::COLUMN_COUNT + 1
            ),
            delete: format!("DELETE FROM keygate_keys WHERE id = ?1 RETURNING {COLUMNS}"),
            page_all: format!(
                "SELECT {COLUMNS} FROM keygate_keys ORDER BY created_at, length(id), id LIMIT ?1 OFFSET ?2"
            ),
            page_team: format!(
                "SELECT {COLUMNS} FROM keygate_keys WHERE team_id = ?3 \
                 ORDER BY created_at, length(id), id LIMIT ?1 OFFSET ?2"
            ),
        }
    }
}

impl SqliteStore {
    /// Opens the database at `location` (a file path, or a `sqlite:` URL such as
    /// `sqlite://keys.db?mode=rwc`), creating the file if it is missing and bringing its schema
    /// up to date. WAL mode; the busy timeout is [`SqlConfig::timeout`](sql::SqlConfig::timeout).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the URL is invalid or the file cannot be opened, created
    /// or migrated; [`StoreError::Timeout`] past
    /// [`SqlConfig::open_timeout`](sql::SqlConfig::open_timeout).
    pub async fn open(location: &str, config: sql::SqlConfig) -> Result<Self, StoreError> {
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
        config: sql::SqlConfig,
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
            let pool = pool.connect_with(options).await.map_err(error)?;
            let mut conn = pool.acquire().await.map_err(error)?;
            // One writer at a time from here to the commit: a second process opening the file
            // waits (busy timeout) and then finds the migrations applied.
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(error)?;
            sql::migrator(MIGRATIONS).run(&mut tx).await.map_err(sql::migrate_error)?;
            tx.commit().await.map_err(error)?;
            drop(conn);
            Ok(pool)
        };
        let pool = timed(config.open_timeout, open).await?;
        Ok(Self { pool, config, filename, queries: Arc::new(Queries::new()) })
    }

    /// The connection pool, for queries of your own.
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The configuration the store was opened with.
    #[must_use]
    pub fn config(&self) -> &sql::SqlConfig {
        &self.config
    }

    /// Closes the pool's connections, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn fetch_one_record(&self, statement: &str, param: BindOne) -> Result<Option<KeyRecord>, StoreError> {
        let q = sqlx::query(statement);
        let q = match param {
            BindOne::Text(s) => q.bind(s),
            BindOne::Bytes(b) => q.bind(b),
        };
        let row = q.fetch_optional(&self.pool).await.map_err(error)?;
        row.map(|row| Row::read(&row)?.decode()).transpose()
    }
}

enum BindOne {
    Text(String),
    Bytes(alloc::vec::Vec<u8>),
}

impl core::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("filename", &self.filename)
            .field("timeout", &self.config.timeout)
            .field("connections", &self.pool.size())
            .finish_non_exhaustive()
    }
}

impl AsyncKeyStore for SqliteStore {
    fn lookup(&self, lookup: &Lookup) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        let (statement, param) = match lookup {
            Lookup::Id(id) => (&self.queries.by_id, BindOne::Text(id.as_str().into())),
            Lookup::Digest(d) => (&self.queries.by_digest, BindOne::Bytes(d.bytes.to_vec())),
        };
        timed(self.config.timeout, async move { Ok(self.fetch_one_record(statement, param).await?.map(Arc::new)) })
    }

    fn insert(&self, record: KeyRecord) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        timed(self.config.timeout, async move {
            let row = Row::encode(&record)?;
            row.bind(sqlx::query(&self.queries.insert)).execute(&self.pool).await.map_err(error)?;
            Ok(Arc::new(record))
        })
    }

    fn replace(
        &self,
        expected_revision: u64,
        mut record: KeyRecord,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        timed(self.config.timeout, async move {
            let Some(next) = expected_revision.checked_add(1) else {
                return Err(self.missing_or_conflict(&record.id).await);
            };
            record.revision = next;
            let row = Row::encode(&record)?;
            let done = row
                .bind(sqlx::query(&self.queries.replace))
                .bind(signed(expected_revision))
                .execute(&self.pool)
                .await
                .map_err(error)?;
            if done.rows_affected() == 1 {
                Ok(Arc::new(record))
            } else {
                Err(self.missing_or_conflict(&record.id).await)
            }
        })
    }

    fn delete(&self, id: &KeyId) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        let id = *id;
        timed(self.config.timeout, async move {
            // In a transaction: a row that does not decode stays where it is (nothing changes
            // when the call fails).
            let mut tx = self.pool.begin().await.map_err(error)?;
            let row = sqlx::query(&self.queries.delete)
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(error)?
                .ok_or(StoreError::NotFound)?;
            let record = Row::read(&row)?.decode()?;
            tx.commit().await.map_err(error)?;
            Ok(Arc::new(record))
        })
    }

    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<Page, StoreError>> + Send {
        let team = query.team_id.clone();
        let limit = count_param(query.limit.clamp(1, MAX_PAGE));
        let offset = count_param(query.offset);
        timed(self.config.timeout, async move {
            // One read transaction: the page and the total come from one snapshot.
            let mut tx = self.pool.begin().await.map_err(error)?;
            let total: i64 = match &team {
                None => sqlx::query("SELECT COUNT(*) FROM keygate_keys").fetch_one(&mut *tx).await,
                Some(team) => {
                    sqlx::query("SELECT COUNT(*) FROM keygate_keys WHERE team_id = ?1")
                        .bind(team)
                        .fetch_one(&mut *tx)
                        .await
                }
            }
            .map_err(error)?
            .try_get(0)
            .map_err(error)?;
            let rows = match &team {
                None => sqlx::query(&self.queries.page_all).bind(limit).bind(offset).fetch_all(&mut *tx).await,
                Some(team) => {
                    sqlx::query(&self.queries.page_team).bind(limit).bind(offset).bind(team).fetch_all(&mut *tx).await
                }
            }
            .map_err(error)?;
            tx.commit().await.map_err(error)?;
            let records =
                rows.iter().map(|row| Row::read(row)?.decode().map(Arc::new)).collect::<Result<_, StoreError>>()?;
            Ok(Page { records, total: count_result(total)? })
        })
    }
}

impl SqliteStore {
    /// Why a compare-and-swap updated nothing: no such key, or its revision moved on.
    async fn missing_or_conflict(&self, id: &KeyId) -> StoreError {
        let found =
            sqlx::query("SELECT 1 FROM keygate_keys WHERE id = ?1").bind(id.as_str()).fetch_optional(&self.pool).await;
        match found {
            Ok(None) => StoreError::NotFound,
            Ok(Some(_)) => StoreError::Conflict,
            Err(e) => error(e),
        }
    }
}
