//! The policy stage: may a verified key make this request? (403s)
//!
//! ```text
//! Verified<R> + Requirements {scopes, model, provider, client_ip} + now
//!     ──► authorize ──► Authorized<R>  |  Denial: key_blocked, ip_not_allowed,
//!                                          insufficient_scope, model_not_allowed,
//!                                          provider_not_allowed (403)
//! ```
//!
//! [`authorize`] is a pure function over what [`KeyRecord`](crate::KeyRecord) stores, checked in
//! the order of the decision table. The record holds its rules pre-parsed, so evaluation is byte
//! comparisons with no parsing and no allocation:
//!
//! - **Scopes** ([`Scopes`], [`Scope`]): case-insensitive (stored lowercased), `:`-separated
//!   segments; `keys:*` grants everything below `keys:`, `*` grants everything, and nothing grants
//!   a broader scope than itself. Parsed from `"a b"`, `"a,b"`, `["a","b"]` or `"[\"a\",\"b\"]"`;
//!   an invalid scope is an error naming it. A request's [`RequiredScopes`] are a fixed-size value
//!   (no heap), so a [`Denial`](crate::Denial) can carry them into `WWW-Authenticate`.
//! - **Models** ([`ModelAllowlist`], [`ModelPattern`]): exact names and `family*` prefixes,
//!   case-sensitive; a pattern permits the model's `:free` variant too, a pattern ending in
//!   `:free` permits only free variants.
//! - **Providers**: exact, case-sensitive names.
//! - **Client IP**: [`IpCidr`](crate::IpCidr) blocks; IPv4-mapped IPv6 clients match IPv4 blocks.
//!
//! An empty list is unrestricted.

mod authorize;
mod model;
#[cfg(feature = "alloc")]
mod requirements;
mod scope;
mod scopes;

#[cfg(feature = "alloc")]
pub use authorize::{Authorized, authorize};
#[cfg(feature = "alloc")]
pub use model::{FREE_SUFFIX, MAX_MODEL_PATTERN_LEN, ModelAllowlist, ModelPattern, ModelPatternError};
#[cfg(feature = "alloc")]
pub use requirements::{RequestedModel, Requirements};
pub use scope::{MAX_REQUIRED_SCOPES, MAX_REQUIRED_SCOPES_LEN, MAX_SCOPE_LEN, RequiredScopes, ScopeError};
#[cfg(feature = "alloc")]
pub use scopes::{Scope, Scopes};
