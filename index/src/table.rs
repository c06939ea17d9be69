//! An index as a DataFusion table.
//!
//! One column per mapped field (keyword as `Dictionary(Int32, Utf8)`, integer
//! types as `Int64`, floating point as `Float64`, `scaled_float` as
//! `Decimal128(19, log10(scaling_factor))`, dates as
//! `Timestamp(Millisecond)`, booleans, IPs as `Utf8`, `text` read from
//! `_source`; `List` once a field has held an array), plus `_id`, `_score`
//! (`Float32`, null without a full-text condition) and `_source`.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::common::Result;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use crate::filter::{conjunction, has_fulltext, to_leaf_query};
use crate::index::{Index, ShardFailure};
use crate::mapping::{FieldMapping, FieldType, Mapping};
use crate::scan::{ShardSet, TantivyScanExec};

/// The `_id` column.
pub const ID_COLUMN: &str = "_id";
/// The `_score` column.
pub const SCORE_COLUMN: &str = "_score";
/// The `_source` column.
pub const SOURCE_COLUMN: &str = "_source";
/// The `_version` column: the version of each document's last write.
pub const VERSION_COLUMN: &str = "_version";
/// The `_seq_no` column: the sequence number of each document's last write.
pub const SEQ_NO_COLUMN: &str = "_seq_no";

/// The precision of `scaled_float` columns: every 64-bit integer fits.
pub const DECIMAL_PRECISION: u8 = 19;

/// The Arrow type of a mapped column.
pub fn arrow_type(mapping: &FieldMapping) -> DataType {
    let multi_valued = mapping.multi_valued;
    let scalar = match mapping.ty {
        FieldType::Keyword if !multi_valued => {
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
        }
        FieldType::Keyword | FieldType::Text | FieldType::Ip => DataType::Utf8,
        FieldType::Long | FieldType::Integer | FieldType::Short | FieldType::Byte => DataType::Int64,
        FieldType::Double | FieldType::Float => DataType::Float64,
        FieldType::ScaledFloat => {
            DataType::Decimal128(DECIMAL_PRECISION, mapping.decimal_scale().unwrap_or(0))
        }
        FieldType::Date => DataType::Timestamp(TimeUnit::Millisecond, None),
        FieldType::Boolean => DataType::Boolean,
    };
    if multi_valued {
        DataType::List(Arc::new(Field::new("item", scalar, true)))
    } else {
        scalar
    }
}

/// The table schema of a mapping.
pub fn table_schema(mapping: &Mapping) -> SchemaRef {
    let mut fields = vec![Field::new(ID_COLUMN, DataType::Utf8, false)];
    for column in mapping.columns() {
        fields.push(Field::new(&column.path, arrow_type(&column.mapping), true));
    }
    fields.push(Field::new(SCORE_COLUMN, DataType::Float32, true));
    fields.push(Field::new(SOURCE_COLUMN, DataType::Utf8, true));
    fields.push(Field::new(VERSION_COLUMN, DataType::Int64, true));
    fields.push(Field::new(SEQ_NO_COLUMN, DataType::Int64, true));
    Arc::new(Schema::new(fields))
}

datafusion::common::extensions_options! {
    /// Quidditch's SQL session settings (`SET quidditch.<name> = ...`).
    pub struct QuidditchOptions {
        /// Answer without the shards that no node can serve now, instead
        /// of failing with an error that names them.
        pub allow_partial_results: bool, default = false
    }
}

impl datafusion::config::ConfigExtension for QuidditchOptions {
    const PREFIX: &'static str = "quidditch";
}

/// A table over an index, with the mapping as it was when the table was made.
#[derive(Debug)]
pub struct IndexTable {
    index: Arc<Index>,
    mapping: Arc<Mapping>,
    schema: SchemaRef,
    /// Shards left out of scans (their nodes cannot serve them).
    left_out: Vec<u32>,
}

impl IndexTable {
    /// A table over the index's current mapping.
    pub fn new(index: Arc<Index>) -> IndexTable {
        let mapping = Arc::new(index.mapping());
        let schema = table_schema(&mapping);
        IndexTable {
            index,
            mapping,
            schema,
            left_out: Vec::new(),
        }
    }

    /// A table over the shards of the index that can be read now, and the
    /// shards left out (partial results).
    pub fn available(index: Arc<Index>) -> (IndexTable, Vec<ShardFailure>) {
        let failures = index.unavailable_shards();
        let table = IndexTable {
            left_out: failures.iter().map(|f| f.shard).collect(),
            ..IndexTable::new(index)
        };
        (table, failures)
    }

    /// The index.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// The mapping the table was made with (its schema follows it).
    pub fn mapping(&self) -> &Arc<Mapping> {
        &self.mapping
    }
}

#[async_trait]
impl TableProvider for IndexTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if to_leaf_query(f, &self.mapping).is_some() {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let queries = filters
            .iter()
            .map(|f| {
                let q = to_leaf_query(f, &self.mapping).ok_or_else(|| {
                    datafusion::error::DataFusionError::Internal(format!(
                        "filter {f} was accepted for pushdown but cannot be translated"
                    ))
                })?;
                Ok((q, has_fulltext(f)))
            })
            .collect::<Result<Vec<_>>>()?;
        let projection = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let query = conjunction(queries);
        // Scores use the statistics of every shard (see `stats`).
        let scored = projection
            .iter()
            .any(|&i| self.schema.field(i).name() == SCORE_COLUMN);
        let stats = if scored && query.is_scoring() && self.index.num_shards() > 1 {
            let index = Arc::clone(&self.index);
            let q = query.clone();
            let stats = tokio::task::spawn_blocking(move || index.term_stats(&q))
                .await
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            Some(Arc::new(stats))
        } else {
            None
        };
        let mut exec = TantivyScanExec::try_new(
            Arc::clone(&self.index),
            Arc::clone(&self.mapping),
            Arc::clone(&self.schema),
            projection,
            query,
            None,
            limit,
        )?
        .with_stats(stats);
        let partial = state
            .config_options()
            .extensions
            .get::<QuidditchOptions>()
            .is_some_and(|o| o.allow_partial_results);
        let left_out: Vec<u32> = if partial && self.left_out.is_empty() {
            self.index.unavailable_shards().iter().map(|f| f.shard).collect()
        } else {
            self.left_out.clone()
        };
        if !left_out.is_empty() {
            let shards: Vec<u32> = (0..self.index.num_shards())
                .filter(|n| !left_out.contains(n))
                .collect();
            let partitions = shards.len();
            exec = exec.with_shards(ShardSet::padded(shards, partitions))?;
        }
        Ok(Arc::new(exec))
    }
}
