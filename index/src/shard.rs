//! One shard: a tantivy index directory plus its translog.
//!
//! Writes are serialized per shard: they are appended to the translog and
//! fsynced, then handed to the tantivy writer. A refresh commits tantivy
//! (recording the next sequence number in the commit payload), reloads the
//! reader and drops the translog generations the commit holds. Until then,
//! writes are tracked in a live version map so that versions and realtime
//! `GET`s are right. Writes with generated ids (whose ids no other write
//! has) skip the map, as Elasticsearch's append-only writes skip its
//! version map: the range of their ids is kept instead, and the first
//! lookup of an id in that range lists them from the translog.
//!
//! A commit takes its snapshot under the write lock, but runs without it:
//! writes go on meanwhile (logged and acknowledged as always), and their
//! changes wait for the writer in order and reach it with the next write
//! after the commit (or the next commit). The live map the snapshot holds
//! is kept beside the new one until the reader sees the commit, as
//! Elasticsearch's live version map does.
//!
//! If the tantivy writer fails (a commit that cannot write its segments, an
//! indexing thread that died), the changes it took are gone with it, but
//! the translog still holds their writes. Writes go on being logged and
//! acknowledged; the next refresh rolls the writer back to its last commit
//! and replays the translog past it before it commits, so that no commit
//! drops a translog generation whose writes tantivy lost.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use serde_json::Value;
use tantivy::columnar::Column;
use tantivy::directory::MmapDirectory;
use tantivy::index::SegmentComponent;
use tantivy::schema::document::{ReferenceValue, ReferenceValueLeaf};
use tantivy::schema::{IndexRecordOption, Value as _};
use tantivy::{
    Directory as _, DocAddress, DocSet, HasLen as _, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher,
    SegmentMeta, TantivyDocument, TantivyError, Term,
};
use tokio::sync::watch;

use crate::activity::Activity;
use crate::document::{FieldValue, ParsedDoc};
use crate::error::{Error, Result};
use crate::index::{Condition, GC_DELETES};
use crate::mapping::FieldType;
use crate::merge::{self, ForceMerge, SegmentStats};
use crate::schema::{self, Fields, names};
use crate::translog::{Op, OpKind, Translog};

const WRITER_MEMORY: usize = 128 << 20;
/// Changes that may wait for the writer while a commit runs; writes past
/// this many wait for the commit.
const MAX_PENDING: usize = 50_000;

/// Turns a logged source back into typed content with the index's current
/// mapping (for translog replays).
pub type Reparse = Arc<dyn Fn(&str, &str) -> Result<ParsedDoc> + Send + Sync>;

/// A stored document as `GET` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDoc {
    /// Document version.
    pub version: u64,
    /// Sequence number of its last write.
    pub seq_no: u64,
    /// The original JSON source.
    pub source: Arc<str>,
}

#[derive(Debug, Clone)]
struct LiveEntry {
    version: u64,
    seq_no: u64,
    /// `None` for a delete.
    source: Option<Arc<str>>,
}

/// A write to apply to a shard.
#[derive(Debug)]
pub enum ShardWrite {
    /// Index (or replace) a document.
    Index {
        /// Document id.
        id: String,
        /// Original JSON source.
        source: Arc<str>,
        /// Parsed, typed content.
        doc: ParsedDoc,
        /// `create`: fail if the document exists.
        create: bool,
        /// What the document's last write must be.
        condition: Option<Condition>,
        /// The id was generated for this write, so no document has it yet.
        generated_id: bool,
        /// Position of this write in its batch.
        position: usize,
        /// The source was built on the result of the write at this position
        /// of the same batch (an update after an index): fail if it failed.
        follows: Option<usize>,
    },
    /// Delete a document.
    Delete {
        /// Document id.
        id: String,
        /// Position of this write in its batch.
        position: usize,
        /// What the document's last write must be.
        condition: Option<Condition>,
    },
    /// An update that leaves the document as the write at position
    /// `follows` of the same batch wrote it: nothing is written, and the
    /// outcome is that write's version and sequence number, as `noop`
    /// (a failure if that write failed).
    Noop {
        /// Document id.
        id: String,
        /// Position of this write in its batch.
        position: usize,
        /// Position of the write it leaves as it is.
        follows: usize,
    },
}

/// The outcome of one write.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    /// Version after the write.
    pub version: u64,
    /// Sequence number of the write.
    pub seq_no: u64,
    /// `created`, `updated`, `deleted`, `not_found` or `noop`.
    pub result: &'static str,
}

struct WriteState {
    translog: Translog,
    /// Writes since the snapshot of the last commit (but those of
    /// `unlisted`), and those a listing added.
    live: HashMap<String, LiveEntry>,
    /// Writes of the snapshot of a commit the reader does not see yet.
    refreshing: HashMap<String, LiveEntry>,
    /// Writes with generated ids that `live` does not list.
    unlisted: Unlisted,
    /// Those of them that `refreshing` does not list.
    unlisted_refreshing: Unlisted,
    /// A lookup listed the unlisted writes since the last snapshot: until
    /// the next one, writes with generated ids go to `live` too, so that a
    /// client reading each document it just wrote causes one listing per
    /// refresh, not one per read.
    list_generated: bool,
    /// Changes waiting for the writer while a commit holds it, in order.
    pending: Vec<Change>,
    next_seq: u64,
    dirty: bool,
    /// The writer failed: it may have lost changes since the last commit,
    /// takes no more, and is rebuilt from the translog before any commit.
    writer_failed: bool,
    /// Versions of the documents deleted within [`GC_DELETES`], dropped
    /// by the refresh after that.
    deleted: HashMap<String, Tombstone>,
}

/// A deleted document's version, and when it was deleted.
#[derive(Debug, Clone, Copy)]
struct Tombstone {
    version: u64,
    at: Instant,
}

/// A document's last write, as a write sees it under the shard's lock.
#[derive(Debug, Clone, Copy)]
enum LastWrite {
    /// A live document.
    Live { version: u64, seq_no: u64 },
    /// A delete within [`GC_DELETES`].
    Deleted { version: u64 },
    /// None the shard remembers.
    None,
}

impl LastWrite {
    /// The live document's version and sequence number.
    fn live(self) -> Option<(u64, u64)> {
        match self {
            LastWrite::Live { version, seq_no } => Some((version, seq_no)),
            LastWrite::Deleted { .. } | LastWrite::None => None,
        }
    }

    /// The document's version, live or deleted.
    fn version(self) -> Option<u64> {
        match self {
            LastWrite::Live { version, .. } | LastWrite::Deleted { version } => Some(version),
            LastWrite::None => None,
        }
    }
}

impl WriteState {
    /// Keeps a delete's version for [`GC_DELETES`]; a later write of the
    /// id makes it live again.
    fn keep_deleted_version(&mut self, op: &Op) {
        match op.kind {
            OpKind::Delete => {
                let tombstone = Tombstone {
                    version: op.version,
                    at: Instant::now(),
                };
                self.deleted.insert(op.id.clone(), tombstone);
            }
            OpKind::Index { .. } => {
                if !self.deleted.is_empty() {
                    self.deleted.remove(&op.id);
                }
            }
        }
    }

    fn live_entry(&self, id: &str) -> Option<&LiveEntry> {
        self.live.get(id).or_else(|| self.refreshing.get(id))
    }

