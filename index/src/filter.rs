//! Translating DataFusion filter expressions into [`LeafQuery`]s that the
//! scan runs inside tantivy. An expression that translates is pushed down as
//! `Exact`: DataFusion does not re-check it.

use std::ops::Bound;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::{InList, Like, ScalarFunction};
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

use crate::fulltext::{MATCH, MATCH_PHRASE, QUERY_STRING, SEARCH_QUERY};
use crate::mapping::{FieldType, Mapping};
use crate::query::{LeafQuery, TermValue};
use crate::table::ID_COLUMN;

/// Translates a filter, or `None` when the scan cannot run it exactly.
pub fn to_leaf_query(expr: &Expr, mapping: &Mapping) -> Option<LeafQuery> {
    Translator { mapping }.expr(expr)
}

/// Whether a filter holds a full-text function. Only those score in SQL:
/// a comparison next to `match(...)` filters without adding to `_score`,
/// as a `filter` clause of a DSL `bool` query does.
pub fn has_fulltext(expr: &Expr) -> bool {
    use datafusion::common::tree_node::TreeNode;
    expr.exists(|e| Ok(matches!(e, Expr::ScalarFunction(_))))
        .unwrap_or(false)
}

/// The conjunction of translated filters, each with whether it scores
/// (see [`has_fulltext`]): the scoring ones are `must` clauses, the others
/// `filter` clauses; without a scoring one, a plain conjunction.
pub fn conjunction(parts: Vec<(LeafQuery, bool)>) -> LeafQuery {
    if !parts.iter().any(|(_, scores)| *scores) {
        return LeafQuery::and(parts.into_iter().map(|(q, _)| q).collect());
    }
    let (must, filter): (Vec<_>, Vec<_>) = parts.into_iter().partition(|(_, scores)| *scores);
    let must: Vec<LeafQuery> = must.into_iter().map(|(q, _)| q).collect();
    if filter.is_empty() {
        return LeafQuery::and(must);
    }
    LeafQuery::Bool {
        must,
        should: vec![],
        must_not: vec![],
        filter: filter.into_iter().map(|(q, _)| q).collect(),
        minimum_should_match: None,
    }
}

/// A branch that matches without adding to the score.
fn filter_clause(q: LeafQuery) -> LeafQuery {
    LeafQuery::ConstantScore {
        query: Box::new(q),
        score: 0.0,
    }
}

struct Translator<'a> {
    mapping: &'a Mapping,
}

