//! Key management as a user relies on it: the lifecycle of a key as seen by the verifier,
//! revocation being terminal, no scope escalation, team isolation, compare-and-swap updates,
//! rotation with an overlap window, and the last-used tracker's write budget.
#![cfg(feature = "std")]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keygate::format::SelectorFormat;
use keygate::manage::{
    Access, CreateKey, CreatedKey, LastUsed, ListKeys, ManageError, Metadata, Patch, RotateKey, UpdateKey,
};
use keygate::policy::authorize;
use keygate::secret::{PepperId, Peppers};
use keygate::store::{ListQuery, Page};
use keygate::verify::Lookup;
use keygate::{
    Caller, DenialCode, KeyId, KeyKind, KeyRecord, KeyStatus, KeyStore, Manager, MemoryStore, Pepper, RateLimits,
    RequiredScopes, Requirements, Scopes, SpendCap, SpendPeriod, StoreError, Timestamp, Verifier,
};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

const NOW: Timestamp = Timestamp::from_unix_secs(1_800_000_000);

fn at(secs: u64) -> Timestamp {
    Timestamp::from_unix_secs(1_800_000_000 + secs)
}

fn verifier() -> Verifier {
    let format = SelectorFormat::new("aistats").unwrap().with_kinds(&["sk", "mk"]).unwrap();
    Verifier::new(format, Peppers::new(Pepper::new(PepperId(1), &[9; 32]).unwrap()))
}

fn manager() -> Manager<MemoryStore> {
    Manager::new(MemoryStore::new(), verifier())
}

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::from_seed([5; 32])
}

fn scopes(s: &str) -> Scopes {
    Scopes::parse(s).unwrap()
}

fn create(m: &Manager<MemoryStore>, caller: &Caller, name: &str, s: &str, rng: &mut ChaCha20Rng) -> CreatedKey {
    let mut r = CreateKey::new(name);
    r.scopes = scopes(s);
    m.create(caller, &r, NOW, rng).unwrap()
}

/// A management key of `team` with `s`, as a caller authenticated through the verifier.
fn team_admin(m: &Manager<MemoryStore>, team: &str, s: &str, rng: &mut ChaCha20Rng) -> Caller {
    let mut r = CreateKey::new(format!("{team} admin"));
    r.kind = KeyKind::MANAGEMENT;
    r.team_id = Some(team.into());
    r.scopes = scopes(s);
    let created = m.create(&Caller::operator(), &r, NOW, rng).unwrap();
    let verified = m.verifier().authenticate(m.store(), created.token().expose_secret(), NOW).unwrap();
    let authorized = authorize(verified, &Requirements::new(), NOW).unwrap();
    Caller::from(&authorized)
}

fn update(f: impl FnOnce(&mut UpdateKey)) -> UpdateKey {
    let mut u = UpdateKey::default();
    f(&mut u);
    u
}

fn status(s: KeyStatus) -> UpdateKey {
    update(|u| u.status = Some(s))
}

fn auth_code(m: &Manager<MemoryStore>, token: &str, now: Timestamp) -> Option<DenialCode> {
    m.verifier().authenticate(m.store(), token, now).err().map(|d| d.code())
}

#[test]
fn lifecycle_create_use_disable_enable_revoke() {
    let m = manager();
    let mut rng = rng();
    let admin = team_admin(&m, "team-a", "read write", &mut rng);
    let created = create(&m, &admin, "service", "read", &mut rng);
    let id = created.record().id;
    let token = created.token().expose_secret().to_owned();
    assert_eq!(created.record().team_id.as_deref(), Some("team-a"), "a team key creates keys in its team");

    // Use: the new key authenticates and passes its policy.
    let verified = m.verifier().authenticate(m.store(), &token, NOW).unwrap();
    assert_eq!(verified.id(), id);
    let read: RequiredScopes = "read".parse().unwrap();
    assert!(authorize(verified, &Requirements::new().with_scopes(read), NOW).is_ok());

    // Disable, and the very next request fails; re-enable, and it works again.
    assert_eq!(m.update(&admin, &id, &status(KeyStatus::Disabled), at(1)).unwrap().status, KeyStatus::Disabled);
    assert_eq!(auth_code(&m, &token, at(1)), Some(DenialCode::DisabledApiKey));
    assert_eq!(m.update(&admin, &id, &status(KeyStatus::Active), at(2)).unwrap().status, KeyStatus::Active);
    assert_eq!(auth_code(&m, &token, at(2)), None);

    // Soft block: verified, refused by policy.
    m.update(&admin, &id, &update(|u| u.soft_blocked = Some(true)), at(3)).unwrap();
    let verified = m.verifier().authenticate(m.store(), &token, at(3)).unwrap();
    assert_eq!(authorize(verified, &Requirements::new(), at(3)).unwrap_err().code(), DenialCode::KeyBlocked);
    m.update(&admin, &id, &update(|u| u.soft_blocked = Some(false)), at(4)).unwrap();

    // Revoke: terminal.
    m.update(&admin, &id, &status(KeyStatus::Revoked), at(5)).unwrap();
    assert_eq!(auth_code(&m, &token, at(5)), Some(DenialCode::RevokedApiKey));
    for attempt in [
        status(KeyStatus::Active),
        status(KeyStatus::Disabled),
        update(|u| u.soft_blocked = Some(false)),
        update(|u| u.scopes = Some(scopes("read"))),
        update(|u| u.expires_at = Patch::Clear),
    ] {
        assert_eq!(m.update(&admin, &id, &attempt, at(6)), Err(ManageError::Revoked), "{attempt:?}");
    }
    assert_eq!(m.get(&admin, &id).unwrap().status, KeyStatus::Revoked);
    assert_eq!(auth_code(&m, &token, at(6)), Some(DenialCode::RevokedApiKey));
    assert_eq!(m.rotate(&admin, &id, &RotateKey::default(), at(6), &mut rng).unwrap_err(), ManageError::Revoked);
    // Bookkeeping on a revoked key is allowed; revoking again is a no-op.
    let renamed = m.update(&admin, &id, &update(|u| u.name = Some("service (leaked)".into())), at(7)).unwrap();
    assert_eq!((renamed.name.as_str(), renamed.status), ("service (leaked)", KeyStatus::Revoked));
    let again = m.update(&admin, &id, &status(KeyStatus::Revoked), at(8)).unwrap();
    assert_eq!(again.revision, renamed.revision, "nothing changed, nothing written");

    // Delete: the key is gone for everyone.
    m.delete(&admin, &id).unwrap();
    assert_eq!(auth_code(&m, &token, at(9)), Some(DenialCode::InvalidApiKey));
    assert_eq!(m.get(&admin, &id).unwrap_err(), ManageError::NotFound);
    assert_eq!(m.delete(&admin, &id).unwrap_err(), ManageError::NotFound);
}

