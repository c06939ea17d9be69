//! The cluster in etcd: membership by leases, index metadata, and the
//! election of the leader among the master-eligible nodes.
//!
//! Layout under `/quidditch/<cluster-name>/`:
//! - `nodes/<id>`: a node's [`NodeInfo`] as JSON, put with the node's lease,
//!   so that it disappears when the node stops renewing it;
//! - `indices/<name>`: an index's [`IndexMeta`] (settings, mapping, the node
//!   of each shard) as JSON;
//! - `leader`: the election of the master-eligible nodes (etcd's election
//!   API, campaigning with the node's lease); the value is the node id;
//! - `cluster_uuid`: the cluster's identity, made by its first node. Every
//!   node records it in its data directory (`cluster.json`, with the node's
//!   own uuid) and refuses to join a cluster with another one, so that a
//!   wrong `--etcd` or `--cluster-name`, or an etcd that lost its data,
//!   cannot make a node drop indices the cluster seems not to have.
//!
//! Every node keeps the live nodes and the leader from watches, so a node
//! that joins is seen within the latency of a watch event, and one whose
//! lease expires is gone from [`Membership::nodes`] at that moment.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use parking_lot::RwLock;
use quidditch_index::index::IndexMeta;
use quidditch_index::metadata::ClusterMetadata;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::membership::{Membership, NodeInfo, Role};

/// How long a request to etcd may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a node that is not master-eligible waits for a cluster to be
/// formed by one that is.
const FORMING_WAIT: Duration = Duration::from_secs(10);
/// How long to wait before trying again after etcd failed.
const RETRY: Duration = Duration::from_millis(500);

/// Where the cluster's etcd is and how this node registers.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs, `http://host:port`.
    pub endpoints: Vec<String>,
    /// The cluster name: the key prefix is `/quidditch/<name>/`.
    pub cluster_name: String,
    /// The time to live of the node's lease: a node that stops renewing it
    /// leaves the cluster this long after its last renewal.
    pub lease_ttl: Duration,
}

/// What a node's data directory records of its place in a cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Identity {
    /// This data directory's own id: a node restarted on it is the same node.
    node_uuid: String,
    /// The cluster it belongs to, once it joined one.
    cluster_uuid: Option<String>,
}

impl Identity {
    const FILE: &'static str = "cluster.json";

    fn load_or_new(dir: &Path) -> Result<Identity, String> {
        let path = dir.join(Self::FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("reading {}: {e}", path.display()))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Identity {
                node_uuid: uuid::Uuid::new_v4().simple().to_string(),
                cluster_uuid: None,
            }),
            Err(err) => Err(format!("reading {}: {err}", path.display())),
        }
    }

    /// Writes the identity durably (a temporary file renamed over the old).
    fn save(&self, dir: &Path) -> Result<(), String> {
        let path = dir.join(Self::FILE);
        let tmp = dir.join(format!("{}.tmp", Self::FILE));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| format!("writing {}: {e}", path.display()))
    }
}

/// A node's registration under `nodes/<id>`.
#[derive(Debug, Serialize, Deserialize)]
struct Registration {
    #[serde(flatten)]
    node: NodeInfo,
    /// The uuid of the node's data directory.
    node_uuid: String,
}

/// A change of the index metadata in etcd.
#[derive(Debug, Clone)]
pub enum IndexEvent {
    /// An index was created or its mapping changed.
    Put(IndexMeta),
    /// This incarnation of an index was deleted.
    Deleted(IndexMeta),
}

/// This node's membership of a cluster kept in etcd.
pub struct EtcdCluster {
    client: Client,
    prefix: String,
    local: NodeInfo,
    lease_ttl: Duration,
    nodes: RwLock<BTreeMap<String, NodeInfo>>,
    leader: watch::Sender<Option<String>>,
    lease: RwLock<i64>,
    node_uuid: String,
}

impl std::fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCluster")
            .field("prefix", &self.prefix)
            .field("local", &self.local.id)
            .field("nodes", &self.nodes.read().keys().collect::<Vec<_>>())
            .field("leader", &self.leader())
            .finish()
    }
}

/// An etcd failure as a message.
fn failed(what: &str, err: impl std::fmt::Display) -> String {
    format!("etcd: {what}: {err}")
}