    /// The live entry of `id`, listing the unlisted writes first when `id`
    /// may be one of theirs.
    fn listed_entry(&mut self, id: &str) -> Result<Option<&LiveEntry>> {
        if self.live_entry(id).is_none() && self.may_be_unlisted(id) {
            self.list_unlisted()?;
        }
        Ok(self.live_entry(id))
    }

    fn may_be_unlisted(&self, id: &str) -> bool {
        self.unlisted.may_hold(id) || self.unlisted_refreshing.may_hold(id)
    }

    /// Lists the unlisted writes in `live`, reading them back from the
    /// translog, which holds every write the reader does not see.
    fn list_unlisted(&mut self) -> Result<()> {
        let first = [&self.unlisted, &self.unlisted_refreshing]
            .iter()
            .filter_map(|u| u.first_seq)
            .min();
        let Some(first_seq) = first else {
            return Ok(());
        };
        let mut listed = Vec::new();
        self.translog.for_each(|op| {
            let OpKind::Index { source } = op.kind else {
                return Ok(());
            };
            let later_listed = self.live_entry(&op.id).is_some_and(|e| e.seq_no >= op.seq_no);
            if op.seq_no >= first_seq && self.may_be_unlisted(&op.id) && !later_listed {
                let entry = LiveEntry {
                    version: op.version,
                    seq_no: op.seq_no,
                    source: Some(source),
                };
                listed.push((op.id, entry));
            }
            Ok(())
        })?;
        self.live.extend(listed);
        self.unlisted = Unlisted::default();
        self.unlisted_refreshing = Unlisted::default();
        self.list_generated = true;
        Ok(())
    }
}

/// The writes with generated ids since some sequence number that skipped
/// the live map: the first sequence number and the smallest and largest
/// id, so that a lookup of an id outside that range (every id a client
/// chose, nearly always) needs no listing.
#[derive(Debug, Default)]
struct Unlisted {
    first_seq: Option<u64>,
    ids: Option<(String, String)>,
}

impl Unlisted {
    fn add(&mut self, id: &str, seq_no: u64) {
        self.first_seq = Some(self.first_seq.map_or(seq_no, |s| s.min(seq_no)));
        match &mut self.ids {
            Some((low, high)) => {
                if id < low.as_str() {
                    *low = id.to_string();
                } else if id > high.as_str() {
                    *high = id.to_string();
                }
            }
            None => self.ids = Some((id.to_string(), id.to_string())),
        }
    }

    fn merge(&mut self, other: Unlisted) {
        if let (Some(seq), Some((low, high))) = (other.first_seq, other.ids) {
            self.add(&low, seq);
            self.add(&high, seq);
        }
    }

    fn may_hold(&self, id: &str) -> bool {
        self.ids
            .as_ref()
            .is_some_and(|(low, high)| low.as_str() <= id && id <= high.as_str())
    }
}

/// What a write accepted under the lock brings beside its logged op.
struct Accepted {
    /// Its document (none for a delete).
    doc: Option<TantivyDocument>,
    /// It replaces a live document.
    replaces: bool,
    /// Its id was generated for it.
    generated: bool,
}

/// A change for the tantivy writer. Changes reach it in the order of their
/// sequence numbers.
enum Change {
    Delete(Term),
    Add(TantivyDocument),
}

fn apply_change(writer: &IndexWriter, change: Change) -> Result<()> {
    match change {
        Change::Delete(term) => {
            writer.delete_term(term);
        }
        Change::Add(doc) => {
            writer.add_document(doc)?;
        }
    }
    Ok(())
}

/// One shard of an index.
pub struct Shard {
    ordinal: u32,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    /// Lock order: `writer`, then `state`; a write that holds `state` only
    /// tries `writer`.
    state: Mutex<WriteState>,
    writer: Mutex<IndexWriter>,
    /// The length of `state.pending`, read without the lock.
    pending_len: AtomicUsize,
    /// Commits waiting for the writer: writes leave it to them rather than
    /// take it first.
    commits_waiting: AtomicUsize,
    visible_seq: watch::Sender<u64>,
    reparse: Reparse,
    writer_threads: usize,
    activity: Activity,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("ordinal", &self.ordinal).finish()
    }
}

impl Shard {
    /// Opens or creates the shard in `dir` and replays its translog.
    ///
    /// `writer_threads` is the number of indexing threads (each writes its
    /// own segment at every refresh). A new shard gives each of `own`'s
    /// column paths a field of its own; an existing one keeps its schema.
    pub fn open(
        dir: &Path,
        ordinal: u32,
        writer_threads: usize,
        own: &[(String, FieldType)],
        reparse: Reparse,
    ) -> Result<Shard> {
        std::fs::create_dir_all(dir)?;
        let directory = MmapDirectory::open(dir).map_err(|e| Error::Internal(e.to_string()))?;
        Shard::open_in(dir, Box::new(directory), ordinal, writer_threads, own, reparse)
    }

    /// [`Shard::open`] with the tantivy index in `directory` (the files of
    /// `dir`, seen through it).
    fn open_in(
        dir: &Path,
        directory: Box<dyn tantivy::Directory>,
        ordinal: u32,
        writer_threads: usize,
        own: &[(String, FieldType)],
        reparse: Reparse,
    ) -> Result<Shard> {
        let index = if dir.join("meta.json").exists() {
            Index::open(directory)?
        } else {
            let schema = schema::build(own.iter().map(|(path, ty)| (path.as_str(), *ty)));
            Index::create(directory, schema, tantivy::IndexSettings::default())?
        };
        let fields = Fields::of(&index.schema())?;
        let committed_next_seq = committed_next_seq(&index)?;
        let writer_threads = writer_threads.max(1);
        let writer = index.writer_with_num_threads(writer_threads, WRITER_MEMORY)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let (translog, replay) = Translog::open(dir)?;
        let mut state = WriteState {
            translog,
            live: HashMap::new(),
            refreshing: HashMap::new(),
            unlisted: Unlisted::default(),
            unlisted_refreshing: Unlisted::default(),
            list_generated: false,
            pending: Vec::new(),
            next_seq: committed_next_seq,
            dirty: false,
            writer_failed: false,
            deleted: HashMap::new(),
        };
        let replayed = replay
            .ops
            .into_iter()
            .filter(|op| op.seq_no >= committed_next_seq)
            .collect::<Vec<_>>();
        for op in &replayed {
            apply_op(&mut state, &fields, op, &*reparse, &mut |change| {
                apply_change(&writer, change)
            })?;
        }
        if !replayed.is_empty() {
            tracing::info!(dir = %dir.display(), ops = replayed.len(), "replayed translog");
        }
        let (visible_seq, _) = watch::channel(committed_next_seq);
        let shard = Shard {
            ordinal,
            index,
            reader,
            fields,
            state: Mutex::new(state),
            writer: Mutex::new(writer),
            pending_len: AtomicUsize::new(0),
            commits_waiting: AtomicUsize::new(0),
            visible_seq,
            reparse,
            writer_threads,
            activity: Activity::default(),
        };
        if !replayed.is_empty() {
            shard.refresh()?;
        }
        Ok(shard)
    }

    /// The tantivy index (for scans and benchmarks).
    pub fn tantivy_index(&self) -> &Index {
        &self.index
    }

    /// Schema field handles.
    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    /// A searcher over the last refreshed state.
    pub fn searcher(&self) -> Searcher {
        self.reader.searcher()
    }

