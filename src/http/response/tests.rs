use super::*;
use alloc::string::String;
use core::fmt::Write;

#[test]
fn json_escaping() {
    let mut s = String::new();
    write_json_str(&mut s, "a\"b\\c\nd\u{1}é").unwrap();
    assert_eq!(s, r#"a\"b\\c\u000ad\u0001é"#);
    s.clear();
    write!(s, "plain").unwrap();
    assert_eq!(s, "plain");
}

#[test]
fn small_buffers_are_refused() {
    let d = Denial::new(DenialCode::InvalidApiKey);
    let full = alloc::string::ToString::to_string(&d.body());
    let mut buf = [0u8; ErrorBody::MAX_LEN];
    assert_eq!(write_into(&mut buf[..full.len()], d.body()), Ok(full.as_str()));
    assert_eq!(write_into(&mut buf[..full.len() - 1], d.body()), Err(BufferTooSmall));
}
