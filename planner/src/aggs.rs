//! Aggregations: parsed from Elasticsearch's `aggs`, planned as DataFusion
//! aggregate plans, rendered back in Elasticsearch's shapes.
//!
//! Every bucket aggregation is one level of grouping. A level is either a
//! *group* (`terms`, `histogram`, `date_histogram`: a GROUP BY key
//! expression) or a set of *branches* (`range`, `filters`: one filter per
//! bucket, pushed into the scans as a tantivy query). For each bucket
//! aggregation the planner builds one aggregate plan per combination of
//! branches of it and its ancestors, grouped by the keys of its group
//! ancestors and itself, computing the document count and the metrics of its
//! metric sub-aggregations. A plan that only counts, without a group level,
//! groups by the number of the range instead of taking one branch of a
//! `range` whose ranges do not overlap (`range_bucket`). Metrics over
//! multi-valued fields get a plan of their own that unnests the values. Bucket selection (`size`, `order`,
//! `min_doc_count`), empty-bucket filling and rendering happen on the small
//! grouped results.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result as DfResult;
use datafusion::functions_aggregate::expr_fn::{
    approx_distinct, approx_percentile_cont, avg, count, max, min, sum,
};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
    cast, col, lit,
};
use datafusion::prelude::SessionContext;
use futures::future::try_join_all;
use quidditch_index::agg_pushdown::{RangeBuckets, fixed_date_key, histogram_key};
use quidditch_index::mapping::FieldType;
use quidditch_index::query::LeafQuery;
use serde_json::{Map, Value, json};

use crate::dates::{CalendarUnit, DateFormatter, TimeZone, parse_fixed_interval};
use crate::error::{Error, Result};
use crate::query::{QueryContext, lower, resolve_date};
use crate::source::{
    Output, Target, common_type, date_formatter, field_type, float_json, json_at, json_literal, union_source,
};

/// The parsed `aggs` of a request.
#[derive(Debug, Clone)]
pub struct AggTree {
    nodes: Vec<AggNode>,
    /// The request's `now` (date math in bounds), epoch milliseconds.
    now_ms: i64,
}

#[derive(Debug, Clone)]
struct AggNode {
    name: String,
    kind: AggKind,
    children: Vec<AggNode>,
}

#[derive(Debug, Clone)]
enum AggKind {
    Terms(TermsAgg),
    Histogram(HistogramAgg),
    DateHistogram(DateHistogramAgg),
    Range(RangeAgg),
    Filters(FiltersAgg),
    Metric(MetricAgg),
}

#[derive(Debug, Clone)]
enum OrderKey {
    Count,
    Key,
    Metric { agg: String, stat: Option<String> },
}

#[derive(Debug, Clone)]
enum KeyFilter {
    Regex(regex::Regex),
    Values(Vec<Value>),
}

#[derive(Debug, Clone)]
struct TermsAgg {
    field: String,
    size: usize,
    order: Vec<(OrderKey, bool)>,
    min_doc_count: u64,
    missing: Option<Value>,
    include: Option<KeyFilter>,
    exclude: Option<KeyFilter>,
}

#[derive(Debug, Clone)]
struct HistogramAgg {
    field: String,
    interval: f64,
    offset: f64,
    min_doc_count: u64,
    extended_bounds: Option<(f64, f64)>,
    hard_bounds: Option<(Option<f64>, Option<f64>)>,
    keyed: bool,
    missing: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
enum Interval {
    Calendar(CalendarUnit),
    Fixed(i64),
}

#[derive(Debug, Clone)]
struct DateHistogramAgg {
    field: String,
    interval: Interval,
    tz: TimeZone,
    tz_name: String,
    format: Option<String>,
    offset: i64,
    min_doc_count: u64,
    extended_bounds: Option<(i64, i64)>,
    hard_bounds: Option<(Option<i64>, Option<i64>)>,
    keyed: bool,
    missing: Option<i64>,
}

#[derive(Debug, Clone)]
struct RangeSpec {
    key: Option<String>,
    from: Option<Value>,
    to: Option<Value>,
}

#[derive(Debug, Clone)]
struct RangeAgg {
    field: String,
    ranges: Vec<RangeSpec>,
    keyed: bool,
    format: Option<String>,
}

#[derive(Debug, Clone)]
struct FiltersAgg {
    /// (key, query); the key is `None` for anonymous filters.
    filters: Vec<(Option<String>, Value)>,
    other_bucket_key: Option<String>,
    keyed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum MetricKind {
    Avg,
    Min,
    Max,
    Sum,
    ValueCount,
    Stats,
    ExtendedStats,
    Percentiles,
    Cardinality,
}

#[derive(Debug, Clone)]
struct MetricAgg {
    kind: MetricKind,
    field: String,
    missing: Option<Value>,
    percents: Vec<f64>,
    keyed: bool,
    sigma: f64,
}

const DEFAULT_PERCENTS: [f64; 7] = [1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0];

/// The centroids of a `percentiles` t-digest. DataFusion's default of 100
/// strays by up to about 1% of the value range at the median once the
/// digests of several shards are merged (3,000 values over 6 shards); 300
/// keeps it near 0.5%. Sorting the values, not the centroids, is the cost
/// of a digest, so the larger one costs little.
const PERCENTILE_CENTROIDS: u64 = 300;

/// Elasticsearch's `too_many_buckets_exception`: a response of more
/// buckets, at every level together, than `search.max_buckets`.
fn too_many_buckets(max_buckets: usize) -> Error {
    Error::new(
        400,
        "too_many_buckets_exception",
        format!(
            "Trying to create too many buckets. Must be less than or equal to: [{max_buckets}] but this number of \
             buckets was exceeded. This limit can be set by changing the [search.max_buckets] cluster level \
             setting."
        ),
    )
    .with("max_buckets", Value::from(max_buckets))
}

fn agg_error(reason: impl Into<String>) -> Error {
    Error::new(400, "x_content_parse_exception", reason)
}

/// Parses `aggs` / `aggregations`; `now_ms` is the request's `now`.
pub fn parse(v: &Value, now_ms: i64) -> Result<AggTree> {
    Ok(AggTree {
        nodes: parse_level(v, now_ms)?,
        now_ms,
    })
}

fn parse_level(v: &Value, now_ms: i64) -> Result<Vec<AggNode>> {
    let m = v
        .as_object()
        .ok_or_else(|| Error::parsing("Aggregation definitions must be objects"))?;
    m.iter()
        .map(|(name, def)| parse_node(name, def, now_ms))
        .collect()
}

fn parse_node(name: &str, def: &Value, now_ms: i64) -> Result<AggNode> {
    let m = def.as_object().ok_or_else(|| {
        Error::parsing(format!(
            "Expected [START_OBJECT] under [{name}], but got a different token"
        ))
    })?;
    let mut kind = None;
    let mut children = vec![];
    for (key, body) in m {
        match key.as_str() {
            "aggs" | "aggregations" => children = parse_level(body, now_ms)?,
            "meta" => {}
            agg_type => {
                if kind.is_some() {
                    return Err(Error::parsing(format!(
                        "Found two aggregation type definitions in [{name}]: [{agg_type}]"
                    )));
                }
                kind = Some(parse_kind(name, agg_type, body, now_ms)?);
            }
        }
    }
    let kind = kind.ok_or_else(|| Error::parsing(format!("Missing definition for aggregation [{name}]")))?;
    if matches!(kind, AggKind::Metric(_)) && !children.is_empty() {
        return Err(Error::new(
            400,
            "aggregation_initialization_exception",
            format!("Aggregator [{name}] of type [metric] cannot accept sub-aggregations"),
        ));
    }
    let node = AggNode {
        name: name.to_string(),
        kind,
        children,
    };
    if let AggKind::Terms(t) = &node.kind {
        for (key, _) in &t.order {
            if let OrderKey::Metric { agg, .. } = key
                && !node
                    .children
                    .iter()
                    .any(|c| c.name == *agg && matches!(c.kind, AggKind::Metric(_)))
            {
                return Err(Error::new(
                    400,
                    "invalid_path",
                    format!("Invalid aggregator order path [{agg}]. The provided aggregation [{agg}] either does not exist, or is a pipeline aggregation and cannot be used to sort the buckets."),
                )
                .on_shards());
            }
        }
    }
    Ok(node)
}

fn check_keys(agg: &str, m: &Map<String, Value>, allowed: &[&str]) -> Result<()> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(agg_error(format!("[1:1] [{agg}] unknown field [{k}]"))),
        None => Ok(()),
    }
}

fn field_of(m: &Map<String, Value>) -> Result<String> {
    m.get("field")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            Error::illegal_argument("Required one of fields [field, script], but none were specified. ")
        })
}

fn num(v: &Value, what: &str) -> Result<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| agg_error(format!("[{what}] must be a number, got [{v}]")))
}

fn count_param(v: Option<&Value>, what: &str, default: u64) -> Result<u64> {
    match v {
        None => Ok(default),
        Some(v) => {
            let n = v
                .as_i64()
                .ok_or_else(|| agg_error(format!("[{what}] must be an integer, got [{v}]")))?;
            u64::try_from(n).map_err(|_| {
                Error::illegal_argument(format!(
                    "[{what}] must be greater than or equal to 0. Found [{n}]"
                ))
            })
        }
    }
}

fn parse_order(v: &Value) -> Result<Vec<(OrderKey, bool)>> {
    let one = |m: &Map<String, Value>| -> Result<Vec<(OrderKey, bool)>> {
        m.iter()
            .map(|(k, dir)| {
                let desc = match dir.as_str().map(str::to_ascii_lowercase).as_deref() {
                    Some("desc") => true,
                    Some("asc") => false,
                    _ => return Err(agg_error(format!("Unknown terms order direction [{dir}]"))),
                };
                let key = match k.as_str() {
                    "_count" => OrderKey::Count,
                    "_key" | "_term" => OrderKey::Key,
                    path => match path.split_once(['.', '[']) {
                        Some((agg, stat)) => OrderKey::Metric {
                            agg: agg.to_string(),
                            stat: Some(stat.trim_end_matches(']').to_string()),
                        },
                        None => OrderKey::Metric {
                            agg: path.to_string(),
                            stat: None,
                        },
                    },
                };
                Ok((key, desc))
            })
            .collect()
    };
    match v {
        Value::Object(m) => one(m),
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                out.extend(one(item
                    .as_object()
                    .ok_or_else(|| agg_error("[order] entries must be objects"))?)?);
            }
            Ok(out)
        }
        _ => Err(agg_error("[order] must be an object or an array")),
    }
}

