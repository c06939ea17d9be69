//! The registry of indices in a data directory.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::index::{Index, IndexMeta, is_index_dir, read_meta, write_json_durably};
use crate::mapping::Mapping;
use crate::metadata::ClusterMetadata;
use crate::peers::Peers;
use crate::settings::IndexSettings;
use crate::templates::Templates;

mod aliases;

pub use aliases::{
    AliasAction, AliasState, alias_meta, aliases_missing, apply_alias_change, validate_alias_name,
};

/// How long a coordinator in a cluster uses the cluster settings that
/// searches read before it reads them from etcd again.
pub const CLUSTER_SETTING_MAX_AGE: Duration = Duration::from_secs(1);

/// All indices of a node, stored under `<data_dir>/indices/<name>`.
pub struct Indices {
    root: PathBuf,
    map: RwLock<BTreeMap<String, Arc<Index>>>,
    /// Indices whose files did not open when the node started.
    failed: RwLock<BTreeMap<String, FailedIndex>>,
    create_lock: Mutex<()>,
    /// Serializes this node's alias changes.
    alias_lock: Mutex<()>,
    peers: Option<Arc<dyn Peers>>,
    /// The templates and cluster settings of a node without a cluster
    /// store (a cluster with etcd keeps them there), and their file.
    metadata: Mutex<ClusterMetadata>,
    metadata_file: PathBuf,
    /// In a cluster, the templates and cluster settings as last read from
    /// etcd for searches, and when.
    cached_metadata: Mutex<Option<(Instant, Arc<ClusterMetadata>)>>,
    /// The data directory's lock, held while the registry is open, so that
    /// no other process (a node, `sql` or `load --data-dir`) opens it too.
    _lock: std::fs::File,
}

impl std::fmt::Debug for Indices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indices").field("root", &self.root).finish()
    }
}

/// An index that the embedded single node found damaged when it started
/// (unreadable metadata, a tantivy file or translog that fails its checks).
/// The node serves its other indices; this one keeps its name and its
/// files, answers reads and writes with a 503 naming the cause, shows red
/// in `_cat/indices` and `_cluster/health`, and goes only when it is
/// deleted.
#[derive(Debug, Clone)]
pub struct FailedIndex {
    /// Index name (from its metadata, else from its directory's name).
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Its metadata, when that much could be read.
    pub meta: Option<IndexMeta>,
    /// Why it did not open.
    pub reason: String,
}

impl FailedIndex {
    fn of(dir: &Path, err: &Error) -> FailedIndex {
        let meta = read_meta(dir).ok();
        let name = match &meta {
            Some(meta) => meta.name.clone(),
            None => name_of_dir(dir),
        };
        FailedIndex {
            name,
            dir: dir.to_path_buf(),
            meta,
            reason: err.to_string(),
        }
    }

    /// The error every request that needs it answers.
    pub fn error(&self) -> Error {
        Error::unavailable(self.explanation())
    }

    /// What is wrong with it, as its error and its shard failures say.
    pub fn explanation(&self) -> String {
        format!(
            "index [{}] could not be opened on this node: {}",
            self.name, self.reason
        )
    }

    /// Its primary shards: as its metadata says, or one when that did not read.
    pub fn num_shards(&self) -> u32 {
        self.meta.as_ref().map_or(1, |m| m.settings.number_of_shards)
    }

    /// Its replicas of each shard: as its metadata says, or none when that
    /// did not read.
    pub fn num_replicas(&self) -> u32 {
        self.meta.as_ref().map_or(0, |m| m.settings.number_of_replicas)
    }
}

/// The index name in an index directory's name (`<name>-<uuid>`).
fn name_of_dir(dir: &Path) -> String {
    let file_name = dir.file_name().unwrap_or_default().to_string_lossy();
    match file_name.rsplit_once('-') {
        Some((name, uuid)) if uuid.len() == 32 && uuid.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => file_name.into_owned(),
    }
}

/// Deletes an index taken out of the map, and its files.
fn discard(name: &str, index: Arc<Index>) -> Result<()> {
    index.mark_deleted();
    let dir = index.dir().to_path_buf();
    drop(index);
    erase(&dir)?;
    tracing::info!(index = name, "deleted index");
    Ok(())
}

