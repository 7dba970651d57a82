//! The policy stage as a user relies on it: the 403 codes, the order of every check (401s
//! first), what an empty list means, IPv4-mapped clients, `:free` models, scope wildcards, and
//! the forms scopes arrive in from a management API.
#![cfg(all(feature = "std", feature = "serde"))]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::time::Duration;

use keygate::format::SelectorFormat;
use keygate::policy::{ModelPatternError, ScopeError, authorize};
use keygate::secret::{PepperId, Peppers};
use keygate::{
    DenialCode, KeyKind, KeyRecord, KeyStatus, KeyStore, MemoryStore, ModelAllowlist, Pepper, RequestedModel,
    RequiredScopes, Requirements, Scopes, Timestamp, Verifier,
};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

const NOW: Timestamp = Timestamp::from_unix_secs(1_800_000_000);

fn verifier() -> Verifier {
    let pepper = Pepper::new(PepperId(1), &[7; 32]).unwrap();
    Verifier::new(SelectorFormat::new("aistats").unwrap(), Peppers::new(pepper))
}

/// A freshly issued key: its token and its (unrestricted, active) record.
fn issue(v: &Verifier) -> (String, KeyRecord) {
    let (key, record) = v.issue(&mut ChaCha20Rng::from_seed([3; 32]), KeyKind::STANDARD, NOW).unwrap();
    (key.token().expose_secret().to_owned(), record)
}

/// The whole sans-IO pipeline over one record: parse, verify, authorize.
fn decide(v: &Verifier, token: &str, record: &KeyRecord, attrs: &Requirements, now: Timestamp) -> Option<DenialCode> {
    let parsed = v.parse(token).unwrap();
    let lookup = v.lookup(&parsed);
    let outcome = v.verify(&parsed, &lookup, Some(record), now).and_then(|ok| authorize(ok, attrs, now));
    match outcome {
        Ok(authorized) => {
            assert_eq!(authorized.id(), record.id);
            None
        }
        Err(denial) => Some(denial.code()),
    }
}

/// A record restricted in every way the policy stage checks.
fn restricted(mut record: KeyRecord) -> KeyRecord {
    record.scopes = Scopes::parse("chat:* models:read").unwrap();
    record.allowed_models = ModelAllowlist::new(["gpt-4o", "claude-3*"]).unwrap();
    record.allowed_providers = vec!["openai".into(), "anthropic".into()];
    record.allowed_ips = vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
    record
}

/// The 403 checks in table order, each with an attribute that passes and one that fails.
#[derive(Debug, Clone, Copy)]
enum Check {
    Blocked,
    Ip,
    Scope,
    Model,
    Provider,
}

const CHECKS: [(Check, DenialCode); 5] = [
    (Check::Blocked, DenialCode::KeyBlocked),
    (Check::Ip, DenialCode::IpNotAllowed),
    (Check::Scope, DenialCode::InsufficientScope),
    (Check::Model, DenialCode::ModelNotAllowed),
    (Check::Provider, DenialCode::ProviderNotAllowed),
];

#[test]
fn every_combination_of_failures_reports_the_first_in_table_order() {
    let v = verifier();
    let (token, record) = issue(&v);
    let good_scope: RequiredScopes = "chat:write".parse().unwrap();
    let bad_scope: RequiredScopes = "keys:write".parse().unwrap();
    for mask in 0u32..(1 << CHECKS.len()) {
        let fails = |c: usize| mask & (1 << c) != 0;
        let mut r = restricted(record.clone());
        r.soft_blocked = fails(0);
        let attrs = Requirements::new()
            .with_client_ip(if fails(1) { "192.0.2.1" } else { "10.2.3.4" }.parse().unwrap())
            .with_scopes(if fails(2) { bad_scope } else { good_scope })
            .with_model(if fails(3) { "gpt-4o-mini" } else { "claude-3-opus" })
            .with_provider(if fails(4) { "mistral" } else { "anthropic" });
        let expected = (0..CHECKS.len()).find(|&c| fails(c)).map(|c| CHECKS[c].1);
        assert_eq!(decide(&v, &token, &r, &attrs, NOW), expected, "failing {mask:05b}");

        // Whatever fails in policy, a revoked, disabled or expired key says so first.
        for (status, code) in
            [(KeyStatus::Revoked, DenialCode::RevokedApiKey), (KeyStatus::Disabled, DenialCode::DisabledApiKey)]
        {
            let mut dead = r.clone();
            dead.status = status;
            assert_eq!(decide(&v, &token, &dead, &attrs, NOW), Some(code), "{status} failing {mask:05b}");
        }
        let mut expired = r.clone();
        expired.expires_at = Some(NOW);
        assert_eq!(decide(&v, &token, &expired, &attrs, NOW), Some(DenialCode::ExpiredApiKey));
        // And a wrong secret is invalid whatever the record says.
        let wrong = format!("{}{}", &token[..token.len() - 2], if token.ends_with("AA") { "BB" } else { "AA" });
        assert_eq!(decide(&v, &wrong, &r, &attrs, NOW), Some(DenialCode::InvalidApiKey));
    }
}

