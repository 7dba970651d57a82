//! A `tower` layer that puts the whole pipeline in front of any HTTP service (axum, tonic, hyper).
//!
//! ```text
//! request ──► Gate::authenticate_async(Authorization, now)     the key, from the headers alone
//!         ──► ReadBody (none, or the JSON model: read_json_model)        body.rs, json_model.rs
//!         ──► Classify (what the route requires: scopes, model, provider, client IP, tokens)
//!         ──► Gate::admit(key, requirements, now)                  policy and limits
//!               denial ──► status + WWW-Authenticate / Retry-After / x-ratelimit-* + JSON body
//!                          (for gRPC requests: a trailers-only response with the grpc-status;
//!                          a hook may change it: KeyGateLayer::on_denial)          respond.rs
//!               pass   ──► Principal into the request's extensions ──► inner service
//!                          response ──► + x-ratelimit-* headers, body wrapped in GateBody
//! ```
//!
//! The layer only translates: the decisions, their codes, headers and bodies come from
//! [`Gate`](crate::Gate) and [`Denial`](crate::Denial). Routes say what they require with a
//! [`Classify`]: a fixed [`Requirements`] (what [`KeyGate::layer`](crate::KeyGate::layer) starts
//! with; [`KeyGateLayer::require_scopes`] adds scopes), or any
//! `Fn(&http::Request<B>) -> Requirements`.
//!
//! # Bodies and the model
//!
//! The key is checked from the headers first; a caller without a valid key is answered before
//! a byte of its body is read. By default the layer reads no body. With
//! `KeyGateLayer::read_json_model` (the `json` feature) it then buffers a JSON body (bounded:
//! 413 past the bound, 408 if it does not arrive in time, 400 if it breaks off) and leaves a
//! `JsonModel` in the extensions for the classifier, whose model is absent, named, or
//! [`Unreadable`](crate::RequestedModel::Unreadable). A body it cannot read unambiguously (or does not
//! read: another content type) is never taken for "no model": passed on to
//! [`Requirements::with_model`], an unreadable model is refused by every key with a model or
//! provider allowlist.
//!
//! # gRPC
//!
//! A gRPC request (a `POST` over HTTP/2 with content type `application/grpc` or
//! `application/grpc+<codec>`, or a gRPC-Web `POST` over any version) is denied as gRPC
//! expects: a trailers-only response, HTTP 200 with `grpc-status` and a `grpc-message` that
//! starts with the stable code. Any other request is denied with its HTTP status and JSON body,
//! whatever content type it claims. A denial never reaches the inner service.
//!
//! # The request's lifetime
//!
//! The request's [`Principal`](crate::Principal) (its key, concurrency slot and reserved
//! estimates) travels with the response body, [`GateBody`], and is settled when the body ends:
//! at the end of a stream, or when the body and the handler's handles are dropped (client
//! gone). Then the usage the handler reported through
//! [`Principal::report`](crate::Principal::report) is settled (tokens refunded or charged,
//! spend recorded), the slot released, and the usage reported to the gate's events. A handler
//! that reports nothing is settled as having used nothing.

#![cfg(feature = "tower")]

mod body;
#[cfg(feature = "json")]
mod json_model;
mod layer;
mod respond;

pub use body::{BodyRefused, GateBody, Headers, ReadBody};
#[cfg(feature = "json")]
pub use json_model::{JsonModel, ReadJsonModel};
pub use layer::{KeyGateLayer, KeyGateService};
pub use respond::{DenialHook, denial_response};

use http::Request;

use crate::Requirements;

/// Says what a request requires: a fixed [`Requirements`] for every request, or any
/// `Fn(&http::Request<B>) -> Requirements`.
pub trait Classify<B>: Clone + Send + Sync + 'static {
    /// The requirements of `request`.
    fn classify(&self, request: &Request<B>) -> Requirements;
}

impl<B> Classify<B> for Requirements {
    fn classify(&self, _: &Request<B>) -> Requirements {
        self.clone()
    }
}

impl<B, F> Classify<B> for F
where
    F: Fn(&Request<B>) -> Requirements + Clone + Send + Sync + 'static,
{
    fn classify(&self, request: &Request<B>) -> Requirements {
        self(request)
    }
}
