//! A short ASCII string stored inline: the storage of ids, kinds, prefixes and versions, so that
//! each is `Copy` and a format needs no allocation.

/// A short ASCII string stored inline (no allocation).
#[derive(Clone, Copy, Eq, PartialOrd, Ord)]
pub(super) struct Inline<const N: usize> {
    pub(super) len: u8,
    pub(super) bytes: [u8; N],
}

/// Equality without an early exit on the length: an id comparison on the verification path
/// takes the same time whether or not the lengths match (unused bytes are always zero).
impl<const N: usize> PartialEq for Inline<N> {
    fn eq(&self, other: &Self) -> bool {
        (self.len == other.len) & (self.bytes == other.bytes)
    }
}

impl<const N: usize> core::hash::Hash for Inline<N> {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl<const N: usize> Inline<N> {
    pub(super) fn new(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() > N || !b.is_ascii() {
            return None;
        }
        let mut bytes = [0; N];
        bytes[..b.len()].copy_from_slice(b);
        Some(Self { len: u8::try_from(b.len()).ok()?, bytes })
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub(super) fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked in `new`).
        core::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}
