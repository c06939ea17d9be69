//! The rows a DSL request reads: the scans of its target indices, each
//! filtered by the query lowered for that index, projected to common columns
//! and unioned.

use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, cast, lit};
use datafusion::prelude::ident;
use quidditch_index::Indices;
use quidditch_index::fulltext::search_query_expr;
use quidditch_index::index::{Index, ShardFailure};
use quidditch_index::indices::FailedIndex;
use quidditch_index::mapping::{FieldType, Mapping};
use quidditch_index::query::LeafQuery;
use quidditch_index::table::IndexTable;
use serde_json::{Value, json};

use crate::dates::DateFormatter;
use crate::error::{Error, Result};
use crate::search::Params;

/// The metadata field naming each document's index.
pub(crate) const INDEX_FIELD: &str = "_index";

/// One index a request reads, with the mapping its table was made with.
#[derive(Debug, Clone)]
pub struct Target {
    /// Index name.
    pub name: String,
    /// Table over the index (over the shards that can be read now).
    pub table: Arc<IndexTable>,
    /// The shards left out: their nodes cannot serve them.
    pub failures: Vec<ShardFailure>,
}

impl Target {
    /// The mapping of the table.
    pub fn mapping(&self) -> &Mapping {
        self.table.mapping()
    }

    /// Arrow type of a column of this index, if it has it.
    pub fn column_type(&self, name: &str) -> Option<DataType> {
        let schema = datafusion::datasource::TableProvider::schema(self.table.as_ref());
        schema.field_with_name(name).ok().map(|f| f.data_type().clone())
    }

    /// Arrow type of a field aggregations and sort keys read (through
    /// [`common_type`]): a column, or `_index` (the index name, alike in
    /// every row).
    pub fn field_type(&self, path: &str) -> Option<DataType> {
        if path == INDEX_FIELD {
            return Some(DataType::Utf8);
        }
        self.column_type(path)
    }
}

/// The indices an index expression (`a,b`, `logs-*`, `_all`) names.
pub fn resolve(indices: &Indices, expr: &str) -> Result<Vec<Target>> {
    Ok(targets(indices.resolve(expr)?))
}

/// The indices a search over an index expression reads, and those it
/// names that did not open on this node: the search answers from the
/// others and reports every shard of these as failed, as it does shards
/// whose node is down. When none of the indices it names opened, it is the
/// first one's error. With `ignore_unavailable` in `params`, a name of no
/// index or alias names nothing instead of failing the search.
pub fn resolve_partial(
    indices: &Indices,
    expr: &str,
    params: &Params,
) -> Result<(Vec<Target>, Vec<FailedIndex>)> {
    let ignore_unavailable = params.get("ignore_unavailable").is_some_and(|v| v != "false");
    let (open, failed) = indices.resolve_searched(expr, ignore_unavailable)?;
    if open.is_empty()
        && let Some(first) = failed.first()
    {
        return Err(first.error().into());
    }
    Ok((targets(open), failed))
}

