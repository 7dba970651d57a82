//! What the SQL stores share: their configuration, the row form of a record, migrations, and
//! the mapping of driver errors onto [`StoreError`] (features `sqlite` or `postgres`).
//!
//! # Design
//!
//! **Schema.** One table, `keygate_keys`, one row per key. What a query selects, filters or
//! orders on is a real column: `id` (primary key), `shape`, `kind`, the `digest` bytes with
//! `digest_scheme` (`hmac_sha256` or `sha256`) and `pepper_id`, `revision`, `name`, `prefix`,
//! `status`, `soft_blocked`, `team_id`, and the timestamps `created_at`, `updated_at`,
//! `expires_at` and `last_used_at` as nanoseconds since the Unix epoch in a `BIGINT`. The policy
//! and limits (scopes, model and provider allowlists, IP networks, rate limits, spend cap,
//! credits, metadata) are one JSON text column, `attributes`, written with the types' own
//! `serde` forms and read back through their validating parsers. Indexes:
//!
//! * a unique index on `digest` over the rows whose `shape` is `opaque`, which serves
//!   [`Lookup::Digest`](crate::Lookup) and makes a second opaque key with the same digest a
//!   conflict (the digest bytes alone, as in [`MemoryStore`](crate::MemoryStore): 32 bytes of
//!   HMAC or SHA-256 do not collide across schemes);
//! * `(created_at, length(id), id)` and `(team_id, created_at, length(id), id)` for listing in
//!   the stable order, which is [`KeyId`](crate::KeyId)'s own order: shorter ids first, then
//!   byte order (PostgreSQL compares `id` with `COLLATE "C"`, SQLite with its default `BINARY`).
//!
//! A revision is a `u64` kept bit for bit in a signed `BIGINT` (it is only ever compared for
//! equality). A timestamp after the year 2262 does not fit a `BIGINT` of nanoseconds: its column
//! holds `i64::MAX` and the exact value travels in `attributes`, so every record round-trips.
//! A row that does not decode into a valid record is [`StoreError::Corrupt`], never a panic.
//!
//! **Compare-and-swap.** `replace(expected, record)` is one statement,
//! `UPDATE keygate_keys SET …, revision = expected + 1 WHERE id = $1 AND revision = $expected`.
//! One row updated is success. None updated is [`StoreError::NotFound`] when a follow-up
//! `SELECT` finds no row with the id, and [`StoreError::Conflict`] when it does (the revision
//! moved on). A new opaque digest that belongs to another key violates the unique index:
//! [`StoreError::Conflict`], as does an insert whose id or opaque digest exists.
//!
//! **Timeouts and errors.** Every call runs inside `tokio::time::timeout(config.timeout, …)`,
//! so the caller's deadline holds even when the pool waits for a connection or the database for
//! a lock: [`StoreError::Timeout`]. The driver's errors stay opaque: a unique violation is
//! [`StoreError::Conflict`]; a column that does not decode is [`StoreError::Corrupt`]; anything
//! else (connection refused or lost, no connection free within `acquire_timeout`, a database
//! error) is [`StoreError::Unavailable`]. A write that timed out has an unknown outcome, as with
//! any database client: the statement may still commit after the caller stopped waiting (read
//! the record again before retrying). The stores need a Tokio runtime with its time driver
//! (`#[tokio::main]` has one).
//!
//! **Migrations.** The SQL under `migrations/sqlite/` and `migrations/postgres/` is compiled
//! into the crate and applied by [`sqlx::migrate::Migrator`] when a store opens, recorded in
//! sqlx's `_sqlx_migrations` table under versions from 700 000 001 up, far from the small
//! sequential numbers and 14-digit timestamps applications use. An application that runs its
//! own sqlx migrations against the same schema must set `ignore_missing` on its migrator (or
//! keep the keys in their own SQLite file or PostgreSQL schema). On PostgreSQL, sqlx holds an
//! advisory lock while migrating; on SQLite, keygate runs the migrator inside
//! `BEGIN IMMEDIATE`. Either way, two processes starting at once apply each migration once.
//!
//! **Notifications (PostgreSQL).** A trigger on `keygate_keys` runs
//! `pg_notify('keygate_keys', id)` for every inserted, updated or deleted row (both ids if an
//! update changes the id), and `pg_notify('keygate_keys', '')` on `TRUNCATE`. PostgreSQL
//! delivers notifications when the transaction commits, and the trigger also sees changes made
//! outside keygate. [`PostgresStore::changes`](crate::PostgresStore::changes) listens on the
//! channel; see [`KeyChanges`](crate::KeyChanges).

