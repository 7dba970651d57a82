//! The PostgreSQL and Redis servers the backend tests run against. As in redis-rs's own test
//! suite, the tests start throwaway servers themselves: `cargo test` needs the packages
//! installed, not running.
//!
//! # Where a server comes from
//!
//! Each is set up once per test binary, by the first test that asks.
//!
//! - **PostgreSQL** ([`postgres_url`]): `KEYGATE_POSTGRES_URL` when it is set (a database in
//!   which the tests may create schemas and databases). Otherwise a temporary cluster: `initdb`
//!   into a temporary directory (trust authentication, superuser `postgres`, a database `test`),
//!   then `postgres` on a free loopback port, its Unix socket in that directory too, with fsync
//!   off. The server binaries are looked for in the directory `KEYGATE_POSTGRES_BIN` names when
//!   it is set, and only there; otherwise on `PATH`, then in `/usr/lib/postgresql/<newest>/bin`
//!   (Debian, Ubuntu), `/usr/pgsql-<newest>/bin` (Fedora, RHEL) and `/usr/local/pgsql/bin`.
//!   PostgreSQL refuses to run as root: when the tests do, the cluster runs as `nobody`
//!   (through util-linux's `setpriv`), in a directory that belongs to `nobody`.
//! - **Redis** ([`redis_url`]): `KEYGATE_REDIS_URL` when it is set; otherwise `redis-server` on
//!   a free loopback port with persistence off (`--save "" --appendonly no`) and a temporary
//!   working directory. `redis-server` (and `redis-cli` for a cluster) is looked for in
//!   `KEYGATE_REDIS_BIN` when it is set, and only there; otherwise on `PATH`.
//! - **A Redis Cluster** ([`redis_cluster_urls`]): `KEYGATE_REDIS_CLUSTER_URLS` (comma
//!   separated) when it is set; otherwise three `redis-server --cluster-enabled yes` nodes on
//!   free ports joined by `redis-cli --cluster create` (three masters, no replicas).
//! - **A Redis of the test's own** ([`redis_server`]), for a test that stops and restarts it.
//!
//! Without a URL, the machine's own servers (ports 5432 and 6379) are never looked at. A URL that
//! is set but does not answer fails the test that asks for it; so do binaries that are installed
//! but cannot start a server (the message carries the server's log). When neither a URL nor the
//! binaries are there, the test returns early and the binary says so once, on its real standard
//! error (libtest captures `eprintln!`, not a direct write to `std::io::stderr()`), with the
//! command that installs what is missing. With `KEYGATE_CI` set (to anything but `0`) that is a
//! failure instead. The two `*_BIN` variables also hide installed binaries: pointing one at an
//! empty directory shows the skip.
//!
//! # How a server stops
//!
//! The test harness ends the process with `exit`, which runs no destructor of a static, so a
//! server shared by the tests cannot be stopped by `Drop`. Each server instead runs under a
//! watchdog, a short `sh` script that is the server's parent, in a process group of its own (a
//! Ctrl-C at the terminal stops the tests, and the servers then stop as below). The watchdog's
//! standard input is a pipe whose only writing end this process holds (close-on-exec, so no
//! other child inherits it); the kernel closes it when the process ends, however it ends:
//! `exit`, a panic, a signal, `SIGKILL`. The watchdog then reads end-of-file, stops the server
//! (`SIGTERM` for Redis; `SIGINT`, a fast shutdown, for PostgreSQL; `SIGKILL` if it is still
//! there 10 s later), waits for it and deletes its directory. No server outlives the test
//! binary that started it. A [`Server`] a test owns is stopped the same way when it is dropped,
//! and the drop returns once the server is gone.
#![allow(dead_code)]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

// ---- what the tests call --------------------------------------------------------------------

