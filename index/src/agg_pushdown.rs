//! Partial aggregation inside the scan.
//!
//! DataFusion splits an aggregate into a Partial step per partition (one per
//! shard) and a Final step. When the Partial step reads a [`TantivyScanExec`]
//! directly (or through a round-robin repartition), groups by at most one
//! single-valued keyword or integer column or a `histogram_bucket`,
//! fixed-interval UTC `date_histogram_bucket` or `range_bucket` of one, and
//! computes only
//! `count`, `sum`, `min`, `max`, `avg` and the sum of squares of
//! single-valued numeric or date columns (and, without a group,
//! `approx_percentile_cont`), [`AggregatePushdown`] replaces the pair by a
//! [`TantivyAggregateExec`]: it folds each segment's fast-field values
//! straight into per-key accumulators (t-digests for percentiles), as
//! tantivy's own aggregations do, and emits the partial states the Final
//! step expects. Nothing is materialized per document. Where it can, it
//! does not visit documents at all: a bare count is tantivy's count of the
//! query, and a bare count per keyword over every document of a segment
//! without deletions is the keywords' document frequencies.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Int32Type, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::config::ConfigOptions;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::EmptyRecordBatchStream;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::expressions::{BinaryExpr, CastExpr, Column as ColumnExpr, Literal};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use datafusion_functions_aggregate_common::tdigest::{DEFAULT_MAX_SIZE, TDigest};
use rayon::prelude::*;
use tantivy::columnar::{Cardinality, MonotonicallyMappableToU64};
use tantivy::query::{EnableScoring, Weight};
use tantivy::{DocId, SegmentReader, Term};

use crate::index::Index;
use crate::mapping::{FieldType, Mapping};
use crate::query::LeafQuery;
use crate::scan::{
    BlockValues, NumBuf, NumColumn, ShardSet, ShardSource, TantivyScanExec, first_ords, for_each_doc_block,
    for_each_first_ord, for_each_live_block, open_numeric, open_str, remote_partition, tantivy_err,
};
use crate::schema::Fields;

/// Documents folded at a time.
const BLOCK: usize = 4096;

/// The physical optimizer rule that pushes partial aggregates into scans.
#[derive(Debug, Default)]
pub struct AggregatePushdown;

