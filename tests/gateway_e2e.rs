//! End to end: the reference gateway (`examples/gateway.rs`) started as a real process on a free
//! loopback port and driven over HTTP, as a client would: keys created through the management
//! API with the AI Stats JSON, chat completions whole and streamed, every denial the gateway can
//! answer, revocation seen by the very next request, the wallet, graceful shutdown, the secret
//! files' modes, and no key ever written to the process's output. The official OpenAI Python
//! SDK is run against it too (`tests/openai_sdk.py`).
#![cfg(feature = "full")]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use keygate::Timestamp;
use serde_json::{Value, json};

// ---- the gateway process ----------------------------------------------------------------------

/// The example's binary, built first if it is missing or older than its sources.
fn gateway_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // The test runs from target/<profile>/deps/; examples live in target/<profile>/examples/.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap();
        let binary = profile_dir.join("examples").join(format!("gateway{}", std::env::consts::EXE_SUFFIX));
        if !is_fresh(&binary) {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let mut build = Command::new(cargo);
            build.args(["build", "--example", "gateway", "--features", "full", "--manifest-path"]);
            build.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
            if profile_dir.file_name().is_some_and(|p| p == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build --example gateway");
            assert!(status.success(), "cargo build --example gateway failed");
        }
        binary
    })
}

/// Whether `binary` exists and is newer than every source file of the example and the crate.
fn is_fresh(binary: &Path) -> bool {
    fn sources(dir: &Path, into: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() { sources(&path, into) } else { into.push(path) }
        }
    }
    let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    let Some(built) = modified(binary) else { return false };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("examples").join("gateway.rs"), root.join("Cargo.toml")];
    sources(&root.join("examples").join("gateway"), &mut files);
    sources(&root.join("src"), &mut files);
    sources(&root.join("migrations"), &mut files);
    files.iter().all(|s| modified(s).is_none_or(|m| m <= built))
}

/// A running gateway, killed when dropped (also when a test panics).
struct Gateway {
    child: Child,
    url: String,
    dir: PathBuf,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    agent: ureq::Agent,
    /// Every token seen in this test: none may appear in the process's output.
    secrets: Vec<String>,
}

impl Gateway {
    /// Starts the gateway on a free loopback port with its secret files in a fresh directory.
    fn start(extra: &[&str]) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "gateway-e2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self::start_in(dir, extra)
    }

    fn start_in(dir: PathBuf, extra: &[&str]) -> Self {
        let mut child = Command::new(gateway_binary())
            .args(["--addr", "127.0.0.1:0", "--admin-key-file"])
            .arg(dir.join("admin.key"))
            .arg("--pepper-file")
            .arg(dir.join("pepper"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the gateway");
        let (stdout, stderr) = (Arc::new(Mutex::new(String::new())), Arc::new(Mutex::new(String::new())));
        let (found, address) = mpsc::channel();
        let readers = vec![
            capture(child.stdout.take().unwrap(), Arc::clone(&stdout), Some(found)),
            capture(child.stderr.take().unwrap(), Arc::clone(&stderr), None),
        ];
        let Ok(url) = address.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            panic!("the gateway did not start; stderr:\n{}", stderr.lock().unwrap());
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build();
        let admin = std::fs::read_to_string(dir.join("admin.key")).unwrap().trim().to_owned();
        Self { child, url, dir, stdout, stderr, readers, agent: config.into(), secrets: vec![admin] }
    }

    /// The operator's management key, from the file the gateway wrote.
    fn admin(&self) -> String {
        self.secrets[0].clone()
    }

    fn get(&self, path: &str, key: Option<&str>) -> Reply {
        let mut request = self.agent.get(format!("{}{path}", self.url));
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        Reply::read(request.call().unwrap())
    }

    fn send(&self, method: &str, path: &str, key: Option<&str>, body: &Value) -> Reply {
        let url = format!("{}{path}", self.url);
        let mut request = match method {
            "POST" => self.agent.post(url),
            "PATCH" => self.agent.patch(url),
            _ => unreachable!(),
        };
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        Reply::read(request.content_type("application/json").send(body.to_string()).unwrap())
    }

    fn post(&self, path: &str, key: Option<&str>, body: &Value) -> Reply {
        self.send("POST", path, key, body)
    }

    /// Creates a key with the management API (as the operator) and returns its token and id.
    fn create_key(&mut self, request: Value) -> (String, String) {
        let admin = self.admin();
        let reply = self.post("/v1/management/keys", Some(&admin), &request);
        assert_eq!(reply.status, 201, "{}", reply.body);
        let key = &reply.json()["key"];
        let token = key["key"].as_str().unwrap().to_owned();
        self.secrets.push(token.clone());
        (token, key["id"].as_str().unwrap().to_owned())
    }

    /// Changes a key with the management API (as the operator).
    fn patch_key(&self, id: &str, patch: Value) {
        let reply = self.send("PATCH", &format!("/v1/management/keys/{id}"), Some(&self.admin()), &patch);
        assert_eq!(reply.status, 200, "{}", reply.body);
    }

    fn chat(&self, key: &str, model: &str, message: &str) -> Reply {
        let body = json!({ "model": model, "messages": [{ "role": "user", "content": message }], "max_tokens": 64 });
        self.post("/v1/chat/completions", Some(key), &body)
    }

    /// Starts a streamed chat and returns the reply's status, headers and a reader of its events.
    fn stream(&self, key: &str, model: &str, message: &str) -> (u16, Events) {
        let body = json!({
            "model": model,
            "messages": [{ "role": "user", "content": message }],
            "stream": true,
            "stream_options": { "include_usage": true },
        });
        let response = self
            .agent
            .post(format!("{}/v1/chat/completions", self.url))
            .header("authorization", format!("Bearer {key}"))
            .content_type("application/json")
            .send(body.to_string())
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        if status == 200 {
            assert_eq!(content_type.as_deref(), Some("text/event-stream"));
        }
        (status, Events(BufReader::new(Box::new(response.into_body().into_reader()))))
    }

    /// Stops the process and returns what it wrote to stdout and stderr, after checking that
    /// no key appears in either.
    fn stop(mut self) -> (String, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        let (out, err) = (self.stdout.lock().unwrap().clone(), self.stderr.lock().unwrap().clone());
        for secret in &self.secrets {
            assert!(!out.contains(secret.as_str()) && !err.contains(secret.as_str()), "a key was printed");
            // Not even the secret part alone (the text after the kid).
            let tail = &secret[secret.len() - 20..];
            assert!(!out.contains(tail) && !err.contains(tail), "part of a key's secret was printed");
        }
        (out, err)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Copies a pipe into `into`; on stdout, reports the URL from the `listening on` line.
fn capture(
    pipe: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
    found: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let (Some(found), Some(url)) = (&found, line.strip_prefix("listening on ")) {
                let _ = found.send(url.to_owned());
            }
            let mut all = into.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    })
}

/// A whole HTTP reply.
struct Reply {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: String,
}

impl Reply {
    fn read(mut response: ureq::http::Response<ureq::Body>) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.body_mut().read_to_string().unwrap();
        Self { status, headers, body }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Asserts an OpenAI-compatible error with this status, type and code.
    #[track_caller]
    fn assert_error(&self, status: u16, kind: &str, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        let error = &self.json()["error"];
        assert_eq!(error["code"], code, "{}", self.body);
        assert_eq!(error["type"], kind, "{}", self.body);
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(self.header("content-type"), Some("application/json"));
    }
}

/// The server-sent events of a streamed reply.
struct Events(BufReader<Box<dyn Read + Send>>);

impl Events {
    /// The next event's data, checking the framing: one `data: ` line, then a blank line.
    fn next(&mut self) -> Option<String> {
        let mut line = String::new();
        if self.0.read_line(&mut line).unwrap() == 0 {
            return None;
        }
        let data = line.strip_prefix("data: ").unwrap_or_else(|| panic!("not an event: {line:?}"));
        let data = data.strip_suffix('\n').expect("an event line ends with a newline").to_owned();
        let mut blank = String::new();
        self.0.read_line(&mut blank).unwrap();
        assert_eq!(blank, "\n", "an event ends with a blank line");
        Some(data)
    }

    /// Every remaining event.
    fn rest(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.next()).collect()
    }
}

