//! `Timestamp::parse_rfc3339`: whatever parses prints back (in UTC) to text that parses to the
//! same instant.
#![no_main]

use keygate::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else { return };
    if let Ok(t) = Timestamp::parse_rfc3339(text) {
        assert_eq!(Timestamp::parse_rfc3339(&t.to_string()), Ok(t));
    }
});
