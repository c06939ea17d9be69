//! The leaf query AST that scans execute, and its compilation to tantivy.
//!
//! Front ends (SQL filter pushdown, the JSON DSL) produce a [`LeafQuery`];
//! it is serializable so that a scan can be shipped to the node holding the
//! shard, and compiled there against the shard's tantivy index.

use std::ops::Bound;

use serde::{Deserialize, Serialize};
use tantivy::columnar::NumericalValue;
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, DisjunctionMaxQuery, EmptyQuery, ExistsQuery,
    FuzzyTermQuery, InvertedIndexRangeQuery, Occur, PhrasePrefixQuery, PhraseQuery, Query, QueryParser,
    RangeQuery, RegexQuery, TermQuery, TermSetQuery,
};
use tantivy::query_grammar::{Delimiter, UserInputAst, UserInputBound, UserInputLeaf, UserInputLiteral};
use tantivy::schema::{Field, IndexRecordOption, Type};
use tantivy::tokenizer::TokenizerManager;
use tantivy::{Index, Term};

use crate::error::{Error, Result};
use crate::mapping::{FieldType, IntegerValue, Mapping, integer_value};
use crate::schema::{Fields, names};

/// A typed value in a term or range query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TermValue {
    /// Keyword (or IP in its textual form).
    Str(String),
    /// Integer or date (epoch ms).
    I64(i64),
    /// Floating point.
    F64(f64),
    /// Boolean.
    Bool(bool),
}

/// A query a scan runs inside tantivy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LeafQuery {
    /// Every document.
    All,
    /// No document.
    None,
    /// Exact value of a non-text column.
    Term {
        /// Column path.
        path: String,
        /// Value.
        value: TermValue,
    },
    /// Any of the values.
    Terms {
        /// Column path.
        path: String,
        /// Values.
        values: Vec<TermValue>,
    },
    /// Range over a non-text column.
    Range {
        /// Column path.
        path: String,
        /// Lower bound.
        lower: Bound<TermValue>,
        /// Upper bound.
        upper: Bound<TermValue>,
    },
    /// The column has a value.
    Exists {
        /// Column path.
        path: String,
    },
    /// Keyword starts with a prefix.
    Prefix {
        /// Column path.
        path: String,
        /// Prefix.
        prefix: String,
    },
    /// Full-text match: analyzed terms, OR (or AND) of them, scored with BM25.
    Match {
        /// Column path.
        path: String,
        /// Query text.
        text: String,
        /// All terms must match.
        conjunction: bool,
    },
    /// Phrase match.
    MatchPhrase {
        /// Column path.
        path: String,
        /// Phrase text.
        text: String,
        /// Allowed distance between terms.
        slop: u32,
    },
    /// Lucene-style query string (`title:foo AND year:[2000 TO 2010]`).
    QueryString {
        /// The query.
        query: String,
        /// Fields (with boosts) searched by terms without a field; empty:
        /// every field, leniently (as Elasticsearch's default `*`).
        #[serde(default)]
        fields: Vec<(String, f32)>,
        /// Terms without an operator are ANDed (else ORed).
        #[serde(default)]
        conjunction: bool,
        /// Values that do not parse for their field's type match nothing
        /// (else they fail the query).
        #[serde(default)]
        lenient: bool,
    },
    /// Terms within an edit distance of a term.
    Fuzzy {
        /// Column path.
        path: String,
        /// The (analyzed) term.
        term: String,
        /// Maximum edit distance (0 to 2).
        distance: u8,
        /// Whether a transposition counts as one edit.
        transpositions: bool,
    },
    /// A phrase whose last term is a prefix.
    PhrasePrefix {
        /// Column path.
        path: String,
        /// Phrase text.
        text: String,
        /// Maximum number of terms the prefix expands to.
        max_expansions: u32,
    },
    /// Terms matching a regular expression (whole term, Lucene-style anchoring).
    Regexp {
        /// Column path.
        path: String,
        /// Regular expression.
        pattern: String,
        /// Match ignoring case.
        case_insensitive: bool,
    },
    /// Scores of the inner query multiplied by a factor.
    Boost {
        /// Inner query.
        query: Box<LeafQuery>,
        /// Factor.
        boost: f32,
    },
    /// Every match of the inner query scores the same.
    ConstantScore {
        /// Inner query.
        query: Box<LeafQuery>,
        /// The score.
        score: f32,
    },
    /// Best score of the disjuncts plus `tie_breaker` times the others.
    DisMax {
        /// Disjuncts.
        queries: Vec<LeafQuery>,
        /// Weight of the non-best scores.
        tie_breaker: f32,
    },
    /// Document ids.
    Ids {
        /// Ids.
        ids: Vec<String>,
    },
    /// Boolean combination.
    Bool {
        /// Must match, scored.
        must: Vec<LeafQuery>,
        /// Should match.
        should: Vec<LeafQuery>,
        /// Must not match.
        must_not: Vec<LeafQuery>,
        /// Must match, not scored.
        filter: Vec<LeafQuery>,
        /// Least number of `should` clauses that must match.
        #[serde(default)]
        minimum_should_match: Option<u32>,
    },
}

impl LeafQuery {
    /// Conjunction of queries, flattening trivial cases.
    pub fn and(mut queries: Vec<LeafQuery>) -> LeafQuery {
        queries.retain(|q| *q != LeafQuery::All);
        match queries.len() {
            0 => LeafQuery::All,
            1 => queries.remove(0),
            _ => LeafQuery::Bool {
                must: queries,
                should: vec![],
                must_not: vec![],
                filter: vec![],
                minimum_should_match: None,
            },
        }
    }

    /// Whether the query produces relevance scores: every query but `None`
    /// does, as in Elasticsearch (`match_all` scores 1, filters 0).
    pub fn is_scoring(&self) -> bool {
        *self != LeafQuery::None
    }

