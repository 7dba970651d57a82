//! What a request asks of its key: one value for the gate, the policy stage and the tower layer.

use alloc::borrow::Cow;
use alloc::string::String;
use core::net::IpAddr;

use super::RequiredScopes;
use crate::limit::LimitRequest;

/// What a request requires of its key, and what it will take from the key's limits: scopes,
/// model, provider, client address, a route label for events, and the estimates the limits
/// reserve ([`LimitRequest`]). All optional.
///
/// An attribute the request does not have is not checked, with two exceptions that fail closed:
/// a key with an IP allowlist refuses a request whose client address is unknown
/// (`ip_not_allowed`), because every request has a client and a server that forgets to pass it
/// must not open the key to the world; and a key with a model or provider allowlist refuses a
/// request whose model is [`RequestedModel::Unreadable`] (`model_not_allowed`). A request that
/// asks for no model (such as `GET /v1/models`) passes a model allowlist; a request with no
/// required scopes passes whatever the key's scopes are.
///
/// Names known in advance (`&'static str`) are held without a copy; a model read from a request
/// body is owned. The type has no lifetime, so a route's classifier returns it as it is.
///
/// ```
/// use keygate::{LimitRequest, RequestedModel, Requirements};
/// let request = Requirements::new()
///     .with_scopes("chat:write".parse()?)
///     .with_model("gpt-4o")
///     .with_provider("openai")
///     .with_client_ip("203.0.113.7".parse()?)
///     .with_limits(LimitRequest::new().with_tokens(1_200));
/// assert_eq!(request.model.name(), Some("gpt-4o"));
/// // A body that names a model in a way that cannot be read unambiguously:
/// assert_eq!(request.with_unreadable_model().model, RequestedModel::Unreadable);
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Requirements {
    /// The scopes the route requires; empty requires none.
    pub scopes: RequiredScopes,
    /// The model the request uses, as the client named it (or could not be read).
    pub model: RequestedModel<Cow<'static, str>>,
    /// The provider the request is routed to.
    pub provider: Option<Cow<'static, str>>,
    /// The client's address (the peer, or the address a trusted proxy reported).
    pub client_ip: Option<IpAddr>,
    /// A label for the route, reported in decision events (not checked).
    pub route: Option<Cow<'static, str>>,
    /// What the request takes from the key's limits: tokens, credits, spend estimates.
    pub limits: LimitRequest,
}

impl Requirements {
    /// Nothing required beyond a valid key; one request, no token or spend estimate.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `scopes`.
    #[must_use]
    pub fn with_scopes(mut self, scopes: RequiredScopes) -> Self {
        self.scopes = scopes;
        self
    }

    /// Names the model: a name (`"gpt-4o"`), or a [`RequestedModel`] as read from a body,
    /// which may be [`Unreadable`](RequestedModel::Unreadable).
    #[must_use]
    pub fn with_model(mut self, model: impl Into<RequestedModel<Cow<'static, str>>>) -> Self {
        self.model = model.into();
        self
    }

    /// Says the request names a model that could not be read unambiguously: refused by any key
    /// with a model or provider allowlist.
    #[must_use]
    pub fn with_unreadable_model(mut self) -> Self {
        self.model = RequestedModel::Unreadable;
        self
    }

    /// Names the provider.
    #[must_use]
    pub fn with_provider(mut self, provider: impl Into<Cow<'static, str>>) -> Self {
        self.provider = Some(provider.into());
        self
    }

    /// Names the client's address.
    #[must_use]
    pub fn with_client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = Some(ip);
        self
    }

    /// Labels the route for decision events.
    #[must_use]
    pub fn with_route(mut self, route: impl Into<Cow<'static, str>>) -> Self {
        self.route = Some(route.into());
        self
    }

    /// What the request takes from the key's limits.
    #[must_use]
    pub fn with_limits(mut self, limits: LimitRequest) -> Self {
        self.limits = limits;
        self
    }
}

/// The model a request asks for: none, this one, or one that could not be read.
///
/// The third state exists so that a reader that fails (a body that does not parse, a duplicate
/// `model` key, a model that is not a string) cannot turn its failure into "no model", which
/// every allowlist permits: [`authorize`](super::authorize) refuses [`Unreadable`](Self::Unreadable) for a key with
/// a model or provider allowlist, and lets it through for a key without one (the handler then
/// answers the malformed request itself). `S` is `Cow<str>` in [`Requirements`] and `String` in
/// a `JsonModel` read from a body.
///
/// ```
/// use keygate::RequestedModel;
/// let asked: RequestedModel<String> = "gpt-4o".into();
/// assert_eq!(asked.as_deref(), RequestedModel::Named("gpt-4o"));
/// assert_eq!(asked.name(), Some("gpt-4o"));
/// assert_eq!(RequestedModel::<String>::Unreadable.name(), None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum RequestedModel<S> {
    /// The request asks for no model (`GET /v1/models`, a body without a `model` field).
    #[default]
    Absent,
    /// The request asks for this model.
    Named(S),
    /// The request names a model that could not be read unambiguously. Fails closed: refused
    /// by any key with a model or provider allowlist.
    Unreadable,
}

impl<S: AsRef<str>> RequestedModel<S> {
    /// The model's name, if the request named one that was read.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Named(model) => Some(model.as_ref()),
            Self::Absent | Self::Unreadable => None,
        }
    }

    /// The same state, borrowing the name.
    #[must_use]
    pub fn as_deref(&self) -> RequestedModel<&str> {
        match self {
            Self::Absent => RequestedModel::Absent,
            Self::Named(model) => RequestedModel::Named(model.as_ref()),
            Self::Unreadable => RequestedModel::Unreadable,
        }
    }
}

impl From<&str> for RequestedModel<String> {
    fn from(model: &str) -> Self {
        Self::Named(model.into())
    }
}

impl From<String> for RequestedModel<String> {
    fn from(model: String) -> Self {
        Self::Named(model)
    }
}

impl From<&String> for RequestedModel<String> {
    fn from(model: &String) -> Self {
        Self::Named(model.clone())
    }
}

impl<'a> From<&'a str> for RequestedModel<&'a str> {
    fn from(model: &'a str) -> Self {
        Self::Named(model)
    }
}

impl From<&'static str> for RequestedModel<Cow<'static, str>> {
    fn from(model: &'static str) -> Self {
        Self::Named(Cow::Borrowed(model))
    }
}

impl From<String> for RequestedModel<Cow<'static, str>> {
    fn from(model: String) -> Self {
        Self::Named(Cow::Owned(model))
    }
}

impl From<Cow<'static, str>> for RequestedModel<Cow<'static, str>> {
    fn from(model: Cow<'static, str>) -> Self {
        Self::Named(model)
    }
}

impl From<RequestedModel<String>> for RequestedModel<Cow<'static, str>> {
    fn from(model: RequestedModel<String>) -> Self {
        match model {
            RequestedModel::Absent => Self::Absent,
            RequestedModel::Named(model) => Self::Named(Cow::Owned(model)),
            RequestedModel::Unreadable => Self::Unreadable,
        }
    }
}

impl From<&RequestedModel<String>> for RequestedModel<Cow<'static, str>> {
    fn from(model: &RequestedModel<String>) -> Self {
        match model {
            RequestedModel::Absent => Self::Absent,
            RequestedModel::Named(model) => Self::Named(Cow::Owned(model.clone())),
            RequestedModel::Unreadable => Self::Unreadable,
        }
    }
}
