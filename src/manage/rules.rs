//! The rules of key management as pure functions of (caller, request, existing records, now).
//!
//! Nothing here does I/O or reads a clock: each function takes the records a driver read and
//! returns the records the driver should write, or the reason to refuse. The synchronous
//! [`Manager`](crate::Manager) is one such driver; an asynchronous store reuses these functions
//! with its own.

use alloc::format;
use alloc::string::{String, ToString};
use core::borrow::Borrow;
use core::time::Duration;

use super::request::{
    check_expiry, check_ips, check_name, check_providers, check_rate_limits, check_spend_cap, check_team_id,
};
use super::{CreateKey, InvalidValue, ListKeys, ManageError, Patch, RateLimitPatch, RotateKey, UpdateKey};
use crate::{Authorized, KeyKind, KeyRecord, KeyStatus, ListQuery, RequiredScopes, Scope, Scopes, Timestamp};

/// Who is calling the management API: a management key's team and scopes, or the operator.
///
/// Build it from the caller's [`Authorized`] key (`Caller::from(&authorized)`), or with
/// [`Caller::operator`] for the operator's own tooling. The management API trusts the caller
/// it is given: authenticate the management key first.
///
/// - Only management keys ([`KeyKind::MANAGEMENT`]) may manage keys; any other kind is refused
///   ([`ManageError::NotManagementKey`]).
/// - A caller with a team sees and changes only the keys of that team; any other key is
///   [`ManageError::NotFound`], exactly as if it did not exist.
/// - A caller without a team (a management key issued with no team, or the operator) is an
///   operator credential: it sees and changes every key of every team.
/// - A caller never grants more than it holds: every scope it gives a key (on create, update
///   or rotation) must be within its own scopes, and it may change, rotate or delete only keys
///   whose scopes are within its own ([`ManageError::ScopeEscalation`]).
///
/// ```
/// use keygate::{Caller, Scopes};
/// let team_admin = Caller::new(keygate::KeyKind::MANAGEMENT, Some("team-a".into()), Scopes::parse("read write")?);
/// assert_eq!(team_admin.team_id(), Some("team-a"));
/// assert!(team_admin.may_grant(&Scopes::parse("read")?).is_ok());
/// assert!(team_admin.may_grant(&Scopes::parse("admin")?).is_err());
/// assert!(Caller::operator().may_grant(&Scopes::parse("*")?).is_ok());
/// # Ok::<(), keygate::ScopeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    team_id: Option<String>,
    scopes: Scopes,
    management: bool,
}

impl Caller {
    /// A caller holding a key of `kind` in `team_id` with `scopes`.
    #[must_use]
    pub fn new(kind: KeyKind, team_id: Option<String>, scopes: Scopes) -> Self {
        Self { team_id, scopes, management: kind == KeyKind::MANAGEMENT }
    }

    /// The operator: no team, every scope (`*`).
    #[must_use]
    pub fn operator() -> Self {
        // `*` is a valid scope, so this never falls back to the (powerless) empty set.
        let all = Scopes::parse("*").unwrap_or_default();
        Self { team_id: None, scopes: all, management: true }
    }

    /// The caller holding the key of `record`.
    #[must_use]
    pub fn from_record(record: &KeyRecord) -> Self {
        Self::new(record.kind, record.team_id.clone(), record.scopes.clone())
    }

    /// The caller's team; `None` for an operator credential.
    #[must_use]
    pub fn team_id(&self) -> Option<&str> {
        self.team_id.as_deref()
    }

    /// The caller's scopes.
    #[must_use]
    pub fn scopes(&self) -> &Scopes {
        &self.scopes
    }

    /// Whether the caller sees every team.
    #[must_use]
    pub fn is_operator(&self) -> bool {
        self.management && self.team_id.is_none()
    }