/// The URL of a PostgreSQL database the test may create schemas and databases in, or `None`
/// when there is no PostgreSQL (reported once; a failure in CI).
///
/// # Panics
///
/// When `KEYGATE_POSTGRES_URL` does not answer, or the installed binaries do not start a server.
pub(crate) fn postgres_url() -> Option<&'static str> {
    static FOUND: OnceLock<Result<Running, Unavailable>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        if let Some(url) = from_env(POSTGRES.url_env, 5432)? {
            return Ok(url);
        }
        let bin = POSTGRES.binaries(&["initdb", "postgres"])?;
        let server = start_postgres(&bin).map_err(Unavailable::Broken)?;
        Ok(Running { urls: vec![server.url.clone()], servers: vec![server] })
    });
    POSTGRES.settle(found, POSTGRES.url_env).map(|r| r.urls[0].as_str())
}

/// The URL of a Redis server, or `None` when there is none (reported once; a failure in CI).
///
/// # Panics
///
/// When `KEYGATE_REDIS_URL` does not answer, or `redis-server` does not start.
pub(crate) fn redis_url() -> Option<&'static str> {
    static FOUND: OnceLock<Result<Running, Unavailable>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        if let Some(url) = from_env(REDIS.url_env, 6379)? {
            return Ok(url);
        }
        let bin = REDIS.binaries(&["redis-server"])?;
        let server = start_redis(&bin, None, false).map_err(Unavailable::Broken)?;
        Ok(Running { urls: vec![server.url.clone()], servers: vec![server] })
    });
    REDIS.settle(found, REDIS.url_env).map(|r| r.urls[0].as_str())
}

/// The node URLs of a three-node Redis Cluster with every slot served, or `None` when Redis is
/// not installed (reported once; a failure in CI).
///
/// # Panics
///
/// When `KEYGATE_REDIS_CLUSTER_URLS` does not answer, or the cluster cannot be started.
pub(crate) fn redis_cluster_urls() -> Option<&'static [String]> {
    static FOUND: OnceLock<Result<Running, Unavailable>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        if let Some(urls) = std::env::var("KEYGATE_REDIS_CLUSTER_URLS").ok().filter(|u| !u.is_empty()) {
            let urls: Vec<String> = urls.split(',').map(|u| u.trim().to_owned()).collect();
            for url in &urls {
                answers(url, 6379).map_err(|e| {
                    Unavailable::Broken(format!("KEYGATE_REDIS_CLUSTER_URLS: {url} does not answer ({e})"))
                })?;
            }
            return Ok(Running { urls, servers: Vec::new() });
        }
        let bin = REDIS.binaries(&["redis-server", "redis-cli"])?;
        let servers = start_redis_cluster(&bin).map_err(Unavailable::Broken)?;
        Ok(Running { urls: servers.iter().map(|s| s.url.clone()).collect(), servers })
    });
    REDIS.settle(found, "KEYGATE_REDIS_CLUSTER_URLS").map(|r| r.urls.as_slice())
}

/// A Redis server of the caller's own, on `port` or a free port, stopped when it is dropped; or
/// `None` when `redis-server` is not installed (reported once; a failure in CI).
///
/// # Panics
///
/// When `redis-server` is installed but does not start.
pub(crate) fn redis_server(port: Option<u16>) -> Option<Server> {
    static FOUND: OnceLock<Result<PathBuf, Unavailable>> = OnceLock::new();
    let bin = REDIS.settle(FOUND.get_or_init(|| REDIS.binaries(&["redis-server"])), "")?;
    Some(start_redis(bin, port, false).unwrap_or_else(|e| panic!("{e}")))
}

/// A server running under its watchdog (see the module's documentation); dropping it stops the
/// server, deletes its directory, and returns when both are done.
#[derive(Debug)]
pub(crate) struct Server {
    /// The loopback port it listens on.
    pub(crate) port: u16,
    /// Its URL (for PostgreSQL, of the database `test`).
    pub(crate) url: String,
    dir: PathBuf,
    watchdog: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.watchdog.stdin.take()); // end-of-file: the watchdog stops the server
        let _ = self.watchdog.wait();
    }
}

// ---- found, missing, broken -----------------------------------------------------------------

/// Servers in use for the rest of the process (never dropped: see the module's documentation).
struct Running {
    urls: Vec<String>,
    servers: Vec<Server>,
}

