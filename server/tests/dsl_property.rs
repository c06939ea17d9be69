//! Property test: random documents and random nested `bool` queries of
//! `term`, `range`, `exists` and `match` clauses. The DSL's hit set must equal
//! a plain in-memory evaluation of Elasticsearch's semantics over the same
//! documents, and `hits.total` its size.

mod common;

use std::collections::BTreeSet;

use anyhow::{Result, anyhow, ensure};
use common::Server;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

const KEYS: [&str; 4] = ["a", "b", "c", "d"];
const WORDS: [&str; 5] = ["red", "green", "blue", "fox", "dog"];

#[derive(Debug, Clone)]
struct Doc {
    k: Option<&'static str>,
    n: Option<i64>,
    t: Option<Vec<&'static str>>,
}

#[derive(Debug, Clone)]
enum Query {
    Term(&'static str),
    Range {
        gte: Option<i64>,
        lt: Option<i64>,
    },
    Exists(&'static str),
    Match(&'static str),
    Bool {
        must: Vec<Query>,
        should: Vec<Query>,
        must_not: Vec<Query>,
        filter: Vec<Query>,
    },
}

impl Query {
    fn to_json(&self) -> Value {
        let list = |qs: &[Query]| Value::Array(qs.iter().map(Query::to_json).collect());
        match self {
            Query::Term(v) => json!({"term": {"k": v}}),
            Query::Range { gte, lt } => {
                let mut r = serde_json::Map::new();
                if let Some(g) = gte {
                    r.insert("gte".into(), json!(g));
                }
                if let Some(l) = lt {
                    r.insert("lt".into(), json!(l));
                }
                json!({"range": {"n": r}})
            }
            Query::Exists(f) => json!({"exists": {"field": f}}),
            Query::Match(w) => json!({"match": {"t": w}}),
            Query::Bool {
                must,
                should,
                must_not,
                filter,
            } => json!({"bool": {
                "must": list(must), "should": list(should), "must_not": list(must_not), "filter": list(filter)
            }}),
        }
    }

    /// Elasticsearch's semantics, evaluated directly.
    fn matches(&self, d: &Doc) -> bool {
        match self {
            Query::Term(v) => d.k == Some(*v),
            Query::Range { gte, lt } => {
                d.n.is_some_and(|n| gte.is_none_or(|g| n >= g) && lt.is_none_or(|l| n < l))
            }
            Query::Exists(f) => match *f {
                "k" => d.k.is_some(),
                "n" => d.n.is_some(),
                _ => d.t.as_ref().is_some_and(|t| !t.is_empty()),
            },
            Query::Match(w) => d.t.as_ref().is_some_and(|t| t.contains(w)),
            Query::Bool {
                must,
                should,
                must_not,
                filter,
            } => {
                let required = must.iter().chain(filter).all(|q| q.matches(d));
                let excluded = must_not.iter().any(|q| q.matches(d));
                // Without must/filter clauses at least one should clause must match.
                let optional_ok = !must.is_empty()
                    || !filter.is_empty()
                    || should.is_empty()
                    || should.iter().any(|q| q.matches(d));
                required && !excluded && optional_ok
            }
        }
    }
}

fn doc_strategy() -> impl Strategy<Value = Doc> {
    (
        proptest::option::of(proptest::sample::select(&KEYS[..])),
        proptest::option::of(-5i64..15),
        proptest::option::of(proptest::collection::vec(
            proptest::sample::select(&WORDS[..]),
            0..4,
        )),
    )
        .prop_map(|(k, n, t)| Doc { k, n, t })
}

fn query_strategy() -> impl Strategy<Value = Query> {
    let leaf = prop_oneof![
        proptest::sample::select(&KEYS[..]).prop_map(Query::Term),
        (proptest::option::of(-5i64..15), proptest::option::of(-5i64..15))
            .prop_map(|(gte, lt)| Query::Range { gte, lt }),
        proptest::sample::select(&["k", "n", "t"][..]).prop_map(Query::Exists),
        proptest::sample::select(&WORDS[..]).prop_map(Query::Match),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        let clauses = || proptest::collection::vec(inner.clone(), 0..3);
        (clauses(), clauses(), clauses(), clauses()).prop_map(|(must, should, must_not, filter)| {
            Query::Bool {
                must,
                should,
                must_not,
                filter,
            }
        })
    })
}

fn check_case(server: &Server, case: usize, docs: &[Doc], query: &Query) -> Result<()> {
    let index = format!("prop-{case}");
    let (status, body) = server.put(
        &format!("/{index}"),
        &json!({"settings": {"number_of_shards": 2}, "mappings": {"properties": {
            "k": {"type": "keyword"}, "n": {"type": "long"}, "t": {"type": "text"}
        }}}),
    )?;
    ensure!(status == 200, "{body}");
    let mut lines = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let mut src = serde_json::Map::new();
        if let Some(k) = d.k {
            src.insert("k".into(), json!(k));
        }
        if let Some(n) = d.n {
            src.insert("n".into(), json!(n));
        }
        if let Some(t) = &d.t {
            src.insert("t".into(), json!(t.join(" ")));
        }
        lines.push(json!({"index": {"_id": i.to_string()}}));
        lines.push(Value::Object(src));
    }
    if !lines.is_empty() {
        let (status, body) = server.bulk(&format!("/{index}/_bulk?refresh=true"), &lines)?;
        ensure!(status == 200 && body["errors"] == json!(false), "{body}");
    }
    let request = json!({"query": query.to_json(), "size": 100, "track_total_hits": true});
    let (status, resp) = server.post(&format!("/{index}/_search"), &request)?;
    ensure!(status == 200, "{request} -> {resp}");
    let got: BTreeSet<String> = resp["hits"]["hits"]
        .as_array()
        .ok_or_else(|| anyhow!("no hits in {resp}"))?
        .iter()
        .filter_map(|h| h["_id"].as_str().map(str::to_string))
        .collect();
    let want: BTreeSet<String> = docs
        .iter()
        .enumerate()
        .filter(|(_, d)| query.matches(d))
        .map(|(i, _)| i.to_string())
        .collect();
    ensure!(
        got == want,
        "query {request}\ndocs {docs:?}\ngot {got:?}\nwant {want:?}"
    );
    ensure!(
        resp["hits"]["total"] == json!({"value": want.len(), "relation": "eq"}),
        "total {} for {} hits",
        resp["hits"]["total"],
        want.len()
    );
    let (status, _) = server.delete(&format!("/{index}"))?;
    ensure!(status == 200);
    Ok(())
}

#[test]
fn bool_queries_match_in_memory_evaluation() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::cell::Cell::new(0usize);
    runner
        .run(
            &(proptest::collection::vec(doc_strategy(), 0..40), query_strategy()),
            |(docs, query)| {
                case.set(case.get() + 1);
                check_case(&server, case.get(), &docs, &query)
                    .map_err(|e| TestCaseError::fail(format!("{e:#}")))
            },
        )
        .map_err(|e| anyhow!("{e}"))
}
