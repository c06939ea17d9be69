//! The internal calls between nodes. Each is a Flight action on the
//! node's Flight address, named `quidditch.internal.<call>`, with a JSON
//! request body and a JSON answer (one result message).

use quidditch_index::Mapping;
use quidditch_index::RefreshPolicy;
use quidditch_index::activity::ActivityStats;
use quidditch_index::index::{DocWrite, IndexMeta};
use quidditch_index::merge::{ForceMerge, SegmentStats};
use quidditch_index::peers::WireItem;
use quidditch_index::query::LeafQuery;
use quidditch_index::shard::StoredDoc;
use quidditch_index::translog::Op;
use serde::{Deserialize, Serialize};

/// Largest internal message, either way (the Flight service's limit).
pub const MAX_MESSAGE: usize = 64 << 20;

/// The prefix of a `DoGet` ticket that runs an encoded tantivy leaf over
/// one shard of the node (the rest of the ticket).
pub const SCAN_TICKET: &[u8] = b"quidditch.internal.scan\n";

/// The prefix of every internal action type.
pub const PREFIX: &str = "quidditch.internal.";

/// An internal call and its request body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Call {
    /// Liveness and identity: answers [`Hello`].
    Ping,
    /// The metadata of every index on the node: answers `Vec<IndexMeta>`.
    ListIndices,
    /// Installs an index created on another node: answers `null`.
    InstallIndex {
        /// The index.
        meta: IndexMeta,
    },
    /// Removes an index deleted on another node: answers `null`.
    RemoveIndex {
        /// Name.
        name: String,
        /// Incarnation.
        uuid: String,
    },
    /// A grown mapping: answers `null`.
    PutMapping {
        /// Index name.
        name: String,
        /// Incarnation.
        uuid: String,
        /// The whole new mapping.
        mapping: Mapping,
    },
    /// New aliases of an index, in its newer metadata: answers `null`.
    PutAliases {
        /// The metadata with the aliases.
        meta: IndexMeta,
    },
    /// Writes to shards on the node: answers `Vec<WireItem>`, one per write.
    Bulk {
        /// Index name.
        index: String,
        /// The incarnation written to.
        uuid: String,
        /// The writes, in request order.
        writes: Vec<DocWrite>,
        /// What to make searchable before answering.
        refresh: RefreshPolicy,
    },
    /// Writes a primary logged, for the node's replica of a shard:
    /// answers `null` once they are fsynced.
    Replicate {
        /// Index name.
        index: String,
        /// Incarnation.
        uuid: String,
        /// Shard number.
        shard: u32,
        /// The node of the primary that sends them.
        primary: String,
        /// The logged writes, in the primary's order.
        ops: Vec<Op>,
        /// What to make searchable before answering.
        refresh: RefreshPolicy,
    },
    /// From the leader to a shard's primary: rebuild the shard on
    /// `target` and record that copy in sync; answers `null` when done.
    Recover {
        /// Index name.
        index: String,
        /// Incarnation.
        uuid: String,
        /// Shard number.
        shard: u32,
        /// The node that gets the copy.
        target: String,
    },
    /// From a primary: a copy of a shard follows; answers `null`.
    CopyStart {
        /// Index name.
        index: String,
        /// Incarnation.
        uuid: String,
        /// Shard number.
        shard: u32,
    },
    /// Part of a file of the copy: answers `null`.
    CopyChunk {
        /// Index name.
        index: String,
        /// Incarnation.
        uuid: String,
        /// Shard number.
        shard: u32,
        /// File name in the shard's directory.
        file: String,
        /// Where in the file `data` goes.
        offset: u64,
        /// The bytes, base64.
        data: String,
    },
    /// The copy is complete: the node installs it; answers `null`.
    CopyFinish {
        /// Index name.
        index: String,
        /// Incarnation.
        uuid: String,
        /// Shard number.
        shard: u32,
    },
    /// Realtime gets: answers a `Result<Option<WireDoc>, WireError>` per
    /// id, in order.
    Get {
        /// Index name.
        index: String,
        /// Document ids.
        ids: Vec<String>,
    },
    /// Refreshes the node's shards of an index: answers `null`.
    Refresh {
        /// Index name.
        index: String,
    },
    /// Force-merges the node's shards of an index: answers `null`.
    ForceMerge {
        /// Index name.
        index: String,
        /// What to merge.
        how: ForceMerge,
        /// Whether to refresh first.
        flush: bool,
    },
    /// Documents per shard of the node: answers `Vec<ShardStats>`.
    ShardStats,
    /// The searchable segments of each shard of the node: answers
    /// `Vec<ShardSegments>`.
    Segments,
    /// Term statistics of a query over some of the node's shards of an
    /// index: answers `TermStats`.
    TermStats {
        /// Index name.
        index: String,
        /// The shards.
        shards: Vec<u32>,
        /// The query.
        query: LeafQuery,
    },
    /// The nodes of each shard's copies of a new index, from the leader:
    /// answers `Vec<Vec<String>>`, the primary first.
    Allocate {
        /// Index name.
        index: String,
        /// Number of shards.
        shards: u32,
        /// Replicas of each shard.
        #[serde(default)]
        replicas: u32,
    },
}

