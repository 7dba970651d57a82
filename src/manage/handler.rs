//! A framework-free HTTP handler for the management endpoints (needs `json`).

#![cfg(feature = "json")]

use alloc::string::String;
use core::fmt;

use rand_core::TryCryptoRng;
use serde::Serialize;
use zeroize::Zeroize;

use super::json::{ImportedResponse, ListBody, import_request};
use super::{
    Access, Caller, CreateKey, CreatedKey, DeletedResponse, ErrorResponse, KeyResponse, KeyView, ListKeys, ManageError,
    Manager, RotateKey, Rotated, ScopesWire, UpdateKey,
};
use crate::secret::PepperId;
use crate::store::resolve;
use crate::{AsyncKeyStore, KeyId, KeyStore, StoreError, Timestamp};

/// The path of the key collection.
const KEYS: &str = "/v1/management/keys";

/// One of the management endpoints, with the key id from the path where it has one.
///
/// | method and path | route | access |
/// |---|---|---|
/// | `GET /v1/management/keys` | `List` | read |
/// | `POST /v1/management/keys` | `Create` | write |
/// | `GET /v1/management/keys/{id}` | `Get` | read |
/// | `PATCH /v1/management/keys/{id}` | `Update` | write |
/// | `DELETE /v1/management/keys/{id}` | `Delete` | write |
/// | `POST /v1/management/keys/{id}/rotate` | `Rotate` | write |
/// | `POST /v1/management/keys/import` | `Import` | write |
///
/// A gateway can route with it and check the scopes per route before calling
/// [`Manager::handle`] (which checks them again).
///
/// ```
/// use keygate::manage::{Access, ManageRoute};
/// let route = ManageRoute::parse("PATCH", "/v1/management/keys/abc123")?;
/// assert_eq!(route, ManageRoute::Update("abc123"));
/// assert_eq!(route.access(), Access::Write);
/// assert_eq!(ManageRoute::parse("PUT", "/v1/management/keys").unwrap_err().status(), 405);
/// # Ok::<(), keygate::manage::ManageError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManageRoute<'a> {
    /// List keys.
    List,
    /// Create a key.
    Create,
    /// Get one key.
    Get(&'a str),
    /// Update one key.
    Update(&'a str),
    /// Delete one key.
    Delete(&'a str),
    /// Rotate one key.
    Rotate(&'a str),
    /// Import keys that exist elsewhere.
    Import,
}

impl<'a> ManageRoute<'a> {
    /// The route of a method (case-sensitive, as HTTP methods are) and a path (without the
    /// query; a trailing `/` is ignored).
    ///
    /// # Errors
    ///
    /// [`ManageError::RouteNotFound`] for another path; [`ManageError::MethodNotAllowed`]
    /// (with the allowed methods) for another method.
    pub fn parse(method: &str, path: &'a str) -> Result<Self, ManageError> {
        let rest = path.strip_prefix(KEYS).ok_or(ManageError::RouteNotFound)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return match method {
                "GET" => Ok(Self::List),
                "POST" => Ok(Self::Create),
                _ => Err(ManageError::MethodNotAllowed("GET, POST")),
            };
        }
        let rest = rest.strip_prefix('/').ok_or(ManageError::RouteNotFound)?;
        match rest.split_once('/') {
            // No generated or imported id is this short, so the name is free for the route.
            None if rest == "import" => match method {
                "POST" => Ok(Self::Import),
                _ => Err(ManageError::MethodNotAllowed("POST")),
            },
            None if !rest.is_empty() => match method {
                "GET" => Ok(Self::Get(rest)),
                "PATCH" => Ok(Self::Update(rest)),
                "DELETE" => Ok(Self::Delete(rest)),
                _ => Err(ManageError::MethodNotAllowed("GET, PATCH, DELETE")),
            },
            Some((id, "rotate")) if !id.is_empty() => match method {
                "POST" => Ok(Self::Rotate(id)),
                _ => Err(ManageError::MethodNotAllowed("POST")),
            },
            _ => Err(ManageError::RouteNotFound),
        }
    }

    /// Whether the route reads or writes.
    #[must_use]
    pub fn access(&self) -> Access {
        match self {
            Self::List | Self::Get(_) => Access::Read,
            _ => Access::Write,
        }
    }
}

/// An HTTP request to the management API, as any server framework has it.
///
/// ```
/// use keygate::manage::ManageRequest;
/// let request = ManageRequest::new("GET", "/v1/management/keys").with_query("limit=50&offset=0");
/// # let _ = request;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ManageRequest<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: &'a str,
    body: &'a [u8],
}

impl<'a> ManageRequest<'a> {
    /// A request with a method (`GET`, `POST`, `PATCH`, `DELETE`) and a path. A path with a
    /// `?query` is split there unless a query is also set.
    #[must_use]
    pub fn new(method: &'a str, path: &'a str) -> Self {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        Self { method, path, query, body: &[] }
    }

    /// The URL query, without the `?`.
    #[must_use]
    pub fn with_query(mut self, query: &'a str) -> Self {
        self.query = query;
        self
    }

    /// The request body.
    #[must_use]
    pub fn with_body(mut self, body: &'a [u8]) -> Self {
        self.body = body;
        self
    }
}

/// The HTTP response to send: a status and a JSON body (`Content-Type: application/json`).
///
/// The body of a create or rotate response holds a key's full token. It is written into one
/// allocation of the right size (never reallocated with the token in it) and zeroized when the
/// response is dropped; `Debug` shows no body that holds a token.
pub struct ManageResponse {
    status: u16,
    body: String,
    allow: Option<&'static str>,
    secret: bool,
}

impl ManageResponse {
    /// The media type of every body.
    pub const CONTENT_TYPE: &'static str = "application/json";

    /// The HTTP status: 200, 201 (created, rotated), 400, 403, 404, 405, 409, 413, 500 or 503.
    #[must_use]
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The JSON body.
    #[must_use]
    pub fn body(&self) -> &str {
        &self.body
    }

    /// The value of the `Allow` header a 405 needs.
    #[must_use]
    pub fn allow(&self) -> Option<&'static str> {
        self.allow
    }

    /// Whether the body holds a key's full token (the answer to a create or a rotation): do
    /// not log it, cache it or keep it after sending.
    #[must_use]
    pub fn contains_secret(&self) -> bool {
        self.secret
    }

    pub(crate) fn json(status: u16, value: &impl Serialize) -> Self {
        match serde_json::to_string(value) {
            Ok(body) => Self { status, body, allow: None, secret: false },
            Err(_) => Self::internal(),
        }
    }

    /// The answer when serialization fails, which it does not for these types.
    fn internal() -> Self {
        let body = r#"{"error":{"message":"internal error","type":"api_error","code":"internal_error","param":null}}"#;
        Self { status: 500, body: body.into(), allow: None, secret: false }
    }

    pub(crate) fn error(e: &ManageError) -> Self {
        let mut r = Self::json(e.status(), &ErrorResponse(e));
        if let ManageError::MethodNotAllowed(allow) = e {
            r.allow = Some(allow);
        }
        r
    }

    /// `{"ok":true,"key":{...,"key":"<token>"}}`, with 201.
    fn created(created: &CreatedKey, wire: ScopesWire, pepper: PepperId) -> Self {
        let view = KeyView::new(created.record()).with_scopes_wire(wire).with_current_pepper(pepper);
        let Ok(view) = serde_json::to_string(&view) else { return Self::internal() };
        let token = created.token().expose_secret();
        let mut body = String::with_capacity(view.len() + 6 * token.len() + 32);
        body.push_str(r#"{"ok":true,"key":"#);
        push_with_token(&mut body, &view, token);
        body.push('}');
        Self { status: 201, body, allow: None, secret: true }
    }

    /// `{"ok":true,"key":{...,"key":"<token>"},"previous":{...}}`, with 201.
    fn rotated(rotated: &Rotated, wire: ScopesWire, pepper: PepperId) -> Self {
        let view = |r| KeyView::new(r).with_scopes_wire(wire).with_current_pepper(pepper);
        let (Ok(view), Ok(previous)) =
            (serde_json::to_string(&view(rotated.key().record())), serde_json::to_string(&view(rotated.previous())))
        else {
            return Self::internal();
        };
        let token = rotated.key().token().expose_secret();
        let mut body = String::with_capacity(view.len() + previous.len() + 6 * token.len() + 48);
        body.push_str(r#"{"ok":true,"key":"#);
        push_with_token(&mut body, &view, token);
        body.push_str(r#","previous":"#);
        body.push_str(&previous);
        body.push('}');
        Self { status: 201, body, allow: None, secret: true }
    }
}

/// Appends the JSON object `view` with a last member `"key": token`, as [`KeyView::created`]
/// serializes, into `out` (which has the capacity for it).
fn push_with_token(out: &mut String, view: &str, token: &str) {
    out.push_str(view.strip_suffix('}').unwrap_or(view));
    out.push_str(r#","key":""#);
    for c in token.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c < ' ' => {
                let n = u32::from(c);
                out.push_str("\\u00");
                out.push(char::from_digit(n >> 4, 16).unwrap_or('0'));
                out.push(char::from_digit(n & 0xf, 16).unwrap_or('0'));
            }
            c => out.push(c),
        }
    }
    out.push_str("\"}");
}

impl Drop for ManageResponse {
    fn drop(&mut self) {
        if self.secret {
            self.body.zeroize();
        }
    }
}

impl fmt::Debug for ManageResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ManageResponse");
        d.field("status", &self.status);
        if self.secret {
            d.field("body", &"<contains a token>");
        } else {
            d.field("body", &self.body);
        }
        d.finish()
    }
}

