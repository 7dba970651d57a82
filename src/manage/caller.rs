//! Who calls the management API ([`Caller`]), what an operation needs ([`Access`]), and the
//! operator's settings ([`ManageConfig`]).

use alloc::string::{String, ToString};
use core::borrow::Borrow;
use core::time::Duration;

use super::ManageError;
use super::bounds::{Bounds, kind_within};
use super::request::check_team_id;
use crate::policy::{Authorized, Scope};
use crate::{KeyKind, KeyRecord, RequiredScopes, Scopes};

/// Who is calling the management API: the key it authenticated with (its kind, team, scopes
/// and restrictions), or the operator.
///
/// Build it from the caller's [`Authorized`] key (`Caller::from(&authorized)`), or with
/// [`Caller::operator`] for the operator's own tooling. The management API trusts the caller
/// it is given: authenticate the key first.
///
/// - Access comes from scopes, not from the key's kind: reads need
///   [`ManageConfig::read_scopes`] (`read`), writes [`ManageConfig::write_scopes`] (`write`)
///   ([`ManageError::MissingScope`]). An operator who wants a separate management kind sets
///   [`ManageConfig::required_kind`]; keys of other kinds are then refused
///   ([`ManageError::NotManagementKey`]).
/// - A caller with a team sees and changes only the keys of that team; any other key is
///   [`ManageError::NotFound`], exactly as if it did not exist.
/// - A caller without a team is an operator credential: it sees and changes every key of
///   every team.
/// - No caller configures a key beyond itself. Every scope it gives a key (on create, update
///   or rotation) must be within its own ([`ManageError::ScopeEscalation`]), and it may change,
///   rotate or delete only keys whose scopes are within its own. Every other restriction of
///   the caller's own key binds the keys it creates, the successors it rotates out, and every
///   field it changes: expiry (no later), IP allowlist (within its networks), model and
///   provider allowlists (within its own), requests and tokens per minute, concurrency, spend
///   cap and credits (no higher, and present when its own are) ([`ManageError::Escalation`]
///   naming the field). A caller built with [`Caller::new`] or [`Caller::operator`] has no
///   restrictions but its scopes.
///
/// ```
/// use keygate::{Caller, Scopes};
/// let team_admin = Caller::new(keygate::KeyKind::STANDARD, Some("team-a".into()), Scopes::parse("read write")?);
/// assert_eq!(team_admin.team_id(), Some("team-a"));
/// assert!(team_admin.may_grant(&Scopes::parse("read")?).is_ok());
/// assert!(team_admin.may_grant(&Scopes::parse("admin")?).is_err());
/// assert!(Caller::operator().may_grant(&Scopes::parse("*")?).is_ok());
/// # Ok::<(), keygate::policy::ScopeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    team_id: Option<String>,
    scopes: Scopes,
    /// The kind of the caller's key; `None` for the operator's tooling.
    kind: Option<KeyKind>,
    /// The restrictions of the caller's key.
    bounds: Bounds,
}

impl Caller {
    /// A caller holding a key of `kind` in `team_id` with `scopes`, and no other restriction.
    /// A caller that holds a stored key should be built from it ([`Caller::from_record`]), so
    /// that its key's restrictions bind what it configures.
    #[must_use]
    pub fn new(kind: KeyKind, team_id: Option<String>, scopes: Scopes) -> Self {
        Self { team_id, scopes, kind: Some(kind), bounds: Bounds::default() }
    }

    /// The operator: no team, every scope (`*`), no restriction, any kind.
    #[must_use]
    pub fn operator() -> Self {
        // `*` is a valid scope, so this never falls back to the (powerless) empty set.
        let all = Scopes::parse("*").unwrap_or_default();
        Self { team_id: None, scopes: all, kind: None, bounds: Bounds::default() }
    }

