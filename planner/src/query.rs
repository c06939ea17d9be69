//! The `query` of a search: Elasticsearch's query clauses, checked and
//! lowered to the [`LeafQuery`] a scan runs inside tantivy.
//!
//! Lowering needs the index mapping (a `term` on a date field parses a date,
//! a `match` on a keyword field is an exact term), so a request over several
//! indices is lowered once per index. A field an index does not map matches
//! nothing there, as in Elasticsearch.

use std::ops::Bound;

use quidditch_index::mapping::{self, Column, FieldType, IntegerValue, Mapping, in_query_range};
use quidditch_index::query::{
    LeafQuery, TermValue, analyze, auto_fuzziness, strings_only_reason, takes_patterns, wildcard_regex,
};
use serde_json::{Map, Value};

use crate::dates::{TimeZone, parse_date_math};
use crate::error::{Error, Result};
use crate::simple_query::{self, SimpleQuery};
use crate::source::INDEX_FIELD;

/// What lowering a query needs to know.
#[derive(Debug, Clone, Copy)]
pub struct QueryContext<'a> {
    /// Name of the index the query runs on (what `_index` holds).
    pub index: &'a str,
    /// Mapping of the index the query runs on.
    pub mapping: &'a Mapping,
    /// The request's `now`, in epoch milliseconds (date math).
    pub now_ms: i64,
}

/// Lowers a query clause (`{"match": {...}}`) for one index.
pub fn lower(query: &Value, ctx: &QueryContext) -> Result<LeafQuery> {
    Lowering { ctx: *ctx }.clause(query)
}

/// Lowers an optional query; no query matches every document.
pub fn lower_opt(query: Option<&Value>, ctx: &QueryContext) -> Result<LeafQuery> {
    query.map_or(Ok(LeafQuery::All), |q| lower(q, ctx))
}

struct Lowering<'a> {
    ctx: QueryContext<'a>,
}

fn object<'v>(v: &'v Value, what: &str) -> Result<&'v Map<String, Value>> {
    v.as_object().ok_or_else(|| {
        Error::parsing(format!(
            "[{what}] query malformed, no start_object after query name"
        ))
    })
}

fn check_keys(clause: &str, m: &Map<String, Value>, allowed: &[&str]) -> Result<()> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(Error::parsing(format!("[{clause}] query does not support [{k}]"))),
        None => Ok(()),
    }
}

/// `{"clause": {"field": value-or-options}}`: the single field and its body.
fn field_entry<'v>(clause: &str, v: &'v Value) -> Result<(&'v str, &'v Value)> {
    let m = object(v, clause)?;
    let mut fields = m.iter().filter(|(k, _)| !matches!(k.as_str(), "boost" | "_name"));
    let Some((field, body)) = fields.next() else {
        return Err(Error::parsing(format!("[{clause}] query requires a field")));
    };
    if let Some((other, _)) = fields.next() {
        return Err(Error::parsing(format!(
            "[{clause}] query doesn't support multiple fields, found [{field}] and [{other}]"
        )));
    }
    Ok((field, body))
}

/// Options of the short form `{"clause": {"field": value}}`: none.
static NO_OPTIONS: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

/// `{"clause": {"field": value}}` or `{"clause": {"field": {"<value key>":
/// value, ...options}}}`: the field, the value (under the first of
/// `value_keys` present) and the options, checked against `allowed`.
fn field_value<'v>(
    clause: &str,
    body: &'v Value,
    value_keys: &[&str],
    allowed: &[&str],
    missing: &str,
) -> Result<(&'v str, &'v Value, &'v Map<String, Value>)> {
    let (field, spec) = field_entry(clause, body)?;
    match spec {
        Value::Object(m) => {
            check_keys(clause, m, allowed)?;
            let v = value_keys
                .iter()
                .find_map(|k| m.get(*k))
                .ok_or_else(|| Error::parsing(format!("[{clause}] {missing}")))?;
            Ok((field, v, m))
        }
        v => Ok((field, v, &NO_OPTIONS)),
    }
}

fn as_f32(v: &Value, clause: &str, key: &str) -> Result<f32> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .filter(|f: &f64| f.is_finite())
        .map(|f| f as f32)
        .ok_or_else(|| Error::parsing(format!("[{clause}] query: [{key}] must be a number")))
}

/// The `lenient` of a full-text query over fields: as given, else whether
/// it searches every field (no `fields` or `default_field`, or a `*` among
/// them), where Elasticsearch is lenient and elsewhere not.
fn lenient(m: &Map<String, Value>, clause: &str) -> Result<bool> {
    if let Some(v) = m.get("lenient") {
        return as_bool(v, clause, "lenient");
    }
    let all = |v: &Value| v.as_str().and_then(|f| f.split('^').next()) == Some("*");
    Ok(match (m.get("default_field"), m.get("fields")) {
        (None, None) => true,
        (default, fields) => {
            default.is_some_and(all)
                || match fields {
                    Some(Value::Array(f)) => f.iter().any(all),
                    Some(f) => all(f),
                    None => false,
                }
        }
    })
}

fn as_bool(v: &Value, clause: &str, key: &str) -> Result<bool> {
    v.as_bool()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| Error::parsing(format!("[{clause}] query: [{key}] must be a boolean")))
}

fn as_u32(v: &Value, clause: &str, key: &str) -> Result<u32> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            Error::parsing(format!(
                "[{clause}] query: [{key}] must be a non-negative integer"
            ))
        })
}

/// A query value as text (`match` and friends accept numbers and booleans).
fn text_of(v: &Value, clause: &str) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(Error::parsing(format!(
            "[{clause}] unknown token [{}]",
            token_name(v)
        ))),
    }
}

/// The JSON token Elasticsearch names a value by in parse errors.
pub fn token_name(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "START_OBJECT",
        Value::Array(_) => "START_ARRAY",
        Value::String(_) => "VALUE_STRING",
        Value::Number(_) => "VALUE_NUMBER",
        Value::Bool(_) => "VALUE_BOOLEAN",
        Value::Null => "VALUE_NULL",
    }
}

fn boosted(q: LeafQuery, boost: f32) -> LeafQuery {
    if boost == 1.0 || q == LeafQuery::None {
        q
    } else {
        LeafQuery::Boost {
            query: Box::new(q),
            boost,
        }
    }
}

fn bool_query(must: Vec<LeafQuery>, should: Vec<LeafQuery>, msm: Option<u32>) -> LeafQuery {
    LeafQuery::Bool {
        must,
        should,
        must_not: vec![],
        filter: vec![],
        minimum_should_match: msm,
    }
}

/// An exact (not analyzed) term of a text field. A term the analyzer keeps
/// as it is scores with BM25 like any text term; any other term cannot
/// be in the index and is looked up literally (and so matches nothing).
fn text_term(path: String, term: String) -> LeafQuery {
    if analyze(&term) == [term.as_str()] {
        LeafQuery::Match {
            path,
            text: term,
            conjunction: false,
        }
    } else {
        LeafQuery::Fuzzy {
            path,
            term,
            distance: 0,
            transpositions: false,
        }
    }
}

fn shard_error(reason: String) -> Error {
    Error::new(400, "query_shard_exception", reason).on_shards()
}

