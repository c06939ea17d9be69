//! The `quidditch` binary's library: command line, configuration, the
//! embedded node and its Elasticsearch-compatible HTTP API, and the loader.

pub mod cli;
pub mod config;
pub mod format;
pub mod http;
pub mod load;
pub mod node;