impl<S: KeyStore + Send + Sync> Manager<S> {
    /// Answers one HTTP request to the management API, for an authenticated `caller`: routes
    /// it ([`ManageRoute`]), reads the query and body, runs the operation, and writes the JSON
    /// answer or the OpenAI-compatible error.
    ///
    /// | route | success |
    /// |---|---|
    /// | list (`team_id`, `limit` 1..=250 default 50, `offset`) | 200 `{"ok":true,"keys":[...],"total","limit","offset"}` |
    /// | create | 201 `{"ok":true,"key":{...,"key":"<token>"}}` |
    /// | get, update | 200 `{"ok":true,"key":{...}}` |
    /// | delete | 200 `{"ok":true,"id":"...","deleted":true}` |
    /// | rotate | 201 `{"ok":true,"key":{...,"key":"<token>"},"previous":{...}}` |
    /// | import (`{"keys": [...]}`, see [`ImportKey::from_json`](crate::manage::ImportKey::from_json)) | 201 `{"ok":true,"imported":n,"keys":[{"index","id","name","prefix","digest"}]}` |
    ///
    /// The caller's access is checked before the body is read; a body larger than
    /// [`ManageConfig::max_body`](crate::ManageConfig) (for an import,
    /// [`ManageConfig::max_import_body`](crate::ManageConfig)) is refused with 413 unread.
    ///
    /// ```
    /// use keygate::{Caller, Manager, MemoryStore, OsRng, Pepper, Timestamp, Verifier};
    /// use keygate::manage::ManageRequest;
    /// use keygate::format::SelectorFormat;
    /// use keygate::secret::{PepperId, Peppers};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let verifier = Verifier::new(SelectorFormat::new("aistats")?, Peppers::new(Pepper::new(PepperId(1), &[7; 32])?));
    /// let manager = Manager::new(MemoryStore::new(), verifier);
    /// let caller = Caller::operator(); // in a server: Caller::from(&authorized_key)
    /// let body = br#"{"name": "My key", "scopes": ["read","write"], "status": "active"}"#;
    /// let request = ManageRequest::new("POST", "/v1/management/keys").with_body(body);
    /// let response = manager.handle(&caller, &request, Timestamp::now(), &mut OsRng);
    /// assert_eq!(response.status(), 201);
    /// assert!(response.body().starts_with(r#"{"ok":true,"key":{"id":""#));
    ///
    /// let listed = manager.handle(&caller, &ManageRequest::new("GET", "/v1/management/keys?limit=251"), Timestamp::now(), &mut OsRng);
    /// assert_eq!(listed.status(), 400);
    /// assert!(listed.body().contains(r#""param":"limit""#));
    /// # Ok(()) }
    /// ```
    pub fn handle<G: TryCryptoRng + ?Sized>(
        &self,
        caller: &Caller,
        request: &ManageRequest<'_>,
        now: Timestamp,
        rng: &mut G,
    ) -> ManageResponse {
        resolve(self.dispatch(self.store(), caller, request, now, rng))
            .unwrap_or_else(|| Err(ManageError::Store(StoreError::Unavailable)))
            .unwrap_or_else(|e| ManageResponse::error(&e))
    }
}

