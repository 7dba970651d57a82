use super::*;
use alloc::string::ToString;

#[test]
fn pattern_table() {
    // (pattern, permitted, refused)
    let table: &[(&str, &[&str], &[&str])] = &[
        ("gpt-4o", &["gpt-4o", "gpt-4o:free"], &["gpt-4o-mini", "GPT-4o", "gpt-4", "gpt-4o:nitro", ":free"]),
        ("llama-3:free", &["llama-3:free"], &["llama-3", "llama-3:free:free", "llama-3.1:free"]),
        ("claude-3*", &["claude-3", "claude-3-opus", "claude-3.5:free"], &["claude-2", "Claude-3"]),
        ("llama*:free", &["llama:free", "llama-3:free"], &["llama-3", "llama-3:freedom"]),
        ("*:free", &["x:free", ":free"], &["x", "x:FREE"]),
        ("*", &["", "anything", "x:free"], &[]),
        ("openai/gpt-4o", &["openai/gpt-4o"], &["gpt-4o"]),
    ];
    for (pattern, yes, no) in table {
        let p = ModelPattern::new(pattern).unwrap();
        assert_eq!(p.to_string(), *pattern);
        for m in *yes {
            assert!(p.permits(m), "{pattern} should permit {m}");
        }
        for m in *no {
            assert!(!p.permits(m), "{pattern} should refuse {m}");
        }
    }
}

#[test]
fn coverage_is_sound_and_covers_the_usual_cases() {
    let patterns = [
        "*",
        "*:free",
        "gpt*",
        "gpt-4o*",
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4o:free",
        "gpt-4o*:free",
        "gpt*:free",
        "gpt-4o:fr*",
        "gpt-4o:f*",
        "claude-3*",
        "gpt",
    ];
    let probes = [
        "",
        "gpt",
        "gpt:free",
        "gpt-4o",
        "gpt-4o:free",
        "gpt-4o-mini",
        "gpt-4o-mini:free",
        "gpt-4o:fr",
        "gpt-4o:free:free",
        "gpt-4o:fx",
        "claude-3",
        "claude-3-opus:free",
        "x:free",
        "gpt-4o:nitro",
    ];
    for mine in patterns {
        let q = ModelPattern::new(mine).unwrap();
        for theirs in patterns {
            let p = ModelPattern::new(theirs).unwrap();
            if q.covers(&p) {
                for m in probes {
                    assert!(!p.permits(m) || q.permits(m), "{mine} covers {theirs} but not {m}");
                }
            }
        }
    }
    for (mine, theirs) in [
        ("*", "gpt-4o"),
        ("*", "*:free"),
        ("*:free", "gpt-4o:free"),
        ("gpt*", "gpt-4o*"),
        ("gpt*", "gpt-4o-mini"),
        ("gpt-4o*", "gpt-4o:free"),
        ("gpt-4o", "gpt-4o:free"),
        ("gpt-4o", "gpt-4o"),
        ("gpt*:free", "gpt-4o:free"),
        ("gpt-4o:fr*", "gpt-4o:free"),
    ] {
        assert!(ModelPattern::new(mine).unwrap().covers(&ModelPattern::new(theirs).unwrap()), "{mine} {theirs}");
    }
    for (mine, theirs) in [("gpt-4o", "gpt-4o*"), ("*:free", "gpt-4o"), ("gpt-4o:free", "gpt-4o"), ("gpt-4o*", "gpt*")]
    {
        assert!(!ModelPattern::new(mine).unwrap().covers(&ModelPattern::new(theirs).unwrap()), "{mine} {theirs}");
    }
    let list = |s| ModelAllowlist::parse(s).unwrap();
    assert!(list("").covers(&list("")) && list("").covers(&list("gpt-4o")));
    assert!(!list("gpt-4o").covers(&list("")), "an empty list permits every model");
    assert!(list("gpt-4o claude-3*").covers(&list("claude-3-haiku gpt-4o:free")));
    assert!(!list("gpt-4o claude-3*").covers(&list("claude-3-haiku gpt-4o-mini")));
}

#[test]
fn pattern_errors() {
    for (bad, e) in [
        ("", ModelPatternError::Empty { index: 0 }),
        (":free", ModelPatternError::Empty { index: 0 }),
        ("gpt *", ModelPatternError::InvalidChar { index: 0, at: 3, ch: ' ' }),
        ("a,b", ModelPatternError::InvalidChar { index: 0, at: 1, ch: ',' }),
        ("modèle", ModelPatternError::InvalidChar { index: 0, at: 3, ch: 'è' }),
        ("*-mini", ModelPatternError::MisplacedWildcard { index: 0 }),
        ("gpt**", ModelPatternError::MisplacedWildcard { index: 0 }),
        ("gpt*:nitro", ModelPatternError::MisplacedWildcard { index: 0 }),
    ] {
        assert_eq!(ModelPattern::new(bad), Err(e), "{bad}");
    }
    assert_eq!(ModelAllowlist::parse("gpt-4o, x y*z"), Err(ModelPatternError::MisplacedWildcard { index: 2 }));
}
