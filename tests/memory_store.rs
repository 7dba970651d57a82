//! The embedded store: compare-and-swap updates, the opaque digest index, stable paging, and
//! concurrent readers that see a revocation as soon as it is made.
#![cfg(feature = "std")]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use keygate::record::KeyShape;
use keygate::secret::{DigestScheme, PepperId, StoredDigest};
use keygate::store::ListQuery;
use keygate::verify::Lookup;
use keygate::{KeyId, KeyKind, KeyRecord, KeyStatus, KeyStore, MemoryStore, StoreError, Timestamp};
use proptest::prelude::*;

fn digest(n: u64) -> StoredDigest {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    StoredDigest { scheme: DigestScheme::HmacSha256(PepperId(1)), bytes }
}

fn record(n: u64, shape: KeyShape, team: Option<&str>) -> KeyRecord {
    let id = KeyId::new(&format!("key{n:012}")).unwrap();
    let mut r = KeyRecord::new(id, shape, KeyKind::STANDARD, digest(n), Timestamp::from_unix_secs(1_000 + n / 3));
    r.team_id = team.map(str::to_owned);
    r
}

#[test]
fn insert_get_and_conflicts() {
    let store = MemoryStore::new();
    let r = store.insert(record(1, KeyShape::Selector, None)).unwrap();
    assert_eq!(store.get(&r.id).unwrap().as_deref(), Some(&*r));
    assert_eq!(store.insert(record(1, KeyShape::Selector, None)).unwrap_err(), StoreError::Conflict);
    // Opaque records are also found by digest; a second record with that digest is a conflict.
    let o = store.insert(record(2, KeyShape::Opaque, None)).unwrap();
    assert_eq!(store.lookup(&Lookup::Digest(o.digest)).unwrap().map(|r| r.id), Some(o.id));
    let mut clash = record(3, KeyShape::Opaque, None);
    clash.digest = o.digest;
    assert_eq!(store.insert(clash).unwrap_err(), StoreError::Conflict);
    // Selector records are not in the digest index.
    assert!(store.lookup(&Lookup::Digest(r.digest)).unwrap().is_none());
    assert_eq!(store.len(), 2);
}

#[test]
fn replace_is_compare_and_swap() {
    let store = MemoryStore::new();
    let r = store.insert(record(1, KeyShape::Opaque, None)).unwrap();
    let mut changed = KeyRecord::clone(&r);
    changed.status = KeyStatus::Disabled;
    changed.digest = digest(99);
    let stored = store.replace(r.revision, changed.clone()).unwrap();
    assert_eq!((stored.revision, stored.status), (r.revision + 1, KeyStatus::Disabled));
    // A writer that read the old revision loses.
    assert_eq!(store.replace(r.revision, changed.clone()).unwrap_err(), StoreError::Conflict);
    // The digest index follows the change.
    assert!(store.lookup(&Lookup::Digest(digest(1))).unwrap().is_none());
    assert_eq!(store.lookup(&Lookup::Digest(digest(99))).unwrap().map(|r| r.status), Some(KeyStatus::Disabled));
    let ghost = record(7, KeyShape::Selector, None);
    assert_eq!(store.replace(0, ghost).unwrap_err(), StoreError::NotFound);
}

#[test]
fn delete_removes_every_index() {
    let store = MemoryStore::new();
    let r = store.insert(record(1, KeyShape::Opaque, Some("t"))).unwrap();
    assert_eq!(store.delete(&r.id).unwrap().id, r.id);
    assert!(store.get(&r.id).unwrap().is_none());
    assert!(store.lookup(&Lookup::Digest(r.digest)).unwrap().is_none());
    assert_eq!(store.list(&ListQuery { team_id: Some("t".into()), ..ListQuery::default() }).unwrap().total, 0);
    assert_eq!(store.delete(&r.id).unwrap_err(), StoreError::NotFound);
}

