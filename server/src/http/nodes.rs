//! `GET /_nodes`, `/_nodes/{nodes or metrics}` and
//! `/_nodes/{nodes}/{metrics}`: the nodes that are up, as Elasticsearch's
//! node info lists them (roles, addresses, version). A node's `http`
//! address is listed only when it takes searches and writes (the
//! coordinator role), so that a client that sniffs the cluster sends its
//! requests to no other node.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use quidditch_cluster::Role;
use serde_json::{Map, Value, json};

use super::root::COMPAT_VERSION;
use super::{ApiError, ApiResult, MAX_BODY, ok_json};
use crate::node::Node;

/// Elasticsearch's node info metrics; of these, nodes report `http`.
const METRICS: [&str; 13] = [
    "_all",
    "settings",
    "os",
    "process",
    "jvm",
    "thread_pool",
    "transport",
    "http",
    "plugins",
    "ingest",
    "aggregations",
    "indices",
    "remote_cluster_server",
];

/// A node as the info lists it.
struct Listed {
    id: String,
    flight: String,
    http: Option<String>,
    roles: Vec<Role>,
}

pub async fn all(State(node): State<Arc<Node>>) -> ApiResult<Response> {
    answer(&node, "_all", "_all")
}

/// `/_nodes/{x}`: metrics when every name in `x` is one, else nodes.
pub async fn nodes_or_metrics(State(node): State<Arc<Node>>, Path(x): Path<String>) -> ApiResult<Response> {
    if matches!(x.as_str(), "stats" | "usage" | "hot_threads") {
        return Err(ApiError::bad_request(format!(
            "[_nodes/{x}] is not supported: node metrics are served at /metrics, in Prometheus' format"
        )));
    }
    match x.split(',').all(|m| METRICS.contains(&m)) {
        true => answer(&node, "_all", &x),
        false => answer(&node, &x, "_all"),
    }
}

pub async fn of(
    State(node): State<Arc<Node>>,
    Path((nodes, metrics)): Path<(String, String)>,
) -> ApiResult<Response> {
    answer(&node, &nodes, &metrics)
}

fn answer(node: &Node, wanted: &str, metrics: &str) -> ApiResult<Response> {
    let metrics: Vec<&str> = metrics.split(',').collect();
    if let Some(unknown) = metrics.iter().find(|m| !METRICS.contains(m)) {
        return Err(ApiError::bad_request(format!(
            "request [/_nodes] contains unrecognized metric: [{unknown}]"
        )));
    }
    let http = metrics.iter().any(|m| *m == "_all" || *m == "http");
    let (listed, local, leader) = members(node);
    let wanted: Vec<&str> = wanted.split(',').collect();
    let chosen = |n: &Listed| {
        wanted.iter().any(|w| match *w {
            "_all" => true,
            "_local" => n.id == local,
            "_master" => leader.as_deref() == Some(n.id.as_str()),
            id => n.id == id,
        })
    };
    let mut nodes = Map::new();
    for n in listed.iter().filter(|n| chosen(n)) {
        nodes.insert(n.id.clone(), node_json(n, http));
    }
    Ok(ok_json(&json!({
        "_nodes": {"total": nodes.len(), "successful": nodes.len(), "failed": 0},
        "cluster_name": node.cluster_name,
        "nodes": nodes,
    })))
}

/// The nodes that are up, the local node's id and the leader's.
fn members(node: &Node) -> (Vec<Listed>, String, Option<String>) {
    match &node.cluster {
        None => (
            vec![Listed {
                id: node.node_id.clone(),
                flight: node.flight_addr.to_string(),
                http: Some(node.http_addr.to_string()),
                roles: node.roles.clone(),
            }],
            node.node_id.clone(),
            Some(node.node_id.clone()),
        ),
        Some(cluster) => {
            let listed = cluster
                .nodes()
                .into_iter()
                .filter(|(_, up, _)| *up)
                .map(|(info, _, _)| Listed {
                    http: cluster.http_of(&info),
                    id: info.id,
                    flight: info.flight,
                    roles: info.roles,
                })
                .collect();
            (listed, node.node_id.clone(), cluster.leader())
        }
    }
}

fn node_json(n: &Listed, with_http: bool) -> Value {
    let host = n.flight.rsplit_once(':').map_or(n.flight.as_str(), |(h, _)| h);
    let mut roles: Vec<&str> = Vec::new();
    if n.roles.contains(&Role::Data) {
        roles.push("data");
    }
    if n.roles.contains(&Role::Master) {
        roles.push("master");
    }
    let mut out = json!({
        "name": n.id,
        "transport_address": n.flight,
        "host": host,
        "ip": host,
        "version": COMPAT_VERSION,
        "build_flavor": "default",
        "build_type": "quidditch",
        "build_hash": env!("CARGO_PKG_VERSION"),
        "roles": roles,
        "attributes": {},
    });
    if let Some(http) = n
        .http
        .as_ref()
        .filter(|_| with_http && n.roles.contains(&Role::Coordinator))
    {
        out["http"] = json!({
            "bound_address": [http],
            "publish_address": http,
            "max_content_length_in_bytes": MAX_BODY,
        });
    }
    out
}
