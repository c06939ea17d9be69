//! The Elasticsearch JSON DSL front end: wire types, query AST, lowering to
//! DataFusion logical plans, and Elasticsearch-exact responses.
//!
//! Not implemented yet: this crate is filled by the JSON DSL work and exports
//! nothing until then.
