//! `_delete_by_query` and `_update_by_query`, and what they share with
//! `_reindex`: pages of a query's hits in `(_index, _id)` order, and the
//! counts and failures of the response.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use quidditch_index::index::{Condition, DocWrite, SeqNoCondition};
use quidditch_index::{Error, Indices, RefreshPolicy};
use serde_json::{Value, json};

use super::search::search_body;
use super::{ApiError, ApiResult, Params, es_json};
use crate::node::Node;

/// Documents per page of a delete- or update-by-query (Elasticsearch's
/// default `scroll_size`).
const PAGE: u64 = 1000;

/// `max_docs`: a non-negative integer, as a number or a string.
pub(super) fn max_docs_value(v: &Value) -> ApiResult<u64> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    n.ok_or_else(|| {
        ApiError::new(
            400,
            "action_request_validation_exception",
            format!("Validation Failed: 1: maxDocs must be a non-negative integer, got [{v}];"),
        )
    })
}

/// `conflicts`: whether version conflicts are counted and passed over
/// (`proceed`) rather than stop the run (`abort`, the default).
pub(super) fn conflicts_value(v: &str) -> ApiResult<bool> {
    match v {
        "abort" => Ok(false),
        "proceed" => Ok(true),
        other => Err(ApiError::bad_request(format!(
            "conflicts may only be \"proceed\" or \"abort\" but was [{other}]"
        ))),
    }
}

/// The hits of a query a page at a time, each page after the last in
/// `(_index, _id)` order. A shard that cannot be read fails the page,
/// rather than leave its documents out.
pub(super) struct Pages {
    target: String,
    query: Option<Value>,
    source: Value,
    params: Params,
    after: Option<Value>,
    /// Each hit carries its `_version`.
    versions: bool,
}

impl Pages {
    /// Pages of the hits of `query` over `target`, with the `_source`
    /// filter `source`; `params` may hold the query-string search (`q`,
    /// `df`, `default_operator`, `lenient`).
    pub fn new(target: &str, query: Option<Value>, source: Value, params: &Params) -> Pages {
        let mut params: Params = params
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "q" | "df" | "default_operator" | "lenient"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        params.insert("allow_partial_search_results".into(), "false".into());
        Pages {
            target: target.to_string(),
            query,
            source,
            params,
            after: None,
            versions: false,
        }
    }

    /// These pages, each hit with its `_version`.
    pub fn with_versions(mut self) -> Pages {
        self.versions = true;
        self
    }

    /// The next page of at most `size` hits (none when every hit was read).
    pub async fn next(&mut self, node: &Node, size: u64) -> ApiResult<Vec<Value>> {
        let mut body = json!({
            "size": size,
            "_source": self.source,
            "seq_no_primary_term": true,
            "version": self.versions,
            "track_total_hits": false,
            "sort": [{"_index": "asc"}, {"_id": "asc"}],
        });
        if let Some(q) = &self.query {
            body["query"] = q.clone();
        }
        if let Some(a) = &self.after {
            body["search_after"] = a.clone();
        }
        let session = node.engine.session()?;
        let out = quidditch_planner::search(
            &session,
            node.engine.indices(),
            &self.target,
            Some(&body),
            &self.params,
        )
        .await?;
        let hits = out["hits"]["hits"].as_array().cloned().unwrap_or_default();
        if let Some(last) = hits.last() {
            self.after = last.get("sort").cloned();
        }
        Ok(hits)
    }
}

/// The `_index`, `_id` and `_seq_no` of each hit.
fn hit_ids(hits: &[Value]) -> ApiResult<Vec<(String, String, u64)>> {
    hits.iter()
        .map(|h| {
            let ids = (h["_index"].as_str(), h["_id"].as_str(), h["_seq_no"].as_u64());
            match ids {
                (Some(index), Some(id), Some(seq_no)) => Ok((index.to_string(), id.to_string(), seq_no)),
                _ => Err(ApiError::internal(format!(
                    "a hit without _index, _id or _seq_no: {h}"
                ))),
            }
        })
        .collect()
}

/// What `_delete_by_query`, `_update_by_query` and `_reindex` report
/// beside their own counts.
#[derive(Debug)]
pub(super) struct ByQueryStats {
    /// Documents read.
    pub total: u64,
    /// Pages read.
    pub batches: u64,
    /// Writes that met a version conflict.
    pub conflicts: u64,
    /// Writes that failed and stopped the run.
    pub failures: Vec<Value>,
    /// The highest status of the failures.
    pub status: StatusCode,
}

impl Default for ByQueryStats {
    fn default() -> Self {
        ByQueryStats {
            total: 0,
            batches: 0,
            conflicts: 0,
            failures: Vec::new(),
            status: StatusCode::OK,
        }
    }
}