    /// Whether the caller may perform an operation of `access` (a management key with the
    /// configured scope). The gateway may also check the scopes per route with
    /// [`authorize`](crate::authorize) and [`ManageConfig::required_scopes`].
    ///
    /// # Errors
    ///
    /// [`ManageError::NotManagementKey`] or [`ManageError::MissingScope`].
    pub fn authorize(&self, access: Access, config: &ManageConfig) -> Result<(), ManageError> {
        if !self.management {
            return Err(ManageError::NotManagementKey);
        }
        let required = config.required_scopes(access);
        if self.scopes.permits(required) { Ok(()) } else { Err(ManageError::MissingScope(*required)) }
    }

    /// Whether the caller may see `record` (same team, or an operator credential).
    #[must_use]
    pub fn can_see(&self, record: &KeyRecord) -> bool {
        self.team_id.is_none() || self.team_id == record.team_id
    }

    /// Whether the caller's own scopes cover `scope`, with [`Scopes::permits`] semantics: a
    /// plain scope must be permitted; a wildcard `p:*` needs a wildcard grant whose prefix is a
    /// prefix of `p:` (`keys:*` covers `keys:admin:*`; only `*` covers `*`).
    #[must_use]
    pub fn covers(&self, scope: &Scope) -> bool {
        if scope.is_wildcard() {
            let wanted = wildcard_prefix(scope);
            self.scopes.iter().any(|g| g.is_wildcard() && wanted.starts_with(wildcard_prefix(g)))
        } else {
            RequiredScopes::new(scope.as_str()).is_ok_and(|r| self.scopes.permits(&r))
        }
    }

    /// Whether every scope of `scopes` is within the caller's own.
    ///
    /// # Errors
    ///
    /// [`ManageError::ScopeEscalation`] naming the first scope that is not.
    pub fn may_grant(&self, scopes: &Scopes) -> Result<(), ManageError> {
        match scopes.iter().find(|s| !self.covers(s)) {
            Some(s) => Err(ManageError::ScopeEscalation(s.as_str().to_string())),
            None => Ok(()),
        }
    }

    /// The team a new key gets: the caller's own (naming another is refused); an operator's
    /// choice, which may be none.
    fn team_for_new_key(&self, requested: Option<&String>) -> Result<Option<String>, ManageError> {
        match (&self.team_id, requested) {
            (Some(own), None) => Ok(Some(own.clone())),
            (Some(own), Some(t)) if own == t => Ok(Some(own.clone())),
            (Some(_), Some(_)) => Err(ManageError::TeamMismatch),
            (None, t) => {
                if let Some(t) = t {
                    check_team_id(t)?;
                }
                Ok(t.cloned())
            }
        }
    }
}

fn wildcard_prefix(s: &Scope) -> &str {
    let t = s.as_str();
    t.strip_suffix('*').unwrap_or(t)
}

impl<R: Borrow<KeyRecord>> From<&Authorized<R>> for Caller {
    fn from(authorized: &Authorized<R>) -> Self {
        Self::from_record(authorized.record())
    }
}

/// Whether an operation reads keys or changes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// List and get.
    Read,
    /// Create, update, rotate and delete.
    Write,
}

impl Access {
    /// The access an HTTP method needs: `GET` and `HEAD` read, everything else writes.
    #[must_use]
    pub fn of_method(method: &str) -> Self {
        if method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD") { Self::Read } else { Self::Write }
    }
}

/// The management API's settings.
///
/// ```
/// use keygate::{Access, ManageConfig};
/// let config = ManageConfig::default();
/// assert_eq!(config.required_scopes(Access::Read).as_str(), "read");
/// assert_eq!(config.required_scopes(Access::Write).as_str(), "write");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManageConfig {
    /// The scopes a caller needs to list and get keys (default `read`).
    pub read_scopes: RequiredScopes,
    /// The scopes a caller needs to create, update, rotate and delete keys (default `write`).
    pub write_scopes: RequiredScopes,
    /// How many times an update re-reads the key and re-applies itself when the key changed
    /// concurrently (a compare-and-swap conflict) before answering 409 (default 4).
    pub cas_attempts: u32,
    /// The longest overlap window of a rotation (default 90 days).
    pub max_overlap: Duration,
    /// The largest request body the handler reads (default 64 KiB).
    pub max_body: usize,
}

