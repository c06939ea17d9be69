//! `GET|POST /_analyze` and `/{index}/_analyze`: the terms a text is
//! indexed as, with their offsets, types and positions, as Elasticsearch
//! lists them. Text fields are analyzed by the standard analyzer, and
//! keyword fields keep each value whole; those are the analyzers offered.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use quidditch_index::mapping::FieldType;
use quidditch_index::query::analyze_tokens;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, ok_json, parse_body};
use crate::node::Node;

/// How a text is analyzed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Analyzer {
    /// The standard analyzer of text fields.
    Standard,
    /// The whole text as one term (keyword fields).
    Keyword,
}

/// Positions between the values of a text field (its
/// `position_increment_gap`).
const FIELD_POSITION_GAP: usize = 100;

pub async fn analyze(State(node): State<Arc<Node>>, body: Bytes) -> ApiResult<Response> {
    run(&node, None, &body)
}

pub async fn analyze_index(
    State(node): State<Arc<Node>>,
    Path(index): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    run(&node, Some(&index), &body)
}

fn run(node: &Node, index: Option<&str>, body: &[u8]) -> ApiResult<Response> {
    let body = parse_body(body)?.unwrap_or(Value::Null);
    let empty = serde_json::Map::new();
    let request = match &body {
        Value::Null => &empty,
        Value::Object(m) => m,
        _ => return Err(ApiError::bad_request("the request body must be an object")),
    };
    let mut texts: Vec<String> = Vec::new();
    let (mut analyzer, mut field) = (None, None);
    for (key, v) in request {
        match key.as_str() {
            "text" => {
                texts = match v {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(items) => items
                        .iter()
                        .map(|t| t.as_str().map(str::to_string))
                        .collect::<Option<_>>()
                        .ok_or_else(|| {
                            ApiError::bad_request("[text] must be a string or an array of strings")
                        })?,
                    _ => {
                        return Err(ApiError::bad_request(
                            "[text] must be a string or an array of strings",
                        ));
                    }
                };
            }
            "analyzer" => analyzer = Some(string(v, "analyzer")?),
            "field" => field = Some(string(v, "field")?),
            "tokenizer" | "filter" | "char_filter" | "normalizer" | "explain" | "attributes" => {
                return Err(ApiError::bad_request(format!(
                    "[{key}] is not supported: text is analyzed by the analyzer of its field (standard for \
                     text, keyword for keyword)"
                )));
            }
            other => {
                return Err(ApiError::unknown_field("analyze_request", other));
            }
        }
    }
    if texts.is_empty() {
        return Err(ApiError::new(
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: text is missing;",
        ));
    }
    let (analyzer, gap) = match (analyzer, field) {
        (Some(name), _) => (named(&name)?, 0),
        (None, Some(field)) => {
            let Some(index) = index else {
                return Err(ApiError::bad_request(
                    "No index provided, and trying to analyzer based on a specific field which requires the \
                     index parameter",
                ));
            };
            let mapping = node.indices.single_index(index)?.mapping();
            let analyzer = match mapping.column(&field).map(|c| c.mapping.ty) {
                None | Some(FieldType::Text) => Analyzer::Standard,
                Some(FieldType::Keyword) => Analyzer::Keyword,
                Some(_) => {
                    return Err(ApiError::bad_request(format!(
                        "Can't process field [{field}], Analysis requests are only supported on tokenized fields"
                    )));
                }
            };
            (analyzer, FIELD_POSITION_GAP)
        }
        (None, None) => {
            if let Some(index) = index {
                node.indices.single_index(index)?;
            }
            (Analyzer::Standard, 0)
        }
    };
    Ok(ok_json(&json!({"tokens": tokens(analyzer, &texts, gap)})))
}

fn string(v: &Value, key: &str) -> ApiResult<String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_request(format!("[{key}] must be a string")))
}

/// The analyzer Elasticsearch names `name`, if it is one offered here.
fn named(name: &str) -> ApiResult<Analyzer> {
    match name {
        "standard" | "default" => Ok(Analyzer::Standard),
        "keyword" => Ok(Analyzer::Keyword),
        "simple" | "whitespace" | "stop" | "pattern" | "fingerprint" | "english" => {
            Err(ApiError::bad_request(format!(
                "analyzer [{name}] is not supported: text fields are analyzed by [standard], keyword fields by \
                 [keyword]"
            )))
        }
        other => Err(ApiError::bad_request(format!(
            "failed to find global analyzer [{other}]"
        ))),
    }
}

/// The tokens of `texts` as Elasticsearch lists them: offsets in UTF-16
/// code units, counted on across the texts (one apart), and positions
/// counted on with `gap` between texts.
fn tokens(analyzer: Analyzer, texts: &[String], gap: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let (mut next_position, mut offset) = (0, 0);
    for text in texts {
        let utf16 = |byte: usize| text[..byte].encode_utf16().count();
        let found = match analyzer {
            Analyzer::Standard => analyze_tokens(text)
                .into_iter()
                .map(|t| {
                    let kind = match t.text.bytes().all(|b| b.is_ascii_digit()) {
                        true => "<NUM>",
                        false => "<ALPHANUM>",
                    };
                    (t.text, t.start, t.end, kind, t.position)
                })
                .collect(),
            Analyzer::Keyword => vec![(text.clone(), 0, text.len(), "word", 0)],
        };
        let mut last = None;
        for (term, start, end, kind, position) in found {
            let position = next_position + position;
            last = Some(position);
            out.push(json!({
                "token": term,
                "start_offset": offset + utf16(start),
                "end_offset": offset + utf16(end),
                "type": kind,
                "position": position,
            }));
        }
        next_position = last.map_or(next_position, |p| p + 1) + gap;
        offset += utf16(text.len()) + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_offsets_go_on_across_texts() {
        let texts = ["Déjà vu 42".to_string(), "b".to_string()];
        let got: Vec<(String, u64, u64, String, u64)> = tokens(Analyzer::Standard, &texts, 100)
            .iter()
            .map(|t| {
                (
                    t["token"].as_str().unwrap_or_default().to_string(),
                    t["start_offset"].as_u64().unwrap_or(u64::MAX),
                    t["end_offset"].as_u64().unwrap_or(u64::MAX),
                    t["type"].as_str().unwrap_or_default().to_string(),
                    t["position"].as_u64().unwrap_or(u64::MAX),
                )
            })
            .collect();
        let want = [
            ("déjà", 0, 4, "<ALPHANUM>", 0),
            ("vu", 5, 7, "<ALPHANUM>", 1),
            ("42", 8, 10, "<NUM>", 2),
            ("b", 11, 12, "<ALPHANUM>", 103),
        ]
        .map(|(t, s, e, k, p)| (t.to_string(), s, e, k.to_string(), p));
        assert_eq!(got, want);
        let whole = tokens(Analyzer::Keyword, &texts, 0);
        assert_eq!(whole[1]["position"], json!(1));
        assert_eq!(whole[1]["start_offset"], json!(11));
    }
}