impl PhysicalOptimizerRule for AggregatePushdown {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        crate::fetch_pushdown::replace_nodes(plan, |node| {
            Ok(node
                .downcast_ref::<AggregateExec>()
                .and_then(TantivyAggregateExec::from_partial)
                .map(|exec| Arc::new(exec) as Arc<dyn ExecutionPlan>))
        })
    }

    fn name(&self) -> &str {
        "tantivy_aggregate_pushdown"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// What an aggregate computes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
enum Fun {
    CountRows,
    Count,
    Sum,
    Min,
    Max,
    Avg,
    /// The sum of the squares of a column's values (`sum(x * x)`).
    SumSq,
    /// `approx_percentile_cont(p[, centroids]) WITHIN GROUP (ORDER BY x)`
    /// without a group: its state is a t-digest of the values with so many
    /// centroids at most, whatever `p`.
    Percentile(usize),
}

impl Fun {
    /// How many partial state columns the aggregate has.
    fn states(self) -> usize {
        match self {
            Fun::Avg => 2,
            Fun::Percentile(_) => 6,
            _ => 1,
        }
    }
}

/// One aggregate: its function, the column it reads, and the state types.
#[derive(Debug, Clone)]
struct AggSpec {
    fun: Fun,
    column: Option<String>,
    states: Vec<DataType>,
}

/// A Partial aggregate computed inside the scan of an index's shards.
#[derive(Debug)]
pub struct TantivyAggregateExec {
    index: Arc<Index>,
    shards: ShardSet,
    mapping: Arc<Mapping>,
    query: LeafQuery,
    group: Option<(String, GroupKind)>,
    aggs: Vec<AggSpec>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// An expression without its cast to Float64, if it has one; `None` for
/// another cast.
fn uncast(expr: &Arc<dyn PhysicalExpr>) -> Option<&Arc<dyn PhysicalExpr>> {
    match expr.downcast_ref::<CastExpr>() {
        Some(cast) if *cast.cast_type() == DataType::Float64 => Some(cast.expr()),
        Some(_) => None,
        None => Some(expr),
    }
}

/// The digest size `approx_percentile_cont` is given after its percentile:
/// the default without one, else its positive integer literal.
fn digest_size(rest: &[Arc<dyn PhysicalExpr>]) -> Option<usize> {
    match rest {
        [] => Some(DEFAULT_MAX_SIZE),
        [size] => match size.downcast_ref::<Literal>()?.value().cast_to(&DataType::UInt64) {
            Ok(ScalarValue::UInt64(Some(n))) if n > 0 => usize::try_from(n).ok(),
            _ => None,
        },
        _ => None,
    }
}

/// `x` of `x * x`.
fn squared(expr: &Arc<dyn PhysicalExpr>) -> Option<&Arc<dyn PhysicalExpr>> {
    let product = expr.downcast_ref::<BinaryExpr>()?;
    (*product.op() == Operator::Multiply && product.left().eq(product.right())).then(|| product.left())
}

/// The scan column an expression reads (through a projection of columns,
/// and casts to Float64). A metric argument may also be cast inside the
/// projection (where common-subexpression elimination puts the cast that
/// several metrics of one field share); a group key may not, since its
/// output type is the column's.
fn scan_column(
    expr: &Arc<dyn PhysicalExpr>,
    projection: Option<&ProjectionExec>,
    scan: &TantivyScanExec,
    metric: bool,
) -> Option<String> {
    let col = uncast(expr)?.downcast_ref::<ColumnExpr>()?;
    let (index, name) = match projection {
        Some(p) => {
            let inner = &p.expr().get(col.index())?.expr;
            let inner = if metric { uncast(inner)? } else { inner };
            let c = inner.downcast_ref::<ColumnExpr>()?;
            (c.index(), c.name().to_string())
        }
        None => (col.index(), col.name().to_string()),
    };
    let field = scan.schema();
    (field.fields().get(index).map(|f| f.name().as_str()) == Some(name.as_str())).then_some(name)
}

fn is_number(ty: FieldType) -> bool {
    matches!(
        ty,
        FieldType::Long
            | FieldType::Integer
            | FieldType::Short
            | FieldType::Byte
            | FieldType::Double
            | FieldType::Float
    )
}

fn column_type(mapping: &Mapping, name: &str) -> Option<FieldType> {
    let c = mapping.column(name)?;
    (!c.mapping.multi_valued).then_some(c.mapping.ty)
}

impl TantivyAggregateExec {
    /// The scan-side replacement of a Partial aggregate, when it has one.
    fn from_partial(agg: &AggregateExec) -> Option<TantivyAggregateExec> {
        if *agg.mode() != AggregateMode::Partial || agg.filter_expr().iter().any(Option::is_some) {
            return None;
        }
        // A round-robin repartition spreads a scan with fewer shards than
        // target partitions over more Partial steps; the scan-side aggregate
        // needs no more than one partition per shard.
        let input = match agg.input().downcast_ref::<RepartitionExec>() {
            Some(r) if matches!(r.partitioning(), Partitioning::RoundRobinBatch(_)) => r.input(),
            _ => agg.input(),
        };
        let projection = input.downcast_ref::<ProjectionExec>();
        let scan_plan = match projection {
            Some(p) => p.input(),
            None => input,
        };
        let scan = scan_plan.downcast_ref::<TantivyScanExec>()?;
        if !scan.is_plain() {
            return None;
        }
        let mapping = scan.mapping();
        let groups = agg.group_expr();
        if groups.has_grouping_set() || groups.expr().len() > 1 {
            return None;
        }
        let group = match groups.expr().first() {
            Some((expr, _)) => Some(match bucket_group(expr, projection, scan) {
                Some(bucket) => bucket,
                None => {
                    let name = scan_column(expr, projection, scan, false)?;
                    let kind = match column_type(mapping, &name)? {
                        FieldType::Keyword => GroupKind::Keyword,
                        FieldType::Long | FieldType::Integer | FieldType::Short | FieldType::Byte => {
                            GroupKind::Integer
                        }
                        _ => return None,
                    };
                    (name, kind)
                }
            }),
            None => None,
        };
        let schema = agg.schema();
        let mut field = usize::from(group.is_some());
        let mut aggs = Vec::new();
        for expr in agg.aggr_expr() {
            if expr.is_distinct() {
                return None;
            }
            let args = expr.expressions();
            let (fun, arg) = match (expr.fun().name(), args.as_slice(), expr.order_bys()) {
                // Ordered ascending by the value it digests, with the
                // digest's default size or a literal one.
                ("approx_percentile_cont", [x, _, size @ ..], [order])
                    if group.is_none() && !order.options.descending && order.expr.eq(x) =>
                {
                    (Fun::Percentile(digest_size(size)?), x)
                }
                ("count", [arg], [])
                    if arg
                        .downcast_ref::<Literal>()
                        .is_some_and(|l| !l.value().is_null()) =>
                {
                    (Fun::CountRows, arg)
                }
                ("count", [arg], []) => (Fun::Count, arg),
                ("sum", [arg], []) => match squared(arg) {
                    Some(x) => (Fun::SumSq, x),
                    None => (Fun::Sum, arg),
                },
                ("min", [arg], []) => (Fun::Min, arg),
                ("max", [arg], []) => (Fun::Max, arg),
                ("avg", [arg], []) => (Fun::Avg, arg),
                _ => return None,
            };
            let column = match fun {
                Fun::CountRows => None,
                _ => {
                    let name = scan_column(arg, projection, scan, true)?;
                    let ty = column_type(mapping, &name)?;
                    if !(is_number(ty) || ty == FieldType::Date) {
                        return None;
                    }
                    Some(name)
                }
            };
            let n = fun.states();
            let states: Vec<DataType> = (field..field + n)
                .map(|i| schema.fields().get(i).map(|f| f.data_type().clone()))
                .collect::<Option<_>>()?;
            let supported =
                match fun {
                    Fun::CountRows | Fun::Count => states == [DataType::Int64],
                    Fun::Sum => matches!(states[..], [DataType::Int64 | DataType::Float64]),
                    Fun::SumSq => states == [DataType::Float64],
                    Fun::Min | Fun::Max => matches!(
                        states[..],
                        [DataType::Int64
                            | DataType::Float64
                            | DataType::Timestamp(TimeUnit::Millisecond, None)]
                    ),
                    Fun::Avg => states == [DataType::UInt64, DataType::Float64],
                    Fun::Percentile(_) => {
                        matches!(states[..], [DataType::UInt64, _, _, _, _, DataType::List(_)])
                            && states[1..5].iter().all(|t| *t == DataType::Float64)
                    }
                };
            if !supported {
                return None;
            }
            field += n;
            aggs.push(AggSpec { fun, column, states });
        }
        if field != schema.fields().len() {
            return None;
        }
        let group_type = group.as_ref().map(|(_, kind)| kind.key_type());
        if group_type.is_some_and(|t| schema.fields()[0].data_type() != &t) {
            return None;
        }
        Some(TantivyAggregateExec::build(
            Arc::clone(scan.index()),
            scan.shard_set().clone(),
            Arc::clone(mapping),
            scan.query().clone(),
            group,
            aggs,
            schema,
        ))
    }

    fn build(
        index: Arc<Index>,
        shards: ShardSet,
        mapping: Arc<Mapping>,
        query: LeafQuery,
        group: Option<(String, GroupKind)>,
        aggs: Vec<AggSpec>,
        schema: SchemaRef,
    ) -> TantivyAggregateExec {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(shards.partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        TantivyAggregateExec {
            index,
            shards,
            mapping,
            query,
            group,
            aggs,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The index aggregated.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// The mapping the aggregate reads with.
    pub(crate) fn mapping(&self) -> &Arc<Mapping> {
        &self.mapping
    }

    /// The shards aggregated.
    pub fn shard_set(&self) -> &ShardSet {
        &self.shards
    }

    /// The same aggregate over other shards of the index.
    pub fn with_shards(&self, shards: ShardSet) -> TantivyAggregateExec {
        TantivyAggregateExec::build(
            Arc::clone(&self.index),
            shards,
            Arc::clone(&self.mapping),
            self.query.clone(),
            self.group.clone(),
            self.aggs.clone(),
            Arc::clone(&self.schema),
        )
    }

    /// The wire form of the aggregate (without index, shards and schema).
    pub(crate) fn to_wire(&self) -> AggWire {
        AggWire {
            query: self.query.clone(),
            group: self.group.clone(),
            aggs: self.aggs.iter().map(|a| (a.fun, a.column.clone())).collect(),
        }
    }

    /// Rebuilds an aggregate from its wire form.
    pub(crate) fn from_wire(
        index: Arc<Index>,
        shards: ShardSet,
        mapping: Arc<Mapping>,
        wire: AggWire,
        schema: SchemaRef,
    ) -> Result<TantivyAggregateExec> {
        let mut field = usize::from(wire.group.is_some());
        let mut aggs = Vec::new();
        for (fun, column) in wire.aggs {
            let n = fun.states();
            let states = (field..field + n)
                .map(|i| schema.fields().get(i).map(|f| f.data_type().clone()))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    DataFusionError::Internal("aggregate schema does not fit its aggregates".into())
                })?;
            field += n;
            aggs.push(AggSpec { fun, column, states });
        }
        Ok(TantivyAggregateExec::build(
            index, shards, mapping, wire.query, wire.group, aggs, schema,
        ))
    }
}

/// What crosses the wire of a pushed-down aggregate.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct AggWire {
    query: LeafQuery,
    group: Option<(String, GroupKind)>,
    aggs: Vec<(Fun, Option<String>)>,
}

impl DisplayAs for TantivyAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let aggs: Vec<String> = self
            .aggs
            .iter()
            .map(|a| {
                let column = a.column.as_deref().unwrap_or("*");
                match a.fun {
                    Fun::Percentile(size) => format!("Percentile({column}, {size})"),
                    fun => format!("{fun:?}({column})"),
                }
            })
            .collect();
        write!(
            f,
            "TantivyAggregateExec: index={}, shards={}, query={}, group=[{}], aggr=[{}]",
            self.index.name(),
            self.shards.describe(&self.index),
            self.query.describe(),
            self.group.as_ref().map_or(String::new(), |(g, kind)| match kind {
                GroupKind::Keyword | GroupKind::Integer => g.clone(),
                GroupKind::Histogram { interval, offset } => {
                    format!("histogram({g}, interval={interval}, offset={offset})")
                }
                GroupKind::FixedDate { step, offset } => {
                    format!("date_histogram({g}, fixed={step}ms, offset={offset})")
                }
                GroupKind::Range(r) => {
                    let bound = |b: Option<f64>| b.map_or("*".to_string(), |b| b.to_string());
                    let ranges: Vec<String> = r
                        .ranges()
                        .iter()
                        .map(|(from, to)| format!("{}..{}", bound(*from), bound(*to)))
                        .collect();
                    format!("range({g}, [{}])", ranges.join(", "))
                }
            }),
            aggs.join(", ")
        )
    }
}

impl ExecutionPlan for TantivyAggregateExec {
    fn name(&self) -> &str {
        "TantivyAggregateExec"
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
                "TantivyAggregateExec has no children".into(),
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
                let one = self.with_shards(ShardSet::padded(vec![n], 1));
                return remote_partition(&self.index, &one, &node, Arc::clone(&self.schema));
            }
        };
        let job = AggJob {
            mapping: Arc::clone(&self.mapping),
            query: self.query.clone(),
            group: self.group.clone(),
            aggs: self.aggs.clone(),
            schema: Arc::clone(&self.schema),
        };
        let reservation =
            MemoryConsumer::new(format!("TantivyAggregateExec[{partition}]")).register(context.memory_pool());
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let elapsed = MetricBuilder::new(&self.metrics).elapsed_compute(partition);
        let schema = Arc::clone(&self.schema);
        let fut = async move {
            tokio::task::spawn_blocking(move || {
                let _timer = elapsed.timer();
                let started = std::time::Instant::now();
                let batch = job.run(&shard, &reservation);
                shard.activity().searched(started.elapsed(), None);
                let batch = batch?;
                output_rows.add(batch.num_rows());
                Ok(batch)
            })
            .await
            .map_err(|e| DataFusionError::Internal(format!("aggregation of shard {partition} failed: {e}")))?
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(fut),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// A multiplicative hash for integer group keys (the default SipHash costs
/// more than the rest of the per-document work).
#[derive(Debug, Default)]
struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    /// A folded multiply: every bit of the key reaches both the low bits
    /// (the bucket) and the high bits (the tag) of the hash, also for keys
    /// that differ only in their high bits (the bits of doubles).
    fn write_i64(&mut self, v: i64) {
        let product = u128::from(v as u64) * 0x9E37_79B9_7F4A_7C15_u128;
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}

/// The type of a group column.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum GroupKind {
    Keyword,
    Integer,
    /// `histogram_bucket(x, interval, offset)` of a numeric column.
    Histogram {
        interval: f64,
        offset: f64,
    },
    /// `date_histogram_bucket(ms, 'fixed:<step>', 'UTC', offset)` of a date
    /// column.
    FixedDate {
        step: i64,
        offset: i64,
    },
    /// `range_bucket(x, from, to, ...)` of a numeric or date column: the
    /// number of the range `x` falls in.
    Range(RangeBuckets),
}

