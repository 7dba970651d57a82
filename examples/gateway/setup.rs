//! The operator's secrets on disk, each in a file only its owner may read (mode 0600): the
//! pepper, and the operator's management key.

use std::error::Error;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use keygate::record::KeyShape;
use keygate::secret::PepperId;
use keygate::{AsyncKeyStore, KeyId, KeyKind, KeyRecord, OsRng, Pepper, Scopes, Timestamp, Verifier};
use rand_core::TryRng;
use zeroize::Zeroizing;

/// The pepper: read from `path`, or created there with 32 fresh random bytes if the file does
/// not exist. Without a path, a pepper that lives only as long as the process.
pub(crate) fn pepper(path: Option<&Path>) -> Result<Pepper, Box<dyn Error>> {
    let Some(path) = path else {
        eprintln!(
            "note: no --pepper-file, so the pepper is random and kept in memory only: digests made now won't verify after a restart"
        );
        return Ok(Pepper::new(PepperId(1), &*random_bytes()?)?);
    };
    if path.exists() {
        let text = read_secret(path)?;
        let text = std::str::from_utf8(&text).map_err(|_| format!("{}: not hex text", path.display()))?;
        let pepper = Pepper::from_encoded(PepperId(1), text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("pepper: loaded from {}", path.display());
        return Ok(pepper);
    }
    let bytes = random_bytes()?;
    let mut hex = Zeroizing::new([0u8; 64]);
    for (pair, b) in hex.chunks_exact_mut(2).zip(bytes.iter()) {
        pair[0] = b"0123456789abcdef"[usize::from(b >> 4)];
        pair[1] = b"0123456789abcdef"[usize::from(b & 0xf)];
    }
    write_private(path, &[&*hex, b"\n"])?;
    println!("pepper: created {}", path.display());
    Ok(Pepper::new(PepperId(1), &*bytes)?)
}

/// Registers the operator's management key (kind `mk`, scopes `read write`, no team: it sees
/// every team) in the store.
///
/// On the first start the key is minted and written to `path`; on later starts the key in
/// `path` is registered again if the store does not have it (a store in memory starts empty),
/// so the operator keeps one key across restarts. The file is never overwritten. Returns the
/// key's id, the only part of it ever printed.
pub(crate) async fn admin_key(
    verifier: &Verifier,
    store: &impl AsyncKeyStore,
    path: &Path,
) -> Result<KeyId, Box<dyn Error>> {
    let now = Timestamp::now();
    let mut record = if path.exists() {
        let token = read_secret(path)?;
        let token = std::str::from_utf8(&token).unwrap_or("");
        record_of(verifier, token.trim(), now).ok_or_else(|| {
            format!(
                "{} does not hold a management key of this gateway's format; move it away to mint a new one",
                path.display()
            )
        })?
    } else {
        let (key, record) = verifier.issue(&mut OsRng, KeyKind::MANAGEMENT, now)?;
        // Written straight from the zeroizing token: no copy of it is made, so none is left
        // behind in freed memory.
        write_private(path, &[key.token().expose_secret().as_bytes(), b"\n"])?;
        record
    };
    record.name = "admin".to_owned();
    record.scopes = Scopes::parse("read write")?;
    if let Some(stored) = store.get(&record.id).await? {
        // A persistent store, or another gateway on the same database, has it already.
        if stored.digest != record.digest {
            return Err(format!(
                "the store holds another key with the id of {}: was it made with another --pepper-file?",
                path.display()
            )
            .into());
        }
        return Ok(stored.id);
    }
    match store.insert(record.clone()).await {
        Ok(stored) => Ok(stored.id),
        // Another gateway starting at the same time registered it first.
        Err(keygate::StoreError::Conflict) => Ok(record.id),
        Err(e) => Err(e.into()),
    }
}

/// The record of an existing management key `token`: its digest under the current pepper.
fn record_of(verifier: &Verifier, token: &str, now: Timestamp) -> Option<KeyRecord> {
    let parsed = verifier.parse(token).ok()?;
    if parsed.kind() != KeyKind::MANAGEMENT.as_str() {
        return None;
    }
    let kid = parsed.kid()?;
    let digest = verifier.peppers().digest(parsed.secret());
    let mut record = KeyRecord::new(KeyId::new(kid).ok()?, KeyShape::Selector, KeyKind::MANAGEMENT, digest, now);
    record.prefix = format!("{}_{}_{}_{kid}", parsed.prefix(), parsed.version(), parsed.kind());
    Some(record)
}

fn random_bytes() -> Result<Zeroizing<[u8; 32]>, Box<dyn Error>> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    OsRng.try_fill_bytes(&mut *bytes)?;
    Ok(bytes)
}

