//! Property tests for the key formats: generation and parsing agree for every configuration,
//! parsing never panics, no single-character change of a real key gets through, and nothing that
//! prints shows a secret.
#![cfg(feature = "std")]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use keygate::format::{KeyFormat, OpaqueFormat, SelectorFormat};
use keygate::http::bearer_token;
use keygate::secret::{PepperId, Peppers};
use keygate::{KeyKind, KeyStore, MemoryStore, Pepper, Timestamp, Verifier};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

fn alnum(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        proptest::sample::select(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".to_vec()),
        len,
    )
    .prop_map(|v| String::from_utf8(v).unwrap())
}

fn tag(len: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(b"abcdefghijklmnopqrstuvwxyz0123456789".to_vec()), len)
        .prop_map(|v| String::from_utf8(v).unwrap())
}

/// Any valid selector format configuration.
fn selector_format() -> impl Strategy<Value = SelectorFormat> {
    (alnum(1..=32), 1usize..=8, 1usize..=8, 1usize..=4, 12usize..=32, 32usize..=64, any::<bool>())
        .prop_flat_map(|(prefix, version_len, kind_len, kinds, kid_len, secret_bytes, checksum)| {
            (
                Just(prefix),
                tag(version_len),
                proptest::collection::btree_set(tag(kind_len), kinds),
                Just((kid_len, secret_bytes, checksum)),
            )
        })
        .prop_map(|(prefix, version, kinds, (kid_len, secret_bytes, checksum))| {
            let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
            SelectorFormat::new(&prefix)
                .unwrap()
                .with_version(&version)
                .unwrap()
                .with_kinds(&kinds)
                .unwrap()
                .with_kid_len(kid_len)
                .unwrap()
                .with_secret_bytes(secret_bytes)
                .unwrap()
                .with_checksum(checksum)
        })
}

fn verifier() -> Verifier {
    let format = SelectorFormat::new("aistats").unwrap().with_kinds(&["sk", "mk"]).unwrap();
    Verifier::new(format, Peppers::new(Pepper::new(PepperId(1), &[9; 32]).unwrap()))
        .with_format(OpaqueFormat::new("sk-aisa-").unwrap())
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn selector_generate_parse_round_trip(format in selector_format(), seed in any::<[u8; 32]>()) {
        let mut rng = ChaCha20Rng::from_seed(seed);
        for &kind in format.kinds() {
            let key = format.generate(&mut rng, kind).unwrap();
            let token = key.token().expose_secret();
            prop_assert_eq!(token.len(), format.token_len());
            let parsed = KeyFormat::from(format).parse(token).unwrap();
            prop_assert_eq!(parsed.prefix(), format.prefix());
            prop_assert_eq!(parsed.version(), format.version());
            prop_assert_eq!(parsed.kind(), kind.as_str());
            let id = key.id();
            prop_assert_eq!(parsed.kid(), Some(id.as_str()));
            prop_assert!(token.starts_with(key.display_prefix()));
            prop_assert!(!parsed.is_opaque());
        }
    }

    #[test]
    fn opaque_generate_parse_round_trip(prefix in "[a-z]{1,8}-[a-z]{0,8}-?", checksum in any::<bool>(), seed in any::<[u8; 32]>()) {
        let format = OpaqueFormat::new(&prefix).unwrap().with_checksum(checksum);
        let key = format.generate(&mut ChaCha20Rng::from_seed(seed)).unwrap();
        let parsed = KeyFormat::from(format).parse(key.token().expose_secret()).unwrap();
        prop_assert!(parsed.is_opaque());
        prop_assert_eq!(parsed.prefix(), prefix.as_str());
        prop_assert_eq!(parsed.secret(), key.token().expose_secret().as_bytes());
    }

    #[test]
    fn parse_never_panics_on_strings(s in ".{0,300}") {
        let v = verifier();
        let _ = v.parse(&s);
        let _ = bearer_token(Some(s.as_bytes()));
    }

    #[test]
    fn parse_never_panics_on_bytes(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let v = verifier();
        let _ = v.parse(&String::from_utf8_lossy(&b));
        if let Ok(token) = bearer_token(Some(&b)) {
            let _ = v.parse(token);
        }
    }

    #[test]
    fn parse_never_panics_near_valid_tokens(seed in any::<[u8; 32]>(), edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<char>(), 0u8..3), 1..6)) {
        let v = verifier();
        let key = v.primary_format().generate(&mut ChaCha20Rng::from_seed(seed), KeyKind::STANDARD).unwrap();
        let mut chars: Vec<char> = key.token().expose_secret().chars().collect();
        for (at, c, op) in edits {
            let i = at.index(chars.len() + 1);
            match op {
                0 if i < chars.len() => chars[i] = c,
                1 => chars.insert(i, c),
                _ if i < chars.len() => { chars.remove(i); }
                _ => {}
            }
        }
        let _ = v.parse(&chars.iter().collect::<String>());
    }
}

