//! `qbench distributed`: the same searches on the embedded node and on a
//! cluster of one coordinator and three data nodes (real processes on this
//! machine), over the same generated log documents.
//!
//! Two requests through the HTTP DSL: a `term` query with its top 10 hits,
//! and a `terms` aggregation. Each is sent 20 times `--iterations` times,
//! one after the other, after a warm-up; the answers of both setups are compared, and the
//! latency percentiles and their ratio (cluster / embedded) are reported.
//! On one machine the cluster pays for the network hops and the extra
//! processes without gaining cores, so the ratio measures the cost of
//! distribution, not its benefit.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::Common;
use crate::corpus;
use crate::ingest::{NodeProcess, sibling_binary, work_dir};
use crate::results::percentile;

/// Shards of the index: one per data node of the cluster, and the same on
/// the embedded node.
const SHARDS: u32 = 3;
const DATA_NODES: usize = 3;

fn client() -> Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?)
}

fn post(client: &reqwest::blocking::Client, url: &str, body: &Value) -> Result<Value> {
    let resp = client.post(url).json(body).send()?;
    let status = resp.status();
    let text = resp.text()?;
    ensure!(status.is_success(), "{url}: {status} {text}");
    Ok(serde_json::from_str(&text)?)
}

/// Documents in `logs` on the node at `url`, `None` without the index.
fn count(client: &reqwest::blocking::Client, url: &str) -> Option<u64> {
    let answer = post(client, &format!("{url}/logs/_count"), &json!({})).ok()?;
    answer["count"].as_u64()
}

/// Makes sure `logs` on `url` holds exactly the corpus.
fn ensure_loaded(client: &reqwest::blocking::Client, url: &str, ndjson: &Path, docs: usize) -> Result<()> {
    if count(client, url) == Some(docs as u64) {
        return Ok(());
    }
    let _ = client.delete(format!("{url}/logs")).send()?;
    let mut body = corpus::mapping();
    body["settings"] = json!({"number_of_shards": SHARDS});
    let resp = client.put(format!("{url}/logs")).json(&body).send()?;
    ensure!(resp.status().is_success(), "creating the index: {}", resp.text()?);
    eprintln!("loading {docs} documents into {url}");
    let status = Command::new(sibling_binary()?)
        .args(["load", "--quiet", "--index", "logs", "--url", url])
        .arg(ndjson)
        .stdout(Stdio::null())
        .status()?;
    ensure!(status.success(), "quidditch load failed");
    ensure!(
        count(client, url) == Some(docs as u64),
        "the load did not index every document"
    );
    Ok(())
}

/// A cluster of data nodes and a coordinator, each with its own data
/// directory under `dir` (so a later run finds the same shards).
pub struct Cluster {
    /// The coordinator, which every request goes through.
    pub coordinator: NodeProcess,
    _data: Vec<NodeProcess>,
}

impl Cluster {
    /// Starts `nodes` data nodes and the coordinator, and waits until the
    /// coordinator sees them all.
    pub fn start(dir: &Path, nodes: usize, client: &reqwest::blocking::Client) -> Result<Cluster> {
        let mut data = Vec::new();
        for i in 0..nodes {
            let id = format!("data-{i}");
            data.push(NodeProcess::start_with(
                &dir.join(&id),
                &["--node-id", &id, "--roles", "data"],
            )?);
        }
        let seeds: Vec<String> = data
            .iter()
            .enumerate()
            .map(|(i, d)| format!("data-{i}@{}", d.flight))
            .collect();
        let coordinator = NodeProcess::start_with(
            &dir.join("coordinator"),
            &[
                "--node-id",
                "coordinator",
                "--roles",
                "coordinator",
                "--seed-nodes",
                &seeds.join(","),
            ],
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health: Value = client
                .get(format!("{}/_cluster/health", coordinator.url))
                .send()?
                .json()?;
            if health["number_of_nodes"].as_u64() == Some(nodes as u64 + 1) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the coordinator did not see every data node: {health}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Cluster {
            coordinator,
            _data: data,
        })
    }
}

