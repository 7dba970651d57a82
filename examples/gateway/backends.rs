//! Where the gateway keeps keys and limit state, chosen on the command line.
//!
//! | `--store` | keys live in | shared by |
//! |---|---|---|
//! | `memory` (default) | this process's `MemoryStore` | this process |
//! | `PATH.db`, `sqlite:PATH` | an SQLite file (`SqliteStore`), behind a `CachedStore` | this process (and any reading the file) |
//! | `postgres://…` | PostgreSQL (`PostgresStore`), behind a `CachedStore` with the kid set, kept current by LISTEN/NOTIFY; usage counters and team wallets there too | every gateway on the database |
//!
//! | `--limits` | limit state lives in |
//! |---|---|
//! | `memory` (default) | this process's `MemoryLimitStore` |
//! | `redis://…` | Redis (`RedisLimitStore`): one Lua script per check, so every gateway shares each limit exactly; settlements queued and sent in the background |
//! | `redis://…,redis://…` | a Redis Cluster, through any of its nodes |
//!
//! Each is an enum that forwards to the store it holds, so the rest of the gateway has one type.

use std::sync::Arc;
use std::time::Duration;

use keygate::limit::{Applied, AsyncLimitStore, CellId, LimitBatch, LimitError, LimitOp, RedisConfig, Refused};
use keygate::store::{BatchError, CacheConfig, KeyIds, ListQuery, Page, SqlConfig};
use keygate::verify::Lookup;
use keygate::{
    AsyncKeyStore, CachedStore, KeyId, KeyRecord, LimitStore, MemoryLimitStore, MemoryStore, PostgresStore,
    RedisLimitStore, SqliteStore, StoreError, Timestamp,
};

/// How long a cached record may be served without a change notification (the bound on
/// staleness if one is lost).
const CACHE_TTL: Duration = Duration::from_secs(30);

/// The `--store` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreUrl {
    Memory,
    Sqlite(String),
    Postgres(String),
}

impl StoreUrl {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text == "memory" {
            Ok(Self::Memory)
        } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Ok(Self::Postgres(text.to_owned()))
        } else if let Some(path) = text.strip_prefix("sqlite://").or_else(|| text.strip_prefix("sqlite:")) {
            Ok(Self::Sqlite(path.to_owned()))
        } else if text.ends_with(".db") || text.ends_with(".sqlite") || text.ends_with(".sqlite3") {
            Ok(Self::Sqlite(text.to_owned()))
        } else {
            Err(format!("--store: {text:?} is not `memory`, a FILE.db, sqlite:PATH or a postgres:// URL"))
        }
    }

    pub(crate) const fn is_persistent(&self) -> bool {
        !matches!(self, Self::Memory)
    }
}

/// The `--limits` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LimitsUrl {
    Memory,
    Redis(String),
}

impl LimitsUrl {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text == "memory" {
            Ok(Self::Memory)
        } else if text.starts_with("redis://") || text.starts_with("rediss://") {
            Ok(Self::Redis(text.to_owned()))
        } else {
            Err(format!("--limits: {text:?} is not `memory` or a redis:// URL"))
        }
    }
}

/// A persistent store.
pub(crate) enum Persistent {
    Sqlite(SqliteStore),
    Postgres(Box<PostgresStore>),
}

/// The key store: a handle, cloned into the gate and the management API.
#[derive(Clone)]
pub(crate) enum Keys {
    Memory(Arc<MemoryStore>),
    Cached(CachedStore<Persistent>),
}

impl Keys {
    /// Opens the store `url` names (applying its migrations). For PostgreSQL, also starts a
    /// task that evicts changed keys from the cache as other gateways announce them.
    pub(crate) async fn open(url: &StoreUrl) -> Result<Self, StoreError> {
        let config = CacheConfig::default().with_ttl(CACHE_TTL);
        Ok(match url {
            StoreUrl::Memory => Self::Memory(Arc::new(MemoryStore::new())),
            StoreUrl::Sqlite(path) => {
                let store = SqliteStore::open(path, SqlConfig::default()).await?;
                Self::Cached(CachedStore::with_config(Persistent::Sqlite(store), config))
            }
            StoreUrl::Postgres(url) => {
                let store = PostgresStore::connect(url, SqlConfig::default()).await?;
                // Listen before loading the kid set: a key created meanwhile is announced.
                let changes = store.changes().await?;
                let cache = CachedStore::with_config(Persistent::Postgres(Box::new(store)), config);
                // Kids outside the set are refused without a database read.
                cache.load_kids().await?;
                tokio::spawn({
                    let cache = cache.clone();
                    async move { cache.follow(changes).await }
                });
                Self::Cached(cache)
            }
        })
    }
}

