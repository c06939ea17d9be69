//! The Elasticsearch-compatible HTTP API.

mod aliases;
mod analyze;
mod auth;
mod by_query;
mod cat;
mod cluster;
mod docs;
mod error;
mod field_caps;
mod indices;
mod metrics;
mod nodes;
mod reindex;
mod rollover;
mod root;
mod scroll;
mod search;
mod sql;
mod stats;
mod templates;
mod terms_enum;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::Value;

pub use error::{ApiError, ApiResult};
pub use metrics::SearchMetrics;
pub use scroll::Scrolls;

use crate::node::Node;

/// Largest request body accepted (Elasticsearch's `http.max_content_length`).
pub const MAX_BODY: usize = 100 << 20;

/// Query-string parameters.
pub type Params = HashMap<String, String>;

/// The router of a node.
pub fn router(node: Arc<Node>) -> Router {
    let alias = put(aliases::put)
        .post(aliases::put)
        .delete(aliases::delete)
        .get(aliases::get_of_named)
        .head(aliases::exists_of);
    Router::new()
        .route("/", get(root::info).head(root::head))
        .route("/_bulk", post(docs::bulk).put(docs::bulk))
        .route("/_mget", post(docs::mget).get(docs::mget))
        .route("/{index}/_mget", post(docs::mget_index).get(docs::mget_index))
        .route("/_sql", post(sql::sql).get(sql::sql))
        .route("/_analyze", post(analyze::analyze).get(analyze::analyze))
        .route(
            "/_validate/query",
            post(search::validate_all).get(search::validate_all),
        )
        .route(
            "/{index}/_validate/query",
            post(search::validate).get(search::validate),
        )
        .route(
            "/{index}/_analyze",
            post(analyze::analyze_index).get(analyze::analyze_index),
        )
        .route("/_search", post(search::search_all).get(search::search_all))
        .route("/_count", post(search::count_all).get(search::count_all))
        .route("/_msearch", post(search::msearch).get(search::msearch))
        .route(
            "/_search/scroll",
            post(scroll::next_body)
                .get(scroll::next_body)
                .delete(scroll::clear),
        )
        .route(
            "/_search/scroll/{id}",
            post(scroll::next_path)
                .get(scroll::next_path)
                .delete(scroll::clear_path),
        )
        .route("/{alias}/_rollover", post(rollover::rollover))
        .route("/{alias}/_rollover/{new_index}", post(rollover::rollover_to))
        .route(
            "/{index}/_terms_enum",
            post(terms_enum::terms_enum).get(terms_enum::terms_enum),
        )
        .route("/{index}/_delete_by_query", post(by_query::delete_by_query))
        .route("/{index}/_update_by_query", post(by_query::update_by_query))
        .route("/{index}/_search", post(search::search).get(search::search))
        .route("/{index}/_count", post(search::count).get(search::count))
        .route(
            "/{index}/_msearch",
            post(search::msearch_index).get(search::msearch_index),
        )
        .route("/_aliases", post(aliases::update).get(aliases::get_all))
        .route("/_alias", get(aliases::get_all))
        .route("/_alias/{name}", get(aliases::get_named).head(aliases::exists))
        .route("/{index}/_alias", get(aliases::get_of))
        .route("/{index}/_aliases", get(aliases::get_of))
        .route("/{index}/_alias/{name}", alias.clone())
        .route("/{index}/_aliases/{name}", alias)
        .route("/_cat/aliases", get(aliases::cat))
        .route("/_cat/aliases/{name}", get(aliases::cat_named))
        .route("/_cat/indices", get(cat::indices))
        .route("/_cat/templates", get(templates::cat))
        .route("/_cat/templates/{name}", get(templates::cat_named))
        .route("/_index_template", get(templates::get_all_index))
        .route(
            "/_index_template/{name}",
            put(templates::put_index)
                .post(templates::put_index)
                .get(templates::get_index)
                .delete(templates::delete_index)
                .head(templates::exists_index),
        )
        .route(
            "/_index_template/_simulate_index/{index}",
            post(templates::simulate_index),
        )
        // Other methods take `_simulate` as a template's name.
        .route(
            "/_index_template/_simulate",
            post(templates::simulate)
                .put(|node, params, body| templates::put_index(node, Path("_simulate".into()), params, body))
                .get(|node| templates::get_index(node, Path("_simulate".into())))
                .delete(|node| templates::delete_index(node, Path("_simulate".into())))
                .head(|node| templates::exists_index(node, Path("_simulate".into()))),
        )
        .route(
            "/_index_template/_simulate/{name}",
            post(templates::simulate_named),
        )
        .route("/_template", get(templates::get_all_legacy))
        .route(
            "/_template/{name}",
            put(templates::put_legacy)
                .post(templates::put_legacy)
                .get(templates::get_legacy)
                .delete(templates::delete_legacy)
                .head(templates::exists_legacy),
        )
        .route("/_component_template", get(templates::get_all_component))
        .route(
            "/_component_template/{name}",
            put(templates::put_component)
                .post(templates::put_component)
                .get(templates::get_component)
                .delete(templates::delete_component)
                .head(templates::exists_component),
        )
        .route("/_cat/count", get(cat::count).post(cat::count))
        .route("/_cat/count/{index}", get(cat::count_of).post(cat::count_of))
        .route("/_cat/nodes", get(cluster::cat_nodes))
        .route("/_nodes", get(nodes::all))
        .route("/_nodes/{x}", get(nodes::nodes_or_metrics))
        .route("/_nodes/{nodes}/{metrics}", get(nodes::of))
        .route("/_cat/shards", get(cluster::cat_shards))
        .route("/_stats", get(stats::all))
        .route("/_stats/{metric}", get(stats::all_metric))
        .route("/{index}/_stats", get(stats::of))
        .route("/{index}/_stats/{metric}", get(stats::of_metric))
        .route("/_cat/health", get(cluster::cat_health))
        .route("/_cat/segments", get(cluster::cat_segments))
        .route("/_cat/segments/{index}", get(cluster::cat_segments_of))
        .route("/_cluster/health", get(cluster::health))
        .route(
            "/_cluster/settings",
            get(cluster::get_settings).put(cluster::put_settings),
        )
        // `GET /metrics` is the node's metrics; the other methods keep
        // their meaning for an index named `metrics`.
        .route(
            "/metrics",
            get(metrics::metrics)
                .put(|node, body| indices::create(node, Path(metrics::NAME.to_string()), body))
                .delete(|node| indices::delete(node, Path(metrics::NAME.to_string())))
                .head(|node| indices::exists(node, Path(metrics::NAME.to_string()))),
        )
        .route("/_cluster/health/{index}", get(cluster::health_of_index))
        .route("/_cat/indices/{index}", get(cat::indices_of))
        .route("/_refresh", post(indices::refresh_all).get(indices::refresh_all))
        // A refresh commits every shard, which is what a flush does.
        .route("/_flush", post(indices::refresh_all).get(indices::refresh_all))
        .route("/_forcemerge", post(indices::force_merge_all))
        .route("/_reindex", post(reindex::reindex))
        .route(
            "/_field_caps",
            get(field_caps::field_caps_all).post(field_caps::field_caps_all),
        )
        .route(
            "/{index}",
            put(indices::create)
                .delete(indices::delete)
                .head(indices::exists)
                .get(indices::get),
        )
        .route(
            "/{index}/_mapping",
            get(indices::mapping)
                .put(indices::put_mapping)
                .post(indices::put_mapping),
        )
        .route("/_mapping", get(indices::mapping_all))
        .route("/_mapping/field/{fields}", get(indices::field_mapping_all))
        .route("/{index}/_mapping/field/{fields}", get(indices::field_mapping))
        .route("/_settings", get(indices::settings_all))
        .route("/{index}/_settings", get(indices::settings))
        .route("/{index}/_refresh", post(indices::refresh).get(indices::refresh))
        .route("/{index}/_flush", post(indices::refresh).get(indices::refresh))
        .route("/{index}/_forcemerge", post(indices::force_merge))
        .route(
            "/{index}/_field_caps",
            get(field_caps::field_caps).post(field_caps::field_caps),
        )
        .route("/{index}/_bulk", post(docs::bulk_index).put(docs::bulk_index))
        .route("/{index}/_doc", post(docs::index_auto_id))
        .route(
            "/{index}/_doc/{id}",
            put(docs::index_doc)
                .post(docs::index_doc)
                .get(docs::get)
                .delete(docs::delete)
                .head(docs::head),
        )
        .route(
            "/{index}/_create/{id}",
            put(docs::create_doc).post(docs::create_doc),
        )
        .route("/{index}/_update/{id}", post(docs::update))
        .route(
            "/{index}/_source/{id}",
            get(docs::get_source).head(docs::head_source),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn(shape_json))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&node),
            coordinator_only,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&node),
            auth::require,
        ))
        .layer(axum::middleware::from_fn(compatible_media_type))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(node)
}

