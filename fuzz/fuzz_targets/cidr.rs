//! `IpCidr` parsing: whatever parses prints back to a form that parses to the same block.
#![no_main]

use keygate::IpCidr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else { return };
    if let Ok(block) = text.parse::<IpCidr>() {
        let again: IpCidr = block.to_string().parse().unwrap();
        assert_eq!(again, block);
        assert!(block.contains(block.addr()));
    }
});