enum Unavailable {
    /// Neither a URL nor the binaries (what was looked for, and where): a skip, or a failure in CI.
    Missing(String),
    /// A URL that does not answer, or binaries that do not start a server: a failure.
    Broken(String),
}

struct Service {
    name: &'static str,
    url_env: &'static str,
    bin_env: &'static str,
    package: &'static str,
    /// Extra places to look for the binaries, after `PATH`.
    fallbacks: fn() -> Vec<PathBuf>,
    reported: Once,
}

static POSTGRES: Service = Service {
    name: "PostgreSQL",
    url_env: "KEYGATE_POSTGRES_URL",
    bin_env: "KEYGATE_POSTGRES_BIN",
    package: "postgresql",
    fallbacks: postgres_directories,
    reported: Once::new(),
};

static REDIS: Service = Service {
    name: "Redis",
    url_env: "KEYGATE_REDIS_URL",
    bin_env: "KEYGATE_REDIS_BIN",
    package: "redis-server",
    fallbacks: Vec::new,
    reported: Once::new(),
};

impl Service {
    /// What a test gets: the value, or `None` after the one visible note; a panic in CI or
    /// when something is broken. `env` is the variable that would have named a server instead
    /// (none for a server of the test's own).
    fn settle<'a, T>(&self, found: &'a Result<T, Unavailable>, env: &str) -> Option<&'a T> {
        match found {
            Ok(value) => Some(value),
            Err(Unavailable::Broken(why)) => panic!("{why}"),
            Err(Unavailable::Missing(what)) => {
                let (unset, or_set) = match env {
                    "" => (String::new(), String::new()),
                    env => (format!("{env} is not set and "), format!(", or set {env}")),
                };
                let note = format!(
                    "the {name} tests of {binary} did not run: {unset}{what}. Install {name} with \
                     `sudo apt-get install {package}` (the tests start their own server){or_set}.",
                    name = self.name,
                    binary = test_binary(),
                    package = self.package,
                );
                assert!(!in_ci(), "{note} KEYGATE_CI is set: a missing server is a failure.");
                self.reported.call_once(|| {
                    // Straight to the process's stderr: the harness captures `eprintln!` only.
                    let _ = std::io::stderr().write_all(format!("\nSKIPPED: {note}\n").as_bytes());
                });
                None
            }
        }
    }

    /// The directory holding all of `names`: `$bin_env` alone when set, else `PATH`, else the
    /// service's usual places.
    fn binaries(&self, names: &[&str]) -> Result<PathBuf, Unavailable> {
        let (dirs, looked) = match std::env::var_os(self.bin_env).filter(|d| !d.is_empty()) {
            Some(dir) => {
                let looked = format!("in {}={}", self.bin_env, dir.to_string_lossy());
                (vec![PathBuf::from(dir)], looked)
            }
            None => {
                let mut dirs: Vec<PathBuf> =
                    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
                let fallbacks = (self.fallbacks)();
                let mut looked = "on PATH".to_owned();
                for dir in &fallbacks {
                    let _ = write!(looked, ", in {}", dir.display());
                }
                dirs.extend(fallbacks);
                (dirs, looked)
            }
        };
        for dir in dirs {
            let first = dir.join(names[0]);
            if !is_executable(&first) {
                continue;
            }
            // A link on PATH (`/usr/local/bin/initdb`) leads to the directory with the rest.
            let real = std::fs::canonicalize(&first).ok().and_then(|p| p.parent().map(Path::to_path_buf));
            for candidate in [Some(dir), real].into_iter().flatten() {
                if names.iter().all(|n| is_executable(&candidate.join(n))) {
                    return Ok(candidate);
                }
            }
        }
        let verb = if names.len() == 1 { "was" } else { "were" };
        Err(Unavailable::Missing(format!("{} {verb} not found {looked}", names.join(" and "))))
    }
}

