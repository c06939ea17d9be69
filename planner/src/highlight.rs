//! A search body's `highlight` section, and the `highlight` of each hit:
//! the fragments of its text and keyword fields that hold the terms the
//! query searches them for.

use std::collections::HashMap;

use quidditch_index::highlight::{FragmentOptions, QueryTerms, fragments};
use quidditch_index::mapping::FieldType;
use quidditch_index::query::LeafQuery;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::query::{QueryContext, lower};
use crate::search::pattern_matches;
use crate::source::Target;

/// A parsed `highlight` section.
#[derive(Debug, Clone)]
pub struct Highlight {
    fields: Vec<FieldSpec>,
}

/// One entry of `fields`: a name or pattern, with its options.
#[derive(Debug, Clone)]
struct FieldSpec {
    pattern: String,
    options: FragmentOptions,
    /// `highlight_query`: the terms to mark, instead of the search's.
    query: Option<Value>,
}

/// The options an object of the section sets, over those it inherits.
fn parse_options(
    m: &Map<String, Value>,
    base: &FragmentOptions,
    base_query: Option<&Value>,
    top: bool,
) -> Result<(FragmentOptions, Option<Value>)> {
    let mut o = base.clone();
    let mut query = base_query.cloned();
    let bad = |key: &str, what: &str| Error::parsing(format!("[highlight] field [{key}] must be {what}"));
    let count = |key: &str, v: &Value| {
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad(key, "a non-negative integer"))
    };
    let tag = |key: &str, v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(a) => a
            .first()
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| bad(key, "an array of strings")),
        _ => Err(bad(key, "an array of strings")),
    };
    for (key, v) in m {
        match key.as_str() {
            "fields" if top => {}
            "pre_tags" => o.pre_tag = tag(key, v)?,
            "post_tags" => o.post_tag = tag(key, v)?,
            "tags_schema" => match v.as_str() {
                Some("styled") => {
                    o.pre_tag = r#"<em class="hlt1">"#.into();
                    o.post_tag = "</em>".into();
                }
                Some("default") => {}
                _ => {
                    let name = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    return Err(Error::illegal_argument(format!("Unknown tag schema [{name}]")));
                }
            },
            "fragment_size" => o.fragment_size = count(key, v)?.max(1),
            "number_of_fragments" => o.number_of_fragments = count(key, v)?,
            "no_match_size" => o.no_match_size = count(key, v)?,
            "require_field_match" => o.any_field = !v.as_bool().ok_or_else(|| bad(key, "a boolean"))?,
            "order" => {
                o.order_by_score = match v.as_str() {
                    Some("score") => true,
                    Some("none") => false,
                    _ => return Err(bad(key, "[score] or [none]")),
                }
            }
            // As in Elasticsearch, any encoder but `html` is the default one.
            "encoder" => o.html = v.as_str() == Some("html"),
            // Every highlighter type answers as the unified one does here.
            "type" => match v.as_str() {
                Some("unified" | "plain" | "fvh") => {}
                _ => return Err(Error::illegal_argument(format!("unknown highlighter type [{v}]"))),
            },
            "highlight_query" if v.is_object() => query = Some(v.clone()),
            // Options of Elasticsearch's other highlighters and of its
            // break iterators, which the fragments here do not use.
            "boundary_scanner"
            | "boundary_chars"
            | "boundary_max_scan"
            | "boundary_scanner_locale"
            | "fragmenter"
            | "phrase_limit"
            | "matched_fields"
            | "force_source"
            | "max_analyzed_offset"
            | "highlight_filter"
            | "fragment_offset"
            | "options" => {}
            "highlight_query" => return Err(bad(key, "a query object")),
            other => {
                let object = if top { "highlight" } else { "highlight_field" };
                return Err(Error::x_content(format!("[{object}] unknown field [{other}]")));
            }
        }
    }
    Ok((o, query))
}

