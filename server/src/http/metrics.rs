//! `GET /metrics`: the node's counters in Prometheus' text format.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::node::Node;

/// The path of the metrics, which an index of that name shares for every
/// method but `GET`.
pub const NAME: &str = "metrics";

/// What the node's searches did since it started.
#[derive(Debug, Default)]
pub struct SearchMetrics {
    searches: AtomicU64,
    errors: AtomicU64,
    partial: AtomicU64,
    failed_shards: AtomicU64,
}

impl SearchMetrics {
    /// Records the answer of a search or count (`_shards` says what failed).
    pub fn answered(&self, out: &Value) {
        self.searches.fetch_add(1, Ordering::Relaxed);
        let failed = out["_shards"]["failed"].as_u64().unwrap_or(0);
        if failed > 0 {
            self.partial.fetch_add(1, Ordering::Relaxed);
            self.failed_shards.fetch_add(failed, Ordering::Relaxed);
        }
    }

    /// Records a search that failed as a whole.
    pub fn failed(&self) {
        self.searches.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

/// `GET /metrics`.
pub async fn metrics(State(node): State<Arc<Node>>) -> Response {
    let mut out = String::new();
    let m = &node.search_metrics;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    metric(
        &mut out,
        "quidditch_searches_total",
        "counter",
        "Searches and counts run.",
        get(&m.searches),
    );
    metric(
        &mut out,
        "quidditch_search_errors_total",
        "counter",
        "Searches and counts that failed as a whole.",
        get(&m.errors),
    );
    metric(
        &mut out,
        "quidditch_partial_searches_total",
        "counter",
        "Searches and counts answered without some shards.",
        get(&m.partial),
    );
    metric(
        &mut out,
        "quidditch_failed_shards_total",
        "counter",
        "Shards left out of searches and counts because their node could not serve them.",
        get(&m.failed_shards),
    );
    metric(
        &mut out,
        "quidditch_indices",
        "gauge",
        "Indices the node knows.",
        node.indices.list().len() as u64,
    );
    metric(
        &mut out,
        "quidditch_uptime_seconds",
        "gauge",
        "Seconds since the node started.",
        node.started.elapsed().as_secs(),
    );
    if let Some(cluster) = &node.cluster {
        let nodes = cluster.nodes();
        metric(
            &mut out,
            "quidditch_cluster_nodes",
            "gauge",
            "Nodes of the cluster that answer, this one included.",
            nodes.iter().filter(|(_, up, _)| *up).count() as u64,
        );
        metric(
            &mut out,
            "quidditch_node_joins_total",
            "counter",
            "Times another node began to answer (joined, or came back).",
            cluster.joins(),
        );
        metric(
            &mut out,
            "quidditch_node_leaves_total",
            "counter",
            "Times a node that answered stopped answering or left the cluster.",
            cluster.leaves(),
        );
        metric(
            &mut out,
            "quidditch_retries_total",
            "counter",
            "Requests run again without a node that failed them.",
            cluster.retries(),
        );
        if cluster.etcd.is_some() {
            let leads = cluster.leader().as_deref() == Some(node.node_id.as_str());
            metric(
                &mut out,
                "quidditch_leader",
                "gauge",
                "1 when this node is the elected leader.",
                u64::from(leads),
            );
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
