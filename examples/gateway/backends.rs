//! Where the gateway keeps keys and limit state, chosen on the command line.
//!
//! | `--store` | keys live in | shared by |
//! |---|---|---|
//! | `memory` (default) | this process's `MemoryStore` | this process |
//! | `PATH.db`, `sqlite:PATH` | an SQLite file (`SqliteStore`), behind a `CachedStore` | this process (and any reading the file) |
//! | `postgres://…` | PostgreSQL (`PostgresStore`), behind a `CachedStore` kept current by LISTEN/NOTIFY | every gateway on the database |
//!
//! | `--limits` | limit state lives in |
//! |---|---|
//! | `memory` (default) | this process's `MemoryLimitStore` |
//! | `redis://…` | Redis (`RedisLimitStore`): one Lua script per check, so every gateway shares each limit exactly |
//!
//! Each is an enum that forwards to the store it holds, so the rest of the gateway has one type.

use std::sync::Arc;
use std::time::Duration;

use keygate::{
    Applied, AsyncKeyStore, CacheConfig, CachedStore, CellId, CellState, KeyChange, KeyId, KeyRecord, LimitBatch,
    LimitError, LimitOp, LimitStore, ListQuery, Lookup, MemoryLimitStore, MemoryStore, Page, PostgresStore, Ready,
    RedisConfig, RedisLimitStore, Refused, SqlConfig, SqliteStore, StoreError, Timestamp,
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

/// The key store.
pub(crate) enum Keys {
    Memory(Ready<Arc<MemoryStore>>),
    Cached(Box<CachedStore<Persistent>>),
}

impl Keys {
    /// Opens the store `url` names (applying its migrations). For PostgreSQL, also starts a
    /// task that evicts changed keys from the cache as other gateways announce them.
    pub(crate) async fn open(url: &StoreUrl) -> Result<Arc<Self>, StoreError> {
        let cache = CacheConfig::default().with_ttl(CACHE_TTL);
        Ok(match url {
            StoreUrl::Memory => Arc::new(Self::Memory(Ready(Arc::new(MemoryStore::new())))),
            StoreUrl::Sqlite(path) => {
                let store = SqliteStore::open(path, SqlConfig::default()).await?;
                Arc::new(Self::Cached(Box::new(CachedStore::with_config(Persistent::Sqlite(store), cache))))
            }
            StoreUrl::Postgres(url) => {
                let store = PostgresStore::connect(url, SqlConfig::default()).await?;
                // Listen before serving: a change made while the cache is empty needs no notice.
                let mut changes = store.changes().await?;
                let keys = Arc::new(Self::Cached(Box::new(CachedStore::with_config(
                    Persistent::Postgres(Box::new(store)),
                    cache,
                ))));
                let weak = Arc::downgrade(&keys);
                tokio::spawn(async move {
                    loop {
                        let change = changes.next().await;
                        let Some(keys) = weak.upgrade() else { return };
                        if let Self::Cached(cache) = &*keys {
                            if matches!(change, KeyChange::Resync) {
                                eprintln!("store: change feed reconnected, cache cleared");
                            }
                            cache.apply(&change);
                        }
                    }
                });
                keys
            }
        })
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

impl AsyncKeyStore for Persistent {
    async fn lookup(&self, lookup: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        forward!(self, s => s.lookup(lookup))
    }
    async fn insert(&self, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        forward!(self, s => s.insert(record))
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
    async fn lookup_kid_or_stand_in(&self, id: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        // Forwarded, or the memory store's stand-ins (equal-time misses) would be lost here.
        forward_keys!(self, s => s.lookup_kid_or_stand_in(id))
    }
    async fn get(&self, id: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        forward_keys!(self, s => s.get(id))
    }
    async fn insert(&self, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        forward_keys!(self, s => s.insert(record))
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

/// The limit state.
pub(crate) enum Limits {
    Memory(MemoryLimitStore),
    Redis(Box<RedisLimitStore>),
}

impl Limits {
    pub(crate) fn open(url: &LimitsUrl) -> Result<Self, LimitError> {
        Ok(match url {
            LimitsUrl::Memory => Self::Memory(MemoryLimitStore::new()),
            LimitsUrl::Redis(url) => Self::Redis(Box::new(RedisLimitStore::open(url, RedisConfig::default())?)),
        })
    }

    /// Drops idle in-memory state (Redis expires its own).
    pub(crate) fn evict_expired(&self, now: Timestamp) {
        if let Self::Memory(store) = self {
            store.evict_expired(now);
        }
    }
}

impl LimitStore for Limits {
    fn update<T, E, F>(&self, key: &KeyId, cells: &[CellId], now: Timestamp, f: F) -> Result<Result<T, E>, LimitError>
    where
        F: FnMut(&mut [CellState]) -> Result<T, E>,
    {
        match self {
            Self::Memory(s) => s.update(key, cells, now, f),
            Self::Redis(s) => s.update(key, cells, now, f),
        }
    }

    fn apply(&self, key: &KeyId, batch: &LimitBatch, now: Timestamp) -> Result<Result<Applied, Refused>, LimitError> {
        match self {
            Self::Memory(s) => s.apply(key, batch, now),
            Self::Redis(s) => s.apply(key, batch, now),
        }
    }

    fn apply_one(
        &self,
        key: &KeyId,
        cell: CellId,
        op: LimitOp,
        now: Timestamp,
    ) -> Result<Result<u64, Refused>, LimitError> {
        match self {
            Self::Memory(s) => s.apply_one(key, cell, op, now),
            Self::Redis(s) => s.apply_one(key, cell, op, now),
        }
    }
}
