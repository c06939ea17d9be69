//! Errors over HTTP: one mapping from every error to Elasticsearch's error
//! JSON and status code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::es_json;

/// An error answered in Elasticsearch's shape.
#[derive(Debug)]
pub struct ApiError(Box<Inner>);

#[derive(Debug)]
struct Inner {
    status: StatusCode,
    es_type: String,
    reason: String,
    extra: serde_json::Map<String, Value>,
    /// The whole `error` object, when the error renders itself.
    object: Option<Value>,
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with a status, Elasticsearch type and reason.
    pub fn new(status: u16, es_type: &str, reason: impl Into<String>) -> ApiError {
        ApiError(Box::new(Inner {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            es_type: es_type.to_string(),
            reason: reason.into(),
            extra: serde_json::Map::new(),
            object: None,
        }))
    }

    /// A 400 `illegal_argument_exception`.
    pub fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError::new(400, "illegal_argument_exception", reason)
    }

    /// A 400 `x_content_parse_exception` for a key that the object `what`
    /// of a request body does not have.
    pub fn unknown_field(what: &str, key: &str) -> ApiError {
        ApiError::new(
            400,
            "x_content_parse_exception",
            format!("[{what}] unknown field [{key}]"),
        )
    }

    /// A request body that is not valid JSON.
    pub fn bad_json(err: &serde_json::Error) -> ApiError {
        ApiError::new(
            400,
            "parse_exception",
            format!("request body is not valid JSON: {err}"),
        )
    }

    /// An internal error.
    pub fn internal(reason: impl std::fmt::Display) -> ApiError {
        ApiError::new(500, "exception", reason.to_string())
    }

    fn with(mut self, key: &str, value: Value) -> ApiError {
        self.0.extra.insert(key.to_string(), value);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }
}

impl From<quidditch_index::Error> for ApiError {
    fn from(err: quidditch_index::Error) -> ApiError {
        let e = ApiError::new(err.status(), err.es_type(), err.to_string());
        match &err {
            quidditch_index::Error::IndexNotFound(name) | quidditch_index::Error::IndexExists(name) => e
                .with("index", json!(name))
                .with("resource.type", json!("index_or_alias"))
                .with("resource.id", json!(name)),
            quidditch_index::Error::Io(_)
            | quidditch_index::Error::Tantivy(_)
            | quidditch_index::Error::Corrupt(_)
            | quidditch_index::Error::Internal(_) => {
                tracing::error!(%err, "internal error");
                e
            }
            _ => e,
        }
    }
}

impl From<quidditch_sql::Error> for ApiError {
    fn from(err: quidditch_sql::Error) -> ApiError {
        match err {
            quidditch_sql::Error::Index(e) => e.into(),
            other => {
                if other.status() >= 500 {
                    tracing::error!(err = %other, "sql failed");
                }
                ApiError::new(other.status(), other.es_type(), other.to_string())
            }
        }
    }
}

impl From<quidditch_planner::Error> for ApiError {
    fn from(err: quidditch_planner::Error) -> ApiError {
        if err.status >= 500 {
            tracing::error!(%err, "search failed");
        }
        let mut e = ApiError::new(err.status, err.es_type, err.reason.clone());
        e.0.object = Some(err.to_json());
        e
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(err: tokio::task::JoinError) -> ApiError {
        ApiError::internal(format!("task failed: {err}"))
    }
}

impl ApiError {
    /// The `error` object of the response (also what `_mget` and bulk
    /// items carry per failed entry).
    pub fn error_object(&self) -> Value {
        let inner = &self.0;
        if let Some(object) = &inner.object {
            return object.clone();
        }
        let mut cause = serde_json::Map::new();
        cause.insert("type".into(), json!(inner.es_type));
        cause.insert("reason".into(), json!(inner.reason));
        for (k, v) in &inner.extra {
            cause.insert(k.clone(), v.clone());
        }
        let mut error = cause.clone();
        error.insert("root_cause".into(), json!([Value::Object(cause)]));
        Value::Object(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error_object(), "status": self.0.status.as_u16()});
        es_json(self.0.status, &body)
    }
}
