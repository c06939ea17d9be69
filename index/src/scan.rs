//! `TantivyScanExec`: the leaf scan over the shards of an index.
//!
//! One partition per shard. The scan runs its [`LeafQuery`] inside tantivy
//! and emits Arrow batches of the projected columns, reading fast fields
//! column-wise (keywords as dictionary ordinals, decoded late) and `_source`
//! only when projected. It absorbs what tantivy does best: filters and
//! full-text conditions, `ORDER BY _score DESC` (tantivy's top-k collector)
//! or a numeric column (a bounded heap over the column), `LIMIT`, and
//! `count(*)` (tantivy's `Count`, no rows are materialised).

use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::Decimal128Array;
use datafusion::arrow::array::{ArrayBuilder, DictionaryArray};
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float32Builder, Float64Array, Float64Builder, Int32Builder, Int64Array,
    Int64Builder, ListArray, ListBuilder, RecordBatch, RecordBatchOptions, StringBuilder,
    TimestampMillisecondArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, SchemaRef, TimeUnit};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::{EquivalenceProperties, LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::EmptyRecordBatchStream;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::expressions::Column as ColumnExpr;
use datafusion::physical_plan::metrics::{
    Count as MetricCount, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::sort_pushdown::SortOrderPushdownResult;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use serde_json::Value;
use tantivy::collector::{Count, TopDocs};
use tantivy::columnar::{Column, ColumnType, DynamicColumn, MonotonicallyMappableToU64, StrColumn};
use tantivy::query::{EnableScoring, Query, Weight};
use tantivy::schema::Value as _;
use tantivy::{DocAddress, DocId, DocSet, Score, Searcher, SegmentReader, TantivyDocument};

use crate::document::values_at;
use crate::index::Index;
use crate::mapping::{FieldType, Mapping};
use crate::query::LeafQuery;
use crate::schema::{Fields, names};
use crate::shard::Shard;
use crate::stats::TermStats;
use crate::table::{ID_COLUMN, SCORE_COLUMN, SEQ_NO_COLUMN, SOURCE_COLUMN, VERSION_COLUMN};

/// An order the scan delivers itself.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ScanSort {
    /// `_score DESC`, by tantivy's top-k collector.
    Score,
    /// A single-valued numeric or date column.
    Column {
        /// Column path.
        path: String,
        /// Descending order.
        descending: bool,
        /// Nulls first.
        nulls_first: bool,
        /// Floating point column.
        float: bool,
    },
}

/// The shards a leaf reads: partition `i` reads shard `shards[i]`, and
/// partitions past the end are empty. A distributed stage gives each task
/// its own shards, padded to the same partition count.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardSet {
    /// Shard numbers, one per partition.
    pub shards: Vec<u32>,
    /// Partitions (at least one, and at least as many as shards).
    pub partitions: usize,
}

impl ShardSet {
    /// Every shard of an index with `n` shards.
    pub fn all(n: u32) -> ShardSet {
        ShardSet {
            shards: (0..n).collect(),
            partitions: (n as usize).max(1),
        }
    }

    /// These shards, in `partitions` partitions.
    pub fn padded(shards: Vec<u32>, partitions: usize) -> ShardSet {
        let partitions = partitions.max(shards.len()).max(1);
        ShardSet { shards, partitions }
    }

    /// What partition `partition` reads.
    pub(crate) fn resolve(&self, index: &Index, partition: usize) -> Result<ShardSource> {
        if partition >= self.partitions {
            return Err(DataFusionError::Internal(format!("no partition {partition}")));
        }
        let Some(&n) = self.shards.get(partition) else {
            return Ok(ShardSource::Padding);
        };
        if let Some(shard) = index.shard(n) {
            return Ok(ShardSource::Local(shard));
        }
        match (index.read_node(n), index.peers()) {
            (Some(node), Some(_)) => Ok(ShardSource::Remote(node, n)),
            _ => Err(DataFusionError::External(Box::new(
                index
                    .local_shard(n)
                    .err()
                    .unwrap_or_else(|| crate::Error::Internal(format!("shard [{n}]"))),
            ))),
        }
    }

    /// `[0,3]`, and the nodes of the shards when they are on other nodes
    /// (`[0,3] on data-1`).
    pub(crate) fn describe(&self, index: &Index) -> String {
        let list: Vec<String> = self.shards.iter().map(u32::to_string).collect();
        let meta = index.meta();
        let mut nodes: Vec<&str> = self.shards.iter().filter_map(|&n| meta.shard_node(n)).collect();
        nodes.sort();
        nodes.dedup();
        if nodes.is_empty() {
            format!("[{}]", list.join(","))
        } else {
            format!("[{}] on {}", list.join(","), nodes.join(","))
        }
    }
}

/// Where a partition of a leaf reads from.
pub(crate) enum ShardSource {
    /// A shard on this node.
    Local(Arc<Shard>),
    /// Shard `1` on node `0`: the leaf runs there, over that one shard.
    Remote(String, u32),
    /// Nothing: a padding partition.
    Padding,
}