/// PostgreSQL's server binaries are not on `PATH` in the usual packages: the newest version first.
fn postgres_directories() -> Vec<PathBuf> {
    let versions = |parent: &str, prefix: &str| -> Vec<PathBuf> {
        let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(parent)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let version =
                    name.strip_prefix(prefix)?.split('.').map(str::parse).collect::<Result<Vec<u32>, _>>().ok()?;
                Some((version, entry.path().join("bin")))
            })
            .collect();
        found.sort();
        found.into_iter().rev().map(|(_, dir)| dir).collect()
    };
    let mut dirs = versions("/usr/lib/postgresql", "");
    dirs.extend(versions("/usr", "pgsql-"));
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
    dirs
}

/// A URL from `env`, once its host answers; `None` when `env` is not set.
fn from_env(env: &str, default_port: u16) -> Result<Option<Running>, Unavailable> {
    let Some(url) = std::env::var(env).ok().filter(|u| !u.is_empty()) else { return Ok(None) };
    answers(&url, default_port).map_err(|e| {
        Unavailable::Broken(format!(
            "{env}={url} does not answer ({e}); start that server, or unset {env} to let the tests start their own"
        ))
    })?;
    Ok(Some(Running { urls: vec![url], servers: Vec::new() }))
}

/// Whether a TCP connection to the URL's host and port opens (URLs without one pass).
fn answers(url: &str, default_port: u16) -> Result<(), String> {
    let Some((_, rest)) = url.split_once("://") else { return Ok(()) };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    if host_port.is_empty() {
        return Ok(()); // a Unix socket, or a host given in the parameters
    }
    let with_port = if host_port.ends_with(']') || !host_port.contains(':') {
        format!("{host_port}:{default_port}")
    } else {
        host_port.to_owned()
    };
    let addr = with_port.to_socket_addrs().map_err(|e| e.to_string())?.next().ok_or("no address")?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map(drop).map_err(|e| e.to_string())
}

fn in_ci() -> bool {
    std::env::var_os("KEYGATE_CI").is_some_and(|v| !v.is_empty() && v != "0")
}

/// `sql_stores` for `target/debug/deps/sql_stores-0123456789abcdef`.
fn test_binary() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe.as_deref().and_then(Path::file_stem).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
        _ => stem,
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

// ---- the watchdog -----------------------------------------------------------------------------

/// `sh -c WATCHDOG watchdog <dir> <signal> <program> <args>...`: runs the server with its output
/// in `<dir>/server.log`; at end-of-file on its standard input, stops it with `<signal>` (and
/// `SIGKILL` after 10 s), waits for it and deletes `<dir>`.
const WATCHDOG: &str = r#"dir=$1 signal=$2
shift 2
"$@" </dev/null >"$dir/server.log" 2>&1 &
server=$!
read -r _ || :
kill -s "$signal" "$server" 2>/dev/null
(
    trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
    sleep 10 & sleeper=$!
    wait "$sleeper"
    kill -s KILL "$server" 2>/dev/null
) </dev/null >/dev/null 2>&1 &
killer=$!
wait "$server"
kill "$killer" 2>/dev/null
rm -rf "$dir"
"#;

/// How to start one server.
struct Launch<'a> {
    /// Its own directory, deleted when it stops.
    dir: PathBuf,
    /// The signal that stops it.
    signal: &'a str,
    program: &'a Path,
    args: Vec<OsString>,
    port: u16,
    url: String,
    /// How long it may take to become ready.
    deadline: Duration,
}