/// Elasticsearch's `minimum_should_match` for `count` optional clauses:
/// `3`, `-1`, `"75%"`, `"-25%"`, `"3<90%"`, `"2<-25% 9<-3"`.
pub fn minimum_should_match(spec: &Value, count: usize) -> Result<u32> {
    let bad = || Error::illegal_argument(format!("invalid minimum_should_match [{spec}]"));
    let text = match spec {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return Err(bad()),
    };
    let count = count as i64;
    let simple = |s: &str| -> Result<i64> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let p: i64 = p.trim().parse().map_err(|_| bad())?;
            let n = count.saturating_mul(p.saturating_abs().min(100)) / 100;
            Ok(if p < 0 { count - n } else { n })
        } else {
            let n: i64 = s.parse().map_err(|_| bad())?;
            Ok(if n < 0 { count.saturating_add(n) } else { n })
        }
    };
    let result = if text.contains('<') {
        let mut result = count;
        for part in text.split_whitespace() {
            let (upto, spec) = part.split_once('<').ok_or_else(bad)?;
            let upto: i64 = upto.trim().parse().map_err(|_| bad())?;
            if count > upto {
                result = simple(spec)?;
            }
        }
        result
    } else {
        simple(&text)?
    };
    Ok(result.clamp(0, i64::from(u32::MAX)) as u32)
}

/// Edit distance for `fuzziness` (`AUTO`, `AUTO:3,6`, `0`..`2`) and a term.
fn fuzzy_distance(spec: &Value, term: &str) -> Result<u8> {
    let bad = || Error::illegal_argument(format!("failed to parse fuzziness [{spec}]"));
    let text = match spec {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return Err(bad()),
    };
    let len = term.chars().count();
    if let Some(rest) = text.strip_prefix("AUTO") {
        let (low, high) = match rest.strip_prefix(':') {
            Some(bounds) => {
                let (l, h) = bounds.split_once(',').ok_or_else(bad)?;
                (
                    l.trim().parse::<usize>().map_err(|_| bad())?,
                    h.trim().parse::<usize>().map_err(|_| bad())?,
                )
            }
            None if rest.is_empty() => (3, 6),
            None => return Err(bad()),
        };
        return Ok(auto_fuzziness(len, low, high));
    }
    let n: f64 = text.parse().map_err(|_| bad())?;
    if !(0.0..=2.0).contains(&n) {
        return Err(Error::illegal_argument(format!(
            "Valid edit distances are [0, 1, 2] but was [{text}]"
        )));
    }
    Ok(n as u8)
}

/// A field name with an optional `^boost`.
pub fn field_with_boost(spec: &str) -> Result<(String, f32)> {
    match spec.split_once('^') {
        Some((field, boost)) => Ok((
            field.to_string(),
            boost
                .parse()
                .map_err(|_| Error::illegal_argument(format!("invalid boost in field [{spec}]")))?,
        )),
        None => Ok((spec.to_string(), 1.0)),
    }
}

