//! A node's view of its cluster: who answers, and the index metadata the
//! other nodes hold.
//!
//! Every second the node pings the other nodes and installs indices and
//! mappings it has not seen yet (indices created through another
//! coordinator), so that a node that joins has the cluster's metadata
//! within about a second, and a node that stops answering is reported by
//! `_cluster/health` and `_cat/nodes`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use quidditch_cluster::client::Client;
use quidditch_cluster::protocol::{Call, Hello, ShardStats};
use quidditch_cluster::{Liveness, Membership, NodeInfo};
use quidditch_index::Indices;
use quidditch_index::index::IndexMeta;

/// How often the other nodes are pinged.
pub const MONITOR_INTERVAL: Duration = Duration::from_secs(1);

/// The last answer of a node.
#[derive(Debug, Clone)]
pub enum NodeStatus {
    /// It answered.
    Up(Hello),
    /// It did not, for this reason.
    Down(String),
}

/// The cluster as this node sees it.
#[derive(Debug)]
pub struct ClusterState {
    /// Membership.
    pub membership: Arc<dyn Membership>,
    /// Calls to other nodes.
    pub client: Arc<Client>,
    /// Which nodes answer.
    pub liveness: Arc<Liveness>,
    status: RwLock<BTreeMap<String, NodeStatus>>,
}

impl ClusterState {
    /// The state of a cluster with this membership.
    pub fn new(membership: Arc<dyn Membership>, client: Arc<Client>) -> ClusterState {
        ClusterState {
            membership,
            client,
            liveness: Arc::new(Liveness::default()),
            status: RwLock::new(BTreeMap::new()),
        }
    }

    /// The nodes with their last status (this node is always up).
    pub fn nodes(&self) -> Vec<(NodeInfo, bool, Option<String>)> {
        let local = self.membership.local().id;
        let status = self.status.read();
        self.membership
            .nodes()
            .into_iter()
            .map(|n| {
                if n.id == local {
                    return (n, true, None);
                }
                match status.get(&n.id) {
                    Some(NodeStatus::Up(_)) => (n, true, None),
                    Some(NodeStatus::Down(why)) => (n, false, Some(why.clone())),
                    None => (n, false, Some("not contacted yet".into())),
                }
            })
            .collect()
    }

    /// The HTTP address a node gave in its last answer.
    pub fn http_of(&self, node: &NodeInfo) -> Option<String> {
        if let Some(http) = &node.http {
            return Some(http.clone());
        }
        match self.status.read().get(&node.id) {
            Some(NodeStatus::Up(hello)) => Some(hello.http.clone()),
            _ => None,
        }
    }

    /// Documents per shard on the nodes that answer, by index and shard.
    pub async fn shard_docs(&self) -> std::collections::HashMap<(String, u32), u64> {
        let up: Vec<NodeInfo> = self
            .nodes()
            .into_iter()
            .filter(|(_, up, _)| *up)
            .map(|(n, _, _)| n)
            .collect();
        let answers = futures::future::join_all(
            up.iter()
                .map(|node| self.client.call::<Vec<ShardStats>>(node, &Call::ShardStats)),
        )
        .await;
        answers
            .into_iter()
            .flatten()
            .flatten()
            .map(|s| ((s.index, s.shard), s.docs))
            .collect()
    }

    /// Whether node `id` answered its last ping.
    pub fn is_up(&self, id: &str) -> bool {
        id == self.membership.local().id || matches!(self.status.read().get(id), Some(NodeStatus::Up(_)))
    }

    /// Pings every other node and installs the metadata they have that
    /// this node lacks.
    pub async fn refresh(&self, indices: &Arc<Indices>) {
        let local = self.membership.local().id;
        let others: Vec<NodeInfo> = self
            .membership
            .nodes()
            .into_iter()
            .filter(|n| n.id != local)
            .collect();
        let pings = futures::future::join_all(others.iter().map(|node| async move {
            let hello = self.client.call::<Hello>(node, &Call::Ping).await;
            let hello = match hello {
                Ok(h) if h.node_id != node.id => Err(format!(
                    "the node at {} is [{}], not [{}]",
                    node.flight, h.node_id, node.id
                )),
                Ok(h) => Ok(h),
                Err(e) => Err(e.to_string()),
            };
            let metas = match &hello {
                Ok(_) => self
                    .client
                    .call::<Vec<IndexMeta>>(node, &Call::ListIndices)
                    .await
                    .ok(),
                Err(_) => None,
            };
            (node.id.clone(), hello, metas)
        }))
        .await;
        let mut learned: Vec<IndexMeta> = Vec::new();
        {
            let mut status = self.status.write();
            for (id, hello, metas) in pings {
                match hello {
                    Ok(h) => {
                        self.liveness.up(&id);
                        if !matches!(status.get(&id), Some(NodeStatus::Up(_))) {
                            tracing::info!(node = %id, "node is up");
                        }
                        status.insert(id, NodeStatus::Up(h));
                    }
                    Err(why) => {
                        self.liveness.down(&id, why.clone());
                        if matches!(status.get(&id), Some(NodeStatus::Up(_))) {
                            tracing::warn!(node = %id, %why, "node left: it does not answer");
                        }
                        status.insert(id, NodeStatus::Down(why));
                    }
                }
                learned.extend(metas.unwrap_or_default());
            }
        }
        if learned.is_empty() {
            return;
        }
        let indices = Arc::clone(indices);
        let outcome = tokio::task::spawn_blocking(move || install_learned(&indices, learned)).await;
        if let Err(err) = outcome {
            tracing::error!(%err, "installing index metadata failed");
        }
    }

    /// Runs [`ClusterState::refresh`] every [`MONITOR_INTERVAL`].
    pub fn spawn_monitor(self: &Arc<Self>, indices: Arc<Indices>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MONITOR_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else { return };
                state.refresh(&indices).await;
            }
        })
    }
}

/// Installs indices this node does not have and mappings that grew.
fn install_learned(indices: &Indices, metas: Vec<IndexMeta>) {
    // An index without an allocation is its node's own (made before the
    // node joined a cluster): it is not a cluster index.
    for meta in metas.into_iter().filter(|m| !m.allocation.is_empty()) {
        match indices.get(&meta.name) {
            Ok(index) => {
                let mine = index.meta();
                if mine.uuid == meta.uuid
                    && mine.mapping != meta.mapping
                    && meta.mapping.fields.len() > mine.mapping.fields.len()
                    && let Err(err) = index.receive_mapping(meta.mapping)
                {
                    tracing::warn!(index = %meta.name, %err, "mapping from another node not taken");
                }
            }
            Err(_) => {
                let name = meta.name.clone();
                if let Err(err) = indices.install(meta) {
                    tracing::warn!(index = %name, %err, "index from another node not installed");
                }
            }
        }
    }
}