impl ByQueryStats {
    /// Records the failed write of `id` to `index`: a version conflict
    /// under `conflicts: proceed` is only counted; anything else is a
    /// failure that stops the run.
    pub fn failed(&mut self, index: &str, id: Option<String>, err: &Error, proceed: bool) {
        // A remote primary's conflict arrives as `Error::Remote`: the type
        // names it either way.
        let conflict = err.es_type() == "version_conflict_engine_exception";
        self.conflicts += u64::from(conflict);
        if conflict && proceed {
            return;
        }
        let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.status = self.status.max(status);
        self.failures.push(json!({
            "index": index,
            "id": id,
            "cause": {"type": err.es_type(), "reason": err.to_string(), "index": index},
            "status": err.status(),
        }));
    }

    /// The response, in Elasticsearch's shape (nothing is throttled or
    /// retried here) with the request's own `counts`, and the highest
    /// status of its failures.
    pub fn respond(self, started: Instant, counts: Value) -> Response {
        let mut out = json!({
            "took": started.elapsed().as_millis() as u64,
            "timed_out": false,
            "total": self.total,
            "batches": self.batches,
            "version_conflicts": self.conflicts,
            "noops": 0,
            "retries": {"bulk": 0, "search": 0},
            "throttled_millis": 0,
            "requests_per_second": -1.0,
            "throttled_until_millis": 0,
            "failures": self.failures,
        });
        if let (Some(out), Value::Object(counts)) = (out.as_object_mut(), counts) {
            out.extend(counts);
        }
        es_json(self.status, &out)
    }
}

/// What a by-query request asks: the query, `max_docs` and `conflicts`.
struct ByQuery {
    query: Option<Value>,
    max_docs: Option<u64>,
    proceed: bool,
}

/// Reads a `_delete_by_query` or `_update_by_query` request (`what` names
/// it in errors).
fn by_query(what: &str, params: &Params, body: &[u8]) -> ApiResult<ByQuery> {
    let (max_docs, proceed) = limits(params)?;
    let mut req = ByQuery {
        query: None,
        max_docs,
        proceed,
    };
    if let Some(Value::Object(m)) = search_body(body)? {
        for (k, v) in m {
            match k.as_str() {
                "query" => req.query = Some(v),
                "max_docs" => req.max_docs = Some(max_docs_value(&v)?),
                "conflicts" => req.proceed = conflicts_value(v.as_str().unwrap_or_default())?,
                "script" => {
                    return Err(ApiError::bad_request(format!(
                        "[{what}] scripts are not supported: documents are written as they are"
                    )));
                }
                other => {
                    return Err(ApiError::new(
                        400,
                        "parsing_exception",
                        format!("[{what}] unknown field [{other}]"),
                    ));
                }
            }
        }
    }
    Ok(req)
}

/// `?max_docs=` and `?conflicts=`.
pub(super) fn limits(params: &Params) -> ApiResult<(Option<u64>, bool)> {
    let max_docs = params
        .get("max_docs")
        .map(|v| max_docs_value(&json!(v)))
        .transpose()?;
    let proceed = params
        .get("conflicts")
        .map(|c| conflicts_value(c))
        .transpose()?
        .unwrap_or(false);
    Ok((max_docs, proceed))
}

/// How many hits the next page reads: a page, or what `max_docs` leaves.
fn page_size(max_docs: Option<u64>, done: u64) -> u64 {
    max_docs.map_or(PAGE, |m| m.saturating_sub(done).min(PAGE))
}