/// Deletes an index directory. Removing the metadata first makes the
/// deletion atomic: a crash part-way through leaves files that are no
/// longer an index. Indexing threads of dropped writers may still be
/// flushing into the directory: removing it is retried, and a leftover (no
/// longer an index) is only logged.
fn erase(dir: &Path) -> Result<()> {
    std::fs::remove_file(dir.join(crate::index::META_FILE))?;
    std::fs::File::open(dir)?.sync_all()?;
    let mut attempt = 0;
    while let Err(err) = std::fs::remove_dir_all(dir) {
        attempt += 1;
        if err.kind() == std::io::ErrorKind::NotFound {
            break;
        }
        if attempt == 20 {
            tracing::warn!(dir = %dir.display(), %err, "could not remove the files of a deleted index");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The names, open or failed, that a comma-separated list of names,
/// aliases and wildcards (`logs-*`, `_all`) matches, each once, in the
/// list's order. An alias stands for the indices it names, and a wildcard
/// matches aliases too. A concrete name that is neither an index nor an
/// alias is an error; a wildcard may match nothing.
fn matching<'a>(
    map: &'a BTreeMap<String, Arc<Index>>,
    failed: &'a BTreeMap<String, FailedIndex>,
    expr: &str,
) -> Result<Vec<&'a String>> {
    matching_names(map, failed, expr, true, false)
}

/// [`matching`], with aliases or without them (index names only); with
/// `skip_missing` (`ignore_unavailable`), a name that is neither an index
/// nor an alias names nothing instead of failing. A part after the first
/// that starts with `-` takes the names it matches out of those before it.
fn matching_names<'a>(
    map: &'a BTreeMap<String, Arc<Index>>,
    failed: &'a BTreeMap<String, FailedIndex>,
    expr: &str,
    with_aliases: bool,
    skip_missing: bool,
) -> Result<Vec<&'a String>> {
    let mut out: Vec<&String> = Vec::new();
    for (i, part) in expr
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .enumerate()
    {
        if let Some(excluded) = part.strip_prefix('-').filter(|_| i > 0) {
            out.retain(|name| {
                !wildcard_match(excluded, name)
                    && !map.get(*name).is_some_and(|index| {
                        index
                            .aliases()
                            .keys()
                            .any(|alias| wildcard_match(excluded, alias))
                    })
            });
            continue;
        }
        let matched: Vec<&String> = if part == "_all" || part.contains('*') {
            let aliased = map.iter().filter(|(_, index)| {
                with_aliases
                    && part != "_all"
                    && index.aliases().keys().any(|alias| wildcard_match(part, alias))
            });
            map.keys()
                .chain(failed.keys())
                .filter(|name| part == "_all" || wildcard_match(part, name))
                .chain(aliased.map(|(name, _)| name))
                .collect()
        } else if let Some((name, _)) = map.get_key_value(part) {
            vec![name]
        } else if let Some((name, _)) = failed.get_key_value(part) {
            vec![name]
        } else if !with_aliases {
            if map.values().any(|index| index.has_alias(part)) {
                return Err(Error::illegal_argument(format!(
                    "The provided expression [{part}] matches an alias, specify the corresponding concrete \
                     indices instead."
                )));
            }
            return Err(Error::IndexNotFound(part.to_string()));
        } else {
            let named: Vec<&String> = map
                .iter()
                .filter(|(_, index)| index.has_alias(part))
                .map(|(name, _)| name)
                .collect();
            if named.is_empty() && !skip_missing {
                return Err(Error::IndexNotFound(part.to_string()));
            }
            named
        };
        for name in matched {
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    Ok(out)
}

/// How a write request makes its documents searchable (`?refresh=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum RefreshPolicy {
    /// Leave it to the periodic refresh.
    #[default]
    None,
    /// Refresh the touched shards before answering.
    Immediate,
    /// Wait for a refresh that covers the writes before answering.
    WaitFor,
}

impl RefreshPolicy {
    /// Parses `?refresh=` (`true`, `""`, `false`, `wait_for`).
    pub fn parse(value: Option<&str>) -> Result<RefreshPolicy> {
        match value {
            None | Some("false") => Ok(RefreshPolicy::None),
            Some("true") | Some("") => Ok(RefreshPolicy::Immediate),
            Some("wait_for") => Ok(RefreshPolicy::WaitFor),
            Some(other) => Err(Error::illegal_argument(format!(
                "Unknown value for refresh: [{other}]."
            ))),
        }
    }
}

