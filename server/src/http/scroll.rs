//! Scrolling (`_search?scroll=1m`, `POST /_search/scroll`,
//! `DELETE /_search/scroll`), as the Elasticsearch clients' `helpers.scan`
//! uses it.
//!
//! A scroll pages with `search_after` over the request's sort (by default
//! none) with `_index` and `_id` appended as tiebreakers, so the order is
//! total. Sorted by fields that do not change, every document that matches
//! throughout the scroll is returned exactly once. It is not a frozen point
//! in time: a document indexed during the scroll may appear if it sorts
//! after the current page, and a `_score` sort can shift when the index
//! changes under it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use parking_lot::Mutex;
use quidditch_planner::search::{parse_time_value, sort_param};
use serde_json::{Map, Value, json};

use super::search::search_body;
use super::{ApiError, ApiResult, Params, ok_json, parse_body};
use crate::node::Node;

/// Open scrolls a node keeps at most (Elasticsearch's `search.max_open_scroll_context`).
const MAX_SCROLLS: usize = 500;

/// What a scroll needs to fetch its next page.
#[derive(Debug, Clone)]
struct ScrollContext {
    target: String,
    params: Params,
    /// The search body, with the tiebreakers in its sort.
    body: Map<String, Value>,
    /// How many sort keys the request itself had (hits show only those).
    user_sort_keys: usize,
    search_after: Option<Value>,
    total: Value,
    keep_alive: Duration,
    expires: Instant,
}

/// The open scrolls of a node.
#[derive(Debug, Default)]
pub struct Scrolls {
    open: Mutex<HashMap<String, ScrollContext>>,
}

impl Scrolls {
    fn insert(&self, id: String, ctx: ScrollContext) -> ApiResult<()> {
        let mut open = self.open.lock();
        let now = Instant::now();
        open.retain(|_, c| c.expires > now);
        if open.len() >= MAX_SCROLLS && !open.contains_key(&id) {
            return Err(ApiError::new(
                429,
                "exception",
                format!(
                    "Trying to create too many scroll contexts. Must be less than or equal to: [{MAX_SCROLLS}]."
                ),
            ));
        }
        open.insert(id, ctx);
        Ok(())
    }

    fn take(&self, id: &str) -> Option<ScrollContext> {
        let mut open = self.open.lock();
        let ctx = open.remove(id)?;
        (ctx.expires > Instant::now()).then_some(ctx)
    }

    fn remove(&self, id: &str) -> bool {
        self.open.lock().remove(id).is_some()
    }

    fn clear(&self) -> usize {
        let mut open = self.open.lock();
        let n = open.len();
        open.clear();
        n
    }
}

/// Longest keep-alive (Elasticsearch's `search.max_keep_alive`).
const MAX_KEEP_ALIVE: Duration = Duration::from_secs(24 * 3600);

fn keep_alive(value: &str) -> ApiResult<Duration> {
    let keep = parse_time_value(value, "scroll")?;
    if keep > MAX_KEEP_ALIVE {
        return Err(ApiError::new(
            400,
            "illegal_argument_exception",
            format!(
                "Keep alive for request ({value}) is too large. It must be less than (1d). This limit can be set by changing the [search.max_keep_alive] cluster level setting."
            ),
        ));
    }
    Ok(keep)
}

/// The body's sort as a list, with a URL `sort` parameter folded in.
fn user_sort(body: &Map<String, Value>, params: &mut Params) -> Vec<Value> {
    if let Some(spec) = params.remove("sort") {
        return sort_param(&spec);
    }
    match body.get("sort") {
        Some(Value::Array(items)) => items.clone(),
        Some(Value::Null) | None => vec![],
        Some(one) => vec![one.clone()],
    }
}

/// Runs one page of a scroll and updates its context.
async fn page(node: &Node, ctx: &mut ScrollContext, first: bool) -> ApiResult<Value> {
    let mut body = ctx.body.clone();
    if let Some(after) = &ctx.search_after {
        body.insert("search_after".into(), after.clone());
    }
    if !first {
        body.insert("track_total_hits".into(), json!(false));
    }
    let session = node.engine.session()?;
    let mut out = quidditch_planner::search(
        &session,
        node.engine.indices(),
        &ctx.target,
        Some(&Value::Object(body)),
        &ctx.params,
    )
    .await?;
    if first {
        ctx.total = out["hits"]["total"].clone();
    } else if !ctx.total.is_null() {
        out["hits"]["total"] = ctx.total.clone();
    }
    if let Some(Value::Array(hits)) = out.get_mut("hits").and_then(|h| h.get_mut("hits")) {
        if let Some(last) = hits.last() {
            ctx.search_after = last.get("sort").cloned();
        }
        for hit in hits.iter_mut() {
            let Some(obj) = hit.as_object_mut() else { continue };
            if ctx.user_sort_keys == 0 {
                obj.remove("sort");
            } else if let Some(Value::Array(values)) = obj.get_mut("sort") {
                values.truncate(ctx.user_sort_keys);
            }
        }
    }
    Ok(out)
}

fn new_scroll_id() -> String {
    format!("{}", uuid::Uuid::new_v4().simple())
}