/// A key request in the AI Stats JSON, with `extra` fields merged in.
fn key_json(name: &str, extra: Value) -> Value {
    let mut request = json!({ "name": name, "scopes": ["read", "write"], "status": "active" });
    request.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    request
}

/// A message of `words` words: its reply streams for about `words` × 20 ms.
fn long_message(words: usize) -> String {
    vec!["word"; words].join(" ")
}

// ---- the tests ----------------------------------------------------------------------------------

#[test]
fn a_key_created_with_the_ai_stats_json_chats_and_streams() {
    let mut gateway = Gateway::start(&[]);
    let (token, id) = gateway.create_key(key_json(
        "my app",
        json!({ "rate_limit": { "requests_per_minute": 100, "tokens_per_minute": 100000 } }),
    ));
    assert!(token.starts_with(&format!("aistats_v1_sk_{id}_")));

    // A chat completion, OpenAI-shaped, with the usage and the rate-limit headers.
    let reply = gateway.chat(&token, "gpt-4o-mini", "Hello there");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from gpt-4o-mini! You said: Hello there");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // 11 characters: 3 tokens, + 3 for the message + 3 to prime the reply; 45 characters: 12.
    assert_eq!(body["usage"], json!({ "prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21 }));
    assert_eq!(reply.header("x-ratelimit-limit-requests"), Some("100"));
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), Some("99"));

    // The same request gets the same reply.
    let again = gateway.chat(&token, "gpt-4o-mini", "Hello there").json();
    assert_eq!(again["choices"], body["choices"]);
    assert_eq!(again["usage"], body["usage"]);

    // Tokens: the estimate (body size / 4 + max_tokens) is taken before the request runs, and
    // replaced by the real usage (21 tokens) when its reply ends.
    let (metered, _) = gateway.create_key(key_json("tokens", json!({ "rate_limit": { "tokens_per_minute": 1000 } })));
    let body = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "Hello there" }], "max_tokens": 500 });
    let estimate = u32::try_from(body.to_string().len() / 4 + 500).unwrap();
    let first = gateway.post("/v1/chat/completions", Some(&metered), &body);
    let remaining = |reply: &Reply| -> u32 { reply.header("x-ratelimit-remaining-tokens").unwrap().parse().unwrap() };
    assert_eq!(remaining(&first), 1000 - estimate);
    // Without the reconciliation, a second estimate would not fit at all.
    let second = gateway.post("/v1/chat/completions", Some(&metered), &body);
    assert_eq!(second.status, 200, "{}", second.body);
    let left = remaining(&second);
    assert!((1000 - 21 - estimate..1000 - estimate).contains(&left), "{left}, estimate {estimate}");

    // max_tokens cuts the reply.
    let body = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "x" }], "max_tokens": 2 });
    let cut = gateway.post("/v1/chat/completions", Some(&token), &body).json();
    assert_eq!(cut["choices"][0]["message"]["content"], "Hello fr");
    assert_eq!(cut["choices"][0]["finish_reason"], "length");
    assert_eq!(cut["usage"]["completion_tokens"], 2);

    // A streamed reply: chunks, a finish reason, the usage chunk, then [DONE].
    let (status, mut events) = gateway.stream(&token, "mistral-7b-instruct:free", "Stream it");
    assert_eq!(status, 200);
    let events = events.rest();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hello from mistral-7b-instruct:free! You said: Stream it");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 14);
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["usage"].is_null()));

    // Without include_usage: no usage field at all.
    let body = json!({ "model": "gpt-4o-mini", "stream": true, "messages": [{ "role": "user", "content": "x" }] });
    let reply = gateway.post("/v1/chat/completions", Some(&token), &body);
    assert!(reply.body.ends_with("data: [DONE]\n\n") && !reply.body.contains("usage"), "{}", reply.body);

    // The model list: OpenAI's shape, some models free, each with a provider and a price.
    let models = gateway.get("/v1/models", Some(&token)).json();
    assert_eq!(models["object"], "list");
    let data = models["data"].as_array().unwrap();
    assert!(data.iter().any(|m| m["id"].as_str().unwrap().ends_with(":free") && m["pricing"]["input"] == "0"));
    assert!(data.iter().all(|m| m["object"] == "model" && m["provider"].is_string()));
    assert!(data.iter().any(|m| m["id"] == "gpt-4o-mini" && m["pricing"]["input"] == "0.15"));

    // The management API lists the key; the token appears only in the create answer.
    let listed = gateway.get("/v1/management/keys", Some(&gateway.admin()));
    assert_eq!(listed.status, 200);
    assert!(listed.body.contains(&id) && !listed.body.contains(&token));

    // The secret files are private; the log names keys by id only.
    for file in ["admin.key", "pepper"] {
        assert_eq!(mode(&gateway.dir.join(file)), 0o600, "{file}");
    }
    let (out, err) = gateway.stop();
    assert!(out.contains("admin key: id ") && out.contains("listening on http://127.0.0.1:"), "{out}");
    assert!(err.contains(&format!("POST /v1/chat/completions 200 key={id}")), "{err}");
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(not(unix))]
fn mode(_: &Path) -> u32 {
    0o600
}