impl Call {
    /// The Flight action type of the call.
    pub fn action_type(&self) -> String {
        let name = match self {
            Call::Ping => "ping",
            Call::ListIndices => "list_indices",
            Call::InstallIndex { .. } => "install_index",
            Call::RemoveIndex { .. } => "remove_index",
            Call::PutMapping { .. } => "put_mapping",
            Call::PutAliases { .. } => "put_aliases",
            Call::Bulk { .. } => "bulk",
            Call::Get { .. } => "get",
            Call::Refresh { .. } => "refresh",
            Call::ForceMerge { .. } => "force_merge",
            Call::ShardStats => "shard_stats",
            Call::Segments => "segments",
            Call::TermStats { .. } => "term_stats",
            Call::Allocate { .. } => "allocate",
            Call::Replicate { .. } => "replicate",
            Call::Recover { .. } => "recover",
            Call::CopyStart { .. } => "copy_start",
            Call::CopyChunk { .. } => "copy_chunk",
            Call::CopyFinish { .. } => "copy_finish",
        };
        format!("{PREFIX}{name}")
    }
}

/// The answer to [`Call::Ping`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The node's id.
    pub node_id: String,
    /// Its roles.
    pub roles: Vec<crate::Role>,
    /// Its HTTP address.
    pub http: String,
}

/// A stored document on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireDoc {
    /// Version.
    pub version: u64,
    /// Sequence number.
    pub seq_no: u64,
    /// Source text.
    pub source: String,
}

impl From<StoredDoc> for WireDoc {
    fn from(doc: StoredDoc) -> WireDoc {
        WireDoc {
            version: doc.version,
            seq_no: doc.seq_no,
            source: doc.source.to_string(),
        }
    }
}

impl From<WireDoc> for StoredDoc {
    fn from(doc: WireDoc) -> StoredDoc {
        StoredDoc {
            version: doc.version,
            seq_no: doc.seq_no,
            source: doc.source.into(),
        }
    }
}

/// One shard copy on a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardStats {
    /// Index name.
    pub index: String,
    /// Shard number.
    pub shard: u32,
    /// Searchable documents.
    pub docs: u64,
}

/// The segments of one shard of a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardSegments {
    /// Index name.
    pub index: String,
    /// Shard number.
    pub shard: u32,
    /// Its searchable segments.
    pub segments: Vec<SegmentStats>,
    /// What the copy did since it was opened.
    #[serde(default)]
    pub activity: ActivityStats,
}

/// The answer to a bulk call.
pub type BulkAnswer = Vec<WireItem>;
