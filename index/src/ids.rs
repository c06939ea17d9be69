//! Auto-generated document ids.
//!
//! 20 URL-safe base64 characters (in ASCII order) encoding 15 bytes: 6
//! random bytes drawn once per process, 6 bytes of epoch milliseconds (never
//! going backwards within a process) and a 3-byte sequence. The ids one
//! process makes sort in the order it made them, and the ids of a segment
//! differ only in their last few characters: tantivy's term dictionary (an
//! FST, built key by key from where a key leaves the one before it) then
//! adds a node or two per id, where a constant tail would cost a node per
//! character of it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static STATE: AtomicU64 = AtomicU64::new(0);
static NODE: OnceLock<[u8; 6]> = OnceLock::new();

/// URL-safe base64 digits in ASCII order, so that ids sort like the bytes they encode.
const ALPHABET: &[u8; 64] = b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";

/// A new unique id.
pub fn generate() -> String {
    let node = NODE.get_or_init(|| {
        let mut bytes = [0u8; 6];
        bytes.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..6]);
        bytes
    });
    let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
    // The state packs (milliseconds << 24 | sequence); it only ever grows.
    let mut prev = STATE.load(Ordering::Relaxed);
    let next = loop {
        let candidate = (now << 24).max(prev + 1);
        match STATE.compare_exchange_weak(prev, candidate, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break candidate,
            Err(actual) => prev = actual,
        }
    };
    let ms = next >> 24;
    let seq = next & 0xff_ffff;
    let mut bytes = [0u8; 15];
    bytes[..6].copy_from_slice(node);
    bytes[6..12].copy_from_slice(&ms.to_be_bytes()[2..]);
    bytes[12..].copy_from_slice(&seq.to_be_bytes()[5..]);
    encode(&bytes)
}

fn encode(bytes: &[u8; 15]) -> String {
    let mut out = String::with_capacity(20);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_unique_ordered_and_share_prefixes() {
        let ids: Vec<String> = (0..10_000).map(|_| generate()).collect();
        assert!(ids.iter().all(|id| id.len() == 20));
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids sort in creation order");
        assert!(
            ids.iter().all(|id| id[..8] == ids[0][..8]),
            "a process's ids share their first 8 characters"
        );
    }
}
