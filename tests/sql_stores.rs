//! The SQL stores against real databases: one contract, run on `MemoryStore` (the reference),
//! SQLite in a temporary file and PostgreSQL.
//!
//! PostgreSQL is `KEYGATE_POSTGRES_URL`, or a throwaway server the tests start
//! (`tests/support/servers.rs`). Each test works in a schema of its own (`search_path`), dropped
//! at the end. Without PostgreSQL the PostgreSQL tests say so and pass, except with `KEYGATE_CI`
//! set, where they fail.

#![cfg(any(feature = "sqlite", feature = "postgres"))]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

#[cfg(feature = "postgres")]
mod support;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use keygate::record::KeyShape;
use keygate::secret::{DigestScheme, PepperId, StoredDigest};
use keygate::store::{BatchError, ListQuery, MAX_PAGE, SqlConfig};
use keygate::verify::Lookup;
use keygate::{
    AsyncKeyStore, Credits, IpCidr, KeyId, KeyKind, KeyRecord, KeyStatus, MemoryStore, ModelAllowlist, RateLimits,
    Scopes, SpendCap, SpendPeriod, StoreError, Timestamp,
};

// ---------------------------------------------------------------------------------------------
// Records

fn id(s: &str) -> KeyId {
    KeyId::new(s).unwrap()
}

/// A digest that differs per `seed`.
fn digest(seed: &str) -> StoredDigest {
    let mut bytes = [0u8; 32];
    for (i, b) in seed.bytes().enumerate() {
        bytes[i % 32] ^= b.rotate_left(u32::try_from(i % 8).unwrap());
        bytes[(i * 7 + 3) % 32] = bytes[(i * 7 + 3) % 32].wrapping_add(b);
    }
    bytes[31] = u8::try_from(seed.len()).unwrap();
    StoredDigest { scheme: DigestScheme::HmacSha256(PepperId(1)), bytes }
}

fn selector(kid: &str, created_secs: u64) -> KeyRecord {
    KeyRecord::new(id(kid), KeyShape::Selector, KeyKind::STANDARD, digest(kid), Timestamp::from_unix_secs(created_secs))
}

fn opaque(kid: &str, created_secs: u64) -> KeyRecord {
    KeyRecord::new(id(kid), KeyShape::Opaque, KeyKind::STANDARD, digest(kid), Timestamp::from_unix_secs(created_secs))
}

/// A record with every field set to something other than its default.
fn full_record(kid: &str, team: &str) -> KeyRecord {
    let mut r = KeyRecord::new(
        id(kid),
        KeyShape::Opaque,
        KeyKind::new("mk").unwrap(),
        StoredDigest::sha256_of(kid.as_bytes()),
        Timestamp::from_unix_nanos(1_700_000_000_123_456_789),
    );
    r.revision = 41;
    r.name = "CI deploy key — ünïcode ✓".into();
    r.prefix = "aistats_v1_mk_".into();
    r.status = KeyStatus::Disabled;
    r.soft_blocked = true;
    r.team_id = Some(team.into());
    r.scopes = Scopes::parse("keys:read keys:write usage:*").unwrap();
    r.allowed_models = ModelAllowlist::new(["gpt-4o", "claude-*"]).unwrap();
    r.allowed_providers = vec!["openai".into(), "Anthropic".into()];
    r.allowed_ips = vec![
        IpCidr::new(Ipv4Addr::new(10, 0, 0, 0).into(), 8).unwrap(),
        IpCidr::from(Ipv4Addr::new(192, 0, 2, 7)),
        IpCidr::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0).into(), 32).unwrap(),
        IpCidr::from(Ipv6Addr::LOCALHOST),
    ];
    r.rate_limit = RateLimits { requests_per_minute: Some(600), tokens_per_minute: Some(90_000), concurrency: Some(4) };
    r.spend_cap = Some(SpendCap { amount_micros: 25_000_000, period: SpendPeriod::Month });
    r.credits = Some(Credits { amount: 1_000, refill: Some(SpendPeriod::Day) });
    r.metadata = Some(r#"{"owner": "ci", "nested": {"n": [1, 2.5, null]}}"#.into());
    r.updated_at = Timestamp::from_unix_nanos(1_700_000_100_000_000_001);
    r.expires_at = Some(Timestamp::from_unix_secs(1_900_000_000));
    r.last_used_at = Some(Timestamp::from_unix_nanos(1_700_000_050_999_999_999));
    r.inherits_budget = Some(id("predecessor0001"));
    r
}