#[test]
fn a_revoked_key_with_a_bad_scope_is_revoked_through_the_store() {
    let v = verifier();
    let (token, record) = issue(&v);
    let store = MemoryStore::new();
    let record = store.insert(restricted(record)).unwrap();
    let bad_scope: RequiredScopes = "keys:write".parse().unwrap();
    let attrs = Requirements::new().with_scopes(bad_scope).with_client_ip("10.0.0.1".parse().unwrap());
    let run = || v.authenticate(&store, &token, NOW).and_then(|ok| authorize(ok, &attrs, NOW)).map_err(|d| d.code());
    assert_eq!(run().unwrap_err(), DenialCode::InsufficientScope);

    let mut revoked = KeyRecord::clone(&record);
    revoked.status = KeyStatus::Revoked;
    store.replace(record.revision, revoked).unwrap();
    assert_eq!(run().unwrap_err(), DenialCode::RevokedApiKey, "the next request sees the revocation");
}

#[test]
fn authorized_carries_the_record() {
    let v = verifier();
    let (token, mut record) = issue(&v);
    record.team_id = Some("team-1".into());
    let store = MemoryStore::new();
    let stored = store.insert(record).unwrap();
    let authorized = authorize(v.authenticate(&store, &token, NOW).unwrap(), &Requirements::new(), NOW).unwrap();
    assert_eq!(authorized.id(), stored.id);
    assert_eq!(authorized.team_id(), Some("team-1"));
    assert!(authorized.verified().rehash().is_none());
    let debug = format!("{authorized:?}");
    assert!(debug.contains("team-1") && !debug.contains(&token[token.len() - 20..]), "{debug}");
    assert!(std::sync::Arc::ptr_eq(&authorized.into_record(), &stored), "the store's Arc, not a copy");
}

#[test]
fn expiry_is_checked_again_at_the_authorization_time() {
    let v = verifier();
    let (token, mut record) = issue(&v);
    record.expires_at = Some(NOW.saturating_add(Duration::from_secs(1)));
    let parsed = v.parse(&token).unwrap();
    let verified = v.verify(&parsed, &v.lookup(&parsed), Some(&record), NOW).unwrap();
    let later = NOW.saturating_add(Duration::from_secs(1));
    assert_eq!(authorize(verified, &Requirements::new(), later).unwrap_err().code(), DenialCode::ExpiredApiKey);
}

#[test]
fn empty_lists_are_unrestricted_and_absent_attributes_unchecked() {
    let v = verifier();
    let (token, record) = issue(&v);
    let none: RequiredScopes = RequiredScopes::EMPTY;
    let everything = Requirements::new()
        .with_scopes(none)
        .with_model("any-model")
        .with_provider("any-provider")
        .with_client_ip("198.51.100.1".parse().unwrap());
    assert_eq!(decide(&v, &token, &record, &everything, NOW), None);
    assert_eq!(decide(&v, &token, &record, &Requirements::new(), NOW), None);

    // A restricted key: a request without a model, provider or scope requirement passes those
    // checks (GET /v1/models names no model) ...
    let r = restricted(record.clone());
    let from_lan = Requirements::new().with_client_ip("10.9.9.9".parse().unwrap());
    assert_eq!(decide(&v, &token, &r, &from_lan, NOW), None);
    // ... but an unknown client address fails an IP allowlist closed.
    assert_eq!(decide(&v, &token, &r, &Requirements::new(), NOW), Some(DenialCode::IpNotAllowed));

    // A key with no scopes passes no scope requirement.
    let chat: RequiredScopes = "chat:write".parse().unwrap();
    assert_eq!(
        decide(&v, &token, &record, &Requirements::new().with_scopes(chat), NOW),
        Some(DenialCode::InsufficientScope)
    );
}

