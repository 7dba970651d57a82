//! The management operations over a [`KeyStore`] or an [`AsyncKeyStore`]: thin drivers around
//! the rules, written once over an [`AsyncKeyStore`] (every [`KeyStore`] is one).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use rand_core::TryCryptoRng;

use super::import::plan_import;
use super::rules::{
    check_create, check_delete, check_get, expire_by, plan_create, plan_list, plan_rotation, plan_update,
};
use super::{
    Access, Caller, CreateKey, ImportKey, ListKeys, ManageConfig, ManageError, RejectedEntry, RotateKey, UpdateKey,
};
use crate::format::GeneratedKey;
use crate::secret::SecretToken;
use crate::store::{BatchError, resolve};
use crate::{AsyncKeyStore, KeyId, KeyKind, KeyRecord, KeyStatus, KeyStore, StoreError, Timestamp, Verifier};

/// The key management API over a [`KeyStore`]: create, list, get, update, rotate and delete,
/// for a [`Caller`], by the rules of [`Caller`] and the `plan_*` functions.
///
/// Every operation checks the caller's access first, then reads what it needs, lets the pure
/// rules decide, and writes the result. Updates are compare-and-swap on the record's revision:
/// on a concurrent change the update re-reads the key and applies itself again (an update is a
/// set of field assignments, so it means the same on the newer record), up to
/// [`ManageConfig::cas_attempts`] times, then answers [`ManageError::Conflict`] (409).
///
/// ```
/// use keygate::{Caller, KeyStatus, Manager, MemoryStore, OsRng, Pepper, Scopes, Timestamp, Verifier};
/// use keygate::manage::{CreateKey, ListKeys, UpdateKey};
/// use keygate::format::SelectorFormat;
/// use keygate::secret::{PepperId, Peppers};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let verifier = Verifier::new(SelectorFormat::new("aistats")?, Peppers::new(Pepper::new(PepperId(1), &[7; 32])?));
/// let manager = Manager::new(MemoryStore::new(), verifier);
/// let operator = Caller::operator();
/// let now = Timestamp::now();
///
/// let mut request = CreateKey::new("ci deploy");
/// request.scopes = Scopes::parse("read write")?;
/// let created = manager.create(&operator, &request, now, &mut OsRng)?;
/// let token = created.token().expose_secret(); // show it once; it is not stored
/// assert!(token.starts_with(created.record().prefix.as_str()));
///
/// let mut disable = UpdateKey::default();
/// disable.status = Some(KeyStatus::Disabled);
/// let updated = manager.update(&operator, &created.record().id, &disable, now)?;
/// assert_eq!(updated.status, KeyStatus::Disabled);
/// assert_eq!(manager.list(&operator, &ListKeys::default())?.total, 1);
/// # Ok(()) }
/// ```
pub struct Manager<S> {
    store: S,
    verifier: Verifier,
    config: ManageConfig,
}

impl<S> Manager<S> {
    /// A manager over `store`, issuing keys with `verifier`'s primary format and pepper, with
    /// the default [`ManageConfig`].
    #[must_use]
    pub fn new(store: S, verifier: Verifier) -> Self {
        Self { store, verifier, config: ManageConfig::default() }
    }

    /// The same manager with `config`.
    #[must_use]
    pub fn with_config(mut self, config: ManageConfig) -> Self {
        self.config = config;
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The verifier keys are issued with.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The settings.
    pub fn config(&self) -> &ManageConfig {
        &self.config
    }
}

impl<S> fmt::Debug for Manager<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("verifier", &self.verifier)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: KeyStore + Send + Sync> Manager<S> {
    /// Creates a key. The result holds the full token: return it to the caller once, it is
    /// never stored and cannot be shown again.
    ///
    /// # Errors
    ///
    /// As [`check_create`](crate::manage::check_create); [`ManageError::Generate`] if the RNG fails;
    /// [`ManageError::Conflict`] if the id exists (practically never); [`ManageError::Store`].
    pub fn create<G: TryCryptoRng + ?Sized>(
        &self,
        caller: &Caller,
        request: &CreateKey,
        now: Timestamp,
        rng: &mut G,
    ) -> Result<CreatedKey, ManageError> {
        resolve(self.create_in(&self.store, caller, request, now, rng)).unwrap_or_else(|| Err(not_ready()))
    }

