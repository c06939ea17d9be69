//! Highlighting: the terms a query searches each field for, and the
//! fragments of a field's text with those terms marked, as Elasticsearch's
//! unified highlighter answers.

use std::collections::{HashMap, HashSet};

use tantivy::Term;
use tantivy::query::{BooleanQuery, Occur, Query};
use tantivy::schema::Type;
use tantivy::tokenizer::{TextAnalyzer, TokenizerManager};

use crate::error::{Error, Result};
use crate::mapping::{FieldType, Mapping};
use crate::query::LeafQuery;
use crate::schema;

/// The terms a query searches for, by field path: analyzed tokens of text
/// fields and whole values of the others (as strings).
#[derive(Debug, Default, Clone)]
pub struct QueryTerms {
    text: HashMap<String, HashSet<String>>,
    values: HashMap<String, HashSet<String>>,
}

impl QueryTerms {
    /// The terms of `query` over an index with `mapping`: those of the
    /// tantivy query it compiles to (terms, term sets, phrases; not the
    /// terms that prefixes, wildcards, regular expressions and fuzzy
    /// queries expand to in a shard), but for those it must not match.
    pub fn of(query: &LeafQuery, mapping: &Mapping) -> Result<QueryTerms> {
        // Compiled for a shard without fields of their own, so that every
        // term carries its path.
        let index = tantivy::Index::create_in_ram(schema::build([]));
        let fields = schema::Fields::of(&index.schema())?;
        let compiled = without_negations(query).compile(mapping, &fields, &index)?;
        let mut out = QueryTerms::default();
        positive_terms(compiled.as_ref(), &mut |term| {
            let into = if term.field() == fields.text {
                &mut out.text
            } else if term.field() == fields.kw {
                &mut out.values
            } else {
                return;
            };
            if let Some((path, value)) = json_str_term(term) {
                into.entry(path).or_default().insert(value);
            }
        });
        Ok(out)
    }

    /// Whether the query searches nothing these terms could mark.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty() && self.values.is_empty()
    }

    /// The terms to mark in field `path` of type `ty`: those searched in it,
    /// or with `any_field`, those searched in any field of its kind.
    fn for_field(&self, path: &str, ty: FieldType, any_field: bool) -> HashSet<&str> {
        let by_path = if ty == FieldType::Text {
            &self.text
        } else {
            &self.values
        };
        by_path
            .iter()
            .filter(|(p, _)| any_field || p.as_str() == path)
            .flat_map(|(_, terms)| terms.iter().map(String::as_str))
            .collect()
    }
}

/// `query` without the clauses documents must not match, whose terms are
/// not marked.
fn without_negations(query: &LeafQuery) -> LeafQuery {
    let all = |queries: &[LeafQuery]| queries.iter().map(without_negations).collect();
    match query {
        LeafQuery::Bool {
            must,
            should,
            filter,
            minimum_should_match,
            ..
        } => LeafQuery::Bool {
            must: all(must),
            should: all(should),
            must_not: vec![],
            filter: all(filter),
            minimum_should_match: *minimum_should_match,
        },
        LeafQuery::Boost { query, boost } => LeafQuery::Boost {
            query: Box::new(without_negations(query)),
            boost: *boost,
        },
        LeafQuery::ConstantScore { query, score } => LeafQuery::ConstantScore {
            query: Box::new(without_negations(query)),
            score: *score,
        },
        LeafQuery::DisMax { queries, tie_breaker } => LeafQuery::DisMax {
            queries: all(queries),
            tie_breaker: *tie_breaker,
        },
        other => other.clone(),
    }
}

/// Visits the terms of a compiled query, but for those of the clauses of
/// its boolean queries that must not match (a query string's `-term`).
fn positive_terms<'a>(query: &'a dyn Query, visit: &mut dyn FnMut(&'a Term)) {
    match query.downcast_ref::<BooleanQuery>() {
        Some(boolean) => {
            for (occur, clause) in boolean.clauses() {
                if *occur != Occur::MustNot {
                    positive_terms(clause.as_ref(), visit);
                }
            }
        }
        None => query.query_terms(&mut |term, _| visit(term)),
    }
}

