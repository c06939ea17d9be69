//! HTTP authentication: when the node has credentials, every request
//! carries `Authorization: Basic` or `Bearer`, or gets Elasticsearch's 401
//! `security_exception` and nothing else.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;

use super::es_json;
use crate::node::Node;

const CHALLENGE: &str = "Basic realm=\"security\" charset=\"UTF-8\", Bearer realm=\"security\"";

fn unauthorized(reason: String) -> Response {
    let cause = json!({
        "type": "security_exception",
        "reason": reason,
        "header": {"WWW-Authenticate": [
            "Basic realm=\"security\" charset=\"UTF-8\"",
            "Bearer realm=\"security\"",
        ]},
    });
    let mut error = cause.clone();
    error["root_cause"] = json!([cause]);
    let mut resp = es_json(StatusCode::UNAUTHORIZED, &json!({"error": error, "status": 401}));
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
    resp
}

/// Lets a request through only with valid credentials (or when the node
/// has none).
pub async fn require(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    let Some(auth) = node.auth.clone() else {
        return next.run(request).await;
    };
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let checked = auth.check(header).await;
    match checked {
        Ok(_user) => next.run(request).await,
        Err(reason) => unauthorized(format!("{reason} for REST request [{}]", request.uri().path())),
    }
}
