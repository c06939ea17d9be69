//! `_search` and `_count`: the search body, its plans, and the response.
//!
//! A search is at most three kinds of DataFusion plans over the unioned,
//! query-filtered scans of its indices: the hits (sort + limit, pushed into
//! the scans as top-k), the total (a count the scans answer from tantivy), and
//! one plan per aggregation level ([`crate::aggs`]). They run concurrently in
//! one session.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{
    Expr, ExprFunctionExt, LogicalPlan, LogicalPlanBuilder, SortExpr, and, cast, col, lit, or,
};
use datafusion::prelude::{SessionContext, ident};
use futures::future::try_join_all;
use quidditch_index::Indices;
use quidditch_index::indices::FailedIndex;
use quidditch_index::mapping::FieldType;
use quidditch_index::metadata::DEFAULT_MAX_BUCKETS;
use quidditch_index::query::LeafQuery;
use serde_json::{Map, Value, json};

use crate::aggs::{self, AggTree};
use crate::dates::TimeZone;
use crate::error::{Error, Result};
use crate::highlight::{self, Highlight};
use crate::query::{QueryContext, lower, lower_opt, token_name};
use crate::source::{
    Output, Target, common_type, date_formatter, field_type, filtered_scan, float_json, json_at,
    json_literal, resolve, resolve_partial, union_source,
};

/// Elasticsearch's default `index.max_result_window`.
pub const MAX_RESULT_WINDOW: usize = 10_000;
/// Default `track_total_hits`.
const DEFAULT_TRACK_TOTAL_HITS: u64 = 10_000;

/// URL query parameters of a request.
pub type Params = HashMap<String, String>;

/// How many hits to count exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
enum TrackTotal {
    Off,
    UpTo(u64),
    Exact,
}

#[derive(Debug, Clone, PartialEq)]
enum Missing {
    First,
    Last,
    Value(Value),
}

#[derive(Debug, Clone)]
enum SortKind {
    Score,
    Doc,
    /// `_index` or `_id`: the tiebreakers that make an order total (scrolls).
    Meta(&'static str),
    Field {
        path: String,
    },
}

#[derive(Debug, Clone)]
struct SortKey {
    kind: SortKind,
    desc: bool,
    missing: Missing,
    unmapped_type: Option<String>,
}

/// `_source` filtering.
#[derive(Debug, Clone, Default)]
pub struct SourceFilter {
    enabled: bool,
    includes: Vec<String>,
    excludes: Vec<String>,
}

impl SourceFilter {
    /// The whole source.
    pub fn all() -> SourceFilter {
        SourceFilter {
            enabled: true,
            ..SourceFilter::default()
        }
    }

    /// The filter a request body's `_source` asks for: a boolean, paths to
    /// include, or an object of `includes` and `excludes`.
    pub fn parse(v: &Value) -> Result<SourceFilter> {
        let strings = |v: &Value| -> Result<Vec<String>> {
            match v {
                Value::String(s) => Ok(vec![s.clone()]),
                Value::Array(a) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| Error::parsing("[_source] patterns must be strings"))
                    })
                    .collect(),
                _ => Err(Error::parsing("[_source] patterns must be strings")),
            }
        };
        Ok(match v {
            Value::Bool(b) => SourceFilter {
                enabled: *b,
                ..SourceFilter::default()
            },
            Value::String(s) if s == "true" || s == "false" => SourceFilter {
                enabled: s == "true",
                ..SourceFilter::default()
            },
            Value::String(_) | Value::Array(_) => SourceFilter {
                enabled: true,
                includes: strings(v)?,
                excludes: vec![],
            },
            Value::Object(m) => {
                let mut f = SourceFilter {
                    enabled: true,
                    ..SourceFilter::default()
                };
                for (k, v) in m {
                    match k.as_str() {
                        "includes" | "include" => f.includes = strings(v)?,
                        "excludes" | "exclude" => f.excludes = strings(v)?,
                        other => {
                            return Err(Error::parsing(format!(
                                "Unknown key for a START_OBJECT in [{other}]."
                            )));
                        }
                    }
                }
                f
            }
            _ => {
                return Err(Error::parsing(
                    "[_source] must be a boolean, a string, an array or an object",
                ));
            }
        })
    }

    /// This filter, unless a request's URL parameters replace it, as
    /// Elasticsearch reads them: `_source` (`true`, `false` or paths to
    /// include, comma-separated), `_source_includes` and `_source_excludes`.
    pub fn with_params(self, params: &Params) -> SourceFilter {
        let list = |v: &str| v.split(',').map(str::to_string).collect::<Vec<_>>();
        let (mut fetch, mut includes) = (None, None);
        match params.get("_source").map(String::as_str) {
            Some("true") => fetch = Some(true),
            Some("false") => fetch = Some(false),
            Some(paths) => includes = Some(list(paths)),
            None => {}
        }
        if let Some(paths) = params.get("_source_includes") {
            includes = Some(list(paths));
        }
        let excludes = params.get("_source_excludes").map(|paths| list(paths));
        if fetch.is_none() && includes.is_none() && excludes.is_none() {
            return self;
        }
        SourceFilter {
            enabled: fetch.unwrap_or(true),
            includes: includes.unwrap_or_default(),
            excludes: excludes.unwrap_or_default(),
        }
    }

    /// `source` as this filter returns it: `None` when no source is wanted.
    pub fn apply(&self, source: &Value) -> Option<Value> {
        self.enabled.then(|| filter_source(source, self))
    }
}

/// A requested `fields` / `docvalue_fields` entry.
#[derive(Debug, Clone)]
struct FieldRequest {
    pattern: String,
    format: Option<String>,
    /// From `docvalue_fields`: values sorted and deduplicated, as doc values hold them.
    doc_values: bool,
}

/// A parsed search body with its URL parameters applied.
#[derive(Debug, Clone)]
pub struct SearchBody {
    query: Option<Value>,
    post_filter: Option<Value>,
    from: usize,
    size: usize,
    sort: Vec<SortKey>,
    source: SourceFilter,
    track_total: TrackTotal,
    search_after: Option<Vec<Value>>,
    aggs: Option<AggTree>,
    fields: Vec<FieldRequest>,
    min_score: Option<f32>,
    track_scores: bool,
    timeout: Option<Duration>,
    explain_plan: bool,
    /// Whether a search with shards that cannot be read answers from the
    /// others (`allow_partial_search_results`, default true).
    allow_partial: bool,
    /// Whether hits carry `_id` (`stored_fields: _none_` drops it).
    ids: bool,
    /// Whether hits carry `_version` (`version: true`).
    version: bool,
    /// Whether hits carry `_seq_no` and `_primary_term`
    /// (`seq_no_primary_term: true`).
    seq_no: bool,
    highlight: Option<Highlight>,
    /// `collapse.field`: one hit per value of the field.
    collapse: Option<String>,
    /// `indices_boost`: index expressions and the factor of their scores,
    /// the first that names an index applying to it.
    indices_boost: Vec<(String, f32)>,
}

/// A boolean option of the search body (`true`, `false`, or their text).
fn bool_value(v: &Value, name: &str) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
        other => Err(Error::parsing(format!(
            "[{name}] must be a boolean, got [{other}]"
        ))),
    }
}

fn usize_param(v: &Value, name: &str) -> Result<usize> {
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
    .ok_or_else(|| match v {
        Value::String(s) => Error::number_format(s),
        other => Error::x_content(format!("[{name}] failed to parse field [{name}]: {other}")),
    })?;
    if n < 0 {
        return Err(if name == "size" {
            Error::illegal_argument(format!("[size] parameter cannot be negative, found [{n}]"))
        } else {
            Error::illegal_argument(format!("[from] parameter cannot be negative but was [{n}]"))
        });
    }
    Ok(n as usize)
}

