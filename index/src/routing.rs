//! Routing documents to shards.
//!
//! A document goes to shard `murmur3_x86_32(utf8(_id), seed 0) mod number_of_shards`
//! (the floor modulus of the hash read as a signed 32-bit integer, as
//! Elasticsearch does). The function is stable across versions and
//! platforms: changing it would strand documents, so it never changes.

/// The shard that holds the document with this id.
pub fn shard_for_id(id: &str, number_of_shards: u32) -> u32 {
    let hash = murmur3_32(id.as_bytes(), 0) as i32;
    hash.rem_euclid(number_of_shards.max(1) as i32) as u32
}

/// MurmurHash3, x86 32-bit variant.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let mut k = 0u32;
    for (i, b) in tail.iter().enumerate() {
        k |= u32::from(*b) << (8 * i);
    }
    if !tail.is_empty() {
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_matches_reference_vectors() {
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(murmur3_32(b"Hello, world!", 1234), 0xfaf6_cdb3);
        assert_eq!(
            murmur3_32(b"The quick brown fox jumps over the lazy dog", 0),
            0x2e4f_f723
        );
    }

    #[test]
    fn routing_is_stable_and_spreads() {
        assert_eq!(shard_for_id("anything", 1), 0);
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[shard_for_id(&format!("doc-{i}"), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(shard_for_id("doc-1", 4), shard_for_id("doc-1", 4));
    }
}
