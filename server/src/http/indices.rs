//! Index administration: create, delete, exists, get, mapping, refresh
//! (which is also `_flush`: a refresh commits), force merge.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quidditch_index::indices::wildcard_match;
use quidditch_index::merge::ForceMerge;
use serde_json::{Map, Value, json};

use super::{ApiError, ApiResult, Params, bool_param, ok_json, parse_body};
use crate::node::Node;

pub async fn create(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let body = parse_body(&body)?;
    let indices = Arc::clone(&node.indices);
    let n = name.clone();
    tokio::task::spawn_blocking(move || indices.create(&n, body.as_ref())).await??;
    Ok(ok_json(
        &json!({"acknowledged": true, "shards_acknowledged": true, "index": name}),
    ))
}

pub async fn delete(State(node): State<Arc<Node>>, Path(name): Path<String>) -> ApiResult<Response> {
    let indices = Arc::clone(&node.indices);
    tokio::task::spawn_blocking(move || {
        for name in indices.resolve_names(&name)? {
            indices.delete(&name)?;
        }
        Ok::<_, quidditch_index::Error>(())
    })
    .await??;
    Ok(ok_json(&json!({"acknowledged": true})))
}

pub async fn exists(State(node): State<Arc<Node>>, Path(name): Path<String>) -> Response {
    let found = node.indices.resolve_names(&name).is_ok_and(|v| !v.is_empty());
    if found {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
    .into_response()
}

pub async fn get(State(node): State<Arc<Node>>, Path(name): Path<String>) -> ApiResult<Response> {
    let mut out = Map::new();
    for index in node.indices.resolve(&name)? {
        let meta = index.meta();
        out.insert(
            meta.name.clone(),
            json!({
                "aliases": {},
                "mappings": meta.mapping.to_es(),
                "settings": meta.settings.to_es(&meta.name, &meta.uuid, meta.creation_date),
            }),
        );
    }
    Ok(ok_json(&Value::Object(out)))
}

pub async fn mapping(State(node): State<Arc<Node>>, Path(name): Path<String>) -> ApiResult<Response> {
    let mut out = Map::new();
    for index in node.indices.resolve(&name)? {
        out.insert(index.name(), json!({"mappings": index.mapping().to_es()}));
    }
    Ok(ok_json(&Value::Object(out)))
}

/// `GET /_mapping`: every index's mapping.
pub async fn mapping_all(node: State<Arc<Node>>) -> ApiResult<Response> {
    mapping(node, Path("_all".to_string())).await
}

/// `GET /{index}/_mapping/field/{fields}`: the mappings of some fields
/// (names or `*` patterns, comma-separated), each under its full path,
/// as Elasticsearch answers.
pub async fn field_mapping(
    State(node): State<Arc<Node>>,
    Path((name, fields)): Path<(String, String)>,
) -> ApiResult<Response> {
    field_mapping_of(&node, &name, &fields)
}

/// `GET /_mapping/field/{fields}`: over every index.
pub async fn field_mapping_all(
    State(node): State<Arc<Node>>,
    Path(fields): Path<String>,
) -> ApiResult<Response> {
    field_mapping_of(&node, "_all", &fields)
}

fn field_mapping_of(node: &Node, target: &str, fields: &str) -> ApiResult<Response> {
    let patterns: Vec<&str> = fields
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let mut out = Map::new();
    for index in node.indices.resolve(target)? {
        let mut found = Map::new();
        for column in index.mapping().columns() {
            if patterns.iter().any(|p| wildcard_match(p, &column.path)) {
                let leaf = column.path.rsplit('.').next().unwrap_or(&column.path).to_string();
                found.insert(
                    column.path.clone(),
                    json!({"full_name": column.path, "mapping": {leaf: column.mapping.render()}}),
                );
            }
        }
        out.insert(index.name(), json!({"mappings": found}));
    }
    Ok(ok_json(&Value::Object(out)))
}

/// `PUT /{index}/_mapping`: adds fields to the mapping of each index named.
pub async fn put_mapping(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let body = parse_body(&body)?.ok_or_else(|| ApiError::bad_request("request body is required"))?;
    let update = quidditch_index::Mapping::from_es(&body)?;
    let dynamic = body.get("dynamic").map(|_| update.dynamic);
    for index in node.indices.resolve(&name)? {
        let update = update.clone();
        tokio::task::spawn_blocking(move || index.put_mapping(update, dynamic)).await??;
    }
    Ok(ok_json(&json!({"acknowledged": true})))
}

/// `GET /_settings`: every index's settings.
pub async fn settings_all(node: State<Arc<Node>>) -> ApiResult<Response> {
    settings(node, Path("_all".to_string())).await
}

/// `GET /{index}/_settings`.
pub async fn settings(State(node): State<Arc<Node>>, Path(name): Path<String>) -> ApiResult<Response> {
    let mut out = Map::new();
    for index in node.indices.resolve(&name)? {
        let meta = index.meta();
        out.insert(
            meta.name.clone(),
            json!({"settings": meta.settings.to_es(&meta.name, &meta.uuid, meta.creation_date)}),
        );
    }
    Ok(ok_json(&Value::Object(out)))
}

pub async fn refresh(State(node): State<Arc<Node>>, Path(name): Path<String>) -> ApiResult<Response> {
    let targets = node.indices.resolve(&name)?;
    refresh_targets(targets).await
}

pub async fn refresh_all(State(node): State<Arc<Node>>) -> ApiResult<Response> {
    refresh_targets(node.indices.resolve("_all")?).await
}

/// `POST /{index}/_forcemerge`: `max_num_segments`, `only_expunge_deletes`,
/// `flush` (default true); answers once every copy is merged.
pub async fn force_merge(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult<Response> {
    force_merge_targets(node.indices.resolve(&name)?, &params).await
}

/// `POST /_forcemerge`: every index.
pub async fn force_merge_all(
    State(node): State<Arc<Node>>,
    Query(params): Query<Params>,
) -> ApiResult<Response> {
    force_merge_targets(node.indices.resolve("_all")?, &params).await
}

async fn force_merge_targets(
    targets: Vec<Arc<quidditch_index::Index>>,
    params: &Params,
) -> ApiResult<Response> {
    let how = ForceMerge::from_params(
        params.get("max_num_segments").map(String::as_str),
        bool_param(params, "only_expunge_deletes", false)?,
    )?;
    let flush = bool_param(params, "flush", true)?;
    let shards: usize = targets.iter().map(|i| i.num_shards() as usize).sum();
    tokio::task::spawn_blocking(move || {
        for index in targets {
            index.force_merge_everywhere(how, flush)?;
        }
        Ok::<_, quidditch_index::Error>(())
    })
    .await??;
    Ok(ok_json(
        &json!({"_shards": {"total": shards, "successful": shards, "failed": 0}}),
    ))
}

async fn refresh_targets(targets: Vec<Arc<quidditch_index::Index>>) -> ApiResult<Response> {
    let shards: usize = targets.iter().map(|i| i.num_shards() as usize).sum();
    tokio::task::spawn_blocking(move || {
        for index in targets {
            index.refresh_everywhere()?;
        }
        Ok::<_, quidditch_index::Error>(())
    })
    .await??;
    Ok(ok_json(
        &json!({"_shards": {"total": shards, "successful": shards, "failed": 0}}),
    ))
}
