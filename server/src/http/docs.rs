//! Document APIs: index, create, get, delete, update, and `_bulk`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quidditch_index::bulk::{
    BulkOutcome, WriteBody, execute_bulk, not_an_alias, parse_bulk, parse_update, result_status,
    update_versioning_refused, with_options,
};
use quidditch_index::index::{Condition, DocWrite, SeqNoCondition};
use quidditch_index::indices::apply_refresh;
use quidditch_index::shard::StoredDoc;
use quidditch_index::{Error, RefreshPolicy};
use quidditch_planner::search::SourceFilter;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, Params, bool_param, es_json, es_json_bytes, ok_json, parse_body};
use crate::node::Node;

fn refresh_policy(params: &Params) -> ApiResult<RefreshPolicy> {
    Ok(RefreshPolicy::parse(params.get("refresh").map(String::as_str))?)
}

/// A whole-number query parameter, with Elasticsearch's error for
/// another value.
fn long_param(params: &Params, key: &str) -> ApiResult<Option<i64>> {
    params
        .get(key)
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                ApiError::new(
                    400,
                    "illegal_argument_exception",
                    format!("Failed to parse long parameter [{key}] with value [{v}]"),
                )
            })
        })
        .transpose()
}

/// The condition of an index, create or delete: `?if_seq_no=` and
/// `?if_primary_term=`, or `?version=` and `?version_type=`.
fn condition(params: &Params, create: bool) -> ApiResult<Option<Condition>> {
    Ok(Condition::of_request(
        create,
        long_param(params, "version")?,
        params.get("version_type").map(String::as_str),
        long_param(params, "if_seq_no")?,
        long_param(params, "if_primary_term")?,
    )?)
}

/// The condition of an update: `?if_seq_no=` and `?if_primary_term=`; an
/// update takes no versions.
fn update_condition(params: &Params) -> ApiResult<Option<SeqNoCondition>> {
    if params.contains_key("version") || params.contains_key("version_type") {
        return Err(update_versioning_refused().into());
    }
    Ok(SeqNoCondition::from_params(
        long_param(params, "if_seq_no")?,
        long_param(params, "if_primary_term")?,
    )?)
}

async fn write_one(node: &Node, index: &str, write: DocWrite, params: &Params) -> ApiResult<Response> {
    let policy = refresh_policy(params)?;
    let is_delete = matches!(write, DocWrite::Delete { .. });
    // A delete writes no document, so it needs no alias to name its index.
    if !is_delete && bool_param(params, "require_alias", false)? && !node.indices.is_alias(index) {
        return Err(not_an_alias(index).into());
    }
    let indices = Arc::clone(&node.indices);
    let name = index.to_string();
    let (target, batch) = tokio::task::spawn_blocking(move || {
        let target = if is_delete {
            indices.write_index(&name)?
        } else {
            indices.get_or_create(&name)?
        };
        let batch = target.write(vec![write], policy)?;
        Ok::<_, Error>((target, batch))
    })
    .await??;
    let (_, result) = batch
        .items
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("write produced no result"))?;
    let result = result?;
    let concrete = target.name();
    apply_refresh(policy, vec![(target, batch.touched)]).await?;
    let status = StatusCode::from_u16(result_status(&result)).unwrap_or(StatusCode::OK);
    let mut body = WriteBody::new(&concrete, &result);
    if policy == RefreshPolicy::WaitFor || policy == RefreshPolicy::Immediate {
        body = body.forced_refresh(policy == RefreshPolicy::Immediate);
    }
    let body = serde_json::to_vec(&body).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(es_json_bytes(status, body))
}

fn source_body(body: &[u8]) -> ApiResult<Value> {
    match parse_body(body)? {
        Some(v @ Value::Object(_)) => Ok(v),
        _ => Err(not_an_object()),
    }
}

/// The request body as one document's source, kept as sent: checked to be
/// a JSON object without building a JSON tree (its index parses the text
/// against the mapping).
fn source_text(body: &[u8]) -> ApiResult<Arc<str>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(not_an_object());
    }
    serde_json::from_slice::<IgnoredAny>(body).map_err(|e| ApiError::bad_json(&e))?;
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::new(400, "parse_exception", format!("request body is not UTF-8: {e}")))?
        .trim_matches([' ', '\t', '\r', '\n']);
    if !text.starts_with('{') {
        return Err(not_an_object());
    }
    Ok(Arc::from(text))
}

