//! Every code of the decision table, reached the way a server meets it, turned into the status,
//! headers and JSON body the server sends; the body and headers never contain the key.
#![cfg(all(feature = "std", feature = "serde"))]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use keygate::format::SelectorFormat;
use keygate::http::{BufferTooSmall, ErrorBody, HeaderValue, Realm, bearer_token, write_into};
use keygate::limit::Limiter;
use keygate::policy::authorize;
use keygate::secret::{PepperId, Peppers};
use keygate::store::{ListQuery, Page};
use keygate::verify::Lookup;
use keygate::{
    Denial, DenialCode, KeyId, KeyKind, KeyRecord, KeyStatus, KeyStore, LimitRequest, MemoryLimitStore, MemoryStore,
    ModelAllowlist, Pepper, RequiredScopes, Requirements, Scopes, SpendCap, SpendPeriod, StoreError, Timestamp, Usage,
    Verifier,
};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use serde_json::json;

const NOW: Timestamp = Timestamp::from_unix_secs(1_800_000_000);
const REALM: Realm<'static> = match Realm::new("api.example.com") {
    Ok(r) => r,
    Err(_) => panic!("valid realm"),
};

/// A store whose backend is down.
struct Down;

impl KeyStore for Down {
    fn lookup(&self, _: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        Err(StoreError::Unavailable)
    }
    fn insert(&self, _: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        Err(StoreError::Unavailable)
    }
    fn replace(&self, _: u64, _: KeyRecord) -> Result<Arc<KeyRecord>, StoreError> {
        Err(StoreError::Unavailable)
    }
    fn delete(&self, _: &KeyId) -> Result<Arc<KeyRecord>, StoreError> {
        Err(StoreError::Unavailable)
    }
    fn list(&self, _: &ListQuery) -> Result<Page, StoreError> {
        Err(StoreError::Unavailable)
    }
}

/// One denial for every code, each produced by the pipeline where the pipeline produces it
/// (the 429s come from the limits stage, so they are built directly), and the token used.
fn every_denial() -> (String, Vec<Denial>) {
    let pepper = Pepper::new(PepperId(1), &[9; 32]).unwrap();
    let v = Verifier::new(SelectorFormat::new("aistats").unwrap(), Peppers::new(pepper));
    let (key, mut record) = v.issue(&mut ChaCha20Rng::from_seed([5; 32]), KeyKind::STANDARD, NOW).unwrap();
    let token = key.token().expose_secret().to_owned();
    record.scopes = Scopes::parse("chat:write").unwrap();
    record.allowed_models = ModelAllowlist::new(["gpt-4o"]).unwrap();
    record.allowed_providers = vec!["openai".into()];
    record.allowed_ips = vec!["10.0.0.0/8".parse().unwrap()];
    let store = MemoryStore::new();
    let stored = store.insert(record).unwrap();
    let header = format!("Bearer {token}");

    let ok_ip = "10.0.0.1".parse().unwrap();
    let needs: RequiredScopes = "chat:write keys:read".parse().unwrap();
    let run = |header: Option<&[u8]>, attrs: Requirements| -> Denial {
        bearer_token(header)
            .and_then(|t| v.authenticate(&store, t, NOW))
            .and_then(|ok| authorize(ok, &attrs, NOW))
            .map(|_| ())
            .unwrap_err()
    };
    let with = |change: &dyn Fn(&mut KeyRecord)| {
        let mut r = KeyRecord::clone(&store.get(&stored.id).unwrap().unwrap());
        let rev = r.revision;
        change(&mut r);
        store.replace(rev, r).unwrap();
    };
    let base = Requirements::new().with_client_ip(ok_ip);
    let mut out = vec![
        run(None, base.clone()),
        run(
            Some(
                format!("Bearer {}{}", &token[..token.len() - 1], if token.ends_with('x') { 'y' } else { 'x' })
                    .as_bytes(),
            ),
            base.clone(),
        ),
    ];
    for status in [KeyStatus::Revoked, KeyStatus::Disabled] {
        with(&|r| r.status = status);
        out.push(run(Some(header.as_bytes()), base.clone()));
        with(&|r| r.status = KeyStatus::Active);
    }
    with(&|r| r.expires_at = Some(NOW));
    out.push(run(Some(header.as_bytes()), base.clone()));
    with(&|r| r.expires_at = None);
    with(&|r| r.soft_blocked = true);
    out.push(run(Some(header.as_bytes()), base.clone()));
    with(&|r| r.soft_blocked = false);
    out.push(run(Some(header.as_bytes()), Requirements::new().with_client_ip("192.0.2.1".parse().unwrap())));
    out.push(run(Some(header.as_bytes()), base.clone().with_scopes(needs)));
    out.push(run(Some(header.as_bytes()), base.clone().with_model("gpt-3.5-turbo")));
    out.push(run(Some(header.as_bytes()), base.clone().with_provider("anthropic")));
    // The 429s through a real limiter: one request per minute, one in flight, a spend cap.
    let limiter = Limiter::new(MemoryLimitStore::new());
    let mut limited = KeyRecord::clone(&stored);
    limited.rate_limit.requests_per_minute = Some(1);
    let first = limiter.check(&limited, LimitRequest::new(), NOW).unwrap();
    drop(first);
    out.push(limiter.check(&limited, LimitRequest::new(), NOW).unwrap_err());
    let mut capped = KeyRecord::clone(&stored);
    capped.id = keygate::KeyId::new("concurrency1").unwrap();
    capped.rate_limit.concurrency = Some(1);
    let _in_flight = limiter.check(&capped, LimitRequest::new(), NOW).unwrap();
    out.push(limiter.check(&capped, LimitRequest::new(), NOW).unwrap_err());
    let mut spent = KeyRecord::clone(&stored);
    spent.id = keygate::KeyId::new("quota1").unwrap();
    spent.spend_cap = Some(SpendCap { amount_micros: 1_000, period: SpendPeriod::Day });
    limiter.check(&spent, LimitRequest::new(), NOW).unwrap().finish(Usage::new(0, 1_000), NOW).unwrap();
    out.push(limiter.check(&spent, LimitRequest::new(), NOW).unwrap_err());
    out.push(v.authenticate(&Down, &token, NOW).unwrap_err());
    (token, out)
}