#[test]
fn every_401_and_403() {
    let mut gateway = Gateway::start(&[]);
    let (token, _) = gateway.create_key(key_json("valid", json!({})));

    // 401: no key, a malformed key, a wrong secret for a real id: the same answer for the last two.
    let reply = gateway.post("/v1/chat/completions", None, &json!({ "model": "gpt-4o-mini", "messages": [] }));
    reply.assert_error(401, "authentication_error", "missing_api_key");
    assert!(reply.header("www-authenticate").unwrap().starts_with("Bearer"));
    gateway.chat("sk-not-a-key", "gpt-4o-mini", "hi").assert_error(401, "authentication_error", "invalid_api_key");
    let mut wrong = token.clone();
    wrong.replace_range(wrong.len() - 4.., "AAAA");
    gateway.chat(&wrong, "gpt-4o-mini", "hi").assert_error(401, "authentication_error", "invalid_api_key");

    // 401: disabled, expired.
    let (disabled, _) = gateway.create_key(key_json("disabled", json!({ "status": "disabled" })));
    gateway.chat(&disabled, "gpt-4o-mini", "hi").assert_error(401, "authentication_error", "disabled_api_key");
    let soon = Timestamp::now().saturating_add(Duration::from_secs(2)).to_string();
    let (expiring, _) = gateway.create_key(key_json("expiring", json!({ "expires_at": soon })));
    assert_eq!(gateway.chat(&expiring, "gpt-4o-mini", "hi").status, 200);

    // 403: soft block, IP allowlist (a range without 127.0.0.1), model, provider.
    let (blocked, blocked_id) = gateway.create_key(key_json("blocked", json!({})));
    gateway.patch_key(&blocked_id, json!({ "soft_blocked": true }));
    gateway.chat(&blocked, "gpt-4o-mini", "hi").assert_error(403, "permission_error", "key_blocked");
    let (elsewhere, _) = gateway.create_key(key_json("office only", json!({ "allowed_ips": ["10.0.0.0/8"] })));
    gateway.chat(&elsewhere, "gpt-4o-mini", "hi").assert_error(403, "permission_error", "ip_not_allowed");
    let (mini, _) = gateway.create_key(key_json("mini", json!({ "allowed_models": ["gpt-4o-mini", "*:free"] })));
    assert_eq!(gateway.chat(&mini, "gpt-4o-mini", "hi").status, 200);
    assert_eq!(gateway.chat(&mini, "llama-3.1-8b-instruct:free", "hi").status, 200);
    gateway.chat(&mini, "gpt-4o", "hi").assert_error(403, "permission_error", "model_not_allowed");
    gateway.chat(&mini, "llama-3.1-8b-instruct", "hi").assert_error(403, "permission_error", "model_not_allowed");
    let (openai, _) = gateway.create_key(key_json("openai only", json!({ "allowed_providers": ["openai"] })));
    assert_eq!(gateway.chat(&openai, "gpt-4o", "hi").status, 200);
    gateway.chat(&openai, "claude-3-5-sonnet", "hi").assert_error(403, "permission_error", "provider_not_allowed");

    // 403: scopes. A key with only `read` may not write keys (refused by the layer); a standard
    // key with both scopes is still not a management key (refused by the management rules).
    let (reader, _) = gateway.create_key(key_json("reader", json!({ "scopes": ["read"] })));
    let create = key_json("escalation", json!({}));
    let reply = gateway.post("/v1/management/keys", Some(&reader), &create);
    reply.assert_error(403, "permission_error", "insufficient_scope");
    assert!(reply.header("www-authenticate").unwrap().contains(r#"error="insufficient_scope""#));
    let reply = gateway.post("/v1/management/keys", Some(&token), &create);
    reply.assert_error(403, "permission_error", "management_key_required");
    gateway.get("/v1/management/keys", Some(&reader)).assert_error(403, "permission_error", "management_key_required");

    // Unknown models and malformed requests pass the key check and are the handler's to refuse.
    gateway.chat(&token, "gpt-5-ultra", "hi").assert_error(404, "invalid_request_error", "model_not_found");
    let reply = gateway.post("/v1/chat/completions", Some(&token), &json!({ "model": "gpt-4o-mini" }));
    reply.assert_error(400, "invalid_request_error", "invalid_request");

    // The expiring key has expired by now.
    thread::sleep(Duration::from_millis(2100));
    gateway.chat(&expiring, "gpt-4o-mini", "hi").assert_error(401, "authentication_error", "expired_api_key");
    gateway.stop();
}

#[test]
fn a_revoked_key_is_refused_on_the_very_next_request() {
    let mut gateway = Gateway::start(&[]);
    let (token, id) = gateway.create_key(key_json("to revoke", json!({})));
    assert_eq!(gateway.chat(&token, "gpt-4o-mini", "hi").status, 200);
    gateway.patch_key(&id, json!({ "status": "revoked" }));
    gateway.chat(&token, "gpt-4o-mini", "hi").assert_error(401, "authentication_error", "revoked_api_key");
    // Revoked is terminal.
    let reply = gateway.send(
        "PATCH",
        &format!("/v1/management/keys/{id}"),
        Some(&gateway.admin()),
        &json!({ "status": "active" }),
    );
    assert_eq!(reply.status, 409, "{}", reply.body);
    // Deleted: the key no longer exists at all.
    let reply = gateway
        .agent
        .delete(format!("{}/v1/management/keys/{id}", gateway.url))
        .header("authorization", format!("Bearer {}", gateway.admin()))
        .call()
        .unwrap();
    assert_eq!(reply.status(), 200);
    gateway.chat(&token, "gpt-4o-mini", "hi").assert_error(401, "authentication_error", "invalid_api_key");
    gateway.stop();
}

#[test]
fn rate_limits_answer_429_with_retry_after() {
    let mut gateway = Gateway::start(&[]);
    // Requests per minute.
    let (token, _) =
        gateway.create_key(key_json("one a minute", json!({ "rate_limit": { "requests_per_minute": 1 } })));
    assert_eq!(gateway.chat(&token, "gpt-4o-mini", "hi").status, 200);
    let reply = gateway.chat(&token, "gpt-4o-mini", "hi");
    reply.assert_error(429, "rate_limit_error", "rate_limited");
    assert_eq!(reply.header("retry-after"), Some("60"));
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), Some("0"));

    // Tokens per minute: the estimate (the body's size / 4 + max_tokens) is taken before the
    // request runs, and replaced by the real usage after it. A message of 250 words: an estimate
    // of about 330 + 400 tokens, a real usage of 319 + 321 = 640 (the mock repeats the message).
    let (token, _) = gateway.create_key(key_json("few tokens", json!({ "rate_limit": { "tokens_per_minute": 1000 } })));
    let body = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": long_message(250) }], "max_tokens": 400 });
    let first = gateway.post("/v1/chat/completions", Some(&token), &body);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.json()["usage"]["total_tokens"], 640);
    // The second needs its estimate again, but only 1000 - 640 are left.
    let reply = gateway.post("/v1/chat/completions", Some(&token), &body);
    reply.assert_error(429, "rate_limit_error", "rate_limited");
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((10..=30).contains(&retry), "{retry}");
    assert_eq!(reply.header("x-ratelimit-limit-tokens"), Some("1000"));
    // A request larger than the whole minute's budget can never pass: no Retry-After.
    let huge = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 1024 });
    let reply = gateway.post("/v1/chat/completions", Some(&token), &huge);
    reply.assert_error(429, "rate_limit_error", "rate_limited");
    assert!(reply.header("retry-after").is_none());
    gateway.stop();
}

