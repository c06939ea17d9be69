//! The Elasticsearch JSON DSL front end: request parsing, lowering of queries
//! to the scans' [`LeafQuery`](quidditch_index::query::LeafQuery), DataFusion
//! logical plans for hits, totals and aggregations, and Elasticsearch-exact
//! response JSON.
//!
//! - [`query`]: query clauses -> `LeafQuery` (per index mapping);
//! - [`aggs`]: aggregations -> DataFusion aggregate plans -> buckets;
//! - [`search`]: the search body, `_search`, `_count`, `_msearch`;
//! - [`source`]: the unioned, filtered scans every plan reads;
//! - [`dates`]: date math, calendar intervals, time zones, date formats;
//! - [`simple_query`]: the `simple_query_string` syntax.

pub mod aggs;
pub mod dates;
pub mod error;
pub mod highlight;
pub mod query;
pub mod search;
pub mod simple_query;
pub mod source;

pub use aggs::udfs;
pub use error::{Error, Result};
pub use search::{BucketLimit, Params, count, hits_rows, msearch, search, search_with, validate};