/// A name no other test run uses: process id, a counter and the clock.
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}_{}_{}_{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------------------------------------
// The contract, as MemoryStore keeps it

/// Everything `KeyStore` promises, for a store that holds no key of team `team` (ids are
/// prefixed with `p` so that runs sharing a database do not collide).
async fn contract<S: AsyncKeyStore>(store: &S, p: &str) {
    crud_and_cas(store, p).await;
    opaque_digests(store, p).await;
    full_round_trip(store, p).await;
    listing(store, p).await;
    batches(store, p).await;
}

/// `insert_batch`: all or none, naming every record whose id or opaque digest is taken (by the
/// store or an earlier record of the batch); batches longer than one SQL statement's rows.
async fn batches<S: AsyncKeyStore>(store: &S, p: &str) {
    let stored = opaque(&format!("{p}bstored"), 20);
    store.insert(stored.clone()).await.unwrap();
    let fresh = |n: usize| selector(&format!("{p}b{n}"), 21);
    let mut same_digest = opaque(&format!("{p}bdigest"), 22);
    same_digest.digest = stored.digest;
    let refused = vec![fresh(0), opaque(&format!("{p}bstored"), 23), fresh(1), fresh(0), same_digest];
    assert_eq!(store.insert_batch(refused).await, Err(BatchError::Conflicts(vec![1, 3, 4])));
    for n in 0..2 {
        assert_eq!(store.get(&fresh(n).id).await, Ok(None), "nothing of a refused batch is stored");
    }
    assert_eq!(store.get(&id(&format!("{p}bdigest"))).await, Ok(None));

    // 1 200 records: more than one statement's worth in the SQL stores.
    let many: Vec<KeyRecord> = (0..1200).map(fresh).collect();
    let written = store.insert_batch(many.clone()).await.unwrap();
    assert_eq!(written.iter().map(|r| (**r).clone()).collect::<Vec<_>>(), many);
    for r in [&many[0], &many[599], &many[1199]] {
        assert_eq!(store.get(&r.id).await.unwrap().as_deref(), Some(r));
    }
    // The last one again: refused, and the rest of that batch with it.
    let again = vec![fresh(5000), many[1199].clone()];
    assert_eq!(store.insert_batch(again).await, Err(BatchError::Conflicts(vec![1])));
    assert_eq!(store.get(&fresh(5000).id).await, Ok(None));
    for r in many.iter().chain([&stored]) {
        store.delete(&r.id).await.unwrap();
    }
}

async fn crud_and_cas<S: AsyncKeyStore>(store: &S, p: &str) {
    let kid = format!("{p}a");
    let k = id(&kid);
    assert_eq!(store.get(&k).await, Ok(None));
    assert_eq!(store.lookup(&Lookup::Id(k)).await, Ok(None));

    // Insert returns the record as given; a second insert with the id conflicts.
    let mut r = selector(&kid, 100);
    r.revision = 7;
    let stored = store.insert(r.clone()).await.unwrap();
    assert_eq!(*stored, r);
    assert_eq!(store.get(&k).await.unwrap().as_deref(), Some(&r));
    assert_eq!(store.lookup(&Lookup::Id(k)).await.unwrap().as_deref(), Some(&r));
    assert_eq!(store.insert(selector(&kid, 200)).await, Err(StoreError::Conflict));
    // A selector record is not found by its digest.
    assert_eq!(store.lookup(&Lookup::Digest(r.digest)).await, Ok(None));

    // Replace: compare-and-swap on the revision; the stored revision is expected + 1.
    let mut changed = r.clone();
    changed.name = "renamed".into();
    changed.status = KeyStatus::Revoked;
    changed.revision = 999; // ignored: the store sets it
    let replaced = store.replace(7, changed.clone()).await.unwrap();
    assert_eq!(replaced.revision, 8);
    assert_eq!(replaced.name, "renamed");
    let now = store.get(&k).await.unwrap().unwrap();
    assert_eq!(now, replaced);
    // A stale revision conflicts and changes nothing.
    assert_eq!(store.replace(7, changed.clone()).await, Err(StoreError::Conflict));
    assert_eq!(store.replace(9, changed.clone()).await, Err(StoreError::Conflict));
    assert_eq!(store.get(&k).await.unwrap().unwrap().revision, 8);
    // The revision cannot overflow.
    assert_eq!(store.replace(u64::MAX, changed.clone()).await, Err(StoreError::Conflict));
    // No such key.
    let missing = selector(&format!("{p}missing"), 1);
    assert_eq!(store.replace(0, missing.clone()).await, Err(StoreError::NotFound));
    assert_eq!(store.replace(u64::MAX, missing.clone()).await, Err(StoreError::NotFound));
    assert_eq!(store.delete(&missing.id).await, Err(StoreError::NotFound));

    // Delete returns the record; it is gone at once.
    assert_eq!(store.delete(&k).await.unwrap(), now);
    assert_eq!(store.get(&k).await, Ok(None));
    assert_eq!(store.delete(&k).await, Err(StoreError::NotFound));
    assert_eq!(store.replace(8, changed).await, Err(StoreError::NotFound));
}

async fn opaque_digests<S: AsyncKeyStore>(store: &S, p: &str) {
    let a = opaque(&format!("{p}oa"), 10);
    store.insert(a.clone()).await.unwrap();
    assert_eq!(store.lookup(&Lookup::Digest(a.digest)).await.unwrap().as_deref(), Some(&a));
    assert_eq!(store.lookup(&Lookup::Id(a.id)).await.unwrap().as_deref(), Some(&a));
    let unknown = digest(&format!("{p}nobody"));
    assert_eq!(store.lookup(&Lookup::Digest(unknown)).await, Ok(None));

    // Another opaque key with the same digest conflicts; a selector key may share it.
    let mut b = opaque(&format!("{p}ob"), 11);
    b.digest = a.digest;
    assert_eq!(store.insert(b.clone()).await, Err(StoreError::Conflict));
    assert_eq!(store.get(&b.id).await, Ok(None));
    let mut s = selector(&format!("{p}os"), 12);
    s.digest = a.digest;
    store.insert(s.clone()).await.unwrap();
    assert_eq!(store.lookup(&Lookup::Digest(a.digest)).await.unwrap().as_deref(), Some(&a));

    // b under its own digest, then replaced onto a's digest: conflict, nothing changes.
    b.digest = digest(&format!("{p}ob"));
    store.insert(b.clone()).await.unwrap();
    let mut onto_a = b.clone();
    onto_a.digest = a.digest;
    assert_eq!(store.replace(0, onto_a).await, Err(StoreError::Conflict));
    assert_eq!(store.lookup(&Lookup::Digest(b.digest)).await.unwrap().as_deref(), Some(&b));

    // Rotating a's digest: the old digest finds nothing, the new one finds a.
    let mut rotated = a.clone();
    rotated.digest = digest(&format!("{p}oa-rotated"));
    let rotated = store.replace(0, rotated).await.unwrap();
    assert_eq!(store.lookup(&Lookup::Digest(a.digest)).await, Ok(None));
    assert_eq!(store.lookup(&Lookup::Digest(rotated.digest)).await.unwrap(), Some(rotated.clone()));
    // Now the old digest is free for another opaque key.
    let mut c = opaque(&format!("{p}oc"), 13);
    c.digest = a.digest;
    store.insert(c.clone()).await.unwrap();
    assert_eq!(store.lookup(&Lookup::Digest(a.digest)).await.unwrap().as_deref(), Some(&c));

    // Turning an opaque key into a selector key frees its digest from the digest index.
    let mut as_selector = (*store.get(&c.id).await.unwrap().unwrap()).clone();
    as_selector.shape = KeyShape::Selector;
    store.replace(0, as_selector).await.unwrap();
    assert_eq!(store.lookup(&Lookup::Digest(a.digest)).await, Ok(None));

    // Deleting frees the digest.
    assert_eq!(store.delete(&b.id).await.unwrap().id, b.id);
    assert_eq!(store.lookup(&Lookup::Digest(b.digest)).await, Ok(None));
    for k in [&rotated.id, &s.id, &c.id] {
        store.delete(k).await.unwrap();
    }
}

async fn full_round_trip<S: AsyncKeyStore>(store: &S, p: &str) {
    let r = full_record(&format!("{p}full"), &format!("{p}team-full"));
    assert_eq!(*store.insert(r.clone()).await.unwrap(), r);
    assert_eq!(store.get(&r.id).await.unwrap().as_deref(), Some(&r));
    assert_eq!(store.lookup(&Lookup::Digest(r.digest)).await.unwrap().as_deref(), Some(&r));
    // Through replace too, with every optional field cleared, then set again.
    let mut cleared = KeyRecord::new(r.id, KeyShape::Selector, KeyKind::STANDARD, digest("x"), r.created_at);
    cleared.digest.scheme = DigestScheme::HmacSha256(PepperId(u32::MAX));
    let cleared = store.replace(41, cleared).await.unwrap();
    assert_eq!(store.get(&r.id).await.unwrap(), Some(cleared));
    let mut again = r.clone();
    again.expires_at = Some(Timestamp::MAX); // past what a BIGINT of nanoseconds holds
    again.last_used_at = Some(Timestamp::EPOCH);
    let again = store.replace(42, again).await.unwrap();
    assert_eq!(again.revision, 43);
    assert_eq!(store.get(&r.id).await.unwrap(), Some(again));
    store.delete(&r.id).await.unwrap();
}

/// The ids of a listing, in order.
fn ids(page: &keygate::store::Page) -> Vec<KeyId> {
    page.records.iter().map(|r| r.id).collect()
}

async fn listing<S: AsyncKeyStore>(store: &S, p: &str) {
    let team_a = format!("{p}team-a");
    let team_b = format!("{p}team-b");
    // Ties in creation time, ids of different lengths and in scrambled insertion order:
    // the order is (created_at, id) with KeyId's own order (shorter ids first).
    let mut records = Vec::new();
    for (n, (suffix, created)) in [
        ("zz", 5),
        ("b", 5),
        ("aaa", 5),
        ("A", 5),
        ("_-", 5),
        ("m", 3),
        ("c9", 9),
        ("c10", 9),
        ("q", 1),
        ("r", 7),
        ("Z", 7),
        ("y", 2),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = if n % 3 == 0 {
            opaque(&format!("{p}{suffix}"), created)
        } else {
            selector(&format!("{p}{suffix}"), created)
        };
        r.team_id = Some(if n % 2 == 0 { team_a.clone() } else { team_b.clone() });
        records.push(r);
    }
    for r in &records {
        store.insert(r.clone()).await.unwrap();
    }
    let order = |team: &str| {
        let mut keys: Vec<(Timestamp, KeyId)> =
            records.iter().filter(|r| r.team_id.as_deref() == Some(team)).map(|r| (r.created_at, r.id)).collect();
        keys.sort();
        keys.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
    };

    for team in [&team_a, &team_b] {
        let want = order(team);
        let all = store.list(&ListQuery { team_id: Some(team.clone()), limit: MAX_PAGE, offset: 0 }).await.unwrap();
        assert_eq!(ids(&all), want, "team {team}");
        assert_eq!(all.total, want.len());
        // Paging with any page size visits every key once, in order.
        for size in 1..=want.len() + 1 {
            let mut seen = Vec::new();
            let mut offset = 0;
            loop {
                let page = store.list(&ListQuery { team_id: Some(team.clone()), limit: size, offset }).await.unwrap();
                assert_eq!(page.total, want.len());
                assert!(page.records.len() <= size);
                if page.records.is_empty() {
                    break;
                }
                offset += page.records.len();
                seen.extend(ids(&page));
            }
            assert_eq!(seen, want, "page size {size}");
        }
        // The records come back whole.
        for r in &all.records {
            assert_eq!(Some(&**r), records.iter().find(|x| x.id == r.id));
        }
    }
    // Limit clamping: 0 is 1, more than MAX_PAGE is MAX_PAGE.
    let q = |limit, offset| ListQuery { team_id: Some(team_a.clone()), limit, offset };
    assert_eq!(store.list(&q(0, 0)).await.unwrap().records.len(), 1);
    assert_eq!(store.list(&q(usize::MAX, 0)).await.unwrap().records.len(), order(&team_a).len());
    // Past the end: an empty page with the total.
    let past = store.list(&q(10, usize::MAX)).await.unwrap();
    assert!(past.records.is_empty());
    assert_eq!(past.total, order(&team_a).len());
    // An unknown team.
    let none = store.list(&ListQuery { team_id: Some(format!("{p}nobody")), limit: 10, offset: 0 }).await.unwrap();
    assert_eq!(none, keygate::store::Page::default());
    // Without a team filter every key is there, in the same order (other keys may interleave
    // when a database is shared, so compare the subsequence).
    let mut everything = Vec::new();
    let mut offset = 0;
    let total = loop {
        let page = store.list(&ListQuery { team_id: None, limit: 7, offset }).await.unwrap();
        offset += page.records.len();
        everything.extend(ids(&page));
        if page.records.is_empty() {
            break page.total;
        }
    };
    assert_eq!(total, everything.len());
    let mine: BTreeSet<KeyId> = records.iter().map(|r| r.id).collect();
    let mut want: Vec<(Timestamp, KeyId)> = records.iter().map(|r| (r.created_at, r.id)).collect();
    want.sort();
    let got: Vec<KeyId> = everything.into_iter().filter(|k| mine.contains(k)).collect();
    assert_eq!(got, want.into_iter().map(|(_, k)| k).collect::<Vec<_>>());

    // Replacing may move a key in the order (its creation time changed) and between teams.
    let mut moved = records[0].clone();
    moved.created_at = Timestamp::EPOCH;
    moved.team_id = Some(team_b.clone());
    store.replace(0, moved.clone()).await.unwrap();
    let b = store.list(&ListQuery { team_id: Some(team_b.clone()), limit: 1, offset: 0 }).await.unwrap();
    assert_eq!(ids(&b), vec![moved.id]);
    assert_eq!(b.total, order(&team_b).len() + 1);
    let a = store.list(&ListQuery { team_id: Some(team_a.clone()), limit: MAX_PAGE, offset: 0 }).await.unwrap();
    assert_eq!(a.total, order(&team_a).len() - 1);
    assert!(!ids(&a).contains(&moved.id));
    // Deleting removes keys from the listing.
    for r in &records {
        store.delete(&r.id).await.unwrap();
    }
    let a = store.list(&ListQuery { team_id: Some(team_a), limit: 10, offset: 0 }).await.unwrap();
    assert_eq!(a, keygate::store::Page::default());
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(&MemoryStore::new(), "m").await;
}

/// Issue 15, item 7, through a store: a rotated key keeps its credits and continues its
/// predecessor's counters, also after the records made the round trip through the database.
/// The key has one credit left and has reached its spend cap when it is rotated.
async fn rotation_continues_the_budget<S: AsyncKeyStore>(store: S) {
    use keygate::format::SelectorFormat;
    use keygate::limit::Limiter;
    use keygate::manage::{CreateKey, RotateKey};
    use keygate::secret::Peppers;
    use keygate::{Caller, Credits, LimitRequest, Manager, MemoryLimitStore, Pepper, Usage, Verifier};
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;
    let verifier = Verifier::new(
        SelectorFormat::new("aistats").unwrap(),
        Peppers::new(Pepper::new(PepperId(1), &[3; 32]).unwrap()),
    );
    let m = Manager::new(store, verifier);
    let (op, mut rng) = (Caller::operator(), ChaCha20Rng::from_seed([7; 32]));
    let now = Timestamp::from_unix_secs(1_800_000_000);
    let limiter = Limiter::new(MemoryLimitStore::new());
    let one = LimitRequest::new().with_credits(1);

    let mut r = CreateKey::new("metered");
    r.credits = Some(Credits { amount: 100, refill: None });
    let credited = m.create_async(&op, &r, now, &mut rng).await.unwrap();
    let mut r = CreateKey::new("capped");
    r.spend_cap = Some(SpendCap { amount_micros: 1_000, period: SpendPeriod::Day });
    let capped = m.create_async(&op, &r, now, &mut rng).await.unwrap();

    // 99 of 100 credits used; the cap reached.
    for _ in 0..99 {
        limiter.check(credited.record(), one, now).unwrap().finish(Usage::new(0, 0), now).unwrap();
    }
    limiter.check(capped.record(), one, now).unwrap().finish(Usage::new(0, 1_000), now).unwrap();

    for (old, allowed) in [(credited.record().id, 1), (capped.record().id, 0)] {
        let rotated = m.rotate_async(&op, &old, &RotateKey::default(), now, &mut rng).await.unwrap();
        let successor = m.store().get(&rotated.key().record().id).await.unwrap().unwrap();
        assert_eq!(successor.inherits_budget, Some(old), "stored");
        assert_eq!(successor.budget_id(), old);
        let mut admitted = 0;
        for _ in 0..100 {
            match limiter.check(&successor, one, now) {
                Ok(a) => {
                    a.finish(Usage::new(0, 0), now).unwrap();
                    admitted += 1;
                }
                Err(d) => assert_eq!(d.code(), keygate::DenialCode::QuotaExceeded),
            }
        }
        assert_eq!(admitted, allowed, "{}", successor.name);
        if allowed == 1 {
            assert_eq!(successor.credits, Some(Credits { amount: 100, refill: None }), "credits copied");
        }
        // A rotation of the successor continues the same counters.
        let next = m.rotate_async(&op, &successor.id, &RotateKey::default(), now, &mut rng).await.unwrap();
        let next = m.store().get(&next.key().record().id).await.unwrap().unwrap();
        assert_eq!(next.budget_id(), old);
        assert!(limiter.check(&next, one, now).is_err());
    }
}

#[tokio::test]
async fn memory_store_rotation_continues_the_budget() {
    rotation_continues_the_budget(MemoryStore::new()).await;
}

// ---------------------------------------------------------------------------------------------
// SQLite

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use keygate::SqliteStore;

    /// A database file in the temporary directory, removed (with its WAL files) on drop.
    struct TempDb(std::path::PathBuf);

    impl TempDb {
        fn new() -> Self {
            Self(std::env::temp_dir().join(format!("{}.db", unique("keygate_sql_stores"))))
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = self.0.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }

    #[tokio::test]
    async fn sqlite_keeps_the_contract() {
        let db = TempDb::new();
        assert!(!db.0.exists());
        let store = SqliteStore::open(db.path(), SqlConfig::default()).await.unwrap();
        assert!(db.0.exists(), "open creates the file");
        contract(&store, "s").await;
    }

    #[tokio::test]
    async fn sqlite_rotation_continues_the_budget() {
        let db = TempDb::new();
        rotation_continues_the_budget(SqliteStore::open(db.path(), SqlConfig::default()).await.unwrap()).await;
    }

    #[tokio::test]
    async fn sqlite_url_and_in_memory() {
        let db = TempDb::new();
        let store = SqliteStore::open(&format!("sqlite://{}", db.path()), SqlConfig::default()).await.unwrap();
        store.insert(selector("url", 1)).await.unwrap();
        assert!(db.0.exists());
        let memory = SqliteStore::open("sqlite::memory:", SqlConfig::default()).await.unwrap();
        contract(&memory, "i").await;
    }

    #[tokio::test]
    async fn sqlite_reopen_persists_and_migrations_are_idempotent() {
        let db = TempDb::new();
        // Two opens of a new file at once: both succeed, the schema is created once.
        let (a, b) = tokio::join!(
            SqliteStore::open(db.path(), SqlConfig::default()),
            SqliteStore::open(db.path(), SqlConfig::default())
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let r = full_record("persisted", "t");
        a.insert(r.clone()).await.unwrap();
        // The other store (as a second process would) sees it at once, and its CAS applies.
        assert_eq!(b.get(&r.id).await.unwrap().as_deref(), Some(&r));
        let mut renamed = r.clone();
        renamed.name = "renamed by b".into();
        let renamed = b.replace(41, renamed).await.unwrap();
        assert_eq!(a.replace(41, r.clone()).await, Err(StoreError::Conflict));
        a.close().await;
        b.close().await;
        drop((a, b));

        let reopened = SqliteStore::open(db.path(), SqlConfig::default()).await.unwrap();
        assert_eq!(reopened.get(&r.id).await.unwrap(), Some(renamed));
        let migrations: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(reopened.pool()).await.unwrap();
        assert_eq!(migrations, 3);
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(reopened.pool()).await.unwrap();
        assert_eq!(journal, "wal");
        assert!(format!("{reopened:?}").contains("SqliteStore"));
    }

    /// Opening a new file switches it to WAL, which needs the exclusive lock; SQLite answers a
    /// second opener "busy" at once rather than waiting. Before the open retried, about one pair
    /// of opens in twenty failed with `Unavailable`.
    #[tokio::test]
    async fn concurrent_opens_of_a_new_file_all_succeed() {
        for _ in 0..100 {
            let db = TempDb::new();
            let open = || SqliteStore::open(db.path(), SqlConfig::default());
            let (a, b, c) = tokio::join!(open(), open(), open());
            for store in [a, b, c] {
                let store = store.unwrap();
                assert_eq!(store.get(&id("absent")).await, Ok(None));
                store.close().await;
            }
        }
    }

    #[tokio::test]
    async fn sqlite_corrupt_rows_are_errors_not_panics() {
        let db = TempDb::new();
        let store = SqliteStore::open(db.path(), SqlConfig::default()).await.unwrap();
        let r = full_record("corrupt", "t");
        store.insert(r.clone()).await.unwrap();
        for (column, value) in [("attributes", "'{not json'"), ("status", "'zombie'"), ("digest", "x'0102'")] {
            let mut conn = store.pool().acquire().await.unwrap();
            sqlx::query(&format!("UPDATE keygate_keys SET {column} = {value} WHERE id = 'corrupt'"))
                .execute(&mut *conn)
                .await
                .unwrap();
            assert_eq!(store.get(&r.id).await, Err(StoreError::Corrupt), "{column}");
            assert_eq!(store.list(&ListQuery::default()).await, Err(StoreError::Corrupt), "{column}");
            store.delete(&r.id).await.unwrap_err();
            store.insert(r.clone()).await.unwrap_err();
            sqlx::query("DELETE FROM keygate_keys").execute(&mut *conn).await.unwrap();
            store.insert(r.clone()).await.unwrap();
        }
    }

    #[tokio::test]
    async fn sqlite_locked_database_times_out() {
        let db = TempDb::new();
        let mut config = SqlConfig::default();
        config.timeout = Duration::from_millis(300);
        let store = SqliteStore::open(db.path(), config.clone()).await.unwrap();
        let other = SqliteStore::open(db.path(), config).await.unwrap();
        // Another process holds the write lock.
        let mut conn = other.pool().acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await.unwrap();
        let started = Instant::now();
        let err = store.insert(selector("blocked", 1)).await.unwrap_err();
        assert!(matches!(err, StoreError::Timeout | StoreError::Unavailable), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        // Readers are not blocked by the writer (WAL).
        assert_eq!(store.get(&id("blocked")).await, Ok(None));
        sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
        drop(conn);
        // A timed-out write has an unknown outcome: the statement may have committed once the
        // lock was released. Either way the store works again and holds the record once.
        match store.insert(selector("blocked", 1)).await {
            Ok(_) | Err(StoreError::Conflict) => {}
            Err(e) => panic!("after the lock is released: {e:?}"),
        }
        assert!(store.get(&id("blocked")).await.unwrap().is_some());
        store.insert(selector("after", 2)).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use keygate::PostgresStore;
    use keygate::store::{KeyChange, KeyChanges};
    use sqlx::Connection as _;
    use sqlx::postgres::{PgConnectOptions, PgConnection};
    use std::str::FromStr;
    use std::sync::Arc;

    fn url() -> &'static str {
        super::support::servers::postgres_url().expect("PostgreSQL")
    }

    /// A schema of its own on the test server, or `None` when there is no PostgreSQL (the
    /// support module says so).
    struct Schema {
        name: String,
        admin: PgConnection,
        /// A database of its own rather than a schema: change notices are per database, so a
        /// test that counts them sees no other test's.
        database: bool,
    }

    impl Schema {
        async fn new() -> Option<Self> {
            let url = super::support::servers::postgres_url()?;
            let connect = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(url));
            let admin = connect.await.expect("PostgreSQL answers in time").expect("PostgreSQL");
            let mut schema = Self { name: unique("kg_test").to_lowercase(), admin, database: false };
            sqlx::query(&format!("CREATE SCHEMA {}", schema.name)).execute(&mut schema.admin).await.unwrap();
            Some(schema)
        }

        /// A database of its own, for a test that follows the change feed.
        #[cfg(feature = "cache")]
        async fn database() -> Option<Self> {
            let url = super::support::servers::postgres_url()?;
            let connect = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(url));
            let admin = connect.await.expect("PostgreSQL answers in time").expect("PostgreSQL");
            let mut db = Self { name: unique("kg_test").to_lowercase(), admin, database: true };
            sqlx::query(&format!("CREATE DATABASE {}", db.name)).execute(&mut db.admin).await.unwrap();
            Some(db)
        }

        fn options(&self) -> PgConnectOptions {
            let options = PgConnectOptions::from_str(url()).unwrap();
            if self.database {
                options.database(&self.name)
            } else {
                options.options([("search_path", self.name.as_str())])
            }
        }

        async fn store(&self) -> PostgresStore {
            PostgresStore::connect_with(self.options(), SqlConfig::default()).await.unwrap()
        }

        async fn drop(mut self) {
            let drop = if self.database {
                format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)
            } else {
                format!("DROP SCHEMA {} CASCADE", self.name)
            };
            sqlx::query(&drop).execute(&mut self.admin).await.unwrap();
        }
    }

    #[tokio::test]
    async fn postgres_keeps_the_contract() {
        let Some(schema) = Schema::new().await else { return };
        let store = schema.store().await;
        contract(&store, "p").await;
        store.close().await;
        schema.drop().await;
    }

    #[tokio::test]
    async fn postgres_rotation_continues_the_budget() {
        let Some(schema) = Schema::new().await else { return };
        let store = schema.store().await;
        rotation_continues_the_budget(store.clone()).await;
        store.close().await;
        schema.drop().await;
    }

    #[tokio::test]
    async fn postgres_reconnect_persists_and_migrations_are_idempotent() {
        let Some(schema) = Schema::new().await else { return };
        // Two connects to a new schema at once: sqlx's migration lock lets one migrate.
        let (a, b) = tokio::join!(
            PostgresStore::connect_with(schema.options(), SqlConfig::default()),
            PostgresStore::connect_with(schema.options(), SqlConfig::default())
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let r = full_record("persisted", "t");
        a.insert(r.clone()).await.unwrap();
        assert_eq!(b.get(&r.id).await.unwrap().as_deref(), Some(&r));
        a.close().await;
        b.close().await;
        let again = schema.store().await;
        assert_eq!(again.get(&r.id).await.unwrap().as_deref(), Some(&r));
        let migrations: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(again.pool()).await.unwrap();
        assert_eq!(migrations, 7);
        again.close().await;
        schema.drop().await;
    }

    #[tokio::test]
    async fn postgres_debug_hides_the_password() {
        let Some(schema) = Schema::new().await else { return };
        let store = PostgresStore::connect_with(schema.options().password("hunter2-secret"), SqlConfig::default())
            .await
            .unwrap();
        let shown = format!("{store:?} {:?}", store.changes().await.unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("PostgresStore") && shown.contains("KeyChanges"), "{shown}");
        store.close().await;
        schema.drop().await;
    }

    #[tokio::test]
    async fn postgres_corrupt_rows_are_errors_not_panics() {
        let Some(schema) = Schema::new().await else { return };
        let store = schema.store().await;
        let r = full_record("corrupt", "t");
        store.insert(r.clone()).await.unwrap();
        sqlx::query("UPDATE keygate_keys SET attributes = '[]', pepper_id = -1 WHERE id = 'corrupt'")
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(store.get(&r.id).await, Err(StoreError::Corrupt));
        assert_eq!(store.lookup(&Lookup::Digest(r.digest)).await, Err(StoreError::Corrupt));
        store.close().await;
        schema.drop().await;
    }

    #[tokio::test]
    async fn closed_port_fails_fast() {
        // A port nobody listens on: bind one, note it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut config = SqlConfig::default();
        config.timeout = Duration::from_millis(500);
        config.acquire_timeout = Duration::from_millis(500);
        config.open_timeout = Duration::from_secs(1);
        let started = Instant::now();
        let err =
            PostgresStore::connect(&format!("postgres://postgres@127.0.0.1:{port}/test"), config).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable | StoreError::Timeout), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

        // A store whose database goes away fails its calls within the timeout.
        let Some(schema) = Schema::new().await else { return };
        let mut config = SqlConfig::default();
        config.timeout = Duration::from_millis(500);
        config.acquire_timeout = Duration::from_millis(300);
        let store = PostgresStore::connect_with(schema.options(), config).await.unwrap();
        store.close().await; // no connection can be had any more
        let started = Instant::now();
        let err = store.get(&id("x")).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable | StoreError::Timeout), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        schema.drop().await;
    }

    #[tokio::test]
    async fn bad_url_is_unavailable() {
        let err = PostgresStore::connect("postgres://host:notaport/x", SqlConfig::default()).await.unwrap_err();
        assert_eq!(err, StoreError::Unavailable);
    }

    /// The next change about `want`, skipping others (other tests share the channel).
    async fn next_about(changes: &mut KeyChanges, want: KeyId) -> KeyChange {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match changes.next().await {
                    KeyChange::Changed(id) if id != want => continue,
                    change => return change,
                }
            }
        })
        .await
        .expect("a notification within 10 s")
    }

    #[tokio::test]
    async fn changes_from_another_store_are_announced() {
        let Some(schema) = Schema::new().await else { return };
        let app = unique("kg_listen");
        let options = schema.options().application_name(&app);
        let reader = PostgresStore::connect_with(options, SqlConfig::default()).await.unwrap();
        let mut changes = reader.changes().await.unwrap();
        let writer = schema.store().await; // another instance, another pool

        let kid = unique("n").replace('_', "-");
        let kid = &kid[..kid.len().min(32)];
        let k = id(kid);
        let r = selector(kid, 1);
        writer.insert(r.clone()).await.unwrap();
        assert_eq!(next_about(&mut changes, k).await, KeyChange::Changed(k));
        let mut renamed = r.clone();
        renamed.name = "renamed".into();
        writer.replace(0, renamed.clone()).await.unwrap();
        assert_eq!(next_about(&mut changes, k).await, KeyChange::Changed(k));
        // A failed compare-and-swap changes nothing and announces nothing.
        assert_eq!(writer.replace(0, renamed).await, Err(StoreError::Conflict));
        writer.delete(&k).await.unwrap();
        assert_eq!(next_about(&mut changes, k).await, KeyChange::Changed(k));

        // The listener's connection is killed: it reconnects by itself and says Resync, then
        // hears changes again.
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND query LIKE 'LISTEN%'",
        )
        .bind(&app)
        .fetch_all(writer.pool())
        .await
        .unwrap();
        assert_eq!(killed, vec![true]);
        assert_eq!(next_about(&mut changes, k).await, KeyChange::Resync);
        writer.insert(r.clone()).await.unwrap();
        assert_eq!(next_about(&mut changes, k).await, KeyChange::Changed(k));

        // TRUNCATE cannot name the keys: everything must go.
        sqlx::query("TRUNCATE keygate_keys").execute(writer.pool()).await.unwrap();
        assert_eq!(next_about(&mut changes, k).await, KeyChange::Resync);

        reader.close().await;
        writer.close().await;
        drop(changes);
        schema.drop().await;
    }

    /// A write that only records a key's last use is not announced (every gateway would evict
    /// every recently used key); any other change still is.
    #[tokio::test]
    async fn last_used_writes_are_not_announced() {
        let Some(schema) = Schema::new().await else { return };
        let reader = schema.store().await;
        let mut changes = reader.changes().await.unwrap();
        let writer = schema.store().await;
        let kid = unique("u").replace('_', "-");
        let k = id(&kid[..kid.len().min(32)]);
        // Another test's TRUNCATE sends a Resync on the shared channel now and then: skip it.
        async fn named(changes: &mut KeyChanges, k: KeyId) {
            while next_about(changes, k).await != KeyChange::Changed(k) {}
        }
        writer.insert(selector(k.as_str(), 1)).await.unwrap();
        named(&mut changes, k).await;

        let last_used = keygate::manage::LastUsed::new(Duration::from_secs(10));
        last_used.touch(k, Timestamp::from_unix_secs(2_000));
        assert_eq!(last_used.flush_async(&writer, Timestamp::from_unix_secs(2_000)).await.written, 1);
        assert_eq!(writer.get(&k).await.unwrap().unwrap().last_used_at, Some(Timestamp::from_unix_secs(2_000)));
        let quiet = tokio::time::timeout(Duration::from_millis(500), named(&mut changes, k)).await;
        assert!(quiet.is_err(), "a last-used write was announced");

        let current = writer.get(&k).await.unwrap().unwrap();
        let mut renamed = KeyRecord::clone(&current);
        renamed.name = "renamed".into();
        writer.replace(current.revision, renamed).await.unwrap();
        named(&mut changes, k).await;
        reader.close().await;
        writer.close().await;
        drop(changes);
        schema.drop().await;
    }

    /// Many writers at once: compare-and-swap admits exactly one per revision.
    #[tokio::test]
    async fn concurrent_replace_admits_one_writer_per_revision() {
        let Some(schema) = Schema::new().await else { return };
        let store = Arc::new(schema.store().await);
        let r = selector("contended", 1);
        store.insert(r.clone()).await.unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|n| {
                let store = Arc::clone(&store);
                let mut r = r.clone();
                r.name = format!("writer {n}");
                tokio::spawn(async move { store.replace(0, r).await })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(r) => {
                    won += 1;
                    assert_eq!(r.revision, 1);
                }
                Err(e) => assert_eq!(e, StoreError::Conflict),
            }
        }
        assert_eq!(won, 1);
        assert_eq!(store.get(&r.id).await.unwrap().unwrap().revision, 1);
        store.close().await;
        schema.drop().await;
    }

    /// The kid set of a cache in front of PostgreSQL: loaded from the table, told of a key
    /// another store (another process) creates by the change feed, so that it is found on its
    /// first use after the notice; and loaded again after the feed reconnects (the deleted key
    /// it still held is gone from the new set).
    #[cfg(feature = "cache")]
    #[tokio::test]
    async fn the_kid_set_follows_another_process_and_reloads_after_a_resync() {
        use keygate::CachedStore;
        let Some(schema) = Schema::database().await else { return };
        let app = unique("kg_kids");
        let options = schema.options().application_name(&app);
        let reader = PostgresStore::connect_with(options, SqlConfig::default()).await.unwrap();
        let writer = schema.store().await;
        let (first, second) = (id("kids-first-0001"), id("kids-second-001"));
        writer.insert(selector(first.as_str(), 1)).await.unwrap();
        let changes = reader.changes().await.unwrap();
        let cache = CachedStore::new(reader);
        assert_eq!(cache.load_kids().await.unwrap(), 1);
        let follower = tokio::spawn({
            let cache = cache.clone();
            async move { cache.follow(changes).await }
        });
        let found = |kid: KeyId| {
            let cache = cache.clone();
            async move { cache.lookup(&Lookup::Kid(kid)).await.unwrap().is_some_and(|r| r.id == kid) }
        };
        assert!(found(first).await);
        assert!(!found(second).await);

        writer.insert(selector(second.as_str(), 2)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while cache.kids_len() < 2 {
            assert!(Instant::now() < deadline, "no notice of the new key");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(found(second).await, "a key announced is found on its first use");

        // Deleted: still in the set (a store read, then absent), until the feed reconnects.
        writer.delete(&first).await.unwrap();
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND query LIKE 'LISTEN%'",
        )
        .bind(&app)
        .fetch_all(writer.pool())
        .await
        .unwrap();
        assert_eq!(killed, vec![true]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(cache.kids_loaded() && cache.kids_len() == 1) {
            assert!(Instant::now() < deadline, "the kid set was not reloaded: {} kids", cache.kids_len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(found(second).await);
        assert!(!found(first).await);
        follower.abort();
        cache.inner().close().await;
        writer.close().await;
        schema.drop().await;
    }
}
