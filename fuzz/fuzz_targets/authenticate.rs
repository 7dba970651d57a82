//! The whole verification stage on arbitrary tokens against a store holding real keys of both
//! shapes. Nothing but the issued tokens may ever verify.
#![no_main]

use std::sync::OnceLock;

use keygate::format::{OpaqueFormat, SelectorFormat};
use keygate::record::KeyShape;
use keygate::secret::{PepperId, Peppers};
use keygate::{KeyKind, KeyRecord, KeyStore, MemoryStore, Pepper, Timestamp, Verifier};
use libfuzzer_sys::fuzz_target;

struct World {
    verifier: Verifier,
    store: MemoryStore,
    tokens: Vec<String>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let peppers = Peppers::new(Pepper::new(PepperId(2), &[2; 32]).unwrap())
            .with_previous(Pepper::new(PepperId(1), &[1; 32]).unwrap())
            .unwrap();
        let opaque = OpaqueFormat::new("sk-aisa-").unwrap();
        let verifier = Verifier::new(SelectorFormat::new("aistats").unwrap(), peppers).with_format(opaque).unwrap();
        let store = MemoryStore::new();
        let mut rng = keygate::OsRng;
        let mut tokens = Vec::new();
        for _ in 0..4 {
            let (key, record) = verifier.issue(&mut rng, KeyKind::STANDARD, Timestamp::EPOCH).unwrap();
            tokens.push(key.token().expose_secret().to_owned());
            store.insert(record).unwrap();
            let key = opaque.generate(&mut rng).unwrap();
            let digest = verifier.peppers().digest(key.token().expose_secret().as_bytes());
            store
                .insert(KeyRecord::new(key.id(), KeyShape::Opaque, KeyKind::STANDARD, digest, Timestamp::EPOCH))
                .unwrap();
            tokens.push(key.token().expose_secret().to_owned());
        }
        World { verifier, store, tokens }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = core::str::from_utf8(data) else { return };
    let w = world();
    let ok = w.verifier.authenticate(&w.store, token, Timestamp::EPOCH).is_ok();
    assert_eq!(ok, w.tokens.iter().any(|t| t == token), "only issued tokens verify");
});