/// Refreshes every index of `target`, when `?refresh` asks.
async fn refresh_targets(node: &Node, target: &str, params: &Params) -> ApiResult<()> {
    if RefreshPolicy::parse(params.get("refresh").map(String::as_str))? == RefreshPolicy::None {
        return Ok(());
    }
    let indices = Arc::clone(node.engine.indices());
    let target = target.to_string();
    tokio::task::spawn_blocking(move || -> quidditch_index::Result<()> {
        for index in indices.resolve(&target)? {
            index.refresh_everywhere()?;
        }
        Ok(())
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(())
}

/// The writes of `ids` grouped by index, each with the results of its
/// writes in order.
type Written = Vec<(
    String,
    Vec<(Option<String>, quidditch_index::Result<&'static str>)>,
)>;

/// The writes a by-query request makes of documents of an index, given
/// their ids and the sequence numbers of the writes the query matched: a
/// write or the failure of each, in order.
type WriteOf = fn(&quidditch_index::Index, Vec<(String, u64)>) -> Vec<quidditch_index::Result<DocWrite>>;

/// Applies to each document of `ids` the write `write` makes of it.
fn write_each(
    indices: &Indices,
    ids: Vec<(String, String, u64)>,
    write: WriteOf,
) -> quidditch_index::Result<Written> {
    let mut by_index: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    for (index, id, seq_no) in ids {
        by_index.entry(index).or_default().push((id, seq_no));
    }
    let mut written = Vec::new();
    for (name, ids) in by_index {
        let index = indices.get(&name)?;
        let mut results = Vec::new();
        let mut writes = Vec::new();
        let names: Vec<String> = ids.iter().map(|(id, _)| id.clone()).collect();
        for (id, made) in names.into_iter().zip(write(&index, ids)) {
            match made {
                Ok(w) => writes.push(w),
                Err(err) => results.push((Some(id), Err(err))),
            }
        }
        if !writes.is_empty() {
            let batch = index.write(writes, RefreshPolicy::None)?;
            results.extend(batch.items.into_iter().map(|(id, r)| (id, r.map(|ok| ok.result))));
        }
        written.push((name, results));
    }
    Ok(written)
}

/// The write `write` makes of each document a by-query request's query
/// matches, page by page, until `max_docs` or a failure; the counts, and
/// how many writes changed a document.
async fn write_matches(
    node: &Node,
    target: &str,
    req: ByQuery,
    params: &Params,
    write: WriteOf,
) -> ApiResult<(ByQueryStats, u64)> {
    let mut pages = Pages::new(target, req.query, json!(false), params);
    let mut stats = ByQueryStats::default();
    let mut written = 0u64;
    loop {
        // With `conflicts: proceed`, `max_docs` counts the documents
        // written, as Elasticsearch counts them; else those read.
        let done = if req.proceed { written } else { stats.total };
        let size = page_size(req.max_docs, done);
        if size == 0 {
            break;
        }
        let hits = pages.next(node, size).await?;
        if hits.is_empty() {
            break;
        }
        stats.total += hits.len() as u64;
        stats.batches += 1;
        let indices = Arc::clone(node.engine.indices());
        let ids = hit_ids(&hits)?;
        let results = tokio::task::spawn_blocking(move || write_each(&indices, ids, write))
            .await
            .map_err(ApiError::internal)??;
        for (index, results) in results {
            for (id, result) in results {
                match result {
                    Ok("not_found") => {}
                    Ok(_) => written += 1,
                    Err(err) => stats.failed(&index, id, &err, req.proceed),
                }
            }
        }
        if !stats.failures.is_empty() || hits.len() < size as usize {
            break;
        }
    }
    refresh_targets(node, target, params).await?;
    Ok((stats, written))
}

/// `POST /{index}/_delete_by_query`: deletes every document the query
/// matches, a page at a time. Each delete is conditional on the write the
/// query matched: a document changed meanwhile is a version conflict, not
/// deleted.
pub async fn delete_by_query(
    State(node): State<Arc<Node>>,
    Path(target): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    let started = Instant::now();
    let req = by_query("delete_by_query", &params, &body)?;
    if req.query.is_none() && !params.contains_key("q") {
        return Err(ApiError::new(
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: query is missing;",
        ));
    }
    let (stats, deleted) = write_matches(&node, &target, req, &params, |_, ids| {
        ids.into_iter()
            .map(|(id, seq_no)| {
                Ok(DocWrite::Delete {
                    id,
                    condition: Some(Condition::SeqNo(SeqNoCondition::unchanged(seq_no))),
                })
            })
            .collect()
    })
    .await?;
    Ok(stats.respond(started, json!({"deleted": deleted})))
}

/// `POST /{index}/_update_by_query`: writes every document the query
/// matches again, so that the mapping as it is now indexes it (a field
/// mapped after the document was written covers it then). Each write is
/// conditional on the write the query matched: a document changed or
/// deleted meanwhile is a version conflict, never overwritten. Scripts are
/// refused.
pub async fn update_by_query(
    State(node): State<Arc<Node>>,
    Path(target): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    let started = Instant::now();
    let req = by_query("update_by_query", &params, &body)?;
    let (stats, updated) = write_matches(&node, &target, req, &params, |index, ids| {
        // The sources as stored (the hits' would be re-serialized), read
        // together, when each document is still the one the query matched.
        let wanted: Vec<String> = ids.iter().map(|(id, _)| id.clone()).collect();
        ids.into_iter()
            .zip(index.get_many(&wanted))
            .map(|((id, seq_no), stored)| {
                let condition = SeqNoCondition::unchanged(seq_no);
                match stored? {
                    Some(doc) if doc.seq_no == seq_no => Ok(DocWrite::Index {
                        id: Some(id),
                        source: doc.source,
                        create: false,
                        condition: Some(Condition::SeqNo(condition)),
                    }),
                    stored => Err(condition.conflict(id, stored.map(|d| d.seq_no))),
                }
            })
            .collect()
    })
    .await?;
    Ok(stats.respond(started, json!({"updated": updated, "deleted": 0})))
}