fn not_an_object() -> ApiError {
    ApiError::new(
        400,
        "parse_exception",
        "request body is required and must be a JSON object",
    )
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
        source: source_text(body)?,
        create,
        condition: condition(params, create)?,
    };
    write_one(node, index, write, params).await
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
    let retries = match params.get("retry_on_conflict") {
        Some(v) => v.parse::<u32>().map_err(|_| {
            ApiError::bad_request(format!(
                "[retry_on_conflict] must be a non-negative number, got [{v}]"
            ))
        })?,
        None => 0,
    };
    let write = with_options(parse_update(id, &body)?, update_condition(&params)?, retries)?;
    write_one(&node, &index, write, &params).await
}

pub async fn delete(
    State(node): State<Arc<Node>>,
    Path((index, id)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> ApiResult<Response> {
    let write = DocWrite::Delete {
        id,
        condition: condition(&params, false)?,
    };
    write_one(&node, &index, write, &params).await
}

/// The realtime get of one document: the name of the index that holds
/// it (through an alias) and the document, if there.
async fn read_doc(node: &Node, index: &str, id: &str) -> ApiResult<(String, Option<StoredDoc>)> {
    let target = node.indices.single_index(index)?;
    let id = id.to_string();
    let (target, doc) = tokio::task::spawn_blocking(move || {
        let doc = target.get(&id);
        (target, doc)
    })
    .await?;
    Ok((target.name(), doc?))
}

/// A document as a get answers it, with its source filtered by `filter`,
/// and whether it was found.
fn doc_json(
    index: &str,
    id: &str,
    doc: Option<StoredDoc>,
    filter: &SourceFilter,
) -> ApiResult<(bool, Value)> {
    Ok(match doc {
        Some(doc) => {
            let mut body = json!({
                "_index": index, "_id": id, "_version": doc.version, "_seq_no": doc.seq_no,
                "_primary_term": quidditch_index::index::PRIMARY_TERM, "found": true,
            });
            if let Some(source) = filter.apply(&stored_source(&doc)?) {
                body["_source"] = source;
            }
            (true, body)
        }
        None => (false, json!({"_index": index, "_id": id, "found": false})),
    })
}

/// A stored document's source as JSON.
fn stored_source(doc: &StoredDoc) -> ApiResult<Value> {
    serde_json::from_str(&doc.source).map_err(ApiError::internal)
}

pub async fn get(
    State(node): State<Arc<Node>>,
    Path((index, id)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> ApiResult<Response> {
    let (target, doc) = read_doc(&node, &index, &id).await?;
    let (found, body) = doc_json(&target, &id, doc, &SourceFilter::all().with_params(&params))?;
    Ok(if found {
        ok_json(&body)
    } else {
        es_json(StatusCode::NOT_FOUND, &body)
    })
}

/// `GET /{index}/_source/{id}`: the document's source alone (filtered as
/// `GET` filters it).
pub async fn get_source(
    State(node): State<Arc<Node>>,
    Path((index, id)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> ApiResult<Response> {
    let (target, doc) = read_doc(&node, &index, &id).await?;
    let Some(doc) = doc else {
        return Err(source_not_found(&target, &id));
    };
    let filter = SourceFilter::all().with_params(&params);
    Ok(ok_json(
        &filter.apply(&stored_source(&doc)?).unwrap_or_else(|| json!({})),
    ))
}

/// `HEAD /{index}/_source/{id}`: whether the document is there.
pub async fn head_source(
    State(node): State<Arc<Node>>,
    Path((index, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (target, doc) = read_doc(&node, &index, &id).await?;
    match doc {
        Some(_) => Ok(StatusCode::OK.into_response()),
        None => Err(source_not_found(&target, &id)),
    }
}

/// Elasticsearch's error for the source of a missing document.
fn source_not_found(index: &str, id: &str) -> ApiError {
    ApiError::new(
        404,
        "resource_not_found_exception",
        format!("Document not found [{index}]/[{id}]"),
    )
}

/// A document `_mget` asks for of an index.
struct Wanted {
    /// Its place in the request.
    position: usize,
    id: String,
    filter: SourceFilter,
}

/// `_mget`: `{"docs": [{"_index", "_id", "_source"?}, ...]}`, or
/// `{"ids": [...]}` with the index from the path; each document answered as
/// `GET` answers it (its source filtered by its own `_source`, else the
/// URL's), or with its own error.
async fn run_mget(
    node: &Node,
    default_index: Option<&str>,
    params: &Params,
    body: &[u8],
) -> ApiResult<Response> {
    let body = parse_body(body)?.ok_or_else(|| ApiError::bad_request("request body is required"))?;
    let url_filter = SourceFilter::all().with_params(params);
    let mut wanted: Vec<(Option<String>, String, SourceFilter)> = Vec::new();
    let id_of = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match (body.get("docs"), body.get("ids")) {
        (Some(Value::Array(docs)), None) => {
            for d in docs {
                let id = d.get("_id").and_then(id_of).ok_or_else(|| {
                    ApiError::new(
                        400,
                        "action_request_validation_exception",
                        "Validation Failed: 1: id is missing for doc 0;",
                    )
                })?;
                let index = d.get("_index").and_then(Value::as_str).map(str::to_string);
                let filter = match d.get("_source") {
                    Some(v) => SourceFilter::parse(v)?,
                    None => url_filter.clone(),
                };
                wanted.push((index.or_else(|| default_index.map(str::to_string)), id, filter));
            }
        }
        (None, Some(Value::Array(ids))) => {
            for v in ids {
                let id = id_of(v).ok_or_else(|| ApiError::bad_request("[ids] must hold strings"))?;
                wanted.push((default_index.map(str::to_string), id, url_filter.clone()));
            }
        }
        _ => {
            return Err(ApiError::new(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: no documents to get;",
            ));
        }
    }
    // The documents of each named index are read together: one call per
    // node that holds some of them.
    let mut by_name: Vec<(String, Vec<Wanted>)> = Vec::new();
    for (position, (index, id, filter)) in wanted.into_iter().enumerate() {
        let Some(index) = index else {
            return Err(ApiError::new(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: index is missing for doc 0;",
            ));
        };
        match by_name.iter_mut().find(|(name, _)| *name == index) {
            Some((_, ids)) => ids.push(Wanted { position, id, filter }),
            None => by_name.push((index, vec![Wanted { position, id, filter }])),
        }
    }
    let mut answered: Vec<(usize, Value)> = Vec::new();
    for (name, ids) in by_name {
        let failed = |e: &ApiError, id: &str| json!({"_index": name, "_id": id, "error": e.error_object()});
        let target = match node.indices.single_index(&name) {
            Ok(target) => target,
            Err(e) => {
                let e = ApiError::from(e);
                answered.extend(ids.iter().map(|w| (w.position, failed(&e, &w.id))));
                continue;
            }
        };
        let wanted: Vec<String> = ids.iter().map(|w| w.id.clone()).collect();
        let (target, found) = tokio::task::spawn_blocking(move || {
            let found = target.get_many(&wanted);
            (target, found)
        })
        .await?;
        let concrete = target.name();
        for (Wanted { position, id, filter }, doc) in ids.into_iter().zip(found) {
            let doc = doc
                .map_err(ApiError::from)
                .and_then(|doc| doc_json(&concrete, &id, doc, &filter));
            answered.push((
                position,
                match doc {
                    Ok((_, doc)) => doc,
                    Err(e) => failed(&e, &id),
                },
            ));
        }
    }
    answered.sort_by_key(|(at, _)| *at);
    let docs: Vec<Value> = answered.into_iter().map(|(_, doc)| doc).collect();
    Ok(ok_json(&json!({"docs": docs})))
}

pub async fn mget(
    State(node): State<Arc<Node>>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    run_mget(&node, None, &params, &body).await
}

pub async fn mget_index(
    State(node): State<Arc<Node>>,
    Path(index): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    run_mget(&node, Some(&index), &params, &body).await
}

pub async fn head(
    State(node): State<Arc<Node>>,
    Path((index, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (_, doc) = read_doc(&node, &index, &id).await?;
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
    body: Bytes,
) -> ApiResult<Response> {
    let policy = refresh_policy(params)?;
    let require_alias = bool_param(params, "require_alias", false)?;
    let indices = Arc::clone(&node.indices);
    let filter = params.get("filter_path").cloned();
    let filtered = filter.is_some();
    let (response, touched) = tokio::task::spawn_blocking(move || {
        let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("bulk body is not UTF-8"))?;
        let items = parse_bulk(text, default_index.as_deref(), require_alias)?;
        let BulkOutcome { response, touched } = execute_bulk(&indices, items, policy)?;
        let response = match filter {
            Some(spec) => response.to_filtered_json(&|v| super::search::filter_path(v, &spec)),
            None => serde_json::to_vec(&response),
        }
        .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok::<_, ApiError>((response, touched))
    })
    .await??;
    apply_refresh(policy, touched).await?;
    let mut resp = es_json_bytes(StatusCode::OK, response);
    if filtered {
        resp.extensions_mut().insert(super::FilterApplied);
    }
    Ok(resp)
}

pub async fn bulk(
    State(node): State<Arc<Node>>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    run_bulk(&node, None, &params, body).await
}

pub async fn bulk_index(
    State(node): State<Arc<Node>>,
    Path(index): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    run_bulk(&node, Some(index), &params, body).await
}
