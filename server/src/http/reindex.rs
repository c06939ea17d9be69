//! `POST /_reindex`: copies the documents a query matches from source
//! indices into a destination index, a page at a time, through the same
//! write path as `_bulk` (so the destination maps them as it maps any
//! write, and creates itself when missing). This is how a mapping changes:
//! into a new index with the new mapping.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::Response;
use quidditch_index::RefreshPolicy;
use quidditch_index::index::{Condition, DocWrite, ExternalVersion, VersionType};
use serde_json::{Map, Value, json};

use super::by_query::{ByQueryStats, Pages, conflicts_value, limits, max_docs_value};
use super::search::search_body;
use super::{ApiError, ApiResult, Params, bool_param};
use crate::node::Node;

/// Documents read and written per batch unless `source.size` says.
const DEFAULT_BATCH: u64 = 1000;

/// A reindex request.
#[derive(Debug, PartialEq)]
struct Request {
    /// The source index expression.
    source: String,
    query: Option<Value>,
    /// The source's `_source` filter.
    fields: Option<Value>,
    batch: u64,
    dest: String,
    /// `op_type: create`: documents whose id the destination holds conflict.
    create: bool,
    /// `dest.version_type`: with an external type, each copy brings its
    /// source's version, and replaces only older documents.
    version_type: VersionType,
    max_docs: Option<u64>,
    /// `conflicts: proceed`: version conflicts are counted, not fatal.
    proceed: bool,
}

fn unknown(section: &str, key: &str) -> ApiError {
    ApiError::new(
        400,
        "parsing_exception",
        format!("[{section}] unknown field [{key}]"),
    )
}

fn invalid(reason: &str) -> ApiError {
    ApiError::new(
        400,
        "action_request_validation_exception",
        format!("Validation Failed: 1: {reason};"),
    )
}

fn object<'v>(v: &'v Value, what: &str) -> ApiResult<&'v Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| ApiError::new(400, "parsing_exception", format!("[{what}] must be an object")))
}

/// An index name, or a list of them joined as an index expression.
fn index_names(v: &Value, what: &str) -> ApiResult<String> {
    let names: Option<Vec<&str>> = match v {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(items) => items.iter().map(Value::as_str).collect(),
        _ => None,
    };
    names
        .filter(|n| !n.is_empty())
        .map(|n| n.join(","))
        .ok_or_else(|| ApiError::bad_request(format!("[{what}] must be an index name or a list of them")))
}

fn parse(body: Option<&Value>, params: &Params) -> ApiResult<Request> {
    let (max_docs, proceed) = limits(params)?;
    let mut req = Request {
        source: String::new(),
        query: None,
        fields: None,
        batch: DEFAULT_BATCH,
        dest: String::new(),
        create: false,
        version_type: VersionType::Internal,
        max_docs,
        proceed,
    };
    let body = object(body.unwrap_or(&Value::Null), "reindex").map_err(|_| invalid("source is missing"))?;
    for (key, v) in body {
        match key.as_str() {
            "source" => {
                for (k, v) in object(v, "source")? {
                    match k.as_str() {
                        "index" => req.source = index_names(v, "source.index")?,
                        "query" => req.query = Some(v.clone()),
                        "_source" if v == &json!(false) => {
                            return Err(ApiError::bad_request(
                                "reindex copies each document's [_source]: it cannot be [false]",
                            ));
                        }
                        "_source" => req.fields = Some(v.clone()),
                        "size" => {
                            req.batch = v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                                ApiError::bad_request(format!(
                                    "[source.size] must be a positive integer, got [{v}]"
                                ))
                            })?;
                        }
                        "remote" | "sort" | "slice" | "runtime_mappings" => {
                            return Err(ApiError::bad_request(format!(
                                "[source.{k}] is not supported: reindex reads the indices of this cluster, in index and id order"
                            )));
                        }
                        other => return Err(unknown("source", other)),
                    }
                }
            }
            "dest" => {
                for (k, v) in object(v, "dest")? {
                    match k.as_str() {
                        "index" => {
                            req.dest = v
                                .as_str()
                                .ok_or_else(|| ApiError::bad_request("[dest.index] must be an index name"))?
                                .to_string();
                        }
                        "op_type" => {
                            req.create = match v.as_str() {
                                Some("index") => false,
                                Some("create") => true,
                                _ => {
                                    return Err(ApiError::bad_request(format!(
                                        "opType must be \"index\" or \"create\", got [{v}]"
                                    )));
                                }
                            };
                        }
                        "version_type" => {
                            let name = v.as_str().ok_or_else(|| {
                                ApiError::bad_request("[dest.version_type] must be a string")
                            })?;
                            req.version_type = VersionType::parse(name)?;
                        }
                        "pipeline" | "routing" => {
                            return Err(ApiError::bad_request(format!("[dest.{k}] is not supported")));
                        }
                        other => return Err(unknown("dest", other)),
                    }
                }
            }
            "max_docs" => req.max_docs = Some(max_docs_value(v)?),
            "conflicts" => {
                req.proceed = conflicts_value(
                    v.as_str()
                        .ok_or_else(|| ApiError::bad_request("[conflicts] must be a string"))?,
                )?;
            }
            "script" => return Err(ApiError::bad_request("scripts are not supported")),
            other => return Err(unknown("reindex", other)),
        }
    }
    if req.source.is_empty() {
        return Err(invalid(
            "use _all if you really want to copy from all existing indexes",
        ));
    }
    if req.dest.is_empty() {
        return Err(invalid("index must be specified"));
    }
    if req.create && req.version_type != VersionType::Internal {
        return Err(invalid(
            "create operations only support internal versioning. use index instead",
        ));
    }
    Ok(req)
}

