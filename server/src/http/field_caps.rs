//! `_field_caps`: the type of each field across indices, and whether it can
//! be searched and aggregated, in Elasticsearch's response shape (as tools
//! that build queries from it expect).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use quidditch_index::indices::wildcard_match;
use quidditch_index::mapping::{FieldType, Mapping};
use serde_json::{Map, Value, json};

use super::{ApiError, ApiResult, Params, bool_param, ok_json, parse_body};
use crate::node::Node;

/// `GET|POST /{index}/_field_caps`.
pub async fn field_caps(
    State(node): State<Arc<Node>>,
    Path(target): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    respond(&node, &target, &params, &body)
}

/// `GET|POST /_field_caps`: every index.
pub async fn field_caps_all(
    State(node): State<Arc<Node>>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    respond(&node, "_all", &params, &body)
}

fn respond(node: &Node, target: &str, params: &Params, body: &[u8]) -> ApiResult<Response> {
    let body = parse_body(body)?;
    let patterns = patterns(params.get("fields"), body.as_ref().and_then(|b| b.get("fields")))?;
    let types: Option<BTreeSet<&str>> = params
        .get("types")
        .map(|t| t.split(',').map(str::trim).filter(|t| !t.is_empty()).collect());
    let include_unmapped = bool_param(params, "include_unmapped", false)?;
    let mut indices: Vec<(String, Mapping)> = node
        .indices
        .resolve(target)?
        .iter()
        .map(|index| (index.name(), index.mapping()))
        .collect();
    indices.sort_by(|a, b| a.0.cmp(&b.0));
    let mut fields = merge(&indices, &patterns, include_unmapped);
    if let Some(types) = &types {
        for by_type in fields.values_mut() {
            by_type.retain(|ty, _| types.contains(ty.as_str()));
        }
        fields.retain(|_, by_type| !by_type.is_empty());
    }
    Ok(ok_json(&json!({
        "indices": indices.iter().map(|(name, _)| name).collect::<Vec<_>>(),
        "fields": fields,
    })))
}

/// The field patterns of the `fields` parameter or body (a list or a
/// comma-separated string); at least one is needed, as Elasticsearch asks.
fn patterns(param: Option<&String>, body: Option<&Value>) -> ApiResult<Vec<String>> {
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut out = param.map(|p| split(p)).unwrap_or_default();
    match body {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => out.extend(split(s)),
        Some(Value::Array(items)) => {
            for item in items {
                let s = item.as_str().ok_or_else(|| {
                    ApiError::bad_request(format!("[fields] must hold strings, got [{item}]"))
                })?;
                out.extend(split(s));
            }
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "[fields] must be a string or a list of strings, got [{other}]"
            )));
        }
    }
    if out.is_empty() {
        return Err(ApiError::new(
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: specified fields can't be null or empty;",
        ));
    }
    Ok(out)
}

/// What one index says of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Caps {
    ty: &'static str,
    metadata: bool,
    searchable: bool,
    aggregatable: bool,
}

/// Every field of an index, by path: the metadata fields, each mapped
/// field and multi-field, and the objects their dotted paths pass through.
fn index_fields(mapping: &Mapping) -> BTreeMap<String, Caps> {
    let meta = |ty, searchable, aggregatable| Caps {
        ty,
        metadata: true,
        searchable,
        aggregatable,
    };
    let mut out = BTreeMap::from([
        ("_id".to_string(), meta("_id", true, false)),
        ("_index".to_string(), meta("_index", true, true)),
        ("_source".to_string(), meta("_source", false, false)),
    ]);
    for path in mapping.fields.keys() {
        let mut end = 0;
        while let Some(dot) = path[end..].find('.') {
            end += dot;
            out.insert(
                path[..end].to_string(),
                Caps {
                    ty: "object",
                    metadata: false,
                    searchable: false,
                    aggregatable: false,
                },
            );
            end += 1;
        }
    }
    for column in mapping.columns() {
        let ty = column.mapping.ty;
        out.insert(
            column.path,
            Caps {
                ty: ty.name(),
                metadata: false,
                searchable: true,
                // Text has no doc values (nor fielddata) to aggregate.
                aggregatable: ty != FieldType::Text,
            },
        );
    }
    out
}