#![cfg(any(feature = "sqlite", feature = "postgres"))]

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::future::Future;
use core::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::StoreError;
use crate::record::{KeyShape, KeyStatus, RateLimits, SpendCap, SpendPeriod};
use crate::secret::{DIGEST_LEN, DigestScheme, PepperId, StoredDigest};
use crate::{Credits, IpCidr, KeyId, KeyKind, KeyRecord, ModelAllowlist, Scopes, Timestamp};

/// How a SQL store talks to its database.
///
/// The stores bring their schema up to date when they open, with migrations compiled into the
/// crate and recorded in sqlx's `_sqlx_migrations` table under versions from 700 000 001 up.
/// An application that runs its own sqlx migrations against the same SQLite file or PostgreSQL
/// schema must let its migrator ignore versions it does not know (`set_ignore_missing(true)`),
/// or keep the keys apart (their own file, or a schema of their own through `search_path`).
///
/// ```
/// use core::time::Duration;
/// let mut config = keygate::SqlConfig::default();
/// config.timeout = Duration::from_millis(500);
/// assert_eq!(config.max_connections, 10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqlConfig {
    /// The longest one store call may take, waiting for a connection included; past it the
    /// call fails with [`StoreError::Timeout`]. Default 2 s. On SQLite it is also the busy
    /// timeout: how long a writer waits for another one's lock.
    pub timeout: Duration,
    /// The most connections the pool opens. Default 10.
    pub max_connections: u32,
    /// How long to wait for a pooled connection (or to open one) before giving up with
    /// [`StoreError::Unavailable`]. Default 2 s.
    pub acquire_timeout: Duration,
    /// The longest opening may take: connecting and bringing the schema up to date (which may
    /// wait for another process's migration). Default 30 s.
    pub open_timeout: Duration,
}

impl Default for SqlConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(2),
            open_timeout: Duration::from_secs(30),
        }
    }
}

/// The columns of `keygate_keys`, in the order [`Row`] binds and reads them.
pub(super) const COLUMNS: &str = "id, shape, kind, digest, digest_scheme, pepper_id, revision, name, prefix, status, \
     soft_blocked, team_id, created_at, updated_at, expires_at, last_used_at, attributes";

/// How many columns [`COLUMNS`] names.
pub(super) const COLUMN_COUNT: usize = 17;

/// One migration: its version, its description and its SQL.
pub(super) type MigrationSql = (i64, &'static str, &'static str);

/// A migrator over migrations compiled into the crate.
pub(super) fn migrator(migrations: &[MigrationSql]) -> Migrator {
    let migrations = migrations
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(version, Cow::Borrowed(description), MigrationType::Simple, Cow::Borrowed(sql), false)
        })
        .collect::<Vec<_>>();
    Migrator { migrations: Cow::Owned(migrations), ..Migrator::DEFAULT }
}

/// Runs `call` within `timeout`: [`StoreError::Timeout`] past it.
pub(super) async fn timed<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(timeout, call).await.unwrap_or(Err(StoreError::Timeout))
}

/// The [`StoreError`] for a driver error.
pub(super) fn error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt,
        _ => StoreError::Unavailable,
    }
}

/// The [`StoreError`] for a failed migration: the database could not be brought up to date.
pub(super) fn migrate_error(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::Execute(e) => error(e),
        _ => StoreError::Unavailable,
    }
}

/// A `u64` kept bit for bit in a signed column.
pub(super) fn signed(v: u64) -> i64 {
    v.cast_signed()
}

/// Stores the difference between `i64::MAX` and `usize` as no difference: an offset or limit
/// past `i64::MAX` selects nothing either way.
pub(super) fn count_param(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A count read back from the database.
pub(super) fn count_result(n: i64) -> Result<usize, StoreError> {
    usize::try_from(n).map_err(|_| StoreError::Corrupt)
}

/// Any decoding failure: [`StoreError::Corrupt`].
fn corrupt<E>(_: E) -> StoreError {
    StoreError::Corrupt
}

/// A record as one database row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Row {
    pub(super) id: String,
    pub(super) shape: String,
    pub(super) kind: String,
    pub(super) digest: Vec<u8>,
    pub(super) digest_scheme: String,
    pub(super) pepper_id: Option<i64>,
    pub(super) revision: i64,
    pub(super) name: String,
    pub(super) prefix: String,
    pub(super) status: String,
    pub(super) soft_blocked: bool,
    pub(super) team_id: Option<String>,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) expires_at: Option<i64>,
    pub(super) last_used_at: Option<i64>,
    pub(super) attributes: String,
}

