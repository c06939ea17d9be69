//! The one mapping from Quidditch errors to gRPC statuses.

use datafusion::error::DataFusionError;
use tonic::{Code, Status};

/// The gRPC code for an HTTP-style status.
pub fn code_for(status: u16) -> Code {
    match status {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::AlreadyExists,
        408 | 504 => Code::DeadlineExceeded,
        413 => Code::ResourceExhausted,
        429 | 503 => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// A SQL front-end error.
pub fn sql_status(err: quidditch_sql::Error) -> Status {
    Status::new(code_for(err.status()), err.to_string())
}

/// A DSL front-end error.
pub fn dsl_status(err: quidditch_planner::Error) -> Status {
    Status::new(code_for(err.status), format!("{}: {}", err.es_type, err.reason))
}

/// A storage error.
pub fn index_status(err: quidditch_index::Error) -> Status {
    Status::new(code_for(err.status()), err.to_string())
}

/// An error while planning or running a plan.
pub fn df_status(err: DataFusionError) -> Status {
    sql_status(err.into())
}

/// A bug or a failure of the node itself.
pub fn internal(err: impl std::fmt::Display) -> Status {
    Status::internal(err.to_string())
}

/// An error of a background task.
pub fn join_status(err: tokio::task::JoinError) -> Status {
    Status::internal(format!("task failed: {err}"))
}
