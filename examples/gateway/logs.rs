//! The usage log: where its records go (the store `--store` names), and the task that writes
//! them there in batches, off the request path.
//!
//! | `--store` | usage log in |
//! |---|---|
//! | `memory` | a ring of the newest 100 000 records in this process (`MemoryLog`) |
//! | `PATH.db`, `sqlite:PATH` | the SQLite file's `keygate_usage_log` table |
//! | `postgres://…` | PostgreSQL's `keygate_usage_log` table, shared by every gateway on it |

use std::time::Duration;

use keygate::store::{SqlConfig, StoreError};
use keygate::usage_log::{
    AlertQuery, AlertRecord, LogBatch, LogPage, LogQuery, LogStore, MemoryLog, UsageLog, UsageQuery, UsageRow,
};
use keygate::{PostgresStore, SqliteStore, Timestamp};

use crate::backends::StoreUrl;

/// How often buffered records are written.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// The usage log's store.
pub(crate) enum Logs {
    Memory(MemoryLog),
    Sqlite(SqliteStore),
    Postgres(Box<PostgresStore>),
}

impl Logs {
    /// The log in the store `url` names (its own pool; the key store's migrations made the
    /// tables).
    pub(crate) async fn open(url: &StoreUrl) -> Result<Self, StoreError> {
        Ok(match url {
            StoreUrl::Memory => Self::Memory(MemoryLog::default()),
            StoreUrl::Sqlite(path) => Self::Sqlite(SqliteStore::open(path, SqlConfig::default()).await?),
            StoreUrl::Postgres(url) => {
                Self::Postgres(Box::new(PostgresStore::connect(url, SqlConfig::default()).await?))
            }
        })
    }
}

macro_rules! forward {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Self::Memory($store) => $call.await,
            Self::Sqlite($store) => $call.await,
            Self::Postgres($store) => $call.await,
        }
    };
}

impl LogStore for Logs {
    async fn append(&self, batch: &LogBatch) -> Result<(), StoreError> {
        forward!(self, s => s.append(batch))
    }
    async fn records(&self, query: &LogQuery) -> Result<LogPage, StoreError> {
        forward!(self, s => s.records(query))
    }
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        forward!(self, s => s.usage(query))
    }
    async fn alerts(&self, query: &AlertQuery) -> Result<Vec<AlertRecord>, StoreError> {
        forward!(self, s => s.alerts(query))
    }
    async fn prune(&self, before: Timestamp) -> Result<u64, StoreError> {
        forward!(self, s => s.prune(before))
    }
}

/// Writes what the log buffered, saying so on stderr when records were dropped or the store
/// failed (the records then wait for the next flush).
pub(crate) async fn flush(log: &UsageLog<Logs>) {
    match log.flush().await {
        Ok(flushed) if flushed.dropped > 0 => {
            eprintln!("usage log: {} records dropped (buffer full)", flushed.dropped);
        }
        Ok(_) => {}
        Err(e) => eprintln!("usage log: write failed ({e}); {} records wait for the next flush", log.pending()),
    }
}