/// The policy and limits of a record: the `attributes` JSON column.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Attributes {
    #[serde(skip_serializing_if = "Scopes::is_empty")]
    scopes: Scopes,
    #[serde(skip_serializing_if = "ModelAllowlist::is_empty")]
    allowed_models: ModelAllowlist,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_providers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_ips: Vec<IpCidr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requests_per_minute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens_per_minute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spend_cap: Option<SpendCapJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credits: Option<CreditsJson>,
    /// The text of a JSON object, kept as text so that it comes back byte for byte.
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<String>,
    /// Exact nanoseconds of the timestamps past `i64::MAX` (their columns hold `i64::MAX`).
    #[serde(skip_serializing_if = "WideTimes::is_empty")]
    wide_timestamps: WideTimes,
}

#[derive(Debug, Serialize, Deserialize)]
struct SpendCapJson {
    amount_micros: u64,
    period: SpendPeriod,
}

#[derive(Debug, Serialize, Deserialize)]
struct CreditsJson {
    amount: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refill: Option<SpendPeriod>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct WideTimes {
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used_at: Option<u64>,
}

impl WideTimes {
    fn is_empty(&self) -> bool {
        self.created_at.is_none()
            && self.updated_at.is_none()
            && self.expires_at.is_none()
            && self.last_used_at.is_none()
    }
}

/// A timestamp's column value, and its exact value when the column cannot hold it.
fn time_column(t: Timestamp) -> (i64, Option<u64>) {
    let nanos = t.unix_nanos();
    match i64::try_from(nanos) {
        Ok(v) => (v, None),
        Err(_) => (i64::MAX, Some(nanos)),
    }
}

/// A timestamp from its column and, for a column at `i64::MAX`, its exact value.
fn time_value(column: i64, wide: Option<u64>) -> Result<Timestamp, StoreError> {
    match wide {
        Some(nanos) if column == i64::MAX && nanos > column.unsigned_abs() => Ok(Timestamp::from_unix_nanos(nanos)),
        Some(_) => Err(StoreError::Corrupt),
        None => u64::try_from(column).map(Timestamp::from_unix_nanos).map_err(|_| StoreError::Corrupt),
    }
}

fn shape_str(shape: KeyShape) -> &'static str {
    match shape {
        KeyShape::Selector => "selector",
        KeyShape::Opaque => "opaque",
    }
}

impl Row {
    /// The row that stores `r`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] if the attributes do not serialize (they always do).
    pub(super) fn encode(r: &KeyRecord) -> Result<Self, StoreError> {
        let (digest_scheme, pepper_id) = match r.digest.scheme {
            DigestScheme::HmacSha256(PepperId(id)) => ("hmac_sha256", Some(i64::from(id))),
            DigestScheme::Sha256 => ("sha256", None),
        };
        let (created_at, wide_created) = time_column(r.created_at);
        let (updated_at, wide_updated) = time_column(r.updated_at);
        let expires = r.expires_at.map(time_column);
        let last_used = r.last_used_at.map(time_column);
        let attributes = Attributes {
            scopes: r.scopes.clone(),
            allowed_models: r.allowed_models.clone(),
            allowed_providers: r.allowed_providers.clone(),
            allowed_ips: r.allowed_ips.clone(),
            requests_per_minute: r.rate_limit.requests_per_minute,
            tokens_per_minute: r.rate_limit.tokens_per_minute,
            concurrency: r.rate_limit.concurrency,
            spend_cap: r.spend_cap.map(|c| SpendCapJson { amount_micros: c.amount_micros, period: c.period }),
            credits: r.credits.map(|c| CreditsJson { amount: c.amount, refill: c.refill }),
            metadata: r.metadata.clone(),
            wide_timestamps: WideTimes {
                created_at: wide_created,
                updated_at: wide_updated,
                expires_at: expires.and_then(|(_, w)| w),
                last_used_at: last_used.and_then(|(_, w)| w),
            },
        };
        Ok(Self {
            id: r.id.as_str().to_string(),
            shape: shape_str(r.shape).to_string(),
            kind: r.kind.as_str().to_string(),
            digest: r.digest.bytes.to_vec(),
            digest_scheme: digest_scheme.to_string(),
            pepper_id,
            revision: signed(r.revision),
            name: r.name.clone(),
            prefix: r.prefix.clone(),
            status: r.status.as_str().to_string(),
            soft_blocked: r.soft_blocked,
            team_id: r.team_id.clone(),
            created_at,
            updated_at,
            expires_at: expires.map(|(c, _)| c),
            last_used_at: last_used.map(|(c, _)| c),
            attributes: serde_json::to_string(&attributes).map_err(|_| StoreError::Corrupt)?,
        })
    }