impl<S: AsyncKeyStore> Manager<S> {
    /// [`Manager::handle`] over an asynchronous store.
    pub async fn handle_async<G: TryCryptoRng + ?Sized>(
        &self,
        caller: &Caller,
        request: &ManageRequest<'_>,
        now: Timestamp,
        rng: &mut G,
    ) -> ManageResponse {
        self.dispatch(self.store(), caller, request, now, rng).await.unwrap_or_else(|e| ManageResponse::error(&e))
    }
}

impl<S> Manager<S> {
    async fn dispatch<B: AsyncKeyStore + ?Sized, G: TryCryptoRng + ?Sized>(
        &self,
        store: &B,
        caller: &Caller,
        request: &ManageRequest<'_>,
        now: Timestamp,
        rng: &mut G,
    ) -> Result<ManageResponse, ManageError> {
        let route = ManageRoute::parse(request.method, request.path)?;
        caller.authorize(route.access(), self.config())?;
        let max = if route == ManageRoute::Import { self.config().max_import_body } else { self.config().max_body };
        if request.body.len() > max {
            return Err(ManageError::BodyTooLarge(max));
        }
        let body = request.body;
        let wire = self.config().scopes_wire;
        let pepper = self.verifier().peppers().current().id();
        let view = |r| KeyResponse(KeyView::new(r).with_scopes_wire(wire).with_current_pepper(pepper));
        Ok(match route {
            ManageRoute::List => {
                let page = self.list_in(store, caller, &ListKeys::from_query(request.query)?).await?;
                ManageResponse::json(200, &ListBody(&page, wire, Some(pepper)))
            }
            ManageRoute::Create => {
                let created = self.create_in(store, caller, &CreateKey::from_json(body)?, now, rng).await?;
                ManageResponse::created(&created, wire, pepper)
            }
            ManageRoute::Get(id) => {
                let record = self.get_in(store, caller, &key_id(id)?).await?;
                ManageResponse::json(200, &view(&record))
            }
            ManageRoute::Update(id) => {
                let id = key_id(id)?;
                let record = self.update_in(store, caller, &id, &UpdateKey::from_json(body)?, now).await?;
                ManageResponse::json(200, &view(&record))
            }
            ManageRoute::Delete(id) => {
                ManageResponse::json(200, &DeletedResponse(&*self.delete_in(store, caller, &key_id(id)?).await?))
            }
            ManageRoute::Rotate(id) => {
                let id = key_id(id)?;
                ManageResponse::rotated(
                    &self.rotate_in(store, caller, &id, &RotateKey::from_json(body)?, now, rng).await?,
                    wire,
                    pepper,
                )
            }
            ManageRoute::Import => {
                let records = self.import_in(store, caller, &import_request(body)?, now).await?;
                ManageResponse::json(201, &ImportedResponse::new(&records, pepper))
            }
        })
    }
}

/// A key id from a path: anything that is not a valid id names no key.
fn key_id(text: &str) -> Result<KeyId, ManageError> {
    KeyId::new(text).map_err(|_| ManageError::NotFound)
}