impl GroupKind {
    /// The type of the group key column.
    fn key_type(&self) -> DataType {
        match self {
            GroupKind::Keyword => DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            GroupKind::Integer | GroupKind::FixedDate { .. } | GroupKind::Range(_) => DataType::Int64,
            GroupKind::Histogram { .. } => DataType::Float64,
        }
    }
}

/// The ranges of a `range` aggregation whose ranges do not overlap, each
/// from its inclusive `from` to its exclusive `to` (`None`: unbounded), as
/// Elasticsearch compares them: as doubles.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(into = "RangeList", try_from = "RangeList")]
pub struct RangeBuckets {
    /// The ranges in their given order: a range's number is its position.
    ranges: RangeList,
    /// The bounds of the non-empty ranges, ascending, without repeats: they
    /// cut the number line into intervals that each lie in one range or in
    /// none.
    bounds: Vec<f64>,
    /// Per interval (values with `k` bounds at or below them), the number of
    /// its range.
    intervals: Vec<Option<i64>>,
}

/// `(from, to)` per range.
type RangeList = Vec<(Option<f64>, Option<f64>)>;

impl From<RangeBuckets> for RangeList {
    fn from(r: RangeBuckets) -> RangeList {
        r.ranges
    }
}

impl TryFrom<RangeList> for RangeBuckets {
    type Error = String;

    fn try_from(ranges: RangeList) -> std::result::Result<RangeBuckets, String> {
        RangeBuckets::new(ranges).ok_or_else(|| "overlapping ranges".to_string())
    }
}

impl RangeBuckets {
    /// The ranges, or `None` when two of them overlap (a value may then
    /// fall in several) or a bound is not a number.
    pub fn new(ranges: RangeList) -> Option<RangeBuckets> {
        if ranges
            .iter()
            .any(|(from, to)| from.is_some_and(f64::is_nan) || to.is_some_and(f64::is_nan))
        {
            return None;
        }
        // An empty range holds no value; the others must follow each other.
        let mut live: Vec<(f64, f64, usize)> = ranges
            .iter()
            .enumerate()
            .map(|(i, (from, to))| (from.unwrap_or(f64::NEG_INFINITY), to.unwrap_or(f64::INFINITY), i))
            .filter(|(from, to, _)| from < to)
            .collect();
        live.sort_by(|a, b| a.0.total_cmp(&b.0));
        if live.windows(2).any(|w| w[1].0 < w[0].1) {
            return None;
        }
        let mut bounds: Vec<f64> = live
            .iter()
            .flat_map(|(from, to, _)| [*from, *to])
            .filter(|b| b.is_finite())
            .collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let intervals = (0..=bounds.len())
            .map(|k| {
                let lo = if k == 0 { f64::NEG_INFINITY } else { bounds[k - 1] };
                let hi = bounds.get(k).copied().unwrap_or(f64::INFINITY);
                live.iter()
                    .find(|(from, to, _)| *from <= lo && hi <= *to)
                    .map(|(_, _, i)| *i as i64)
            })
            .collect();
        Some(RangeBuckets {
            ranges,
            bounds,
            intervals,
        })
    }

    /// The ranges of `range_bucket`'s literal bounds: a `from` and a `to`
    /// per range, infinite where it is open.
    pub fn from_bounds(bounds: &[f64]) -> Option<RangeBuckets> {
        if !bounds.len().is_multiple_of(2) {
            return None;
        }
        let finite = |b: f64| b.is_finite().then_some(b);
        RangeBuckets::new(
            bounds
                .chunks_exact(2)
                .map(|p| (finite(p[0]), finite(p[1])))
                .collect(),
        )
    }

    /// The literal bounds of `range_bucket` ([`RangeBuckets::from_bounds`]).
    pub fn literal_bounds(&self) -> Vec<f64> {
        self.ranges
            .iter()
            .flat_map(|(from, to)| [from.unwrap_or(f64::NEG_INFINITY), to.unwrap_or(f64::INFINITY)])
            .collect()
    }

    /// The interval `x` lies in: how many bounds are at or below it.
    #[inline]
    pub fn interval(&self, x: f64) -> usize {
        if self.bounds.len() <= 16 {
            self.bounds.iter().map(|b| usize::from(*b <= x)).sum()
        } else {
            self.bounds.partition_point(|b| *b <= x)
        }
    }

    /// The number of the range an interval lies in.
    #[inline]
    pub fn interval_range(&self, interval: usize) -> Option<i64> {
        self.intervals[interval]
    }

    /// How many intervals the bounds make.
    pub fn intervals(&self) -> usize {
        self.intervals.len()
    }

    /// The number of the range `x` falls in.
    #[inline]
    pub fn key(&self, x: f64) -> Option<i64> {
        if x.is_nan() {
            return None;
        }
        self.interval_range(self.interval(x))
    }

    /// The ranges, in their given order.
    pub fn ranges(&self) -> &[(Option<f64>, Option<f64>)] {
        &self.ranges
    }
}

/// The key of the `histogram` bucket of `x`: the multiple of `interval`
/// (shifted by `offset`) at or below it.
pub fn histogram_key(x: f64, interval: f64, offset: f64) -> f64 {
    match histogram_ordinal(x, interval, offset) {
        Some(n) => ordinal_key(n, interval, offset),
        None => ((x - offset) / interval).floor() * interval + offset,
    }
}

/// The key of the `histogram` bucket numbered `n`.
fn ordinal_key(n: i64, interval: f64, offset: f64) -> f64 {
    n as f64 * interval + offset
}

/// The number of the `histogram` bucket of `x` (its key is this many
/// intervals past `offset`), when it is at most [`ORDINAL_LIMIT`] in
/// magnitude. Floors by an integer conversion rather than a call to libm's
/// `floor`, which costs more than the rest of a document's grouping.
fn histogram_ordinal(x: f64, interval: f64, offset: f64) -> Option<i64> {
    let q = (x - offset) / interval;
    (q.abs() < ORDINAL_LIMIT).then(|| {
        let n = q as i64;
        if n as f64 > q { n - 1 } else { n }
    })
}

/// The start of the fixed `step` (milliseconds) bucket of the epoch
/// milliseconds `ms`, the buckets laid out from `offset`.
pub fn fixed_date_key(ms: i64, step: i64, offset: i64) -> i64 {
    fixed_date_number(ms, step, offset) * step + offset
}

/// The number of the fixed `step` bucket of `ms`, counted from `offset`.
fn fixed_date_number(ms: i64, step: i64, offset: i64) -> i64 {
    (ms - offset).div_euclid(step)
}

/// Bucket numbers of at most this magnitude are whole integers that convert
/// to `i64` exactly.
const ORDINAL_LIMIT: f64 = 4_611_686_018_427_387_904.0;

/// Ordinals of a window around the first one a segment meets: clustered
/// group keys (the buckets of a histogram, the days of a date histogram)
/// find their slot by an index, others through a hash map.
#[derive(Debug, Default)]
struct OrdinalSlots {
    base: i64,
    /// Slot + 1 per ordinal `base + i`; 0 for none yet. Empty until the
    /// first ordinal.
    window: Vec<u32>,
    spill: HashMap<i64, usize, BuildHasherDefault<IntHasher>>,
}

/// Ordinals an [`OrdinalSlots`] window holds.
const WINDOW: usize = 8192;