#[test]
fn a_stream_holds_its_concurrency_slot_until_it_ends() {
    let mut gateway = Gateway::start(&[]);
    let (token, _) = gateway.create_key(key_json("one at a time", json!({ "rate_limit": { "concurrency": 1 } })));
    // About 100 events, 20 ms apart: the stream stays open for about two seconds.
    let (status, mut events) = gateway.stream(&token, "gpt-4o-mini", &long_message(100));
    assert_eq!(status, 200);
    assert!(events.next().unwrap().contains("\"role\":\"assistant\""));
    let reply = gateway.chat(&token, "gpt-4o-mini", "hi");
    reply.assert_error(429, "rate_limit_error", "concurrency_limited");
    assert_eq!(events.rest().last().map(String::as_str), Some("[DONE]"));
    // The stream ended: its slot is free again.
    assert_eq!(gateway.chat(&token, "gpt-4o-mini", "hi").status, 200);
    gateway.stop();
}

#[test]
fn a_spent_cap_answers_quota_exceeded_until_the_period_ends() {
    let mut gateway = Gateway::start(&[]);
    // One micro-dollar a day: the first paid request spends it.
    let cap = json!({ "spend_cap": { "amount_usd": "0.000001", "period": "day" } });
    let (token, _) = gateway.create_key(key_json("capped", cap));
    assert_eq!(gateway.chat(&token, "gpt-4o-mini", "hi").status, 200);
    let reply = gateway.chat(&token, "gpt-4o-mini", "hi");
    reply.assert_error(429, "rate_limit_error", "quota_exceeded");
    // Retry-After: until the next UTC midnight.
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let until_midnight = 86_400 - now % 86_400;
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!(retry.abs_diff(until_midnight) <= 2, "{retry} vs {until_midnight}");
    gateway.stop();
}

