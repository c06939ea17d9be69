//! Document APIs: index, create, get, delete, update, and `_bulk`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quidditch_index::bulk::{BulkOutcome, execute_bulk, parse_bulk, parse_update, result_status, write_body};
use quidditch_index::index::{DocWrite, Index};
use quidditch_index::{Error, RefreshPolicy};
use serde_json::{Value, json};

use super::{ApiError, ApiResult, Params, es_json, ok_json, parse_body};
use crate::node::Node;

fn refresh_policy(params: &Params) -> ApiResult<RefreshPolicy> {
    Ok(RefreshPolicy::parse(params.get("refresh").map(String::as_str))?)
}

/// Makes the touched shards searchable as `?refresh=` asks.
async fn apply_refresh(
    policy: RefreshPolicy,
    touched: Vec<(Arc<Index>, HashMap<u32, u64>)>,
) -> ApiResult<()> {
    match policy {
        RefreshPolicy::None => Ok(()),
        RefreshPolicy::Immediate => {
            tokio::task::spawn_blocking(move || {
                for (index, shards) in touched {
                    for shard in shards.keys() {
                        index.shards()[*shard as usize].refresh()?;
                    }
                }
                Ok::<_, Error>(())
            })
            .await??;
            Ok(())
        }
        RefreshPolicy::WaitFor => {
            for (index, shards) in touched {
                for (shard, seq) in shards {
                    let shard = Arc::clone(&index.shards()[shard as usize]);
                    if index.settings().refresh_interval.is_none() {
                        tokio::task::spawn_blocking(move || shard.refresh()).await??;
                    } else {
                        shard.wait_visible(seq).await;
                    }
                }
            }
            Ok(())
        }
    }
}

async fn write_one(node: &Node, index: &str, write: DocWrite, params: &Params) -> ApiResult<Response> {
    let policy = refresh_policy(params)?;
    let indices = Arc::clone(&node.indices);
    let is_delete = matches!(write, DocWrite::Delete { .. });
    let name = index.to_string();
    let (target, batch) = tokio::task::spawn_blocking(move || {
        let target = if is_delete {
            indices.get(&name)?
        } else {
            indices.get_or_create(&name)?
        };
        let batch = target.write(vec![write])?;
        Ok::<_, Error>((target, batch))
    })
    .await??;
    let (_, result) = batch
        .items
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("write produced no result"))?;
    let result = result?;
    apply_refresh(policy, vec![(target, batch.touched)]).await?;
    let status = StatusCode::from_u16(result_status(&result)).unwrap_or(StatusCode::OK);
    let mut body = write_body(index, &result);
    if policy == RefreshPolicy::WaitFor || policy == RefreshPolicy::Immediate {
        body.insert("forced_refresh".into(), json!(policy == RefreshPolicy::Immediate));
    }
    Ok(es_json(status, &Value::Object(body)))
}

fn source_body(body: &[u8]) -> ApiResult<Value> {
    match parse_body(body)? {
        Some(v @ Value::Object(_)) => Ok(v),
        _ => Err(ApiError::new(
            400,
            "parse_exception",
            "request body is required and must be a JSON object",
        )),
    }
}

/// Indexes the request body as one document.
async fn index_source(
    node: &Node,
    index: &str,
    id: Option<String>,
    create: bool,
    params: &Params,
    body: &[u8],
) -> ApiResult<Response> {
    let write = DocWrite::Index {
        id,
        source: source_body(body)?,
        raw_source: raw_text(body),
        create,
    };
    write_one(node, index, write, params).await
}

/// The request body as sent, to keep `_source` verbatim.
fn raw_text(body: &[u8]) -> Option<String> {
    std::str::from_utf8(body).ok().map(|s| s.trim().to_string())
}

pub async fn index_doc(
    State(node): State<Arc<Node>>,
    Path((index, id)): Path<(String, String)>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    let create = match params.get("op_type").map(String::as_str) {
        None | Some("index") => false,
        Some("create") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "opType must be 'create' or 'index', found: [{other}]"
            )));
        }
    };
    index_source(&node, &index, Some(id), create, &params, &body).await
}

pub async fn create_doc(
    State(node): State<Arc<Node>>,
    Path((index, id)): Path<(String, String)>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    index_source(&node, &index, Some(id), true, &params, &body).await
}

pub async fn index_auto_id(
    State(node): State<Arc<Node>>,
    Path(index): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    index_source(&node, &index, None, true, &params, &body).await
}

pub async fn update(
    State(node): State<Arc<Node>>,
    Path((index, id)): Path<(String, String)>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    let body = source_body(&body)?;
    let write = parse_update(id, &body)?;
    write_one(&node, &index, write, &params).await
}

pub async fn delete(
    State(node): State<Arc<Node>>,
    Path((index, id)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> ApiResult<Response> {
    write_one(&node, &index, DocWrite::Delete { id }, &params).await
}

pub async fn get(
    State(node): State<Arc<Node>>,
    Path((index, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let target = node.indices.get(&index)?;
    let id2 = id.clone();
    let doc = tokio::task::spawn_blocking(move || target.get(&id2)).await??;
    Ok(match doc {
        Some(doc) => {
            let source: Value = serde_json::from_str(&doc.source).map_err(ApiError::internal)?;
            ok_json(&json!({
                "_index": index, "_id": id, "_version": doc.version, "_seq_no": doc.seq_no,
                "_primary_term": 1, "found": true, "_source": source,
            }))
        }
        None => es_json(
            StatusCode::NOT_FOUND,
            &json!({"_index": index, "_id": id, "found": false}),
        ),
    })
}

pub async fn head(
    State(node): State<Arc<Node>>,
    Path((index, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let target = node.indices.get(&index)?;
    let doc = tokio::task::spawn_blocking(move || target.get(&id)).await??;
    Ok(if doc.is_some() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
    .into_response())
}

async fn run_bulk(
    node: &Node,
    default_index: Option<String>,
    params: &Params,
    body: &[u8],
) -> ApiResult<Response> {
    let policy = refresh_policy(params)?;
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("bulk body is not UTF-8"))?;
    let items = parse_bulk(text, default_index.as_deref())?;
    let indices = Arc::clone(&node.indices);
    let BulkOutcome { response, touched } =
        tokio::task::spawn_blocking(move || execute_bulk(&indices, items)).await??;
    apply_refresh(policy, touched).await?;
    Ok(ok_json(&response))
}

pub async fn bulk(
    State(node): State<Arc<Node>>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    run_bulk(&node, None, &params, &body).await
}

pub async fn bulk_index(
    State(node): State<Arc<Node>>,
    Path(index): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    run_bulk(&node, Some(index), &params, &body).await
}