    /// Short text for `EXPLAIN`.
    pub fn describe(&self) -> String {
        match self {
            LeafQuery::All => "*".into(),
            LeafQuery::None => "none".into(),
            LeafQuery::Term { path, value } => format!("{path}={}", describe_value(value)),
            LeafQuery::Terms { path, values } => format!(
                "{path} IN ({})",
                values.iter().map(describe_value).collect::<Vec<_>>().join(", ")
            ),
            LeafQuery::Range { path, lower, upper } => {
                let lo = match lower {
                    Bound::Included(v) => format!("[{}", describe_value(v)),
                    Bound::Excluded(v) => format!("({}", describe_value(v)),
                    Bound::Unbounded => "(*".into(),
                };
                let hi = match upper {
                    Bound::Included(v) => format!("{}]", describe_value(v)),
                    Bound::Excluded(v) => format!("{})", describe_value(v)),
                    Bound::Unbounded => "*)".into(),
                };
                format!("{path}:{lo} TO {hi}")
            }
            LeafQuery::Exists { path } => format!("exists({path})"),
            LeafQuery::Prefix { path, prefix } => format!("{path}:{prefix}*"),
            LeafQuery::Match {
                path,
                text,
                conjunction,
            } => {
                let op = if *conjunction { ", AND" } else { "" };
                format!("match({path}, '{text}'{op})")
            }
            LeafQuery::MatchPhrase { path, text, slop } => {
                format!("match_phrase({path}, '{text}', slop={slop})")
            }
            LeafQuery::QueryString { query, .. } => format!("query_string('{query}')"),
            LeafQuery::Fuzzy {
                path, term, distance, ..
            } => format!("{path}:{term}~{distance}"),
            LeafQuery::PhrasePrefix { path, text, .. } => format!("match_phrase_prefix({path}, '{text}')"),
            LeafQuery::Regexp { path, pattern, .. } => format!("{path}:/{pattern}/"),
            LeafQuery::Boost { query, boost } => format!("({})^{boost}", query.describe()),
            LeafQuery::ConstantScore { query, score } => {
                format!("constant_score({}, {score})", query.describe())
            }
            LeafQuery::DisMax { queries, tie_breaker } => format!(
                "dis_max([{}], tie_breaker={tie_breaker})",
                queries
                    .iter()
                    .map(LeafQuery::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            LeafQuery::Ids { ids } => format!("ids({})", ids.join(", ")),
            LeafQuery::Bool {
                must,
                should,
                must_not,
                filter,
                minimum_should_match,
            } => {
                let mut parts = Vec::new();
                for (name, qs) in [
                    ("must", must),
                    ("should", should),
                    ("must_not", must_not),
                    ("filter", filter),
                ] {
                    if !qs.is_empty() {
                        let inner: Vec<String> = qs.iter().map(LeafQuery::describe).collect();
                        parts.push(format!("{name}: [{}]", inner.join(", ")));
                    }
                }
                if let Some(n) = minimum_should_match {
                    parts.push(format!("minimum_should_match: {n}"));
                }
                format!("bool({})", parts.join(", "))
            }
        }
    }

    /// Compiles to a tantivy query for a shard of an index with this mapping.
    pub fn compile(&self, mapping: &Mapping, fields: &Fields, index: &Index) -> Result<Box<dyn Query>> {
        let ctx = Compiler {
            mapping,
            fields,
            index,
            tokenizers: index.tokenizers(),
        };
        ctx.compile(self)
    }
}

fn describe_value(v: &TermValue) -> String {
    match v {
        TermValue::Str(s) => format!("'{s}'"),
        TermValue::I64(n) => n.to_string(),
        TermValue::F64(f) => f.to_string(),
        TermValue::Bool(b) => b.to_string(),
    }
}

struct Compiler<'a> {
    mapping: &'a Mapping,
    fields: &'a Fields,
    index: &'a Index,
    tokenizers: &'a TokenizerManager,
}

impl Compiler<'_> {
    fn compile(&self, q: &LeafQuery) -> Result<Box<dyn Query>> {
        Ok(match q {
            LeafQuery::All => Box::new(AllQuery),
            LeafQuery::None => Box::new(EmptyQuery),
            LeafQuery::Term { path, value } => self.term_query(path, value),
            LeafQuery::Terms { path, values } => Box::new(TermSetQuery::new(
                values.iter().filter_map(|v| self.kw_term(path, v)),
            )),
            LeafQuery::Range { path, lower, upper } => {
                if matches!((lower, upper), (Bound::Unbounded, Bound::Unbounded)) {
                    return self.compile(&LeafQuery::Exists { path: path.clone() });
                }
                if self.is_text(path)? {
                    return Ok(self.text_range(path, lower, upper));
                }
                // A bound between two stored values of a `scaled_float` moves
                // to the one inside the range.
                let lower = match lower {
                    Bound::Included(v) => Bound::Included(self.stored(path, v, f64::ceil)),
                    Bound::Excluded(v) => Bound::Excluded(self.stored(path, v, f64::floor)),
                    Bound::Unbounded => Bound::Unbounded,
                };
                let upper = match upper {
                    Bound::Included(v) => Bound::Included(self.stored(path, v, f64::floor)),
                    Bound::Excluded(v) => Bound::Excluded(self.stored(path, v, f64::ceil)),
                    Bound::Unbounded => Bound::Unbounded,
                };
                match (self.range_bound(path, &lower), self.range_bound(path, &upper)) {
                    (Some(lower), Some(upper)) => Box::new(RangeQuery::new(lower, upper)),
                    _ => Box::new(EmptyQuery),
                }
            }
            // Non-text values are columnar: their column says which documents
            // have one. Analyzed text has no column and is marked per document.
            LeafQuery::Exists { path } => match self.mapping.column(path) {
                Some(c) if c.mapping.ty != FieldType::Text => {
                    Box::new(ExistsQuery::new(self.fields.column(path), false))
                }
                // Constant, as the column's `exists` is (and as in
                // Elasticsearch): not a BM25 score of the marker term.
                _ => Box::new(ConstScoreQuery::new(
                    Box::new(TermQuery::new(
                        Term::from_field_text(self.fields.exists, path),
                        IndexRecordOption::Basic,
                    )),
                    1.0,
                )),
            },
            LeafQuery::Prefix { path, prefix } => {
                if self.is_text(path)? {
                    return self.regex(path, &format!("{}.*", regex::escape(prefix)), false);
                }
                let Some(lower) = self.kw_term(path, &TermValue::Str(prefix.clone())) else {
                    return Ok(Box::new(EmptyQuery));
                };
                let upper = match prefix_successor(prefix)
                    .and_then(|next| self.kw_term(path, &TermValue::Str(next)))
                {
                    Some(next) => Bound::Excluded(next),
                    None => Bound::Unbounded,
                };
                Box::new(RangeQuery::new(Bound::Included(lower), upper))
            }
            LeafQuery::Match {
                path,
                text,
                conjunction,
            } => {
                if !self.is_text(path)? {
                    let value = self.parse_kw_value(path, text)?;
                    return Ok(self.term_query(path, &value));
                }
                let mut terms = self.analyze(path, text)?;
                if terms.is_empty() {
                    return Ok(Box::new(EmptyQuery));
                }
                // One term scores the same alone, without a boolean query
                // around it.
                if terms.len() == 1 {
                    let (_, term) = terms.remove(0);
                    return Ok(Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)));
                }
                let occur = if *conjunction { Occur::Must } else { Occur::Should };
                let clauses: Vec<(Occur, Box<dyn Query>)> = terms
                    .into_iter()
                    .map(|(_, t)| {
                        (
                            occur,
                            Box::new(TermQuery::new(t, IndexRecordOption::WithFreqs)) as Box<dyn Query>,
                        )
                    })
                    .collect();
                Box::new(BooleanQuery::new(clauses))
            }
            LeafQuery::MatchPhrase { path, text, slop } => {
                if !self.is_text(path)? {
                    let value = self.parse_kw_value(path, text)?;
                    return Ok(self.term_query(path, &value));
                }
                let terms = self.analyze(path, text)?;
                match terms.len() {
                    0 => Box::new(EmptyQuery),
                    1 => Box::new(TermQuery::new(terms[0].1.clone(), IndexRecordOption::WithFreqs)),
                    _ => {
                        let mut phrase = PhraseQuery::new_with_offset(terms);
                        phrase.set_slop(*slop);
                        Box::new(phrase)
                    }
                }
            }
            LeafQuery::QueryString {
                query,
                fields,
                conjunction,
                lenient,
            } => self.query_string(query, fields, *conjunction, *lenient)?,
            LeafQuery::Fuzzy {
                path,
                term,
                distance,
                transpositions,
            } => {
                let term = if self.is_text(path)? {
                    Some(self.text_term(path, term))
                } else {
                    self.kw_term(path, &TermValue::Str(term.clone()))
                };
                match term {
                    Some(term) => Box::new(FuzzyTermQuery::new(term, *distance, *transpositions)),
                    None => Box::new(EmptyQuery),
                }
            }
            LeafQuery::PhrasePrefix {
                path,
                text,
                max_expansions,
            } => {
                if !self.is_text(path)? {
                    return self.compile(&LeafQuery::Prefix {
                        path: path.clone(),
                        prefix: text.clone(),
                    });
                }
                let terms = self.analyze(path, text)?;
                match terms.as_slice() {
                    [] => Box::new(EmptyQuery),
                    [_] => {
                        let prefix = analyze(text).pop().unwrap_or_default();
                        self.regex(path, &format!("{}.*", regex::escape(&prefix)), false)?
                    }
                    _ => {
                        let mut q = PhrasePrefixQuery::new_with_offset(terms);
                        q.set_max_expansions(*max_expansions);
                        Box::new(q)
                    }
                }
            }
            LeafQuery::Regexp {
                path,
                pattern,
                case_insensitive,
            } => {
                self.field_type(path)?;
                self.regex(path, pattern, *case_insensitive)?
            }
            LeafQuery::Boost { query, boost } => Box::new(BoostQuery::new(self.compile(query)?, *boost)),
            LeafQuery::ConstantScore { query, score } => {
                Box::new(ConstScoreQuery::new(self.compile(query)?, *score))
            }
            LeafQuery::DisMax { queries, tie_breaker } => Box::new(DisjunctionMaxQuery::with_tie_breaker(
                queries.iter().map(|q| self.compile(q)).collect::<Result<_>>()?,
                *tie_breaker,
            )),
            LeafQuery::Ids { ids } => Box::new(TermSetQuery::new(
                ids.iter().map(|id| Term::from_field_text(self.fields.id, id)),
            )),
            LeafQuery::Bool {
                must,
                should,
                must_not,
                filter,
                minimum_should_match,
            } => {
                let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for q in must {
                    clauses.push((Occur::Must, self.compile(q)?));
                }
                for q in filter {
                    clauses.push((
                        Occur::Must,
                        Box::new(tantivy::query::ConstScoreQuery::new(self.compile(q)?, 0.0)),
                    ));
                }
                for q in should {
                    clauses.push((Occur::Should, self.compile(q)?));
                }
                if !must_not.is_empty() {
                    // Only exclusions: every other document matches, unscored
                    // (Elasticsearch adds a match-all filter).
                    if must.is_empty() && filter.is_empty() && should.is_empty() {
                        clauses.push((
                            Occur::Must,
                            Box::new(ConstScoreQuery::new(Box::new(AllQuery), 0.0)),
                        ));
                    }
                    for q in must_not {
                        clauses.push((Occur::MustNot, self.compile(q)?));
                    }
                }
                match minimum_should_match {
                    Some(n) if *n as usize > should.len() => Box::new(EmptyQuery),
                    Some(n) if *n > 0 => {
                        Box::new(BooleanQuery::with_minimum_required_clauses(clauses, *n as usize))
                    }
                    _ => Box::new(BooleanQuery::new(clauses)),
                }
            }
        })
    }

    fn field_type(&self, path: &str) -> Result<FieldType> {
        self.mapping
            .column(path)
            .map(|c| c.mapping.ty)
            .ok_or_else(|| Error::illegal_argument(format!("unknown field [{path}]")))
    }

    fn is_text(&self, path: &str) -> Result<bool> {
        Ok(self.field_type(path)? == FieldType::Text)
    }

    fn parse_kw_value(&self, path: &str, text: &str) -> Result<TermValue> {
        let ty = self.field_type(path)?;
        term_value_from_str(ty, text).ok_or_else(|| {
            Error::illegal_argument(format!(
                "[{text}] is not a valid value for field [{path}] of type [{}]",
                ty.name()
            ))
        })
    }

    /// A value as the index stores it: for a `scaled_float` field the whole
    /// number of units (`value * scaling_factor`), rounded by `round` unless
    /// it is a whole number up to floating-point error; other values as they
    /// are.
    fn stored(&self, path: &str, value: &TermValue, round: fn(f64) -> f64) -> TermValue {
        let Some(column) = self.mapping.column(path) else {
            return value.clone();
        };
        // A `float` field holds its values as f32 (widened back to f64).
        if let (FieldType::Float, TermValue::F64(f)) = (column.mapping.ty, value) {
            return TermValue::F64(f64::from(*f as f32));
        }
        let Some(factor) = column
            .mapping
            .scaling_factor
            .filter(|_| column.mapping.ty == FieldType::ScaledFloat)
        else {
            return value.clone();
        };
        let real = match value {
            TermValue::I64(n) => *n as f64,
            TermValue::F64(f) => *f,
            TermValue::Str(s) => match s.trim().parse::<f64>() {
                Ok(f) => f,
                Err(_) => return value.clone(),
            },
            TermValue::Bool(_) => return value.clone(),
        };
        let units = real * factor;
        let nearest = units.round();
        let units = if (units - nearest).abs() <= nearest.abs().max(1.0) * 4.0 * f64::EPSILON {
            nearest
        } else {
            round(units)
        };
        // `as` saturates at the ends of i64's range.
        TermValue::I64(units as i64)
    }

    /// The query for documents with a value of a non-text column.
    fn term_query(&self, path: &str, value: &TermValue) -> Box<dyn Query> {
        match self.kw_term(path, value) {
            Some(term) => Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
            None => Box::new(EmptyQuery),
        }
    }

    /// The term of a value of a non-text column; `None` when the column
    /// cannot hold it.
    fn kw_term(&self, path: &str, value: &TermValue) -> Option<Term> {
        self.stored_term(path, &self.stored(path, value, f64::round))
    }

    /// The type of the values of a field of its own.
    fn value_type(&self, field: Field) -> Type {
        self.index
            .schema()
            .get_field_entry(field)
            .field_type()
            .value_type()
    }

    /// The term of a value as stored.
    fn stored_term(&self, path: &str, value: &TermValue) -> Option<Term> {
        match self.fields.own(path) {
            Some(field) => own_term(field, self.value_type(field), value),
            None => Some(self.json_term(path, value)),
        }
    }

    /// The term of a value in the JSON field of non-text values.
    fn json_term(&self, path: &str, value: &TermValue) -> Term {
        let mut term = Term::from_field_json_path(self.fields.kw, path, true);
        match value {
            TermValue::Str(s) => term.append_type_and_str(s),
            TermValue::I64(n) => term.append_type_and_fast_value(*n),
            // Tantivy indexes numbers in JSON fields normalized (whole floats as
            // integers); an exact-value term must be normalized the same way.
            TermValue::F64(f) => match NumericalValue::F64(*f).normalize() {
                NumericalValue::I64(n) => term.append_type_and_fast_value(n),
                NumericalValue::U64(n) => term.append_type_and_fast_value(n),
                NumericalValue::F64(f) => term.append_type_and_fast_value(f),
            },
            TermValue::Bool(b) => term.append_type_and_fast_value(*b),
        }
        term
    }

    /// A range bound as a term; `None` when the column cannot hold it, so
    /// that the range matches nothing.
    fn range_bound(&self, path: &str, bound: &Bound<TermValue>) -> Option<Bound<Term>> {
        let Some(field) = self.fields.own(path) else {
            // Both bounds of a range on a JSON field must have the same
            // numeric type, and the fast-field range coerces it to each
            // segment's column type.
            return Some(map_bound(bound, |v| match v {
                TermValue::F64(f) => {
                    let mut term = Term::from_field_json_path(self.fields.kw, path, true);
                    term.append_type_and_fast_value(*f);
                    term
                }
                other => self.json_term(path, other),
            }));
        };
        // Analyzed text has no column to range over, as in the JSON field.
        if !self.index.schema().get_field_entry(field).is_fast() {
            return None;
        }
        let ty = self.value_type(field);
        match bound {
            Bound::Included(v) => own_term(field, ty, v).map(Bound::Included),
            Bound::Excluded(v) => own_term(field, ty, v).map(Bound::Excluded),
            Bound::Unbounded => Some(Bound::Unbounded),
        }
    }

    /// A range over the terms of analyzed text, compared as strings with
    /// bounds that are not analyzed, as Elasticsearch ranges over a `text`
    /// field. In the JSON field, an open end stops at the path's strings.
    fn text_range(&self, path: &str, lower: &Bound<TermValue>, upper: &Bound<TermValue>) -> Box<dyn Query> {
        let json = self.fields.own(path).is_none();
        let bound = |b: &Bound<TermValue>, open: Bound<&str>| match b {
            Bound::Included(TermValue::Str(s)) => Some(Bound::Included(self.text_term(path, s))),
            Bound::Excluded(TermValue::Str(s)) => Some(Bound::Excluded(self.text_term(path, s))),
            Bound::Unbounded if json => Some(map_bound(&open, |s| self.text_term(path, s))),
            Bound::Unbounded => Some(Bound::Unbounded),
            _ => None,
        };
        // The open ends in the JSON field: below and above every string a
        // token can be.
        match (
            bound(lower, Bound::Included("")),
            bound(upper, Bound::Excluded("\u{10FFFF}")),
        ) {
            (Some(lower), Some(upper)) => Box::new(InvertedIndexRangeQuery::new(lower, upper)),
            _ => Box::new(EmptyQuery),
        }
    }

    fn text_term(&self, path: &str, token: &str) -> Term {
        if let Some(field) = self.fields.own(path) {
            return Term::from_field_text(field, token);
        }
        let mut term = Term::from_field_json_path(self.fields.text, path, true);
        term.append_type_and_str(token);
        term
    }

    /// A regular expression over the string terms of a column: the pattern
    /// must match a whole term, as in Lucene.
    fn regex(&self, path: &str, pattern: &str, case_insensitive: bool) -> Result<Box<dyn Query>> {
        let flags = if case_insensitive { "(?i)" } else { "" };
        let (field, full) = match self.fields.own(path) {
            // Only strings match patterns, as in the JSON fields (whose
            // pattern starts with the string type's marker).
            Some(field) if self.value_type(field) != Type::Str => return Ok(Box::new(EmptyQuery)),
            Some(field) => (field, format!("{flags}(?:{pattern})")),
            None => {
                let field = if self.is_text(path)? {
                    self.fields.text
                } else {
                    self.fields.kw
                };
                let json_path: Vec<String> = path.split('.').map(regex::escape).collect();
                (
                    field,
                    format!("{}\\x00s{flags}(?:{pattern})", json_path.join("\\x01")),
                )
            }
        };
        let regex = tantivy_fst::Regex::new(&full)
            .map_err(|e| Error::illegal_argument(format!("invalid regular expression [{pattern}]: {e}")))?;
        Ok(Box::new(RegexQuery::from_regex(regex, field)))
    }

    fn analyze(&self, path: &str, text: &str) -> Result<Vec<(usize, Term)>> {
        let mut tokenizer = self
            .tokenizers
            .get("default")
            .ok_or_else(|| Error::Internal("default tokenizer missing".into()))?;
        let mut stream = tokenizer.token_stream(text);
        let mut out = Vec::new();
        while let Some(token) = stream.next() {
            out.push((token.position, self.text_term(path, &token.text)));
        }
        Ok(out)
    }

    fn query_string(
        &self,
        query: &str,
        fields: &[(String, f32)],
        conjunction: bool,
        lenient: bool,
    ) -> Result<Box<dyn Query>> {
        let ast = tantivy::query_grammar::parse_query(query).map_err(|_| Error::BadRequest {
            es_type: "query_shard_exception",
            reason: format!("Failed to parse query [{query}]"),
        })?;
        let lenient = lenient || fields.is_empty();
        let defaults: Vec<(String, f32)> = if fields.is_empty() {
            self.mapping
                .columns()
                .into_iter()
                .map(|c| (c.path, 1.0))
                .collect()
        } else {
            fields.to_vec()
        };
        let ast = self.rewrite(ast)?;
        let parser = QueryParser::new(
            self.index.schema(),
            vec![self.fields.text],
            self.tokenizers.clone(),
        );
        // Elasticsearch's shard exceptions (a pattern on a field that has no
        // patterns) reach the response as they are; other failures are the
        // query's parse failure.
        self.build(ast, &parser, conjunction, lenient, &defaults)
            .map_err(|e| match e {
                Error::BadRequest { es_type, reason } if es_type != "query_shard_exception" => {
                    Error::BadRequest {
                        es_type,
                        reason: format!("Failed to parse query [{query}]: {reason}"),
                    }
                }
                other => other,
            })
    }

    /// Builds the query of a rewritten query-string AST: boolean structure
    /// and ranges here (ranges as typed [`LeafQuery::Range`]s, so both bounds
    /// have the field's type), terms and phrases by tantivy's parser. When
    /// `lenient`, a value that does not parse for its field's type matches
    /// nothing instead of failing the query, as in Elasticsearch. A term
    /// without a field is the best of its queries over the `defaults` (a
    /// `dis_max`, as Elasticsearch's `best_fields`).
    fn build(
        &self,
        ast: UserInputAst,
        parser: &QueryParser,
        conjunction: bool,
        lenient: bool,
        defaults: &[(String, f32)],
    ) -> Result<Box<dyn Query>> {
        let or_lenient = |built: Result<Box<dyn Query>>| match built {
            Err(Error::BadRequest { .. }) if lenient => Ok(Box::new(EmptyQuery) as Box<dyn Query>),
            other => other,
        };
        Ok(match ast {
            UserInputAst::Clause(clauses) => {
                let default = if conjunction { Occur::Must } else { Occur::Should };
                let mut subs = Vec::with_capacity(clauses.len());
                for (occur, a) in clauses {
                    subs.push((
                        occur.unwrap_or(default),
                        self.build(a, parser, conjunction, lenient, defaults)?,
                    ));
                }
                if !subs.is_empty() && subs.iter().all(|(o, _)| *o == Occur::MustNot) {
                    subs.push((
                        Occur::Must,
                        Box::new(ConstScoreQuery::new(Box::new(AllQuery), 0.0)),
                    ));
                }
                Box::new(BooleanQuery::new(subs))
            }
            UserInputAst::Boost(inner, boost) => Box::new(BoostQuery::new(
                self.build(*inner, parser, conjunction, lenient, defaults)?,
                boost.into_inner() as f32,
            )),
            UserInputAst::Leaf(leaf) => match *leaf {
                UserInputLeaf::Literal(lit) if lit.field_name.is_none() && defaults.is_empty() => {
                    Box::new(EmptyQuery)
                }
                UserInputLeaf::Literal(lit) if lit.field_name.is_none() => {
                    let mut disjuncts = Vec::with_capacity(defaults.len());
                    for (field, boost) in defaults {
                        let leaf = self.literal(field, lit.clone())?;
                        let query = self.build(leaf, parser, conjunction, lenient, defaults)?;
                        disjuncts.push(match *boost {
                            1.0 => query,
                            boost => Box::new(BoostQuery::new(query, boost)) as Box<dyn Query>,
                        });
                    }
                    Box::new(DisjunctionMaxQuery::new(disjuncts))
                }
                UserInputLeaf::Range { field, lower, upper } => {
                    let name = field
                        .ok_or_else(|| Error::illegal_argument("a range in query_string needs a field"))?;
                    let Some(column) = self.mapping.column(&name) else {
                        return Ok(Box::new(EmptyQuery));
                    };
                    or_lenient(self.string_range(name, column.mapping.ty, lower, upper))?
                }
                UserInputLeaf::Literal(lit) if self.is_pattern(&lit) => or_lenient(self.term_pattern(lit))?,
                UserInputLeaf::Literal(UserInputLiteral {
                    field_name: Some(name),
                    phrase,
                    ..
                }) if self.typed_column(&name).is_some() => or_lenient(self.typed_literal(&name, &phrase))?,
                // `field:*` and `field:/pattern/`, of the user's field: as the
                // `exists` and `regexp` queries (an unmapped field matches
                // nothing).
                UserInputLeaf::Exists { field } => match self.mapping.column(&field) {
                    Some(column) => self.compile(&LeafQuery::Exists {
                        path: column.source_path,
                    })?,
                    None => Box::new(EmptyQuery),
                },
                UserInputLeaf::Regex {
                    field: Some(name),
                    pattern,
                } => match self.unpatterned_column(&name) {
                    // As the `regexp` query on such a field (lenient: nothing).
                    Some(ty) => or_lenient(Err(no_patterns("regexp", &name, ty)))?,
                    None if self.mapping.column(&name).is_some() => self.regex(&name, &pattern, false)?,
                    None => Box::new(EmptyQuery),
                },
                UserInputLeaf::Set {
                    field: Some(name),
                    elements,
                } if self.typed_column(&name).is_some() => {
                    let mut values = Vec::with_capacity(elements.len());
                    for e in &elements {
                        match self.typed_value(&name, e) {
                            Ok((value, _)) => values.push(value),
                            Err(Error::BadRequest { .. }) if lenient => {}
                            Err(err) => return Err(err),
                        }
                    }
                    self.compile(&LeafQuery::Terms { path: name, values })?
                }
                other => parser
                    .build_query_from_user_input_ast(UserInputAst::Leaf(Box::new(other)))
                    .map_err(|e| Error::BadRequest {
                        es_type: "query_shard_exception",
                        reason: e.to_string(),
                    })?,
            },
        })
    }

    /// Rewrites user field names into the JSON field paths of the shard
    /// schema; unqualified terms stay, for [`Compiler::build`] to search the
    /// default fields.
    fn rewrite(&self, ast: UserInputAst) -> Result<UserInputAst> {
        Ok(match ast {
            UserInputAst::Clause(clauses) => {
                let mut out = Vec::with_capacity(clauses.len());
                for (occur, a) in clauses {
                    match (occur, self.rewrite(a)?) {
                        // `a AND NOT b` parses as `+a +(-b)`; a required
                        // purely negative group means `-b`, as in Lucene's
                        // classic parser.
                        (Some(Occur::Must) | None, UserInputAst::Clause(inner))
                            if !inner.is_empty() && inner.iter().all(|(o, _)| *o == Some(Occur::MustNot)) =>
                        {
                            out.extend(inner);
                        }
                        (occur, a) => out.push((occur, a)),
                    }
                }
                UserInputAst::Clause(out)
            }
            UserInputAst::Boost(inner, boost) => UserInputAst::Boost(Box::new(self.rewrite(*inner)?), boost),
            UserInputAst::Leaf(leaf) => match *leaf {
                // A term without a field is searched in each default field
                // when the query is built.
                UserInputLeaf::Literal(mut lit) => match lit.field_name.take() {
                    Some(name) => self.literal(&name, lit)?,
                    None => UserInputAst::Leaf(Box::new(UserInputLeaf::Literal(lit))),
                },
                range @ UserInputLeaf::Range { .. } => UserInputAst::Leaf(Box::new(range)),
                UserInputLeaf::Set { field, elements } => {
                    let field = match field {
                        Some(name) if self.typed_column(&name).is_some() => Some(name),
                        Some(name) => Some(self.schema_path(&name)?),
                        None => None,
                    };
                    UserInputAst::Leaf(Box::new(UserInputLeaf::Set { field, elements }))
                }
                other => UserInputAst::Leaf(Box::new(other)),
            },
        })
    }

    /// The type of column `name` when query-string values of it are
    /// typed here (numbers, dates, booleans) rather than by tantivy's
    /// parser, which would read them by the type of the field holding the
    /// column: a field of its own or a JSON field.
    fn typed_column(&self, name: &str) -> Option<FieldType> {
        let ty = self.mapping.column(name)?.mapping.ty;
        (!matches!(ty, FieldType::Keyword | FieldType::Ip | FieldType::Text)).then_some(ty)
    }

    /// A query-string literal of field `name`: a typed column, and a
    /// wildcard or fuzzy term of any mapped column, keep the user's name,
    /// for [`Compiler::build`] to type the value or to match or refuse the
    /// pattern; other literals search the field's schema path.
    fn literal(&self, name: &str, mut lit: UserInputLiteral) -> Result<UserInputAst> {
        lit.field_name = Some(
            if self.typed_column(name).is_some()
                || is_term_pattern(&lit) && self.mapping.column(name).is_some()
            {
                name.to_string()
            } else {
                self.schema_path(name)?
            },
        );
        Ok(UserInputAst::Leaf(Box::new(UserInputLeaf::Literal(lit))))
    }

    /// Whether a query-string literal is a wildcard or fuzzy term of a
    /// mapped column, which keeps the name the user wrote.
    fn is_pattern(&self, lit: &UserInputLiteral) -> bool {
        lit.field_name
            .as_deref()
            .is_some_and(|name| is_term_pattern(lit) && self.mapping.column(name).is_some())
    }

    /// The type of column `name` when it is not a string column (text or
    /// keyword), whose values no prefix, wildcard, regexp or fuzzy query
    /// matches.
    fn unpatterned_column(&self, name: &str) -> Option<FieldType> {
        let ty = self.mapping.column(name)?.mapping.ty;
        (!takes_patterns(ty)).then_some(ty)
    }

    /// A query-string wildcard (`app*`, `ap?le`) or fuzzy (`appel~1`,
    /// `appel~`) term, as Elasticsearch reads them: a term of a text field
    /// lowercased, not analyzed; at most 2 edits, and by the term's length
    /// when the number is left out. Other columns refuse it, as their
    /// `prefix`, `wildcard` and `fuzzy` queries do.
    fn term_pattern(&self, lit: UserInputLiteral) -> Result<Box<dyn Query>> {
        if let Some((name, ty)) = lit
            .field_name
            .as_deref()
            .and_then(|name| Some((name, self.unpatterned_column(name)?)))
        {
            return Err(no_patterns(pattern_clause(&lit), name, ty));
        }
        let path = lit.field_name.unwrap_or_default();
        let mut term = match self.is_text(&path)? {
            true => lit.phrase.to_lowercase(),
            false => lit.phrase,
        };
        if lit.prefix {
            term.push('*');
        }
        if let Some((word, distance)) = fuzzy_term(&term) {
            return self.compile(&LeafQuery::Fuzzy {
                path,
                term: word.to_string(),
                distance,
                transpositions: true,
            });
        }
        self.regex(&path, &wildcard_regex(&term), false)
    }

    /// A query-string value of typed column `name`, as a `term` query's
    /// value is read (a 400 when it does not parse, as in Elasticsearch),
    /// and for a date the last millisecond of the period it names.
    fn typed_value(&self, name: &str, text: &str) -> Result<(TermValue, Option<i64>)> {
        let ty = self
            .typed_column(name)
            .ok_or_else(|| Error::Internal(format!("[{name}] is not typed")))?;
        let bad = || parse_failure(text, name, ty);
        let text = text.trim();
        if ty == FieldType::Date {
            let (start, end) = self.date_period(name, text)?.ok_or_else(bad)?;
            return Ok((TermValue::I64(start), Some(end)));
        }
        let value = match ty {
            FieldType::Boolean => TermValue::Bool(text.parse().map_err(|_| bad())?),
            FieldType::Double | FieldType::Float | FieldType::ScaledFloat => {
                TermValue::F64(finite(text).ok_or_else(bad)?)
            }
            FieldType::Long | FieldType::Integer | FieldType::Short | FieldType::Byte => {
                match integer_value(ty, text) {
                    IntegerValue::Exact(n) => TermValue::I64(n),
                    // No value of the field equals a fraction: it matches
                    // nothing, as in Elasticsearch.
                    IntegerValue::Fraction(f) => TermValue::F64(f),
                    IntegerValue::OutOfRange | IntegerValue::NotANumber => return Err(bad()),
                }
            }
            FieldType::Keyword | FieldType::Ip | FieldType::Text | FieldType::Date => return Err(bad()),
        };
        Ok((value, None))
    }

    /// A date of column `name` in its mapping's format, in epoch millis:
    /// the first and the last millisecond of the period it names.
    fn date_period(&self, name: &str, text: &str) -> Result<Option<(i64, i64)>> {
        let Some(column) = self.mapping.column(name) else {
            return Ok(None);
        };
        let format = column.mapping.date_format()?;
        if let Some(period) = format.parse_period(text) {
            return Ok(Some(period));
        }
        Ok(text
            .parse::<serde_json::Number>()
            .ok()
            .and_then(|n| format.parse_number(&n))
            .map(|ms| (ms, ms)))
    }

    /// The query of a query-string literal of typed column `name`: its
    /// value, or for a date the period it names (a bare day is the whole
    /// day, as for a `term` query on a date).
    fn typed_literal(&self, name: &str, text: &str) -> Result<Box<dyn Query>> {
        let query = match self.typed_value(name, text)? {
            (start, Some(end)) => LeafQuery::Range {
                path: name.to_string(),
                lower: Bound::Included(start),
                upper: Bound::Included(TermValue::I64(end)),
            },
            (value, None) => LeafQuery::Term {
                path: name.to_string(),
                value,
            },
        };
        self.compile(&query)
    }

    /// The query of a query-string range of column `name` of type `ty`.
    fn string_range(
        &self,
        name: String,
        ty: FieldType,
        lower: UserInputBound,
        upper: UserInputBound,
    ) -> Result<Box<dyn Query>> {
        let range = LeafQuery::Range {
            lower: self.string_bound(&name, ty, lower, true)?,
            upper: self.string_bound(&name, ty, upper, false)?,
            path: name,
        };
        self.compile(&range)
    }

    /// A query-string range bound as a typed value of column `name` of type
    /// `ty`: dates as epoch millis, in the field's format or as ISO-8601 or
    /// epoch millis (a bound that includes a period, such as a bare day,
    /// rounds up to its last millisecond, as in Elasticsearch), integers
    /// exactly, fractions rounded inwards.
    fn string_bound(
        &self,
        name: &str,
        ty: FieldType,
        bound: UserInputBound,
        lower: bool,
    ) -> Result<Bound<TermValue>> {
        let (text, inclusive) = match bound {
            UserInputBound::Inclusive(s) => (s, true),
            UserInputBound::Exclusive(s) => (s, false),
            UserInputBound::Unbounded => return Ok(Bound::Unbounded),
        };
        let bad = || parse_failure(&text, name, ty);
        let value = match ty {
            FieldType::Date => {
                let (start, end) = self
                    .date_period(name, &text)
                    .ok()
                    .flatten()
                    .or_else(|| {
                        crate::date::parse_iso(&text).map(|ms| (ms, crate::date::end_of_period(&text, ms)))
                    })
                    .or_else(|| text.parse::<i64>().ok().map(|ms| (ms, ms)))
                    .ok_or_else(bad)?;
                TermValue::I64(if lower != inclusive { end } else { start })
            }
            FieldType::Double | FieldType::Float | FieldType::ScaledFloat => {
                TermValue::F64(finite(&text).ok_or_else(bad)?)
            }
            // An integer bound is exact (beyond 2^53 too); a fraction rounds inwards.
            FieldType::Long | FieldType::Integer | FieldType::Short | FieldType::Byte => {
                match text.parse::<i64>() {
                    Ok(n) => TermValue::I64(n),
                    Err(_) => {
                        let f = finite(&text).ok_or_else(bad)?;
                        TermValue::I64(if lower == inclusive { f.ceil() } else { f.floor() } as i64)
                    }
                }
            }
            FieldType::Boolean => TermValue::Bool(text.parse().map_err(|_| bad())?),
            FieldType::Keyword | FieldType::Ip | FieldType::Text => TermValue::Str(text),
        };
        Ok(if inclusive {
            Bound::Included(value)
        } else {
            Bound::Excluded(value)
        })
    }

    /// The schema path of a field; an unmapped field matches nothing, as in
    /// Elasticsearch, so it maps to a path that holds no terms.
    fn schema_path(&self, name: &str) -> Result<String> {
        if let Some(field) = self.fields.own(name) {
            return Ok(self.index.schema().get_field_name(field).to_string());
        }
        let root = if self.mapping.column(name).is_some() && self.is_text(name)? {
            names::TEXT
        } else {
            names::KW
        };
        Ok(format!("{root}.{name}"))
    }
}

