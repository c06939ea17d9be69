//! Errors of the DSL front end, in Elasticsearch's types and statuses.

use serde_json::{Map, Value, json};

/// A request the DSL rejects, or a failure while running it (boxed: errors
/// travel through every parsing function).
#[derive(Debug, Clone, PartialEq)]
pub struct Error(Box<ErrorInfo>);

/// What an [`Error`] says.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorInfo {
    /// HTTP status.
    pub status: u16,
    /// Elasticsearch error type, e.g. `parsing_exception`.
    pub es_type: &'static str,
    /// Human-readable reason.
    pub reason: String,
    /// Extra fields of the error object (`index`, `line`, ...).
    pub extra: Map<String, Value>,
    /// Whether Elasticsearch reports it from the shards, wrapped in a
    /// `search_phase_execution_exception` ("all shards failed").
    pub shard_failure: bool,
    /// The error this one wraps (`caused_by`); the root cause is the innermost.
    pub cause: Option<Error>,
}

impl std::ops::Deref for Error {
    type Target = ErrorInfo;

    fn deref(&self) -> &ErrorInfo {
        &self.0
    }
}

impl std::ops::DerefMut for Error {
    fn deref_mut(&mut self) -> &mut ErrorInfo {
        &mut self.0
    }
}

/// Result of the DSL front end.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of a type and status.
    pub fn new(status: u16, es_type: &'static str, reason: impl Into<String>) -> Error {
        Error(Box::new(ErrorInfo {
            status,
            es_type,
            reason: reason.into(),
            extra: Map::new(),
            shard_failure: false,
            cause: None,
        }))
    }

    /// A request value that fails validation while the body is parsed:
    /// Elasticsearch reports an `x_content_parse_exception` caused by it.
    pub fn invalid_field(object: &str, field: &str, cause: Error) -> Error {
        let mut e = Error::x_content(format!("[{object}] failed to parse field [{field}]"));
        e.cause = Some(cause);
        e
    }

    /// A number that does not parse (`number_format_exception`).
    pub fn number_format(input: &str) -> Error {
        Error::new(
            400,
            "number_format_exception",
            format!("For input string: \"{input}\""),
        )
    }

    /// Names the index a shard-level error came from.
    pub fn in_index(mut self, index: &str) -> Error {
        if self.shard_failure && !self.extra.contains_key("index") {
            self.extra.insert("index_uuid".into(), json!("_na_"));
            self.extra.insert("index".into(), json!(index));
        }
        self
    }

    /// A malformed request (`parsing_exception`, 400).
    pub fn parsing(reason: impl Into<String>) -> Error {
        Error::new(400, "parsing_exception", reason)
    }

    /// A request with an invalid argument (`illegal_argument_exception`, 400).
    pub fn illegal_argument(reason: impl Into<String>) -> Error {
        Error::new(400, "illegal_argument_exception", reason)
    }

    /// A value of the wrong JSON type (`x_content_parse_exception`, 400).
    pub fn x_content(reason: impl Into<String>) -> Error {
        Error::new(400, "x_content_parse_exception", reason)
    }

    /// A failure inside the engine (500).
    pub fn internal(reason: impl Into<String>) -> Error {
        Error::new(500, "exception", reason)
    }

    /// Reported from the shards: wrapped in `search_phase_execution_exception`.
    pub fn on_shards(mut self) -> Error {
        self.shard_failure = true;
        self
    }

    /// Adds a field to the error object.
    pub fn with(mut self, key: &str, value: Value) -> Error {
        self.extra.insert(key.to_string(), value);
        self
    }

    /// The error object of the cause itself (`type`, `reason`, extras,
    /// `caused_by`).
    fn cause_json(&self) -> Value {
        let mut cause = Map::new();
        cause.insert("type".into(), json!(self.es_type));
        cause.insert("reason".into(), json!(self.reason));
        for (k, v) in &self.extra {
            cause.insert(k.clone(), v.clone());
        }
        if let Some(inner) = &self.cause {
            cause.insert("caused_by".into(), inner.cause_json());
        }
        Value::Object(cause)
    }

    /// The `error` object of Elasticsearch's error response.
    pub fn to_json(&self) -> Value {
        let cause = self.cause_json();
        let mut root = cause.clone();
        if let Value::Object(m) = &mut root {
            m.remove("caused_by");
        }
        if self.shard_failure {
            return json!({
                "root_cause": [root],
                "type": "search_phase_execution_exception",
                "reason": "all shards failed",
                "phase": "query",
                "grouped": true,
                "failed_shards": [{"shard": 0, "index": self.extra.get("index"), "reason": cause.clone()}],
                "caused_by": cause,
            });
        }
        let mut error = match cause {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        error.insert("root_cause".into(), json!([root]));
        Value::Object(error)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.es_type, self.reason)
    }
}

impl std::error::Error for Error {}

impl From<quidditch_index::Error> for Error {
    fn from(err: quidditch_index::Error) -> Error {
        let e = Error::new(err.status(), err.es_type(), err.to_string());
        match &err {
            quidditch_index::Error::IndexNotFound(name) => e
                .with("index_uuid", json!("_na_"))
                .with("resource.type", json!("index_or_alias"))
                .with("resource.id", json!(name))
                .with("index", json!(name)),
            _ => e,
        }
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(err: datafusion::error::DataFusionError) -> Error {
        use datafusion::error::DataFusionError as D;
        match err.find_root() {
            D::External(inner) => {
                if let Some(e) = inner.downcast_ref::<quidditch_index::Error>() {
                    return Error::new(e.status(), e.es_type(), e.to_string()).on_shards();
                }
                if let Some(why) = quidditch_executor::distributed::unreachable_node(inner.as_ref()) {
                    return Error::new(
                        503,
                        "unavailable_shards_exception",
                        format!("a data node did not answer: {why}"),
                    )
                    .on_shards();
                }
                Error::internal(inner.to_string())
            }
            D::Plan(msg) => Error::new(400, "query_shard_exception", msg.clone()).on_shards(),
            D::ResourcesExhausted(msg) => Error::new(429, "circuit_breaking_exception", msg.clone()),
            other => Error::internal(other.to_string()),
        }
    }
}