impl Default for ManageConfig {
    fn default() -> Self {
        // Both are valid scopes; the unit tests pin the values.
        let scope = |s| RequiredScopes::new(s).unwrap_or(RequiredScopes::EMPTY);
        Self {
            read_scopes: scope("read"),
            write_scopes: scope("write"),
            cas_attempts: 4,
            max_overlap: Duration::from_secs(90 * 86_400),
            max_body: 64 * 1024,
        }
    }
}

impl ManageConfig {
    /// The scopes an operation of `access` requires.
    #[must_use]
    pub fn required_scopes(&self, access: Access) -> &RequiredScopes {
        match access {
            Access::Read => &self.read_scopes,
            Access::Write => &self.write_scopes,
        }
    }
}

// ---- the operations' rules ------------------------------------------------------------------

/// Checks a create request without issuing anything: access, team, scopes and every field.
///
/// # Errors
///
/// The [`ManageError`] of the first rule broken.
pub fn check_create(
    caller: &Caller,
    config: &ManageConfig,
    request: &CreateKey,
    now: Timestamp,
) -> Result<(), ManageError> {
    caller.authorize(Access::Write, config)?;
    check_name("name", &request.name)?;
    if request.status == KeyStatus::Revoked {
        return Err(ManageError::invalid("status", InvalidValue::CreateRevoked));
    }
    caller.team_for_new_key(request.team_id.as_ref())?;
    caller.may_grant(&request.scopes)?;
    check_expiry("expires_at", request.expires_at, now)?;
    check_providers(&request.allowed_providers)?;
    check_ips(&request.allowed_ips)?;
    check_rate_limits(&request.rate_limit)?;
    if let Some(cap) = &request.spend_cap {
        check_spend_cap(cap)?;
    }
    Ok(())
}

/// The record of a new key: `issued` (from [`Verifier::issue`](crate::Verifier::issue) with
/// `request.kind`, holding the id, digest and prefix) configured as `request` asks.
///
/// # Errors
///
/// As [`check_create`].
pub fn plan_create(
    caller: &Caller,
    config: &ManageConfig,
    request: &CreateKey,
    issued: KeyRecord,
    now: Timestamp,
) -> Result<KeyRecord, ManageError> {
    check_create(caller, config, request, now)?;
    let mut r = issued;
    r.name.clone_from(&request.name);
    r.status = request.status;
    r.team_id = caller.team_for_new_key(request.team_id.as_ref())?;
    r.scopes = request.scopes.clone();
    r.expires_at = request.expires_at;
    r.allowed_models = request.allowed_models.clone();
    r.allowed_providers = check_providers(&request.allowed_providers)?;
    r.allowed_ips = check_ips(&request.allowed_ips)?;
    r.rate_limit = request.rate_limit;
    r.spend_cap = request.spend_cap;
    r.metadata = request.metadata.as_ref().map(|m| m.as_str().to_string());
    r.created_at = now;
    r.updated_at = now;
    r.last_used_at = None;
    Ok(r)
}

/// The store query for a listing: the caller's team unless it is an operator.
///
/// # Errors
///
/// [`ManageError::NotManagementKey`] or [`ManageError::MissingScope`]; [`ManageError::Invalid`]
/// for a bad `limit` or `team_id`; [`ManageError::TeamMismatch`] for another team's listing.
pub fn plan_list(caller: &Caller, config: &ManageConfig, request: &ListKeys) -> Result<ListQuery, ManageError> {
    caller.authorize(Access::Read, config)?;
    request.validate()?;
    let team_id = match (&caller.team_id, &request.team_id) {
        (Some(own), None) => Some(own.clone()),
        (Some(own), Some(t)) if own == t => Some(own.clone()),
        (Some(_), Some(_)) => return Err(ManageError::TeamMismatch),
        (None, t) => t.clone(),
    };
    Ok(ListQuery { team_id, limit: request.limit, offset: request.offset })
}