#[test]
fn a_new_key_is_configured_as_asked() {
    let m = manager();
    let mut r = CreateKey::new("configured");
    r.scopes = scopes("chat:*");
    r.status = KeyStatus::Disabled;
    r.team_id = Some("team-x".into());
    r.expires_at = Some(at(3600));
    r.allowed_models = "gpt-4o claude-3*".parse().unwrap();
    r.allowed_providers = vec!["openai".into(), "anthropic".into(), "openai".into()];
    r.allowed_ips = vec!["10.0.0.0/8".parse().unwrap()];
    r.rate_limit = RateLimits { requests_per_minute: Some(60), tokens_per_minute: Some(10_000), concurrency: Some(4) };
    r.spend_cap = Some(SpendCap { amount_micros: 12_500_000, period: SpendPeriod::Month });
    r.metadata = Some(Metadata::parse(r#"{"owner": "search"}"#).unwrap());
    let created = m.create(&Caller::operator(), &r, NOW, &mut rng()).unwrap();
    let k = m.get(&Caller::operator(), &created.record().id).unwrap();
    assert_eq!(k.name, "configured");
    assert_eq!(k.status, KeyStatus::Disabled);
    assert_eq!(k.team_id.as_deref(), Some("team-x"));
    assert_eq!(k.expires_at, Some(at(3600)));
    assert_eq!(k.allowed_providers, ["anthropic", "openai"], "sorted, deduplicated");
    assert_eq!(k.rate_limit, r.rate_limit);
    assert_eq!(k.spend_cap, r.spend_cap);
    assert_eq!(k.metadata.as_deref(), Some(r#"{"owner":"search"}"#));
    assert_eq!((k.created_at, k.updated_at, k.last_used_at), (NOW, NOW, None));
    assert!(created.token().expose_secret().starts_with(&k.prefix));
    assert_eq!(k.kind, KeyKind::STANDARD);
}

/// A change that makes a create request invalid.
type CreateChange = fn(&mut CreateKey);

#[test]
fn every_field_is_validated_and_nothing_changes_on_error() {
    let m = manager();
    let op = Caller::operator();
    let mut rng = rng();
    let bad_creates: Vec<(CreateChange, &str)> = vec![
        (|r| r.name = String::new(), "name"),
        (|r| r.name = " padded".into(), "name"),
        (|r| r.name = "x".repeat(129), "name"),
        (|r| r.name = "tab\there".into(), "name"),
        (|r| r.status = KeyStatus::Revoked, "status"),
        (|r| r.team_id = Some("a b".into()), "team_id"),
        (|r| r.team_id = Some(String::new()), "team_id"),
        (|r| r.expires_at = Some(NOW), "expires_at"),
        (|r| r.allowed_providers = vec!["open ai".into()], "allowed_providers"),
        (|r| r.allowed_providers = vec![String::new()], "allowed_providers"),
        (|r| r.allowed_providers = (0..65).map(|i| format!("p{i}")).collect(), "allowed_providers"),
        (|r| r.allowed_ips = vec!["10.0.0.0/8".parse().unwrap(); 257], "allowed_ips"),
        (|r| r.rate_limit.requests_per_minute = Some(0), "rate_limit.requests_per_minute"),
        (|r| r.rate_limit.tokens_per_minute = Some(0), "rate_limit.tokens_per_minute"),
        (|r| r.rate_limit.concurrency = Some(0), "rate_limit.concurrency"),
        (
            |r| r.spend_cap = Some(SpendCap { amount_micros: u64::MAX, period: SpendPeriod::Day }),
            "spend_cap.amount_usd",
        ),
    ];
    for (change, field) in bad_creates {
        let mut r = CreateKey::new("ok");
        change(&mut r);
        let e = m.create(&op, &r, NOW, &mut rng).unwrap_err();
        assert_eq!((e.status(), e.code(), e.param()), (400, "invalid_value", Some(field)), "{e}");
    }
    assert!(m.store().is_empty(), "no refused create wrote anything");

    let id = create(&m, &op, "target", "read", &mut rng).record().id;
    let before = m.get(&op, &id).unwrap();
    let bad_updates: Vec<(UpdateKey, &str)> = vec![
        (update(|u| u.name = Some(String::new())), "name"),
        (update(|u| u.expires_at = Patch::Set(NOW)), "expires_at"),
        (update(|u| u.rate_limit.concurrency = Patch::Set(0)), "rate_limit.concurrency"),
        (update(|u| u.allowed_providers = Some(vec!["a,b".into()])), "allowed_providers"),
        (
            update(|u| {
                // A valid change first, then an invalid one: neither is applied.
                u.name = Some("renamed".into());
                u.spend_cap = Patch::Set(SpendCap { amount_micros: 1_000_000_000_000_001, period: SpendPeriod::Week });
            }),
            "spend_cap.amount_usd",
        ),
    ];
    for (u, field) in bad_updates {
        let e = m.update(&op, &id, &u, at(1)).unwrap_err();
        assert_eq!((e.status(), e.param()), (400, Some(field)), "{e}");
    }
    assert_eq!(m.get(&op, &id).unwrap(), before, "no refused update wrote anything");
}

#[test]
fn patches_keep_clear_and_set() {
    let m = manager();
    let op = Caller::operator();
    let mut r = CreateKey::new("limits");
    r.rate_limit = RateLimits { requests_per_minute: Some(60), tokens_per_minute: Some(1000), concurrency: Some(2) };
    r.expires_at = Some(at(100));
    r.metadata = Some(Metadata::parse("{\"a\":1}").unwrap());
    r.allowed_models = "gpt-4o".parse().unwrap();
    let id = m.create(&op, &r, NOW, &mut rng()).unwrap().record().id;

    let u = update(|u| {
        u.rate_limit.requests_per_minute = Patch::Set(120);
        u.rate_limit.concurrency = Patch::Clear;
        u.expires_at = Patch::Clear;
        u.allowed_models = Some(keygate::ModelAllowlist::empty());
    });
    let k = m.update(&op, &id, &u, at(1)).unwrap();
    assert_eq!(
        k.rate_limit,
        RateLimits { requests_per_minute: Some(120), tokens_per_minute: Some(1000), concurrency: None }
    );
    assert_eq!(k.expires_at, None);
    assert_eq!(k.metadata.as_deref(), Some("{\"a\":1}"), "absent is unchanged");
    assert!(k.allowed_models.is_empty());
    assert_eq!((k.updated_at, k.created_at), (at(1), NOW));

    // An update that changes nothing writes nothing.
    let same = m.update(&op, &id, &update(|u| u.rate_limit.requests_per_minute = Patch::Set(120)), at(2)).unwrap();
    assert_eq!((same.revision, same.updated_at), (k.revision, at(1)));
}

#[test]
fn no_scope_escalation() {
    let m = manager();
    let mut rng = rng();
    let admin = team_admin(&m, "team-a", "read write keys:*", &mut rng);
    let attempt = |s: &str, rng: &mut ChaCha20Rng| {
        let mut r = CreateKey::new("x");
        r.scopes = scopes(s);
        m.create(&admin, &r, NOW, rng)
    };
    for ok in ["", "read", "read write", "keys:read", "keys:admin:write", "keys:*", "keys:admin:*"] {
        assert!(attempt(ok, &mut rng).is_ok(), "{ok}");
    }
    for (bad, named) in
        [("admin", "admin"), ("read admin", "admin"), ("*", "*"), ("keys", "keys"), ("files:*", "files:*")]
    {
        let e = attempt(bad, &mut rng).unwrap_err();
        assert_eq!(e, ManageError::ScopeEscalation(named.into()), "{bad}");
        assert_eq!((e.status(), e.code(), e.param()), (403, "scope_escalation", Some("scopes")));
    }

    // Raising an existing key.
    let id = attempt("read", &mut rng).unwrap().record().id;
    for bad in ["read admin", "*", "keys read write files:x"] {
        let e = m.update(&admin, &id, &update(|u| u.scopes = Some(scopes(bad))), NOW).unwrap_err();
        assert_eq!(e.code(), "scope_escalation", "{bad}");
    }
    assert_eq!(m.get(&admin, &id).unwrap().scopes, scopes("read"));

    // A key beyond the caller's reach (made by the operator in the same team) can be seen, but
    // not changed, rotated or deleted: rotating it would hand the caller a key with its scopes.
    let mut r = CreateKey::new("root-made");
    r.team_id = Some("team-a".into());
    r.scopes = scopes("*");
    let strong = m.create(&Caller::operator(), &r, NOW, &mut rng).unwrap().record().id;
    assert!(m.get(&admin, &strong).is_ok());
    assert_eq!(m.update(&admin, &strong, &status(KeyStatus::Disabled), NOW).unwrap_err().code(), "scope_escalation");
    assert_eq!(m.rotate(&admin, &strong, &RotateKey::default(), NOW, &mut rng).unwrap_err().code(), "scope_escalation");
    assert_eq!(m.delete(&admin, &strong).unwrap_err().code(), "scope_escalation");
    assert_eq!(m.get(&admin, &strong).unwrap().status, KeyStatus::Active);

    // Any kind of key manages, but only with the right scope.
    let standard = m.get(&Caller::operator(), &id).unwrap();
    let user = Caller::from_record(&standard);
    assert!(m.list(&user, &ListKeys::default()).is_ok(), "a standard key with `read` reads");
    assert_eq!(m.delete(&user, &id).unwrap_err().code(), "insufficient_scope");
    let reader = team_admin(&m, "team-a", "read", &mut rng);
    assert!(m.list(&reader, &ListKeys::default()).is_ok());
    let e = m.update(&reader, &id, &status(KeyStatus::Disabled), NOW).unwrap_err();
    assert_eq!((e.status(), e.code()), (403, "insufficient_scope"));
    let writer = team_admin(&m, "team-a", "write", &mut rng);
    assert_eq!(m.get(&writer, &id).unwrap_err().code(), "insufficient_scope");
}

#[test]
fn teams_are_isolated() {
    let m = manager();
    let mut rng = rng();
    let a = team_admin(&m, "team-a", "read write", &mut rng);
    let b = team_admin(&m, "team-b", "read write", &mut rng);
    let a_key = create(&m, &a, "a1", "read", &mut rng).record().id;
    let b_key = create(&m, &b, "b1", "read", &mut rng).record().id;
    let unknown = KeyId::new("AAAAAAAAAAAAAAAA").unwrap();

    // Another team's key is exactly as absent as a key that does not exist.
    for id in [b_key, unknown] {
        assert_eq!(m.get(&a, &id).unwrap_err(), ManageError::NotFound);
        assert_eq!(m.update(&a, &id, &status(KeyStatus::Revoked), NOW).unwrap_err(), ManageError::NotFound);
        assert_eq!(m.delete(&a, &id).unwrap_err(), ManageError::NotFound);
        assert_eq!(m.rotate(&a, &id, &RotateKey::default(), NOW, &mut rng).unwrap_err(), ManageError::NotFound);
    }
    assert_eq!(m.get(&Caller::operator(), &b_key).unwrap().status, KeyStatus::Active);

    // Listing: only the own team; naming another is refused; the operator sees all.
    let page = m.list(&a, &ListKeys::default()).unwrap();
    let ids: Vec<_> = page.records.iter().map(|r| r.id).collect();
    assert_eq!(page.total, 2, "the admin key and a1");
    assert!(ids.contains(&a_key) && !ids.contains(&b_key));
    let mut other = ListKeys::default();
    other.team_id = Some("team-b".into());
    assert_eq!(m.list(&a, &other).unwrap_err(), ManageError::TeamMismatch);
    assert_eq!(m.list(&Caller::operator(), &other).unwrap().total, 2);
    assert_eq!(m.list(&Caller::operator(), &ListKeys::default()).unwrap().total, 4);

    // Creating in another team is refused; naming the own team is fine.
    let mut r = CreateKey::new("sneaky");
    r.team_id = Some("team-b".into());
    let e = m.create(&a, &r, NOW, &mut rng).unwrap_err();
    assert_eq!((e.status(), e.code(), e.param()), (403, "team_mismatch", Some("team_id")));
    r.team_id = Some("team-a".into());
    assert_eq!(m.create(&a, &r, NOW, &mut rng).unwrap().record().team_id.as_deref(), Some("team-a"));

    // A team caller cannot see keys of no team either.
    let rootless = create(&m, &Caller::operator(), "no team", "", &mut rng).record().id;
    assert_eq!(m.get(&a, &rootless).unwrap_err(), ManageError::NotFound);
}

/// A store whose `replace` fails with a conflict the first `n` times (a concurrent writer).
struct Contended {
    inner: MemoryStore,
    conflicts: AtomicUsize,
    replaces: AtomicUsize,
}

impl KeyStore for Contended {
    fn lookup(&self, lookup: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        self.inner.lookup(lookup)
    }
    fn insert(&self, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        self.inner.insert(record)
    }
    fn replace(&self, expected_revision: u64, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        self.replaces.fetch_add(1, Ordering::Relaxed);
        if self.conflicts.load(Ordering::Relaxed) > 0 {
            self.conflicts.fetch_sub(1, Ordering::Relaxed);
            // Someone else's change lands first.
            let mut other = KeyRecord::clone(&self.inner.get(&record.id)?.unwrap());
            other.metadata = Some("{\"by\":\"someone else\"}".into());
            self.inner.replace(expected_revision, other)?;
            return Err(StoreError::Conflict);
        }
        self.inner.replace(expected_revision, record)
    }
    fn delete(&self, id: &KeyId) -> Result<Arc<KeyRecord>, StoreError> {
        self.inner.delete(id)
    }
    fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        self.inner.list(query)
    }
}

#[test]
fn updates_retry_on_concurrent_changes_then_answer_409() {
    let store = Contended { inner: MemoryStore::new(), conflicts: AtomicUsize::new(0), replaces: AtomicUsize::new(0) };
    let m = Manager::new(store, verifier());
    let op = Caller::operator();
    let id = m.create(&op, &CreateKey::new("contended"), NOW, &mut rng()).unwrap().record().id;

    // Three conflicts: the fourth attempt (the default budget) succeeds, on the newer record.
    m.store().conflicts.store(3, Ordering::Relaxed);
    let k = m.update(&op, &id, &status(KeyStatus::Disabled), NOW).unwrap();
    assert_eq!(k.status, KeyStatus::Disabled);
    assert_eq!(k.metadata.as_deref(), Some("{\"by\":\"someone else\"}"), "the concurrent change is kept");
    assert_eq!(m.store().replaces.load(Ordering::Relaxed), 4);

    // Endless contention: bounded attempts, then 409.
    m.store().conflicts.store(100, Ordering::Relaxed);
    m.store().replaces.store(0, Ordering::Relaxed);
    let e = m.update(&op, &id, &status(KeyStatus::Active), NOW).unwrap_err();
    assert_eq!((e, m.store().replaces.load(Ordering::Relaxed)), (ManageError::Conflict, 4));
    assert_eq!(ManageError::Conflict.status(), 409);
    assert_eq!(ManageError::Conflict.error_type(), "conflict_error");
}

#[test]
fn rotation_copies_the_configuration_and_bumps_the_name() {
    let m = manager();
    let mut rng = rng();
    let admin = team_admin(&m, "team-a", "read write", &mut rng);
    let mut r = CreateKey::new("deploy");
    r.scopes = scopes("read");
    r.allowed_models = "gpt-4o".parse().unwrap();
    r.rate_limit.requests_per_minute = Some(30);
    r.expires_at = Some(at(86_400 * 30));
    r.metadata = Some(Metadata::parse("{\"env\":\"prod\"}").unwrap());
    let old = m.create(&admin, &r, NOW, &mut rng).unwrap();
    let old_token = old.token().expose_secret().to_owned();
    let old_id = old.record().id;

    let mut rotate = RotateKey::default();
    rotate.overlap = Some(Duration::from_secs(3600));
    let rotated = m.rotate(&admin, &old_id, &rotate, at(10), &mut rng).unwrap();
    let new = rotated.key().record();
    assert_eq!(new.name, "deploy-v2");
    assert_ne!(new.id, old_id);
    assert_eq!(
        (&new.scopes, &new.allowed_models, new.rate_limit, &new.metadata, &new.team_id, new.expires_at),
        (&r.scopes, &r.allowed_models, r.rate_limit, &old.record().metadata, &old.record().team_id, r.expires_at)
    );
    assert_eq!((new.created_at, new.last_used_at), (at(10), None));
    // The old key works during the overlap and expires by itself after it.
    assert_eq!(rotated.previous().expires_at, Some(at(3610)));
    assert_eq!(auth_code(&m, &old_token, at(3609)), None);
    assert_eq!(auth_code(&m, &old_token, at(3610)), Some(DenialCode::ExpiredApiKey));
    assert_eq!(auth_code(&m, rotated.key().token().expose_secret(), at(3610)), None);

    // Again: -v3; an overlap never extends an earlier expiry.
    let mut long = RotateKey::default();
    long.overlap = Some(Duration::from_secs(86_400 * 60));
    let v3 = m.rotate(&admin, &new.id, &long, at(20), &mut rng).unwrap();
    assert_eq!(v3.key().record().name, "deploy-v3");
    assert_eq!(v3.previous().expires_at, r.expires_at, "the earlier expiry stays");

    // Without an overlap the old key is left alone; the successor's expiry can be set.
    let mut plain = RotateKey::default();
    plain.expires_at = Patch::Clear;
    plain.name = Some("deploy-next".into());
    let next = m.rotate(&admin, &v3.key().record().id, &plain, at(30), &mut rng).unwrap();
    assert_eq!((next.key().record().name.as_str(), next.key().record().expires_at), ("deploy-next", None));
    assert_eq!(next.previous().expires_at, v3.key().record().expires_at);

    // Bounds: the overlap, and an expiry copied from an expired key.
    let mut too_long = RotateKey::default();
    too_long.overlap = Some(Duration::from_secs(86_400 * 91));
    assert_eq!(m.rotate(&admin, &old_id, &too_long, at(40), &mut rng).unwrap_err().param(), Some("overlap_seconds"));
    let e = m.rotate(&admin, &old_id, &RotateKey::default(), at(4000), &mut rng).unwrap_err();
    assert_eq!((e.code(), e.param()), ("invalid_value", Some("expires_at")));
    // Refused rotations leave no successor behind.
    assert_eq!(m.list(&admin, &ListKeys::default()).unwrap().total, 5, "admin, deploy, -v2, -v3, deploy-next");
}

#[test]
fn rotation_keeps_the_kind() {
    let m = manager();
    let mut rng = rng();
    let mut r = CreateKey::new("ops");
    r.kind = KeyKind::MANAGEMENT;
    r.scopes = scopes("read write");
    let id = m.create(&Caller::operator(), &r, NOW, &mut rng).unwrap().record().id;
    let rotated = m.rotate(&Caller::operator(), &id, &RotateKey::default(), NOW, &mut rng).unwrap();
    assert_eq!(rotated.key().record().kind, KeyKind::MANAGEMENT);
    assert!(rotated.key().token().expose_secret().starts_with("aistats_v1_mk_"));
}

#[test]
fn paging_is_stable_and_total_counts_everything() {
    let m = manager();
    let op = Caller::operator();
    let mut rng = rng();
    for i in 0..7 {
        create(&m, &op, &format!("k{i}"), "", &mut rng);
    }
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let page = m.list(&op, &ListKeys::page(3, offset)).unwrap();
        assert_eq!((page.total, page.limit, page.offset), (7, 3, offset));
        if page.records.is_empty() {
            break;
        }
        seen.extend(page.records.iter().map(|r| r.id));
        offset += 3;
    }
    let all: Vec<_> = m.list(&op, &ListKeys::page(250, 0)).unwrap().records.iter().map(|r| r.id).collect();
    assert_eq!(seen, all);
    for bad in [0, 251] {
        assert_eq!(m.list(&op, &ListKeys::page(bad, 0)).unwrap_err().param(), Some("limit"));
    }
}

/// A store that counts writes.
struct Counting {
    inner: MemoryStore,
    replaces: AtomicUsize,
}

impl KeyStore for Counting {
    fn lookup(&self, lookup: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        self.inner.lookup(lookup)
    }
    fn insert(&self, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        self.inner.insert(record)
    }
    fn replace(&self, expected_revision: u64, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        self.replaces.fetch_add(1, Ordering::Relaxed);
        self.inner.replace(expected_revision, record)
    }
    fn delete(&self, id: &KeyId) -> Result<Arc<KeyRecord>, StoreError> {
        self.inner.delete(id)
    }
    fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        self.inner.list(query)
    }
}

#[test]
fn last_used_is_written_at_most_once_per_interval() {
    let store = Counting { inner: MemoryStore::new(), replaces: AtomicUsize::new(0) };
    let v = verifier();
    let mut rng = rng();
    let ids: Vec<KeyId> =
        (0..3).map(|_| store.insert(v.issue(&mut rng, KeyKind::STANDARD, NOW).unwrap().1).unwrap().id).collect();
    let tracker = LastUsed::new(Duration::from_secs(60));
    let writes = || store.replaces.load(Ordering::Relaxed);

    // Key 0 is used every second for 10 minutes and flushed every 5 seconds.
    let mut last_write = None;
    let mut write_times = Vec::new();
    for s in 0..600 {
        tracker.touch(ids[0], at(s));
        if s % 5 == 0 {
            let before = writes();
            tracker.flush(&store, at(s));
            if writes() > before {
                assert_eq!(writes() - before, 1);
                if let Some(prev) = last_write {
                    assert!(s - prev >= 60, "two writes {prev}s and {s}s are closer than the interval");
                }
                last_write = Some(s);
                write_times.push(s);
                assert_eq!(store.get(&ids[0]).unwrap().unwrap().last_used_at, Some(at(s)), "the latest use");
            }
        }
    }
    assert_eq!(write_times, [0, 60, 120, 180, 240, 300, 360, 420, 480, 540], "one write per interval");

    // The last use (599 s) is written at the next due flush, and then nothing more is written.
    tracker.flush(&store, at(600));
    assert_eq!(store.get(&ids[0]).unwrap().unwrap().last_used_at, Some(at(599)));
    let after = writes();
    for s in (600..1000).step_by(7) {
        tracker.flush(&store, at(s));
    }
    assert_eq!(writes(), after, "no new use, no write");
    assert!(tracker.is_empty(), "an idle key's entry is dropped");

    // Untouched keys are never written; a use does not change `updated_at` or the config.
    assert_eq!(store.get(&ids[1]).unwrap().unwrap().last_used_at, None);
    let before = store.get(&ids[2]).unwrap().unwrap();
    tracker.touch(ids[2], at(5000));
    tracker.touch(ids[2], at(4000)); // out of order: the latest wins
    assert_eq!(tracker.flush(&store, at(5001)).written, 1);
    let after = store.get(&ids[2]).unwrap().unwrap();
    assert_eq!((after.last_used_at, after.updated_at), (Some(at(5000)), before.updated_at));

    // A deleted key is forgotten.
    store.delete(&ids[2]).unwrap();
    tracker.touch(ids[2], at(6000));
    let report = tracker.flush(&store, at(6000));
    assert_eq!((report.written, report.skipped), (0, 1));
    assert!(tracker.is_empty());
}

#[test]
fn last_used_from_many_threads() {
    let store = MemoryStore::new();
    let v = verifier();
    let mut rng = rng();
    let ids: Vec<KeyId> =
        (0..64).map(|_| store.insert(v.issue(&mut rng, KeyKind::STANDARD, NOW).unwrap().1).unwrap().id).collect();
    let tracker = LastUsed::new(Duration::from_secs(1));
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (tracker, ids) = (&tracker, &ids);
            s.spawn(move || {
                for i in 0..10_000u64 {
                    tracker.touch(ids[usize::try_from((i * 7 + t) % 64).unwrap()], at(i + t));
                }
            });
        }
    });
    assert_eq!(tracker.flush(&store, at(20_000)).written, 64);
    let latest = (0..64u64).map(|k| {
        // The largest `i + t` with `(i * 7 + t) % 64 == k`.
        (0..4u64).flat_map(|t| (0..10_000u64).filter(move |i| (i * 7 + t) % 64 == k).map(move |i| i + t)).max()
    });
    for (id, want) in ids.iter().zip(latest) {
        assert_eq!(store.get(id).unwrap().unwrap().last_used_at, want.map(at));
    }
}