#[test]
fn an_empty_wallet_refuses_paid_models_with_402() {
    // Every team starts with one cent.
    let mut gateway = Gateway::start(&["--wallet-usd", "0.01"]);
    let (broke, _) = gateway.create_key(key_json("team a", json!({ "team_id": "team-a" })));
    let (other, _) = gateway.create_key(key_json("team b", json!({ "team_id": "team-b" })));
    assert_eq!(gateway.get("/v1/wallet", Some(&broke)).json()["balance_usd"], "0.010000");

    // gpt-4o-mini: 9 prompt tokens at $0.15/1M and 12 completion tokens at $0.60/1M: 8.55
    // micro-dollars, rounded up to 9.
    assert_eq!(gateway.chat(&broke, "gpt-4o-mini", "Hello there").status, 200);
    assert_eq!(gateway.get("/v1/wallet", Some(&broke)).json()["balance_usd"], "0.009991");

    // A long request to an expensive model empties the wallet (the cost is taken after the
    // reply, so the balance may go below zero)...
    assert_eq!(gateway.chat(&broke, "claude-3-5-sonnet", &long_message(4000)).status, 200);
    let balance = gateway.get("/v1/wallet", Some(&broke)).json()["balance_usd"].as_str().unwrap().to_owned();
    assert!(balance.starts_with('-'), "{balance}");

    // ...and the next paid request is refused with 402, which OpenAI's SDKs do not retry.
    let reply = gateway.chat(&broke, "gpt-4o-mini", "hi");
    reply.assert_error(402, "billing_error", "insufficient_balance");
    assert!(reply.header("retry-after").is_none());
    // Free models still work; another team's wallet is its own.
    assert_eq!(gateway.chat(&broke, "mistral-7b-instruct:free", "hi").status, 200);
    assert_eq!(gateway.chat(&other, "gpt-4o-mini", "hi").status, 200);
    gateway.stop();
}

#[test]
fn a_client_that_leaves_a_stream_pays_for_what_was_sent() {
    let mut gateway = Gateway::start(&[]);
    let (token, _) = gateway.create_key(key_json("leaver", json!({ "team_id": "team-leaver" })));
    let balance = |gateway: &Gateway| -> f64 {
        gateway.get("/v1/wallet", Some(&token)).json()["balance_usd"].as_str().unwrap().parse().unwrap()
    };
    let before = balance(&gateway);
    // 131 prompt tokens and a 134-token reply: 101 micro-dollars if read to the end.
    let (status, mut events) = gateway.stream(&token, "gpt-4o-mini", &long_message(100));
    assert_eq!(status, 200);
    for _ in 0..3 {
        events.next().unwrap();
    }
    drop(events);
    // The gateway notices at its next write, 20 ms later, and charges the prompt and the few
    // words sent: 131 × 0.15 + a few × 0.60 micro-dollars.
    thread::sleep(Duration::from_millis(500));
    let spent = ((before - balance(&gateway)) * 1e6).round();
    assert!((20.0..=40.0).contains(&spent), "{spent}");
    gateway.stop();
}

#[cfg(unix)]
#[test]
fn ctrl_c_finishes_the_requests_in_flight() {
    let mut gateway = Gateway::start(&[]);
    let (token, _) = gateway.create_key(key_json("streamer", json!({})));
    let (status, mut events) = gateway.stream(&token, "gpt-4o-mini", &long_message(50));
    assert_eq!(status, 200);
    events.next().unwrap();
    // SIGINT, as Ctrl-C sends.
    let pid = gateway.child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    // The stream in flight still ends properly, and then the process exits by itself.
    assert_eq!(events.rest().last().map(String::as_str), Some("[DONE]"));
    let exit = gateway.child.wait().unwrap();
    assert!(exit.success(), "{exit}");
    let (out, _) = gateway.stop();
    assert!(out.contains("shutting down") && out.ends_with("stopped\n"), "{out}");
}