    /// The record this row stores.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] if any column is not a valid part of a record.
    pub(super) fn decode(self) -> Result<KeyRecord, StoreError> {
        let shape = match self.shape.as_str() {
            "selector" => KeyShape::Selector,
            "opaque" => KeyShape::Opaque,
            _ => return Err(StoreError::Corrupt),
        };
        let scheme = match (self.digest_scheme.as_str(), self.pepper_id) {
            ("hmac_sha256", Some(id)) => DigestScheme::HmacSha256(PepperId(u32::try_from(id).map_err(corrupt)?)),
            ("sha256", None) => DigestScheme::Sha256,
            _ => return Err(StoreError::Corrupt),
        };
        let bytes: [u8; DIGEST_LEN] = self.digest.as_slice().try_into().map_err(corrupt)?;
        let a: Attributes = serde_json::from_str(&self.attributes).map_err(corrupt)?;
        let wide = a.wide_timestamps;
        Ok(KeyRecord {
            id: KeyId::new(&self.id).map_err(corrupt)?,
            shape,
            kind: KeyKind::new(&self.kind).map_err(corrupt)?,
            digest: StoredDigest { scheme, bytes },
            revision: self.revision.cast_unsigned(),
            name: self.name,
            prefix: self.prefix,
            status: self.status.parse::<KeyStatus>().map_err(corrupt)?,
            soft_blocked: self.soft_blocked,
            team_id: self.team_id,
            scopes: a.scopes,
            allowed_models: a.allowed_models,
            allowed_providers: a.allowed_providers,
            allowed_ips: a.allowed_ips,
            rate_limit: RateLimits {
                requests_per_minute: a.requests_per_minute,
                tokens_per_minute: a.tokens_per_minute,
                concurrency: a.concurrency,
            },
            spend_cap: a.spend_cap.map(|c| SpendCap { amount_micros: c.amount_micros, period: c.period }),
            credits: a.credits.map(|c| Credits { amount: c.amount, refill: c.refill }),
            metadata: a.metadata,
            created_at: time_value(self.created_at, wide.created_at)?,
            updated_at: time_value(self.updated_at, wide.updated_at)?,
            expires_at: self.expires_at.map(|c| time_value(c, wide.expires_at)).transpose()?,
            last_used_at: self.last_used_at.map(|c| time_value(c, wide.last_used_at)).transpose()?,
        })
    }

    /// Reads a row selected with [`COLUMNS`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] if a column is missing or of another type.
    pub(super) fn read<'r, R>(row: &'r R) -> Result<Self, StoreError>
    where
        R: sqlx::Row,
        usize: sqlx::ColumnIndex<R>,
        String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        let c = corrupt::<sqlx::Error>;
        Ok(Self {
            id: row.try_get(0).map_err(c)?,
            shape: row.try_get(1).map_err(c)?,
            kind: row.try_get(2).map_err(c)?,
            digest: row.try_get(3).map_err(c)?,
            digest_scheme: row.try_get(4).map_err(c)?,
            pepper_id: row.try_get(5).map_err(c)?,
            revision: row.try_get(6).map_err(c)?,
            name: row.try_get(7).map_err(c)?,
            prefix: row.try_get(8).map_err(c)?,
            status: row.try_get(9).map_err(c)?,
            soft_blocked: row.try_get(10).map_err(c)?,
            team_id: row.try_get(11).map_err(c)?,
            created_at: row.try_get(12).map_err(c)?,
            updated_at: row.try_get(13).map_err(c)?,
            expires_at: row.try_get(14).map_err(c)?,
            last_used_at: row.try_get(15).map_err(c)?,
            attributes: row.try_get(16).map_err(c)?,
        })
    }

    /// Binds the columns in [`COLUMNS`] order, as parameters 1 to [`COLUMN_COUNT`].
    pub(super) fn bind<'q, DB>(
        self,
        q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    ) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
    where
        DB: sqlx::Database,
        String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Vec<u8>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        q.bind(self.id)
            .bind(self.shape)
            .bind(self.kind)
            .bind(self.digest)
            .bind(self.digest_scheme)
            .bind(self.pepper_id)
            .bind(self.revision)
            .bind(self.name)
            .bind(self.prefix)
            .bind(self.status)
            .bind(self.soft_blocked)
            .bind(self.team_id)
            .bind(self.created_at)
            .bind(self.updated_at)
            .bind(self.expires_at)
            .bind(self.last_used_at)
            .bind(self.attributes)
    }
}

