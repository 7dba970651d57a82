//! The rules of key management as pure functions of (caller, request, existing records, now).
//!
//! Nothing here does I/O or reads a clock: each function takes the records a driver read and
//! returns the records the driver should write, or the reason to refuse. The synchronous
//! [`Manager`](crate::Manager) is one such driver; an asynchronous store reuses these functions
//! with its own.

use alloc::format;
use alloc::string::{String, ToString};

use super::bounds::Bounds;
use super::caller::{Access, Caller, ManageConfig};
use super::request::{
    check_credits, check_expiry, check_ips, check_name, check_providers, check_rate_limits, check_spend_cap,
};
use super::{CreateKey, InvalidValue, ListKeys, ManageError, Patch, RateLimitPatch, RotateKey, UpdateKey};
use crate::store::ListQuery;
use crate::{KeyRecord, KeyStatus, Timestamp};

/// Checks a create request without issuing anything: access, team, every field, and that the
/// new key is within the caller (scopes, kind and every restriction of the caller's key).
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
    let bounds = Bounds {
        expires_at: request.expires_at,
        allowed_models: request.allowed_models.clone(),
        allowed_providers: check_providers(&request.allowed_providers)?,
        allowed_ips: check_ips(&request.allowed_ips)?,
        rate_limit: request.rate_limit,
        spend_cap: request.spend_cap,
        credits: request.credits,
    };
    check_rate_limits(&request.rate_limit)?;
    if let Some(cap) = &request.spend_cap {
        check_spend_cap(cap)?;
    }
    if let Some(credits) = &request.credits {
        check_credits(credits)?;
    }
    caller.may_configure(request.kind, &request.scopes, &bounds, None)
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
    r.credits = request.credits;
    r.spend_alerts = request.spend_alerts;
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
    let team_id = match (caller.team_id(), &request.team_id) {
        (Some(own), None) => Some(own.to_string()),
        (Some(own), Some(t)) if own == t => Some(t.clone()),
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
/// the new ones), [`ManageError::Escalation`] naming a changed field that would be broader than
/// the caller's own, [`ManageError::Revoked`], [`ManageError::Invalid`] naming the field, or the
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
    if let Patch::Set(credits) = &request.credits {
        check_credits(credits)?;
    }
    r.credits = request.credits.apply(r.credits);
    r.spend_alerts = request.spend_alerts.apply(r.spend_alerts);
    r.metadata = match &request.metadata {
        Patch::Keep => r.metadata,
        Patch::Clear => None,
        Patch::Set(m) => Some(m.as_str().to_string()),
    };
    if r == *existing {
        return Ok(None);
    }
    caller.may_configure(r.kind, &r.scopes, &Bounds::of(&r), Some((&existing.scopes, &Bounds::of(existing))))?;
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
/// soft block, team, scopes, allowlists, limits, spend cap, credits, metadata), the name bumped
/// with [`successor_name`] (or `request.name`), and the expiry `request.expires_at` says. The
/// successor continues the old key's limit counters (spend, credits, rates, concurrency):
/// [`KeyRecord::inherits_budget`] names the key whose counters they are.
///
/// # Errors
///
/// As for an update ([`ManageError::NotFound`], [`ManageError::ScopeEscalation`],
/// [`ManageError::Revoked`] for a revoked key); [`ManageError::Escalation`] naming the first
/// field of the successor broader than the caller (the caller receives its token);
/// [`ManageError::Invalid`] naming `name`,
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
    s.credits = old.credits;
    s.spend_alerts = old.spend_alerts;
    s.inherits_budget = Some(old.budget_id());
    s.metadata.clone_from(&old.metadata);
    s.expires_at = expires_at;
    s.created_at = now;
    s.updated_at = now;
    s.last_used_at = None;
    // The caller receives the successor's token: it must hold nothing the caller does not.
    caller.may_configure(s.kind, &s.scopes, &Bounds::of(&s), None)?;
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
/// The result is validated as any name is: a name that grows past [`MAX_NAME_LEN`](crate::manage::MAX_NAME_LEN)
/// makes the rotation fail with a 400 naming `name` (give the successor a name explicitly).
///
/// ```
/// use keygate::manage::successor_name;
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
