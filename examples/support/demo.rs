//! What the four server examples (`axum`, `hyper`, `actix`, `std_server`) share: their flags, and
//! the demo key each issues at start-up. Nothing here is specific to a framework.
//!
//! ```text
//! --addr HOST:PORT   where to listen (each example has its own loopback port; port 0 picks a free one)
//! --key-file PATH    where the demo key's token goes (default: keygate-<example>.key in the temp dir)
//! ```
//!
//! The demo key may call `GET /hello` (it has scope `hello:read`) five times a minute; it lacks
//! the scope `GET /admin` requires. Its token is written to the key file, created afresh with
//! mode 0600 on Unix, and printed nowhere: the examples print its kid and the file's path.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use keygate::{KeyGate, KeyId, KeyKind, KeyStore, OsRng, Pepper, Scopes, Timestamp};

/// The examples' error type.
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// The realm named in the examples' `WWW-Authenticate` challenges.
pub(crate) const REALM: &str = "keygate-example";
/// The scope `GET /hello` requires; the demo key has it.
pub(crate) const HELLO_SCOPE: &str = "hello:read";
/// The scope `GET /admin` requires; the demo key lacks it (`403 insufficient_scope`).
pub(crate) const ADMIN_SCOPE: &str = "admin";
/// The demo key's rate limit.
const REQUESTS_PER_MINUTE: u32 = 5;

/// The parsed flags, and keygate holding the demo key.
pub(crate) struct Demo {
    /// Where to listen.
    pub(crate) addr: SocketAddr,
    /// keygate in its embedded stores, holding the demo key.
    pub(crate) keys: KeyGate,
    /// What to tell the user once the server listens.
    pub(crate) key: DemoKey,
}

/// The demo key's public facts: its kid and where its token is.
pub(crate) struct DemoKey {
    kid: KeyId,
    key_file: PathBuf,
}

/// Reads the flags, issues the demo key and writes its token to the key file.
pub(crate) fn start(example: &str, default_addr: &str) -> Result<Demo> {
    let mut addr = default_addr.parse()?;
    let mut key_file = std::env::temp_dir().join(format!("keygate-{example}.key"));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().ok_or("--addr needs HOST:PORT")?.parse()?,
            "--key-file" => key_file = args.next().ok_or("--key-file needs a path")?.into(),
            "-h" | "--help" => {
                println!("usage: {example} [--addr HOST:PORT (default {default_addr})] [--key-file PATH]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)").into()),
        }
    }

    // A real server loads its pepper from configuration; a random one suits a key store that
    // lives only as long as the process.
    let mut pepper = [0u8; 32];
    getrandom::fill(&mut pepper)?;
    let keys = KeyGate::new("aistats", Pepper::new(keygate::secret::PepperId(1), &pepper)?)?;

    // `KeyGate::issue` does this in an async server; these examples also serve without one.
    let (key, mut record) = keys.gate().verifier().issue(&mut OsRng, KeyKind::STANDARD, Timestamp::now())?;
    record.name = "demo".into();
    record.scopes = Scopes::parse(HELLO_SCOPE)?;
    record.rate_limit.requests_per_minute = Some(REQUESTS_PER_MINUTE);
    KeyStore::insert(keys.store(), record)?;
    write_secret(&key_file, key.token().expose_secret())?;
    Ok(Demo { addr, keys, key: DemoKey { kid: key.id(), key_file } })
}

impl DemoKey {
    /// Says where the server listens and which key to use, without the token itself.
    pub(crate) fn announce(&self, local: SocketAddr) {
        let path = self.key_file.display();
        println!("demo key {}: scope {HELLO_SCOPE}, {REQUESTS_PER_MINUTE} requests a minute", self.kid);
        println!("its token is in {path} (mode 0600; it is printed nowhere)");
        println!("try: curl -i -H \"Authorization: Bearer $(cat {path})\" http://{local}/hello");
        println!("listening on http://{local}");
    }
}

/// Writes `token` to a new file at `path` that only its owner can read.
fn write_secret(path: &Path, token: &str) -> io::Result<()> {
    // Remove any old file first: the mode applies only to a file this call creates, and
    // `create_new` refuses to follow a link planted at the path.
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    writeln!(options.open(path)?, "{token}")
}