/// A field's types, each with the indices that map it so and what they
/// say of it.
type ByType<'a> = BTreeMap<&'static str, Vec<(&'a str, Caps)>>;

/// The fields of `indices` that match `patterns`, merged by path and type
/// as Elasticsearch merges them: a field of one type in every index is one
/// entry; otherwise each type names its indices, and with
/// `include_unmapped` the indices without the field are listed under
/// `unmapped`.
fn merge(
    indices: &[(String, Mapping)],
    patterns: &[String],
    include_unmapped: bool,
) -> BTreeMap<String, BTreeMap<String, Value>> {
    let mut seen: BTreeMap<String, ByType> = BTreeMap::new();
    for (name, mapping) in indices {
        for (path, caps) in index_fields(mapping) {
            if patterns.iter().any(|p| wildcard_match(p, &path)) {
                seen.entry(path)
                    .or_default()
                    .entry(caps.ty)
                    .or_default()
                    .push((name, caps));
            }
        }
    }
    let mut out = BTreeMap::new();
    for (path, by_type) in seen {
        let present: usize = by_type.values().map(Vec::len).sum();
        let unmapped: Vec<&str> = if include_unmapped && present < indices.len() {
            let mapped: BTreeSet<&str> = by_type.values().flatten().map(|(n, _)| *n).collect();
            indices
                .iter()
                .map(|(n, _)| n.as_str())
                .filter(|n| !mapped.contains(n))
                .collect()
        } else {
            Vec::new()
        };
        let name_indices = by_type.len() > 1 || !unmapped.is_empty();
        let mut entries = BTreeMap::new();
        for (ty, with) in by_type {
            let mut entry = Map::new();
            entry.insert("type".into(), json!(ty));
            entry.insert("metadata_field".into(), json!(with[0].1.metadata));
            let not = |cap: fn(&Caps) -> bool| -> Vec<&str> {
                with.iter().filter(|(_, c)| !cap(c)).map(|(n, _)| *n).collect()
            };
            let (non_searchable, non_aggregatable) = (not(|c| c.searchable), not(|c| c.aggregatable));
            entry.insert("searchable".into(), json!(non_searchable.is_empty()));
            entry.insert("aggregatable".into(), json!(non_aggregatable.is_empty()));
            if name_indices {
                entry.insert(
                    "indices".into(),
                    json!(with.iter().map(|(n, _)| *n).collect::<Vec<_>>()),
                );
            }
            // Listed only when the indices of this type differ.
            if !non_searchable.is_empty() && non_searchable.len() < with.len() {
                entry.insert("non_searchable_indices".into(), json!(non_searchable));
            }
            if !non_aggregatable.is_empty() && non_aggregatable.len() < with.len() {
                entry.insert("non_aggregatable_indices".into(), json!(non_aggregatable));
            }
            entries.insert(ty.to_string(), Value::Object(entry));
        }
        if !unmapped.is_empty() {
            entries.insert(
                "unmapped".into(),
                json!({"type": "unmapped", "metadata_field": false, "searchable": false,
                       "aggregatable": false, "indices": unmapped}),
            );
        }
        out.insert(path, entries);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(properties: Value) -> Mapping {
        Mapping::from_es(&json!({ "properties": properties })).expect("mapping")
    }

    #[test]
    fn fields_objects_and_metadata() {
        let m = mapping(json!({
            "title": {"type": "text", "fields": {"raw": {"type": "keyword"}}},
            "user": {"properties": {"age": {"type": "integer"}}},
        }));
        let f = index_fields(&m);
        let ty = |p: &str| f.get(p).map(|c| (c.ty, c.searchable, c.aggregatable));
        assert_eq!(ty("title"), Some(("text", true, false)));
        assert_eq!(ty("title.raw"), Some(("keyword", true, true)));
        assert_eq!(ty("user"), Some(("object", false, false)));
        assert_eq!(ty("user.age"), Some(("integer", true, true)));
        assert_eq!(ty("_id"), Some(("_id", true, false)));
        assert!(f["_index"].metadata && !f["title"].metadata);
    }

    #[test]
    fn types_across_indices() {
        let a = mapping(json!({"n": {"type": "long"}, "s": {"type": "keyword"}}));
        let b = mapping(json!({"n": {"type": "keyword"}}));
        let indices = vec![("a".to_string(), a), ("b".to_string(), b)];
        let all = merge(&indices, &["*".to_string()], false);
        assert_eq!(
            all["n"]["long"],
            json!({"type": "long", "metadata_field": false, "searchable": true, "aggregatable": true, "indices": ["a"]})
        );
        assert_eq!(all["n"]["keyword"]["indices"], json!(["b"]));
        // One type everywhere it is: no index list, unless unmapped ones are asked for.
        assert_eq!(
            all["s"]["keyword"],
            json!({"type": "keyword", "metadata_field": false, "searchable": true, "aggregatable": true})
        );
        let with_unmapped = merge(&indices, &["s".to_string()], true);
        assert_eq!(with_unmapped.len(), 1);
        assert_eq!(with_unmapped["s"]["keyword"]["indices"], json!(["a"]));
        assert_eq!(with_unmapped["s"]["unmapped"]["indices"], json!(["b"]));
        assert!(merge(&indices, &["x*".to_string()], true).is_empty());
    }

    #[test]
    fn field_patterns_are_required() {
        assert!(patterns(None, None).is_err());
        assert!(patterns(Some(&String::new()), Some(&json!([]))).is_err());
        assert!(patterns(None, Some(&json!({"a": 1}))).is_err());
        assert_eq!(
            patterns(Some(&"a, b*".to_string()), Some(&json!(["c"]))).ok(),
            Some(vec!["a".to_string(), "b*".to_string(), "c".to_string()])
        );
    }
}