/// `UPDATE … SET` for every column but `id`, with `$n`-style parameters `2..=COLUMN_COUNT`
/// (`sigil` is `$` for PostgreSQL, `?` for SQLite), the id as parameter 1.
pub(super) fn set_clause(sigil: char) -> String {
    COLUMNS
        .split(',')
        .map(str::trim)
        .enumerate()
        .skip(1)
        .map(|(i, column)| alloc::format!("{column} = {sigil}{}", i + 1))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `VALUES (…)` parameters `1..=COLUMN_COUNT`.
pub(super) fn values_clause(sigil: char) -> String {
    (1..=COLUMN_COUNT).map(|i| alloc::format!("{sigil}{i}")).collect::<Vec<_>>().join(", ")
}

/// The statements of one SQL dialect, whose placeholders are `<sigil><n>` (`?1` for SQLite, `$1`
/// for PostgreSQL), built once per store.
pub(super) struct Queries {
    pub(super) by_id: String,
    pub(super) by_digest: String,
    pub(super) insert: String,
    pub(super) replace: String,
    pub(super) delete: String,
    pub(super) exists: String,
    pub(super) count_all: String,
    pub(super) count_team: String,
    pub(super) page_all: String,
    pub(super) page_team: String,
}

impl Queries {
    pub(super) fn new(sigil: char) -> Self {
        const ORDER: &str = "ORDER BY created_at, length(id), id";
        Self {
            by_id: format!("SELECT {COLUMNS} FROM keygate_keys WHERE id = {sigil}1"),
            by_digest: format!("SELECT {COLUMNS} FROM keygate_keys WHERE shape = 'opaque' AND digest = {sigil}1"),
            insert: format!("INSERT INTO keygate_keys ({COLUMNS}) VALUES ({})", values_clause(sigil)),
            replace: format!(
                "UPDATE keygate_keys SET {} WHERE id = {sigil}1 AND revision = {sigil}{}",
                set_clause(sigil),
                COLUMN_COUNT + 1
            ),
            delete: format!("DELETE FROM keygate_keys WHERE id = {sigil}1 RETURNING {COLUMNS}"),
            exists: format!("SELECT 1 FROM keygate_keys WHERE id = {sigil}1"),
            count_all: String::from("SELECT COUNT(*) FROM keygate_keys"),
            count_team: format!("SELECT COUNT(*) FROM keygate_keys WHERE team_id = {sigil}1"),
            page_all: format!("SELECT {COLUMNS} FROM keygate_keys {ORDER} LIMIT {sigil}1 OFFSET {sigil}2"),
            page_team: format!(
                "SELECT {COLUMNS} FROM keygate_keys WHERE team_id = {sigil}3 {ORDER} LIMIT {sigil}1 OFFSET {sigil}2"
            ),
        }
    }
}

/// The one parameter of a lookup.
pub(super) enum BindOne {
    Text(String),
    Bytes(Vec<u8>),
}

/// `AsyncKeyStore` for a SQL store, the same for every engine: the store type has `pool`,
/// `config` and `queries` fields and a `snapshot()` method beginning a read transaction whose
/// reads all see one snapshot (the listing's page and total).
macro_rules! key_store {
    ($store:ident) => {
        impl $store {
            async fn fetch_one_record(
                &self,
                statement: &str,
                param: sql::BindOne,
            ) -> Result<Option<KeyRecord>, StoreError> {
                let q = sqlx::query(statement);
                let q = match param {
                    sql::BindOne::Text(s) => q.bind(s),
                    sql::BindOne::Bytes(b) => q.bind(b),
                };
                let row = q.fetch_optional(&self.pool).await.map_err(error)?;
                row.map(|row| Row::read(&row)?.decode()).transpose()
            }

            /// Why a compare-and-swap updated nothing: no such key, or its revision moved on.
            async fn missing_or_conflict(&self, id: &KeyId) -> StoreError {
                let found = sqlx::query(&self.queries.exists).bind(id.as_str()).fetch_optional(&self.pool).await;
                match found {
                    Ok(None) => StoreError::NotFound,
                    Ok(Some(_)) => StoreError::Conflict,
                    Err(e) => error(e),
                }
            }
        }

        impl $crate::store::AsyncKeyStore for $store {
            fn lookup(
                &self,
                lookup: &Lookup,
            ) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
                let (statement, param) = match lookup {
                    Lookup::Id(id) => (&self.queries.by_id, sql::BindOne::Text(id.as_str().into())),
                    Lookup::Digest(d) => (&self.queries.by_digest, sql::BindOne::Bytes(d.bytes.to_vec())),
                };
                timed(
                    self.config.timeout,
                    async move { Ok(self.fetch_one_record(statement, param).await?.map(Arc::new)) },
                )
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
                    // One snapshot for the page and the total.
                    let mut tx = self.snapshot().await.map_err(error)?;
                    let total: i64 = match &team {
                        None => sqlx::query(&self.queries.count_all).fetch_one(&mut *tx).await,
                        Some(team) => sqlx::query(&self.queries.count_team).bind(team).fetch_one(&mut *tx).await,
                    }
                    .map_err(error)?
                    .try_get(0)
                    .map_err(error)?;
                    let rows = match &team {
                        None => sqlx::query(&self.queries.page_all).bind(limit).bind(offset).fetch_all(&mut *tx).await,
                        Some(team) => {
                            sqlx::query(&self.queries.page_team)
                                .bind(limit)
                                .bind(offset)
                                .bind(team)
                                .fetch_all(&mut *tx)
                                .await
                        }
                    }
                    .map_err(error)?;
                    tx.commit().await.map_err(error)?;
                    let records = rows
                        .iter()
                        .map(|row| Row::read(row)?.decode().map(Arc::new))
                        .collect::<Result<_, StoreError>>()?;
                    Ok(Page { records, total: count_result(total)? })
                })
            }
        }
    };
}
pub(super) use key_store;

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn record() -> KeyRecord {
        let id = KeyId::new("abc").unwrap();
        let digest = StoredDigest { scheme: DigestScheme::HmacSha256(PepperId(7)), bytes: [9; DIGEST_LEN] };
        KeyRecord::new(id, KeyShape::Selector, KeyKind::STANDARD, digest, Timestamp::from_unix_secs(1_700_000_000))
    }

    #[test]
    fn round_trip_plain_and_wide() {
        let mut r = record();
        assert_eq!(Row::encode(&r).unwrap().decode().unwrap(), r);
        r.revision = u64::MAX;
        r.expires_at = Some(Timestamp::MAX);
        r.updated_at = Timestamp::from_unix_nanos(i64::MAX.unsigned_abs());
        let row = Row::encode(&r).unwrap();
        assert_eq!(row.expires_at, Some(i64::MAX));
        assert_eq!(row.revision, -1);
        assert_eq!(row.decode().unwrap(), r);
    }

    #[test]
    fn bad_rows_are_corrupt() {
        let good = Row::encode(&record()).unwrap();
        let cases: [fn(&mut Row); 9] = [
            |r| r.id = "not an id".into(),
            |r| r.shape = "round".into(),
            |r| r.kind = "UPPER".into(),
            |r| r.digest = vec![1, 2, 3],
            |r| r.pepper_id = None,
            |r| r.status = "zombie".into(),
            |r| r.created_at = -1,
            |r| r.attributes = "{".into(),
            |r| r.attributes = r#"{"scopes": 5}"#.into(),
        ];
        for bad in cases {
            let mut row = good.clone();
            bad(&mut row);
            assert_eq!(row.decode(), Err(StoreError::Corrupt));
        }
    }

    #[test]
    fn clauses() {
        assert!(set_clause('$').starts_with("shape = $2, kind = $3"));
        assert!(set_clause('?').ends_with("attributes = ?17"));
        assert!(values_clause('$').ends_with("$16, $17"));
    }
}
