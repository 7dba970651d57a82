//! Known-answer vectors. Digests and checksums were computed independently with Python's
//! `hmac`, `hashlib` and `zlib` modules; generated tokens pin the exact output for a seeded RNG,
//! so a change to generation is a visible, deliberate change.
#![cfg(feature = "std")]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use keygate::format::{KeyFormat, OpaqueFormat, SelectorFormat};
use keygate::secret::{DigestScheme, PepperId, StoredDigest};
use keygate::{KeyKind, Pepper};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `pepper = bytes(range(32))`.
fn pepper() -> Pepper {
    let key: Vec<u8> = (0u8..32).collect();
    Pepper::new(PepperId(7), &key).unwrap()
}

#[test]
fn hmac_digests_match_python() {
    let cases: [(&[u8], &str); 3] = [
        (
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "9fc0339790791953ca3e3b148c7f58bbf3fb62e6795604678b52df91a78e6e4d",
        ),
        (
            b"sk-aisa-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG",
            "6eb393ec6ccc9007ddc8793f886384ca77973850af743bb4c5f3b69da3e65c51",
        ),
        (b"", "d38b42096d80f45f826b44a9d5607de72496a415d3f4a1a8c88e3bb9da8dc1cb"),
    ];
    for (secret, want) in cases {
        let d = pepper().digest(secret);
        assert_eq!(d.scheme, DigestScheme::HmacSha256(PepperId(7)));
        assert_eq!(hex(&d.bytes), want, "secret {secret:?}");
    }
}

#[test]
fn long_pepper_and_multi_block_message() {
    // A key longer than the block is hashed first; a 200-byte message spans four blocks.
    let p = Pepper::new(PepperId(1), &[b'k'; 100]).unwrap();
    assert_eq!(hex(&p.mac(&[b'x'; 200])), "e326f00ce14194bb85e2683fe9b1a78851753f77479303f94c2c3cd1998bdda3");
}

#[test]
fn imported_sha256() {
    let d = StoredDigest::sha256_of(b"sk-aisa-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG");
    assert_eq!(d.scheme, DigestScheme::Sha256);
    assert_eq!(hex(&d.bytes), "3bccd4b9b5d13438cbc8cf0f0e8e8adec1f923d3a9113d811f011aab8404ead3");
}

#[test]
fn checksum_matches_python_crc32() {
    // zlib.crc32 of the body is 0x3f548cb7 = "19uAFz" in base62 (0-9A-Za-z), most significant first.
    let format: KeyFormat = SelectorFormat::new("aistats").unwrap().with_checksum(true).into();
    let token = "aistats_v1_sk_4f9TqWm2Lx8RbC1d_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA19uAFz";
    assert!(format.parse(token).is_ok());
    let typo = "aistats_v1_sk_4f9TqWm2Lx8RbC1d_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA19uAFy";
    assert_eq!(format.parse(typo).unwrap_err(), keygate::format::ParseError::Checksum);
}

#[test]
fn seeded_generation_is_exact() {
    let format = SelectorFormat::new("aistats").unwrap();
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    let key = format.generate(&mut rng, KeyKind::STANDARD).unwrap();
    assert_eq!(key.token().expose_secret(), SELECTOR_TOKEN);
    assert_eq!(key.id().as_str(), &SELECTOR_TOKEN[14..30]);
    assert_eq!(key.display_prefix(), &SELECTOR_TOKEN[..30]);

    let with_sum = SelectorFormat::new("aistats").unwrap().with_checksum(true);
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    let key = with_sum.generate(&mut rng, KeyKind::STANDARD).unwrap();
    assert_eq!(&key.token().expose_secret()[..SELECTOR_TOKEN.len()], SELECTOR_TOKEN);
    assert_eq!(key.token().expose_secret().len(), SELECTOR_TOKEN.len() + 6);

    let opaque = OpaqueFormat::new("sk-aisa-").unwrap();
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    let key = opaque.generate(&mut rng).unwrap();
    assert_eq!(key.token().expose_secret(), OPAQUE_TOKEN);
    assert_eq!(key.display_prefix(), &OPAQUE_TOKEN[..12]);
}

const SELECTOR_TOKEN: &str = "aistats_v1_sk_w0MwPky3KxZ0mtxo_N4QpDGBrBP3AcgQAyWHjZrbqFNQR_MU96k9EybtNdAg";
const OPAQUE_TOKEN: &str = "sk-aisa-t8fCYj46q40FZfewmKQHBzmH6F1Fs8aEiULtovvMeav";