    /// Imports keys that exist elsewhere, all or none: [`Manager::import_async`] over a
    /// synchronous store.
    ///
    /// # Errors
    ///
    /// As [`Manager::import_async`].
    pub fn import(
        &self,
        caller: &Caller,
        entries: &[ImportKey],
        now: Timestamp,
    ) -> Result<Vec<Arc<KeyRecord>>, ManageError> {
        resolve(self.import_in(&self.store, caller, entries, now)).unwrap_or_else(|| Err(not_ready()))
    }

    /// One page of the keys the caller sees, in the stable order (creation time, then id).
    ///
    /// # Errors
    ///
    /// As [`plan_list`](crate::manage::plan_list); [`ManageError::Store`].
    pub fn list(&self, caller: &Caller, request: &ListKeys) -> Result<KeyPage, ManageError> {
        resolve(self.list_in(&self.store, caller, request)).unwrap_or_else(|| Err(not_ready()))
    }

    /// The key `id`, if the caller sees it.
    ///
    /// # Errors
    ///
    /// [`ManageError::NotFound`] (also for another team's key); the access errors of
    /// [`Caller::authorize`]; [`ManageError::Store`].
    pub fn get(&self, caller: &Caller, id: &KeyId) -> Result<Arc<KeyRecord>, ManageError> {
        resolve(self.get_in(&self.store, caller, id)).unwrap_or_else(|| Err(not_ready()))
    }

    /// Applies `request` to the key `id`, with compare-and-swap (see the type's docs). An
    /// update that changes nothing writes nothing.
    ///
    /// # Errors
    ///
    /// As [`plan_update`](crate::manage::plan_update); [`ManageError::Conflict`] when the key kept
    /// changing concurrently; [`ManageError::Store`].
    pub fn update(
        &self,
        caller: &Caller,
        id: &KeyId,
        request: &UpdateKey,
        now: Timestamp,
    ) -> Result<Arc<KeyRecord>, ManageError> {
        resolve(self.update_in(&self.store, caller, id, request, now)).unwrap_or_else(|| Err(not_ready()))
    }

    /// Deletes the key `id`, returning its last record. Prefer revoking (an update to
    /// `revoked`), which keeps the record for audit and answers `revoked_api_key`.
    ///
    /// The rules are checked against the record read just before the delete, and the delete
    /// holds only for that record: the key is first revoked with compare-and-swap on its
    /// revision (a concurrent change re-reads it and checks again, up to
    /// [`ManageConfig::cas_attempts`](crate::ManageConfig) times), then removed. If the removal
    /// fails, the key stays revoked.
    ///
    /// # Errors
    ///
    /// As [`check_delete`](crate::manage::check_delete); [`ManageError::Store`].
    pub fn delete(&self, caller: &Caller, id: &KeyId) -> Result<Arc<KeyRecord>, ManageError> {
        resolve(self.delete_in(&self.store, caller, id)).unwrap_or_else(|| Err(not_ready()))
    }

