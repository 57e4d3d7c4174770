//! Key → partition (ARCHITECTURE §4): a key's partition is a fixed-seed 64-bit hash
//! of the key modulo the partition count chosen at creation. It lives in proto because both
//! sides need it: clients route keys with it, adjudicators refuse keys they do not own.
//!
//! The hash is part of the on-disk format — every journal holds the commits of the keys it
//! owned — so it is written out here (FNV-1a 64 with a SplitMix64 finaliser for avalanche)
//! rather than taken from `std`, whose hasher may change between Rust releases. Changing it
//! requires a new manifest format version.

use crate::PartitionId;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The fixed 64-bit hash of a key.
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    // SplitMix64's finaliser: FNV alone leaves short keys poorly spread over low bits.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The partition owning `key` among `partitions` (which must be positive).
pub fn partition_of(key: &[u8], partitions: u32) -> PartitionId {
    assert!(partitions > 0, "a database has at least one partition");
    PartitionId::new((key_hash(key) % u64::from(partitions)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fixed_forever() {
        // Golden values (computed independently): if these change, existing databases would
        // route keys to other partitions.
        assert_eq!(key_hash(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(key_hash(b"a"), 0x02c0_bdbf_4814_20f8);
        assert_eq!(key_hash(b"account/17"), 0x44a6_0834_d0be_6d0f);
    }

    #[test]
    fn keys_spread_evenly_over_partitions() {
        let mut counts = [0u32; 4];
        for i in 0..40_000 {
            counts[partition_of(format!("key{i}").as_bytes(), 4).get() as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        assert_eq!(partition_of(b"anything", 1), PartitionId::new(0));
    }
}
