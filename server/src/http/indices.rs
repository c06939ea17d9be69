//! Index administration: create, delete, exists, get, mapping, refresh
//! (which is also `_flush`: a refresh commits), force merge.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quidditch_index::Index;
use quidditch_index::indices::wildcard_match;
use quidditch_index::merge::ForceMerge;
use serde_json::{Map, Value, json};

use super::cluster::ShardCounts;
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
        indices.metadata()?.check_destructive(&name)?;
        for name in indices.resolve_concrete_names(&name)? {
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
                "aliases": meta.aliases,
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
    refresh_targets(&node, node.indices.resolve(&name)?).await
}

pub async fn refresh_all(State(node): State<Arc<Node>>) -> ApiResult<Response> {
    refresh_targets(&node, node.indices.resolve("_all")?).await
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

/// Merges every copy of the shards of `targets`. A node that fails is
/// listed under `_shards.failures`, one entry per copy it holds, as
/// Elasticsearch lists the shards a broadcast could not reach.
async fn force_merge_targets(targets: Vec<Arc<Index>>, params: &Params) -> ApiResult<Response> {
    let how = ForceMerge::from_params(
        params.get("max_num_segments").map(String::as_str),
        bool_param(params, "only_expunge_deletes", false)?,
    )?;
    let flush = bool_param(params, "flush", true)?;
    let results = tokio::task::spawn_blocking(move || {
        targets
            .into_iter()
            .map(|index| index.force_merge_everywhere(how, flush))
            .collect::<quidditch_index::Result<Vec<_>>>()
    })
    .await??;
    let (mut total, mut successful) = (0u64, 0u64);
    let mut failures = Vec::new();
    for (meta, failed) in results {
        total +=
            u64::from(meta.settings.number_of_shards) * (1 + u64::from(meta.settings.number_of_replicas));
        for n in 0..meta.settings.number_of_shards {
            // The embedded node holds every shard, with no copies listed.
            if meta.shard_node(n).is_none() {
                successful += 1;
                continue;
            }
            for copy in meta.copies(n) {
                match failed.iter().find(|(node, _)| node == copy) {
                    None => successful += 1,
                    Some((_, err)) => {
                        let status =
                            StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                        failures.push(json!({
                            "shard": n,
                            "index": meta.name,
                            "node": copy,
                            "status": status.canonical_reason().unwrap_or("").to_uppercase().replace(' ', "_"),
                            "reason": {"type": err.es_type(), "reason": err.to_string()},
                        }));
                    }
                }
            }
        }
    }
    let mut shards = json!({"total": total, "successful": successful, "failed": failures.len()});
    if !failures.is_empty() {
        shards["failures"] = json!(failures);
    }
    Ok(ok_json(&json!({ "_shards": shards })))
}

async fn refresh_targets(node: &Node, targets: Vec<Arc<Index>>) -> ApiResult<Response> {
    let (active, total) = ShardCounts::of(node, &targets).copies();
    tokio::task::spawn_blocking(move || {
        for index in targets {
            index.refresh_everywhere()?;
        }
        Ok::<_, quidditch_index::Error>(())
    })
    .await??;
    Ok(ok_json(
        &json!({"_shards": {"total": total, "successful": active, "failed": 0}}),
    ))
}