#[test]
fn access_is_available_to_the_gateway() {
    let config = keygate::ManageConfig::default();
    assert_eq!(config.required_scopes(Access::of_method("GET")).as_str(), "read");
    assert_eq!(config.required_scopes(Access::of_method("DELETE")).as_str(), "write");
    assert_eq!(Caller::operator().authorize(Access::Write, &config), Ok(()));
    assert!(Caller::operator().is_operator());
}

// ---- issue 15: no escalation, rotation that keeps its budget, races ------------------------

fn cap(amount_micros: u64, period: SpendPeriod) -> SpendCap {
    SpendCap { amount_micros, period }
}

/// A management key of team-a that the operator restricted in every dimension, and its caller.
fn restricted_admin(m: &Manager<MemoryStore>, rng: &mut ChaCha20Rng) -> (Arc<KeyRecord>, Caller) {
    let mut r = CreateKey::new("restricted admin");
    r.kind = KeyKind::MANAGEMENT;
    r.team_id = Some("team-a".into());
    r.scopes = scopes("read write");
    r.expires_at = Some(at(86_400));
    r.allowed_models = "gpt-4o-mini claude-3*".parse().unwrap();
    r.allowed_providers = vec!["openai".into(), "anthropic".into()];
    r.allowed_ips = vec!["10.1.0.0/16".parse().unwrap()];
    r.rate_limit = RateLimits { requests_per_minute: Some(60), tokens_per_minute: Some(10_000), concurrency: Some(2) };
    r.spend_cap = Some(cap(5_000_000, SpendPeriod::Week));
    let record = Arc::clone(m.create(&Caller::operator(), &r, NOW, rng).unwrap().record());
    let caller = Caller::from_record(&record);
    (record, caller)
}