fn key_filter(v: &Value) -> Result<KeyFilter> {
    match v {
        Value::String(s) => regex::Regex::new(&format!("^(?:{s})$"))
            .map(KeyFilter::Regex)
            .map_err(|e| Error::illegal_argument(format!("invalid include/exclude regex [{s}]: {e}"))),
        Value::Array(a) => Ok(KeyFilter::Values(a.clone())),
        _ => Err(agg_error(
            "[include] and [exclude] must be a regex string or an array of values",
        )),
    }
}

fn parse_kind(name: &str, agg: &str, body: &Value, now_ms: i64) -> Result<AggKind> {
    let m = body
        .as_object()
        .ok_or_else(|| agg_error(format!("[{agg}] for [{name}] must be an object")))?;
    let metric = |kind: MetricKind, extra: &[&str]| -> Result<AggKind> {
        let mut allowed = vec!["field", "missing", "format", "script"];
        allowed.extend_from_slice(extra);
        check_keys(agg, m, &allowed)?;
        let percents = match m.get("percents") {
            Some(Value::Array(a)) => a.iter().map(|p| num(p, "percents")).collect::<Result<Vec<_>>>()?,
            Some(other) => return Err(agg_error(format!("[percents] must be an array, got [{other}]"))),
            None => DEFAULT_PERCENTS.to_vec(),
        };
        if let Some(p) = percents.iter().find(|p| !(0.0..=100.0).contains(*p)) {
            return Err(Error::invalid_field(
                agg,
                "percents",
                Error::illegal_argument(format!(
                    "percent must be in [0,100], got [{}]: [{name}]",
                    java_double(*p)
                )),
            ));
        }
        let sigma = m
            .get("sigma")
            .map(|s| num(s, "sigma"))
            .transpose()?
            .unwrap_or(2.0);
        if sigma < 0.0 {
            return Err(Error::invalid_field(
                agg,
                "sigma",
                Error::illegal_argument(format!(
                    "[sigma] must be greater than or equal to 0. Found [{}] in [{name}]",
                    java_double(sigma)
                )),
            ));
        }
        Ok(AggKind::Metric(MetricAgg {
            kind,
            field: field_of(m)?,
            missing: m.get("missing").cloned(),
            percents,
            keyed: m.get("keyed").and_then(Value::as_bool).unwrap_or(true),
            sigma,
        }))
    };
    match agg {
        "avg" => metric(MetricKind::Avg, &[]),
        "min" => metric(MetricKind::Min, &[]),
        "max" => metric(MetricKind::Max, &[]),
        "sum" => metric(MetricKind::Sum, &[]),
        "value_count" => metric(MetricKind::ValueCount, &[]),
        "stats" => metric(MetricKind::Stats, &[]),
        "extended_stats" => metric(MetricKind::ExtendedStats, &["sigma"]),
        "percentiles" => metric(MetricKind::Percentiles, &["percents", "keyed", "tdigest", "hdr"]),
        "cardinality" => metric(
            MetricKind::Cardinality,
            &["precision_threshold", "execution_hint"],
        ),
        "terms" => {
            check_keys(
                agg,
                m,
                &[
                    "field",
                    "size",
                    "shard_size",
                    "order",
                    "min_doc_count",
                    "shard_min_doc_count",
                    "missing",
                    "include",
                    "exclude",
                    "execution_hint",
                    "collect_mode",
                    "show_term_doc_count_error",
                    "format",
                ],
            )?;
            let size = count_param(m.get("size"), "size", 10)?;
            if size == 0 {
                return Err(Error::invalid_field(
                    agg,
                    "size",
                    Error::illegal_argument(format!("[size] must be greater than 0. Found [0] in [{name}]")),
                ));
            }
            let shard_size = count_param(m.get("shard_size"), "shard_size", size + size / 2 + 10)?;
            if shard_size == 0 {
                return Err(Error::illegal_argument(format!(
                    "[shard_size] must be greater than 0. Found [0] in [{name}]"
                )));
            }
            let order = match m.get("order") {
                Some(o) => parse_order(o)?,
                None => vec![(OrderKey::Count, true)],
            };
            Ok(AggKind::Terms(TermsAgg {
                field: field_of(m)?,
                size: size as usize,
                order,
                min_doc_count: count_param(m.get("min_doc_count"), "min_doc_count", 1)?,
                missing: m.get("missing").cloned(),
                include: m.get("include").map(key_filter).transpose()?,
                exclude: m.get("exclude").map(key_filter).transpose()?,
            }))
        }
        "histogram" => {
            check_keys(
                agg,
                m,
                &[
                    "field",
                    "interval",
                    "offset",
                    "min_doc_count",
                    "extended_bounds",
                    "hard_bounds",
                    "keyed",
                    "missing",
                    "order",
                    "format",
                ],
            )?;
            let interval = num(
                m.get("interval").ok_or_else(|| {
                    Error::illegal_argument("interval must be positive, got: 0.0").on_shards()
                })?,
                "interval",
            )?;
            if !(interval.is_finite() && interval > 0.0) {
                return Err(Error::invalid_field(
                    agg,
                    "interval",
                    Error::illegal_argument(format!(
                        "[interval] must be >0 for histogram aggregation [{name}]"
                    )),
                ));
            }
            let bounds = |key: &str| -> Result<Option<(Option<f64>, Option<f64>)>> {
                m.get(key)
                    .map(|b| {
                        let b = b
                            .as_object()
                            .ok_or_else(|| agg_error(format!("[{key}] must be an object")))?;
                        Ok((
                            b.get("min").map(|v| num(v, "min")).transpose()?,
                            b.get("max").map(|v| num(v, "max")).transpose()?,
                        ))
                    })
                    .transpose()
            };
            let extended = bounds("extended_bounds")?;
            Ok(AggKind::Histogram(HistogramAgg {
                field: field_of(m)?,
                interval,
                offset: m
                    .get("offset")
                    .map(|v| num(v, "offset"))
                    .transpose()?
                    .unwrap_or(0.0),
                min_doc_count: count_param(m.get("min_doc_count"), "min_doc_count", 0)?,
                extended_bounds: extended
                    .map(|(lo, hi)| (lo.unwrap_or(f64::INFINITY), hi.unwrap_or(f64::NEG_INFINITY))),
                hard_bounds: bounds("hard_bounds")?,
                keyed: m.get("keyed").and_then(Value::as_bool).unwrap_or(false),
                missing: m.get("missing").map(|v| num(v, "missing")).transpose()?,
            }))
        }
        "date_histogram" => parse_date_histogram(m, now_ms),
        "range" | "date_range" => {
            check_keys(
                agg,
                m,
                &["field", "ranges", "keyed", "format", "missing", "time_zone"],
            )?;
            let ranges = m.get("ranges").and_then(Value::as_array).ok_or_else(|| {
                Error::illegal_argument(format!("No [ranges] specified for the [{name}] aggregation"))
                    .on_shards()
            })?;
            if ranges.is_empty() {
                return Err(Error::illegal_argument(format!(
                    "No [ranges] specified for the [{name}] aggregation"
                ))
                .on_shards());
            }
            let ranges = ranges
                .iter()
                .map(|r| {
                    let r = r
                        .as_object()
                        .ok_or_else(|| agg_error("[ranges] entries must be objects"))?;
                    check_keys("range", r, &["key", "from", "to"])
                        .map_err(|e| Error::invalid_field(agg, "ranges", e))?;
                    let bound = |k: &str| r.get(k).filter(|v| !v.is_null()).cloned();
                    Ok(RangeSpec {
                        key: r.get("key").and_then(Value::as_str).map(str::to_string),
                        from: bound("from"),
                        to: bound("to"),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(AggKind::Range(RangeAgg {
                field: field_of(m)?,
                ranges,
                keyed: m.get("keyed").and_then(Value::as_bool).unwrap_or(false),
                format: m.get("format").and_then(Value::as_str).map(str::to_string),
            }))
        }
        "filters" => {
            check_keys(agg, m, &["filters", "other_bucket", "other_bucket_key", "keyed"])?;
            let (filters, named) = match m.get("filters") {
                Some(Value::Object(f)) => {
                    let mut v: Vec<(Option<String>, Value)> =
                        f.iter().map(|(k, q)| (Some(k.clone()), q.clone())).collect();
                    v.sort_by(|a, b| a.0.cmp(&b.0));
                    (v, true)
                }
                Some(Value::Array(a)) => (a.iter().map(|q| (None, q.clone())).collect(), false),
                _ => {
                    return Err(agg_error(format!(
                        "[filters] is required in [{name}] and must be an object or an array"
                    )));
                }
            };
            for (_, q) in &filters {
                crate::query::lower(
                    q,
                    &QueryContext {
                        index: "",
                        mapping: &Default::default(),
                        now_ms: 0,
                    },
                )?;
            }
            let other_key = m
                .get("other_bucket_key")
                .and_then(Value::as_str)
                .map(str::to_string);
            let other = match m.get("other_bucket").and_then(Value::as_bool) {
                Some(true) => Some(other_key.unwrap_or_else(|| "_other_".into())),
                Some(false) => None,
                None => other_key,
            };
            Ok(AggKind::Filters(FiltersAgg {
                filters,
                other_bucket_key: other,
                keyed: m.get("keyed").and_then(Value::as_bool).unwrap_or(named),
            }))
        }
        other => Err(Error::parsing(format!("Unknown aggregation type [{other}]"))
            .with("line", json!(1))
            .with("col", json!(1))),
    }
}

fn parse_date_histogram(m: &Map<String, Value>, now_ms: i64) -> Result<AggKind> {
    check_keys(
        "date_histogram",
        m,
        &[
            "field",
            "calendar_interval",
            "fixed_interval",
            "interval",
            "time_zone",
            "format",
            "offset",
            "min_doc_count",
            "extended_bounds",
            "hard_bounds",
            "keyed",
            "missing",
            "order",
        ],
    )?;
    let interval = match (m.get("calendar_interval"), m.get("fixed_interval")) {
        (Some(c), None) => {
            let text = c.as_str().unwrap_or_default();
            Interval::Calendar(CalendarUnit::parse(text).ok_or_else(|| {
                Error::invalid_field(
                    "date_histogram",
                    "calendar_interval",
                    Error::illegal_argument(format!(
                        "The supplied interval [{text}] could not be parsed as a calendar interval."
                    )),
                )
            })?)
        }
        (None, Some(f)) => {
            let text = f.as_str().unwrap_or_default();
            Interval::Fixed(parse_fixed_interval(text).map_err(|_| {
                Error::invalid_field(
                    "date_histogram",
                    "fixed_interval",
                    Error::illegal_argument(format!("failed to parse [{text}]")),
                )
            })?)
        }
        (Some(_), Some(_)) => {
            return Err(Error::invalid_field(
                "date_histogram",
                "fixed_interval",
                Error::illegal_argument(
                    "Cannot use [fixed_interval] with [calendar_interval] configuration option.",
                ),
            ));
        }
        (None, None) => {
            return Err(Error::illegal_argument(
                "Invalid interval specified, must be non-null and non-empty",
            )
            .on_shards());
        }
    };
    let tz_name = m
        .get("time_zone")
        .and_then(Value::as_str)
        .unwrap_or("UTC")
        .to_string();
    let tz = TimeZone::parse(&tz_name).map_err(Error::illegal_argument)?;
    let offset = match m.get("offset") {
        None => 0,
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => {
            let (neg, rest) = match s.strip_prefix('-') {
                Some(r) => (true, r),
                None => (false, s.strip_prefix('+').unwrap_or(s)),
            };
            let ms = parse_fixed_interval(rest).map_err(Error::illegal_argument)?;
            if neg { -ms } else { ms }
        }
        Some(other) => {
            return Err(agg_error(format!(
                "[offset] must be a string or a number, got [{other}]"
            )));
        }
    };
    let date = |v: &Value| resolve_date(v, None, now_ms, false);
    let bounds = |key: &str| -> Result<Option<(Option<i64>, Option<i64>)>> {
        m.get(key)
            .map(|b| {
                let b = b
                    .as_object()
                    .ok_or_else(|| agg_error(format!("[{key}] must be an object")))?;
                Ok((
                    b.get("min").map(date).transpose()?,
                    b.get("max").map(date).transpose()?,
                ))
            })
            .transpose()
    };
    Ok(AggKind::DateHistogram(DateHistogramAgg {
        field: field_of(m)?,
        interval,
        tz,
        tz_name,
        format: m.get("format").and_then(Value::as_str).map(str::to_string),
        offset,
        min_doc_count: count_param(m.get("min_doc_count"), "min_doc_count", 0)?,
        extended_bounds: bounds("extended_bounds")?
            .map(|(lo, hi)| (lo.unwrap_or(i64::MAX), hi.unwrap_or(i64::MIN))),
        hard_bounds: bounds("hard_bounds")?,
        keyed: m.get("keyed").and_then(Value::as_bool).unwrap_or(false),
        missing: m.get("missing").map(date).transpose()?,
    }))
}

/// A bucket key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Null,
    Bool(bool),
    Int(i64),
    /// A double by its bits; ordered through [`Key::as_f64`].
    Float(u64),
    Str(String),
    Branch(usize),
}

impl Key {
    fn from_json(v: &Value) -> Key {
        match v {
            Value::Null => Key::Null,
            Value::Bool(b) => Key::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Key::Int(i),
                None => Key::Float(n.as_f64().unwrap_or(0.0).to_bits()),
            },
            Value::String(s) => Key::Str(s.clone()),
            other => Key::Str(other.to_string()),
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Key::Int(i) => Some(*i as f64),
            Key::Float(b) => Some(f64::from_bits(*b)),
            Key::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            _ => None,
        }
    }

    fn compare(&self, other: &Key) -> std::cmp::Ordering {
        match (self.as_f64(), other.as_f64()) {
            (Some(a), Some(b)) => a.total_cmp(&b),
            _ => self.cmp(other),
        }
    }
}

/// Identifies an aggregation node by its position in the tree.
type NodeId = Vec<usize>;

/// One aggregate plan and what its rows mean.
pub struct AggPlan {
    /// The plan.
    pub plan: LogicalPlan,
    node: NodeId,
    /// Per bucket level (the node's ancestors and itself): how the plan
    /// splits it.
    steps: Vec<Step>,
    /// Whether the plan gives document counts (else only metrics).
    counts: bool,
    /// Metric children whose values the plan computes, with their kind and
    /// column count.
    metrics: Vec<(usize, MetricKind, usize)>,
    label: String,
}

impl AggPlan {
    /// Short description for plan views.
    pub fn describe(&self) -> String {
        self.label.clone()
    }
}

#[derive(Debug, Default, Clone)]
struct Row {
    count: i64,
    metrics: HashMap<usize, Vec<Value>>,
}

/// The rows of a node grouped by their parent's key path: (own key, row).
type ChildRows = HashMap<Vec<Key>, Vec<(Key, Row)>>;

/// Results of all plans: per node, per key path, the row.
pub struct AggResults {
    rows: HashMap<NodeId, HashMap<Vec<Key>, Row>>,
    /// Per node, the rows under each parent key: (own key, row).
    children: HashMap<NodeId, ChildRows>,
}

/// The columns a metric's plan computes.
fn metric_columns(m: &MetricAgg) -> usize {
    match m.kind {
        MetricKind::Stats => 4,
        MetricKind::ExtendedStats => 5,
        MetricKind::Percentiles => m.percents.len(),
        _ => 1,
    }
}

struct Planner<'a> {
    targets: &'a [Target],
    base: &'a dyn Fn(&Target) -> Result<LeafQuery>,
    now_ms: i64,
    plans: Vec<AggPlan>,
}

/// Plans every aggregation of `tree` over the targets; `base` is the query of
/// the search for a target.
pub fn plan(
    tree: &AggTree,
    targets: &[Target],
    base: &dyn Fn(&Target) -> Result<LeafQuery>,
    now_ms: i64,
) -> Result<Vec<AggPlan>> {
    let mut p = Planner {
        targets,
        base,
        now_ms,
        plans: vec![],
    };
    if targets.is_empty() {
        return Ok(vec![]);
    }
    p.top_level(&tree.nodes)?;
    Ok(p.plans)
}

/// A bucket level on the way down to a node.
#[derive(Clone)]
struct Level<'a> {
    node: &'a AggNode,
}