/// Runs `leaf` narrowed to shard `shard` on `node` and streams its batches.
pub(crate) fn remote_partition(
    index: &Index,
    leaf: &dyn ExecutionPlan,
    node: &str,
    schema: SchemaRef,
) -> Result<SendableRecordBatchStream> {
    let peers = index
        .peers()
        .ok_or_else(|| DataFusionError::Internal("a remote shard without peers".into()))?;
    let bytes = crate::codec::encode_leaf(leaf)?;
    let stream = futures::StreamExt::map(peers.scan(node, bytes), |r| {
        r.map_err(|e| DataFusionError::External(Box::new(e)))
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
}

/// The leaf scan over an index's shards.
#[derive(Debug)]
pub struct TantivyScanExec {
    index: Arc<Index>,
    shards: ShardSet,
    mapping: Arc<Mapping>,
    table_schema: SchemaRef,
    projection: Vec<usize>,
    schema: SchemaRef,
    query: LeafQuery,
    sort: Option<ScanSort>,
    fetch: Option<usize>,
    /// Term statistics of every shard of the index, to score with.
    stats: Option<Arc<TermStats>>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl TantivyScanExec {
    /// Builds a scan, validating the projection and the sort.
    pub fn try_new(
        index: Arc<Index>,
        mapping: Arc<Mapping>,
        table_schema: SchemaRef,
        projection: Vec<usize>,
        query: LeafQuery,
        sort: Option<ScanSort>,
        fetch: Option<usize>,
    ) -> Result<TantivyScanExec> {
        let shards = ShardSet::all(index.num_shards());
        TantivyScanExec::with_shard_set(
            index,
            shards,
            mapping,
            projection,
            query,
            sort,
            fetch,
            table_schema,
        )
    }

    /// The scan, scoring with these statistics.
    pub(crate) fn with_stats(mut self, stats: Option<Arc<TermStats>>) -> TantivyScanExec {
        self.stats = stats;
        self
    }

    /// The statistics the scan scores with.
    pub(crate) fn stats(&self) -> Option<&Arc<TermStats>> {
        self.stats.as_ref()
    }

    /// A scan of some shards of the index.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn with_shard_set(
        index: Arc<Index>,
        shards: ShardSet,
        mapping: Arc<Mapping>,
        projection: Vec<usize>,
        query: LeafQuery,
        sort: Option<ScanSort>,
        fetch: Option<usize>,
        table_schema: SchemaRef,
    ) -> Result<TantivyScanExec> {
        let schema = Arc::new(table_schema.project(&projection)?);
        let mut eq = EquivalenceProperties::new(Arc::clone(&schema));
        if let Some(sort) = &sort {
            let (name, options) = match sort {
                ScanSort::Score => (
                    SCORE_COLUMN,
                    datafusion::arrow::compute::SortOptions {
                        descending: true,
                        nulls_first: true,
                    },
                ),
                ScanSort::Column {
                    path,
                    descending,
                    nulls_first,
                    ..
                } => (
                    path.as_str(),
                    datafusion::arrow::compute::SortOptions {
                        descending: *descending,
                        nulls_first: *nulls_first,
                    },
                ),
            };
            let idx = schema.index_of(name)?;
            let expr = PhysicalSortExpr::new(Arc::new(ColumnExpr::new(name, idx)), options);
            if let Some(ordering) = LexOrdering::new(vec![expr]) {
                eq.add_ordering(ordering);
            }
        }
        let properties = PlanProperties::new(
            eq,
            Partitioning::UnknownPartitioning(shards.partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(TantivyScanExec {
            index,
            shards,
            mapping,
            table_schema,
            projection,
            schema,
            query,
            sort,
            fetch,
            stats: None,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// The index scanned.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// The shards scanned.
    pub fn shard_set(&self) -> &ShardSet {
        &self.shards
    }

    /// The same scan over other shards of the index.
    pub fn with_shards(&self, shards: ShardSet) -> Result<TantivyScanExec> {
        Ok(TantivyScanExec::with_shard_set(
            Arc::clone(&self.index),
            shards,
            Arc::clone(&self.mapping),
            self.projection.clone(),
            self.query.clone(),
            self.sort.clone(),
            self.fetch,
            Arc::clone(&self.table_schema),
        )?
        .with_stats(self.stats.clone()))
    }

    /// What a plan codec needs to rebuild the scan on another node.
    pub(crate) fn parts(&self) -> (&[usize], Option<&ScanSort>, Option<usize>) {
        (&self.projection, self.sort.as_ref(), self.fetch)
    }

    /// The mapping the scan reads with.
    pub(crate) fn mapping(&self) -> &Arc<Mapping> {
        &self.mapping
    }

    /// The query the scan runs.
    pub(crate) fn query(&self) -> &LeafQuery {
        &self.query
    }

    /// Whether the scan returns every match, in no particular order.
    pub(crate) fn is_plain(&self) -> bool {
        self.sort.is_none() && self.fetch.is_none()
    }

    fn with(&self, sort: Option<ScanSort>, fetch: Option<usize>) -> Result<TantivyScanExec> {
        Ok(TantivyScanExec::with_shard_set(
            Arc::clone(&self.index),
            self.shards.clone(),
            Arc::clone(&self.mapping),
            self.projection.clone(),
            self.query.clone(),
            sort,
            fetch,
            Arc::clone(&self.table_schema),
        )?
        .with_stats(self.stats.clone()))
    }

    fn sort_for(&self, order: &[PhysicalSortExpr]) -> Option<ScanSort> {
        let [key] = order else { return None };
        let col = key.expr.downcast_ref::<ColumnExpr>()?;
        let name = self.schema.field(col.index()).name();
        if name == SCORE_COLUMN {
            return (key.options.descending && self.query.is_scoring()).then_some(ScanSort::Score);
        }
        let column = self.mapping.column(name)?;
        if column.mapping.multi_valued {
            return None;
        }
        let float = match column.mapping.ty {
            FieldType::Long
            | FieldType::Integer
            | FieldType::Short
            | FieldType::Byte
            | FieldType::Date
            | FieldType::ScaledFloat => false,
            FieldType::Double | FieldType::Float => true,
            _ => return None,
        };
        Some(ScanSort::Column {
            path: name.clone(),
            descending: key.options.descending,
            nulls_first: key.options.nulls_first,
            float,
        })
    }
}

impl DisplayAs for TantivyScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let columns: Vec<&str> = self.schema.fields().iter().map(|f| f.name().as_str()).collect();
        write!(
            f,
            "TantivyScanExec: index={}, shards={}, query={}, projection=[{}]",
            self.index.name(),
            self.shards.describe(&self.index),
            self.query.describe(),
            columns.join(", ")
        )?;
        match &self.sort {
            Some(ScanSort::Score) => write!(f, ", topk=_score DESC")?,
            Some(ScanSort::Column { path, descending, .. }) => {
                write!(f, ", topk={path} {}", if *descending { "DESC" } else { "ASC" })?
            }
            None => {}
        }
        if let Some(fetch) = self.fetch {
            write!(f, ", fetch={fetch}")?;
        }
        if self.schema.fields().is_empty() {
            write!(f, ", count_only")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for TantivyScanExec {
    fn name(&self) -> &str {
        "TantivyScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "TantivyScanExec has no children".into(),
            ))
        }
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let shard = match self.shards.resolve(&self.index, partition)? {
            ShardSource::Local(shard) => shard,
            ShardSource::Padding => {
                return Ok(Box::pin(EmptyRecordBatchStream::new(Arc::clone(&self.schema))));
            }
            ShardSource::Remote(node, n) => {
                let one = self.with_shards(ShardSet::padded(vec![n], 1))?;
                return remote_partition(&self.index, &one, &node, Arc::clone(&self.schema));
            }
        };
        let job = ScanJob {
            shard,
            mapping: Arc::clone(&self.mapping),
            schema: Arc::clone(&self.schema),
            query: self.query.clone(),
            sort: self.sort.clone(),
            fetch: self.fetch,
            stats: self.stats.clone(),
            batch_size: context.session_config().batch_size(),
            output_rows: MetricBuilder::new(&self.metrics).output_rows(partition),
            docs_scanned: MetricBuilder::new(&self.metrics).counter("docs_scanned", partition),
            elapsed_compute: MetricBuilder::new(&self.metrics).elapsed_compute(partition),
            send_time: std::cell::Cell::new(std::time::Duration::ZERO),
            fetch_time: std::cell::Cell::new(None),
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
        tokio::task::spawn_blocking(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(&tx)));
            let err = match outcome {
                Ok(Ok(())) => return,
                Ok(Err(err)) => err,
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    DataFusionError::Internal(format!("scan of shard {partition} panicked: {what}"))
                }
            };
            // The receiver may be gone (LIMIT satisfied): nothing to report to then.
            let _ = tx.blocking_send(Err(err));
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn ExecutionPlan>> {
        let fetch = match (self.fetch, limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.with(self.sort.clone(), fetch)
            .ok()
            .map(|e| Arc::new(e) as Arc<dyn ExecutionPlan>)
    }

    fn fetch(&self) -> Option<usize> {
        self.fetch
    }

    fn try_pushdown_sort(
        &self,
        order: &[PhysicalSortExpr],
    ) -> Result<SortOrderPushdownResult<Arc<dyn ExecutionPlan>>> {
        match self.sort_for(order) {
            // A fetch applied before the sort would be a different question.
            Some(sort) if self.fetch.is_none() => Ok(SortOrderPushdownResult::Exact {
                inner: Arc::new(self.with(Some(sort), None)?),
            }),
            _ => Ok(SortOrderPushdownResult::Unsupported),
        }
    }
}

/// The work of one partition, run on a blocking thread.
struct ScanJob {
    shard: Arc<Shard>,
    mapping: Arc<Mapping>,
    schema: SchemaRef,
    query: LeafQuery,
    sort: Option<ScanSort>,
    fetch: Option<usize>,
    stats: Option<Arc<TermStats>>,
    batch_size: usize,
    output_rows: MetricCount,
    docs_scanned: MetricCount,
    /// Time spent in tantivy and building batches (not waiting for the consumer).
    elapsed_compute: datafusion::physical_plan::metrics::Time,
    send_time: std::cell::Cell<std::time::Duration>,
    /// Time spent reading stored documents, if the scan read any.
    fetch_time: std::cell::Cell<Option<std::time::Duration>>,
}

type Sender = tokio::sync::mpsc::Sender<Result<RecordBatch>>;

pub(crate) fn tantivy_err(e: impl fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!("tantivy: {e}"))
}

impl ScanJob {
    fn run(&self, tx: &Sender) -> Result<()> {
        let started = std::time::Instant::now();
        let result = self.run_inner(tx);
        let busy = started.elapsed().saturating_sub(self.send_time.get());
        self.elapsed_compute.add_duration(busy);
        let fetched = self.fetch_time.get();
        self.shard
            .activity()
            .searched(busy.saturating_sub(fetched.unwrap_or_default()), fetched);
        result
    }

    fn run_inner(&self, tx: &Sender) -> Result<()> {
        if self.fetch == Some(0) {
            return Ok(());
        }
        let searcher = self.shard.searcher();
        let fields = self.shard.fields();
        let query = self
            .query
            .compile(&self.mapping, fields, self.shard.tantivy_index())
            .map_err(|e| DataFusionError::Plan(e.to_string()))?;
        if self.schema.fields().is_empty() {
            return self.count_only(&searcher, query.as_ref(), tx);
        }
        let scoring = self.query.is_scoring()
            && (self.schema.field_with_name(SCORE_COLUMN).is_ok() || self.sort == Some(ScanSort::Score));
        let mut builder = BatchBuilder::new(&self.schema, &self.mapping, fields, &searcher);
        let result = self.scan_with(&searcher, query.as_ref(), scoring, &mut builder, tx);
        self.fetch_time.set(builder.fetched);
        result
    }

    /// The rows of the query, sorted and limited as the scan was asked, in
    /// batches made by `builder`.
    fn scan_with(
        &self,
        searcher: &Searcher,
        query: &dyn Query,
        scoring: bool,
        builder: &mut BatchBuilder,
        tx: &Sender,
    ) -> Result<()> {
        match &self.sort {
            Some(ScanSort::Score) => {
                let limit = self.fetch.unwrap_or(searcher.num_docs() as usize).max(1);
                // Every hit is scored: no field keeps norms (a JSON field has
                // none), and on such a field tantivy's block-max WAND
                // (`order_by_score`) skips blocks holding the best hits.
                let collector = TopDocs::with_limit(limit).tweak_score(|_: &tantivy::SegmentReader| {
                    |_: tantivy::DocId, score: tantivy::Score| score
                });
                let schema = self.shard.tantivy_index().schema();
                let top = match &self.stats {
                    Some(stats) => searcher.search_with_statistics_provider(
                        query,
                        &collector,
                        &stats.provider(searcher, &schema),
                    ),
                    None => searcher.search(query, &collector),
                }
                .map_err(tantivy_err)?;
                let rows: Vec<Row> = top.into_iter().map(|(s, a)| (a, Some(s))).collect();
                self.emit_rows(builder, &rows, tx)
            }
            Some(ScanSort::Column {
                path,
                descending,
                nulls_first,
                float,
            }) => {
                let limit = self.fetch.unwrap_or(usize::MAX);
                let rows = self.top_by_column(
                    searcher,
                    query,
                    scoring,
                    path,
                    *descending,
                    *nulls_first,
                    *float,
                    limit,
                )?;
                self.emit_rows(builder, &rows, tx)
            }
            None if !scoring && self.fetch.is_none() && all_single_numeric(&builder.kinds) => {
                self.numeric_scan(searcher, query, &builder.kinds, tx)
            }
            None => self.full_scan(searcher, query, scoring, builder, tx),
        }
    }

    /// The query's weight: scoring with the index-wide statistics when the
    /// scan has them, with the shard's own otherwise.
    fn weight(&self, searcher: &Searcher, query: &dyn Query, scoring: bool) -> Result<Box<dyn Weight>> {
        let schema = self.shard.tantivy_index().schema();
        let provider = self.stats.as_ref().map(|s| s.provider(searcher, &schema));
        let enable = match (&provider, scoring) {
            (_, false) => EnableScoring::disabled_from_searcher(searcher),
            (Some(p), true) => EnableScoring::enabled_from_statistics_provider(p, searcher),
            (None, true) => EnableScoring::enabled_from_searcher(searcher),
        };
        query.weight(enable).map_err(tantivy_err)
    }

    fn send(&self, tx: &Sender, batch: RecordBatch) -> bool {
        self.output_rows.add(batch.num_rows());
        let started = std::time::Instant::now();
        let sent = tx.blocking_send(Ok(batch)).is_ok();
        self.send_time.set(self.send_time.get() + started.elapsed());
        sent
    }

    fn count_only(&self, searcher: &Searcher, query: &dyn Query, tx: &Sender) -> Result<()> {
        let count = searcher.search(query, &Count).map_err(tantivy_err)?;
        self.docs_scanned.add(count);
        let mut left = self.fetch.map_or(count, |f| f.min(count));
        while left > 0 {
            let n = left.min(self.batch_size);
            let options = RecordBatchOptions::new().with_row_count(Some(n));
            let batch = RecordBatch::try_new_with_options(Arc::clone(&self.schema), vec![], &options)?;
            if !self.send(tx, batch) {
                return Ok(());
            }
            left -= n;
        }
        Ok(())
    }

    fn full_scan(
        &self,
        searcher: &Searcher,
        query: &dyn Query,
        scoring: bool,
        builder: &mut BatchBuilder,
        tx: &Sender,
    ) -> Result<()> {
        let weight = self.weight(searcher, query, scoring)?;
        let mut left = self.fetch.unwrap_or(usize::MAX);
        let mut rows: Vec<Row> = Vec::with_capacity(self.batch_size);
        for (ord, segment) in searcher.segment_readers().iter().enumerate() {
            let mut scorer = weight.scorer(segment, 1.0).map_err(tantivy_err)?;
            let alive = segment.alive_bitset();
            let mut doc = scorer.doc();
            while doc != tantivy::TERMINATED && left > 0 {
                if alive.is_none_or(|a| a.is_alive(doc)) {
                    let score = scoring.then(|| scorer.score());
                    rows.push((DocAddress::new(ord as u32, doc), score));
                    left -= 1;
                    if rows.len() == self.batch_size {
                        self.docs_scanned.add(rows.len());
                        let batch = builder.build(&rows)?;
                        rows.clear();
                        if !self.send(tx, batch) {
                            return Ok(());
                        }
                    }
                }
                doc = scorer.advance();
            }
        }
        if !rows.is_empty() {
            self.docs_scanned.add(rows.len());
            let batch = builder.build(&rows)?;
            self.send(tx, batch);
        }
        Ok(())
    }

    /// The analytics fast path: an unscored, unlimited scan whose columns are
    /// all single-valued numbers. Doc ids are collected per segment and each
    /// column is read with one batched fast-field call per batch, straight into
    /// Arrow buffers (no validity bitmap when every document has a value).
    fn numeric_scan(
        &self,
        searcher: &Searcher,
        query: &dyn Query,
        kinds: &[ColKind],
        tx: &Sender,
    ) -> Result<()> {
        let weight = query
            .weight(EnableScoring::disabled_from_searcher(searcher))
            .map_err(tantivy_err)?;
        for segment in searcher.segment_readers() {
            let columns = kinds
                .iter()
                .map(|k| match k {
                    ColKind::Int { column, .. } | ColKind::Float { column, .. } => {
                        open_numeric(segment, column)
                    }
                    _ => Err(DataFusionError::Internal(
                        "numeric scan over a non-numeric column".into(),
                    )),
                })
                .collect::<Result<Vec<_>>>()?;
            let more = for_each_live_block(weight.as_ref(), segment, self.batch_size, |docs| {
                self.docs_scanned.add(docs.len());
                let arrays = kinds
                    .iter()
                    .zip(&columns)
                    .map(|(kind, col)| numeric_array(kind, col.as_ref(), docs))
                    .collect::<Vec<_>>();
                let options = RecordBatchOptions::new().with_row_count(Some(docs.len()));
                let batch = RecordBatch::try_new_with_options(Arc::clone(&self.schema), arrays, &options)?;
                Ok(self.send(tx, batch))
            })?;
            if !more {
                return Ok(());
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn top_by_column(
        &self,
        searcher: &Searcher,
        query: &dyn Query,
        scoring: bool,
        path: &str,
        descending: bool,
        nulls_first: bool,
        float: bool,
        limit: usize,
    ) -> Result<Vec<Row>> {
        let weight = self.weight(searcher, query, scoring)?;
        // Max-heap of the worst kept entry: keys are arranged so that "smaller" is better.
        let mut heap: BinaryHeap<HeapEntry> = BinaryHeap::new();
        let mut matched = 0usize;
        for (ord, segment) in searcher.segment_readers().iter().enumerate() {
            let column = open_numeric(segment, &self.shard.fields().column(path))?;
            let mut scorer = weight.scorer(segment, 1.0).map_err(tantivy_err)?;
            let alive = segment.alive_bitset();
            let mut doc = scorer.doc();
            while doc != tantivy::TERMINATED {
                if alive.is_none_or(|a| a.is_alive(doc)) {
                    matched += 1;
                    let value = column.as_ref().and_then(|c| c.first_f64_or_i64(doc, float));
                    let key = SortKey::new(value, descending, nulls_first);
                    let entry = HeapEntry {
                        key,
                        addr: DocAddress::new(ord as u32, doc),
                        score: scoring.then(|| scorer.score()),
                    };
                    if heap.len() < limit {
                        heap.push(entry);
                    } else if heap.peek().is_some_and(|worst| entry < *worst) {
                        heap.pop();
                        heap.push(entry);
                    }
                }
                doc = scorer.advance();
            }
        }
        self.docs_scanned.add(matched);
        let sorted = heap.into_sorted_vec();
        Ok(sorted.into_iter().map(|e| (e.addr, e.score)).collect())
    }

    fn emit_rows(&self, builder: &mut BatchBuilder, rows: &[Row], tx: &Sender) -> Result<()> {
        for chunk in rows.chunks(self.batch_size.max(1)) {
            let batch = builder.build(chunk)?;
            if !self.send(tx, batch) {
                break;
            }
        }
        Ok(())
    }
}

/// Whether every projected column is a single-valued number or date.
fn all_single_numeric(kinds: &[ColKind]) -> bool {
    !kinds.is_empty()
        && kinds.iter().all(|k| {
            matches!(
                k,
                ColKind::Int { multi: false, .. } | ColKind::Float { multi: false, .. }
            )
        })
}

/// One numeric column for a batch of doc ids of one segment.
fn numeric_array(kind: &ColKind, column: Option<&NumColumn>, docs: &[DocId]) -> ArrayRef {
    let values = match column {
        Some(col) => col.first_values(docs),
        None => vec![None; docs.len()],
    };
    match kind {
        ColKind::Int { repr, .. } if values.iter().all(Option::is_some) => {
            repr.full_array(values.into_iter().flatten().map(NumValue::as_i64).collect())
        }
        ColKind::Int { repr, .. } => {
            repr.array(values.into_iter().map(|v| v.map(NumValue::as_i64)).collect())
        }
        _ => Arc::new(Float64Array::from_iter(
            values.into_iter().map(|v| v.map(NumValue::as_f64)),
        )),
    }
}

/// The first value of each document (`None` without one). Optional columns
/// translate the whole block of doc ids to value rows at once and read the
/// values in one batch.
fn first_values(col: &Column<u64>, docs: &[DocId]) -> Vec<Option<u64>> {
    let mut out = vec![None; docs.len()];
    if col.get_cardinality() != tantivy::columnar::Cardinality::Optional {
        col.first_vals(docs, &mut out);
        return out;
    }
    let mut doc_out = Vec::with_capacity(docs.len());
    let mut rows = Vec::with_capacity(docs.len());
    col.row_ids_for_docs(docs, &mut doc_out, &mut rows);
    let mut vals = vec![0; rows.len()];
    col.values.get_vals(&rows, &mut vals);
    let mut i = 0;
    for (doc, val) in doc_out.iter().zip(vals) {
        while i < docs.len() && docs[i] < *doc {
            i += 1;
        }
        if i < docs.len() && docs[i] == *doc {
            out[i] = Some(val);
            i += 1;
        }
    }
    out
}

/// Calls `f` with the live documents of a segment that match `weight`, in
/// blocks of about `block` documents (tantivy hands them out as its
/// collectors get them). Stops early when `f` answers `false`, and then
/// returns `false`.
pub(crate) fn for_each_live_block(
    weight: &dyn tantivy::query::Weight,
    segment: &SegmentReader,
    block: usize,
    mut f: impl FnMut(&[DocId]) -> Result<bool>,
) -> Result<bool> {
    let alive = segment.alive_bitset();
    let mut docs: Vec<DocId> = Vec::with_capacity(block + 64);
    let mut outcome: Result<bool> = Ok(true);
    weight
        .for_each_no_score(segment, &mut |matched: &[DocId]| {
            if !matches!(outcome, Ok(true)) {
                return;
            }
            match alive {
                Some(a) => docs.extend(matched.iter().filter(|d| a.is_alive(**d))),
                None => docs.extend_from_slice(matched),
            }
            if docs.len() >= block {
                outcome = f(&docs);
                docs.clear();
            }
        })
        .map_err(tantivy_err)?;
    if matches!(outcome, Ok(true)) && !docs.is_empty() {
        outcome = f(&docs);
    }
    outcome
}

/// Calls `f` with every document of a segment without deletions, `block` at
/// a time: what `for_each_live_block` gives for a query matching all, without
/// running it.
pub(crate) fn for_each_doc_block(max_doc: DocId, block: usize, mut f: impl FnMut(&[DocId])) {
    let mut docs: Vec<DocId> = Vec::with_capacity(block);
    let step = DocId::try_from(block).unwrap_or(DocId::MAX);
    let mut start: DocId = 0;
    while start < max_doc {
        let end = start.saturating_add(step).min(max_doc);
        docs.clear();
        docs.extend(start..end);
        f(&docs);
        start = end;
    }
}

/// Buffers reused from block to block to read a column's values.
#[derive(Debug, Default)]
pub(crate) struct ColumnBuf {
    docs: Vec<DocId>,
    rows: Vec<u32>,
}

/// Reads into `values` the first value of each document of `docs` (sorted)
/// that has one, in order. Returns `true` when every document had one
/// (`values[i]` is `docs[i]`'s); otherwise `buf.docs[i]` is the document of
/// `values[i]`.
fn read_first(col: &Column<u64>, docs: &[DocId], buf: &mut ColumnBuf, values: &mut Vec<u64>) -> bool {
    // Every value is overwritten: resizing keeps the previous block's
    // values rather than zeroing the buffer again.
    let cardinality = col.get_cardinality();
    if cardinality == tantivy::columnar::Cardinality::Full {
        values.resize(docs.len(), 0);
        match docs {
            // A run of consecutive documents (every document matches):
            // bitpacked columns unpack a range in batches.
            [first, .., last] if (last - first) as usize == docs.len() - 1 => {
                col.values.get_range(u64::from(*first), values)
            }
            _ => col.values.get_vals(docs, values),
        }
        return true;
    }
    buf.docs.clear();
    buf.rows.clear();
    col.row_ids_for_docs(docs, &mut buf.docs, &mut buf.rows);
    if cardinality == tantivy::columnar::Cardinality::Multivalued {
        let mut kept = 0;
        for i in 0..buf.docs.len() {
            if kept == 0 || buf.docs[i] != buf.docs[kept - 1] {
                buf.docs[kept] = buf.docs[i];
                buf.rows[kept] = buf.rows[i];
                kept += 1;
            }
        }
        buf.docs.truncate(kept);
        buf.rows.truncate(kept);
    }
    values.resize(buf.rows.len(), 0);
    col.values.get_vals(&buf.rows, values);
    values.len() == docs.len()
}

/// Calls `f(i, value)` with the first value of each document `docs[i]` that
/// has one, reading the values of the block in one batch.
fn for_each_first(
    col: &Column<u64>,
    docs: &[DocId],
    buf: &mut ColumnBuf,
    values: &mut Vec<u64>,
    mut f: impl FnMut(usize, u64),
) {
    if read_first(col, docs, buf, values) {
        for (i, v) in values.iter().enumerate() {
            f(i, *v);
        }
        return;
    }
    let mut i = 0;
    for (doc, v) in buf.docs.iter().zip(values.iter()) {
        while docs[i] < *doc {
            i += 1;
        }
        f(i, *v);
        i += 1;
    }
}

/// Buffers reused from block to block to read a numeric column.
#[derive(Debug, Default)]
pub(crate) struct NumBuf {
    column: ColumnBuf,
    raw: Vec<u64>,
}

/// The values of a block of documents as the column stores them, `u64`s
/// that readers map back in their own loops: by `i64::from_u64`, as they
/// are, or by `f64::from_u64`.
#[derive(Clone, Copy)]
pub(crate) enum BlockValues<'a> {
    I64(&'a [u64]),
    U64(&'a [u64]),
    F64(&'a [u64]),
}

/// The first term ordinal of each document of `docs` that has one, in order.
pub(crate) fn first_ords<'a>(col: &StrColumn, docs: &[DocId], buf: &'a mut NumBuf) -> &'a [u64] {
    read_first(col.ords(), docs, &mut buf.column, &mut buf.raw);
    &buf.raw
}

/// Calls `f(i, ordinal)` with the first term ordinal of each document
/// `docs[i]` that has one.
pub(crate) fn for_each_first_ord(
    col: &StrColumn,
    docs: &[DocId],
    buf: &mut NumBuf,
    f: impl FnMut(usize, u64),
) {
    for_each_first(col.ords(), docs, &mut buf.column, &mut buf.raw, f);
}

/// A matching document and its score (when scoring).
type Row = (DocAddress, Option<Score>);

/// Consecutive rows of the same segment, as `(segment_ord, rows)`.
fn segment_runs(rows: &[Row]) -> Vec<(u32, &[Row])> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=rows.len() {
        if i == rows.len() || rows[i].0.segment_ord != rows[start].0.segment_ord {
            out.push((rows[start].0.segment_ord, &rows[start..i]));
            start = i;
        }
    }
    out
}

/// A comparable sort key: smaller sorts first.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SortKey {
    /// 0 sorts before 1: encodes where nulls go.
    null_rank: u8,
    /// The value, negated for descending order.
    value: OrdF64OrI64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum OrdF64OrI64 {
    I(i128),
    F(f64),
}

impl SortKey {
    fn new(value: Option<NumValue>, descending: bool, nulls_first: bool) -> SortKey {
        match value {
            None => SortKey {
                null_rank: if nulls_first { 0 } else { 2 },
                value: OrdF64OrI64::I(0),
            },
            Some(v) => {
                let value = match v {
                    NumValue::I(n) => OrdF64OrI64::I(if descending { -(n as i128) } else { n as i128 }),
                    NumValue::F(f) => OrdF64OrI64::F(if descending { -f } else { f }),
                };
                SortKey { null_rank: 1, value }
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct HeapEntry {
    key: SortKey,
    addr: DocAddress,
    score: Option<Score>,
}

impl PartialEq for HeapEntry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for HeapEntry {}
impl PartialOrd for HeapEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapEntry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let by_value = match (self.key.value, other.key.value) {
            (OrdF64OrI64::I(a), OrdF64OrI64::I(b)) => a.cmp(&b),
            (OrdF64OrI64::F(a), OrdF64OrI64::F(b)) => a.total_cmp(&b),
            (OrdF64OrI64::I(_), OrdF64OrI64::F(_)) => std::cmp::Ordering::Less,
            (OrdF64OrI64::F(_), OrdF64OrI64::I(_)) => std::cmp::Ordering::Greater,
        };
        self.key
            .null_rank
            .cmp(&other.key.null_rank)
            .then(by_value)
            .then(self.addr.segment_ord.cmp(&other.addr.segment_ord))
            .then(self.addr.doc_id.cmp(&other.addr.doc_id))
    }
}

#[derive(Debug, Clone, Copy)]
enum NumValue {
    I(i64),
    F(f64),
}

/// How a numeric column's stored `u64`s map back to its values.
#[derive(Debug, Clone, Copy)]
enum NumKind {
    I64,
    U64,
    F64,
}

/// A numeric column whatever type tantivy chose for it in this segment
/// (JSON fields store whole floats as integers), read as the `u64`s it
/// stores and mapped back here: tantivy's typed `i64` and `f64` views read a
/// range value by value, the `u64` view unpacks it in batches.
#[derive(Clone)]
pub(crate) struct NumColumn {
    kind: NumKind,
    raw: Column<u64>,
}

impl NumColumn {
    /// Whether every document has exactly one value.
    pub(crate) fn is_full(&self) -> bool {
        self.raw.get_cardinality() == tantivy::columnar::Cardinality::Full
    }

    fn value(&self, raw: u64) -> NumValue {
        match self.kind {
            NumKind::I64 => NumValue::I(i64::from_u64(raw)),
            NumKind::U64 => NumValue::I(i64::try_from(raw).unwrap_or(i64::MAX)),
            NumKind::F64 => NumValue::F(f64::from_u64(raw)),
        }
    }

    /// Calls `f(i, value)` for each document `docs[i]` that has a value, as a double.
    pub(crate) fn for_each_f64(&self, docs: &[DocId], buf: &mut NumBuf, mut f: impl FnMut(usize, f64)) {
        let (col, values) = (&mut buf.column, &mut buf.raw);
        match self.kind {
            NumKind::I64 => {
                for_each_first(&self.raw, docs, col, values, |i, v| f(i, i64::from_u64(v) as f64))
            }
            NumKind::U64 => for_each_first(&self.raw, docs, col, values, |i, v| f(i, v as f64)),
            NumKind::F64 => for_each_first(&self.raw, docs, col, values, |i, v| f(i, f64::from_u64(v))),
        }
    }

    /// Calls `f(i, value)` for each document `docs[i]` that has a value, as an
    /// integer (doubles truncated).
    pub(crate) fn for_each_i64(&self, docs: &[DocId], buf: &mut NumBuf, mut f: impl FnMut(usize, i64)) {
        let (col, values) = (&mut buf.column, &mut buf.raw);
        match self.kind {
            NumKind::I64 => for_each_first(&self.raw, docs, col, values, |i, v| f(i, i64::from_u64(v))),
            NumKind::U64 => for_each_first(&self.raw, docs, col, values, |i, v| {
                f(i, i64::try_from(v).unwrap_or(i64::MAX))
            }),
            NumKind::F64 => {
                for_each_first(&self.raw, docs, col, values, |i, v| f(i, f64::from_u64(v) as i64))
            }
        }
    }

    /// The values of the documents of `docs` that have one, in order.
    pub(crate) fn read_block<'a>(&self, docs: &[DocId], buf: &'a mut NumBuf) -> BlockValues<'a> {
        read_first(&self.raw, docs, &mut buf.column, &mut buf.raw);
        match self.kind {
            NumKind::I64 => BlockValues::I64(&buf.raw),
            NumKind::U64 => BlockValues::U64(&buf.raw),
            NumKind::F64 => BlockValues::F64(&buf.raw),
        }
    }

    fn first_f64_or_i64(&self, doc: DocId, float: bool) -> Option<NumValue> {
        let v = self.value(self.raw.first(doc)?);
        Some(if float { NumValue::F(v.as_f64()) } else { v })
    }

    fn values(&self, doc: DocId) -> Vec<NumValue> {
        self.raw.values_for_doc(doc).map(|v| self.value(v)).collect()
    }

    /// The first value of each document of `docs` (`None` without one).
    fn first_values(&self, docs: &[DocId]) -> Vec<Option<NumValue>> {
        if self.is_full() {
            let mut raw = vec![0; docs.len()];
            self.raw.values.get_vals(docs, &mut raw);
            return raw.into_iter().map(|v| Some(self.value(v))).collect();
        }
        first_values(&self.raw, docs)
            .into_iter()
            .map(|v| v.map(|v| self.value(v)))
            .collect()
    }
}

impl NumValue {
    fn as_f64(self) -> f64 {
        match self {
            NumValue::I(n) => n as f64,
            NumValue::F(f) => f,
        }
    }

    fn as_i64(self) -> i64 {
        match self {
            NumValue::I(n) => n,
            NumValue::F(f) => f as i64,
        }
    }
}

pub(crate) fn open_numeric(segment: &SegmentReader, name: &str) -> Result<Option<NumColumn>> {
    let handles = segment
        .fast_fields()
        .dynamic_column_handles(name)
        .map_err(tantivy_err)?;
    for handle in handles {
        let kind = match handle.column_type() {
            ColumnType::I64 => NumKind::I64,
            ColumnType::U64 => NumKind::U64,
            ColumnType::F64 => NumKind::F64,
            _ => continue,
        };
        return Ok(handle
            .open_u64_lenient()
            .map_err(tantivy_err)?
            .map(|raw| NumColumn { kind, raw }));
    }
    Ok(None)
}

fn open_bool(segment: &SegmentReader, name: &str) -> Result<Option<Column<bool>>> {
    let handles = segment
        .fast_fields()
        .dynamic_column_handles(name)
        .map_err(tantivy_err)?;
    for handle in handles {
        if handle.column_type() == ColumnType::Bool
            && let DynamicColumn::Bool(c) = handle.open().map_err(tantivy_err)?
        {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

pub(crate) fn open_str(segment: &SegmentReader, name: &str) -> Result<Option<StrColumn>> {
    segment.fast_fields().str(name).map_err(tantivy_err)
}

/// How a projected column is read.
#[derive(Debug, Clone)]
enum ColKind {
    Id,
    Score,
    Source,
    /// A u64 column of the write metadata (`_version`, `_seq_no`).
    Meta {
        column: &'static str,
        /// The value of a document without one.
        missing: Option<u64>,
    },
    /// Text, read from `_source` at `source_path`.
    Text {
        source_path: String,
        multi: bool,
    },
    /// Keyword dictionary column (single-valued).
    Dict {
        column: String,
    },
    /// String column (IP, or multi-valued keyword).
    Str {
        column: String,
        multi: bool,
    },
    Int {
        column: String,
        multi: bool,
        repr: IntRepr,
    },
    Float {
        column: String,
        multi: bool,
    },
    Bool {
        column: String,
        multi: bool,
    },
}

/// What the 64-bit integers of a column stand for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum IntRepr {
    Long,
    /// Epoch milliseconds.
    Date,
    /// Units of `10^-scale` (`scaled_float`).
    Decimal(i8),
}

impl IntRepr {
    fn data_type(self) -> DataType {
        match self {
            IntRepr::Long => DataType::Int64,
            IntRepr::Date => DataType::Timestamp(TimeUnit::Millisecond, None),
            IntRepr::Decimal(scale) => DataType::Decimal128(crate::table::DECIMAL_PRECISION, scale),
        }
    }

    fn full_array(self, values: Vec<i64>) -> ArrayRef {
        match self {
            IntRepr::Long => Arc::new(Int64Array::from(values)),
            IntRepr::Date => Arc::new(TimestampMillisecondArray::from(values)),
            IntRepr::Decimal(scale) => Arc::new(
                Decimal128Array::from_iter_values(values.into_iter().map(i128::from))
                    .with_precision_and_scale(crate::table::DECIMAL_PRECISION, scale)
                    .expect("scale within precision"),
            ),
        }
    }

    fn array(self, values: Vec<Option<i64>>) -> ArrayRef {
        match self {
            IntRepr::Long => Arc::new(Int64Array::from(values)),
            IntRepr::Date => Arc::new(TimestampMillisecondArray::from(values)),
            IntRepr::Decimal(scale) => Arc::new(
                values
                    .into_iter()
                    .map(|v| v.map(i128::from))
                    .collect::<Decimal128Array>()
                    .with_precision_and_scale(crate::table::DECIMAL_PRECISION, scale)
                    .expect("scale within precision"),
            ),
        }
    }

    /// A list per row (NULL for a row without values).
    fn list(self, rows: impl Iterator<Item = Vec<i64>>) -> ArrayRef {
        let mut offsets = vec![0i32];
        let mut flat = Vec::new();
        let mut valid = Vec::new();
        for row in rows {
            valid.push(!row.is_empty());
            flat.extend(row);
            offsets.push(i32::try_from(flat.len()).unwrap_or(i32::MAX));
        }
        Arc::new(ListArray::new(
            Arc::new(Field::new("item", self.data_type(), true)),
            OffsetBuffer::new(offsets.into()),
            self.full_array(flat),
            Some(NullBuffer::from(valid)),
        ))
    }
}

/// Readers of one segment.
#[derive(Default)]
struct SegmentColumns {
    id: Option<StrColumn>,
    /// `_version` and `_seq_no`, when the batch has them.
    metas: HashMap<&'static str, Column<u64>>,
    strs: HashMap<String, Option<StrColumn>>,
    nums: HashMap<String, Option<NumColumn>>,
    bools: HashMap<String, Option<Column<bool>>>,
}

struct BatchBuilder<'a> {
    schema: SchemaRef,
    kinds: Vec<ColKind>,
    fields: Fields,
    searcher: &'a Searcher,
    segments: HashMap<u32, SegmentColumns>,
    needs_source: bool,
    /// Time spent reading stored documents, if any were read.
    fetched: Option<std::time::Duration>,
}

impl<'a> BatchBuilder<'a> {
    fn new(
        schema: &SchemaRef,
        mapping: &Mapping,
        fields: &Fields,
        searcher: &'a Searcher,
    ) -> BatchBuilder<'a> {
        let kinds: Vec<ColKind> = schema
            .fields()
            .iter()
            .map(|f| {
                let name = f.name().as_str();
                match name {
                    ID_COLUMN => ColKind::Id,
                    SCORE_COLUMN => ColKind::Score,
                    SOURCE_COLUMN => ColKind::Source,
                    // A document written once has no `_version` value: its
                    // version is 1.
                    VERSION_COLUMN => ColKind::Meta {
                        column: names::VERSION,
                        missing: Some(1),
                    },
                    SEQ_NO_COLUMN => ColKind::Meta {
                        column: names::SEQ_NO,
                        missing: None,
                    },
                    path => {
                        let Some(col) = mapping.column(path) else {
                            return ColKind::Text {
                                source_path: path.to_string(),
                                multi: false,
                            };
                        };
                        let multi = col.mapping.multi_valued;
                        let column = fields.column(path);
                        match col.mapping.ty {
                            FieldType::Text => ColKind::Text {
                                source_path: col.source_path.clone(),
                                multi,
                            },
                            FieldType::Keyword if !multi => ColKind::Dict { column },
                            FieldType::Keyword | FieldType::Ip => ColKind::Str { column, multi },
                            FieldType::Long | FieldType::Integer | FieldType::Short | FieldType::Byte => {
                                ColKind::Int {
                                    column,
                                    multi,
                                    repr: IntRepr::Long,
                                }
                            }
                            FieldType::Date => ColKind::Int {
                                column,
                                multi,
                                repr: IntRepr::Date,
                            },
                            FieldType::ScaledFloat => ColKind::Int {
                                column,
                                multi,
                                repr: IntRepr::Decimal(col.mapping.decimal_scale().unwrap_or(0)),
                            },
                            FieldType::Double | FieldType::Float => ColKind::Float { column, multi },
                            FieldType::Boolean => ColKind::Bool { column, multi },
                        }
                    }
                }
            })
            .collect();
        let needs_source = kinds
            .iter()
            .any(|k| matches!(k, ColKind::Source | ColKind::Text { .. }));
        BatchBuilder {
            schema: Arc::clone(schema),
            kinds,
            fields: fields.clone(),
            searcher,
            segments: HashMap::new(),
            needs_source,
            fetched: None,
        }
    }

    fn segment(&mut self, ord: u32) -> Result<&mut SegmentColumns> {
        if !self.segments.contains_key(&ord) {
            let reader = self.searcher.segment_reader(ord);
            let mut cols = SegmentColumns {
                id: open_str(reader, names::ID)?,
                ..Default::default()
            };
            for kind in &self.kinds {
                match kind {
                    ColKind::Dict { column } | ColKind::Str { column, .. } => {
                        cols.strs.insert(column.clone(), open_str(reader, column)?);
                    }
                    ColKind::Int { column, .. } | ColKind::Float { column, .. } => {
                        cols.nums.insert(column.clone(), open_numeric(reader, column)?);
                    }
                    ColKind::Bool { column, .. } => {
                        cols.bools.insert(column.clone(), open_bool(reader, column)?);
                    }
                    // A segment may lack the column (its documents have no values).
                    ColKind::Meta { column, .. } => {
                        if let Some(values) = reader.fast_fields().column_opt(column).map_err(tantivy_err)? {
                            cols.metas.insert(column, values);
                        }
                    }
                    _ => {}
                }
            }
            self.segments.insert(ord, cols);
        }
        self.segments
            .get_mut(&ord)
            .ok_or_else(|| DataFusionError::Internal("segment columns vanished".into()))
    }

    fn build(&mut self, rows: &[Row]) -> Result<RecordBatch> {
        let runs = segment_runs(rows);
        for (seg_ord, _) in &runs {
            self.segment(*seg_ord)?;
        }
        let sources: Vec<Option<(String, Value)>> = if self.needs_source {
            let reading = std::time::Instant::now();
            let sources = rows
                .iter()
                .map(|(addr, _)| {
                    let doc: TantivyDocument = self.searcher.doc(*addr).map_err(tantivy_err)?;
                    let text = doc
                        .get_first(self.fields.source)
                        .and_then(|v| v.as_str())
                        .map(str::to_string);
                    Ok(text.map(|t| {
                        let parsed = serde_json::from_str(&t).unwrap_or(Value::Null);
                        (t, parsed)
                    }))
                })
                .collect::<Result<_>>()?;
            self.fetched = Some(self.fetched.unwrap_or_default() + reading.elapsed());
            sources
        } else {
            Vec::new()
        };
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.kinds.len());
        for kind in &self.kinds {
            arrays.push(self.column(kind, rows, &runs, &sources)?);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            arrays,
            &options,
        )?)
    }

    /// A single-valued numeric column, read segment run by segment run with
    /// tantivy's batched `first_vals`.
    fn single_numeric<T: Copy>(
        &self,
        column: &str,
        rows: &[Row],
        runs: &[(u32, &[Row])],
        convert: impl Fn(NumValue) -> T,
    ) -> Vec<Option<T>> {
        let mut out: Vec<Option<T>> = Vec::with_capacity(rows.len());
        let mut docs: Vec<DocId> = Vec::with_capacity(rows.len());
        for &(seg, run) in runs {
            docs.clear();
            docs.extend(run.iter().map(|(a, _)| a.doc_id));
            let col = self
                .segments
                .get(&seg)
                .and_then(|s| s.nums.get(column))
                .and_then(Option::as_ref);
            match col {
                Some(c) => out.extend(c.first_values(&docs).into_iter().map(|v| v.map(&convert))),
                None => out.extend(std::iter::repeat_n(None, docs.len())),
            }
        }
        out
    }

    fn column(
        &self,
        kind: &ColKind,
        rows: &[Row],
        runs: &[(u32, &[Row])],
        sources: &[Option<(String, Value)>],
    ) -> Result<ArrayRef> {
        match kind {
            ColKind::Int {
                column,
                multi: false,
                repr,
            } => {
                return Ok(repr.array(self.single_numeric(column, rows, runs, NumValue::as_i64)));
            }
            ColKind::Float { column, multi: false } => {
                return Ok(Arc::new(Float64Array::from(self.single_numeric(
                    column,
                    rows,
                    runs,
                    NumValue::as_f64,
                ))));
            }
            _ => {}
        }
        let seg = |addr: &DocAddress| self.segments.get(&addr.segment_ord);
        let mut text = String::new();
        Ok(match kind {
            ColKind::Id => {
                let mut b = StringBuilder::new();
                for (addr, _) in rows {
                    let col = seg(addr).and_then(|s| s.id.as_ref());
                    match col.and_then(|c| c.ords().first(addr.doc_id).map(|o| (c, o))) {
                        Some((c, ord)) => {
                            text.clear();
                            c.ord_to_str(ord, &mut text).map_err(tantivy_err)?;
                            b.append_value(&text);
                        }
                        None => b.append_value(""),
                    }
                }
                Arc::new(b.finish())
            }
            ColKind::Meta { column, missing } => {
                let mut b = Int64Builder::with_capacity(rows.len());
                for (addr, _) in rows {
                    let value = seg(addr)
                        .and_then(|s| s.metas.get(column))
                        .and_then(|c| c.first(addr.doc_id))
                        .or(*missing);
                    b.append_option(value.map(|v| v as i64));
                }
                Arc::new(b.finish())
            }
            ColKind::Score => {
                let mut b = Float32Builder::new();
                for (_, score) in rows {
                    b.append_option(*score);
                }
                Arc::new(b.finish())
            }
            ColKind::Source => {
                let mut b = StringBuilder::new();
                for s in sources {
                    b.append_option(s.as_ref().map(|(t, _)| t.as_str()));
                }
                Arc::new(b.finish())
            }
            ColKind::Text { source_path, multi } => {
                let strings = |v: &Value| -> Vec<String> {
                    let mut out = Vec::new();
                    values_at(v, source_path, &mut out);
                    out.into_iter()
                        .map(|x| match x {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect()
                };
                if *multi {
                    let mut b = ListBuilder::new(StringBuilder::new());
                    for s in sources {
                        match s {
                            Some((_, v)) => {
                                let items = strings(v);
                                let present = !items.is_empty();
                                for item in items {
                                    b.values().append_value(item);
                                }
                                b.append(present);
                            }
                            None => b.append(false),
                        }
                    }
                    Arc::new(b.finish())
                } else {
                    let mut b = StringBuilder::new();
                    for s in sources {
                        b.append_option(s.as_ref().and_then(|(_, v)| strings(v).into_iter().next()));
                    }
                    Arc::new(b.finish())
                }
            }
            ColKind::Dict { column } => {
                let mut keys = Int32Builder::with_capacity(rows.len());
                let mut values = StringBuilder::new();
                let mut seen: HashMap<(u32, u64), i32> = HashMap::new();
                let mut docs: Vec<DocId> = Vec::with_capacity(rows.len());
                for &(seg_ord, run) in runs {
                    let col = self
                        .segments
                        .get(&seg_ord)
                        .and_then(|s| s.strs.get(column))
                        .and_then(Option::as_ref);
                    let Some(c) = col else {
                        keys.append_nulls(run.len());
                        continue;
                    };
                    docs.clear();
                    docs.extend(run.iter().map(|(a, _)| a.doc_id));
                    let mut ords = vec![None; docs.len()];
                    c.ords().first_vals(&docs, &mut ords);
                    // The terms of the run not read yet, in the order of
                    // their ordinals: one pass over each dictionary block,
                    // instead of decoding a block from its start per term.
                    let mut unread: Vec<u64> = ords
                        .iter()
                        .flatten()
                        .copied()
                        .filter(|ord| !seen.contains_key(&(seg_ord, *ord)))
                        .collect();
                    unread.sort_unstable();
                    unread.dedup();
                    let mut next = unread.iter();
                    c.dictionary()
                        .sorted_ords_to_term_cb(&unread, |bytes| {
                            if let Some(ord) = next.next() {
                                seen.insert((seg_ord, *ord), values.len() as i32);
                                values.append_value(String::from_utf8_lossy(bytes));
                            }
                        })
                        .map_err(tantivy_err)?;
                    for ord in ords {
                        match ord.and_then(|ord| seen.get(&(seg_ord, ord))) {
                            Some(key) => keys.append_value(*key),
                            None => keys.append_null(),
                        }
                    }
                }
                let dict = DictionaryArray::<Int32Type>::try_new(keys.finish(), Arc::new(values.finish()))?;
                Arc::new(dict)
            }
            ColKind::Str { column, multi } => {
                let mut list = ListBuilder::new(StringBuilder::new());
                let mut single = StringBuilder::new();
                for (addr, _) in rows {
                    let col = seg(addr)
                        .and_then(|s| s.strs.get(column))
                        .and_then(Option::as_ref);
                    let mut vals = Vec::new();
                    if let Some(c) = col {
                        for ord in c.ords().values_for_doc(addr.doc_id) {
                            let mut s = String::new();
                            c.ord_to_str(ord, &mut s).map_err(tantivy_err)?;
                            vals.push(s);
                        }
                    }
                    if *multi {
                        let present = !vals.is_empty();
                        for v in vals {
                            list.values().append_value(v);
                        }
                        list.append(present);
                    } else {
                        single.append_option(vals.into_iter().next());
                    }
                }
                if *multi {
                    Arc::new(list.finish())
                } else {
                    Arc::new(single.finish())
                }
            }
            ColKind::Int { column, multi, repr } => {
                let values = |addr: &DocAddress| -> Vec<i64> {
                    seg(addr)
                        .and_then(|s| s.nums.get(column))
                        .and_then(Option::as_ref)
                        .map(|c| c.values(addr.doc_id).into_iter().map(NumValue::as_i64).collect())
                        .unwrap_or_default()
                };
                if *multi {
                    repr.list(rows.iter().map(|(addr, _)| values(addr)))
                } else {
                    repr.array(
                        rows.iter()
                            .map(|(addr, _)| values(addr).first().copied())
                            .collect(),
                    )
                }
            }
            ColKind::Float { column, multi } => {
                let values = |addr: &DocAddress| -> Vec<f64> {
                    seg(addr)
                        .and_then(|s| s.nums.get(column))
                        .and_then(Option::as_ref)
                        .map(|c| c.values(addr.doc_id).into_iter().map(NumValue::as_f64).collect())
                        .unwrap_or_default()
                };
                if *multi {
                    let mut b = ListBuilder::new(Float64Builder::new());
                    for (addr, _) in rows {
                        let vals = values(addr);
                        b.values().append_slice(&vals);
                        b.append(!vals.is_empty());
                    }
                    Arc::new(b.finish())
                } else {
                    let mut b = Float64Builder::with_capacity(rows.len());
                    for (addr, _) in rows {
                        b.append_option(values(addr).first().copied());
                    }
                    Arc::new(b.finish())
                }
            }
            ColKind::Bool { column, multi } => {
                let values = |addr: &DocAddress| -> Vec<bool> {
                    seg(addr)
                        .and_then(|s| s.bools.get(column))
                        .and_then(Option::as_ref)
                        .map(|c| c.values_for_doc(addr.doc_id).collect())
                        .unwrap_or_default()
                };
                if *multi {
                    let mut b = ListBuilder::new(BooleanBuilder::new());
                    for (addr, _) in rows {
                        let vals = values(addr);
                        for v in &vals {
                            b.values().append_value(*v);
                        }
                        b.append(!vals.is_empty());
                    }
                    Arc::new(b.finish())
                } else {
                    let mut b = BooleanBuilder::with_capacity(rows.len());
                    for (addr, _) in rows {
                        b.append_option(values(addr).first().copied());
                    }
                    Arc::new(b.finish())
                }
            }
        })
    }
}