/// A create request exactly as restricted as [`restricted_admin`].
fn within_admin(name: &str) -> CreateKey {
    let mut r = CreateKey::new(name);
    r.scopes = scopes("read");
    r.expires_at = Some(at(86_400));
    r.allowed_models = "gpt-4o-mini claude-3-haiku".parse().unwrap();
    r.allowed_providers = vec!["openai".into()];
    r.allowed_ips = vec!["10.1.2.0/24".parse().unwrap()];
    r.rate_limit = RateLimits { requests_per_minute: Some(10), tokens_per_minute: Some(10_000), concurrency: Some(1) };
    r.spend_cap = Some(cap(1_000_000, SpendPeriod::Month));
    r
}

fn assert_escalation(e: &ManageError, field: &str) {
    assert_eq!((e.status(), e.code(), e.param()), (403, "escalation", Some(field)), "{e}");
    assert!(e.to_string().contains(field), "the message names `{field}`: {e}");
}

#[test]
fn a_key_cannot_lift_its_own_restrictions() {
    let m = manager();
    let mut rng = rng();
    let (own, admin) = restricted_admin(&m, &mut rng);
    let lifts: Vec<(UpdateKey, &str)> = vec![
        (update(|u| u.expires_at = Patch::Clear), "expires_at"),
        (update(|u| u.expires_at = Patch::Set(at(86_401))), "expires_at"),
        (update(|u| u.allowed_ips = Some(vec![])), "allowed_ips"),
        (update(|u| u.allowed_ips = Some(vec!["10.0.0.0/8".parse().unwrap()])), "allowed_ips"),
        (update(|u| u.allowed_models = Some(keygate::ModelAllowlist::empty())), "allowed_models"),
        (update(|u| u.allowed_models = Some("gpt-4o*".parse().unwrap())), "allowed_models"),
        (update(|u| u.allowed_providers = Some(vec![])), "allowed_providers"),
        (update(|u| u.allowed_providers = Some(vec!["openai".into(), "google".into()])), "allowed_providers"),
        (update(|u| u.rate_limit = keygate::manage::RateLimitPatch::clear_all()), "rate_limit.requests_per_minute"),
        (update(|u| u.rate_limit.tokens_per_minute = Patch::Set(10_001)), "rate_limit.tokens_per_minute"),
        (update(|u| u.rate_limit.concurrency = Patch::Clear), "rate_limit.concurrency"),
        (update(|u| u.spend_cap = Patch::Clear), "spend_cap"),
        (update(|u| u.spend_cap = Patch::Set(cap(5_000_001, SpendPeriod::Week))), "spend_cap"),
        // Five dollars a day is up to thirty-five a week.
        (update(|u| u.spend_cap = Patch::Set(cap(5_000_000, SpendPeriod::Day))), "spend_cap"),
    ];
    for (u, field) in lifts {
        assert_escalation(&m.update(&admin, &own.id, &u, at(1)).unwrap_err(), field);
    }
    assert_eq!(m.get(&admin, &own.id).unwrap(), own, "nothing was written");

    // Tightening itself is fine.
    let tighter = update(|u| u.rate_limit.requests_per_minute = Patch::Set(30));
    assert_eq!(m.update(&admin, &own.id, &tighter, at(2)).unwrap().rate_limit.requests_per_minute, Some(30));

    // A successor of itself with no expiry, or a later one: refused; a plain rotation keeps it.
    let mut forever = RotateKey::default();
    forever.expires_at = Patch::Clear;
    assert_escalation(&m.rotate(&admin, &own.id, &forever, at(3), &mut rng).unwrap_err(), "expires_at");
    forever.expires_at = Patch::Set(at(90_000));
    assert_escalation(&m.rotate(&admin, &own.id, &forever, at(3), &mut rng).unwrap_err(), "expires_at");
    let rotated = m.rotate(&admin, &own.id, &RotateKey::default(), at(3), &mut rng).unwrap();
    assert_eq!(rotated.key().record().expires_at, Some(at(86_400)));
    assert_eq!(m.list(&Caller::operator(), &ListKeys::default()).unwrap().total, 2, "no refused successor stays");
}