    /// The caller holding the key of `record`: its kind, team, scopes and restrictions.
    #[must_use]
    pub fn from_record(record: &KeyRecord) -> Self {
        Self {
            team_id: record.team_id.clone(),
            scopes: record.scopes.clone(),
            kind: Some(record.kind),
            bounds: Bounds::of(record),
        }
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

    /// The kind of the caller's key; `None` for [`Caller::operator`].
    #[must_use]
    pub fn kind(&self) -> Option<KeyKind> {
        self.kind
    }

    /// Whether the caller sees every team (it has none).
    #[must_use]
    pub fn is_operator(&self) -> bool {
        self.team_id.is_none()
    }

    /// Whether the caller may perform an operation of `access`: the configured scopes, and the
    /// configured kind if [`ManageConfig::required_kind`] names one. The gateway may also check
    /// the scopes per route with [`authorize`](crate::policy::authorize) and
    /// [`ManageConfig::required_scopes`].
    ///
    /// # Errors
    ///
    /// [`ManageError::NotManagementKey`] or [`ManageError::MissingScope`].
    pub fn authorize(&self, access: Access, config: &ManageConfig) -> Result<(), ManageError> {
        if let (Some(required), Some(kind)) = (config.required_kind, self.kind)
            && kind != required
        {
            return Err(ManageError::NotManagementKey);
        }
        let required = config.required_scopes(access);
        if self.scopes.permits(required) { Ok(()) } else { Err(ManageError::MissingScope(*required)) }
    }

    /// Whether a key of `kind` with `scopes` and `bounds` is within the caller, looking only at
    /// what differs from `before` (an update) or at everything (a new key).
    pub(super) fn may_configure(
        &self,
        kind: KeyKind,
        scopes: &Scopes,
        bounds: &Bounds,
        before: Option<(&Scopes, &Bounds)>,
    ) -> Result<(), ManageError> {
        if before.is_none_or(|(s, _)| s != scopes) {
            self.may_grant(scopes)?;
        }
        if before.is_none() && !kind_within(kind, self.kind) {
            return Err(ManageError::Escalation("kind"));
        }
        match self.bounds.first_wider(bounds, before.map(|(_, b)| b)) {
            Some(field) => Err(ManageError::Escalation(field)),
            None => Ok(()),
        }
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
    pub(super) fn team_for_new_key(&self, requested: Option<&String>) -> Result<Option<String>, ManageError> {
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
    /// Create, update, rotate, delete and import.
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
/// use keygate::ManageConfig;
/// use keygate::manage::Access;
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
    /// The largest import body the handler reads (default 1 MiB: a full batch of
    /// [`MAX_IMPORT_BATCH`](crate::manage::MAX_IMPORT_BATCH) entries of about 1 KiB each).
    pub max_import_body: usize,
    /// If set, only keys of this kind (and [`Caller::operator`]) may use the management API,
    /// with the scopes above; keys of other kinds get 403 `management_key_required`. Default
    /// `None`: any key with the scopes manages, as the AI Stats management guide has it (a
    /// standard `sk` key).
    pub required_kind: Option<KeyKind>,
    /// How responses write a key's `scopes` (default [`ScopesWire::Array`]). Requests accept
    /// every form either way.
    pub scopes_wire: ScopesWire,
}

/// How the management API's responses write a key's scopes.
///
/// ```
/// use keygate::ManageConfig;
/// use keygate::manage::ScopesWire;
/// let mut config = ManageConfig::default();
/// config.scopes_wire = ScopesWire::JsonString; // "scopes": "[\"read\",\"write\"]"
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ScopesWire {
    /// A JSON array of strings: `"scopes": ["read","write"]`.
    #[default]
    Array,
    /// The array encoded as a JSON string, as the AI Stats documentation's example response
    /// shows it: `"scopes": "[\"read\",\"write\"]"`.
    JsonString,
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
            max_import_body: 1024 * 1024,
            required_kind: None,
            scopes_wire: ScopesWire::Array,
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
}