/// The longest secret file read: a key or a hex pepper, a line ending and some slack.
const MAX_SECRET_FILE: usize = keygate::format::MAX_TOKEN_LEN + 64;

/// Reads a secret file (after checking that only its owner may read it) into one fixed buffer
/// that is zeroized when dropped: it never grows, so no copy of the secret is left in memory
/// the allocator has taken back.
fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    check_private(path)?;
    let fail = |e: io::Error| format!("{}: {e}", path.display());
    let mut file = File::open(path).map_err(fail)?;
    let mut buf = Zeroizing::new(vec![0u8; MAX_SECRET_FILE]);
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(e)),
        }
    }
    if len == buf.len() {
        return Err(format!("{}: longer than a key or a pepper", path.display()));
    }
    buf.truncate(len);
    Ok(buf)
}

/// Creates `path` (never replacing a file) readable and writable by its owner only, holding
/// `parts` one after the other (written as they are, so a secret is never copied to join them).
fn write_private(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    for part in parts {
        file.write_all(part)?;
    }
    file.sync_all()
}

/// Refuses a secret file that others may read, as ssh does.
fn check_private(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.permissions().mode();
        if mode & 0o077 != 0 {
            let path = path.display();
            return Err(format!("{path} may be read by others (mode {:o}): run chmod 600 {path}", mode & 0o777));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The secret files leave no copy of a secret in memory the allocator has taken back: a
    //! global allocator looks into every block freed during the test for a management key.
    #![allow(unsafe_code)] // a GlobalAlloc is unsafe to implement; it only forwards to System

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicBool, Ordering};

    use keygate::format::SelectorFormat;
    use keygate::secret::{PepperId, Peppers};
    use keygate::{KeyStore, MemoryStore, Pepper, Verifier};

    /// The prefix of the keys minted here: no other block of the process holds it followed by
    /// a kid, `_` and a secret.
    const PREFIX: &[u8] = b"leakcheck_v1_mk_";
    static WATCHING: AtomicBool = AtomicBool::new(false);
    static FOUND: AtomicBool = AtomicBool::new(false);

    /// Forwards to the system allocator; while watching, reports a freed block that still holds
    /// `leakcheck_v1_mk_<16-char kid>_<secret>`.
    struct Scanning;

    // SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
    // contract; `dealloc` reads the block it is handed before forwarding, while it is still
    // allocated and `layout.size()` bytes long.
    unsafe impl GlobalAlloc for Scanning {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            if WATCHING.load(Ordering::Relaxed) {
                let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
                if holds_key(block) {
                    FOUND.store(true, Ordering::Relaxed);
                }
            }
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Scanning = Scanning;

    fn holds_key(block: &[u8]) -> bool {
        let tail = 16 + 1 + 8; // kid, `_`, and the first eight characters of a secret
        (0..block.len().saturating_sub(PREFIX.len() + tail)).any(|i| {
            block[i..].starts_with(PREFIX) && {
                let rest = &block[i + PREFIX.len()..];
                rest[..16].iter().all(u8::is_ascii_alphanumeric)
                    && rest[16] == b'_'
                    && rest[17..tail].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            }
        })
    }

    #[tokio::test]
    async fn the_admin_key_file_leaves_no_copy_of_the_key_behind() {
        let dir = std::env::temp_dir().join(format!("keygate-leakcheck-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("admin.key");
        let format = SelectorFormat::new("leakcheck").unwrap().with_kinds(&["sk", "mk"]).unwrap();
        let verifier = Verifier::new(format, Peppers::new(Pepper::new(PepperId(1), &[9; 32]).unwrap()));
        let store = MemoryStore::new();

        WATCHING.store(true, Ordering::Relaxed);
        let minted = super::admin_key(&verifier, &store, &path).await.unwrap();
        // A second start reads the key from its file and registers it again.
        let again = super::admin_key(&verifier, &MemoryStore::new(), &path).await.unwrap();
        WATCHING.store(false, Ordering::Relaxed);

        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(minted, again);
        assert!(store.get(&minted).unwrap().is_some());
        assert!(!FOUND.load(Ordering::Relaxed), "a freed block still held the management key");
    }
}
