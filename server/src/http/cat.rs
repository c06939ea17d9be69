//! `GET /_cat/indices` and `GET|POST /_cat/count`: text (with `?v` for
//! headers) or `?format=json`, and the table rendering every `_cat`
//! endpoint shares.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use quidditch_index::Index;
use quidditch_index::indices::FailedIndex;
use serde_json::{Value, json};

use super::{ApiResult, Params, ok_json};
use crate::node::Node;

const COLUMNS: [&str; 10] = [
    "health",
    "status",
    "index",
    "uuid",
    "pri",
    "rep",
    "docs.count",
    "docs.deleted",
    "store.size",
    "pri.store.size",
];

pub async fn indices(State(node): State<Arc<Node>>, Query(params): Query<Params>) -> ApiResult<Response> {
    render(&node, node.indices.resolve_with_failed("_all")?, &params).await
}

pub async fn indices_of(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult<Response> {
    render(&node, node.indices.resolve_with_failed(&name)?, &params).await
}

/// `_cat/count`: the documents of every index, as `_count` counts them
/// (the body may hold a `query`, and `?q=` a query string, as `_count`'s).
pub async fn count(
    State(node): State<Arc<Node>>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    count_rows(&node, "_all", &params, &body).await
}

/// `_cat/count/{target}`.
pub async fn count_of(
    State(node): State<Arc<Node>>,
    Path(target): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    count_rows(&node, &target, &params, &body).await
}

async fn count_rows(node: &Node, target: &str, params: &Params, body: &[u8]) -> ApiResult<Response> {
    let answer = super::search::counted(node, target, params, body).await?;
    let mut row = epoch_columns();
    row.push(answer["count"].to_string());
    render_table(&["epoch", "timestamp", "count"], vec![row], params)
}

/// The `epoch` and `timestamp` columns of a `_cat` row taken now.
pub(super) fn epoch_columns() -> Vec<String> {
    let now = chrono::Utc::now();
    vec![now.timestamp().to_string(), now.format("%H:%M:%S").to_string()]
}

/// Documents per shard on the other nodes of a cluster.
pub(super) type RemoteDocs = std::collections::HashMap<(String, u32), u64>;

/// Searchable documents of shard `n`: on this node, or as its node last
/// answered (`None` when it did not).
pub(super) fn shard_docs(index: &Index, name: &str, n: u32, remote: &RemoteDocs) -> Option<u64> {
    match index.shard(n) {
        Some(shard) => Some(shard.num_docs()),
        None => remote.get(&(name.to_string(), n)).copied(),
    }
}

fn row(node: &Node, index: &Arc<Index>, remote: &RemoteDocs) -> Vec<String> {
    let meta = index.meta();
    let size = dir_size(index.dir());
    let health = super::cluster::ShardCounts::of(node, std::slice::from_ref(index)).status();
    vec![
        health.to_string(),
        "open".to_string(),
        meta.name,
        meta.uuid,
        meta.settings.number_of_shards.to_string(),
        meta.settings.number_of_replicas.to_string(),
        docs_count(index, remote).to_string(),
        "0".to_string(),
        human_size(size),
        human_size(size),
    ]
}

/// Searchable documents of an index: its shards on this node, and on the
/// others as they last answered.
fn docs_count(index: &Index, remote: &RemoteDocs) -> u64 {
    let name = index.name();
    (0..index.num_shards())
        .map(|n| shard_docs(index, &name, n, remote).unwrap_or(0))
        .sum()
}

/// A row of an index that did not open: red, without document counts (as
/// Elasticsearch shows an index whose primaries are unassigned).
fn failed_row(index: &FailedIndex) -> Vec<String> {
    let size = human_size(dir_size(&index.dir));
    let (uuid, pri, rep) = match &index.meta {
        Some(meta) => (
            meta.uuid.clone(),
            meta.settings.number_of_shards.to_string(),
            meta.settings.number_of_replicas.to_string(),
        ),
        None => Default::default(),
    };
    vec![
        "red".to_string(),
        "open".to_string(),
        index.name.clone(),
        uuid,
        pri,
        rep,
        String::new(),
        String::new(),
        size.clone(),
        size,
    ]
}

async fn render(
    node: &Node,
    (indices, failed): (Vec<Arc<Index>>, Vec<FailedIndex>),
    params: &Params,
) -> ApiResult<Response> {
    let remote = match &node.cluster {
        Some(cluster) => cluster.shard_docs().await,
        None => RemoteDocs::new(),
    };
    let mut rows: Vec<Vec<String>> = indices.iter().map(|i| row(node, i, &remote)).collect();
    rows.extend(failed.iter().map(failed_row));
    // By the `index` column.
    rows.sort_by(|a, b| a[2].cmp(&b[2]));
    render_table(&COLUMNS, rows, params)
}

/// A `_cat` answer: aligned text (`?v` adds the header line) or `?format=json`.
pub fn render_table(columns: &[&str], rows: Vec<Vec<String>>, params: &Params) -> ApiResult<Response> {
    if params.get("format").map(String::as_str) == Some("json") {
        let out: Vec<Value> = rows
            .iter()
            .map(|r| {
                Value::Object(
                    columns
                        .iter()
                        .zip(r)
                        .map(|(k, v)| (k.to_string(), json!(v)))
                        .collect(),
                )
            })
            .collect();
        return Ok(ok_json(&Value::Array(out)));
    }
    let mut table: Vec<Vec<String>> = Vec::new();
    if params.contains_key("v") {
        table.push(columns.iter().map(|c| c.to_string()).collect());
    }
    table.extend(rows);
    let widths: Vec<usize> = (0..columns.len())
        .map(|c| table.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for r in &table {
        let cells: Vec<String> = r.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
        text.push_str(cells.join(" ").trim_end());
        text.push('\n');
    }
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    resp.headers_mut()
        .insert("x-elastic-product", HeaderValue::from_static("Elasticsearch"));
    Ok(resp)
}

fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub(super) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["b", "kb", "mb", "gb", "tb"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}b")
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}
