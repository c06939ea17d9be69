//! The search endpoints: `_search`, `_count` and `_msearch`, over one index,
//! several (`a,b`), wildcards (`logs-*`) or all.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::{Map, Value};

use super::{ApiError, ApiResult, Params, ok_json};
use crate::node::Node;

/// A search body: JSON, or Elasticsearch's error for what is not.
pub(super) fn search_body(body: &[u8]) -> ApiResult<Option<Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body).map(Some).map_err(|e| {
        ApiError::from(quidditch_planner::Error::x_content(format!(
            "[{}:{}] {e}",
            e.line(),
            e.column()
        )))
    })
}

/// Elasticsearch's `filter_path`: keeps only the parts of a response the
/// comma-separated dotted paths name (`*` matches one level, `**` any).
pub fn filter_path(value: &Value, spec: &str) -> Value {
    let patterns: Vec<Vec<&str>> = spec
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.split('.').collect())
        .collect();
    let refs: Vec<&[&str]> = patterns.iter().map(Vec::as_slice).collect();
    keep(value, &refs).unwrap_or_else(|| Value::Object(Map::new()))
}

fn segment_matches(pattern: &str, key: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == key,
        Some((prefix, suffix)) => {
            key.len() >= prefix.len() + suffix.len() && key.starts_with(prefix) && key.ends_with(suffix)
        }
    }
}

fn keep(value: &Value, patterns: &[&[&str]]) -> Option<Value> {
    if patterns.iter().any(|p| p.is_empty()) {
        return Some(value.clone());
    }
    match value {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let mut next: Vec<&[&str]> = Vec::new();
                for p in patterns {
                    if p[0] == "**" {
                        next.push(p);
                        next.push(&p[1..]);
                        if p.len() > 1 && segment_matches(p[1], k) {
                            next.push(&p[2..]);
                        }
                    } else if segment_matches(p[0], k) {
                        next.push(&p[1..]);
                    }
                }
                if !next.is_empty()
                    && let Some(kept) = keep(v, &next)
                {
                    out.insert(k.clone(), kept);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(items) => {
            let kept: Vec<Value> = items.iter().filter_map(|v| keep(v, patterns)).collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        _ => None,
    }
}

/// Counts a search's or count's answer in the node's metrics.
fn record(node: &Node, out: quidditch_planner::Result<Value>) -> quidditch_planner::Result<Value> {
    match &out {
        Ok(answer) => node.search_metrics.answered(answer),
        Err(_) => node.search_metrics.failed(),
    }
    out
}

/// How long the search without the slow nodes may take.
const RERUN_BUDGET: std::time::Duration = std::time::Duration::from_millis(600);

async fn run_search(node: &Node, target: &str, params: &Params, body: &[u8]) -> ApiResult<Response> {
    if params.contains_key("scroll") {
        return super::scroll::start(node, target, params, body).await;
    }
    let body = search_body(body)?;
    let body = body.as_ref();
    let search = |ctx: datafusion::prelude::SessionContext| async move {
        quidditch_planner::search(&ctx, node.engine.indices(), target, body, params).await
    };
    let mut out = search(node.engine.session()?).await;
    if node.retry(&out).await {
        out = search(node.engine.session()?).await;
    }
    // The request's timeout passed: a node that does not answer a ping
    // at once is left out, and the search runs again over the others
    // (their copies of its shards, or without its shards), in well under
    // a second more. The answer still says it timed out.
    if let (Ok(answer), Some(cluster)) = (&out, &node.cluster)
        && answer["timed_out"] == true
        && cluster.blame_slow(crate::node::SLOW_NODE_PING).await > 0
        && let Ok(Ok(mut again)) = tokio::time::timeout(RERUN_BUDGET, search(node.engine.session()?)).await
    {
        again["timed_out"] = Value::Bool(true);
        out = Ok(again);
    }
    Ok(ok_json(&record(node, out)?))
}

pub async fn search(
    State(node): State<Arc<Node>>,
    Path(index): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    run_search(&node, &index, &params, &body).await
}

pub async fn search_all(
    State(node): State<Arc<Node>>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    run_search(&node, "_all", &params, &body).await
}

async fn run_count(node: &Node, target: &str, params: &Params, body: &[u8]) -> ApiResult<Response> {
    Ok(ok_json(&counted(node, target, params, body).await?))
}

/// The `_count` answer of a request (also read by `_cat/count`).
pub(super) async fn counted(node: &Node, target: &str, params: &Params, body: &[u8]) -> ApiResult<Value> {
    let body = search_body(body)?;
    let body = body.as_ref();
    let count = |ctx: datafusion::prelude::SessionContext| async move {
        quidditch_planner::count(&ctx, node.engine.indices(), target, body, params).await
    };
    let mut out = count(node.engine.session()?).await;
    if node.retry(&out).await {
        out = count(node.engine.session()?).await;
    }
    Ok(record(node, out)?)
}

pub async fn count(
    State(node): State<Arc<Node>>,
    Path(index): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    run_count(&node, &index, &params, &body).await
}

pub async fn count_all(
    State(node): State<Arc<Node>>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    run_count(&node, "_all", &params, &body).await
}

async fn run_validate(node: &Node, target: &str, params: &Params, body: &[u8]) -> ApiResult<Response> {
    let body = search_body(body)?;
    let ctx = node.engine.session()?;
    let out = quidditch_planner::validate(&ctx, node.engine.indices(), target, body.as_ref(), params).await?;
    Ok(ok_json(&out))
}

pub async fn validate(
    State(node): State<Arc<Node>>,
    Path(index): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    run_validate(&node, &index, &params, &body).await
}

pub async fn validate_all(
    State(node): State<Arc<Node>>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    run_validate(&node, "_all", &params, &body).await
}

/// NDJSON lines of an `_msearch` body.
fn ndjson(body: &[u8]) -> ApiResult<Vec<Value>> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("request body is not UTF-8"))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                ApiError::from(quidditch_planner::Error::x_content(format!(
                    "[{}:{}] {e}",
                    i + 1,
                    e.column()
                )))
            })
        })
        .collect()
}