/// Requests of each kind per `--iterations`.
const REQUESTS_PER_ITERATION: usize = 20;

/// Latencies of `iterations` sequential requests, sorted, in ms; and the last answer.
fn measure(
    client: &reqwest::blocking::Client,
    url: &str,
    body: &Value,
    iterations: usize,
) -> Result<(Vec<f64>, Value)> {
    let target = format!("{url}/logs/_search");
    let mut answer = Value::Null;
    for _ in 0..iterations.div_ceil(10) {
        answer = post(client, &target, body)?;
    }
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        answer = post(client, &target, body)?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok((times, answer))
}

/// What both setups must agree on: totals, the scores of the top hits, and buckets.
fn comparable(answer: &Value) -> Value {
    let scores: Vec<Value> = answer["hits"]["hits"]
        .as_array()
        .map(|h| h.iter().map(|h| h["_score"].clone()).collect())
        .unwrap_or_default();
    json!({
        "total": answer["hits"]["total"],
        "scores": scores,
        "aggregations": answer["aggregations"],
    })
}

pub fn run(a: &Common) -> Result<()> {
    let (_tmp, dir) = work_dir(a.work_dir.as_deref())?;
    let ndjson = corpus::ndjson(&dir, a.docs)?;
    let client = client()?;
    let version = corpus::VERSION;
    let embedded = NodeProcess::start(&dir.join(format!("distributed-embedded-v{version}")))?;
    let cluster = Cluster::start(
        &dir.join(format!("distributed-cluster-v{version}")),
        DATA_NODES,
        &client,
    )?;
    ensure_loaded(&client, &embedded.url, &ndjson, a.docs)?;
    ensure_loaded(&client, &cluster.coordinator.url, &ndjson, a.docs).context("loading the cluster")?;

    let queries = [
        (
            "term_top10",
            json!({"query": {"term": {"host": "web-07"}}, "size": 10, "track_total_hits": true}),
        ),
        (
            "terms_agg",
            json!({"size": 0, "aggs": {"paths": {"terms": {"field": "path", "size": 10}}}}),
        ),
    ];
    let requests = a.iterations * REQUESTS_PER_ITERATION;
    let mut results = Vec::new();
    let mut all_same = true;
    for (name, body) in &queries {
        eprintln!("{name}");
        let (local, local_answer) = measure(&client, &embedded.url, body, requests)?;
        let (dist, dist_answer) = measure(&client, &cluster.coordinator.url, body, requests)?;
        let same = comparable(&local_answer) == comparable(&dist_answer);
        all_same &= same;
        let (lp50, lp95) = (percentile(&local, 50.0), percentile(&local, 95.0));
        let (dp50, dp95) = (percentile(&dist, 50.0), percentile(&dist, 95.0));
        results.push(json!({
            "query": name,
            "request": body,
            "same_answer": same,
            "embedded_ms": {"p50": lp50, "p95": lp95},
            "cluster_ms": {"p50": dp50, "p95": dp95},
            "ratio_p50": dp50 / lp50,
            "ratio_p95": dp95 / lp95,
        }));
        eprintln!(
            "{name}: embedded p50 {lp50:.2} ms p95 {lp95:.2} ms; cluster p50 {dp50:.2} ms p95 {dp95:.2} ms; same answer: {same}"
        );
    }
    crate::results::write(
        &a.out,
        "distributed",
        json!({
            "docs": a.docs,
            "shards": SHARDS,
            "cluster": format!("1 coordinator + {DATA_NODES} data nodes, processes on one machine"),
            "reference": "the embedded single node (same binary, same shards count, same documents)",
            "requests": requests,
            "queries": results,
        }),
    )?;
    if a.check && !all_same {
        bail!("the cluster and the embedded node gave different answers");
    }
    Ok(())
}