    /// The shard's number in its index.
    pub fn ordinal(&self) -> u32 {
        self.ordinal
    }

    /// Number of live documents visible to searches.
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Applies writes in order: translog append + fsync, then tantivy.
    ///
    /// Each write gets its own outcome; failed writes are not logged.
    pub fn write(&self, writes: Vec<ShardWrite>) -> Result<Vec<Result<WriteOutcome>>> {
        self.write_logged(writes).map(|(outcomes, _)| outcomes)
    }

    /// [`Shard::write`], also returning what it logged (for the replicas).
    pub fn write_logged(&self, writes: Vec<ShardWrite>) -> Result<(Vec<Result<WriteOutcome>>, Vec<Op>)> {
        let started = Instant::now();
        // The tantivy documents are built before taking the lock; only the
        // version and sequence number are stamped under it.
        let docs: Vec<Option<TantivyDocument>> = writes
            .iter()
            .map(|w| match w {
                ShardWrite::Index { id, source, doc, .. } => Some(base_doc(&self.fields, id, source, doc)),
                ShardWrite::Delete { .. } | ShardWrite::Noop { .. } => None,
            })
            .collect();
        self.wait_if_too_much_pending();
        let mut state = self.state.lock();
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut accepted: Vec<(Op, Accepted)> = Vec::with_capacity(writes.len());
        // The writes of ids touched earlier in this batch (a generated id
        // is not touched twice).
        let mut batch: HashMap<String, LastWrite> = HashMap::new();
        // Positions of the writes of this batch that succeeded, when a later
        // write builds on one.
        let builds_on_earlier = writes.iter().any(|w| {
            matches!(
                w,
                ShardWrite::Index { follows: Some(_), .. } | ShardWrite::Noop { .. }
            )
        });
        let mut succeeded: HashSet<usize> = HashSet::new();
        let mut next_seq = state.next_seq;
        for (write, tdoc) in writes.into_iter().zip(docs) {
            let (id, generated) = match &write {
                ShardWrite::Index { id, generated_id, .. } => (id.as_str(), *generated_id),
                ShardWrite::Delete { id, .. } | ShardWrite::Noop { id, .. } => (id.as_str(), false),
            };
            let last = match batch.get(id) {
                Some(last) => *last,
                None if generated => LastWrite::None,
                None => self.last_write(&mut state, id)?,
            };
            let current = last.live().map(|(version, _)| version);
            let condition = match &write {
                ShardWrite::Index { condition, .. } | ShardWrite::Delete { condition, .. } => *condition,
                ShardWrite::Noop { .. } => None,
            };
            let checked = match condition {
                Some(Condition::SeqNo(c)) => c.check(id, last.live().map(|(_, seq_no)| seq_no)),
                Some(Condition::Version(v)) => v.check(id, last.version()),
                None => Ok(()),
            };
            if let Err(err) = checked {
                outcomes.push(Err(err));
                continue;
            }
            // An external version becomes the document's; otherwise its
            // versions go on from its last write, even a delete.
            let version = match condition {
                Some(Condition::Version(v)) => v.version,
                _ => last.version().map_or(1, |v| v + 1),
            };
            match write {
                ShardWrite::Noop {
                    id,
                    position,
                    follows,
                } => match last.live().filter(|_| succeeded.contains(&follows)) {
                    Some((version, seq_no)) => {
                        succeeded.insert(position);
                        outcomes.push(Ok(WriteOutcome {
                            version,
                            seq_no,
                            result: "noop",
                        }));
                    }
                    None => outcomes.push(Err(Error::VersionConflict {
                        version: current.unwrap_or(0),
                        id,
                    })),
                },
                ShardWrite::Index {
                    id,
                    source,
                    create,
                    position,
                    follows,
                    ..
                } => {
                    if follows.is_some_and(|p| !succeeded.contains(&p)) {
                        outcomes.push(Err(Error::VersionConflict {
                            version: current.unwrap_or(0),
                            id,
                        }));
                        continue;
                    }
                    if let Some(version) = current.filter(|_| create) {
                        outcomes.push(Err(Error::VersionConflict { id, version }));
                        continue;
                    }
                    if builds_on_earlier {
                        succeeded.insert(position);
                    }
                    let seq_no = next_seq;
                    next_seq += 1;
                    if !generated {
                        batch.insert(id.clone(), LastWrite::Live { version, seq_no });
                    }
                    outcomes.push(Ok(WriteOutcome {
                        version,
                        seq_no,
                        result: if current.is_some() { "updated" } else { "created" },
                    }));
                    accepted.push((
                        Op {
                            seq_no,
                            id,
                            version,
                            kind: OpKind::Index { source },
                        },
                        Accepted {
                            doc: tdoc,
                            replaces: current.is_some(),
                            generated,
                        },
                    ));
                }
                ShardWrite::Delete { id, position, .. } => {
                    if builds_on_earlier {
                        succeeded.insert(position);
                    }
                    let seq_no = next_seq;
                    next_seq += 1;
                    batch.insert(id.clone(), LastWrite::Deleted { version });
                    outcomes.push(Ok(WriteOutcome {
                        version,
                        seq_no,
                        result: if current.is_some() { "deleted" } else { "not_found" },
                    }));
                    accepted.push((
                        Op {
                            seq_no,
                            id,
                            version,
                            kind: OpKind::Delete,
                        },
                        Accepted {
                            doc: None,
                            replaces: current.is_some(),
                            generated: false,
                        },
                    ));
                }
            }
        }
        if accepted.is_empty() {
            return Ok((outcomes, Vec::new()));
        }
        let (ops, contents): (Vec<Op>, Vec<Accepted>) = accepted.into_iter().unzip();
        state.translog.append(&ops)?;
        state.next_seq = next_seq;
        state.dirty = true;
        let mut changes = Vec::with_capacity(ops.len());
        for (
            op,
            Accepted {
                doc,
                replaces,
                generated,
            },
        ) in ops.iter().zip(contents)
        {
            if replaces {
                changes.push(Change::Delete(Term::from_field_text(self.fields.id, &op.id)));
            }
            state.keep_deleted_version(op);
            match (&op.kind, doc) {
                (OpKind::Index { .. }, Some(mut tdoc)) if generated && !state.list_generated => {
                    stamp(&mut tdoc, &self.fields, op.version, op.seq_no);
                    changes.push(Change::Add(tdoc));
                    state.unlisted.add(&op.id, op.seq_no);
                }
                (OpKind::Index { source }, Some(mut tdoc)) => {
                    stamp(&mut tdoc, &self.fields, op.version, op.seq_no);
                    changes.push(Change::Add(tdoc));
                    state.live.insert(
                        op.id.clone(),
                        LiveEntry {
                            version: op.version,
                            seq_no: op.seq_no,
                            source: Some(Arc::clone(source)),
                        },
                    );
                }
                _ => {
                    state.live.insert(
                        op.id.clone(),
                        LiveEntry {
                            version: op.version,
                            seq_no: op.seq_no,
                            source: None,
                        },
                    );
                }
            }
        }
        self.hand_over(&mut state, changes);
        drop(state);
        self.record_writes(&ops, started);
        Ok((outcomes, ops))
    }