    /// Rotates the key `id`: issues a successor with the same configuration (see
    /// [`plan_rotation`](crate::manage::plan_rotation)) and, with an overlap window, makes the old key
    /// expire at `now + overlap` (compare-and-swap, never extending an earlier expiry).
    ///
    /// The successor is inserted first and the old key re-read after: if the old key changed
    /// meanwhile (disabled, tightened), the successor is planned again from it and rewritten, so
    /// the change reaches it; if the old key was revoked or deleted, moved beyond the caller, or
    /// its expiry cannot be set, the successor is deleted again and the rotation fails, so a
    /// rotation never leaves a successor whose token nobody received.
    ///
    /// # Errors
    ///
    /// As [`plan_rotation`](crate::manage::plan_rotation); [`ManageError::Generate`];
    /// [`ManageError::Conflict`]; [`ManageError::Store`].
    pub fn rotate<G: TryCryptoRng + ?Sized>(
        &self,
        caller: &Caller,
        id: &KeyId,
        request: &RotateKey,
        now: Timestamp,
        rng: &mut G,
    ) -> Result<Rotated, ManageError> {
        resolve(self.rotate_in(&self.store, caller, id, request, now, rng)).unwrap_or_else(|| Err(not_ready()))
    }
}

/// The same operations over an [`AsyncKeyStore`] (a database, a cache): the same rules, the
/// same errors, each store call awaited.
impl<S: AsyncKeyStore> Manager<S> {
    /// Imports keys that exist elsewhere, all or none (see [`plan_import`]): the stored
    /// records, in the order of `entries`. No token is returned: the keys' owners have them.
    ///
    /// # Errors
    ///
    /// As [`plan_import`]; [`ManageError::ImportRejected`] naming, with
    /// [`ManageError::DuplicateKey`], every entry whose key the store holds already;
    /// [`ManageError::Store`].
    pub async fn import_async(
        &self,
        caller: &Caller,
        entries: &[ImportKey],
        now: Timestamp,
    ) -> Result<Vec<Arc<KeyRecord>>, ManageError> {
        self.import_in(&self.store, caller, entries, now).await
    }

    /// [`Manager::create`] over an asynchronous store.
    ///
    /// # Errors
    ///
    /// As [`Manager::create`].
    pub async fn create_async<G: TryCryptoRng + ?Sized>(
        &self,
        caller: &Caller,
        request: &CreateKey,
        now: Timestamp,
        rng: &mut G,
    ) -> Result<CreatedKey, ManageError> {
        self.create_in(&self.store, caller, request, now, rng).await
    }

    /// [`Manager::list`] over an asynchronous store.
    ///
    /// # Errors
    ///
    /// As [`Manager::list`].
    pub async fn list_async(&self, caller: &Caller, request: &ListKeys) -> Result<KeyPage, ManageError> {
        self.list_in(&self.store, caller, request).await
    }

    /// [`Manager::get`] over an asynchronous store.
    ///
    /// # Errors
    ///
    /// As [`Manager::get`].
    pub async fn get_async(&self, caller: &Caller, id: &KeyId) -> Result<Arc<KeyRecord>, ManageError> {
        self.get_in(&self.store, caller, id).await
    }

    /// [`Manager::update`] over an asynchronous store.
    ///
    /// # Errors
    ///
    /// As [`Manager::update`].
    pub async fn update_async(
        &self,
        caller: &Caller,
        id: &KeyId,
        request: &UpdateKey,
        now: Timestamp,
    ) -> Result<Arc<KeyRecord>, ManageError> {
        self.update_in(&self.store, caller, id, request, now).await
    }

    /// [`Manager::delete`] over an asynchronous store.
    ///
    /// # Errors
    ///
    /// As [`Manager::delete`].
    pub async fn delete_async(&self, caller: &Caller, id: &KeyId) -> Result<Arc<KeyRecord>, ManageError> {
        self.delete_in(&self.store, caller, id).await
    }

    /// [`Manager::rotate`] over an asynchronous store.
    ///
    /// # Errors
    ///
    /// As [`Manager::rotate`].
    pub async fn rotate_async<G: TryCryptoRng + ?Sized>(
        &self,
        caller: &Caller,
        id: &KeyId,
        request: &RotateKey,
        now: Timestamp,
        rng: &mut G,
    ) -> Result<Rotated, ManageError> {
        self.rotate_in(&self.store, caller, id, request, now, rng).await
    }
}

/// The operations, written once over an [`AsyncKeyStore`]: the synchronous methods run them over
/// a [`KeyStore`] (whose futures are ready at once) to completion in one poll, the `_async`
/// methods await them.
impl<S> Manager<S> {
    pub(super) async fn create_in<B: AsyncKeyStore + ?Sized, G: TryCryptoRng + ?Sized>(
        &self,
        store: &B,
        caller: &Caller,
        request: &CreateKey,
        now: Timestamp,
        rng: &mut G,
    ) -> Result<CreatedKey, ManageError> {
        check_create(caller, &self.config, request, now)?;
        let (key, issued) = self.verifier.issue(rng, request.kind, now)?;
        let record = plan_create(caller, &self.config, request, issued, now)?;
        let record = store.insert(record).await?;
        Ok(CreatedKey { record, key })
    }

