//! Which shard a hashed key lives in, for every sharded table in the crate (the memory store,
//! its cache, the limit state and the usage counters).
//!
//! Each of those tables hashes a key once, picks the shard from the hash, and lets hashbrown
//! use the same hash inside the shard. hashbrown takes a key's position from the low bits and
//! its 7-bit tag from the top ones (bits 57 to 63; 25 to 31 on 32-bit targets). Shard bits among
//! the tag's would leave every key of a shard with nearly the same tag, and a probe would then
//! compare against several entries (for the memory store, each a record read and a likely cache
//! miss) instead of about one. So the shard comes from bits 51 to 56, which neither uses.

/// The most shards a table may have: six bits of the hash.
pub(crate) const MAX_SHARDS: usize = 64;

/// The shard of `hash` among `shards`, a power of two up to [`MAX_SHARDS`].
#[inline]
pub(crate) const fn shard_of(hash: u64, shards: usize) -> usize {
    debug_assert!(shards.is_power_of_two() && shards <= MAX_SHARDS);
    #[allow(clippy::cast_possible_truncation)] // six bits: < 64
    let bits = ((hash >> 51) & 0x3f) as usize;
    bits & (shards - 1)
}

#[cfg(test)]
mod tests {
    use super::{MAX_SHARDS, shard_of};

    #[test]
    fn the_shard_bits_are_not_the_tables_bits() {
        // Every shard is reachable.
        assert!((0..MAX_SHARDS as u64).all(|s| shard_of(s << 51, MAX_SHARDS) == usize::try_from(s).unwrap()));
        assert!((0..32u64).all(|s| shard_of(s << 51, 32) == usize::try_from(s).unwrap()));
        // Neither the tag (top 7 bits, or bits 25..32 on 32-bit targets) nor the position (low
        // bits) moves a key to another shard.
        let base = 0x0123_4567_89ab_cdef_u64;
        for bit in (0..51).chain(57..64) {
            assert_eq!(shard_of(base ^ (1 << bit), MAX_SHARDS), shard_of(base, MAX_SHARDS), "bit {bit}");
        }
    }
}
