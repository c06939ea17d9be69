//! A node's view of its cluster: who answers, and the index metadata.
//!
//! Every second the node pings the other nodes, so that a node that stops
//! answering is reported by `_cluster/health` and `_cat/nodes`. With etcd,
//! the index metadata comes from there: the node reconciles its indices
//! with etcd's when it starts, then follows etcd's changes. In a static
//! cluster, the ping also installs indices and mappings that other nodes
//! have and this one lacks (indices created through another coordinator),
//! so that a node that joins has the cluster's metadata within a second.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use quidditch_cluster::client::Client;
use quidditch_cluster::etcd::{EtcdCluster, IndexEvent};
use quidditch_cluster::protocol::{Call, Hello, ShardSegments, ShardStats};
use quidditch_cluster::{Liveness, Membership, NodeInfo, Role};
use quidditch_index::activity::ActivityStats;
use quidditch_index::index::IndexMeta;
use quidditch_index::merge::SegmentStats;
use quidditch_index::{Error, Indices};

/// Whether `text` names `address` (`host:port`) whole, not as the start of
/// a longer port.
fn names_address(text: &str, address: &str) -> bool {
    text.match_indices(address)
        .any(|(at, _)| !text[at + address.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

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
    /// The cluster's etcd, when it has one.
    pub etcd: Option<Arc<EtcdCluster>>,
    status: RwLock<BTreeMap<String, NodeStatus>>,
    joins: AtomicU64,
    leaves: AtomicU64,
    retries: AtomicU64,
}

impl ClusterState {
    /// The state of a cluster with this membership.
    pub fn new(membership: Arc<dyn Membership>, client: Arc<Client>) -> ClusterState {
        ClusterState {
            membership,
            client,
            liveness: Arc::new(Liveness::default()),
            etcd: None,
            status: RwLock::new(BTreeMap::new()),
            joins: AtomicU64::new(0),
            leaves: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    /// The state of a cluster kept in etcd.
    pub fn with_etcd(etcd: Arc<EtcdCluster>, client: Arc<Client>) -> ClusterState {
        ClusterState {
            etcd: Some(Arc::clone(&etcd)),
            ..ClusterState::new(etcd, client)
        }
    }

    /// Times another node began to answer: it joined, or came back.
    pub fn joins(&self) -> u64 {
        self.joins.load(Ordering::Relaxed)
    }

    /// Times a node that answered stopped answering or left the membership.
    pub fn leaves(&self) -> u64 {
        self.leaves.load(Ordering::Relaxed)
    }

    /// Requests run again after a node failed them.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// After a request failed with `error`: when the error names another
    /// node's address (it could not be reached or failed mid-way), that
    /// node counts as down until it answers a ping again, so that a retry
    /// reads other copies of its shards (or reports them). Returns whether
    /// a retry may do better (not when the node already counted as down).
    pub fn blame(&self, error: &str) -> bool {
        let local = self.membership.local().id;
        let Some(node) = self.membership.nodes().into_iter().find(|n| {
            n.id != local && names_address(error, &n.flight) && self.liveness.why_down(&n.id).is_none()
        }) else {
            return false;
        };
        tracing::warn!(node = %node.id, %error, "a node failed a request; retrying without it");
        self.liveness
            .down(&node.id, format!("it failed a request: {error}"));
        self.status.write().insert(
            node.id.clone(),
            NodeStatus::Down(format!("it failed a request: {error}")),
        );
        self.retries.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Pings every other node for at most `limit`: the nodes that do not
    /// answer in time count as down (a frozen or partitioned node) until
    /// they answer a ping again. Returns how many did not.
    pub async fn blame_slow(&self, limit: Duration) -> usize {
        let others = self.others();
        let pings = futures::future::join_all(others.iter().map(|node| async move {
            let answered = tokio::time::timeout(limit, self.client.call::<Hello>(node, &Call::Ping)).await;
            (node, matches!(answered, Ok(Ok(_))))
        }))
        .await;
        let mut slow = 0;
        for (node, answered) in pings {
            if !answered {
                let why = format!("it did not answer within {} ms", limit.as_millis());
                tracing::warn!(node = %node.id, %why, "a node is too slow; leaving it out");
                self.liveness.down(&node.id, why.clone());
                self.status.write().insert(node.id.clone(), NodeStatus::Down(why));
                slow += 1;
            }
        }
        slow
    }

    /// The elected leader's id, with etcd.
    pub fn leader(&self) -> Option<String> {
        self.etcd.as_ref().and_then(|e| e.leader())
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

    /// The members that answered their last ping.
    fn up_nodes(&self) -> Vec<NodeInfo> {
        self.nodes()
            .into_iter()
            .filter(|(_, up, _)| *up)
            .map(|(n, _, _)| n)
            .collect()
    }

    /// The searchable segments of the shard copies on the nodes that
    /// answer, by index, shard and node.
    pub async fn shard_segments(
        &self,
    ) -> std::collections::HashMap<(String, u32, String), (Vec<SegmentStats>, ActivityStats)> {
        let up = self.up_nodes();
        let answers = futures::future::join_all(
            up.iter()
                .map(|node| self.client.call::<Vec<ShardSegments>>(node, &Call::Segments)),
        )
        .await;
        up.into_iter()
            .zip(answers)
            .filter_map(|(node, answer)| Some((node.id, answer.ok()?)))
            .flat_map(|(node, shards)| {
                shards
                    .into_iter()
                    .map(move |s| ((s.index, s.shard, node.clone()), (s.segments, s.activity)))
            })
            .collect()
    }

    /// Documents per shard on the nodes that answer, by index and shard.
    pub async fn shard_docs(&self) -> std::collections::HashMap<(String, u32), u64> {
        let up = self.up_nodes();
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

    /// The members other than this node.
    fn others(&self) -> Vec<NodeInfo> {
        let local = self.membership.local().id;
        self.membership
            .nodes()
            .into_iter()
            .filter(|n| n.id != local)
            .collect()
    }

    /// Whether node `id` is a member and answered its last ping.
    pub fn is_up(&self, id: &str) -> bool {
        id == self.membership.local().id
            || (self.membership.node(id).is_some()
                && matches!(self.status.read().get(id), Some(NodeStatus::Up(_))))
    }

    /// Pings every other node and installs the metadata they have that
    /// this node lacks.
    pub async fn refresh(&self, indices: &Arc<Indices>) {
        let others = self.others();
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
                Ok(_) if self.etcd.is_none() => self
                    .client
                    .call::<Vec<IndexMeta>>(node, &Call::ListIndices)
                    .await
                    .ok(),
                _ => None,
            };
            (node.id.clone(), hello, metas)
        }))
        .await;
        let mut learned: Vec<IndexMeta> = Vec::new();
        {
            let mut status = self.status.write();
            // Nodes that left the membership (their lease ended, or they
            // left on shutdown).
            let members: std::collections::HashSet<&str> = others.iter().map(|n| n.id.as_str()).collect();
            status.retain(|id, s| {
                let keep = members.contains(id.as_str());
                if !keep && matches!(s, NodeStatus::Up(_)) {
                    self.leaves.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %id, "node left the cluster");
                }
                keep
            });
            for (id, hello, metas) in pings {
                match hello {
                    Ok(h) => {
                        self.liveness.up(&id);
                        if !matches!(status.get(&id), Some(NodeStatus::Up(_))) {
                            self.joins.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(node = %id, "node is up");
                        }
                        status.insert(id, NodeStatus::Up(h));
                    }
                    Err(why) => {
                        self.liveness.down(&id, why.clone());
                        if matches!(status.get(&id), Some(NodeStatus::Up(_))) {
                            self.leaves.fetch_add(1, Ordering::Relaxed);
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

/// Makes this node's indices those of etcd: installs what it lacks, takes
/// grown mappings, replaces other incarnations and, with `remove_absent`,
/// removes the cluster indices etcd does not have (deleted while the node
/// was away: only before the node serves, when no create is under way).
/// Returns the revision read at.
pub async fn reconcile(
    etcd: &EtcdCluster,
    indices: &Arc<Indices>,
    remove_absent: bool,
) -> anyhow::Result<i64> {
    let (metas, revision) = etcd.indices().await.map_err(anyhow::Error::msg)?;
    let indices = Arc::clone(indices);
    tokio::task::spawn_blocking(move || {
        let names: std::collections::HashSet<String> = metas.iter().map(|m| m.name.clone()).collect();
        let absent = if remove_absent { indices.list() } else { Vec::new() };
        for index in absent {
            let meta = index.meta();
            if !meta.allocation.is_empty() && !names.contains(&meta.name) {
                tracing::info!(index = %meta.name, "removing an index deleted while this node was away");
                if let Err(err) = indices.remove_incarnation(&meta.name, &meta.uuid) {
                    tracing::warn!(index = %meta.name, %err, "removing the index failed");
                }
            }
        }
        for meta in metas {
            apply(&indices, IndexEvent::Put(meta));
        }
    })
    .await?;
    Ok(revision)
}

/// Follows etcd's index metadata from `revision` on, for as long as the
/// node runs; after a failed watch, reads it whole again.
pub fn spawn_metadata_follower(
    etcd: Arc<EtcdCluster>,
    indices: Arc<Indices>,
    mut revision: i64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (tx, mut rx) = tokio::sync::mpsc::channel(256);
            let watcher = {
                let etcd = Arc::clone(&etcd);
                tokio::spawn(async move {
                    if let Err(err) = etcd.watch_indices(revision, &tx).await {
                        tracing::warn!(%err, "following index metadata failed");
                    }
                })
            };
            while let Some(mut event) = rx.recv().await {
                // A watch may lag behind what this node did itself (an index
                // it created anew): only what etcd has now is applied, so an
                // older incarnation's late event cannot replace a newer one.
                if let IndexEvent::Put(meta) = &event {
                    match etcd.index(&meta.name).await {
                        Ok(Some((current, _))) if current.uuid == meta.uuid => {
                            event = IndexEvent::Put(current)
                        }
                        Ok(_) => continue,
                        Err(err) => {
                            tracing::warn!(%err, "reading index metadata failed");
                            break;
                        }
                    }
                }
                let indices = Arc::clone(&indices);
                if let Err(err) = tokio::task::spawn_blocking(move || apply(&indices, event)).await {
                    tracing::error!(%err, "applying index metadata failed");
                }
            }
            drop(rx);
            let _ = watcher.await;
            loop {
                tokio::time::sleep(MONITOR_INTERVAL).await;
                match reconcile(&etcd, &indices, false).await {
                    Ok(at) => {
                        revision = at;
                        break;
                    }
                    Err(err) => tracing::warn!(%err, "reading index metadata failed"),
                }
            }
        }
    })
}

/// On the leader, every [`MONITOR_INTERVAL`]: the copies of shards on
/// nodes whose lease ended, or that the leader could not reach for
/// [`UNREACHABLE_LIMIT`] (a partition), are no longer in sync, a shard whose primary
/// was there gets an in-sync replica as its new primary, and a shard with
/// fewer copies than `1 + number_of_replicas` gets one rebuilt on the data
/// node with the fewest copies (its primary sends it).
pub fn spawn_allocator(state: Arc<ClusterState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(etcd) = state.etcd.clone() else { return };
        let client = Arc::clone(&state.client);
        let recoveries = Arc::new(parking_lot::Mutex::new(Recoveries::new()));
        let mut unreachable: std::collections::HashMap<String, std::time::Instant> = Default::default();
        let mut tick = tokio::time::interval(MONITOR_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if etcd.leader().as_deref() != Some(etcd.local().id.as_str()) {
                continue;
            }
            let nodes = etcd.nodes();
            // Down since when, by the leader's pings (not merely not
            // contacted yet).
            unreachable.retain(|id, _| state.liveness.why_down(id).is_some());
            for node in &nodes {
                if state.liveness.why_down(&node.id).is_some() {
                    unreachable
                        .entry(node.id.clone())
                        .or_insert_with(std::time::Instant::now);
                }
            }
            let live: std::collections::HashSet<String> = nodes
                .iter()
                .filter(|n| {
                    unreachable
                        .get(&n.id)
                        .is_none_or(|since| since.elapsed() < UNREACHABLE_LIMIT)
                })
                .map(|n| n.id.clone())
                .collect();
            let metas = match etcd.indices().await {
                Ok((metas, _)) => metas,
                Err(err) => {
                    tracing::warn!(%err, "reading index metadata failed");
                    continue;
                }
            };
            let mut current = Vec::new();
            for meta in metas {
                let mut planned = meta.clone();
                if !fail_lost_copies(&mut planned, &live) {
                    current.push(meta);
                    continue;
                }
                match etcd.modify_index(&meta, |m| fail_lost_copies(m, &live)).await {
                    Ok(Some(m)) => {
                        tracing::warn!(index = %m.name, primaries = ?m.allocation, replicas = ?m.replicas, "shard copies on departed nodes failed");
                        current.push(m);
                    }
                    Ok(None) => {}
                    Err(err) => {
                        tracing::warn!(index = %meta.name, %err, "failing the copies of departed nodes failed")
                    }
                }
            }
            let data: Vec<&NodeInfo> = nodes
                .iter()
                .filter(|n| n.has(Role::Data) && state.liveness.why_down(&n.id).is_none())
                .collect();
            let plan = plan_recoveries(&current, &data, &recoveries.lock());
            for (meta, shard, primary, target) in plan {
                let Some(primary) = nodes.iter().find(|n| n.id == primary).cloned() else {
                    continue;
                };
                let key = (meta.uuid.clone(), shard);
                recoveries.lock().insert(key.clone(), None);
                let call = Call::Recover {
                    index: meta.name.clone(),
                    uuid: meta.uuid.clone(),
                    shard,
                    target: target.clone(),
                };
                let client = Arc::clone(&client);
                let recoveries = Arc::clone(&recoveries);
                tokio::spawn(async move {
                    match client.call::<serde_json::Value>(&primary, &call).await {
                        Ok(_) => {
                            recoveries.lock().remove(&key);
                        }
                        Err(err) => {
                            tracing::warn!(index = %meta.name, shard, %target, %err, "recovering a shard copy failed");
                            recoveries.lock().insert(key, Some(std::time::Instant::now()));
                        }
                    }
                });
            }
        }
    })
}

/// How long the leader must fail to reach a node before its shard copies
/// count as lost, as if its lease had ended.
const UNREACHABLE_LIMIT: Duration = Duration::from_secs(3);

/// Shard copies being rebuilt (`None`) or whose rebuild failed (when), by
/// index incarnation and shard.
type Recoveries = std::collections::HashMap<(String, u32), Option<std::time::Instant>>;

/// How long after a failed rebuild of a copy the next one starts.
const RECOVERY_RETRY: Duration = Duration::from_secs(5);

/// The copies to rebuild now: for each shard whose primary is live and
/// that has fewer in-sync copies than it should, and is not being rebuilt,
/// one copy on the live data node without one that holds the fewest
/// copies. Returns (index, shard, primary node, target node).
fn plan_recoveries(
    metas: &[IndexMeta],
    data: &[&NodeInfo],
    recoveries: &Recoveries,
) -> Vec<(IndexMeta, u32, String, String)> {
    let mut load: std::collections::HashMap<String, usize> = data.iter().map(|n| (n.id.clone(), 0)).collect();
    for meta in metas {
        for n in 0..meta.allocation.len() as u32 {
            for copy in meta.copies(n) {
                if let Some(l) = load.get_mut(copy) {
                    *l += 1;
                }
            }
        }
    }
    let mut plan = Vec::new();
    for meta in metas {
        let desired = 1 + meta.settings.number_of_replicas as usize;
        for n in 0..meta.allocation.len() as u32 {
            let Some(primary) = meta.shard_node(n).filter(|p| load.contains_key(*p)) else {
                continue;
            };
            let busy = match recoveries.get(&(meta.uuid.clone(), n)) {
                Some(None) => true,
                Some(Some(failed)) => failed.elapsed() < RECOVERY_RETRY,
                None => false,
            };
            if busy || meta.copies(n).count() >= desired {
                continue;
            }
            let target = load
                .iter()
                .filter(|(node, _)| !meta.holds(node, n))
                .min_by_key(|(node, l)| (**l, node.as_str()))
                .map(|(node, _)| node.clone());
            if let Some(target) = target {
                *load.entry(target.clone()).or_default() += 1;
                plan.push((meta.clone(), n, primary.to_string(), target.clone()));
            }
        }
    }
    plan
}

/// Drops the copies on nodes not in `live` from the in-sync copies, and
/// promotes the first live replica of a shard whose primary was lost (a
/// shard without one keeps its lost primary, and is red until it returns);
/// its other replicas are rebuilt from the new primary.
/// Returns whether anything changed.
fn fail_lost_copies(meta: &mut IndexMeta, live: &std::collections::HashSet<String>) -> bool {
    let mut changed = false;
    for n in 0..meta.allocation.len() {
        if meta.replicas.len() <= n {
            meta.replicas.resize(n + 1, Vec::new());
        }
        let replicas = &mut meta.replicas[n];
        let before = replicas.len();
        replicas.retain(|r| live.contains(r));
        changed |= replicas.len() != before;
        if !live.contains(&meta.allocation[n]) && !replicas.is_empty() {
            // The other replicas may hold writes the lost primary sent them
            // and not the promoted one: they are rebuilt from it.
            meta.allocation[n] = replicas.remove(0);
            replicas.clear();
            changed = true;
        }
    }
    changed
}

/// Applies one change of etcd's index metadata to this node.
fn apply(indices: &Indices, event: IndexEvent) {
    match event {
        IndexEvent::Put(meta) => install_learned(indices, vec![meta]),
        IndexEvent::Deleted(meta) => {
            if let Err(err) = indices.remove_incarnation(&meta.name, &meta.uuid) {
                tracing::warn!(index = %meta.name, %err, "removing a deleted index failed");
            }
        }
    }
}

/// Installs indices this node does not have or has an older incarnation
/// of, mappings that grew, and the shard copies of the indices it has.
fn install_learned(indices: &Indices, metas: Vec<IndexMeta>) {
    // An index without an allocation is its node's own (made before the
    // node joined a cluster): it is not a cluster index.
    for meta in metas.into_iter().filter(|m| !m.allocation.is_empty()) {
        match indices.get(&meta.name) {
            Ok(index) if index.uuid() == meta.uuid => {
                let mine = index.meta();
                if let Err(err) = index.receive_allocation(&meta) {
                    tracing::warn!(index = %meta.name, %err, "new shard copies not taken");
                }
                if mine.mapping != meta.mapping
                    && meta.mapping.fields.len() > mine.mapping.fields.len()
                    && let Err(err) = index.receive_mapping(meta.mapping)
                {
                    tracing::warn!(index = %meta.name, %err, "mapping from another node not taken");
                }
            }
            // None, or another incarnation: `install` keeps the one etcd
            // created last, so a late read of an older one changes nothing.
            _ => {
                let name = meta.name.clone();
                match indices.install(meta) {
                    Ok(_) => {}
                    Err(Error::IndexExists(_)) => {
                        tracing::debug!(index = %name, "an older incarnation's metadata ignored")
                    }
                    Err(err) => tracing::warn!(index = %name, %err, "index from another node not installed"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(primaries: &[&str], replicas: &[&[&str]]) -> IndexMeta {
        IndexMeta {
            name: "logs".into(),
            uuid: "u".into(),
            creation_date: 0,
            settings: quidditch_index::settings::IndexSettings {
                number_of_shards: primaries.len() as u32,
                number_of_replicas: 2,
                ..Default::default()
            },
            mapping: Default::default(),
            allocation: primaries.iter().map(|s| s.to_string()).collect(),
            replicas: replicas
                .iter()
                .map(|r| r.iter().map(|s| s.to_string()).collect())
                .collect(),
            version: 0,
            created_revision: 0,
            aliases: Default::default(),
            own_fields: Vec::new(),
        }
    }

    #[test]
    fn a_lost_primary_is_replaced_by_its_first_live_replica_and_the_others_are_rebuilt() {
        let live: std::collections::HashSet<String> = ["b", "c"].iter().map(|s| s.to_string()).collect();
        let mut m = meta(&["a", "b", "a"], &[&["b", "c"], &["a", "c"], &[]]);
        assert!(fail_lost_copies(&mut m, &live));
        assert_eq!(m.allocation, ["b", "b", "a"]);
        // Shard 0: b promoted, c leaves the in-sync set (it may hold writes b lacks).
        // Shard 1: the lost replica a leaves. Shard 2: no copy left, the
        // primary stays (red) until a returns.
        assert_eq!(
            m.replicas,
            vec![Vec::<String>::new(), vec!["c".to_string()], vec![]]
        );
        assert!(!fail_lost_copies(&mut m, &live));
    }

    #[test]
    fn an_address_is_named_whole() {
        assert!(names_address("node at 10.0.0.1:900 failed", "10.0.0.1:900"));
        assert!(names_address("connect error 10.0.0.1:900)", "10.0.0.1:900"));
        assert!(!names_address("node at 10.0.0.1:9001 failed", "10.0.0.1:900"));
    }
}
