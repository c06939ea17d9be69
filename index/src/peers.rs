//! How an index reaches the shards that live on other nodes.
//!
//! On the embedded node every shard is local and there are no peers. In a
//! cluster an index's metadata is on every node, each shard on one data node
//! (its `allocation`), and the node's [`Peers`] carry metadata changes and
//! writes to the other nodes. The calls block: they run on blocking threads,
//! like the rest of the write path.

use std::collections::BTreeMap;

use datafusion::arrow::record_batch::RecordBatch;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::index::{AliasMeta, DocWrite, IndexMeta, WriteResult};
use crate::indices::RefreshPolicy;
use crate::merge::ForceMerge;
use crate::metadata::ClusterMetadata;
use crate::query::LeafQuery;
use crate::shard::StoredDoc;
use crate::stats::TermStats;
use crate::translog::Op;

/// The other nodes of the cluster, as the index layer needs them.
pub trait Peers: Send + Sync + std::fmt::Debug {
    /// This node's id.
    fn node_id(&self) -> &str;
    /// The nodes of the copies of each shard of a new index, the primary
    /// first: `1 + replicas` copies on distinct data nodes, or as many as
    /// there are data nodes.
    fn allocate(&self, index: &str, shards: u32, replicas: u32) -> Result<Vec<Vec<String>>>;
    /// Records a new index in the cluster's store. Returns the store's
    /// revision that created it (0 without a store); fails with
    /// `IndexExists` when another node's index of that name is there.
    fn index_created(&self, meta: &IndexMeta) -> Result<i64>;
    /// Installs a new index's metadata (with its created revision) on every
    /// other node.
    fn index_announced(&self, meta: &IndexMeta) -> Result<()>;
    /// Removes an index from every other node.
    fn index_deleted(&self, meta: &IndexMeta) -> Result<()>;
    /// Sends an index's new mapping to every other node.
    fn mapping_changed(&self, meta: &IndexMeta) -> Result<()>;
    /// Records the change of an index's aliases from `old` to those of
    /// `meta` in the cluster (applied to the aliases the cluster holds, so
    /// that other nodes' changes to other aliases stay) and sends the
    /// result to every other node. Returns the metadata as the cluster now
    /// has it.
    fn aliases_changed(&self, meta: &IndexMeta, old: &BTreeMap<String, AliasMeta>) -> Result<IndexMeta>;
    /// The metadata of index `name` as the cluster store holds it now;
    /// `None` when the store has no such index or there is no store.
    fn stored_index(&self, name: &str) -> Result<Option<IndexMeta>>;
    /// The templates and cluster settings the cluster store holds (none
    /// without a store).
    fn metadata(&self) -> Result<ClusterMetadata>;
    /// Changes the templates or cluster settings of the cluster store with
    /// `change`, run again when another node changed them meanwhile; fails
    /// without a store, which could not order the changes of two nodes.
    fn change_metadata(&self, change: &mut dyn FnMut(&mut ClusterMetadata) -> Result<()>) -> Result<()>;
    /// Applies writes on `node`, which holds their shards of the incarnation
    /// `meta` of an index; one result per write.
    fn write(
        &self,
        node: &str,
        meta: &IndexMeta,
        writes: Vec<DocWrite>,
        refresh: RefreshPolicy,
    ) -> Result<Vec<ItemResult>>;
    /// Applies on `node`'s replica of `shard` the writes its primary (this
    /// node) logged; answers once `node` has fsynced them.
    fn replicate(
        &self,
        node: &str,
        meta: &IndexMeta,
        shard: u32,
        ops: Vec<Op>,
        refresh: RefreshPolicy,
    ) -> Result<()>;
    /// Records that `node`'s copy of `shard` missed writes: it is no longer
    /// in sync. Returns the metadata with the change.
    fn copy_failed(&self, meta: &IndexMeta, shard: u32, node: &str, reason: &str) -> Result<IndexMeta>;
    /// Sends a committed copy of `shard` (the files of `dir`, its
    /// directory on this node, with `meta_json` as its tantivy `meta.json`)
    /// to `node`, which installs it in place of any copy it had.
    fn send_copy(
        &self,
        node: &str,
        meta: &IndexMeta,
        shard: u32,
        dir: &std::path::Path,
        meta_json: &[u8],
    ) -> Result<()>;
    /// Records `node`'s copy of `shard` in sync, if this node is still its
    /// primary. Returns the metadata with the change.
    fn copy_in_sync(&self, meta: &IndexMeta, shard: u32, node: &str) -> Result<IndexMeta>;
    /// Realtime gets of documents from `node`, in the order of `ids`, each
    /// with its own failure (a shard of the node that cannot be read).
    fn get(&self, node: &str, index: &str, ids: &[String]) -> Result<Vec<Result<Option<StoredDoc>>>>;
    /// Refreshes the shards of an index on `node`.
    fn refresh(&self, node: &str, index: &str) -> Result<()>;
    /// Force-merges the shards of an index on `node`.
    fn force_merge(&self, node: &str, index: &str, how: ForceMerge, flush: bool) -> Result<()>;
    /// Runs a tantivy leaf (see [`crate::codec::encode_leaf`]) over one
    /// shard on `node`, which holds it, and streams its batches: for a task
    /// that reads shards of several nodes.
    fn scan(&self, node: &str, leaf: Vec<u8>) -> BoxStream<'static, Result<RecordBatch>>;
    /// The term statistics of a query over these shards of an index, on `node`.
    fn term_stats(&self, node: &str, index: &str, shards: &[u32], query: &LeafQuery) -> Result<TermStats>;
    /// Why `node` cannot serve its shards now (it left the cluster or does
    /// not answer), or `None` when it can.
    fn unavailable(&self, node: &str) -> Option<String>;
}