async fn not_found(uri: axum::http::Uri, method: axum::http::Method) -> ApiError {
    ApiError::new(
        400,
        "illegal_argument_exception",
        format!("no handler found for uri [{}] and method [{method}]", uri.path()),
    )
}

/// On a node without the coordinator role, only the views of the node and
/// the cluster (`/`, `/_cluster/...`, `/_cat/...`, `/_nodes`) are served:
/// searches and writes go through coordinators, which see every shard.
async fn coordinator_only(
    axum::extract::State(node): axum::extract::State<Arc<Node>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let view = path == "/"
        || path.starts_with("/_cluster/")
        || path.starts_with("/_cat/")
        || path == "/_nodes"
        || path.starts_with("/_nodes/");
    if view || node.roles.contains(&quidditch_cluster::Role::Coordinator) {
        return next.run(request).await;
    }
    ApiError::new(
        400,
        "illegal_argument_exception",
        format!(
            "node [{}] does not have the coordinator role: send searches and writes to a coordinator",
            node.node_id
        ),
    )
    .into_response()
}

/// Elasticsearch's response parameters, on every API that answers JSON:
/// `filter_path` keeps the parts of a successful answer it names (an error
/// is answered whole, as Elasticsearch answers one), and `pretty` indents.
async fn shape_json(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let query = request.uri().query().unwrap_or_default();
    if !query.contains("filter_path") && !query.contains("pretty") {
        return next.run(request).await;
    }
    let params = axum::extract::Query::<Params>::try_from_uri(request.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let filter = params.get("filter_path").cloned();
    let pretty = params.get("pretty").is_some_and(|v| v != "false");
    let resp = next.run(request).await;
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct == "application/json");
    let applied = resp.extensions().get::<FilterApplied>().is_some();
    if !json || ((filter.is_none() || applied) && !pretty) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::internal("the response could not be read back to shape it").into_response();
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    if let Some(spec) = filter.filter(|_| parts.status.is_success() && !applied) {
        value = search::filter_path(&value, &spec);
    }
    let mut out = match pretty {
        true => serde_json::to_vec_pretty(&value),
        false => serde_json::to_vec(&value),
    }
    .unwrap_or_default();
    if pretty {
        out.push(b'\n');
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(out))
}

