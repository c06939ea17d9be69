//! Cross-checks the DSL aggregations against independently written SQL over
//! the same index: every aggregation type, and nested sub-aggregations.
//! `percentiles` (t-digest) and `cardinality` (HyperLogLog) are compared
//! with exact values computed from SQL within their documented error.

mod common;

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use common::Server;
use serde_json::{Value, json};

const DOCS: usize = 3000;
const CATS: [&str; 6] = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"];
const SUBS: [&str; 4] = ["north", "south", "east", "west"];
/// 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200_000;

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn load(server: &Server) -> Result<()> {
    let (status, body) = server.put(
        "/xcheck",
        &json!({
            "settings": {"number_of_shards": 2},
            "mappings": {"properties": {
                "cat": {"type": "keyword"}, "sub": {"type": "keyword"}, "n": {"type": "long"},
                "x": {"type": "double"}, "ts": {"type": "date"}, "flag": {"type": "boolean"}
            }}
        }),
    )?;
    ensure!(status == 200, "{body}");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut lines = Vec::new();
    for i in 0..DOCS {
        let mut doc = json!({
            "cat": CATS[(rng.below(100) as usize * rng.below(100) as usize / 1700).min(5)],
            "sub": SUBS[rng.below(4) as usize],
            "n": rng.below(1000) as i64,
            "ts": T0 + rng.below(200 * 86_400_000) as i64,
            "flag": rng.below(3) == 0,
        });
        if rng.below(10) != 0 {
            doc["x"] = json!((rng.below(100_000) as f64) / 100.0 - 200.0);
        }
        lines.push(json!({"index": {"_id": i.to_string()}}));
        lines.push(doc);
    }
    for chunk in lines.chunks(1000) {
        let (status, body) = server.bulk("/xcheck/_bulk", chunk)?;
        ensure!(status == 200 && body["errors"] == json!(false), "{body}");
    }
    let (status, _) = server.post("/xcheck/_refresh", &json!({}))?;
    ensure!(status == 200);
    Ok(())
}

fn search(server: &Server, body: Value) -> Result<Value> {
    let (status, resp) = server.post("/xcheck/_search", &body)?;
    ensure!(status == 200, "{body} -> {resp}");
    Ok(resp["aggregations"].clone())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

fn num(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// `key -> doc_count` of bucket arrays.
fn bucket_counts(buckets: &Value) -> BTreeMap<String, i64> {
    buckets
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| (key_text(&b["key"]), b["doc_count"].as_i64().unwrap_or(-1)))
                .collect()
        })
        .unwrap_or_default()
}

fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => format!("{}", n.as_f64().unwrap_or(f64::NAN)),
        other => other.to_string(),
    }
}

/// `SELECT key, count` rows as `key -> count`.
fn sql_counts(server: &Server, sql: &str) -> Result<BTreeMap<String, i64>> {
    Ok(server
        .sql_rows(sql)?
        .iter()
        .map(|r| (key_text(&r[0]), r[1].as_i64().unwrap_or(-1)))
        .collect())
}

fn sql_one(server: &Server, sql: &str) -> Result<Vec<Value>> {
    let rows = server.sql_rows(sql)?;
    rows.first().and_then(Value::as_array).cloned().context("no row")
}

