//! Distributed execution against real processes: a coordinator and three
//! data nodes, compared with the embedded single node on the same documents.

mod common;

use anyhow::{Result, ensure};
use common::{Cluster, Server, assert_es_error};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

const KEYS: [&str; 5] = ["alpha", "beta", "gamma", "delta", "omega"];
const WORDS: [&str; 6] = ["red", "green", "blue", "fox", "dog", "cat"];

/// A deterministic corpus of `n` documents.
fn corpus(n: usize) -> Vec<Value> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|i| {
            let r = next();
            let mut doc = serde_json::Map::new();
            if r % 11 != 0 {
                doc.insert("k".into(), json!(KEYS[(r % 5) as usize]));
            }
            if r % 13 != 1 {
                doc.insert("n".into(), json!(((r >> 8) % 1000) as i64 - 100));
            }
            doc.insert("f".into(), json!(((r >> 20) % 10_000) as f64 / 8.0));
            let words: Vec<&str> = (0..(r >> 40) % 4 + 1)
                .map(|j| WORDS[((r >> (j * 3 + 44)) % 6) as usize])
                .collect();
            doc.insert("t".into(), json!(words.join(" ")));
            doc.insert("ts".into(), json!(1_700_000_000_000i64 + (i as i64) * 61_000));
            Value::Object(doc)
        })
        .collect()
}

const MAPPING: &str = r#"{"properties": {"k": {"type": "keyword"}, "n": {"type": "long"},
    "f": {"type": "double"}, "t": {"type": "text"}, "ts": {"type": "date"}}}"#;

fn load(server: &Server, index: &str, shards: u32, docs: &[Value]) -> Result<()> {
    let mapping: Value = serde_json::from_str(MAPPING)?;
    let (status, body) = server.put(
        &format!("/{index}"),
        &json!({"settings": {"number_of_shards": shards}, "mappings": mapping}),
    )?;
    ensure!(status == 200, "create {index}: {status} {body}");
    for (chunk_no, chunk) in docs.chunks(500).enumerate() {
        let mut lines = Vec::new();
        for (i, doc) in chunk.iter().enumerate() {
            lines.push(json!({"index": {"_index": index, "_id": format!("d{}", chunk_no * 500 + i)}}));
            lines.push(doc.clone());
        }
        let (status, body) = server.bulk("/_bulk", &lines)?;
        ensure!(
            status == 200 && body["errors"] == json!(false),
            "bulk: {status} {body}"
        );
    }
    let (status, body) = server.post(&format!("/{index}/_refresh"), &json!({}))?;
    ensure!(status == 200, "refresh: {body}");
    Ok(())
}

#[derive(Debug, Clone)]
enum Case {
    Sql(String),
    Search(Value),
    Aggs(Value),
}