    /// Counts logged writes in the shard's indexing statistics.
    fn record_writes(&self, ops: &[Op], started: Instant) {
        let deleted = ops.iter().filter(|op| matches!(op.kind, OpKind::Delete)).count() as u64;
        self.activity
            .wrote(ops.len() as u64 - deleted, deleted, started.elapsed());
    }

    /// What the shard copy did since it opened.
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Waits for a running commit when too many changes wait for it
    /// already (before taking the state lock, which the commit needs).
    fn wait_if_too_much_pending(&self) {
        if self.pending_len.load(Ordering::Relaxed) >= MAX_PENDING {
            drop(self.writer.lock());
        }
    }

    /// Hands changes to the writer after those already waiting; while a
    /// commit holds the writer, they wait in `state.pending`.
    fn hand_over(&self, state: &mut WriteState, changes: Vec<Change>) {
        let writer = if self.commits_waiting.load(Ordering::Acquire) > 0 {
            None
        } else {
            self.writer.try_lock()
        };
        match writer {
            Some(writer) => {
                self.pending_len.store(0, Ordering::Relaxed);
                // Once the writer failed, the writes wait in the translog
                // for the refresh that rebuilds it.
                if state.writer_failed {
                    state.pending.clear();
                    return;
                }
                let handed = state
                    .pending
                    .drain(..)
                    .chain(changes)
                    .try_for_each(|change| apply_change(&writer, change));
                if let Err(err) = handed {
                    tracing::error!(shard = self.ordinal, %err, "the index writer failed; the next refresh rebuilds it");
                    state.writer_failed = true;
                }
            }
            None => {
                state.pending.extend(changes);
                self.pending_len.store(state.pending.len(), Ordering::Relaxed);
            }
        }
    }

    /// Rolls the failed writer back to the last commit (dropping whatever
    /// it took since, which the failure may have lost in part) and hands it
    /// every logged write past that commit again, in order. Until this
    /// succeeds, the shard commits nothing, so that the translog keeps
    /// those writes.
    fn rebuild_writer(&self, writer: &mut IndexWriter, state: &mut WriteState) -> Result<()> {
        // The changes waiting for the writer are among those replayed.
        state.pending.clear();
        self.pending_len.store(0, Ordering::Relaxed);
        if let Err(err) = writer.rollback() {
            // tantivy's rollback gives up the writer's directory lock when
            // it fails: a new writer takes it.
            tracing::warn!(shard = self.ordinal, %err, "rollback failed; opening a new index writer");
            *writer = self
                .index
                .writer_with_num_threads(self.writer_threads, WRITER_MEMORY)?;
        }
        let committed = committed_next_seq(&self.index)?;
        let mut replayed = 0;
        // The live versions already hold (or list on demand) every write
        // since the last reload: only the writer learns them again, so that
        // a replay that fails half-way leaves them as they are.
        state.translog.for_each(|op| {
            if op.seq_no >= committed {
                replay_op(&self.fields, &op, &*self.reparse, &mut |change| {
                    apply_change(writer, change)
                })?;
                replayed += 1;
            }
            Ok(())
        })?;
        state.writer_failed = false;
        tracing::warn!(
            shard = self.ordinal,
            replayed,
            "rebuilt the index writer from the translog"
        );
        Ok(())
    }

    /// Applies writes its primary logged, in their order and with their
    /// versions and sequence numbers: translog append + fsync, then
    /// tantivy. They must follow on from the last write this copy has: a
    /// gap or an overlap means the copy diverged from its primary (it missed
    /// writes, or holds some the primary never acknowledged), and it is
    /// refused, so that the primary takes the copy out of sync.
    pub fn apply_logged(&self, ops: Vec<Op>) -> Result<()> {
        let started = Instant::now();
        self.wait_if_too_much_pending();
        let mut state = self.state.lock();
        let Some(first) = ops.first() else {
            return Ok(());
        };
        let contiguous = ops.iter().zip(first.seq_no..).all(|(op, seq)| op.seq_no == seq);
        if first.seq_no != state.next_seq || !contiguous {
            return Err(Error::unavailable(format!(
                "shard [{}] diverged from its primary: it has writes up to sequence number {}, and was sent {} to {}",
                self.ordinal,
                state.next_seq as i64 - 1,
                first.seq_no,
                ops.last().map_or(first.seq_no, |op| op.seq_no)
            )));
        }
        state.translog.append(&ops)?;
        let mut changes = Vec::with_capacity(2 * ops.len());
        for op in &ops {
            apply_op(&mut state, &self.fields, op, &*self.reparse, &mut |change| {
                changes.push(change);
                Ok(())
            })?;
        }
        self.hand_over(&mut state, changes);
        drop(state);
        self.record_writes(&ops, started);
        Ok(())
    }

    /// Makes every acknowledged write searchable: commit, reload, drop the
    /// translog generations the commit holds. Writes go on while it runs.
    /// Returns whether anything was committed.
    pub fn refresh(&self) -> Result<bool> {
        self.commits_waiting.fetch_add(1, Ordering::AcqRel);
        let mut writer = self.writer.lock();
        self.commits_waiting.fetch_sub(1, Ordering::AcqRel);
        let (next_seq, waiting) = {
            let mut state = self.state.lock();
            state.deleted.retain(|_, t| t.at.elapsed() < GC_DELETES);
            if !state.dirty {
                return Ok(false);
            }
            if state.writer_failed {
                self.rebuild_writer(&mut writer, &mut state)?;
            }
            state.translog.roll()?;
            let snapshot = std::mem::take(&mut state.live);
            if state.refreshing.is_empty() {
                state.refreshing = snapshot;
            } else {
                // A failed commit left its snapshot: this one holds it too.
                state.refreshing.extend(snapshot);
            }
            let unlisted = std::mem::take(&mut state.unlisted);
            state.unlisted_refreshing.merge(unlisted);
            state.list_generated = false;
            state.dirty = false;
            self.pending_len.store(0, Ordering::Relaxed);
            (state.next_seq, std::mem::take(&mut state.pending))
        };
        // Writes wait for the writer meanwhile: these changes go first.
        if let Err(err) = commit(&mut writer, waiting, next_seq) {
            tracing::error!(shard = self.ordinal, %err, "commit failed; the next refresh rebuilds the index writer");
            let mut state = self.state.lock();
            state.dirty = true;
            state.writer_failed = true;
            return Err(err);
        }
        if let Err(err) = self.reader.reload() {
            self.state.lock().dirty = true;
            return Err(err.into());
        }
        {
            let mut state = self.state.lock();
            state.translog.drop_rolled();
            state.refreshing.clear();
            state.unlisted_refreshing = Unlisted::default();
        }
        // The changes that waited meanwhile go to the writer with the next
        // write (which hands them over before its own), or the next commit.
        drop(writer);
        // A later refresh may have published first.
        self.visible_seq
            .send_modify(|visible| *visible = (*visible).max(next_seq));
        Ok(true)
    }

