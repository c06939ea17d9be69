//! The leaf query AST that scans execute, and its compilation to tantivy.
//!
//! Front ends (SQL filter pushdown, the JSON DSL) produce a [`LeafQuery`];
//! it is serializable so that a scan can be shipped to the node holding the
//! shard, and compiled there against the shard's tantivy index.

use std::ops::Bound;

use serde::{Deserialize, Serialize};
use tantivy::columnar::NumericalValue;
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, Occur, PhraseQuery, Query, QueryParser, RangeQuery, TermQuery,
    TermSetQuery,
};
use tantivy::query_grammar::{UserInputAst, UserInputBound, UserInputLeaf};
use tantivy::schema::IndexRecordOption;
use tantivy::tokenizer::TokenizerManager;
use tantivy::{Index, Term};

use crate::error::{Error, Result};
use crate::mapping::{FieldType, Mapping};
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
            },
        }
    }

    /// Whether the query produces relevance scores (has a full-text part).
    pub fn is_scoring(&self) -> bool {
        match self {
            LeafQuery::Match { .. } | LeafQuery::MatchPhrase { .. } | LeafQuery::QueryString { .. } => true,
            LeafQuery::Bool { must, should, .. } => must.iter().chain(should).any(LeafQuery::is_scoring),
            _ => false,
        }
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
            LeafQuery::QueryString { query } => format!("query_string('{query}')"),
            LeafQuery::Ids { ids } => format!("ids({})", ids.join(", ")),
            LeafQuery::Bool {
                must,
                should,
                must_not,
                filter,
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
            LeafQuery::Term { path, value } => Box::new(TermQuery::new(
                self.kw_term(path, value),
                IndexRecordOption::Basic,
            )),
            LeafQuery::Terms { path, values } => {
                Box::new(TermSetQuery::new(values.iter().map(|v| self.kw_term(path, v))))
            }
            LeafQuery::Range { path, lower, upper } => {
                if matches!((lower, upper), (Bound::Unbounded, Bound::Unbounded)) {
                    return self.compile(&LeafQuery::Exists { path: path.clone() });
                }
                let lower = map_bound(lower, |v| self.range_term(path, v));
                let upper = map_bound(upper, |v| self.range_term(path, v));
                Box::new(RangeQuery::new(lower, upper))
            }
            LeafQuery::Exists { path } => Box::new(TermQuery::new(
                Term::from_field_text(self.fields.exists, path),
                IndexRecordOption::Basic,
            )),
            LeafQuery::Prefix { path, prefix } => {
                let lower = self.kw_term(path, &TermValue::Str(prefix.clone()));
                let upper = match prefix_successor(prefix) {
                    Some(next) => Bound::Excluded(self.kw_term(path, &TermValue::Str(next))),
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
                    return Ok(Box::new(TermQuery::new(
                        self.kw_term(path, &value),
                        IndexRecordOption::Basic,
                    )));
                }
                let terms = self.analyze(path, text)?;
                if terms.is_empty() {
                    return Ok(Box::new(EmptyQuery));
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
                    return Ok(Box::new(TermQuery::new(
                        self.kw_term(path, &value),
                        IndexRecordOption::Basic,
                    )));
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
            LeafQuery::QueryString { query } => self.query_string(query)?,
            LeafQuery::Ids { ids } => Box::new(TermSetQuery::new(
                ids.iter().map(|id| Term::from_field_text(self.fields.id, id)),
            )),
            LeafQuery::Bool {
                must,
                should,
                must_not,
                filter,
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
                    if must.is_empty() && filter.is_empty() && should.is_empty() {
                        clauses.push((Occur::Must, Box::new(AllQuery)));
                    }
                    for q in must_not {
                        clauses.push((Occur::MustNot, self.compile(q)?));
                    }
                }
                Box::new(BooleanQuery::new(clauses))
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

    fn kw_term(&self, path: &str, value: &TermValue) -> Term {
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

    /// A range bound: both bounds of a range must have the same numeric type,
    /// and the fast-field range coerces it to each segment's column type.
    fn range_term(&self, path: &str, value: &TermValue) -> Term {
        let mut term = Term::from_field_json_path(self.fields.kw, path, true);
        match value {
            TermValue::F64(f) => {
                term.append_type_and_fast_value(*f);
                term
            }
            other => self.kw_term(path, other),
        }
    }

    fn analyze(&self, path: &str, text: &str) -> Result<Vec<(usize, Term)>> {
        let mut tokenizer = self
            .tokenizers
            .get("default")
            .ok_or_else(|| Error::Internal("default tokenizer missing".into()))?;
        let mut stream = tokenizer.token_stream(text);
        let mut out = Vec::new();
        while let Some(token) = stream.next() {
            let mut term = Term::from_field_json_path(self.fields.text, path, true);
            term.append_type_and_str(&token.text);
            out.push((token.position, term));
        }
        Ok(out)
    }

    fn query_string(&self, query: &str) -> Result<Box<dyn Query>> {
        let ast = tantivy::query_grammar::parse_query(query).map_err(|_| Error::BadRequest {
            es_type: "query_shard_exception",
            reason: format!("Failed to parse query [{query}]"),
        })?;
        let ast = self.rewrite(ast)?;
        let parser = QueryParser::new(
            self.index.schema(),
            vec![self.fields.text],
            self.tokenizers.clone(),
        );
        parser
            .build_query_from_user_input_ast(ast)
            .map_err(|e| Error::BadRequest {
                es_type: "query_shard_exception",
                reason: format!("Failed to parse query [{query}]: {e}"),
            })
    }

    /// Rewrites user field names into the JSON field paths of the shard schema;
    /// unqualified terms search every text field.
    fn rewrite(&self, ast: UserInputAst) -> Result<UserInputAst> {
        Ok(match ast {
            UserInputAst::Clause(clauses) => UserInputAst::Clause(
                clauses
                    .into_iter()
                    .map(|(occur, a)| self.rewrite(a).map(|a| (occur, a)))
                    .collect::<Result<_>>()?,
            ),
            UserInputAst::Boost(inner, boost) => UserInputAst::Boost(Box::new(self.rewrite(*inner)?), boost),
            UserInputAst::Leaf(leaf) => match *leaf {
                UserInputLeaf::Literal(mut lit) => match lit.field_name.take() {
                    Some(name) => {
                        lit.field_name = Some(self.schema_path(&name)?);
                        UserInputAst::Leaf(Box::new(UserInputLeaf::Literal(lit)))
                    }
                    None => {
                        let text_fields: Vec<String> = self
                            .mapping
                            .columns()
                            .into_iter()
                            .filter(|c| c.mapping.ty == FieldType::Text)
                            .map(|c| format!("{}.{}", names::TEXT, c.path))
                            .collect();
                        if text_fields.is_empty() {
                            return Ok(UserInputAst::Clause(vec![]));
                        }
                        UserInputAst::Clause(
                            text_fields
                                .into_iter()
                                .map(|f| {
                                    let mut l = lit.clone();
                                    l.field_name = Some(f);
                                    (
                                        Some(Occur::Should),
                                        UserInputAst::Leaf(Box::new(UserInputLeaf::Literal(l))),
                                    )
                                })
                                .collect(),
                        )
                    }
                },
                UserInputLeaf::Range { field, lower, upper } => {
                    let name = field
                        .ok_or_else(|| Error::illegal_argument("a range in query_string needs a field"))?;
                    let ty = self.field_type(&name)?;
                    let fix = |b: UserInputBound| -> Result<UserInputBound> {
                        if ty != FieldType::Date {
                            return Ok(b);
                        }
                        let conv = |s: String| -> Result<String> {
                            crate::date::parse_iso(&s)
                                .or_else(|| s.parse::<i64>().ok())
                                .map(|ms| ms.to_string())
                                .ok_or_else(|| {
                                    Error::illegal_argument(format!(
                                        "failed to parse date [{s}] for field [{name}]"
                                    ))
                                })
                        };
                        Ok(match b {
                            UserInputBound::Inclusive(s) => UserInputBound::Inclusive(conv(s)?),
                            UserInputBound::Exclusive(s) => UserInputBound::Exclusive(conv(s)?),
                            UserInputBound::Unbounded => UserInputBound::Unbounded,
                        })
                    };
                    UserInputAst::Leaf(Box::new(UserInputLeaf::Range {
                        field: Some(self.schema_path(&name)?),
                        lower: fix(lower)?,
                        upper: fix(upper)?,
                    }))
                }
                UserInputLeaf::Set { field, elements } => {
                    let field = match field {
                        Some(name) => Some(self.schema_path(&name)?),
                        None => None,
                    };
                    UserInputAst::Leaf(Box::new(UserInputLeaf::Set { field, elements }))
                }
                other => UserInputAst::Leaf(Box::new(other)),
            },
        })
    }

    fn schema_path(&self, name: &str) -> Result<String> {
        let root = if self.is_text(name)? {
            names::TEXT
        } else {
            names::KW
        };
        Ok(format!("{root}.{name}"))
    }
}

/// Parses a string into the term value of a column type.
pub fn term_value_from_str(ty: FieldType, s: &str) -> Option<TermValue> {
    Some(match ty {
        FieldType::Keyword | FieldType::Ip | FieldType::Text => TermValue::Str(s.to_string()),
        FieldType::Long | FieldType::Integer | FieldType::Short | FieldType::Byte => {
            TermValue::I64(s.parse().ok()?)
        }
        FieldType::Double | FieldType::Float => TermValue::F64(s.parse().ok()?),
        FieldType::Date => TermValue::I64(crate::date::parse_iso(s).or_else(|| s.parse().ok())?),
        FieldType::Boolean => TermValue::Bool(s.parse().ok()?),
    })
}

fn map_bound<T, U>(b: &Bound<T>, f: impl Fn(&T) -> U) -> Bound<U> {
    match b {
        Bound::Included(v) => Bound::Included(f(v)),
        Bound::Excluded(v) => Bound::Excluded(f(v)),
        Bound::Unbounded => Bound::Unbounded,
    }
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