/// The path and text of a string term of a JSON field.
fn json_str_term(term: &Term) -> Option<(String, String)> {
    let path = term.get_json_path()?.replace('\u{1}', ".");
    if term.value().json_path_type()? != Type::Str {
        return None;
    }
    // The value bytes: the path, its end byte, the value's type, the text.
    let bytes = term.serialized_value_bytes();
    let end = bytes.iter().position(|&b| b == 0)?;
    let text = std::str::from_utf8(bytes.get(end + 2..)?).ok()?;
    Some((path, text.to_string()))
}

/// How a field's fragments are made.
#[derive(Debug, Clone, PartialEq)]
pub struct FragmentOptions {
    /// Put before each marked term.
    pub pre_tag: String,
    /// Put after each marked term.
    pub post_tag: String,
    /// About how many characters a fragment holds.
    pub fragment_size: usize,
    /// How many fragments at most; 0 marks the whole value as one.
    pub number_of_fragments: usize,
    /// Characters of the start of the first value to answer when nothing
    /// is marked (0: none).
    pub no_match_size: usize,
    /// Mark the terms searched in any field, not only in this one.
    pub any_field: bool,
    /// Order fragments by how many marks they hold, not as in the text.
    pub order_by_score: bool,
    /// Escape the text as HTML.
    pub html: bool,
}

impl Default for FragmentOptions {
    fn default() -> FragmentOptions {
        FragmentOptions {
            pre_tag: "<em>".into(),
            post_tag: "</em>".into(),
            fragment_size: 100,
            number_of_fragments: 5,
            no_match_size: 0,
            any_field: false,
            order_by_score: false,
            html: false,
        }
    }
}

/// The highlighted fragments of the values of field `path` (of type `ty`)
/// of one document; empty when nothing is marked and `no_match_size` is 0.
pub fn fragments(
    values: &[&str],
    path: &str,
    ty: FieldType,
    terms: &QueryTerms,
    options: &FragmentOptions,
) -> Result<Vec<String>> {
    let wanted = terms.for_field(path, ty, options.any_field);
    let mut analyzer = TokenizerManager::default()
        .get("default")
        .ok_or_else(|| Error::Internal("default tokenizer missing".into()))?;
    // Each fragment with its number of marks.
    let mut found: Vec<(usize, String)> = Vec::new();
    for value in values {
        let marks = if ty == FieldType::Text {
            token_marks(&mut analyzer, value, &wanted)
        } else if wanted.contains(value) {
            vec![(0, value.len())]
        } else {
            vec![]
        };
        if marks.is_empty() {
            continue;
        }
        // A keyword value is one term, marked whole.
        if options.number_of_fragments == 0 || ty != FieldType::Text {
            found.push((marks.len(), marked(value, 0..value.len(), &marks, options)));
            continue;
        }
        for range in pieces(value, options.fragment_size) {
            let inside: Vec<(usize, usize)> = marks
                .iter()
                .copied()
                .filter(|&(from, to)| from >= range.start && to <= range.end)
                .collect();
            if !inside.is_empty() {
                found.push((inside.len(), marked(value, range, &inside, options)));
            }
        }
    }
    if found.is_empty() {
        return Ok(no_match(values, options));
    }
    // The fragments with the most marks (the first of equals), in the
    // text's order unless ordered by score.
    let limit = match options.number_of_fragments {
        0 => found.len(),
        n => n,
    };
    let mut ranked: Vec<(usize, (usize, String))> = found.into_iter().enumerate().collect();
    ranked.sort_by_key(|(at, (marks, _))| (std::cmp::Reverse(*marks), *at));
    ranked.truncate(limit);
    if !options.order_by_score {
        ranked.sort_by_key(|(at, _)| *at);
    }
    Ok(ranked.into_iter().map(|(_, (_, text))| text).collect())
}

/// Byte ranges of the tokens of `text` that are among `wanted`, analyzed
/// as text fields are indexed.
fn token_marks(analyzer: &mut TextAnalyzer, text: &str, wanted: &HashSet<&str>) -> Vec<(usize, usize)> {
    let mut stream = analyzer.token_stream(text);
    let mut marks = Vec::new();
    while let Some(token) = stream.next() {
        if wanted.contains(token.text.as_str()) {
            marks.push((token.offset_from, token.offset_to));
        }
    }
    marks
}

