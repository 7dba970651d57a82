//! The management API's JSON through the framework-free handler: golden bodies for the AI Stats
//! documentation's requests, the envelopes, OpenAI-compatible errors naming their field, exact
//! money, metadata bounds, team isolation, and the full key appearing only where it must.
#![cfg(all(feature = "std", feature = "json"))]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use keygate::{
    Caller, CreateKey, KeyKind, KeyListResponse, KeyResponse, KeyView, ListKeys, ManageError, ManageRequest, Manager,
    MemoryStore, Pepper, PepperId, Peppers, RotateKey, Scopes, SelectorFormat, Timestamp, UpdateKey, Verifier,
};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use serde_json::Value;

const NOW: Timestamp = Timestamp::from_unix_secs(1_800_000_000);
const KEYS: &str = "/v1/management/keys";

fn manager() -> Manager<MemoryStore> {
    let format = SelectorFormat::new("aistats").unwrap().with_kinds(&["sk", "mk"]).unwrap();
    Manager::new(MemoryStore::new(), Verifier::new(format, Peppers::new(Pepper::new(PepperId(1), &[9; 32]).unwrap())))
}

/// A handler session: one manager, one seeded RNG, one caller.
struct Session {
    m: Manager<MemoryStore>,
    rng: ChaCha20Rng,
    caller: Caller,
    /// Every response body and `Debug` text produced, for the secrecy checks.
    seen: Vec<(String, String)>,
}

impl Session {
    fn new() -> Self {
        Self { m: manager(), rng: ChaCha20Rng::from_seed([1; 32]), caller: Caller::operator(), seen: Vec::new() }
    }

    fn call_at(&mut self, method: &str, path: &str, body: &str, now: Timestamp) -> (u16, String) {
        let request = ManageRequest::new(method, path).with_body(body.as_bytes());
        let response = self.m.handle(&self.caller, &request, now, &mut self.rng);
        let out = (response.status(), response.body().to_owned());
        self.seen.push((format!("{method} {path}"), out.1.clone()));
        self.seen.push((format!("Debug of {method} {path}"), format!("{response:?}")));
        out
    }

    fn call(&mut self, method: &str, path: &str, body: &str) -> (u16, String) {
        self.call_at(method, path, body, NOW)
    }

    fn json(&mut self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let (status, text) = self.call(method, path, body);
        (status, serde_json::from_str(&text).unwrap())
    }

    /// Creates a key from `body`, returning its id and token.
    fn create(&mut self, body: &str) -> (String, String) {
        let (status, v) = self.json("POST", KEYS, body);
        assert_eq!(status, 201, "{v}");
        (v["key"]["id"].as_str().unwrap().to_owned(), v["key"]["key"].as_str().unwrap().to_owned())
    }
}

/// `(status, type, code, param)` of an error response.
fn error(status: u16, body: &str) -> (u16, String, String, Option<String>) {
    let v: Value = serde_json::from_str(body).unwrap();
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(v.as_object().unwrap().len(), 1, "only `error`: {body}");
    assert_eq!(e.as_object().unwrap().len(), 4, "message, type, code, param: {body}");
    (
        status,
        e["type"].as_str().unwrap().into(),
        e["code"].as_str().unwrap().into(),
        e["param"].as_str().map(Into::into),
    )
}

fn bad_request(status: u16, body: &str, code: &str, param: Option<&str>) {
    assert_eq!(
        error(status, body),
        (400, "invalid_request_error".into(), code.into(), param.map(Into::into)),
        "{body}"
    );
}