impl OrdinalSlots {
    /// The slot of `ordinal`, from `new_slot` the first time.
    #[inline]
    fn slot(&mut self, ordinal: i64, new_slot: impl FnOnce() -> usize) -> usize {
        if self.window.is_empty() {
            self.window = vec![0; WINDOW];
            self.base = ordinal.saturating_sub(WINDOW as i64 / 2);
        }
        let at = ordinal.wrapping_sub(self.base) as u64;
        match usize::try_from(at).ok().and_then(|at| self.window.get_mut(at)) {
            Some(s) => {
                if *s == 0 {
                    *s = u32::try_from(new_slot() + 1).expect("fewer slots than documents in a segment");
                }
                *s as usize - 1
            }
            None => *self.spill.entry(ordinal).or_insert_with(new_slot),
        }
    }
}

/// The bucket group of a `histogram_bucket`, `date_histogram_bucket` (fixed
/// interval, UTC) or `range_bucket` call on a scan column, with its literal
/// arguments.
fn bucket_group(
    expr: &Arc<dyn PhysicalExpr>,
    projection: Option<&ProjectionExec>,
    scan: &TantivyScanExec,
) -> Option<(String, GroupKind)> {
    let call = expr.downcast_ref::<ScalarFunctionExpr>()?;
    let literal = |i: usize| {
        call.args()
            .get(i)?
            .downcast_ref::<Literal>()
            .map(|l| l.value().clone())
    };
    let mapping = scan.mapping();
    match call.name() {
        "histogram_bucket" => {
            let (Some(ScalarValue::Float64(Some(interval))), Some(ScalarValue::Float64(Some(offset)))) =
                (literal(1), literal(2))
            else {
                return None;
            };
            let name = scan_column(call.args().first()?, projection, scan, true)?;
            (is_number(column_type(mapping, &name)?) && interval > 0.0)
                .then_some((name, GroupKind::Histogram { interval, offset }))
        }
        "date_histogram_bucket" => {
            let (
                Some(ScalarValue::Utf8(Some(interval))),
                Some(ScalarValue::Utf8(Some(tz))),
                Some(ScalarValue::Int64(Some(offset))),
            ) = (literal(1), literal(2), literal(3))
            else {
                return None;
            };
            let step = interval
                .strip_prefix("fixed:")?
                .parse::<i64>()
                .ok()
                .filter(|s| *s > 0)?;
            if tz != "UTC" {
                return None;
            }
            let ms = call.args().first()?;
            let ms = match ms.downcast_ref::<CastExpr>() {
                Some(cast) if *cast.cast_type() == DataType::Int64 => cast.expr(),
                _ => ms,
            };
            let name = scan_column(ms, projection, scan, false)?;
            (column_type(mapping, &name)? == FieldType::Date)
                .then_some((name, GroupKind::FixedDate { step, offset }))
        }
        "range_bucket" => {
            let bounds = (1..call.args().len())
                .map(|i| match literal(i)? {
                    ScalarValue::Float64(Some(b)) => Some(b),
                    _ => None,
                })
                .collect::<Option<Vec<f64>>>()?;
            let buckets = RangeBuckets::from_bounds(&bounds)?;
            // A date column's epoch milliseconds, cast to doubles.
            let x = uncast(call.args().first()?)?;
            let x = match x.downcast_ref::<CastExpr>() {
                Some(cast) if *cast.cast_type() == DataType::Int64 => cast.expr(),
                _ => x,
            };
            let name = scan_column(x, projection, scan, true)?;
            let ty = column_type(mapping, &name)?;
            (is_number(ty) || ty == FieldType::Date).then_some((name, GroupKind::Range(buckets)))
        }
        _ => None,
    }
}

/// A group key and its number of documents.
type KeyCount = (Option<Key>, i64);

/// The number of documents of each keyword of the single-valued keyword
/// column `path` in a segment without deletions, and of the documents without
/// one, from the document frequencies of the column's terms.
///
/// `None` when the dictionary cannot answer for the column: it is missing
/// or multi-valued, or the document frequencies do not add up to the
/// documents with a value (a value the index left out, such as a token
/// longer than tantivy indexes).
fn keyword_doc_freqs(segment: &SegmentReader, fields: &Fields, path: &str) -> Result<Option<Vec<KeyCount>>> {
    let Some(col) = open_str(segment, &fields.column(path))? else {
        return Ok(None);
    };
    if col.ords().get_cardinality() == Cardinality::Multivalued {
        return Ok(None);
    }
    let with_value = col.ords().values.num_vals();
    // A field of its own holds the column's terms alone; the JSON field
    // holds them after their path.
    let (field, prefix) = match fields.own(path) {
        Some(field) => (field, Term::from_field_text(field, "")),
        None => {
            let mut prefix = Term::from_field_json_path(fields.kw, path, true);
            prefix.append_type_and_str("");
            (fields.kw, prefix)
        }
    };
    let prefix = prefix.serialized_value_bytes();
    let inverted = segment.inverted_index(field).map_err(tantivy_err)?;
    let mut terms = inverted.terms().range().ge(prefix).into_stream()?;
    let mut counts = Vec::new();
    let mut counted = 0u64;
    while terms.advance() {
        let Some(name) = terms.key().strip_prefix(prefix) else {
            break;
        };
        let Ok(name) = std::str::from_utf8(name) else {
            return Ok(None);
        };
        let docs = terms.value().doc_freq;
        counted += u64::from(docs);
        counts.push((Some(Key::Str(name.to_string())), i64::from(docs)));
    }
    if counted != u64::from(with_value) {
        return Ok(None);
    }
    let without = segment.max_doc() - with_value;
    if without > 0 {
        counts.push((None, i64::from(without)));
    }
    Ok(Some(counts))
}

/// A group key (`None`: documents without a value, SQL's NULL group).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Str(String),
    Int(i64),
}

/// Running values of one aggregate in one group.
#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    n: u64,
    sum_f: f64,
    sum_sq: f64,
    sum_i: i64,
    min_f: f64,
    max_f: f64,
    min_i: i64,
    max_i: i64,
}

impl Acc {
    fn add_f(&mut self, v: f64) {
        if self.n == 0 {
            self.min_f = v;
            self.max_f = v;
        } else {
            self.min_f = self.min_f.min(v);
            self.max_f = self.max_f.max(v);
        }
        self.sum_f += v;
        self.sum_sq += v * v;
        self.n += 1;
    }

    fn add_i(&mut self, v: i64) {
        if self.n == 0 {
            self.min_i = v;
            self.max_i = v;
        } else {
            self.min_i = self.min_i.min(v);
            self.max_i = self.max_i.max(v);
        }
        self.sum_i = self.sum_i.wrapping_add(v);
        self.n += 1;
    }

    /// The aggregate of a block's values: as doubles when `float` (with the
    /// sum of their squares when `squares`), else as integers.
    fn of_block(values: BlockValues, float: bool, squares: bool) -> Acc {
        match (values, float) {
            (BlockValues::F64(v), true) => fold_f64(v, f64::from_u64, squares),
            (BlockValues::I64(v), true) => fold_f64(v, |x| i64::from_u64(x) as f64, squares),
            (BlockValues::U64(v), true) => fold_f64(v, |x| x as f64, squares),
            (BlockValues::I64(v), false) => fold_i64(v, i64::from_u64),
            (BlockValues::U64(v), false) => fold_i64(v, |x| i64::try_from(x).unwrap_or(i64::MAX)),
            (BlockValues::F64(v), false) => fold_i64(v, |x| f64::from_u64(x) as i64),
        }
    }

    /// The fold as doubles of the integers this fold folded, when it is
    /// exact: integers whose partial sums all stay within 2^53 add up in
    /// doubles without rounding, in any order, so that folding their
    /// doubles would give this fold converted.
    fn ints_as_doubles(&self) -> Option<Acc> {
        let largest = self.min_i.unsigned_abs().max(self.max_i.unsigned_abs());
        (u128::from(self.n) * u128::from(largest) < 1 << f64::MANTISSA_DIGITS).then(|| Acc {
            n: self.n,
            sum_f: self.sum_i as f64,
            min_f: self.min_i as f64,
            max_f: self.max_i as f64,
            ..Acc::default()
        })
    }

    fn merge(&mut self, o: &Acc) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *o;
            return;
        }
        self.n += o.n;
        self.sum_f += o.sum_f;
        self.sum_sq += o.sum_sq;
        self.sum_i = self.sum_i.wrapping_add(o.sum_i);
        self.min_f = self.min_f.min(o.min_f);
        self.max_f = self.max_f.max(o.max_f);
        self.min_i = self.min_i.min(o.min_i);
        self.max_i = self.max_i.max(o.max_i);
    }
}