/// The fragments of `text`: its sentences, a sentence longer than
/// `size` characters cut at the first word boundary past `size`, each
/// without the blanks around it.
fn pieces(text: &str, size: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = 0;
    let mut iter = text.char_indices().peekable();
    while let Some((at, c)) = iter.next() {
        chars += 1;
        let next = iter.peek().map(|&(_, n)| n);
        let end = at + c.len_utf8();
        let sentence_end = matches!(c, '.' | '!' | '?') && next.is_none_or(char::is_whitespace) || c == '\n';
        let too_long = chars >= size && c.is_whitespace();
        if sentence_end || too_long {
            out.push(start..end);
            start = end;
            chars = 0;
        }
    }
    if start < text.len() {
        out.push(start..text.len());
    }
    out.into_iter()
        .filter_map(|r| {
            let piece = &text[r.clone()];
            let trimmed = piece.trim();
            if trimmed.is_empty() {
                return None;
            }
            let from = r.start + (piece.len() - piece.trim_start().len());
            Some(from..from + trimmed.len())
        })
        .collect()
}

/// `range` of `text` with the `marks` in it tagged.
fn marked(
    text: &str,
    range: std::ops::Range<usize>,
    marks: &[(usize, usize)],
    options: &FragmentOptions,
) -> String {
    let encode = |s: &str| {
        if options.html {
            html_escape(s)
        } else {
            s.to_string()
        }
    };
    let mut out = String::new();
    let mut at = range.start;
    for &(from, to) in marks {
        out.push_str(&encode(&text[at..from]));
        out.push_str(&options.pre_tag);
        out.push_str(&encode(&text[from..to]));
        out.push_str(&options.post_tag);
        at = to;
    }
    out.push_str(&encode(&text[at..range.end]));
    out
}