/// How a plan splits one bucket level.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// The plan counts one bucket of a `range` or `filters`, a query of its
    /// own pushed into the scans.
    Branch(usize),
    /// The next group column holds the level's key.
    Group,
    /// The next group column holds the number of the `range` bucket the
    /// value falls in (null: none). For ranges that do not overlap, one
    /// grouped plan replaces a plan per range.
    Ranges,
}

impl<'a> Planner<'a> {
    /// Plans the metrics of a level (top-level metrics: one plan without
    /// groups) and every bucket aggregation below it.
    fn top_level(&mut self, nodes: &'a [AggNode]) -> Result<()> {
        let metrics = metric_children(nodes);
        if !metrics.is_empty() {
            self.node_plans(&[], &[], &metrics, false)?;
        }
        self.buckets_below(nodes, &[], &[])
    }

    fn buckets_below(&mut self, nodes: &'a [AggNode], path: &[usize], ancestors: &[Level<'a>]) -> Result<()> {
        for (i, node) in nodes.iter().enumerate() {
            if matches!(node.kind, AggKind::Metric(_)) {
                continue;
            }
            let mut child_path = path.to_vec();
            child_path.push(i);
            self.check_field_type(node)?;
            let mut levels = ancestors.to_vec();
            levels.push(Level { node });
            self.node_plans(&child_path, &levels, &metric_children(&node.children), true)?;
            self.buckets_below(&node.children, &child_path, &levels)?;
        }
        Ok(())
    }

    /// Rejects a bucket aggregation over a field type it cannot group, as
    /// Elasticsearch does (a 400 from the shards).
    fn check_field_type(&self, node: &AggNode) -> Result<()> {
        let field_type = |f: &str| field_type(self.targets, f);
        let (agg, field) = match &node.kind {
            AggKind::Terms(t) => {
                if field_type(&t.field) == Some(FieldType::Text) {
                    return Err(Error::illegal_argument(format!(
                        "Text fields are not optimised for operations that require per-document field data like aggregations and sorting, so these operations are disabled by default. Please use a keyword field instead. Alternatively, set fielddata=true on [{}] in order to load field data by uninverting the inverted index. Note that this can use significant memory.",
                        t.field
                    ))
                    .on_shards());
                }
                return Ok(());
            }
            AggKind::Histogram(h) => ("histogram", &h.field),
            AggKind::DateHistogram(d) => ("date_histogram", &d.field),
            AggKind::Range(r) => ("range", &r.field),
            AggKind::Filters(_) | AggKind::Metric(_) => return Ok(()),
        };
        match field_type(field) {
            Some(ty @ (FieldType::Keyword | FieldType::Text | FieldType::Ip | FieldType::Boolean)) => {
                Err(Error::illegal_argument(format!(
                    "Field [{field}] of type [{}] is not supported for aggregation [{agg}]",
                    ty.name()
                ))
                .on_shards())
            }
            _ => Ok(()),
        }
    }

    fn is_list(&self, field: &str) -> bool {
        matches!(common_type(self.targets, field), Some(DataType::List(_)))
    }

    /// The plans of one node: the document counts and scalar metrics in one
    /// plan per branch combination, list-valued metrics in plans of their own.
    fn node_plans(
        &mut self,
        path: &[usize],
        levels: &[Level<'a>],
        metrics: &[(usize, &MetricAgg)],
        counts: bool,
    ) -> Result<()> {
        let (scalar, list): (Vec<_>, Vec<_>) = metrics.iter().partition(|(_, m)| !self.is_list(&m.field));
        let combos = self.combinations(levels, metrics.is_empty())?;
        // `min_doc_count: 0` on terms lists every term of the indices, also
        // those no matching document has: their keys come from a plan over
        // all documents.
        let all_terms =
            matches!(levels.last().map(|l| &l.node.kind), Some(AggKind::Terms(t)) if t.min_doc_count == 0);
        for combo in &combos {
            if counts || !scalar.is_empty() {
                self.build(path, levels, combo, &scalar, counts, false)?;
            }
            for m in &list {
                self.build(path, levels, combo, std::slice::from_ref(m), false, false)?;
            }
            if all_terms && counts {
                self.build(path, levels, combo, &[], false, true)?;
            }
        }
        Ok(())
    }

    /// The ranges of a `range` aggregation that one grouped plan can count:
    /// over a single-valued number or date, ranges that do not overlap.
    fn range_buckets(&self, r: &RangeAgg) -> Result<Option<RangeBuckets>> {
        let is_date = match common_type(self.targets, &r.field) {
            Some(DataType::Timestamp(..)) => true,
            Some(t) if t.is_numeric() => false,
            _ => return Ok(None),
        };
        Ok(RangeBuckets::new(range_bounds(r, is_date, self.now_ms)?))
    }

    /// Every way a plan splits the levels: one plan per combination of the
    /// branches of `range` and `filters` levels. Grouping levels are keys.
    /// Plans that only count, without a grouping level, group by the deepest
    /// `range` whose ranges do not overlap instead: the scans count each
    /// range in one pass (one key at most, so that they can aggregate it
    /// themselves). With metrics, a plan per range folds its documents'
    /// values in ungrouped loops, which costs less than grouping each value.
    fn combinations(&self, levels: &[Level], counts_only: bool) -> Result<Vec<Vec<Step>>> {
        let mut ranged = None;
        if counts_only && levels.iter().all(|l| group_field(l.node).is_none()) {
            for (i, level) in levels.iter().enumerate().rev() {
                if let AggKind::Range(r) = &level.node.kind
                    && self.range_buckets(r)?.is_some()
                {
                    ranged = Some(i);
                    break;
                }
            }
        }
        let mut combos: Vec<Vec<Step>> = vec![vec![]];
        for (i, level) in levels.iter().enumerate() {
            let steps = match branch_count(level.node) {
                _ if ranged == Some(i) => vec![Step::Ranges],
                Some(n) => (0..n).map(Step::Branch).collect(),
                None => vec![Step::Group],
            };
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    steps.iter().map(move |s| {
                        let mut c = c.clone();
                        c.push(*s);
                        c
                    })
                })
                .collect();
        }
        Ok(combos)
    }

    fn branch_query(&self, level: &Level, branch: usize, target: &Target) -> Result<LeafQuery> {
        let ctx = QueryContext {
            index: &target.name,
            mapping: target.mapping(),
            now_ms: self.now_ms,
        };
        match &level.node.kind {
            AggKind::Range(r) => {
                let spec = &r.ranges[branch];
                let mut bounds = Map::new();
                if let Some(f) = &spec.from {
                    bounds.insert("gte".into(), f.clone());
                }
                if let Some(t) = &spec.to {
                    bounds.insert("lt".into(), t.clone());
                }
                if let Some(f) = &r.format {
                    bounds.insert("format".into(), json!(f));
                }
                if bounds.is_empty() || (spec.from.is_none() && spec.to.is_none()) {
                    return lower(&json!({"exists": {"field": r.field}}), &ctx);
                }
                lower(&json!({"range": {r.field.clone(): Value::Object(bounds)}}), &ctx)
            }
            AggKind::Filters(f) => match f.filters.get(branch) {
                Some((_, q)) => lower(q, &ctx),
                None => {
                    let all: Vec<Value> = f.filters.iter().map(|(_, q)| q.clone()).collect();
                    lower(&json!({"bool": {"must_not": all}}), &ctx)
                }
            },
            _ => Err(Error::internal("branch of a group aggregation")),
        }
    }

    fn build(
        &mut self,
        path: &[usize],
        levels: &[Level<'a>],
        combo: &[Step],
        metrics: &[&(usize, &MetricAgg)],
        counts: bool,
        all_docs: bool,
    ) -> Result<()> {
        let base = self.base;
        let query_for = |t: &Target| -> Result<LeafQuery> {
            let mut parts = vec![if all_docs { LeafQuery::All } else { base(t)? }];
            for (level, step) in levels.iter().zip(combo) {
                if let Step::Branch(b) = step {
                    parts.push(self.branch_query(level, *b, t)?);
                }
            }
            if parts.contains(&LeafQuery::None) {
                return Ok(LeafQuery::None);
            }
            Ok(LeafQuery::and(parts))
        };
        let mut outputs = Vec::new();
        let mut unnest = Vec::new();
        let key_field = |i: usize| match (combo[i], &levels[i].node.kind) {
            (Step::Ranges, AggKind::Range(r)) => Some(r.field.as_str()),
            (Step::Group, _) => group_field(levels[i].node),
            _ => None,
        };
        for i in 0..levels.len() {
            if let Some(field) = key_field(i) {
                let alias = format!("__g{i}");
                if self.is_list(field) {
                    unnest.push(alias.clone());
                }
                outputs.push(Output::Field {
                    path: field.to_string(),
                    alias,
                    reduce: None,
                });
            }
        }
        for (j, (_, m)) in metrics.iter().enumerate() {
            let alias = format!("__m{j}");
            if self.is_list(&m.field) {
                unnest.push(alias.clone());
            }
            outputs.push(Output::Field {
                path: m.field.clone(),
                alias,
                reduce: None,
            });
        }
        // Unnested bucket keys: a document counts once per bucket, however
        // many of its values fall in it (unless metric values are unnested
        // too, where every value counts).
        let dedupe = !unnest.is_empty() && !metrics.iter().any(|(_, m)| self.is_list(&m.field));
        if outputs.is_empty() || dedupe {
            outputs.push(Output::Index);
            outputs.push(Output::Meta("_id"));
        }
        let mut builder = union_source(self.targets, &query_for, &outputs)?;
        for alias in &unnest {
            builder = builder.unnest_column(alias.as_str())?;
        }
        let mut groups = Vec::new();
        for (i, level) in levels.iter().enumerate() {
            let Some(field) = key_field(i) else {
                continue;
            };
            let input = col(format!("__g{i}"));
            let ty = common_type(self.targets, field).map(|t| element(&t));
            let key = self.key_expr(level.node, input, ty.as_ref())?;
            if let AggKind::Terms(t) = &level.node.kind
                && (t.include.is_some() || t.exclude.is_some())
            {
                builder = builder.filter(key_filter_expr(t, key.clone()))?;
            }
            if let Some(f) = hard_bounds_expr(level.node, key.clone()) {
                builder = builder.filter(f)?;
            }
            groups.push(key.alias(format!("__k{i}")));
        }
        if dedupe {
            let mut distinct = vec![col("_index"), col("_id")];
            distinct.append(&mut groups);
            distinct.extend((0..metrics.len()).map(|j| col(format!("__m{j}"))));
            builder = builder.aggregate(distinct, Vec::<Expr>::new())?;
            groups = (0..levels.len())
                .filter(|i| key_field(*i).is_some())
                .map(|i| col(format!("__k{i}")))
                .collect();
        }
        // After deduplication the count reads `_id`, which keeps the
        // document identity in the distinct step through projection pruning.
        let doc_count = if dedupe {
            count(col("_id"))
        } else {
            datafusion::functions_aggregate::count::count_all()
        };
        let mut aggs = vec![doc_count.alias("__count")];
        for (j, (_, m)) in metrics.iter().enumerate() {
            let ty = common_type(self.targets, &m.field).map(|t| element(&t));
            aggs.extend(metric_exprs(
                j,
                m,
                col(format!("__m{j}")),
                ty.as_ref(),
                self.now_ms,
            )?);
        }
        let plan = builder.aggregate(groups, aggs)?.build()?;
        let names = node_names(levels);
        self.plans.push(AggPlan {
            plan,
            node: path.to_vec(),
            steps: combo.to_vec(),
            counts,
            metrics: metrics
                .iter()
                .map(|(i, m)| (*i, m.kind, metric_columns(m)))
                .collect(),
            label: if names.is_empty() {
                "(top-level metrics)".into()
            } else {
                names
            },
        });
        Ok(())
    }

    fn key_expr(&self, node: &AggNode, input: Expr, ty: Option<&DataType>) -> Result<Expr> {
        Ok(match &node.kind {
            AggKind::Terms(t) => match &t.missing {
                Some(m) => {
                    let fill = match ty {
                        Some(DataType::Timestamp(..)) => {
                            cast(lit(resolve_date(m, None, self.now_ms, false)?), DataType::Int64)
                        }
                        _ => json_literal(m),
                    };
                    let input = match ty {
                        Some(DataType::Timestamp(..)) => cast(input, DataType::Int64),
                        Some(DataType::Dictionary(..)) => cast(input, DataType::Utf8),
                        _ => input,
                    };
                    datafusion::functions::expr_fn::coalesce(vec![input, fill])
                }
                None => input,
            },
            AggKind::Histogram(h) => {
                let x = cast(input, DataType::Float64);
                let x = match h.missing {
                    Some(m) => datafusion::functions::expr_fn::coalesce(vec![x, lit(m)]),
                    None => x,
                };
                let udf = ScalarUDF::new_from_impl(HistogramBucket::new());
                Expr::ScalarFunction(datafusion::logical_expr::expr::ScalarFunction::new_udf(
                    Arc::new(udf),
                    vec![x, lit(h.interval), lit(h.offset)],
                ))
            }
            AggKind::DateHistogram(d) => {
                let ms = cast(input, DataType::Int64);
                let ms = match d.missing {
                    Some(m) => datafusion::functions::expr_fn::coalesce(vec![ms, lit(m)]),
                    None => ms,
                };
                let udf = ScalarUDF::new_from_impl(DateBucket::new());
                Expr::ScalarFunction(datafusion::logical_expr::expr::ScalarFunction::new_udf(
                    Arc::new(udf),
                    vec![
                        ms,
                        lit(Bucketer::interval_arg(&d.interval)),
                        lit(d.tz_name.clone()),
                        lit(d.offset),
                    ],
                ))
            }
            AggKind::Range(r) => {
                let buckets = self
                    .range_buckets(r)?
                    .ok_or_else(|| Error::internal("grouped ranges overlap"))?;
                let x = match ty {
                    Some(DataType::Timestamp(..)) => cast(cast(input, DataType::Int64), DataType::Float64),
                    _ => cast(input, DataType::Float64),
                };
                let mut args = vec![x];
                args.extend(buckets.literal_bounds().into_iter().map(lit));
                let udf = ScalarUDF::new_from_impl(RangeBucket::new());
                Expr::ScalarFunction(datafusion::logical_expr::expr::ScalarFunction::new_udf(
                    Arc::new(udf),
                    args,
                ))
            }
            _ => return Err(Error::internal("key of a branch aggregation")),
        })
    }
}