async fn run_msearch(node: &Node, target: Option<&str>, body: &[u8]) -> ApiResult<Response> {
    let lines = ndjson(body)?;
    let ctx = node.engine.session()?;
    let out = quidditch_planner::msearch(&ctx, node.engine.indices(), target, &lines).await?;
    for answer in out["responses"].as_array().into_iter().flatten() {
        if answer.get("error").is_some() {
            node.search_metrics.failed();
        } else {
            node.search_metrics.answered(answer);
        }
    }
    Ok(ok_json(&out))
}

pub async fn msearch(State(node): State<Arc<Node>>, body: Bytes) -> ApiResult<Response> {
    run_msearch(&node, None, &body).await
}

pub async fn msearch_index(
    State(node): State<Arc<Node>>,
    Path(index): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    run_msearch(&node, Some(&index), &body).await
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::filter_path;

    #[test]
    fn filter_path_keeps_named_parts() {
        let v = json!({"took": 3, "hits": {"total": {"value": 2}, "hits": [{"_id": "1", "_score": 1.0}, {"_id": "2"}]},
                       "aggregations": {"a": {"value": 1}}});
        assert_eq!(
            filter_path(&v, "hits.hits._id,aggregations"),
            json!({"hits": {"hits": [{"_id": "1"}, {"_id": "2"}]}, "aggregations": {"a": {"value": 1}}})
        );
        assert_eq!(
            filter_path(&v, "**.value"),
            json!({"hits": {"total": {"value": 2}}, "aggregations": {"a": {"value": 1}}})
        );
        assert_eq!(
            filter_path(&v, "hits.t*"),
            json!({"hits": {"total": {"value": 2}}})
        );
        assert_eq!(filter_path(&v, "nothing"), json!({}));
    }

    /// A bulk response filtered as it is written is the whole response
    /// filtered, for every form of the filter (an action whose first item
    /// failed, a no-op update, items dropped whole).
    #[test]
    fn a_bulk_response_filtered_as_written_is_the_whole_one_filtered() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let indices = quidditch_index::Indices::open(dir.path())?;
        indices.create(
            "shop",
            Some(&json!({"mappings": {"properties": {"n": {"type": "long"}}}})),
        )?;
        let body = [
            r#"{"create":{"_id":"1"}}"#,
            r#"{"n":"x"}"#,
            r#"{"create":{"_id":"2"}}"#,
            r#"{"n":2}"#,
            r#"{"index":{"_id":"3"}}"#,
            r#"{"n":3}"#,
            r#"{"update":{"_id":"3"}}"#,
            r#"{"doc":{"n":3}}"#,
            r#"{"update":{"_id":"3"}}"#,
            r#"{"doc":{"n":4}}"#,
            r#"{"delete":{"_id":"9"}}"#,
            r#"{"index":{"_id":"4"}}"#,
            r#"{"n":"y"}"#,
        ]
        .join("\n");
        let items = quidditch_index::bulk::parse_bulk(&body, Some("shop"), false)?;
        let response =
            quidditch_index::bulk::execute_bulk(&indices, items, quidditch_index::RefreshPolicy::None)?
                .response;
        let whole = serde_json::to_value(&response)?;
        let results: Vec<&Value> = whole["items"].as_array().into_iter().flatten().collect();
        assert_eq!(results.len(), 7);
        assert_eq!(results[3]["update"]["result"], "noop");
        for spec in [
            "items",
            "**",
            "**.status",
            "items.index._id",
            "items.*.error.type",
            "errors",
            "took,items.update.result",
            "items.*._shards.total,items.create",
            "items.*._s*",
            "nothing",
            "",
        ] {
            let written = response.to_filtered_json(&|v| filter_path(v, spec))?;
            let written: Value = serde_json::from_slice(&written)?;
            assert_eq!(written, filter_path(&whole, spec), "{spec}");
        }
        Ok(())
    }
}
