//! The four server examples (axum, hyper, actix-web, std only), each started as a real process
//! on a free loopback port and driven with a real HTTP client: they must answer alike, with
//! every denial's status, challenge, headers and JSON body.
//!
//! The examples are built by `cargo build --example …` from here, with the features this test
//! was built with (a no-op when `cargo test` has just built them).
#![cfg(feature = "tower")]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

const EXAMPLES: [&str; 4] = ["axum", "hyper", "actix", "std_server"];
const REALM: &str = "keygate-example";

#[test]
fn every_server_example_answers_alike() {
    for name in EXAMPLES {
        check(&Server::start(name));
    }
}

/// The std-only example parses HTTP itself: what it cannot or will not read gets a status,
/// never a panic, and the server keeps serving.
#[test]
fn the_std_server_refuses_malformed_requests_with_a_status() {
    let server = Server::start("std_server");
    let long_header = format!("GET /health HTTP/1.1\r\nx-long: {}\r\n\r\n", "a".repeat(9000));
    let many_headers = format!("GET /health HTTP/1.1\r\n{}\r\n", "x-a: b\r\n".repeat(65));
    let cases: [(&[u8], u16); 18] = [
        (b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n", 200),
        (b"GET /health?probe=1 HTTP/1.0\r\n\r\n", 200),
        (b"POST /health HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello", 405),
        (long_header.as_bytes(), 431),
        (many_headers.as_bytes(), 431),
        (b"GET /health\r\n\r\n", 400),
        (b"GET /health HTTP/2.0\r\n\r\n", 400),
        (b"GET health HTTP/1.1\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\n folded: yes\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\ncontent-length: +5\r\n\r\nhello", 400),
        (b"GET /health HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n", 400),
        (b"POST /health HTTP/1.1\r\ncontent-length: 70000\r\n\r\n", 413),
        (b"POST /health HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        (b"GET /hello HTTP/1.1\r\nauthorization: Bearer a\r\nauthorization: Bearer b\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\nx-smuggled: a\nauthorization: Bearer b\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\nx-bytes: \xff\xfe\r\n\r\n", 400),
        (b"\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\nauthorization: Bearer not_a_key\r\n\r\n", 401),
    ];
    for (request, expected) in cases {
        let mut stream = std::net::TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
        stream.write_all(request).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(request)));
        let status = answer.split(' ').nth(1).unwrap_or_default();
        assert_eq!(status, expected.to_string(), "{:?} got {answer:?}", String::from_utf8_lossy(request));
    }
    let (status, _, body) = server.get("/health", None);
    assert_eq!((status, body.as_str()), (200, "ok\n"), "still serving");
}

/// One example's expected behaviour, request by request.
fn check(server: &Server) {
    let name = server.name;
    let token = std::fs::read_to_string(&server.key_file).unwrap().trim().to_owned();
    // aistats_v1_sk_<kid>_<secret>: the printed kid is the token's, and the secret is printed nowhere.
    let parts: Vec<&str> = token.splitn(5, '_').collect();
    assert_eq!(parts.len(), 5, "{name}: a selector token");
    assert_eq!(parts[3], server.kid, "{name}: the printed kid is the demo key's");
    assert!(!server.printed.contains(parts[4]), "{name} printed the secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&server.key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{name}: the key file is private");
    }

    let (status, headers, body) = server.get("/health", None);
    assert_eq!((status, body.as_str()), (200, "ok\n"), "{name}: /health is public");
    assert!(!headers.contains_key("www-authenticate"), "{name}");
    assert_eq!(server.get("/nowhere", None).0, 404, "{name}: an unknown path");

    let denied = server.get("/hello", None);
    expect_denial(name, &denied, 401, "missing_api_key", Some(format!("Bearer realm=\"{REALM}\"")));
    let denied = server.get("/hello", Some("Basic dXNlcjpwYXNz"));
    expect_denial(name, &denied, 401, "missing_api_key", Some(format!("Bearer realm=\"{REALM}\"")));

    let last = token.chars().last().unwrap();
    let tampered = format!("{}{}", &token[..token.len() - 1], if last == 'A' { 'B' } else { 'A' });
    let invalid = Some(format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""));
    expect_denial(name, &server.get("/hello", Some(&format!("Bearer {tampered}"))), 401, "invalid_api_key", invalid);

    let bearer = format!("Bearer {token}");
    let scope = Some(format!("Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"admin\""));
    expect_denial(name, &server.get("/admin", Some(&bearer)), 403, "insufficient_scope", scope);

    // Five requests a minute: a 403 and the 401s above took none of them.
    for remaining in (0..5).rev() {
        let (status, headers, body) = server.get("/hello", Some(&bearer));
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body, format!("hello, {}\n", server.kid), "{name}: the handler sees the caller's kid");
        assert_eq!(headers["x-ratelimit-limit-requests"], "5", "{name}");
        assert_eq!(headers["x-ratelimit-remaining-requests"], remaining.to_string(), "{name}");
    }
    let limited = server.get("/hello", Some(&bearer));
    expect_denial(name, &limited, 429, "rate_limited", None);
    let headers = &limited.1;
    let retry_after: u64 = headers["retry-after"].parse().unwrap();
    assert!((1..=12).contains(&retry_after), "{name}: one request comes back every 12 s, not {retry_after} s");
    let retry_after_ms: u64 = headers["retry-after-ms"].parse().unwrap();
    assert!(retry_after_ms.div_ceil(1000) == retry_after, "{name}: {retry_after_ms} ms vs {retry_after} s");
    assert_eq!(headers["x-ratelimit-limit-requests"], "5", "{name}");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0", "{name}");
    assert!(headers.contains_key("x-ratelimit-reset-requests"), "{name}: {headers:?}");

    assert_eq!(server.get("/health", None).0, 200, "{name}: /health has no limit");
}