#[test]
fn dsl_aggregations_match_sql() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    load(&server)?;

    // terms: every bucket, ordered by count desc then key.
    let a = search(
        &server,
        json!({"size": 0, "aggs": {"t": {"terms": {"field": "cat", "size": 100}}}}),
    )?;
    let want = sql_counts(&server, "SELECT cat, count(*) FROM xcheck GROUP BY cat")?;
    ensure!(
        bucket_counts(&a["t"]["buckets"]) == want,
        "terms: {a} vs {want:?}"
    );
    let counts: Vec<i64> = a["t"]["buckets"]
        .as_array()
        .context("buckets")?
        .iter()
        .map(|b| b["doc_count"].as_i64().unwrap_or(0))
        .collect();
    ensure!(counts.windows(2).all(|w| w[0] >= w[1]), "terms order: {counts:?}");
    // terms with size: the top 3 and the rest in sum_other_doc_count.
    let a = search(
        &server,
        json!({"size": 0, "aggs": {"t": {"terms": {"field": "cat", "size": 3}}}}),
    )?;
    let shown: i64 = bucket_counts(&a["t"]["buckets"]).values().sum();
    ensure!(
        a["t"]["sum_other_doc_count"].as_i64() == Some(DOCS as i64 - shown),
        "sum_other_doc_count: {a}"
    );

    // histogram.
    let a = search(
        &server,
        json!({"size": 0, "aggs": {"h": {"histogram": {"field": "n", "interval": 100, "min_doc_count": 1}}}}),
    )?;
    let want = sql_counts(
        &server,
        "SELECT CAST(floor(n / 100.0) * 100 AS DOUBLE) AS k, count(*) FROM xcheck GROUP BY k",
    )?;
    ensure!(
        bucket_counts(&a["h"]["buckets"]) == want,
        "histogram: {a} vs {want:?}"
    );

    // date_histogram, calendar and fixed intervals.
    let a = search(
        &server,
        json!({"size": 0, "aggs": {"d": {"date_histogram": {"field": "ts", "calendar_interval": "month"}}}}),
    )?;
    let want = sql_counts(
        &server,
        "SELECT CAST(CAST(date_trunc('month', ts) AS BIGINT) AS DOUBLE) AS k, count(*) FROM xcheck GROUP BY k",
    )?;
    ensure!(
        bucket_counts(&a["d"]["buckets"]) == want,
        "date_histogram month: {a} vs {want:?}"
    );
    let a = search(
        &server,
        json!({"size": 0, "aggs": {"d": {"date_histogram": {"field": "ts", "fixed_interval": "7d", "min_doc_count": 1}}}}),
    )?;
    let want = sql_counts(
        &server,
        "SELECT CAST(CAST(date_bin(INTERVAL '7 days', ts, TIMESTAMP '1970-01-01T00:00:00') AS BIGINT) AS DOUBLE) AS k, count(*) FROM xcheck GROUP BY k",
    )?;
    ensure!(
        bucket_counts(&a["d"]["buckets"]) == want,
        "date_histogram 7d: {a} vs {want:?}"
    );
    // Both ran inside the scan (the buckets computed from fast fields),
    // as do a histogram with a metric under it and percentiles (a t-digest
    // per shard); a calendar interval (months of different lengths) is
    // left to DataFusion.
    for (agg, inside) in [
        (
            json!({"histogram": {"field": "n", "interval": 100}}),
            Some("histogram(n, interval=100"),
        ),
        (
            json!({"histogram": {"field": "x", "interval": 5, "offset": 1}, "aggs": {"m": {"max": {"field": "n"}}}}),
            Some("histogram(x, interval=5, offset=1)"),
        ),
        (
            json!({"date_histogram": {"field": "ts", "fixed_interval": "7d"}}),
            Some("date_histogram(ts, fixed=604800000ms"),
        ),
        (json!({"percentiles": {"field": "x"}}), Some("Percentile(x, 300)")),
        (
            json!({"date_histogram": {"field": "ts", "calendar_interval": "month"}}),
            None,
        ),
    ] {
        let (status, view) = server.post(
            "/xcheck/_search?explain_plan=true",
            &json!({"size": 0, "aggs": {"a": agg}}),
        )?;
        ensure!(status == 200, "{view}");
        let physical = view["plans"]
            .as_array()
            .and_then(|plans| {
                plans.iter().find(|p| {
                    p["purpose"]
                        .as_str()
                        .is_some_and(|purpose| purpose.starts_with("aggregation "))
                })
            })
            .and_then(|p| p["physical_plan"].as_str())
            .with_context(|| format!("no aggregation plan in {view}"))?;
        match inside {
            Some(group) => ensure!(
                physical.contains("TantivyAggregateExec") && physical.contains(group),
                "{agg}: {physical}"
            ),
            None => ensure!(!physical.contains("TantivyAggregateExec"), "{agg}: {physical}"),
        }
    }

    // range and filters.
    let a = search(
        &server,
        json!({"size": 0, "aggs": {"r": {"range": {"field": "n", "ranges": [{"to": 100}, {"from": 100, "to": 500}, {"from": 500}]}}}}),
    )?;
    let row = sql_one(
        &server,
        "SELECT sum(CASE WHEN n < 100 THEN 1 ELSE 0 END), sum(CASE WHEN n >= 100 AND n < 500 THEN 1 ELSE 0 END), sum(CASE WHEN n >= 500 THEN 1 ELSE 0 END) FROM xcheck",
    )?;
    let got: Vec<i64> = a["r"]["buckets"]
        .as_array()
        .context("range buckets")?
        .iter()
        .map(|b| b["doc_count"].as_i64().unwrap_or(-1))
        .collect();
    let want: Vec<i64> = row.iter().map(|v| v.as_i64().unwrap_or(-2)).collect();
    ensure!(got == want, "range: {got:?} vs {want:?}");
    let a = search(
        &server,
        json!({"size": 0, "aggs": {"f": {"filters": {"other_bucket": true, "filters": {
            "a": {"term": {"cat": "alpha"}},
            "neg": {"range": {"x": {"lt": 0}}}
        }}}}}),
    )?;
    let row = sql_one(
        &server,
        "SELECT sum(CASE WHEN cat = 'alpha' THEN 1 ELSE 0 END), sum(CASE WHEN x < 0 THEN 1 ELSE 0 END), sum(CASE WHEN cat <> 'alpha' AND (x IS NULL OR x >= 0) THEN 1 ELSE 0 END) FROM xcheck",
    )?;
    let b = &a["f"]["buckets"];
    let got = [&b["a"], &b["neg"], &b["_other_"]].map(|x| x["doc_count"].as_i64().unwrap_or(-1));
    let want: Vec<i64> = row.iter().map(|v| v.as_i64().unwrap_or(-2)).collect();
    ensure!(got.to_vec() == want, "filters: {got:?} vs {want:?}");

    // Single-value metrics, stats and extended_stats.
    let a = search(
        &server,
        json!({"size": 0, "aggs": {
            "avg": {"avg": {"field": "x"}}, "min": {"min": {"field": "x"}}, "max": {"max": {"field": "x"}},
            "sum": {"sum": {"field": "x"}}, "count": {"value_count": {"field": "x"}},
            "stats": {"stats": {"field": "n"}}, "ext": {"extended_stats": {"field": "x", "sigma": 3}}
        }}),
    )?;
    let row = sql_one(
        &server,
        "SELECT avg(x), min(x), max(x), sum(x), count(x), count(n), min(n), max(n), avg(n), sum(n), \
         sum(x * x), var_pop(x), var_samp(x), stddev_pop(x), stddev(x) FROM xcheck",
    )?;
    let r: Vec<f64> = row.iter().map(num).collect();
    let pairs = [
        (&a["avg"]["value"], r[0]),
        (&a["min"]["value"], r[1]),
        (&a["max"]["value"], r[2]),
        (&a["sum"]["value"], r[3]),
        (&a["count"]["value"], r[4]),
        (&a["stats"]["count"], r[5]),
        (&a["stats"]["min"], r[6]),
        (&a["stats"]["max"], r[7]),
        (&a["stats"]["avg"], r[8]),
        (&a["stats"]["sum"], r[9]),
        (&a["ext"]["count"], r[4]),
        (&a["ext"]["sum_of_squares"], r[10]),
        (&a["ext"]["variance"], r[11]),
        (&a["ext"]["variance_sampling"], r[12]),
        (&a["ext"]["std_deviation"], r[13]),
        (&a["ext"]["std_deviation_sampling"], r[14]),
        (&a["ext"]["std_deviation_bounds"]["upper"], r[0] + 3.0 * r[13]),
        (
            &a["ext"]["std_deviation_bounds"]["lower_sampling"],
            r[0] - 3.0 * r[14],
        ),
    ];
    for (i, (got, want)) in pairs.iter().enumerate() {
        ensure!(close(num(got), *want), "metric #{i}: {got} vs {want} in {a}");
    }

    // percentiles: t-digest; within 1% of the value range of the exact
    // (linearly interpolated) percentile.
    let a = search(
        &server,
        json!({"size": 0, "aggs": {"p": {"percentiles": {"field": "x", "percents": [5, 25, 50, 75, 99]}}}}),
    )?;
    let values: Vec<f64> = server
        .sql_rows("SELECT x FROM xcheck WHERE x IS NOT NULL ORDER BY x")?
        .iter()
        .map(|r| num(&r[0]))
        .collect();
    let range = values[values.len() - 1] - values[0];
    for p in [5.0, 25.0, 50.0, 75.0, 99.0] {
        let rank = p / 100.0 * (values.len() - 1) as f64;
        let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
        let exact = values[lo] + (values[hi] - values[lo]) * (rank - lo as f64);
        let got = num(&a["p"]["values"][format!("{p:.1}")]);
        ensure!(
            (got - exact).abs() <= 0.01 * range,
            "percentile {p}: {got} vs exact {exact}"
        );
    }

    // cardinality: HyperLogLog; within 2% of the exact distinct count.
    let a = search(
        &server,
        json!({"size": 0, "aggs": {"c": {"cardinality": {"field": "n"}}}}),
    )?;
    let exact = num(&sql_one(&server, "SELECT count(DISTINCT n) FROM xcheck")?[0]);
    let got = num(&a["c"]["value"]);
    ensure!(
        (got - exact).abs() <= 0.02 * exact,
        "cardinality: {got} vs {exact}"
    );

    // Nested: terms > terms > avg, with a query.
    let a = search(
        &server,
        json!({"size": 0, "query": {"term": {"flag": true}}, "aggs": {"c": {
            "terms": {"field": "cat", "size": 10},
            "aggs": {"s": {"terms": {"field": "sub", "size": 10}, "aggs": {"m": {"avg": {"field": "x"}}}}}
        }}}),
    )?;
    let rows = server
        .sql_rows("SELECT cat, sub, count(*), avg(x) FROM xcheck WHERE flag = true GROUP BY cat, sub")?;
    let mut seen = 0;
    for row in &rows {
        let (cat, sub) = (key_text(&row[0]), key_text(&row[1]));
        let outer = a["c"]["buckets"]
            .as_array()
            .and_then(|bs| bs.iter().find(|b| b["key"] == json!(cat)))
            .with_context(|| format!("no bucket {cat}"))?;
        let inner = outer["s"]["buckets"]
            .as_array()
            .and_then(|bs| bs.iter().find(|b| b["key"] == json!(sub)))
            .with_context(|| format!("no bucket {cat}/{sub}"))?;
        ensure!(
            inner["doc_count"].as_i64() == row[2].as_i64(),
            "{cat}/{sub} count"
        );
        ensure!(close(num(&inner["m"]["value"]), num(&row[3])), "{cat}/{sub} avg");
        seen += 1;
    }
    ensure!(seen > 10, "nested terms compared {seen} buckets");

    // Nested: date_histogram > stats, range > terms, filters > avg.
    let a = search(
        &server,
        json!({"size": 0, "aggs": {
            "d": {"date_histogram": {"field": "ts", "calendar_interval": "month"},
                  "aggs": {"s": {"stats": {"field": "n"}}}},
            "r": {"range": {"field": "n", "ranges": [{"to": 500}, {"from": 500}]},
                  "aggs": {"t": {"terms": {"field": "sub"}}}},
            "f": {"filters": {"filters": {"neg": {"range": {"x": {"lt": 0}}}}},
                  "aggs": {"m": {"avg": {"field": "n"}}}}
        }}),
    )?;
    let rows = server.sql_rows(
        "SELECT CAST(date_trunc('month', ts) AS BIGINT), count(n), min(n), max(n), sum(n) FROM xcheck GROUP BY 1",
    )?;
    for row in &rows {
        let b = a["d"]["buckets"]
            .as_array()
            .and_then(|bs| bs.iter().find(|b| b["key"].as_i64() == row[0].as_i64()))
            .context("month bucket")?;
        for (field, i) in [("count", 1), ("min", 2), ("max", 3), ("sum", 4)] {
            ensure!(
                close(num(&b["s"][field]), num(&row[i])),
                "month stats {field}: {b} vs {row}"
            );
        }
    }
    let rows = server
        .sql_rows("SELECT CASE WHEN n < 500 THEN 0 ELSE 1 END, sub, count(*) FROM xcheck GROUP BY 1, 2")?;
    for row in &rows {
        let bucket = &a["r"]["buckets"][row[0].as_u64().context("range index")? as usize];
        let got = bucket["t"]["buckets"]
            .as_array()
            .and_then(|bs| bs.iter().find(|b| b["key"] == row[1]))
            .and_then(|b| b["doc_count"].as_i64());
        ensure!(got == row[2].as_i64(), "range > terms: {bucket} vs {row}");
    }
    let row = sql_one(&server, "SELECT count(*), avg(n) FROM xcheck WHERE x < 0")?;
    let neg = &a["f"]["buckets"]["neg"];
    ensure!(
        neg["doc_count"].as_i64() == row[0].as_i64(),
        "filters > avg count"
    );
    ensure!(
        close(num(&neg["m"]["value"]), num(&row[1])),
        "filters > avg value"
    );
    Ok(())
}

