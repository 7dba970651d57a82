#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "alloc", test))]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod cidr;
pub mod decision;
pub mod format;
pub mod http;
pub mod limit;
pub mod record;
pub mod secret;
pub mod store;
pub mod time;
pub mod verify;

pub use cidr::{CidrError, IpCidr};
pub use decision::{Denial, DenialCode, UnknownDenialCode};
pub use format::{
    FormatError, GenerateError, GeneratedKey, InvalidKeyId, KeyFormat, KeyId, KeyKind, MAX_TOKEN_LEN, OpaqueFormat,
    ParseError, ParsedKey, SecretToken, SelectorFormat,
};
pub use http::bearer_token;
#[cfg(feature = "alloc")]
pub use limit::{Admission, LimitRequest, Limiter, Usage};
pub use limit::{
    Applied, CellId, CellState, Gcra, HeaderValue, LimitBatch, LimitError, LimitName, LimitOp, LimitStatus, LimitStore,
    MAX_CELLS, MAX_STATE, NotUntil, OpenAiDuration, RateLimitHeaders, RateLimitStatus, Refused,
};
#[cfg(feature = "std")]
pub use limit::{DirectLimiter, MemoryLimitStore};
#[cfg(feature = "alloc")]
pub use record::{Credits, InvalidStatus, KeyRecord, KeyShape, KeyStatus, RateLimits, SpendCap, SpendPeriod};
pub use secret::{
    DIGEST_LEN, DigestCheck, DigestScheme, Pepper, PepperError, PepperId, Peppers, StoredDigest, ct_eq_32,
};
#[cfg(feature = "std")]
pub use store::MemoryStore;
#[cfg(feature = "alloc")]
pub use store::{KeyStore, ListQuery, MAX_PAGE, Page, StoreError};
pub use time::{Date, Timestamp, TimestampError};
#[cfg(feature = "alloc")]
pub use verify::Verified;
pub use verify::{Lookup, Verifier};

/// The operating system's random number generator, for [`Verifier::issue`] and key generation.
#[cfg(feature = "std")]
pub use getrandom::SysRng as OsRng;