    pub(super) async fn import_in<B: AsyncKeyStore + ?Sized>(
        &self,
        store: &B,
        caller: &Caller,
        entries: &[ImportKey],
        now: Timestamp,
    ) -> Result<Vec<Arc<KeyRecord>>, ManageError> {
        let records = plan_import(caller, &self.config, &self.verifier, entries, now)?;
        store.insert_batch(records).await.map_err(|e| match e {
            BatchError::Conflicts(indexes) => ManageError::ImportRejected(
                indexes
                    .into_iter()
                    .map(|i| {
                        let field = entries.get(i).map_or("key", ImportKey::field);
                        RejectedEntry::new(i, ManageError::DuplicateKey { field, earlier: None })
                    })
                    .collect(),
            ),
            BatchError::Store(e) => e.into(),
        })
    }

    pub(super) async fn list_in<B: AsyncKeyStore + ?Sized>(
        &self,
        store: &B,
        caller: &Caller,
        request: &ListKeys,
    ) -> Result<KeyPage, ManageError> {
        let query = plan_list(caller, &self.config, request)?;
        let page = store.list(&query).await?;
        Ok(KeyPage { records: page.records, total: page.total, limit: query.limit, offset: query.offset })
    }

    pub(super) async fn get_in<B: AsyncKeyStore + ?Sized>(
        &self,
        store: &B,
        caller: &Caller,
        id: &KeyId,
    ) -> Result<Arc<KeyRecord>, ManageError> {
        caller.authorize(Access::Read, &self.config)?;
        let found = store.get(id).await?;
        check_get(caller, &self.config, found.as_deref())?;
        found.ok_or(ManageError::NotFound)
    }