#[test]
fn client_addresses_match_cidr_blocks_including_mapped_ipv4() {
    let v = verifier();
    let (token, record) = issue(&v);
    let r = restricted(record);
    for (ip, allowed) in [
        ("10.0.0.0", true),
        ("10.255.255.255", true),
        ("::ffff:10.1.2.3", true),
        ("11.0.0.0", false),
        ("::ffff:11.0.0.1", false),
        ("2001:db8:1::1", true),
        ("2001:db9::1", false),
        ("::a00:1", false), // 10.0.0.1 IPv4-compatible (deprecated), not mapped: not IPv4
    ] {
        let attrs = Requirements::new().with_client_ip(ip.parse().unwrap());
        let expected = (!allowed).then_some(DenialCode::IpNotAllowed);
        assert_eq!(decide(&v, &token, &r, &attrs, NOW), expected, "{ip}");
    }
}

#[test]
fn model_and_provider_allowlists() {
    let v = verifier();
    let (token, mut record) = issue(&v);
    record.allowed_models = ModelAllowlist::parse("gpt-4o, claude-3*, llama-3-8b:free, mistral*:free").unwrap();
    record.allowed_providers = vec!["openai".into()];
    for (model, allowed) in [
        ("gpt-4o", true),
        ("gpt-4o:free", true),
        ("gpt-4o-mini", false),
        ("GPT-4o", false),
        ("claude-3-5-sonnet", true),
        ("claude-3-5-sonnet:free", true),
        ("claude-2", false),
        ("llama-3-8b:free", true),
        ("llama-3-8b", false),
        ("mistral-7b:free", true),
        ("mistral-7b", false),
        ("gpt-4o:nitro", false),
    ] {
        let attrs = Requirements::new().with_model(model);
        let expected = (!allowed).then_some(DenialCode::ModelNotAllowed);
        assert_eq!(decide(&v, &token, &record, &attrs, NOW), expected, "{model}");
    }
    for (provider, allowed) in [("openai", true), ("OpenAI", false), ("openai ", false), ("anthropic", false)] {
        let attrs = Requirements::new().with_provider(provider);
        let expected = (!allowed).then_some(DenialCode::ProviderNotAllowed);
        assert_eq!(decide(&v, &token, &record, &attrs, NOW), expected, "{provider}");
    }
}

#[test]
fn a_model_that_could_not_be_read_is_refused_by_any_model_or_provider_allowlist() {
    // Issue 15: "model unknown" is its own state, never "no model", which every list permits.
    let v = verifier();
    let (token, open) = issue(&v);
    let unreadable = Requirements::new().with_unreadable_model();
    assert_eq!(unreadable.model, RequestedModel::Unreadable);
    assert_eq!(decide(&v, &token, &open, &unreadable, NOW), None, "no allowlist: the handler answers");
    let mut models = open.clone();
    models.allowed_models = ModelAllowlist::new(["gpt-4o*"]).unwrap();
    let mut providers = open.clone();
    providers.allowed_providers = vec!["openai".into()];
    for record in [&models, &providers, &restricted(open.clone())] {
        let unreadable = unreadable.clone().with_provider("openai").with_client_ip("10.1.1.1".parse().unwrap());
        assert_eq!(decide(&v, &token, record, &unreadable, NOW), Some(DenialCode::ModelNotAllowed));
        // The same request with no model, or a permitted one, passes.
        let mut absent = unreadable;
        absent.model = RequestedModel::Absent;
        assert_eq!(decide(&v, &token, record, &absent, NOW), None);
        assert_eq!(decide(&v, &token, record, &absent.with_model("gpt-4o"), NOW), None);
    }
}

#[test]
fn scope_wildcards_have_one_meaning() {
    // (granted, required, permitted)
    let table = [
        ("keys:*", "keys:read", true),
        ("keys:*", "keys:admin:write", true),
        ("keys:*", "keys", false),
        ("keys:*", "keysmith:read", false),
        ("keys", "keys:read", false),
        ("keys:read", "keys", false),
        ("keys:read", "keys:read:own", false),
        ("keys:read", "KEYS:Read", true),
        ("Keys:*", "keys:write", true),
        ("*", "anything:at:all", true),
        ("read write", "read write", true),
        ("read", "read write", false),
        ("a:b:*", "a:b:c", true),
        ("a:b:*", "a:c", false),
        ("", "read", false),
        ("read", "", true),
    ];
    for (granted, required, permitted) in table {
        let g = Scopes::parse(granted).unwrap();
        let r = RequiredScopes::new(required).unwrap();
        assert_eq!(g.permits(&r), permitted, "{granted:?} permits {required:?}");
        assert_eq!(g.missing(&r).next().is_none(), permitted, "{granted:?} missing {required:?}");
    }
}