/// Parses an Elasticsearch time value (`30s`, `500ms`, `1m`).
pub fn parse_time_value(s: &str, setting: &str) -> Result<Duration> {
    let s = s.trim();
    let bad = || {
        Error::new(
            400,
            "parse_exception",
            format!(
                "failed to parse setting [{setting}] with value [{s}] as a time value: unit is missing or unrecognized"
            ),
        )
    };
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let ms = match unit {
        "nanos" => n / 1e6,
        "micros" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        "h" => n * 3600e3,
        "d" => n * 86_400e3,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(ms / 1e3).map_err(|_| bad())
}

fn parse_track_total(v: &Value) -> Result<TrackTotal> {
    match v {
        Value::Bool(true) => Ok(TrackTotal::Exact),
        Value::Bool(false) => Ok(TrackTotal::Off),
        Value::String(s) if s == "true" => Ok(TrackTotal::Exact),
        Value::String(s) if s == "false" => Ok(TrackTotal::Off),
        other => {
            let n = other
                .as_i64()
                .or_else(|| other.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| {
                    Error::illegal_argument(format!(
                        "[track_total_hits] must be a boolean or an integer, got [{other}]"
                    ))
                })?;
            if n < -1 {
                return Err(Error::illegal_argument(format!(
                    "[track_total_hits] parameter must be positive or equals to -1, got {n}"
                )));
            }
            Ok(if n == -1 {
                TrackTotal::Exact
            } else {
                TrackTotal::UpTo(n as u64)
            })
        }
    }
}

/// The URL `sort` parameter (`field:order,field`) as body sort entries.
pub fn sort_param(spec: &str) -> Vec<Value> {
    spec.split(',')
        .filter(|p| !p.is_empty())
        .map(|part| match part.rsplit_once(':') {
            Some((field, order)) => json!({field: order}),
            None => json!(part),
        })
        .collect()
}

fn parse_sort_entry(v: &Value, out: &mut Vec<SortKey>) -> Result<()> {
    let key = |field: &str, desc: Option<bool>| SortKey {
        kind: match field {
            "_score" => SortKind::Score,
            "_doc" => SortKind::Doc,
            "_index" => SortKind::Meta("_index"),
            "_id" => SortKind::Meta("_id"),
            f => SortKind::Field { path: f.to_string() },
        },
        desc: desc.unwrap_or(field == "_score"),
        missing: Missing::Last,
        unmapped_type: None,
    };
    let order = |v: &Value| -> Result<bool> {
        match v.as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("asc") => Ok(false),
            Some("desc") => Ok(true),
            _ => Err(Error::illegal_argument(format!(
                "No enum constant org.elasticsearch.search.sort.SortOrder.{}",
                v.as_str().map_or_else(|| v.to_string(), str::to_uppercase)
            ))),
        }
    };
    match v {
        Value::String(field) => out.push(key(field, None)),
        Value::Array(items) => {
            for item in items {
                parse_sort_entry(item, out)?;
            }
        }
        Value::Object(m) => {
            for (field, spec) in m {
                match spec {
                    Value::String(_) => out.push(key(field, Some(order(spec)?))),
                    Value::Object(opts) => {
                        let mut k = key(field, None);
                        for (name, value) in opts {
                            match name.as_str() {
                                "order" => {
                                    k.desc = order(value)
                                        .map_err(|e| Error::invalid_field("field_sort", "order", e))?
                                }
                                "missing" => {
                                    k.missing = match value.as_str() {
                                        Some("_last") => Missing::Last,
                                        Some("_first") => Missing::First,
                                        _ => Missing::Value(value.clone()),
                                    }
                                }
                                "unmapped_type" => k.unmapped_type = value.as_str().map(str::to_string),
                                "mode" | "numeric_type" | "format" => {}
                                other => {
                                    return Err(Error::parsing(format!(
                                        "[field_sort] unknown field [{other}]"
                                    )));
                                }
                            }
                        }
                        out.push(k);
                    }
                    _ => return Err(Error::parsing(format!("[sort] malformed entry for [{field}]"))),
                }
            }
        }
        _ => return Err(Error::parsing("[sort] must be a string, an object or an array")),
    }
    Ok(())
}

/// `indices_boost`: `[{"index": boost}, ...]`, or the older
/// `{"index": boost, ...}`.
fn parse_indices_boost(v: &Value) -> Result<Vec<(String, f32)>> {
    let entry = |(index, boost): (&String, &Value)| {
        boost
            .as_f64()
            .map(|b| (index.clone(), b as f32))
            .ok_or_else(|| Error::parsing(format!("[indices_boost] the boost of [{index}] must be a number")))
    };
    match v {
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let one = item
                    .as_object()
                    .filter(|m| m.len() == 1)
                    .and_then(|m| m.iter().next());
                one.map(entry).unwrap_or_else(|| {
                    Err(Error::parsing(
                        "[indices_boost] expects objects of one index and its boost",
                    ))
                })
            })
            .collect(),
        Value::Object(m) => m.iter().map(entry).collect(),
        _ => Err(Error::parsing("[indices_boost] must be an array")),
    }
}

/// `collapse`: the field whose values the hits are collapsed by.
fn parse_collapse(v: &Value) -> Result<String> {
    let m = v
        .as_object()
        .ok_or_else(|| Error::parsing("[collapse] must be an object"))?;
    let mut field = None;
    for (k, v) in m {
        match k.as_str() {
            "field" => {
                field = Some(
                    v.as_str()
                        .ok_or_else(|| Error::parsing("[collapse] [field] must be a string"))?
                        .to_string(),
                );
            }
            "max_concurrent_group_searches" => {}
            "inner_hits" => {
                return Err(Error::illegal_argument(
                    "[collapse] [inner_hits] are not supported: collapse returns the top hit of each group",
                ));
            }
            other => return Err(Error::parsing(format!("[collapse] unknown field [{other}]"))),
        }
    }
    field.ok_or_else(|| Error::parsing("Required [field]"))
}

fn parse_fields(v: &Value, doc_values: bool, out: &mut Vec<FieldRequest>) -> Result<()> {
    let items = v
        .as_array()
        .ok_or_else(|| Error::parsing("[fields] must be an array"))?;
    for item in items {
        out.push(match item {
            Value::String(s) => FieldRequest {
                pattern: s.clone(),
                format: None,
                doc_values,
            },
            Value::Object(m) => FieldRequest {
                pattern: m
                    .get("field")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::parsing("[fields] entries need a [field]"))?
                    .to_string(),
                format: m.get("format").and_then(Value::as_str).map(str::to_string),
                doc_values,
            },
            _ => return Err(Error::parsing("[fields] entries must be strings or objects")),
        });
    }
    Ok(())
}

