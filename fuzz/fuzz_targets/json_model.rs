//! The JSON model reader on arbitrary bodies: it never panics, and it agrees with a full parse
//! (`serde_json::Value`) wherever that parse succeeds: a model is named only when the body is an
//! object whose one `model` is that string; "no model" only when the object has no `model` at
//! all; everything else is unreadable, never "no model".
#![no_main]

use keygate::RequestedModel;
use keygate::tower::JsonModel;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let read = JsonModel::read(data);
    assert_eq!(read.body_len, data.len());
    if data.is_empty() {
        assert_eq!(read.model, RequestedModel::Absent);
        return;
    }
    if let RequestedModel::Named(_) | RequestedModel::Absent = read.model {
        assert!(core::str::from_utf8(data).is_ok(), "a model read from a body that is not UTF-8");
    }
    // The full parse keeps the last of duplicate keys, and gives up on deep nesting and on
    // numbers out of range, which the reader skips: compare where it succeeds.
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    match (value.as_object().map(|object| object.get("model")), &read.model) {
        (Some(None), RequestedModel::Absent) => {}
        (Some(Some(Value::String(model))), RequestedModel::Named(read)) => assert_eq!(model, read),
        // Named twice (the full parse saw the last), or not a string.
        (Some(Some(_)), RequestedModel::Unreadable) => {}
        (None, RequestedModel::Unreadable) => {}
        (parsed, read) => panic!("the full parse saw {parsed:?}, the reader {read:?}"),
    }
});
