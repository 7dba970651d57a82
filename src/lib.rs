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
pub mod verify;

pub use cidr::{CidrError, IpCidr};
pub use decision::{Denial, DenialCode, UnknownDenialCode};
pub use format::{
    FormatError, GenerateError, GeneratedKey, InvalidKeyId, KeyFormat, KeyId, KeyKind, MAX_TOKEN_LEN, OpaqueFormat,
    ParseError, ParsedKey, SecretToken, SelectorFormat,
};
#[cfg(feature = "alloc")]
pub use gate::{Gate, Pass};
pub use http::{
    BufferTooSmall, Challenge, DenialHeader, DenialHeaders, ErrorBody, HeaderValue, InvalidRealm, Realm, bearer_token,
    write_into,
};
#[cfg(feature = "alloc")]
pub use limit::{Admission, Finished, LimitRequest, Limiter, Usage};
pub use limit::{
    Applied, CellId, CellState, Gcra, InlineHeaderValue, LimitBatch, LimitError, LimitName, LimitOp, LimitStatus,
    LimitStore, MAX_CELLS, MAX_STATE, NotUntil, OpenAiDuration, RateLimitHeaders, RateLimitStatus, Refused,
};
#[cfg(feature = "std")]
pub use limit::{DirectLimiter, MemoryLimitStore};
#[cfg(feature = "redis")]
pub use limit::{RedisConfig, RedisLimitStore};
#[cfg(feature = "alloc")]
pub use manage::{
    Access, Caller, CreateKey, CreatedKey, DEFAULT_PAGE, InvalidValue, KeyPage, ListKeys, MAX_ALLOWED_IPS,
    MAX_ECHOED_NAME, MAX_METADATA_DEPTH, MAX_METADATA_LEN, MAX_NAME_LEN, MAX_PROVIDER_LEN, MAX_PROVIDERS,
    MAX_TEAM_ID_LEN, MAX_USD_MICROS, ManageConfig, ManageError, Manager, Metadata, MetadataError, MoneyError, Patch,
    RateLimitPatch, RotateKey, Rotated, RotationPlan, UpdateKey, Usd, check_create, check_delete, check_get, expire_by,
    plan_create, plan_list, plan_rotation, plan_update, record_use, successor_name,
};
#[cfg(feature = "json")]
pub use manage::{
    DeletedResponse, ErrorResponse, KeyListResponse, KeyResponse, KeyView, ManageRequest, ManageResponse, ManageRoute,
    RotatedResponse,
};
#[cfg(feature = "std")]
pub use manage::{Flushed, LastUsed};
#[cfg(feature = "alloc")]
pub use policy::{
    Authorized, FREE_SUFFIX, MAX_MODEL_PATTERN_LEN, ModelAllowlist, ModelPattern, ModelPatternError, RequestAttrs,
    Scope, Scopes, authorize,
};
pub use policy::{MAX_REQUIRED_SCOPES, MAX_REQUIRED_SCOPES_LEN, MAX_SCOPE_LEN, RequiredScopes, ScopeError};
#[cfg(feature = "alloc")]
pub use record::{Credits, InvalidStatus, KeyRecord, KeyShape, KeyStatus, RateLimits, SpendCap, SpendPeriod};
pub use secret::{
    DIGEST_LEN, DigestCheck, DigestScheme, Pepper, PepperError, PepperId, Peppers, StoredDigest, ct_eq_32,
};
#[cfg(feature = "std")]
pub use store::MemoryStore;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use store::SqlConfig;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
#[cfg(feature = "alloc")]
pub use store::{AsyncKeyStore, KeyStore, ListQuery, MAX_PAGE, Page, Ready, StoreError};
#[cfg(feature = "cache")]
pub use store::{CacheConfig, CachedStore};
#[cfg(feature = "postgres")]
pub use store::{KeyChange, KeyChanges, PostgresStore};
pub use time::{Date, Timestamp, TimestampError};
#[cfg(feature = "alloc")]
pub use verify::Verified;
pub use verify::{Lookup, Verifier};

/// The operating system's random number generator, for [`Verifier::issue`] and key generation.
#[cfg(feature = "std")]
pub use getrandom::SysRng as OsRng;