impl SearchBody {
    /// Parses a search body and applies the URL parameters; `now_ms` is the
    /// request's `now`.
    pub fn parse(body: Option<&Value>, params: &Params, now_ms: i64) -> Result<SearchBody> {
        let mut s = SearchBody {
            query: None,
            post_filter: None,
            from: 0,
            size: 10,
            sort: vec![],
            source: SourceFilter::all(),
            track_total: TrackTotal::UpTo(DEFAULT_TRACK_TOTAL_HITS),
            search_after: None,
            aggs: None,
            fields: vec![],
            min_score: None,
            track_scores: false,
            timeout: None,
            explain_plan: false,
            allow_partial: true,
            ids: true,
            version: false,
            seq_no: false,
            highlight: None,
            collapse: None,
            indices_boost: vec![],
        };
        let empty = Map::new();
        let m = match body {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(Error::parsing(format!(
                    "Expected [START_OBJECT] but found [{}]",
                    token_name(other)
                )));
            }
        };
        for (key, v) in m {
            match key.as_str() {
                "query" | "post_filter" if !v.is_object() => {
                    return Err(Error::parsing(format!(
                        "Unknown key for a {} in [{key}].",
                        token_name(v)
                    )));
                }
                "query" => s.query = Some(v.clone()),
                "post_filter" => s.post_filter = Some(v.clone()),
                "from" => s.from = usize_param(v, "from")?,
                "size" => s.size = usize_param(v, "size")?,
                "sort" => parse_sort_entry(v, &mut s.sort)?,
                "_source" => s.source = SourceFilter::parse(v)?,
                "track_total_hits" => s.track_total = parse_track_total(v)?,
                "search_after" => {
                    s.search_after = Some(
                        v.as_array()
                            .ok_or_else(|| Error::parsing("[search_after] must be an array"))?
                            .clone(),
                    )
                }
                "aggs" | "aggregations" => s.aggs = Some(aggs::parse(v, now_ms)?),
                "highlight" => s.highlight = Some(highlight::parse(v)?),
                "fields" => parse_fields(v, false, &mut s.fields)?,
                "docvalue_fields" => parse_fields(v, true, &mut s.fields)?,
                "stored_fields" => {
                    let none = match v {
                        Value::String(x) => x == "_none_",
                        Value::Array(a) => a.iter().any(|x| x == "_none_"),
                        _ => false,
                    };
                    if none {
                        s.source.enabled = false;
                        s.ids = false;
                    }
                }
                "min_score" => {
                    let score = match v {
                        Value::Number(n) => n.as_f64(),
                        Value::String(t) => Some(t.parse::<f64>().map_err(|_| Error::number_format(t))?),
                        _ => None,
                    };
                    s.min_score =
                        Some(score.ok_or_else(|| {
                            Error::parsing(format!("[min_score] must be a number, got [{v}]"))
                        })? as f32)
                }
                "track_scores" => s.track_scores = v.as_bool().unwrap_or(false),
                "timeout" => {
                    s.timeout = Some(parse_time_value(
                        v.as_str()
                            .ok_or_else(|| Error::parsing("[timeout] must be a string"))?,
                        "timeout",
                    )?)
                }
                "version" => s.version = bool_value(v, "version")?,
                "seq_no_primary_term" => s.seq_no = bool_value(v, "seq_no_primary_term")?,
                "collapse" => s.collapse = Some(parse_collapse(v)?),
                "indices_boost" => s.indices_boost = parse_indices_boost(v)?,
                // Asked for, they would be missing from the answer.
                "explain" | "profile" => {
                    if bool_value(v, key)? {
                        return Err(Error::illegal_argument(format!(
                            "[{key}] is not supported: hits carry no score explanation or profile \
                             (explain_plan=true shows the plan a search runs)"
                        )));
                    }
                }
                other => {
                    return Err(Error::parsing(format!(
                        "Unknown key for a {} in [{other}].",
                        token_name(v)
                    )));
                }
            }
        }
        for (key, v) in params {
            let value = Value::String(v.clone());
            match key.as_str() {
                "q" => s.query = Some(url_query_string(v, params)),
                "from" => s.from = usize_param(&value, "from")?,
                "size" => s.size = usize_param(&value, "size")?,
                "sort" => {
                    s.sort.clear();
                    for entry in sort_param(v) {
                        parse_sort_entry(&entry, &mut s.sort)?;
                    }
                }
                "track_total_hits" => s.track_total = parse_track_total(&value)?,
                "timeout" => s.timeout = Some(parse_time_value(v, "timeout")?),
                "allow_partial_search_results" => {
                    s.allow_partial = match v.as_str() {
                        "true" | "" => true,
                        "false" => false,
                        other => {
                            return Err(Error::illegal_argument(format!(
                                "Failed to parse value [{other}] as only [true] or [false] are allowed."
                            )));
                        }
                    }
                }
                "explain_plan" => s.explain_plan = v != "false",
                "explain" if v == "true" => {
                    return Err(Error::illegal_argument(
                        "[explain] is not supported: hits carry no score explanation \
                         (explain_plan=true shows the plan a search runs)",
                    ));
                }
                _ => {}
            }
        }
        s.source = s.source.with_params(params);
        if s.from + s.size > MAX_RESULT_WINDOW {
            return Err(Error::illegal_argument(format!(
                "Result window is too large, from + size must be less than or equal to: [{MAX_RESULT_WINDOW}] but was [{}]. See the scroll api for a more efficient way to request large data sets. This limit can be set by changing the [index.max_result_window] index level setting.",
                s.from + s.size
            ))
            .on_shards());
        }
        if s.collapse.is_some() && s.search_after.is_some() {
            return Err(
                Error::illegal_argument("cannot use `collapse` in conjunction with `search_after`")
                    .on_shards(),
            );
        }
        if let Some(after) = &s.search_after {
            if s.from > 0 {
                return Err(Error::illegal_argument(
                    "`from` parameter must be set to 0 when `search_after` is used.",
                ));
            }
            let keys = if s.sort.is_empty() { 1 } else { s.sort.len() };
            if after.len() != keys {
                return Err(Error::illegal_argument(format!(
                    "search_after has {} value(s) but sort has {keys}.",
                    after.len()
                )));
            }
        }
        Ok(s)
    }

    /// Whether hits are ordered by relevance (the default sort).
    fn sorted_by_score(&self) -> bool {
        match self.sort.first() {
            None => true,
            Some(k) => matches!(k.kind, SortKind::Score),
        }
    }

    fn needs_score(&self) -> bool {
        self.sort.is_empty()
            || self.track_scores
            || self.min_score.is_some()
            || self.sort.iter().any(|k| matches!(k.kind, SortKind::Score))
    }
}

/// A plan with what it is for, for `explain_plan`.
struct NamedPlan {
    purpose: String,
    plan: LogicalPlan,
}

/// The plans of a search, ready to run.
struct Plans {
    hits: Option<LogicalPlan>,
    /// One count plan per index (summed).
    count: Vec<LogicalPlan>,
    /// `max(_score)` over all hits, when the page does not start at the top.
    max_score: Option<LogicalPlan>,
    aggs: Vec<aggs::AggPlan>,
}

impl Plans {
    fn named(&self) -> Vec<NamedPlan> {
        let named = |purpose: String, plan: &LogicalPlan| NamedPlan {
            purpose,
            plan: plan.clone(),
        };
        let mut out: Vec<NamedPlan> = self.hits.iter().map(|p| named("hits".into(), p)).collect();
        out.extend(self.count.iter().map(|p| named("total hits".into(), p)));
        out.extend(self.max_score.iter().map(|p| named("max_score".into(), p)));
        out.extend(
            self.aggs
                .iter()
                .map(|a| named(format!("aggregation {}", a.describe()), &a.plan)),
        );
        out
    }
}

/// A search over resolved indices.
struct Search<'a> {
    ctx: &'a SessionContext,
    targets: Vec<Target>,
    body: SearchBody,
    now_ms: i64,
    /// The `indices_boost` factor of each target that has one.
    boosts: HashMap<String, f32>,
    /// `search.max_buckets`, read when the body has aggregations.
    max_buckets: usize,
}

