//! The SQL stores (features `sqlite` or `postgres`): `SqliteStore` and `PostgresStore` are
//! one generic store over a small engine trait, so the key store operations are written once.
//!
//! ```text
//! store      SqlStore<E: Engine>: AsyncKeyStore, once for every engine
//!   rows       KeyRecord <-> one row of keygate_keys
//!   queries    the statements, by placeholder style
//! sqlite     the SQLite engine: open, WAL, migrations under BEGIN IMMEDIATE
//! postgres   the PostgreSQL engine: connect, migrations, the change feed (KeyChanges)
//! ```
//!
//! This module holds what the engines share besides: [`SqlConfig`], the migrator over the
//! migrations compiled into the crate, the call timeout and the mapping of driver errors onto
//! [`StoreError`].
//!
//! # Design
//!
//! **Schema.** One table, `keygate_keys`, one row per key. What a query selects, filters or
//! orders on is a real column: `id` (primary key), `shape`, `kind`, the `digest` bytes with
//! `digest_scheme` (`hmac_sha256` or `sha256`) and `pepper_id`, `revision`, `name`, `prefix`,
//! `status`, `soft_blocked`, `team_id`, `inherits_budget` (the id whose limit counters a rotated
//! key continues, `NULL` for its own), and the timestamps `created_at`, `updated_at`,
//! `expires_at` and `last_used_at` as nanoseconds since the Unix epoch in a `BIGINT`. The policy
//! and limits (scopes, model and provider allowlists, IP networks, rate limits, spend cap,
//! credits, metadata) are one JSON text column, `attributes`, written with the types' own
//! `serde` forms and read back through their validating parsers. Indexes:
//!
//! * a unique index on `digest` over the rows whose `shape` is `opaque`, which serves
//!   [`Lookup::Digest`](crate::verify::Lookup) and makes a second opaque key with the same digest a
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
//! channel; see [`KeyChanges`](crate::store::KeyChanges).

#![cfg(any(feature = "sqlite", feature = "postgres"))]

use alloc::borrow::Cow;
use alloc::vec::Vec;
use core::future::Future;
use core::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::StoreError;

mod log;
#[cfg(feature = "postgres")]
mod postgres;
mod queries;
mod rows;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;

#[cfg(feature = "postgres")]
pub use postgres::{KeyChange, KeyChanges, PostgresStore};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
pub use store::SqlStore;

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
/// let mut config = keygate::store::SqlConfig::default();
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
/// One migration: its version, its description and its SQL.
type MigrationSql = (i64, &'static str, &'static str);

/// A migrator over migrations compiled into the crate.
fn migrator(migrations: &[MigrationSql]) -> Migrator {
    let migrations = migrations
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(version, Cow::Borrowed(description), MigrationType::Simple, Cow::Borrowed(sql), false)
        })
        .collect::<Vec<_>>();
    Migrator { migrations: Cow::Owned(migrations), ..Migrator::DEFAULT }
}

/// Runs `call` within `timeout`: [`StoreError::Timeout`] past it.
async fn timed<T>(timeout: Duration, call: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    tokio::time::timeout(timeout, call).await.unwrap_or(Err(StoreError::Timeout))
}

/// The [`StoreError`] for a driver error.
fn error(e: sqlx::Error) -> StoreError {
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
fn migrate_error(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::Execute(e) => error(e),
        _ => StoreError::Unavailable,
    }
}