    /// The shard's committed segments: those of its last commit (which
    /// every refresh makes, and searches see), and of the merges that
    /// ended since.
    pub fn segments(&self) -> Result<Vec<SegmentStats>> {
        let directory = self.index.directory();
        Ok(self
            .index
            .searchable_segment_metas()?
            .into_iter()
            .map(|meta| SegmentStats {
                id: meta.id().short_uuid_string(),
                docs: u64::from(meta.num_docs()),
                deleted: u64::from(meta.num_deleted_docs()),
                bytes: [
                    SegmentComponent::Postings,
                    SegmentComponent::Positions,
                    SegmentComponent::Terms,
                    SegmentComponent::Store,
                    SegmentComponent::FastFields,
                    SegmentComponent::FieldNorms,
                    SegmentComponent::Delete,
                ]
                .into_iter()
                .filter(|c| *c != SegmentComponent::Delete || meta.has_deletes())
                .filter_map(|c| directory.open_read(&meta.relative_path(c)).ok())
                .map(|file| file.len() as u64)
                .sum(),
            })
            .collect())
    }

    /// Merges segments as `how` asks, after a refresh when `flush` (so that
    /// every acknowledged write is in a segment the merge can take). Writes
    /// and searches go on meanwhile; searches see the merged segments once
    /// this returns.
    pub fn force_merge(&self, how: ForceMerge, flush: bool) -> Result<()> {
        if flush {
            self.refresh()?;
        }
        // Rounds of merges until the plan is empty: a round may leave work
        // for the next (segments with deleted documents, once few enough),
        // and a background merge of some of the same segments may end first,
        // when tantivy drops the merge that ends second (as it drops the
        // merges of a writer rolled back): those are planned again. Writes
        // that go on meanwhile may leave work for ever: the rounds are few.
        const ROUNDS: usize = 5;
        for round in 1..=ROUNDS {
            let metas = self.index.searchable_segment_metas()?;
            let groups = match merge::plan(how, &metas.iter().map(candidate).collect::<Vec<_>>()) {
                Some(groups) => groups,
                None => {
                    let policy = self.writer.lock().get_merge_policy();
                    policy
                        .compute_merge_candidates(&metas)
                        .into_iter()
                        .map(|candidate| candidate.0)
                        .collect()
                }
            };
            if groups.is_empty() {
                break;
            }
            let merges: Vec<_> = {
                let mut writer = self.writer.lock();
                groups.iter().map(|group| writer.merge(group)).collect()
            };
            // Every merge is waited for before the next round plans.
            let results: Vec<_> = merges.into_iter().map(|merge| merge.wait()).collect();
            match results.into_iter().find_map(|r| r.err()) {
                None => {}
                Some(err @ (TantivyError::InvalidArgument(_) | TantivyError::SystemError(_)))
                    if round < ROUNDS =>
                {
                    // tantivy drops a merge whose segments a background merge or a
                    // rollback took; a merge thread that failed reports the same
                    // error, and the next round's plan covers both.
                    tracing::debug!(shard = self.ordinal, %err, "a forced merge did not complete; planning again");
                }
                Some(err) => return Err(err.into()),
            }
        }
        self.reader.reload()?;
        Ok(())
    }

    /// Waits until a refresh has made writes up to `seq_no` searchable.
    pub async fn wait_visible(&self, seq_no: u64) {
        let mut rx = self.visible_seq.subscribe();
        // An error means the shard is gone: nothing left to wait for.
        let _ = rx.wait_for(|visible| *visible > seq_no).await;
    }

    /// Wakes every `wait_visible` caller for good (the shard is going away).
    pub fn release_waiters(&self) {
        self.visible_seq.send_replace(u64::MAX);
    }

    /// Realtime get: sees acknowledged writes even before a refresh.
    pub fn get(&self, id: &str) -> Result<Option<StoredDoc>> {
        {
            let mut state = self.state.lock();
            if let Some(entry) = state.listed_entry(id)? {
                return Ok(entry.source.as_ref().map(|source| StoredDoc {
                    version: entry.version,
                    seq_no: entry.seq_no,
                    source: Arc::clone(source),
                }));
            }
        }
        let searcher = self.reader.searcher();
        let Some((addr, version, seq_no)) = self.lookup(&searcher, id)? else {
            return Ok(None);
        };
        let doc: TantivyDocument = searcher.doc(addr)?;
        let source = doc
            .get_first(self.fields.source)
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::Internal(format!("document [{id}] has no stored source")))?;
        Ok(Some(StoredDoc {
            version,
            seq_no,
            source: Arc::from(source),
        }))
    }

    /// The last write of `id`: its live document, or its delete within
    /// [`GC_DELETES`].
    fn last_write(&self, state: &mut WriteState, id: &str) -> Result<LastWrite> {
        let found = match state.listed_entry(id)? {
            Some(entry) => entry.source.as_ref().map(|_| (entry.version, entry.seq_no)),
            None => {
                let searcher = self.reader.searcher();
                self.lookup(&searcher, id)?
                    .map(|(_, version, seq_no)| (version, seq_no))
            }
        };
        Ok(match (found, state.deleted.get(id)) {
            (Some((version, seq_no)), _) => LastWrite::Live { version, seq_no },
            (None, Some(t)) => LastWrite::Deleted { version: t.version },
            (None, None) => LastWrite::None,
        })
    }

    fn lookup(&self, searcher: &Searcher, id: &str) -> Result<Option<(DocAddress, u64, u64)>> {
        let term = Term::from_field_text(self.fields.id, id);
        for (ord, segment) in searcher.segment_readers().iter().enumerate() {
            let inverted = segment.inverted_index(self.fields.id)?;
            let Some(mut postings) = inverted.read_postings(&term, IndexRecordOption::Basic)? else {
                continue;
            };
            let alive = segment.alive_bitset();
            let mut doc = postings.doc();
            while doc != tantivy::TERMINATED {
                if alive.is_none_or(|a| a.is_alive(doc)) {
                    let fast = segment.fast_fields();
                    let version: Option<Column<u64>> = fast.column_opt(names::VERSION)?;
                    let seq: Column<u64> = fast.u64(names::SEQ_NO)?;
                    return Ok(Some((
                        DocAddress::new(ord as u32, doc),
                        version.and_then(|v| v.first(doc)).unwrap_or(1),
                        seq.first(doc).unwrap_or(0),
                    )));
                }
                doc = postings.advance();
            }
        }
        Ok(None)
    }
}

/// Hands the writer the changes that waited for it, and commits, recording
/// the next sequence number.
fn commit(writer: &mut IndexWriter, waiting: Vec<Change>, next_seq: u64) -> Result<()> {
    for change in waiting {
        apply_change(writer, change)?;
    }
    let mut prepared = writer.prepare_commit()?;
    prepared.set_payload(&serde_json::json!({ "next_seq": next_seq }).to_string());
    prepared.commit()?;
    Ok(())
}

/// The sequence number after the last write the index's commit holds.
fn committed_next_seq(index: &Index) -> Result<u64> {
    Ok(index
        .load_metas()?
        .payload
        .as_deref()
        .and_then(|p| serde_json::from_str::<Value>(p).ok())
        .and_then(|v| v.get("next_seq").and_then(Value::as_u64))
        .unwrap_or(0))
}