fn filter_strategy() -> impl Strategy<Value = (String, Value)> {
    prop_oneof![
        Just(("TRUE".to_string(), json!({"match_all": {}}))),
        (0..5usize).prop_map(|k| (format!("k = '{}'", KEYS[k]), json!({"term": {"k": KEYS[k]}}))),
        (-100i64..900, 1i64..400).prop_map(|(lo, w)| (
            format!("n >= {lo} AND n < {}", lo + w),
            json!({"range": {"n": {"gte": lo, "lt": lo + w}}})
        )),
        (0..6usize).prop_map(|w| (
            format!("match(t, '{}')", WORDS[w]),
            json!({"match": {"t": WORDS[w]}})
        )),
        ((0..5usize), (0..6usize)).prop_map(|(k, w)| (
            format!("k <> '{}' AND match(t, '{}')", KEYS[k], WORDS[w]),
            json!({"bool": {"must_not": [{"term": {"k": KEYS[k]}}], "filter": [{"match": {"t": WORDS[w]}}]}})
        )),
    ]
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let sql = (filter_strategy(), 0..4usize).prop_map(|((sql, _), shape)| {
        Case::Sql(match shape {
            0 => format!(
                "SELECT k, count(*), sum(n), min(n), max(n) FROM docs WHERE {sql} GROUP BY k ORDER BY k"
            ),
            1 => format!(
                "SELECT count(*), count(n), sum(n), min(f), max(f), min(ts), max(ts) FROM docs WHERE {sql}"
            ),
            2 => {
                format!("SELECT n % 7 AS m, count(*), sum(n) FROM docs WHERE {sql} GROUP BY n % 7 ORDER BY m")
            }
            _ => format!("SELECT _id, n FROM docs WHERE {sql} ORDER BY n DESC NULLS LAST, _id LIMIT 15"),
        })
    });
    let search = (
        filter_strategy(),
        0..60usize,
        1..30usize,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|((_, q), from, size, asc, collapse)| {
            let order = if asc { "asc" } else { "desc" };
            let mut body = json!({
                "query": q, "from": from, "size": size,
                "sort": [{"n": {"order": order, "missing": "_last"}}, {"_id": "asc"}],
                "track_total_hits": true
            });
            if collapse {
                body["collapse"] = json!({"field": "k"});
            }
            Case::Search(body)
        });
    let aggs = (filter_strategy(), 0..6usize).prop_map(|((_, q), shape)| {
        let aggs = match shape {
            0 => json!({"by_k": {"terms": {"field": "k", "size": 10}, "aggs": {"s": {"stats": {"field": "n"}}}}}),
            1 => json!({"h": {"histogram": {"field": "n", "interval": 100, "min_doc_count": 0}, "aggs": {"m": {"max": {"field": "f"}}}}}),
            2 => json!({"r": {"range": {"field": "n", "ranges": [{"to": 100}, {"from": 100, "to": 500}, {"from": 500}]}}}),
            3 => json!({"c": {"cardinality": {"field": "k"}}, "v": {"value_count": {"field": "n"}}, "s": {"sum": {"field": "n"}}}),
            4 => json!({"d": {"date_histogram": {"field": "ts", "fixed_interval": "1d"}, "aggs": {"a": {"avg": {"field": "n"}}}}}),
            _ => json!({"f": {"filters": {"filters": {"red": {"match": {"t": "red"}}, "a": {"term": {"k": "alpha"}}}}}}),
        };
        Case::Aggs(json!({"query": q, "size": 0, "aggs": aggs}))
    });
    // Scores do not depend on sharding (global term statistics), so the
    // order by score is the same too.
    let scored = (0..6usize, 0..6usize, 0..20usize).prop_map(|(a, b, from)| {
        Case::Search(json!({
            "query": {"bool": {"should": [{"match": {"t": WORDS[a]}}, {"match": {"t": WORDS[b]}}]}},
            "from": from, "size": 20, "sort": ["_score", {"_id": "asc"}], "track_total_hits": true
        }))
    });
    prop_oneof![sql, search, aggs, scored]
}

/// Floats are compared to 1e-9 relative (sums in another order); the rest exactly.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => {
                let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
                x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
            }
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// The parts of an answer that must not depend on sharding.
fn comparable(case: &Case, mut body: Value) -> Value {
    match case {
        Case::Sql(_) => body["rows"].take(),
        Case::Search(_) => {
            let hits: Vec<Value> = body["hits"]["hits"]
                .as_array()
                .map(|h| h.iter().map(|h| json!([h["_id"], h["sort"]])).collect())
                .unwrap_or_default();
            json!({"total": body["hits"]["total"], "hits": hits})
        }
        Case::Aggs(_) => body["aggregations"].take(),
    }
}

fn run(server: &Server, case: &Case) -> Result<Value> {
    let (status, body) = match case {
        Case::Sql(sql) => server.post("/_sql", &json!({"query": sql}))?,
        Case::Search(q) | Case::Aggs(q) => server.post("/docs/_search", q)?,
    };
    ensure!(status == 200, "{case:?} failed with {status}: {body}");
    ensure!(
        body["_shards"]["failed"].as_u64().unwrap_or(0) == 0,
        "{case:?}: {body}"
    );
    Ok(comparable(case, body))
}

