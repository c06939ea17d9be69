//! `GET|POST /{index}/_terms_enum`: the values of a keyword field that
//! start with a string, in order (what Kibana suggests as one types). It
//! runs as a `terms` aggregation of the field, ordered by value and
//! limited to the values with that prefix, over the documents that
//! `index_filter` matches (Elasticsearch uses it only to skip shards that
//! match nothing, and lists every value of the others).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use quidditch_index::mapping::FieldType;
use quidditch_planner::BucketLimit;
use serde_json::{Value, json};

use super::search::search_body;
use super::{ApiError, ApiResult, Params, ok_json};
use crate::node::Node;

/// Values listed at most (Elasticsearch's default `size`).
const DEFAULT_SIZE: u64 = 10;

/// `GET|POST /{index}/_terms_enum`.
pub async fn terms_enum(
    State(node): State<Arc<Node>>,
    Path(target): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let body = search_body(&body)?.unwrap_or_else(|| json!({}));
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("request body must be an object"))?;
    let (mut field, mut prefix, mut size, mut insensitive, mut filter) =
        (None, String::new(), DEFAULT_SIZE, false, json!({"match_all": {}}));
    for (key, value) in obj {
        let wrong = || {
            ApiError::new(
                400,
                "x_content_parse_exception",
                format!("[terms_enum] failed to parse field [{key}]"),
            )
        };
        match key.as_str() {
            "field" => field = Some(value.as_str().ok_or_else(wrong)?.to_string()),
            "string" => prefix = value.as_str().ok_or_else(wrong)?.to_string(),
            "size" => size = value.as_u64().ok_or_else(wrong)?,
            "case_insensitive" => insensitive = value.as_bool().ok_or_else(wrong)?,
            "index_filter" => filter = value.clone(),
            "timeout" => {}
            "search_after" => {
                return Err(ApiError::bad_request(
                    "[search_after] of _terms_enum is not supported: narrow the [string] instead",
                ));
            }
            other => {
                return Err(ApiError::unknown_field("terms_enum", other));
            }
        }
    }
    let field = field.ok_or_else(|| {
        ApiError::new(
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: field cannot be null;",
        )
    })?;
    // Only keyword values are enumerated; any other field lists none.
    let keyword = node.indices.resolve(&target)?.iter().any(|index| {
        let column = index.meta().mapping.column(&field);
        column.is_some_and(|c| c.mapping.ty == FieldType::Keyword)
    });
    if !keyword {
        let shards = json!({"total": 0, "successful": 0, "failed": 0});
        return Ok(ok_json(
            &json!({"_shards": shards, "terms": [], "complete": true}),
        ));
    }
    // A value may hold line breaks after the prefix.
    let flags = if insensitive { "(?si)" } else { "(?s)" };
    let search = json!({
        "size": 0,
        "track_total_hits": false,
        "query": filter,
        "aggs": {"terms": {"terms": {
            "field": field,
            "size": size,
            "order": {"_key": "asc"},
            "include": format!("{flags}{}.*", regex::escape(&prefix)),
        }}},
    });
    let params = Params::new();
    let answer = quidditch_planner::search_with(
        &node.engine.session()?,
        node.engine.indices(),
        &target,
        Some(&search),
        &params,
        BucketLimit::Caller,
    )
    .await?;
    let terms: Vec<Value> = answer["aggregations"]["terms"]["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| b["key"].clone())
        .collect();
    let shards = &answer["_shards"];
    Ok(ok_json(&json!({
        "_shards": {"total": shards["total"], "successful": shards["successful"], "failed": shards["failed"]},
        "terms": terms,
        "complete": answer["timed_out"] != true,
    })))
}
