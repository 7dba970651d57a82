//! Issue a key, verify it, and see every 401 a bad request gets.
//!
//! `cargo run --example quickstart`
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::time::Duration;

use keygate::format::SelectorFormat;
use keygate::http::bearer_token;
use keygate::secret::{PepperId, Peppers};
use keygate::{KeyKind, KeyStatus, KeyStore, MemoryStore, OsRng, Pepper, Timestamp, Verifier};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The pepper comes from configuration (a file, an environment variable), never from the store.
    let pepper =
        Pepper::from_encoded(PepperId(1), "6b657967617465207175696b7374617274207065707065722c203332206279746573")?;
    let verifier = Verifier::new(SelectorFormat::new("aistats")?, Peppers::new(pepper));
    let store = MemoryStore::new();
    let now = Timestamp::now();

    // Issue a key: the token is shown once; only its digest is stored.
    let (key, mut record) = verifier.issue(&mut OsRng, KeyKind::STANDARD, now)?;
    record.name = "quickstart".into();
    let record = store.insert(record)?;
    let token = key.token().expose_secret();
    println!("issued {} (id {}, shown once)", key.display_prefix(), key.id());

    // A request: `Authorization: Bearer <token>`.
    let header = format!("Bearer {token}");
    let verified = verifier.authenticate(&store, bearer_token(Some(header.as_bytes()))?, now)?;
    println!("allowed: {:?}", verified);

    // Each way a request is refused with 401.
    let show = |what: &str, header: Option<&[u8]>, now: Timestamp| {
        let outcome = bearer_token(header).and_then(|t| verifier.authenticate(&store, t, now).map(|_| ()));
        match outcome {
            Ok(()) => println!("{what:<28} allowed"),
            Err(d) => println!("{what:<28} {} {:<18} {}", d.status(), d.code(), d.code().message()),
        }
    };
    show("no Authorization header", None, now);
    show("another scheme", Some(b"Basic dXNlcjpwYXNz"), now);
    let mut tampered = token.to_owned();
    let last = if tampered.ends_with('A') { "E" } else { "A" };
    tampered.replace_range(tampered.len() - 1.., last);
    show("a wrong secret", Some(format!("Bearer {tampered}").as_bytes()), now);
    show("not a key at all", Some(b"Bearer sk-123"), now);

    let mut expiring = KeyStore::get(&store, &record.id)?.map(|r| (*r).clone()).ok_or("stored")?;
    expiring.expires_at = Some(now.saturating_add(Duration::from_secs(60)));
    let rev = expiring.revision;
    store.replace(rev, expiring)?;
    show("an expired key", Some(header.as_bytes()), now.saturating_add(Duration::from_secs(61)));

    for status in [KeyStatus::Disabled, KeyStatus::Revoked] {
        let mut changed = KeyStore::get(&store, &record.id)?.map(|r| (*r).clone()).ok_or("stored")?;
        changed.status = status;
        let rev = changed.revision;
        store.replace(rev, changed)?;
        show(&format!("a {status} key"), Some(header.as_bytes()), now);
    }
    Ok(())
}