#[test]
fn the_admin_key_survives_a_restart_and_is_never_overwritten() {
    let gateway = Gateway::start(&[]);
    let (dir, admin) = (gateway.dir.clone(), gateway.admin());
    let kid = admin.split('_').nth(3).unwrap().to_owned();
    let (out, _) = gateway.stop_keeping_files();
    assert!(out.contains(&format!("admin key: id {kid} ")), "{out}");

    // Started again with the same files: the same key works.
    let gateway = Gateway::start_in(dir.clone(), &[]);
    assert_eq!(gateway.admin(), admin);
    assert_eq!(gateway.get("/v1/management/keys", Some(&admin)).status, 200);
    let (out, _) = gateway.stop_keeping_files();
    assert!(out.contains(&format!("admin key: id {kid} ")) && out.contains("pepper: loaded"), "{out}");

    // A file that others may read is refused, as is one that holds no key.
    let file = dir.join("admin.key");
    set_mode(&file, 0o644);
    let refused = run_briefly(&[OsStr::new("--admin-key-file"), file.as_os_str()]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("chmod 600"));
    std::fs::write(&file, "not a key\n").unwrap();
    set_mode(&file, 0o600);
    let refused = run_briefly(&[OsStr::new("--admin-key-file"), file.as_os_str()]);
    assert!(!refused.status.success());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a key\n");
    let _ = std::fs::remove_dir_all(&dir);
}

impl Gateway {
    /// [`Gateway::stop`], leaving the key files in place for another start.
    fn stop_keeping_files(mut self) -> (String, String) {
        self.dir = self.dir.join("nothing-to-remove");
        self.stop()
    }
}

/// Runs the gateway with `args` on a free port, expecting it to exit by itself (killed after
/// ten seconds otherwise, so that a regression fails rather than hangs).
fn run_briefly(args: &[&OsStr]) -> Output {
    let mut child = Command::new(gateway_binary())
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("the gateway kept running with {args:?}");
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) {}

#[test]
fn the_command_line_explains_itself() {
    let help = run_briefly(&[OsStr::new("--help")]);
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    for flag in ["--addr", "--admin-key-file", "--pepper-file", "--prefix", "--wallet-usd", "--store", "--limits"] {
        assert!(text.contains(flag), "{flag}");
    }
    for (flag, value, says) in [
        ("--store", "mysql://db/keys", "is not `memory`"),
        ("--limits", "memcached://cache", "is not `memory`"),
        ("--store", "sqlite://keys.db", "--pepper-file"),
    ] {
        let refused = run_briefly(&[OsStr::new(flag), OsStr::new(value)]);
        assert_eq!(refused.status.code(), Some(2), "{flag} {value}");
        assert!(String::from_utf8_lossy(&refused.stderr).contains(says), "{flag} {value}");
    }
    let unknown = run_briefly(&[OsStr::new("--port")]);
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn a_custom_prefix_shapes_the_keys() {
    let mut gateway = Gateway::start(&["--prefix", "acme"]);
    assert!(gateway.admin().starts_with("acme_v1_mk_"));
    let (token, _) = gateway.create_key(key_json("acme key", json!({})));
    assert!(token.starts_with("acme_v1_sk_"));
    assert_eq!(gateway.chat(&token, "gpt-4o-mini", "hi").status, 200);
    gateway.stop();
}

/// The official OpenAI Python SDK, unchanged but for `base_url`: models, chat, streaming, and
/// its exception classes for 401 and 429. Where the SDK is missing, the test says so and passes,
/// except in CI (`KEYGATE_CI=1`), which installs it.
#[test]
fn the_official_openai_sdk_works_unchanged() {
    let sdk = Command::new("python3").args(["-c", "import openai"]).output();
    if !sdk.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var("KEYGATE_CI").as_deref() != Ok("1"),
            "the openai Python SDK is missing: python3 -m pip install openai"
        );
        println!("not run: openai SDK missing");
        return;
    }
    let mut gateway = Gateway::start(&[]);
    let (key, _) = gateway.create_key(key_json("sdk", json!({})));
    let (limited, _) =
        gateway.create_key(key_json("sdk limited", json!({ "rate_limit": { "requests_per_minute": 1 } })));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("openai_sdk.py");
    // The keys travel in the environment, not on the command line where `ps` would show them.
    let run = Command::new("python3")
        .arg(script)
        .env("KEYGATE_URL", format!("{}/v1", gateway.url))
        .env("KEYGATE_KEY", &key)
        .env("KEYGATE_LIMITED_KEY", &limited)
        .output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    println!("{out}");
    assert!(run.status.success(), "the OpenAI SDK script failed:\n{out}\n{err}");
    assert!(out.contains("openai sdk: all checks passed"));
    gateway.stop();
}