/// Independent accumulators a block is folded into (or counters per
/// keyword ordinal), so that the loop keeps several additions and
/// comparisons in flight (and vectorizes).
const LANES: usize = 4;

/// Calls `lane(l, conv(value))` for every value, value `i` in lane
/// `i % LANES` (the tail in lane 0).
#[inline(always)]
fn for_each_lane<V>(values: &[u64], conv: impl Fn(u64) -> V, lane: &mut impl FnMut(usize, V)) {
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (l, v) in chunk.iter().enumerate() {
            lane(l, conv(*v));
        }
    }
    for v in rest {
        lane(0, conv(*v));
    }
}

/// Folds doubles: count, sum, min, max and, with `squares`, the sum of
/// squares.
fn fold_f64(values: &[u64], conv: impl Fn(u64) -> f64, squares: bool) -> Acc {
    let Some(&first) = values.first() else {
        return Acc::default();
    };
    let first = conv(first);
    let (mut sum, mut sq) = ([0.0f64; LANES], [0.0f64; LANES]);
    let (mut min, mut max) = ([first; LANES], [first; LANES]);
    let mut lane = |l: usize, v: f64| {
        sum[l] += v;
        if squares {
            sq[l] += v * v;
        }
        min[l] = if v < min[l] { v } else { min[l] };
        max[l] = if v > max[l] { v } else { max[l] };
    };
    for_each_lane(values, conv, &mut lane);
    Acc {
        n: values.len() as u64,
        sum_f: sum.iter().sum(),
        sum_sq: sq.iter().sum(),
        min_f: min.iter().copied().fold(f64::INFINITY, f64::min),
        max_f: max.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        ..Acc::default()
    }
}

/// Folds integers: count, (wrapping) sum, min and max.
fn fold_i64(values: &[u64], conv: impl Fn(u64) -> i64) -> Acc {
    let Some(&first) = values.first() else {
        return Acc::default();
    };
    let first = conv(first);
    let mut sum = [0i64; LANES];
    let (mut min, mut max) = ([first; LANES], [first; LANES]);
    let mut lane = |l: usize, v: i64| {
        sum[l] = sum[l].wrapping_add(v);
        min[l] = min[l].min(v);
        max[l] = max[l].max(v);
    };
    for_each_lane(values, conv, &mut lane);
    Acc {
        n: values.len() as u64,
        sum_i: sum.iter().fold(0i64, |a, b| a.wrapping_add(*b)),
        min_i: min.iter().copied().min().unwrap_or(first),
        max_i: max.iter().copied().max().unwrap_or(first),
        ..Acc::default()
    }
}

/// Values digested at a time, as `approx_percentile_cont` digests a batch.
const SKETCH_BATCH: usize = 8192;

/// A t-digest of a column's values, kept as `approx_percentile_cont` keeps
/// it: batches of values are sorted and merged into the digest.
struct Sketch {
    digest: TDigest,
    pending: Vec<f64>,
    keys: Vec<u64>,
}

/// An integer that orders as the double `v` does (IEEE 754 total order):
/// integers sort faster than doubles compared with `total_cmp`.
fn order_key(v: f64) -> u64 {
    let bits = v.to_bits();
    if bits >> 63 == 1 { !bits } else { bits | 1 << 63 }
}

/// The double of an [`order_key`].
fn from_order_key(key: u64) -> f64 {
    f64::from_bits(if key >> 63 == 1 { key & !(1 << 63) } else { !key })
}

impl Sketch {
    fn new(size: usize) -> Sketch {
        Sketch {
            digest: TDigest::new(size),
            pending: Vec::with_capacity(SKETCH_BATCH),
            keys: Vec::with_capacity(SKETCH_BATCH),
        }
    }

    fn add(&mut self, values: BlockValues) {
        match values {
            BlockValues::F64(v) => self.pending.extend(v.iter().map(|x| f64::from_u64(*x))),
            BlockValues::I64(v) => self.pending.extend(v.iter().map(|x| i64::from_u64(*x) as f64)),
            BlockValues::U64(v) => self.pending.extend(v.iter().map(|x| *x as f64)),
        }
        if self.pending.len() >= SKETCH_BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.keys.clear();
        self.keys.extend(self.pending.iter().map(|v| order_key(*v)));
        self.keys.sort_unstable();
        self.pending.clear();
        self.pending.extend(self.keys.iter().map(|k| from_order_key(*k)));
        self.digest = self.digest.merge_sorted_f64(&self.pending);
        self.pending.clear();
    }

    fn finish(&mut self) -> TDigest {
        self.flush();
        self.digest.clone()
    }

    /// Adds the values `other` digested. Values not digested yet are
    /// added as values, so that the segments of a shard with few values
    /// give the digest their values would give read one after another;
    /// only digests are merged as digests (which costs accuracy).
    fn merge(&mut self, mut other: Sketch) {
        if self.digest.count() == 0.0 && other.digest.count() > 0.0 {
            std::mem::swap(self, &mut other);
        }
        if other.digest.count() > 0.0 {
            self.flush();
            other.flush();
            self.digest = TDigest::merge_digests([&self.digest, &other.digest]);
            return;
        }
        self.pending.append(&mut other.pending);
        if self.pending.len() >= SKETCH_BATCH {
            self.flush();
        }
    }
}

/// Reads a double state out of an accumulator.
type StateF64 = fn(&Acc) -> f64;
/// Reads an integer state out of an accumulator.
type StateI64 = fn(&Acc) -> i64;

/// A group's row count and aggregate states.
#[derive(Debug, Clone, Default)]
struct Group {
    rows: i64,
    accs: Vec<Acc>,
}

/// The aggregation of some of a shard's segments.
struct Partial {
    groups: HashMap<Option<Key>, Group>,
    /// Per aggregate, the digest of its column when it owns one.
    sketches: Vec<Option<Sketch>>,
}

/// The aggregation of one shard, run on a blocking thread.
struct AggJob {
    mapping: Arc<Mapping>,
    query: LeafQuery,
    group: Option<(String, GroupKind)>,
    aggs: Vec<AggSpec>,
    schema: SchemaRef,
}

impl AggSpec {
    /// Whether the state is kept as doubles (else integers).
    fn float(&self) -> bool {
        match self.fun {
            Fun::Avg | Fun::SumSq | Fun::Percentile(_) => true,
            Fun::Sum | Fun::Min | Fun::Max => self.states[0] == DataType::Float64,
            // Counting needs only presence; doubles share a read with the
            // other aggregates of the column.
            Fun::Count => true,
            Fun::CountRows => false,
        }
    }
}

impl AggJob {
    /// Aggregates one shard; the group states are reserved from the
    /// query's memory pool as they grow.
    ///
    /// The segments of the shard are spread over rayon's pool, which the
    /// shards aggregated at the same time share: a shard whose task starts
    /// late, or a shard with more documents, does not leave a core idle.
    fn run(&self, shard: &crate::shard::Shard, reservation: &MemoryReservation) -> Result<RecordBatch> {
        let searcher = shard.searcher();
        let fields = shard.fields();
        let query = self
            .query
            .compile(&self.mapping, fields, shard.tantivy_index())
            .map_err(|e| DataFusionError::Plan(e.to_string()))?;
        let weight = query
            .weight(EnableScoring::disabled_from_searcher(&searcher))
            .map_err(tantivy_err)?;
        // One digest per column, however many percentiles read it: the
        // aggregate that digests the column, per aggregate.
        let digested_by: Vec<usize> = self
            .aggs
            .iter()
            .enumerate()
            .map(|(j, a)| {
                self.aggs
                    .iter()
                    .position(|b| {
                        matches!(b.fun, Fun::Percentile(_)) && b.fun == a.fun && b.column == a.column
                    })
                    .unwrap_or(j)
            })
            .collect();
        let new_partial = || Partial {
            groups: HashMap::new(),
            sketches: self
                .aggs
                .iter()
                .enumerate()
                .map(|(j, a)| match a.fun {
                    Fun::Percentile(size) if digested_by[j] == j => Some(Sketch::new(size)),
                    _ => None,
                })
                .collect(),
        };
        let Partial {
            mut groups,
            mut sketches,
        } = searcher
            .segment_readers()
            .par_iter()
            .try_fold(new_partial, |mut partial, segment| {
                self.segment(segment, fields, weight.as_ref(), &mut partial, reservation)
                    .map(|()| partial)
            })
            .try_reduce(new_partial, |a, b| Ok(self.merge(a, b, reservation)))?;
        if self.group.is_none() && groups.is_empty() {
            groups.insert(None, self.empty_group());
        }
        let digests: Vec<Option<TDigest>> = digested_by
            .iter()
            .map(|&owner| sketches[owner].as_mut().map(Sketch::finish))
            .collect();
        self.batch(groups, &digests)
    }