/// Elasticsearch counts a document once per bucket, however many of its
/// values fall in it.
#[test]
fn multi_valued_fields_count_documents_once_per_bucket() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let (status, body) = server.put(
        "/multi",
        &json!({"mappings": {"properties": {"v": {"type": "long"}, "t": {"type": "keyword"}, "x": {"type": "double"}}}}),
    )?;
    ensure!(status == 200, "{body}");
    let lines = vec![
        json!({"index": {"_id": "1"}}),
        json!({"v": [1, 2, 15], "t": ["a", "a", "b"], "x": 10.0}),
        json!({"index": {"_id": "2"}}),
        json!({"v": [3], "t": ["a"], "x": 20.0}),
    ];
    let (status, body) = server.bulk("/multi/_bulk?refresh=true", &lines)?;
    ensure!(status == 200 && body["errors"] == json!(false), "{body}");
    let (status, resp) = server.post(
        "/multi/_search",
        &json!({"size": 0, "aggs": {
            "h": {"histogram": {"field": "v", "interval": 10}, "aggs": {"s": {"sum": {"field": "x"}}}},
            "t": {"terms": {"field": "t"}, "aggs": {"s": {"sum": {"field": "x"}}}}
        }}),
    )?;
    ensure!(status == 200, "{resp}");
    let a = &resp["aggregations"];
    ensure!(
        a["h"]["buckets"]
            == json!([
                {"key": 0.0, "doc_count": 2, "s": {"value": 30.0}},
                {"key": 10.0, "doc_count": 1, "s": {"value": 10.0}}
            ]),
        "histogram: {a}"
    );
    ensure!(
        a["t"]["buckets"]
            == json!([
                {"key": "a", "doc_count": 2, "s": {"value": 30.0}},
                {"key": "b", "doc_count": 1, "s": {"value": 10.0}}
            ]),
        "terms: {a}"
    );
    Ok(())
}