/// Whether the caller may read `found` (the record the store returned for the id, if any).
///
/// # Errors
///
/// [`ManageError::NotFound`] if there is no record or it belongs to another team; the access
/// errors of [`Caller::authorize`].
pub fn check_get(caller: &Caller, config: &ManageConfig, found: Option<&KeyRecord>) -> Result<(), ManageError> {
    caller.authorize(Access::Read, config)?;
    match found {
        Some(r) if caller.can_see(r) => Ok(()),
        _ => Err(ManageError::NotFound),
    }
}

/// Whether the caller may change (update, rotate, delete) `found`: write access, the same team,
/// and the key's scopes within the caller's.
fn check_write(caller: &Caller, config: &ManageConfig, found: Option<&KeyRecord>) -> Result<(), ManageError> {
    caller.authorize(Access::Write, config)?;
    let Some(r) = found.filter(|r| caller.can_see(r)) else { return Err(ManageError::NotFound) };
    caller.may_grant(&r.scopes)
}

/// Whether the caller may delete `found`.
///
/// # Errors
///
/// [`ManageError::NotFound`] as in [`check_get`]; [`ManageError::ScopeEscalation`] if the key
/// holds a scope the caller does not; the access errors of [`Caller::authorize`].
pub fn check_delete(caller: &Caller, config: &ManageConfig, found: Option<&KeyRecord>) -> Result<(), ManageError> {
    check_write(caller, config, found)
}

/// The record after `request` is applied to `existing` at `now`, or `None` if nothing changes.
///
/// A revoked key is terminal: it may still be renamed and its metadata edited, and setting
/// `revoked` again is a no-op, but any other change is [`ManageError::Revoked`].
///
/// # Errors
///
/// [`ManageError::NotFound`], [`ManageError::ScopeEscalation`] (for the key's current scopes or
/// the new ones), [`ManageError::Revoked`], [`ManageError::Invalid`] naming the field, or the
/// access errors of [`Caller::authorize`].
pub fn plan_update(
    caller: &Caller,
    config: &ManageConfig,
    existing: Option<&KeyRecord>,
    request: &UpdateKey,
    now: Timestamp,
) -> Result<Option<KeyRecord>, ManageError> {
    check_write(caller, config, existing)?;
    let Some(existing) = existing else { return Err(ManageError::NotFound) };
    if existing.status == KeyStatus::Revoked && !request.is_bookkeeping() {
        return Err(ManageError::Revoked);
    }
    let mut r = existing.clone();
    if let Some(name) = &request.name {
        check_name("name", name)?;
        r.name.clone_from(name);
    }
    if let Some(status) = request.status {
        r.status = status;
    }
    if let Some(blocked) = request.soft_blocked {
        r.soft_blocked = blocked;
    }
    if let Some(scopes) = &request.scopes {
        caller.may_grant(scopes)?;
        r.scopes = scopes.clone();
    }
    if let Some(models) = &request.allowed_models {
        r.allowed_models = models.clone();
    }
    if let Some(providers) = &request.allowed_providers {
        r.allowed_providers = check_providers(providers)?;
    }
    if let Some(ips) = &request.allowed_ips {
        r.allowed_ips = check_ips(ips)?;
    }
    check_rate_limit_patch(&request.rate_limit)?;
    r.rate_limit = request.rate_limit.apply(r.rate_limit);
    if let Patch::Set(cap) = &request.spend_cap {
        check_spend_cap(cap)?;
    }
    r.spend_cap = request.spend_cap.apply(r.spend_cap);
    if let Patch::Set(at) = request.expires_at {
        check_expiry("expires_at", Some(at), now)?;
    }
    r.expires_at = request.expires_at.apply(r.expires_at);
    r.metadata = match &request.metadata {
        Patch::Keep => r.metadata,
        Patch::Clear => None,
        Patch::Set(m) => Some(m.as_str().to_string()),
    };
    if r == *existing {
        return Ok(None);
    }
    r.updated_at = now;
    Ok(Some(r))
}

