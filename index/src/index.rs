//! An index: settings, mapping, and its shards on disk.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::document::{parse_document, parse_logged_document};
use crate::error::{Error, Result};
use crate::indices::{RefreshPolicy, apply_alias_change};
use crate::mapping::{Dynamic, FieldType, Mapping};
use crate::merge::ForceMerge;
use crate::peers::{ItemResult, Peers, WireError};
use crate::query::LeafQuery;
use crate::routing::shard_for_id;
use crate::settings::IndexSettings;
use crate::shard::{Reparse, Shard, ShardWrite, StoredDoc};
use crate::stats::TermStats;
use crate::translog::Op;

/// The metadata file of an index directory.
pub const META_FILE: &str = "index.json";

/// A shard a request cannot read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardFailure {
    /// Shard number.
    pub shard: u32,
    /// The node that holds it.
    pub node: String,
    /// Why it cannot be read.
    pub reason: String,
}

/// What is persisted about an index besides its shards.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexMeta {
    /// Index name.
    pub name: String,
    /// Unique id of this incarnation of the index.
    pub uuid: String,
    /// Creation time, epoch milliseconds.
    pub creation_date: i64,
    /// Settings.
    pub settings: IndexSettings,
    /// Mapping.
    pub mapping: Mapping,
    /// The node of each shard's primary copy; empty when every shard is on
    /// this node (the embedded node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocation: Vec<String>,
    /// The nodes of each shard's in-sync replicas: copies that have every
    /// acknowledged write, so that one can replace a lost primary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Vec<String>>,
    /// Bumped by every change of the metadata in the cluster's store, so
    /// that a node never takes older copies for newer ones.
    #[serde(default)]
    pub version: u64,
    /// The cluster store's revision that created this incarnation (0 when
    /// unknown, and on a node without a store): of two incarnations of a
    /// name, a node keeps the one created last.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created_revision: i64,
    /// The aliases that name this index, as Elasticsearch keeps them in
    /// each index's metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<String, AliasMeta>,
    /// The column paths mapped when the index was created. Each has a
    /// tantivy field of its own in every copy of every shard; fields mapped
    /// later share the shards' JSON fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub own_fields: Vec<String>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// What an alias says of one index it names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasMeta {
    /// Whether writes through the alias go to this index (`None`: only
    /// when the alias names this index alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_write_index: Option<bool>,
}

impl IndexMeta {
    /// The paths with a field of their own, with their types.
    pub fn own_field_types(&self) -> Vec<(String, FieldType)> {
        self.own_fields
            .iter()
            .filter_map(|path| Some((path.clone(), self.mapping.column(path)?.mapping.ty)))
            .collect()
    }

    /// The node that holds `shard`'s primary, `None` when every shard is local.
    pub fn shard_node(&self, shard: u32) -> Option<&str> {
        self.allocation.get(shard as usize).map(String::as_str)
    }

    /// The nodes of `shard`'s in-sync replicas.
    pub fn replica_nodes(&self, shard: u32) -> &[String] {
        self.replicas.get(shard as usize).map_or(&[], Vec::as_slice)
    }

    /// The nodes of every in-sync copy of `shard`, the primary first.
    pub fn copies(&self, shard: u32) -> impl Iterator<Item = &str> {
        self.shard_node(shard)
            .into_iter()
            .chain(self.replica_nodes(shard).iter().map(String::as_str))
    }

    /// Whether `node` holds an in-sync copy of `shard`.
    pub fn holds(&self, node: &str, shard: u32) -> bool {
        self.copies(shard).any(|c| c == node)
    }
}

/// The primary term every response reports: a shard's copies are
/// ordered by sequence number alone, so there is one term.
pub const PRIMARY_TERM: u64 = 1;

/// The condition of an optimistic write (`if_seq_no`, `if_primary_term`):
/// the document's last write must be the one with this sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqNoCondition {
    /// Required sequence number of the document's last write.
    pub seq_no: u64,
    /// Required primary term.
    pub primary_term: u64,
}

impl SeqNoCondition {
    /// The condition of `if_seq_no` and `if_primary_term`, which come
    /// together or not at all, with Elasticsearch's validation errors.
    pub fn from_params(seq_no: Option<i64>, primary_term: Option<i64>) -> Result<Option<SeqNoCondition>> {
        let invalid = |why: String| Error::BadRequest {
            es_type: "action_request_validation_exception",
            reason: format!("Validation Failed: 1: {why};"),
        };
        match (seq_no, primary_term) {
            (None, None) => Ok(None),
            (Some(_), None | Some(0)) => Err(invalid(format!(
                "ifSeqNo is set, but primary term is [{}]",
                primary_term.unwrap_or(0)
            ))),
            (None, Some(_)) => Err(invalid("ifPrimaryTerm is set, but seqNo is [-2]".into())),
            (Some(seq_no), Some(_)) if seq_no < 0 => Err(Error::illegal_argument(format!(
                "sequence numbers must be non negative. got [{seq_no}]."
            ))),
            (Some(_), Some(term)) if term < 0 => Err(Error::illegal_argument(format!(
                "primary term must be positive. got [{term}]"
            ))),
            (Some(seq_no), Some(term)) => Ok(Some(SeqNoCondition {
                seq_no: seq_no as u64,
                primary_term: term as u64,
            })),
        }
    }

    /// The conflict this condition meets when the document's last write
    /// has sequence number `current` (`None`: no document).
    pub fn check(&self, id: &str, current: Option<u64>) -> Result<()> {
        if current == Some(self.seq_no) && self.primary_term == PRIMARY_TERM {
            return Ok(());
        }
        Err(self.conflict(id.to_string(), current))
    }

    /// The conflict of this condition with a document whose last write has
    /// sequence number `current` (`None`: no document).
    pub fn conflict(&self, id: String, current: Option<u64>) -> Error {
        Error::SeqNoConflict {
            id,
            required: self.seq_no,
            required_term: self.primary_term,
            current,
        }
    }

    /// The condition that the document's last write is still the one with
    /// sequence number `seq_no`.
    pub fn unchanged(seq_no: u64) -> SeqNoCondition {
        SeqNoCondition {
            seq_no,
            primary_term: PRIMARY_TERM,
        }
    }
}

/// The version an Elasticsearch request holds when none is given
/// (`Versions.MATCH_ANY`), as its validation errors print it.
const MATCH_ANY: i64 = -3;

/// How long a deleted document's version is kept after the delete
/// (Elasticsearch's `index.gc_deletes`): a write within it continues the
/// document's versions, and an external version must be above the delete's.
pub const GC_DELETES: std::time::Duration = std::time::Duration::from_secs(60);

/// `version_type`: whose versions a write's `version` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionType {
    /// The engine's own versions (`version` is refused as a condition).
    Internal,
    /// The client's versions: a write must bring a higher one.
    External,
    /// The client's versions: a write must bring one at least as high.
    ExternalGte,
}

impl VersionType {
    /// The version type `name` stands for, with Elasticsearch's error for
    /// one it does not know.
    pub fn parse(name: &str) -> Result<VersionType> {
        match name {
            "internal" => Ok(VersionType::Internal),
            "external" | "external_gt" => Ok(VersionType::External),
            "external_gte" => Ok(VersionType::ExternalGte),
            other => Err(Error::illegal_argument(format!(
                "No version type match [{other}]"
            ))),
        }
    }

    /// Its name in Elasticsearch's messages.
    fn name(self) -> &'static str {
        match self {
            VersionType::Internal => "INTERNAL",
            VersionType::External => "EXTERNAL",
            VersionType::ExternalGte => "EXTERNAL_GTE",
        }
    }
}

/// The condition of a write with an external version (`version`,
/// `version_type=external|external_gte`): the document's current version
/// must be below it (or not above it), and it becomes the document's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalVersion {
    /// The version the write gives the document.
    pub version: u64,
    /// `external_gte`: the current version may equal it.
    #[serde(default)]
    pub gte: bool,
}

impl ExternalVersion {
    /// The conflict this version meets when the document's current
    /// version (live or deleted within [`GC_DELETES`]) is `current`.
    pub fn check(&self, id: &str, current: Option<u64>) -> Result<()> {
        match current {
            Some(current) if current > self.version || (current == self.version && !self.gte) => {
                Err(Error::ExternalVersionConflict {
                    id: id.to_string(),
                    current,
                    provided: self.version,
                    gte: self.gte,
                })
            }
            _ => Ok(()),
        }
    }
}

/// What an index or delete requires of the document's last write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// That it is the one with this sequence number.
    SeqNo(SeqNoCondition),
    /// That its version is below this external one.
    Version(ExternalVersion),
}

