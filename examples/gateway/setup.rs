//! The operator's secrets on disk, each in a file only its owner may read (mode 0600): the
//! pepper, and the operator's management key.

use std::error::Error;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use keygate::{
    AsyncKeyStore, KeyId, KeyKind, KeyRecord, KeyShape, OsRng, Pepper, PepperId, Scopes, Timestamp, Verifier,
};
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
        check_private(path)?;
        let text = Zeroizing::new(fs::read_to_string(path)?);
        let pepper = Pepper::from_encoded(PepperId(1), &text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("pepper: loaded from {}", path.display());
        return Ok(pepper);
    }
    let bytes = random_bytes()?;
    let mut hex = Zeroizing::new(String::with_capacity(65));
    for b in bytes.iter() {
        hex.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        hex.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    hex.push('\n');
    write_private(path, hex.as_bytes())?;
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
        check_private(path)?;
        let token = Zeroizing::new(fs::read_to_string(path)?);
        record_of(verifier, token.trim(), now).ok_or_else(|| {
            format!(
                "{} does not hold a management key of this gateway's format; move it away to mint a new one",
                path.display()
            )
        })?
    } else {
        let (key, record) = verifier.issue(&mut OsRng, KeyKind::MANAGEMENT, now)?;
        let mut line = Zeroizing::new(key.token().expose_secret().to_owned());
        line.push('\n');
        write_private(path, line.as_bytes())?;
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

/// Creates `path` (never replacing a file) readable and writable by its owner only.
fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
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
