//! The index crate's error type.
//!
//! Every variant says who is at fault; [`Error::es_type`] gives the
//! Elasticsearch error type name, and the server maps [`Error::status`] to the
//! HTTP status in one place.

/// Errors of the index crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or asks for something impossible.
    #[error("{reason}")]
    BadRequest {
        /// Elasticsearch error type, e.g. `illegal_argument_exception`.
        es_type: &'static str,
        /// Human-readable reason.
        reason: String,
    },
    /// A document or mapping does not fit the index mapping.
    #[error("{reason}")]
    Mapping {
        /// Elasticsearch error type (`mapper_parsing_exception`, `document_parsing_exception`, ...).
        es_type: &'static str,
        /// Human-readable reason.
        reason: String,
    },
    /// Something else the request names does not exist (an alias).
    #[error("{reason}")]
    NotFound {
        /// Elasticsearch error type, e.g. `aliases_not_found_exception`.
        es_type: &'static str,
        /// Human-readable reason.
        reason: String,
    },
    /// The named index does not exist.
    #[error("no such index [{0}]")]
    IndexNotFound(String),
    /// The named index exists already.
    #[error("index [{0}] already exists")]
    IndexExists(String),
    /// A `create` hit an existing document.
    #[error("[{id}]: version conflict, document already exists (current version [{version}])")]
    VersionConflict {
        /// Document id.
        id: String,
        /// Current version of the document.
        version: u64,
    },
    /// A write conditional on the sequence number of the document's last
    /// write (`if_seq_no`, `if_primary_term`) met another one.
    #[error(
        "[{id}]: version conflict, required seqNo [{required}], primary term [{required_term}]. {}",
        match current {
            Some(seq_no) => format!("current document has seqNo [{seq_no}] and primary term [{}]", crate::index::PRIMARY_TERM),
            None => "but no document was found".to_string(),
        }
    )]
    SeqNoConflict {
        /// Document id.
        id: String,
        /// The sequence number the write required.
        required: u64,
        /// The primary term the write required.
        required_term: u64,
        /// The sequence number of the document's last write, if it exists.
        current: Option<u64>,
    },
    /// A write with an external version met a document whose version is
    /// as high or higher.
    #[error(
        "[{id}]: version conflict, current version [{current}] is higher {}the one provided [{provided}]",
        if *gte { "than " } else { "or equal to " }
    )]
    ExternalVersionConflict {
        /// Document id.
        id: String,
        /// The document's current version.
        current: u64,
        /// The version the write brought.
        provided: u64,
        /// The write was `external_gte`.
        gte: bool,
    },
    /// Storage failed underneath us.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Tantivy failed.
    #[error("tantivy error: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// Stored files that do not read back as they were written (damage).
    #[error("{0}")]
    Corrupt(String),
    /// A broken invariant: a bug, not a user error.
    #[error("internal error: {0}")]
    Internal(String),
    /// An error another node answered with, or a node that did not answer.
    #[error("{reason}")]
    Remote {
        /// Elasticsearch error type.
        es_type: String,
        /// Human-readable reason.
        reason: String,
        /// HTTP status.
        status: u16,
    },
}

/// Result type of the index crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A bad request with Elasticsearch's `illegal_argument_exception` type.
    pub fn illegal_argument(reason: impl Into<String>) -> Self {
        Error::BadRequest {
            es_type: "illegal_argument_exception",
            reason: reason.into(),
        }
    }

    /// A mapping definition error (`mapper_parsing_exception`).
    pub fn mapper_parsing(reason: impl Into<String>) -> Self {
        Error::Mapping {
            es_type: "mapper_parsing_exception",
            reason: reason.into(),
        }
    }

    /// A document that does not fit its mapping (`document_parsing_exception`).
    pub fn document_parsing(reason: impl Into<String>) -> Self {
        Error::Mapping {
            es_type: "document_parsing_exception",
            reason: reason.into(),
        }
    }

    /// The Elasticsearch error type name of this error.
    pub fn es_type(&self) -> &'static str {
        match self {
            Error::BadRequest { es_type, .. }
            | Error::Mapping { es_type, .. }
            | Error::NotFound { es_type, .. } => es_type,
            Error::Remote { es_type, .. } => es_type_name(es_type),
            Error::IndexNotFound(_) => "index_not_found_exception",
            Error::IndexExists(_) => "resource_already_exists_exception",
            Error::VersionConflict { .. }
            | Error::SeqNoConflict { .. }
            | Error::ExternalVersionConflict { .. } => "version_conflict_engine_exception",
            Error::Io(_) | Error::Tantivy(_) | Error::Corrupt(_) | Error::Internal(_) => "exception",
        }
    }

    /// The HTTP status code Elasticsearch uses for this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest { .. } | Error::Mapping { .. } | Error::IndexExists(_) => 400,
            Error::IndexNotFound(_) | Error::NotFound { .. } => 404,
            Error::VersionConflict { .. }
            | Error::SeqNoConflict { .. }
            | Error::ExternalVersionConflict { .. } => 409,
            Error::Io(_) | Error::Tantivy(_) | Error::Corrupt(_) | Error::Internal(_) => 500,
            Error::Remote { status, .. } => *status,
        }
    }

    /// Whether this is damage to stored files (ours, or tantivy's own
    /// corruption check), rather than a failure of the machine or a misuse.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::Corrupt(_) | Error::Tantivy(tantivy::TantivyError::DataCorruption(_))
        )
    }

    /// A shard's node that could not be reached (`unavailable_shards_exception`, 503).
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Error::Remote {
            es_type: "unavailable_shards_exception".into(),
            reason: reason.into(),
            status: 503,
        }
    }
}

/// The static name of an Elasticsearch error type that crossed the wire
/// (the types this crate produces; anything else is a plain `exception`).
fn es_type_name(name: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "illegal_argument_exception",
        "parse_exception",
        "mapper_parsing_exception",
        "document_parsing_exception",
        "document_missing_exception",
        "index_not_found_exception",
        "resource_already_exists_exception",
        "version_conflict_engine_exception",
        "invalid_index_name_exception",
        "invalid_alias_name_exception",
        "aliases_not_found_exception",
        "unavailable_shards_exception",
        "action_request_validation_exception",
    ];
    KNOWN.iter().find(|k| **k == name).copied().unwrap_or("exception")
}