impl Condition {
    /// The condition of an index, create or delete request's `version`,
    /// `version_type`, `if_seq_no` and `if_primary_term`, with
    /// Elasticsearch's validation errors.
    pub fn of_request(
        create: bool,
        version: Option<i64>,
        version_type: Option<&str>,
        if_seq_no: Option<i64>,
        if_primary_term: Option<i64>,
    ) -> Result<Option<Condition>> {
        let version_type = version_type.map_or(Ok(VersionType::Internal), VersionType::parse)?;
        let invalid = |errors: &[String]| Error::BadRequest {
            es_type: "action_request_validation_exception",
            reason: format!(
                "Validation Failed: {}",
                errors
                    .iter()
                    .enumerate()
                    .map(|(i, e)| format!("{}: {e};", i + 1))
                    .collect::<String>()
            ),
        };
        if create && version_type != VersionType::Internal {
            return Err(invalid(&[
                "create operations only support internal versioning. use index instead".into(),
            ]));
        }
        if create && if_seq_no.is_some() {
            return Err(invalid(&[
                "create operations do not support compare and set. use index instead".into(),
            ]));
        }
        let given = version.unwrap_or(MATCH_ANY);
        let mut errors = Vec::new();
        let illegal = match version_type {
            VersionType::Internal => version.is_some_and(|v| v <= 0),
            VersionType::External | VersionType::ExternalGte => given < 0,
        };
        if illegal {
            errors.push(format!(
                "illegal version value [{given}] for version type [{}]",
                version_type.name()
            ));
        }
        if version_type == VersionType::Internal && version.is_some() {
            errors.push(
                "internal versioning can not be used for optimistic concurrency control. \
                 Please use `if_seq_no` and `if_primary_term` instead"
                    .into(),
            );
        }
        if if_seq_no.is_some() && (version_type != VersionType::Internal || version.is_some()) {
            errors.push("compare and write operations can not use versioning".into());
        }
        if !errors.is_empty() {
            return Err(invalid(&errors));
        }
        if let Some(condition) = SeqNoCondition::from_params(if_seq_no, if_primary_term)? {
            return Ok(Some(Condition::SeqNo(condition)));
        }
        Ok(match version_type {
            VersionType::Internal => None,
            external => Some(Condition::Version(ExternalVersion {
                version: given as u64,
                gte: external == VersionType::ExternalGte,
            })),
        })
    }

    /// The sequence number condition, if this is one.
    pub fn seq_no(&self) -> Option<SeqNoCondition> {
        match self {
            Condition::SeqNo(c) => Some(*c),
            Condition::Version(_) => None,
        }
    }
}

/// One write of a bulk request, before routing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DocWrite {
    /// `index` or `create` a document (a missing id is generated).
    Index {
        /// Document id, if given.
        id: Option<String>,
        /// The document's JSON object, as text; it is its `_source` verbatim.
        #[serde(with = "crate::translog::shared_text")]
        source: Arc<str>,
        /// `create` semantics: fail if it exists.
        create: bool,
        /// What the document's last write must be.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        condition: Option<Condition>,
    },
    /// Partial update.
    Update {
        /// Document id.
        id: String,
        /// Fields to merge into the current source.
        doc: Option<Value>,
        /// Index `doc` as a new document when the id is missing.
        doc_as_upsert: bool,
        /// Document to index when the id is missing.
        upsert: Option<Value>,
        /// Update only over this last write of the document.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_seq_no: Option<SeqNoCondition>,
        /// How many times to read the document and merge again when a
        /// write lands between the read and the update (`retry_on_conflict`).
        #[serde(default)]
        retry_on_conflict: u32,
        /// An update that leaves the document as it is writes nothing and
        /// answers `noop` (`detect_noop`, on unless turned off).
        #[serde(default = "detect_noop_default")]
        detect_noop: bool,
    },
    /// Delete by id.
    Delete {
        /// Document id.
        id: String,
        /// What the document's last write must be.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        condition: Option<Condition>,
    },
}

fn detect_noop_default() -> bool {
    true
}

/// What a write of a batch becomes before its shard sees it.
enum Prepared {
    /// A write for its shard, with its id and whether it changed the
    /// mapping.
    Write(String, bool, ShardWrite),
    /// An update that leaves the document as it is: its result.
    Noop(WriteResult),
}

/// The outcome of one successful write.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteResult {
    /// Document id.
    pub id: String,
    /// Shard the document lives in.
    pub shard: u32,
    /// Version after the write.
    pub version: u64,
    /// Sequence number of the write.
    pub seq_no: u64,
    /// `created`, `updated`, `deleted`, `not_found` or `noop`.
    pub result: &'static str,
}

/// Results of a batch of writes, and which shards they touched.
#[derive(Debug)]
pub struct BatchResult {
    /// Per-write results, in request order; errors carry the id when known.
    pub items: Vec<(Option<String>, Result<WriteResult>)>,
    /// Highest sequence number written per shard.
    pub touched: HashMap<u32, u64>,
}

/// An open index.
pub struct Index {
    dir: PathBuf,
    /// Shared with the shards, which parse logged writes by its mapping.
    meta: Arc<RwLock<IndexMeta>>,
    /// The shards by number; `None` for shards on other nodes. A copy
    /// opened here serves only while the metadata counts it in sync.
    shards: RwLock<Vec<Option<Arc<Shard>>>>,
    /// Per shard: held by a primary while it writes a batch and sends it to
    /// the replicas, so that every copy gets the writes in the same order.
    replication: Vec<Mutex<()>>,
    num_shards: u32,
    peers: Option<Arc<dyn Peers>>,
    /// Serializes mapping updates (and so the parse phase of writes).
    write_lock: Mutex<()>,
    deleted: AtomicBool,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("dir", &self.dir).finish()
    }
}

impl Index {
    /// Creates a new index in `dir`.
    pub fn create(dir: &Path, meta: IndexMeta, peers: Option<Arc<dyn Peers>>) -> Result<Index> {
        std::fs::create_dir_all(dir)?;
        write_meta(dir, &meta)?;
        Index::open(dir, peers)
    }

    /// Opens an existing index and replays the translogs of the shards on
    /// this node.
    pub fn open(dir: &Path, peers: Option<Arc<dyn Peers>>) -> Result<Index> {
        let meta = read_meta(dir)?;
        let shared = Arc::new(RwLock::new(meta.clone()));
        let node = peers.as_ref().map(|p| p.node_id().to_string());
        let shards = (0..meta.settings.number_of_shards)
            .map(|n| match (meta.shard_node(n), &node) {
                (Some(owner), Some(node)) if !meta.holds(node, n) => {
                    let dir = dir.join("shards").join(n.to_string());
                    if dir.exists() {
                        tracing::warn!(
                            index = %meta.name, shard = n, %owner, node = %node, dir = %dir.display(),
                            "this node has files of a shard allocated to another node, and leaves them unread: was the node renamed?"
                        );
                    }
                    Ok(None)
                }
                (Some(owner), None) => Err(Error::Internal(format!(
                    "index [{}] has shards on node [{owner}], but this node is not in a cluster",
                    meta.name
                ))),
                _ => Shard::open(
                    &dir.join("shards").join(n.to_string()),
                    n,
                    writer_threads(meta.settings.number_of_shards),
                    &meta.own_field_types(),
                    reparse(&shared),
                )
                    .map(|s| Some(Arc::new(s))),
            })
            .collect::<Result<Vec<_>>>()?;
        let num_shards = meta.settings.number_of_shards;
        Ok(Index {
            dir: dir.to_path_buf(),
            meta: shared,
            shards: RwLock::new(shards),
            replication: (0..num_shards).map(|_| Mutex::new(())).collect(),
            num_shards,
            peers,
            write_lock: Mutex::new(()),
            deleted: AtomicBool::new(false),
        })
    }

    /// The index name.
    pub fn name(&self) -> String {
        self.meta.read().name.clone()
    }

    /// The id of this incarnation of the index.
    pub fn uuid(&self) -> String {
        self.meta.read().uuid.clone()
    }

    /// A snapshot of the metadata.
    pub fn meta(&self) -> IndexMeta {
        self.meta.read().clone()
    }

    /// The current mapping.
    pub fn mapping(&self) -> Mapping {
        self.meta.read().mapping.clone()
    }

    /// The settings.
    pub fn settings(&self) -> IndexSettings {
        self.meta.read().settings.clone()
    }

    /// The shards on this node: the copies the metadata counts in sync.
    pub fn shards(&self) -> Vec<Arc<Shard>> {
        (0..self.num_shards).filter_map(|n| self.shard(n)).collect()
    }

