//! The management API over an asynchronous store: the `_async` operations share the rules and
//! the answers of the synchronous ones, and their futures are `Send` (they run on a
//! multi-threaded executor).
#![cfg(all(feature = "json", feature = "std"))]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::sync::Arc;

use keygate::format::SelectorFormat;
use keygate::manage::{CreateKey, LastUsed, ListKeys, ManageError, ManageRequest, RotateKey, UpdateKey};
use keygate::secret::{PepperId, Peppers};
use keygate::{Caller, KeyStatus, Manager, MemoryStore, Pepper, Scopes, Timestamp, Verifier};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

const NOW: Timestamp = Timestamp::from_unix_secs(1_800_000_000);

fn verifier() -> Verifier {
    let format = SelectorFormat::new("aistats").unwrap().with_kinds(&["sk", "mk"]).unwrap();
    Verifier::new(format, Peppers::new(Pepper::new(PepperId(1), &[9; 32]).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_runs_on_a_multi_threaded_executor() {
    let manager = Arc::new(Manager::new(MemoryStore::new(), verifier()));
    let task = {
        let manager = Arc::clone(&manager);
        tokio::spawn(async move {
            let operator = Caller::operator();
            let mut rng = ChaCha20Rng::from_seed([3; 32]);
            let mut request = CreateKey::new("async");
            request.scopes = Scopes::parse("read").unwrap();
            let created = manager.create_async(&operator, &request, NOW, &mut rng).await.unwrap();
            let id = created.record().id;

            let mut disable = UpdateKey::default();
            disable.status = Some(KeyStatus::Revoked);
            let revoked = manager.update_async(&operator, &id, &disable, NOW).await.unwrap();
            assert_eq!(revoked.status, KeyStatus::Revoked);
            let mut again = UpdateKey::default();
            again.status = Some(KeyStatus::Active);
            assert!(matches!(manager.update_async(&operator, &id, &again, NOW).await, Err(ManageError::Revoked)));
            assert!(matches!(
                manager.rotate_async(&operator, &id, &RotateKey::default(), NOW, &mut rng).await,
                Err(ManageError::Revoked)
            ));
            assert_eq!(manager.list_async(&operator, &ListKeys::default()).await.unwrap().total, 1);
            assert_eq!(manager.get_async(&operator, &id).await.unwrap().revision, revoked.revision);
            manager.delete_async(&operator, &id).await.unwrap();
            assert!(matches!(manager.get_async(&operator, &id).await, Err(ManageError::NotFound)));
        })
    };
    task.await.unwrap();
}

#[tokio::test]
async fn handle_async_answers_as_handle_does() {
    let sync = Manager::new(MemoryStore::new(), verifier());
    let asynchronous = Manager::new(MemoryStore::new(), verifier());
    let operator = Caller::operator();
    let body = br#"{"name": "My key", "scopes": ["read","write"], "status": "active"}"#;
    let requests = [
        ManageRequest::new("POST", "/v1/management/keys").with_body(body),
        ManageRequest::new("GET", "/v1/management/keys").with_query("limit=50&offset=0"),
        ManageRequest::new("GET", "/v1/management/keys").with_query("limit=251"),
        ManageRequest::new("PATCH", "/v1/management/keys/nosuchkey000000"),
        ManageRequest::new("PUT", "/v1/management/keys"),
    ];
    for request in &requests {
        let (mut a, mut b) = (ChaCha20Rng::from_seed([1; 32]), ChaCha20Rng::from_seed([1; 32]));
        let expected = sync.handle(&operator, request, NOW, &mut a);
        let got = asynchronous.handle_async(&operator, request, NOW, &mut b).await;
        assert_eq!((got.status(), got.body()), (expected.status(), expected.body()), "{request:?}");
    }
}

#[tokio::test]
async fn last_used_flushes_to_an_async_store() {
    let manager = Manager::new(MemoryStore::new(), verifier());
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    let created = manager.create_async(&Caller::operator(), &CreateKey::new("used"), NOW, &mut rng).await.unwrap();
    let id = created.record().id;
    let tracker = LastUsed::new(core::time::Duration::from_secs(60));
    let seen = Timestamp::from_unix_secs(1_800_000_010);
    tracker.touch(id, seen);
    let flushed = tracker.flush_async(manager.store(), Timestamp::from_unix_secs(1_800_000_100)).await;
    assert_eq!(flushed.written, 1);
    assert_eq!(manager.get_async(&Caller::operator(), &id).await.unwrap().last_used_at, Some(seen));
}
