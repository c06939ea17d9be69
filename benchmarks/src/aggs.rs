//! `qbench aggs`: each of the DSL's 14 aggregation types through Quidditch's
//! JSON DSL (in-process: planner + executor over the shards `qbench ingest`
//! loaded) versus tantivy's native aggregation of the same request on a
//! 2-thread executor over the raw tantivy index of the same documents.
//! Every answer is compared with the reference; the two sides run in turns.
//!
//! Tantivy has no `filters` aggregation: its reference is one `filter`
//! aggregation per bucket, in the same request.

use std::sync::Arc;

use anyhow::{Result, bail};
use quidditch_executor::{Engine, EngineConfig};
use quidditch_index::Indices;
use quidditch_planner::Params;
use serde_json::{Value, json};
use tantivy::aggregation::agg_req::Aggregations;
use tantivy::{Executor, Index};

use crate::Common;
use crate::ingest::prepare;
use crate::scan::{tantivy_aggregate, timed_pair};

/// One benchmark case: the DSL aggregation and tantivy's request.
struct Case {
    name: &'static str,
    dsl: Value,
    reference: Value,
    /// Relative tolerance of the comparison (approximate aggregations).
    tolerance: f64,
}

fn cases() -> Vec<Case> {
    let same = |name: &'static str, agg: Value, tolerance: f64| Case {
        name,
        dsl: json!({"a": agg.clone()}),
        reference: json!({"a": agg}),
        tolerance,
    };
    vec![
        same("terms", json!({"terms": {"field": "host", "size": 10}}), 1e-9),
        same(
            "histogram",
            json!({"histogram": {"field": "bytes", "interval": 5000}}),
            1e-9,
        ),
        same(
            "date_histogram",
            json!({"date_histogram": {"field": "@timestamp", "fixed_interval": "10m"}}),
            1e-9,
        ),
        same(
            "range",
            json!({"range": {"field": "bytes", "ranges": [{"to": 10000}, {"from": 10000, "to": 30000}, {"from": 30000}]}}),
            1e-9,
        ),
        Case {
            name: "filters",
            dsl: json!({"a": {"filters": {"filters": {
                "get": {"term": {"method": "GET"}}, "post": {"term": {"method": "POST"}}
            }}}}),
            reference: json!({"get": {"filter": "method:GET"}, "post": {"filter": "method:POST"}}),
            tolerance: 1e-9,
        },
        same("avg", json!({"avg": {"field": "latency_ms"}}), 1e-9),
        same("min", json!({"min": {"field": "latency_ms"}}), 1e-9),
        same("max", json!({"max": {"field": "latency_ms"}}), 1e-9),
        same("sum", json!({"sum": {"field": "bytes"}}), 1e-9),
        same("value_count", json!({"value_count": {"field": "bytes"}}), 1e-9),
        same("stats", json!({"stats": {"field": "bytes"}}), 1e-9),
        same(
            "extended_stats",
            json!({"extended_stats": {"field": "bytes"}}),
            1e-9,
        ),
        // Both sides are sketches (Quidditch a t-digest, tantivy a DDSketch),
        // each within about 2 % of the exact value on this corpus's long
        // latency tail, so they may differ from each other by twice that.
        same(
            "percentiles",
            json!({"percentiles": {"field": "latency_ms", "percents": [50, 95, 99]}}),
            0.05,
        ),
        same("cardinality", json!({"cardinality": {"field": "bytes"}}), 0.03),
    ]
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance * a.abs().max(b.abs()).max(1.0)
}