/// Makes the shards a write touched on this node searchable as `policy`
/// asks (other nodes do it for theirs before they answer).
pub async fn apply_refresh(
    policy: RefreshPolicy,
    touched: Vec<(Arc<Index>, HashMap<u32, u64>)>,
) -> Result<()> {
    match policy {
        RefreshPolicy::None => Ok(()),
        RefreshPolicy::Immediate => tokio::task::spawn_blocking(move || {
            for (index, shards) in touched {
                for shard in shards.keys() {
                    index.local_shard(*shard)?.refresh()?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(format!("refresh failed: {e}")))?,
        RefreshPolicy::WaitFor => {
            for (index, shards) in touched {
                for (shard, seq) in shards {
                    let shard = index.local_shard(shard)?;
                    if index.settings().refresh_interval.is_none() {
                        tokio::task::spawn_blocking(move || shard.refresh())
                            .await
                            .map_err(|e| Error::Internal(format!("refresh failed: {e}")))??;
                    } else {
                        shard.wait_visible(seq).await;
                    }
                }
            }
            Ok(())
        }
    }
}

impl Indices {
    /// Opens every index under `data_dir`, replaying translogs (the
    /// embedded node: every shard is local).
    pub fn open(data_dir: &Path) -> Result<Indices> {
        Indices::open_with(data_dir, None)
    }

    /// Opens every index under `data_dir` as a node of a cluster reached
    /// through `peers`: only the shards allocated to this node are opened.
    pub fn open_with(data_dir: &Path, peers: Option<Arc<dyn Peers>>) -> Result<Indices> {
        let root = data_dir.join("indices");
        std::fs::create_dir_all(&root)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data_dir.join(LOCK_FILE))?;
        if let Err(err) = lock.try_lock() {
            return Err(Error::Internal(format!(
                "data directory [{}] is in use by another process ({err})",
                data_dir.display()
            )));
        }
        let (mut map, mut failed) = (BTreeMap::new(), BTreeMap::new());
        for entry in std::fs::read_dir(&root)? {
            let path = entry?.path();
            if !is_index_dir(&path) {
                continue;
            }
            match Index::open(&path, peers.clone()) {
                Ok(index) => {
                    tracing::info!(index = %index.name(), docs = index.num_docs(), "opened index");
                    map.insert(index.name(), Arc::new(index));
                }
                // Only damage fails an index alone, and only on the embedded
                // single node. Anything else (the directory in use by another
                // process, a cluster's directory without its cluster, a
                // machine out of file handles) leaves the files as they are
                // and the node down; so does damage on a node of a cluster,
                // so that the leader can promote its shards' replicas.
                Err(err) if !err.is_damage() || peers.is_some() => return Err(err),
                Err(err) => {
                    let index = FailedIndex::of(&path, &err);
                    tracing::error!(
                        index = %index.name, dir = %path.display(), %err,
                        "could not open the index: it answers 503 until it is deleted"
                    );
                    failed.insert(index.name.clone(), index);
                }
            }
        }
        let metadata_file = data_dir.join(METADATA_FILE);
        let metadata = match std::fs::read(&metadata_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| {
                Error::Corrupt(format!(
                    "cluster metadata file [{}]: {err}",
                    metadata_file.display()
                ))
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => ClusterMetadata::default(),
            Err(err) => return Err(err.into()),
        };
        Ok(Indices {
            root,
            map: RwLock::new(map),
            failed: RwLock::new(failed),
            create_lock: Mutex::new(()),
            alias_lock: Mutex::new(()),
            peers,
            metadata: Mutex::new(metadata),
            metadata_file,
            cached_metadata: Mutex::new(None),
            _lock: lock,
        })
    }

    /// The other nodes, in a cluster.
    pub fn peers(&self) -> Option<&Arc<dyn Peers>> {
        self.peers.as_ref()
    }

    /// The templates and cluster settings: the cluster's, else this node's.
    pub fn metadata(&self) -> Result<ClusterMetadata> {
        match &self.peers {
            Some(peers) => peers.metadata(),
            None => Ok(self.metadata.lock().clone()),
        }
    }

    /// `search.max_buckets`, which every search with aggregations reads.
    pub fn max_buckets(&self) -> usize {
        match &self.peers {
            Some(peers) => self.cached_metadata(peers.as_ref()).max_buckets(),
            None => self.metadata.lock().max_buckets(),
        }
    }

    /// A cluster's templates and settings for searches to read: read from
    /// etcd at most once per [`CLUSTER_SETTING_MAX_AGE`], so that searches
    /// neither wait on etcd for them nor fail without them. While etcd does
    /// not answer, the copy last read (else the defaults) serves.
    fn cached_metadata(&self, peers: &dyn Peers) -> Arc<ClusterMetadata> {
        let cached = self.cached_metadata.lock().clone();
        if let Some((read, metadata)) = &cached
            && read.elapsed() < CLUSTER_SETTING_MAX_AGE
        {
            return Arc::clone(metadata);
        }
        // Read without the lock: searches that find the copy stale
        // meanwhile read it too, rather than wait on this read.
        let metadata = match peers.metadata() {
            Ok(metadata) => Arc::new(metadata),
            Err(err) => {
                tracing::warn!(%err, "the cluster settings could not be read from etcd; the last copy serves");
                cached.map(|(_, metadata)| metadata).unwrap_or_default()
            }
        };
        *self.cached_metadata.lock() = Some((Instant::now(), Arc::clone(&metadata)));
        metadata
    }

    /// Changes the templates or cluster settings with `change` (which may
    /// run again, when another node changed them meanwhile) and stores them.
    pub fn change_metadata(&self, mut change: impl FnMut(&mut ClusterMetadata) -> Result<()>) -> Result<()> {
        if let Some(peers) = &self.peers {
            let changed = peers.change_metadata(&mut change);
            // This node's next search reads the settings afresh.
            *self.cached_metadata.lock() = None;
            return changed;
        }
        let mut held = self.metadata.lock();
        let mut next = held.clone();
        change(&mut next)?;
        if next != *held {
            write_json_durably(&self.metadata_file, &next)?;
            *held = next;
        }
        Ok(())
    }

    /// The index, component and legacy templates.
    pub fn templates(&self) -> Result<Templates> {
        Ok(self.metadata()?.templates)
    }

    /// Changes the templates with `change`, as [`Indices::change_metadata`].
    pub fn change_templates(&self, mut change: impl FnMut(&mut Templates) -> Result<()>) -> Result<()> {
        self.change_metadata(|metadata| change(&mut metadata.templates))
    }

    /// Creates an index from Elasticsearch's create-index body
    /// (`{"settings": {...}, "mappings": {...}}`), laid over what the
    /// index template that matches the name gives.
    pub fn create(&self, name: &str, body: Option<&Value>) -> Result<Arc<Index>> {
        self.create_with(name, body, &self.templates()?)
    }

    /// [`Indices::create`] with these templates.
    fn create_with(&self, name: &str, body: Option<&Value>, templates: &Templates) -> Result<Arc<Index>> {
        validate_name(name)?;
        let body = templates.create_body(name, body)?;
        let body = body.as_ref();
        let mut settings = IndexSettings::default();
        let mut mapping = Mapping::default();
        let mut aliases = BTreeMap::new();
        if let Some(body) = body {
            let obj = body
                .as_object()
                .ok_or_else(|| Error::illegal_argument("request body must be an object"))?;
            for (key, value) in obj {
                match key.as_str() {
                    "settings" => settings = IndexSettings::from_es(value)?,
                    "mappings" => mapping = Mapping::from_es(value)?,
                    "aliases" => {
                        let defs = value
                            .as_object()
                            .ok_or_else(|| Error::illegal_argument("[aliases] must be an object"))?;
                        for (alias, def) in defs {
                            aliases.insert(alias.clone(), alias_meta(alias, def)?);
                        }
                    }
                    other => {
                        return Err(Error::BadRequest {
                            es_type: "parse_exception",
                            reason: format!("unknown key [{other}] for create index"),
                        });
                    }
                }
            }
        }
        // The lock orders local creations, and holds until the cluster's
        // store has ordered this one (so that no other metadata of the name
        // replaces it meanwhile); it is released before the other nodes are
        // told, since each installs under its own lock: two coordinators
        // creating indices at once would wait on each other.
        let guard = self.create_lock.lock();
        if self.exists(name) {
            return Err(Error::IndexExists(name.to_string()));
        }
        self.check_new_index_aliases(name, &aliases)?;
        let copies = match &self.peers {
            Some(peers) => peers.allocate(name, settings.number_of_shards, settings.number_of_replicas)?,
            None => Vec::new(),
        };
        let allocation = copies.iter().filter_map(|c| c.first().cloned()).collect();
        let replicas = copies
            .iter()
            .map(|c| c.iter().skip(1).cloned().collect())
            .collect();
        let mut meta = IndexMeta {
            name: name.to_string(),
            uuid: uuid::Uuid::new_v4().simple().to_string(),
            creation_date: chrono::Utc::now().timestamp_millis(),
            settings,
            own_fields: mapping.columns().into_iter().map(|c| c.path).collect(),
            mapping,
            allocation,
            replicas,
            version: 0,
            created_revision: 0,
            aliases,
        };
        let index = self.create_from(meta.clone())?;
        let Some(peers) = &self.peers else {
            tracing::info!(index = name, "created index");
            return Ok(index);
        };
        let stored = peers.index_created(&meta).and_then(|revision| {
            meta.created_revision = revision;
            if revision > 0 {
                index.set_created_revision(revision)?;
            }
            Ok(())
        });
        drop(guard);
        // The index exists everywhere or nowhere. Only this incarnation goes:
        // another coordinator's may have been installed meanwhile.
        let outcome = match stored {
            // The store holds another node's index of this name: no other
            // node has this one.
            Err(err @ Error::IndexExists(_)) => Err(err),
            Err(err) => {
                let _ = peers.index_deleted(&meta);
                Err(err)
            }
            Ok(()) => peers.index_announced(&meta).inspect_err(|_| {
                let _ = peers.index_deleted(&meta);
            }),
        };
        if let Err(err) = outcome {
            let _ = self.remove_incarnation(name, &meta.uuid);
            return Err(err);
        }
        tracing::info!(index = name, "created index");
        Ok(index)
    }

    /// Creates an index from its metadata, as another node made it.
    /// Installing the same incarnation twice is a no-op; an incarnation
    /// created later in the cluster store (a higher `created_revision`)
    /// replaces this node's, an earlier one does not (a late copy of
    /// metadata from before a delete and re-create).
    pub fn install(&self, meta: IndexMeta) -> Result<Arc<Index>> {
        if meta.allocation.len() != meta.settings.number_of_shards as usize {
            return Err(Error::illegal_argument(format!(
                "index [{}] has no allocation of its {} shards to nodes: it was made by a single node",
                meta.name, meta.settings.number_of_shards
            )));
        }
        let _guard = self.create_lock.lock();
        let existing = self.map.read().get(&meta.name).cloned();
        if let Some(existing) = existing {
            let mine = existing.meta();
            if mine.uuid == meta.uuid {
                return Ok(existing);
            }
            if meta.created_revision <= mine.created_revision {
                return Err(Error::IndexExists(meta.name));
            }
            drop(existing);
            tracing::info!(index = %meta.name, old = %mine.uuid, "replacing an older incarnation");
            self.remove(&meta.name)?;
        }
        let name = meta.name.clone();
        let index = self.create_from(meta)?;
        tracing::info!(index = %name, "installed index from another node");
        Ok(index)
    }

    fn create_from(&self, meta: IndexMeta) -> Result<Arc<Index>> {
        let name = meta.name.clone();
        let dir = self.root.join(format!("{name}-{}", meta.uuid));
        let index = match Index::create(&dir, meta, self.peers.clone()) {
            Ok(index) => Arc::new(index),
            Err(err) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(err);
            }
        };
        self.map.write().insert(name, Arc::clone(&index));
        Ok(index)
    }

    /// The index named `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Index>> {
        let index = self.map.read().get(name).cloned();
        index.ok_or_else(|| self.missing(name))
    }

    /// Whether an index named `name` exists, open or failed.
    fn exists(&self, name: &str) -> bool {
        self.map.read().contains_key(name) || self.failed.read().contains_key(name)
    }

    /// The error for a name that names no open index.
    fn missing(&self, name: &str) -> Error {
        match self.failed.read().get(name) {
            Some(failed) => failed.error(),
            None => Error::IndexNotFound(name.to_string()),
        }
    }

    /// The index named `name`, the incarnation `uuid` when one is named,
    /// as another node asks for it. This node may not know it yet: another
    /// node created it (or re-created it) and this node has not followed
    /// the cluster store that far. Then it is read from the store and
    /// installed first, so that what another node acknowledged is known
    /// here when that node's next call comes.
    pub fn get_current(&self, name: &str, uuid: Option<&str>) -> Result<Arc<Index>> {
        match self.get_incarnation(name, uuid) {
            Err(Error::IndexNotFound(_)) => {}
            known => return known,
        }
        let not_found = || Error::IndexNotFound(name.to_string());
        let Some(peers) = &self.peers else {
            return Err(not_found());
        };
        let stored = peers
            .stored_index(name)?
            .filter(|meta| !meta.allocation.is_empty())
            .ok_or_else(not_found)?;
        match self.install(stored) {
            Ok(_) | Err(Error::IndexExists(_)) => {}
            Err(err) => return Err(err),
        }
        self.get_incarnation(name, uuid)
    }

    /// The index named `name` as this node has it, when it is the
    /// incarnation `uuid` (any incarnation without one).
    pub fn get_incarnation(&self, name: &str, uuid: Option<&str>) -> Result<Arc<Index>> {
        let index = self.get(name)?;
        if uuid.is_some_and(|u| index.uuid() != u) {
            return Err(Error::IndexNotFound(name.to_string()));
        }
        Ok(index)
    }

    /// The index that writes to `name` go to ([`Indices::write_index`]),
    /// created (with the templates its name matches) when there is none
    /// and `action.auto_create_index` allows it.
    pub fn get_or_create(&self, name: &str) -> Result<Arc<Index>> {
        match self.write_index(name) {
            Ok(index) => Ok(index),
            Err(Error::IndexNotFound(_)) => {
                let metadata = self.metadata()?;
                metadata.check_auto_create(name)?;
                match self.create_with(name, None, &metadata.templates) {
                    Err(Error::IndexExists(_)) => self.get_current(name, None),
                    other => other,
                }
            }
            Err(err) => Err(err),
        }
    }

    /// Deletes an index and its files, on every node.
    pub fn delete(&self, name: &str) -> Result<()> {
        // Only the embedded single node keeps failed indices.
        if self.failed.read().contains_key(name) {
            return self.remove_failed(name);
        }
        let meta = self.get(name)?.meta();
        if let Some(peers) = &self.peers {
            peers.index_deleted(&meta)?;
        }
        // With etcd the node may have removed it already, following etcd.
        self.remove_incarnation(name, &meta.uuid)
    }

    /// Deletes this node's copy of an index, when it is the incarnation
    /// `uuid` (another node deleted it).
    pub fn remove_incarnation(&self, name: &str, uuid: &str) -> Result<()> {
        // Checked and taken out in one step: another incarnation installed
        // meanwhile stays.
        let index = {
            let mut map = self.map.write();
            match map.get(name) {
                Some(index) if index.uuid() == uuid => map.remove(name),
                _ => None,
            }
        };
        match index {
            Some(index) => discard(name, index),
            None => Ok(()),
        }
    }

    fn remove(&self, name: &str) -> Result<()> {
        let index = self
            .map
            .write()
            .remove(name)
            .ok_or_else(|| Error::IndexNotFound(name.to_string()))?;
        discard(name, index)
    }

    /// Deletes the files of an index that did not open.
    fn remove_failed(&self, name: &str) -> Result<()> {
        let failed = self.failed.write().remove(name);
        if let Some(failed) = failed {
            erase(&failed.dir)?;
            tracing::info!(index = name, "deleted an index that did not open");
        }
        Ok(())
    }

    /// All indices, by name.
    pub fn list(&self) -> Vec<Arc<Index>> {
        self.map.read().values().cloned().collect()
    }

    /// Resolves a comma-separated list of names and wildcards (`logs-*`).
    /// A concrete name that does not exist is an error; a wildcard may match
    /// nothing. An index that did not open is an error either way, so that
    /// no answer leaves it out unsaid.
    pub fn resolve(&self, expr: &str) -> Result<Vec<Arc<Index>>> {
        let (map, failed) = (self.map.read(), self.failed.read());
        matching(&map, &failed, expr)?
            .into_iter()
            .map(|name| match map.get(name) {
                Some(index) => Ok(Arc::clone(index)),
                None => Err(failed[name].error()),
            })
            .collect()
    }

    /// The names a comma-separated list of names and wildcards matches,
    /// among the open indices and those that did not open (which can be
    /// deleted and answer `HEAD`). A concrete name that does not exist is
    /// an error.
    pub fn resolve_names(&self, expr: &str) -> Result<Vec<String>> {
        let (map, failed) = (self.map.read(), self.failed.read());
        Ok(matching(&map, &failed, expr)?.into_iter().cloned().collect())
    }

    /// The index names (open or failed) a list of names and wildcards
    /// matches, aliases left out: for what only an index's own name may
    /// ask (deleting it, changing its aliases). An alias named alone is an
    /// error that says so.
    pub fn resolve_concrete_names(&self, expr: &str) -> Result<Vec<String>> {
        let (map, failed) = (self.map.read(), self.failed.read());
        Ok(matching_names(&map, &failed, expr, false, false)?
            .into_iter()
            .cloned()
            .collect())
    }

    /// The open and the failed indices a list of names and wildcards
    /// matches (for the views that show failed indices as red).
    pub fn resolve_with_failed(&self, expr: &str) -> Result<(Vec<Arc<Index>>, Vec<FailedIndex>)> {
        self.resolve_searched(expr, false)
    }

    /// [`Indices::resolve_with_failed`] for a search, which may ask to skip
    /// the names of no index or alias (`ignore_unavailable`).
    pub fn resolve_searched(
        &self,
        expr: &str,
        ignore_unavailable: bool,
    ) -> Result<(Vec<Arc<Index>>, Vec<FailedIndex>)> {
        let (map, failed) = (self.map.read(), self.failed.read());
        let names = matching_names(&map, &failed, expr, true, ignore_unavailable)?;
        Ok((
            names.iter().filter_map(|n| map.get(*n).cloned()).collect(),
            names.iter().filter_map(|n| failed.get(*n).cloned()).collect(),
        ))
    }

    /// Refreshes every index.
    pub fn refresh_all(&self) -> Result<()> {
        for index in self.list() {
            index.refresh()?;
        }
        Ok(())
    }

    /// Commits every shard; called on shutdown.
    pub fn close(&self) -> Result<()> {
        self.refresh_all()
    }

    /// Runs the periodic refresh of every index at its `refresh_interval`
    /// until the registry is dropped.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last: HashMap<String, Instant> = HashMap::new();
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                let Some(indices) = weak.upgrade() else { return };
                let now = Instant::now();
                let mut due = Vec::new();
                for index in indices.list() {
                    let Some(interval) = index.settings().refresh_interval else {
                        continue;
                    };
                    let name = index.name();
                    let last_refresh = last.entry(name.clone()).or_insert(now);
                    if now.duration_since(*last_refresh) >= interval {
                        *last_refresh = now;
                        due.push(index);
                    }
                }
                drop(indices);
                for index in due {
                    let name = index.name();
                    let result = tokio::task::spawn_blocking(move || index.refresh()).await;
                    match result {
                        Ok(Ok(())) => {}
                        Ok(Err(err)) => tracing::error!(index = %name, %err, "periodic refresh failed"),
                        Err(err) => tracing::error!(index = %name, %err, "periodic refresh panicked"),
                    }
                }
            }
        })
    }
}