#[test]
fn no_key_creates_a_key_beyond_itself() {
    let m = manager();
    let mut rng = rng();
    let (_, admin) = restricted_admin(&m, &mut rng);
    assert!(m.create(&admin, &within_admin("within"), at(1), &mut rng).is_ok());

    type Widen = fn(&mut CreateKey);
    let widenings: Vec<(Widen, &str)> = vec![
        (|r| r.expires_at = None, "expires_at"),
        (|r| r.expires_at = Some(at(86_401)), "expires_at"),
        (|r| r.allowed_models = keygate::ModelAllowlist::empty(), "allowed_models"),
        (|r| r.allowed_models = "claude-*".parse().unwrap(), "allowed_models"),
        (|r| r.allowed_models = "gpt-4o".parse().unwrap(), "allowed_models"),
        (|r| r.allowed_providers = vec![], "allowed_providers"),
        (|r| r.allowed_providers = vec!["mistral".into()], "allowed_providers"),
        (|r| r.allowed_ips = vec![], "allowed_ips"),
        (|r| r.allowed_ips = vec!["10.0.0.0/8".parse().unwrap()], "allowed_ips"),
        (|r| r.allowed_ips = vec!["10.1.2.0/24".parse().unwrap(), "::1".parse().unwrap()], "allowed_ips"),
        (|r| r.rate_limit.requests_per_minute = None, "rate_limit.requests_per_minute"),
        (|r| r.rate_limit.requests_per_minute = Some(61), "rate_limit.requests_per_minute"),
        (|r| r.rate_limit.tokens_per_minute = None, "rate_limit.tokens_per_minute"),
        (|r| r.rate_limit.concurrency = Some(3), "rate_limit.concurrency"),
        (|r| r.spend_cap = None, "spend_cap"),
        (|r| r.spend_cap = Some(cap(5_000_001, SpendPeriod::Week)), "spend_cap"),
        (|r| r.spend_cap = Some(cap(1_000_000, SpendPeriod::Day)), "spend_cap"),
    ];
    for (widen, field) in widenings {
        let mut r = within_admin("wider");
        widen(&mut r);
        assert_escalation(&m.create(&admin, &r, at(1), &mut rng).unwrap_err(), field);
    }
    assert_eq!(m.list(&Caller::operator(), &ListKeys::default()).unwrap().total, 2, "admin and `within`");

    // A key of another kind only from a key of that kind.
    let mut management = within_admin("mk");
    management.kind = KeyKind::MANAGEMENT;
    assert!(m.create(&admin, &management, at(1), &mut rng).is_ok(), "the admin is a management key");
    let standard = Caller::new(KeyKind::STANDARD, Some("team-a".into()), scopes("read write"));
    assert_escalation(&m.create(&standard, &management, at(1), &mut rng).unwrap_err(), "kind");

    // The operator, and an unrestricted key of no team, stay unrestricted.
    let mut free = CreateKey::new("unrestricted");
    free.scopes = scopes("read write");
    assert!(m.create(&Caller::operator(), &free, at(1), &mut rng).is_ok());
}