    /// Shard `n`, when this node holds an in-sync copy of it.
    pub fn shard(&self, n: u32) -> Option<Arc<Shard>> {
        let shard = self.shards.read().get(n as usize).cloned().flatten()?;
        let Some(peers) = &self.peers else {
            return Some(shard);
        };
        let meta = self.meta.read();
        (meta.allocation.is_empty() || meta.holds(peers.node_id(), n)).then_some(shard)
    }

    /// Every copy opened on this node, in sync or not (for refreshes).
    fn opened(&self) -> Vec<Arc<Shard>> {
        self.shards.read().iter().flatten().cloned().collect()
    }

    /// Number of shards of the index, on every node.
    pub fn num_shards(&self) -> u32 {
        self.num_shards
    }

    /// The node to read shard `n` from: this node when it holds a copy,
    /// else the first in-sync copy whose node can serve it (the primary
    /// first). `None` when the shard is local to an unclustered index or
    /// no copy can be read.
    pub fn read_node(&self, n: u32) -> Option<String> {
        let peers = self.peers.as_ref()?;
        if self.shard(n).is_some() {
            return Some(peers.node_id().to_string());
        }
        // Without cloning the metadata (mapping included): this runs per
        // shard of every search.
        let copies: Vec<String> = self.meta.read().copies(n).map(str::to_string).collect();
        copies
            .into_iter()
            .find(|node| node != peers.node_id() && peers.unavailable(node).is_none())
    }

    /// The peers of a clustered index.
    pub fn peers(&self) -> Option<&Arc<dyn Peers>> {
        self.peers.as_ref()
    }

    /// Shard `n`, or an error naming the node that holds it.
    pub fn local_shard(&self, n: u32) -> Result<Arc<Shard>> {
        self.shard(n).ok_or_else(|| {
            let meta = self.meta.read();
            match meta.shard_node(n) {
                Some(node) => Error::Internal(format!(
                    "shard [{n}] of index [{}] is on node [{node}], not on this node",
                    meta.name
                )),
                None => Error::Internal(format!("index [{}] has no shard [{n}]", meta.name)),
            }
        })
    }

