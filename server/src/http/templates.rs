//! Templates: `PUT|GET|DELETE|HEAD /_index_template/{name}`,
//! `/_component_template/{name}` and `/_template/{name}` (legacy),
//! `POST /_index_template/_simulate_index/{index}`,
//! `POST /_index_template/_simulate[/{name}]` and `GET /_cat/templates`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quidditch_index::templates::{
    ComponentTemplate, IndexTemplate, Kind, LegacyTemplate, SIMULATED, Templates,
};
use serde_json::{Value, json};

use super::cat::render_table;
use super::{ApiError, ApiResult, Params, bool_param, es_json, ok_json, parse_body};
use crate::node::Node;

/// Reads the templates off the async runtime (in a cluster, from etcd).
async fn read(node: &Arc<Node>) -> ApiResult<Templates> {
    let indices = Arc::clone(&node.indices);
    Ok(tokio::task::spawn_blocking(move || indices.templates()).await??)
}

/// Changes the templates off the async runtime and acknowledges it.
async fn change(
    node: &Arc<Node>,
    change: impl FnMut(&mut Templates) -> quidditch_index::Result<()> + Send + 'static,
) -> ApiResult<Response> {
    let indices = Arc::clone(&node.indices);
    tokio::task::spawn_blocking(move || indices.change_templates(change)).await??;
    Ok(ok_json(&json!({"acknowledged": true})))
}

fn required(body: &Bytes) -> ApiResult<Value> {
    parse_body(body)?.ok_or_else(|| ApiError::bad_request("request body is required"))
}

/// Parses a template of `name` from the request body and stores it with
/// `store` (`?create=true`: only a new one).
async fn put<T: Clone + Send + 'static>(
    node: &Arc<Node>,
    name: String,
    params: &Params,
    body: &Bytes,
    parse: impl FnOnce(&str, &Value) -> quidditch_index::Result<T>,
    store: fn(&mut Templates, &str, T, bool) -> quidditch_index::Result<()>,
) -> ApiResult<Response> {
    let create = bool_param(params, "create", false)?;
    let template = parse(&name, &required(body)?)?;
    change(node, move |all| store(all, &name, template.clone(), create)).await
}

/// `PUT|POST /_index_template/{name}`.
pub async fn put_index(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    put(
        &node,
        name,
        &params,
        &body,
        IndexTemplate::from_es,
        Templates::put_index,
    )
    .await
}

/// `PUT|POST /_component_template/{name}`.
pub async fn put_component(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    let parse = |_: &str, body: &Value| ComponentTemplate::from_es(body);
    put(&node, name, &params, &body, parse, Templates::put_component).await
}

/// `PUT|POST /_template/{name}`.
pub async fn put_legacy(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    let parse = |_: &str, body: &Value| LegacyTemplate::from_es(body);
    put(&node, name, &params, &body, parse, Templates::put_legacy).await
}

/// `GET /_template`.
pub async fn get_all_legacy(State(node): State<Arc<Node>>) -> ApiResult<Response> {
    view(&node, Kind::Legacy, None).await
}

/// `GET /_template/{name}`: names and wildcards; a name that names none is
/// a 404 with an empty object, as Elasticsearch answers it.
pub async fn get_legacy(State(node): State<Arc<Node>>, Path(name): Path<String>) -> ApiResult<Response> {
    match view(&node, Kind::Legacy, Some(&name)).await {
        Err(err) if err.status() == StatusCode::NOT_FOUND => Ok(es_json(StatusCode::NOT_FOUND, &json!({}))),
        other => other,
    }
}

/// `HEAD /_template/{name}`.
pub async fn exists_legacy(State(node): State<Arc<Node>>, Path(name): Path<String>) -> Response {
    exists(&node, Kind::Legacy, &name).await
}

/// `DELETE /_template/{name}`.
pub async fn delete_legacy(State(node): State<Arc<Node>>, Path(name): Path<String>) -> ApiResult<Response> {
    change(&node, move |all| all.delete(Kind::Legacy, &name)).await
}

async fn view(node: &Arc<Node>, kind: Kind, names: Option<&str>) -> ApiResult<Response> {
    let templates = read(node).await?;
    let chosen = templates.select(kind, names)?;
    Ok(ok_json(&templates.to_es(kind, &chosen)))
}

/// `GET /_index_template`.
pub async fn get_all_index(State(node): State<Arc<Node>>) -> ApiResult<Response> {
    view(&node, Kind::Index, None).await
}

/// `GET /_index_template/{name}`: names and wildcards.
pub async fn get_index(State(node): State<Arc<Node>>, Path(name): Path<String>) -> ApiResult<Response> {
    view(&node, Kind::Index, Some(&name)).await
}