    fn empty_group(&self) -> Group {
        Group {
            rows: 0,
            accs: vec![Acc::default(); self.aggs.len()],
        }
    }

    /// The bytes reserved for a group state under `key`.
    fn group_bytes(&self, key: &Option<Key>) -> usize {
        let key_bytes = match key {
            Some(Key::Str(s)) => s.len(),
            _ => 0,
        };
        key_bytes + self.slot_bytes() + std::mem::size_of::<Option<Key>>()
    }

    /// The bytes of one slot's row count and accumulators.
    fn slot_bytes(&self) -> usize {
        std::mem::size_of::<i64>() + self.aggs.len() * std::mem::size_of::<Acc>()
    }

    /// Merges two partial aggregations of disjoint segments; the groups both
    /// hold are released once.
    fn merge(&self, mut a: Partial, b: Partial, reservation: &MemoryReservation) -> Partial {
        if a.groups.len() < b.groups.len() {
            return self.merge(b, a, reservation);
        }
        let mut released = 0;
        for (key, group) in b.groups {
            match a.groups.get_mut(&key) {
                Some(into) => {
                    released += self.group_bytes(&key);
                    into.rows += group.rows;
                    for (x, y) in into.accs.iter_mut().zip(&group.accs) {
                        x.merge(y);
                    }
                }
                None => {
                    a.groups.insert(key, group);
                }
            }
        }
        reservation.shrink(released);
        for (x, y) in a.sketches.iter_mut().zip(b.sketches) {
            if let (Some(x), Some(y)) = (x.as_mut(), y) {
                x.merge(y);
            }
        }
        a
    }