/// `POST /_reindex`. Answers once every document is copied, or at the first
/// failed page (a version conflict, with `conflicts: abort`, the default),
/// with the highest status of its failures.
pub async fn reindex(
    State(node): State<Arc<Node>>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    let started = Instant::now();
    let req = parse(search_body(&body)?.as_ref(), &params)?;
    if !bool_param(&params, "wait_for_completion", true)? {
        return Err(ApiError::bad_request(
            "wait_for_completion=false is not supported: reindex answers when the copy is done",
        ));
    }
    let refresh = RefreshPolicy::parse(params.get("refresh").map(String::as_str))?;
    // The sources are the indices the expression names now: a destination
    // that a pattern would match once created is not read.
    let sources: Vec<String> = node
        .indices
        .resolve(&req.source)?
        .iter()
        .map(|i| i.name())
        .collect();
    // The index the copy writes to, when it exists (through an alias, its
    // write index).
    let dest = node.indices.write_index(&req.dest).map(|i| i.name());
    if sources.contains(dest.as_ref().unwrap_or(&req.dest)) {
        return Err(invalid(&format!(
            "reindex cannot write into an index its reading from [{}]",
            req.dest
        )));
    }
    let sources = sources.join(",");
    let fields = req.fields.clone().unwrap_or(json!(true));
    let mut pages = Pages::new(&sources, req.query.clone(), fields, &Params::new());
    if req.version_type != VersionType::Internal {
        pages = pages.with_versions();
    }
    let mut stats = ByQueryStats::default();
    let (mut created, mut updated) = (0u64, 0u64);
    // A pattern that names no index copies nothing.
    while !sources.is_empty() {
        // With `conflicts: proceed`, `max_docs` counts the documents
        // written, as Elasticsearch counts them; else those read.
        let done = if req.proceed {
            created + updated
        } else {
            stats.total
        };
        let size = req
            .max_docs
            .map_or(req.batch, |m| m.saturating_sub(done).min(req.batch));
        if size == 0 {
            break;
        }
        let hits = pages.next(&node, size).await?;
        if hits.is_empty() {
            break;
        }
        let writes: Vec<DocWrite> = hits
            .iter()
            .map(|h| {
                let condition = match (req.version_type, h["_version"].as_u64()) {
                    (VersionType::Internal, _) => Ok(None),
                    (external, Some(version)) => Ok(Some(Condition::Version(ExternalVersion {
                        version,
                        gte: external == VersionType::ExternalGte,
                    }))),
                    (_, None) => Err(ApiError::internal(format!("a hit without _version: {h}"))),
                };
                Ok(DocWrite::Index {
                    id: h["_id"].as_str().map(str::to_string),
                    source: Arc::from(h.get("_source").unwrap_or(&json!({})).to_string()),
                    create: req.create,
                    condition: condition?,
                })
            })
            .collect::<ApiResult<_>>()?;
        let indices = Arc::clone(&node.indices);
        let dest = req.dest.clone();
        let result = tokio::task::spawn_blocking(move || {
            indices.get_or_create(&dest)?.write(writes, RefreshPolicy::None)
        })
        .await
        .map_err(ApiError::internal)??;
        stats.total += hits.len() as u64;
        stats.batches += 1;
        for (id, item) in result.items {
            match item {
                Ok(r) if r.result == "created" => created += 1,
                Ok(_) => updated += 1,
                Err(err) => stats.failed(&req.dest, id, &err, req.proceed),
            }
        }
        if !stats.failures.is_empty() || hits.len() < size as usize {
            break;
        }
    }
    if refresh != RefreshPolicy::None && (created + updated) > 0 {
        let dest = node.indices.write_index(&req.dest)?;
        tokio::task::spawn_blocking(move || dest.refresh_everywhere())
            .await
            .map_err(ApiError::internal)??;
    }
    Ok(stats.respond(
        started,
        json!({"created": created, "updated": updated, "deleted": 0}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: Value) -> ApiResult<Request> {
        parse(Some(&body), &Params::new())
    }

    #[test]
    fn requests_are_read_and_checked() {
        let req = parsed(json!({
            "source": {"index": ["a", "b"], "query": {"term": {"x": 1}}, "_source": ["x"], "size": 10},
            "dest": {"index": "c", "op_type": "create"},
            "max_docs": 5,
            "conflicts": "proceed",
        }));
        assert_eq!(
            req.ok(),
            Some(Request {
                source: "a,b".into(),
                query: Some(json!({"term": {"x": 1}})),
                fields: Some(json!(["x"])),
                batch: 10,
                dest: "c".into(),
                create: true,
                version_type: VersionType::Internal,
                max_docs: Some(5),
                proceed: true,
            })
        );
        for bad in [
            json!({"dest": {"index": "c"}}),
            json!({"source": {"index": "a"}}),
            json!({"source": {"index": "a", "nope": 1}, "dest": {"index": "c"}}),
            json!({"source": {"index": "a"}, "dest": {"index": "c", "op_type": "upsert"}}),
            json!({"source": {"index": "a"}, "dest": {"index": "c", "version_type": "newest"}}),
            json!({"source": {"index": "a"}, "dest": {"index": "c", "op_type": "create", "version_type": "external"}}),
            json!({"source": {"index": "a"}, "dest": {"index": "c"}, "conflicts": "ignore"}),
            json!({"source": {"index": "a"}, "dest": {"index": "c"}, "script": {"source": "x"}}),
            json!({"source": {"index": "a", "_source": false}, "dest": {"index": "c"}}),
            json!({"source": {"index": []}, "dest": {"index": "c"}}),
            json!({"source": {"index": "a", "size": 0}, "dest": {"index": "c"}}),
        ] {
            assert!(parsed(bad.clone()).is_err(), "{bad}");
        }
        assert!(parse(None, &Params::new()).is_err());
    }
}