    pub(super) async fn update_in<B: AsyncKeyStore + ?Sized>(
        &self,
        store: &B,
        caller: &Caller,
        id: &KeyId,
        request: &UpdateKey,
        now: Timestamp,
    ) -> Result<Arc<KeyRecord>, ManageError> {
        caller.authorize(Access::Write, &self.config)?;
        for _ in 0..self.config.cas_attempts.max(1) {
            let found = store.get(id).await?;
            let Some(new) = plan_update(caller, &self.config, found.as_deref(), request, now)? else {
                return found.ok_or(ManageError::NotFound);
            };
            let expected = found.map_or(0, |r| r.revision);
            match store.replace(expected, new).await {
                Ok(stored) => return Ok(stored),
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(ManageError::Conflict)
    }

    pub(super) async fn delete_in<B: AsyncKeyStore + ?Sized>(
        &self,
        store: &B,
        caller: &Caller,
        id: &KeyId,
    ) -> Result<Arc<KeyRecord>, ManageError> {
        caller.authorize(Access::Write, &self.config)?;
        for _ in 0..self.config.cas_attempts.max(1) {
            let found = store.get(id).await?;
            check_delete(caller, &self.config, found.as_deref())?;
            let Some(found) = found else { return Err(ManageError::NotFound) };
            // Compare-and-swap on the record the rules were checked against: revoke it at that
            // revision (a concurrent change sends the delete back to the rules), then remove it.
            // A revoked key only ever changes its name and metadata, so the check still holds
            // when the row goes; if the removal fails, the key stays revoked.
            let mut revoked = KeyRecord::clone(&found);
            revoked.status = KeyStatus::Revoked;
            match store.replace(found.revision, revoked).await {
                Ok(_) => return Ok(store.delete(id).await?),
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(ManageError::Conflict)
    }

    pub(super) async fn rotate_in<B: AsyncKeyStore + ?Sized, G: TryCryptoRng + ?Sized>(
        &self,
        store: &B,
        caller: &Caller,
        id: &KeyId,
        request: &RotateKey,
        now: Timestamp,
        rng: &mut G,
    ) -> Result<Rotated, ManageError> {
        caller.authorize(Access::Write, &self.config)?;
        let found = store.get(id).await?;
        let kind = found.as_ref().map_or(KeyKind::STANDARD, |r| r.kind);
        let (key, issued) = self.verifier.issue(rng, kind, now)?;
        let plan = plan_rotation(caller, &self.config, found.as_deref(), request, issued, now)?;
        let Some(basis) = found else { return Err(ManageError::NotFound) };
        let inserted = store.insert(plan.successor).await?;
        let successor_id = inserted.id;
        let settled =
            self.settle(store, caller, request, Settle { basis, successor: inserted }, plan.old_expires_at, now);
        match settled.await {
            Ok(Settle { basis: previous, successor }) => {
                Ok(Rotated { key: CreatedKey { record: successor, key }, previous })
            }
            Err(e) => {
                // Best effort: the successor's token is never handed out, so it must not stay.
                let _ = store.delete(&successor_id).await;
                Err(e)
            }
        }
    }

    /// Re-reads the rotated key after its successor was inserted. If it changed since the
    /// successor was planned from it (disabled, tightened, revoked, moved out of the caller's
    /// reach), the rotation is planned again from what it is now and the successor rewritten,
    /// so no concurrent change is lost; then the old key's expiry is set, with compare-and-swap.
    async fn settle<B: AsyncKeyStore + ?Sized>(
        &self,
        store: &B,
        caller: &Caller,
        request: &RotateKey,
        mut state: Settle,
        at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<Settle, ManageError> {
        let id = state.basis.id;
        for _ in 0..self.config.cas_attempts.max(1) {
            let current = store.get(&id).await?.ok_or(ManageError::NotFound)?;
            if current.revision != state.basis.revision {
                let successor = KeyRecord::clone(&state.successor);
                let plan = plan_rotation(caller, &self.config, Some(&current), request, successor, now)?;
                if plan.successor != *state.successor {
                    state.successor = store.replace(state.successor.revision, plan.successor).await?;
                }
                state.basis = Arc::clone(&current);
            }
            let Some(new) = at.and_then(|at| expire_by(&current, at, now)) else {
                return Ok(Settle { basis: current, successor: state.successor });
            };
            match store.replace(current.revision, new).await {
                Ok(stored) => return Ok(Settle { basis: stored, successor: state.successor }),
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(ManageError::Conflict)
    }
}

/// A rotation in progress: the old key as the successor was last planned from it, and the
/// successor as stored.
struct Settle {
    basis: Arc<KeyRecord>,
    successor: Arc<KeyRecord>,
}

/// What a synchronous operation answers if a store future was not ready, which a [`KeyStore`]
/// never lets happen.
#[cold]
fn not_ready() -> ManageError {
    ManageError::Store(StoreError::Unavailable)
}

/// A newly created key: its stored record and the full token, to be shown exactly once.
///
/// `Debug` shows the record and the token's public parts, never the token.
pub struct CreatedKey {
    record: Arc<KeyRecord>,
    key: GeneratedKey,
}

impl CreatedKey {
    /// The stored record.
    #[must_use]
    pub fn record(&self) -> &Arc<KeyRecord> {
        &self.record
    }

    /// The full token (zeroized on drop). Return it to its owner; never log it.
    #[must_use]
    pub fn token(&self) -> &SecretToken {
        self.key.token()
    }
}

impl fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedKey").field("record", &self.record).field("key", &self.key).finish()
    }
}

/// The result of a rotation: the successor (with its token, shown once) and the old key's
/// record after the rotation.
#[derive(Debug)]
pub struct Rotated {
    key: CreatedKey,
    previous: Arc<KeyRecord>,
}

impl Rotated {
    /// The successor.
    #[must_use]
    pub fn key(&self) -> &CreatedKey {
        &self.key
    }

    /// The old key's record (with its new expiry, if the rotation set one).
    #[must_use]
    pub fn previous(&self) -> &Arc<KeyRecord> {
        &self.previous
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyPage {
    /// The keys of this page, in the stable order.
    pub records: Vec<Arc<KeyRecord>>,
    /// How many keys the listing has in all.
    pub total: usize,
    /// The page size asked for.
    pub limit: usize,
    /// The offset asked for.
    pub offset: usize,
}