impl Translator<'_> {
    fn expr(&self, expr: &Expr) -> Option<LeafQuery> {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::And => Some(conjunction(vec![
                    (self.expr(left)?, has_fulltext(left)),
                    (self.expr(right)?, has_fulltext(right)),
                ])),
                Operator::Or => {
                    let scored = has_fulltext(left) || has_fulltext(right);
                    let branch = |e: &Expr| {
                        let q = self.expr(e)?;
                        Some(if scored && !has_fulltext(e) {
                            filter_clause(q)
                        } else {
                            q
                        })
                    };
                    Some(LeafQuery::Bool {
                        must: vec![],
                        should: vec![branch(left)?, branch(right)?],
                        must_not: vec![],
                        filter: vec![],
                        minimum_should_match: None,
                    })
                }
                _ => self.comparison(left, *op, right),
            },
            Expr::Not(inner) => self.not(inner),
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                let (path, ty) = self.column(expr)?;
                if ty == FieldType::Boolean {
                    return None;
                }
                let low = self.literal(ty, low)?;
                let high = self.literal(ty, high)?;
                Some(LeafQuery::Range {
                    path,
                    lower: Bound::Included(low),
                    upper: Bound::Included(high),
                })
            }
            Expr::InList(InList { expr, list, negated }) => {
                if let Some(ids) = self.id_column(expr).then(|| string_literals(list)).flatten() {
                    let q = LeafQuery::Ids { ids };
                    return Some(if *negated { not_of(q) } else { q });
                }
                let (path, ty) = self.column(expr)?;
                let values = list
                    .iter()
                    .map(|e| self.equality_literal(&path, ty, e))
                    .collect::<Option<Vec<_>>>()?;
                let q = LeafQuery::Terms {
                    path: path.clone(),
                    values,
                };
                Some(if *negated { exists_and_not(path, q) } else { q })
            }
            Expr::IsNull(inner) => {
                let (path, _) = self.nullable_column(inner)?;
                Some(not_of(LeafQuery::Exists { path }))
            }
            Expr::IsNotNull(inner) => {
                let (path, _) = self.nullable_column(inner)?;
                Some(LeafQuery::Exists { path })
            }
            Expr::Like(Like {
                negated: false,
                expr,
                pattern,
                escape_char: None,
                case_insensitive: false,
            }) => {
                let (path, ty) = self.column(expr)?;
                if ty != FieldType::Keyword {
                    return None;
                }
                let Expr::Literal(value, _) = pattern.as_ref() else {
                    return None;
                };
                let pattern = scalar_string(value)?;
                let prefix = pattern.strip_suffix('%')?;
                if prefix.contains(['%', '_', '\\']) {
                    return None;
                }
                Some(LeafQuery::Prefix {
                    path,
                    prefix: prefix.to_string(),
                })
            }
            Expr::ScalarFunction(f) => self.fulltext(f),
            Expr::Column(_) => {
                let (path, ty) = self.column(expr)?;
                (ty == FieldType::Boolean).then_some(LeafQuery::Term {
                    path,
                    value: TermValue::Bool(true),
                })
            }
            _ => None,
        }
    }

    fn not(&self, inner: &Expr) -> Option<LeafQuery> {
        match inner {
            // Full-text and existence tests are never NULL, so NOT is plain negation.
            Expr::ScalarFunction(_) | Expr::IsNull(_) | Expr::IsNotNull(_) => Some(not_of(self.expr(inner)?)),
            Expr::Column(_) => {
                let (path, ty) = self.column(inner)?;
                (ty == FieldType::Boolean).then_some(LeafQuery::Term {
                    path,
                    value: TermValue::Bool(false),
                })
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) if is_comparison(*op) => {
                let path = self.column(left).or_else(|| self.column(right))?.0;
                Some(exists_and_not(path, self.expr(inner)?))
            }
            _ => None,
        }
    }

    fn comparison(&self, left: &Expr, op: Operator, right: &Expr) -> Option<LeafQuery> {
        if !is_comparison(op) {
            return None;
        }
        let (col, lit, op) = if self.column(left).is_some() || self.id_column(left) {
            (left, right, op)
        } else {
            (right, left, op.swap()?)
        };
        if self.id_column(col) && matches!(op, Operator::Eq) {
            let Expr::Literal(value, _) = lit else { return None };
            return Some(LeafQuery::Ids {
                ids: vec![scalar_string(value)?],
            });
        }
        let (path, ty) = self.column(col)?;
        let value = if matches!(op, Operator::Eq | Operator::NotEq) {
            self.equality_literal(&path, ty, lit)?
        } else {
            self.literal(ty, lit)?
        };
        if ty == FieldType::Boolean && !matches!(op, Operator::Eq | Operator::NotEq) {
            return None;
        }
        let range = |lower, upper| {
            Some(LeafQuery::Range {
                path: path.clone(),
                lower,
                upper,
            })
        };
        match op {
            Operator::Eq => Some(LeafQuery::Term { path, value }),
            Operator::NotEq => {
                let term = LeafQuery::Term {
                    path: path.clone(),
                    value,
                };
                Some(exists_and_not(path, term))
            }
            Operator::Lt => range(Bound::Unbounded, Bound::Excluded(value)),
            Operator::LtEq => range(Bound::Unbounded, Bound::Included(value)),
            Operator::Gt => range(Bound::Excluded(value), Bound::Unbounded),
            Operator::GtEq => range(Bound::Included(value), Bound::Unbounded),
            _ => None,
        }
    }

    fn fulltext(&self, f: &ScalarFunction) -> Option<LeafQuery> {
        let name = f.func.name();
        let text_arg = |e: &Expr| match e {
            Expr::Literal(v, _) => scalar_string(v),
            _ => None,
        };
        match (name, f.args.as_slice()) {
            (MATCH, [field, text]) | (MATCH_PHRASE, [field, text]) => {
                let path = self.any_column(field)?;
                let text = text_arg(text)?;
                Some(if name == MATCH {
                    LeafQuery::Match {
                        path,
                        text,
                        conjunction: false,
                    }
                } else {
                    LeafQuery::MatchPhrase { path, text, slop: 0 }
                })
            }
            (QUERY_STRING, [query]) => Some(LeafQuery::QueryString {
                query: text_arg(query)?,
                fields: vec![],
                conjunction: false,
                lenient: false,
            }),
            (SEARCH_QUERY, [json]) => serde_json::from_str(&text_arg(json)?).ok(),
            _ => None,
        }
    }

    /// A mapped, single-valued, indexed (non-text) column, through harmless casts.
    fn column(&self, expr: &Expr) -> Option<(String, FieldType)> {
        let (path, ty) = self.nullable_column(expr)?;
        let multi = self.mapping.column(&path).is_some_and(|c| c.mapping.multi_valued);
        (ty != FieldType::Text && !multi).then_some((path, ty))
    }

    /// Any mapped column (for existence tests), seen through casts that keep
    /// its values (string to string, integer to `Int64`).
    fn nullable_column(&self, expr: &Expr) -> Option<(String, FieldType)> {
        let (name, cast_to) = match expr {
            Expr::Column(c) => (c.name.clone(), None),
            Expr::Cast(c) => match c.expr.as_ref() {
                Expr::Column(col) => (col.name.clone(), Some(c.field.data_type().clone())),
                _ => return None,
            },
            _ => return None,
        };
        let column = self.mapping.column(&name)?;
        let ty = column.mapping.ty;
        let preserved = match cast_to {
            None => true,
            Some(dt) if is_string_type(&dt) => {
                matches!(ty, FieldType::Keyword | FieldType::Ip | FieldType::Text)
            }
            Some(datafusion::arrow::datatypes::DataType::Int64) => ty.integer_range().is_some(),
            Some(datafusion::arrow::datatypes::DataType::Decimal128(_, scale)) => {
                ty == FieldType::ScaledFloat && column.mapping.decimal_scale().is_some_and(|s| scale >= s)
            }
            Some(_) => false,
        };
        preserved.then_some((name, ty))
    }

    /// Any mapped column, for full-text functions.
    fn any_column(&self, expr: &Expr) -> Option<String> {
        self.nullable_column(expr).map(|(p, _)| p)
    }

    fn id_column(&self, expr: &Expr) -> bool {
        match expr {
            Expr::Column(c) => c.name == ID_COLUMN,
            Expr::Cast(c) if is_string_type(c.field.data_type()) => self.id_column(&c.expr),
            _ => false,
        }
    }

    /// A literal compared for equality: for a `scaled_float` column only one
    /// with no more fractional digits than the column keeps, since the
    /// index rounds a term to whole units and SQL compares `0.065` with the
    /// stored `0.07` as unequal.
    fn equality_literal(&self, path: &str, ty: FieldType, expr: &Expr) -> Option<TermValue> {
        if ty == FieldType::ScaledFloat {
            let scale = self.mapping.column(path)?.mapping.decimal_scale()?;
            let Expr::Literal(ScalarValue::Decimal128(Some(units), _, digits), _) = expr else {
                return self.literal(ty, expr);
            };
            let excess = u32::try_from(i16::from(*digits) - i16::from(scale)).unwrap_or(0);
            if units % 10i128.checked_pow(excess)? != 0 {
                return None;
            }
        }
        self.literal(ty, expr)
    }

    fn literal(&self, ty: FieldType, expr: &Expr) -> Option<TermValue> {
        let Expr::Literal(value, _) = expr else {
            return None;
        };
        let value = match value {
            ScalarValue::Dictionary(_, inner) => inner.as_ref(),
            v => v,
        };
        if value.is_null() {
            return None;
        }
        match ty {
            FieldType::Keyword | FieldType::Ip => scalar_string(value).map(TermValue::Str),
            FieldType::Long | FieldType::Integer | FieldType::Short | FieldType::Byte => {
                scalar_i64(value).map(TermValue::I64)
            }
            FieldType::Double | FieldType::Float => scalar_f64(value).map(TermValue::F64),
            FieldType::ScaledFloat => exact_decimal(value).map(TermValue::F64),
            FieldType::Date => match value {
                ScalarValue::TimestampMillisecond(Some(ms), _) => Some(TermValue::I64(*ms)),
                ScalarValue::TimestampSecond(Some(s), _) => s.checked_mul(1000).map(TermValue::I64),
                ScalarValue::TimestampMicrosecond(Some(us), _) if us % 1000 == 0 => {
                    Some(TermValue::I64(us / 1000))
                }
                ScalarValue::TimestampNanosecond(Some(ns), _) if ns % 1_000_000 == 0 => {
                    Some(TermValue::I64(ns / 1_000_000))
                }
                _ => None,
            },
            FieldType::Boolean => match value {
                ScalarValue::Boolean(Some(b)) => Some(TermValue::Bool(*b)),
                _ => None,
            },
            FieldType::Text => None,
        }
    }
}

