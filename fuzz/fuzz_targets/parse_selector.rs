//! `SelectorFormat::parse` on arbitrary input, in four configurations. A token that parses must
//! have the format's exact length, and its parts must reassemble into the token.
#![no_main]

use keygate::format::{KeyFormat, SelectorFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = core::str::from_utf8(data) else { return };
    let base = SelectorFormat::new("aistats").unwrap();
    let formats = [
        base,
        base.with_checksum(true),
        base.with_kinds(&["sk", "mk"]).unwrap().with_kid_len(12).unwrap(),
        SelectorFormat::new("x").unwrap().with_version("v2").unwrap().with_secret_bytes(64).unwrap(),
    ];
    for format in formats {
        if let Ok(key) = KeyFormat::from(format).parse(token) {
            assert_eq!(token.len(), format.token_len());
            let kid = key.kid().unwrap();
            let secret = core::str::from_utf8(key.secret()).unwrap();
            let rebuilt = format!("{}_{}_{}_{}_{}", key.prefix(), key.version(), key.kind(), kid, secret);
            assert!(token.starts_with(&rebuilt));
            assert!(kid.bytes().all(|c| c.is_ascii_alphanumeric()));
        }
    }
});