#[test]
fn a_key_cannot_widen_another_key_beyond_itself() {
    let m = manager();
    let mut rng = rng();
    let (_, admin) = restricted_admin(&m, &mut rng);
    let id = m.create(&admin, &within_admin("child"), at(1), &mut rng).unwrap().record().id;
    for (u, field) in [
        (update(|u| u.spend_cap = Patch::Clear), "spend_cap"),
        (update(|u| u.allowed_ips = Some(vec![])), "allowed_ips"),
        (update(|u| u.rate_limit.requests_per_minute = Patch::Set(61)), "rate_limit.requests_per_minute"),
    ] {
        assert_escalation(&m.update(&admin, &id, &u, at(2)).unwrap_err(), field);
    }
    // Narrowing, or moving within the caller's own bounds, is fine.
    let ok = update(|u| {
        u.rate_limit.requests_per_minute = Patch::Set(60);
        u.allowed_ips = Some(vec!["10.1.0.0/16".parse().unwrap()]);
    });
    assert!(m.update(&admin, &id, &ok, at(2)).is_ok());

    // A key the operator made broader than the caller (no limits) may still be disabled or
    // renamed by it, but not given limits beyond its own, and not rotated (the caller would get
    // the successor's token).
    let mut r = CreateKey::new("operator-made");
    r.team_id = Some("team-a".into());
    let wide = m.create(&Caller::operator(), &r, at(1), &mut rng).unwrap().record().id;
    assert_eq!(m.update(&admin, &wide, &status(KeyStatus::Disabled), at(2)).unwrap().status, KeyStatus::Disabled);
    let e = m.update(&admin, &wide, &update(|u| u.rate_limit.concurrency = Patch::Set(10)), at(2)).unwrap_err();
    assert_escalation(&e, "rate_limit.concurrency");
    assert_escalation(&m.rotate(&admin, &wide, &RotateKey::default(), at(2), &mut rng).unwrap_err(), "expires_at");
}

