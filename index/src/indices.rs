//! The registry of indices in a data directory.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::index::{Index, IndexMeta, is_index_dir};
use crate::mapping::Mapping;
use crate::peers::Peers;
use crate::settings::IndexSettings;

/// All indices of a node, stored under `<data_dir>/indices/<name>`.
pub struct Indices {
    root: PathBuf,
    map: RwLock<BTreeMap<String, Arc<Index>>>,
    create_lock: Mutex<()>,
    peers: Option<Arc<dyn Peers>>,
}

impl std::fmt::Debug for Indices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indices").field("root", &self.root).finish()
    }
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
        let mut map = BTreeMap::new();
        for entry in std::fs::read_dir(&root)? {
            let path = entry?.path();
            if !is_index_dir(&path) {
                continue;
            }
            let index = Index::open(&path, peers.clone())?;
            tracing::info!(index = %index.name(), docs = index.num_docs(), "opened index");
            map.insert(index.name(), Arc::new(index));
        }
        Ok(Indices {
            root,
            map: RwLock::new(map),
            create_lock: Mutex::new(()),
            peers,
        })
    }

    /// The other nodes, in a cluster.
    pub fn peers(&self) -> Option<&Arc<dyn Peers>> {
        self.peers.as_ref()
    }

    /// Creates an index from Elasticsearch's create-index body
    /// (`{"settings": {...}, "mappings": {...}}`).
    pub fn create(&self, name: &str, body: Option<&Value>) -> Result<Arc<Index>> {
        validate_name(name)?;
        let mut settings = IndexSettings::default();
        let mut mapping = Mapping::default();
        if let Some(body) = body {
            let obj = body
                .as_object()
                .ok_or_else(|| Error::illegal_argument("request body must be an object"))?;
            for (key, value) in obj {
                match key.as_str() {
                    "settings" => settings = IndexSettings::from_es(value)?,
                    "mappings" => mapping = Mapping::from_es(value)?,
                    "aliases" => {}
                    other => {
                        return Err(Error::BadRequest {
                            es_type: "parse_exception",
                            reason: format!("unknown key [{other}] for create index"),
                        });
                    }
                }
            }
        }
        let _guard = self.create_lock.lock();
        if self.map.read().contains_key(name) {
            return Err(Error::IndexExists(name.to_string()));
        }
        let copies = match &self.peers {
            Some(peers) => peers.allocate(name, settings.number_of_shards, settings.number_of_replicas)?,
            None => Vec::new(),
        };
        let allocation = copies.iter().filter_map(|c| c.first().cloned()).collect();
        let replicas = copies
            .iter()
            .map(|c| c.iter().skip(1).cloned().collect())
            .collect();
        let meta = IndexMeta {
            name: name.to_string(),
            uuid: uuid::Uuid::new_v4().simple().to_string(),
            creation_date: chrono::Utc::now().timestamp_millis(),
            settings,
            mapping,
            allocation,
            replicas,
            version: 0,
            created_revision: 0,
        };
        let index = self.create_from(meta.clone())?;
        if let Some(peers) = &self.peers {
            match peers.index_created(&meta) {
                Ok(0) => {}
                Ok(revision) => index.set_created_revision(revision)?,
                Err(err) => {
                    // The index exists everywhere or nowhere. Only this
                    // incarnation goes: another coordinator's may have been
                    // installed meanwhile.
                    if !matches!(err, Error::IndexExists(_)) {
                        let _ = peers.index_deleted(&meta);
                    }
                    let _ = self.remove_incarnation(name, &meta.uuid);
                    return Err(err);
                }
            }
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
        self.map
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::IndexNotFound(name.to_string()))
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

    /// The index named `name`, created with defaults when missing
    /// (Elasticsearch's `action.auto_create_index`).
    pub fn get_or_create(&self, name: &str) -> Result<Arc<Index>> {
        match self.get(name) {
            Ok(index) => Ok(index),
            Err(Error::IndexNotFound(_)) => match self.create(name, None) {
                Err(Error::IndexExists(_)) => self.get_current(name, None),
                other => other,
            },
            Err(err) => Err(err),
        }
    }

    /// Deletes an index and its files, on every node.
    pub fn delete(&self, name: &str) -> Result<()> {
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
        match self.get(name) {
            Ok(index) if index.uuid() == uuid => self.remove(name),
            Ok(_) | Err(Error::IndexNotFound(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }

    fn remove(&self, name: &str) -> Result<()> {
        let index = self
            .map
            .write()
            .remove(name)
            .ok_or_else(|| Error::IndexNotFound(name.to_string()))?;
        index.mark_deleted();
        // Removing the metadata first makes the deletion atomic: a crash
        // part-way through leaves files that are no longer an index.
        std::fs::remove_file(index.dir().join(crate::index::META_FILE))?;
        std::fs::File::open(index.dir())?.sync_all()?;
        // Indexing threads of the dropped writers may still be flushing into
        // the directory: removing it is retried, and a leftover (no longer an
        // index) is only logged.
        let dir = index.dir().to_path_buf();
        drop(index);
        let mut attempt = 0;
        while let Err(err) = std::fs::remove_dir_all(&dir) {
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
        tracing::info!(index = name, "deleted index");
        Ok(())
    }

    /// All indices, by name.
    pub fn list(&self) -> Vec<Arc<Index>> {
        self.map.read().values().cloned().collect()
    }

    /// Resolves a comma-separated list of names and wildcards (`logs-*`).
    /// A concrete name that does not exist is an error; a wildcard may match nothing.
    pub fn resolve(&self, expr: &str) -> Result<Vec<Arc<Index>>> {
        let map = self.map.read();
        let mut out: Vec<Arc<Index>> = Vec::new();
        for part in expr.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "_all" || part.contains('*') {
                for (name, index) in map.iter() {
                    if (part == "_all" || wildcard_match(part, name))
                        && !out.iter().any(|i| Arc::ptr_eq(i, index))
                    {
                        out.push(Arc::clone(index));
                    }
                }
            } else {
                let index = map
                    .get(part)
                    .ok_or_else(|| Error::IndexNotFound(part.to_string()))?;
                if !out.iter().any(|i| Arc::ptr_eq(i, index)) {
                    out.push(Arc::clone(index));
                }
            }
        }
        Ok(out)
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

    #[test]
    fn wildcards() {
        assert!(wildcard_match("logs-*", "logs-1"));
        assert!(wildcard_match("*-1", "logs-1"));
        assert!(wildcard_match("l*s-*1", "logs-1"));
        assert!(!wildcard_match("logs-*", "metrics"));
        assert!(wildcard_match("abc", "abc"));
    }
}
