//! Cluster visibility for the embedded node: `GET /_cluster/health`,
//! `/_cat/nodes` and `/_cat/shards`, in Elasticsearch's shapes. One node
//! holds every primary; replicas have no second node to live on, so an
//! index with replicas is yellow, as in a one-node Elasticsearch cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use quidditch_index::Index;
use serde_json::{Value, json};

use super::cat::render_table;
use super::{ApiError, ApiResult, Params, es_json};
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

fn health_of(node: &Node, indices: &[Arc<Index>]) -> (Health, Value) {
    let primaries: u64 = indices.iter().map(|i| i.shards().len() as u64).sum();
    let unassigned: u64 = indices
        .iter()
        .map(|i| i.shards().len() as u64 * u64::from(i.settings().number_of_replicas))
        .sum();
    let status = if unassigned > 0 {
        Health::Yellow
    } else {
        Health::Green
    };
    let total = primaries + unassigned;
    let percent = if total == 0 {
        100.0
    } else {
        primaries as f64 * 100.0 / total as f64
    };
    let body = json!({
        "cluster_name": node.cluster_name,
        "status": status.name(),
        "timed_out": false,
        "number_of_nodes": 1,
        "number_of_data_nodes": 1,
        "active_primary_shards": primaries,
        "active_shards": primaries,
        "relocating_shards": 0,
        "initializing_shards": 0,
        "unassigned_shards": unassigned,
        "unassigned_primary_shards": 0,
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
        let indices = match target {
            Some(t) => node.indices.resolve(t)?,
            None => node.indices.list(),
        };
        let (status, mut out) = health_of(node, &indices);
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

/// `GET /_cat/nodes`.
pub async fn cat_nodes(State(node): State<Arc<Node>>, Query(params): Query<Params>) -> ApiResult<Response> {
    let columns = ["ip", "http", "flight", "node.role", "master", "name"];
    let row = vec![
        node.http_addr.ip().to_string(),
        node.http_addr.to_string(),
        node.flight_addr.to_string(),
        "dm".to_string(),
        "*".to_string(),
        node.node_id.clone(),
    ];
    render_table(&columns, vec![row], &params)
}

/// `GET /_cat/shards`.
pub async fn cat_shards(State(node): State<Arc<Node>>, Query(params): Query<Params>) -> ApiResult<Response> {
    let columns = ["index", "shard", "prirep", "state", "docs", "ip", "node"];
    let mut rows = Vec::new();
    let mut indices = node.indices.list();
    indices.sort_by_key(|i| i.name());
    for index in indices {
        let name = index.name();
        for (n, shard) in index.shards().iter().enumerate() {
            rows.push(vec![
                name.clone(),
                n.to_string(),
                "p".to_string(),
                "STARTED".to_string(),
                shard.num_docs().to_string(),
                node.http_addr.ip().to_string(),
                node.node_id.clone(),
            ]);
            for _ in 0..index.settings().number_of_replicas {
                rows.push(vec![
                    name.clone(),
                    n.to_string(),
                    "r".to_string(),
                    "UNASSIGNED".to_string(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
            }
        }
    }
    render_table(&columns, rows, &params)
}