/// Every single-character change of a valid token, at every position and to every printable
/// ASCII character and a few others, is refused by parse or fails verification.
#[test]
fn every_single_character_change_is_refused() {
    let v = verifier();
    let store = MemoryStore::new();
    let now = Timestamp::from_unix_secs(1_800_000_000);
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let mut tokens = Vec::new();
    for kind in [KeyKind::STANDARD, KeyKind::MANAGEMENT] {
        let (key, record) = v.issue(&mut rng, kind, now).unwrap();
        store.insert(record).unwrap();
        tokens.push(key.token().expose_secret().to_owned());
    }
    let opaque = OpaqueFormat::new("sk-aisa-").unwrap().generate(&mut rng).unwrap();
    let digest = v.peppers().digest(opaque.token().expose_secret().as_bytes());
    store
        .insert(keygate::KeyRecord::new(opaque.id(), keygate::record::KeyShape::Opaque, KeyKind::STANDARD, digest, now))
        .unwrap();
    tokens.push(opaque.token().expose_secret().to_owned());

    let replacements: Vec<char> = (0x20u8..0x7f).map(char::from).chain(['é', '\0', '\u{2028}']).collect();
    let mut tried = 0;
    for token in &tokens {
        assert!(v.authenticate(&store, token, now).is_ok(), "the original verifies");
        for (i, original) in token.char_indices() {
            for &c in &replacements {
                if c == original {
                    continue;
                }
                let mut changed = String::with_capacity(token.len() + 2);
                changed.push_str(&token[..i]);
                changed.push(c);
                changed.push_str(&token[i + original.len_utf8()..]);
                tried += 1;
                assert!(v.authenticate(&store, &changed, now).is_err(), "changed at {i} to {c:?} still verifies");
            }
        }
    }
    assert!(tried > 15_000, "{tried}");
}

/// Nothing that prints (Debug of every type on the path, denials) shows the secret or the token.
#[test]
fn debug_output_never_contains_secrets() {
    let v = verifier();
    let store = MemoryStore::new();
    let now = Timestamp::from_unix_secs(1_800_000_000);
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let (key, record) = v.issue(&mut rng, KeyKind::STANDARD, now).unwrap();
    let record = store.insert(record).unwrap();
    let token = key.token().expose_secret().to_owned();
    let parsed = v.parse(&token).unwrap();
    let lookup = v.lookup(&parsed);
    let verified = v.verify(&parsed, &lookup, Some(&*record), now).unwrap();
    let secret = std::str::from_utf8(parsed.secret()).unwrap().to_owned();
    let pepper_key = [0xA5u8; 32];
    let pepper = Pepper::new(PepperId(3), &pepper_key).unwrap();
    let wrong = format!("{}{}", &token[..token.len() - 1], if token.ends_with('A') { 'E' } else { 'A' });
    let denial = v.authenticate(&store, &wrong, now).unwrap_err();

    let printed = [
        format!("{key:?}"),
        format!("{:?}", key.token()),
        format!("{parsed:?}"),
        format!("{lookup:?}"),
        format!("{verified:?}"),
        format!("{record:?}"),
        format!("{:?}", record.digest),
        format!("{pepper:?}"),
        format!("{:?}", v.peppers()),
        format!("{v:?}"),
        format!("{denial:?}"),
        format!("{denial}"),
        denial.code().message().to_owned(),
        format!("{store:?}"),
    ];
    let pepper_hex: String = pepper_key.iter().map(|b| format!("{b:02x}")).collect();
    for text in &printed {
        for window in secret.as_bytes().windows(8) {
            let w = std::str::from_utf8(window).unwrap();
            assert!(!text.contains(w), "{text} contains part of the secret");
        }
        assert!(!text.contains(&wrong[31..]), "{text} contains the presented token");
        assert!(!text.contains(&pepper_hex[..16]) && !text.contains("165, 165"), "{text} shows the pepper");
    }
    // The public parts do print.
    assert!(printed[0].contains(key.id().as_str()));
}