#[test]
fn a_standard_key_with_the_scopes_manages_its_team() {
    let m = manager();
    let mut rng = rng();
    let mut r = CreateKey::new("team-a automation");
    r.team_id = Some("team-a".into());
    r.scopes = scopes("read write");
    let standard = m.create(&Caller::operator(), &r, NOW, &mut rng).unwrap();
    assert_eq!(standard.record().kind, KeyKind::STANDARD);
    let verified = m.verifier().authenticate(m.store(), standard.token().expose_secret(), NOW).unwrap();
    let caller = Caller::from(&authorize(verified, &Requirements::new(), NOW).unwrap());

    let child = create(&m, &caller, "child", "read", &mut rng);
    assert_eq!(child.record().team_id.as_deref(), Some("team-a"));
    assert_eq!(m.list(&caller, &ListKeys::default()).unwrap().total, 2);
    assert!(m.update(&caller, &child.record().id, &status(KeyStatus::Disabled), NOW).is_ok());
    assert!(m.rotate(&caller, &child.record().id, &RotateKey::default(), NOW, &mut rng).is_ok());
    assert!(m.delete(&caller, &child.record().id).is_ok());

    // Team scoping and the scopes apply as to any caller.
    let other = create(&m, &Caller::operator(), "elsewhere", "", &mut rng).record().id;
    assert_eq!(m.get(&caller, &other).unwrap_err(), ManageError::NotFound);
    let mut reader = CreateKey::new("reader");
    reader.team_id = Some("team-a".into());
    reader.scopes = scopes("read");
    let reader = Caller::from_record(m.create(&Caller::operator(), &reader, NOW, &mut rng).unwrap().record());
    assert!(m.list(&reader, &ListKeys::default()).is_ok());
    let e = m.create(&reader, &CreateKey::new("no"), NOW, &mut rng).unwrap_err();
    assert_eq!((e.status(), e.code()), (403, "insufficient_scope"));
    let nothing = Caller::new(KeyKind::STANDARD, Some("team-a".into()), Scopes::new());
    assert_eq!(m.list(&nothing, &ListKeys::default()).unwrap_err().code(), "insufficient_scope");
}

#[test]
fn an_operator_may_still_require_the_management_kind() {
    let mut config = keygate::ManageConfig::default();
    config.required_kind = Some(KeyKind::MANAGEMENT);
    let m = Manager::new(MemoryStore::new(), verifier()).with_config(config);
    let mut rng = rng();
    let standard = Caller::new(KeyKind::STANDARD, Some("team-a".into()), scopes("read write"));
    let e = m.list(&standard, &ListKeys::default()).unwrap_err();
    assert_eq!((e.status(), e.code()), (403, "management_key_required"));
    let management = Caller::new(KeyKind::MANAGEMENT, Some("team-a".into()), scopes("read write"));
    assert!(m.create(&management, &CreateKey::new("ok"), NOW, &mut rng).is_ok());
    assert!(m.list(&Caller::operator(), &ListKeys::default()).is_ok());
}