/// Parses a `highlight` section.
pub fn parse(v: &Value) -> Result<Highlight> {
    let m = v
        .as_object()
        .ok_or_else(|| Error::parsing("[highlight] must be an object"))?;
    let (options, query) = parse_options(m, &FragmentOptions::default(), None, true)?;
    let entries: Vec<(&String, &Value)> = match m.get("fields") {
        Some(Value::Object(fields)) => fields.iter().collect(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|item| match item.as_object() {
                Some(one) if one.len() == 1 => Ok(one.iter().next().expect("one entry")),
                _ => Err(Error::parsing(
                    "[highlight] [fields] entries of an array must be objects of one field",
                )),
            })
            .collect::<Result<_>>()?,
        Some(_) => {
            return Err(Error::parsing(
                "[highlight] [fields] must be an object or an array",
            ));
        }
        None => return Err(Error::parsing("[highlight] requires [fields]")),
    };
    let fields = entries
        .into_iter()
        .map(|(pattern, spec)| {
            let spec = spec
                .as_object()
                .ok_or_else(|| Error::parsing(format!("[highlight] field [{pattern}] must be an object")))?;
            let (options, query) = parse_options(spec, &options, query.as_ref(), false)?;
            Ok(FieldSpec {
                pattern: pattern.clone(),
                options,
                query,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Highlight { fields })
}

/// A field of one index to highlight.
#[derive(Debug)]
struct Field {
    path: String,
    /// Where its values are in `_source` (a multi-field's parent).
    source_path: String,
    ty: FieldType,
    options: FragmentOptions,
    /// Index into [`Prepared::terms`].
    terms: usize,
}

/// What highlighting the hits of a search needs, per index.
#[derive(Debug)]
pub struct Prepared {
    fields: HashMap<String, Vec<Field>>,
    terms: Vec<QueryTerms>,
}

impl Highlight {
    /// The fields to highlight in each target and the terms to mark in
    /// them; `query_of` is the search's query over a target.
    pub fn prepare(
        &self,
        targets: &[Target],
        query_of: &dyn Fn(&Target) -> Result<LeafQuery>,
        now_ms: i64,
    ) -> Result<Prepared> {
        let mut prepared = Prepared {
            fields: HashMap::new(),
            terms: Vec::new(),
        };
        for target in targets {
            let search_terms = prepared.terms.len();
            prepared
                .terms
                .push(QueryTerms::of(&query_of(target)?, target.mapping())?);
            let columns = target.mapping().columns();
            let mut fields = Vec::new();
            for spec in &self.fields {
                let terms = match &spec.query {
                    Some(q) => {
                        let ctx = QueryContext {
                            index: &target.name,
                            mapping: target.mapping(),
                            now_ms,
                        };
                        let leaf = lower(q, &ctx).map_err(|e| e.in_index(&target.name))?;
                        prepared.terms.push(QueryTerms::of(&leaf, target.mapping())?);
                        prepared.terms.len() - 1
                    }
                    None => search_terms,
                };
                for c in &columns {
                    let ty = c.mapping.ty;
                    if !matches!(ty, FieldType::Text | FieldType::Keyword)
                        || !pattern_matches(&spec.pattern, &c.path)
                        || fields.iter().any(|f: &Field| f.path == c.path)
                    {
                        continue;
                    }
                    fields.push(Field {
                        path: c.path.clone(),
                        source_path: c.source_path.clone(),
                        ty,
                        options: spec.options.clone(),
                        terms,
                    });
                }
            }
            prepared.fields.insert(target.name.clone(), fields);
        }
        Ok(prepared)
    }
}

impl Prepared {
    /// The `highlight` of a hit of index `index` with this `_source`, or
    /// `None` when no field has a fragment.
    pub fn hit(&self, index: &str, source: &Value) -> Result<Option<Value>> {
        let mut out = Map::new();
        for field in self.fields.get(index).into_iter().flatten() {
            let mut values = Vec::new();
            strings_at(source, &field.source_path, &mut values);
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            let found = fragments(
                &values,
                &field.path,
                field.ty,
                &self.terms[field.terms],
                &field.options,
            )?;
            if !found.is_empty() {
                out.insert(field.path.clone(), Value::from(found));
            }
        }
        Ok((!out.is_empty()).then_some(Value::Object(out)))
    }
}

/// The values at a dotted path of a source document, as text: through
/// objects (also under keys that hold dots) and arrays.
fn strings_at(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Array(items) => items.iter().for_each(|item| strings_at(item, path, out)),
        Value::Object(m) if !path.is_empty() => {
            for (key, child) in m {
                if key == path {
                    strings_at(child, "", out);
                } else if let Some(rest) = path.strip_prefix(key.as_str()).and_then(|r| r.strip_prefix('.')) {
                    strings_at(child, rest, out);
                }
            }
        }
        Value::String(s) if path.is_empty() => out.push(s.clone()),
        Value::Number(_) | Value::Bool(_) if path.is_empty() => out.push(v.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_are_found_through_objects_arrays_and_dotted_keys() {
        let source = json!({"a": {"b": ["x", {"c": "no"}], "b.c": "y"}, "n": [1, 2]});
        let mut out = Vec::new();
        strings_at(&source, "a.b", &mut out);
        assert_eq!(out, ["x"]);
        out.clear();
        strings_at(&source, "a.b.c", &mut out);
        assert_eq!(out, ["no", "y"]);
        out.clear();
        strings_at(&source, "n", &mut out);
        assert_eq!(out, ["1", "2"]);
    }

    #[test]
    fn options_are_inherited_and_unknown_keys_refused() -> Result<()> {
        let h = parse(&json!({
            "pre_tags": ["<b>"], "number_of_fragments": 2,
            "fields": [{"title": {"post_tags": ["</b>"]}}, {"body*": {"number_of_fragments": 0}}]
        }))?;
        let (title, body) = (&h.fields[0].options, &h.fields[1].options);
        assert_eq!((title.pre_tag.as_str(), title.post_tag.as_str()), ("<b>", "</b>"));
        assert_eq!((title.number_of_fragments, body.number_of_fragments), (2, 0));
        assert_eq!(body.post_tag, "</em>");
        for bad in [
            json!({"fields": {"t": {"nope": 1}}}),
            json!({"fields": {"t": {"fragment_size": -1}}}),
            json!({"fields": 3}),
            json!({"type": "fancy", "fields": {"t": {}}}),
            json!({}),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
        Ok(())
    }
}
