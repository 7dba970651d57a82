//! The management API's JSON through the framework-free handler: golden bodies for the AI Stats
//! documentation's requests, the envelopes, OpenAI-compatible errors naming their field, exact
//! money, metadata bounds, team isolation, and the full key appearing only where it must.
#![cfg(all(feature = "std", feature = "json"))]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use keygate::format::SelectorFormat;
use keygate::manage::{
    CreateKey, KeyListResponse, KeyResponse, KeyView, ListKeys, ManageError, ManageRequest, RotateKey, UpdateKey,
};
use keygate::secret::{PepperId, Peppers};
use keygate::{Caller, KeyKind, Manager, MemoryStore, Pepper, Scopes, Timestamp, Verifier};
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
    r#""spend_cap":null,"metadata":null,"credits":null,"spend_alerts":null,"digest":"current","#,
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
        assert_eq!(keygate::manage::Usd::parse(shown).unwrap().micros(), micros);
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
    // A standard key manages as any key does: by its scopes.
    s.caller = Caller::new(KeyKind::STANDARD, Some("team-a".into()), Scopes::parse("read").unwrap());
    let (status, v) = s.json("GET", KEYS, "");
    assert_eq!((status, &v["total"]), (200, &2.into()));
    let (status, text) = s.call("DELETE", &format!("{KEYS}/{a_key}"), "");
    assert_eq!(error(status, &text).2, "insufficient_scope");
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

// ---- issue 15 ---------------------------------------------------------------------------------

/// A caller holding a key the operator created from `body` (JSON), with the key's restrictions.
fn caller_from(s: &mut Session, body: &str) -> (String, Caller) {
    let operator = std::mem::replace(&mut s.caller, Caller::operator());
    let (id, _) = s.create(body);
    s.caller = operator;
    let record = s.m.get(&Caller::operator(), &id.parse().unwrap()).unwrap();
    (id, Caller::from_record(&record))
}