fn check_rate_limit_patch(p: &RateLimitPatch) -> Result<(), ManageError> {
    let value = |p: Patch<u32>| if let Patch::Set(v) = p { Some(v) } else { None };
    check_rate_limits(&crate::RateLimits {
        requests_per_minute: value(p.requests_per_minute),
        tokens_per_minute: value(p.tokens_per_minute),
        concurrency: value(p.concurrency),
    })
}

/// What a rotation writes: the successor to insert, and the old key's new expiry (if the
/// rotation has an overlap window that brings it forward).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotationPlan {
    /// The new key's record.
    pub successor: KeyRecord,
    /// When the old key is to expire, if the rotation sets it; apply it with [`expire_by`].
    pub old_expires_at: Option<Timestamp>,
}

/// Plans rotating `old` into a successor built on `issued` (from
/// [`Verifier::issue`](crate::Verifier::issue) with `old.kind`): the same configuration (status,
/// soft block, team, scopes, allowlists, limits, spend cap, metadata), the name bumped with
/// [`successor_name`] (or `request.name`), and the expiry `request.expires_at` says.
///
/// # Errors
///
/// As for an update ([`ManageError::NotFound`], [`ManageError::ScopeEscalation`],
/// [`ManageError::Revoked`] for a revoked key); [`ManageError::Invalid`] naming `name`,
/// `overlap_seconds` (longer than [`ManageConfig::max_overlap`]) or `expires_at` (not in the
/// future, also when copied from the old key).
pub fn plan_rotation(
    caller: &Caller,
    config: &ManageConfig,
    old: Option<&KeyRecord>,
    request: &RotateKey,
    issued: KeyRecord,
    now: Timestamp,
) -> Result<RotationPlan, ManageError> {
    check_write(caller, config, old)?;
    let Some(old) = old else { return Err(ManageError::NotFound) };
    if old.status == KeyStatus::Revoked {
        return Err(ManageError::Revoked);
    }
    let name = request.name.clone().unwrap_or_else(|| successor_name(&old.name));
    check_name("name", &name)?;
    if let Some(overlap) = request.overlap
        && overlap > config.max_overlap
    {
        let max = config.max_overlap.as_secs();
        return Err(ManageError::invalid("overlap_seconds", InvalidValue::OutOfRange { min: 0, max }));
    }
    let expires_at = request.expires_at.apply(old.expires_at);
    check_expiry("expires_at", expires_at, now)?;
    let mut s = issued;
    s.name = name;
    s.status = old.status;
    s.soft_blocked = old.soft_blocked;
    s.team_id.clone_from(&old.team_id);
    s.scopes = old.scopes.clone();
    s.allowed_models = old.allowed_models.clone();
    s.allowed_providers.clone_from(&old.allowed_providers);
    s.allowed_ips.clone_from(&old.allowed_ips);
    s.rate_limit = old.rate_limit;
    s.spend_cap = old.spend_cap;
    s.metadata.clone_from(&old.metadata);
    s.expires_at = expires_at;
    s.created_at = now;
    s.updated_at = now;
    s.last_used_at = None;
    Ok(RotationPlan { successor: s, old_expires_at: request.overlap.map(|d| now.saturating_add(d)) })
}