impl Server {
    /// Starts a server under a watchdog that owns its directory, then waits until `ready` says so.
    fn start(launch: Launch<'_>, ready: impl Fn(&Self) -> bool) -> Result<Self, Attempt> {
        let Launch { dir, signal, program, args, port, url, deadline } = launch;
        let watchdog = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("keygate-test-watchdog")
            .arg(&dir)
            .arg(signal)
            .arg(program)
            .args(&args)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        let watchdog = match watchdog {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(Attempt::Failed(format!("could not run /bin/sh for {}: {e}", program.display())));
            }
        };
        let server = Self { port, url, dir, watchdog };
        let started = Instant::now();
        loop {
            if ready(&server) {
                return Ok(server);
            }
            let log = server.log();
            if log.contains("Address already in use") {
                return Err(Attempt::PortTaken);
            }
            if log.contains("FATAL") || log.contains("keygate: setup failed") || started.elapsed() > deadline {
                let waited = started.elapsed().as_secs_f32();
                return Err(Attempt::Failed(format!(
                    "{} did not start on port {port} (waited {waited:.1} s); its log:\n{log}",
                    program.display()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

enum Attempt {
    /// Another process took the free port first: try another.
    PortTaken,
    Failed(String),
}

/// Tries up to three ports (a free port can be taken between its choice and the server's bind).
fn with_retries(
    fixed: Option<u16>,
    mut start: impl FnMut(u16) -> Result<Server, Attempt>,
    cluster: bool,
) -> Result<Server, String> {
    for _ in 0..3 {
        let port = match fixed {
            Some(port) => port,
            None => free_port(cluster)?,
        };
        match start(port) {
            Ok(server) => return Ok(server),
            Err(Attempt::PortTaken) if fixed.is_none() => {}
            Err(Attempt::PortTaken) => return Err(format!("port {port} is in use")),
            Err(Attempt::Failed(why)) => return Err(why),
        }
    }
    Err("no free port could be bound three times in a row".to_owned())
}

/// A loopback port nothing listens on (and, for a cluster node, its bus port, 10000 above).
fn free_port(cluster: bool) -> Result<u16, String> {
    for _ in 0..100 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("no free port: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        if !cluster {
            return Ok(port);
        }
        if port <= u16::MAX - 10_000 && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free port pair for a cluster node".to_owned())
}

/// A new private directory (mode 0700) under the system's temporary directory.
fn temp_dir(kind: &str) -> Result<PathBuf, String> {
    static N: AtomicU32 = AtomicU32::new(0);
    let base = std::env::temp_dir();
    for _ in 0..100 {
        let dir = base.join(format!("keygate-{kind}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    }
    Err(format!("cannot create a directory under {}", base.display()))
}

// ---- Redis ------------------------------------------------------------------------------------

fn start_redis(bin: &Path, port: Option<u16>, cluster: bool) -> Result<Server, String> {
    let program = bin.join("redis-server");
    let start = |port: u16| {
        let dir = temp_dir("redis").map_err(Attempt::Failed)?;
        let mut args: Vec<OsString> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            "",
            "--daemonize",
            "no",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        args.extend([OsString::from("--dir"), dir.clone().into_os_string()]);
        if cluster {
            for arg in
                ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"]
            {
                args.push(arg.into());
            }
        }
        let url = format!("redis://127.0.0.1:{port}/");
        let ready = |_: &Server| redis_command(port, &["PING"]).is_ok_and(|r| r == "PONG");
        let launch =
            Launch { dir, signal: "TERM", program: &program, args, port, url, deadline: Duration::from_secs(20) };
        Server::start(launch, ready)
    };
    with_retries(port, start, cluster)
}

fn start_redis_cluster(bin: &Path) -> Result<Vec<Server>, String> {
    let nodes = (0..3).map(|_| start_redis(bin, None, true)).collect::<Result<Vec<_>, _>>()?;
    let create = Command::new(bin.join("redis-cli"))
        .args(["--cluster", "create"])
        .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("redis-cli: {e}"))?;
    if !create.status.success() {
        return Err(format!(
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&create.stdout),
            String::from_utf8_lossy(&create.stderr)
        ));
    }
    // Every node must know that all slots are served before a test sends a command.
    let started = Instant::now();
    while !nodes
        .iter()
        .all(|n| redis_command(n.port, &["CLUSTER", "INFO"]).is_ok_and(|i| i.contains("cluster_state:ok")))
    {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the Redis Cluster did not reach cluster_state:ok within 30 s".to_owned());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(nodes)
}

/// One command over RESP to a loopback Redis: a simple or bulk string reply, or its error.
fn redis_command(port: u16, args: &[&str]) -> Result<String, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        let _ = write!(request, "${}\r\n{arg}\r\n", arg.len());
    }
    (&stream).write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end();
    match line.split_at_checked(1) {
        Some(("+" | ":", value)) => Ok(value.to_owned()),
        Some(("-", error)) => Err(error.to_owned()),
        Some(("$", len)) => {
            let len: usize = len.parse().map_err(|_| format!("unexpected reply {line:?}"))?;
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body).map_err(|e| e.to_string())?;
            body.truncate(len);
            String::from_utf8(body).map_err(|e| e.to_string())
        }
        _ => Err(format!("unexpected reply {line:?}")),
    }
}

// ---- PostgreSQL -------------------------------------------------------------------------------

/// Run as the server's user: creates the cluster and the database `test`, then becomes the server.
const POSTGRES_SCRIPT: &str = r#"bin=$1 dir=$2 port=$3
data=$dir/data
"$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C --no-sync || { echo "keygate: setup failed (initdb)"; exit 1; }
echo 'CREATE DATABASE test' | "$bin/postgres" --single -D "$data" -F postgres >/dev/null ||
    { echo "keygate: setup failed (CREATE DATABASE test)"; exit 1; }
exec "$bin/postgres" -D "$data" -p "$port" -k "$dir" -c listen_addresses=127.0.0.1 \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=32MB
"#;

fn start_postgres(bin: &Path) -> Result<Server, String> {
    let user = server_user()?;
    let start = |port: u16| {
        let dir = temp_dir("postgres").map_err(Attempt::Failed)?;
        let mut program = PathBuf::from("/bin/sh");
        let mut args: Vec<OsString> = Vec::new();
        if let Some((setpriv, uid, gid)) = &user {
            if let Err(e) = std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid)) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(Attempt::Failed(format!("cannot give {} to uid {uid}: {e}", dir.display())));
            }
            args.extend(
                [format!("--reuid={uid}"), format!("--regid={gid}"), "--clear-groups".to_owned(), "--".to_owned()]
                    .map(OsString::from),
            );
            args.push(program.into_os_string());
            program = setpriv.clone();
        }
        args.extend(["-c", POSTGRES_SCRIPT, "keygate-test-postgres"].map(OsString::from));
        args.extend([bin.as_os_str().to_owned(), dir.clone().into_os_string(), port.to_string().into()]);
        let url = format!("postgres://postgres@127.0.0.1:{port}/test");
        let ready = |server: &Server| postmaster_ready(&server.dir.join("data"), port);
        // initdb on a busy machine can take a while.
        let launch =
            Launch { dir, signal: "INT", program: &program, args, port, url, deadline: Duration::from_secs(120) };
        Server::start(launch, ready)
    };
    with_retries(None, start, false)
}

/// Whether the postmaster says it accepts connections on `port` (as `pg_ctl -w` reads it: the
/// fourth line of `postmaster.pid` is the port, the eighth the state).
fn postmaster_ready(data: &Path, port: u16) -> bool {
    let Ok(pid_file) = std::fs::read_to_string(data.join("postmaster.pid")) else { return false };
    let lines: Vec<&str> = pid_file.lines().collect();
    lines.get(3).is_some_and(|p| p.trim() == port.to_string()) && lines.get(7).is_some_and(|s| s.trim() == "ready")
}

/// When the tests run as root, PostgreSQL must not: `setpriv` and `nobody`'s uid and gid.
fn server_user() -> Result<Option<(PathBuf, u32, u32)>, String> {
    let euid = Command::new("id").arg("-u").output().ok().and_then(|o| String::from_utf8(o.stdout).ok());
    if euid.as_deref().map(str::trim) != Some("0") {
        return Ok(None);
    }
    let setpriv = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("setpriv")).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin/setpriv"), PathBuf::from("/bin/setpriv")])
        .find(|p| is_executable(p))
        .ok_or(
            "the tests run as root, and PostgreSQL refuses to: setpriv (util-linux) is needed to run it as nobody",
        )?;
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let (uid, gid) = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"nobody"))
        .and_then(|fields| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
        .unwrap_or((65_534, 65_534));
    Ok(Some((setpriv, uid, gid)))
}