impl<'a> Search<'a> {
    fn new(
        ctx: &'a SessionContext,
        indices: &Indices,
        targets: Vec<Target>,
        body: SearchBody,
        now_ms: i64,
        bucket_limit: BucketLimit,
    ) -> Result<Search<'a>> {
        let mut boosts = HashMap::new();
        for (expr, boost) in &body.indices_boost {
            for index in indices.resolve(expr)? {
                boosts.entry(index.name()).or_insert(*boost);
            }
        }
        let max_buckets = match (bucket_limit, &body.aggs) {
            (BucketLimit::Cluster, Some(_)) => indices.max_buckets(),
            (BucketLimit::Cluster, None) => DEFAULT_MAX_BUCKETS,
            (BucketLimit::Caller, _) => usize::MAX,
        };
        Ok(Search {
            ctx,
            targets,
            body,
            now_ms,
            boosts,
            max_buckets,
        })
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Elasticsearch's `_shards` section for these indices: the shards left
/// out because their nodes cannot serve them have failed, each with its
/// index, node and reason, as has every shard of an index that did not open.
fn shards_json(targets: &[Target], failed: &[FailedIndex]) -> Value {
    let total: usize = targets
        .iter()
        .map(|t| t.table.index().num_shards() as usize)
        .chain(failed.iter().map(|f| f.num_shards() as usize))
        .sum();
    let failures = failures_json(targets, failed);
    let mut out = json!({
        "total": total,
        "successful": total - failures.len(),
        "skipped": 0,
        "failed": failures.len(),
    });
    if !failures.is_empty() {
        out["failures"] = Value::Array(failures);
    }
    out
}

/// The shards left out, as Elasticsearch reports shard failures.
fn failures_json(targets: &[Target], failed: &[FailedIndex]) -> Vec<Value> {
    let unreachable = targets.iter().flat_map(|t| {
        t.failures.iter().map(|f| {
            json!({
                "shard": f.shard,
                "index": t.name,
                "node": f.node,
                "reason": {"type": "node_not_connected_exception", "reason": f.reason},
            })
        })
    });
    let unopened = failed.iter().flat_map(|f| {
        (0..f.num_shards()).map(|shard| {
            json!({
                "shard": shard,
                "index": f.name,
                "node": null,
                "reason": {"type": "no_shard_available_action_exception", "reason": f.explanation()},
            })
        })
    });
    unreachable.chain(unopened).collect()
}

/// With `allow_partial_search_results=false`, the error of a search that
/// cannot read every shard.
fn missing_shards(targets: &[Target], failed: &[FailedIndex]) -> Option<Error> {
    let failures = failures_json(targets, failed);
    let missing: Vec<String> = failures
        .iter()
        .map(|f| format!("[{}][{}]", f["index"].as_str().unwrap_or_default(), f["shard"]))
        .collect();
    if missing.is_empty() {
        return None;
    }
    Some(
        Error::new(
            503,
            "search_phase_execution_exception",
            format!(
                "Search rejected due to missing shards [{}]. Consider using `allow_partial_search_results` setting to bypass this error.",
                missing.join(", ")
            ),
        )
        .with("phase", json!("query"))
        .with("grouped", json!(true))
        .with("failed_shards", Value::Array(failures)),
    )
}

/// Optimizer settings for the plans a search compiles to.
///
/// - A final aggregation runs in one partition: what reaches it is the
///   shards' partial states, one row per bucket and shard, which is merged
///   faster in place than hash-repartitioned across tasks first.
/// - The logical optimizer makes one pass. Over the scenario suite's
///   requests, the physical plans after one pass are those after three: later
///   passes only rename and fold projections, and cost as much again.
/// - It leaves out the rules for what these plans never hold (joins,
///   subqueries, `DISTINCT`), and common subexpression elimination, whose
///   projection of a column read by several aggregates the scan's partial
///   aggregate reads through anyway.
fn tune_session(ctx: &SessionContext) {
    {
        let state = ctx.state_ref();
        let mut state = state.write();
        let optimizer = &mut state.config_mut().options_mut().optimizer;
        optimizer.repartition_aggregations = false;
        optimizer.max_passes = 1;
    }
    for rule in UNUSED_RULES {
        ctx.remove_optimizer_rule(rule);
    }
}

/// Logical optimizer rules a search's plans have no use for.
const UNUSED_RULES: [&str; 12] = [
    "common_sub_expression_eliminate",
    "decorrelate_lateral_join",
    "decorrelate_predicate_subquery",
    "scalar_subquery_to_join",
    "rewrite_set_comparison",
    "eliminate_cross_join",
    "eliminate_join",
    "eliminate_outer_join",
    "extract_equijoin_predicate",
    "filter_null_join_keys",
    "replace_distinct_aggregate",
    "single_distinct_aggregation_to_group_by",
];

/// What bounds the buckets of a search's aggregations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketLimit {
    /// The cluster setting `search.max_buckets`, as for any `_search`.
    Cluster,
    /// The caller, whose request bounds its aggregations itself (as
    /// `_terms_enum`'s `size` bounds its one, which Elasticsearch does not
    /// hold to `search.max_buckets`).
    Caller,
}

/// Runs a search: `target` is an index expression (`a,b`, `logs-*`). The
/// optimizer settings of `ctx` are tuned for it (`tune_session`).
pub async fn search(
    ctx: &SessionContext,
    indices: &Indices,
    target: &str,
    body: Option<&Value>,
    params: &Params,
) -> Result<Value> {
    search_with(ctx, indices, target, body, params, BucketLimit::Cluster).await
}

/// [`search`] with its aggregations' buckets bounded by `bucket_limit`.
pub async fn search_with(
    ctx: &SessionContext,
    indices: &Indices,
    target: &str,
    body: Option<&Value>,
    params: &Params,
    bucket_limit: BucketLimit,
) -> Result<Value> {
    let started = Instant::now();
    let now = now_ms();
    let body = SearchBody::parse(body, params, now)?;
    let (targets, failed) = resolve_partial(indices, target, params)?;
    if !body.allow_partial
        && let Some(err) = missing_shards(&targets, &failed)
    {
        return Err(err);
    }
    tune_session(ctx);
    let search = Search::new(ctx, indices, targets, body, now, bucket_limit)?;
    let plans = search.plans()?;
    if search.body.explain_plan {
        return explain(ctx, &plans).await;
    }
    // A shard's failure names its index when the search has one.
    let named = |e: Error| match search.targets.as_slice() {
        [only] => e.in_index(&only.name),
        _ => e,
    };
    let run = search.run(&plans);
    let (hits, aggregations) = match search.body.timeout {
        Some(limit) => match tokio::time::timeout(limit, run).await {
            Ok(r) => r.map_err(named)?,
            Err(_) => {
                return Ok(json!({
                    "took": started.elapsed().as_millis() as u64,
                    "timed_out": true,
                    "_shards": shards_json(&search.targets, &failed),
                    "hits": {"total": {"value": 0, "relation": "gte"}, "max_score": null, "hits": []},
                }));
            }
        },
        None => run.await.map_err(named)?,
    };
    let mut out = json!({
        "took": started.elapsed().as_millis() as u64,
        "timed_out": false,
        "_shards": shards_json(&search.targets, &failed),
        "hits": hits,
    });
    if let Some(a) = aggregations {
        out["aggregations"] = a;
    }
    Ok(out)
}

/// The page of hits a search body selects, as rows: `_index`, `_id`,
/// `_score` (null when the sort does not score) and one column per field the
/// body's `fields` names, typed as the mapping types it. The plan streams, so
/// callers such as Flight tickets never hold more than a batch.
pub fn hits_rows(
    ctx: &SessionContext,
    indices: &Indices,
    target: &str,
    body: Option<&Value>,
    params: &Params,
) -> Result<LogicalPlan> {
    let now = now_ms();
    let body = SearchBody::parse(body, params, now)?;
    if body.aggs.is_some() {
        return Err(Error::illegal_argument(
            "aggregations are not returned as rows: run them through _search",
        ));
    }
    let targets = resolve(indices, target)?;
    if targets.is_empty() {
        return Err(Error::illegal_argument(format!("no index matches [{target}]")));
    }
    let search = Search::new(ctx, indices, targets, body, now, BucketLimit::Cluster)?;
    search.check_sort()?;
    search.check_collapse()?;
    let scoring = search.body.needs_score();
    let hits = LogicalPlanBuilder::from(search.hits_plan(scoring)?);
    let mut exprs = vec![ident("_index"), ident("_id")];
    exprs.push(if scoring {
        ident("_score")
    } else {
        cast(lit(ScalarValue::Null), DataType::Float32).alias("_score")
    });
    for f in search.field_columns() {
        exprs.push(col(f.alias).alias(f.path));
    }
    Ok(hits.project(exprs)?.build()?)
}