impl Keys {
    /// A pool on the keys' PostgreSQL database, when keys live there: usage counters and
    /// wallets live there too. Its sessions commit without waiting for the WAL to reach the
    /// disk (`synchronous_commit = off`): a wallet's row is written by every batch of paid
    /// requests that no lease covers and by every lease granted or given back, and waiting for
    /// each flush under the row's lock limited a team to about one batch per flush. A database
    /// crash may forget the last fraction of a second of those writes (never corrupt them): a
    /// lease given back and forgotten reappears and is reclaimed 5 s later, one granted and
    /// forgotten is dropped by its holder at its next renewal. Key writes keep the store's own
    /// pool and the server's setting.
    pub(crate) fn postgres_pool(&self) -> Option<sqlx::PgPool> {
        match self {
            Self::Cached(cache) => match cache.inner() {
                Persistent::Postgres(store) => {
                    let options = (*store.pool().connect_options()).clone().options([("synchronous_commit", "off")]);
                    Some(sqlx::postgres::PgPoolOptions::new().max_connections(16).connect_lazy_with(options))
                }
                Persistent::Sqlite(_) => None,
            },
            Self::Memory(_) => None,
        }
    }
}

/// Forwards each operation to the store an enum holds.
macro_rules! forward {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Self::Sqlite($store) => $call.await,
            Self::Postgres($store) => $call.await,
        }
    };
}

impl KeyIds for Persistent {
    async fn key_ids(&self) -> Result<Vec<KeyId>, StoreError> {
        forward!(self, s => s.key_ids())
    }
}

impl AsyncKeyStore for Persistent {
    async fn lookup(&self, lookup: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        forward!(self, s => s.lookup(lookup))
    }
    async fn insert(&self, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        forward!(self, s => s.insert(record))
    }
    // An import's batch in one transaction.
    async fn insert_batch(&self, records: Vec<KeyRecord>) -> Result<Vec<Arc<KeyRecord>>, BatchError> {
        forward!(self, s => s.insert_batch(records))
    }
    async fn replace(&self, expected: u64, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        forward!(self, s => s.replace(expected, record))
    }
    async fn delete(&self, id: &KeyId) -> Result<Arc<KeyRecord>, StoreError> {
        forward!(self, s => s.delete(id))
    }
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        forward!(self, s => s.list(query))
    }
}

macro_rules! forward_keys {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Self::Memory($store) => $call.await,
            Self::Cached($store) => $call.await,
        }
    };
}

impl AsyncKeyStore for Keys {
    async fn lookup(&self, lookup: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        forward_keys!(self, s => s.lookup(lookup))
    }
    async fn get(&self, id: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        forward_keys!(self, s => s.get(id))
    }
    async fn insert(&self, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        forward_keys!(self, s => s.insert(record))
    }
    async fn insert_batch(&self, records: Vec<KeyRecord>) -> Result<Vec<Arc<KeyRecord>>, BatchError> {
        forward_keys!(self, s => s.insert_batch(records))
    }
    async fn replace(&self, expected: u64, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        forward_keys!(self, s => s.replace(expected, record))
    }
    async fn delete(&self, id: &KeyId) -> Result<Arc<KeyRecord>, StoreError> {
        forward_keys!(self, s => s.delete(id))
    }
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        forward_keys!(self, s => s.list(query))
    }
}

/// The limit state: a handle, cloned into every admission.
#[derive(Clone)]
pub(crate) enum Limits {
    Memory(Arc<MemoryLimitStore>),
    Redis(RedisLimitStore),
}

impl Limits {
    /// The store `url` names: several `redis://` URLs, comma-separated, are nodes of one Redis
    /// Cluster. Connects on first use.
    pub(crate) fn open(url: &LimitsUrl) -> Result<Self, LimitError> {
        Ok(match url {
            LimitsUrl::Memory => Self::Memory(Arc::new(MemoryLimitStore::new())),
            LimitsUrl::Redis(url) if url.contains(',') => {
                let nodes: Vec<&str> = url.split(',').map(str::trim).collect();
                Self::Redis(RedisLimitStore::open_cluster(&nodes, RedisConfig::default())?)
            }
            LimitsUrl::Redis(url) => Self::Redis(RedisLimitStore::open(url, RedisConfig::default())?),
        })
    }

    /// Drops idle in-memory state (Redis expires its own) and sends the settlements queued for
    /// Redis: call it now and then, and on shutdown.
    pub(crate) async fn maintain(&self, now: Timestamp) {
        match self {
            Self::Memory(store) => {
                store.evict_expired(now);
            }
            Self::Redis(store) => {
                if let Err(e) = store.flush().await {
                    eprintln!("limits: {} settlements wait for Redis ({e})", store.pending_settlements());
                }
            }
        }
    }
}

impl AsyncLimitStore for Limits {
    async fn apply(
        &self,
        key: &KeyId,
        batch: &LimitBatch,
        now: Timestamp,
    ) -> Result<Result<Applied, Refused>, LimitError> {
        match self {
            Self::Memory(s) => LimitStore::apply(&**s, key, batch, now),
            Self::Redis(s) => s.apply(key, batch, now).await,
        }
    }

    async fn apply_one(
        &self,
        key: &KeyId,
        cell: CellId,
        op: LimitOp,
        now: Timestamp,
    ) -> Result<Result<u64, Refused>, LimitError> {
        match self {
            Self::Memory(s) => LimitStore::apply_one(&**s, key, cell, op, now),
            Self::Redis(s) => s.apply_one(key, cell, op, now).await,
        }
    }

    fn settle(&self, key: &KeyId, batch: &LimitBatch, now: Timestamp) -> Result<Option<Applied>, LimitError> {
        match self {
            Self::Memory(s) => AsyncLimitStore::settle(&**s, key, batch, now),
            Self::Redis(s) => s.settle(key, batch, now),
        }
    }
}