/// Rotation keeps credits, and a successor continues its predecessor's counters: what was used
/// of the credits and spent of the cap before the rotation still counts after it.
#[test]
fn rotation_keeps_credits_and_continues_the_budget() {
    use keygate::limit::Limiter;
    use keygate::{Credits, LimitRequest, MemoryLimitStore, Usage};
    let m = manager();
    let mut rng = rng();
    let op = Caller::operator();
    let limiter = Limiter::new(MemoryLimitStore::new());
    let mut r = CreateKey::new("metered");
    r.spend_cap = Some(cap(1_000, SpendPeriod::Day));
    let id = m.create(&op, &r, NOW, &mut rng).unwrap().record().id;
    // Credits are set on the record (ten in all, never refilled).
    let stored = m.store().get(&id).unwrap().unwrap();
    let mut with_credits = KeyRecord::clone(&stored);
    with_credits.credits = Some(Credits { amount: 10, refill: None });
    m.store().replace(stored.revision, with_credits).unwrap();
    let credits = |n| LimitRequest::new().with_credits(n);

    // Nine credits used; the spend cap reached.
    let old = m.store().get(&id).unwrap().unwrap();
    limiter.check(&old, credits(9), NOW).unwrap().finish(Usage::new(0, 1_000), NOW).unwrap();
    assert_eq!(limiter.check(&old, credits(1), NOW).unwrap_err().code(), DenialCode::QuotaExceeded, "capped");

    let mut rotate = RotateKey::default();
    rotate.overlap = Some(Duration::from_secs(3600));
    let rotated = m.rotate(&op, &id, &rotate, at(1), &mut rng).unwrap();
    let new = rotated.key().record();
    assert_eq!(new.credits, Some(Credits { amount: 10, refill: None }), "credits are copied");
    // Still capped after the rotation, through the successor and the old key alike.
    assert_eq!(limiter.check(new, credits(1), at(1)).unwrap_err().code(), DenialCode::QuotaExceeded);
    let old = m.store().get(&id).unwrap().unwrap();
    assert_eq!(limiter.check(&old, credits(1), at(1)).unwrap_err().code(), DenialCode::QuotaExceeded);

    // Lift the cap: the one credit left is used once, by either key, then refused.
    let mut uncapped = UpdateKey::default();
    uncapped.spend_cap = Patch::Clear;
    let new = m.update(&op, &new.id, &uncapped, at(2)).unwrap();
    limiter.check(&new, credits(1), at(2)).unwrap().finish(Usage::new(0, 0), at(2)).unwrap();
    assert_eq!(limiter.check(&new, credits(1), at(2)).unwrap_err().code(), DenialCode::QuotaExceeded);

    // A rotation of the successor continues the same budget.
    let third = m.rotate(&op, &new.id, &RotateKey::default(), at(3), &mut rng).unwrap();
    assert_eq!(third.key().record().budget_id(), old.budget_id());
    assert_eq!(limiter.check(third.key().record(), credits(1), at(3)).unwrap_err().code(), DenialCode::QuotaExceeded);
}

/// A concurrent writer's change, run once.
type Race = Box<dyn FnOnce(&MemoryStore) + Send>;

/// A store that runs `race` once, right after the `n`th call to `get` returns (another writer
/// changing the key between a read and the write that depends on it).
struct Racing {
    inner: MemoryStore,
    gets: AtomicUsize,
    at_get: usize,
    race: std::sync::Mutex<Option<Race>>,
}

impl Racing {
    fn new(at_get: usize) -> Self {
        Self { inner: MemoryStore::new(), gets: AtomicUsize::new(0), at_get, race: std::sync::Mutex::new(None) }
    }

    fn arm(&self, race: impl FnOnce(&MemoryStore) + Send + 'static) {
        self.gets.store(0, Ordering::SeqCst);
        *self.race.lock().unwrap() = Some(Box::new(race));
    }
}

impl KeyStore for Racing {
    fn lookup(&self, lookup: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        let found = self.inner.lookup(lookup);
        if self.gets.fetch_add(1, Ordering::SeqCst) + 1 == self.at_get
            && let Some(race) = self.race.lock().unwrap().take()
        {
            race(&self.inner);
        }
        found
    }
    fn insert(&self, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        self.inner.insert(record)
    }
    fn replace(&self, expected_revision: u64, record: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        self.inner.replace(expected_revision, record)
    }
    fn delete(&self, id: &KeyId) -> Result<Arc<KeyRecord>, StoreError> {
        self.inner.delete(id)
    }
    fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        self.inner.list(query)
    }
}

fn change(store: &MemoryStore, id: KeyId, f: impl FnOnce(&mut KeyRecord)) {
    let current = store.get(&id).unwrap().unwrap();
    let mut next = KeyRecord::clone(&current);
    f(&mut next);
    store.replace(current.revision, next).unwrap();
}

#[test]
fn a_change_during_a_rotation_reaches_the_successor() {
    let m = Manager::new(Racing::new(1), verifier());
    let mut rng = rng();
    let op = Caller::operator();
    let mut r = CreateKey::new("racing");
    r.rate_limit.requests_per_minute = Some(100);
    let id = m.create(&op, &r, NOW, &mut rng).unwrap().record().id;

    // The key is disabled and tightened right after the rotation read it.
    m.store().arm(move |s| {
        change(s, id, |k| {
            k.status = KeyStatus::Disabled;
            k.rate_limit.requests_per_minute = Some(5);
        });
    });
    let rotated = m.rotate(&op, &id, &RotateKey::default(), at(1), &mut rng).unwrap();
    let successor = m.get(&op, &rotated.key().record().id).unwrap();
    assert_eq!((successor.status, successor.rate_limit.requests_per_minute), (KeyStatus::Disabled, Some(5)));
    assert_eq!(*rotated.key().record(), successor, "the answer shows what is stored");
    let token = rotated.key().token().expose_secret().to_owned();
    assert_eq!(
        m.verifier().authenticate(m.store(), &token, at(1)).err().map(|d| d.code()),
        Some(DenialCode::DisabledApiKey)
    );
}

#[test]
fn a_delete_checks_the_record_it_deletes() {
    let m = Manager::new(Racing::new(1), verifier());
    let mut rng = rng();
    let mut r = CreateKey::new("admin");
    r.kind = KeyKind::MANAGEMENT;
    r.team_id = Some("team-a".into());
    r.scopes = scopes("read write");
    let admin = Caller::from_record(m.create(&Caller::operator(), &r, NOW, &mut rng).unwrap().record());
    let mut r = CreateKey::new("target");
    r.scopes = scopes("read");
    let id = m.create(&admin, &r, NOW, &mut rng).unwrap().record().id;

    // The operator raises the key's scopes beyond the admin's right after the delete read it.
    m.store().arm(move |s| change(s, id, |k| k.scopes = Scopes::parse("*").unwrap()));
    assert_eq!(m.delete(&admin, &id).unwrap_err().code(), "scope_escalation");
    assert_eq!(m.get(&Caller::operator(), &id).unwrap().scopes, scopes("*"), "still there");
}
