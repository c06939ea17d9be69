//! Quidditch's storage layer: indices made of tantivy shards.
//!
//! An [`Index`] has Elasticsearch-style [`mapping`]s and [`settings`], and
//! stores documents in shards ([`shard`]), each a tantivy index directory plus
//! a write-ahead [`translog`]. Writes are routed to shards by a stable hash
//! of `_id` ([`routing`]). [`table::IndexTable`] exposes an index to
//! DataFusion, and [`scan::TantivyScanExec`] is the leaf of every query plan:
//! it runs [`query::LeafQuery`]s inside tantivy and emits Arrow batches.

pub mod activity;
pub mod agg_pushdown;
pub mod bulk;
pub mod codec;
pub mod date;
pub mod document;
pub mod error;
pub mod fetch_pushdown;
pub mod filter;
pub mod fulltext;
pub mod highlight;
pub mod ids;
pub mod index;
pub mod indices;
pub mod mapping;
pub mod merge;
pub mod metadata;
pub mod peers;
pub mod query;
pub mod routing;
pub mod scan;
pub mod schema;
pub mod settings;
pub mod shard;
pub mod stats;
pub mod table;
pub mod templates;
pub mod translog;

pub use error::{Error, Result};
pub use index::Index;
pub use indices::{Indices, RefreshPolicy};
pub use mapping::Mapping;