/// Issue 8: per-key usage for the day, week and month; Prometheus metrics; and nothing emitted
/// (responses, metrics, logs) contains a key.
#[test]
fn usage_and_metrics_name_keys_by_id_only() {
    let mut gateway = Gateway::start(&[]);
    let (token, id) = gateway.create_key(key_json("watched", json!({ "allowed_models": ["gpt-4o-mini", "*:free"] })));
    for _ in 0..2 {
        assert_eq!(gateway.chat(&token, "gpt-4o-mini", "Hello there").status, 200);
    }
    assert_eq!(gateway.chat(&token, "gpt-4o", "Hello there").status, 403);

    let usage = gateway.get(&format!("/v1/management/keys/{id}/usage"), Some(&gateway.admin()));
    assert_eq!(usage.status, 200, "{}", usage.body);
    let body = usage.json();
    assert_eq!(body["id"], id.as_str());
    for period in ["day", "week", "month"] {
        let p = &body["usage"][period];
        assert_eq!(p["requests"], 2, "{period}: {p}");
        assert_eq!(p["denials"], json!({ "model_not_allowed": 1 }), "{period}");
        assert_eq!(p["tokens"], 42, "{period}");
        assert!(p["spend_usd"].as_str().unwrap() != "0.00", "{period}: {p}");
    }
    assert!(body["last_used_at"].as_str().unwrap().ends_with('Z'));
    // A standard key may not read usage: it lacks the management scope.
    assert_eq!(gateway.get(&format!("/v1/management/keys/{id}/usage"), Some(&token)).status, 403);
    // An unknown key is a 404, as for GET.
    assert_eq!(gateway.get("/v1/management/keys/ZZZZZZZZZZZZZZZZ/usage", Some(&gateway.admin())).status, 404);

    let metrics = gateway.get("/metrics", Some(&gateway.admin()));
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    assert!(metrics.body.contains("keygate_decisions_total{outcome=\"allowed\"}"), "{}", metrics.body);
    assert!(metrics.body.contains("keygate_decisions_total{outcome=\"model_not_allowed\"} 1"), "{}", metrics.body);
    assert!(metrics.body.contains(&format!("keygate_tokens_total{{kid=\"{id}\"}} 42")), "{}", metrics.body);
    assert!(metrics.body.contains("keygate_check_duration_seconds"), "{}", metrics.body);
    assert_eq!(gateway.get("/metrics", Some(&token)).status, 403);

    // Everything emitted: no token, and no piece of one long enough to matter.
    let admin = gateway.admin();
    let secrets = [token.as_str(), &token[token.len() - 20..], admin.as_str(), &admin[admin.len() - 20..]];
    for text in [usage.body.as_str(), metrics.body.as_str()] {
        for s in secrets {
            assert!(!text.contains(s), "an answer contains a secret");
        }
    }
    let (out, err) = gateway.stop(); // stop() also checks the logs for the keys it created
    for s in secrets {
        assert!(!out.contains(s) && !err.contains(s), "the logs contain a secret");
    }
}

// ---- shared and persistent backends (issue 7) ----------------------------------------------------

/// PostgreSQL for the shared-backend tests (`KEYGATE_POSTGRES_URL`, default the local server).
fn postgres_url() -> String {
    std::env::var("KEYGATE_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Redis for the shared-backend tests (`KEYGATE_REDIS_URL`, default the local server).
fn redis_url() -> String {
    std::env::var("KEYGATE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// Whether a test that needs `service` at `addr` can run. Without it the test is reported as not
/// run, except in CI (`KEYGATE_CI` set), where a missing service fails the test.
fn service_up(service: &str, url: &str) -> bool {
    let authority = url.split("://").nth(1).unwrap_or("").split(['/', '?']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let up = std::net::ToSocketAddrs::to_socket_addrs(host_port)
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if !up {
        assert!(
            std::env::var_os("KEYGATE_CI").is_none(),
            "{service} is not reachable at {host_port}, and CI may not skip"
        );
        eprintln!("not run: {service} unreachable at {host_port} (start it to run this test; see the README)");
    }
    up
}

/// A fresh PostgreSQL database for one test, dropped when the value is.
struct Database {
    admin_url: String,
    name: String,
}

impl Database {
    fn create() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("keygate_e2e_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let db = Self { admin_url: postgres_url(), name };
        db.execute(&format!("CREATE DATABASE {}", db.name));
        db
    }

    fn url(&self) -> String {
        let (base, _) = self.admin_url.rsplit_once('/').unwrap();
        format!("{base}/{}", self.name)
    }

    fn execute(&self, sql: &str) {
        use sqlx::Connection;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut connection = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut connection).await.unwrap();
            connection.close().await.unwrap();
        });
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        self.execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

/// Two gateways on one PostgreSQL database and one Redis: a rate limit holds across both
/// exactly, and a key revoked through one is refused by the other once the change notice arrives.
#[test]
fn two_gateways_on_postgres_and_redis_share_limits_and_revocations() {
    if !service_up("PostgreSQL", &postgres_url()) || !service_up("Redis", &redis_url()) {
        return;
    }
    let db = Database::create();
    let args = ["--store", &db.url(), "--limits", &redis_url()].map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = Gateway::start(&args);
    // The second gateway shares the first one's pepper and admin key files.
    let b = Gateway::start_in(a.dir.clone(), &args);
    assert_eq!(a.admin(), b.admin());

    // A key of 6 requests a minute, used from both gateways at once: exactly 6 pass.
    let (token, _) = a.create_key(key_json("shared", json!({ "rate_limit": { "requests_per_minute": 6 } })));
    let (a, b) = (Arc::new(a), Arc::new(b));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let gateway = Arc::clone(if i % 2 == 0 { &a } else { &b });
            let token = token.clone();
            thread::spawn(move || (0..5).map(|_| gateway.get("/v1/models", Some(&token)).status).collect::<Vec<_>>())
        })
        .collect();
    let statuses: Vec<u16> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 6, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 14, "{statuses:?}");
    let (Ok(mut a), Ok(b)) = (Arc::try_unwrap(a), Arc::try_unwrap(b)) else { unreachable!() };

    // Revocation: B has the key cached from using it; A revokes it; B refuses it as soon as
    // PostgreSQL's notification reaches B. That comes on B's own connection, so it may arrive
    // just after A's reply (a CI run once saw B's next request still allowed): B must refuse
    // within a bound far below the cache's TTL (the fallback if notifications were lost), and
    // from then on every time.
    let (token, id) = a.create_key(key_json("to revoke", json!({})));
    for _ in 0..3 {
        assert_eq!(b.get("/v1/models", Some(&token)).status, 200);
    }
    a.patch_key(&id, json!({ "status": "revoked" }));
    let revoked_at = Instant::now();
    while b.get("/v1/models", Some(&token)).status == 200 {
        assert!(revoked_at.elapsed() < Duration::from_secs(2), "B still allows a key revoked through A");
        thread::sleep(Duration::from_millis(5));
    }
    for _ in 0..3 {
        b.get("/v1/models", Some(&token)).assert_error(401, "authentication_error", "revoked_api_key");
    }
    // And a key created through B works through A at once (its absence was cached by A).
    assert_eq!(a.get("/v1/models", Some("aistats_v1_sk_AAAAAAAAAAAAAAAA_x")).status, 401);
    let mut b = b;
    let (token, _) = b.create_key(key_json("from b", json!({})));
    assert_eq!(a.get("/v1/models", Some(&token)).status, 200);
    b.stop_keeping_files();
    a.stop();
}

/// The SQLite store keeps keys, their changes and the admin key across restarts.
#[test]
fn the_sqlite_store_keeps_keys_across_restarts() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gateway-sqlite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.join("keys.db");
    let store = store.to_str().unwrap();
    let mut gateway = Gateway::start_in(dir.clone(), &["--store", store]);
    let (token, id) = gateway.create_key(key_json("kept", json!({ "allowed_models": ["gpt-4o-mini"] })));
    let (revoked, revoked_id) = gateway.create_key(key_json("revoked", json!({})));
    gateway.patch_key(&revoked_id, json!({ "status": "revoked" }));
    let secrets = gateway.secrets.clone();
    gateway.stop_keeping_files();

    let mut gateway = Gateway::start_in(dir, &["--store", store]);
    gateway.secrets = secrets;
    assert_eq!(gateway.chat(&token, "gpt-4o-mini", "hi").status, 200);
    gateway.chat(&token, "gpt-4o", "hi").assert_error(403, "permission_error", "model_not_allowed");
    gateway.chat(&revoked, "gpt-4o-mini", "hi").assert_error(401, "authentication_error", "revoked_api_key");
    let listed = gateway.get("/v1/management/keys", Some(&gateway.admin())).json();
    assert_eq!(listed["total"], 3, "{listed}"); // the admin key and the two keys
    assert_eq!(gateway.get(&format!("/v1/management/keys/{id}"), Some(&gateway.admin())).json()["key"]["name"], "kept");
    gateway.stop();
}

