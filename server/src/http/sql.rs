//! `POST /_sql`: SQL over HTTP, answered as JSON (`columns` + `rows`), CSV or text.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiResult, Params, ok_json, parse_body};
use crate::format;
use crate::node::Node;

pub async fn sql(
    State(node): State<Arc<Node>>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    let body = parse_body(&body)?.ok_or_else(|| ApiError::bad_request("request body is required"))?;
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("request body must be an object"))?;
    let mut query = None;
    let mut partial = false;
    for (k, v) in obj {
        match k.as_str() {
            "query" => query = v.as_str().map(str::to_string),
            "allow_partial_search_results" => {
                partial = v.as_bool().ok_or_else(|| {
                    ApiError::new(
                        400,
                        "parsing_exception",
                        "[allow_partial_search_results] must be a boolean",
                    )
                })?
            }
            "fetch_size" | "time_zone" | "request_timeout" | "page_timeout" | "columnar" => {}
            other => {
                return Err(ApiError::new(
                    400,
                    "parsing_exception",
                    format!("unknown field [{other}]"),
                ));
            }
        }
    }
    let query = query.ok_or_else(|| {
        ApiError::new(
            400,
            "parsing_exception",
            "[query] is required and must be a string",
        )
    })?;
    let run = || async {
        node.engine
            .sql_in(node.engine.session_allowing_partial(partial)?, &query)
            .await
    };
    let mut output = run().await;
    if node.retry(&output).await {
        output = run().await;
    }
    let output = output?;
    let fmt = params.get("format").map(String::as_str).unwrap_or("json");
    let (content_type, text) = match fmt {
        "json" => {
            return Ok(ok_json(
                &format::to_es_sql_json(&output.schema, &output.batches).map_err(ApiError::internal)?,
            ));
        }
        "csv" => (
            "text/csv; charset=utf-8",
            format::to_csv(&output.schema, &output.batches).map_err(ApiError::internal)?,
        ),
        "txt" | "text" => (
            "text/plain; charset=utf-8",
            format::to_text(&output.batches).map_err(ApiError::internal)?,
        ),
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid format [{other}], expected one of [json, csv, txt]"
            )));
        }
    };
    let mut resp = text.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
}
