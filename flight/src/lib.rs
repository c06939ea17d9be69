//! Arrow Flight for Quidditch: the Flight SQL service, plain Flight tickets
//! and Flight ingest.
//!
//! Not implemented yet: this crate is filled by the Flight SQL and clients
//! work. It exports nothing so that nothing can depend on a service that
//! does not exist.