#[test]
fn a_cluster_answers_as_the_single_node_does() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::start(dir.path(), 3)?;
    let single = Server::start(&dir.path().join("single"))?;
    let docs = corpus(3000);
    load(&cluster.coordinator, "docs", 6, &docs)?;
    load(&single, "docs", 1, &docs)?;

    // Every data node holds shards, and the coordinator none.
    let (_, shards) = cluster.coordinator.get("/_cat/shards?format=json")?;
    let shards = shards.as_array().cloned().unwrap_or_default();
    ensure!(shards.len() == 6, "{shards:?}");
    for node in &cluster.data {
        let held: Vec<&Value> = shards
            .iter()
            .filter(|s| s["node"] == json!(node.node_id))
            .collect();
        ensure!(held.len() == 2, "{} holds {held:?}", node.node_id);
    }
    let docs_total: u64 = shards
        .iter()
        .map(|s| {
            s["docs"]
                .as_str()
                .and_then(|d| d.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    ensure!(docs_total == 3000, "{shards:?}");
    let (_, listed) = cluster.coordinator.get("/_cat/indices/docs?format=json")?;
    ensure!(listed[0]["docs.count"] == json!("3000"), "{listed}");
    let (_, health) = cluster.coordinator.get("/_cluster/health")?;
    ensure!(health["status"] == json!("green"), "{health}");
    ensure!(health["number_of_data_nodes"] == json!(3), "{health}");
    ensure!(health["active_shards"] == json!(6), "{health}");
    // Node info lists every node, and an HTTP address only for the one that
    // takes searches and writes, so that a sniffing client uses no other.
    let (status, info) = cluster.coordinator.get("/_nodes/_all/http")?;
    ensure!(status == 200 && info["_nodes"]["total"] == json!(4), "{info}");
    let published: Vec<&Value> = info["nodes"]
        .as_object()
        .into_iter()
        .flat_map(|n| n.values())
        .filter_map(|n| n.get("http"))
        .map(|h| &h["publish_address"])
        .collect();
    let coordinator = cluster.coordinator.url.trim_start_matches("http://");
    ensure!(published == [&json!(coordinator)], "{info}");

    let mut runner = TestRunner::new(Config {
        cases: 240,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&case_strategy(), |case| {
            let want = run(&single, &case).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let got = run(&cluster.coordinator, &case).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(same(&want, &got), "{case:?}\nsingle node: {want}\ncluster: {got}");
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // Searches over several indices read each of them on every data node.
    load(&cluster.coordinator, "extra", 4, &corpus(500))?;
    load(&single, "extra", 1, &corpus(500))?;
    for target in ["docs,extra", "d*,e*"] {
        let body = json!({
            "size": 25, "sort": [{"n": "desc"}, {"_index": "asc"}, {"_id": "asc"}], "track_total_hits": true,
            "aggs": {"k": {"terms": {"field": "k"}}, "s": {"stats": {"field": "f"}}}
        });
        let (want_status, want) = single.post(&format!("/{target}/_search"), &body)?;
        let (got_status, got) = cluster.coordinator.post(&format!("/{target}/_search"), &body)?;
        ensure!(
            want_status == 200 && got_status == 200,
            "{target}: {want_status} {got_status} {got}"
        );
        ensure!(
            want["hits"]["total"] == json!({"value": 3500, "relation": "eq"}),
            "{want}"
        );
        let hits = |b: &Value| comparable(&Case::Search(Value::Null), b.clone());
        ensure!(same(&hits(&want), &hits(&got)), "{target}: {want} vs {got}");
        ensure!(
            same(&want["aggregations"], &got["aggregations"]),
            "{target}: {want} vs {got}"
        );
    }

    // Percentiles are t-digests, merged from every shard: on both the single
    // node and the cluster within 1% of the value range of the exact
    // (linearly interpolated) percentile, as the cross-check holds the DSL
    // to. Two sketches may differ from each other by twice that.
    fn has_red(d: &Value) -> bool {
        d["t"].as_str().is_some_and(|t| t.split(' ').any(|w| w == "red"))
    }
    type Matches = fn(&Value) -> bool;
    let cases: [(&str, Value, Matches); 3] = [
        ("all", json!({"match_all": {}}), |_| true),
        ("alpha", json!({"term": {"k": "alpha"}}), |d| d["k"] == "alpha"),
        ("red", json!({"match": {"t": "red"}}), has_red),
    ];
    for (name, query, matches) in cases {
        let mut values: Vec<f64> = docs
            .iter()
            .filter(|d| matches(d))
            .filter_map(|d| d["n"].as_f64())
            .collect();
        values.sort_by(f64::total_cmp);
        let range = values[values.len() - 1] - values[0];
        let body = json!({"size": 0, "query": query, "aggs": {"p": {"percentiles": {"field": "n"}}}});
        for (who, node) in [("single node", &single), ("cluster", &cluster.coordinator)] {
            let (_, got) = node.post("/docs/_search", &body)?;
            let got = &got["aggregations"]["p"]["values"];
            let percents: Vec<&String> = got.as_object().map(|o| o.keys().collect()).unwrap_or_default();
            ensure!(percents.len() == 7, "{name} on the {who}: {got}");
            for key in percents {
                let rank = key.parse::<f64>()? / 100.0 * (values.len() - 1) as f64;
                let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
                let exact = values[lo] + (values[hi] - values[lo]) * (rank - lo as f64);
                ensure!(
                    got[key]
                        .as_f64()
                        .is_some_and(|g| (g - exact).abs() <= 0.01 * range),
                    "{name} percentile {key} on the {who}: {} vs exact {exact}",
                    got[key]
                );
            }
        }
    }
    Ok(())
}

#[test]
fn paging_on_three_nodes_returns_every_document_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::start(dir.path(), 3)?;
    let server = &cluster.coordinator;
    load(server, "docs", 5, &corpus(1000))?;
    let sort = json!([{"n": {"order": "asc", "missing": "_last"}}, {"_id": "asc"}]);

    let mut by_from = Vec::new();
    for from in (0..1000).step_by(100) {
        let (status, body) = server.post(
            "/docs/_search",
            &json!({"from": from, "size": 100, "sort": sort, "_source": false}),
        )?;
        ensure!(status == 200, "{body}");
        let hits = body["hits"]["hits"].as_array().cloned().unwrap_or_default();
        ensure!(hits.len() == 100, "page at {from}: {} hits", hits.len());
        by_from.extend(hits.iter().map(|h| h["_id"].clone()));
    }

    let mut by_after = Vec::new();
    let mut after: Option<Value> = None;
    loop {
        let mut body = json!({"size": 77, "sort": sort, "_source": false});
        if let Some(a) = &after {
            body["search_after"] = a.clone();
        }
        let (status, page) = server.post("/docs/_search", &body)?;
        ensure!(status == 200, "{page}");
        let hits = page["hits"]["hits"].as_array().cloned().unwrap_or_default();
        if hits.is_empty() {
            break;
        }
        by_after.extend(hits.iter().map(|h| h["_id"].clone()));
        after = hits.last().map(|h| h["sort"].clone());
        ensure!(
            by_after.len() <= 1000,
            "search_after returned more than every document"
        );
    }

    let unique: std::collections::BTreeSet<String> = by_from
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    ensure!(
        unique.len() == 1000,
        "from/size: {} distinct of {}",
        unique.len(),
        by_from.len()
    );
    ensure!(
        by_from == by_after,
        "search_after pages differ from from/size pages"
    );
    // The order is stable: the same request gives the same page.
    let (_, again) = server.post("/docs/_search", &json!({"from": 300, "size": 100, "sort": sort}))?;
    let again: Vec<Value> = again["hits"]["hits"]
        .as_array()
        .map(|h| h.iter().map(|h| h["_id"].clone()).collect())
        .unwrap_or_default();
    ensure!(again == by_from[300..400], "the page at 300 changed");

    // A data node that dies: searches answer from the other shards and
    // report the lost ones with the node's name (Elasticsearch's partial
    // results), or fail with 503 when partial results are not allowed; SQL
    // fails naming the node. Nothing hangs.
    let mut cluster = cluster;
    let lost = cluster.data.remove(1);
    let lost_id = lost.node_id.clone();
    let (_, shards) = cluster.coordinator.get("/_cat/shards?format=json")?;
    let lost_shards: Vec<u64> = shards
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["index"] == "docs" && s["node"] == lost_id.as_str())
        .filter_map(|s| s["shard"].as_str().and_then(|n| n.parse().ok()))
        .collect();
    ensure!(
        !lost_shards.is_empty(),
        "{lost_id} holds shards of [docs]: {shards}"
    );
    lost.kill()?;
    // The coordinator pings every node each second.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let started = std::time::Instant::now();
    for body in [
        json!({"query": {"match": {"t": "red"}}}),
        json!({"size": 0, "aggs": {"k": {"terms": {"field": "k"}}}}),
    ] {
        let (status, answer) = cluster.coordinator.post("/docs/_search", &body)?;
        ensure!(status == 200, "a search over a lost node: {status} {answer}");
        let report = &answer["_shards"];
        ensure!(
            report["failed"] == json!(lost_shards.len())
                && report["successful"].as_u64().zip(report["total"].as_u64())
                    == Some((5 - lost_shards.len() as u64, 5)),
            "{report}"
        );
        let mut failed: Vec<u64> = report["failures"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["node"] == lost_id.as_str() && f["index"] == "docs")
            .filter_map(|f| f["shard"].as_u64())
            .collect();
        failed.sort_unstable();
        ensure!(
            failed == lost_shards,
            "failures {report} for shards {lost_shards:?}"
        );
        let (status, answer) = cluster
            .coordinator
            .post("/docs/_search?allow_partial_search_results=false", &body)?;
        ensure!(
            status == 503 && answer["error"]["type"] == "search_phase_execution_exception",
            "{status} {answer}"
        );
        ensure!(
            answer.to_string().contains(&lost_id),
            "the error does not name {lost_id}: {answer}"
        );
    }
    let (status, answer) = cluster
        .coordinator
        .post("/_sql", &json!({"query": "SELECT count(*) FROM docs"}))?;
    ensure!(
        status >= 500 && answer.to_string().contains(&lost_id),
        "{status} {answer}"
    );
    ensure!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[test]
fn bad_nodes_are_reported_by_name_and_nothing_hangs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // A data node that is up, one address nobody listens on, and one that
    // is not a Quidditch node (an HTTP server).
    let good = Server::start_with(
        &dir.path().join("good"),
        &["--node-id", "good", "--roles", "data"],
    )?;
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let silent_addr = silent.local_addr()?;
    drop(silent);
    let http_only = std::net::TcpListener::bind("127.0.0.1:0")?;
    let http_addr = http_only.local_addr()?;
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in http_only.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        }
    });
    let seeds = format!("good@{},silent@{silent_addr},web@{http_addr}", good.flight);
    let coordinator = Server::start_coordinator(&dir.path().join("coordinator"), &seeds)?;
    let started = std::time::Instant::now();
    let (status, body) = coordinator.put("/docs", &json!({"settings": {"number_of_shards": 3}}))?;
    ensure!(
        status >= 500,
        "creating an index on unreachable nodes: {status} {body}"
    );
    let reason = body["error"]["reason"].as_str().unwrap_or_default();
    ensure!(
        reason.contains("silent") || reason.contains("web"),
        "the error does not name the node: {body}"
    );
    let (_, health) = coordinator.get("/_cluster/health")?;
    ensure!(health["number_of_data_nodes"] == json!(1), "{health}");
    ensure!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

/// The `plan` column of a SQL `EXPLAIN` answer, every row joined.
fn plan_text(server: &Server, sql: &str) -> Result<String> {
    let rows = server.sql_rows(sql)?;
    Ok(rows
        .iter()
        .map(|r| {
            format!(
                "{}\n{}",
                r[0].as_str().unwrap_or_default(),
                r[1].as_str().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

#[test]
fn group_by_sends_partial_groups_to_the_coordinator_not_documents() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::start(dir.path(), 3)?;
    let server = &cluster.coordinator;
    load(server, "events", 6, &corpus(200_000))?;
    let sql = "SELECT k, count(*), sum(n) FROM events GROUP BY k";

    // The coordinator's part of the plan is the head, up to the first
    // stage; the data nodes' stage holds the partial aggregate, one task
    // per node over its shards.
    let plan = plan_text(server, &format!("EXPLAIN {sql}"))?;
    let (head, stages) = plan
        .split_once("Stage 1")
        .ok_or_else(|| anyhow::anyhow!("no data node stage in {plan}"))?;
    ensure!(
        head.contains("AggregateExec: mode=Final"),
        "no Final aggregation on the coordinator: {plan}"
    );
    ensure!(
        stages.contains("TantivyAggregateExec") || stages.contains("mode=Partial"),
        "no partial aggregation in the data node stage: {plan}"
    );
    ensure!(
        !stages.contains("mode=Final"),
        "Final aggregation in a data node stage: {plan}"
    );
    for node in &cluster.data {
        ensure!(
            stages.contains(&format!("on {}", node.node_id)),
            "no task on {}: {plan}",
            node.node_id
        );
    }

    // The rows that reach the coordinator, from the metrics of the network
    // boundary into its stage.
    let analyzed = plan_text(server, &format!("EXPLAIN ANALYZE {sql}"))?;
    let boundary = analyzed
        .lines()
        .find(|l| l.contains("[Stage 1] =>"))
        .ok_or_else(|| anyhow::anyhow!("no network boundary in {analyzed}"))?;
    let rows: u64 = boundary
        .split("output_rows=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no output_rows in {boundary}"))?;
    let groups = KEYS.len() as u64 + 1; // and documents without `k`
    ensure!(
        rows > 0 && rows <= groups * 6,
        "{rows} rows reached the coordinator: {analyzed}"
    );
    // The DSL's plan view shows the stages and the node of each task too.
    let (status, view) = server.post(
        "/events/_search?explain_plan=true",
        &json!({"size": 0, "aggs": {"k": {"terms": {"field": "k"}}}}),
    )?;
    let view = view.to_string();
    ensure!(status == 200 && view.contains("Stage 1"), "{status} {view}");
    for node in &cluster.data {
        ensure!(
            view.contains(&format!("on {}", node.node_id)),
            "no task on {}: {view}",
            node.node_id
        );
    }
    // Data nodes leave searches and writes to coordinators.
    let (status, refused) = cluster.data[0].post("/events/_search", &json!({}))?;
    ensure!(
        status == 400 && refused.to_string().contains("coordinator role"),
        "{status} {refused}"
    );

    let answer = server.sql_rows(&format!("{sql} ORDER BY k"))?;
    let total: i64 = answer.iter().filter_map(|r| r[1].as_i64()).sum();
    ensure!(total == 200_000, "{answer:?}");
    Ok(())
}

/// `_cat/segments` rows of `index` through `server`, as (shard, docs.count).
fn segment_rows(server: &Server, index: &str) -> Result<Vec<(u64, u64)>> {
    let (status, rows) = server.get(&format!("/_cat/segments/{index}?format=json"))?;
    ensure!(status == 200, "{rows}");
    let num = |row: &Value, key: &str| row[key].as_str().and_then(|v| v.parse::<u64>().ok());
    rows.as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            num(row, "shard")
                .zip(num(row, "docs.count"))
                .ok_or_else(|| anyhow::anyhow!("bad row {row}"))
        })
        .collect()
}

#[test]
fn force_merge_reaches_the_shards_on_every_data_node() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::start(dir.path(), 3)?;
    let server = &cluster.coordinator;
    load(server, "docs", 5, &corpus(1000))?;
    // A second refresh of 100 more documents: two segments per shard, all
    // of them listed from the data nodes that hold them.
    let mut lines = Vec::new();
    for (i, doc) in corpus(100).into_iter().enumerate() {
        lines.push(json!({"index": {"_id": format!("more{i}")}}));
        lines.push(doc);
    }
    let (status, body) = server.bulk("/docs/_bulk?refresh=true", &lines)?;
    ensure!(status == 200 && body["errors"] == json!(false), "{body}");
    let before = segment_rows(server, "docs")?;
    let shards: std::collections::BTreeSet<u64> = before.iter().map(|r| r.0).collect();
    ensure!(shards == (0..5).collect(), "{before:?}");
    ensure!(before.iter().map(|r| r.1).sum::<u64>() == 1100, "{before:?}");
    ensure!(before.len() >= 10, "every shard took both refreshes: {before:?}");

    let (status, body) = server.post("/docs/_forcemerge?max_num_segments=1", &json!({}))?;
    ensure!(status == 200 && body["_shards"]["failed"] == json!(0), "{body}");
    let mut after = segment_rows(server, "docs")?;
    after.sort();
    ensure!(
        after.iter().map(|r| r.0).eq(0..5),
        "one segment per shard: {after:?}"
    );
    ensure!(after.iter().map(|r| r.1).sum::<u64>() == 1100, "{after:?}");
    let (status, body) = server.post("/docs/_count", &json!({}))?;
    ensure!(status == 200 && body["count"] == json!(1100), "{body}");

    // A data node that is gone: its shards are reported failed, by name,
    // and the others are merged.
    // (A copy's destination made beforehand, on a node that stays.)
    let (status, body) = server.put("/partial", &json!({"settings": {"number_of_shards": 1}}))?;
    ensure!(status == 200, "{body}");
    let (_, shards) = server.get("/_cat/shards?format=json")?;
    let dest_node = shards
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["index"] == "partial")
        .and_then(|s| s["node"].as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no shard of partial: {shards}"))?;
    let mut cluster = cluster;
    let victim = cluster
        .data
        .iter()
        .position(|d| d.node_id != dest_node)
        .ok_or_else(|| anyhow::anyhow!("no other data node"))?;
    let gone = cluster.data.remove(victim);
    let gone_id = gone.node_id.clone();
    gone.kill()?;

    let (status, body) = cluster.coordinator.post("/docs/_forcemerge", &json!({}))?;
    let failures = body["_shards"]["failures"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(
        status == 200
            && !failures.is_empty()
            && failures.iter().all(|f| f["node"] == json!(gone_id))
            && body["_shards"]["failed"] == json!(failures.len())
            && body["_shards"]["successful"].as_u64() == Some(5 - failures.len() as u64),
        "{body}"
    );
    // Until the coordinator counts the node out, a search that reaches it
    // fails as unavailable (503), not as an internal error.
    let sorted = json!({"size": 10, "sort": [{"_index": "asc"}, {"_id": "asc"}]});
    for _ in 0..3 {
        let (status, body) = cluster.coordinator.post("/docs/_search", &sorted)?;
        ensure!(status == 200 || status == 503, "{status} {body}");
    }
    // Once the coordinator counts the node out (partial counts answer), a
    // copy or a deletion by query that cannot read every shard fails with
    // 503, rather than leave the gone node's documents out, and changes
    // nothing.
    let mut live = None;
    for _ in 0..100 {
        let (status, body) = cluster.coordinator.post("/docs/_count", &json!({}))?;
        if status == 200 && body["_shards"]["failed"].as_u64() > Some(0) {
            live = body["count"].as_u64();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let live = live.ok_or_else(|| anyhow::anyhow!("the gone node's shards were never counted out"))?;
    let (status, body) = cluster.coordinator.post(
        "/_reindex",
        &json!({"source": {"index": "docs"}, "dest": {"index": "partial"}}),
    )?;
    ensure!(status == 503, "{status} {body}");
    let (status, body) = cluster
        .coordinator
        .post("/docs/_delete_by_query", &json!({"query": {"match_all": {}}}))?;
    ensure!(status == 503, "{status} {body}");
    let (status, body) = cluster.coordinator.post("/docs/_count", &json!({}))?;
    ensure!(
        status == 200 && body["count"].as_u64() == Some(live),
        "nothing deleted: {body}"
    );
    let (status, body) = cluster.coordinator.post("/partial/_count", &json!({}))?;
    ensure!(
        status == 200 && body["count"] == json!(0),
        "nothing was copied: {body}"
    );
    Ok(())
}

#[test]
fn reindex_on_a_cluster_copies_every_document() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::start(dir.path(), 3)?;
    let server = &cluster.coordinator;
    load(server, "docs", 5, &corpus(1200))?;
    // Without etcd, nothing could order two coordinators' template
    // changes: they are refused, and indices are created without any.
    let (status, body) = server.put("/_index_template/all", &json!({"index_patterns": ["*"]}))?;
    assert_es_error(status, &body, 400, "illegal_argument_exception");
    ensure!(
        body["error"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("need etcd"),
        "{body}"
    );
    ensure!(server.get("/_index_template")?.1 == json!({"index_templates": []}));
    // The copy refreshes only when asked, so that a write can land after
    // the searcher a by-query request reads.
    let (status, body) = server.put(
        "/copy",
        &json!({"settings": {"number_of_shards": 3, "refresh_interval": "-1"}}),
    )?;
    ensure!(status == 200, "{body}");
    let (status, body) = server.post(
        "/_reindex?refresh=true",
        &json!({"source": {"index": "docs", "size": 500}, "dest": {"index": "copy"}}),
    )?;
    ensure!(
        status == 200 && body["created"] == json!(1200) && body["batches"] == json!(3),
        "{body}"
    );
    // The same documents, under the same ids, on the copy's shards.
    let sums = |index: &str| {
        server.sql_rows(&format!(
            "SELECT count(*), count(DISTINCT _id), sum(n) FROM {index}"
        ))
    };
    ensure!(
        sums("copy")? == sums("docs")?,
        "{:?} {:?}",
        sums("copy")?,
        sums("docs")?
    );
    let (_, shards) = server.get("/_cat/shards?format=json")?;
    let nodes: std::collections::BTreeSet<&str> = shards
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["index"] == "copy")
        .filter_map(|s| s["node"].as_str())
        .collect();
    ensure!(
        nodes.len() == 3,
        "the copy's shards are on the data nodes: {shards}"
    );

    // The data nodes decide conflicts, and the coordinator counts theirs
    // as conflicts: with `proceed`, a copy that creates only goes on past
    // every document it finds.
    let (status, body) = server.post(
        "/_reindex",
        &json!({
            "source": {"index": "docs", "size": 500},
            "dest": {"index": "copy", "op_type": "create"},
            "conflicts": "proceed",
        }),
    )?;
    ensure!(
        status == 200
            && body["created"] == json!(0)
            && body["version_conflicts"] == json!(1200)
            && body["failures"] == json!([]),
        "{status} {body}"
    );
    let (_, doc) = server.get("/copy/_doc/d7")?;
    let seq_no = doc["_seq_no"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no _seq_no: {doc}"))?;
    let (status, body) = server.put(
        &format!("/copy/_doc/d7?if_seq_no={}&if_primary_term=1", seq_no + 1),
        &doc["_source"],
    )?;
    ensure!(
        status == 409 && body["error"]["type"] == "version_conflict_engine_exception",
        "{status} {body}"
    );
    let (status, body) = server.put(
        &format!("/copy/_doc/d7?if_seq_no={seq_no}&if_primary_term=1"),
        &doc["_source"],
    )?;
    let new_seq_no = body["_seq_no"].as_u64().filter(|&n| n > seq_no);
    ensure!(status == 200 && new_seq_no.is_some(), "{status} {body}");
    // d7 changed after the copy's last refresh: `_update_by_query` finds
    // it changed on its node, and counts it as a conflict.
    let (status, body) = server.post("/copy/_update_by_query?conflicts=proceed", &json!({}))?;
    ensure!(
        status == 200
            && body["updated"] == json!(1199)
            && body["version_conflicts"] == json!(1)
            && body["failures"] == json!([]),
        "{status} {body}"
    );
    // `_mget` reads each node's documents in one call, and answers in the
    // order asked, each as a get would, or with its own error.
    let ids = ["d3", "d7", "missing", "d1199", "d0"];
    let mut asked: Vec<Value> = ids
        .iter()
        .map(|id| json!({"_index": "copy", "_id": id}))
        .collect();
    asked.insert(2, json!({"_index": "nowhere", "_id": "d1"}));
    let (status, body) = server.post("/_mget", &json!({"docs": asked}))?;
    ensure!(status == 200, "{body}");
    let got: Vec<(Value, Value, Value)> = body["docs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| (d["_id"].clone(), d["found"].clone(), d["error"]["type"].clone()))
        .collect();
    ensure!(
        got == [
            (json!("d3"), json!(true), Value::Null),
            (json!("d7"), json!(true), Value::Null),
            (json!("d1"), Value::Null, json!("index_not_found_exception")),
            (json!("missing"), json!(false), Value::Null),
            (json!("d1199"), json!(true), Value::Null),
            (json!("d0"), json!(true), Value::Null),
        ],
        "{body}"
    );
    for doc in body["docs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["found"] == true)
    {
        let (_, one) = server.get(&format!("/copy/_doc/{}", doc["_id"].as_str().unwrap_or("")))?;
        ensure!(*doc == one, "{doc} {one}");
    }
    let (_, after) = server.get("/copy/_doc/d7")?;
    ensure!(
        after["_seq_no"].as_u64() == new_seq_no && after["_source"] == doc["_source"],
        "{after}"
    );

    // External versions go with the write to the data node, which keeps the
    // newest.
    let external = |id: &str, version: u64| {
        server.put(
            &format!("/copy/_doc/{id}?version={version}&version_type=external"),
            &json!({"v": version}),
        )
    };
    let (status, body) = external("x1", 7)?;
    ensure!(status == 201 && body["_version"] == json!(7), "{status} {body}");
    let (status, body) = external("x1", 6)?;
    ensure!(
        status == 409 && body["error"]["type"] == "version_conflict_engine_exception",
        "{status} {body}"
    );
    let (_, x1) = server.get("/copy/_doc/x1")?;
    ensure!(
        x1["_version"] == json!(7) && x1["_source"] == json!({"v": 7}),
        "{x1}"
    );
    Ok(())
}