/// The contract, written out: status, error type, and the headers with a realm configured.
fn expected(code: DenialCode) -> (u16, &'static str, Vec<(&'static str, &'static str)>) {
    use DenialCode as C;
    let invalid_token = vec![("www-authenticate", r#"Bearer realm="api.example.com", error="invalid_token""#)];
    match code {
        C::MissingApiKey => {
            (401, "authentication_error", vec![("www-authenticate", r#"Bearer realm="api.example.com""#)])
        }
        C::InvalidApiKey | C::RevokedApiKey | C::DisabledApiKey | C::ExpiredApiKey => {
            (401, "authentication_error", invalid_token)
        }
        C::InsufficientScope => (
            403,
            "permission_error",
            vec![(
                "www-authenticate",
                r#"Bearer realm="api.example.com", error="insufficient_scope", scope="chat:write keys:read""#,
            )],
        ),
        C::KeyBlocked | C::IpNotAllowed | C::ModelNotAllowed | C::ProviderNotAllowed => {
            (403, "permission_error", vec![])
        }
        // One request per minute, used: retry in 60 s; OpenAI's header names and reset format.
        C::RateLimited => (
            429,
            "rate_limit_error",
            vec![
                ("retry-after", "60"),
                ("retry-after-ms", "60000"),
                ("x-ratelimit-limit-requests", "1"),
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "1m0s"),
            ],
        ),
        C::ConcurrencyLimited => (429, "rate_limit_error", vec![]),
        // NOW is 2027-01-15T08:00:00Z: the daily cap resets at midnight UTC, 16 hours later.
        C::QuotaExceeded => (429, "rate_limit_error", vec![("retry-after", "57600"), ("retry-after-ms", "57600000")]),
        C::AuthUnavailable => (503, "service_unavailable_error", vec![]),
        other => panic!("no expectation for {other}: add it to this table"),
    }
}

#[test]
fn every_code_is_reachable_with_its_status_headers_and_body() {
    let (token, denials) = every_denial();
    let codes: Vec<DenialCode> = denials.iter().map(Denial::code).collect();
    assert_eq!(codes, DenialCode::ALL, "one denial per code, in table order");

    let secret = &token[token.len() - 43..];
    for denial in &denials {
        let code = denial.code();
        let (status, error_type, headers) = expected(code);
        assert_eq!(denial.status(), status, "{code}");

        let got: Vec<(&str, String)> =
            denial.headers().with_realm(REALM).map(|h| (h.name(), h.value().to_string())).collect();
        let want: Vec<(&str, String)> = headers.iter().map(|(n, v)| (*n, (*v).to_owned())).collect();
        assert_eq!(got, want, "{code}");

        let text = denial.body().to_string();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        let want_body = json!({"error": {
            "message": code.message(),
            "type": error_type,
            "code": code.as_str(),
            "param": null,
        }});
        assert_eq!(body, want_body, "{code}");
        assert_eq!(serde_json::to_value(denial.body()).unwrap(), want_body, "serde agrees with Display: {code}");
        assert!(text.len() <= ErrorBody::MAX_LEN, "{code}: {} bytes", text.len());

        let mut buf = [0u8; ErrorBody::MAX_LEN];
        assert_eq!(write_into(&mut buf, denial.body()), Ok(text.as_str()));

        for shown in got.iter().map(|(_, v)| v.as_str()).chain([text.as_str(), &denial.to_string()]) {
            assert!(!shown.contains(secret) && !shown.contains(&token[14..30]), "{code} shows the key: {shown}");
        }
    }
}

#[test]
fn without_a_realm_the_challenge_has_none() {
    let missing = Denial::new(DenialCode::MissingApiKey);
    let value = |d: &Denial| d.headers().map(|h| h.value().to_string()).collect::<Vec<_>>();
    assert_eq!(value(&missing), ["Bearer"]);
    assert_eq!(value(&Denial::new(DenialCode::ExpiredApiKey)), [r#"Bearer error="invalid_token""#]);
    // An insufficient_scope built without scopes has no scope attribute.
    assert_eq!(value(&Denial::new(DenialCode::InsufficientScope)), [r#"Bearer error="insufficient_scope""#]);
    let scoped = Denial::new(DenialCode::InsufficientScope).with_required_scopes("a:b".parse().unwrap());
    assert_eq!(value(&scoped), [r#"Bearer error="insufficient_scope", scope="a:b""#]);
}

#[test]
fn headers_fit_a_stack_buffer_or_say_they_do_not() {
    let scopes = RequiredScopes::new(&"s".repeat(keygate::policy::MAX_REQUIRED_SCOPES_LEN)).unwrap();
    let denial = Denial::new(DenialCode::InsufficientScope).with_required_scopes(scopes);
    let long_realm = "r".repeat(128);
    let realm = Realm::new(&long_realm).unwrap();
    let h = denial.headers().with_realm(realm).next().unwrap();
    let full = h.value().to_string();
    let mut buf = [0u8; HeaderValue::MAX_LEN];
    assert_eq!(write_into(&mut buf, h.value()), Ok(full.as_str()), "the longest value fits MAX_LEN");
    assert!(full.len() > HeaderValue::MAX_LEN - 16, "MAX_LEN is a tight bound: {}", full.len());
    let retry = Denial::new(DenialCode::RateLimited).with_retry_after(Duration::MAX);
    let value = retry.headers().next().unwrap().value();
    assert_eq!(write_into(&mut buf, value), Ok(u64::MAX.to_string().as_str()));
    assert_eq!(write_into(&mut buf[..full.len() - 1], h.value()), Err(BufferTooSmall));
}

#[test]
fn realms_that_would_break_the_header_are_refused() {
    for bad in ["", "a\"b", "a\\b", "a\r\nx-evil: 1", "caf\u{e9}", &"r".repeat(129)] {
        assert!(Realm::new(bad).is_err(), "{bad:?}");
    }
    assert!(Realm::new("My API (v1)").is_ok());
}
