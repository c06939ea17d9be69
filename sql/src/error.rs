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
    if let DataFusionError::External(inner) = err.find_root()
        && let Some(why) = unreachable_node(inner.as_ref())
    {
        return Error::Index(quidditch_index::Error::unavailable(format!(
            "a data node did not answer: {why}"
        )));
    }
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

/// Why a data node could not be reached, when `err` is the transport
/// failure of a call to one (a worker stream that could not start, or broke
/// off), rather than an error the node answered with.
pub fn unreachable_node(err: &(dyn std::error::Error + Send + Sync + 'static)) -> Option<String> {
    const TRANSPORT: [tonic::Code; 3] = [
        tonic::Code::Unavailable,
        tonic::Code::DeadlineExceeded,
        tonic::Code::Cancelled,
    ];
    if let Some(status) = err.downcast_ref::<tonic::Status>() {
        return TRANSPORT
            .contains(&status.code())
            .then(|| status.message().to_string());
    }
    // A data node that could not reach another relays the status as the
    // text of a generic error, which starts with the status code.
    let text = err.to_string();
    TRANSPORT
        .iter()
        .any(|code| text.starts_with(&format!("code: '{code}'")))
        .then_some(text)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_name_the_unreachable_node() {
        let failure = |status: tonic::Status| {
            let err = DataFusionError::External(Box::new(status));
            match err {
                DataFusionError::External(inner) => unreachable_node(inner.as_ref()),
                _ => None,
            }
        };
        assert_eq!(
            failure(tonic::Status::unavailable("tcp connect error")).as_deref(),
            Some("tcp connect error")
        );
        assert!(failure(tonic::Status::deadline_exceeded("slow")).is_some());
        // An error the node answered with is not a transport failure.
        assert_eq!(failure(tonic::Status::internal("DataFusionError")), None);
        assert_eq!(unreachable_node(&std::io::Error::other("disk")), None);
        // A status relayed by another data node arrives as its text only.
        let relayed = std::io::Error::other(tonic::Status::unavailable("tcp connect error").to_string());
        assert!(
            unreachable_node(&relayed).is_some_and(|why| why.contains("tcp connect error")),
            "{relayed}"
        );
        let answered = std::io::Error::other(tonic::Status::internal("DataFusionError").to_string());
        assert_eq!(unreachable_node(&answered), None);
    }

    #[test]
    fn a_data_node_that_does_not_answer_is_a_503() {
        let lost = DataFusionError::Context(
            "running a stage".into(),
            Box::new(DataFusionError::External(Box::new(tonic::Status::unavailable(
                "tcp connect error",
            )))),
        );
        let err = Error::from(lost);
        assert_eq!(
            (err.status(), err.es_type()),
            (503, "unavailable_shards_exception")
        );
        assert_eq!(
            Error::from(DataFusionError::Execution("boom".into())).status(),
            500
        );
    }
}
