//! `qbench scan`: `SELECT status, count(*), avg(bytes) FROM logs GROUP BY status`
//! through Quidditch's SQL engine (in-process, over the shards `qbench ingest`
//! loaded) versus tantivy's own aggregation (`terms` + `avg`) on a 2-thread
//! executor over the raw tantivy index of the same documents.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use quidditch_executor::{Engine, EngineConfig};
use quidditch_index::Indices;
use serde_json::{Value, json};
use tantivy::aggregation::agg_req::Aggregations;
use tantivy::aggregation::agg_result::AggregationResults;
use tantivy::aggregation::{AggContextParams, AggregationCollector};
use tantivy::query::{AllQuery, EnableScoring};
use tantivy::{Executor, Index};

use crate::Common;
use crate::ingest::prepare;
use crate::results::median;

const QUERY: &str = "SELECT status, count(*) AS n, avg(bytes) AS avg_bytes FROM logs GROUP BY status";

/// status -> (count, average bytes)
type Answer = BTreeMap<i64, (u64, f64)>;

pub fn run(c: &Common) -> Result<()> {
    let p = prepare(c)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let indices = Arc::new(Indices::open(&p.quidditch_dir)?);
    let engine = Engine::new(Arc::clone(&indices), EngineConfig::default())?;
    let index = Index::open_in_dir(&p.tantivy_dir)?;
    let reader = index.reader()?;
    let searcher = reader.searcher();
    let executor = Executor::multi_thread(2, "agg-")?;
    let aggs: Aggregations = serde_json::from_value(json!({
        "by_status": {"terms": {"field": "status", "size": 100}, "aggs": {"avg_bytes": {"avg": {"field": "bytes"}}}}
    }))?;
    let ((q_ms, q_answer), (t_ms, t_answer)) = timed_pair(
        c.iterations,
        || rt.block_on(quidditch_answer(&engine)),
        || tantivy_answer(&tantivy_aggregate(&searcher, &executor, &aggs)?),
    )?;
    let same = answers_match(&q_answer, &t_answer);
    println!(
        "scan `{QUERY}` over {} docs: quidditch {q_ms:.2} ms, tantivy aggregation (2 threads) {t_ms:.2} ms, ratio {:.2}, answers {}",
        c.docs,
        q_ms / t_ms,
        if same { "match" } else { "DIFFER" }
    );
    if !same {
        bail!("answers differ: quidditch {q_answer:?}, tantivy {t_answer:?}");
    }
    indices.close()?;
    crate::results::write(
        &c.out,
        "scan",
        json!({
            "docs": c.docs,
            "query": QUERY,
            "quidditch_ms_median": q_ms,
            "reference": "tantivy::aggregation terms(status)+avg(bytes), Executor::multi_thread(2)",
            "reference_ms_median": t_ms,
            "ratio": q_ms / t_ms,
            "iterations": c.iterations,
            "answers_match": same,
        }),
    )
}

/// Tantivy's native aggregation of `aggs` over every document, on `executor`.
pub fn tantivy_aggregate(
    searcher: &tantivy::Searcher,
    executor: &Executor,
    aggs: &Aggregations,
) -> Result<AggregationResults> {
    let collector = AggregationCollector::from_aggs(aggs.clone(), AggContextParams::default());
    Ok(searcher.search_with_executor(
        &AllQuery,
        &collector,
        executor,
        EnableScoring::disabled_from_searcher(searcher),
    )?)
}

/// Median wall times in ms of `ours` and `theirs` over `iterations` runs
/// each after one warm-up, and their last answers. The two run in turns
/// (which one goes first alternates), so that a slow spell of the machine
/// hits both sides alike.
pub fn timed_pair<A, B>(
    iterations: usize,
    mut ours: impl FnMut() -> Result<A>,
    mut theirs: impl FnMut() -> Result<B>,
) -> Result<((f64, A), (f64, B))> {
    let mut a = ours()?;
    let mut b = theirs()?;
    let (mut a_ms, mut b_ms) = (Vec::with_capacity(iterations), Vec::with_capacity(iterations));
    for i in 0..iterations.max(1) {
        for side in [i % 2, 1 - i % 2] {
            let start = Instant::now();
            if side == 0 {
                a = ours()?;
                a_ms.push(start.elapsed().as_secs_f64() * 1000.0);
            } else {
                b = theirs()?;
                b_ms.push(start.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    Ok(((median(a_ms), a), (median(b_ms), b)))
}

async fn quidditch_answer(engine: &Engine) -> Result<Answer> {
    let out = engine.sql(QUERY).await?;
    let mut answer = Answer::new();
    for batch in &out.batches {
        let status = batch
            .column(0)
            .as_any()
            .downcast_ref::<tantivy_arrow::Int64Array>();
        let n = batch
            .column(1)
            .as_any()
            .downcast_ref::<tantivy_arrow::Int64Array>();
        let avg = batch
            .column(2)
            .as_any()
            .downcast_ref::<tantivy_arrow::Float64Array>();
        let (Some(status), Some(n), Some(avg)) = (status, n, avg) else {
            bail!("unexpected result types: {:?}", batch.schema());
        };
        for i in 0..batch.num_rows() {
            answer.insert(status.value(i), (n.value(i) as u64, avg.value(i)));
        }
    }
    Ok(answer)
}

mod tantivy_arrow {
    pub use quidditch_executor::arrow_array::{Float64Array, Int64Array};
}

fn tantivy_answer(result: &AggregationResults) -> Result<Answer> {
    let v: Value = serde_json::to_value(result)?;
    let mut answer = Answer::new();
    for bucket in v["by_status"]["buckets"].as_array().into_iter().flatten() {
        let key = bucket["key"].as_f64().unwrap_or_default() as i64;
        let count = bucket["doc_count"].as_u64().unwrap_or_default();
        let avg = bucket["avg_bytes"]["value"].as_f64().unwrap_or_default();
        answer.insert(key, (count, avg));
    }
    Ok(answer)
}

fn answers_match(a: &Answer, b: &Answer) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, (na, xa)), (kb, (nb, xb)))| {
            ka == kb && na == nb && (xa - xb).abs() <= 1e-9 * xa.abs().max(1.0)
        })
}

/// Number of documents in the `logs` index of a data directory.
pub fn quidditch_count(data_dir: &Path) -> Result<u64> {
    let indices = Indices::open(data_dir)?;
    let count = indices.get("logs")?.num_docs();
    indices.close()?;
    Ok(count)
}