    /// Where the index lives on disk.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Marks the index deleted: background refreshes stop, and requests
    /// waiting for a refresh are released.
    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::SeqCst);
        for shard in self.opened() {
            shard.release_waiters();
        }
    }

    /// Whether the index was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::SeqCst)
    }

    /// Number of documents visible to searches in the shards on this node.
    pub fn num_docs(&self) -> u64 {
        self.shards().iter().map(|s| s.num_docs()).sum()
    }

    /// The number of the shard that holds `id`.
    pub fn shard_number(&self, id: &str) -> u32 {
        shard_for_id(id, self.num_shards())
    }

    /// Realtime get by id, from whichever node holds the document.
    pub fn get(&self, id: &str) -> Result<Option<StoredDoc>> {
        self.get_many(&[id.to_string()])
            .pop()
            .unwrap_or_else(|| Err(Error::Internal("a get produced no result".into())))
    }

    /// Realtime gets by id, in the order of `ids`, from whichever nodes
    /// hold the documents: one call per node, made in parallel, not one per
    /// document. A shard that cannot be read fails its own documents.
    pub fn get_many(&self, ids: &[String]) -> Vec<Result<Option<StoredDoc>>> {
        let mut out: Vec<Option<Result<Option<StoredDoc>>>> = (0..ids.len()).map(|_| None).collect();
        // Positions of the ids each other node is asked for.
        let mut remote: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            let n = self.shard_number(id);
            let local = match (self.shard(n), &self.peers) {
                (Some(shard), _) => shard.get(id),
                (None, Some(_)) => match self.read_node(n) {
                    Some(node) => {
                        remote.entry(node).or_default().push(i);
                        continue;
                    }
                    None => Err(Error::unavailable(format!(
                        "no copy of shard [{n}] of index [{}] can be read",
                        self.name()
                    ))),
                },
                (None, None) => self.local_shard(n).and_then(|shard| shard.get(id)),
            };
            out[i] = Some(local);
        }
        if let Some(peers) = self.peers.as_ref().filter(|_| !remote.is_empty()) {
            let name = self.name();
            let answers = std::thread::scope(|scope| {
                let calls: Vec<_> = remote
                    .into_iter()
                    .map(|(node, positions)| {
                        let name = &name;
                        scope.spawn(move || {
                            let wanted: Vec<String> = positions.iter().map(|&i| ids[i].clone()).collect();
                            let answer = peers.get(&node, name, &wanted);
                            (positions, answer)
                        })
                    })
                    .collect();
                calls
                    .into_iter()
                    .filter_map(|call| call.join().ok())
                    .collect::<Vec<_>>()
            });
            for (positions, answer) in answers {
                match answer {
                    Ok(docs) if docs.len() == positions.len() => {
                        for (i, doc) in positions.into_iter().zip(docs) {
                            out[i] = Some(doc);
                        }
                    }
                    Ok(docs) => {
                        let err = format!("a node answered {} documents for {}", docs.len(), positions.len());
                        for i in positions {
                            out[i] = Some(Err(Error::Internal(err.clone())));
                        }
                    }
                    Err(err) => {
                        for i in positions {
                            out[i] = Some(Err(Error::from(WireError::from(&err))));
                        }
                    }
                }
            }
        }
        out.into_iter()
            .map(|doc| doc.unwrap_or_else(|| Err(Error::Internal("a get lost its result".into()))))
            .collect()
    }

    /// Adds the fields of `update` to the mapping (Elasticsearch's
    /// `PUT /{index}/_mapping`): new fields and multi-fields are added, a
    /// field keeps its type, and `dynamic` is replaced when given. Documents
    /// already indexed are not re-read: a newly mapped field covers the
    /// documents written from now on.
    pub fn put_mapping(&self, update: Mapping, dynamic: Option<Dynamic>) -> Result<()> {
        if self.is_deleted() {
            return Err(Error::IndexNotFound(self.name()));
        }
        let _guard = self.write_lock.lock();
        let mut meta = self.meta();
        for (path, field) in update.fields {
            match meta.mapping.fields.get(&path).cloned() {
                Some(existing) if existing.ty != field.ty => {
                    return Err(Error::illegal_argument(format!(
                        "mapper [{path}] cannot be changed from type [{}] to [{}]",
                        existing.ty.name(),
                        field.ty.name()
                    )));
                }
                Some(mut existing) => {
                    for (name, sub) in field.fields {
                        match existing.fields.get(&name) {
                            Some(old) if old.ty != sub.ty => {
                                return Err(Error::illegal_argument(format!(
                                    "mapper [{path}.{name}] cannot be changed from type [{}] to [{}]",
                                    old.ty.name(),
                                    sub.ty.name()
                                )));
                            }
                            Some(_) => {}
                            None => {
                                check_no_fields_at(&meta.mapping, &format!("{path}.{name}"))?;
                                existing.fields.insert(name, sub);
                            }
                        }
                    }
                    meta.mapping.fields.insert(path, existing);
                }
                None => {
                    check_new_path(&meta.mapping, &path)?;
                    for name in field.fields.keys() {
                        check_new_path(&meta.mapping, &format!("{path}.{name}"))?;
                    }
                    meta.mapping.fields.insert(path, field);
                }
            }
        }
        if let Some(d) = dynamic {
            meta.mapping.dynamic = d;
        }
        self.install_mapping(meta)
    }

    /// Makes `meta`'s mapping the index's: commits the shards (documents
    /// still in the translogs were parsed with the old mapping, and a replay
    /// must never re-read them with the new one), persists it and sends it
    /// to the other nodes. Callers hold the write lock.
    fn install_mapping(&self, meta: IndexMeta) -> Result<()> {
        for shard in self.opened() {
            shard.refresh()?;
        }
        write_meta(&self.dir, &meta)?;
        *self.meta.write() = meta.clone();
        if let Some(peers) = &self.peers {
            peers.mapping_changed(&meta)?;
        }
        Ok(())
    }

    /// Replaces the mapping with one another node sent (a superset of
    /// this one, made by the same merge rules).
    pub fn receive_mapping(&self, mapping: Mapping) -> Result<()> {
        let _guard = self.write_lock.lock();
        let mut meta = self.meta();
        if meta.mapping == mapping {
            return Ok(());
        }
        for (path, field) in &meta.mapping.fields {
            if mapping.fields.get(path).is_none_or(|f| f.ty != field.ty) {
                return Err(Error::illegal_argument(format!(
                    "mapping of index [{}] from another node drops or changes field [{path}]",
                    meta.name
                )));
            }
        }
        meta.mapping = mapping;
        for shard in self.opened() {
            shard.refresh()?;
        }
        write_meta(&self.dir, &meta)?;
        *self.meta.write() = meta;
        Ok(())
    }

    /// Applies a batch of writes. Every write that is acknowledged as
    /// successful has been fsynced to its shard's translog, on whichever
    /// node holds the shard. Other nodes make their writes searchable as
    /// `refresh` asks before they answer; `touched` lists the shards on this
    /// node, for the caller to do the same.
    pub fn write(&self, writes: Vec<DocWrite>, refresh: RefreshPolicy) -> Result<BatchResult> {
        if self.is_deleted() {
            return Err(Error::IndexNotFound(self.name()));
        }
        match &self.peers {
            Some(peers) if !self.meta.read().allocation.is_empty() => {
                self.write_routed(peers, writes, refresh)
            }
            _ => self.write_local(writes, refresh),
        }
    }

    /// Writes to an index with shards on other nodes: ids are assigned
    /// first so that every write has its shard, the mapping grows once for
    /// the whole batch (and reaches every node before any document does),
    /// and each node gets its writes in one request, in request order.
    fn write_routed(
        &self,
        peers: &Arc<dyn Peers>,
        mut writes: Vec<DocWrite>,
        refresh: RefreshPolicy,
    ) -> Result<BatchResult> {
        for write in &mut writes {
            if let DocWrite::Index { id: id @ None, .. } = write {
                *id = Some(crate::ids::generate());
            }
        }
        self.extend_mapping(&writes)?;
        // Every write's id, for the results of writes whose node failed.
        let ids: Vec<Option<String>> = writes.iter().map(|w| w.id().map(str::to_string)).collect();
        let meta = self.meta();
        let mut local = Vec::new();
        let mut remote: BTreeMap<String, Vec<(usize, DocWrite)>> = BTreeMap::new();
        for (i, write) in writes.into_iter().enumerate() {
            let n = self.shard_number(write.id().unwrap_or_default());
            match meta.shard_node(n) {
                Some(node) if node != peers.node_id() => {
                    remote.entry(node.to_string()).or_default().push((i, write))
                }
                _ => local.push((i, write)),
            }
        }
        let total = local.len() + remote.values().map(Vec::len).sum::<usize>();
        let mut items: Vec<Option<ItemResult>> = (0..total).map(|_| None).collect();
        let mut touched = HashMap::new();
        std::thread::scope(|scope| {
            let calls: Vec<_> = remote
                .into_iter()
                .map(|(node, batch)| {
                    let meta = &meta;
                    scope.spawn(move || {
                        let (positions, writes): (Vec<usize>, Vec<DocWrite>) = batch.into_iter().unzip();
                        let outcome = peers.write(&node, meta, writes, refresh);
                        (positions, outcome)
                    })
                })
                .collect();
            // Each write gets its node's result, or its node's failure.
            let mut place = |positions: Vec<usize>, outcome: Result<Vec<ItemResult>>| {
                let outcome = outcome.and_then(|results| {
                    if results.len() == positions.len() {
                        Ok(results)
                    } else {
                        Err(Error::Internal(format!(
                            "a node answered {} results for {} writes",
                            results.len(),
                            positions.len()
                        )))
                    }
                });
                match outcome {
                    Ok(results) => {
                        for (pos, item) in positions.into_iter().zip(results) {
                            items[pos] = Some(item);
                        }
                    }
                    Err(err) => {
                        let wire = crate::peers::WireError::from(&err);
                        for pos in positions {
                            items[pos] = Some((ids[pos].clone(), Err(wire.clone().into())));
                        }
                    }
                }
            };
            if !local.is_empty() {
                let (positions, writes): (Vec<usize>, Vec<DocWrite>) = local.into_iter().unzip();
                let outcome = self.write_local(writes, refresh).map(|batch| {
                    touched = batch.touched;
                    batch.items
                });
                place(positions, outcome);
            }
            for call in calls {
                if let Ok((positions, outcome)) = call.join() {
                    place(positions, outcome);
                }
            }
        });
        let items = items
            .into_iter()
            .map(|item| {
                item.unwrap_or_else(|| (None, Err(Error::Internal("a write lost its result".into()))))
            })
            .collect();
        Ok(BatchResult { items, touched })
    }

    /// Adds the fields the writes map dynamically, before they are routed.
    /// Documents that do not parse are left for the shard's node to reject.
    fn extend_mapping(&self, writes: &[DocWrite]) -> Result<()> {
        let _guard = self.write_lock.lock();
        let mut mapping = self.mapping();
        let mut changed = false;
        for write in writes {
            let mut extend = |source: &str| {
                if let Ok((_, c)) = parse_with(write.id().unwrap_or_default(), source, &mut mapping) {
                    changed |= c;
                }
            };
            match write {
                DocWrite::Index { source, .. } => extend(source),
                DocWrite::Update { doc, upsert, .. } => {
                    for partial in doc.iter().chain(upsert) {
                        extend(&partial.to_string());
                    }
                }
                DocWrite::Delete { .. } => {}
            }
        }
        if !changed {
            return Ok(());
        }
        let mut meta = self.meta();
        meta.mapping = mapping;
        self.install_mapping(meta)
    }

    /// Applies writes to the shards whose primary is on this node; an
    /// update with `retry_on_conflict` that meets a version conflict reads
    /// the document and merges again, up to that many times, before any
    /// later write of the batch to the same id (as Elasticsearch retries
    /// an item in place).
    ///
    /// An update of an id that an earlier write of the batch also writes
    /// builds on that write, and fails when it failed (a `create` of a
    /// stored document). The updates that end the writes of their id in
    /// the batch and follow such a failed write are then applied again, as
    /// a batch of their own, to the document as stored, as Elasticsearch
    /// applies the items of a bulk one after the other.
    fn write_local(&self, writes: Vec<DocWrite>, refresh: RefreshPolicy) -> Result<BatchResult> {
        if !writes.iter().any(|w| matches!(w, DocWrite::Update { .. })) {
            return self.write_local_runs(writes, refresh);
        }
        // The positions of the writes of each id that the batch writes more
        // than once.
        let mut by_id: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, write) in writes.iter().enumerate() {
            if let Some(id) = write.id() {
                by_id.entry(id).or_default().push(i);
            }
        }
        let chains: Vec<Vec<usize>> = by_id.into_values().filter(|chain| chain.len() > 1).collect();
        // The updates that may follow a failed write, kept to apply again.
        let mut followers: HashMap<usize, DocWrite> = chains
            .iter()
            .flat_map(|chain| &chain[1..])
            .filter(|i| matches!(writes[**i], DocWrite::Update { .. }))
            .map(|i| (*i, writes[*i].clone()))
            .collect();
        let mut batch = self.write_local_runs(writes, refresh)?;
        for chain in &chains {
            // The updates at the end of the chain that met a conflict,
            // after a write that failed.
            let followed = |i: &usize| {
                followers.contains_key(i) && matches!(&batch.items[*i].1, Err(err) if err.status() == 409)
            };
            let start = chain.len() - chain.iter().rev().take_while(|i| followed(i)).count();
            if start == 0 || start == chain.len() || batch.items[chain[start - 1]].1.is_ok() {
                continue;
            }
            let tail = &chain[start..];
            let again = tail.iter().filter_map(|i| followers.remove(i)).collect();
            let again = self.write_local(again, refresh)?;
            merge_touched(&mut batch.touched, again.touched);
            for (i, item) in tail.iter().zip(again.items) {
                batch.items[*i] = item;
            }
        }
        Ok(batch)
    }

    /// [`Index::write_local`] without applying updates that followed a
    /// failed write again.
    fn write_local_runs(&self, writes: Vec<DocWrite>, refresh: RefreshPolicy) -> Result<BatchResult> {
        let retries = |w: &DocWrite| match w {
            DocWrite::Update {
                retry_on_conflict, ..
            } => *retry_on_conflict,
            _ => 0,
        };
        if writes.iter().all(|w| retries(w) == 0) {
            return self.write_local_once(writes, refresh);
        }
        // The batch is cut after each such update that a later write of
        // the batch names again.
        let ids: Vec<Option<String>> = writes.iter().map(|w| w.id().map(str::to_string)).collect();
        let n = writes.len();
        let mut done = BatchResult {
            items: Vec::with_capacity(n),
            touched: HashMap::new(),
        };
        let mut run = Vec::new();
        for (i, write) in writes.into_iter().enumerate() {
            let cut = retries(&write) > 0 && ids[i + 1..].contains(&ids[i]);
            run.push(write);
            if cut || i + 1 == n {
                let batch = self.write_retrying(std::mem::take(&mut run), refresh)?;
                done.items.extend(batch.items);
                merge_touched(&mut done.touched, batch.touched);
            }
        }
        Ok(done)
    }

    /// Applies writes, then tries each update with `retry_on_conflict`
    /// that met a version conflict again, up to that many times.
    fn write_retrying(&self, writes: Vec<DocWrite>, refresh: RefreshPolicy) -> Result<BatchResult> {
        let retried: Vec<(usize, DocWrite, u32)> = writes
            .iter()
            .enumerate()
            .filter_map(|(i, w)| match w {
                DocWrite::Update {
                    retry_on_conflict, ..
                } if *retry_on_conflict > 0 => Some((i, w.clone(), *retry_on_conflict)),
                _ => None,
            })
            .collect();
        let mut batch = self.write_local_once(writes, refresh)?;
        for (position, write, retries) in retried {
            for _ in 0..retries {
                if !matches!(&batch.items[position].1, Err(err) if err.status() == 409) {
                    break;
                }
                let again = self.write_local_once(vec![write.clone()], refresh)?;
                merge_touched(&mut batch.touched, again.touched);
                if let Some(item) = again.items.into_iter().next() {
                    batch.items[position] = item;
                }
            }
        }
        Ok(batch)
    }

    /// [`Index::write_local`], each write tried once.
    fn write_local_once(&self, writes: Vec<DocWrite>, refresh: RefreshPolicy) -> Result<BatchResult> {
        let n = writes.len();
        let mut items: Vec<Option<(Option<String>, Result<WriteResult>)>> = (0..n).map(|_| None).collect();
        let mut per_shard: HashMap<u32, Vec<(usize, ShardWrite)>> = HashMap::new();
        let writes = match self.prepare_without_mapping_change(writes, &mut items, &mut per_shard) {
            Ok(()) => Vec::new(),
            Err(writes) => writes,
        };
        if !writes.is_empty() {
            let _guard = self.write_lock.lock();
            let mut mapping = self.mapping();
            let mut mapping_changed = false;
            // Sources written earlier in this batch, for updates of the same id.
            let mut pending: HashMap<String, (Option<Arc<str>>, usize)> = HashMap::new();
            for (i, write) in writes.into_iter().enumerate() {
                match self.prepare(i, write, &mut mapping, &mut pending) {
                    Ok(Prepared::Write(id, changed, shard_write)) => {
                        mapping_changed |= changed;
                        self.shard_batch(&mut per_shard, &id, n).push((i, shard_write));
                    }
                    Ok(Prepared::Noop(result)) => items[i] = Some((Some(result.id.clone()), Ok(result))),
                    Err((id, err)) => items[i] = Some((id, Err(err))),
                }
            }
            if mapping_changed {
                let mut meta = self.meta();
                meta.mapping = mapping;
                self.install_mapping(meta)?;
            }
        }
        let mut touched = HashMap::new();
        for (shard_no, batch) in per_shard {
            let (positions, writes): (Vec<usize>, Vec<ShardWrite>) = batch.into_iter().unzip();
            let ids: Vec<String> = writes
                .iter()
                .map(|w| match w {
                    ShardWrite::Index { id, .. }
                    | ShardWrite::Delete { id, .. }
                    | ShardWrite::Noop { id, .. } => id.clone(),
                })
                .collect();
            let outcomes = match self.write_shard(shard_no, writes, refresh) {
                Ok(outcomes) => outcomes,
                Err(err) => {
                    // The shard could not log the batch: none of its writes happened.
                    tracing::error!(index = %self.name(), shard = shard_no, %err, "shard write failed");
                    ids.iter()
                        .map(|_| {
                            Err(Error::Internal(format!(
                                "shard [{shard_no}] failed to write: {err}"
                            )))
                        })
                        .collect()
                }
            };
            for ((pos, id), outcome) in positions.into_iter().zip(ids).zip(outcomes) {
                items[pos] = Some(match outcome {
                    Ok(o) => {
                        let seq = touched.entry(shard_no).or_insert(o.seq_no);
                        *seq = (*seq).max(o.seq_no);
                        let result = WriteResult {
                            id,
                            shard: shard_no,
                            version: o.version,
                            seq_no: o.seq_no,
                            result: o.result,
                        };
                        (None, Ok(result))
                    }
                    Err(err) => (Some(id), Err(err)),
                });
            }
        }
        let items = items
            .into_iter()
            .map(|item| item.unwrap_or_else(|| (None, Err(Error::Internal("write lost its result".into())))))
            .collect();
        Ok(BatchResult { items, touched })
    }

    /// Writes a batch to shard `n`, whose primary is on this node, and sends
    /// what it logged to every in-sync replica; answers when each replica
    /// has fsynced it too, or is reported out of sync (and so can no longer
    /// become primary). A write whose replica can be neither reached nor
    /// reported fails: it is not acknowledged.
    fn write_shard(
        &self,
        n: u32,
        writes: Vec<ShardWrite>,
        refresh: RefreshPolicy,
    ) -> Result<Vec<Result<crate::shard::WriteOutcome>>> {
        let shard = self.local_shard(n)?;
        let _order = self.replication[n as usize].lock();
        let meta = self.meta();
        let Some(peers) = self.peers.as_ref().filter(|_| !meta.replica_nodes(n).is_empty()) else {
            return shard.write(writes);
        };
        if meta.shard_node(n) != Some(peers.node_id()) {
            return Err(Error::unavailable(format!(
                "shard [{n}] of index [{}] has its primary on node [{}], not here",
                meta.name,
                meta.shard_node(n).unwrap_or_default()
            )));
        }
        let (outcomes, ops) = shard.write_logged(writes)?;
        if ops.is_empty() {
            return Ok(outcomes);
        }
        let failed: Vec<(String, Error)> = std::thread::scope(|scope| {
            let calls: Vec<_> = meta
                .replica_nodes(n)
                .iter()
                .map(|node| {
                    let ops = ops.clone();
                    let meta = &meta;
                    scope.spawn(move || (node.clone(), peers.replicate(node, meta, n, ops, refresh)))
                })
                .collect();
            calls
                .into_iter()
                .filter_map(|c| c.join().ok())
                .filter_map(|(node, r)| r.err().map(|e| (node, e)))
                .collect()
        });
        for (node, err) in failed {
            tracing::warn!(index = %meta.name, shard = n, %node, %err, "a replica failed; marking it out of sync");
            let updated = peers.copy_failed(&meta, n, &node, &err.to_string())?;
            self.receive_allocation(&updated)?;
        }
        Ok(outcomes)
    }

    /// Applies writes the primary on node `primary` logged to this node's
    /// replica of shard `n`, making them searchable when `refresh` asks.
    /// Refused from a node that is no longer the primary (a replica was
    /// promoted meanwhile), and on the primary itself.
    pub fn apply_replicated(
        &self,
        n: u32,
        primary: &str,
        ops: Vec<Op>,
        refresh: RefreshPolicy,
    ) -> Result<()> {
        let meta = self.meta();
        if meta.shard_node(n) != Some(primary) {
            return Err(Error::unavailable(format!(
                "node [{primary}] is not the primary of shard [{n}] of index [{}] (node [{}] is)",
                meta.name,
                meta.shard_node(n).unwrap_or_default()
            )));
        }
        let shard = self
            .shards
            .read()
            .get(n as usize)
            .cloned()
            .flatten()
            .ok_or_else(|| {
                Error::unavailable(format!(
                    "this node has no copy of shard [{n}] of index [{}]",
                    self.name()
                ))
            })?;
        shard.apply_logged(ops)?;
        if refresh != RefreshPolicy::None {
            shard.refresh()?;
        }
        Ok(())
    }

    /// Rebuilds shard `n` on `target` from this node's primary: commits
    /// it, sends its files, and records the new copy in sync. Writes to the
    /// shard wait meanwhile, so the copy misses none.
    pub fn recover_to(&self, n: u32, target: &str) -> Result<()> {
        let peers = self
            .peers
            .as_ref()
            .ok_or_else(|| Error::illegal_argument("this node is not part of a cluster"))?;
        let shard = self.local_shard(n)?;
        let _order = self.replication[n as usize].lock();
        let meta = self.meta();
        if meta.shard_node(n) != Some(peers.node_id()) {
            return Err(Error::unavailable(format!(
                "this node does not hold the primary of shard [{n}] of index [{}]",
                meta.name
            )));
        }
        if meta.holds(target, n) {
            return Ok(());
        }
        shard.refresh()?;
        // The commit as it is now: a merge may commit again while the files
        // are sent, and the copy is of this one.
        let dir = self.shard_dir(n);
        let meta_json = std::fs::read(dir.join("meta.json"))?;
        tracing::info!(index = %meta.name, shard = n, %target, "recovering a copy");
        peers.send_copy(target, &meta, n, &dir, &meta_json)?;
        let updated = peers.copy_in_sync(&meta, n, target)?;
        self.receive_allocation(&updated)?;
        tracing::info!(index = %meta.name, shard = n, %target, "the copy is in sync");
        Ok(())
    }

    /// The writes for the shard of `id` in a batch of `batch_len`, made
    /// with room for the shard's even share and a quarter more, so that the
    /// vector (of large elements) rarely grows, and then once.
    fn shard_batch<'a>(
        &self,
        per_shard: &'a mut HashMap<u32, Vec<(usize, ShardWrite)>>,
        id: &str,
        batch_len: usize,
    ) -> &'a mut Vec<(usize, ShardWrite)> {
        let even = batch_len / self.num_shards.max(1) as usize;
        per_shard
            .entry(shard_for_id(id, self.num_shards))
            .or_insert_with(|| Vec::with_capacity(even + even / 4 + 1))
    }

    /// Where shard `n` lives on this node.
    pub fn shard_dir(&self, n: u32) -> PathBuf {
        self.dir.join("shards").join(n.to_string())
    }

    /// Where a copy of shard `n` sent by its primary is put together.
    pub fn staging_dir(&self, n: u32) -> PathBuf {
        self.dir.join("recovery").join(n.to_string())
    }

    /// Starts receiving a copy of shard `n`: an empty staging directory.
    pub fn start_copy(&self, n: u32) -> Result<()> {
        let staged = self.staging_dir(n);
        if staged.exists() {
            std::fs::remove_dir_all(&staged)?;
        }
        std::fs::create_dir_all(&staged)?;
        Ok(())
    }

    /// Writes `data` at `offset` of file `file` of the copy of shard `n`.
    pub fn receive_copy_chunk(&self, n: u32, file: &str, offset: u64, data: &[u8]) -> Result<()> {
        use std::io::{Seek, Write};
        if file.is_empty() || file.contains(['/', '\\']) || file.starts_with("..") {
            return Err(Error::illegal_argument(format!(
                "bad file name [{file}] in a shard copy"
            )));
        }
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(self.staging_dir(n).join(file))?;
        out.seek(std::io::SeekFrom::Start(offset))?;
        out.write_all(data)?;
        Ok(())
    }

    /// Installs the copy of shard `n` put together in its staging
    /// directory (fsynced first) in place of the one this node had.
    pub fn install_copy(&self, n: u32) -> Result<()> {
        let staged = self.staging_dir(n);
        for entry in std::fs::read_dir(&staged)? {
            std::fs::File::open(entry?.path())?.sync_all()?;
        }
        std::fs::File::open(&staged)?.sync_all()?;
        let dir = self.shard_dir(n);
        let old = self
            .shards
            .write()
            .get_mut(n as usize)
            .ok_or_else(|| Error::illegal_argument(format!("index [{}] has no shard [{n}]", self.name())))?
            .take();
        if let Some(old) = &old {
            old.release_waiters();
        }
        // Its writer holds the directory's lock until the last user (a
        // refresh, a scan) lets go of it.
        let mut old = old;
        let mut waits = 0;
        while let Some(shard) = old {
            match Arc::try_unwrap(shard) {
                Ok(shard) => {
                    drop(shard);
                    old = None;
                }
                Err(shared) if waits < 200 => {
                    old = Some(shared);
                    waits += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(_) => {
                    return Err(Error::unavailable(format!(
                        "the old copy of shard [{n}] of index [{}] is still in use",
                        self.name()
                    )));
                }
            }
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::rename(&staged, &dir)?;
        std::fs::File::open(self.dir.join("shards"))?.sync_all()?;
        let own = self.meta.read().own_field_types();
        let shard = Shard::open(
            &dir,
            n,
            writer_threads(self.num_shards),
            &own,
            reparse(&self.meta),
        )?;
        self.shards.write()[n as usize] = Some(Arc::new(shard));
        Ok(())
    }

    /// Records the cluster store's revision that created this incarnation.
    pub fn set_created_revision(&self, revision: i64) -> Result<()> {
        let _guard = self.write_lock.lock();
        let mut mine = self.meta();
        mine.created_revision = revision;
        write_meta(&self.dir, &mine)?;
        *self.meta.write() = mine;
        Ok(())
    }

    /// Takes the copies of each shard and the aliases from newer metadata
    /// of this incarnation (a promotion, a copy out of sync, a new copy, an
    /// alias added or removed).
    pub fn receive_allocation(&self, meta: &IndexMeta) -> Result<()> {
        let _guard = self.write_lock.lock();
        let mut mine = self.meta();
        if mine.uuid != meta.uuid || meta.version <= mine.version || self.is_deleted() {
            return Ok(());
        }
        mine.allocation = meta.allocation.clone();
        mine.replicas = meta.replicas.clone();
        mine.aliases = meta.aliases.clone();
        mine.version = meta.version;
        write_meta(&self.dir, &mine)?;
        *self.meta.write() = mine;
        Ok(())
    }

    /// Whether the alias `name` names this index.
    pub fn has_alias(&self, name: &str) -> bool {
        self.meta.read().aliases.contains_key(name)
    }

    /// The aliases that name this index.
    pub fn aliases(&self) -> BTreeMap<String, AliasMeta> {
        self.meta.read().aliases.clone()
    }

    /// Changes the aliases that name this index from `old`, the aliases
    /// the change was computed from, to `aliases` (see
    /// [`apply_alias_change`]). In a cluster the change goes to the
    /// cluster's store first, which orders it with other nodes' changes, and
    /// is then taken here as every node takes it (no lock is held across
    /// the calls).
    pub fn set_aliases(
        &self,
        old: &BTreeMap<String, AliasMeta>,
        aliases: &BTreeMap<String, AliasMeta>,
    ) -> Result<()> {
        let Some(peers) = &self.peers else {
            let _guard = self.write_lock.lock();
            if self.is_deleted() {
                return Err(Error::IndexNotFound(self.name()));
            }
            let mut mine = self.meta();
            mine.aliases = apply_alias_change(&mine.aliases, old, aliases);
            write_meta(&self.dir, &mine)?;
            *self.meta.write() = mine;
            return Ok(());
        };
        let mut changed = self.meta();
        changed.aliases = aliases.clone();
        let stored = peers.aliases_changed(&changed, old)?;
        self.receive_allocation(&stored)
    }

    /// The common case of a batch of documents to index that fit the mapping
    /// as it is: parsed without taking the index's write lock, so that
    /// concurrent bulks parse in parallel (the shard resolves versions, and
    /// repeated ids, in order). Hands the writes back when the batch has
    /// updates or deletes, or needs a mapping change; they then go through
    /// the sequential path.
    #[allow(clippy::type_complexity)]
    fn prepare_without_mapping_change(
        &self,
        writes: Vec<DocWrite>,
        items: &mut [Option<(Option<String>, Result<WriteResult>)>],
        per_shard: &mut HashMap<u32, Vec<(usize, ShardWrite)>>,
    ) -> std::result::Result<(), Vec<DocWrite>> {
        if !writes.iter().all(|w| matches!(w, DocWrite::Index { .. })) {
            return Err(writes);
        }
        let mapping = self.meta.read().mapping.clone();
        let batch_len = writes.len();
        // Each write's id (whether generated) and parsed document, or its failure.
        let mut parsed = Vec::with_capacity(batch_len);
        for write in &writes {
            let DocWrite::Index { id, source, .. } = write else {
                return Err(writes);
            };
            let (id, generated) = match id {
                Some(id) => match validate_id(id.clone()) {
                    Ok(id) => (id, false),
                    Err(err) => {
                        parsed.push(Err((None, err)));
                        continue;
                    }
                },
                None => (crate::ids::generate(), true),
            };
            match parse_document(&id, source, &mapping) {
                Ok((doc, update)) if update.is_empty() => parsed.push(Ok((id, generated, doc))),
                Ok(_) => return Err(writes),
                Err(err) => parsed.push(Err((Some(id), err))),
            }
        }
        for (position, (write, parsed)) in writes.into_iter().zip(parsed).enumerate() {
            let DocWrite::Index {
                source,
                create,
                condition,
                ..
            } = write
            else {
                continue;
            };
            match parsed {
                Ok((id, generated, doc)) => {
                    let batch = self.shard_batch(per_shard, &id, batch_len);
                    batch.push((
                        position,
                        index_write(position, id, generated, source, doc, create, condition),
                    ));
                }
                Err((id, err)) => items[position] = Some((id, Err(err))),
            }
        }
        Ok(())
    }

    /// Validates one write and turns it into a shard write (parse phase).
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        position: usize,
        write: DocWrite,
        mapping: &mut Mapping,
        pending: &mut HashMap<String, (Option<Arc<str>>, usize)>,
    ) -> std::result::Result<Prepared, (Option<String>, Error)> {
        match write {
            DocWrite::Index {
                id,
                source,
                create,
                condition,
            } => {
                let generated_id = id.is_none();
                let id = match id {
                    Some(id) => validate_id(id).map_err(|e| (None, e))?,
                    None => crate::ids::generate(),
                };
                let (doc, changed) = parse_with(&id, &source, mapping).map_err(|e| (Some(id.clone()), e))?;
                let write = index_write(
                    position,
                    id.clone(),
                    generated_id,
                    Arc::clone(&source),
                    doc,
                    create,
                    condition,
                );
                // A create of an id this batch already wrote can only fail:
                // later updates build on the earlier write.
                if !(create && matches!(pending.get(&id), Some((Some(_), _)))) {
                    pending.insert(id.clone(), (Some(source), position));
                }
                Ok(Prepared::Write(id, changed, write))
            }
            DocWrite::Update {
                id,
                doc,
                doc_as_upsert,
                upsert,
                if_seq_no,
                detect_noop,
                ..
            } => {
                let id = validate_id(id).map_err(|e| (None, e))?;
                let fail = |e: Error| (Some(id.clone()), e);
                // The source the update builds on, the condition the shard
                // writes it under, whether it must create the document (an
                // upsert), the write of this batch it follows, and the
                // version and sequence number of the stored document.
                let (current, condition, create, follows, stored) = match (pending.get(&id), if_seq_no) {
                    // A write earlier in this batch has no sequence number
                    // yet: a condition on one cannot hold.
                    (Some(_), Some(condition)) => {
                        let current = self.get(&id).map_err(fail)?.map(|d| d.seq_no);
                        return Err(fail(condition.conflict(id.clone(), current)));
                    }
                    (Some((source, from)), None) => (source.clone(), None, false, Some(*from), None),
                    (None, _) => match self.get(&id).map_err(fail)? {
                        // The merge is built on this write: the shard
                        // writes it only over that write, so that a write
                        // between the read and the shard's lock is not lost.
                        Some(stored) => {
                            if let Some(condition) = if_seq_no {
                                condition.check(&id, Some(stored.seq_no)).map_err(fail)?;
                            }
                            let unchanged = Condition::SeqNo(SeqNoCondition::unchanged(stored.seq_no));
                            let written = Some((stored.version, stored.seq_no));
                            (Some(stored.source), Some(unchanged), false, None, written)
                        }
                        None if if_seq_no.is_some() => return Err(fail(document_missing(&id))),
                        // An upsert creates the document, so that one
                        // written meanwhile is not replaced.
                        None => (None, None, true, None, None),
                    },
                };
                let current = current
                    .map(|text| serde_json::from_str::<Value>(&text))
                    .transpose()
                    .map_err(|e| fail(Error::Internal(format!("stored source is not JSON: {e}"))))?;
                let mut unchanged = false;
                let new_source = match (current, doc) {
                    (Some(mut cur), Some(partial)) => {
                        let before = detect_noop.then(|| cur.clone());
                        merge_json(&mut cur, partial);
                        unchanged = before.is_some_and(|b| b == cur);
                        cur
                    }
                    (Some(_), None) => {
                        return Err(fail(Error::illegal_argument("update requires [doc]")));
                    }
                    (None, Some(partial)) if doc_as_upsert => partial,
                    (None, _) => match upsert {
                        Some(u) => u,
                        None => return Err(fail(document_missing(&id))),
                    },
                };
                if let Some((version, seq_no)) = stored.filter(|_| unchanged) {
                    return Ok(Prepared::Noop(WriteResult {
                        shard: self.shard_number(&id),
                        id,
                        version,
                        seq_no,
                        result: "noop",
                    }));
                }
                // Built on an earlier write of this batch and leaving it as
                // it is: the shard answers with that write's version.
                if let Some(from) = follows.filter(|_| unchanged) {
                    return Ok(Prepared::Write(
                        id.clone(),
                        false,
                        ShardWrite::Noop {
                            id,
                            position,
                            follows: from,
                        },
                    ));
                }
                let text: Arc<str> = Arc::from(new_source.to_string());
                let (parsed, changed) = parse_with(&id, &text, mapping).map_err(fail)?;
                pending.insert(id.clone(), (Some(Arc::clone(&text)), position));
                Ok(Prepared::Write(
                    id.clone(),
                    changed,
                    ShardWrite::Index {
                        id,
                        source: text,
                        doc: parsed,
                        create,
                        condition,
                        generated_id: false,
                        position,
                        follows,
                    },
                ))
            }
            DocWrite::Delete { id, condition } => {
                let id = validate_id(id).map_err(|e| (None, e))?;
                pending.insert(id.clone(), (None, position));
                Ok(Prepared::Write(
                    id.clone(),
                    false,
                    ShardWrite::Delete {
                        id,
                        position,
                        condition,
                    },
                ))
            }
        }
    }

    /// Refreshes every shard.
    pub fn refresh(&self) -> Result<()> {
        if self.is_deleted() {
            return Ok(());
        }
        for shard in self.opened() {
            shard.refresh()?;
        }
        Ok(())
    }

    /// The term statistics of `query` over every shard of the index, on
    /// whichever node each is.
    pub fn term_stats(&self, query: &LeafQuery) -> Result<TermStats> {
        let meta = self.meta();
        let mut stats = self.local_term_stats(query, None)?;
        if let Some(peers) = &self.peers {
            // Shards that cannot be read are left out of the statistics as
            // they are left out of the search (see `unavailable_shards`).
            // One node per shard, as the search reads them (`read_node`);
            // a node answers for every shard it holds, so it is asked once
            // and its shards are not counted twice.
            let mut nodes: BTreeMap<String, Vec<u32>> = BTreeMap::new();
            for n in (0..self.num_shards()).filter(|&n| self.shard(n).is_none()) {
                if let Some(node) = self.read_node(n) {
                    nodes.entry(node).or_default().push(n);
                }
            }
            for (node, shards) in nodes {
                stats.merge(peers.term_stats(&node, &meta.name, &shards, query)?);
            }
        }
        Ok(stats)
    }

    /// The shards of the index whose node cannot serve them now, with the
    /// node and the reason.
    pub fn unavailable_shards(&self) -> Vec<ShardFailure> {
        let Some(peers) = &self.peers else {
            return Vec::new();
        };
        let meta = self.meta();
        (0..self.num_shards())
            .filter(|&n| self.read_node(n).is_none())
            .filter_map(|n| {
                let node = meta.shard_node(n)?;
                let reason = peers
                    .unavailable(node)
                    .unwrap_or_else(|| "no copy of the shard can be read".into());
                Some(ShardFailure {
                    shard: n,
                    node: node.to_string(),
                    reason,
                })
            })
            .collect()
    }

    /// The term statistics of `query` over the shards on this node, or
    /// those of them in `only`.
    pub fn local_term_stats(&self, query: &LeafQuery, only: Option<&[u32]>) -> Result<TermStats> {
        let mapping = self.mapping();
        let mut stats = TermStats::default();
        for shard in self.shards() {
            if only.is_some_and(|only| !only.contains(&shard.ordinal())) {
                continue;
            }
            stats.merge(TermStats::of_shard(&shard, &mapping, query)?);
        }
        Ok(stats)
    }

    /// Refreshes the shards on this node and asks every other node that
    /// holds shards of the index to refresh them.
    pub fn refresh_everywhere(&self) -> Result<()> {
        self.refresh()?;
        if let Some(peers) = &self.peers {
            let name = self.name();
            for node in self.other_nodes(&self.meta()) {
                peers.refresh(&node, &name)?;
            }
        }
        Ok(())
    }

    /// Force-merges every shard on this node (see [`Shard::force_merge`]).
    pub fn force_merge(&self, how: ForceMerge, flush: bool) -> Result<()> {
        if self.is_deleted() {
            return Ok(());
        }
        for shard in self.opened() {
            shard.force_merge(how, flush)?;
        }
        Ok(())
    }

    /// Force-merges every copy of every shard: this node's and the other
    /// nodes' all at once. Returns the metadata whose copies it merged, and
    /// the nodes that failed, this one included, with their error (their
    /// copies may be merged in part).
    pub fn force_merge_everywhere(
        &self,
        how: ForceMerge,
        flush: bool,
    ) -> Result<(IndexMeta, Vec<(String, Error)>)> {
        let Some(peers) = &self.peers else {
            self.force_merge(how, flush)?;
            return Ok((self.meta(), Vec::new()));
        };
        let meta = self.meta();
        let nodes = self.other_nodes(&meta);
        let name = &meta.name;
        let failed = std::thread::scope(|scope| {
            let calls: Vec<_> = nodes
                .iter()
                .map(|node| scope.spawn(|| peers.force_merge(node, name, how, flush)))
                .collect();
            let local = self
                .force_merge(how, flush)
                .err()
                .map(|err| (peers.node_id().to_string(), err));
            let remote = nodes.iter().zip(calls).filter_map(|(node, call)| {
                let result = call
                    .join()
                    .unwrap_or_else(|_| Err(Error::Internal("a force merge call panicked".into())));
                result.err().map(|err| (node.clone(), err))
            });
            local.into_iter().chain(remote).collect()
        });
        Ok((meta, failed))
    }

    /// The other nodes that `meta` lists as holding a copy of a shard of
    /// the index (none without peers).
    fn other_nodes(&self, meta: &IndexMeta) -> Vec<String> {
        let Some(peers) = &self.peers else {
            return Vec::new();
        };
        let nodes: std::collections::BTreeSet<&str> = (0..meta.settings.number_of_shards)
            .flat_map(|n| meta.copies(n))
            .filter(|n| *n != peers.node_id())
            .collect();
        nodes.into_iter().map(str::to_string).collect()
    }
}