async fn timed<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(result) => result.map_err(|e| failed(what, e)),
        Err(_) => Err(failed(what, "no answer within 5 s")),
    }
}

impl EtcdCluster {
    /// Connects to etcd, checks that the node in `data_dir` belongs to this
    /// cluster (recording the cluster's uuid there on first joining),
    /// registers `local` under a new lease and loads the live nodes;
    /// [`EtcdCluster::spawn`] keeps all of it current.
    pub async fn join(
        config: &EtcdConfig,
        local: NodeInfo,
        data_dir: &Path,
    ) -> Result<Arc<EtcdCluster>, String> {
        let mut identity = Identity::load_or_new(data_dir)?;
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(3))
            .with_keep_alive_while_idle(true);
        let client = timed(
            "connecting",
            Client::connect(config.endpoints.clone(), Some(options)),
        )
        .await
        .map_err(|e| format!("{e} (etcd at {})", config.endpoints.join(",")))?;
        let (leader, _) = watch::channel(None);
        let cluster = Arc::new(EtcdCluster {
            client,
            prefix: format!("/quidditch/{}/", config.cluster_name),
            local,
            lease_ttl: config.lease_ttl,
            nodes: RwLock::new(BTreeMap::new()),
            leader,
            lease: RwLock::new(0),
            node_uuid: identity.node_uuid.clone(),
        });
        // The client connects lazily: this is the first request.
        let uuid = cluster
            .cluster_uuid(identity.cluster_uuid.as_deref())
            .await
            .map_err(|e| format!("{e} (etcd at {})", config.endpoints.join(",")))?;
        if identity.cluster_uuid.as_deref() != Some(uuid.as_str()) {
            identity.cluster_uuid = Some(uuid);
            identity.save(data_dir)?;
        }
        cluster.register().await?;
        cluster.load_nodes().await?;
        Ok(cluster)
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}/{name}", self.prefix)
    }

    fn election(&self) -> String {
        format!("{}leader", self.prefix)
    }

    /// The cluster's uuid: the one etcd has, or a new one when the cluster
    /// is new. A node whose data directory belongs to a cluster (`known`)
    /// only joins that one.
    async fn cluster_uuid(&self, known: Option<&str>) -> Result<String, String> {
        let key = format!("{}cluster_uuid", self.prefix);
        let cluster = self
            .prefix
            .trim_start_matches("/quidditch/")
            .trim_end_matches('/');
        let mut client = self.client.clone();
        let stored = timed("reading the cluster's uuid", client.get(key.clone(), None)).await?;
        let current = stored
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).to_string());
        match (current, known) {
            (Some(current), Some(known)) if current != known => Err(format!(
                "this node's data directory belongs to the cluster with uuid {known}, but cluster [{cluster}] \
                 in etcd has uuid {current}: wrong --etcd or --cluster-name?"
            )),
            (Some(current), _) => Ok(current),
            (None, Some(known)) => Err(format!(
                "this node's data directory belongs to the cluster with uuid {known}, but etcd has no \
                 cluster [{cluster}]: wrong --etcd or --cluster-name, or etcd lost its data?"
            )),
            // Only a master-eligible node forms a cluster; another waits a
            // while for one to do it.
            (None, None) if !self.local.has(Role::Master) => {
                let deadline = tokio::time::Instant::now() + FORMING_WAIT;
                while tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(RETRY).await;
                    let stored = timed("reading the cluster's uuid", client.get(key.clone(), None)).await?;
                    if let Some(kv) = stored.kvs().first() {
                        return Ok(String::from_utf8_lossy(kv.value()).to_string());
                    }
                }
                Err(format!(
                    "etcd has no cluster [{cluster}], and no master-eligible node formed it within {} s: \
                     wrong --cluster-name?",
                    FORMING_WAIT.as_secs()
                ))
            }
            (None, None) => {
                let new = uuid::Uuid::new_v4().simple().to_string();
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.clone(), new.clone(), None)])
                    .or_else([TxnOp::get(key, None)]);
                let resp = timed("recording the cluster's uuid", client.txn(txn)).await?;
                if resp.succeeded() {
                    tracing::info!(cluster, uuid = %new, "made a new cluster");
                    return Ok(new);
                }
                // Another node made it first.
                resp.op_responses()
                    .into_iter()
                    .find_map(|op| match op {
                        etcd_client::TxnOpResponse::Get(get) => get
                            .kvs()
                            .first()
                            .map(|kv| String::from_utf8_lossy(kv.value()).to_string()),
                        _ => None,
                    })
                    .ok_or_else(|| failed("reading the cluster's uuid", "it vanished"))
            }
        }
    }

    /// Grants a lease and puts this node under it. The node's key may be
    /// held only by this node's own earlier process (same data directory),
    /// whose registration (and leadership) it takes over; a node id another
    /// node holds is refused.
    async fn register(&self) -> Result<(), String> {
        let mut client = self.client.clone();
        let key = self.key("nodes", &self.local.id);
        let existing = timed("reading the node's registration", client.get(key.clone(), None)).await?;
        if let Some(kv) = existing.kvs().first() {
            let other = serde_json::from_slice::<Registration>(kv.value()).map(|r| r.node_uuid);
            if other.as_deref().ok() != Some(self.node_uuid.as_str()) {
                return Err(format!(
                    "node id [{}] is already used by another node of the cluster (at {})",
                    self.local.id,
                    serde_json::from_slice::<NodeInfo>(kv.value()).map_or_else(|_| "?".into(), |n| n.flight)
                ));
            }
            if kv.lease() != 0 {
                tracing::info!(node = %self.local.id, "replacing this node's earlier registration");
                if let Err(err) = timed("revoking the earlier lease", client.lease_revoke(kv.lease())).await
                    && !err.contains("not found")
                {
                    return Err(err);
                }
            }
        }
        let ttl = i64::try_from(self.lease_ttl.as_secs().max(1)).unwrap_or(5);
        let lease = timed("granting a lease", client.lease_grant(ttl, None))
            .await?
            .id();
        let value = serde_json::to_vec(&Registration {
            node: self.local.clone(),
            node_uuid: self.node_uuid.clone(),
        })
        .map_err(|e| failed("encoding the node", e))?;
        // Registered only if nobody took the id since it was read.
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)))]);
        if !timed("registering the node", client.txn(txn)).await?.succeeded() {
            let _ = client.lease_revoke(lease).await;
            return Err(format!(
                "node id [{}] was registered by another node at the same time",
                self.local.id
            ));
        }
        *self.lease.write() = lease;
        Ok(())
    }

    /// Reads every registered node; returns the revision read at.
    async fn load_nodes(&self) -> Result<i64, String> {
        let mut client = self.client.clone();
        let prefix = format!("{}nodes/", self.prefix);
        let resp = timed(
            "listing nodes",
            client.get(prefix, Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let nodes = resp
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice::<NodeInfo>(kv.value()).ok())
            .map(|n| (n.id.clone(), n))
            .collect();
        *self.nodes.write() = nodes;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Starts the tasks that keep the lease alive, follow the nodes and the
    /// leader, and (on master-eligible nodes) campaign for leadership.
    pub fn spawn(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = vec![
            tokio::spawn(Arc::clone(self).keep_alive()),
            tokio::spawn(Arc::clone(self).follow_nodes()),
            tokio::spawn(Arc::clone(self).follow_leader()),
        ];
        if self.local.has(Role::Master) {
            tasks.push(tokio::spawn(Arc::clone(self).campaign()));
        }
        tasks
    }

    /// Renews the lease at a third of its time to live; when it is lost
    /// (etcd unreachable for longer than that), registers again.
    async fn keep_alive(self: Arc<Self>) {
        let interval = self.lease_ttl / 3;
        loop {
            let lease = *self.lease.read();
            let mut client = self.client.clone();
            match client.lease_keep_alive(lease).await {
                Ok((mut keeper, mut stream)) => loop {
                    if keeper.keep_alive().await.is_err() {
                        break;
                    }
                    match tokio::time::timeout(REQUEST_TIMEOUT, stream.message()).await {
                        Ok(Ok(Some(resp))) if resp.ttl() > 0 => {}
                        _ => break,
                    }
                    tokio::time::sleep(interval).await;
                },
                Err(err) => tracing::warn!(%err, "etcd: cannot renew the node's lease"),
            }
            // The stream broke; the lease may still be alive (etcd was slow
            // or restarted): keep it, so that the node never seems to leave.
            let alive = timed("reading the node's lease", client.lease_time_to_live(lease, None))
                .await
                .is_ok_and(|r| r.ttl() > 0);
            if alive {
                tracing::warn!("etcd: renewing the node's lease failed; renewing it again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
            tracing::warn!("etcd: the node's lease was lost; registering again");
            loop {
                match self.register().await {
                    Ok(()) => break,
                    Err(err) => {
                        tracing::warn!(%err, "etcd: registering again failed");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        }
    }

    /// Follows `nodes/`: a snapshot, then its changes.
    async fn follow_nodes(self: Arc<Self>) {
        loop {
            if let Err(err) = self.follow_nodes_once().await {
                tracing::warn!(%err, "etcd: following the nodes failed; reading them again");
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    async fn follow_nodes_once(&self) -> Result<(), String> {
        let revision = self.load_nodes().await?;
        let (prefix, mut stream) = self.watch_prefix("nodes", revision).await?;
        while let Some(resp) = stream.message().await.map_err(|e| failed("watching nodes", e))? {
            if resp.canceled() {
                return Err(failed("watching nodes", "the watch was canceled"));
            }
            let mut nodes = self.nodes.write();
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let id = String::from_utf8_lossy(kv.key())
                    .trim_start_matches(&prefix)
                    .to_string();
                match event.event_type() {
                    EventType::Put => {
                        if let Ok(node) = serde_json::from_slice::<NodeInfo>(kv.value()) {
                            if !nodes.contains_key(&id) {
                                tracing::info!(node = %id, "node joined");
                            }
                            nodes.insert(id, node);
                        }
                    }
                    EventType::Delete => {
                        if nodes.remove(&id).is_some() {
                            tracing::warn!(node = %id, "node left: its lease ended");
                        }
                    }
                }
            }
        }
        Err(failed("watching nodes", "the watch ended"))
    }

    /// Watches the keys under `<prefix>/<kind>/` from the revision after
    /// `revision`, deletions with the value they had; returns the watched
    /// prefix and the stream.
    async fn watch_prefix(
        &self,
        kind: &str,
        revision: i64,
    ) -> Result<(String, etcd_client::WatchStream), String> {
        let prefix = format!("{}{kind}/", self.prefix);
        let options = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(revision + 1);
        let mut client = self.client.clone();
        let stream = timed(
            &format!("watching {kind}"),
            client.watch(prefix.clone(), Some(options)),
        )
        .await?;
        Ok((prefix, stream))
    }

    /// Follows who leads: etcd's `observe` of the election.
    async fn follow_leader(self: Arc<Self>) {
        loop {
            let mut client = self.client.clone();
            match client.observe(self.election()).await {
                Ok(mut stream) => loop {
                    match stream.message().await {
                        Ok(Some(resp)) => {
                            let leader = resp
                                .kv()
                                .map(|kv| String::from_utf8_lossy(kv.value()).to_string());
                            self.set_leader(leader);
                        }
                        // The stream ends when the leader's key goes; until
                        // a new leader is elected there is none.
                        Ok(None) => {
                            self.set_leader(None);
                            break;
                        }
                        // etcd cannot be reached: the leader it had stays
                        // the best knowledge (its lease outlives a short
                        // outage) until etcd says otherwise.
                        Err(err) => {
                            tracing::warn!(%err, "etcd: observing the election failed");
                            break;
                        }
                    }
                },
                Err(err) => tracing::warn!(%err, "etcd: observing the election failed"),
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    fn set_leader(&self, leader: Option<String>) {
        self.leader.send_if_modified(|current| {
            if *current == leader {
                return false;
            }
            match &leader {
                Some(id) => tracing::info!(leader = %id, "elected leader"),
                None => tracing::warn!("the cluster has no leader"),
            }
            *current = leader;
            true
        });
    }

    /// Campaigns for leadership with the node's lease, again whenever the
    /// lease (and with it the leadership) is lost.
    async fn campaign(self: Arc<Self>) {
        loop {
            let lease = *self.lease.read();
            let mut client = self.client.clone();
            match client
                .campaign(self.election(), self.local.id.clone(), lease)
                .await
            {
                Ok(_) => {
                    tracing::info!(node = %self.local.id, "this node leads the cluster");
                    // Leadership lasts as long as the lease: wait for a new one.
                    while *self.lease.read() == lease {
                        tokio::time::sleep(RETRY).await;
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "etcd: campaigning failed");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// Leaves the cluster at once: revokes the node's lease, which removes
    /// its registration and ends its leadership.
    pub async fn leave(&self) {
        let lease = *self.lease.read();
        let mut client = self.client.clone();
        if let Err(err) = timed("revoking the lease", client.lease_revoke(lease)).await {
            tracing::warn!(%err, "leaving the cluster");
        }
    }

    /// The id of the leader, if one is elected.
    pub fn leader(&self) -> Option<String> {
        self.leader.borrow().clone()
    }

    /// Waits until a leader is elected, for at most `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<String> {
        let mut rx = self.leader.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|leader| leader.clone())
    }

    /// Every index's metadata and the revision it was read at.
    pub async fn indices(&self) -> Result<(Vec<IndexMeta>, i64), String> {
        let mut client = self.client.clone();
        let resp = timed(
            "listing indices",
            client.get(
                format!("{}indices/", self.prefix),
                Some(GetOptions::new().with_prefix()),
            ),
        )
        .await?;
        let metas = resp.kvs().iter().filter_map(|kv| decode_meta(kv).ok()).collect();
        Ok((metas, resp.header().map_or(0, |h| h.revision())))
    }

    /// Sends the changes of the index metadata after `revision` to `tx`
    /// until the watch fails or `tx` is dropped.
    pub async fn watch_indices(
        &self,
        revision: i64,
        tx: &tokio::sync::mpsc::Sender<IndexEvent>,
    ) -> Result<(), String> {
        let (_, mut stream) = self.watch_prefix("indices", revision).await?;
        while let Some(resp) = stream
            .message()
            .await
            .map_err(|e| failed("watching indices", e))?
        {
            if resp.canceled() {
                return Err(failed("watching indices", "the watch was canceled"));
            }
            for event in resp.events() {
                let (kv, deleted) = match event.event_type() {
                    EventType::Put => (event.kv(), false),
                    EventType::Delete => (event.prev_kv(), true),
                };
                let Some(kv) = kv else { continue };
                let meta = match decode_meta(kv) {
                    Ok(meta) => meta,
                    Err(err) => {
                        tracing::warn!(%err, "etcd: unreadable index metadata");
                        continue;
                    }
                };
                let event = if deleted {
                    IndexEvent::Deleted(meta)
                } else {
                    IndexEvent::Put(meta)
                };
                if tx.send(event).await.is_err() {
                    return Ok(());
                }
            }
        }
        Err(failed("watching indices", "the watch ended"))
    }

    /// Records a new index and returns the revision that created it;
    /// `Ok(None)` when an index of that name exists.
    pub async fn create_index(&self, meta: &IndexMeta) -> Result<Option<i64>, String> {
        let key = self.key("indices", &meta.name);
        let value = serde_json::to_vec(meta).map_err(|e| failed("encoding index metadata", e))?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        let mut client = self.client.clone();
        let resp = timed("creating an index", client.txn(txn)).await?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map_or(0, |h| h.revision())))
    }

    /// An index's metadata as etcd has it now, with its revision.
    pub async fn index(&self, name: &str) -> Result<Option<(IndexMeta, i64)>, String> {
        let mut client = self.client.clone();
        let resp = timed("reading an index", client.get(self.key("indices", name), None)).await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let meta = decode_meta(kv).map_err(|e| failed("decoding index metadata", e))?;
        Ok(Some((meta, kv.mod_revision())))
    }

    /// Changes an index's metadata as etcd has it, if it is the incarnation
    /// of `meta`: `change` edits it and says whether it changed anything.
    /// Retried when another change came in between. Returns the metadata
    /// as stored after the change, `None` when the incarnation is gone.
    pub async fn modify_index(
        &self,
        meta: &IndexMeta,
        mut change: impl FnMut(&mut IndexMeta) -> bool,
    ) -> Result<Option<IndexMeta>, String> {
        let key = self.key("indices", &meta.name);
        for _ in 0..20 {
            let Some((mut stored, revision)) = self.index(&meta.name).await? else {
                return Ok(None);
            };
            if stored.uuid != meta.uuid {
                return Ok(None);
            }
            if !change(&mut stored) {
                return Ok(Some(stored));
            }
            stored.version += 1;
            let value = serde_json::to_vec(&stored).map_err(|e| failed("encoding index metadata", e))?;
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, revision)])
                .and_then([TxnOp::put(key.clone(), value, None)]);
            let mut client = self.client.clone();
            if timed("changing an index", client.txn(txn)).await?.succeeded() {
                return Ok(Some(stored));
            }
        }
        Err(failed("changing an index", "it kept changing under this node"))
    }

    /// The templates and cluster settings, with the revision of their key
    /// (0 when there are none yet).
    pub async fn metadata(&self) -> Result<(ClusterMetadata, i64), String> {
        let mut client = self.client.clone();
        let key = format!("{}metadata", self.prefix);
        let resp = timed("reading cluster metadata", client.get(key, None)).await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok((ClusterMetadata::default(), 0));
        };
        let metadata =
            serde_json::from_slice(kv.value()).map_err(|e| failed("decoding cluster metadata", e))?;
        Ok((metadata, kv.mod_revision()))
    }

    /// Changes the templates or cluster settings with `change`, again when
    /// another node changed them in between; `change`'s error stops it and
    /// is returned inside.
    pub async fn modify_metadata<E>(
        &self,
        mut change: impl FnMut(&mut ClusterMetadata) -> Result<(), E>,
    ) -> Result<Result<(), E>, String> {
        let key = format!("{}metadata", self.prefix);
        for _ in 0..20 {
            let (mut metadata, revision) = self.metadata().await?;
            let before = metadata.clone();
            if let Err(err) = change(&mut metadata) {
                return Ok(Err(err));
            }
            if metadata == before {
                return Ok(Ok(()));
            }
            let value = serde_json::to_vec(&metadata).map_err(|e| failed("encoding cluster metadata", e))?;
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, revision)])
                .and_then([TxnOp::put(key.clone(), value, None)]);
            let mut client = self.client.clone();
            if timed("changing cluster metadata", client.txn(txn))
                .await?
                .succeeded()
            {
                return Ok(Ok(()));
            }
        }
        Err(failed(
            "changing cluster metadata",
            "it kept changing under this node",
        ))
    }

    /// Deletes an index's metadata if it is this incarnation.
    pub async fn delete_index(&self, meta: &IndexMeta) -> Result<bool, String> {
        self.if_incarnation(meta, |key| Ok(TxnOp::delete(key, None)))
            .await
    }

    /// Runs `op` on the index's key if the stored metadata is of the same
    /// incarnation (uuid) as `meta`.
    async fn if_incarnation(
        &self,
        meta: &IndexMeta,
        op: impl FnOnce(String) -> Result<TxnOp, String>,
    ) -> Result<bool, String> {
        let Some((stored, revision)) = self.index(&meta.name).await? else {
            return Ok(false);
        };
        if stored.uuid != meta.uuid {
            return Ok(false);
        }
        let key = self.key("indices", &meta.name);
        let txn = Txn::new()
            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, revision)])
            .and_then([op(key)?]);
        let mut client = self.client.clone();
        Ok(timed("changing an index", client.txn(txn)).await?.succeeded())
    }
}

/// An index's metadata as stored in etcd, with the revision that created
/// the key (this incarnation).
fn decode_meta(kv: &KeyValue) -> Result<IndexMeta, serde_json::Error> {
    let mut meta: IndexMeta = serde_json::from_slice(kv.value())?;
    meta.created_revision = kv.create_revision();
    Ok(meta)
}

impl Membership for EtcdCluster {
    fn local(&self) -> NodeInfo {
        self.local.clone()
    }

    fn nodes(&self) -> Vec<NodeInfo> {
        let mut nodes = self.nodes.read().clone();
        nodes.insert(self.local.id.clone(), self.local.clone());
        nodes.into_values().collect()
    }
}