/// The tantivy document of a write, but for its version and sequence
/// number ([`stamp`]).
fn base_doc(fields: &Fields, id: &str, source: &str, doc: &ParsedDoc) -> TantivyDocument {
    // The document's bytes: the id, the source, and each value under its
    // path, whose text the source already holds (with a node per value).
    let values = doc.values_len() + doc.texts_len();
    let mut out = TantivyDocument::with_capacity(id.len() + 2 * source.len() + 16 * values + 64);
    out.add_text(fields.id, id);
    out.add_text(fields.source, source);
    for path in doc.text_paths_with_tokens() {
        out.add_text(fields.exists, path);
    }
    // Values of paths with a field of their own go to it; the others, by
    // position, to the JSON field.
    let mut rest = Vec::new();
    for (i, (span, value)) in doc.values().enumerate() {
        match fields.own(doc.path(span)) {
            Some(field) => out.add_leaf_field_value(field, value),
            None => rest.push(i),
        }
    }
    if !rest.is_empty() {
        out.add_field_value(fields.kw, JsonView::Object(doc, Entries::Values, &rest));
    }
    rest.clear();
    for (i, (span, text)) in doc.texts().enumerate() {
        match fields.own(doc.path(span)) {
            Some(field) => out.add_text(field, text),
            None => rest.push(i),
        }
    }
    if !rest.is_empty() {
        out.add_field_value(fields.text, JsonView::Object(doc, Entries::Texts, &rest));
    }
    out
}

/// A segment as a force merge plans with it.
fn candidate(meta: &SegmentMeta) -> merge::Candidate {
    merge::Candidate {
        id: meta.id(),
        max_doc: meta.max_doc(),
        deleted: meta.num_deleted_docs(),
    }
}

/// Adds a write's version (but the first, which readers take for a
/// missing one: a document written once, as most are, adds no value to
/// the column) and sequence number to its document.
fn stamp(doc: &mut TantivyDocument, fields: &Fields, version: u64, seq_no: u64) {
    if version != 1 {
        doc.add_u64(fields.version, version);
    }
    doc.add_u64(fields.seq_no, seq_no);
}

/// A parsed document's values seen as tantivy JSON values (an object of
/// column paths), so that tantivy copies them straight into its compact
/// document without a tree of owned values in between. A path with several
/// values is a key repeated once per value, which tantivy indexes as it
/// does the elements of an array: under the same path, each value's
/// positions following the last one's with a gap.
#[derive(Debug, Clone, Copy)]
enum JsonView<'a> {
    /// Entries of the document (those at the given positions among its
    /// values or its texts).
    Object(&'a ParsedDoc, Entries, &'a [usize]),
    One(FieldValue<'a>),
}

/// A parsed document's value as tantivy takes it, in a field of its own
/// or under a JSON field's path.
impl<'a> From<FieldValue<'a>> for ReferenceValueLeaf<'a> {
    fn from(value: FieldValue<'a>) -> Self {
        match value {
            FieldValue::Str(s) => ReferenceValueLeaf::Str(s),
            FieldValue::I64(n) => ReferenceValueLeaf::I64(n),
            FieldValue::F64(f) => ReferenceValueLeaf::F64(f),
            FieldValue::Bool(b) => ReferenceValueLeaf::Bool(b),
        }
    }
}

/// Which entries of a parsed document a [`JsonView::Object`] shows.
#[derive(Debug, Clone, Copy)]
enum Entries {
    Values,
    Texts,
}

impl<'a> tantivy::schema::Value<'a> for JsonView<'a> {
    type ArrayIter = std::iter::Empty<JsonView<'a>>;
    type ObjectIter = PathValues<'a>;

    fn as_value(&self) -> ReferenceValue<'a, Self> {
        match *self {
            JsonView::Object(doc, entries, positions) => ReferenceValue::Object(PathValues {
                doc,
                entries,
                positions: positions.iter(),
            }),
            JsonView::One(value) => ReferenceValue::Leaf(value.into()),
        }
    }
}

/// The values of a [`JsonView::Object`], each under its column path.
struct PathValues<'a> {
    doc: &'a ParsedDoc,
    entries: Entries,
    positions: std::slice::Iter<'a, usize>,
}

impl<'a> Iterator for PathValues<'a> {
    type Item = (&'a str, JsonView<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let i = *self.positions.next()?;
        let (span, value) = match self.entries {
            Entries::Values => self.doc.value(i),
            Entries::Texts => {
                let (span, text) = self.doc.text(i);
                (span, FieldValue::Str(text))
            }
        };
        Some((self.doc.path(span), JsonView::One(value)))
    }
}

/// Hands the writer a logged write's changes (the delete of what its id
/// held, and its document); returns its source (`None` for a delete).
fn replay_op(
    fields: &Fields,
    op: &Op,
    reparse: &dyn Fn(&str, &str) -> Result<ParsedDoc>,
    apply: &mut dyn FnMut(Change) -> Result<()>,
) -> Result<Option<Arc<str>>> {
    apply(Change::Delete(Term::from_field_text(fields.id, &op.id)))?;
    match &op.kind {
        OpKind::Index { source } => {
            let doc = reparse(&op.id, source).unwrap_or_else(|err| {
                tracing::error!(id = %op.id, %err, "logged document does not parse; keeping its source only");
                ParsedDoc::default()
            });
            let mut tdoc = base_doc(fields, &op.id, source, &doc);
            stamp(&mut tdoc, fields, op.version, op.seq_no);
            apply(Change::Add(tdoc))?;
            Ok(Some(Arc::clone(source)))
        }
        OpKind::Delete => Ok(None),
    }
}