#[test]
fn listing_is_ordered_filtered_and_bounded() {
    let store = MemoryStore::new();
    for n in (0..600).rev() {
        let team = if n % 2 == 0 { "even" } else { "odd" };
        store.insert(record(n, KeyShape::Selector, Some(team))).unwrap();
    }
    let page = store.list(&ListQuery { team_id: None, limit: 1000, offset: 0 }).unwrap();
    assert_eq!((page.records.len(), page.total), (250, 600), "limit is clamped to 250");
    let keys: Vec<_> = page.records.iter().map(|r| (r.created_at, r.id)).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "creation time, then id");
    let odd = store.list(&ListQuery { team_id: Some("odd".into()), limit: 10, offset: 295 }).unwrap();
    assert_eq!((odd.records.len(), odd.total), (5, 300));
    assert!(odd.records.iter().all(|r| r.team_id.as_deref() == Some("odd")));
    assert!(
        store.list(&ListQuery { team_id: Some("none".into()), ..ListQuery::default() }).unwrap().records.is_empty()
    );
}

proptest! {
    /// Paging through any page sizes visits every key exactly once.
    #[test]
    fn paging_visits_every_key_once(n in 0u64..300, sizes in proptest::collection::vec(1usize..40, 1..20)) {
        let store = MemoryStore::new();
        for i in 0..n {
            store.insert(record(i, KeyShape::Selector, None)).unwrap();
        }
        let mut seen = Vec::new();
        let mut offset = 0;
        for size in sizes.iter().cycle() {
            let page = store.list(&ListQuery { team_id: None, limit: *size, offset }).unwrap();
            if page.records.is_empty() {
                break;
            }
            offset += page.records.len();
            seen.extend(page.records.iter().map(|r| r.id));
        }
        let unique: BTreeSet<_> = seen.iter().collect();
        prop_assert_eq!(seen.len(), usize::try_from(n).unwrap());
        prop_assert_eq!(unique.len(), usize::try_from(n).unwrap());
    }
}

/// A kid the store holds comes back as its own record; any other kid as a stand-in, a live
/// record of the store (nothing only from an empty shard, and none is empty here), never a
/// removed one.
#[test]
fn misses_on_a_kid_answer_with_a_live_stand_in() {
    let store = MemoryStore::new();
    let unknown = |n: u64| KeyId::new(&format!("unknown{n:09}")).unwrap();
    assert!(store.lookup(&Lookup::Kid(unknown(1))).unwrap().is_none(), "an empty store has no stand-in");
    for n in 0..2_000 {
        store.insert(record(n, if n % 5 == 0 { KeyShape::Opaque } else { KeyShape::Selector }, None)).unwrap();
    }
    for n in 0..2_000 {
        let r = record(n, KeyShape::Selector, None);
        assert_eq!(store.lookup(&Lookup::Kid(r.id)).unwrap().map(|f| f.id), Some(r.id));
    }
    let mut stand_ins = BTreeSet::new();
    for n in 0..2_000 {
        let stand_in = store.lookup(&Lookup::Kid(unknown(n))).unwrap().expect("every shard holds records");
        assert_ne!(stand_in.id, unknown(n));
        assert_eq!(store.get(&stand_in.id).unwrap().as_deref(), Some(&*stand_in), "a live record");
        // The plain lookup still says the kid is not there.
        assert!(store.lookup(&Lookup::Id(unknown(n))).unwrap().is_none());
        stand_ins.insert(stand_in.id);
    }
    // Stand-ins spread over the store rather than repeating a few records.
    assert!(stand_ins.len() > 1_000, "{} distinct stand-ins", stand_ins.len());
}

