//! [`SqlStore`]: the one [`AsyncKeyStore`] over a SQL database, generic over its [`Engine`].
//!
//! The statements, the row form of a record, the compare-and-swap, the listing's snapshot, the
//! timeouts and the error mapping are written here once; an engine supplies only what differs
//! between the drivers (see [`Engine`]). Opening a store is the engine's own (`sqlite.rs`,
//! `postgres.rs` beside this file), as are its public constructors.

use alloc::borrow::Cow;
use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row as _, Transaction, Type};

use super::queries::{BATCH_ROWS, Queries, insert_rows};
use super::rows::{Row, signed};
use super::{SqlConfig, error, timed};
use crate::store::{AsyncKeyStore, BatchError, ListQuery, MAX_PAGE, Page, StoreError};
use crate::verify::Lookup;
use crate::{KeyId, KeyRecord};

/// What differs between the SQL engines under one [`SqlStore`]: the driver, the placeholder
/// style, how a read snapshot begins, and what `Debug` shows of the database's location.
///
/// Sealed: public only so that [`SqlStore`] can name it; nothing outside the crate can.
pub trait Engine: Send + Sync + 'static {
    /// The sqlx driver.
    type Db: Database;
    /// Where the database is, as the store's `Debug` shows it (never a password).
    type Target: fmt::Debug + Clone + Send + Sync;
    /// The store's name in `Debug`.
    const NAME: &'static str;
    /// The placeholder sigil: statements name their parameters `{SIGIL}1`, `{SIGIL}2`, ….
    const SIGIL: char;

    /// Begins a read transaction whose reads all see one snapshot.
    fn snapshot(
        pool: &Pool<Self::Db>,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Db>, sqlx::Error>> + Send;

    /// How many rows a statement changed.
    fn rows_affected(done: &<Self::Db as Database>::QueryResult) -> u64;
}

/// Key records in a SQL database: the one implementation behind `SqliteStore` and
/// `PostgresStore`, which are this type over each engine (the engines are the crate's own).
///
/// It holds a connection pool, the [`SqlConfig`] and the engine's statements; cloning it shares
/// the pool.
pub struct SqlStore<E: Engine> {
    pub(super) pool: Pool<E::Db>,
    pub(super) config: SqlConfig,
    pub(super) target: E::Target,
    queries: Arc<Queries>,
}

impl<E: Engine> Clone for SqlStore<E> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            config: self.config.clone(),
            target: self.target.clone(),
            queries: Arc::clone(&self.queries),
        }
    }
}

impl<E: Engine> fmt::Debug for SqlStore<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(E::NAME)
            .field("target", &self.target)
            .field("timeout", &self.config.timeout)
            .field("connections", &self.pool.size())
            .finish_non_exhaustive()
    }
}

impl<E: Engine> SqlStore<E> {
    /// A store over an open pool whose schema is up to date.
    pub(super) fn new(pool: Pool<E::Db>, config: SqlConfig, target: E::Target) -> Self {
        Self { pool, config, target, queries: Arc::new(Queries::new(E::SIGIL)) }
    }

    /// The connection pool, for queries of your own.
    #[must_use]
    pub fn pool(&self) -> &Pool<E::Db> {
        &self.pool
    }

    /// The configuration the store was opened with.
    #[must_use]
    pub fn config(&self) -> &SqlConfig {
        &self.config
    }

    /// Closes the pool's connections, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Stores the difference between `i64::MAX` and `usize` as no difference: an offset or limit
/// past `i64::MAX` selects nothing either way.
fn count_param(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A count read back from the database.
fn count_result(n: i64) -> Result<usize, StoreError> {
    usize::try_from(n).map_err(|_| StoreError::Corrupt)
}

impl<E: Engine> AsyncKeyStore for SqlStore<E>
where
    for<'c> &'c mut <E::Db as Database>::Connection: Executor<'c, Database = E::Db>,
    for<'q> <E::Db as Database>::Arguments<'q>: IntoArguments<'q, E::Db>,
    usize: ColumnIndex<<E::Db as Database>::Row>,
    for<'q> String: Encode<'q, E::Db> + Decode<'q, E::Db> + Type<E::Db>,
    for<'q> Vec<u8>: Encode<'q, E::Db> + Decode<'q, E::Db> + Type<E::Db>,
    for<'q> i64: Encode<'q, E::Db> + Decode<'q, E::Db> + Type<E::Db>,
    for<'q> bool: Encode<'q, E::Db> + Decode<'q, E::Db> + Type<E::Db>,
    for<'q> Option<String>: Encode<'q, E::Db>,
    for<'q> Option<i64>: Encode<'q, E::Db>,
{
    fn lookup(&self, lookup: &Lookup) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        // A SQL store holds no stand-ins: a kid is looked up as the id it is.
        let query = match lookup {
            Lookup::Kid(id) | Lookup::Id(id) => sqlx::query(&self.queries.by_id).bind(String::from(id.as_str())),
            Lookup::Digest(d) => sqlx::query(&self.queries.by_digest).bind(d.bytes.to_vec()),
        };
        timed(self.config.timeout, async move {
            let row = query.fetch_optional(&self.pool).await.map_err(error)?;
            row.map(|row| Row::read(&row)?.decode().map(Arc::new)).transpose()
        })
    }

    fn insert(&self, record: KeyRecord) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        timed(self.config.timeout, async move {
            let row = Row::encode(&record)?;
            row.bind(sqlx::query(&self.queries.insert)).execute(&self.pool).await.map_err(error)?;
            Ok(Arc::new(record))
        })
    }