impl Lowering<'_> {
    /// A query on `_index`, which every document of the index holds alike:
    /// all of them (scored `boost`, as Elasticsearch's constant-score
    /// `_index` queries) or none.
    fn on_index(&self, matches: bool, boost: f32) -> LeafQuery {
        if matches {
            LeafQuery::ConstantScore {
                query: Box::new(LeafQuery::All),
                score: boost,
            }
        } else {
            LeafQuery::None
        }
    }

    fn column(&self, field: &str) -> Option<Column> {
        self.ctx.mapping.column(field)
    }

    /// Mapped fields matching a pattern with `*` wildcards.
    fn expand_fields(&self, pattern: &str) -> Vec<String> {
        if !pattern.contains('*') {
            return vec![pattern.to_string()];
        }
        let re = format!("^{}$", wildcard_regex(pattern));
        let Ok(re) = regex::Regex::new(&re) else {
            return vec![];
        };
        self.ctx
            .mapping
            .columns()
            .into_iter()
            .filter(|c| re.is_match(&c.path))
            .map(|c| c.path)
            .collect()
    }

    /// Every mapped field: the fields of Elasticsearch's default `*`, over
    /// which a query is lenient (a value a field's type does not read
    /// matches nothing there).
    fn all_fields(&self) -> Vec<(String, f32)> {
        self.expand_fields("*").into_iter().map(|f| (f, 1.0)).collect()
    }

    fn clause(&self, query: &Value) -> Result<LeafQuery> {
        let m = query.as_object().ok_or_else(|| {
            Error::parsing(format!(
                "[_na] query malformed, must start with start_object, got [{}]",
                token_name(query)
            ))
        })?;
        let mut entries = m.iter();
        let Some((name, body)) = entries.next() else {
            return Err(Error::parsing("query malformed, empty clause found"));
        };
        if let Some((other, _)) = entries.next() {
            return Err(Error::parsing(format!(
                "[{name}] malformed query, expected [END_OBJECT] but found [FIELD_NAME] ([{other}])"
            )));
        }
        match name.as_str() {
            "match_all" => {
                let m = object(body, name)?;
                check_keys(name, m, &["boost", "_name"])?;
                let boost = m.get("boost").map(|b| as_f32(b, name, "boost")).transpose()?;
                Ok(match boost {
                    Some(b) if b != 1.0 => LeafQuery::ConstantScore {
                        query: Box::new(LeafQuery::All),
                        score: b,
                    },
                    _ => LeafQuery::All,
                })
            }
            "match_none" => {
                check_keys(name, object(body, name)?, &["boost", "_name"])?;
                Ok(LeafQuery::None)
            }
            "term" => self.term(body),
            "terms" => self.terms(body),
            "ids" => {
                let m = object(body, name)?;
                check_keys(name, m, &["values", "boost", "_name"])?;
                let ids = m
                    .get("values")
                    .and_then(Value::as_array)
                    .ok_or_else(|| Error::parsing("[ids] query requires [values] as an array"))?
                    .iter()
                    .map(|v| text_of(v, "ids"))
                    .collect::<Result<Vec<_>>>()?;
                Ok(boosted(LeafQuery::Ids { ids }, self.boost(m, name)?))
            }
            "match" => self.match_query(body),
            "match_phrase" | "match_phrase_prefix" => self.match_phrase(name, body),
            "multi_match" => self.multi_match(body),
            "bool" => self.bool_query(body),
            "range" => self.range(body),
            "exists" => {
                let m = object(body, name)?;
                check_keys(name, m, &["field", "boost", "_name"])?;
                let field = m
                    .get("field")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::parsing("[exists] must be provided with a [field]"))?;
                let q = match self.column(field) {
                    Some(col) => LeafQuery::Exists {
                        path: col.source_path,
                    },
                    None => LeafQuery::None,
                };
                Ok(boosted(q, self.boost(m, name)?))
            }
            "prefix" | "wildcard" | "regexp" => self.pattern(name, body),
            "fuzzy" => self.fuzzy(body),
            "query_string" => self.query_string(body),
            "simple_query_string" => self.simple_query_string(body),
            "constant_score" => {
                let m = object(body, name)?;
                check_keys(name, m, &["filter", "boost", "_name"])?;
                let filter = m
                    .get("filter")
                    .ok_or_else(|| Error::parsing("[constant_score] requires a 'filter' element"))?;
                let inner = self.clause(filter)?;
                if inner == LeafQuery::None {
                    return Ok(LeafQuery::None);
                }
                Ok(LeafQuery::ConstantScore {
                    query: Box::new(inner),
                    score: self.boost(m, name)?,
                })
            }
            "dis_max" => {
                let m = object(body, name)?;
                check_keys(name, m, &["queries", "tie_breaker", "boost", "_name"])?;
                let queries = m
                    .get("queries")
                    .and_then(Value::as_array)
                    .ok_or_else(|| {
                        Error::parsing("[dis_max] requires 'queries' field with at least one clause")
                    })?
                    .iter()
                    .map(|q| self.clause(q))
                    .collect::<Result<Vec<_>>>()?;
                let tie_breaker = m
                    .get("tie_breaker")
                    .map(|t| as_f32(t, name, "tie_breaker"))
                    .transpose()?
                    .unwrap_or(0.0);
                Ok(boosted(
                    LeafQuery::DisMax { queries, tie_breaker },
                    self.boost(m, name)?,
                ))
            }
            other => Err(Error::parsing(format!("unknown query [{other}]"))
                .with("line", Value::from(1))
                .with("col", Value::from(1))),
        }
    }

    fn boost(&self, m: &Map<String, Value>, clause: &str) -> Result<f32> {
        let b = m
            .get("boost")
            .map(|b| as_f32(b, clause, "boost"))
            .transpose()?
            .unwrap_or(1.0);
        if b < 0.0 {
            return Err(Error::illegal_argument(format!(
                "negative [boost] are not allowed in [{clause}], but got [{b}]"
            )));
        }
        Ok(b)
    }

    /// A value of a non-text column for exact matching.
    fn term_value(&self, col: &Column, v: &Value) -> Result<TermValue> {
        Ok(match col.mapping.ty {
            FieldType::Keyword | FieldType::Ip | FieldType::Text => TermValue::Str(text_of(v, "term")?),
            FieldType::Long | FieldType::Integer | FieldType::Short | FieldType::Byte => {
                match integer_value(col.mapping.ty, v) {
                    IntegerValue::Exact(n) => TermValue::I64(n),
                    // A fraction equals no value of an integer column: the
                    // term matches nothing, as in Elasticsearch (which checks
                    // for a fraction before the range).
                    IntegerValue::Fraction(f) => TermValue::F64(f),
                    IntegerValue::OutOfRange => return Err(out_of_range(col.mapping.ty, v)),
                    IntegerValue::NotANumber => return Err(not_a_number(v)),
                }
            }
            FieldType::Double | FieldType::Float | FieldType::ScaledFloat => {
                let f = match v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                };
                TermValue::F64(f.filter(|f| f.is_finite()).ok_or_else(|| not_a_number(v))?)
            }
            FieldType::Date => TermValue::I64(self.date_value(col, v, None, None, false)?),
            FieldType::Boolean => match v {
                Value::Bool(b) => TermValue::Bool(*b),
                Value::String(s) if s == "true" || s == "false" => TermValue::Bool(s == "true"),
                _ => {
                    return Err(shard_error(format!(
                        "failed to create query: Can't parse boolean value [{}], expected [true] or [false]",
                        display(v)
                    )));
                }
            },
        })
    }

    /// A date of a column: epoch millis, or a string in the field's (or the
    /// given) format, with date math.
    fn date_value(
        &self,
        col: &Column,
        v: &Value,
        format: Option<&str>,
        tz: Option<&TimeZone>,
        round_up: bool,
    ) -> Result<i64> {
        let format = format.map(str::to_string).or_else(|| col.mapping.format.clone());
        parse_date(v, format.as_deref(), tz, self.ctx.now_ms, round_up)
    }

    fn term(&self, body: &Value) -> Result<LeafQuery> {
        let (field, spec) = field_entry("term", body)?;
        let (value, boost, case_insensitive) = match spec {
            Value::Object(m) => {
                check_keys("term", m, &["value", "boost", "case_insensitive", "_name"])?;
                let value = m
                    .get("value")
                    .ok_or_else(|| Error::parsing("[term] query requires a [value]"))?;
                let ci = m
                    .get("case_insensitive")
                    .map(|v| as_bool(v, "term", "case_insensitive"))
                    .transpose()?
                    .unwrap_or(false);
                (value, self.boost(m, "term")?, ci)
            }
            Value::Array(_) | Value::Null => {
                return Err(Error::parsing(format!(
                    "[term] query does not support array of values; use [terms] for field [{field}]"
                )));
            }
            v => (v, 1.0, false),
        };
        if field == "_id" {
            return Ok(boosted(
                LeafQuery::Ids {
                    ids: vec![text_of(value, "term")?],
                },
                boost,
            ));
        }
        if field == INDEX_FIELD {
            let name = text_of(value, "term")?;
            let matches = if case_insensitive {
                name.to_lowercase() == self.ctx.index.to_lowercase()
            } else {
                name == self.ctx.index
            };
            return Ok(self.on_index(matches, boost));
        }
        let Some(col) = self.column(field) else {
            return Ok(LeafQuery::None);
        };
        let q = if col.mapping.ty == FieldType::Text {
            text_term(col.path, text_of(value, "term")?)
        } else if case_insensitive && col.mapping.ty == FieldType::Keyword {
            LeafQuery::Regexp {
                path: col.path,
                pattern: regex::escape(&text_of(value, "term")?),
                case_insensitive: true,
            }
        } else if col.mapping.ty == FieldType::Ip && value.as_str().is_some_and(|v| v.contains('/')) {
            cidr_query(&col.path, value.as_str().unwrap_or_default())?
        } else if col.mapping.ty == FieldType::Date {
            // A date term covers everything its text names (a whole day for
            // `2024-01-01`), as in Elasticsearch.
            LeafQuery::Range {
                lower: Bound::Included(TermValue::I64(self.date_value(&col, value, None, None, false)?)),
                upper: Bound::Included(TermValue::I64(self.date_value(&col, value, None, None, true)?)),
                path: col.path,
            }
        } else {
            LeafQuery::Term {
                value: self.term_value(&col, value)?,
                path: col.path,
            }
        };
        Ok(boosted(q, boost))
    }

    fn terms(&self, body: &Value) -> Result<LeafQuery> {
        let m = object(body, "terms")?;
        let boost = self.boost(m, "terms")?;
        let (field, values) = field_entry("terms", body)?;
        let values = values.as_array().ok_or_else(|| {
            Error::parsing(format!(
                "[terms] query does not support [{field}]: expected an array of values"
            ))
        })?;
        if field == "_id" {
            let ids = values
                .iter()
                .map(|v| text_of(v, "terms"))
                .collect::<Result<Vec<_>>>()?;
            return Ok(LeafQuery::ConstantScore {
                query: Box::new(LeafQuery::Ids { ids }),
                score: boost,
            });
        }
        if field == INDEX_FIELD {
            let names = values
                .iter()
                .map(|v| text_of(v, "terms"))
                .collect::<Result<Vec<_>>>()?;
            return Ok(self.on_index(names.iter().any(|n| n == self.ctx.index), boost));
        }
        let Some(col) = self.column(field) else {
            return Ok(LeafQuery::None);
        };
        if col.mapping.ty == FieldType::Text {
            let should = values
                .iter()
                .map(|v| Ok(text_term(col.path.clone(), text_of(v, "terms")?)))
                .collect::<Result<Vec<_>>>()?;
            return Ok(boosted(bool_query(vec![], should, None), boost));
        }
        let values = values
            .iter()
            .map(|v| self.term_value(&col, v))
            .collect::<Result<Vec<_>>>()?;
        // A terms query scores like a constant-score filter in Elasticsearch.
        Ok(LeafQuery::ConstantScore {
            query: Box::new(LeafQuery::Terms {
                path: col.path,
                values,
            }),
            score: boost,
        })
    }

    fn match_query(&self, body: &Value) -> Result<LeafQuery> {
        let (field, query, m) = field_value(
            "match",
            body,
            &["query"],
            &[
                "query",
                "operator",
                "minimum_should_match",
                "fuzziness",
                "prefix_length",
                "max_expansions",
                "fuzzy_transpositions",
                "lenient",
                "zero_terms_query",
                "auto_generate_synonyms_phrase_query",
                "analyzer",
                "boost",
                "_name",
            ],
            "requires query value",
        )?;
        let operator_and = match m.get("operator").map(|o| o.as_str().map(str::to_ascii_lowercase)) {
            None => false,
            Some(Some(o)) if o == "and" => true,
            Some(Some(o)) if o == "or" => false,
            Some(_) => {
                return Err(Error::illegal_argument(format!(
                    "operator needs to be either [and] or [or], but was [{}]",
                    m.get("operator").map(display).unwrap_or_default()
                )));
            }
        };
        let zero_terms_all = match m.get("zero_terms_query").and_then(Value::as_str) {
            None | Some("none") => false,
            Some("all") => true,
            Some(other) => {
                return Err(Error::parsing(format!(
                    "Unsupported zero_terms_query value [{other}]"
                )));
            }
        };
        let transpositions = m
            .get("fuzzy_transpositions")
            .map(|v| as_bool(v, "match", "fuzzy_transpositions"))
            .transpose()?
            .unwrap_or(true);
        let lenient = m.get("lenient").and_then(Value::as_bool).unwrap_or(false);
        let q = self.match_field(
            field,
            &text_of(query, "match")?,
            &MatchOptions {
                operator_and,
                minimum_should_match: m.get("minimum_should_match"),
                fuzziness: m.get("fuzziness"),
                transpositions,
                zero_terms_all,
                lenient,
            },
        )?;
        Ok(boosted(q, self.boost(m, "match")?))
    }

    /// `match` of `text` on one field.
    fn match_field(&self, field: &str, text: &str, opts: &MatchOptions) -> Result<LeafQuery> {
        if field == INDEX_FIELD {
            return Ok(self.on_index(text == self.ctx.index, 1.0));
        }
        let Some(col) = self.column(field) else {
            return Ok(LeafQuery::None);
        };
        if col.mapping.ty != FieldType::Text {
            return match self.term_value(&col, &Value::String(text.to_string())) {
                Ok(value) => Ok(LeafQuery::Term {
                    path: col.path,
                    value,
                }),
                Err(_) if opts.lenient => Ok(LeafQuery::None),
                Err(e) => Err(e),
            };
        }
        let tokens = analyze(text);
        if tokens.is_empty() {
            return Ok(if opts.zero_terms_all {
                LeafQuery::All
            } else {
                LeafQuery::None
            });
        }
        let count = tokens.len();
        let clauses = tokens
            .into_iter()
            .map(|t| {
                let distance = match opts.fuzziness {
                    Some(spec) => fuzzy_distance(spec, &t)?,
                    None => 0,
                };
                Ok(if distance == 0 {
                    LeafQuery::Match {
                        path: col.path.clone(),
                        text: t,
                        conjunction: false,
                    }
                } else {
                    LeafQuery::Fuzzy {
                        path: col.path.clone(),
                        term: t,
                        distance,
                        transpositions: opts.transpositions,
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if opts.operator_and {
            return Ok(LeafQuery::and(clauses));
        }
        let msm = opts
            .minimum_should_match
            .map(|spec| minimum_should_match(spec, count))
            .transpose()?;
        if count == 1 && msm.unwrap_or(1) <= 1 {
            return Ok(clauses.into_iter().next().unwrap_or(LeafQuery::None));
        }
        Ok(bool_query(vec![], clauses, msm.filter(|n| *n > 0)))
    }

    fn match_phrase(&self, clause: &str, body: &Value) -> Result<LeafQuery> {
        let (field, query, m) = field_value(
            clause,
            body,
            &["query"],
            &[
                "query",
                "slop",
                "max_expansions",
                "analyzer",
                "zero_terms_query",
                "boost",
                "_name",
            ],
            "requires query value",
        )?;
        let slop = m
            .get("slop")
            .map(|s| as_u32(s, clause, "slop"))
            .transpose()?
            .unwrap_or(0);
        let max_expansions = m
            .get("max_expansions")
            .map(|s| as_u32(s, clause, "max_expansions"))
            .transpose()?
            .unwrap_or(50);
        let q = self.phrase_field(
            field,
            &text_of(query, clause)?,
            clause == "match_phrase_prefix",
            slop,
            max_expansions,
        )?;
        Ok(boosted(q, self.boost(m, clause)?))
    }

    fn phrase_field(
        &self,
        field: &str,
        text: &str,
        prefix: bool,
        slop: u32,
        max_expansions: u32,
    ) -> Result<LeafQuery> {
        let Some(col) = self.column(field) else {
            return Ok(LeafQuery::None);
        };
        if col.mapping.ty != FieldType::Text {
            if prefix && col.mapping.ty == FieldType::Keyword {
                return Ok(LeafQuery::Prefix {
                    path: col.path,
                    prefix: text.to_string(),
                });
            }
            return Ok(LeafQuery::Term {
                value: self.term_value(&col, &Value::String(text.to_string()))?,
                path: col.path,
            });
        }
        Ok(if prefix {
            LeafQuery::PhrasePrefix {
                path: col.path,
                text: text.to_string(),
                max_expansions,
            }
        } else {
            LeafQuery::MatchPhrase {
                path: col.path,
                text: text.to_string(),
                slop,
            }
        })
    }

    fn multi_match(&self, body: &Value) -> Result<LeafQuery> {
        let m = object(body, "multi_match")?;
        check_keys(
            "multi_match",
            m,
            &[
                "query",
                "fields",
                "type",
                "operator",
                "minimum_should_match",
                "fuzziness",
                "fuzzy_transpositions",
                "tie_breaker",
                "slop",
                "max_expansions",
                "lenient",
                "zero_terms_query",
                "analyzer",
                "prefix_length",
                "boost",
                "_name",
            ],
        )?;
        let query = text_of(
            m.get("query")
                .ok_or_else(|| Error::parsing("No text specified for multi_match query"))?,
            "multi_match",
        )?;
        let specs: Vec<(String, f32)> = match m.get("fields") {
            None => self.all_fields(),
            Some(Value::String(s)) => vec![field_with_boost(s)?],
            Some(Value::Array(a)) => a
                .iter()
                .map(|f| {
                    f.as_str()
                        .ok_or_else(|| Error::parsing("[multi_match] fields must be strings"))
                        .and_then(field_with_boost)
                })
                .collect::<Result<_>>()?,
            Some(_) => return Err(Error::parsing("[multi_match] query does not support [fields]")),
        };
        let mut fields = Vec::new();
        for (pattern, boost) in specs {
            for f in self.expand_fields(&pattern) {
                fields.push((f, boost));
            }
        }
        let kind = m.get("type").and_then(Value::as_str).unwrap_or("best_fields");
        let operator_and =
            matches!(m.get("operator").and_then(Value::as_str), Some(o) if o.eq_ignore_ascii_case("and"));
        let opts = MatchOptions {
            operator_and,
            minimum_should_match: m.get("minimum_should_match"),
            fuzziness: m.get("fuzziness"),
            transpositions: true,
            zero_terms_all: false,
            lenient: lenient(m, "multi_match")?,
        };
        let slop = m
            .get("slop")
            .map(|s| as_u32(s, "multi_match", "slop"))
            .transpose()?
            .unwrap_or(0);
        let max_expansions = m
            .get("max_expansions")
            .map(|s| as_u32(s, "multi_match", "max_expansions"))
            .transpose()?
            .unwrap_or(50);
        let per_field = fields
            .iter()
            .map(|(field, boost)| {
                let q = match kind {
                    "best_fields" | "most_fields" => self.match_field(field, &query, &opts)?,
                    "phrase" => self.phrase_field(field, &query, false, slop, max_expansions)?,
                    "phrase_prefix" => self.phrase_field(field, &query, true, slop, max_expansions)?,
                    other => {
                        return Err(Error::illegal_argument(format!(
                            "[multi_match] query type [{other}] is not supported"
                        )));
                    }
                };
                Ok(boosted(q, *boost))
            })
            .collect::<Result<Vec<_>>>()?;
        let per_field: Vec<LeafQuery> = per_field.into_iter().filter(|q| *q != LeafQuery::None).collect();
        if per_field.is_empty() {
            return Ok(LeafQuery::None);
        }
        let q = if kind == "most_fields" {
            bool_query(vec![], per_field, None)
        } else {
            let tie_breaker = m
                .get("tie_breaker")
                .map(|t| as_f32(t, "multi_match", "tie_breaker"))
                .transpose()?
                .unwrap_or(0.0);
            LeafQuery::DisMax {
                queries: per_field,
                tie_breaker,
            }
        };
        Ok(boosted(q, self.boost(m, "multi_match")?))
    }

    fn clauses(&self, m: &Map<String, Value>, key: &str) -> Result<Vec<LeafQuery>> {
        match m.get(key) {
            None => Ok(vec![]),
            Some(Value::Array(items)) => items.iter().map(|q| self.clause(q)).collect(),
            Some(q @ Value::Object(_)) => Ok(vec![self.clause(q)?]),
            Some(v) => Err(Error::x_content(format!(
                "[bool] failed to parse field [{key}]: unexpected token [{}]",
                token_name(v)
            ))),
        }
    }

    fn bool_query(&self, body: &Value) -> Result<LeafQuery> {
        let m = object(body, "bool")?;
        check_keys(
            "bool",
            m,
            &[
                "must",
                "should",
                "must_not",
                "filter",
                "minimum_should_match",
                "adjust_pure_negative",
                "boost",
                "_name",
            ],
        )?;
        let must = self.clauses(m, "must")?;
        let should = self.clauses(m, "should")?;
        let must_not = self.clauses(m, "must_not")?;
        let filter = self.clauses(m, "filter")?;
        let msm = match m.get("minimum_should_match") {
            Some(spec) => Some(minimum_should_match(spec, should.len())?),
            None if must.is_empty() && filter.is_empty() && !should.is_empty() => Some(1),
            None => None,
        };
        if must.iter().chain(&filter).any(|q| *q == LeafQuery::None) {
            return Ok(LeafQuery::None);
        }
        let must_not: Vec<LeafQuery> = must_not.into_iter().filter(|q| *q != LeafQuery::None).collect();
        if must.is_empty() && filter.is_empty() && should.is_empty() && must_not.is_empty() {
            return Ok(boosted(LeafQuery::All, self.boost(m, "bool")?));
        }
        let q = LeafQuery::Bool {
            must,
            should,
            must_not,
            filter,
            minimum_should_match: msm.filter(|n| *n > 0),
        };
        Ok(boosted(q, self.boost(m, "bool")?))
    }

    fn range(&self, body: &Value) -> Result<LeafQuery> {
        let (field, spec) = field_entry("range", body)?;
        let m = spec.as_object().ok_or_else(|| {
            Error::parsing(format!(
                "[range] query malformed, no start_object after field [{field}]"
            ))
        })?;
        check_keys(
            "range",
            m,
            &[
                "gt",
                "gte",
                "lt",
                "lte",
                "from",
                "to",
                "include_lower",
                "include_upper",
                "format",
                "time_zone",
                "relation",
                "boost",
                "_name",
            ],
        )?;
        let Some(col) = self.column(field) else {
            return Ok(LeafQuery::None);
        };
        let tz = m
            .get("time_zone")
            .and_then(Value::as_str)
            .map(|s| TimeZone::parse(s).map_err(Error::illegal_argument))
            .transpose()?;
        let format = m.get("format").and_then(Value::as_str);
        let include_lower = m.get("include_lower").and_then(Value::as_bool).unwrap_or(true);
        let include_upper = m.get("include_upper").and_then(Value::as_bool).unwrap_or(true);
        let mut lower = Bound::Unbounded;
        let mut upper = Bound::Unbounded;
        let bound = |v: &Value, round_up: bool| -> Result<Option<TermValue>> {
            if v.is_null() {
                return Ok(None);
            }
            Ok(Some(match col.mapping.ty {
                FieldType::Date => TermValue::I64(self.date_value(&col, v, format, tz.as_ref(), round_up)?),
                FieldType::Long | FieldType::Integer | FieldType::Short | FieldType::Byte => {
                    match integer_value(col.mapping.ty, v) {
                        IntegerValue::Exact(n) => TermValue::I64(n),
                        IntegerValue::NotANumber => return Err(not_a_number(v)),
                        IntegerValue::OutOfRange => return Err(out_of_range(col.mapping.ty, v)),
                        IntegerValue::Fraction(f) if !in_query_range(col.mapping.ty, f) => {
                            return Err(out_of_range(col.mapping.ty, v));
                        }
                        // Integer fields round fractional bounds inwards: `gt 1.5`
                        // is `gt 1`, `lt 1.5` is `lt 2`.
                        IntegerValue::Fraction(f) => {
                            TermValue::F64(if round_up { f.floor() } else { f.ceil() })
                        }
                    }
                }
                _ => self.term_value(&col, v)?,
            }))
        };
        for (key, v) in m {
            match key.as_str() {
                "gte" => lower = bound(v, false)?.map_or(Bound::Unbounded, Bound::Included),
                "gt" => lower = bound(v, true)?.map_or(Bound::Unbounded, Bound::Excluded),
                "from" => {
                    let b = bound(v, !include_lower)?;
                    lower = b.map_or(Bound::Unbounded, |b| {
                        if include_lower {
                            Bound::Included(b)
                        } else {
                            Bound::Excluded(b)
                        }
                    })
                }
                "lte" => upper = bound(v, true)?.map_or(Bound::Unbounded, Bound::Included),
                "lt" => upper = bound(v, false)?.map_or(Bound::Unbounded, Bound::Excluded),
                "to" => {
                    let b = bound(v, include_upper)?;
                    upper = b.map_or(Bound::Unbounded, |b| {
                        if include_upper {
                            Bound::Included(b)
                        } else {
                            Bound::Excluded(b)
                        }
                    })
                }
                _ => {}
            }
        }
        let q = LeafQuery::Range {
            lower: int_bound(&col, lower),
            upper: int_bound(&col, upper),
            path: col.path,
        };
        // A range query is a constant-score filter in Elasticsearch.
        Ok(LeafQuery::ConstantScore {
            query: Box::new(q),
            score: self.boost(m, "range")?,
        })
    }

    fn pattern(&self, clause: &str, body: &Value) -> Result<LeafQuery> {
        let (field, value, m) = field_value(
            clause,
            body,
            &["value", "wildcard"],
            &[
                "value",
                "wildcard",
                "case_insensitive",
                "rewrite",
                "flags",
                "max_determinized_states",
                "boost",
                "_name",
            ],
            "requires a [value]",
        )?;
        let value = text_of(value, clause)?;
        let case_insensitive = m
            .get("case_insensitive")
            .map(|v| as_bool(v, clause, "case_insensitive"))
            .transpose()?
            .unwrap_or(false);
        if field == INDEX_FIELD {
            let name = self.ctx.index;
            let matches = match clause {
                "regexp" => {
                    return Err(shard_error(format!(
                        "failed to create query: Can only use regexp queries on keyword and text fields - not on [{INDEX_FIELD}] which is of type [{INDEX_FIELD}]"
                    )));
                }
                "prefix" if case_insensitive => name.to_lowercase().starts_with(&value.to_lowercase()),
                "prefix" => name.starts_with(&value),
                _ => regex::RegexBuilder::new(&format!("^(?:{})$", wildcard_regex(&value)))
                    .case_insensitive(case_insensitive)
                    .build()
                    .is_ok_and(|re| re.is_match(name)),
            };
            return Ok(self.on_index(matches, self.boost(m, clause)?));
        }
        let Some(col) = self.column(field) else {
            return Ok(LeafQuery::None);
        };
        strings_only(clause, field, &col)?;
        let pattern = match clause {
            "prefix" if !case_insensitive => {
                return Ok(LeafQuery::ConstantScore {
                    query: Box::new(LeafQuery::Prefix {
                        path: col.path,
                        prefix: value,
                    }),
                    score: self.boost(m, clause)?,
                });
            }
            "prefix" => format!("{}.*", regex::escape(&value)),
            "wildcard" => wildcard_regex(&value),
            _ => {
                regex_syntax_check(&value)?;
                value
            }
        };
        Ok(LeafQuery::ConstantScore {
            query: Box::new(LeafQuery::Regexp {
                path: col.path,
                pattern,
                case_insensitive,
            }),
            score: self.boost(m, clause)?,
        })
    }

    fn fuzzy(&self, body: &Value) -> Result<LeafQuery> {
        let (field, value, m) = field_value(
            "fuzzy",
            body,
            &["value"],
            &[
                "value",
                "fuzziness",
                "prefix_length",
                "max_expansions",
                "transpositions",
                "rewrite",
                "boost",
                "_name",
            ],
            "requires a [value]",
        )?;
        let value = text_of(value, "fuzzy")?;
        let Some(col) = self.column(field) else {
            return Ok(LeafQuery::None);
        };
        strings_only("fuzzy", field, &col)?;
        let auto = Value::String("AUTO".into());
        let distance = fuzzy_distance(m.get("fuzziness").unwrap_or(&auto), &value)?;
        let transpositions = m
            .get("transpositions")
            .map(|v| as_bool(v, "fuzzy", "transpositions"))
            .transpose()?
            .unwrap_or(true);
        let q = LeafQuery::Fuzzy {
            path: col.path,
            term: value,
            distance,
            transpositions,
        };
        Ok(boosted(q, self.boost(m, "fuzzy")?))
    }

    fn query_fields(&self, m: &Map<String, Value>, clause: &str) -> Result<Vec<(String, f32)>> {
        let mut specs = Vec::new();
        if let Some(f) = m.get("default_field") {
            let f = f
                .as_str()
                .ok_or_else(|| Error::parsing(format!("[{clause}] [default_field] must be a string")))?;
            specs.push(field_with_boost(f)?);
        }
        match m.get("fields") {
            None => {}
            Some(Value::Array(a)) => {
                for f in a {
                    let f = f
                        .as_str()
                        .ok_or_else(|| Error::parsing(format!("[{clause}] [fields] must be strings")))?;
                    specs.push(field_with_boost(f)?);
                }
            }
            Some(_) => {
                return Err(Error::parsing(format!(
                    "[{clause}] query does not support [fields]"
                )));
            }
        }
        let mut out = Vec::new();
        for (pattern, boost) in specs {
            // A named field this index does not map stays: it matches nothing
            // here, as in Elasticsearch.
            out.extend(self.expand_fields(&pattern).into_iter().map(|f| (f, boost)));
        }
        if out.is_empty() && m.get("default_field").is_none() && m.get("fields").is_none() {
            out = self.all_fields();
        }
        Ok(out)
    }

    fn default_operator_and(m: &Map<String, Value>, clause: &str) -> Result<bool> {
        match m
            .get("default_operator")
            .map(|v| v.as_str().map(str::to_ascii_lowercase))
        {
            None => Ok(false),
            Some(Some(o)) if o == "and" => Ok(true),
            Some(Some(o)) if o == "or" => Ok(false),
            Some(_) => Err(Error::parsing(format!(
                "[{clause}] default operator must be [AND] or [OR]"
            ))),
        }
    }

    fn query_string(&self, body: &Value) -> Result<LeafQuery> {
        let m = object(body, "query_string")?;
        check_keys(
            "query_string",
            m,
            &[
                "query",
                "default_field",
                "fields",
                "default_operator",
                "analyze_wildcard",
                "allow_leading_wildcard",
                "lenient",
                "analyzer",
                "fuzziness",
                "phrase_slop",
                "minimum_should_match",
                "boost",
                "_name",
            ],
        )?;
        let query = m
            .get("query")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::parsing("[query_string] must be provided with a [query]"))?;
        check_query_string(query)?;
        let q = LeafQuery::QueryString {
            query: query.to_string(),
            fields: self.query_fields(m, "query_string")?,
            conjunction: Self::default_operator_and(m, "query_string")?,
            lenient: lenient(m, "query_string")?,
        };
        Ok(boosted(q, self.boost(m, "query_string")?))
    }

    fn simple_query_string(&self, body: &Value) -> Result<LeafQuery> {
        let m = object(body, "simple_query_string")?;
        check_keys(
            "simple_query_string",
            m,
            &[
                "query",
                "fields",
                "default_operator",
                "analyze_wildcard",
                "lenient",
                "flags",
                "analyzer",
                "minimum_should_match",
                "auto_generate_synonyms_phrase_query",
                "fuzzy_prefix_length",
                "fuzzy_max_expansions",
                "fuzzy_transpositions",
                "quote_field_suffix",
                "boost",
                "_name",
            ],
        )?;
        let query = m
            .get("query")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::parsing("[simple_query_string] query text missing"))?;
        let fields = self.query_fields(m, "simple_query_string")?;
        let and = Self::default_operator_and(m, "simple_query_string")?;
        let ast = simple_query::parse(query, and);
        let q = self.simple(&ast, &fields, and, lenient(m, "simple_query_string")?)?;
        Ok(boosted(q, self.boost(m, "simple_query_string")?))
    }

    fn simple(
        &self,
        q: &SimpleQuery,
        fields: &[(String, f32)],
        and: bool,
        lenient: bool,
    ) -> Result<LeafQuery> {
        let across = |make: &dyn Fn(&str) -> Result<LeafQuery>| -> Result<LeafQuery> {
            let mut should = Vec::new();
            for (f, boost) in fields {
                let q = make(f)?;
                if q != LeafQuery::None {
                    should.push(boosted(q, *boost));
                }
            }
            Ok(match should.len() {
                0 => LeafQuery::None,
                1 => should.remove(0),
                _ => bool_query(vec![], should, None),
            })
        };
        let opts = MatchOptions {
            operator_and: and,
            minimum_should_match: None,
            fuzziness: None,
            transpositions: true,
            zero_terms_all: false,
            lenient,
        };
        match q {
            SimpleQuery::Text(text) => across(&|f| self.match_field(f, text, &opts)),
            SimpleQuery::Phrase { text, slop } => across(&|f| self.phrase_field(f, text, false, *slop, 50)),
            SimpleQuery::Prefix(prefix) => across(&|f| {
                Ok(match self.column(f) {
                    Some(col) => LeafQuery::Prefix {
                        prefix: if col.mapping.ty == FieldType::Text {
                            prefix.to_lowercase()
                        } else {
                            prefix.clone()
                        },
                        path: col.path,
                    },
                    None => LeafQuery::None,
                })
            }),
            SimpleQuery::Fuzzy { term, distance } => across(&|f| {
                Ok(match self.column(f) {
                    Some(col) => LeafQuery::Fuzzy {
                        term: if col.mapping.ty == FieldType::Text {
                            term.to_lowercase()
                        } else {
                            term.clone()
                        },
                        path: col.path,
                        distance: (*distance).min(2),
                        transpositions: true,
                    },
                    None => LeafQuery::None,
                })
            }),
            SimpleQuery::Bool {
                must,
                should,
                must_not,
            } => {
                let lower = |qs: &[SimpleQuery]| -> Result<Vec<LeafQuery>> {
                    qs.iter().map(|q| self.simple(q, fields, and, lenient)).collect()
                };
                let must = lower(must)?;
                let should = lower(should)?;
                let must_not: Vec<LeafQuery> = lower(must_not)?
                    .into_iter()
                    .filter(|q| *q != LeafQuery::None)
                    .collect();
                if must.contains(&LeafQuery::None) {
                    return Ok(LeafQuery::None);
                }
                let msm = (must.is_empty() && !should.is_empty()).then_some(1);
                if must.is_empty() && should.is_empty() && must_not.is_empty() {
                    return Ok(LeafQuery::None);
                }
                Ok(LeafQuery::Bool {
                    must,
                    should,
                    must_not,
                    filter: vec![],
                    minimum_should_match: msm,
                })
            }
        }
    }
}

struct MatchOptions<'a> {
    operator_and: bool,
    minimum_should_match: Option<&'a Value>,
    fuzziness: Option<&'a Value>,
    transpositions: bool,
    zero_terms_all: bool,
    lenient: bool,
}

/// Integer fields compare against integer bounds.
fn int_bound(col: &Column, b: Bound<TermValue>) -> Bound<TermValue> {
    if col.mapping.ty.integer_range().is_none() {
        return b;
    }
    let to_int = |v: TermValue| match v {
        TermValue::F64(f) => TermValue::I64(f.clamp(i64::MIN as f64, i64::MAX as f64) as i64),
        other => other,
    };
    match b {
        Bound::Included(v) => Bound::Included(to_int(v)),
        Bound::Excluded(v) => Bound::Excluded(to_int(v)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// A date value (epoch millis, or a string in `format`, default
/// `strict_date_optional_time||epoch_millis`, with date math) in UTC.
pub fn resolve_date(v: &Value, format: Option<&str>, now_ms: i64, round_up: bool) -> Result<i64> {
    parse_date(v, format, None, now_ms, round_up)
}

fn parse_date(
    v: &Value,
    format: Option<&str>,
    tz: Option<&TimeZone>,
    now_ms: i64,
    round_up: bool,
) -> Result<i64> {
    // Numbers are epoch milliseconds, or seconds under an `epoch_second`
    // format without `epoch_millis`.
    let seconds = format.is_some_and(|f| {
        let alternatives: Vec<&str> = f.split("||").collect();
        alternatives.contains(&"epoch_second") && !alternatives.contains(&"epoch_millis")
    });
    if let Some(n) = v.as_i64() {
        return Ok(if seconds { n.saturating_mul(1000) } else { n });
    }
    if let Some(f) = v.as_f64() {
        return Ok((if seconds { f * 1000.0 } else { f }) as i64);
    }
    let text = v
        .as_str()
        .ok_or_else(|| shard_error(format!("failed to parse date field [{}]", display(v))))?;
    let format_text = format
        .unwrap_or(quidditch_index::date::DateFormat::DEFAULT)
        .to_string();
    let parser = quidditch_index::date::DateFormat::parse(&format_text)
        .map_err(|e| Error::illegal_argument(e.to_string()))?;
    let utc = TimeZone::utc();
    let tz = tz.unwrap_or(&utc);
    // Like Elasticsearch's round-up parser, a date without a time of day
    // stands for the last millisecond of its period when rounding up
    // (`lte 2024-01-01`, `lte 2024-01`).
    let anchor = |s: &str| {
        parser.parse_period(s).map(|(start, end)| {
            let ms = if round_up { end } else { start };
            if *tz == TimeZone::utc() || has_zone(s) {
                ms
            } else {
                ms - tz.offset_ms_at(start)
            }
        })
    };
    parse_date_math(text, now_ms, round_up, tz, &anchor).map_err(|reason| {
        // The date module names the field's text and format itself; the root
        // cause Elasticsearch reports is the innermost reason.
        let inner = reason.split_once(": [").map_or(reason.as_str(), |(_, rest)| {
            rest.strip_suffix(']').unwrap_or(rest)
        });
        Error::new(400, "parse_exception", inner.to_string()).on_shards()
    })
}

/// An IPv4 CIDR block (`10.0.1.0/24`) over IPs stored in their text form:
/// the fixed leading octets are a prefix, a partly fixed octet lists its
/// values.
fn cidr_query(path: &str, cidr: &str) -> Result<LeafQuery> {
    let invalid = || {
        shard_error(format!(
            "failed to create query: Expected [ip/prefix] but was [{cidr}]"
        ))
    };
    let (ip, len) = cidr.split_once('/').ok_or_else(invalid)?;
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| invalid())?;
    let len: u32 = len.parse().map_err(|_| invalid())?;
    if len > 32 {
        return Err(invalid());
    }
    let octets = ip.octets();
    let full = (len / 8) as usize;
    let fixed: Vec<String> = octets[..full].iter().map(u8::to_string).collect();
    if full == 4 {
        return Ok(LeafQuery::Term {
            path: path.to_string(),
            value: TermValue::Str(fixed.join(".")),
        });
    }
    if len.is_multiple_of(8) {
        return Ok(LeafQuery::ConstantScore {
            query: Box::new(if full == 0 {
                LeafQuery::Exists {
                    path: path.to_string(),
                }
            } else {
                LeafQuery::Prefix {
                    path: path.to_string(),
                    prefix: format!("{}.", fixed.join(".")),
                }
            }),
            score: 1.0,
        });
    }
    let free_bits = 8 - len % 8;
    let first = octets[full] & !((1u16 << free_bits) - 1) as u8;
    let last = u16::from(first) + (1u16 << free_bits) - 1;
    let should = (u16::from(first)..=last)
        .map(|octet| {
            let mut parts = fixed.clone();
            parts.push(octet.to_string());
            let text = parts.join(".");
            if full == 3 {
                LeafQuery::Term {
                    path: path.to_string(),
                    value: TermValue::Str(text),
                }
            } else {
                LeafQuery::Prefix {
                    path: path.to_string(),
                    prefix: format!("{text}."),
                }
            }
        })
        .collect::<Vec<_>>();
    Ok(LeafQuery::ConstantScore {
        query: Box::new(bool_query(vec![], should, Some(1))),
        score: 1.0,
    })
}

fn has_zone(s: &str) -> bool {
    s.ends_with('Z') || s.rfind(['+', '-']).is_some_and(|i| i > 10 && s.contains('T'))
}

/// Elasticsearch's refusal of a `prefix`, `wildcard`, `regexp` or `fuzzy`
/// query on a field whose values are not strings.
fn strings_only(clause: &str, field: &str, col: &Column) -> Result<()> {
    match takes_patterns(col.mapping.ty) {
        true => Ok(()),
        false => Err(shard_error(strings_only_reason(clause, field, col.mapping.ty))),
    }
}

/// Reads `v` as a query value for a field of the integer type `ty`.
fn integer_value(ty: FieldType, v: &Value) -> IntegerValue {
    match v {
        Value::Number(n) => mapping::integer_value(ty, &n.to_string()),
        Value::String(s) => mapping::integer_value(ty, s),
        _ => IntegerValue::NotANumber,
    }
}

/// Elasticsearch's error for a query value beyond the range of `ty`.
fn out_of_range(ty: FieldType, v: &Value) -> Error {
    let kind = match ty {
        FieldType::Long => "a long",
        _ => "an integer",
    };
    shard_error(format!(
        "failed to create query: Value [{}] is out of range for {kind}",
        display(v)
    ))
}

/// Elasticsearch's error for a query value that is not a number.
fn not_a_number(v: &Value) -> Error {
    shard_error(format!(
        "failed to create query: For input string: \"{}\"",
        display(v)
    ))
}

fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn regex_syntax_check(pattern: &str) -> Result<()> {
    regex::Regex::new(pattern).map(|_| ()).map_err(|e| {
        shard_error(format!(
            "failed to create query: invalid regular expression [{pattern}]: {e}"
        ))
    })
}

/// Rejects query strings tantivy's grammar cannot read, before any shard runs.
fn check_query_string(query: &str) -> Result<()> {
    tantivy::query_grammar::parse_query(query)
        .map(|_| ())
        .map_err(|_| shard_error(format!("Failed to parse query [{query}]")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Integer query values as Elasticsearch 8.15 reads them: exact
    /// integers in any spelling, fractions apart, a long's range for longs
    /// and an integer's for the other integer types.
    #[test]
    fn integer_values_are_read_as_elasticsearch_reads_them() {
        let read = |ty, v: Value| match integer_value(ty, &v) {
            IntegerValue::Exact(n) => format!("exact {n}"),
            IntegerValue::Fraction(f) => format!("fraction {f}"),
            IntegerValue::OutOfRange => out_of_range(ty, &v).reason.clone(),
            IntegerValue::NotANumber => not_a_number(&v).reason.clone(),
        };
        let range =
            |v: &str, kind: &str| format!("failed to create query: Value [{v}] is out of range for {kind}");
        for (ty, v, want) in [
            (FieldType::Long, json!(" 5 "), "exact 5".to_string()),
            (FieldType::Long, json!("5.0"), "exact 5".into()),
            (FieldType::Long, json!("1e3"), "exact 1000".into()),
            (FieldType::Long, json!(-1.5), "fraction -1.5".into()),
            (FieldType::Long, json!(i64::MIN), format!("exact {}", i64::MIN)),
            (FieldType::Long, json!(i64::MAX), format!("exact {}", i64::MAX)),
            (
                FieldType::Long,
                json!(u64::MAX),
                range(&u64::MAX.to_string(), "a long"),
            ),
            (
                FieldType::Long,
                json!("-9223372036854775809"),
                range("-9223372036854775809", "a long"),
            ),
            (FieldType::Long, json!("1e19"), range("1e19", "a long")),
            (
                FieldType::Integer,
                json!(3_000_000_000i64),
                range("3000000000", "an integer"),
            ),
            (
                FieldType::Integer,
                json!(3_000_000_000.5),
                "fraction 3000000000.5".into(),
            ),
            (FieldType::Byte, json!(200), "exact 200".into()),
            (
                FieldType::Short,
                json!("-2147483649"),
                range("-2147483649", "an integer"),
            ),
            (
                FieldType::Long,
                json!("abc"),
                "failed to create query: For input string: \"abc\"".into(),
            ),
            (
                FieldType::Long,
                json!(true),
                "failed to create query: For input string: \"true\"".into(),
            ),
        ] {
            assert_eq!(read(ty, v.clone()), want, "{ty:?} {v}");
        }
    }

    #[test]
    fn index_queries_take_the_whole_index_or_nothing() -> Result<()> {
        let mapping = Mapping::default();
        let ctx = QueryContext {
            index: "logs-2",
            mapping: &mapping,
            now_ms: 0,
        };
        let all = |boost: f32| LeafQuery::ConstantScore {
            query: Box::new(LeafQuery::All),
            score: boost,
        };
        for (query, matches) in [
            (json!({"term": {"_index": "logs-2"}}), true),
            (json!({"term": {"_index": {"value": "logs-1"}}}), false),
            (json!({"terms": {"_index": ["a", "logs-2"]}}), true),
            (json!({"prefix": {"_index": "logs-"}}), true),
            (
                json!({"prefix": {"_index": {"value": "LOGS", "case_insensitive": true}}}),
                true,
            ),
            (json!({"wildcard": {"_index": "l*-?"}}), true),
            (json!({"wildcard": {"_index": "l*-??"}}), false),
            (json!({"match": {"_index": "logs-2"}}), true),
            (
                json!({"term": {"_index": {"value": "Logs-2", "case_insensitive": true}}}),
                true,
            ),
            (json!({"term": {"_index": "Logs-2"}}), false),
        ] {
            let want = if matches { all(1.0) } else { LeafQuery::None };
            assert_eq!(lower(&query, &ctx)?, want, "{query}");
        }
        assert_eq!(
            lower(
                &json!({"term": {"_index": {"value": "logs-2", "boost": 2.0}}}),
                &ctx
            )?,
            all(2.0)
        );
        assert!(lower(&json!({"regexp": {"_index": "logs.*"}}), &ctx).is_err());
        Ok(())
    }
}