/// The metric aggregations among `nodes`, with their positions.
fn metric_children(nodes: &[AggNode]) -> Vec<(usize, &MetricAgg)> {
    nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match &n.kind {
            AggKind::Metric(m) => Some((i, m)),
            _ => None,
        })
        .collect()
}

fn node_names(levels: &[Level]) -> String {
    levels
        .iter()
        .map(|l| l.node.name.as_str())
        .collect::<Vec<_>>()
        .join(" > ")
}

fn element(t: &DataType) -> DataType {
    match t {
        DataType::List(f) | DataType::LargeList(f) => f.data_type().clone(),
        other => other.clone(),
    }
}

fn group_field(node: &AggNode) -> Option<&str> {
    match &node.kind {
        AggKind::Terms(t) => Some(&t.field),
        AggKind::Histogram(h) => Some(&h.field),
        AggKind::DateHistogram(d) => Some(&d.field),
        _ => None,
    }
}

fn branch_count(node: &AggNode) -> Option<usize> {
    match &node.kind {
        AggKind::Range(r) => Some(r.ranges.len()),
        AggKind::Filters(f) => Some(f.filters.len() + usize::from(f.other_bucket_key.is_some())),
        _ => None,
    }
}

/// The `from` and `to` of each range, as numbers (epoch milliseconds on a
/// date field).
fn range_bounds(r: &RangeAgg, is_date: bool, now_ms: i64) -> Result<Vec<(Option<f64>, Option<f64>)>> {
    let bound = |v: &Option<Value>| -> Result<Option<f64>> {
        v.as_ref()
            .map(|v| {
                if is_date {
                    resolve_date(v, r.format.as_deref(), now_ms, false).map(|ms| ms as f64)
                } else {
                    num(v, "range")
                }
            })
            .transpose()
    };
    r.ranges
        .iter()
        .map(|s| Ok((bound(&s.from)?, bound(&s.to)?)))
        .collect()
}