/// `_search` with `scroll`: the first page, and a scroll id for the rest.
pub async fn start(node: &Node, target: &str, params: &Params, body: &[u8]) -> ApiResult<Response> {
    let mut params = params.clone();
    let keep = keep_alive(params.remove("scroll").as_deref().unwrap_or_default())?;
    let mut body = match search_body(body)? {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ApiError::bad_request("request body must be an object")),
    };
    let from = params
        .get("from")
        .cloned()
        .map(Value::String)
        .or_else(|| body.get("from").cloned());
    if from.is_some_and(|f| f != json!(0) && f != json!("0")) {
        return Err(ApiError::new(
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: using [from] is not allowed in a scroll context;",
        ));
    }
    if body.contains_key("collapse") {
        return Err(ApiError::new(
            400,
            "illegal_argument_exception",
            "cannot use `collapse` in a scroll context",
        ));
    }
    if body.contains_key("search_after") {
        return Err(ApiError::new(
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: [search_after] cannot be used in a scroll context;",
        ));
    }
    let requested = user_sort(&body, &mut params);
    let is_doc = |s: &Value| s == &json!("_doc") || s.get("_doc").is_some();
    let mut sort: Vec<Value> = requested.into_iter().filter(|s| !is_doc(s)).collect();
    let user_sort_keys = sort.len();
    sort.push(json!({"_index": "asc"}));
    sort.push(json!({"_id": "asc"}));
    body.insert("sort".into(), Value::Array(sort));
    let mut ctx = ScrollContext {
        target: target.to_string(),
        params: params.clone(),
        body,
        user_sort_keys,
        search_after: None,
        total: Value::Null,
        keep_alive: keep,
        expires: Instant::now() + keep,
    };
    let mut out = page(node, &mut ctx, true).await?;
    let id = new_scroll_id();
    out["_scroll_id"] = json!(id);
    node.scrolls.insert(id, ctx)?;
    Ok(ok_json(&out))
}

fn missing_context(id: &str) -> ApiError {
    ApiError::new(
        404,
        "search_context_missing_exception",
        format!("No search context found for id [{id}]"),
    )
}

/// `POST /_search/scroll`: the next page of a scroll.
pub async fn next(
    State(node): State<Arc<Node>>,
    Query(params): Query<Params>,
    path_id: Option<Path<String>>,
    body: Bytes,
) -> ApiResult<Response> {
    let body = parse_body(&body)?.unwrap_or(Value::Null);
    let id = body
        .get("scroll_id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| params.get("scroll_id").cloned())
        .or_else(|| path_id.map(|Path(id)| id))
        .ok_or_else(|| {
            ApiError::new(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: scroll id is missing;",
            )
        })?;
    let keep = match body
        .get("scroll")
        .and_then(Value::as_str)
        .or(params.get("scroll").map(String::as_str))
    {
        Some(v) => Some(keep_alive(v)?),
        None => None,
    };
    let mut ctx = node.scrolls.take(&id).ok_or_else(|| missing_context(&id))?;
    if let Some(k) = keep {
        ctx.keep_alive = k;
    }
    ctx.expires = Instant::now() + ctx.keep_alive;
    // If the page fails, or the request goes away while it runs, the scroll
    // stays where it was, to be retried.
    let mut restore = Restore {
        scrolls: &node.scrolls,
        id: id.clone(),
        ctx: Some(ctx.clone()),
    };
    let mut out = page(&node, &mut ctx, false).await?;
    restore.ctx = None;
    out["_scroll_id"] = json!(id);
    node.scrolls.insert(id, ctx)?;
    Ok(ok_json(&out))
}

/// Puts a scroll back as it was unless its page completed.
struct Restore<'a> {
    scrolls: &'a Scrolls,
    id: String,
    ctx: Option<ScrollContext>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if let Some(ctx) = self.ctx.take() {
            // Full of other scrolls meanwhile: this one is lost, and the
            // next call says so (404).
            let _ = self.scrolls.insert(std::mem::take(&mut self.id), ctx);
        }
    }
}

/// `POST /_search/scroll` without a path id.
pub async fn next_body(state: State<Arc<Node>>, params: Query<Params>, body: Bytes) -> ApiResult<Response> {
    next(state, params, None, body).await
}

/// `POST /_search/scroll/{id}`.
pub async fn next_path(
    state: State<Arc<Node>>,
    params: Query<Params>,
    id: Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    next(state, params, Some(id), body).await
}

/// `DELETE /_search/scroll`: frees scrolls (`_all` frees every one).
pub async fn clear(State(node): State<Arc<Node>>, body: Bytes) -> ApiResult<Response> {
    let body = parse_body(&body)?.unwrap_or(Value::Null);
    let ids: Vec<String> = match body.get("scroll_id") {
        Some(Value::String(s)) => s.split(',').map(str::to_string).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => vec![],
    };
    let freed = if ids.iter().any(|i| i == "_all") {
        node.scrolls.clear()
    } else {
        ids.iter().filter(|id| node.scrolls.remove(id)).count()
    };
    Ok(ok_json(&json!({"succeeded": true, "num_freed": freed})))
}

/// `DELETE /_search/scroll/{ids}`.
pub async fn clear_path(State(node): State<Arc<Node>>, Path(ids): Path<String>) -> ApiResult<Response> {
    let freed = if ids == "_all" {
        node.scrolls.clear()
    } else {
        ids.split(',').filter(|id| node.scrolls.remove(id)).count()
    };
    Ok(ok_json(&json!({"succeeded": true, "num_freed": freed})))
}
