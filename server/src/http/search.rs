//! The search endpoints: `_search`, `_count` and `_msearch`, over one index,
//! several (`a,b`), wildcards (`logs-*`) or all.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::Value;

use super::{ApiError, ApiResult, Params, ok_json};
use crate::node::Node;

/// A search body: JSON, or Elasticsearch's error for what is not.
fn search_body(body: &[u8]) -> ApiResult<Option<Value>> {
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

async fn run_search(node: &Node, target: &str, params: &Params, body: &[u8]) -> ApiResult<Response> {
    let body = search_body(body)?;
    let ctx = node.engine.session()?;
    let out = quidditch_planner::search(&ctx, node.engine.indices(), target, body.as_ref(), params).await?;
    Ok(ok_json(&out))
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
    let body = search_body(body)?;
    let ctx = node.engine.session()?;
    let out = quidditch_planner::count(&ctx, node.engine.indices(), target, body.as_ref(), params).await?;
    Ok(ok_json(&out))
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
