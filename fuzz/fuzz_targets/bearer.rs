//! `bearer_token` on arbitrary `Authorization` header bytes; whatever it extracts is a non-empty
//! RFC 6750 b64token that parses without panicking.
#![no_main]

use keygate::format::KeyFormat;
use keygate::format::SelectorFormat;
use keygate::http::bearer_token;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = bearer_token(Some(data)) {
        assert!(!token.is_empty() && token.len() <= keygate::format::MAX_TOKEN_LEN);
        assert!(token.bytes().all(|c| c.is_ascii_alphanumeric() || b"-._~+/=".contains(&c)));
        let _ = KeyFormat::from(SelectorFormat::new("aistats").unwrap()).parse(token);
    }
});
