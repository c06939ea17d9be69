//! Arrow Flight for Quidditch: one gRPC service on the node's Flight address
//! that speaks both
//!
//! - **Flight SQL** ([`sql`]) for ADBC, JDBC and BI tools: statements,
//!   prepared statements with parameters, and the catalog commands;
//! - **plain Flight** ([`plain`]) for `pyarrow.flight`: JSON tickets
//!   (`{"sql": ...}` or `{"index": ..., "search": {DSL}}`), `ListFlights`
//!   over the indices, and `DoPut` of Arrow record batches into an index
//!   ([`ingest`]) through the same durable write path as `_bulk`.
//!
//! Actions named `quidditch.internal.*` are the calls between the nodes of
//! a cluster (`internal`, [`quidditch_cluster::protocol`]).
//!
//! [`service::QuidditchFlight`] routes each call: JSON tickets and path
//! descriptors are plain Flight, protobuf commands are Flight SQL. Every call
//! but the handshake is authenticated when the node has credentials
//! ([`Authenticator`]). Results stream batch by batch from DataFusion to the
//! client; nothing holds a whole result.

pub mod error;
pub mod ingest;
mod internal;
pub mod plain;
pub mod service;
pub mod sql;
pub mod stream;

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use quidditch_executor::Engine;

pub use service::QuidditchFlight;

/// Largest gRPC message the service accepts (a `DoPut` batch, a ticket).
pub const MAX_MESSAGE: usize = 64 << 20;

/// Checks credentials for the Flight service (and any other interface of
/// the node).
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    /// Checks an `authorization` header value (`Basic ...` or `Bearer ...`)
    /// and returns the user it authenticates.
    fn authenticate(&self, authorization: Option<&str>) -> Result<String, String>;
    /// A bearer token for a user that has just authenticated.
    fn issue_token(&self, user: &str) -> String;
    /// The user of a header value verified before, if it is remembered:
    /// answered without hashing.
    fn remembered(&self, authorization: &str) -> Option<String>;
}

/// Checks credentials off the reactor, a few at a time: password hashes are
/// slow and memory-hungry by design, so a flood of wrong credentials must
/// neither stall request handling nor exhaust memory. HTTP and Flight share
/// one gate.
#[derive(Debug)]
pub struct AuthGate {
    auth: Arc<dyn Authenticator>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl AuthGate {
    /// A gate over these credentials, checking as many at once as there are cores.
    pub fn new(auth: Arc<dyn Authenticator>) -> AuthGate {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        AuthGate {
            auth,
            permits: Arc::new(tokio::sync::Semaphore::new(cores)),
        }
    }

    /// Checks an `authorization` header value; the user it authenticates.
    pub async fn check(&self, authorization: Option<&str>) -> Result<String, String> {
        if let Some(user) = authorization.and_then(|h| self.auth.remembered(h)) {
            return Ok(user);
        }
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| "authentication is shutting down".to_string())?;
        let auth = Arc::clone(&self.auth);
        let header = authorization.map(str::to_string);
        // The permit lives as long as the check, even when the request that
        // asked for it is gone.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            auth.authenticate(header.as_deref())
        })
        .await
        .map_err(|e| format!("authentication failed: {e}"))?
    }

    /// A bearer token for a user that has just authenticated.
    pub fn issue_token(&self, user: &str) -> String {
        self.auth.issue_token(user)
    }
}

/// What the Flight service needs from its node.
#[derive(Debug, Clone)]
pub struct FlightConfig {
    /// The query engine of the node.
    pub engine: Engine,
    /// Credentials, when the node requires them.
    pub auth: Option<Arc<AuthGate>>,
    /// Who the node is, as it answers other nodes' pings.
    pub hello: quidditch_cluster::protocol::Hello,
}

/// The tonic service for a node's Flight address.
pub fn flight_service(config: FlightConfig) -> Result<FlightServiceServer<QuidditchFlight>, tonic::Status> {
    Ok(FlightServiceServer::new(QuidditchFlight::new(config)?)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}
