//! Distributed execution over the data nodes of a cluster, with
//! datafusion-distributed.
//!
//! The leaves of our plans ([`TantivyScanExec`], [`TantivyAggregateExec`])
//! read shards, and a shard lives on one data node. Every stage that holds a
//! leaf gets one task slot per data node (sorted by id, and at least two
//! slots, so that the planner never folds a leaf stage into the
//! coordinator); task `i` of such a stage reads, for each of its leaves, the
//! shards of slot `i`'s node, each shard one partition, padded to the same
//! partition count, and is routed to that node. Everything above the leaves
//! (final aggregation, merges, limits, joins with their shuffles) is the
//! library's.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_distributed::grpc::{BoxCloneSyncChannel, create_worker_client};
use datafusion_distributed::{ChannelResolver, WorkerChannel};
use datafusion_distributed::{
    DesiredTaskCountEvent, DesiredTaskCountEventResponse, DistributedExt, DistributedLeafExec,
    RouteTasksEvent, RouteTasksEventResponse, ScaleUpLeafNodeEvent, ScaleUpLeafNodeEventResponse, Worker,
    WorkerQueryContext, WorkerResolver,
};
use quidditch_cluster::{Liveness, Membership, NodeInfo};
use quidditch_index::Indices;
use quidditch_index::agg_pushdown::TantivyAggregateExec;
use quidditch_index::codec::TantivyCodec;
use quidditch_index::index::Index;
use quidditch_index::scan::{ShardSet, TantivyScanExec};
use tonic::transport::{Channel, Endpoint};
use url::Url;

use crate::EngineConfig;

/// A tantivy leaf of a plan: its index and shards.
fn leaf(plan: &Arc<dyn ExecutionPlan>) -> Option<(&Arc<Index>, &ShardSet)> {
    if let Some(scan) = plan.downcast_ref::<TantivyScanExec>() {
        return Some((scan.index(), scan.shard_set()));
    }
    plan.downcast_ref::<TantivyAggregateExec>()
        .map(|agg| (agg.index(), agg.shard_set()))
}

/// The same leaf over other shards.
fn leaf_with(plan: &Arc<dyn ExecutionPlan>, shards: ShardSet) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(scan) = plan.downcast_ref::<TantivyScanExec>() {
        return Ok(Arc::new(scan.with_shards(shards)?));
    }
    if let Some(agg) = plan.downcast_ref::<TantivyAggregateExec>() {
        return Ok(Arc::new(agg.with_shards(shards)));
    }
    Err(DataFusionError::Internal(format!(
        "{} is not a tantivy leaf",
        plan.name()
    )))
}

/// Where the tasks of leaf stages run, from the cluster's membership.
#[derive(Debug, Clone)]
pub struct Placement {
    membership: Arc<dyn Membership>,
    liveness: Arc<Liveness>,
}

impl Placement {
    /// Placement over this membership.
    pub fn new(membership: Arc<dyn Membership>, liveness: Arc<Liveness>) -> Placement {
        Placement { membership, liveness }
    }

    /// The task slots of a leaf stage: the data nodes that answer, by id,
    /// repeated to at least two slots.
    pub fn slots(&self) -> Result<Vec<NodeInfo>> {
        let nodes: Vec<NodeInfo> = self
            .membership
            .data_nodes()
            .into_iter()
            .filter(|n| self.liveness.why_down(&n.id).is_none())
            .collect();
        if nodes.is_empty() {
            return Err(DataFusionError::Execution(
                "the cluster has no data node that answers".into(),
            ));
        }
        Ok(nodes.iter().cycle().take(nodes.len().max(2)).cloned().collect())
    }

