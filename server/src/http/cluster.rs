//! Cluster visibility: `GET /_cluster/health`, `/_cat/nodes` and
//! `/_cat/shards`, in Elasticsearch's shapes. A shard is active when the
//! node that holds it answers (the embedded node holds every shard); a
//! shard whose node does not answer is unassigned and makes the cluster
//! red. Replicas are not kept yet, so an index with replicas is yellow, as
//! in a one-node Elasticsearch cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use quidditch_cluster::Role;
use quidditch_index::Index;
use quidditch_index::activity::ActivityStats;
use quidditch_index::indices::FailedIndex;
use quidditch_index::merge::SegmentStats;
use quidditch_index::metadata::{nest, parse_settings};
use serde_json::{Map, Value, json};

use super::cat::render_table;
use super::{ApiError, ApiResult, Params, bool_param, es_json, ok_json, parse_body};
use crate::node::Node;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Health {
    Green,
    Yellow,
    Red,
}

impl Health {
    fn name(self) -> &'static str {
        match self {
            Health::Green => "green",
            Health::Yellow => "yellow",
            Health::Red => "red",
        }
    }

    fn parse(s: &str) -> ApiResult<Health> {
        match s {
            "green" => Ok(Health::Green),
            "yellow" => Ok(Health::Yellow),
            "red" => Ok(Health::Red),
            other => Err(ApiError::bad_request(format!(
                "unknown cluster health status [{other}]"
            ))),
        }
    }
}

/// The in-sync copies of each shard of an index (the primary first), with
/// whether their node answers.
fn shard_copies(node: &Node, index: &Index) -> Vec<Vec<(String, bool)>> {
    let meta = index.meta();
    (0..index.num_shards())
        .map(|n| match &node.cluster {
            Some(cluster) if meta.shard_node(n).is_some() => meta
                .copies(n)
                .map(|owner| (owner.to_string(), cluster.is_up(owner)))
                .collect(),
            _ => vec![(node.node_id.clone(), true)],
        })
        .collect()
}

/// Shard counts of some indices, as `_cluster/health` reports them.
#[derive(Default)]
pub(super) struct ShardCounts {
    active_primaries: u64,
    active: u64,
    unassigned: u64,
    unassigned_primaries: u64,
}

impl ShardCounts {
    pub(super) fn of(node: &Node, indices: &[Arc<Index>]) -> ShardCounts {
        ShardCounts::with_failed(node, indices, &[])
    }

    /// Counts of `indices` and of indices that did not open, whose shards
    /// are all unassigned.
    fn with_failed(node: &Node, indices: &[Arc<Index>], failed: &[FailedIndex]) -> ShardCounts {
        let mut counts = ShardCounts::default();
        for f in failed {
            let shards = u64::from(f.num_shards());
            counts.unassigned_primaries += shards;
            counts.unassigned += shards * (1 + u64::from(f.num_replicas()));
        }
        for index in indices {
            let desired = 1 + u64::from(index.settings().number_of_replicas);
            for copies in shard_copies(node, index) {
                let active = copies.iter().filter(|(_, up)| *up).count() as u64;
                if copies.first().is_some_and(|(_, up)| *up) {
                    counts.active_primaries += 1;
                } else {
                    counts.unassigned_primaries += 1;
                }
                counts.active += active;
                counts.unassigned += desired.saturating_sub(active);
            }
        }
        counts
    }

    /// The started copies, and every copy (unassigned ones too).
    pub(super) fn copies(&self) -> (u64, u64) {
        (self.active, self.active + self.unassigned)
    }

    /// Red when a primary is not active, yellow when a replica is not.
    pub(super) fn status(&self) -> &'static str {
        self.health().name()
    }

    fn health(&self) -> Health {
        if self.unassigned_primaries > 0 {
            Health::Red
        } else if self.unassigned > 0 {
            Health::Yellow
        } else {
            Health::Green
        }
    }
}