#[test]
fn the_denial_names_every_required_scope() {
    let v = verifier();
    let (token, mut record) = issue(&v);
    record.scopes = Scopes::parse("chat:write").unwrap();
    let required: RequiredScopes = "Chat:Write, files:read".parse().unwrap();
    let parsed = v.parse(&token).unwrap();
    let verified = v.verify(&parsed, &v.lookup(&parsed), Some(&record), NOW).unwrap();
    let denial = authorize(verified, &Requirements::new().with_scopes(required), NOW).unwrap_err();
    assert_eq!(denial.code(), DenialCode::InsufficientScope);
    assert_eq!(denial.required_scopes().map(RequiredScopes::as_str), Some("chat:write files:read"));
    assert_eq!(record.scopes.missing(&required).collect::<Vec<_>>(), ["files:read"]);
}

#[test]
fn required_scopes_refuse_wildcards_and_bad_text() {
    assert_eq!(RequiredScopes::new("read keys:*"), Err(ScopeError::WildcardRequired { index: 1 }));
    assert_eq!(RequiredScopes::new("*"), Err(ScopeError::WildcardRequired { index: 0 }));
    assert_eq!(RequiredScopes::new("a\"b"), Err(ScopeError::InvalidChar { index: 0, at: 1, ch: '"' }));
    assert_eq!(RequiredScopes::from_scopes(["read", " "]), Err(ScopeError::Empty { index: 1 }));
    assert!(RequiredScopes::new(" , ").unwrap().is_empty());
}

#[test]
fn scopes_arrive_as_strings_arrays_or_json_in_a_string() {
    let expected = Scopes::from_scopes(["read", "write"]).unwrap();
    for json in [
        r#""read write""#,
        r#""read,write""#,
        r#"" write ,  read ""#,
        r#"["read", "write"]"#,
        r#"["WRITE", "read", "read"]"#,
        r#""[\"read\",\"write\"]""#,
        r#"" [ \"read\" , \"write\" ] ""#,
        r#""[\"re\\u0061d\",\"write\"]""#,
    ] {
        let got: Scopes = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(got, expected, "{json}");
    }
    assert_eq!(serde_json::to_string(&expected).unwrap(), r#"["read","write"]"#);
    assert_eq!(expected.to_string(), "read write");

    // Invalid scopes are errors that say which and why, never dropped.
    for (json, message) in [
        (r#""read wr!te""#, "scope 1 contains '!' at byte 2"),
        (r#"["read", "read write"]"#, "scope 1 contains ' ' at byte 4"),
        (r#"["read", ""]"#, "scope 1 is empty"),
        (r#""[\"read\", 1]""#, "malformed JSON array of scopes at byte 9"),
        (r#""keys:*:read""#, "scope 0 has a '*' that is not the whole scope"),
        (r#""keys::read""#, "scope 0 has an empty segment"),
        (r#"42"#, "invalid type"),
    ] {
        let err = serde_json::from_str::<Scopes>(json).unwrap_err().to_string();
        assert!(err.contains(message), "{json}: {err}");
    }
    let too_many: Vec<String> = (0..=Scopes::MAX).map(|i| format!("s{i}")).collect();
    assert_eq!(Scopes::from_scopes(&too_many), Err(ScopeError::TooMany { max: Scopes::MAX }));
    assert!(serde_json::from_str::<Scopes>(&serde_json::to_string(&too_many).unwrap()).is_err());
}

#[test]
fn model_allowlists_arrive_as_arrays_or_strings() {
    let expected = ModelAllowlist::new(["gpt-4o", "claude-3*"]).unwrap();
    for json in [r#"["gpt-4o", "claude-3*"]"#, r#""claude-3*, gpt-4o""#, r#"["claude-3*", "gpt-4o", "gpt-4o"]"#] {
        assert_eq!(serde_json::from_str::<ModelAllowlist>(json).unwrap(), expected, "{json}");
    }
    assert_eq!(serde_json::to_string(&expected).unwrap(), r#"["claude-3*","gpt-4o"]"#);
    let err = serde_json::from_str::<ModelAllowlist>(r#"["gpt-4o", "*-mini"]"#).unwrap_err().to_string();
    assert!(err.contains("model pattern 1 has a '*'"), "{err}");
    assert_eq!(ModelAllowlist::new(["a b"]), Err(ModelPatternError::InvalidChar { index: 0, at: 1, ch: ' ' }));
}