    /// The shards of each slot: every shard goes to a slot of the node that
    /// holds it, round-robin over that node's slots.
    fn split(&self, index: &Index, shards: &ShardSet, slots: &[NodeInfo]) -> Result<Vec<Vec<u32>>> {
        let meta = index.meta();
        let local = self.membership.local().id;
        let mut groups: Vec<Vec<u32>> = vec![Vec::new(); slots.len()];
        let mut turn: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for &shard in &shards.shards {
            // The first in-sync copy (the primary first) on a node that answers.
            let owner = meta
                .copies(shard)
                .find(|node| slots.iter().any(|s| s.id == *node))
                .or_else(|| meta.shard_node(shard))
                .unwrap_or(local.as_str());
            let candidates: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].id == owner).collect();
            if candidates.is_empty() {
                let why = match self.liveness.why_down(owner) {
                    Some(why) => format!("does not answer ({why})"),
                    None => "is not a data node of the cluster".to_string(),
                };
                return Err(DataFusionError::Execution(format!(
                    "shard [{shard}] of index [{}] is on node [{owner}], which {why}",
                    meta.name
                )));
            }
            let t = turn.entry(owner).or_insert(0);
            groups[candidates[*t % candidates.len()]].push(shard);
            *t += 1;
        }
        Ok(groups)
    }

    fn desired(&self, ev: DesiredTaskCountEvent) -> Option<Result<DesiredTaskCountEventResponse>> {
        leaf(ev.plan)?;
        Some(
            self.slots()
                .map(|s| DesiredTaskCountEventResponse::desired(s.len())),
        )
    }

    fn scale_up(&self, ev: ScaleUpLeafNodeEvent) -> Option<Result<ScaleUpLeafNodeEventResponse>> {
        let (index, shards) = leaf(ev.plan)?;
        let build = || {
            let slots = self.slots()?;
            let groups = if ev.task_count == slots.len() {
                self.split(index, shards, &slots)?
            } else {
                // The stage has fewer tasks than data nodes (an operator in
                // it runs in one task, e.g. a null-aware anti join): the
                // shards go round-robin over the tasks, and a task reads the
                // shards that are not on its node from their nodes.
                let tasks = ev.task_count.max(1);
                let mut groups = vec![Vec::new(); tasks];
                for (i, &shard) in shards.shards.iter().enumerate() {
                    groups[i % tasks].push(shard);
                }
                groups
            };
            let width = groups.iter().map(Vec::len).max().unwrap_or(0).max(1);
            let variants = groups
                .into_iter()
                .map(|g| leaf_with(ev.plan, ShardSet::padded(g, width)))
                .collect::<Result<Vec<_>>>()?;
            let leaf = DistributedLeafExec::try_new(Arc::clone(ev.plan), variants)?;
            Ok(ScaleUpLeafNodeEventResponse::new(Arc::new(leaf)))
        };
        Some(build())
    }

    fn route(&self, ev: RouteTasksEvent) -> Option<Result<RouteTasksEventResponse>> {
        let mut leaves: Vec<&DistributedLeafExec> = Vec::new();
        let _ = ev.plan.apply(|node| {
            if let Some(l) = node.downcast_ref::<DistributedLeafExec>()
                && leaf(l.original()).is_some()
            {
                leaves.push(l);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        if leaves.is_empty() {
            return None;
        }
        let route = || {
            let mut slots = self.slots()?;
            // A stage with fewer tasks than slots reads remote shards from
            // its tasks' nodes (see `scale_up`).
            slots.truncate(ev.task_count);
            if slots.len() != ev.task_count {
                return Err(DataFusionError::Execution(format!(
                    "the cluster changed while the query was planned: {} tasks for {} task slots",
                    ev.task_count,
                    slots.len()
                )));
            }
            for (i, node) in slots.iter().enumerate() {
                let Some(why) = self.liveness.why_down(&node.id) else {
                    continue;
                };
                let held: Vec<String> = leaves
                    .iter()
                    .filter_map(|l| l.variants().get(i))
                    .filter_map(|v| leaf(v).map(|(index, set)| (index.name(), set.shards.clone())))
                    .filter(|(_, shards)| !shards.is_empty())
                    .map(|(name, shards)| format!("shards {shards:?} of index [{name}]"))
                    .collect();
                if !held.is_empty() {
                    return Err(DataFusionError::Execution(format!(
                        "node [{}] at {} does not answer ({why}); it holds {}",
                        node.id,
                        node.flight,
                        held.join(" and ")
                    )));
                }
            }
            let urls = slots.iter().map(node_url).collect::<Result<Vec<_>>>()?;
            tracing::debug!(?urls, "routing leaf tasks");
            Ok(RouteTasksEventResponse::new(urls))
        };
        Some(route())
    }
}

pub use quidditch_sql::error::unreachable_node;

/// The URL of a node's gRPC services.
pub fn node_url(node: &NodeInfo) -> Result<Url> {
    Url::parse(&node.url()).map_err(|e| {
        DataFusionError::Configuration(format!(
            "node [{}] has a bad address [{}]: {e}",
            node.id, node.flight
        ))
    })
}

impl WorkerResolver for Placement {
    fn get_urls(&self) -> Result<Vec<Url>> {
        self.membership.data_nodes().iter().map(node_url).collect()
    }
}

/// Connections to the workers of the data nodes: one channel per node,
/// reused across queries, with a connect timeout (so that a node that does
/// not answer fails a query quickly instead of hanging it) and errors that
/// name the node.
#[derive(Debug, Clone)]
pub struct NodeChannels {
    placement: Placement,
    channels: Arc<parking_lot::Mutex<std::collections::HashMap<Url, Channel>>>,
}

impl NodeChannels {
    fn new(placement: Placement) -> NodeChannels {
        NodeChannels {
            placement,
            channels: Arc::default(),
        }
    }

    fn node_name(&self, url: &Url) -> String {
        let address = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port().unwrap_or(80)
        );
        match self
            .placement
            .membership
            .nodes()
            .into_iter()
            .find(|n| n.flight == address)
        {
            Some(node) => format!("node [{}] at {address}", node.id),
            None => format!("the node at {address}"),
        }
    }
}

#[async_trait::async_trait]
impl ChannelResolver for NodeChannels {
    async fn get_worker_client_for_url(&self, url: &Url) -> Result<Box<dyn WorkerChannel>> {
        let cached = self.channels.lock().get(url).cloned();
        let channel = match cached {
            Some(channel) => channel,
            None => {
                let endpoint = Endpoint::from_shared(url.to_string())
                    .map_err(|e| DataFusionError::Configuration(format!("bad worker URL {url}: {e}")))?
                    .connect_timeout(quidditch_cluster::client::CONNECT_TIMEOUT)
                    .http2_keep_alive_interval(quidditch_cluster::client::KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(quidditch_cluster::client::KEEPALIVE_TIMEOUT)
                    .keep_alive_while_idle(true);
                let channel = endpoint.connect().await.map_err(|e| {
                    DataFusionError::External(Box::new(tonic::Status::unavailable(format!(
                        "{} does not answer: {e}",
                        self.node_name(url)
                    ))))
                })?;
                self.channels.lock().insert(url.clone(), channel.clone());
                channel
            }
        };
        Ok(create_worker_client(BoxCloneSyncChannel::new(channel)))
    }
}

/// Adds the distributed planner and our handlers to a coordinator's session.
pub(crate) fn coordinator_state(
    builder: SessionStateBuilder,
    placement: Placement,
) -> Result<SessionStateBuilder> {
    use datafusion_distributed::SessionStateBuilderExt;
    let (desired, scale, route) = (placement.clone(), placement.clone(), placement.clone());
    // Every leaf of a stage uses every task slot (a union of several
    // indices reads each index on all data nodes), instead of the library's
    // default of giving each child of a union its own share of the tasks.
    builder
        .with_distributed_channel_resolver(NodeChannels::new(placement.clone()))
        .with_distributed_worker_resolver(placement)
        .with_distributed_planner()
        .with_distributed_user_codec(TantivyCodec)
        .with_distributed_desired_task_count_handler(move |ev: DesiredTaskCountEvent| desired.desired(ev))
        .with_distributed_scale_up_leaf_node_handler(move |ev: ScaleUpLeafNodeEvent| scale.scale_up(ev))
        .with_distributed_route_tasks_handler(move |ev: RouteTasksEvent| route.route(ev))
        .with_distributed_children_isolator_unions(false)
}

/// The worker of a data node: runs the tasks coordinators send, over this
/// node's shards.
/// `udfs` are the functions plans use besides DataFusion's and the
/// full-text ones.
pub fn worker(
    indices: Arc<Indices>,
    config: &EngineConfig,
    udfs: Vec<Arc<datafusion::logical_expr::ScalarUDF>>,
) -> Result<Worker> {
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(limit) = config.memory_limit {
        runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
    }
    let runtime = runtime.build_arc()?;
    let batch_size = config.batch_size;
    let target_partitions = config.target_partitions;
    Ok(Worker::from_session_builder(move |ctx: WorkerQueryContext| {
        let indices = Arc::clone(&indices);
        let udfs = udfs.clone();
        async move {
            let mut builder = ctx.builder;
            let slot = builder.config();
            let mut config = slot
                .take()
                .unwrap_or_default()
                .with_batch_size(batch_size)
                .with_target_partitions(target_partitions);
            config.set_extension(indices);
            config.set_distributed_user_codec(TantivyCodec);
            *slot = Some(config);
            builder
                .scalar_functions()
                .get_or_insert_default()
                .extend(quidditch_index::fulltext::fulltext_udfs().into_iter().chain(udfs));
            Ok(builder.build())
        }
    })
    .with_runtime_env(runtime))
}