/// `GET /_component_template`.
pub async fn get_all_component(State(node): State<Arc<Node>>) -> ApiResult<Response> {
    view(&node, Kind::Component, None).await
}

/// `GET /_component_template/{name}`: names and wildcards.
pub async fn get_component(State(node): State<Arc<Node>>, Path(name): Path<String>) -> ApiResult<Response> {
    view(&node, Kind::Component, Some(&name)).await
}

/// 200 when `names` names a template of `kind`, else 404 (or the status
/// of the error that kept the templates from being read).
async fn exists(node: &Arc<Node>, kind: Kind, names: &str) -> Response {
    let status = match read(node).await {
        Ok(templates) => match templates.select(kind, Some(names)) {
            Ok(found) if !found.is_empty() => StatusCode::OK,
            _ => StatusCode::NOT_FOUND,
        },
        Err(err) => err.status(),
    };
    status.into_response()
}

/// `HEAD /_index_template/{name}`.
pub async fn exists_index(State(node): State<Arc<Node>>, Path(name): Path<String>) -> Response {
    exists(&node, Kind::Index, &name).await
}

/// `HEAD /_component_template/{name}`.
pub async fn exists_component(State(node): State<Arc<Node>>, Path(name): Path<String>) -> Response {
    exists(&node, Kind::Component, &name).await
}

/// `DELETE /_index_template/{name}`.
pub async fn delete_index(State(node): State<Arc<Node>>, Path(name): Path<String>) -> ApiResult<Response> {
    change(&node, move |all| all.delete(Kind::Index, &name)).await
}

/// `DELETE /_component_template/{name}`.
pub async fn delete_component(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    change(&node, move |all| all.delete(Kind::Component, &name)).await
}

/// `POST /_index_template/_simulate_index/{index}`.
pub async fn simulate_index(State(node): State<Arc<Node>>, Path(index): Path<String>) -> ApiResult<Response> {
    Ok(ok_json(&read(&node).await?.simulate(&index)))
}

/// `POST /_index_template/_simulate`: the index template of the body.
pub async fn simulate(State(node): State<Arc<Node>>, body: Bytes) -> ApiResult<Response> {
    simulate_template(&node, None, &body).await
}

/// `POST /_index_template/_simulate/{name}`: the stored index template of
/// the name, or the body's in its place.
pub async fn simulate_named(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    simulate_template(&node, Some(name), &body).await
}

async fn simulate_template(node: &Arc<Node>, name: Option<String>, body: &Bytes) -> ApiResult<Response> {
    let given = parse_body(body)?
        .map(|body| IndexTemplate::from_es(name.as_deref().unwrap_or(SIMULATED), &body))
        .transpose()?;
    Ok(ok_json(
        &read(node).await?.simulate_template(name.as_deref(), given)?,
    ))
}

/// `GET /_cat/templates`.
pub async fn cat(State(node): State<Arc<Node>>, Query(params): Query<Params>) -> ApiResult<Response> {
    cat_view(&node, None, &params).await
}

/// `GET /_cat/templates/{name}`.
pub async fn cat_named(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult<Response> {
    cat_view(&node, Some(&name), &params).await
}

async fn cat_view(node: &Arc<Node>, names: Option<&str>, params: &Params) -> ApiResult<Response> {
    let templates = read(node).await?;
    // The cat API shows what matches, and nothing for an unknown name.
    let chosen = |kind| templates.select(kind, names).unwrap_or_default();
    let list = |v: &Value| {
        let items: Vec<&str> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        format!("[{}]", items.join(", "))
    };
    let version = |t: &Value| t.get("version").map(Value::to_string).unwrap_or_default();
    let mut rows: Vec<Vec<String>> = Vec::new();
    if let Value::Array(shown) = templates.to_es(Kind::Index, &chosen(Kind::Index))["index_templates"].take()
    {
        for row in &shown {
            let t = &row["index_template"];
            rows.push(vec![
                row["name"].as_str().unwrap_or_default().to_string(),
                list(&t["index_patterns"]),
                t["priority"].as_u64().unwrap_or(0).to_string(),
                version(t),
                list(&t["composed_of"]),
            ]);
        }
    }
    if let Value::Object(shown) = templates.to_es(Kind::Legacy, &chosen(Kind::Legacy)) {
        for (name, t) in &shown {
            rows.push(vec![
                name.clone(),
                list(&t["index_patterns"]),
                t["order"].to_string(),
                version(t),
                String::new(),
            ]);
        }
    }
    rows.sort();
    render_table(
        &["name", "index_patterns", "order", "version", "composed_of"],
        rows,
        params,
    )
}
