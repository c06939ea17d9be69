//! An index: settings, mapping, and its shards on disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::document::parse_document;
use crate::error::{Error, Result};
use crate::mapping::{Dynamic, Mapping};
use crate::routing::shard_for_id;
use crate::settings::IndexSettings;
use crate::shard::{Shard, ShardWrite, StoredDoc};

/// The metadata file of an index directory.
pub const META_FILE: &str = "index.json";

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
}

/// One write of a bulk request, before routing.
#[derive(Debug, Clone)]
pub enum DocWrite {
    /// `index` or `create` a document (a missing id is generated).
    Index {
        /// Document id, if given.
        id: Option<String>,
        /// Document source.
        source: Value,
        /// The source as the client sent it, kept verbatim when given.
        raw_source: Option<String>,
        /// `create` semantics: fail if it exists.
        create: bool,
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
    },
    /// Delete by id.
    Delete {
        /// Document id.
        id: String,
    },
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
    meta: RwLock<IndexMeta>,
    shards: Vec<Arc<Shard>>,
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
    pub fn create(dir: &Path, meta: IndexMeta) -> Result<Index> {
        std::fs::create_dir_all(dir)?;
        write_meta(dir, &meta)?;
        Index::open(dir)
    }

    /// Opens an existing index and replays its shards' translogs.
    pub fn open(dir: &Path) -> Result<Index> {
        let meta: IndexMeta = serde_json::from_slice(&std::fs::read(dir.join(META_FILE))?)
            .map_err(|e| Error::Internal(format!("corrupt index metadata in {}: {e}", dir.display())))?;
        let mapping = meta.mapping.clone();
        let reparse = move |id: &str, source: &str| -> Result<crate::document::ParsedDoc> {
            let value: Value = serde_json::from_str(source)
                .map_err(|e| Error::Internal(format!("bad source in translog: {e}")))?;
            parse_document(id, &value, &mapping).map(|(doc, _)| doc)
        };
        let shards = (0..meta.settings.number_of_shards)
            .map(|n| Shard::open(&dir.join("shards").join(n.to_string()), n, &reparse).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(Index {
            dir: dir.to_path_buf(),
            meta: RwLock::new(meta),
            shards,
            write_lock: Mutex::new(()),
            deleted: AtomicBool::new(false),
        })
    }

    /// The index name.
    pub fn name(&self) -> String {
        self.meta.read().name.clone()
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

    /// The shards, by number.
    pub fn shards(&self) -> &[Arc<Shard>] {
        &self.shards
    }

    /// Where the index lives on disk.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Marks the index deleted: background refreshes stop, and requests
    /// waiting for a refresh are released.
    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::SeqCst);
        for shard in &self.shards {
            shard.release_waiters();
        }
    }

