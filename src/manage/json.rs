//! The management API's JSON: request bodies in, key views and envelopes out (needs `json`).
//!
//! Reading takes a body apart into its fields, each kept as its raw JSON text, then decodes
//! each field by its own rule; so every error names its field (`param`), unknown and repeated
//! fields are refused by name, `null` is told from absent, and money and metadata are read from
//! their exact text, never through a floating-point number. Writing serializes the records in a
//! fixed field order.

#![cfg(feature = "json")]

mod read;
mod value;
mod write;

use serde_json::value::RawValue;

pub(super) use read::import_request;
pub(super) use write::ListBody;
pub use write::{
    DeletedResponse, ErrorResponse, ImportedResponse, KeyListResponse, KeyResponse, KeyView, RotatedResponse,
};

/// The JSON type of a raw value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    /// The type of `raw`, by its first byte (serde_json has checked the rest).
    fn of(raw: &RawValue) -> Self {
        match raw.get().as_bytes().first() {
            Some(b'n') => Self::Null,
            Some(b't' | b'f') => Self::Bool,
            Some(b'"') => Self::String,
            Some(b'[') => Self::Array,
            Some(b'{') => Self::Object,
            _ => Self::Number,
        }
    }
}