/// A status, the response headers (names lowercase) and the body.
type Answer = (u16, HashMap<String, String>, String);

fn expect_denial(name: &str, (status, headers, body): &Answer, expected: u16, code: &str, challenge: Option<String>) {
    assert_eq!(*status, expected, "{name}: {code}: {body}");
    assert_eq!(headers.get("content-type").map(String::as_str), Some("application/json"), "{name}: {code}");
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["error"]["code"], code, "{name}: {body}");
    assert!(json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{name}: {body}");
    assert_eq!(headers.get("www-authenticate"), challenge.as_ref(), "{name}: {code}");
}

/// A running example, killed when dropped (also when a check panics).
struct Server {
    name: &'static str,
    child: Child,
    base: String,
    kid: String,
    key_file: PathBuf,
    /// Everything the example printed before it listened.
    printed: String,
    agent: ureq::Agent,
}

impl Server {
    fn start(name: &'static str) -> Self {
        static BINARIES: OnceLock<HashMap<&'static str, PathBuf>> = OnceLock::new();
        let binary = &BINARIES.get_or_init(build_examples)[name];
        // A file of its own for each server: the tests run in parallel.
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let file = format!("keygate-test-{name}-{}-{n}.key", std::process::id());
        let key_file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(file);
        let mut child = Command::new(binary)
            .args(["--addr", "127.0.0.1:0", "--key-file"])
            .arg(&key_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {}: {e}", binary.display()));
        // Read stdout on a thread so that a silent example cannot hang the test.
        let (lines, printed_lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut server =
            Self { name, child, base: String::new(), kid: String::new(), key_file, printed: String::new(), agent };

        let deadline = Instant::now() + Duration::from_secs(60);
        while server.base.is_empty() {
            let wait = deadline.saturating_duration_since(Instant::now());
            let line = printed_lines
                .recv_timeout(wait)
                .unwrap_or_else(|_| panic!("{name} did not say where it listens; it printed:\n{}", server.printed));
            if let Some(kid) = line.strip_prefix("demo key ").and_then(|rest| rest.split(':').next()) {
                server.kid = kid.to_owned();
            }
            if let Some(addr) = line.strip_prefix("listening on ") {
                server.base = addr.to_owned();
            }
            server.printed.push_str(&line);
            server.printed.push('\n');
        }
        assert!(!server.kid.is_empty(), "{name} printed no kid:\n{}", server.printed);
        server
    }

    fn get(&self, path: &str, authorization: Option<&str>) -> Answer {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let mut response = request.call().unwrap_or_else(|e| panic!("{}: GET {path}: {e}", self.name));
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap_or_default().to_owned()))
            .collect();
        let body = response.body_mut().read_to_string().unwrap();
        (response.status().as_u16(), headers, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.key_file);
    }
}

/// Builds the examples with this test's features and profile and returns their paths. Without
/// cargo at hand, falls back to the binaries next to this test's (`target/<profile>/examples`).
fn build_examples() -> HashMap<&'static str, PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let profile = profile_dir.file_name().and_then(|p| p.to_str()).unwrap_or("debug");
    let features: Vec<&str> = [
        ("default", cfg!(feature = "default")),
        ("alloc", cfg!(feature = "alloc")),
        ("std", cfg!(feature = "std")),
        ("serde", cfg!(feature = "serde")),
        ("json", cfg!(feature = "json")),
        ("tower", cfg!(feature = "tower")),
    ]
    .into_iter()
    .filter_map(|(feature, on)| on.then_some(feature))
    .collect();

    let mut cargo = Command::new(env!("CARGO"));
    cargo.current_dir(env!("CARGO_MANIFEST_DIR")).args(["build", "--message-format=json-render-diagnostics"]);
    cargo.args(["--no-default-features", "--features", &features.join(",")]);
    if profile != "debug" {
        cargo.args(["--profile", if profile == "release" { "release" } else { profile }]);
    }
    for name in EXAMPLES {
        cargo.args(["--example", name]);
    }
    let mut built = HashMap::new();
    match cargo.stderr(Stdio::inherit()).output() {
        Ok(output) if output.status.success() => {
            for line in String::from_utf8_lossy(&output.stdout).lines() {
                let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
                let target = &message["target"];
                let is_example = target["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "example"));
                if is_example
                    && let Some(path) = message["executable"].as_str()
                    && let Some(name) = EXAMPLES.into_iter().find(|n| target["name"] == *n)
                {
                    built.insert(name, PathBuf::from(path));
                }
            }
        }
        outcome => eprintln!("cargo build --example … failed ({outcome:?}); using the binaries next to this test"),
    }
    for name in EXAMPLES {
        built
            .entry(name)
            .or_insert_with(|| profile_dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX)));
        assert!(built[name].exists(), "no {} binary", built[name].display());
    }
    built
}
