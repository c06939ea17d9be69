//! The index layer's view of the other nodes, over the internal calls.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use quidditch_index::index::{AliasMeta, DocWrite, IndexMeta};
use quidditch_index::indices::apply_alias_change;
use quidditch_index::merge::ForceMerge;
use quidditch_index::metadata::ClusterMetadata;
use quidditch_index::peers::{ItemResult, Peers, WireError, WireItem};
use quidditch_index::query::LeafQuery;
use quidditch_index::shard::StoredDoc;
use quidditch_index::stats::TermStats;
use quidditch_index::translog::Op;
use quidditch_index::{Error, RefreshPolicy, Result};

use crate::client::Client;
use crate::etcd::EtcdCluster;
use crate::membership::{Liveness, Membership, NodeInfo};
use crate::protocol::{Call, WireDoc};

/// The largest part of a file sent in one call when a shard is copied.
const COPY_CHUNK: usize = 4 << 20;

/// How long an allocation waits for a leader to be elected.
const LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// [`Peers`] of a node in a cluster. With etcd, index metadata is recorded
/// there (a create is a compare-and-set, so two coordinators cannot both
/// create an index) and the leader allocates shards.
#[derive(Debug)]
pub struct ClusterPeers {
    node_id: String,
    membership: Arc<dyn Membership>,
    liveness: Arc<Liveness>,
    client: Arc<Client>,
    handle: tokio::runtime::Handle,
    etcd: Option<Arc<EtcdCluster>>,
}

impl ClusterPeers {
    /// The peers of this node; blocking calls run their requests on `handle`.
    pub fn new(
        membership: Arc<dyn Membership>,
        liveness: Arc<Liveness>,
        client: Arc<Client>,
        handle: tokio::runtime::Handle,
    ) -> ClusterPeers {
        ClusterPeers {
            node_id: membership.local().id,
            membership,
            liveness,
            client,
            handle,
            etcd: None,
        }
    }

    /// The peers of this node of a cluster kept in etcd.
    pub fn with_etcd(
        etcd: Arc<EtcdCluster>,
        liveness: Arc<Liveness>,
        client: Arc<Client>,
        handle: tokio::runtime::Handle,
    ) -> ClusterPeers {
        ClusterPeers {
            etcd: Some(Arc::clone(&etcd)),
            ..ClusterPeers::new(etcd, liveness, client, handle)
        }
    }

    /// The allocation this node makes over the data nodes it knows.
    fn allocate_here(&self, index: &str, shards: u32, replicas: u32) -> Result<Vec<Vec<String>>> {
        let data: Vec<String> = self.membership.data_nodes().into_iter().map(|n| n.id).collect();
        if data.is_empty() {
            return Err(Error::unavailable(format!(
                "cannot allocate the shards of [{index}]: the cluster has no data node"
            )));
        }
        Ok(crate::allocation::allocate(index, shards, replicas, &data))
    }

    fn block<T>(&self, fut: impl Future<Output = T>) -> T {
        tokio::task::block_in_place(|| self.handle.block_on(fut))
    }

    fn node(&self, id: &str) -> Result<NodeInfo> {
        self.membership
            .node(id)
            .ok_or_else(|| Error::unavailable(format!("node [{id}] is not in the cluster")))
    }

    /// Changes the copies of `shard` in etcd with `change`, if this node
    /// still holds its primary there: a primary that was replaced (its node
    /// seemed gone) must not acknowledge writes its successor may not have.
    /// Returns the metadata as stored.
    fn change_as_primary(
        &self,
        etcd: &EtcdCluster,
        meta: &IndexMeta,
        shard: u32,
        mut change: impl FnMut(&mut IndexMeta) -> bool,
    ) -> Result<IndexMeta> {
        let mut deposed = false;
        let stored = self
            .block(etcd.modify_index(meta, |stored| {
                deposed = stored.shard_node(shard) != Some(self.node_id.as_str());
                !deposed && change(stored)
            }))
            .map_err(Error::unavailable)?;
        if deposed {
            return Err(Error::unavailable(format!(
                "this node is no longer the primary of shard [{shard}] of index [{}]",
                meta.name
            )));
        }
        stored.ok_or_else(|| Error::IndexNotFound(meta.name.clone()))
    }

