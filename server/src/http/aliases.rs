//! Aliases: `POST /_aliases`, `PUT|DELETE /{index}/_alias/{name}`, the
//! `GET`/`HEAD` views of `_alias` and `_cat/aliases`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quidditch_index::Indices;
use quidditch_index::indices::{AliasAction, AliasState, alias_meta, wildcard_match};
use serde_json::{Map, Value, json};

use super::cat::render_table;
use super::{ApiError, ApiResult, Params, es_json, ok_json, parse_body};
use crate::node::Node;

/// `POST /_aliases`: `{"actions": [{"add" | "remove" | "remove_index": {...}}]}`.
pub async fn update(State(node): State<Arc<Node>>, body: Bytes) -> ApiResult<Response> {
    let body = parse_body(&body)?.ok_or_else(|| ApiError::bad_request("request body is required"))?;
    let indices = Arc::clone(&node.indices);
    tokio::task::spawn_blocking(move || {
        let actions = parse_actions(&indices, &body)?;
        indices.update_aliases(&actions)
    })
    .await??;
    Ok(ok_json(&json!({"acknowledged": true, "errors": false})))
}

/// `PUT|POST /{index}/_alias/{name}`, with an optional alias definition.
pub async fn put(
    State(node): State<Arc<Node>>,
    Path((index, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let definition = parse_body(&body)?.unwrap_or(Value::Null);
    let indices = Arc::clone(&node.indices);
    tokio::task::spawn_blocking(move || {
        let targets = action_indices(&indices, std::slice::from_ref(&index))?;
        let actions = names(&name)
            .into_iter()
            .map(|alias| {
                Ok(AliasAction::Add {
                    indices: targets.clone(),
                    meta: alias_meta(&alias, &definition)?,
                    alias,
                })
            })
            .collect::<quidditch_index::Result<Vec<_>>>()?;
        indices.update_aliases(&actions)
    })
    .await??;
    Ok(ok_json(&json!({"acknowledged": true})))
}

/// `DELETE /{index}/_alias/{name}`: names and wildcards; matching none is a 404.
pub async fn delete(
    State(node): State<Arc<Node>>,
    Path((index, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let indices = Arc::clone(&node.indices);
    tokio::task::spawn_blocking(move || {
        let action = AliasAction::Remove {
            indices: action_indices(&indices, std::slice::from_ref(&index))?,
            aliases: names(&name),
            must_exist: None,
        };
        indices.update_aliases(&[action])
    })
    .await??;
    Ok(ok_json(&json!({"acknowledged": true})))
}

/// `GET /_alias` and `GET /_aliases`: every index with its aliases.
pub async fn get_all(State(node): State<Arc<Node>>) -> ApiResult<Response> {
    view(&node, None, None)
}

/// `GET /_alias/{name}`.
pub async fn get_named(State(node): State<Arc<Node>>, Path(name): Path<String>) -> ApiResult<Response> {
    view(&node, None, Some(&name))
}

/// `GET /{index}/_alias`.
pub async fn get_of(State(node): State<Arc<Node>>, Path(index): Path<String>) -> ApiResult<Response> {
    view(&node, Some(&index), None)
}

/// `GET /{index}/_alias/{name}`.
pub async fn get_of_named(
    State(node): State<Arc<Node>>,
    Path((index, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    view(&node, Some(&index), Some(&name))
}

/// `HEAD /_alias/{name}`.
pub async fn exists(State(node): State<Arc<Node>>, Path(name): Path<String>) -> Response {
    exists_status(&node, None, &name).into_response()
}

/// `HEAD /{index}/_alias/{name}`.
pub async fn exists_of(
    State(node): State<Arc<Node>>,
    Path((index, name)): Path<(String, String)>,
) -> Response {
    exists_status(&node, Some(&index), &name).into_response()
}

fn exists_status(node: &Node, index: Option<&str>, name: &str) -> StatusCode {
    match selected(&node.indices, index, Some(name)) {
        Ok((found, missing)) if missing.is_empty() && !found.is_empty() => StatusCode::OK,
        _ => StatusCode::NOT_FOUND,
    }
}

/// `GET /_cat/aliases[/{name}]`.
pub async fn cat(State(node): State<Arc<Node>>, Query(params): Query<Params>) -> ApiResult<Response> {
    cat_rows(&node, None, &params)
}

/// `GET /_cat/aliases/{name}`.
pub async fn cat_named(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult<Response> {
    cat_rows(&node, Some(&name), &params)
}

fn cat_rows(node: &Node, name: Option<&str>, params: &Params) -> ApiResult<Response> {
    let (found, _) = selected(&node.indices, None, name)?;
    let mut rows: Vec<Vec<String>> = found
        .iter()
        .flat_map(|(index, aliases)| {
            aliases.iter().map(move |(alias, meta)| {
                let write = meta.is_write_index.map_or("-".to_string(), |w| w.to_string());
                vec![
                    alias.clone(),
                    index.clone(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    write,
                ]
            })
        })
        .collect();
    rows.sort();
    render_table(
        &[
            "alias",
            "index",
            "filter",
            "routing.index",
            "routing.search",
            "is_write_index",
        ],
        rows,
        params,
    )
}

/// Elasticsearch's answer: `{"<index>": {"aliases": {"<alias>": {...}}}}`;
/// an alias named without a wildcard that names no index makes it a 404
/// that says so beside what was found.
fn view(node: &Node, index: Option<&str>, name: Option<&str>) -> ApiResult<Response> {
    let (found, missing) = selected(&node.indices, index, name)?;
    let mut out = Map::new();
    for (index, aliases) in found {
        out.insert(index, json!({ "aliases": aliases }));
    }
    if missing.is_empty() {
        return Ok(ok_json(&Value::Object(out)));
    }
    let what = if missing.len() == 1 { "alias" } else { "aliases" };
    out.insert(
        "error".into(),
        json!(format!("{what} [{}] missing", missing.join(","))),
    );
    out.insert("status".into(), json!(404));
    Ok(es_json(StatusCode::NOT_FOUND, &Value::Object(out)))
}

/// The indices of `index` (all when `None`) with their aliases that match
/// `name` (all when `None`, every index listed then), and the names
/// without a wildcard that matched no alias.
fn selected(
    indices: &Indices,
    index: Option<&str>,
    name: Option<&str>,
) -> quidditch_index::Result<(AliasState, Vec<String>)> {
    let mut state = indices.alias_state();
    if let Some(expr) = index {
        let wanted = indices.resolve_names(expr)?;
        state.retain(|index, _| wanted.contains(index));
    }
    let Some(name) = name else {
        return Ok((state, Vec::new()));
    };
    let patterns = names(name);
    let all = |p: &str| p == "_all" || p == "*";
    for aliases in state.values_mut() {
        aliases.retain(|alias, _| patterns.iter().any(|p| all(p) || wildcard_match(p, alias)));
    }
    state.retain(|_, aliases| !aliases.is_empty());
    let missing = patterns
        .into_iter()
        .filter(|p| !all(p) && !p.contains('*'))
        .filter(|p| !state.values().any(|aliases| aliases.contains_key(p)))
        .collect();
    Ok((state, missing))
}

/// A comma-separated list of names.
fn names(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// The actions of a `POST /_aliases` body, their index expressions
/// resolved to index names.
fn parse_actions(indices: &Indices, body: &Value) -> quidditch_index::Result<Vec<AliasAction>> {
    use quidditch_index::Error;
    let list = body
        .get("actions")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::illegal_argument("[actions] must be an array of alias actions"))?;
    if list.is_empty() {
        return Err(Error::BadRequest {
            es_type: "action_request_validation_exception",
            reason: "Validation Failed: 1: no actions specified;".into(),
        });
    }
    let mut actions = Vec::new();
    for action in list {
        let (kind, spec) = match action
            .as_object()
            .map(|o| o.iter().collect::<Vec<_>>())
            .as_deref()
        {
            Some([(kind, spec)]) => (kind.as_str(), *spec),
            _ => {
                return Err(Error::illegal_argument(
                    "each alias action must be an object with one of [add, remove, remove_index]",
                ));
            }
        };
        let spec = spec
            .as_object()
            .ok_or_else(|| Error::illegal_argument(format!("[{kind}] must be an object")))?;
        let targets = one_or_many(spec, "index", "indices")?
            .ok_or_else(|| Error::illegal_argument(format!("[{kind}] needs [index] or [indices]")))?;
        if kind == "remove_index" && targets.iter().any(|t| t == "_all" || t.contains('*')) {
            return Err(Error::illegal_argument(
                "Wildcard expressions or all indices are not allowed in [remove_index]",
            ));
        }
        let resolved = action_indices(indices, &targets)?;
        let aliases = || {
            one_or_many(spec, "alias", "aliases")?
                .ok_or_else(|| Error::illegal_argument(format!("[{kind}] needs [alias] or [aliases]")))
        };
        match kind {
            "add" => {
                let mut definition = spec.clone();
                for key in ["index", "indices", "alias", "aliases"] {
                    definition.remove(key);
                }
                for alias in aliases()? {
                    if alias.contains('*') {
                        return Err(Error::illegal_argument(format!(
                            "alias [{alias}]: an alias to add cannot be a wildcard"
                        )));
                    }
                    actions.push(AliasAction::Add {
                        indices: resolved.clone(),
                        meta: alias_meta(&alias, &Value::Object(definition.clone()))?,
                        alias,
                    });
                }
            }
            "remove" => {
                let must_exist = match spec.get("must_exist") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(
                        v.as_bool()
                            .ok_or_else(|| Error::illegal_argument("[must_exist] must be a boolean"))?,
                    ),
                };
                actions.push(AliasAction::Remove {
                    indices: resolved,
                    aliases: aliases()?,
                    must_exist,
                });
            }
            "remove_index" => actions.push(AliasAction::RemoveIndex { indices: resolved }),
            other => {
                return Err(Error::illegal_argument(format!(
                    "unknown alias action [{other}], expected one of [add, remove, remove_index]"
                )));
            }
        }
    }
    Ok(actions)
}

/// The open indices an action's index expressions name: a wildcard that
/// names none is a 404 (indices that did not open are left out of it).
fn action_indices(indices: &Indices, targets: &[String]) -> quidditch_index::Result<Vec<String>> {
    let open = indices.alias_state();
    let mut resolved = Vec::new();
    for expr in targets {
        let named: Vec<String> = indices
            .resolve_concrete_names(expr)?
            .into_iter()
            .filter(|name| open.contains_key(name) || !(expr == "_all" || expr.contains('*')))
            .collect();
        if named.is_empty() {
            return Err(quidditch_index::Error::IndexNotFound(expr.clone()));
        }
        for name in named {
            if !resolved.contains(&name) {
                resolved.push(name);
            }
        }
    }
    Ok(resolved)
}

/// The strings under `one` (a string) or `many` (an array of strings).
fn one_or_many(
    spec: &Map<String, Value>,
    one: &str,
    many: &str,
) -> quidditch_index::Result<Option<Vec<String>>> {
    let bad =
        |key: &str| quidditch_index::Error::illegal_argument(format!("[{key}] must be a string or strings"));
    match (spec.get(one), spec.get(many)) {
        (Some(Value::String(s)), None) => Ok(Some(names(s))),
        (None, Some(Value::Array(items))) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad(many)))
            .collect::<quidditch_index::Result<Vec<_>>>()
            .map(Some),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(quidditch_index::Error::illegal_argument(format!(
            "[{one}] and [{many}] cannot be used together"
        ))),
        (Some(_), None) => Err(bad(one)),
        (None, Some(_)) => Err(bad(many)),
    }
}
