//! `GET /`: node and version information, as Elasticsearch answers it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::{es_json, ok_json};
use crate::node::Node;

/// The Elasticsearch version whose API Quidditch speaks.
pub const COMPAT_VERSION: &str = "8.15.0";

pub async fn info(State(node): State<Arc<Node>>) -> Response {
    ok_json(&json!({
        "name": node.node_id,
        "cluster_name": node.cluster_name,
        "cluster_uuid": "quidditch",
        "version": {
            "number": COMPAT_VERSION,
            "build_flavor": "default",
            "build_type": "quidditch",
            "build_hash": env!("CARGO_PKG_VERSION"),
            "build_date": "2026-01-01T00:00:00.000Z",
            "build_snapshot": false,
            "lucene_version": "9.11.1",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0",
            "distribution": "quidditch",
            "quidditch_version": env!("CARGO_PKG_VERSION")
        },
        "tagline": "You Know, for Search"
    }))
}

pub async fn head() -> Response {
    es_json(StatusCode::OK, &json!({}))
}
