//! The reference gateway (`examples/gateway.rs`) as a real process on a free loopback port,
//! driven over HTTP as a client would; and the examples' binaries, built when out of date.
//! Shared by the test files that start a gateway (`mod support;`).
#![allow(dead_code)]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::{Value, json};

/// The gateway example's binary, built first if it is missing or older than its sources.
pub(crate) fn gateway_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| example_binary("gateway"))
}

/// The `import` example's binary, built as the gateway's is.
pub(crate) fn import_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| example_binary("import"))
}

/// The binary of the example `name`, built first if it is missing or older than its sources.
pub(crate) fn example_binary(name: &str) -> PathBuf {
    // The test runs from target/<profile>/deps/; examples live in target/<profile>/examples/.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let binary = profile_dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !is_fresh(&binary, name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build.args(["build", "--example", name, "--features", "full", "--manifest-path"]);
        build.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().unwrap_or_else(|e| panic!("run cargo build --example {name}: {e}"));
        assert!(status.success(), "cargo build --example {name} failed");
    }
    binary
}

/// Whether `binary` exists and is newer than every source file of the example `name` (its own
/// file and the gateway's modules, which the examples share) and of the crate.
pub(crate) fn is_fresh(binary: &Path, name: &str) -> bool {
    pub(crate) fn sources(dir: &Path, into: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() { sources(&path, into) } else { into.push(path) }
        }
    }
    let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    let Some(built) = modified(binary) else { return false };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("examples").join(format!("{name}.rs")), root.join("Cargo.toml")];
    sources(&root.join("examples").join("gateway"), &mut files);
    sources(&root.join("src"), &mut files);
    sources(&root.join("migrations"), &mut files);
    files.iter().all(|s| modified(s).is_none_or(|m| m <= built))
}

/// A running gateway, killed when dropped (also when a test panics).
pub(crate) struct Gateway {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) dir: PathBuf,
    pub(crate) stdout: Arc<Mutex<String>>,
    pub(crate) stderr: Arc<Mutex<String>>,
    pub(crate) readers: Vec<JoinHandle<()>>,
    pub(crate) agent: ureq::Agent,
    /// Every token seen in this test: none may appear in the process's output.
    pub(crate) secrets: Vec<String>,
}

/// A fresh, empty directory under the target's temporary directory.
pub(crate) fn fresh_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "gateway-e2e-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Gateway {
    /// Starts the gateway on a free loopback port with its secret files in a fresh directory.
    pub(crate) fn start(extra: &[&str]) -> Self {
        Self::start_in(fresh_dir(), extra)
    }

    /// Starts the gateway with its secret files (`admin.key`, `pepper`) in `dir`.
    pub(crate) fn start_in(dir: PathBuf, extra: &[&str]) -> Self {
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
    pub(crate) fn admin(&self) -> String {
        self.secrets[0].clone()
    }

    pub(crate) fn get(&self, path: &str, key: Option<&str>) -> Reply {
        let mut request = self.agent.get(format!("{}{path}", self.url));
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        Reply::read(request.call().unwrap())
    }

    pub(crate) fn send(&self, method: &str, path: &str, key: Option<&str>, body: &Value) -> Reply {
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

    pub(crate) fn post(&self, path: &str, key: Option<&str>, body: &Value) -> Reply {
        self.send("POST", path, key, body)
    }

    /// Creates a key with the management API (as the operator) and returns its token and id.
    pub(crate) fn create_key(&mut self, request: Value) -> (String, String) {
        let admin = self.admin();
        let reply = self.post("/v1/management/keys", Some(&admin), &request);
        assert_eq!(reply.status, 201, "{}", reply.body);
        let key = &reply.json()["key"];
        let token = key["key"].as_str().unwrap().to_owned();
        self.secrets.push(token.clone());
        (token, key["id"].as_str().unwrap().to_owned())
    }

    /// Changes a key with the management API (as the operator).
    pub(crate) fn patch_key(&self, id: &str, patch: Value) {
        let reply = self.send("PATCH", &format!("/v1/management/keys/{id}"), Some(&self.admin()), &patch);
        assert_eq!(reply.status, 200, "{}", reply.body);
    }

    pub(crate) fn chat(&self, key: &str, model: &str, message: &str) -> Reply {
        let body = json!({ "model": model, "messages": [{ "role": "user", "content": message }], "max_tokens": 64 });
        self.post("/v1/chat/completions", Some(key), &body)
    }

    /// Starts a streamed chat and returns the reply's status, headers and a reader of its events.
    pub(crate) fn stream(&self, key: &str, model: &str, message: &str) -> (u16, Events) {
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
    pub(crate) fn stop(mut self) -> (String, String) {
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

impl Gateway {
    /// [`Gateway::stop`], leaving the key files in place for another start.
    pub(crate) fn stop_keeping_files(mut self) -> (String, String) {
        self.dir = self.dir.join("nothing-to-remove");
        self.stop()
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
pub(crate) fn capture(
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
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: ureq::http::HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn read(mut response: ureq::http::Response<ureq::Body>) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.body_mut().read_to_string().unwrap();
        Self { status, headers, body }
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Asserts an OpenAI-compatible error with this status, type and code.
    #[track_caller]
    pub(crate) fn assert_error(&self, status: u16, kind: &str, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        let error = &self.json()["error"];
        assert_eq!(error["code"], code, "{}", self.body);
        assert_eq!(error["type"], kind, "{}", self.body);
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(self.header("content-type"), Some("application/json"));
    }
}

/// The server-sent events of a streamed reply.
pub(crate) struct Events(pub(crate) BufReader<Box<dyn Read + Send>>);

impl Events {
    /// The next event's data, checking the framing: one `data: ` line, then a blank line.
    pub(crate) fn next(&mut self) -> Option<String> {
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
    pub(crate) fn rest(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.next()).collect()
    }
}

/// A key request in the AI Stats JSON, with `extra` fields merged in.
pub(crate) fn key_json(name: &str, extra: Value) -> Value {
    let mut request = json!({ "name": name, "scopes": ["read", "write"], "status": "active" });
    request.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    request
}

/// A fresh PostgreSQL database for one test, dropped when the value is.
#[cfg(feature = "postgres")]
pub(crate) struct Database {
    admin_url: String,
    name: String,
}

#[cfg(feature = "postgres")]
impl Database {
    pub(crate) fn create() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("keygate_e2e_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let db = Self { admin_url: crate::support::servers::postgres_url().expect("PostgreSQL").to_owned(), name };
        db.execute(&format!("CREATE DATABASE {}", db.name));
        db
    }

    pub(crate) fn url(&self) -> String {
        let (base, _) = self.admin_url.rsplit_once('/').unwrap();
        format!("{base}/{}", self.name)
    }

    /// The one number `sql` selects, in this database.
    pub(crate) fn number(&self, sql: &str) -> i64 {
        use sqlx::Connection;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut connection = sqlx::PgConnection::connect(&self.url()).await.unwrap();
            let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut connection).await.unwrap();
            connection.close().await.unwrap();
            n
        })
    }

    pub(crate) fn execute(&self, sql: &str) {
        use sqlx::Connection;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut connection = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut connection).await.unwrap();
            connection.close().await.unwrap();
        });
    }
}

#[cfg(feature = "postgres")]
impl Drop for Database {
    fn drop(&mut self) {
        self.execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}