impl DocWrite {
    /// The document id, when the write has one.
    pub fn id(&self) -> Option<&str> {
        match self {
            DocWrite::Index { id, .. } => id.as_deref(),
            DocWrite::Update { id, .. } | DocWrite::Delete { id, .. } => Some(id),
        }
    }
}

/// Fails when a new field path collides with the mapping: a parent path
/// that is a field (or a field's multi-field), or fields already below it.
fn check_new_path(mapping: &Mapping, path: &str) -> Result<()> {
    let conflict = |p: &str| {
        Err(Error::illegal_argument(format!(
            "can't merge a non object mapping [{p}] with an object mapping"
        )))
    };
    let mut prefix = String::new();
    for part in path.split('.') {
        if !prefix.is_empty() {
            if mapping.fields.contains_key(&prefix) {
                return conflict(&prefix);
            }
            prefix.push('.');
        }
        prefix.push_str(part);
    }
    if mapping.column(path).is_some() {
        return conflict(path);
    }
    check_no_fields_at(mapping, path)
}

/// Fails when fields exist at `path` or below it (where a new multi-field
/// of a mapped field would go).
fn check_no_fields_at(mapping: &Mapping, path: &str) -> Result<()> {
    let below = format!("{path}.");
    if mapping.fields.contains_key(path) || mapping.fields.keys().any(|k| k.starts_with(&below)) {
        return Err(Error::illegal_argument(format!(
            "can't merge a non object mapping [{path}] with an object mapping"
        )));
    }
    Ok(())
}

