//! End to end, over HTTP against the reference gateway as a process: keys in the AIsa shape
//! (`--key-format aisa`) through their whole life, one store holding both shapes across a
//! switch, keys imported through `POST /v1/management/keys/import` (by plaintext and by
//! SHA-256) then used and moved to the pepper, batches refused whole, and the `import` command
//! on SQLite and PostgreSQL files with its exit codes and a line per refused row.
#![cfg(feature = "full")]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

mod support;

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::gateway::{Gateway, Reply, fresh_dir, import_binary, key_json};

/// A key as another system issued it: `prefix` and 43 characters no test shares.
fn foreign_key(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let seed = format!("{}-{}-{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let body: String = hex(&Sha256::digest(seed.as_bytes()))[..43].to_owned();
    format!("{prefix}{body}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        write!(s, "{b:02x}").unwrap();
        s
    })
}

fn sha256_hex(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// A fresh pepper file (hex, mode 0600) in `dir`, as the gateway writes one.
fn write_pepper(dir: &Path) {
    let pepper = hex(&Sha256::digest(format!("pepper {dir:?}").as_bytes()));
    let path = dir.join("pepper");
    std::fs::write(&path, format!("{pepper}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

impl Gateway {
    fn import(&self, caller: &str, entries: Value) -> Reply {
        self.post("/v1/management/keys/import", Some(caller), &json!({ "keys": entries }))
    }

    fn key(&self, id: &str) -> Value {
        let reply = self.get(&format!("/v1/management/keys/{id}"), Some(&self.admin()));
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["key"].clone()
    }

    fn total(&self) -> u64 {
        self.get("/v1/management/keys", Some(&self.admin())).json()["total"].as_u64().unwrap()
    }
}

/// The refused entries of an import's error: (index, field, code), in order.
fn rejected(reply: &Reply) -> Vec<(u64, String, String)> {
    let body = reply.json();
    body["error"]["rejected"]
        .as_array()
        .unwrap_or_else(|| panic!("no rejected entries: {}", reply.body))
        .iter()
        .map(|r| {
            assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
            (
                r["index"].as_u64().unwrap(),
                r["field"].as_str().unwrap_or("").to_owned(),
                r["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn entry(index: u64, field: &str, code: &str) -> (u64, String, String) {
    (index, field.to_owned(), code.to_owned())
}

/// `token` with its last character changed.
fn altered(token: &str) -> String {
    let last = if token.ends_with('0') { '1' } else { '0' };
    format!("{}{last}", &token[..token.len() - 1])
}

// ---- the AIsa shape ----------------------------------------------------------------------------

/// AIsa's documented flow on the gateway started with `--key-format aisa`: a key shown once as
/// `sk-aisa-…` whose view shows its public prefix; per-key RPM, model allowlist and spend cap;
/// revocation seen by the very next request.
#[test]
fn the_aisa_shape_end_to_end() {
    let mut gateway = Gateway::start(&["--key-format", "aisa"]);
    let admin = gateway.admin();
    assert!(admin.starts_with("aistats_v1_mk_"), "the operator's key keeps its kind");

    let request = key_json(
        "my app",
        json!({ "allowed_models": ["gpt-4o-mini"], "rate_limit": { "requests_per_minute": 3, "tokens_per_minute": 100000 } }),
    );
    let reply = gateway.post("/v1/management/keys", Some(&admin), &request);
    assert_eq!(reply.status, 201, "{}", reply.body);
    let created = reply.json()["key"].clone();
    let (token, id) = (created["key"].as_str().unwrap().to_owned(), created["id"].as_str().unwrap().to_owned());
    gateway.secrets.push(token.clone());
    assert!(token.starts_with("sk-aisa-") && token.len() == "sk-aisa-".len() + 43, "{token}");
    let prefix = created["prefix"].as_str().unwrap();
    assert!(prefix.starts_with("sk-aisa-") && token.starts_with(prefix) && prefix.len() < token.len() - 20, "{prefix}");
    assert_eq!(created["digest"], "current");
    // Shown once: get and list show the prefix, never the key.
    let view = gateway.key(&id);
    assert_eq!(view["prefix"], prefix);
    assert!(view.get("key").is_none());
    let listed = gateway.get("/v1/management/keys", Some(&admin));
    assert!(listed.body.contains(&id) && !listed.body.contains(&token));

    // The key chats; the allowlist holds; the third request of the minute is refused (the
    // refused model took no request from the limit).
    let reply = gateway.chat(&token, "gpt-4o-mini", "Hello there");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "Hello from gpt-4o-mini! You said: Hello there");
    assert_eq!(reply.header("x-ratelimit-limit-requests"), Some("3"));
    gateway.chat(&token, "gpt-4o", "hi").assert_error(403, "permission_error", "model_not_allowed");
    assert_eq!(gateway.chat(&token, "gpt-4o-mini", "hi").status, 200);
    assert_eq!(gateway.chat(&token, "gpt-4o-mini", "hi").status, 200);
    let refused = gateway.chat(&token, "gpt-4o-mini", "hi");
    refused.assert_error(429, "rate_limit_error", "rate_limited");
    assert!(refused.header("retry-after").unwrap().parse::<u64>().unwrap() > 0);

    // A spend cap of one micro-dollar a day: the first paid request spends it.
    let (capped, _) =
        gateway.create_key(key_json("capped", json!({ "spend_cap": { "amount_usd": "0.000001", "period": "day" } })));
    assert!(capped.starts_with("sk-aisa-"));
    assert_eq!(gateway.chat(&capped, "gpt-4o-mini", "hi").status, 200);
    gateway.chat(&capped, "gpt-4o-mini", "hi").assert_error(429, "rate_limit_error", "quota_exceeded");

    // Rotation's last step, revocation: the very next request is refused.
    let (old, old_id) = gateway.create_key(key_json("name", json!({})));
    let (new, _) = gateway.create_key(key_json("name-v2", json!({})));
    assert_eq!(gateway.chat(&old, "gpt-4o-mini", "hi").status, 200);
    gateway.patch_key(&old_id, json!({ "status": "revoked" }));
    gateway.chat(&old, "gpt-4o-mini", "hi").assert_error(401, "authentication_error", "revoked_api_key");
    assert_eq!(gateway.chat(&new, "gpt-4o-mini", "hi").status, 200);

    // A key of a shape no format accepts, and a wrong AIsa key: 401 invalid_api_key alike.
    for bad in ["sk-other-0123456789abcdefghijklmnopqrstuvwxyz", &altered(&token)] {
        gateway.chat(bad, "gpt-4o-mini", "hi").assert_error(401, "authentication_error", "invalid_api_key");
    }
    gateway.stop();
}

/// One SQLite store holds both shapes: keys issued in the AI Stats shape keep working after the
/// gateway switches to the AIsa shape, and both are managed alike.
#[test]
fn one_store_holds_both_shapes_across_a_switch() {
    let dir = fresh_dir();
    let store = dir.join("keys.db");
    let store = store.to_str().unwrap().to_owned();
    let mut gateway = Gateway::start_in(dir.clone(), &["--store", &store]);
    let (aistats, aistats_id) = gateway.create_key(key_json("before the switch", json!({})));
    assert!(aistats.starts_with("aistats_v1_sk_"));
    let secrets = gateway.secrets.clone();
    gateway.stop_keeping_files();

    let mut gateway = Gateway::start_in(dir, &["--store", &store, "--key-format", "aisa"]);
    gateway.secrets = secrets;
    let (aisa, _) = gateway.create_key(key_json("after the switch", json!({})));
    assert!(aisa.starts_with("sk-aisa-"));
    for token in [&aistats, &aisa] {
        assert_eq!(gateway.chat(token, "gpt-4o-mini", "hi").status, 200);
    }
    gateway.patch_key(&aistats_id, json!({ "status": "revoked" }));
    gateway.chat(&aistats, "gpt-4o-mini", "hi").assert_error(401, "authentication_error", "revoked_api_key");
    assert_eq!(gateway.chat(&aisa, "gpt-4o-mini", "hi").status, 200);
    assert_eq!(gateway.total(), 3); // the operator's key and the two

    // An import through the API into the same store (through its cache): a key tried before it
    // is imported verifies right after, and again after its first use moved it to the pepper.
    let legacy = foreign_key("sk-aisa-");
    gateway.secrets.push(legacy.clone());
    gateway.chat(&legacy, "gpt-4o-mini", "hi").assert_error(401, "authentication_error", "invalid_api_key");
    let reply = gateway.import(&gateway.admin(), json!([{ "sha256": sha256_hex(&legacy), "name": "legacy" }]));
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.json()["keys"][0]["id"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(gateway.chat(&legacy, "gpt-4o-mini", "hi").status, 200);
    }
    assert_eq!(gateway.key(&id)["digest"], "current");
    gateway.stop();
}

// ---- import through the management API -------------------------------------------------------

/// Keys imported by plaintext and by SHA-256 answer with ids only, verify as they did
/// elsewhere with the configuration given, and an imported SHA-256 moves to the peppered digest
/// on its first use (`digest: imported` → `current`). A second import of any of them, in
/// either form, is refused.
#[test]
fn imported_keys_verify_and_move_to_the_pepper() {
    let mut gateway = Gateway::start(&["--accept-prefix", "sk-live-"]);
    let admin = gateway.admin();
    let (plain, hashed, foreign) = (foreign_key("sk-aisa-"), foreign_key("sk-aisa-"), foreign_key("sk-live-"));
    gateway.secrets.extend([plain.clone(), hashed.clone(), foreign.clone()]);
    let reply = gateway.import(
        &admin,
        json!([
            { "key": plain, "name": "plain", "allowed_models": ["gpt-4o-mini"] },
            { "sha256": sha256_hex(&hashed), "prefix": "sk-aisa-lega", "name": "hashed",
              "rate_limit": { "requests_per_minute": 2 } },
            { "sha256": sha256_hex(&foreign).to_uppercase(), "name": "foreign", "scopes": ["read"] },
        ]),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["imported"], 3);
    for secret in [&plain, &hashed, &foreign] {
        assert!(!reply.body.contains(secret.as_str()) && !reply.body.contains(&secret[secret.len() - 20..]));
    }
    let keys = body["keys"].as_array().unwrap();
    let ids: Vec<String> = keys.iter().map(|k| k["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        keys.iter().map(|k| k["digest"].as_str().unwrap()).collect::<Vec<_>>(),
        ["current", "imported", "imported"]
    );
    assert_eq!(keys[0]["prefix"], &plain[..12]);
    assert_eq!(keys[1]["prefix"], "sk-aisa-lega");
    assert_eq!(gateway.key(&ids[1])["digest"], "imported");
    assert_eq!(gateway.key(&ids[1])["rate_limit"]["requests_per_minute"], 2);

    // Each key verifies, with its configuration.
    assert_eq!(gateway.chat(&plain, "gpt-4o-mini", "hi").status, 200);
    gateway.chat(&plain, "gpt-4o", "hi").assert_error(403, "permission_error", "model_not_allowed");
    for _ in 0..2 {
        let reply = gateway.chat(&hashed, "gpt-4o", "hi");
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    gateway.chat(&hashed, "gpt-4o", "hi").assert_error(429, "rate_limit_error", "rate_limited");
    assert_eq!(gateway.get("/v1/models", Some(&foreign)).status, 200);
    // A wrong key of the same prefix is not let in by the plain SHA-256 fallback.
    let near = altered(&foreign);
    gateway.get("/v1/models", Some(&near)).assert_error(401, "authentication_error", "invalid_api_key");

    // Migrate-on-verify: the first successful use stored the peppered digest.
    for id in &ids[1..] {
        assert_eq!(gateway.key(id)["digest"], "current", "{id}");
    }
    assert_eq!(gateway.get("/v1/models", Some(&foreign)).status, 200, "still verifies after the move");

    // A second import of each key, in either form, is refused, and adds nothing.
    let total = gateway.total();
    let again = gateway.import(
        &admin,
        json!([
            { "sha256": sha256_hex(&plain), "name": "plain again" },
            { "key": hashed, "name": "hashed again" },
            { "key": foreign, "name": "foreign again" },
        ]),
    );
    again.assert_error(409, "conflict_error", "import_rejected");
    let expected =
        [entry(0, "sha256", "duplicate_key"), entry(1, "key", "duplicate_key"), entry(2, "key", "duplicate_key")];
    assert_eq!(rejected(&again), expected);
    assert_eq!(gateway.total(), total);

    // Revocation of an imported key is seen by the next request.
    gateway.patch_key(&ids[0], json!({ "status": "revoked" }));
    gateway.chat(&plain, "gpt-4o-mini", "hi").assert_error(401, "authentication_error", "revoked_api_key");
    gateway.stop();
}

/// A batch with faults imports nothing, naming each refused entry with its field and code; the
/// size limit is 1000 entries; only a key with `write` imports, and never keys broader than
/// itself or outside its team.
#[test]
fn a_faulty_batch_imports_nothing_and_import_cannot_escalate() {
    let mut gateway = Gateway::start(&[]);
    let admin = gateway.admin();
    let total = gateway.total();
    let good = foreign_key("sk-aisa-");
    let twice = foreign_key("sk-aisa-");
    gateway.secrets.extend([good.clone(), twice.clone()]);

    // Entries that do not read: bad hex, an unknown field, neither key nor digest, not an object.
    let reply = gateway.import(
        &admin,
        json!([
            { "key": good, "name": "good" },
            { "sha256": "xyz", "name": "bad hex" },
            { "key": foreign_key("sk-aisa-"), "name": "unknown", "colour": "blue" },
            { "name": "no key" },
            "sk-aisa-not-an-object",
        ]),
    );
    reply.assert_error(400, "invalid_request_error", "import_rejected");
    assert_eq!(
        rejected(&reply),
        [
            entry(1, "sha256", "invalid_value"),
            entry(2, "colour", "unknown_field"),
            entry(3, "key", "missing_field"),
            entry(4, "", "invalid_json"),
        ]
    );
    assert!(!reply.body.contains(&good) && !reply.body.contains("sk-aisa-not-an-object"), "no key is echoed");
    // Entries that read but break the rules: a key twice, a format no one accepts, a bad name.
    let reply = gateway.import(
        &admin,
        json!([
            { "key": good, "name": "good" },
            { "key": twice, "name": "first" },
            { "sha256": sha256_hex(&twice), "name": "second" },
            { "key": "sk-nobody-0123456789abcdefghijklmnop", "name": "unknown shape" },
            { "key": foreign_key("sk-aisa-"), "name": "" },
        ]),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(
        rejected(&reply),
        [entry(2, "sha256", "duplicate_key"), entry(3, "key", "invalid_value"), entry(4, "name", "invalid_value")]
    );
    assert!(reply.body.contains("the same key as entry 1"), "{}", reply.body);
    // Nothing of either batch was stored.
    assert_eq!(gateway.total(), total);
    gateway.chat(&good, "gpt-4o-mini", "hi").assert_error(401, "authentication_error", "invalid_api_key");

    // The batch size limit.
    let many: Vec<Value> =
        (0..1001).map(|i| json!({ "sha256": sha256_hex(&format!("k{i}")), "name": format!("k{i}") })).collect();
    let reply = gateway.import(&admin, Value::from(many));
    reply.assert_error(400, "invalid_request_error", "invalid_value");
    assert_eq!(reply.json()["error"]["param"], "keys");
    gateway.import(&admin, json!([])).assert_error(400, "invalid_request_error", "invalid_value");

    // A key with `read` only may not import.
    let (reader, _) = gateway.create_key(key_json("reader", json!({ "scopes": ["read"] })));
    let reply = gateway.import(&reader, json!([{ "key": good, "name": "x" }]));
    reply.assert_error(403, "permission_error", "insufficient_scope");

    // A restricted team key imports only keys within itself, into its own team.
    let bounds = json!({
        "team_id": "team-a",
        "allowed_models": ["gpt-4o-mini"],
        "rate_limit": { "requests_per_minute": 10 },
        "spend_cap": { "amount_usd": "5", "period": "month" },
    });
    let (restricted, _) = gateway.create_key(key_json("team a admin", bounds));
    let within = json!({
        "allowed_models": ["gpt-4o-mini"],
        "rate_limit": { "requests_per_minute": 5 },
        "spend_cap": { "amount_usd": "1", "period": "month" },
    });
    let with = |extra: Value| {
        let mut e = within.clone();
        e.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        e
    };
    // Each wider entry names the field; the entry within bounds beside it is not imported.
    let cases = [
        (json!({ "allowed_models": [] }), None, "allowed_models", "escalation"),
        (json!({ "rate_limit": { "requests_per_minute": 11 } }), None, "rate_limit.requests_per_minute", "escalation"),
        (json!({}), Some("spend_cap"), "spend_cap", "escalation"),
        (json!({ "team_id": "team-b" }), None, "team_id", "team_mismatch"),
    ];
    for (fields, without, field, code) in cases {
        let mut e = with(json!({ "key": foreign_key("sk-aisa-"), "name": "wider" }));
        e.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        if let Some(without) = without {
            e.as_object_mut().unwrap().remove(without);
        }
        let reply = gateway.import(&restricted, json!([with(json!({ "key": good, "name": "fine" })), e]));
        assert_eq!(reply.status, 403, "{field}: {}", reply.body);
        assert_eq!(rejected(&reply), [entry(1, field, code)], "{field}");
    }
    assert_eq!(gateway.total(), total + 2);
    let reply = gateway.import(&restricted, json!([with(json!({ "key": good, "name": "fine" }))]));
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.json()["keys"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(gateway.key(&id)["team_id"], "team-a");
    assert_eq!(gateway.chat(&good, "gpt-4o-mini", "hi").status, 200);
    gateway.chat(&good, "gpt-4o", "hi").assert_error(403, "permission_error", "model_not_allowed");
    gateway.stop();
}

// ---- the import command ------------------------------------------------------------------------

fn run_import(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let Output { status, stdout, stderr } = Command::new(import_binary())
        .arg("--pepper-file")
        .arg(dir.join("pepper"))
        .args(args)
        .output()
        .expect("run the import command");
    (status.code(), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

/// A JSON Lines file with a faulty batch among good ones, into SQLite: the good batches are
/// imported, the faulty one not at all, one line per refused row naming its line, field and
/// code, exit code 1; a dry run writes nothing; the keys then work on the gateway and move
/// to the pepper on first use.
#[test]
fn the_import_command_refuses_a_faulty_batch_and_imports_the_rest() {
    let dir = fresh_dir();
    write_pepper(&dir);
    let db = dir.join("keys.db");
    let store = format!("sqlite:{}", db.display());
    let keys: Vec<String> = (0..9).map(|_| foreign_key("sk-aisa-")).collect();
    let row = |i: usize, secret: Value| {
        let mut r = json!({ "name": format!("user {i}"), "allowed_models": ["gpt-4o-mini"] });
        r.as_object_mut().unwrap().extend(secret.as_object().unwrap().clone());
        r.to_string()
    };
    // Batches of 3 rows: lines 1-3 good, 4-7 (one blank line) faulty, 8-10 good.
    let lines = [
        row(0, json!({ "key": keys[0] })),
        row(1, json!({ "sha256": sha256_hex(&keys[1]) })),
        row(2, json!({ "key": keys[2] })),
        row(3, json!({ "sha256": "not hex" })),
        String::new(),
        row(4, json!({ "key": keys[4], "colour": "blue" })),
        row(5, json!({ "key": keys[0] })), // already in the file (and imported by then)
        row(6, json!({ "key": keys[6] })),
        format!("{{\"name\": \"long\", \"key\": \"{}\"}}", "x".repeat(20_000)),
        row(8, json!({ "sha256": sha256_hex(&keys[1]) })), // imported by the first batch
    ];
    let file = dir.join("keys.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let file = file.to_str().unwrap();

    // The dry run checks everything and writes nothing.
    let (code, out, err) = run_import(&dir, &["--store", &store, "--batch", "3", "--dry-run", file]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(out.contains("would import 3 of 9 keys") && out.contains("dry run"), "{out}");
    let (code, out, err) = run_import(&dir, &["--store", &store, "--batch", "3", file]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(out.contains("imported 3 of 9 keys (1 by SHA-256)"), "{out}");
    assert!(out.contains("refused: 5 rows; their 2 batches (6 rows) imported nothing"), "{out}");
    let refused: Vec<&str> = err.lines().filter(|l| l.starts_with("line")).collect();
    assert_eq!(
        refused,
        [
            "line 4: sha256: invalid_value: invalid `sha256`: must be 64 hexadecimal digits (the SHA-256 of the key)",
            "line 6: colour: unknown_field: unknown field `colour`",
            "line 7: key: duplicate_key: the key is stored already (or is in the file twice)",
            "lines 4-7: nothing of this batch was imported",
            "line 9: -: invalid_json: the line is longer than 16384 bytes",
            "line 10: sha256: duplicate_key: the key is stored already (or is in the file twice)",
            "lines 8-10: nothing of this batch was imported",
        ],
        "{err}"
    );
    for key in &keys {
        assert!(!out.contains(&key[8..]) && !err.contains(&key[8..]), "a key was printed");
    }
    // Running it again: every row of the first batch is a duplicate now.
    let (code, _, err) = run_import(&dir, &["--store", &store, "--batch", "3", file]);
    assert_eq!(code, Some(1));
    assert!(err.contains("line 1: key: duplicate_key") && err.contains("line 2: sha256: duplicate_key"), "{err}");
    // Usage errors: exit code 2.
    assert_eq!(run_import(&dir, &["--store", &store, "missing.jsonl"]).0, Some(2));
    assert_eq!(run_import(&dir, &["--store", &store, "--batch", "1001", file]).0, Some(2));

    // The gateway on the same store and pepper: the imported keys work, the refused ones not.
    let mut gateway = Gateway::start_in(dir, &["--store", db.to_str().unwrap()]);
    gateway.secrets.extend(keys.iter().cloned());
    for key in &keys[..3] {
        assert_eq!(gateway.chat(key, "gpt-4o-mini", "hi").status, 200);
        gateway.chat(key, "gpt-4o", "hi").assert_error(403, "permission_error", "model_not_allowed");
    }
    for key in &keys[4..] {
        gateway.chat(key, "gpt-4o-mini", "hi").assert_error(401, "authentication_error", "invalid_api_key");
    }
    let listed = gateway.get("/v1/management/keys?limit=250", Some(&gateway.admin())).json();
    let imported: Vec<&Value> = listed["keys"].as_array().unwrap().iter().filter(|k| k["kind"] == "sk").collect();
    let digests: Vec<&str> = imported.iter().filter_map(|k| k["digest"].as_str()).collect();
    assert_eq!((listed["total"].as_u64(), digests.len()), (Some(4), 3), "{listed}"); // and the operator's key
    assert!(digests.iter().all(|d| *d == "current"), "every imported key moved on its first use: {digests:?}");
    gateway.stop();
}

/// CSV into PostgreSQL: every row imported, exit code 0; the keys verify on a gateway on that
/// database.
#[test]
fn the_import_command_reads_csv_into_postgres() {
    if support::servers::postgres_url().is_none() {
        return;
    }
    let database = support::gateway::Database::create();
    let dir = fresh_dir();
    write_pepper(&dir);
    let keys: Vec<String> = (0..4).map(|_| foreign_key("sk-aisa-")).collect();
    let mut csv = String::from(
        "name,key,sha256,prefix,scopes,rate_limit.requests_per_minute,spend_cap.amount_usd,spend_cap.period\n",
    );
    writeln!(csv, "\"first, with a comma\",{},,,read write,1,,", keys[0]).unwrap();
    writeln!(csv, "second,,{},sk-aisa-2nd,,,0.000001,day", sha256_hex(&keys[1])).unwrap();
    writeln!(csv, "third,{},,,,,,", keys[2]).unwrap();
    writeln!(csv, "fourth,,{},,,,,", sha256_hex(&keys[3])).unwrap();
    let file = dir.join("keys.csv");
    std::fs::write(&file, csv).unwrap();
    let (code, out, err) = run_import(&dir, &["--store", &database.url(), file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("imported 4 of 4 keys (2 by SHA-256)"), "{out}");

    let mut gateway = Gateway::start_in(dir, &["--store", &database.url()]);
    gateway.secrets.extend(keys.iter().cloned());
    for key in &keys {
        assert_eq!(gateway.chat(key, "gpt-4o-mini", "hi").status, 200);
    }
    gateway.chat(&keys[0], "gpt-4o-mini", "hi").assert_error(429, "rate_limit_error", "rate_limited");
    gateway.chat(&keys[1], "gpt-4o-mini", "hi").assert_error(429, "rate_limit_error", "quota_exceeded");
    let listed = gateway.get("/v1/management/keys", Some(&gateway.admin())).json();
    let first = listed["keys"].as_array().unwrap().iter().find(|k| k["name"] == "first, with a comma").unwrap();
    assert_eq!(first["scopes"], json!(["read", "write"]));
    assert!(listed["keys"].as_array().unwrap().iter().any(|k| k["prefix"] == "sk-aisa-2nd"));
    gateway.stop();
}