/// A sparse table (most of its keys deleted, so runs of empty buckets are everywhere) still
/// answers every miss with a live stand-in: a gap never turns a miss into a cheaper `None`.
#[test]
fn sparse_tables_still_answer_every_miss_with_a_stand_in() {
    let store = MemoryStore::new();
    for n in 0..20_000 {
        store.insert(record(n, KeyShape::Selector, None)).unwrap();
    }
    // Keep one key in ten: about 31 per shard in tables sized for 300, a load of a few percent.
    for n in (0..20_000).filter(|n| n % 10 != 0) {
        store.delete(&record(n, KeyShape::Selector, None).id).unwrap();
    }
    assert_eq!(store.len(), 2_000);
    for n in 0..5_000u64 {
        let unknown = KeyId::new(&format!("unknown{n:09}")).unwrap();
        let stand_in = store.lookup(&Lookup::Kid(unknown)).unwrap().expect("every shard holds records");
        assert_eq!(store.get(&stand_in.id).unwrap().as_deref(), Some(&*stand_in), "a live record");
    }
}

proptest! {
    /// Through inserts, replacements and deletes in any order, every held kid finds itself,
    /// a removed kid finds only live stand-ins, and the count stays right.
    #[test]
    fn stand_ins_follow_every_change(ops in proptest::collection::vec((0u64..60, 0u8..3), 1..300)) {
        let store = MemoryStore::new();
        let mut live = BTreeSet::new();
        for (n, op) in ops {
            let r = record(n, KeyShape::Selector, None);
            match op {
                0 => { if store.insert(r).is_ok() { live.insert(n); } }
                1 => if let Some(old) = store.get(&r.id).unwrap() {
                    let mut changed = KeyRecord::clone(&old);
                    changed.name = format!("renamed-{n}");
                    store.replace(old.revision, changed).unwrap();
                }
                _ => { if store.delete(&r.id).is_ok() { live.remove(&n); } }
            }
        }
        prop_assert_eq!(store.len(), live.len());
        for n in 0..60 {
            let id = record(n, KeyShape::Selector, None).id;
            let found = store.lookup(&Lookup::Kid(id)).unwrap();
            if live.contains(&n) {
                let found = found.unwrap();
                prop_assert_eq!(found.id, id);
                prop_assert_eq!(Some(found), store.get(&id).unwrap());
            } else if let Some(stand_in) = found {
                prop_assert_ne!(stand_in.id, id);
                prop_assert_eq!(Some(stand_in.clone()), store.get(&stand_in.id).unwrap());
            }
        }
    }
}

#[test]
fn readers_see_a_revocation_once_it_returns() {
    let store = MemoryStore::new();
    let ids: Vec<KeyId> = (0..1000).map(|n| store.insert(record(n, KeyShape::Selector, None)).unwrap().id).collect();
    let target = ids[500];
    let revoked = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for round in 0..200_000 {
                    let was_revoked = revoked.load(Ordering::Acquire);
                    let status = store.get(&target).unwrap().unwrap().status;
                    if was_revoked {
                        assert_eq!(status, KeyStatus::Revoked, "a lookup after the revocation returned saw it active");
                        if round % 1000 == 0 {
                            return;
                        }
                    }
                    let _ = store.get(&ids[round % ids.len()]).unwrap();
                }
            });
        }
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let mut r = KeyRecord::clone(&store.get(&target).unwrap().unwrap());
            r.status = KeyStatus::Revoked;
            let rev = r.revision;
            store.replace(rev, r).unwrap();
            revoked.store(true, Ordering::Release);
        });
    });
}

#[test]
fn holds_many_keys() {
    let store = MemoryStore::new();
    let n = 200_000;
    for i in 0..n {
        store.insert(record(i, if i % 4 == 0 { KeyShape::Opaque } else { KeyShape::Selector }, None)).unwrap();
    }
    assert_eq!(store.len(), usize::try_from(n).unwrap());
    for i in (0..n).step_by(997) {
        let id = KeyId::new(&format!("key{i:012}")).unwrap();
        assert_eq!(store.get(&id).unwrap().map(|r| r.digest), Some(digest(i)));
    }
}