/// The file in a data directory that the process using it holds locked.
const LOCK_FILE: &str = "quidditch.lock";
/// The templates and cluster settings of a node without a cluster store,
/// in its data directory.
const METADATA_FILE: &str = "cluster_metadata.json";

/// Elasticsearch's index name rules.
pub fn validate_name(name: &str) -> Result<()> {
    let invalid = |why: &str| {
        Err(Error::BadRequest {
            es_type: "invalid_index_name_exception",
            reason: format!("Invalid index name [{name}], {why}"),
        })
    };
    if name.is_empty() {
        return invalid("must not be empty");
    }
    if name != name.to_lowercase() {
        return invalid("must be lowercase");
    }
    if name.starts_with(['_', '-', '+']) {
        return invalid("must not start with '_', '-', or '+'");
    }
    if name == "." || name == ".." {
        return invalid("must not be '.' or '..'");
    }
    if name.len() > 255 {
        return invalid("index name is too long");
    }
    if name.contains(['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':']) {
        return invalid("must not contain the following characters [ , \", *, \\, <, |, ,, >, /, ?, #, :]");
    }
    Ok(())
}

/// Matches `*` wildcards.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_follow_elasticsearch_rules() {
        assert!(validate_name("logs-2024").is_ok());
        assert!(validate_name("Logs").is_err());
        assert!(validate_name("_x").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name("").is_err());
    }

    #[test]
    fn an_index_whose_metadata_does_not_read_fails_alone() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let indices = Indices::open(dir.path())?;
        let (bad, good) = (indices.create("logs-2024", None)?, indices.create("other", None)?);
        let bad_dir = bad.dir().to_path_buf();
        drop((bad, good));
        indices.close()?;
        drop(indices);
        std::fs::write(bad_dir.join(crate::index::META_FILE), b"not json")?;

        let indices = Indices::open(dir.path())?;
        assert_eq!(
            indices.list().iter().map(|i| i.name()).collect::<Vec<_>>(),
            ["other"]
        );
        let (_, failed) = indices.resolve_with_failed("_all")?;
        assert_eq!(failed.len(), 1);
        assert_eq!(
            (failed[0].name.as_str(), failed[0].meta.is_none()),
            ("logs-2024", true)
        );
        let err = indices
            .get("logs-2024")
            .err()
            .ok_or_else(|| anyhow::anyhow!("it opened"))?;
        assert_eq!(
            (err.status(), err.es_type()),
            (503, "unavailable_shards_exception")
        );
        assert!(err.to_string().contains("corrupt index metadata"), "{err}");
        assert!(matches!(
            indices.create("logs-2024", None),
            Err(Error::IndexExists(_))
        ));
        assert_eq!(indices.resolve_names("logs-*")?, ["logs-2024"]);
        assert!(matches!(indices.resolve("logs-*"), Err(e) if e.status() == 503));

        indices.delete("logs-2024")?;
        assert!(!bad_dir.exists());
        assert!(indices.resolve_with_failed("_all")?.1.is_empty());
        indices.create("logs-2024", None)?;
        Ok(())
    }

    #[tokio::test]
    async fn deleting_an_index_releases_refresh_waiters() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let indices = Indices::open(dir.path())?;
        let settings = serde_json::json!({"settings": {"refresh_interval": "1h"}});
        let index = indices.create("waiting", Some(&settings))?;
        let write = crate::index::DocWrite::Index {
            id: Some("1".into()),
            source: r#"{"a": 1}"#.into(),
            create: false,
            condition: None,
        };
        let batch = index.write(vec![write], RefreshPolicy::None)?;
        let (&shard, &seq) = batch
            .touched
            .iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("nothing written"))?;
        let shard = index.local_shard(shard)?;
        let waiter = tokio::spawn(async move { shard.wait_visible(seq).await });
        indices.delete("waiting")?;
        tokio::time::timeout(Duration::from_secs(10), waiter).await??;
        Ok(())
    }

    /// Two write indices of one alias (as two coordinators' changes,
    /// each checked alone, can leave it once merged) fail writes through
    /// the alias instead of sending them to either index.
    #[test]
    fn an_alias_with_two_write_indices_takes_no_writes() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let indices = Indices::open(dir.path())?;
        let writer = crate::index::AliasMeta {
            is_write_index: Some(true),
        };
        let (a, b) = (indices.create("a", None)?, indices.create("b", None)?);
        let only_a = BTreeMap::from([("w".to_string(), writer)]);
        a.set_aliases(&BTreeMap::new(), &only_a)?;
        assert_eq!(indices.write_index("w")?.name(), "a");
        b.set_aliases(&BTreeMap::new(), &only_a)?;
        let err = indices
            .write_index("w")
            .err()
            .ok_or_else(|| anyhow::anyhow!("a write index was chosen"))?;
        assert_eq!(err.status(), 400);
        assert!(
            err.to_string()
                .contains("alias [w] has more than one write index [a,b]"),
            "{err}"
        );
        // Changes that leave the alias as it is still go through.
        indices.create("c", None)?;
        indices.update_aliases(&[AliasAction::Add {
            indices: vec!["c".into()],
            alias: "other".into(),
            meta: crate::index::AliasMeta::default(),
        }])?;
        Ok(())
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("logs-*", "logs-1"));
        assert!(wildcard_match("*-1", "logs-1"));
        assert!(wildcard_match("l*s-*1", "logs-1"));
        assert!(!wildcard_match("logs-*", "metrics"));
        assert!(wildcard_match("abc", "abc"));
    }
}
