//! Shard allocation: balanced and deterministic.

/// The data nodes of the copies of each of `shards` shards of `index`,
/// the primary first: primaries round-robin over the data nodes sorted by
/// id, starting at a node chosen by a stable hash of the index name (so
/// that single-shard indices spread too), and each shard's replicas on the
/// nodes that follow its primary's. Every node gets `shards / nodes`
/// primaries or one more; a shard has at most one copy per node.
pub fn allocate(index: &str, shards: u32, replicas: u32, data_nodes: &[String]) -> Vec<Vec<String>> {
    let mut nodes: Vec<&String> = data_nodes.iter().collect();
    nodes.sort();
    nodes.dedup();
    if nodes.is_empty() {
        return Vec::new();
    }
    let start = quidditch_index::routing::murmur3_32(index.as_bytes(), 0) as usize % nodes.len();
    let copies = (replicas as usize + 1).min(nodes.len());
    (0..shards as usize)
        .map(|i| {
            (0..copies)
                .map(|c| nodes[(start + i + c) % nodes.len()].clone())
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_and_deterministic() {
        let nodes: Vec<String> = ["c", "a", "b"].iter().map(|s| s.to_string()).collect();
        let a = allocate("logs", 7, 1, &nodes);
        assert_eq!(a, allocate("logs", 7, 1, &nodes));
        for n in ["a", "b", "c"] {
            let primaries = a.iter().filter(|c| c[0] == n).count();
            assert!(
                (2..=3).contains(&primaries),
                "{n} holds {primaries} of 7 primaries"
            );
            let copies = a.iter().filter(|c| c.contains(&n.to_string())).count();
            assert!((4..=5).contains(&copies), "{n} holds {copies} of 14 copies");
        }
        assert!(a.iter().all(|c| c.len() == 2 && c[0] != c[1]), "{a:?}");
        let reordered: Vec<String> = ["b", "c", "a"].iter().map(|s| s.to_string()).collect();
        assert_eq!(a, allocate("logs", 7, 1, &reordered));
        // More replicas than nodes: one copy per node.
        assert!(allocate("logs", 2, 5, &nodes).iter().all(|c| c.len() == 3));
        assert!(allocate("logs", 3, 0, &[]).is_empty());
    }
}