/// Adds the highest sequence numbers written per shard of `more`.
fn merge_touched(touched: &mut HashMap<u32, u64>, more: HashMap<u32, u64>) {
    for (shard, seq_no) in more {
        let highest = touched.entry(shard).or_insert(seq_no);
        *highest = (*highest).max(seq_no);
    }
}

/// Elasticsearch's error for an update of a document that does not exist.
fn document_missing(id: &str) -> Error {
    Error::NotFound {
        es_type: "document_missing_exception",
        reason: format!("[{id}]: document missing"),
    }
}

/// The shard write that indexes a parsed document.
fn index_write(
    position: usize,
    id: String,
    generated_id: bool,
    source: Arc<str>,
    doc: crate::document::ParsedDoc,
    create: bool,
    condition: Option<Condition>,
) -> ShardWrite {
    ShardWrite::Index {
        id,
        source,
        doc,
        create,
        condition,
        generated_id,
        position,
        follows: None,
    }
}

/// Parses a shard's logged writes by the index's mapping as it is when the
/// shard replays them (it holds every field they were written with).
fn reparse(meta: &Arc<RwLock<IndexMeta>>) -> Reparse {
    let meta = Arc::clone(meta);
    Arc::new(move |id, source| parse_logged_document(id, source, &meta.read().mapping))
}

