//! `OpaqueFormat::parse` on arbitrary input, with and without a checksum.
#![no_main]

use keygate::format::{KeyFormat, OpaqueFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = core::str::from_utf8(data) else { return };
    for checksum in [false, true] {
        let format = KeyFormat::from(OpaqueFormat::new("sk-aisa-").unwrap().with_checksum(checksum));
        if let Ok(key) = format.parse(token) {
            assert!(key.is_opaque());
            assert_eq!(key.secret(), token.as_bytes());
            assert!(token.starts_with("sk-aisa-"));
        }
    }
});