    /// Makes `call` on every other node at once; the first failure wins.
    fn broadcast(&self, call: Call) -> Result<()> {
        let others: Vec<NodeInfo> = self
            .membership
            .nodes()
            .into_iter()
            .filter(|n| n.id != self.node_id)
            .collect();
        let client = &self.client;
        let call = &call;
        let results = self.block(futures::future::join_all(
            others
                .iter()
                .map(|node| client.call::<serde_json::Value>(node, call)),
        ));
        results.into_iter().try_for_each(|r| r.map(drop))
    }
}

impl Peers for ClusterPeers {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn allocate(&self, index: &str, shards: u32, replicas: u32) -> Result<Vec<Vec<String>>> {
        let Some(etcd) = &self.etcd else {
            return self.allocate_here(index, shards, replicas);
        };
        let leader = self
            .block(etcd.wait_for_leader(LEADER_WAIT))
            .ok_or_else(|| Error::Remote {
                es_type: "master_not_discovered_exception".into(),
                reason: format!("no master node is elected to allocate the shards of [{index}]"),
                status: 503,
            })?;
        if leader == self.node_id {
            return self.allocate_here(index, shards, replicas);
        }
        let node = self.node(&leader)?;
        let call = Call::Allocate {
            index: index.to_string(),
            shards,
            replicas,
        };
        self.block(self.client.call(&node, &call))
    }

    fn index_created(&self, meta: &IndexMeta) -> Result<i64> {
        match &self.etcd {
            Some(etcd) => self
                .block(etcd.create_index(meta))
                .map_err(Error::unavailable)?
                .ok_or_else(|| Error::IndexExists(meta.name.clone())),
            None => Ok(0),
        }
    }

    fn index_announced(&self, meta: &IndexMeta) -> Result<()> {
        self.broadcast(Call::InstallIndex { meta: meta.clone() })
    }

    fn index_deleted(&self, meta: &IndexMeta) -> Result<()> {
        let call = Call::RemoveIndex {
            name: meta.name.clone(),
            uuid: meta.uuid.clone(),
        };
        match &self.etcd {
            // Nodes that do not answer remove it when they see etcd again.
            Some(etcd) => {
                self.block(etcd.delete_index(meta)).map_err(Error::unavailable)?;
                if let Err(err) = self.broadcast(call) {
                    tracing::warn!(index = %meta.name, %err, "a node did not remove the index yet");
                }
                Ok(())
            }
            None => self.broadcast(call),
        }
    }

    fn mapping_changed(&self, meta: &IndexMeta) -> Result<()> {
        if let Some(etcd) = &self.etcd {
            let mapping = meta.mapping.clone();
            self.block(etcd.modify_index(meta, |stored| {
                let grown = mapping.fields.len() > stored.mapping.fields.len();
                if grown {
                    stored.mapping = mapping.clone();
                }
                grown
            }))
            .map_err(Error::unavailable)?;
        }
        self.broadcast(Call::PutMapping {
            name: meta.name.clone(),
            uuid: meta.uuid.clone(),
            mapping: meta.mapping.clone(),
        })
    }

    fn aliases_changed(&self, meta: &IndexMeta, old: &BTreeMap<String, AliasMeta>) -> Result<IndexMeta> {
        let Some(etcd) = &self.etcd else {
            // Without a store, two nodes' changes could not be ordered.
            return Err(Error::illegal_argument(
                "aliases in a cluster need etcd, which orders the changes of every node",
            ));
        };
        let new = &meta.aliases;
        let stored = self
            .block(etcd.modify_index(meta, |stored| {
                let aliases = apply_alias_change(&stored.aliases, old, new);
                let changed = aliases != stored.aliases;
                stored.aliases = aliases;
                changed
            }))
            .map_err(Error::unavailable)?
            .ok_or_else(|| Error::IndexNotFound(meta.name.clone()))?;
        // Nodes that do not answer take the change when they see etcd again.
        if let Err(err) = self.broadcast(Call::PutAliases { meta: stored.clone() }) {
            tracing::warn!(index = %meta.name, %err, "a node did not take the new aliases yet");
        }
        Ok(stored)
    }

    fn stored_index(&self, name: &str) -> Result<Option<IndexMeta>> {
        let Some(etcd) = &self.etcd else { return Ok(None) };
        self.block(etcd.index(name))
            .map(|stored| stored.map(|(meta, _)| meta))
            .map_err(Error::unavailable)
    }

    fn metadata(&self) -> Result<ClusterMetadata> {
        let Some(etcd) = &self.etcd else {
            return Ok(ClusterMetadata::default());
        };
        self.block(etcd.metadata())
            .map(|(metadata, _)| metadata)
            .map_err(Error::unavailable)
    }