/// The `query_string` query of a URL's `q`, with its `df`,
/// `default_operator` and `lenient`.
fn url_query_string(q: &str, params: &Params) -> Value {
    let mut qs = json!({"query": q});
    for (param, key) in [
        ("df", "default_field"),
        ("default_operator", "default_operator"),
        ("lenient", "lenient"),
    ] {
        if let Some(v) = params.get(param) {
            qs[key] = json!(v);
        }
    }
    json!({"query_string": qs})
}

/// A `_count` or `_validate/query` request: its query (the body's
/// `query`, or the URL's `q`), the indices it reads and those left out,
/// and its `now`.
struct QueryRequest {
    query: Option<Value>,
    targets: Vec<Target>,
    failed: Vec<FailedIndex>,
    now_ms: i64,
}

impl QueryRequest {
    fn new(indices: &Indices, target: &str, body: Option<&Value>, params: &Params) -> Result<QueryRequest> {
        let mut query = None;
        if let Some(Value::Object(m)) = body {
            for (k, v) in m {
                match k.as_str() {
                    "query" => query = Some(v.clone()),
                    other => {
                        return Err(Error::parsing(format!("request does not support [{other}]")));
                    }
                }
            }
        }
        if let Some(q) = params.get("q") {
            query = Some(url_query_string(q, params));
        }
        let (targets, failed) = resolve_partial(indices, target, params)?;
        Ok(QueryRequest {
            query,
            targets,
            failed,
            now_ms: now_ms(),
        })
    }

    /// The query as target `t` runs it.
    fn lower(&self, t: &Target) -> Result<LeafQuery> {
        let ctx = QueryContext {
            index: &t.name,
            mapping: t.mapping(),
            now_ms: self.now_ms,
        };
        lower_opt(self.query.as_ref(), &ctx)
    }
}

/// `_validate/query`: whether the query is one every target index runs (it
/// is lowered for each and counted, so that what only a shard finds wrong
/// counts too), and with `explain` what it runs as in each.
pub async fn validate(
    ctx: &SessionContext,
    indices: &Indices,
    target: &str,
    body: Option<&Value>,
    params: &Params,
) -> Result<Value> {
    let req = QueryRequest::new(indices, target, body, params)?;
    let explain = params.get("explain").is_some_and(|v| v != "false");
    let mut explanations = Vec::new();
    for t in &req.targets {
        let checked = async {
            let q = req.lower(t)?;
            run_counts(ctx, &[count_plan(t, &q, None)?], std::slice::from_ref(t)).await?;
            Ok::<_, Error>(q.describe())
        }
        .await;
        explanations.push(match checked {
            Ok(explanation) => json!({"index": t.name, "valid": true, "explanation": explanation}),
            Err(e) => {
                json!({"index": t.name, "valid": false, "error": format!("[{}] {}", e.es_type, e.reason)})
            }
        });
    }
    let valid = explanations.iter().all(|e| e["valid"] == json!(true));
    let mut out = json!({"_shards": shards_json(&req.targets, &req.failed), "valid": valid});
    if explain {
        out["explanations"] = Value::Array(explanations);
    }
    Ok(out)
}

/// `_count`: the number of documents matching the query.
pub async fn count(
    ctx: &SessionContext,
    indices: &Indices,
    target: &str,
    body: Option<&Value>,
    params: &Params,
) -> Result<Value> {
    let req = QueryRequest::new(indices, target, body, params)?;
    let plans = req
        .targets
        .iter()
        .map(|t| count_plan(t, &req.lower(t)?, None))
        .collect::<Result<Vec<_>>>()?;
    let total = run_counts(ctx, &plans, &req.targets).await?;
    Ok(json!({"count": total, "_shards": shards_json(&req.targets, &req.failed)}))
}

fn count_plan(target: &Target, query: &LeafQuery, min_score: Option<f32>) -> Result<LogicalPlan> {
    let mut b = filtered_scan(target, query)?;
    if let Some(min) = min_score {
        b = b.filter(ident("_score").gt_eq(lit(min)))?;
    }
    Ok(b.aggregate(
        Vec::<Expr>::new(),
        vec![datafusion::functions_aggregate::count::count_all()],
    )?
    .build()?)
}

async fn collect(ctx: &SessionContext, plan: &LogicalPlan) -> Result<Vec<RecordBatch>> {
    let df = ctx.execute_logical_plan(plan.clone()).await?;
    Ok(df.collect().await?)
}

/// Runs the count plans of `targets` (one each, in order) and sums them; a
/// shard's failure names its index.
async fn run_counts(ctx: &SessionContext, plans: &[LogicalPlan], targets: &[Target]) -> Result<u64> {
    let results = try_join_all(plans.iter().enumerate().map(|(i, p)| async move {
        collect(ctx, p).await.map_err(|e| match targets.get(i) {
            Some(t) => e.in_index(&t.name),
            None => e,
        })
    }))
    .await?;
    let mut total = 0u64;
    for batches in results {
        for b in batches {
            if b.num_rows() > 0 {
                total += json_at(b.column(0).as_ref(), 0)?.as_u64().unwrap_or(0);
            }
        }
    }
    Ok(total)
}

async fn explain(ctx: &SessionContext, plans: &Plans) -> Result<Value> {
    let mut out = Vec::new();
    for named in plans.named() {
        let optimized = ctx.state().optimize(&named.plan)?;
        let physical = ctx.state().create_physical_plan(&named.plan).await?;
        out.push(json!({
            "purpose": named.purpose,
            "logical_plan": optimized.display_indent().to_string(),
            "physical_plan": quidditch_executor::display_physical(physical.as_ref()),
        }));
    }
    Ok(json!({"plans": out}))
}

/// A resolved `fields` entry.
#[derive(Debug, Clone)]
struct FieldColumn {
    path: String,
    alias: String,
    ty: FieldType,
    format: Option<String>,
    doc_values: bool,
}