fn is_comparison(op: Operator) -> bool {
    matches!(
        op,
        Operator::Eq | Operator::NotEq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
    )
}

fn not_of(q: LeafQuery) -> LeafQuery {
    LeafQuery::Bool {
        must: vec![],
        should: vec![],
        must_not: vec![q],
        filter: vec![],
        minimum_should_match: None,
    }
}

/// SQL's `NOT cond` on a column excludes rows where the column is NULL.
fn exists_and_not(path: String, q: LeafQuery) -> LeafQuery {
    LeafQuery::Bool {
        must: vec![],
        should: vec![],
        must_not: vec![q],
        filter: vec![LeafQuery::Exists { path }],
        minimum_should_match: None,
    }
}

fn is_string_type(dt: &datafusion::arrow::datatypes::DataType) -> bool {
    use datafusion::arrow::datatypes::DataType;
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _)
    )
}

fn string_literals(list: &[Expr]) -> Option<Vec<String>> {
    list.iter()
        .map(|e| match e {
            Expr::Literal(v, _) => scalar_string(v),
            _ => None,
        })
        .collect()
}

fn scalar_string(v: &ScalarValue) -> Option<String> {
    match v {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            Some(s.clone())
        }
        ScalarValue::Dictionary(_, inner) => scalar_string(inner),
        _ => None,
    }
}

