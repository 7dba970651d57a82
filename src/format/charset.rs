//! The alphabets tokens are written in and the byte checks that parsing runs on them: character
//! classes tested sixteen bytes at a time, prefix comparison and base64url canonical endings.

/// The base62 alphabet of kids, opaque bodies and checksums.
pub(crate) const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Character classes, one bit each, for [`all_in`].
pub(super) const C_BASE62: u8 = 1;
pub(super) const C_B64URL: u8 = 2;
pub(super) const C_B64TOKEN: u8 = 4;
pub(super) const C_ID: u8 = 8;

/// `b` without the short `prefix`, compared inline (a prefix is at most 32 bytes; a `memcmp`
/// call costs more than the comparison).
#[inline]
pub(super) fn strip<'b>(b: &'b [u8], prefix: &[u8]) -> Option<&'b [u8]> {
    let (head, rest) = b.split_at_checked(prefix.len())?;
    head.iter().zip(prefix).fold(true, |eq, (x, y)| eq & (x == y)).then_some(rest)
}

/// Whether byte `b` is in class `C`, by range comparisons the compiler turns into vector
/// instructions (the class is a constant, so the tests it does not need fold away).
#[inline(always)]
const fn in_class<const C: u8>(b: u8) -> bool {
    let alnum = (b.wrapping_sub(b'A') < 26) | (b.wrapping_sub(b'a') < 26) | (b.wrapping_sub(b'0') < 10);
    let url = (C & (C_B64URL | C_B64TOKEN | C_ID) != 0) & ((b == b'-') | (b == b'_'));
    let token = (C & C_B64TOKEN != 0) & ((b == b'.') | (b == b'~') | (b == b'+') | (b == b'/'));
    alnum | url | token
}

/// Whether every byte of `bytes` is in class `C`: branch-free, sixteen lanes at a time (the
/// compiler makes each chunk a handful of vector compares, cheaper than a table lookup per
/// byte). The last sixteen bytes are checked as one more chunk, overlapping the
/// previous one, so there is no scalar tail.
#[inline(always)]
pub(super) fn all_in<const C: u8>(bytes: &[u8]) -> bool {
    let Some(last) = bytes.last_chunk::<16>() else {
        return bytes.iter().fold(true, |ok, &b| ok & in_class::<C>(b));
    };
    let (chunks, _) = bytes.as_chunks::<16>();
    let mut bad = [0u8; 16];
    for chunk in chunks.iter().chain(core::iter::once(last)) {
        for (lane, &b) in bad.iter_mut().zip(chunk) {
            *lane |= u8::from(!in_class::<C>(b));
        }
    }
    bad.iter().fold(0, |acc, &lane| acc | lane) == 0
}

/// Whether `t` is an RFC 6750 `b64token`:
/// `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
#[inline]
pub(crate) fn is_b64token(t: &[u8]) -> bool {
    let unpadded = t.iter().rposition(|&c| c != b'=').map_or(0, |i| i + 1);
    unpadded > 0 && all_in::<C_B64TOKEN>(&t[..unpadded])
}

/// The 6-bit value of each base64url character (0 for other bytes, which are refused earlier).
const B64URL_VALUE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 64 {
        let c = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[i];
        #[allow(clippy::cast_possible_truncation)] // i < 64
        let v = i as u8;
        t[c as usize] = v;
        i += 1;
    }
    t
};

/// Whether the last character of a canonical unpadded base64url encoding of `n` bytes has its
/// unused low bits zero (so each byte string has exactly one accepted spelling).
pub(super) fn canonical_b64url_end(secret: &[u8], n: usize) -> bool {
    let unused_bits = match n % 3 {
        1 => 4,
        2 => 2,
        _ => 0,
    };
    secret.last().is_some_and(|&c| B64URL_VALUE[usize::from(c)] & ((1 << unused_bits) - 1) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector classifier agrees with a per-byte reference for every class, every byte
    /// value in every position, and lengths around the sixteen-byte chunks (the tail, the
    /// overlapping last chunk, and inputs shorter than a chunk).
    #[test]
    fn all_in_agrees_with_the_reference() {
        fn reference(c: u8, b: u8) -> bool {
            let url = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
            match c {
                C_BASE62 => b.is_ascii_alphanumeric(),
                C_B64URL | C_ID => url,
                _ => url || matches!(b, b'.' | b'~' | b'+' | b'/'),
            }
        }
        fn check<const C: u8>(bytes: &[u8]) {
            let want = bytes.iter().all(|&b| reference(C, b));
            assert_eq!(all_in::<C>(bytes), want, "class {C} on {bytes:?}");
        }
        for len in 0..=49 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = alloc::vec![b'A'; len];
                    bytes[at] = b;
                    check::<C_BASE62>(&bytes);
                    check::<C_B64URL>(&bytes);
                    check::<C_B64TOKEN>(&bytes);
                    check::<C_ID>(&bytes);
                }
            }
        }
    }
}