/// A persistent store without a pepper file is refused: no stored key would verify after a
/// restart.
#[test]
fn a_persistent_store_needs_a_pepper_file() {
    let refused = run_briefly(&[OsStr::new("--store"), OsStr::new("keys.db")]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--pepper-file"));
}

/// A child process killed when dropped (also when a test panics).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Redis stopped while the gateway runs: requests of keys with limits fail closed with
/// `503 auth_unavailable`; Redis started again: they pass again, with no restart of the gateway.
#[test]
fn a_redis_restart_fails_closed_then_recovers() {
    if !service_up("Redis", &redis_url()) {
        return;
    }
    // A private Redis on a free port, so that stopping it disturbs no other test.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start_redis = || {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed with Redis");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Killed(child);
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start on port {port}");
    };
    let redis = start_redis();
    let mut gateway = Gateway::start(&["--limits", &format!("redis://127.0.0.1:{port}/")]);
    let limits =
        json!({ "rate_limit": { "requests_per_minute": 1000 }, "spend_cap": { "amount_usd": 100, "period": "month" } });
    let (token, id) = gateway.create_key(key_json("limited", limits));
    assert_eq!(gateway.chat(&token, "gpt-4o-mini", "hi").status, 200);
    let spent = || -> u64 {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let mut conn = client.get_connection().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("keygate:{{{id}}}:spend:*")).query(&mut conn).unwrap();
        keys.iter().map(|k| redis::cmd("GET").arg(k).query::<u64>(&mut conn).unwrap()).sum()
    };
    let before = spent();
    assert!(before > 0, "the first reply's spend is recorded");

    // A stream admitted before Redis goes away ends while it is away: its spend cannot be
    // recorded then, and must not be lost.
    let (status, mut events) = gateway.stream(&token, "gpt-4o", &long_message(40));
    assert_eq!(status, 200);
    assert!(events.next().is_some());
    drop(redis);
    assert_eq!(events.rest().last().map(String::as_str), Some("[DONE]"));
    for _ in 0..3 {
        gateway.chat(&token, "gpt-4o-mini", "hi").assert_error(503, "service_unavailable_error", "auth_unavailable");
    }
    // A key without limits needs no limit state: it is not affected.
    let (free, _) = gateway.create_key(key_json("unlimited", json!({})));
    assert_eq!(gateway.chat(&free, "gpt-4o-mini", "hi").status, 200);

    let redis = start_redis();
    let mut recovered = false;
    for _ in 0..50 {
        if gateway.chat(&token, "gpt-4o-mini", "hi").status == 200 {
            recovered = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(recovered, "the gateway did not recover after Redis came back");
    assert_eq!(gateway.chat(&token, "gpt-4o-mini", "hi").status, 200);
    // The stream's spend was sent again once Redis was back (a fresh Redis: only what was
    // recorded since), with the two chats after it.
    let after = spent();
    let (chat_cost, stream_cost) = (before, after);
    assert!(stream_cost > 2 * chat_cost, "the stream's spend was lost: {after} micro-USD recorded since the restart");
    drop(redis);
    gateway.stop();
}