impl Search<'_> {
    fn query_ctx<'t>(&self, target: &'t Target) -> QueryContext<'t> {
        QueryContext {
            index: &target.name,
            mapping: target.mapping(),
            now_ms: self.now_ms,
        }
    }

    /// The query of the hits for one index: `query`, and `post_filter`
    /// as a non-scoring filter.
    fn hits_query(&self, target: &Target) -> Result<LeafQuery> {
        self.hits_query_of(target).map_err(|e| e.in_index(&target.name))
    }

    fn hits_query_of(&self, target: &Target) -> Result<LeafQuery> {
        let ctx = self.query_ctx(target);
        let mut q = lower_opt(self.body.query.as_ref(), &ctx)?;
        if let Some(&boost) = self.boosts.get(&target.name) {
            q = LeafQuery::Boost {
                query: Box::new(q),
                boost,
            };
        }
        Ok(match &self.body.post_filter {
            None => q,
            Some(pf) => {
                let pf = lower(pf, &ctx)?;
                LeafQuery::Bool {
                    must: vec![q],
                    should: vec![],
                    must_not: vec![],
                    filter: vec![pf],
                    minimum_should_match: None,
                }
            }
        })
    }

    fn field_type(&self, path: &str) -> Option<FieldType> {
        field_type(&self.targets, path)
    }

    /// The collapse field must be mapped, and a keyword, number or date.
    fn check_collapse(&self) -> Result<()> {
        let Some(field) = &self.body.collapse else {
            return Ok(());
        };
        match self.field_type(field) {
            None if self.targets.is_empty() => Ok(()),
            None => Err(Error::illegal_argument(format!(
                "no mapping found for `{field}` in order to collapse on"
            ))
            .on_shards()),
            Some(ty @ (FieldType::Text | FieldType::Boolean | FieldType::Ip)) => {
                Err(Error::illegal_argument(format!(
                    "collapse is not supported for the field [{field}] of the type [{}]",
                    ty.name()
                ))
                .on_shards())
            }
            Some(_) => Ok(()),
        }
    }

    /// The columns of `fields` and `docvalue_fields`, and of the collapse
    /// field (which every collapsed hit reports under `fields`).
    fn field_columns(&self) -> Vec<FieldColumn> {
        let mut out: Vec<FieldColumn> = Vec::new();
        if let Some(path) = &self.body.collapse
            && let Some(ty) = self.field_type(path)
        {
            out.push(FieldColumn {
                alias: "__collapse".into(),
                path: path.clone(),
                ty,
                format: None,
                doc_values: false,
            });
        }
        for req in &self.body.fields {
            let mut paths: Vec<String> = Vec::new();
            for t in &self.targets {
                for c in t.mapping().columns() {
                    if pattern_matches(&req.pattern, &c.path) && !paths.contains(&c.path) {
                        paths.push(c.path);
                    }
                }
            }
            paths.sort();
            for path in paths {
                if out.iter().any(|f| f.path == path) {
                    continue;
                }
                let Some(ty) = self.field_type(&path) else {
                    continue;
                };
                out.push(FieldColumn {
                    alias: format!("__field{}", out.len()),
                    path,
                    ty,
                    format: req.format.clone(),
                    doc_values: req.doc_values,
                });
            }
        }
        out
    }

    fn check_sort(&self) -> Result<()> {
        for key in &self.body.sort {
            let SortKind::Field { path } = &key.kind else {
                continue;
            };
            match self.field_type(path) {
                None if key.unmapped_type.is_none() => {
                    let index = self.targets.first().map_or("_all", |t| t.name.as_str());
                    return Err(Error::new(
                        400,
                        "query_shard_exception",
                        format!("No mapping found for [{path}] in order to sort on"),
                    )
                    .on_shards()
                    .in_index(index));
                }
                Some(FieldType::Text) => {
                    return Err(Error::illegal_argument(format!(
                        "Text fields are not optimised for operations that require per-document field data like aggregations and sorting, so these operations are disabled by default. Please use a keyword field instead. Alternatively, set fielddata=true on [{path}] in order to load field data by uninverting the inverted index. Note that this can use significant memory."
                    ))
                    .on_shards());
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn plans(&self) -> Result<Plans> {
        self.check_sort()?;
        self.check_collapse()?;
        let aggs = match &self.body.aggs {
            Some(tree) => aggs::plan(
                tree,
                &self.targets,
                &|t: &Target| {
                    lower_opt(self.body.query.as_ref(), &self.query_ctx(t)).map_err(|e| e.in_index(&t.name))
                },
                self.now_ms,
            )?,
            None => vec![],
        };
        if self.targets.is_empty() {
            return Ok(Plans {
                hits: None,
                count: vec![],
                max_score: None,
                aggs,
            });
        }
        let scoring = self.body.needs_score();
        let hits = if self.body.size > 0 {
            Some(self.hits_plan(scoring)?)
        } else {
            None
        };
        let min_score = self.body.min_score;
        let count = if self.body.track_total == TrackTotal::Off {
            vec![]
        } else {
            self.targets
                .iter()
                .map(|t| count_plan(t, &self.hits_query(t)?, min_score))
                .collect::<Result<Vec<_>>>()?
        };
        let max_score =
            if self.body.sorted_by_score() && self.body.from > 0 && self.body.search_after.is_none() {
                let builder =
                    union_source(&self.targets, &|t| self.hits_query(t), &[Output::Meta("_score")])?;
                Some(
                    builder
                        .aggregate(Vec::<Expr>::new(), vec![max(ident("_score"))])?
                        .build()?,
                )
            } else {
                None
            };
        Ok(Plans {
            hits,
            count,
            max_score,
            aggs,
        })
    }

    fn sort_alias(i: usize) -> String {
        format!("__sort{i}")
    }

    fn hits_plan(&self, scoring: bool) -> Result<LogicalPlan> {
        let mut outputs = vec![Output::Index, Output::Meta("_id")];
        if scoring {
            outputs.push(Output::Meta("_score"));
        }
        if self.body.version {
            outputs.push(Output::Meta("_version"));
        }
        if self.body.seq_no {
            outputs.push(Output::Meta("_seq_no"));
        }
        if self.body.source.enabled || self.body.highlight.is_some() {
            outputs.push(Output::Meta("_source"));
        }
        for (i, key) in self.body.sort.iter().enumerate() {
            if let SortKind::Field { path } = &key.kind {
                outputs.push(Output::Field {
                    path: path.clone(),
                    alias: Self::sort_alias(i),
                    reduce: Some(key.desc),
                });
            }
        }
        for f in self.field_columns() {
            outputs.push(Output::Field {
                path: f.path,
                alias: f.alias,
                reduce: None,
            });
        }
        let mut builder = union_source(&self.targets, &|t| self.hits_query(t), &outputs)?;
        if let Some(min) = self.body.min_score {
            builder = builder.filter(ident("_score").gt_eq(lit(min)))?;
        }
        let keys: Vec<(Expr, bool, bool)> = if self.body.sort.is_empty() {
            vec![(ident("_score"), true, true)]
        } else {
            self.body
                .sort
                .iter()
                .enumerate()
                .filter_map(|(i, k)| {
                    let nulls_first = k.missing == Missing::First;
                    match &k.kind {
                        // Scores are never null; nulls-first descending is
                        // the order the scans' top-k declares.
                        SortKind::Score => Some((ident("_score"), k.desc, k.desc)),
                        SortKind::Doc => None,
                        SortKind::Meta(name) => Some((ident(*name), k.desc, nulls_first)),
                        SortKind::Field { path } => {
                            let mut e = col(Self::sort_alias(i));
                            if let Missing::Value(v) = &k.missing {
                                e = datafusion::functions::expr_fn::coalesce(vec![
                                    e,
                                    self.literal_for(path, v),
                                ]);
                            } else if self.body.search_after.is_some() {
                                // Paging past documents without the field
                                // compares the sort value hits report for them.
                                e = self.missing_sentinel(path, e, k.desc, &k.missing);
                            }
                            Some((e, k.desc, nulls_first))
                        }
                    }
                })
                .collect()
        };
        if let Some(after) = &self.body.search_after {
            if keys.is_empty() {
                return Err(Error::illegal_argument(
                    "search_after needs a sort key other than [_doc]: sort on a field, or scroll",
                ));
            }
            // `keys` leaves `_doc` out: line the values and types up with it.
            let (after, types): (Vec<Value>, Vec<Option<DataType>>) = if self.body.sort.is_empty() {
                (after.clone(), vec![None])
            } else {
                self.body
                    .sort
                    .iter()
                    .zip(after)
                    .enumerate()
                    .filter(|(_, (k, _))| !matches!(k.kind, SortKind::Doc))
                    .map(|(i, (_, v))| (v.clone(), self.sort_key_type(i)))
                    .unzip()
            };
            builder = builder.filter(search_after_predicate(&keys, &after, |i| {
                types.get(i).cloned().flatten()
            })?)?;
        }
        let order: Vec<SortExpr> = keys
            .iter()
            .map(|(e, desc, nf)| e.clone().sort(!desc, *nf))
            .collect();
        if self.body.collapse.is_some() {
            // The first hit of each value of the collapse field, in the
            // order of the hits.
            let rank = row_number()
                .partition_by(vec![col("__collapse")])
                .order_by(order.clone())
                .build()?
                .alias("__collapse_rank");
            builder = builder
                .window(vec![rank])?
                .filter(col("__collapse_rank").eq(lit(1u64)))?;
        }
        if !order.is_empty() {
            builder = builder.sort(order)?;
        }
        Ok(builder.limit(self.body.from, Some(self.body.size))?.build()?)
    }

    fn sort_key_type(&self, i: usize) -> Option<DataType> {
        match &self.body.sort.get(i)?.kind {
            SortKind::Field { path } => common_type(&self.targets, path),
            _ => None,
        }
    }

    fn literal_for(&self, path: &str, v: &Value) -> Expr {
        let ty = common_type(&self.targets, path);
        let l = json_literal(v);
        match ty {
            Some(t) => cast(l, t),
            None => l,
        }
    }

    async fn run(&self, plans: &Plans) -> Result<(Value, Option<Value>)> {
        let hits_fut = async {
            match &plans.hits {
                Some(p) => collect(self.ctx, p).await,
                None => Ok(vec![]),
            }
        };
        let max_fut = async {
            match &plans.max_score {
                Some(p) => collect(self.ctx, p).await.map(Some),
                None => Ok(None),
            }
        };
        let aggs_fut = aggs::run(self.ctx, &plans.aggs);
        let (hits, total, max_score, agg_results) = futures::try_join!(
            hits_fut,
            run_counts(self.ctx, &plans.count, &self.targets),
            max_fut,
            aggs_fut
        )?;
        let hits_json = self.render_hits(&hits, total, max_score)?;
        let aggregations = match &self.body.aggs {
            Some(tree) => Some(aggs::render(tree, &agg_results, &self.targets, self.max_buckets)?),
            None => None,
        };
        Ok((hits_json, aggregations))
    }

    fn render_hits(
        &self,
        batches: &[RecordBatch],
        total: u64,
        max_batches: Option<Vec<RecordBatch>>,
    ) -> Result<Value> {
        let fields = self.field_columns();
        // Date fields' formatters, parsed once for all hits.
        let formatters = fields
            .iter()
            .map(|f| {
                (f.ty == FieldType::Date)
                    .then(|| date_formatter(&self.targets, &f.path, f.format.as_deref()))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let highlight = match &self.body.highlight {
            Some(h) => Some(h.prepare(
                &self.targets,
                &|t| lower_opt(self.body.query.as_ref(), &self.query_ctx(t)).map_err(|e| e.in_index(&t.name)),
                self.now_ms,
            )?),
            None => None,
        };
        let scoring = self.body.needs_score();
        let mut hits = Vec::new();
        let mut top_score: Option<f64> = None;
        let mut position = self.body.from;
        for batch in batches {
            let column = |name: &str| batch.column_by_name(name);
            for row in 0..batch.num_rows() {
                let mut hit = Map::new();
                let get = |name: &str| -> Result<Value> {
                    match column(name) {
                        Some(c) => json_at(c.as_ref(), row),
                        None => Ok(Value::Null),
                    }
                };
                hit.insert("_index".into(), get("_index")?);
                if self.body.ids {
                    hit.insert("_id".into(), get("_id")?);
                }
                if self.body.version {
                    hit.insert("_version".into(), get("_version")?);
                }
                if self.body.seq_no {
                    hit.insert("_seq_no".into(), get("_seq_no")?);
                    hit.insert(
                        "_primary_term".into(),
                        json!(quidditch_index::index::PRIMARY_TERM),
                    );
                }
                let score = if scoring
                    && (self.body.sorted_by_score()
                        || self.body.track_scores
                        || self.body.sort.iter().any(|k| matches!(k.kind, SortKind::Score)))
                {
                    get("_score")?
                } else {
                    Value::Null
                };
                if let Some(s) = score.as_f64() {
                    top_score = Some(top_score.map_or(s, |t: f64| t.max(s)));
                }
                hit.insert("_score".into(), score.clone());
                if let Some(text) = get("_source")?.as_str() {
                    let source: Value = serde_json::from_str(text)
                        .map_err(|e| Error::internal(format!("stored _source is not JSON: {e}")))?;
                    if let Some(filtered) = self.body.source.apply(&source) {
                        hit.insert("_source".into(), filtered);
                    }
                    let index = hit["_index"].as_str().unwrap_or_default();
                    if let Some(marked) = highlight
                        .as_ref()
                        .map(|h| h.hit(index, &source))
                        .transpose()?
                        .flatten()
                    {
                        hit.insert("highlight".into(), marked);
                    }
                }
                if !fields.is_empty() {
                    let mut out = Map::new();
                    for (f, formatter) in fields.iter().zip(&formatters) {
                        let v = get(&f.alias)?;
                        let mut values: Vec<Value> = match v {
                            // The group of the hits without a value of the
                            // collapse field reports it as null.
                            Value::Null if self.body.collapse.as_ref() == Some(&f.path) => {
                                out.insert(f.path.clone(), json!([null]));
                                continue;
                            }
                            Value::Null => continue,
                            Value::Array(items) => items,
                            other => vec![other],
                        };
                        if f.doc_values {
                            values.sort_by(|a, b| match (a.as_f64(), b.as_f64()) {
                                (Some(x), Some(y)) => x.total_cmp(&y),
                                _ => a.as_str().cmp(&b.as_str()),
                            });
                            values.dedup();
                        }
                        let values = match formatter {
                            Some(fmt) => values
                                .into_iter()
                                .map(|v| {
                                    v.as_i64()
                                        .map_or(v.clone(), |ms| json!(fmt.format(ms, &TimeZone::utc())))
                                })
                                .collect(),
                            None => values,
                        };
                        if !values.is_empty() {
                            out.insert(f.path.clone(), Value::Array(values));
                        }
                    }
                    if !out.is_empty() {
                        hit.insert("fields".into(), Value::Object(out));
                    }
                }
                if !self.body.sort.is_empty() {
                    let mut sort_values = Vec::new();
                    for (i, key) in self.body.sort.iter().enumerate() {
                        sort_values.push(match &key.kind {
                            SortKind::Score => score.clone(),
                            SortKind::Doc => json!(position),
                            SortKind::Meta(name) => get(name)?,
                            SortKind::Field { path } => {
                                let v = get(&Self::sort_alias(i))?;
                                match (&v, &key.missing) {
                                    (Value::Null, Missing::Value(m)) => m.clone(),
                                    (Value::Null, missing) => {
                                        self.missing_sort_value(path, key.desc, missing)
                                    }
                                    _ => v,
                                }
                            }
                        });
                    }
                    hit.insert("sort".into(), Value::Array(sort_values));
                }
                position += 1;
                hits.push(Value::Object(hit));
            }
        }
        let max_score = if !self.body.sorted_by_score() && !self.body.track_scores {
            Value::Null
        } else if let Some(batches) = max_batches {
            batches
                .iter()
                .find(|b| b.num_rows() > 0)
                .map(|b| json_at(b.column(0).as_ref(), 0))
                .transpose()?
                .unwrap_or(Value::Null)
        } else {
            top_score.map_or(Value::Null, float_json)
        };
        let mut out = Map::new();
        match self.body.track_total {
            TrackTotal::Off => {}
            TrackTotal::Exact => {
                out.insert("total".into(), json!({"value": total, "relation": "eq"}));
            }
            TrackTotal::UpTo(limit) => {
                out.insert(
                    "total".into(),
                    if total > limit {
                        json!({"value": limit, "relation": "gte"})
                    } else {
                        json!({"value": total, "relation": "eq"})
                    },
                );
            }
        }
        out.insert("max_score".into(), max_score);
        out.insert("hits".into(), Value::Array(hits));
        Ok(Value::Object(out))
    }

    /// A numeric or date sort key with missing values replaced by the sort
    /// value hits report for them (`i64::MAX`, `Infinity`, ...); other keys
    /// unchanged.
    fn missing_sentinel(&self, path: &str, e: Expr, desc: bool, missing: &Missing) -> Expr {
        let high = (missing == &Missing::Last) != desc;
        let coalesce = datafusion::functions::expr_fn::coalesce;
        match self.field_type(path) {
            Some(
                FieldType::Long | FieldType::Integer | FieldType::Short | FieldType::Byte | FieldType::Date,
            ) => coalesce(vec![
                cast(e, DataType::Int64),
                lit(if high { i64::MAX } else { i64::MIN }),
            ]),
            Some(FieldType::Double | FieldType::Float | FieldType::ScaledFloat) => coalesce(vec![
                cast(e, DataType::Float64),
                lit(if high { f64::INFINITY } else { f64::NEG_INFINITY }),
            ]),
            _ => e,
        }
    }

    /// The sort value Elasticsearch reports for a document without the field.
    fn missing_sort_value(&self, path: &str, desc: bool, missing: &Missing) -> Value {
        let high = (missing == &Missing::Last) != desc;
        match self.field_type(path) {
            Some(
                FieldType::Long | FieldType::Integer | FieldType::Short | FieldType::Byte | FieldType::Date,
            ) => json!(if high { i64::MAX } else { i64::MIN }),
            Some(FieldType::Double | FieldType::Float | FieldType::ScaledFloat) => {
                json!(if high { "Infinity" } else { "-Infinity" })
            }
            _ => Value::Null,
        }
    }
}

/// Rows strictly after `after` in the sort order. A key may be NULL (a
/// document without a keyword sort field): NULLs sort first or last as the
/// key says, and a NULL sort value pages past them too.
fn search_after_predicate(
    keys: &[(Expr, bool, bool)],
    after: &[Value],
    key_type: impl Fn(usize) -> Option<DataType>,
) -> Result<Expr> {
    let mut disjuncts = Vec::new();
    for i in 0..keys.len().min(after.len()) {
        let mut conj = Vec::new();
        for (j, (e, _, _)) in keys.iter().enumerate().take(i) {
            let e = comparable(e.clone(), &key_type(j));
            conj.push(match &after[j] {
                Value::Null => e.is_null(),
                v => e.eq(json_literal(v)),
            });
        }
        let (e, desc, nulls_first) = &keys[i];
        let e = comparable(e.clone(), &key_type(i));
        let past = match &after[i] {
            // Every value sorts after the NULLs that come first.
            Value::Null if *nulls_first => e.is_not_null(),
            // Nothing sorts after the NULLs that come last.
            Value::Null => continue,
            v => {
                let v = json_literal(v);
                let cmp = if *desc { e.clone().lt(v) } else { e.clone().gt(v) };
                if *nulls_first { cmp } else { or(cmp, e.is_null()) }
            }
        };
        conj.push(past);
        disjuncts.push(conj.into_iter().reduce(and).unwrap_or(lit(true)));
    }
    Ok(disjuncts.into_iter().reduce(or).unwrap_or(lit(false)))
}

/// Timestamps compare with epoch-millisecond sort values.
fn comparable(e: Expr, ty: &Option<DataType>) -> Expr {
    match ty {
        Some(DataType::Timestamp(..)) => cast(e, DataType::Int64),
        _ => e,
    }
}

/// Whether `path` matches a field pattern where `*` stands for any text
/// (no regex is compiled: `_source` filtering runs this per hit and key).
pub(crate) fn pattern_matches(pattern: &str, path: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = path.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether `path` or something under it is selected by a pattern.
fn included(patterns: &[String], path: &str, leaf: bool) -> bool {
    patterns.iter().any(|p| {
        pattern_matches(p, path)
            || path.starts_with(&format!("{p}."))
            || (!leaf && (p.starts_with(&format!("{path}.")) || p.contains('*')))
    })
}

/// `_source` with `includes` / `excludes` applied, as Elasticsearch does.
fn filter_source(source: &Value, filter: &SourceFilter) -> Value {
    if filter.includes.is_empty() && filter.excludes.is_empty() {
        return source.clone();
    }
    fn walk(v: &Value, prefix: &str, f: &SourceFilter) -> Option<Value> {
        let Value::Object(m) = v else {
            return Some(v.clone());
        };
        let mut out = Map::new();
        for (k, child) in m {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            let leaf = !child.is_object();
            if f.excludes.iter().any(|p| pattern_matches(p, &path)) {
                continue;
            }
            if !f.includes.is_empty() && !included(&f.includes, &path, leaf) {
                continue;
            }
            let full = f.includes.is_empty()
                || f.includes
                    .iter()
                    .any(|p| pattern_matches(p, &path) || path.starts_with(&format!("{p}.")));
            if leaf {
                out.insert(k.clone(), child.clone());
            } else {
                let sub = if full && f.excludes.is_empty() {
                    Some(child.clone())
                } else if full {
                    walk(
                        child,
                        &path,
                        &SourceFilter {
                            enabled: true,
                            includes: vec![],
                            excludes: f.excludes.clone(),
                        },
                    )
                } else {
                    walk(child, &path, f)
                };
                if let Some(sub) = sub
                    && (full || sub.as_object().is_some_and(|o| !o.is_empty()))
                {
                    out.insert(k.clone(), sub);
                }
            }
        }
        Some(Value::Object(out))
    }
    walk(source, "", filter).unwrap_or_else(|| json!({}))
}

/// `_msearch`: NDJSON header/body pairs; each answered on its own.
pub async fn msearch(
    ctx: &SessionContext,
    indices: &Indices,
    default_target: Option<&str>,
    lines: &[Value],
) -> Result<Value> {
    let started = Instant::now();
    if !lines.len().is_multiple_of(2) {
        return Err(Error::illegal_argument(
            "The msearch request must be terminated by a newline [\n]",
        ));
    }
    let mut responses = Vec::new();
    for pair in lines.chunks(2) {
        let (header, body) = (&pair[0], &pair[1]);
        let header = header
            .as_object()
            .ok_or_else(|| Error::illegal_argument("msearch header must be an object"))?;
        let mut params = Params::new();
        let mut target = default_target.map(str::to_string);
        for (k, v) in header {
            match k.as_str() {
                "index" => {
                    target = Some(match v {
                        Value::String(s) => s.clone(),
                        Value::Array(a) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
                        _ => {
                            return Err(Error::illegal_argument(
                                "[index] in msearch header must be a string or an array",
                            ));
                        }
                    })
                }
                "search_type"
                | "preference"
                | "routing"
                | "request_cache"
                | "allow_no_indices"
                | "expand_wildcards"
                | "ccs_minimize_roundtrips" => {}
                "allow_partial_search_results" | "ignore_unavailable" => {
                    params.insert(
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    );
                }
                other => {
                    return Err(Error::illegal_argument(format!(
                        "key [{other}] is not supported in the metadata section"
                    )));
                }
            }
        }
        let target = target.unwrap_or_else(|| "_all".into());
        let item = match search(ctx, indices, &target, Some(body), &params).await {
            Ok(mut r) => {
                r["status"] = json!(200);
                r
            }
            Err(e) => json!({"error": e.to_json(), "status": e.status}),
        };
        responses.push(item);
    }
    Ok(json!({"took": started.elapsed().as_millis() as u64, "responses": responses}))
}

#[cfg(test)]
mod tests {
    use super::pattern_matches;

    #[test]
    fn field_patterns() {
        assert!(pattern_matches("name", "name"));
        assert!(!pattern_matches("name", "name.keyword"));
        assert!(pattern_matches("name*", "name.keyword"));
        assert!(pattern_matches("*", "a.b"));
        assert!(pattern_matches("*.keyword", "name.keyword"));
        assert!(pattern_matches("a*b*c", "aXbYc"));
        assert!(!pattern_matches("a*b*c", "aXcYb"));
        assert!(!pattern_matches("ab*ba", "aba"));
    }
}