    fn change_metadata(&self, change: &mut dyn FnMut(&mut ClusterMetadata) -> Result<()>) -> Result<()> {
        let Some(etcd) = &self.etcd else {
            return Err(Error::illegal_argument(
                "templates and cluster settings in a cluster need etcd, which orders the changes of every node",
            ));
        };
        self.block(etcd.modify_metadata(change))
            .map_err(Error::unavailable)?
    }

    fn write(
        &self,
        node: &str,
        meta: &IndexMeta,
        writes: Vec<DocWrite>,
        refresh: RefreshPolicy,
    ) -> Result<Vec<ItemResult>> {
        let node = self.node(node)?;
        let call = Call::Bulk {
            index: meta.name.clone(),
            uuid: meta.uuid.clone(),
            writes,
            refresh,
        };
        let items: Vec<WireItem> = self.block(self.client.call(&node, &call))?;
        Ok(items.into_iter().map(WireItem::into_item).collect())
    }

    fn replicate(
        &self,
        node: &str,
        meta: &IndexMeta,
        shard: u32,
        ops: Vec<Op>,
        refresh: RefreshPolicy,
    ) -> Result<()> {
        let node = self.node(node)?;
        let call = Call::Replicate {
            index: meta.name.clone(),
            uuid: meta.uuid.clone(),
            shard,
            primary: self.node_id.clone(),
            ops,
            refresh,
        };
        self.block(self.client.call::<serde_json::Value>(&node, &call))
            .map(drop)
    }

    fn copy_failed(&self, meta: &IndexMeta, shard: u32, node: &str, reason: &str) -> Result<IndexMeta> {
        let Some(etcd) = &self.etcd else {
            return Err(Error::unavailable(format!(
                "the replica of shard [{shard}] of index [{}] on node [{node}] failed ({reason}), and a cluster \
                 without etcd cannot record it out of sync",
                meta.name
            )));
        };
        tracing::warn!(index = %meta.name, shard, %node, %reason, "marking a copy out of sync");
        self.change_as_primary(etcd, meta, shard, |stored| {
            let Some(replicas) = stored.replicas.get_mut(shard as usize) else {
                return false;
            };
            let before = replicas.len();
            replicas.retain(|n| n != node);
            replicas.len() != before
        })
    }

