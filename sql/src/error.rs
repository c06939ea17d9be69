//! Errors of the SQL front end.

use datafusion::error::DataFusionError;

/// Errors of SQL planning and execution.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The statement cannot be parsed or planned.
    #[error("{0}")]
    BadRequest(String),
    /// The statement names a table that does not exist.
    #[error("{0}")]
    UnknownTable(String),
    /// The storage layer failed.
    #[error(transparent)]
    Index(#[from] quidditch_index::Error),
    /// Execution failed for a reason that is not the request's fault.
    #[error("{0}")]
    Internal(String),
}

/// Result type of the SQL crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<DataFusionError> for Error {
    fn from(err: DataFusionError) -> Self {
        classify(err)
    }
}

fn classify(err: DataFusionError) -> Error {
    match err {
        DataFusionError::SQL(e, _) => Error::BadRequest(format!("parse error: {e}")),
        DataFusionError::Plan(msg) => {
            if msg.contains("table '") && msg.contains("not found") {
                Error::UnknownTable(msg)
            } else {
                Error::BadRequest(msg)
            }
        }
        DataFusionError::SchemaError(e, _) => Error::BadRequest(e.to_string()),
        DataFusionError::NotImplemented(msg) => Error::BadRequest(format!("not supported: {msg}")),
        DataFusionError::Configuration(msg) => Error::BadRequest(msg),
        DataFusionError::Context(ctx, inner) => match classify(*inner) {
            Error::BadRequest(m) => Error::BadRequest(format!("{ctx}: {m}")),
            Error::UnknownTable(m) => Error::UnknownTable(m),
            Error::Internal(m) => Error::Internal(format!("{ctx}: {m}")),
            other => other,
        },
        DataFusionError::Diagnostic(_, inner) => classify(*inner),
        DataFusionError::External(e) => match e.downcast::<quidditch_index::Error>() {
            Ok(index_err) => Error::Index(*index_err),
            Err(e) => Error::Internal(e.to_string()),
        },
        other => Error::Internal(other.to_string()),
    }
}

impl Error {
    /// HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) | Error::UnknownTable(_) => 400,
            Error::Index(e) => e.status(),
            Error::Internal(_) => 500,
        }
    }

    /// Elasticsearch error type for this error.
    pub fn es_type(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "verification_exception",
            Error::UnknownTable(_) => "verification_exception",
            Error::Index(e) => e.es_type(),
            Error::Internal(_) => "exception",
        }
    }
}
