//! HMAC-SHA256 (RFC 2104) continued from a pepper's precomputed inner and outer SHA-256 states,
//! so that a verification runs two compressions and no key schedule.

use sha2::block_api::compress256;
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::DIGEST_LEN;

/// The SHA-256 block size, in bytes.
const BLOCK: usize = 64;
const SHA256_IV: [u32; 8] =
    [0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19];

/// HMAC-SHA256 (RFC 2104) from the precomputed inner and outer states: the keyed state of a
/// pepper, computed once. Zeroized on drop.
#[derive(Clone)]
pub(super) struct KeyedSha256 {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl KeyedSha256 {
    pub(super) fn new(key: &[u8]) -> Self {
        let mut k = Zeroizing::new([0u8; BLOCK]);
        if key.len() > BLOCK {
            k[..DIGEST_LEN].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let pad = |byte: u8| {
            let mut block = Zeroizing::new([0u8; BLOCK]);
            for (b, k) in block.iter_mut().zip(k.iter()) {
                *b = k ^ byte;
            }
            let mut state = SHA256_IV;
            compress256(&mut state, core::slice::from_ref(&*block));
            state
        };
        Self { inner: pad(0x36), outer: pad(0x5c) }
    }

    /// `SHA256(key ^ opad || SHA256(key ^ ipad || msg))`, continuing from the saved states.
    #[inline]
    pub(super) fn mac(&self, msg: &[u8]) -> [u8; DIGEST_LEN] {
        let mut inner = self.inner;
        finish(&mut inner, msg, BLOCK);
        let mut outer = self.outer;
        finish(&mut outer, &words_to_bytes(&inner), BLOCK);
        words_to_bytes(&outer)
    }
}

impl Drop for KeyedSha256 {
    fn drop(&mut self) {
        self.inner.zeroize();
        self.outer.zeroize();
    }
}

/// Hashes `msg` into `state`, which has already absorbed `prior` bytes (whole blocks), and
/// applies SHA-256's final padding. A tail under 56 bytes (every secret of the default formats,
/// and the outer hash) takes one block; a longer one two.
#[inline]
fn finish(state: &mut [u32; 8], msg: &[u8], prior: usize) {
    let (blocks, rest) = msg.as_chunks::<BLOCK>();
    if !blocks.is_empty() {
        compress256(state, blocks);
    }
    let bits = ((prior + msg.len()) as u64).wrapping_mul(8).to_be_bytes();
    if rest.len() < BLOCK - 8 {
        let mut block = [0u8; BLOCK];
        block[..rest.len()].copy_from_slice(rest);
        block[rest.len()] = 0x80;
        block[BLOCK - 8..].copy_from_slice(&bits);
        compress256(state, core::slice::from_ref(&block));
        wipe(&mut block);
    } else {
        let mut tail = [[0u8; BLOCK]; 2];
        let flat = tail.as_flattened_mut();
        flat[..rest.len()].copy_from_slice(rest);
        flat[rest.len()] = 0x80;
        flat[2 * BLOCK - 8..].copy_from_slice(&bits);
        compress256(state, &tail);
        wipe(tail.as_flattened_mut());
    }
}

/// Clears a stack buffer that held message bytes (the secret). `black_box` keeps the stores
/// from being optimised away, without `zeroize`'s byte-wise volatile writes, on a buffer that the
/// next stack frame overwrites anyway.
#[inline]
fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    core::hint::black_box(buf);
}

fn words_to_bytes(words: &[u32; 8]) -> [u8; DIGEST_LEN] {
    let mut out = [0u8; DIGEST_LEN];
    for (o, w) in out.chunks_exact_mut(4).zip(words) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231() {
        // RFC 4231 test cases 1, 2, 6 and 7 (HMAC-SHA-256).
        let cases: [(&[u8], &[u8], &str); 4] = [
            (&[0x0b; 20], b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
            (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
            (&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First", "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
            (&[0xaa; 131], b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.", "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
        ];
        for (key, msg, want) in cases {
            let got = KeyedSha256::new(key).mac(msg);
            let hex: alloc::string::String = got.iter().map(|b| alloc::format!("{b:02x}")).collect();
            assert_eq!(hex, want);
        }
    }
}
