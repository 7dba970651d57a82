#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// Without `std` (or `alloc`) the items that need it are absent, and the docs that name them
// render those names as plain text instead of links.
#![cfg_attr(not(feature = "std"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(any(feature = "alloc", test))]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod cidr;
pub mod decision;
pub mod events;
pub mod format;
pub mod gate;
pub mod http;
pub mod limit;
pub mod manage;
pub mod policy;
pub mod record;
pub mod secret;
#[cfg(feature = "std")]
mod shard;
pub mod store;
pub mod time;
pub mod tower;
pub mod usage_log;
pub mod verify;

// The names a user needs; what only a store implementer, the management internals or the
// sans-IO core need lives in its module (`keygate::limit::Gcra`, `keygate::verify::Lookup`).
pub use cidr::IpCidr;
pub use decision::{Denial, DenialCode};
pub use format::{KeyId, KeyKind};
#[cfg(feature = "alloc")]
pub use gate::Gate;
#[cfg(feature = "std")]
pub use gate::{KeyGate, Principal};
#[cfg(feature = "std")]
pub use limit::MemoryLimitStore;
#[cfg(feature = "redis")]
pub use limit::RedisLimitStore;
#[cfg(feature = "alloc")]
pub use limit::{LimitRequest, LimitStore, Usage};
#[cfg(feature = "alloc")]
pub use manage::{Caller, ManageConfig, Manager};
pub use policy::RequiredScopes;
#[cfg(feature = "alloc")]
pub use policy::{ModelAllowlist, RequestedModel, Requirements, Scopes};
#[cfg(feature = "alloc")]
pub use record::{Credits, KeyRecord, KeyStatus, RateLimits, SpendCap, SpendPeriod};
pub use secret::Pepper;
#[cfg(feature = "cache")]
pub use store::CachedStore;
#[cfg(feature = "std")]
pub use store::MemoryStore;
#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
#[cfg(feature = "alloc")]
pub use store::{AsyncKeyStore, KeyStore, StoreError};
pub use time::Timestamp;
pub use verify::Verifier;

#[cfg(feature = "std")]
pub use getrandom::SysRng as OsRng;