/// Indexing threads of each shard's writer: the cores (at most 2) shared
/// among the index's shards, so that the shards of one bulk index in
/// parallel without more segments per refresh than cores.
fn writer_threads(num_shards: u32) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    (cores / num_shards.max(1) as usize).max(1)
}

/// Parses a document, applying its mapping update when it parsed.
fn parse_with(id: &str, source: &str, mapping: &mut Mapping) -> Result<(crate::document::ParsedDoc, bool)> {
    let (doc, update) = parse_document(id, source, mapping)?;
    let changed = !update.is_empty();
    crate::document::apply_update(mapping, update);
    Ok((doc, changed))
}

fn validate_id(id: String) -> Result<String> {
    if id.is_empty() {
        return Err(Error::illegal_argument(
            "if _id is specified it must not be empty",
        ));
    }
    if id.len() > 512 {
        return Err(Error::illegal_argument(format!(
            "id [{id}] is too long, must be no longer than 512 bytes but was: {}",
            id.len()
        )));
    }
    Ok(id)
}

/// Merges `patch` into `target` as Elasticsearch's partial update does:
/// objects merge recursively, everything else is replaced.
pub fn merge_json(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge_json(existing, v),
                    _ => {
                        t.insert(k, v);
                    }
                }
            }
        }
        (t, p) => *t = p,
    }
}