fn health_of(node: &Node, indices: &[Arc<Index>], failed: &[FailedIndex]) -> (Health, Value) {
    let counts = ShardCounts::with_failed(node, indices, failed);
    let status = counts.health();
    let (nodes, data_nodes) = match &node.cluster {
        Some(cluster) => {
            let up: Vec<_> = cluster.nodes().into_iter().filter(|(_, up, _)| *up).collect();
            let data = up.iter().filter(|(n, _, _)| n.has(Role::Data)).count();
            (up.len(), data)
        }
        None => (1, 1),
    };
    let total = counts.active + counts.unassigned;
    let percent = if total == 0 {
        100.0
    } else {
        counts.active as f64 * 100.0 / total as f64
    };
    let body = json!({
        "cluster_name": node.cluster_name,
        "status": status.name(),
        "timed_out": false,
        "number_of_nodes": nodes,
        "number_of_data_nodes": data_nodes,
        "active_primary_shards": counts.active_primaries,
        "active_shards": counts.active,
        "relocating_shards": 0,
        "initializing_shards": 0,
        "unassigned_shards": counts.unassigned,
        "unassigned_primary_shards": counts.unassigned_primaries,
        "delayed_unassigned_shards": 0,
        "number_of_pending_tasks": 0,
        "number_of_in_flight_fetch": 0,
        "task_max_waiting_in_queue_millis": 0,
        "active_shards_percent_as_number": percent,
    });
    (status, body)
}

