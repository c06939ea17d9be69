//! The `quidditch` binary's library: command line, configuration, the
//! embedded node, its Elasticsearch-compatible HTTP API and its Flight
//! service, authentication, and the loader.

pub mod auth;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod format;
pub mod http;
pub mod load;
pub mod node;