fn key_filter_expr(t: &TermsAgg, key: Expr) -> Expr {
    let as_text = cast(key.clone(), DataType::Utf8);
    let one = |f: &KeyFilter| -> Expr {
        match f {
            KeyFilter::Regex(re) => datafusion::functions::expr_fn::regexp_like(
                as_text.clone(),
                lit(re.as_str().to_string()),
                None,
            ),
            KeyFilter::Values(values) => {
                let list = values
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => lit(s.clone()),
                        other => lit(other.to_string()),
                    })
                    .collect();
                as_text.clone().in_list(list, false)
            }
        }
    };
    let mut e = lit(true);
    if let Some(inc) = &t.include {
        e = e.and(one(inc));
    }
    if let Some(exc) = &t.exclude {
        e = e.and(datafusion::logical_expr::not(one(exc)));
    }
    e
}

fn hard_bounds_expr(node: &AggNode, key: Expr) -> Option<Expr> {
    let (lo, hi) = match &node.kind {
        AggKind::Histogram(HistogramAgg {
            hard_bounds: Some((lo, hi)),
            ..
        }) => (lo.map(lit), hi.map(lit)),
        AggKind::DateHistogram(DateHistogramAgg {
            hard_bounds: Some((lo, hi)),
            ..
        }) => (lo.map(lit), hi.map(lit)),
        _ => return None,
    };
    let mut e = lit(true);
    if let Some(lo) = lo {
        e = e.and(key.clone().gt_eq(lo));
    }
    if let Some(hi) = hi {
        e = e.and(key.lt_eq(hi));
    }
    Some(e)
}

fn metric_exprs(
    j: usize,
    m: &MetricAgg,
    input: Expr,
    ty: Option<&DataType>,
    now_ms: i64,
) -> Result<Vec<Expr>> {
    let numeric = |e: Expr| -> Expr {
        let e = match ty {
            Some(DataType::Timestamp(..)) => cast(cast(e, DataType::Int64), DataType::Float64),
            _ => cast(e, DataType::Float64),
        };
        match &m.missing {
            Some(v) => {
                let fill = match (ty, v) {
                    (Some(DataType::Timestamp(..)), _) => lit(resolve_date(v, None, now_ms, false)
                        .map(|ms| ms as f64)
                        .unwrap_or(f64::NAN)),
                    (_, Value::Number(n)) => lit(n.as_f64().unwrap_or(0.0)),
                    (_, Value::String(s)) => lit(s.parse::<f64>().unwrap_or(f64::NAN)),
                    _ => lit(f64::NAN),
                };
                datafusion::functions::expr_fn::coalesce(vec![e, fill])
            }
            None => e,
        }
    };
    // Distinct counting hashes integers and strings: doubles count by their
    // text, timestamps by their epoch milliseconds.
    let raw = match (ty, m.kind) {
        (Some(DataType::Dictionary(..)), _) => cast(input.clone(), DataType::Utf8),
        (Some(DataType::Float64 | DataType::Float32), MetricKind::Cardinality) => {
            cast(input.clone(), DataType::Utf8)
        }
        (Some(DataType::Timestamp(..)), _) => cast(input.clone(), DataType::Int64),
        _ => input.clone(),
    };
    let raw = match &m.missing {
        Some(v) => datafusion::functions::expr_fn::coalesce(vec![raw, json_literal(v)]),
        None => raw,
    };
    if matches!(
        ty,
        Some(DataType::Utf8 | DataType::Dictionary(..) | DataType::Boolean)
    ) && !matches!(m.kind, MetricKind::ValueCount | MetricKind::Cardinality)
    {
        return Err(Error::illegal_argument(format!(
            "Field [{}] of type [keyword] is not supported for aggregation [{}]",
            m.field,
            kind_name(m.kind)
        ))
        .on_shards());
    }
    let x = numeric(input);
    Ok(match m.kind {
        MetricKind::Avg => vec![avg(x)],
        MetricKind::Min => vec![min(x)],
        MetricKind::Max => vec![max(x)],
        MetricKind::Sum => vec![sum(x)],
        MetricKind::ValueCount => vec![count(raw)],
        MetricKind::Cardinality => vec![approx_distinct(raw)],
        // The average, and the variances and standard deviations, follow
        // from these, as Elasticsearch computes them (see `derive_stats`).
        MetricKind::Stats => vec![count(x.clone()), min(x.clone()), max(x.clone()), sum(x)],
        MetricKind::ExtendedStats => vec![
            count(x.clone()),
            min(x.clone()),
            max(x.clone()),
            sum(x.clone()),
            sum(x.clone() * x),
        ],
        MetricKind::Percentiles => m
            .percents
            .iter()
            .map(|p| {
                approx_percentile_cont(
                    x.clone().sort(true, false),
                    lit(p / 100.0),
                    Some(lit(PERCENTILE_CENTROIDS)),
                )
            })
            .collect(),
    }
    .into_iter()
    .enumerate()
    .map(|(i, e)| e.alias(format!("__v{j}_{i}")))
    .collect())
}

fn kind_name(k: MetricKind) -> &'static str {
    match k {
        MetricKind::Avg => "avg",
        MetricKind::Min => "min",
        MetricKind::Max => "max",
        MetricKind::Sum => "sum",
        MetricKind::ValueCount => "value_count",
        MetricKind::Stats => "stats",
        MetricKind::ExtendedStats => "extended_stats",
        MetricKind::Percentiles => "percentiles",
        MetricKind::Cardinality => "cardinality",
    }
}

/// `date_histogram` bucket of an epoch-millisecond value: the start of its
/// calendar unit or fixed interval in the time zone, shifted by the offset.
#[derive(Debug)]
struct Bucketer {
    interval: Interval,
    tz: TimeZone,
    offset: i64,
}

impl Bucketer {
    /// The bucketer of `date_histogram_bucket`'s literal arguments.
    fn from_args(interval: &str, tz: &str, offset: i64) -> DfResult<Bucketer> {
        let bad = |what: String| datafusion::error::DataFusionError::Execution(what);
        let interval = match interval.split_once(':') {
            Some(("calendar", unit)) => Interval::Calendar(
                CalendarUnit::parse(unit).ok_or_else(|| bad(format!("unknown calendar unit [{unit}]")))?,
            ),
            Some(("fixed", ms)) => Interval::Fixed(
                ms.parse::<i64>()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| bad(format!("bad fixed interval [{ms}]")))?,
            ),
            _ => return Err(bad(format!("bad date_histogram interval [{interval}]"))),
        };
        let tz = TimeZone::parse(tz).map_err(bad)?;
        Ok(Bucketer { interval, tz, offset })
    }

    /// The literal `interval` argument of `date_histogram_bucket`.
    fn interval_arg(interval: &Interval) -> String {
        match interval {
            Interval::Calendar(unit) => format!("calendar:{}", format!("{unit:?}").to_lowercase()),
            Interval::Fixed(ms) => format!("fixed:{ms}"),
        }
    }
    fn bucket(&self, ms: i64) -> i64 {
        let shifted = ms - self.offset;
        let start = match &self.interval {
            Interval::Calendar(unit) => unit.floor(shifted, &self.tz),
            Interval::Fixed(step) => {
                if let TimeZone::Fixed(offset) = self.tz {
                    let shift = i64::from(offset.local_minus_utc()) * 1000;
                    return fixed_date_key(ms + shift, *step, self.offset) - shift;
                }
                // Intervals are laid out on the local clock; a bucket starts
                // at the instant its local start time names.
                let local = shifted + self.tz.offset_ms_at(shifted);
                let floored = local.div_euclid(*step) * step;
                match chrono::DateTime::from_timestamp_millis(floored) {
                    Some(t) => self.tz.utc_ms_of(t.naive_utc()),
                    None => floored - self.tz.offset_ms_at(shifted),
                }
            }
        };
        start + self.offset
    }
}

/// `date_histogram_bucket(ms, interval, time_zone, offset)`: the bucket
/// of a `date_histogram`. The parameters are literal arguments, so that the
/// function is the same everywhere and plans that use it can run on any
/// node.
#[derive(Debug, PartialEq, Eq, Hash)]
struct DateBucket {
    signature: Signature,
}