/// Marks a response its handler already cut to the request's `filter_path`
/// (a bulk response, written without a tree of its thousands of items).
#[derive(Debug, Clone, Copy)]
pub struct FilterApplied;

/// The `compatible-with` version a request asks for in `Accept` or
/// `Content-Type` (`application/vnd.elasticsearch+json; compatible-with=8`).
fn compatible_with(headers: &axum::http::HeaderMap) -> Option<String> {
    [header::ACCEPT, header::CONTENT_TYPE].iter().find_map(|name| {
        let value = headers.get(name)?.to_str().ok()?;
        value.split(',').find_map(|media| {
            let mut parts = media.split(';').map(str::trim);
            if !parts.next()?.starts_with("application/vnd.elasticsearch+") {
                return None;
            }
            parts.find_map(|p| p.strip_prefix("compatible-with=").map(str::to_string))
        })
    })
}

/// Answers a request that asked for Elasticsearch's versioned media type
/// in that media type, as Elasticsearch does.
async fn compatible_media_type(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let version = compatible_with(request.headers());
    let mut resp = next.run(request).await;
    if let Some(v) = version
        && resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|ct| ct == "application/json")
        && let Ok(value) =
            HeaderValue::from_str(&format!("application/vnd.elasticsearch+json;compatible-with={v}"))
    {
        resp.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    resp
}

/// A JSON response with Elasticsearch's product header.
pub fn es_json(status: StatusCode, body: &Value) -> Response {
    es_json_bytes(status, serde_json::to_vec(body).unwrap_or_default())
}

/// A JSON response with Elasticsearch's product header, from serialized JSON.
pub fn es_json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-elastic-product", HeaderValue::from_static("Elasticsearch"));
    resp
}

/// A 200 JSON response.
pub fn ok_json(body: &Value) -> Response {
    es_json(StatusCode::OK, body)
}

/// A boolean query parameter, `default` when absent (an empty value, as in
/// `?flush`, is `true`).
pub fn bool_param(params: &Params, name: &str, default: bool) -> ApiResult<bool> {
    match params.get(name).map(String::as_str) {
        None => Ok(default),
        Some("" | "true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(ApiError::new(
            400,
            "illegal_argument_exception",
            format!("Failed to parse value [{other}] as only [true] or [false] are allowed."),
        )),
    }
}

/// Parses an optional JSON body.
pub fn parse_body(body: &[u8]) -> ApiResult<Option<Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| ApiError::bad_json(&e))
}
