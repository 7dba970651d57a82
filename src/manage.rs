//! Key management: the lifecycle of keys and the AI Stats management API (needs `alloc`; the
//! JSON and the HTTP handler need `json`; the last-used tracker needs `std`).
//!
//! ```text
//! caller (Caller: team, scopes, kind, restrictions) + request (CreateKey, ListKeys, UpdateKey, RotateKey) + now
//!   ──► rules: check_create / plan_create, plan_list, check_get, plan_update, check_delete,
//!       plan_rotation   (pure: existing records in, records to write out, or a ManageError)
//!   ──► a driver: Manager over a KeyStore, or an AsyncKeyStore with the `_async` methods
//!       (one implementation; compare-and-swap with bounded retries)
//!   ──► JSON: CreateKey::from_json ..., KeyView, KeyResponse, KeyListResponse, ErrorResponse
//!   ──► HTTP: Manager::handle(caller, ManageRequest, now, rng) ──► ManageResponse {status, body}
//! ```
//!
//! # The rules
//!
//! - **Who.** Any key with the scopes manages keys: reads (list, get, usage) need `read`,
//!   writes (create, update, delete, rotate) `write` (names configurable in [`ManageConfig`],
//!   which can also require a key kind, such as a separate management kind). A caller with a
//!   team sees and changes only its team's keys; any other key answers 404 exactly as a missing
//!   one does. A caller without a team is an operator credential and sees every team.
//! - **No escalation.** No key creates, updates or rotates a key, itself included, into
//!   anything broader than itself. Every scope a caller gives a key must be within its own
//!   (wildcards included: `keys:*` may grant `keys:read` and `keys:admin:*`, never `*`), and a
//!   caller changes, rotates or deletes only keys whose scopes are within its own. The new key,
//!   the successor, and every field an update changes are held to the caller's own key: expiry
//!   no later, IP networks within its own, models and providers within its allowlists, rate
//!   limits, concurrency, spend cap and credits no higher (and present when its own are); a
//!   key of another kind than the standard one only from a key of that kind. Refusals are 403
//!   `scope_escalation` or `escalation`, naming the field. The operator stays unrestricted.
//! - **Revoked is terminal.** A revoked key cannot be re-activated; only its name and
//!   metadata may still change.
//! - **Validation.** Every field is validated before anything is written, and an error names
//!   the field (`param`) and says why. Unknown and repeated fields are refused.
//! - **Concurrency.** An update reads the key, plans the change and writes it with
//!   compare-and-swap on the revision; on a conflict it re-reads and re-applies (an update is a
//!   set of field assignments), up to [`ManageConfig::cas_attempts`] times, then answers 409.
//! - **Rotation.** A successor with the same configuration, named `name-v2`, `-v3`, ...; with
//!   an overlap window the old key expires by itself when it ends (its expiry only ever moves
//!   earlier). [`LastUsed`] records when keys are used, so an operator can see
//!   the old key go idle before revoking it.
//!
//! The operations are written once as `async fn`s over the store: over an
//! [`AsyncKeyStore`](crate::AsyncKeyStore) they are awaited (`Manager::create_async`, ...,
//! `Manager::handle_async`); over a [`KeyStore`](crate::KeyStore), whose calls return at once,
//! the synchronous methods complete them in a single poll, without an executor.

#![cfg(feature = "alloc")]

mod bounds;
mod caller;
mod error;
mod handler;
mod import;
mod json;
mod last_used;
mod metadata;
mod money;
mod ops;
mod request;
mod rules;
mod validate;

pub use caller::{Access, Caller, ManageConfig, ScopesWire};
#[cfg(all(feature = "json", feature = "std"))]
pub(crate) use error::echoed_name;
pub use error::{InvalidValue, MAX_ECHOED_NAME, ManageError, RejectedEntry};
#[cfg(feature = "json")]
pub use handler::{ManageRequest, ManageResponse, ManageRoute};
pub use import::{DigestState, ImportKey, ImportedSecret, MAX_IMPORT_BATCH, MAX_IMPORTED_PREFIX, plan_import};
#[cfg(feature = "json")]
pub use json::{
    DeletedResponse, ErrorResponse, ImportedResponse, KeyListResponse, KeyResponse, KeyView, RotatedResponse,
};
#[cfg(feature = "std")]
pub use last_used::{Flushed, LastUsed};
pub use metadata::{MAX_METADATA_DEPTH, MAX_METADATA_LEN, Metadata, MetadataError};
pub use money::{MAX_USD_MICROS, MoneyError, Usd};
pub use ops::{CreatedKey, KeyPage, Manager, Rotated};
pub use request::{
    CreateKey, DEFAULT_PAGE, ListKeys, MAX_ALLOWED_IPS, MAX_CREDITS, MAX_NAME_LEN, MAX_PROVIDER_LEN, MAX_PROVIDERS,
    MAX_TEAM_ID_LEN, Patch, RateLimitPatch, RotateKey, UpdateKey,
};
#[cfg(all(feature = "json", feature = "std"))]
pub(crate) use request::{check_team_id, parse_count, percent_decode};
pub use rules::{
    RotationPlan, check_create, check_delete, check_get, expire_by, plan_create, plan_list, plan_rotation, plan_update,
    record_use, successor_name,
};