/// `record` set to expire at `at`, or `None` if it already expires by then (an expiry is only
/// ever brought forward) or is revoked.
#[must_use]
pub fn expire_by(record: &KeyRecord, at: Timestamp, now: Timestamp) -> Option<KeyRecord> {
    if record.status == KeyStatus::Revoked || record.expires_at.is_some_and(|e| e <= at) {
        return None;
    }
    let mut r = record.clone();
    r.expires_at = Some(at);
    r.updated_at = now;
    Some(r)
}

/// The name of a rotated key's successor: `name-v2`, or `name-v(N+1)` when the name already
/// ends in `-vN` (`N` a decimal number without leading zeros).
///
/// The result is validated as any name is: a name that grows past [`MAX_NAME_LEN`](crate::MAX_NAME_LEN)
/// makes the rotation fail with a 400 naming `name` (give the successor a name explicitly).
///
/// ```
/// use keygate::successor_name;
/// assert_eq!(successor_name("deploy"), "deploy-v2");
/// assert_eq!(successor_name("deploy-v2"), "deploy-v3");
/// assert_eq!(successor_name("deploy-v9"), "deploy-v10");
/// assert_eq!(successor_name("deploy-v02"), "deploy-v02-v2");
/// ```
#[must_use]
pub fn successor_name(name: &str) -> String {
    if let Some((base, n)) = name.rsplit_once("-v")
        && !n.is_empty()
        && (n == "0" || !n.starts_with('0'))
        && n.bytes().all(|c| c.is_ascii_digit())
        && let Ok(n) = n.parse::<u64>()
        && let Some(next) = n.checked_add(1)
    {
        return format!("{base}-v{next}");
    }
    format!("{name}-v2")
}

/// `record` with its last use at `at`, or `None` if the record already says as late or later.
/// The revision and `updated_at` are left alone: use is not a configuration change.
#[must_use]
pub fn record_use(record: &KeyRecord, at: Timestamp) -> Option<KeyRecord> {
    if record.last_used_at.is_some_and(|t| t >= at) {
        return None;
    }
    let mut r = record.clone();
    r.last_used_at = Some(at);
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(scopes: &str) -> Caller {
        Caller::new(KeyKind::MANAGEMENT, Some("t".into()), Scopes::parse(scopes).unwrap())
    }

    #[test]
    fn default_scopes_are_read_and_write() {
        let c = ManageConfig::default();
        assert_eq!(c.read_scopes.as_str(), "read");
        assert_eq!(c.write_scopes.as_str(), "write");
    }

    #[test]
    fn coverage() {
        let yes = [
            ("*", "*"),
            ("*", "keys:admin:*"),
            ("keys:*", "keys:*"),
            ("keys:*", "keys:admin:*"),
            ("keys:*", "keys:read"),
            ("read", "read"),
        ];
        for (grants, wanted) in yes {
            assert!(caller(grants).covers(&Scope::new(wanted).unwrap()), "{grants} covers {wanted}");
        }
        let no = [
            ("keys:*", "*"),
            ("keys:admin:*", "keys:*"),
            ("keys:read", "keys:*"),
            ("keys:*", "keys"),
            ("read", "write"),
            ("read write", "admin"),
            ("", "read"),
        ];
        for (grants, wanted) in no {
            assert!(!caller(grants).covers(&Scope::new(wanted).unwrap()), "{grants} does not cover {wanted}");
        }
    }

    #[test]
    fn names() {
        for (old, new) in [
            ("a", "a-v2"),
            ("a-v1", "a-v2"),
            ("a-v2", "a-v3"),
            ("a-v99", "a-v100"),
            ("a-v", "a-v-v2"),
            ("a-v0", "a-v1"),
            ("a-v01", "a-v01-v2"),
            ("a-v2x", "a-v2x-v2"),
            ("a-v18446744073709551615", "a-v18446744073709551615-v2"),
            ("x-v2-v3", "x-v2-v4"),
        ] {
            assert_eq!(successor_name(old), new);
        }
    }
}