fn write_meta(dir: &Path, meta: &IndexMeta) -> Result<()> {
    write_json_durably(&dir.join(META_FILE), meta)
}

/// Writes `value` as the JSON file `path`, whole or not at all: through a
/// file beside it, synced and renamed over it, then the directory synced.
pub(crate) fn write_json_durably(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Internal(format!("[{}] has no directory", path.display())))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Internal(e.to_string()))?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Whether `dir` holds an index.
pub fn is_index_dir(dir: &Path) -> bool {
    dir.join(META_FILE).exists()
}

/// The metadata of the index stored in `dir`.
pub fn read_meta(dir: &Path) -> Result<IndexMeta> {
    serde_json::from_slice(&std::fs::read(dir.join(META_FILE))?)
        .map_err(|e| Error::Corrupt(format!("corrupt index metadata in {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::indices::Indices;

    fn index(id: &str, source: Value) -> DocWrite {
        DocWrite::Index {
            id: Some(id.into()),
            source: Arc::from(source.to_string()),
            create: false,
            condition: None,
        }
    }

    fn update(id: &str, doc: Value) -> DocWrite {
        DocWrite::Update {
            id: id.into(),
            doc: Some(doc),
            doc_as_upsert: false,
            upsert: None,
            if_seq_no: None,
            retry_on_conflict: 0,
            detect_noop: true,
        }
    }

    /// An update merges into the source it read; a write that lands
    /// between that read and the shard's lock must fail the update, not be
    /// overwritten by the merge of the older source. The two steps run
    /// apart here, with the other write between them.
    #[test]
    fn an_update_is_written_only_over_the_write_it_merged_into() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let indices = Indices::open(dir.path())?;
        let idx = indices.create("docs", None)?;
        idx.write(vec![index("1", json!({"a": 1}))], RefreshPolicy::None)?;

        let cases = [
            // A delete and a re-index bring the version back to the one
            // the update read, once the delete's version is forgotten
            // (after `GC_DELETES`): only the sequence number tells the
            // writes apart.
            vec![
                DocWrite::Delete {
                    id: "1".into(),
                    condition: None,
                },
                index("1", json!({"a": 3})),
            ],
            vec![index("1", json!({"a": 2}))],
        ];
        for between in cases {
            let read = idx.get("1")?.map(|d| d.seq_no);
            let mut mapping = idx.mapping();
            let Prepared::Write(_, _, prepared) = idx
                .prepare(0, update("1", json!({"b": 1})), &mut mapping, &mut HashMap::new())
                .map_err(|(_, e)| e)?
            else {
                anyhow::bail!("the update was taken for a noop");
            };
            idx.write(between, RefreshPolicy::None)?;
            let newer = idx.get("1")?.map(|d| (d.version, d.seq_no, d.source.to_string()));
            let outcome = idx.write_shard(idx.shard_number("1"), vec![prepared], RefreshPolicy::None)?;
            let Some(Err(err)) = outcome.into_iter().next() else {
                anyhow::bail!("the update was written over the newer write");
            };
            assert_eq!(err.status(), 409, "{err}");
            assert!(
                err.to_string()
                    .contains(&format!("required seqNo [{}]", read.unwrap_or(u64::MAX))),
                "{err}"
            );
            assert_eq!(
                idx.get("1")?.map(|d| (d.version, d.seq_no, d.source.to_string())),
                newer,
                "the newer write stays"
            );
        }
        Ok(())
    }
}
