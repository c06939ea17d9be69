//! Shard allocation: balanced and deterministic.

/// The data node of each of `shards` shards of `index`: round-robin over
/// the data nodes sorted by id, starting at a node chosen by a stable hash
/// of the index name (so that single-shard indices spread too). Every node
/// gets `shards / nodes` shards or one more.
pub fn allocate(index: &str, shards: u32, data_nodes: &[String]) -> Vec<String> {
    let mut nodes: Vec<&String> = data_nodes.iter().collect();
    nodes.sort();
    nodes.dedup();
    if nodes.is_empty() {
        return Vec::new();
    }
    let start = quidditch_index::routing::murmur3_32(index.as_bytes(), 0) as usize % nodes.len();
    (0..shards as usize)
        .map(|i| nodes[(start + i) % nodes.len()].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_and_deterministic() {
        let nodes: Vec<String> = ["c", "a", "b"].iter().map(|s| s.to_string()).collect();
        let a = allocate("logs", 7, &nodes);
        assert_eq!(a, allocate("logs", 7, &nodes));
        for n in ["a", "b", "c"] {
            let count = a.iter().filter(|x| *x == n).count();
            assert!((2..=3).contains(&count), "{n} holds {count} of 7 shards");
        }
        let reordered: Vec<String> = ["b", "c", "a"].iter().map(|s| s.to_string()).collect();
        assert_eq!(a, allocate("logs", 7, &reordered));
        assert!(allocate("logs", 3, &[]).is_empty());
    }
}