async fn health_for(node: &Node, target: Option<&str>, params: &Params) -> ApiResult<Response> {
    let wait_for = params
        .get("wait_for_status")
        .map(|s| Health::parse(s))
        .transpose()?;
    let timeout = match params.get("timeout") {
        Some(t) => quidditch_planner::search::parse_time_value(t, "timeout")?,
        None => Duration::from_secs(30),
    };
    // A timeout too large for the clock waits as long as it can.
    let deadline = Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600));
    loop {
        let (indices, failed) = node.indices.resolve_with_failed(target.unwrap_or("_all"))?;
        let (status, mut out) = health_of(node, &indices, &failed);
        let satisfied = wait_for.is_none_or(|w| status <= w);
        if satisfied {
            return Ok(es_json(StatusCode::OK, &out));
        }
        if Instant::now() >= deadline {
            out["timed_out"] = json!(true);
            return Ok(es_json(StatusCode::REQUEST_TIMEOUT, &out));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /_cat/health`: `_cluster/health` as one row.
pub async fn cat_health(State(node): State<Arc<Node>>, Query(params): Query<Params>) -> ApiResult<Response> {
    let (indices, failed) = node.indices.resolve_with_failed("_all")?;
    let (_, h) = health_of(&node, &indices, &failed);
    let mut row = super::cat::epoch_columns();
    row.push(node.cluster_name.clone());
    row.extend(
        [
            "status",
            "number_of_nodes",
            "number_of_data_nodes",
            "active_shards",
            "active_primary_shards",
            "relocating_shards",
            "initializing_shards",
            "unassigned_shards",
            "unassigned_primary_shards",
            "number_of_pending_tasks",
        ]
        .map(|key| match &h[key] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
    );
    row.push("-".to_string());
    row.push(format!(
        "{:.1}%",
        h["active_shards_percent_as_number"].as_f64().unwrap_or(0.0)
    ));
    let columns = [
        "epoch",
        "timestamp",
        "cluster",
        "status",
        "node.total",
        "node.data",
        "shards",
        "pri",
        "relo",
        "init",
        "unassign",
        "unassign.pri",
        "pending_tasks",
        "max_task_wait_time",
        "active_shards_percent",
    ];
    render_table(&columns, vec![row], &params)
}

/// `GET /_cluster/health`.
pub async fn health(State(node): State<Arc<Node>>, Query(params): Query<Params>) -> ApiResult<Response> {
    health_for(&node, None, &params).await
}

/// `GET /_cluster/health/{index}`.
pub async fn health_of_index(
    State(node): State<Arc<Node>>,
    Path(target): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult<Response> {
    health_for(&node, Some(&target), &params).await
}

/// `GET /_cat/nodes`: the nodes that answer.
pub async fn cat_nodes(State(node): State<Arc<Node>>, Query(params): Query<Params>) -> ApiResult<Response> {
    let columns = ["ip", "http", "flight", "node.role", "master", "name"];
    let role_letters = |roles: &[Role]| {
        let mut letters: String = roles
            .iter()
            .filter_map(|r| match r {
                Role::Data => Some('d'),
                Role::Master => Some('m'),
                Role::Coordinator => None,
            })
            .collect();
        if letters.is_empty() {
            letters.push('-');
        }
        letters
    };
    let rows = match &node.cluster {
        None => vec![vec![
            node.http_addr.ip().to_string(),
            node.http_addr.to_string(),
            node.flight_addr.to_string(),
            role_letters(&node.roles),
            "*".to_string(),
            node.node_id.clone(),
        ]],
        Some(cluster) => {
            let leader = cluster.leader();
            cluster
                .nodes()
                .into_iter()
                .filter(|(_, up, _)| *up)
                .map(|(info, _, _)| {
                    let http = cluster.http_of(&info).unwrap_or_default();
                    let master = if leader.as_deref() == Some(info.id.as_str()) {
                        "*"
                    } else {
                        "-"
                    };
                    vec![
                        info.flight
                            .rsplit_once(':')
                            .map_or(String::new(), |(h, _)| h.to_string()),
                        http,
                        info.flight.clone(),
                        role_letters(&info.roles),
                        master.to_string(),
                        info.id,
                    ]
                })
                .collect()
        }
    };
    render_table(&columns, rows, &params)
}

/// A `_cat/shards` row of a copy no node serves.
fn unassigned_row(index: &str, shard: u32, prirep: &str) -> Vec<String> {
    vec![
        index.to_string(),
        shard.to_string(),
        prirep.to_string(),
        "UNASSIGNED".to_string(),
        String::new(),
        String::new(),
        String::new(),
    ]
}

/// The address of node `owner`, as `_cat` lists it.
fn ip_of(node: &Node, owner: &str) -> String {
    match &node.cluster {
        Some(cluster) => cluster
            .membership
            .node(owner)
            .and_then(|i| i.flight.rsplit_once(':').map(|(h, _)| h.to_string()))
            .unwrap_or_default(),
        None => node.http_addr.ip().to_string(),
    }
}

/// `GET /_cat/segments`.
pub async fn cat_segments(
    State(node): State<Arc<Node>>,
    Query(params): Query<Params>,
) -> ApiResult<Response> {
    segments_of(&node, "_all", &params).await
}

/// `GET /_cat/segments/{index}`.
pub async fn cat_segments_of(
    State(node): State<Arc<Node>>,
    Path(target): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult<Response> {
    segments_of(&node, &target, &params).await
}

/// A row per searchable segment of each started shard copy; copies whose
/// node does not answer are left out, as Elasticsearch lists only started
/// copies.
async fn segments_of(node: &Node, target: &str, params: &Params) -> ApiResult<Response> {
    let columns = [
        "index",
        "shard",
        "prirep",
        "ip",
        "segment",
        "docs.count",
        "docs.deleted",
        "size",
        "committed",
        "searchable",
        "compound",
    ];
    let mut rows = Vec::new();
    for copy in started_copies(node, &node.indices.resolve(target)?).await? {
        let prirep = if copy.primary { "p" } else { "r" };
        let ip = ip_of(node, &copy.node);
        rows.extend(copy.segments.into_iter().map(|s| {
            vec![
                copy.index.clone(),
                copy.shard.to_string(),
                prirep.to_string(),
                ip.clone(),
                format!("_{}", s.id),
                s.docs.to_string(),
                s.deleted.to_string(),
                super::cat::human_size(s.bytes),
                "true".to_string(),
                "true".to_string(),
                "false".to_string(),
            ]
        }));
    }
    render_table(&columns, rows, params)
}

/// A started copy of a shard, with its searchable segments.
pub(super) struct StartedCopy {
    pub index: String,
    pub shard: u32,
    pub primary: bool,
    /// Its node.
    pub node: String,
    pub segments: Vec<SegmentStats>,
    /// What it did since it was opened.
    pub activity: ActivityStats,
}

/// The started copies of the shards of `indices` (by index name, then
/// shard, the primary first): on this node, read here; on the others, as
/// they answer now (a copy whose node does not answer is left out).
pub(super) async fn started_copies(node: &Node, indices: &[Arc<Index>]) -> ApiResult<Vec<StartedCopy>> {
    let mut indices: Vec<&Arc<Index>> = indices.iter().collect();
    indices.sort_by_key(|i| i.name());
    let remote = match &node.cluster {
        Some(cluster) => cluster.shard_segments().await,
        None => Default::default(),
    };
    let mut out = Vec::new();
    for index in indices {
        let name = index.name();
        for (n, copies) in shard_copies(node, index).into_iter().enumerate() {
            let n = n as u32;
            for (i, (owner, up)) in copies.into_iter().enumerate() {
                let local = index.shard(n).filter(|_| owner == node.node_id);
                let (segments, activity) = match local {
                    Some(shard) => (shard.segments()?, shard.activity().read()),
                    None if up => match remote.get(&(name.clone(), n, owner.clone())) {
                        Some(answer) => answer.clone(),
                        None => continue,
                    },
                    None => continue,
                };
                out.push(StartedCopy {
                    index: name.clone(),
                    shard: n,
                    primary: i == 0,
                    node: owner,
                    segments,
                    activity,
                });
            }
        }
    }
    Ok(out)
}

/// `GET /_cat/shards`.
pub async fn cat_shards(State(node): State<Arc<Node>>, Query(params): Query<Params>) -> ApiResult<Response> {
    let columns = ["index", "shard", "prirep", "state", "docs", "ip", "node"];
    let (mut indices, failed) = node.indices.resolve_with_failed("_all")?;
    indices.sort_by_key(|i| i.name());
    let docs = match &node.cluster {
        Some(cluster) => cluster.shard_docs().await,
        None => Default::default(),
    };
    let mut rows = Vec::new();
    for index in indices {
        let name = index.name();
        let desired = 1 + index.settings().number_of_replicas as usize;
        for (n, copies) in shard_copies(&node, &index).into_iter().enumerate() {
            let count = super::cat::shard_docs(&index, &name, n as u32, &docs);
            let missing = desired.saturating_sub(copies.len());
            let copies = copies
                .into_iter()
                .map(Some)
                .chain(std::iter::repeat_n(None, missing));
            for (i, copy) in copies.enumerate() {
                let prirep = if i == 0 { "p" } else { "r" }.to_string();
                let (owner, ip) = match copy {
                    Some((owner, true)) => {
                        let ip = ip_of(&node, &owner);
                        (owner, ip)
                    }
                    _ => {
                        rows.push(unassigned_row(&name, n as u32, &prirep));
                        continue;
                    }
                };
                rows.push(vec![
                    name.clone(),
                    n.to_string(),
                    prirep,
                    "STARTED".to_string(),
                    count.map(|c| c.to_string()).unwrap_or_default(),
                    ip,
                    owner,
                ]);
            }
        }
    }
    // Every copy of an index that did not open is unassigned, as
    // `_cluster/health` counts them.
    for f in &failed {
        for n in 0..f.num_shards() {
            for copy in 0..=f.num_replicas() {
                let prirep = if copy == 0 { "p" } else { "r" };
                rows.push(unassigned_row(&f.name, n, prirep));
            }
        }
    }
    // By index (a stable sort keeps each index's shards in order).
    rows.sort_by(|a, b| a[0].cmp(&b[0]));
    render_table(&columns, rows, &params)
}

/// `GET /_cluster/settings` (`flat_settings`, `include_defaults`).
pub async fn get_settings(
    State(node): State<Arc<Node>>,
    Query(params): Query<Params>,
) -> ApiResult<Response> {
    let flat = bool_param(&params, "flat_settings", false)?;
    let defaults = bool_param(&params, "include_defaults", false)?;
    let indices = Arc::clone(&node.indices);
    let metadata = tokio::task::spawn_blocking(move || indices.metadata()).await??;
    Ok(ok_json(&metadata.settings_to_es(flat, defaults)))
}

/// `PUT /_cluster/settings`: `persistent` settings (the node applies
/// `action.auto_create_index`, `action.destructive_requires_name` and
/// `search.max_buckets`).
pub async fn put_settings(
    State(node): State<Arc<Node>>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    let flat_out = bool_param(&params, "flat_settings", false)?;
    let body = parse_body(&body)?.ok_or_else(|| ApiError::bad_request("request body is required"))?;
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("request body must be an object"))?;
    for (key, value) in obj {
        match key.as_str() {
            "persistent" => {}
            "transient" if value.as_object().is_some_and(Map::is_empty) => {}
            "transient" => {
                return Err(ApiError::bad_request(
                    "transient cluster settings are not supported: set them as [persistent]",
                ));
            }
            other => {
                return Err(ApiError::unknown_field("cluster_update_settings_request", other));
            }
        }
    }
    let flat = parse_settings(obj.get("persistent").unwrap_or(&json!({})))?;
    let indices = Arc::clone(&node.indices);
    let applied = flat.clone();
    tokio::task::spawn_blocking(move || {
        indices.change_metadata(|metadata| {
            metadata.apply_settings(&applied);
            Ok(())
        })
    })
    .await??;
    let set: Map<String, Value> = flat.into_iter().filter(|(_, v)| !v.is_null()).collect();
    let persistent = match flat_out {
        true => Value::Object(set),
        false => nest(&set),
    };
    Ok(ok_json(
        &json!({"acknowledged": true, "persistent": persistent, "transient": {}}),
    ))
}