/// The terms the index's text analyzer makes of `text` (what `match`
/// searches for).
pub fn analyze(text: &str) -> Vec<String> {
    analyze_tokens(text).into_iter().map(|t| t.text).collect()
}

/// A term of analyzed text, where it came from, and its position.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyzedToken {
    /// The term.
    pub text: String,
    /// Byte offset of its first character in the text.
    pub start: usize,
    /// Byte offset past its last character.
    pub end: usize,
    /// Its position among the terms.
    pub position: usize,
}

/// The terms the index's text analyzer makes of `text`, with their offsets
/// and positions (what a text field indexes).
pub fn analyze_tokens(text: &str) -> Vec<AnalyzedToken> {
    let Some(mut tokenizer) = TokenizerManager::default().get("default") else {
        return vec![];
    };
    let mut stream = tokenizer.token_stream(text);
    let mut out = Vec::new();
    while let Some(token) = stream.next() {
        out.push(AnalyzedToken {
            text: token.text.clone(),
            start: token.offset_from,
            end: token.offset_to,
            position: token.position,
        });
    }
    out
}

/// The error of a query-string value that does not parse for its field.
fn parse_failure(text: &str, name: &str, ty: FieldType) -> Error {
    Error::illegal_argument(format!(
        "failed to parse [{text}] for field [{name}] of type [{}]",
        ty.name()
    ))
}

