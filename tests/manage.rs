//! Key management as a user relies on it: the lifecycle of a key as seen by the verifier,
//! revocation being terminal, no scope escalation, team isolation, compare-and-swap updates,
//! rotation with an overlap window, and the last-used tracker's write budget.
#![cfg(feature = "std")]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keygate::{
    Access, Caller, CreateKey, CreatedKey, DenialCode, KeyId, KeyKind, KeyRecord, KeyStatus, KeyStore, LastUsed,
    ListKeys, ListQuery, Lookup, ManageError, Manager, MemoryStore, Metadata, Page, Patch, Pepper, PepperId, Peppers,
    RateLimits, RequestAttrs, RequiredScopes, RotateKey, Scopes, SelectorFormat, SpendCap, SpendPeriod, StoreError,
    Timestamp, UpdateKey, Verifier, authorize,
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
    let authorized = authorize(verified, &RequestAttrs::new(), NOW).unwrap();
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
    assert!(authorize(verified, &RequestAttrs::new().with_scopes(&read), NOW).is_ok());

    // Disable, and the very next request fails; re-enable, and it works again.
    assert_eq!(m.update(&admin, &id, &status(KeyStatus::Disabled), at(1)).unwrap().status, KeyStatus::Disabled);
    assert_eq!(auth_code(&m, &token, at(1)), Some(DenialCode::DisabledApiKey));
    assert_eq!(m.update(&admin, &id, &status(KeyStatus::Active), at(2)).unwrap().status, KeyStatus::Active);
    assert_eq!(auth_code(&m, &token, at(2)), None);

    // Soft block: verified, refused by policy.
    m.update(&admin, &id, &update(|u| u.soft_blocked = Some(true)), at(3)).unwrap();
    let verified = m.verifier().authenticate(m.store(), &token, at(3)).unwrap();
    assert_eq!(authorize(verified, &RequestAttrs::new(), at(3)).unwrap_err().code(), DenialCode::KeyBlocked);
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

    // Only management keys manage, and only with the right scope.
    let standard = m.get(&Caller::operator(), &id).unwrap();
    let user = Caller::from_record(&standard);
    assert_eq!(m.list(&user, &ListKeys::default()).unwrap_err(), ManageError::NotManagementKey);
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
