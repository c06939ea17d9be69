//! Templates: `PUT|GET|DELETE|HEAD /_index_template/{name}` and
//! `/_component_template/{name}`, `POST /_index_template/_simulate_index/{index}`
//! and `GET /_cat/templates`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quidditch_index::templates::{ComponentTemplate, IndexTemplate, Kind, Templates};
use serde_json::{Value, json};

use super::cat::render_table;
use super::{ApiError, ApiResult, Params, bool_param, ok_json, parse_body};
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

/// `PUT|POST /_index_template/{name}` (`?create=true`: only a new one).
pub async fn put_index(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    let create = bool_param(&params, "create", false)?;
    let template = IndexTemplate::from_es(&name, &required(&body)?)?;
    change(&node, move |all| all.put_index(&name, template.clone(), create)).await
}

/// `PUT|POST /_component_template/{name}` (`?create=true`: only a new one).
pub async fn put_component(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    let create = bool_param(&params, "create", false)?;
    let template = ComponentTemplate::from_es(&required(&body)?)?;
    change(&node, move |all| {
        all.put_component(&name, template.clone(), create)
    })
    .await
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

async fn exists(node: &Arc<Node>, kind: Kind, names: &str) -> ApiResult<Response> {
    let found = read(node).await?.select(kind, Some(names))?;
    let status = match found.is_empty() {
        true => StatusCode::NOT_FOUND,
        false => StatusCode::OK,
    };
    Ok(status.into_response())
}

/// `HEAD /_index_template/{name}`.
pub async fn exists_index(State(node): State<Arc<Node>>, Path(name): Path<String>) -> Response {
    exists(&node, Kind::Index, &name)
        .await
        .unwrap_or_else(|err| err.status().into_response())
}

/// `HEAD /_component_template/{name}`.
pub async fn exists_component(State(node): State<Arc<Node>>, Path(name): Path<String>) -> Response {
    exists(&node, Kind::Component, &name)
        .await
        .unwrap_or_else(|err| err.status().into_response())
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
    let names = match names {
        None => templates.select(Kind::Index, None)?,
        // The cat API shows what matches, and nothing for an unknown name.
        Some(names) => templates.select(Kind::Index, Some(names)).unwrap_or_default(),
    };
    let rows = match templates.to_es(Kind::Index, &names)["index_templates"].take() {
        Value::Array(rows) => rows,
        _ => Vec::new(),
    };
    let list = |v: &Value| {
        let items: Vec<&str> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        format!("[{}]", items.join(", "))
    };
    let rows = rows
        .iter()
        .map(|row| {
            let t = &row["index_template"];
            vec![
                row["name"].as_str().unwrap_or_default().to_string(),
                list(&t["index_patterns"]),
                t["priority"].as_u64().unwrap_or(0).to_string(),
                t.get("version").map(Value::to_string).unwrap_or_default(),
                list(&t["composed_of"]),
            ]
        })
        .collect();
    render_table(
        &["name", "index_patterns", "order", "version", "composed_of"],
        rows,
        params,
    )
}