    /// Aggregates the documents of one segment into `partial`.
    fn segment(
        &self,
        segment: &SegmentReader,
        fields: &Fields,
        weight: &dyn Weight,
        partial: &mut Partial,
        reservation: &MemoryReservation,
    ) -> Result<()> {
        let Partial { groups, sketches } = partial;
        let counts_only = self.aggs.iter().all(|a| a.fun == Fun::CountRows);
        // A bare count: tantivy counts the segment's matches, from document
        // frequencies where it can (all documents, a term), without
        // visiting them.
        if self.group.is_none() && counts_only {
            let count = weight.count(segment).map_err(tantivy_err)?;
            if !groups.contains_key(&None) {
                reservation.try_grow(self.group_bytes(&None))?;
            }
            groups.entry(None).or_insert_with(|| self.empty_group()).rows += i64::from(count);
            return Ok(());
        }
        // A bare `terms` over every document of a segment without
        // deletions: each keyword's count is its document frequency in the
        // term dictionary, read without visiting the documents.
        if let Some((g, GroupKind::Keyword)) = &self.group
            && self.query == LeafQuery::All
            && segment.alive_bitset().is_none()
            && counts_only
            && let Some(counts) = keyword_doc_freqs(segment, fields, g)?
        {
            for (key, count) in counts {
                if !groups.contains_key(&key) {
                    reservation.try_grow(self.group_bytes(&key))?;
                }
                groups.entry(key).or_insert_with(|| self.empty_group()).rows += count;
            }
            return Ok(());
        }
        let (str_col, int_col) = match &self.group {
            Some((g, GroupKind::Keyword)) => (open_str(segment, &fields.column(g))?, None),
            Some((g, _)) => (None, open_numeric(segment, &fields.column(g))?),
            None => (None, None),
        };
        // Each column opened once, however many aggregates read it (`stats`).
        let mut opened: HashMap<&str, Option<NumColumn>> = HashMap::new();
        let mut columns = Vec::with_capacity(self.aggs.len());
        for a in &self.aggs {
            let col = match a.column.as_deref() {
                Some(c) => match opened.get(c) {
                    Some(col) => col.clone(),
                    None => {
                        let col = open_numeric(segment, &fields.column(c))?;
                        opened.insert(c, col.clone());
                        col
                    }
                },
                None => None,
            };
            columns.push(col);
        }
        // Slot 0 holds documents without a key; keyword ordinal `o` is
        // slot `o + 1`; integer and bucket keys get slots as they appear.
        let terms = str_col.as_ref().map_or(0, |c| c.num_terms());
        // Flat per-slot state: one row count and `naggs` accumulators per
        // slot, without an allocation per dictionary term.
        let naggs = self.aggs.len();
        let slot_bytes = self.slot_bytes();
        let window_bytes = if int_col.is_some() {
            WINDOW * std::mem::size_of::<u32>()
        } else {
            0
        };
        // Only row counts per keyword (a bare `terms`): the ordinals are
        // counted as they are read, without a slot per document, each in
        // one of `LANES` interleaved counters (`LANES * ordinal + lane`), so
        // that the increments of one ordinal in a run do not wait on each
        // other.
        let lane_counts = if str_col.is_some() && counts_only {
            terms * LANES
        } else {
            0
        };
        let segment_bytes =
            (terms + 1) * slot_bytes + window_bytes + lane_counts * std::mem::size_of::<u32>();
        reservation.try_grow(segment_bytes)?;
        let mut lanes = vec![0u32; lane_counts];
        let mut rows = vec![0i64; terms + 1];
        let mut accs = vec![Acc::default(); (terms + 1) * naggs];
        let mut ordinals = OrdinalSlots::default();
        let mut by_bits: HashMap<i64, usize, BuildHasherDefault<IntHasher>> = HashMap::default();
        let mut int_keys: Vec<i64> = Vec::new();
        let mut slots: Vec<usize> = Vec::with_capacity(BLOCK);
        let mut buf = NumBuf::default();
        let grouped = self.group.is_some();
        // Per aggregate: whether the block read for it also sums squares
        // (for a sum of squares of the same column).
        let squares: Vec<bool> = self
            .aggs
            .iter()
            .map(|a| {
                self.aggs
                    .iter()
                    .any(|b| b.fun == Fun::SumSq && b.column == a.column)
            })
            .collect();
        // One group: the aggregates that fold a column's values, by column
        // and by how they fold them (as doubles, with squares, or as
        // integers). Each block of a column is read once and folded once
        // per way, and each fold is merged into the aggregates it serves
        // (`stats` reads its column once, for two folds).
        type Flavors = Vec<(bool, bool, Vec<usize>)>;
        let mut folds: Vec<(Option<&str>, &NumColumn, Flavors)> = Vec::new();
        for (j, (spec, col)) in self.aggs.iter().zip(&columns).enumerate() {
            let Some(col) = col else { continue };
            let counted_without_read = spec.fun == Fun::Count && col.is_full();
            if grouped || matches!(spec.fun, Fun::Percentile(_)) || counted_without_read {
                continue;
            }
            let flavor = (spec.float(), spec.float() && squares[j]);
            let at = match folds.iter().position(|(c, _, _)| *c == spec.column.as_deref()) {
                Some(at) => at,
                None => {
                    folds.push((spec.column.as_deref(), col, Vec::new()));
                    folds.len() - 1
                }
            };
            let flavors = &mut folds[at].2;
            match flavors.iter_mut().find(|(f, s, _)| (*f, *s) == flavor) {
                Some((_, _, served)) => served.push(j),
                None => flavors.push((flavor.0, flavor.1, vec![j])),
            }
        }
        for (_, _, flavors) in &mut folds {
            flavors.sort_by_key(|(float, _, _)| *float);
        }
        // Only row counts per range (a bare `range`): the values are counted
        // per interval between the ranges' bounds.
        let count_ranges = match &self.group {
            Some((_, GroupKind::Range(r))) if counts_only => Some(r),
            _ => None,
        };
        let mut interval_rows = vec![0i64; count_ranges.map_or(0, |r| r.intervals())];
        let mut fold = |docs: &[DocId]| {
            slots.clear();
            if let (Some(c), Some(r)) = (&int_col, count_ranges) {
                rows[0] += docs.len() as i64;
                c.for_each_f64(docs, &mut buf, |_, v| {
                    if !v.is_nan() {
                        interval_rows[r.interval(v)] += 1;
                    }
                });
                return;
            } else if let (Some(c), true) = (&str_col, counts_only) {
                let ords = first_ords(c, docs, &mut buf);
                rows[0] += (docs.len() - ords.len()) as i64;
                for_each_lane(ords, |o| o as usize, &mut |lane, o| lanes[o * LANES + lane] += 1);
                return;
            } else if let Some(c) = &str_col {
                slots.resize(docs.len(), 0);
                for_each_first_ord(c, docs, &mut buf, |i, o| slots[i] = o as usize + 1);
            } else if let (Some(c), Some((_, kind))) = (&int_col, &self.group) {
                slots.resize(docs.len(), 0);
                let mut new_slot = |key: i64| {
                    int_keys.push(key);
                    rows.push(0);
                    accs.extend(std::iter::repeat_n(Acc::default(), naggs));
                    rows.len() - 1
                };
                // Slots by bucket number; a histogram key too far out
                // for an integer number by its bits.
                match kind {
                    &GroupKind::Histogram { interval, offset } => c.for_each_f64(docs, &mut buf, |i, v| {
                        slots[i] = match histogram_ordinal(v, interval, offset) {
                            Some(n) => ordinals
                                .slot(n, || new_slot(ordinal_key(n, interval, offset).to_bits() as i64)),
                            None => {
                                let key = histogram_key(v, interval, offset).to_bits() as i64;
                                *by_bits.entry(key).or_insert_with(|| new_slot(key))
                            }
                        };
                    }),
                    &GroupKind::FixedDate { step, offset } => c.for_each_i64(docs, &mut buf, |i, v| {
                        let n = fixed_date_number(v, step, offset);
                        slots[i] = ordinals.slot(n, || new_slot(n * step + offset));
                    }),
                    // A value in no range stays in slot 0, with the
                    // documents without one.
                    GroupKind::Range(r) => c.for_each_f64(docs, &mut buf, |i, v| {
                        if let Some(n) = r.key(v) {
                            slots[i] = ordinals.slot(n, || new_slot(n));
                        }
                    }),
                    _ => c.for_each_i64(docs, &mut buf, |i, v| slots[i] = ordinals.slot(v, || new_slot(v))),
                }
            } else if grouped {
                slots.resize(docs.len(), 0);
            }
            if grouped {
                for s in &slots {
                    rows[*s] += 1;
                }
            } else {
                rows[0] += docs.len() as i64;
            }
            for (_, col, flavors) in &folds {
                let values = col.read_block(docs, &mut buf);
                // Integer folds come first: the doubles of integers are
                // derived from them where that is exact.
                let mut ints: Option<Acc> = None;
                for (float, squares, served) in flavors {
                    let derived = match (values, *float, *squares, &ints) {
                        (BlockValues::I64(_), true, false, Some(i)) => i.ints_as_doubles(),
                        _ => None,
                    };
                    let block = derived.unwrap_or_else(|| Acc::of_block(values, *float, *squares));
                    if !float {
                        ints = Some(block);
                    }
                    for &j in served {
                        accs[j].merge(&block);
                    }
                }
            }
            for (j, (spec, col)) in self.aggs.iter().zip(&columns).enumerate() {
                let Some(col) = col else { continue };
                if matches!(spec.fun, Fun::Percentile(_)) {
                    if let Some(sketch) = sketches[j].as_mut() {
                        sketch.add(col.read_block(docs, &mut buf));
                    }
                    continue;
                }
                if !grouped && spec.fun == Fun::Count && col.is_full() {
                    // Every document has one value: counting needs no read.
                    accs[j].n += docs.len() as u64;
                    continue;
                }
                if !grouped {
                    // Folded above.
                    continue;
                }
                if spec.float() {
                    col.for_each_f64(docs, &mut buf, |i, v| {
                        let slot = if grouped { slots[i] } else { 0 };
                        accs[slot * naggs + j].add_f(v);
                    });
                } else {
                    col.for_each_i64(docs, &mut buf, |i, v| {
                        let slot = if grouped { slots[i] } else { 0 };
                        accs[slot * naggs + j].add_i(v);
                    });
                }
            }
        };
        if self.query == LeafQuery::All && segment.alive_bitset().is_none() {
            for_each_doc_block(segment.max_doc(), BLOCK, &mut fold);
        } else {
            for_each_live_block(weight, segment, BLOCK, |docs| {
                fold(docs);
                Ok(true)
            })?;
        }
        for (o, counts) in lanes.chunks_exact(LANES).enumerate() {
            rows[o + 1] += counts.iter().map(|c| i64::from(*c)).sum::<i64>();
        }
        // Slot 0 holds the documents of no range.
        if let Some(r) = count_ranges {
            for (k, &count) in interval_rows.iter().enumerate() {
                if let (Some(n), true) = (r.interval_range(k), count > 0) {
                    rows[0] -= count;
                    int_keys.push(n);
                    rows.push(count);
                    accs.extend(std::iter::repeat_n(Acc::default(), naggs));
                }
            }
        }
        // The terms of the counted ordinals, in one pass over the dictionary.
        let mut names = Vec::new();
        if let Some(c) = &str_col {
            let ords: Vec<u64> = (1..=terms)
                .filter(|s| rows[*s] > 0)
                .map(|s| s as u64 - 1)
                .collect();
            let mut valid = true;
            let found = c
                .dictionary()
                .sorted_ords_to_term_cb(&ords, |bytes| match std::str::from_utf8(bytes) {
                    Ok(name) => names.push(name.to_string()),
                    Err(_) => valid = false,
                })
                .map_err(tantivy_err)?;
            if !(found && valid) {
                return Err(DataFusionError::Internal(format!(
                    "the dictionary of a keyword column of segment {} lacks a term",
                    segment.segment_id().uuid_string()
                )));
            }
        }
        let mut names = names.into_iter();
        for (slot, &count) in rows.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let key = match (&str_col, slot) {
                (_, 0) => None,
                (Some(_), _) => names.next().map(Key::Str),
                (None, s) => int_keys.get(s - terms - 1).map(|v| Key::Int(*v)),
            };
            if !groups.contains_key(&key) {
                reservation.try_grow(self.group_bytes(&key))?;
            }
            let entry = groups.entry(key).or_insert_with(|| self.empty_group());
            entry.rows += count;
            for (a, b) in entry.accs.iter_mut().zip(&accs[slot * naggs..(slot + 1) * naggs]) {
                a.merge(b);
            }
        }
        reservation.shrink(segment_bytes);
        Ok(())
    }

    fn batch(&self, groups: HashMap<Option<Key>, Group>, digests: &[Option<TDigest>]) -> Result<RecordBatch> {
        let groups: Vec<(Option<Key>, Group)> = groups.into_iter().collect();
        let mut columns: Vec<ArrayRef> = Vec::new();
        match &self.group {
            Some((_, GroupKind::Keyword)) => {
                let values: StringArray = groups
                    .iter()
                    .map(|(k, _)| match k {
                        Some(Key::Str(s)) => Some(s.as_str()),
                        _ => None,
                    })
                    .collect();
                let keys: Vec<Option<i32>> = groups
                    .iter()
                    .enumerate()
                    .map(|(i, (k, _))| k.as_ref().map(|_| i as i32))
                    .collect();
                let dict = DictionaryArray::<Int32Type>::try_new(keys.into(), Arc::new(values))?;
                columns.push(Arc::new(dict));
            }
            Some((_, GroupKind::Histogram { .. })) => {
                let keys: Float64Array = groups
                    .iter()
                    .map(|(k, _)| match k {
                        Some(Key::Int(bits)) => Some(f64::from_bits(*bits as u64)),
                        _ => None,
                    })
                    .collect();
                columns.push(Arc::new(keys));
            }
            Some((_, GroupKind::Integer | GroupKind::FixedDate { .. } | GroupKind::Range(_))) => {
                let keys: Int64Array = groups
                    .iter()
                    .map(|(k, _)| match k {
                        Some(Key::Int(v)) => Some(*v),
                        _ => None,
                    })
                    .collect();
                columns.push(Arc::new(keys));
            }
            None => {}
        }
        for (j, spec) in self.aggs.iter().enumerate() {
            let accs = groups.iter().map(|(_, g)| (g.rows, g.accs[j]));
            let opt_f = |f: fn(&Acc) -> f64| -> ArrayRef {
                Arc::new(
                    accs.clone()
                        .map(|(_, a)| (a.n > 0).then(|| f(&a)))
                        .collect::<Float64Array>(),
                )
            };
            let opt_i = |f: fn(&Acc) -> i64| -> Vec<Option<i64>> {
                accs.clone().map(|(_, a)| (a.n > 0).then(|| f(&a))).collect()
            };
            match spec.fun {
                Fun::CountRows => columns.push(Arc::new(
                    accs.clone().map(|(rows, _)| rows).collect::<Int64Array>(),
                )),
                Fun::Count => columns.push(Arc::new(
                    accs.clone().map(|(_, a)| a.n as i64).collect::<Int64Array>(),
                )),
                Fun::Avg => {
                    columns.push(Arc::new(accs.clone().map(|(_, a)| a.n).collect::<UInt64Array>()));
                    columns.push(opt_f(|a| a.sum_f));
                }
                Fun::SumSq => columns.push(opt_f(|a| a.sum_sq)),
                Fun::Percentile(size) => {
                    let digest = digests[j].clone().unwrap_or_else(|| TDigest::new(size));
                    for state in digest.to_scalar_state() {
                        columns.push(state.to_array_of_size(groups.len())?);
                    }
                }
                Fun::Sum | Fun::Min | Fun::Max => {
                    let (ff, fi): (StateF64, StateI64) = match spec.fun {
                        Fun::Sum => (|a| a.sum_f, |a| a.sum_i),
                        Fun::Min => (|a| a.min_f, |a| a.min_i),
                        _ => (|a| a.max_f, |a| a.max_i),
                    };
                    columns.push(match &spec.states[0] {
                        DataType::Float64 => opt_f(ff),
                        DataType::Timestamp(..) => Arc::new(TimestampMillisecondArray::from(opt_i(fi))),
                        _ => Arc::new(Int64Array::from(opt_i(fi))),
                    });
                }
            }
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_keys_sort_doubles_in_total_order_and_give_them_back() {
        let mut values = vec![
            3.5,
            -0.0,
            0.0,
            -1e300,
            f64::INFINITY,
            -2.25,
            f64::MIN_POSITIVE,
            1e-300,
            f64::NEG_INFINITY,
            42.0,
        ];
        let mut keys: Vec<u64> = values.iter().map(|v| order_key(*v)).collect();
        keys.sort_unstable();
        values.sort_by(f64::total_cmp);
        let back: Vec<u64> = keys.iter().map(|k| from_order_key(*k).to_bits()).collect();
        assert_eq!(back, values.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }

    #[test]
    fn histogram_and_fixed_date_keys_floor_from_the_offset() {
        assert_eq!(histogram_key(12.0, 5.0, 0.0), 10.0);
        assert_eq!(histogram_key(-0.5, 5.0, 0.0), -5.0);
        assert_eq!(histogram_key(6.0, 5.0, 1.0), 6.0);
        assert_eq!(histogram_key(5.9, 5.0, 1.0), 1.0);
        for x in [
            12.0, -0.5, -5.0, -5.000001, 0.0, -0.0, 4999.999, 5000.0, 1e17, -1e17, 2.5e19,
        ] {
            match histogram_ordinal(x, 5.0, 1.0) {
                Some(n) => assert_eq!(n as f64 * 5.0 + 1.0, ((x - 1.0) / 5.0).floor() * 5.0 + 1.0, "{x}"),
                None => assert!(x.abs() > 1e19, "{x}"),
            }
        }
        assert_eq!(fixed_date_key(599_999, 600_000, 0), 0);
        assert_eq!(fixed_date_key(-1, 600_000, 0), -600_000);
        assert_eq!(fixed_date_key(650_000, 600_000, 60_000), 60_000);
    }

    #[test]
    fn doubles_derived_from_an_integer_fold_are_those_of_folding_doubles() {
        let values: Vec<i64> = (0..4099).map(|i| (i * 7919) % 100_003 - 50_000).collect();
        let raw: Vec<u64> = values.iter().map(|v| v.to_u64()).collect();
        let ints = Acc::of_block(BlockValues::I64(&raw), false, false);
        let derived = ints.ints_as_doubles().expect("small integers");
        let folded = Acc::of_block(BlockValues::I64(&raw), true, false);
        assert_eq!(derived.n, folded.n);
        assert_eq!(derived.sum_f.to_bits(), folded.sum_f.to_bits());
        assert_eq!(derived.min_f.to_bits(), folded.min_f.to_bits());
        assert_eq!(derived.max_f.to_bits(), folded.max_f.to_bits());
        assert_eq!(derived.sum_f, values.iter().sum::<i64>() as f64);
        // Sums that may round in doubles are folded as doubles instead.
        let big: Vec<u64> = [1i64 << 52, 3, 1 << 52].iter().map(|v| v.to_u64()).collect();
        let ints = Acc::of_block(BlockValues::I64(&big), false, false);
        assert!(ints.ints_as_doubles().is_none());
    }

    #[test]
    fn sketches_of_few_values_merge_into_the_digest_of_all_values() {
        let values: Vec<u64> = (0..600u64).map(|i| (i * 7919) % 1000).collect();
        let mut whole = Sketch::new(DEFAULT_MAX_SIZE);
        whole.add(BlockValues::U64(&values));
        let mut parts: Vec<Sketch> = values
            .chunks(50)
            .map(|chunk| {
                let mut s = Sketch::new(DEFAULT_MAX_SIZE);
                s.add(BlockValues::U64(chunk));
                s
            })
            .collect();
        let mut merged = parts.pop().expect("parts");
        for part in parts {
            merged.merge(part);
        }
        let (whole, merged) = (whole.finish(), merged.finish());
        for q in [0.01, 0.25, 0.5, 0.75, 0.99] {
            assert_eq!(whole.estimate_quantile(q), merged.estimate_quantile(q), "{q}");
        }
    }

    #[test]
    fn range_buckets_number_the_range_holding_a_value_from_inclusive_to_exclusive() {
        let buckets = RangeBuckets::new(vec![
            (Some(300.0), None),
            (Some(100.0), Some(200.0)),
            (Some(150.0), Some(150.0)),
            (None, Some(20.0)),
        ])
        .expect("the ranges do not overlap");
        let keys: Vec<Option<i64>> = [
            f64::NEG_INFINITY,
            -1e300,
            19.99,
            20.0,
            99.0,
            100.0,
            150.0,
            199.9,
            200.0,
            300.0,
            f64::INFINITY,
            f64::NAN,
        ]
        .iter()
        .map(|x| buckets.key(*x))
        .collect();
        assert_eq!(
            keys,
            [
                Some(3),
                Some(3),
                Some(3),
                None,
                None,
                Some(1),
                Some(1),
                Some(1),
                None,
                Some(0),
                Some(0),
                None
            ]
        );
        assert_eq!(
            RangeBuckets::from_bounds(&buckets.literal_bounds()),
            Some(buckets)
        );
        assert!(RangeBuckets::from_bounds(&[0.0, 10.0, 20.0]).is_none());
        assert!(RangeBuckets::new(vec![(None, Some(50.0)), (Some(0.0), Some(500.0))]).is_none());
        assert!(RangeBuckets::new(vec![(Some(0.0), Some(10.0)), (Some(0.0), Some(10.0))]).is_none());
        assert!(RangeBuckets::new(vec![(Some(0.0), Some(10.0)), (Some(10.0), None)]).is_some());
        assert!(RangeBuckets::new(vec![(Some(f64::NAN), None)]).is_none());
    }

    #[test]
    fn ordinal_slots_give_each_ordinal_one_slot_in_and_beyond_the_window() {
        let mut slots = OrdinalSlots::default();
        let mut made = Vec::new();
        let ordinals = [
            100,
            101,
            100,
            100 - WINDOW as i64,
            100 + WINDOW as i64,
            i64::MIN,
            i64::MAX,
            -3,
            101,
            i64::MAX,
            100 + WINDOW as i64,
        ];
        let got: Vec<usize> = ordinals
            .iter()
            .map(|&o| {
                slots.slot(o, || {
                    made.push(o);
                    made.len() - 1
                })
            })
            .collect();
        assert_eq!(
            made,
            vec![
                100,
                101,
                100 - WINDOW as i64,
                100 + WINDOW as i64,
                i64::MIN,
                i64::MAX,
                -3
            ]
        );
        assert_eq!(got, vec![0, 1, 0, 2, 3, 4, 5, 6, 1, 5, 3]);
        assert_eq!(slots.spill.len(), 4, "the far ordinals live outside the window");
    }
}