/// The response to the AI Stats documentation's create request, with the RNG seeded `[1; 32]`
/// and the clock at 1 800 000 000 s.
const CREATED: &str = concat!(
    r#"{"ok":true,"key":{"id":"21tWwauAbegSBUyi","name":"My key","prefix":"aistats_v1_sk_21tWwauAbegSBUyi","#,
    r#""status":"active","scopes":["read","write"],"created_at":"2027-01-15T08:00:00Z","kind":"sk","#,
    r#""team_id":null,"soft_blocked":false,"expires_at":null,"last_used_at":null,"#,
    r#""updated_at":"2027-01-15T08:00:00Z","allowed_models":[],"allowed_providers":[],"allowed_ips":[],"#,
    r#""rate_limit":{"requests_per_minute":null,"tokens_per_minute":null,"concurrency":null},"#,
    r#""spend_cap":null,"metadata":null,"#,
    r#""key":"aistats_v1_sk_21tWwauAbegSBUyi_ASdN0e5SFsIE-2mNrqRbUumLbw_dBG3MOoa7B5428CQ"}}"#
);

#[test]
fn golden_create_with_the_documented_bodies() {
    for body in [
        r#"{"name": "My key", "scopes": ["read","write"], "status": "active"}"#,
        r#"{"name": "My key", "scopes": "[\"read\",\"write\"]", "status": "active"}"#,
        r#"{"name": "My key", "scopes": "read write", "status": "active"}"#,
        r#"{"name": "My key", "scopes": "read,write"}"#,
        r#"{"status": "active", "scopes": ["WRITE", "read", "read"], "name": "My key"}"#,
    ] {
        let mut s = Session::new();
        assert_eq!(s.call("POST", KEYS, body), (201, CREATED.to_owned()), "{body}");
    }
}