/// Applies a logged write to the writer and the live versions (a replay,
/// or a primary's write on a replica).
fn apply_op(
    state: &mut WriteState,
    fields: &Fields,
    op: &Op,
    reparse: &dyn Fn(&str, &str) -> Result<ParsedDoc>,
    apply: &mut dyn FnMut(Change) -> Result<()>,
) -> Result<()> {
    let source = replay_op(fields, op, reparse, apply)?;
    state.keep_deleted_version(op);
    state.live.insert(
        op.id.clone(),
        LiveEntry {
            version: op.version,
            seq_no: op.seq_no,
            source,
        },
    );
    state.next_seq = state.next_seq.max(op.seq_no + 1);
    state.dirty = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
    use tantivy::directory::{WatchCallback, WatchHandle, WritePtr};

    use super::*;

    fn no_reparse(_: &str, _: &str) -> Result<ParsedDoc> {
        Ok(ParsedDoc::default())
    }

    fn open(dir: &Path) -> Result<Shard> {
        Shard::open(dir, 0, 1, &[], Arc::new(no_reparse))
    }

    /// An unconditional index write of `doc`.
    fn index_write_of(id: &str, source: &str, doc: ParsedDoc) -> ShardWrite {
        ShardWrite::Index {
            id: id.into(),
            source: source.into(),
            doc,
            create: false,
            condition: None,
            generated_id: false,
            position: 0,
            follows: None,
        }
    }

    /// The write of `{"n": n}`.
    fn index_write(id: &str, n: i64) -> ShardWrite {
        let mut doc = ParsedDoc::default();
        doc.push_value("n", FieldValue::I64(n));
        index_write_of(id, &format!(r#"{{"n":{n}}}"#), doc)
    }

    fn op(seq_no: u64, id: &str) -> Op {
        Op {
            seq_no,
            id: id.to_string(),
            version: 1,
            kind: OpKind::Index {
                source: r#"{"n":1}"#.into(),
            },
        }
    }

    /// Several values of one path are repeated keys of the JSON object:
    /// each is found, a phrase does not run from one value into the next,
    /// and the column holds every value, as for the elements of an array.
    #[test]
    fn repeated_paths_index_like_array_elements() -> anyhow::Result<()> {
        use tantivy::collector::Count;
        use tantivy::query::{PhraseQuery, TermQuery};

        let dir = tempfile::tempdir()?;
        let shard = open(dir.path())?;
        let mut doc = ParsedDoc::default();
        doc.push_value("n", FieldValue::I64(3));
        doc.push_value("n", FieldValue::I64(5));
        doc.push_text("t", "quick brown");
        doc.push_text("t", "fox");
        let write = index_write_of("1", "{}", doc);
        shard
            .write(vec![write])?
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        shard.refresh()?;
        let fields = shard.fields();
        let word = |w: &str| {
            let mut term = Term::from_field_json_path(fields.text, "t", true);
            term.append_type_and_str(w);
            term
        };
        let searcher = shard.searcher();
        let count = |q: &dyn tantivy::query::Query| searcher.search(q, &Count);
        assert_eq!(count(&TermQuery::new(word("fox"), IndexRecordOption::Basic))?, 1);
        assert_eq!(count(&PhraseQuery::new(vec![word("quick"), word("brown")]))?, 1);
        assert_eq!(count(&PhraseQuery::new(vec![word("brown"), word("fox")]))?, 0);
        let column: Column<i64> = searcher
            .segment_reader(0)
            .fast_fields()
            .i64(&fields.column("n"))?;
        assert_eq!(column.values_for_doc(0).collect::<Vec<_>>(), vec![3, 5]);
        Ok(())
    }

    /// While a commit holds the writer, writes are acknowledged with the
    /// right versions and wait for it; the next commit holds them.
    #[test]
    fn writes_wait_for_a_running_commit_in_order() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let shard = open(dir.path())?;
        shard.write(vec![index_write("a", 1)])?;
        let commit = shard.writer.lock();
        let outcomes = shard.write(vec![index_write("a", 2), index_write("b", 3)])?;
        let versions: Vec<u64> = outcomes
            .into_iter()
            .map(|o| o.map(|o| o.version))
            .collect::<Result<_>>()?;
        assert_eq!(versions, vec![2, 1]);
        // The replacement of `a` waits as a delete and an add.
        assert_eq!(shard.state.lock().pending.len(), 3);
        assert_eq!(shard.get("a")?.map(|d| d.source), Some(r#"{"n":2}"#.into()));
        drop(commit);
        shard.refresh()?;
        assert!(shard.state.lock().pending.is_empty());
        assert_eq!(shard.num_docs(), 2);
        assert_eq!(shard.get("a")?.map(|d| d.version), Some(2));
        Ok(())
    }

    /// Writes racing with commits are all there after a restart that no
    /// commit preceded: a commit deletes only the translog generations it
    /// holds.
    /// Runs `work` while another thread refreshes `shard` in a loop (which
    /// stops, whatever `work` returns); returns how many refreshes committed.
    fn while_committing(shard: &Shard, work: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<usize> {
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let committer = scope.spawn(|| -> Result<usize> {
                let mut commits = 0;
                while !done.load(Ordering::Relaxed) {
                    commits += usize::from(shard.refresh()?);
                }
                Ok(commits)
            });
            let worked = work();
            done.store(true, Ordering::Relaxed);
            worked?;
            committer
                .join()
                .map_err(|_| anyhow::anyhow!("committer panicked"))?
                .map_err(Into::into)
        })
    }

    #[test]
    fn writes_racing_commits_survive_a_restart() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let shard = open(dir.path())?;
        let (ids, rounds) = (50, 40);
        let commits = while_committing(&shard, || {
            for round in 0..rounds {
                let writes = (0..ids).map(|i| index_write(&format!("d{i}"), round)).collect();
                for outcome in shard.write(writes)? {
                    assert_eq!(outcome?.version, round as u64 + 1);
                }
            }
            Ok(())
        })?;
        assert!(commits > 0);
        drop(shard);
        let reopened = open(dir.path())?;
        reopened.refresh()?;
        assert_eq!(reopened.num_docs(), ids as u64);
        for i in 0..ids {
            let doc = reopened
                .get(&format!("d{i}"))?
                .ok_or_else(|| anyhow::anyhow!("d{i} lost"))?;
            assert_eq!(doc.version, rounds as u64);
            assert_eq!(&*doc.source, format!(r#"{{"n":{}}}"#, rounds - 1));
        }
        Ok(())
    }

    /// A write with an id generated for it, of `{"n": n}`.
    fn generated_write(n: i64) -> ShardWrite {
        let mut write = index_write(&crate::ids::generate(), n);
        if let ShardWrite::Index { generated_id, .. } = &mut write {
            *generated_id = true;
        }
        write
    }

    fn id_of(write: &ShardWrite) -> String {
        match write {
            ShardWrite::Index { id, .. } | ShardWrite::Delete { id, .. } | ShardWrite::Noop { id, .. } => {
                id.clone()
            }
        }
    }

    /// Writes with generated ids skip the live map, yet a realtime get, a
    /// write to the same id and a conditional write see them before any
    /// refresh, as they see a write with a chosen id.
    #[test]
    fn writes_with_generated_ids_are_seen_before_a_refresh() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let shard = open(dir.path())?;
        let writes: Vec<ShardWrite> = (0..20).map(generated_write).collect();
        let ids: Vec<String> = writes.iter().map(id_of).collect();
        shard.write(writes)?;
        assert!(shard.state.lock().live.is_empty());
        let doc = shard
            .get(&ids[3])?
            .ok_or_else(|| anyhow::anyhow!("{} not found", ids[3]))?;
        assert_eq!((doc.version, doc.seq_no, &*doc.source), (1, 3, r#"{"n":3}"#));
        // An id of the range that no write has.
        let mut missing = ids[5].clone();
        missing.push('x');
        assert!(shard.get(&missing)?.is_none());
        // The replacement and the delete of documents nobody listed yet.
        let outcomes = shard.write(vec![
            index_write(&ids[7], 70),
            ShardWrite::Delete {
                id: ids[8].clone(),
                position: 1,
                condition: None,
            },
        ])?;
        let results: Vec<(&str, u64)> = outcomes
            .iter()
            .map(|o| o.as_ref().map(|o| (o.result, o.version)))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(results, vec![("updated", 2), ("deleted", 2)]);
        // A write conditioned on the last write of one.
        let mut conditioned = index_write(&ids[9], 90);
        if let ShardWrite::Index { condition, .. } = &mut conditioned {
            *condition = Some(Condition::SeqNo(crate::index::SeqNoCondition {
                seq_no: 9,
                primary_term: crate::index::PRIMARY_TERM,
            }));
        }
        assert_eq!(
            shard.write(vec![conditioned])?[0]
                .as_ref()
                .map(|o| o.version)
                .ok(),
            Some(2)
        );
        // Generated writes after the listing are listed until the next
        // refresh; those after it are not.
        let listed: Vec<ShardWrite> = (20..25).map(generated_write).collect();
        let listed_ids: Vec<String> = listed.iter().map(id_of).collect();
        shard.write(listed)?;
        assert!(
            listed_ids
                .iter()
                .all(|id| shard.state.lock().live.contains_key(id))
        );
        shard.refresh()?;
        let later: Vec<ShardWrite> = (25..30).map(generated_write).collect();
        let later_ids: Vec<String> = later.iter().map(id_of).collect();
        shard.write(later)?;
        assert!(shard.state.lock().live.is_empty());
        assert_eq!(shard.get(&ids[7])?.map(|d| d.version), Some(2));
        assert!(shard.get(&ids[8])?.is_none());
        assert_eq!(shard.get(&later_ids[4])?.map(|d| d.seq_no), Some(32));
        shard.refresh()?;
        assert_eq!(shard.num_docs(), 29);
        Ok(())
    }

    /// A get right after each write with a generated id finds it while
    /// commits run and move the live map aside.
    #[test]
    fn generated_ids_are_found_while_commits_run() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let shard = open(dir.path())?;
        while_committing(&shard, || {
            (0..200).try_for_each(|round| {
                let write = generated_write(round);
                let id = id_of(&write);
                shard.write(vec![write])?;
                let doc = shard.get(&id)?.ok_or_else(|| anyhow::anyhow!("{id} not found"))?;
                assert_eq!(&*doc.source, format!(r#"{{"n":{round}}}"#));
                Ok(())
            })
        })?;
        shard.refresh()?;
        assert_eq!(shard.num_docs(), 200);
        Ok(())
    }

    /// The files of a directory, but creating or replacing one fails while
    /// `fail` is set, as on a full or failing disk.
    #[derive(Debug, Clone)]
    struct FailingDirectory {
        inner: MmapDirectory,
        fail: Arc<std::sync::atomic::AtomicBool>,
    }

    impl tantivy::Directory for FailingDirectory {
        fn get_file_handle(
            &self,
            path: &Path,
        ) -> std::result::Result<Arc<dyn tantivy::directory::FileHandle>, OpenReadError> {
            self.inner.get_file_handle(path)
        }

        fn delete(&self, path: &Path) -> std::result::Result<(), DeleteError> {
            self.inner.delete(path)
        }

        fn exists(&self, path: &Path) -> std::result::Result<bool, OpenReadError> {
            self.inner.exists(path)
        }

        fn open_write(&self, path: &Path) -> std::result::Result<WritePtr, OpenWriteError> {
            if self.fail.load(Ordering::SeqCst) {
                let err = std::io::Error::other("the disk failed");
                return Err(OpenWriteError::wrap_io_error(err, path.to_path_buf()));
            }
            self.inner.open_write(path)
        }

        fn atomic_read(&self, path: &Path) -> std::result::Result<Vec<u8>, OpenReadError> {
            self.inner.atomic_read(path)
        }

        fn atomic_write(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("the disk failed"));
            }
            self.inner.atomic_write(path, data)
        }

        fn sync_directory(&self) -> std::io::Result<()> {
            self.inner.sync_directory()
        }

        fn acquire_lock(
            &self,
            lock: &tantivy::directory::Lock,
        ) -> std::result::Result<tantivy::directory::DirectoryLock, LockError> {
            self.inner.acquire_lock(lock)
        }

        fn watch(&self, callback: WatchCallback) -> tantivy::Result<WatchHandle> {
            self.inner.watch(callback)
        }
    }

    /// A shard in `dir` whose file creations fail while the flag is set.
    fn failing_shard(dir: &Path) -> anyhow::Result<(Shard, Arc<std::sync::atomic::AtomicBool>)> {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let directory = FailingDirectory {
            inner: MmapDirectory::open(dir)?,
            fail: Arc::clone(&fail),
        };
        let shard = Shard::open_in(dir, Box::new(directory), 0, 1, &[], Arc::new(no_reparse))?;
        Ok((shard, fail))
    }

    /// A commit that cannot write its segments loses the changes the
    /// writer took (and, with them, its indexing thread), but not the
    /// writes: the next refresh rebuilds the writer from the translog, and
    /// its commit, which drops the translog generations, holds them all.
    #[test]
    fn a_failed_commit_loses_no_acknowledged_write() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (shard, fail) = failing_shard(dir.path())?;
        let writes = |prefix: &str| (0..10).map(|i| index_write(&format!("{prefix}{i}"), i)).collect();
        assert!(shard.write(writes("a"))?.iter().all(Result::is_ok));
        assert!(
            shard
                .write(vec![index_write("a3", 33)])?
                .iter()
                .all(Result::is_ok)
        );
        fail.store(true, Ordering::SeqCst);
        assert!(shard.refresh().is_err());
        // Rebuilding fails too while the disk does, and leaves the versions.
        assert!(shard.refresh().is_err());
        assert_eq!(shard.get("a3")?.map(|d| d.version), Some(2));
        fail.store(false, Ordering::SeqCst);
        assert!(shard.write(writes("b"))?.iter().all(Result::is_ok));
        assert!(shard.refresh()?);
        assert_eq!(shard.num_docs(), 20);
        assert_eq!(
            shard.get("a3")?.map(|d| (d.version, d.source)),
            Some((2, r#"{"n":33}"#.into()))
        );
        drop(shard);
        let reopened = open(dir.path())?;
        assert_eq!(reopened.num_docs(), 20);
        for id in ["a0", "a9", "b0", "b9"] {
            assert!(reopened.get(id)?.is_some(), "{id} is lost");
        }
        Ok(())
    }

    /// An indexing thread that dies (here: it cannot create its segment's
    /// files) kills tantivy's writer, and the changes it held are gone.
    /// Writes meanwhile are still acknowledged (they are logged), and once
    /// the disk is back the writer is rebuilt from the translog: every
    /// acknowledged write is searchable, and survives a restart.
    #[test]
    fn writes_outlive_a_dead_indexing_thread() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (shard, fail) = failing_shard(dir.path())?;
        let writes = |batch: usize| (0..10).map(|i| index_write(&format!("{batch}-{i}"), i)).collect();
        assert!(shard.write(writes(0))?.iter().all(Result::is_ok));
        assert!(shard.refresh()?);
        fail.store(true, Ordering::SeqCst);
        // The first change kills the indexing thread; a later one finds the
        // writer dead, and the changes wait in the translog from then on.
        for batch in 1..=5 {
            assert!(shard.write(writes(batch))?.iter().all(Result::is_ok));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(shard.state.lock().writer_failed);
        fail.store(false, Ordering::SeqCst);
        assert!(shard.write(writes(6))?.iter().all(Result::is_ok));
        assert!(shard.refresh()?);
        assert_eq!(shard.num_docs(), 70);
        drop(shard);
        let reopened = open(dir.path())?;
        assert_eq!(reopened.num_docs(), 70);
        Ok(())
    }

    #[test]
    fn a_replica_takes_only_writes_that_follow_on_from_its_own() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let shard = open(dir.path())?;
        shard.apply_logged(vec![op(0, "a"), op(1, "b"), op(2, "c")])?;
        // A gap: writes 3 and 4 never arrived.
        assert!(shard.apply_logged(vec![op(5, "f")]).is_err());
        // An overlap: this copy already has write 2.
        assert!(shard.apply_logged(vec![op(2, "x"), op(3, "d")]).is_err());
        // Not in order within the batch.
        assert!(shard.apply_logged(vec![op(3, "d"), op(5, "f")]).is_err());
        shard.apply_logged(vec![op(3, "d")])?;
        shard.refresh()?;
        assert_eq!(shard.num_docs(), 4);
        assert!(shard.get("x")?.is_none());
        drop(shard);
        // The writes it took survive a restart.
        let reopened = open(dir.path())?;
        assert_eq!(reopened.num_docs(), 4);
        reopened.apply_logged(vec![op(4, "e")])?;
        Ok(())
    }
}