/// A `terms` over every document counts each keyword from the term
/// dictionary in segments without deletions, and visits the documents of the
/// others: either way the counts are those of the live documents.
#[test]
fn terms_over_every_document_count_the_live_documents() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let (status, body) = server.put(
        "/kw",
        &json!({
            "settings": {"number_of_shards": 2},
            "mappings": {"properties": {"k": {"type": "keyword"}, "n": {"type": "long"}}}
        }),
    )?;
    ensure!(status == 200, "{body}");
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut docs: BTreeMap<u64, Option<&str>> = BTreeMap::new();
    let mut write = |ids: std::ops::Range<u64>, docs: &mut BTreeMap<u64, Option<&str>>| -> Result<()> {
        let mut lines = Vec::new();
        for id in ids {
            let k = (rng.below(5) != 0).then(|| CATS[rng.below(6) as usize]);
            lines.push(json!({"index": {"_id": id.to_string()}}));
            lines.push(match k {
                Some(k) => json!({"k": k, "n": id}),
                None => json!({"n": id}),
            });
            docs.insert(id, k);
        }
        let (status, body) = server.bulk("/kw/_bulk?refresh=true", &lines)?;
        ensure!(status == 200 && body["errors"] == json!(false), "{body}");
        Ok(())
    };
    // A refresh per bulk: several segments per shard.
    for round in 0..3 {
        write(round * 400..(round + 1) * 400, &mut docs)?;
    }
    let check = |docs: &BTreeMap<u64, Option<&str>>, when: &str| -> Result<()> {
        let mut want: BTreeMap<String, i64> = BTreeMap::new();
        for k in docs.values().flatten() {
            *want.entry(k.to_string()).or_default() += 1;
        }
        let (status, resp) = server.post(
            "/kw/_search",
            &json!({"size": 0, "aggs": {"t": {"terms": {"field": "k", "size": 100}}}}),
        )?;
        ensure!(status == 200, "{resp}");
        let got = bucket_counts(&resp["aggregations"]["t"]["buckets"]);
        ensure!(got == want, "terms {when}: {got:?} vs {want:?}");
        // SQL's NULL group holds the documents without a keyword.
        let without = docs.values().filter(|k| k.is_none()).count() as i64;
        ensure!(without > 0, "every document has a keyword");
        want.insert("null".into(), without);
        let got = sql_counts(&server, "SELECT k, count(*) FROM kw GROUP BY k")?;
        ensure!(got == want, "GROUP BY {when}: {got:?} vs {want:?}");
        Ok(())
    };
    check(&docs, "after loading")?;
    // Replacing documents deletes their old versions from older segments.
    write(100..300, &mut docs)?;
    let lines: Vec<Value> = (700..760)
        .map(|id| json!({"delete": {"_id": id.to_string()}}))
        .collect();
    let (status, body) = server.bulk("/kw/_bulk?refresh=true", &lines)?;
    ensure!(status == 200 && body["errors"] == json!(false), "{body}");
    for id in 700..760 {
        docs.remove(&id);
    }
    check(&docs, "after replacing and deleting")?;
    Ok(())
}