fn targets(indices: Vec<Arc<Index>>) -> Vec<Target> {
    let mut out: Vec<Target> = indices
        .into_iter()
        .map(|index| {
            let (table, failures) = IndexTable::available(index);
            Target {
                name: table.index().name(),
                table: Arc::new(table),
                failures,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A column of the unioned rows.
#[derive(Debug, Clone)]
pub enum Output {
    /// The index name.
    Index,
    /// A column of every index (`_id`, `_score`, `_source`).
    Meta(&'static str),
    /// A mapped field, cast to a type common to the indices; `reduce` picks
    /// one value of a multi-valued field (`min` or `max`).
    Field {
        /// Field path.
        path: String,
        /// Output name.
        alias: String,
        /// For list columns: `Some(true)` takes the maximum, `Some(false)` the minimum.
        reduce: Option<bool>,
    },
}

/// The type a field has across the targets: the common type, or `None` when
/// no target maps it.
pub fn common_type(targets: &[Target], path: &str) -> Option<DataType> {
    let types: Vec<DataType> = targets
        .iter()
        .filter_map(|t| t.field_type(path))
        .map(|t| dsl_type(&t))
        .collect();
    let first = types.first()?.clone();
    if types.iter().all(|t| *t == first) {
        return Some(first);
    }
    let numeric = |t: &DataType| t.is_numeric() || matches!(t, DataType::Timestamp(..));
    if types.iter().all(numeric) {
        return Some(if types.iter().all(DataType::is_integer) {
            DataType::Int64
        } else {
            DataType::Float64
        });
    }
    Some(DataType::Utf8)
}

/// The type the DSL reads a column as: Elasticsearch reports `scaled_float`
/// values as doubles.
fn dsl_type(t: &DataType) -> DataType {
    match t {
        DataType::Decimal128(..) => DataType::Float64,
        DataType::List(f) if matches!(f.data_type(), DataType::Decimal128(..)) => {
            DataType::List(Arc::new(f.as_ref().clone().with_data_type(DataType::Float64)))
        }
        other => other.clone(),
    }
}

fn element_type(t: &DataType) -> DataType {
    match t {
        DataType::List(f) | DataType::LargeList(f) => f.data_type().clone(),
        other => other.clone(),
    }
}

/// The scan of one index with `query` pushed into it.
pub fn filtered_scan(target: &Target, query: &LeafQuery) -> Result<LogicalPlanBuilder> {
    let builder = LogicalPlanBuilder::scan(
        target.name.as_str(),
        provider_as_source(Arc::clone(&target.table) as _),
        None,
    )?;
    Ok(if *query == LeafQuery::All {
        builder
    } else {
        builder.filter(search_query_expr(query)?)?
    })
}

/// The mapped type of a field in the first target that maps it.
pub fn field_type(targets: &[Target], path: &str) -> Option<FieldType> {
    targets
        .iter()
        .find_map(|t| t.mapping().column(path).map(|c| c.mapping.ty))
}

/// The formatter of a date field: `format` if given, else the field's
/// mapped format, else `strict_date_optional_time`.
pub fn date_formatter(targets: &[Target], path: &str, format: Option<&str>) -> Result<DateFormatter> {
    let mapped = targets
        .iter()
        .find_map(|t| t.mapping().column(path).and_then(|c| c.mapping.format.clone()));
    let format = format
        .map(str::to_string)
        .or(mapped)
        .unwrap_or_else(|| "strict_date_optional_time".into());
    DateFormatter::parse(&format).map_err(Error::illegal_argument)
}

/// Builds the unioned, filtered rows of the targets with these columns.
pub fn union_source(
    targets: &[Target],
    query_for: &dyn Fn(&Target) -> Result<LeafQuery>,
    outputs: &[Output],
) -> Result<LogicalPlanBuilder> {
    let mut plans = Vec::with_capacity(targets.len());
    let types: Vec<Option<DataType>> = outputs
        .iter()
        .map(|o| match o {
            Output::Field { path, reduce, .. } => {
                common_type(targets, path).map(|t| if reduce.is_some() { element_type(&t) } else { t })
            }
            _ => None,
        })
        .collect();
    for target in targets {
        let builder = filtered_scan(target, &query_for(target)?)?;
        let exprs = outputs
            .iter()
            .zip(&types)
            .map(|(o, ty)| -> Result<Expr> {
                Ok(match o {
                    Output::Index => lit(target.name.clone()).alias("_index"),
                    Output::Meta(name) => ident(*name),
                    Output::Field { path, alias, reduce } => {
                        let ty = ty.clone().unwrap_or(DataType::Utf8);
                        let expr = match (target.field_type(path), reduce) {
                            (None, _) => cast(lit(ScalarValue::Null), ty.clone()),
                            (Some(_), _) if path == INDEX_FIELD => cast(lit(target.name.clone()), ty.clone()),
                            (Some(DataType::List(_)), Some(max)) => {
                                let e = if *max {
                                    datafusion::functions_nested::expr_fn::array_max(ident(path))
                                } else {
                                    datafusion::functions_nested::expr_fn::array_min(ident(path))
                                };
                                cast(e, ty.clone())
                            }
                            (Some(t), _) if t == ty => ident(path),
                            (Some(_), _) => cast(ident(path), ty.clone()),
                        };
                        expr.alias(alias)
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        plans.push(builder.project(exprs)?.build()?);
    }
    let mut plans = plans.into_iter();
    let first = plans
        .next()
        .ok_or_else(|| Error::internal("a search needs at least one index"))?;
    let mut builder = LogicalPlanBuilder::from(first);
    for plan in plans {
        builder = builder.union(plan)?;
    }
    Ok(builder)
}

/// A JSON scalar as a DataFusion literal (`null` and containers as NULL).
pub fn json_literal(v: &Value) -> Expr {
    match v {
        Value::Bool(b) => lit(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => lit(i),
            None => lit(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) if s == "Infinity" => lit(f64::INFINITY),
        Value::String(s) if s == "-Infinity" => lit(f64::NEG_INFINITY),
        Value::String(s) => lit(s.clone()),
        _ => lit(ScalarValue::Null),
    }
}

/// The JSON value of row `row` of an Arrow column.
pub fn json_at(array: &dyn Array, row: usize) -> Result<Value> {
    let scalar = ScalarValue::try_from_array(array, row)?;
    Ok(scalar_json(&scalar))
}

/// A scalar as JSON: numbers, strings, booleans, lists; timestamps as epoch
/// milliseconds.
pub fn scalar_json(s: &ScalarValue) -> Value {
    use ScalarValue as S;
    if s.is_null() {
        return Value::Null;
    }
    match s {
        S::Boolean(Some(b)) => json!(b),
        S::Int8(Some(n)) => json!(n),
        S::Int16(Some(n)) => json!(n),
        S::Int32(Some(n)) => json!(n),
        S::Int64(Some(n)) => json!(n),
        S::UInt8(Some(n)) => json!(n),
        S::UInt16(Some(n)) => json!(n),
        S::UInt32(Some(n)) => json!(n),
        S::UInt64(Some(n)) => json!(n),
        S::Float32(Some(f)) => float_json(f64::from(*f)),
        S::Float64(Some(f)) => float_json(*f),
        S::Utf8(Some(v)) | S::LargeUtf8(Some(v)) | S::Utf8View(Some(v)) => json!(v),
        S::TimestampMillisecond(Some(ms), _) => json!(ms),
        S::TimestampSecond(Some(s), _) => json!(s * 1000),
        S::TimestampMicrosecond(Some(us), _) => json!(us / 1000),
        S::TimestampNanosecond(Some(ns), _) => json!(ns / 1_000_000),
        S::Dictionary(_, inner) => scalar_json(inner),
        S::List(list) => {
            let values = list.value(0);
            Value::Array(
                (0..values.len())
                    .filter_map(|i| json_at(values.as_ref(), i).ok())
                    .collect(),
            )
        }
        other => json!(other.to_string()),
    }
}

/// A double as Elasticsearch renders it; non-finite values as strings.
pub fn float_json(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or_else(
        || {
            Value::String(if f.is_nan() {
                "NaN".into()
            } else if f > 0.0 {
                "Infinity".into()
            } else {
                "-Infinity".into()
            })
        },
        Value::Number,
    )
}
