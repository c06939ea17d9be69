//! What a shard copy did since it was opened: Elasticsearch's indexing
//! and search statistics (`_stats` `indexing` and `search`), kept per copy
//! so that the primaries and every copy can be summed apart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The running counters of one shard copy.
#[derive(Debug, Default)]
pub struct Activity {
    index_total: AtomicU64,
    index_nanos: AtomicU64,
    delete_total: AtomicU64,
    delete_nanos: AtomicU64,
    query_total: AtomicU64,
    query_nanos: AtomicU64,
    fetch_total: AtomicU64,
    fetch_nanos: AtomicU64,
}

/// A reading of [`Activity`], as it crosses the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityStats {
    /// Documents indexed.
    pub index_total: u64,
    /// Time spent indexing them, in milliseconds.
    pub index_time_ms: u64,
    /// Documents deleted.
    pub delete_total: u64,
    /// Time spent deleting them, in milliseconds.
    pub delete_time_ms: u64,
    /// Searches of the shard (a scan or an aggregation of it).
    pub query_total: u64,
    /// Time spent in them, in milliseconds.
    pub query_time_ms: u64,
    /// Searches that read stored documents (sources) of the shard.
    pub fetch_total: u64,
    /// Time spent reading them, in milliseconds.
    pub fetch_time_ms: u64,
}

impl ActivityStats {
    /// Adds another copy's counters.
    pub fn add(&mut self, other: &ActivityStats) {
        self.index_total += other.index_total;
        self.index_time_ms += other.index_time_ms;
        self.delete_total += other.delete_total;
        self.delete_time_ms += other.delete_time_ms;
        self.query_total += other.query_total;
        self.query_time_ms += other.query_time_ms;
        self.fetch_total += other.fetch_total;
        self.fetch_time_ms += other.fetch_time_ms;
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Activity {
    /// A batch of writes that indexed `indexed` and deleted `deleted`
    /// documents in `took`, shared between them by count.
    pub fn wrote(&self, indexed: u64, deleted: u64, took: Duration) {
        let all = indexed + deleted;
        if all == 0 {
            return;
        }
        let took = nanos(took);
        let index_share = (u128::from(took) * u128::from(indexed) / u128::from(all)) as u64;
        self.index_total.fetch_add(indexed, Ordering::Relaxed);
        self.index_nanos.fetch_add(index_share, Ordering::Relaxed);
        self.delete_total.fetch_add(deleted, Ordering::Relaxed);
        self.delete_nanos.fetch_add(took - index_share, Ordering::Relaxed);
    }

    /// A search of the shard that took `query`, and `fetch` reading stored
    /// documents, if it read any.
    pub fn searched(&self, query: Duration, fetch: Option<Duration>) {
        self.query_total.fetch_add(1, Ordering::Relaxed);
        self.query_nanos.fetch_add(nanos(query), Ordering::Relaxed);
        if let Some(fetch) = fetch {
            self.fetch_total.fetch_add(1, Ordering::Relaxed);
            self.fetch_nanos.fetch_add(nanos(fetch), Ordering::Relaxed);
        }
    }

    /// The counters now (since the copy was opened on its node).
    pub fn read(&self) -> ActivityStats {
        let ms = |a: &AtomicU64| a.load(Ordering::Relaxed) / 1_000_000;
        ActivityStats {
            index_total: self.index_total.load(Ordering::Relaxed),
            index_time_ms: ms(&self.index_nanos),
            delete_total: self.delete_total.load(Ordering::Relaxed),
            delete_time_ms: ms(&self.delete_nanos),
            query_total: self.query_total.load(Ordering::Relaxed),
            query_time_ms: ms(&self.query_nanos),
            fetch_total: self.fetch_total.load(Ordering::Relaxed),
            fetch_time_ms: ms(&self.fetch_nanos),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_shares_its_time_by_count() {
        let a = Activity::default();
        a.wrote(3, 1, Duration::from_millis(8));
        a.wrote(0, 0, Duration::from_millis(100));
        a.searched(Duration::from_millis(5), None);
        a.searched(Duration::from_millis(2), Some(Duration::from_millis(1)));
        assert_eq!(
            a.read(),
            ActivityStats {
                index_total: 3,
                index_time_ms: 6,
                delete_total: 1,
                delete_time_ms: 2,
                query_total: 2,
                query_time_ms: 7,
                fetch_total: 1,
                fetch_time_ms: 1,
            }
        );
    }
}