fn scalar_i64(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::Int8(Some(n)) => Some(i64::from(*n)),
        ScalarValue::Int16(Some(n)) => Some(i64::from(*n)),
        ScalarValue::Int32(Some(n)) => Some(i64::from(*n)),
        ScalarValue::Int64(Some(n)) => Some(*n),
        ScalarValue::UInt8(Some(n)) => Some(i64::from(*n)),
        ScalarValue::UInt16(Some(n)) => Some(i64::from(*n)),
        ScalarValue::UInt32(Some(n)) => Some(i64::from(*n)),
        ScalarValue::UInt64(Some(n)) => i64::try_from(*n).ok(),
        _ => None,
    }
}

/// An integer or a decimal literal as a float, when the float holds it
/// exactly enough to be rounded back to its digits (a `scaled_float`
/// field's query rounds it to whole units). Float literals stay with
/// DataFusion: `0.1` as a float is not the decimal `0.1`.
fn exact_decimal(v: &ScalarValue) -> Option<f64> {
    const EXACT: i128 = 1 << 52;
    match v {
        ScalarValue::Decimal128(Some(units), _, scale) if units.abs() < EXACT => {
            Some(*units as f64 / 10f64.powi(i32::from(*scale)))
        }
        other => scalar_i64(other)
            .filter(|n| i128::from(*n).abs() < EXACT)
            .map(|n| n as f64),
    }
}

fn scalar_f64(v: &ScalarValue) -> Option<f64> {
    match v {
        ScalarValue::Float64(Some(f)) => Some(*f),
        ScalarValue::Float32(Some(f)) => Some(f64::from(*f)),
        other => scalar_i64(other).map(|n| n as f64),
    }
}