/// A finite number (not `NaN` or an infinity).
fn finite(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Parses a string into the term value of a column type.
pub fn term_value_from_str(ty: FieldType, s: &str) -> Option<TermValue> {
    Some(match ty {
        FieldType::Keyword | FieldType::Ip | FieldType::Text => TermValue::Str(s.to_string()),
        FieldType::Long | FieldType::Integer | FieldType::Short | FieldType::Byte => {
            TermValue::I64(s.parse().ok()?)
        }
        FieldType::Double | FieldType::Float | FieldType::ScaledFloat => TermValue::F64(s.parse().ok()?),
        FieldType::Date => TermValue::I64(crate::date::parse_iso(s).or_else(|| s.parse().ok())?),
        FieldType::Boolean => TermValue::Bool(s.parse().ok()?),
    })
}

/// The term of a value in a field of its own of type `ty`; `None` when no
/// value of the field can equal it (as no term of a JSON field's other
/// types would match).
fn own_term(field: Field, ty: Type, value: &TermValue) -> Option<Term> {
    Some(match (ty, value) {
        (Type::Str, TermValue::Str(s)) => Term::from_field_text(field, s),
        (Type::I64, TermValue::I64(n)) => Term::from_field_i64(field, *n),
        (Type::I64, TermValue::F64(f)) if f.fract() == 0.0 && f.abs() < i64::MAX as f64 => {
            Term::from_field_i64(field, *f as i64)
        }
        (Type::F64, TermValue::F64(f)) => Term::from_field_f64(field, *f),
        (Type::F64, TermValue::I64(n)) => Term::from_field_f64(field, *n as f64),
        (Type::Bool, TermValue::Bool(b)) => Term::from_field_bool(field, *b),
        _ => return None,
    })
}

fn map_bound<T, U>(b: &Bound<T>, f: impl Fn(&T) -> U) -> Bound<U> {
    match b {
        Bound::Included(v) => Bound::Included(f(v)),
        Bound::Excluded(v) => Bound::Excluded(f(v)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Whether a query-string literal is a wildcard (`app*`, `ap?le`) or
/// fuzzy (`appel~1`) term: an unquoted word (a quoted one is a phrase, and
/// its `~` a slop) without escapes, which tantivy's grammar keeps whole.
fn is_term_pattern(lit: &UserInputLiteral) -> bool {
    lit.delimiter == Delimiter::None
        && !lit.phrase.contains('\\')
        && (lit.prefix || lit.phrase.contains(['*', '?']) || fuzzy_term(&lit.phrase).is_some())
}

/// The query a query-string pattern term stands for: `prefix` (`app*`,
/// one `*` at the end), `fuzzy` (`appel~1`) or `wildcard` (`ap?le`, `*ple`).
fn pattern_clause(lit: &UserInputLiteral) -> &'static str {
    let stem = match lit.prefix {
        true => Some(lit.phrase.as_str()),
        false => lit.phrase.strip_suffix('*'),
    };
    if fuzzy_term(&lit.phrase).is_some() {
        "fuzzy"
    } else if stem.is_some_and(|stem| !stem.is_empty() && !stem.contains(['*', '?'])) {
        "prefix"
    } else {
        "wildcard"
    }
}

/// Elasticsearch's refusal of a pattern query on a column that is not a
/// string column, as a query-string query reports it.
fn no_patterns(clause: &str, name: &str, ty: FieldType) -> Error {
    Error::BadRequest {
        es_type: "query_shard_exception",
        reason: strings_only_reason(clause, name, ty),
    }
}

/// A fuzzy query-string term (`word~2`, or `word~` for Elasticsearch's
/// `AUTO` distance by length): the word and its edit distance.
fn fuzzy_term(term: &str) -> Option<(&str, u8)> {
    let (word, distance) = term.rsplit_once('~')?;
    if word.is_empty() || word.contains(['*', '?', '~']) {
        return None;
    }
    let distance = match distance {
        "" => auto_fuzziness(word.chars().count(), 3, 6),
        digits => digits.parse::<u8>().ok()?.min(2),
    };
    Some((word, distance))
}

/// Turns a wildcard pattern (`*`, `?`, `\` escapes) into a regular expression.
pub fn wildcard_regex(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push_str(&regex::escape(&next.to_string()));
                }
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out
}

/// Elasticsearch's `AUTO:low,high` fuzziness: no edit for a term shorter
/// than `low` characters, one below `high`, else two.
pub fn auto_fuzziness(len: usize, low: usize, high: usize) -> u8 {
    if len < low {
        0
    } else if len < high {
        1
    } else {
        2
    }
}

/// Whether `prefix`, `wildcard`, `regexp` and `fuzzy` queries match fields
/// of type `ty`: those whose values are strings (text and keyword).
pub fn takes_patterns(ty: FieldType) -> bool {
    matches!(ty, FieldType::Keyword | FieldType::Text)
}

/// Elasticsearch's refusal of a `prefix`, `wildcard`, `regexp` or `fuzzy`
/// query on field `field` of type `ty`, whose values are not strings.
pub fn strings_only_reason(clause: &str, field: &str, ty: FieldType) -> String {
    let fields = match clause {
        "prefix" | "wildcard" => "keyword, text and wildcard",
        _ => "keyword and text",
    };
    format!(
        "Can only use {clause} queries on {fields} fields - not on [{field}] which is of type [{}]",
        ty.name()
    )
}

/// The smallest string greater than every string with this prefix.
fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 {
            0xD7FF => Some('\u{E000}'),
            n => char::from_u32(n + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successor_skips_surrogates() {
        assert_eq!(prefix_successor("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_successor("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
    }
}
