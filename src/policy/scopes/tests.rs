use super::*;
use alloc::string::ToString;
use alloc::vec;

#[test]
fn json_arrays() {
    assert_eq!(json_string_array(r#"["read","write"]"#), Ok(vec!["read".into(), "write".into()]));
    assert_eq!(json_string_array("[ ]"), Ok(vec![]));
    assert_eq!(json_string_array(r#"[ "a\/b" , "\u0061\u00e9" ]  "#), Ok(vec!["a/b".into(), "aé".into()]));
    assert_eq!(json_string_array(r#"["\ud83d\ude00"]"#), Ok(vec!["\u{1f600}".into()]));
    for (bad, at) in [
        ("[", 1),
        ("[\"a\"", 4),
        ("[\"a\",]", 5),
        ("[\"a\" \"b\"]", 5),
        ("[1]", 1),
        ("[\"a\"] x", 6),
        ("[\"\\x\"]", 2),
        ("[\"\\ud83d\"]", 2),
        ("[\"a\nb\"]", 3),
    ] {
        assert_eq!(json_string_array(bad), Err(at), "{bad}");
    }
}

#[test]
fn parse_forms_and_errors() {
    let s = Scopes::parse("  [\"write\", \"READ\"]").unwrap();
    assert_eq!(s.to_string(), "read write");
    assert_eq!(Scopes::parse(" ,read,, write ,").unwrap(), s);
    assert_eq!(Scopes::parse("[\"read write\"]"), Err(ScopeError::InvalidChar { index: 0, at: 4, ch: ' ' }));
    assert_eq!(Scopes::parse("[\"read\", \"\"]"), Err(ScopeError::Empty { index: 1 }));
    assert_eq!(Scopes::parse(" [\"read\", 2]"), Err(ScopeError::Json { at: 10 }));
    assert!(Scopes::parse("").unwrap().is_empty());
}