/// Non-empty buckets as (key, count), keyed by the key's text.
fn buckets(v: &Value) -> Vec<(String, u64)> {
    let key = |b: &Value| match &b["key"] {
        Value::String(s) => s.clone(),
        other => format!("{}", other.as_f64().unwrap_or(f64::NAN)),
    };
    let mut out: Vec<(String, u64)> = v["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["doc_count"].as_u64().unwrap_or(0) > 0)
        .map(|b| (key(b), b["doc_count"].as_u64().unwrap_or(0)))
        .collect();
    out.sort();
    out
}

/// Whether Quidditch's aggregation `ours` says what tantivy's `theirs` does.
fn same_answer(case: &Case, ours: &Value, theirs: &Value) -> bool {
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let a = &ours["a"];
    match case.name {
        "filters" => ["get", "post"]
            .iter()
            .all(|k| a["buckets"][k]["doc_count"] == theirs[k]["doc_count"]),
        "range" => {
            let counts = |v: &Value| -> Vec<u64> {
                v["buckets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| b["doc_count"].as_u64().unwrap_or(0))
                    .collect()
            };
            counts(a) == counts(&theirs["a"])
        }
        "terms" | "histogram" | "date_histogram" => {
            let t = &theirs["a"];
            if case.name == "date_histogram" {
                let keys = |v: &Value| -> Vec<(i64, u64)> {
                    v["buckets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|b| b["doc_count"].as_u64().unwrap_or(0) > 0)
                        .map(|b| {
                            (
                                b["key"].as_f64().unwrap_or(0.0) as i64,
                                b["doc_count"].as_u64().unwrap_or(0),
                            )
                        })
                        .collect()
                };
                return keys(a) == keys(t);
            }
            buckets(a) == buckets(t)
        }
        "percentiles" => ["50.0", "95.0", "99.0"].iter().all(|p| {
            close(
                num(&a["values"][p]),
                num(&theirs["a"]["values"][p]),
                case.tolerance,
            )
        }),
        "stats" | "extended_stats" => {
            let mut fields = vec!["count", "min", "max", "avg", "sum"];
            if case.name == "extended_stats" {
                fields.extend(["sum_of_squares", "variance", "std_deviation"]);
            }
            fields
                .iter()
                .all(|f| close(num(&a[f]), num(&theirs["a"][f]), case.tolerance))
        }
        _ => close(num(&a["value"]), num(&theirs["a"]["value"]), case.tolerance),
    }
}

pub fn run(c: &Common) -> Result<()> {
    let p = prepare(c)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let indices = Arc::new(Indices::open(&p.quidditch_dir)?);
    let engine = Engine::new(Arc::clone(&indices), EngineConfig::default())?;
    let index = Index::open_in_dir(&p.tantivy_dir)?;
    let reader = index.reader()?;
    let searcher = reader.searcher();
    let executor = Executor::multi_thread(2, "agg-")?;
    let params = Params::new();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    println!("| aggregation | quidditch ms | tantivy ms | ratio | answers |");
    println!("|---|---:|---:|---:|---|");
    for case in cases() {
        let body = json!({"size": 0, "track_total_hits": false, "aggs": case.dsl});
        let aggs: Aggregations = serde_json::from_value(case.reference.clone())?;
        let ((q_ms, ours), (t_ms, theirs)) = timed_pair(
            c.iterations,
            || {
                rt.block_on(async {
                    let ctx = engine.session()?;
                    let out = quidditch_planner::search(&ctx, engine.indices(), "logs", Some(&body), &params)
                        .await?;
                    Ok::<_, anyhow::Error>(out["aggregations"].clone())
                })
            },
            || {
                Ok(serde_json::to_value(tantivy_aggregate(
                    &searcher, &executor, &aggs,
                )?)?)
            },
        )?;
        let same = same_answer(&case, &ours, &theirs);
        println!(
            "| {} | {q_ms:.2} | {t_ms:.2} | {:.2} | {} |",
            case.name,
            q_ms / t_ms,
            if same { "match" } else { "DIFFER" }
        );
        if !same {
            failures.push(format!("{}: quidditch {ours} vs tantivy {theirs}", case.name));
        }
        rows.push(json!({
            "aggregation": case.name,
            "dsl": case.dsl,
            "reference_request": case.reference,
            "quidditch_ms_median": q_ms,
            "reference_ms_median": t_ms,
            "ratio": q_ms / t_ms,
            "answers_match": same,
        }));
    }
    indices.close()?;
    if c.check && !failures.is_empty() {
        bail!("answers differ:\n{}", failures.join("\n"));
    }
    crate::results::write(
        &c.out,
        "aggs",
        json!({
            "docs": c.docs,
            "reference": "tantivy::aggregation, same request, Executor::multi_thread(2), raw tantivy index of the same documents",
            "iterations": c.iterations,
            "cases": rows,
        }),
    )
}