    fn send_copy(
        &self,
        node: &str,
        meta: &IndexMeta,
        shard: u32,
        dir: &Path,
        meta_json: &[u8],
    ) -> Result<()> {
        use base64::Engine as _;
        let node = self.node(node)?;
        let send = |call: Call| {
            self.block(self.client.call::<serde_json::Value>(&node, &call))
                .map(drop)
        };
        let (index, uuid) = (meta.name.clone(), meta.uuid.clone());
        let chunk = |file: &str, offset: u64, data: &[u8]| Call::CopyChunk {
            index: index.clone(),
            uuid: uuid.clone(),
            shard,
            file: file.to_string(),
            offset,
            data: base64::engine::general_purpose::STANDARD.encode(data),
        };
        send(Call::CopyStart {
            index: index.clone(),
            uuid: uuid.clone(),
            shard,
        })?;
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().to_string();
            // The writer's locks stay; `meta.json` is sent as committed.
            if name == "meta.json" || name.ends_with(".lock") {
                continue;
            }
            let mut file = match std::fs::File::open(dir.join(&name)) {
                Ok(file) => file,
                // Removed by a merge since: the committed state does not
                // need it (and if it does, the copy fails to open).
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err.into()),
            };
            let mut offset = 0u64;
            let mut buf = vec![0u8; COPY_CHUNK];
            loop {
                let read = std::io::Read::read(&mut file, &mut buf)?;
                if read == 0 && offset > 0 {
                    break;
                }
                send(chunk(&name, offset, &buf[..read]))?;
                offset += read as u64;
                if read == 0 {
                    break;
                }
            }
        }
        send(chunk("meta.json", 0, meta_json))?;
        send(Call::CopyFinish { index, uuid, shard })
    }

    fn copy_in_sync(&self, meta: &IndexMeta, shard: u32, node: &str) -> Result<IndexMeta> {
        let etcd = self
            .etcd
            .as_ref()
            .ok_or_else(|| Error::unavailable("a cluster without etcd does not record shard copies"))?;
        self.change_as_primary(etcd, meta, shard, |stored| {
            if stored.holds(node, shard) {
                return false;
            }
            if stored.replicas.len() <= shard as usize {
                stored.replicas.resize(shard as usize + 1, Vec::new());
            }
            stored.replicas[shard as usize].push(node.to_string());
            true
        })
    }

    fn get(&self, node: &str, index: &str, ids: &[String]) -> Result<Vec<Result<Option<StoredDoc>>>> {
        let node = self.node(node)?;
        let call = Call::Get {
            index: index.to_string(),
            ids: ids.to_vec(),
        };
        let docs: Vec<std::result::Result<Option<WireDoc>, WireError>> =
            self.block(self.client.call(&node, &call))?;
        Ok(docs
            .into_iter()
            .map(|doc| doc.map(|doc| doc.map(StoredDoc::from)).map_err(Error::from))
            .collect())
    }

    fn refresh(&self, node: &str, index: &str) -> Result<()> {
        let node = self.node(node)?;
        let call = Call::Refresh {
            index: index.to_string(),
        };
        self.block(self.client.call::<serde_json::Value>(&node, &call))
            .map(drop)
    }

    fn force_merge(&self, node: &str, index: &str, how: ForceMerge, flush: bool) -> Result<()> {
        let node = self.node(node)?;
        let call = Call::ForceMerge {
            index: index.to_string(),
            how,
            flush,
        };
        self.block(self.client.call::<serde_json::Value>(&node, &call))
            .map(drop)
    }

    fn scan(&self, node: &str, leaf: Vec<u8>) -> BoxStream<'static, Result<RecordBatch>> {
        let node = match self.node(node) {
            Ok(node) => node,
            Err(err) => return futures::stream::once(async move { Err(err) }).boxed(),
        };
        let client = Arc::clone(&self.client);
        futures::stream::once(async move { client.scan(&node, leaf).await })
            .try_flatten()
            .boxed()
    }

    fn unavailable(&self, node: &str) -> Option<String> {
        if node == self.node_id {
            return None;
        }
        if self.membership.node(node).is_none() {
            return Some(format!("node [{node}] left the cluster"));
        }
        self.liveness
            .why_down(node)
            .map(|why| format!("node [{node}] does not answer: {why}"))
    }

    fn term_stats(&self, node: &str, index: &str, shards: &[u32], query: &LeafQuery) -> Result<TermStats> {
        let node = self.node(node)?;
        let call = Call::TermStats {
            index: index.to_string(),
            shards: shards.to_vec(),
            query: query.clone(),
        };
        self.block(self.client.call(&node, &call))
    }
}

#[cfg(test)]
mod tests {
    use quidditch_index::Indices;
    use quidditch_index::settings::IndexSettings;

    use super::*;
    use crate::membership::{Role, StaticMembership};

    #[tokio::test]
    async fn of_two_incarnations_of_a_name_a_node_keeps_the_one_created_last_in_the_store()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let local = NodeInfo {
            id: "node-1".into(),
            flight: "127.0.0.1:1".into(),
            http: None,
            roles: vec![Role::Data],
        };
        let peers = ClusterPeers::new(
            Arc::new(StaticMembership::new(local, Vec::new())),
            Arc::new(Liveness::default()),
            Arc::new(Client::default()),
            tokio::runtime::Handle::current(),
        );
        let indices = Indices::open_with(dir.path(), Some(Arc::new(peers)))?;
        let incarnation = |uuid: &str, created_revision: i64| IndexMeta {
            name: "logs".into(),
            uuid: uuid.into(),
            creation_date: 0,
            settings: IndexSettings::default(),
            mapping: Default::default(),
            allocation: vec!["node-1".into()],
            replicas: vec![Vec::new()],
            version: 0,
            created_revision,
            aliases: Default::default(),
            own_fields: Vec::new(),
        };
        let b_dir = indices.install(incarnation("b", 12))?.dir().to_path_buf();
        // A late read of an incarnation deleted before "b" was created.
        assert!(matches!(
            indices.install(incarnation("a", 10)),
            Err(Error::IndexExists(_))
        ));
        assert_eq!(indices.get("logs")?.meta().uuid, "b");
        assert_eq!(indices.install(incarnation("b", 12))?.meta().uuid, "b");
        // The index deleted and created again while this node was away.
        let c_dir = indices.install(incarnation("c", 15))?.dir().to_path_buf();
        assert_eq!(indices.get("logs")?.meta().uuid, "c");
        assert_eq!(indices.list().len(), 1);
        assert!(!b_dir.exists() && c_dir.exists());
        Ok(())
    }
}