/// With `no_match_size`, the start of the first value, cut at a word
/// boundary: what Elasticsearch answers for a field nothing marked.
fn no_match(values: &[&str], options: &FragmentOptions) -> Vec<String> {
    let Some(first) = values.first().filter(|_| options.no_match_size > 0) else {
        return vec![];
    };
    let mut end = first.len();
    for (chars, (at, c)) in first.char_indices().enumerate() {
        if chars >= options.no_match_size && c.is_whitespace() {
            end = at;
            break;
        }
    }
    let text = first[..end].trim();
    if options.html {
        vec![html_escape(text)]
    } else {
        vec![text.to_string()]
    }
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            '/' => out.push_str("&#x2F;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn terms(query: &LeafQuery) -> anyhow::Result<QueryTerms> {
        let mapping = Mapping::from_es(&json!({"properties": {
            "title": {"type": "text", "fields": {"raw": {"type": "keyword"}}},
            "body": {"type": "text"},
            "tag": {"type": "keyword"},
        }}))?;
        Ok(QueryTerms::of(query, &mapping)?)
    }

    #[test]
    fn marks_the_searched_terms_of_the_searched_field() -> anyhow::Result<()> {
        let q = terms(&LeafQuery::Match {
            path: "title".into(),
            text: "Rust programming".into(),
            conjunction: false,
        })?;
        let options = FragmentOptions::default();
        let title = fragments(
            &["The Rust Programming Language"],
            "title",
            FieldType::Text,
            &q,
            &options,
        )?;
        assert_eq!(title, ["The <em>Rust</em> <em>Programming</em> Language"]);
        let body = fragments(&["Rust everywhere"], "body", FieldType::Text, &q, &options)?;
        assert!(body.is_empty());
        let any = FragmentOptions {
            any_field: true,
            ..FragmentOptions::default()
        };
        let body = fragments(&["Rust everywhere"], "body", FieldType::Text, &q, &any)?;
        assert_eq!(body, ["<em>Rust</em> everywhere"]);
        Ok(())
    }

    #[test]
    fn terms_that_must_not_match_are_not_marked() -> anyhow::Result<()> {
        let match_title = |text: &str| LeafQuery::Match {
            path: "title".into(),
            text: text.into(),
            conjunction: false,
        };
        let q = terms(&LeafQuery::Bool {
            must: vec![match_title("rust")],
            should: vec![],
            must_not: vec![match_title("language")],
            filter: vec![],
            minimum_should_match: None,
        })?;
        let options = FragmentOptions::default();
        let out = fragments(&["Rust language"], "title", FieldType::Text, &q, &options)?;
        assert_eq!(out, ["<em>Rust</em> language"]);
        let q = terms(&LeafQuery::QueryString {
            query: "title:rust -title:language".into(),
            fields: vec![],
            conjunction: false,
            lenient: false,
        })?;
        let out = fragments(&["Rust language"], "title", FieldType::Text, &q, &options)?;
        assert_eq!(out, ["<em>Rust</em> language"]);
        Ok(())
    }

    #[test]
    fn long_text_answers_the_sentences_that_hold_marks() -> anyhow::Result<()> {
        let q = terms(&LeafQuery::Match {
            path: "body".into(),
            text: "fox".into(),
            conjunction: false,
        })?;
        let text = "A quick brown fox. Nothing here at all! The fox again? No.";
        let options = FragmentOptions::default();
        let out = fragments(&[text], "body", FieldType::Text, &q, &options)?;
        assert_eq!(out, ["A quick brown <em>fox</em>.", "The <em>fox</em> again?"]);
        let one = FragmentOptions {
            number_of_fragments: 1,
            ..FragmentOptions::default()
        };
        assert_eq!(
            fragments(&[text], "body", FieldType::Text, &q, &one)?,
            ["A quick brown <em>fox</em>."]
        );
        // The fragments with the most marks, in the text's order.
        let two = "One fox. No. A fox and a fox. Fox, fox and fox!";
        let best = FragmentOptions {
            number_of_fragments: 2,
            ..FragmentOptions::default()
        };
        assert_eq!(
            fragments(&[two], "body", FieldType::Text, &q, &best)?,
            [
                "A <em>fox</em> and a <em>fox</em>.",
                "<em>Fox</em>, <em>fox</em> and <em>fox</em>!"
            ]
        );
        let by_score = FragmentOptions {
            order_by_score: true,
            ..best
        };
        assert_eq!(
            fragments(&[two], "body", FieldType::Text, &q, &by_score)?,
            [
                "<em>Fox</em>, <em>fox</em> and <em>fox</em>!",
                "A <em>fox</em> and a <em>fox</em>."
            ]
        );
        let whole = FragmentOptions {
            number_of_fragments: 0,
            ..FragmentOptions::default()
        };
        assert_eq!(
            fragments(&[text], "body", FieldType::Text, &q, &whole)?,
            ["A quick brown <em>fox</em>. Nothing here at all! The <em>fox</em> again? No."]
        );
        let long = "word ".repeat(30) + "fox " + &"word ".repeat(30);
        let out = fragments(&[&long], "body", FieldType::Text, &q, &options)?;
        assert_eq!(out.len(), 1);
        assert!(
            out[0].contains("<em>fox</em>") && out[0].len() < long.len(),
            "{out:?}"
        );
        Ok(())
    }

    #[test]
    fn keyword_values_phrases_and_html() -> anyhow::Result<()> {
        let q = terms(&LeafQuery::Term {
            path: "tag".into(),
            value: crate::query::TermValue::Str("a&b".into()),
        })?;
        let html = FragmentOptions {
            html: true,
            pre_tag: "[".into(),
            post_tag: "]".into(),
            ..FragmentOptions::default()
        };
        assert_eq!(
            fragments(&["a&b", "c"], "tag", FieldType::Keyword, &q, &html)?,
            ["[a&amp;b]"]
        );
        let q = terms(&LeafQuery::Term {
            path: "tag".into(),
            value: crate::query::TermValue::Str("St. Louis! Yes".into()),
        })?;
        let out = fragments(
            &["St. Louis! Yes"],
            "tag",
            FieldType::Keyword,
            &q,
            &FragmentOptions::default(),
        )?;
        assert_eq!(out, ["<em>St. Louis! Yes</em>"]);
        let q = terms(&LeafQuery::MatchPhrase {
            path: "title".into(),
            text: "data systems".into(),
            slop: 0,
        })?;
        let out = fragments(
            &["Data-intensive systems"],
            "title",
            FieldType::Text,
            &q,
            &FragmentOptions::default(),
        )?;
        assert_eq!(out, ["<em>Data</em>-intensive <em>systems</em>"]);
        let no_match = FragmentOptions {
            no_match_size: 5,
            ..FragmentOptions::default()
        };
        let out = fragments(&["nothing to see here"], "body", FieldType::Text, &q, &no_match)?;
        assert_eq!(out, ["nothing"]);
        Ok(())
    }
}
