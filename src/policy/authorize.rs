//! The evaluation: [`authorize`] a [`Verified`] key for one request (needs `alloc`).

#![cfg(feature = "alloc")]

use core::borrow::Borrow;
use core::fmt;

use super::{RequestedModel, Requirements};
use crate::verify::Verified;
use crate::{Denial, DenialCode, KeyId, KeyRecord, RequiredScopes, Timestamp};

/// Proof that a verified key may make a request: the output of [`authorize`] and of nothing
/// else. It holds the key's record (`R` as in [`Verified`]) for what the request does next:
/// the limits stage, usage accounting, logging by key id.
#[must_use]
pub struct Authorized<R> {
    verified: Verified<R>,
}

impl<R: Borrow<KeyRecord>> Authorized<R> {
    /// The key's record.
    #[must_use]
    pub fn record(&self) -> &KeyRecord {
        self.verified.record()
    }

    /// The key's id.
    #[must_use]
    pub fn id(&self) -> KeyId {
        self.record().id
    }

    /// The key's team, if any.
    #[must_use]
    pub fn team_id(&self) -> Option<&str> {
        self.record().team_id.as_deref()
    }

    /// The verification this authorization built on (for [`Verified::rehash`]).
    pub fn verified(&self) -> &Verified<R> {
        &self.verified
    }

    /// The verification, consuming the authorization.
    pub fn into_verified(self) -> Verified<R> {
        self.verified
    }

    /// The record, consuming the authorization.
    pub fn into_record(self) -> R {
        self.verified.into_record()
    }
}

impl<R: Borrow<KeyRecord>> fmt::Debug for Authorized<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorized").field("id", &self.id()).field("team_id", &self.team_id()).finish_non_exhaustive()
    }
}

/// The policy stage: may the verified key make this request at `now`?
///
/// A pure function: no I/O, no clock, no allocation. The checks run in the order of the
/// decision table, and the first that fails decides:
///
/// 1. the 401s: revoked and disabled keys never get here ([`Verified`] is proof the status was
///    active); expiry is re-checked at `now` (one comparison) so that a `Verified` kept past its
///    key's `expires_at` still says `expired_api_key`;
/// 2. `key_blocked`: the record is soft-blocked;
/// 3. `ip_not_allowed`: the key has an IP allowlist and the client address is outside it or
///    unknown (IPv4-mapped IPv6 addresses match IPv4 blocks);
/// 4. `insufficient_scope`: a required scope is not granted (see [`Scopes`](crate::Scopes)); the
///    denial carries the required scopes for the `WWW-Authenticate` header;
/// 5. `model_not_allowed`: the request names a model outside the key's
///    [`ModelAllowlist`](crate::ModelAllowlist), or its model is
///    [`Unreadable`](RequestedModel::Unreadable) and the key has a model or provider allowlist
///    (a model that could not be read is never admitted by a restricted key);
/// 6. `provider_not_allowed`: the request names a provider outside the key's
///    `allowed_providers` (exact, case-sensitive names).
///
/// Empty lists are unrestricted. Limits (429) come after, in their own stage.
///
/// ```
/// use keygate::{DenialCode, KeyKind, Pepper, Requirements, Scopes, Timestamp, Verifier};
/// use keygate::policy::authorize;
/// use keygate::format::SelectorFormat;
/// use keygate::secret::{PepperId, Peppers};
/// # fn main() -> Result<(), Box<dyn core::error::Error>> {
/// # let verifier = Verifier::new(SelectorFormat::new("aistats")?, Peppers::new(Pepper::new(PepperId(1), &[7; 32])?));
/// # let now = Timestamp::from_unix_secs(1_800_000_000);
/// # let (key, mut record) = verifier.issue(&mut keygate::OsRng, KeyKind::STANDARD, now)?;
/// # let token = key.token().expose_secret();
/// record.scopes = Scopes::parse("chat:*")?;
/// record.allowed_ips = vec!["10.0.0.0/8".parse()?];
/// let parsed = verifier.parse(token)?;
/// let check = |request: &Requirements| {
///     let verified = verifier.verify(&parsed, &verifier.lookup(&parsed), Some(&record), now);
///     verified.and_then(|v| authorize(v, request, now))
/// };
/// let from_lan = Requirements::new().with_scopes("chat:write".parse()?).with_client_ip("10.1.2.3".parse()?);
/// assert_eq!(check(&from_lan)?.id(), record.id);
///
/// let denial = check(&from_lan.clone().with_scopes("keys:write".parse()?)).unwrap_err();
/// assert_eq!(denial.code(), DenialCode::InsufficientScope);
/// assert_eq!(denial.required_scopes().map(|s| s.as_str()), Some("keys:write"));
///
/// let from_away = from_lan.with_client_ip("192.0.2.1".parse()?);
/// assert_eq!(check(&from_away).unwrap_err().code(), DenialCode::IpNotAllowed);
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// A [`Denial`] with `expired_api_key` (401) or one of the 403 codes above.
#[inline]
pub fn authorize<R: Borrow<KeyRecord>>(
    verified: Verified<R>,
    request: &Requirements,
    now: Timestamp,
) -> Result<Authorized<R>, Denial> {
    match check(verified.record(), request, now) {
        Ok(()) => Ok(Authorized { verified }),
        Err(denial) => Err(denial),
    }
}

#[inline]
fn check(r: &KeyRecord, request: &Requirements, now: Timestamp) -> Result<(), Denial> {
    if r.is_expired(now) {
        return Err(Denial::new(DenialCode::ExpiredApiKey));
    }
    if r.soft_blocked {
        return Err(Denial::new(DenialCode::KeyBlocked));
    }
    if !r.allowed_ips.is_empty() {
        let inside = request.client_ip.is_some_and(|ip| r.allowed_ips.iter().any(|net| net.contains(ip)));
        if !inside {
            return Err(Denial::new(DenialCode::IpNotAllowed));
        }
    }
    if !request.scopes.is_empty() && !r.scopes.permits(&request.scopes) {
        return Err(insufficient_scope(&request.scopes));
    }
    match request.model.as_deref() {
        RequestedModel::Absent => {}
        RequestedModel::Named(model) => {
            if !r.allowed_models.permits(model) {
                return Err(Denial::new(DenialCode::ModelNotAllowed));
            }
        }
        RequestedModel::Unreadable => {
            if !r.allowed_models.is_empty() || !r.allowed_providers.is_empty() {
                return Err(Denial::new(DenialCode::ModelNotAllowed));
            }
        }
    }
    if let Some(provider) = request.provider.as_deref()
        && !r.allowed_providers.is_empty()
        && !r.allowed_providers.iter().any(|p| p == provider)
    {
        return Err(Denial::new(DenialCode::ProviderNotAllowed));
    }
    Ok(())
}

#[cold]
fn insufficient_scope(required: &RequiredScopes) -> Denial {
    Denial::new(DenialCode::InsufficientScope).with_required_scopes(*required)
}