    /// The batch in one transaction, up to 500 rows a statement; rolled back if any row
    /// was left out for a taken id or digest.
    fn insert_batch(
        &self,
        records: Vec<KeyRecord>,
    ) -> impl Future<Output = Result<Vec<Arc<KeyRecord>>, BatchError>> + Send {
        let sigil = E::SIGIL;
        async move {
            let rows = records.iter().map(Row::encode).collect::<Result<Vec<_>, StoreError>>()?;
            let ids = records.iter().map(|r| String::from(r.id.as_str())).collect::<Vec<_>>();
            let written = timed(self.config.timeout, async {
                let mut tx = self.pool.begin().await.map_err(error)?;
                let mut written = BTreeSet::new();
                let mut rows = rows.into_iter();
                loop {
                    let chunk: Vec<Row> = rows.by_ref().take(BATCH_ROWS).collect();
                    if chunk.is_empty() {
                        break;
                    }
                    let text = if chunk.len() == BATCH_ROWS {
                        Cow::Borrowed(self.queries.insert_batch.as_str())
                    } else {
                        Cow::Owned(insert_rows(sigil, chunk.len()))
                    };
                    let query = chunk.into_iter().fold(sqlx::query(&text), |q, row| row.bind(q));
                    for row in query.fetch_all(&mut *tx).await.map_err(error)? {
                        written.insert(row.try_get::<String, _>(0).map_err(error)?);
                    }
                }
                if written.len() == ids.len() {
                    tx.commit().await.map_err(error)?;
                }
                Ok(written)
            })
            .await?;
            // A row left out conflicted with a stored key or an earlier row of the batch; the
            // transaction was dropped, so nothing of the batch is stored.
            let mut kept = BTreeSet::new();
            let conflicts: Vec<usize> = ids
                .iter()
                .enumerate()
                .filter(|(_, id)| !(written.contains(*id) && kept.insert(*id)))
                .map(|(i, _)| i)
                .collect();
            if conflicts.is_empty() {
                Ok(records.into_iter().map(Arc::new).collect())
            } else {
                Err(BatchError::Conflicts(conflicts))
            }
        }
    }

    fn replace(
        &self,
        expected_revision: u64,
        mut record: KeyRecord,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        timed(self.config.timeout, async move {
            // No revision follows `u64::MAX`: that compare-and-swap fails as one that lost.
            if let Some(next) = expected_revision.checked_add(1) {
                record.revision = next;
                let done = Row::encode(&record)?
                    .bind(sqlx::query(&self.queries.replace))
                    .bind(signed(expected_revision))
                    .execute(&self.pool)
                    .await
                    .map_err(error)?;
                if E::rows_affected(&done) == 1 {
                    return Ok(Arc::new(record));
                }
            }
            // Nothing was updated: no such key, or its revision moved on.
            let found = sqlx::query(&self.queries.exists)
                .bind(String::from(record.id.as_str()))
                .fetch_optional(&self.pool)
                .await
                .map_err(error)?;
            Err(if found.is_some() { StoreError::Conflict } else { StoreError::NotFound })
        })
    }

    fn delete(&self, id: &KeyId) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        let query = sqlx::query(&self.queries.delete).bind(String::from(id.as_str()));
        timed(self.config.timeout, async move {
            // In a transaction: a row that does not decode stays where it is (nothing changes
            // when the call fails).
            let mut tx = self.pool.begin().await.map_err(error)?;
            let row = query.fetch_optional(&mut *tx).await.map_err(error)?.ok_or(StoreError::NotFound)?;
            let record = Row::read(&row)?.decode()?;
            tx.commit().await.map_err(error)?;
            Ok(Arc::new(record))
        })
    }

    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<Page, StoreError>> + Send {
        let q = &self.queries;
        let limit = count_param(query.limit.clamp(1, MAX_PAGE));
        let offset = count_param(query.offset);
        let (count, page) = match &query.team_id {
            None => (sqlx::query(&q.count_all), sqlx::query(&q.page_all).bind(limit).bind(offset)),
            Some(team) => (
                sqlx::query(&q.count_team).bind(team.clone()),
                sqlx::query(&q.page_team).bind(limit).bind(offset).bind(team.clone()),
            ),
        };
        timed(self.config.timeout, async move {
            // One snapshot for the page and the total.
            let mut tx = E::snapshot(&self.pool).await.map_err(error)?;
            let total: i64 = count.fetch_one(&mut *tx).await.map_err(error)?.try_get(0).map_err(error)?;
            let rows = page.fetch_all(&mut *tx).await.map_err(error)?;
            tx.commit().await.map_err(error)?;
            let records =
                rows.iter().map(|row| Row::read(row)?.decode().map(Arc::new)).collect::<Result<_, StoreError>>()?;
            Ok(Page { records, total: count_result(total)? })
        })
    }
}

/// The kid set of a [`CachedStore`](crate::CachedStore) in front of a SQL store is read with one
/// `SELECT id`, within [`SqlConfig::open_timeout`] (a large table takes a while).
#[cfg(feature = "cache")]
impl<E: Engine> crate::store::KeyIds for SqlStore<E>
where
    for<'c> &'c mut <E::Db as Database>::Connection: Executor<'c, Database = E::Db>,
    for<'q> <E::Db as Database>::Arguments<'q>: IntoArguments<'q, E::Db>,
    usize: ColumnIndex<<E::Db as Database>::Row>,
    for<'q> String: Decode<'q, E::Db> + Type<E::Db>,
{
    fn key_ids(&self) -> impl Future<Output = Result<Vec<KeyId>, StoreError>> + Send {
        timed(self.config.open_timeout, async move {
            let rows = sqlx::query("SELECT id FROM keygate_keys").fetch_all(&self.pool).await.map_err(error)?;
            rows.iter()
                .map(|row| {
                    let id: String = row.try_get(0).map_err(error)?;
                    KeyId::new(&id).map_err(|_| StoreError::Corrupt)
                })
                .collect()
        })
    }
}