    /// Whether the index was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::SeqCst)
    }

    /// Number of documents visible to searches.
    pub fn num_docs(&self) -> u64 {
        self.shards.iter().map(|s| s.num_docs()).sum()
    }

    /// The shard that holds `id`.
    pub fn shard_for(&self, id: &str) -> &Arc<Shard> {
        let n = shard_for_id(id, self.shards.len() as u32) as usize;
        &self.shards[n]
    }

    /// Realtime get by id.
    pub fn get(&self, id: &str) -> Result<Option<StoredDoc>> {
        self.shard_for(id).get(id)
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
        // Documents still in the translogs were parsed with the old mapping:
        // commit them, so that a replay never re-reads them with the new one.
        for shard in &self.shards {
            shard.refresh()?;
        }
        if let Some(d) = dynamic {
            meta.mapping.dynamic = d;
        }
        write_meta(&self.dir, &meta)?;
        *self.meta.write() = meta;
        Ok(())
    }

    /// Applies a batch of writes. Every write that is acknowledged as
    /// successful has been fsynced to its shard's translog.
    pub fn write(&self, writes: Vec<DocWrite>) -> Result<BatchResult> {
        if self.is_deleted() {
            return Err(Error::IndexNotFound(self.name()));
        }
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
            let mut pending: HashMap<String, (Option<Value>, usize)> = HashMap::new();
            for (i, write) in writes.into_iter().enumerate() {
                match self.prepare(i, write, &mut mapping, &mut pending) {
                    Ok((id, changed, shard_write)) => {
                        mapping_changed |= changed;
                        let shard = shard_for_id(&id, self.shards.len() as u32);
                        per_shard.entry(shard).or_default().push((i, shard_write));
                    }
                    Err((id, err)) => items[i] = Some((id, Err(err))),
                }
            }
            if mapping_changed {
                let mut meta = self.meta();
                meta.mapping = mapping;
                write_meta(&self.dir, &meta)?;
                *self.meta.write() = meta;
            }
        }
        let mut touched = HashMap::new();
        for (shard_no, batch) in per_shard {
            let (positions, writes): (Vec<usize>, Vec<ShardWrite>) = batch.into_iter().unzip();
            let ids: Vec<String> = writes
                .iter()
                .map(|w| match w {
                    ShardWrite::Index { id, .. } | ShardWrite::Delete { id, .. } => id.clone(),
                })
                .collect();
            let outcomes = match self.shards[shard_no as usize].write(writes) {
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
                let result = outcome.map(|o| {
                    let seq = touched.entry(shard_no).or_insert(o.seq_no);
                    *seq = (*seq).max(o.seq_no);
                    WriteResult {
                        id: id.clone(),
                        shard: shard_no,
                        version: o.version,
                        seq_no: o.seq_no,
                        result: o.result,
                    }
                });
                items[pos] = Some((Some(id), result));
            }
        }
        let items = items
            .into_iter()
            .map(|item| item.unwrap_or_else(|| (None, Err(Error::Internal("write lost its result".into())))))
            .collect();
        Ok(BatchResult { items, touched })
    }

    /// The common case of a batch of new documents that fit the mapping as it
    /// is: parsed without taking the index's write lock, so that concurrent
    /// bulks parse in parallel. Hands the writes back when the batch has
    /// updates or deletes, or needs a mapping change; they then go through
    /// the sequential path.
    #[allow(clippy::type_complexity)]
    fn prepare_without_mapping_change(
        &self,
        writes: Vec<DocWrite>,
        items: &mut [Option<(Option<String>, Result<WriteResult>)>],
        per_shard: &mut HashMap<u32, Vec<(usize, ShardWrite)>>,
    ) -> std::result::Result<(), Vec<DocWrite>> {
        if !writes
            .iter()
            .all(|w| matches!(w, DocWrite::Index { id: None, .. }))
        {
            return Err(writes);
        }
        let mapping = self.meta.read().mapping.clone();
        let mut parsed = Vec::with_capacity(writes.len());
        for write in &writes {
            let DocWrite::Index { source, .. } = write else {
                return Err(writes);
            };
            let id = crate::ids::generate();
            match parse_document(&id, source, &mapping) {
                Ok((doc, update)) if update.is_empty() => parsed.push((id, Ok(doc))),
                Ok(_) => return Err(writes),
                Err(err) => parsed.push((id, Err(err))),
            }
        }
        for (position, (write, (id, doc))) in writes.into_iter().zip(parsed).enumerate() {
            let DocWrite::Index {
                source,
                raw_source,
                create,
                ..
            } = write
            else {
                continue;
            };
            match doc {
                Ok(doc) => {
                    let shard = shard_for_id(&id, self.shards.len() as u32);
                    let write = index_write(position, id, true, &source, raw_source, doc, create);
                    per_shard.entry(shard).or_default().push((position, write));
                }
                Err(err) => items[position] = Some((Some(id), Err(err))),
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
        pending: &mut HashMap<String, (Option<Value>, usize)>,
    ) -> std::result::Result<(String, bool, ShardWrite), (Option<String>, Error)> {
        match write {
            DocWrite::Index {
                id,
                source,
                raw_source,
                create,
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
                    &source,
                    raw_source,
                    doc,
                    create,
                );
                // A create of an id this batch already wrote can only fail:
                // later updates build on the earlier write.
                if !(create && matches!(pending.get(&id), Some((Some(_), _)))) {
                    pending.insert(id.clone(), (Some(source), position));
                }
                Ok((id, changed, write))
            }
            DocWrite::Update {
                id,
                doc,
                doc_as_upsert,
                upsert,
            } => {
                let id = validate_id(id).map_err(|e| (None, e))?;
                let fail = |e: Error| (Some(id.clone()), e);
                let (current, expect_version, follows) = match pending.get(&id) {
                    Some((source, from)) => (source.clone(), None, Some(*from)),
                    None => match self.get(&id).map_err(fail)? {
                        Some(stored) => {
                            let v: Value = serde_json::from_str(&stored.source).map_err(|e| {
                                fail(Error::Internal(format!("stored source is not JSON: {e}")))
                            })?;
                            (Some(v), Some(stored.version), None)
                        }
                        None => (None, None, None),
                    },
                };
                let new_source = match (current, doc) {
                    (Some(mut cur), Some(partial)) => {
                        merge_json(&mut cur, partial);
                        cur
                    }
                    (Some(_), None) => {
                        return Err(fail(Error::illegal_argument("update requires [doc]")));
                    }
                    (None, Some(partial)) if doc_as_upsert => partial,
                    (None, _) => match upsert {
                        Some(u) => u,
                        None => {
                            return Err(fail(Error::BadRequest {
                                es_type: "document_missing_exception",
                                reason: format!("[{id}]: document missing"),
                            }));
                        }
                    },
                };
                let (parsed, changed) = parse_with(&id, &new_source, mapping).map_err(fail)?;
                let text = new_source.to_string();
                pending.insert(id.clone(), (Some(new_source), position));
                Ok((
                    id.clone(),
                    changed,
                    ShardWrite::Index {
                        id,
                        source: text,
                        doc: parsed,
                        create: false,
                        expect_version,
                        generated_id: false,
                        position,
                        follows,
                    },
                ))
            }
            DocWrite::Delete { id } => {
                let id = validate_id(id).map_err(|e| (None, e))?;
                pending.insert(id.clone(), (None, position));
                Ok((id.clone(), false, ShardWrite::Delete { id, position }))
            }
        }
    }

    /// Refreshes every shard.
    pub fn refresh(&self) -> Result<()> {
        if self.is_deleted() {
            return Ok(());
        }
        for shard in &self.shards {
            shard.refresh()?;
        }
        Ok(())
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

/// The shard write that indexes a parsed document, keeping the client's
/// source text when it was given.
fn index_write(
    position: usize,
    id: String,
    generated_id: bool,
    source: &Value,
    raw_source: Option<String>,
    doc: crate::document::ParsedDoc,
    create: bool,
) -> ShardWrite {
    ShardWrite::Index {
        id,
        source: raw_source.unwrap_or_else(|| source.to_string()),
        doc,
        create,
        expect_version: None,
        generated_id,
        position,
        follows: None,
    }
}

/// Parses a document, applying its mapping update when it parsed.
fn parse_with(id: &str, source: &Value, mapping: &mut Mapping) -> Result<(crate::document::ParsedDoc, bool)> {
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
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(meta).map_err(|e| Error::Internal(e.to_string()))?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(META_FILE))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Whether `dir` holds an index.
pub fn is_index_dir(dir: &Path) -> bool {
    dir.join(META_FILE).exists()
}