impl DateBucket {
    fn new() -> DateBucket {
        DateBucket {
            signature: Signature::exact(
                vec![DataType::Int64, DataType::Utf8, DataType::Utf8, DataType::Int64],
                Volatility::Immutable,
            ),
        }
    }
}

/// The functions DSL plans use besides DataFusion's own, for every node
/// that runs parts of them.
pub fn udfs() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(ScalarUDF::new_from_impl(DateBucket::new())),
        Arc::new(ScalarUDF::new_from_impl(HistogramBucket::new())),
        Arc::new(ScalarUDF::new_from_impl(RangeBucket::new())),
    ]
}

/// `range_bucket(x, from_0, to_0, from_1, to_1, ...)`: the number of the
/// range `x` falls in ([`RangeBuckets::key`]), null for none. The bounds are
/// literal doubles, infinite where a range is open, so that a scan can
/// compute the buckets itself; the ranges must not overlap.
#[derive(Debug, PartialEq, Eq, Hash)]
struct RangeBucket {
    signature: Signature,
}

impl RangeBucket {
    fn new() -> RangeBucket {
        RangeBucket {
            signature: Signature::variadic(vec![DataType::Float64], Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for RangeBucket {
    fn name(&self) -> &str {
        "range_bucket"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let bad = |what: String| datafusion::error::DataFusionError::Internal(what);
        let bounds = (1..args.args.len())
            .map(|i| match literal_arg(&args, i, self.name())? {
                datafusion::common::ScalarValue::Float64(Some(b)) => Ok(b),
                other => Err(bad(format!(
                    "bound {i} of range_bucket must be a double, not {other:?}"
                ))),
            })
            .collect::<DfResult<Vec<f64>>>()?;
        let buckets = RangeBuckets::from_bounds(&bounds).ok_or_else(|| {
            bad("range_bucket takes a from and a to per range, ranges that do not overlap".into())
        })?;
        let input: Float64Array = value_arg(&args, self.name(), "Float64")?;
        let out: Int64Array = input.iter().map(|v| v.and_then(|x| buckets.key(x))).collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

/// `histogram_bucket(x, interval, offset)`: the key of the `histogram`
/// bucket of `x` ([`histogram_key`]); `interval` and `offset` are literals,
/// so that a scan can compute the buckets itself.
#[derive(Debug, PartialEq, Eq, Hash)]
struct HistogramBucket {
    signature: Signature,
}

impl HistogramBucket {
    fn new() -> HistogramBucket {
        HistogramBucket {
            signature: Signature::exact(
                vec![DataType::Float64, DataType::Float64, DataType::Float64],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for HistogramBucket {
    fn name(&self) -> &str {
        "histogram_bucket"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let double = |i: usize| match literal_arg(&args, i, self.name())? {
            datafusion::common::ScalarValue::Float64(Some(v)) => Ok(v),
            other => Err(datafusion::error::DataFusionError::Internal(format!(
                "argument {i} of histogram_bucket must be a double, not {other:?}"
            ))),
        };
        let (interval, offset) = (double(1)?, double(2)?);
        let input: Float64Array = value_arg(&args, self.name(), "Float64")?;
        let out: Float64Array = input
            .iter()
            .map(|v| v.map(|x| histogram_key(x, interval, offset)))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

impl ScalarUDFImpl for DateBucket {
    fn name(&self) -> &str {
        "date_histogram_bucket"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let literal = |i: usize| literal_arg(&args, i, self.name());
        let (interval, tz, offset) = match (literal(1)?, literal(2)?, literal(3)?) {
            (
                datafusion::common::ScalarValue::Utf8(Some(i)),
                datafusion::common::ScalarValue::Utf8(Some(t)),
                datafusion::common::ScalarValue::Int64(Some(o)),
            ) => (i, t, o),
            other => {
                return Err(datafusion::error::DataFusionError::Internal(format!(
                    "bad date_histogram_bucket arguments {other:?}"
                )));
            }
        };
        let bucketer = Bucketer::from_args(&interval, &tz, offset)?;
        let input: Int64Array = value_arg(&args, self.name(), "Int64")?;
        let out: Int64Array = input.iter().map(|v| v.map(|ms| bucketer.bucket(ms))).collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

/// Argument `i` of the bucket function `name`, which must be a literal.
fn literal_arg(args: &ScalarFunctionArgs, i: usize, name: &str) -> DfResult<datafusion::common::ScalarValue> {
    match args.args.get(i) {
        Some(ColumnarValue::Scalar(v)) => Ok(v.clone()),
        _ => Err(datafusion::error::DataFusionError::Internal(format!(
            "argument {i} of {name} must be a literal"
        ))),
    }
}

/// The values (first argument) of the bucket function `name`, as an array
/// of its input type `ty`.
fn value_arg<A: Array + Clone + 'static>(args: &ScalarFunctionArgs, name: &str, ty: &str) -> DfResult<A> {
    let input = match args.args.first() {
        Some(ColumnarValue::Array(a)) => Arc::clone(a),
        Some(ColumnarValue::Scalar(v)) => v.to_array()?,
        None => {
            return Err(datafusion::error::DataFusionError::Internal(format!(
                "{name} takes a value"
            )));
        }
    };
    input.as_any().downcast_ref::<A>().cloned().ok_or_else(|| {
        datafusion::error::DataFusionError::Internal(format!("{name} takes {ty}, not {}", input.data_type()))
    })
}

/// Runs the aggregation plans concurrently.
pub async fn run(ctx: &SessionContext, plans: &[AggPlan]) -> Result<AggResults> {
    let batches = try_join_all(plans.iter().map(|p| async move {
        let df = ctx.execute_logical_plan(p.plan.clone()).await?;
        Ok::<_, Error>(df.collect().await?)
    }))
    .await?;
    let mut rows: HashMap<NodeId, HashMap<Vec<Key>, Row>> = HashMap::new();
    for (plan, batches) in plans.iter().zip(batches) {
        let node_rows = rows.entry(plan.node.clone()).or_default();
        for batch in &batches {
            read_rows(plan, batch, node_rows)?;
        }
    }
    let mut children: HashMap<NodeId, ChildRows> = HashMap::new();
    for (node, node_rows) in &rows {
        let by_parent = children.entry(node.clone()).or_default();
        for (key, row) in node_rows {
            if let Some((own, parent)) = key.split_last() {
                by_parent
                    .entry(parent.to_vec())
                    .or_default()
                    .push((own.clone(), row.clone()));
            }
        }
    }
    Ok(AggResults { rows, children })
}

fn read_rows(plan: &AggPlan, batch: &RecordBatch, out: &mut HashMap<Vec<Key>, Row>) -> Result<()> {
    let groups = plan
        .steps
        .iter()
        .filter(|s| !matches!(s, Step::Branch(_)))
        .count();
    'rows: for row in 0..batch.num_rows() {
        let mut key = Vec::with_capacity(plan.steps.len());
        let mut g = 0;
        for step in &plan.steps {
            let value = match step {
                Step::Branch(i) => {
                    key.push(Key::Branch(*i));
                    continue;
                }
                _ => Key::from_json(&json_at(batch.column(g).as_ref(), row)?),
            };
            g += 1;
            key.push(match (step, value) {
                (Step::Ranges, Key::Int(i)) => {
                    Key::Branch(usize::try_from(i).map_err(|_| Error::internal(format!("range number {i}")))?)
                }
                // Values in no range.
                (Step::Ranges, _) => continue 'rows,
                (_, value) => value,
            });
        }
        let entry = out.entry(key).or_default();
        let mut c = groups;
        let count = json_at(batch.column(c).as_ref(), row)?.as_i64().unwrap_or(0);
        c += 1;
        if plan.counts {
            entry.count = count;
        }
        for (child, kind, n) in &plan.metrics {
            let mut values = Vec::with_capacity(*n);
            for _ in 0..*n {
                values.push(json_at(batch.column(c).as_ref(), row)?);
                c += 1;
            }
            if matches!(kind, MetricKind::Stats | MetricKind::ExtendedStats) {
                derive_stats(*kind, &mut values);
            }
            entry.metrics.insert(*child, values);
        }
    }
    Ok(())
}

/// Completes `count, min, max, sum` (and `sum_of_squares` for
/// `extended_stats`) by Elasticsearch's formulas (`InternalStats`,
/// `InternalExtendedStats`): the average `sum / count` goes before `sum`;
/// after `sum_of_squares` come the population and sample variances and
/// standard deviations, `(sum_of_squares - sum² / count) / count` (over
/// `count - 1` for the sample), never below zero.
fn derive_stats(kind: MetricKind, values: &mut Vec<Value>) {
    let f = |v: &Value| v.as_f64();
    let avg = match (f(&values[0]), f(&values[3])) {
        (Some(n), Some(s)) if n > 0.0 => json!(s / n),
        _ => Value::Null,
    };
    values.insert(3, avg);
    if kind != MetricKind::ExtendedStats {
        return;
    }
    let (count, sum, squares) = (f(&values[0]), f(&values[4]), f(&values[5]));
    let variance = |over: f64| -> Value {
        match (count, sum, squares) {
            (Some(n), Some(s), Some(q)) if n > 0.0 => json!(((q - s * s / n) / over).max(0.0)),
            _ => Value::Null,
        }
    };
    let n = count.unwrap_or(0.0);
    let population = variance(n);
    let sampling = variance(n - 1.0);
    let root = |v: &Value| v.as_f64().map_or(Value::Null, |v| json!(v.sqrt()));
    let (std_population, std_sampling) = (root(&population), root(&sampling));
    values.extend([population, sampling, std_population, std_sampling]);
}

/// Renders the `aggregations` section of the response, of at most
/// `max_buckets` buckets (`search.max_buckets`).
pub fn render(tree: &AggTree, results: &AggResults, targets: &[Target], max_buckets: usize) -> Result<Value> {
    let r = Renderer {
        results,
        targets,
        now_ms: tree.now_ms,
        buckets: Cell::new(0),
        max_buckets,
    };
    let root_row = r.row(&[], &[]);
    r.level(&tree.nodes, &[], &[], root_row.as_ref())
}

struct Renderer<'a> {
    results: &'a AggResults,
    targets: &'a [Target],
    now_ms: i64,
    /// The buckets rendered so far, at every level.
    buckets: Cell<usize>,
    /// The most it may render.
    max_buckets: usize,
}

impl Renderer<'_> {
    fn row(&self, node: &[usize], key: &[Key]) -> Option<Row> {
        self.results.rows.get(node)?.get(key).cloned()
    }

    fn field_type(&self, field: &str) -> Option<FieldType> {
        field_type(self.targets, field)
    }

    fn date_formatter(&self, field: &str, format: Option<&str>) -> Result<DateFormatter> {
        date_formatter(self.targets, field, format)
    }

    /// The sub-aggregations of a bucket: `row` holds its metrics.
    fn level(&self, nodes: &[AggNode], path: &[usize], key: &[Key], row: Option<&Row>) -> Result<Value> {
        let mut out = Map::new();
        for (i, node) in nodes.iter().enumerate() {
            let mut child = path.to_vec();
            child.push(i);
            let v = match &node.kind {
                AggKind::Metric(m) => self.metric(m, row.and_then(|r| r.metrics.get(&i)))?,
                _ => self.bucket_agg(node, &child, key)?,
            };
            out.insert(node.name.clone(), v);
        }
        Ok(Value::Object(out))
    }

    /// Rows of a node below the parent key.
    fn children_rows(&self, node: &[usize], parent: &[Key]) -> Vec<(Key, Row)> {
        self.results
            .children
            .get(node)
            .and_then(|by_parent| by_parent.get(parent))
            .cloned()
            .unwrap_or_default()
    }

    fn bucket(
        &self,
        node: &AggNode,
        path: &[usize],
        parent: &[Key],
        key: &Key,
        row: Option<&Row>,
    ) -> Result<Map<String, Value>> {
        self.buckets.set(self.buckets.get() + 1);
        if self.buckets.get() > self.max_buckets {
            return Err(too_many_buckets(self.max_buckets));
        }
        let mut full = parent.to_vec();
        full.push(key.clone());
        let mut b = Map::new();
        b.insert("doc_count".into(), json!(row.map_or(0, |r| r.count)));
        if let Value::Object(subs) = self.level(&node.children, path, &full, row)? {
            b.extend(subs);
        }
        Ok(b)
    }

    fn bucket_agg(&self, node: &AggNode, path: &[usize], parent: &[Key]) -> Result<Value> {
        match &node.kind {
            AggKind::Terms(t) => self.terms(node, t, path, parent),
            AggKind::Histogram(h) => self.histogram(node, h, path, parent),
            AggKind::DateHistogram(d) => self.date_histogram(node, d, path, parent),
            AggKind::Range(r) => self.range(node, r, path, parent),
            AggKind::Filters(f) => self.filters(node, f, path, parent),
            AggKind::Metric(_) => Err(Error::internal("metric rendered as bucket")),
        }
    }

    fn terms(&self, node: &AggNode, t: &TermsAgg, path: &[usize], parent: &[Key]) -> Result<Value> {
        let mut rows = self.children_rows(path, parent);
        rows.retain(|(k, r)| r.count as u64 >= t.min_doc_count && *k != Key::Null);
        let total: i64 = rows.iter().map(|(_, r)| r.count).sum();
        let sort_value = |row: &Row, agg: &str, stat: &Option<String>| -> Option<f64> {
            let i = node.children.iter().position(|c| c.name == agg)?;
            let AggKind::Metric(m) = &node.children[i].kind else {
                return None;
            };
            let values = row.metrics.get(&i)?;
            let idx = match (m.kind, stat.as_deref()) {
                (MetricKind::Stats | MetricKind::ExtendedStats, Some(s)) => [
                    "count",
                    "min",
                    "max",
                    "avg",
                    "sum",
                    "sum_of_squares",
                    "variance",
                    "variance_sampling",
                    "std_deviation",
                    "std_deviation_sampling",
                ]
                .iter()
                .position(|x| *x == s)?,
                (MetricKind::Percentiles, Some(p)) => {
                    let p: f64 = p.parse().ok()?;
                    m.percents.iter().position(|x| *x == p)?
                }
                _ => 0,
            };
            values.get(idx)?.as_f64()
        };
        rows.sort_by(|(ka, ra), (kb, rb)| {
            for (key, desc) in &t.order {
                let ord = match key {
                    OrderKey::Count => ra.count.cmp(&rb.count),
                    OrderKey::Key => ka.compare(kb),
                    OrderKey::Metric { agg, stat } => {
                        let a = sort_value(ra, agg, stat);
                        let b = sort_value(rb, agg, stat);
                        match (a, b) {
                            (Some(a), Some(b)) => a.total_cmp(&b),
                            (Some(_), None) => return std::cmp::Ordering::Less,
                            (None, Some(_)) => return std::cmp::Ordering::Greater,
                            (None, None) => std::cmp::Ordering::Equal,
                        }
                    }
                };
                let ord = if *desc { ord.reverse() } else { ord };
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            ka.compare(kb)
        });
        let shown: Vec<(Key, Row)> = rows.iter().take(t.size).cloned().collect();
        let shown_count: i64 = shown.iter().map(|(_, r)| r.count).sum();
        let ty = self.field_type(&t.field);
        let mut buckets = Vec::new();
        for (key, row) in &shown {
            let mut b = Map::new();
            match (ty, key) {
                (Some(FieldType::Boolean), Key::Bool(v)) => {
                    b.insert("key".into(), json!(i64::from(*v)));
                    b.insert("key_as_string".into(), json!(v.to_string()));
                }
                (Some(FieldType::Date), Key::Int(ms)) => {
                    b.insert("key".into(), json!(ms));
                    b.insert(
                        "key_as_string".into(),
                        json!(self.date_formatter(&t.field, None)?.format(*ms, &TimeZone::utc())),
                    );
                }
                (Some(FieldType::Double | FieldType::Float | FieldType::ScaledFloat), k) => {
                    b.insert("key".into(), k.as_f64().map_or(Value::Null, float_json));
                }
                _ => {
                    b.insert("key".into(), key_json(key));
                }
            }
            b.extend(self.bucket(node, path, parent, key, Some(row))?);
            buckets.push(Value::Object(b));
        }
        Ok(json!({
            "doc_count_error_upper_bound": 0,
            "sum_other_doc_count": total - shown_count,
            "buckets": buckets,
        }))
    }

    fn histogram(&self, node: &AggNode, h: &HistogramAgg, path: &[usize], parent: &[Key]) -> Result<Value> {
        let mut out = Buckets::new(h.keyed);
        let rows = self.children_rows(path, parent);
        let mut by_key: Vec<(f64, Row)> = rows
            .into_iter()
            .filter_map(|(k, r)| k.as_f64().map(|f| (f, r)))
            .collect();
        by_key.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut keys: Vec<f64> = by_key.iter().map(|(k, _)| *k).collect();
        if h.min_doc_count == 0 {
            let mut lo = keys.first().copied();
            let mut hi = keys.last().copied();
            if let Some((emin, emax)) = h.extended_bounds {
                if emin.is_finite() {
                    let k = ((emin - h.offset) / h.interval).floor() * h.interval + h.offset;
                    lo = Some(lo.map_or(k, |l| l.min(k)));
                }
                if emax.is_finite() {
                    let k = ((emax - h.offset) / h.interval).floor() * h.interval + h.offset;
                    hi = Some(hi.map_or(k, |x| x.max(k)));
                }
            }
            if let Some((hlo, hhi)) = h.hard_bounds {
                if let (Some(l), Some(b)) = (lo, hlo) {
                    lo = Some(l.max(((b - h.offset) / h.interval).floor() * h.interval + h.offset));
                }
                if let (Some(x), Some(b)) = (hi, hhi) {
                    hi = Some(x.min(b));
                }
            }
            if let (Some(lo), Some(hi)) = (lo, hi) {
                keys.clear();
                let mut i = 0u64;
                loop {
                    let k = lo + i as f64 * h.interval;
                    if k > hi + h.interval * 1e-9 {
                        break;
                    }
                    if keys.len() >= self.max_buckets {
                        return Err(too_many_buckets(self.max_buckets));
                    }
                    keys.push(k);
                    i += 1;
                }
            }
        }
        let slot = |x: f64| ((x - h.offset) / h.interval).round() as i64;
        let rows: HashMap<i64, (f64, Row)> = by_key.into_iter().map(|(x, r)| (slot(x), (x, r))).collect();
        for k in keys {
            let found = rows.get(&slot(k));
            let row = found.map(|(_, r)| r.clone());
            if row.as_ref().map_or(0, |r| r.count) < h.min_doc_count as i64 {
                continue;
            }
            let key = Key::Float(found.map_or(k, |(x, _)| *x).to_bits());
            let mut b = Map::new();
            b.insert("key".into(), float_json(k));
            b.extend(self.bucket(node, path, parent, &key, row.as_ref())?);
            out.push(java_double(k), b);
        }
        Ok(out.into_json())
    }

    fn date_histogram(
        &self,
        node: &AggNode,
        d: &DateHistogramAgg,
        path: &[usize],
        parent: &[Key],
    ) -> Result<Value> {
        let mut out = Buckets::new(d.keyed);
        let rows = self.children_rows(path, parent);
        let mut by_key: Vec<(i64, Row)> = rows
            .into_iter()
            .filter_map(|(k, r)| match k {
                Key::Int(ms) => Some((ms, r)),
                _ => None,
            })
            .collect();
        by_key.sort_by_key(|(k, _)| *k);
        let bucketer = Bucketer {
            interval: d.interval.clone(),
            tz: d.tz,
            offset: d.offset,
        };
        let mut keys: Vec<i64> = by_key.iter().map(|(k, _)| *k).collect();
        if d.min_doc_count == 0 {
            let mut lo = keys.first().copied();
            let mut hi = keys.last().copied();
            if let Some((emin, emax)) = d.extended_bounds {
                if emin != i64::MAX {
                    let k = bucketer.bucket(emin);
                    lo = Some(lo.map_or(k, |l| l.min(k)));
                }
                if emax != i64::MIN {
                    let k = bucketer.bucket(emax);
                    hi = Some(hi.map_or(k, |x| x.max(k)));
                }
            }
            if let (Some(lo), Some(hi)) = (lo, hi) {
                let mut k = lo;
                let mut filled = 0;
                while k <= hi {
                    if filled == self.max_buckets {
                        return Err(too_many_buckets(self.max_buckets));
                    }
                    filled += 1;
                    keys.push(k);
                    let next = match &d.interval {
                        Interval::Calendar(unit) => unit.next(k - d.offset, &d.tz) + d.offset,
                        Interval::Fixed(step) => bucketer.bucket(k + step + step / 2),
                    };
                    if next <= k {
                        break;
                    }
                    k = next;
                }
                keys.sort_unstable();
                keys.dedup();
            }
        }
        let fmt = self.date_formatter(&d.field, d.format.as_deref())?;
        let rows: HashMap<i64, Row> = by_key.into_iter().collect();
        for k in keys {
            let row = rows.get(&k).cloned();
            if row.as_ref().map_or(0, |r| r.count) < d.min_doc_count as i64 {
                continue;
            }
            let text = fmt.format(k, &d.tz);
            let mut b = Map::new();
            b.insert("key_as_string".into(), json!(text));
            b.insert("key".into(), json!(k));
            b.extend(self.bucket(node, path, parent, &Key::Int(k), row.as_ref())?);
            out.push(text, b);
        }
        Ok(out.into_json())
    }

    fn range(&self, node: &AggNode, r: &RangeAgg, path: &[usize], parent: &[Key]) -> Result<Value> {
        let mut out = Buckets::new(r.keyed);
        let is_date = self.field_type(&r.field) == Some(FieldType::Date);
        let fmt = if is_date {
            Some(self.date_formatter(&r.field, r.format.as_deref())?)
        } else {
            None
        };
        let mut order: Vec<(usize, Option<f64>, Option<f64>)> = range_bounds(r, is_date, self.now_ms)?
            .into_iter()
            .enumerate()
            .map(|(i, (from, to))| (i, from, to))
            .collect();
        order.sort_by(|a, b| {
            let from =
                a.1.unwrap_or(f64::NEG_INFINITY)
                    .total_cmp(&b.1.unwrap_or(f64::NEG_INFINITY));
            from.then(
                a.2.unwrap_or(f64::INFINITY)
                    .total_cmp(&b.2.unwrap_or(f64::INFINITY)),
            )
        });
        let text = |v: Option<f64>| -> String {
            match (v, &fmt) {
                (None, _) => "*".into(),
                (Some(x), Some(f)) => f.format(x as i64, &TimeZone::utc()),
                (Some(x), None) => java_double(x),
            }
        };
        for (i, from, to) in order {
            let key = r.ranges[i]
                .key
                .clone()
                .unwrap_or_else(|| format!("{}-{}", text(from), text(to)));
            let mut b = Map::new();
            if !r.keyed {
                b.insert("key".into(), json!(key));
            }
            if let Some(f) = from {
                b.insert("from".into(), float_json(f));
                if fmt.is_some() {
                    b.insert("from_as_string".into(), json!(text(from)));
                }
            }
            if let Some(t) = to {
                b.insert("to".into(), float_json(t));
                if fmt.is_some() {
                    b.insert("to_as_string".into(), json!(text(to)));
                }
            }
            let mut full = parent.to_vec();
            full.push(Key::Branch(i));
            let row = self.row(path, &full);
            b.extend(self.bucket(node, path, parent, &Key::Branch(i), row.as_ref())?);
            out.push(key, b);
        }
        Ok(out.into_json())
    }

    fn filters(&self, node: &AggNode, f: &FiltersAgg, path: &[usize], parent: &[Key]) -> Result<Value> {
        let mut out = Buckets::new(f.keyed);
        let n = f.filters.len() + usize::from(f.other_bucket_key.is_some());
        for i in 0..n {
            let mut full = parent.to_vec();
            full.push(Key::Branch(i));
            let row = self.row(path, &full);
            let b = self.bucket(node, path, parent, &Key::Branch(i), row.as_ref())?;
            let name = match f.filters.get(i) {
                Some((Some(name), _)) => name.clone(),
                Some((None, _)) => i.to_string(),
                None => f.other_bucket_key.clone().unwrap_or_else(|| "_other_".into()),
            };
            out.push(name, b);
        }
        Ok(out.into_json())
    }

    fn metric(&self, m: &MetricAgg, values: Option<&Vec<Value>>) -> Result<Value> {
        let empty = Vec::new();
        let values = values.unwrap_or(&empty);
        let get = |i: usize| values.get(i).cloned().unwrap_or(Value::Null);
        let f = |i: usize| get(i).as_f64();
        let is_date = self.field_type(&m.field) == Some(FieldType::Date);
        let with_string = |v: Option<f64>| -> Result<Value> {
            let mut out = json!({"value": v.map_or(Value::Null, float_json)});
            if is_date && let Some(ms) = v {
                out["value_as_string"] = json!(
                    self.date_formatter(&m.field, None)?
                        .format(ms as i64, &TimeZone::utc())
                );
            }
            Ok(out)
        };
        Ok(match m.kind {
            MetricKind::Avg | MetricKind::Min | MetricKind::Max => with_string(f(0))?,
            MetricKind::Sum => json!({"value": float_json(f(0).unwrap_or(0.0))}),
            MetricKind::ValueCount | MetricKind::Cardinality => {
                json!({"value": get(0).as_i64().unwrap_or(0)})
            }
            MetricKind::Stats => {
                let count = get(0).as_i64().unwrap_or(0);
                json!({
                    "count": count,
                    "min": opt(f(1)),
                    "max": opt(f(2)),
                    "avg": opt(f(3)),
                    "sum": float_json(f(4).unwrap_or(0.0)),
                })
            }
            MetricKind::ExtendedStats => {
                let count = get(0).as_i64().unwrap_or(0);
                let avg_v = f(3);
                let var_samp = if count == 1 { Some(f64::NAN) } else { f(7) };
                let std_samp = if count == 1 { Some(f64::NAN) } else { f(9) };
                let bounds = |std: Option<f64>| -> (Value, Value) {
                    match (avg_v, std) {
                        (Some(a), Some(s)) if count > 0 => {
                            (float_json(a + m.sigma * s), float_json(a - m.sigma * s))
                        }
                        _ => (Value::Null, Value::Null),
                    }
                };
                let (upper, lower) = bounds(f(8));
                let (upper_s, lower_s) = bounds(std_samp);
                let nonempty = |v: Option<f64>| if count > 0 { opt(v) } else { Value::Null };
                json!({
                    "count": count,
                    "min": opt(f(1)),
                    "max": opt(f(2)),
                    "avg": opt(avg_v),
                    "sum": float_json(f(4).unwrap_or(0.0)),
                    "sum_of_squares": nonempty(f(5)),
                    "variance": nonempty(f(6)),
                    "variance_population": nonempty(f(6)),
                    "variance_sampling": nonempty(var_samp),
                    "std_deviation": nonempty(f(8)),
                    "std_deviation_population": nonempty(f(8)),
                    "std_deviation_sampling": nonempty(std_samp),
                    "std_deviation_bounds": {
                        "upper": upper.clone(),
                        "lower": lower.clone(),
                        "upper_population": upper,
                        "lower_population": lower,
                        "upper_sampling": upper_s,
                        "lower_sampling": lower_s,
                    },
                })
            }
            MetricKind::Percentiles => {
                if m.keyed {
                    let mut out = Map::new();
                    for (i, p) in m.percents.iter().enumerate() {
                        out.insert(java_double(*p), opt(f(i)));
                    }
                    json!({"values": out})
                } else {
                    let items: Vec<Value> = m
                        .percents
                        .iter()
                        .enumerate()
                        .map(|(i, p)| json!({"key": float_json(*p), "value": opt(f(i))}))
                        .collect();
                    json!({"values": items})
                }
            }
        })
    }
}

/// The buckets of a bucket aggregation: an object by key (`keyed`) or an array.
struct Buckets {
    keyed: bool,
    by_key: Map<String, Value>,
    list: Vec<Value>,
}

impl Buckets {
    fn new(keyed: bool) -> Buckets {
        Buckets {
            keyed,
            by_key: Map::new(),
            list: Vec::new(),
        }
    }

    fn push(&mut self, key: String, bucket: Map<String, Value>) {
        if self.keyed {
            self.by_key.insert(key, Value::Object(bucket));
        } else {
            self.list.push(Value::Object(bucket));
        }
    }

    fn into_json(self) -> Value {
        if self.keyed {
            json!({"buckets": self.by_key})
        } else {
            json!({"buckets": self.list})
        }
    }
}

fn opt(v: Option<f64>) -> Value {
    v.map_or(Value::Null, float_json)
}

fn key_json(k: &Key) -> Value {
    match k {
        Key::Null => Value::Null,
        Key::Bool(b) => json!(b),
        Key::Int(i) => json!(i),
        Key::Float(bits) => float_json(f64::from_bits(*bits)),
        Key::Str(s) => json!(s),
        Key::Branch(i) => json!(i),
    }
}

/// A double as Java's `Double.toString` writes it (`100.0`, `1.0E7`).
pub fn java_double(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e7 {
        format!("{f:.1}")
    } else if f.is_finite() && (f.abs() >= 1e7 || (f != 0.0 && f.abs() < 1e-3)) {
        let exp = f.abs().log10().floor() as i32;
        let mantissa = f / 10f64.powi(exp);
        let m = format!("{mantissa}");
        let m = if m.contains('.') { m } else { format!("{m}.0") };
        format!("{m}E{exp}")
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).map_or(0, |d| d.timestamp_millis())
    }

    #[test]
    fn fixed_day_buckets_follow_the_local_clock_across_dst() -> Result<(), String> {
        let bucket = Bucketer::from_args("fixed:86400000", "Europe/Berlin", 0).map_err(|e| e.to_string())?;
        // Both instants are on 31 March 2024 in Berlin, before and after the
        // clocks go forward: one bucket, starting at local midnight (+01:00).
        let start = ms("2024-03-30T23:00:00Z");
        assert_eq!(bucket.bucket(ms("2024-03-31T00:30:00Z")), start);
        assert_eq!(bucket.bucket(ms("2024-03-31T12:00:00Z")), start);
        // The next day starts at local midnight in summer time (+02:00).
        assert_eq!(
            bucket.bucket(ms("2024-04-01T10:00:00Z")),
            ms("2024-03-31T22:00:00Z")
        );
        Ok(())
    }

    #[test]
    fn java_doubles() {
        assert_eq!(java_double(100.0), "100.0");
        assert_eq!(java_double(0.5), "0.5");
        assert_eq!(java_double(1e7), "1.0E7");
    }
}