#[test]
fn golden_get_patch_list() {
    let mut s = Session::new();
    let (id, _) = s.create(r#"{"name": "My key", "scopes": ["read","write"], "status": "active"}"#);
    let stored = CREATED.split(r#","key":"aistats"#).next().unwrap().to_owned() + "}}";
    assert_eq!(s.call("GET", &format!("{KEYS}/{id}"), ""), (200, stored.clone()));

    // PATCH with soft_blocked, as documented.
    let later = Timestamp::from_unix_secs(1_800_000_060);
    let (status, body) = s.call_at("PATCH", &format!("{KEYS}/{id}"), r#"{"soft_blocked": true}"#, later);
    let patched = stored
        .replace(r#""soft_blocked":false"#, r#""soft_blocked":true"#)
        .replace(r#""updated_at":"2027-01-15T08:00:00Z""#, r#""updated_at":"2027-01-15T08:01:00Z""#);
    assert_eq!((status, body), (200, patched.clone()));

    // List with the documented query parameters.
    let (status, body) = s.call("GET", &format!("{KEYS}?limit=50&offset=0"), "");
    let listed = format!(
        r#"{{"ok":true,"keys":[{}],"total":1,"limit":50,"offset":0}}"#,
        patched.strip_prefix(r#"{"ok":true,"key":"#).unwrap().strip_suffix('}').unwrap()
    );
    assert_eq!((status, body), (200, listed));

    // `limit` above 250 is refused, naming `limit`.
    assert_eq!(
        s.call("GET", &format!("{KEYS}?limit=251"), ""),
        (
            400,
            r#"{"error":{"message":"invalid `limit`: must be an integer from 1 to 250","type":"invalid_request_error","code":"invalid_value","param":"limit"}}"#
                .to_owned()
        )
    );
    let (status, body) = s.call("GET", &format!("{KEYS}?limit=250&offset=1"), "");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, v["keys"].as_array().unwrap().len(), &v["total"], &v["limit"], &v["offset"]),
        (200, 0, &1.into(), &250.into(), &1.into())
    );
    // The default page size.
    assert_eq!(s.json("GET", KEYS, "").1["limit"], 50);

    // DELETE.
    assert_eq!(
        s.call("DELETE", &format!("{KEYS}/{id}"), ""),
        (200, format!(r#"{{"ok":true,"id":"{id}","deleted":true}}"#))
    );
    let (status, body) = s.call("GET", &format!("{KEYS}/{id}"), "");
    assert_eq!(error(status, &body), (404, "not_found_error".into(), "key_not_found".into(), Some("id".into())));
}

#[test]
fn the_serde_types_match_the_handler() {
    let m = manager();
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let mut r = CreateKey::new("My key");
    r.scopes = Scopes::parse("read write").unwrap();
    let created = m.create(&Caller::operator(), &r, NOW, &mut rng).unwrap();
    assert_eq!(serde_json::to_string(&KeyResponse(KeyView::created(&created))).unwrap(), CREATED);
    let page = m.list(&Caller::operator(), &ListKeys::default()).unwrap();
    let v: Value = serde_json::to_value(KeyListResponse(&page)).unwrap();
    assert_eq!(v["keys"][0]["id"], created.record().id.as_str());
    assert!(v["keys"][0].get("key").is_none(), "no token outside the creation");

    // The request types deserialize with serde_json as `from_json` reads them.
    let c: CreateKey =
        serde_json::from_str(r#"{"name": "My key", "scopes": "[\"read\",\"write\"]", "status": "active"}"#).unwrap();
    assert_eq!(c, r);
    let e = serde_json::from_str::<UpdateKey>(r#"{"status": "gone"}"#).unwrap_err().to_string();
    assert!(e.starts_with("invalid `status`: must be one of: active, disabled, revoked"), "{e}");
    let e = serde_json::from_str::<RotateKey>(r#"{"overlap": 5}"#).unwrap_err().to_string();
    assert!(e.starts_with("unknown field `overlap`"), "{e}");
}

#[test]
fn unknown_repeated_and_missing_fields_are_refused_by_name() {
    let mut s = Session::new();
    for (body, code, param) in [
        (r#"{"name": "x", "scope": "read"}"#, "unknown_field", "scope"),
        (r#"{"name": "x", "Name": "y"}"#, "unknown_field", "Name"),
        (r#"{"name": "x", "soft_blocked": true}"#, "unknown_field", "soft_blocked"),
        (r#"{"name": "x", "rate_limit": {"rpm": 5}}"#, "unknown_field", "rate_limit.rpm"),
        (
            r#"{"name": "x", "spend_cap": {"amount_usd": 1, "period": "day", "currency": "eur"}}"#,
            "unknown_field",
            "spend_cap.currency",
        ),
        (r#"{"name": "x", "name": "y"}"#, "duplicate_field", "name"),
        (
            r#"{"name": "x", "rate_limit": {"concurrency": 1, "concurrency": 2}}"#,
            "duplicate_field",
            "rate_limit.concurrency",
        ),
        (r#"{"scopes": ["read"]}"#, "missing_field", "name"),
        (r#"{"name": "x", "spend_cap": {"period": "day"}}"#, "missing_field", "spend_cap.amount_usd"),
        (r#"{"name": "x", "spend_cap": {"amount_usd": 5}}"#, "missing_field", "spend_cap.period"),
    ] {
        let (status, text) = s.call("POST", KEYS, body);
        bad_request(status, &text, code, Some(param));
    }
    let (id, _) = s.create(r#"{"name": "target"}"#);
    for (body, code, param) in [
        (r#"{"team_id": "team-b"}"#, "unknown_field", "team_id"),
        (r#"{"kind": "mk"}"#, "unknown_field", "kind"),
        (r#"{"status": "active", "status": "revoked"}"#, "duplicate_field", "status"),
    ] {
        let (status, text) = s.call("PATCH", &format!("{KEYS}/{id}"), body);
        bad_request(status, &text, code, Some(param));
    }
    let (status, text) = s.call("POST", &format!("{KEYS}/{id}/rotate"), r#"{"overlap": 60}"#);
    bad_request(status, &text, "unknown_field", Some("overlap"));
    // Query parameters too.
    let (status, text) = s.call("GET", &format!("{KEYS}?page=2"), "");
    bad_request(status, &text, "unknown_parameter", Some("page"));
    let (status, text) = s.call("GET", &format!("{KEYS}?limit=5&limit=6"), "");
    bad_request(status, &text, "unknown_parameter", Some("limit"));
    assert_eq!(s.m.store().len(), 1, "nothing refused was written");
}

#[test]
fn every_value_error_names_its_field() {
    let mut s = Session::new();
    for (body, param) in [
        (r#"{"name": ""}"#, "name"),
        (r#"{"name": 5}"#, "name"),
        (r#"{"name": null}"#, "name"),
        (r#"{"name": "x", "scopes": "read wr!te"}"#, "scopes"),
        (r#"{"name": "x", "scopes": "[\"read\","}"#, "scopes"),
        (r#"{"name": "x", "scopes": [1]}"#, "scopes"),
        (r#"{"name": "x", "scopes": {}}"#, "scopes"),
        (r#"{"name": "x", "status": "paused"}"#, "status"),
        (r#"{"name": "x", "status": "revoked"}"#, "status"),
        (r#"{"name": "x", "team_id": "team a"}"#, "team_id"),
        (r#"{"name": "x", "expires_at": "tomorrow"}"#, "expires_at"),
        (r#"{"name": "x", "expires_at": "2020-01-01T00:00:00Z"}"#, "expires_at"),
        (r#"{"name": "x", "expires_at": 1900000000}"#, "expires_at"),
        (r#"{"name": "x", "allowed_models": ["gpt *"]}"#, "allowed_models"),
        (r#"{"name": "x", "allowed_providers": "openai"}"#, "allowed_providers"),
        (r#"{"name": "x", "allowed_providers": ["open ai"]}"#, "allowed_providers"),
        (r#"{"name": "x", "allowed_ips": ["10.0.0.1/8"]}"#, "allowed_ips"),
        (r#"{"name": "x", "allowed_ips": ["nope"]}"#, "allowed_ips"),
        (r#"{"name": "x", "allowed_ips": "10.0.0.0/8"}"#, "allowed_ips"),
        (r#"{"name": "x", "rate_limit": {"requests_per_minute": 0}}"#, "rate_limit.requests_per_minute"),
        (r#"{"name": "x", "rate_limit": {"tokens_per_minute": 1.5}}"#, "rate_limit.tokens_per_minute"),
        (r#"{"name": "x", "rate_limit": {"concurrency": -1}}"#, "rate_limit.concurrency"),
        (r#"{"name": "x", "rate_limit": {"concurrency": 4294967296}}"#, "rate_limit.concurrency"),
        (r#"{"name": "x", "rate_limit": {"concurrency": "4"}}"#, "rate_limit.concurrency"),
        (r#"{"name": "x", "rate_limit": 60}"#, "rate_limit"),
        (r#"{"name": "x", "spend_cap": {"amount_usd": 5, "period": "year"}}"#, "spend_cap.period"),
        (r#"{"name": "x", "spend_cap": 5}"#, "spend_cap"),
        (r#"{"name": "x", "metadata": [1, 2]}"#, "metadata"),
        (r#"{"name": "x", "metadata": "{}"}"#, "metadata"),
    ] {
        let (status, text) = s.call("POST", KEYS, body);
        bad_request(status, &text, "invalid_value", Some(param));
    }
    let (id, _) = s.create(r#"{"name": "target"}"#);
    for (body, param) in [
        (r#"{"name": null}"#, "name"),
        (r#"{"status": null}"#, "status"),
        (r#"{"soft_blocked": "yes"}"#, "soft_blocked"),
        (r#"{"soft_blocked": null}"#, "soft_blocked"),
        (r#"{"scopes": null}"#, "scopes"),
        (r#"{"expires_at": "2020-01-01T00:00:00Z"}"#, "expires_at"),
    ] {
        let (status, text) = s.call("PATCH", &format!("{KEYS}/{id}"), body);
        bad_request(status, &text, "invalid_value", Some(param));
    }
    for (body, param) in
        [(r#"{"overlap_seconds": -1}"#, "overlap_seconds"), (r#"{"overlap_seconds": 99999999}"#, "overlap_seconds")]
    {
        let (status, text) = s.call("POST", &format!("{KEYS}/{id}/rotate"), body);
        bad_request(status, &text, "invalid_value", Some(param));
    }
    for body in ["", "   ", "[]", "\"text\"", "{", "{\"name\": \"x\",}", "nul", "{\"name\": \"x\"} {}"] {
        let (status, text) = s.call("POST", KEYS, body);
        bad_request(status, &text, "invalid_json", None);
    }
    assert_eq!(s.m.store().len(), 1, "nothing refused was written");
}

#[test]
fn patch_semantics_in_json() {
    let mut s = Session::new();
    let (id, _) = s.create(
        r#"{"name": "limits", "rate_limit": {"requests_per_minute": 60, "concurrency": 2},
            "spend_cap": {"amount_usd": 10, "period": "day"}, "metadata": {"a": 1},
            "allowed_ips": ["10.0.0.0/8"], "expires_at": "2030-01-01T00:00:00Z"}"#,
    );
    let path = format!("{KEYS}/{id}");
    let (_, k) = s.json("PATCH", &path, r#"{"rate_limit": {"concurrency": null, "tokens_per_minute": 100}}"#);
    assert_eq!(
        k["key"]["rate_limit"],
        serde_json::json!({"requests_per_minute": 60, "tokens_per_minute": 100, "concurrency": null})
    );
    assert_eq!(k["key"]["spend_cap"], serde_json::json!({"amount_usd": 10.0, "period": "day"}), "absent: unchanged");
    let (_, k) = s.json(
        "PATCH",
        &path,
        r#"{"spend_cap": null, "metadata": null, "allowed_ips": null, "expires_at": null, "rate_limit": null}"#,
    );
    let k = &k["key"];
    assert_eq!((&k["spend_cap"], &k["metadata"], &k["expires_at"]), (&Value::Null, &Value::Null, &Value::Null));
    assert_eq!(k["allowed_ips"], serde_json::json!([]));
    assert_eq!(
        k["rate_limit"],
        serde_json::json!({"requests_per_minute": null, "tokens_per_minute": null, "concurrency": null})
    );
    // An empty patch changes nothing.
    let before = s.call("GET", &path, "").1;
    assert_eq!(s.call("PATCH", &path, "{}"), (200, before));
}

#[test]
fn money_is_exact() {
    let mut s = Session::new();
    for (amount, micros, shown) in [
        (r#""12.345678""#, 12_345_678u64, "12.345678"),
        ("12.345678", 12_345_678, "12.345678"),
        ("12.5", 12_500_000, "12.5"),
        (r#""12.5""#, 12_500_000, "12.5"),
        (r#""0.1""#, 100_000, "0.1"),
        ("0.1", 100_000, "0.1"),
        ("0.3", 300_000, "0.3"),
        ("1e-6", 1, "1e-6"),
        ("1.2500000", 1_250_000, "1.25"),
        ("7", 7_000_000, "7.0"),
        (r#""0""#, 0, "0.0"),
        ("999999999.999999", 999_999_999_999_999, "999999999.999999"),
        ("1000000000", 1_000_000_000_000_000, "1000000000.0"),
    ] {
        let body = format!(r#"{{"name": "m", "spend_cap": {{"amount_usd": {amount}, "period": "week"}}}}"#);
        let (id, _) = s.create(&body);
        let record = s.m.get(&Caller::operator(), &id.parse().unwrap()).unwrap();
        assert_eq!(record.spend_cap.unwrap().amount_micros, micros, "{amount}");
        let text = s.call("GET", &format!("{KEYS}/{id}"), "").1;
        assert!(text.contains(&format!(r#""spend_cap":{{"amount_usd":{shown},"period":"week"}}"#)), "{amount}: {text}");
        // What is shown parses back to exactly the stored amount.
        assert_eq!(keygate::Usd::parse(shown).unwrap().micros(), micros);
    }
    for (amount, why) in [
        (r#""12.3456789""#, "more than 6 decimal places"),
        ("12.3456789", "more than 6 decimal places"),
        ("0.1000000000000000055511151231257827", "more than 6 decimal places"),
        ("-1", "must not be negative"),
        (r#""-0.5""#, "must not be negative"),
        ("1000000000.000001", "at most 1000000000 USD"),
        ("1e10", "at most 1000000000 USD"),
        ("1e400", "at most 1000000000 USD"),
        ("184467440737095516160000", "at most 1000000000 USD"),
        (r#""12,5""#, "must be a decimal number"),
        (r#""$5""#, "must be a decimal number"),
        (r#"" 5""#, "must be a decimal number"),
        (r#""""#, "must be a decimal number"),
        ("true", "must be a number or a decimal string"),
        ("null", "must not be null"),
    ] {
        let body = format!(r#"{{"name": "m", "spend_cap": {{"amount_usd": {amount}, "period": "day"}}}}"#);
        let (status, text) = s.call("POST", KEYS, &body);
        bad_request(status, &text, "invalid_value", Some("spend_cap.amount_usd"));
        assert!(text.contains(why), "{amount}: {text}");
    }
}

#[test]
fn metadata_is_an_object_of_bounded_size() {
    let mut s = Session::new();
    let (id, _) =
        s.create(r#"{"name": "m", "metadata": { "owner" : "search", "n": 1.50, "deep": {"list": [1, "two", null]} }}"#);
    let (_, v) = s.json("GET", &format!("{KEYS}/{id}"), "");
    assert_eq!(
        v["key"]["metadata"],
        serde_json::json!({"owner": "search", "n": 1.5, "deep": {"list": [1, "two", null]}})
    );
    let text = s.call("GET", &format!("{KEYS}/{id}"), "").1;
    assert!(
        text.contains(r#""metadata":{"owner":"search","n":1.50,"deep":{"list":[1,"two",null]}}"#),
        "kept exactly: {text}"
    );

    let big = format!(r#"{{"name": "m", "metadata": {{"blob": "{}"}}}}"#, "x".repeat(4096));
    let (status, text) = s.call("POST", KEYS, &big);
    bad_request(status, &text, "invalid_value", Some("metadata"));
    assert!(text.contains("longer than 4096 bytes"), "{text}");
    let deep = format!(r#"{{"name": "m", "metadata": {{"a": {}{}}}}}"#, "[".repeat(16), "]".repeat(16));
    let (status, text) = s.call("POST", KEYS, &deep);
    bad_request(status, &text, "invalid_value", Some("metadata"));
    assert!(text.contains("deeper than 16"), "{text}");
}

#[test]
fn status_codes_and_error_types() {
    let mut s = Session::new();
    let (id, _) = s.create(r#"{"name": "k"}"#);
    let huge = "x".repeat(64 * 1024 + 1);
    let cases: Vec<(&str, String, &str, u16, &str, &str)> = vec![
        ("GET", "/v1/models".into(), "", 404, "not_found_error", "route_not_found"),
        ("GET", format!("{KEYS}/{id}/extra"), "", 404, "not_found_error", "route_not_found"),
        ("GET", format!("{KEYS}/not-an-id!"), "", 404, "not_found_error", "key_not_found"),
        ("GET", format!("{KEYS}/AAAAAAAAAAAAAAAA"), "", 404, "not_found_error", "key_not_found"),
        ("PUT", format!("{KEYS}/{id}"), "", 405, "invalid_request_error", "method_not_allowed"),
        ("GET", format!("{KEYS}/{id}/rotate"), "", 405, "invalid_request_error", "method_not_allowed"),
        ("PATCH", format!("{KEYS}/{id}"), r#"{"status":"revoked"}"#, 200, "", ""),
        ("PATCH", format!("{KEYS}/{id}"), r#"{"status":"active"}"#, 409, "conflict_error", "key_revoked"),
        ("POST", KEYS.into(), &huge, 413, "invalid_request_error", "body_too_large"),
    ];
    for (method, path, body, status, kind, code) in &cases {
        let (got, text) = s.call(method, path, body);
        assert_eq!(got, *status, "{method} {path}: {text}");
        if *status != 200 {
            let (_, t, c, _) = error(got, &text);
            assert_eq!((t.as_str(), c.as_str()), (*kind, *code), "{method} {path}");
        }
    }
    let put = s.m.handle(&Caller::operator(), &ManageRequest::new("PUT", KEYS), NOW, &mut s.rng);
    assert_eq!((put.status(), put.allow()), (405, Some("GET, POST")));
    // A trailing slash is the same endpoint.
    assert_eq!(s.call("GET", &format!("{KEYS}/"), "").0, 200);
    assert_eq!(s.call("GET", &format!("{KEYS}/{id}/"), "").0, 200);
}

#[test]
fn permission_errors_and_team_isolation() {
    let mut s = Session::new();
    let admin = |team: &str, scopes: &str, seed: u8| {
        let mut r = CreateKey::new(format!("{team} admin"));
        r.kind = KeyKind::MANAGEMENT;
        r.team_id = Some(team.into());
        r.scopes = Scopes::parse(scopes).unwrap();
        Caller::from_record(
            s.m.create(&Caller::operator(), &r, NOW, &mut ChaCha20Rng::from_seed([seed; 32])).unwrap().record(),
        )
    };
    let (a, b) = (admin("team-a", "read write", 2), admin("team-b", "read write", 3));
    let reader = admin("team-c", "read", 4);
    s.caller = b;
    let (b_key, _) = s.create(r#"{"name": "b's"}"#);
    s.caller = a;
    let (a_key, _) = s.create(r#"{"name": "a's"}"#);

    // Another team's key: the same 404, byte for byte, as an id that does not exist.
    let missing = s.call("GET", &format!("{KEYS}/AAAAAAAAAAAAAAAA"), "");
    assert_eq!(s.call("GET", &format!("{KEYS}/{b_key}"), ""), missing);
    let missing = s.call("PATCH", &format!("{KEYS}/AAAAAAAAAAAAAAAA"), r#"{"status":"revoked"}"#);
    assert_eq!(s.call("PATCH", &format!("{KEYS}/{b_key}"), r#"{"status":"revoked"}"#), missing);
    let missing = s.call("DELETE", &format!("{KEYS}/AAAAAAAAAAAAAAAA"), "");
    assert_eq!(s.call("DELETE", &format!("{KEYS}/{b_key}"), ""), missing);
    assert_eq!(s.call("POST", &format!("{KEYS}/{b_key}/rotate"), "").0, 404);
    assert_eq!(s.m.get(&Caller::operator(), &b_key.parse().unwrap()).unwrap().status, keygate::KeyStatus::Active);

    let (status, text) = s.call("GET", &format!("{KEYS}?team_id=team-b"), "");
    assert_eq!(error(status, &text), (403, "permission_error".into(), "team_mismatch".into(), Some("team_id".into())));
    let (status, text) = s.call("POST", KEYS, r#"{"name": "x", "team_id": "team-b"}"#);
    assert_eq!(error(status, &text).2, "team_mismatch");
    let (_, v) = s.json("GET", &format!("{KEYS}?team_id=team-a"), "");
    assert_eq!(v["total"], 2);

    // Escalation, also through wildcards and the string forms of scopes.
    for scopes in [r#"["admin"]"#, r#""*""#, r#""[\"read\",\"keys:*\"]""#, r#""read write admin""#] {
        let (status, text) = s.call("POST", KEYS, &format!(r#"{{"name": "x", "scopes": {scopes}}}"#));
        assert_eq!(
            error(status, &text),
            (403, "permission_error".into(), "scope_escalation".into(), Some("scopes".into()))
        );
        let (status, text) = s.call("PATCH", &format!("{KEYS}/{a_key}"), &format!(r#"{{"scopes": {scopes}}}"#));
        assert_eq!(error(status, &text).2, "scope_escalation");
    }

    // A read-only key reads but does not write, and its access is checked before the body.
    s.caller = reader;
    assert_eq!(s.call("GET", KEYS, "").0, 200);
    let (status, text) = s.call("POST", KEYS, "not even json");
    assert_eq!(error(status, &text), (403, "permission_error".into(), "insufficient_scope".into(), None));
    // A standard key does not manage at all.
    s.caller = Caller::new(KeyKind::STANDARD, None, Scopes::parse("*").unwrap());
    let (status, text) = s.call("GET", KEYS, "");
    assert_eq!(error(status, &text).2, "management_key_required");
}

#[test]
fn the_full_key_appears_only_in_the_create_response() {
    let mut s = Session::new();
    let (status, created) = s.call("POST", KEYS, r#"{"name": "secret", "scopes": ["read"]}"#);
    assert_eq!(status, 201);
    let v: Value = serde_json::from_str(&created).unwrap();
    let (id, token) = (v["key"]["id"].as_str().unwrap().to_owned(), v["key"]["key"].as_str().unwrap().to_owned());
    assert!(token.starts_with(v["key"]["prefix"].as_str().unwrap()) && token.len() > 60);
    // Everything after `{prefix}_` (the secret's alphabet has `_`, so not the last `_`'s tail).
    let secret = token[v["key"]["prefix"].as_str().unwrap().len() + 1..].to_owned();
    assert_eq!(secret.len(), 43);
    s.seen.clear();

    // Everything else a client can do, including sending the key back in every place.
    let path = format!("{KEYS}/{id}");
    s.call("GET", KEYS, "");
    s.call("GET", &path, "");
    s.call("PATCH", &path, r#"{"name": "renamed", "metadata": {"note": "rotating"}}"#);
    s.call("GET", &format!("{KEYS}/{token}"), "");
    s.call("PATCH", &format!("{KEYS}/{token}"), "{}");
    s.call("GET", &format!("{KEYS}?{token}=1"), "");
    s.call("GET", &format!("{KEYS}?team_id={token}"), "");
    s.call("POST", KEYS, &format!("\"{token}\""));
    s.call("POST", KEYS, &format!(r#"{{"{token}": 1}}"#));
    s.call("POST", KEYS, &format!(r#"{{"name": "x", "scopes": "{token}"}}"#));
    s.call("POST", KEYS, &format!(r#"{{"name": "x", "rate_limit": {{"{token}": 1}}}}"#));
    s.call("PATCH", &path, &format!(r#"{{"status": "{token}"}}"#));
    s.call("PATCH", &path, &format!(r#"{{"allowed_models": ["{token} x"]}}"#));
    s.call("PATCH", &path, &format!(r#"{{"allowed_ips": ["{token}"]}}"#));
    s.call("PATCH", &path, &format!(r#"{{"spend_cap": {{"amount_usd": "{token}", "period": "day"}}}}"#));
    s.call("PATCH", &path, &format!(r#"{{"expires_at": "{token}"}}"#));
    let (status, rotated) = s.call("POST", &format!("{path}/rotate"), r#"{"overlap_seconds": 3600}"#);
    assert_eq!(status, 201);
    let successor: Value = serde_json::from_str(&rotated).unwrap();
    let new_token = successor["key"]["key"].as_str().unwrap().to_owned();
    assert_ne!(new_token, token);
    assert!(successor["previous"].get("key").is_none());
    s.call("DELETE", &path, "");
    s.call("GET", KEYS, "");

    for (what, text) in &s.seen {
        assert!(!text.contains(&secret), "the old key's secret appears in {what}: {text}");
        let is_rotation = what == &format!("POST {path}/rotate");
        assert_eq!(
            text.contains(&new_token),
            is_rotation,
            "the new key appears only in the rotation response ({what})"
        );
        if what.starts_with("Debug") {
            assert!(!text.contains(&new_token[20..]), "{what}: {text}");
        }
    }

    // Nor in the Debug of anything the library API returns.
    let m = manager();
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let created = m.create(&Caller::operator(), &CreateKey::new("d"), NOW, &mut rng).unwrap();
    let token = created.token().expose_secret().to_owned();
    let rotated = m.rotate(&Caller::operator(), &created.record().id, &RotateKey::default(), NOW, &mut rng).unwrap();
    for text in [
        format!("{created:?}"),
        format!("{rotated:?}"),
        format!("{m:?}"),
        format!("{:?}", KeyView::created(&created)),
        format!("{:?}", ManageError::NotFound),
    ] {
        assert!(!text.contains(&token[20..]) && !text.contains(&rotated.key().token().expose_secret()[20..]), "{text}");
    }
}