/// One write's outcome: its id when known, and its result.
pub type ItemResult = (Option<String>, Result<WriteResult>);

/// A write result as it crosses the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireItem {
    /// Document id, when known.
    pub id: Option<String>,
    /// The result when the write succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<WireResult>,
    /// The error when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

/// A successful write on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireResult {
    /// Document id.
    pub id: String,
    /// Shard.
    pub shard: u32,
    /// Version after the write.
    pub version: u64,
    /// Sequence number.
    pub seq_no: u64,
    /// `created`, `updated`, ...
    pub result: String,
}

/// An error on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    /// Elasticsearch error type.
    #[serde(rename = "type")]
    pub es_type: String,
    /// Reason.
    pub reason: String,
    /// HTTP status.
    pub status: u16,
}

impl From<&Error> for WireError {
    fn from(err: &Error) -> WireError {
        WireError {
            es_type: err.es_type().to_string(),
            reason: err.to_string(),
            status: err.status(),
        }
    }
}

impl From<WireError> for Error {
    fn from(err: WireError) -> Error {
        // The name between the first brackets of `no such index [x]` and
        // `index [x] already exists`.
        let name = || {
            let (_, rest) = err.reason.split_once('[')?;
            rest.split_once(']').map(|(name, _)| name.to_string())
        };
        match err.es_type.as_str() {
            "index_not_found_exception" => {
                if let Some(name) = name() {
                    return Error::IndexNotFound(name);
                }
            }
            "resource_already_exists_exception" => {
                if let Some(name) = name() {
                    return Error::IndexExists(name);
                }
            }
            _ => {}
        }
        Error::Remote {
            es_type: err.es_type,
            reason: err.reason,
            status: err.status,
        }
    }
}

impl WireItem {
    /// The wire form of a write's outcome.
    pub fn from_item(item: &ItemResult) -> WireItem {
        match &item.1 {
            Ok(r) => WireItem {
                id: item.0.clone(),
                ok: Some(WireResult {
                    id: r.id.clone(),
                    shard: r.shard,
                    version: r.version,
                    seq_no: r.seq_no,
                    result: r.result.to_string(),
                }),
                error: None,
            },
            Err(e) => WireItem {
                id: item.0.clone(),
                ok: None,
                error: Some(e.into()),
            },
        }
    }

    /// The outcome this wire item describes.
    pub fn into_item(self) -> ItemResult {
        let result = match (self.ok, self.error) {
            (Some(r), _) => Ok(WriteResult {
                id: r.id,
                shard: r.shard,
                version: r.version,
                seq_no: r.seq_no,
                result: result_name(&r.result),
            }),
            (None, Some(e)) => Err(e.into()),
            (None, None) => Err(Error::Internal("a node answered a write without a result".into())),
        };
        (self.id, result)
    }
}

fn result_name(name: &str) -> &'static str {
    match name {
        "created" => "created",
        "updated" => "updated",
        "deleted" => "deleted",
        "not_found" => "not_found",
        _ => "noop",
    }
}
