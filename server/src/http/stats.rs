//! `_stats`: documents, store size, indexing and search activity and
//! segments of indices, summed over their primaries and over every started
//! copy, in Elasticsearch's shape. Activity counts from when each copy
//! was opened on its node.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use quidditch_index::activity::ActivityStats;
use serde_json::{Map, Value, json};

use super::cluster::{ShardCounts, started_copies};
use super::{ApiError, ApiResult, Params, ok_json};
use crate::node::Node;

/// The metrics `_stats` reports.
const METRICS: [&str; 5] = ["docs", "store", "indexing", "search", "segments"];

/// Sums over some shard copies.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sums {
    docs: u64,
    deleted: u64,
    bytes: u64,
    segments: u64,
    activity: ActivityStats,
}

impl Sums {
    fn add(&mut self, other: Sums) {
        self.docs += other.docs;
        self.deleted += other.deleted;
        self.bytes += other.bytes;
        self.segments += other.segments;
        self.activity.add(&other.activity);
    }

    fn render(&self, metrics: &[&str]) -> Value {
        let a = &self.activity;
        let mut out = Map::new();
        for metric in metrics {
            let section = match *metric {
                "docs" => json!({"count": self.docs, "deleted": self.deleted}),
                "store" => json!({"size_in_bytes": self.bytes, "total_data_set_size_in_bytes": self.bytes,
                                  "reserved_in_bytes": 0}),
                "indexing" => json!({
                    "index_total": a.index_total, "index_time_in_millis": a.index_time_ms,
                    "delete_total": a.delete_total, "delete_time_in_millis": a.delete_time_ms,
                }),
                "search" => json!({
                    "query_total": a.query_total, "query_time_in_millis": a.query_time_ms,
                    "fetch_total": a.fetch_total, "fetch_time_in_millis": a.fetch_time_ms,
                }),
                _ => json!({"count": self.segments}),
            };
            out.insert((*metric).to_string(), section);
        }
        Value::Object(out)
    }
}

/// The metrics a `/_stats/{metric}` path names (`_all` for every one).
fn metrics(path: &str, names: Option<&str>) -> ApiResult<Vec<&'static str>> {
    let Some(names) = names else {
        return Ok(METRICS.to_vec());
    };
    let mut out = Vec::new();
    for name in names.split(',').map(str::trim) {
        if name == "_all" {
            return Ok(METRICS.to_vec());
        }
        match METRICS.iter().find(|m| **m == name) {
            Some(m) if !out.contains(m) => out.push(*m),
            Some(_) => {}
            None => {
                return Err(ApiError::new(
                    400,
                    "illegal_argument_exception",
                    format!(
                        "request [{path}] asks for metric [{name}]: this node keeps [{}] only",
                        METRICS.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// `GET /_stats`.
pub async fn all(State(node): State<Arc<Node>>, Query(params): Query<Params>) -> ApiResult<Response> {
    respond(&node, "_all", None, &params).await
}

/// `GET /_stats/{metric}`.
pub async fn all_metric(
    State(node): State<Arc<Node>>,
    Path(metric): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult<Response> {
    respond(&node, "_all", Some(&metric), &params).await
}

/// `GET /{index}/_stats`.
pub async fn of(
    State(node): State<Arc<Node>>,
    Path(target): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult<Response> {
    respond(&node, &target, None, &params).await
}

/// `GET /{index}/_stats/{metric}`.
pub async fn of_metric(
    State(node): State<Arc<Node>>,
    Path((target, metric)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> ApiResult<Response> {
    respond(&node, &target, Some(&metric), &params).await
}

async fn respond(node: &Node, target: &str, metric: Option<&str>, params: &Params) -> ApiResult<Response> {
    let prefix = if target == "_all" {
        String::new()
    } else {
        format!("/{target}")
    };
    let path = match metric {
        Some(m) => format!("{prefix}/_stats/{m}"),
        None => format!("{prefix}/_stats"),
    };
    let metrics = metrics(&path, metric)?;
    let level = params.get("level").map_or("indices", String::as_str);
    if !matches!(level, "cluster" | "indices" | "shards") {
        return Err(ApiError::bad_request(format!(
            "level parameter must be one of [cluster] or [indices] or [shards] but was [{level}]"
        )));
    }
    let indices = node.indices.resolve(target)?;
    let copies = started_copies(node, &indices).await?;
    // Index name -> (primaries, every copy), and its copies by shard.
    let mut by_index: BTreeMap<String, (Sums, Sums)> = BTreeMap::new();
    let mut shards: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for copy in &copies {
        let mut sums = Sums {
            activity: copy.activity,
            ..Sums::default()
        };
        for s in &copy.segments {
            sums.add(Sums {
                docs: s.docs,
                deleted: s.deleted,
                bytes: s.bytes,
                segments: 1,
                activity: ActivityStats::default(),
            });
        }
        let entry = by_index.entry(copy.index.clone()).or_default();
        if copy.primary {
            entry.0.add(sums);
        }
        entry.1.add(sums);
        let mut shard = sums.render(&metrics);
        shard["routing"] = json!({"state": "STARTED", "primary": copy.primary, "node": copy.node});
        let list = shards.entry(copy.index.clone()).or_default();
        if let Value::Array(copies) = list.entry(copy.shard.to_string()).or_insert_with(|| json!([])) {
            copies.push(shard);
        }
    }
    let (mut primaries, mut total) = (Sums::default(), Sums::default());
    let mut per_index = Map::new();
    for index in &indices {
        let name = index.name();
        let (p, t) = by_index.get(&name).copied().unwrap_or_default();
        primaries.add(p);
        total.add(t);
        let mut stats = json!({
            "uuid": index.uuid(),
            "health": ShardCounts::of(node, std::slice::from_ref(index)).status(),
            "status": "open",
            "primaries": p.render(&metrics),
            "total": t.render(&metrics),
        });
        if level == "shards" {
            stats["shards"] = Value::Object(shards.remove(&name).unwrap_or_default());
        }
        per_index.insert(name, stats);
    }
    // Copies that are started but whose node did not answer have failed.
    let (active, total_copies) = ShardCounts::of(node, &indices).copies();
    let answered = copies.len() as u64;
    let mut out = json!({
        "_shards": {"total": total_copies, "successful": answered, "failed": active.saturating_sub(answered)},
        "_all": {"primaries": primaries.render(&metrics), "total": total.render(&metrics)},
    });
    if level != "cluster" {
        out["indices"] = Value::Object(per_index);
    }
    Ok(ok_json(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_paths_are_checked() {
        assert_eq!(metrics("/_stats", None).ok(), Some(METRICS.to_vec()));
        assert_eq!(
            metrics("/_stats/x", Some("store,docs,store")).ok(),
            Some(vec!["store", "docs"])
        );
        assert_eq!(metrics("/_stats/_all", Some("_all")).ok(), Some(METRICS.to_vec()));
        assert!(metrics("/_stats/fielddata", Some("fielddata")).is_err());
    }

    #[test]
    fn sums_render_the_metrics_asked_for() {
        let s = Sums {
            docs: 3,
            deleted: 1,
            bytes: 10,
            segments: 2,
            activity: ActivityStats::default(),
        };
        assert_eq!(
            s.render(&["docs", "segments"]),
            json!({"docs": {"count": 3, "deleted": 1}, "segments": {"count": 2}})
        );
    }
}
