//! The evaluation: [`authorize`] a [`Verified`] key for one request (needs `alloc`).

#![cfg(feature = "alloc")]

use core::borrow::Borrow;
use core::fmt;
use core::net::IpAddr;

use crate::{Denial, DenialCode, KeyId, KeyRecord, RequiredScopes, Timestamp, Verified};

/// What a request asks for: the attributes the policy stage checks. All optional.
///
/// An attribute the request does not have is not checked, with one exception: a key with an IP
/// allowlist refuses a request whose client address is unknown (`ip_not_allowed`), because every
/// request has a client and a server that forgets to pass it must not open the key to the world.
/// A request without a model (such as `GET /v1/models`) passes a model allowlist; a request with
/// no required scopes passes whatever the key's scopes are.
///
/// ```
/// use keygate::{RequestAttrs, RequiredScopes};
/// let chat: RequiredScopes = "chat:write".parse()?;
/// let request = RequestAttrs::new()
///     .with_scopes(&chat)
///     .with_model("gpt-4o")
///     .with_provider("openai")
///     .with_client_ip("203.0.113.7".parse()?);
/// assert_eq!(request.model, Some("gpt-4o"));
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestAttrs<'a> {
    /// The scopes the endpoint requires; `None` (or empty) requires none.
    pub scopes: Option<&'a RequiredScopes>,
    /// The model the request uses, as the client named it.
    pub model: Option<&'a str>,
    /// The provider the request is routed to.
    pub provider: Option<&'a str>,
    /// The client's address (the peer, or the address a trusted proxy reported).
    pub client_ip: Option<IpAddr>,
    /// A label for the route, reported in decision events (not checked).
    pub route: Option<&'a str>,
}

impl<'a> RequestAttrs<'a> {
    /// A request with no attributes.
    #[must_use]
    pub const fn new() -> Self {
        Self { scopes: None, model: None, provider: None, client_ip: None, route: None }
    }

    /// Sets the required scopes.
    #[must_use]
    pub const fn with_scopes(mut self, scopes: &'a RequiredScopes) -> Self {
        self.scopes = Some(scopes);
        self
    }

    /// Sets the model.
    #[must_use]
    pub const fn with_model(mut self, model: &'a str) -> Self {
        self.model = Some(model);
        self
    }

    /// Sets the provider.
    #[must_use]
    pub const fn with_provider(mut self, provider: &'a str) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Labels the route for decision events.
    #[must_use]
    pub const fn with_route(mut self, route: &'a str) -> Self {
        self.route = Some(route);
        self
    }

    /// Sets the client address.
    #[must_use]
    pub const fn with_client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = Some(ip);
        self
    }
}

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
///    [`ModelAllowlist`](crate::ModelAllowlist);
/// 6. `provider_not_allowed`: the request names a provider outside the key's
///    `allowed_providers` (exact, case-sensitive names).
///
/// Empty lists are unrestricted. Limits (429) come after, in their own stage.
///
/// ```
/// use keygate::{
///     authorize, DenialCode, KeyKind, Pepper, PepperId, Peppers, RequestAttrs, Scopes, SelectorFormat,
///     Timestamp, Verifier,
/// };
/// # fn main() -> Result<(), Box<dyn core::error::Error>> {
/// # let verifier = Verifier::new(SelectorFormat::new("aistats")?, Peppers::new(Pepper::new(PepperId(1), &[7; 32])?));
/// # let now = Timestamp::from_unix_secs(1_800_000_000);
/// # let (key, mut record) = verifier.issue(&mut keygate::OsRng, KeyKind::STANDARD, now)?;
/// # let token = key.token().expose_secret();
/// record.scopes = Scopes::parse("chat:*")?;
/// record.allowed_ips = vec!["10.0.0.0/8".parse()?];
/// let parsed = verifier.parse(token)?;
/// let check = |attrs: &RequestAttrs<'_>| {
///     let verified = verifier.verify(&parsed, &verifier.lookup(&parsed), Some(&record), now);
///     verified.and_then(|v| authorize(v, attrs, now))
/// };
/// let chat = "chat:write".parse()?;
/// let from_lan = RequestAttrs::new().with_scopes(&chat).with_client_ip("10.1.2.3".parse()?);
/// assert_eq!(check(&from_lan)?.id(), record.id);
///
/// let keys = "keys:write".parse()?;
/// let denial = check(&from_lan.with_scopes(&keys)).unwrap_err();
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
    request: &RequestAttrs<'_>,
    now: Timestamp,
) -> Result<Authorized<R>, Denial> {
    match check(verified.record(), request, now) {
        Ok(()) => Ok(Authorized { verified }),
        Err(denial) => Err(denial),
    }
}

#[inline]
fn check(r: &KeyRecord, request: &RequestAttrs<'_>, now: Timestamp) -> Result<(), Denial> {
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
    if let Some(required) = request.scopes
        && !r.scopes.permits(required)
    {
        return Err(insufficient_scope(required));
    }
    if let Some(model) = request.model
        && !r.allowed_models.permits(model)
    {
        return Err(Denial::new(DenialCode::ModelNotAllowed));
    }
    if let Some(provider) = request.provider
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