/// Item 1, as the review sent it: a restricted key lifts its own restrictions by PATCH, and
/// rotates itself into a successor with no expiry.
#[test]
fn a_restricted_key_cannot_lift_its_restrictions_over_http() {
    let mut s = Session::new();
    let (own, admin) = caller_from(
        &mut s,
        r#"{"name": "team admin", "team_id": "team-a", "scopes": ["read", "write"],
            "expires_at": "2027-02-01T00:00:00Z", "allowed_ips": ["10.0.0.0/8"],
            "rate_limit": {"requests_per_minute": 60}, "spend_cap": {"amount_usd": 1, "period": "day"},
            "credits": {"amount": 100, "refill": "month"}}"#,
    );
    s.caller = admin;
    let before = s.call("GET", &format!("{KEYS}/{own}"), "");
    let lift = r#"{"expires_at":null,"allowed_ips":null,"rate_limit":null,"spend_cap":null}"#;
    let (status, text) = s.call("PATCH", &format!("{KEYS}/{own}"), lift);
    assert_eq!(error(status, &text), (403, "permission_error".into(), "escalation".into(), Some("expires_at".into())));
    assert!(text.contains("`expires_at` may not be broader than the caller's own"), "{text}");
    for (patch, field) in [
        (r#"{"allowed_ips":null}"#, "allowed_ips"),
        (r#"{"rate_limit":null}"#, "rate_limit.requests_per_minute"),
        (r#"{"spend_cap":null}"#, "spend_cap"),
        (r#"{"spend_cap":{"amount_usd":"1.000001","period":"day"}}"#, "spend_cap"),
        (r#"{"credits":null}"#, "credits"),
        (r#"{"credits":{"amount":100,"refill":"day"}}"#, "credits"),
    ] {
        let (status, text) = s.call("PATCH", &format!("{KEYS}/{own}"), patch);
        assert_eq!(error(status, &text).2, "escalation", "{patch}");
        assert_eq!(error(status, &text).3.as_deref(), Some(field), "{patch}");
    }
    let (status, text) = s.call("POST", &format!("{KEYS}/{own}/rotate"), r#"{"expires_at":null}"#);
    assert_eq!(error(status, &text), (403, "permission_error".into(), "escalation".into(), Some("expires_at".into())));
    // Creating a key without a spend cap or an IP allowlist of its own: refused too.
    let (status, text) = s.call("POST", KEYS, r#"{"name": "free", "expires_at": "2027-01-20T00:00:00Z"}"#);
    assert_eq!(error(status, &text).3.as_deref(), Some("allowed_ips"));
    assert_eq!(s.call("GET", &format!("{KEYS}/{own}"), ""), before, "nothing changed");
    assert_eq!(s.json("GET", KEYS, "").1["total"], 1, "nothing created");

    // Within its bounds it creates, and a plain rotation of itself keeps everything.
    let within = r#"{"name": "worker", "expires_at": "2027-01-20T00:00:00Z", "allowed_ips": ["10.1.0.0/16"],
        "rate_limit": {"requests_per_minute": 10}, "spend_cap": {"amount_usd": "0.5", "period": "week"},
        "credits": {"amount": 10, "refill": null}}"#;
    let (status, v) = s.json("POST", KEYS, within);
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["key"]["credits"], serde_json::json!({"amount": 10, "refill": null}));
    let (status, v) = s.json("POST", &format!("{KEYS}/{own}/rotate"), "");
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["key"]["expires_at"], "2027-02-01T00:00:00Z");
    assert_eq!(v["key"]["credits"], serde_json::json!({"amount": 100, "refill": "month"}));
}

#[test]
fn credits_in_json_are_validated_by_name() {
    let mut s = Session::new();
    for (body, code, param) in [
        (r#"{"name": "x", "credits": 5}"#, "invalid_value", "credits"),
        (r#"{"name": "x", "credits": {}}"#, "missing_field", "credits.amount"),
        (r#"{"name": "x", "credits": {"amount": -1}}"#, "invalid_value", "credits.amount"),
        (r#"{"name": "x", "credits": {"amount": 9007199254740992}}"#, "invalid_value", "credits.amount"),
        (r#"{"name": "x", "credits": {"amount": 1, "refill": "hour"}}"#, "invalid_value", "credits.refill"),
        (r#"{"name": "x", "credits": {"amount": 1, "every": "day"}}"#, "unknown_field", "credits.every"),
    ] {
        let (status, text) = s.call("POST", KEYS, body);
        bad_request(status, &text, code, Some(param));
    }
    let (id, _) = s.create(r#"{"name": "metered", "credits": {"amount": 9007199254740991, "refill": "week"}}"#);
    let (_, v) = s.json("PATCH", &format!("{KEYS}/{id}"), r#"{"credits": {"amount": 3}}"#);
    assert_eq!(v["key"]["credits"], serde_json::json!({"amount": 3, "refill": null}));
    let (_, v) = s.json("PATCH", &format!("{KEYS}/{id}"), r#"{"credits": null}"#);
    assert_eq!(v["key"]["credits"], Value::Null);
}

/// Item 2: the docs' wire form of `scopes`, as an option; requests take every form either way.
#[test]
fn scopes_can_be_written_as_the_docs_show_them() {
    let mut config = keygate::ManageConfig::default();
    config.scopes_wire = keygate::manage::ScopesWire::JsonString;
    let mut s = Session::new();
    s.m = manager().with_config(config);
    let encoded = r#""scopes":"[\"read\",\"write\"]""#;
    for body in [
        r#"{"name": "My key", "scopes": ["read","write"], "status": "active"}"#,
        r#"{"name": "My key", "scopes": "[\"read\",\"write\"]", "status": "active"}"#,
    ] {
        let (status, text) = s.call("POST", KEYS, body);
        assert_eq!(status, 201, "{text}");
        assert!(text.contains(encoded), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let scopes: Vec<String> = serde_json::from_str(v["key"]["scopes"].as_str().unwrap()).unwrap();
        assert_eq!(scopes, ["read", "write"]);
        let id = v["key"]["id"].as_str().unwrap().to_owned();
        for (method, path, body) in [
            ("GET", format!("{KEYS}/{id}"), ""),
            ("PATCH", format!("{KEYS}/{id}"), r#"{"scopes": "read write"}"#),
            ("POST", format!("{KEYS}/{id}/rotate"), ""),
            ("GET", KEYS.to_owned(), ""),
        ] {
            let (status, text) = s.call(method, &path, body);
            assert!(
                status < 300 && text.contains(encoded) && !text.contains(r#""scopes":["#),
                "{method} {path}: {text}"
            );
        }
    }
    // The default stays an array.
    let mut plain = Session::new();
    let (_, text) = plain.call("POST", KEYS, r#"{"name": "k", "scopes": "[\"read\"]"}"#);
    assert!(text.contains(r#""scopes":["read"]"#), "{text}");
}

#[test]
fn management_by_scope_and_optionally_by_kind_over_http() {
    let mut s = Session::new();
    let (_, standard) =
        caller_from(&mut s, r#"{"name": "automation", "team_id": "team-a", "scopes": ["read", "write"]}"#);
    s.caller = standard.clone();
    let (status, v) = s.json("POST", KEYS, r#"{"name": "made by a standard key"}"#);
    assert_eq!((status, &v["key"]["team_id"]), (201, &"team-a".into()), "{v}");
    assert_eq!(s.json("GET", KEYS, "").1["total"], 2);

    let mut config = keygate::ManageConfig::default();
    config.required_kind = Some(KeyKind::MANAGEMENT);
    s.m = std::mem::replace(&mut s.m, manager()).with_config(config);
    let (status, text) = s.call("GET", KEYS, "");
    assert_eq!(error(status, &text), (403, "permission_error".into(), "management_key_required".into(), None));
}

/// Every field of every request body, repeated, is refused naming itself (nested ones dotted).
#[test]
fn every_field_repeated_is_refused_naming_itself() {
    let repeated = |f: &str| format!(r#"{{"{f}": null, "{f}": null}}"#);
    let duplicate = |e: ManageError, name: &str| {
        assert_eq!((e.code(), e.param()), ("duplicate_field", Some(name)), "{e}");
    };
    for f in [
        "name",
        "scopes",
        "status",
        "team_id",
        "expires_at",
        "allowed_models",
        "allowed_providers",
        "allowed_ips",
        "rate_limit",
        "spend_cap",
        "metadata",
        "credits",
    ] {
        duplicate(CreateKey::from_json(repeated(f).as_bytes()).unwrap_err(), f);
    }
    for f in [
        "name",
        "status",
        "soft_blocked",
        "scopes",
        "allowed_models",
        "allowed_providers",
        "allowed_ips",
        "rate_limit",
        "spend_cap",
        "expires_at",
        "metadata",
        "credits",
    ] {
        duplicate(UpdateKey::from_json(repeated(f).as_bytes()).unwrap_err(), f);
    }
    for f in ["name", "overlap_seconds", "expires_at"] {
        duplicate(RotateKey::from_json(repeated(f).as_bytes()).unwrap_err(), f);
    }
    for (object, members) in [
        ("rate_limit", &["requests_per_minute", "tokens_per_minute", "concurrency"][..]),
        ("spend_cap", &["amount_usd", "period"]),
        ("credits", &["amount", "refill"]),
    ] {
        for m in members {
            let body = format!(r#"{{"name": "x", "{object}": {}}}"#, repeated(m));
            duplicate(CreateKey::from_json(body.as_bytes()).unwrap_err(), &format!("{object}.{m}"));
            let body = format!(r#"{{"{object}": {}}}"#, repeated(m));
            duplicate(UpdateKey::from_json(body.as_bytes()).unwrap_err(), &format!("{object}.{m}"));
        }
    }
}

/// Which error a body with several faults gets: unknown and repeated names first (the first
/// in the body), then a missing required field, then each value in a fixed order of fields.
#[test]
fn the_first_fault_of_a_body_is_the_one_reported() {
    let create = |body: &str| CreateKey::from_json(body.as_bytes()).unwrap_err();
    let update = |body: &str| UpdateKey::from_json(body.as_bytes()).unwrap_err();
    let rotate = |body: &str| RotateKey::from_json(body.as_bytes()).unwrap_err();
    for (e, code, param) in [
        (create(r#"{"name": 5, "scope": 1}"#), "unknown_field", "scope"),
        (create(r#"{"scope": 1, "name": "x", "name": 5}"#), "unknown_field", "scope"),
        (create(r#"{"name": "x", "name": 5, "scope": 1}"#), "duplicate_field", "name"),
        (create(r#"{"scopes": 5, "status": 5}"#), "missing_field", "name"),
        (create(r#"{"name": 5, "scopes": 5}"#), "invalid_value", "name"),
        (
            create(r#"{"credits": 5, "metadata": 5, "spend_cap": 5, "name": "x", "status": 5}"#),
            "invalid_value",
            "status",
        ),
        (create(r#"{"name": "x", "credits": 5, "metadata": 5}"#), "invalid_value", "metadata"),
        (create(r#"{"name": "x", "expires_at": 5, "team_id": 5}"#), "invalid_value", "team_id"),
        (create(r#"{"name": "x", "spend_cap": {"amount_usd": "x"}}"#), "missing_field", "spend_cap.period"),
        (
            create(r#"{"name": "x", "spend_cap": {"period": "x", "amount_usd": "x"}}"#),
            "invalid_value",
            "spend_cap.amount_usd",
        ),
        (create(r#"{"name": "x", "credits": {"refill": "x"}}"#), "missing_field", "credits.amount"),
        (create(r#"{"name": "x", "rate_limit": {"concurrency": 0, "rpm": 1}}"#), "unknown_field", "rate_limit.rpm"),
        (
            create(r#"{"name": "x", "rate_limit": {"concurrency": 0, "requests_per_minute": 0}}"#),
            "invalid_value",
            "rate_limit.requests_per_minute",
        ),
        (update(r#"{"scopes": 5, "soft_blocked": 5, "status": 5}"#), "invalid_value", "status"),
        (update(r#"{"expires_at": 5, "spend_cap": 5}"#), "invalid_value", "spend_cap"),
        (update(r#"{"credits": 5, "metadata": 5, "expires_at": 5}"#), "invalid_value", "expires_at"),
        (rotate(r#"{"expires_at": 5, "overlap_seconds": -1, "name": 5}"#), "invalid_value", "name"),
    ] {
        assert_eq!((e.code(), e.param()), (code, Some(param)), "{e}");
    }
    // A name too long to repeat is not repeated, nested or not.
    let long = "n".repeat(keygate::manage::MAX_ECHOED_NAME + 1);
    for e in
        [create(&format!(r#"{{"{long}": 1}}"#)), create(&format!(r#"{{"name": "x", "credits": {{"{long}": 1}}}}"#))]
    {
        assert_eq!((e.code(), e.param()), ("unknown_field", None), "{e}");
    }
}

/// A key with every field set, byte for byte: the order of the fields and each one's form.
#[test]
fn golden_view_of_a_key_with_every_field_set() {
    let mut s = Session::new();
    let body = r#"{"name": "full", "scopes": "read write", "status": "disabled", "team_id": "team-a",
        "expires_at": "2030-01-01T00:00:00Z", "allowed_models": ["gpt-4o", "claude-*"],
        "allowed_providers": ["openai"], "allowed_ips": ["10.0.0.0/8", "::1/128"],
        "rate_limit": {"requests_per_minute": 60, "tokens_per_minute": 1000, "concurrency": 2},
        "spend_cap": {"amount_usd": "12.5", "period": "week"}, "metadata": {"b": [1, {"c": null}], "a": "x"},
        "credits": {"amount": 7, "refill": "month"}}"#;
    let (status, text) = s.call("POST", KEYS, body);
    assert_eq!(status, 201, "{text}");
    let id = serde_json::from_str::<Value>(&text).unwrap()["key"]["id"].as_str().unwrap().to_owned();
    let expected = concat!(
        r#"{"ok":true,"key":{"id":"21tWwauAbegSBUyi","name":"full","prefix":"aistats_v1_sk_21tWwauAbegSBUyi","#,
        r#""status":"disabled","scopes":["read","write"],"created_at":"2027-01-15T08:00:00Z","kind":"sk","#,
        r#""team_id":"team-a","soft_blocked":false,"expires_at":"2030-01-01T00:00:00Z","last_used_at":null,"#,
        r#""updated_at":"2027-01-15T08:00:00Z","allowed_models":["claude-*","gpt-4o"],"#,
        r#""allowed_providers":["openai"],"allowed_ips":["10.0.0.0/8","::1/128"],"#,
        r#""rate_limit":{"requests_per_minute":60,"tokens_per_minute":1000,"concurrency":2},"#,
        r#""spend_cap":{"amount_usd":12.5,"period":"week"},"metadata":{"b":[1,{"c":null}],"a":"x"},"#,
        r#""credits":{"amount":7,"refill":"month"},"spend_alerts":null,"digest":"current"}}"#
    );
    assert_eq!(s.call("GET", &format!("{KEYS}/{id}"), ""), (200, expected.to_owned()));
    let mut config = keygate::ManageConfig::default();
    config.scopes_wire = keygate::manage::ScopesWire::JsonString;
    s.m = std::mem::replace(&mut s.m, manager()).with_config(config);
    let as_string = expected.replace(r#""scopes":["read","write"]"#, r#""scopes":"[\"read\",\"write\"]""#);
    assert_eq!(s.call("GET", &format!("{KEYS}/{id}"), ""), (200, as_string));
}
