//! Fields mapped when an index is created have tantivy fields of their own;
//! fields mapped later share the shards' JSON fields. Both must answer every
//! query, sort, aggregation and SQL statement alike: two indices with the
//! same mapping (one mapped at creation, one by `PUT _mapping` after it)
//! and the same documents are compared answer by answer.

mod common;

use std::path::Path;

use anyhow::{Context, Result, ensure};
use common::Server;
use serde_json::{Value, json};

const DOCS: u64 = 240;
const WORDS: [&str; 8] = ["quick", "brown", "fox", "jumps", "over", "lazy", "dog", "quiet"];
const KINDS: [&str; 5] = ["alpha", "beta", "gamma", "alpine", "delta"];

fn properties() -> Value {
    json!({
        "kind": {"type": "keyword"},
        "tags": {"type": "keyword"},
        "n": {"type": "long"},
        "small": {"type": "integer"},
        "d": {"type": "double"},
        "f": {"type": "float"},
        "price": {"type": "scaled_float", "scaling_factor": 100},
        "ts": {"type": "date"},
        "ok": {"type": "boolean"},
        "addr": {"type": "ip"},
        "title": {"type": "text", "fields": {"raw": {"type": "keyword"}}},
        "body": {"type": "text"}
    })
}

/// A deterministic document; some fields are missing or multi-valued.
fn doc(i: u64) -> Value {
    let word = |k: u64| WORDS[((i * 7 + k * 3) % WORDS.len() as u64) as usize];
    let mut doc = json!({
        "kind": KINDS[(i % KINDS.len() as u64) as usize],
        "n": (i % 13) as i64 - 4,
        "d": (i % 9) as f64 * 0.5,
        "f": (i % 5) as f64 + 0.25,
        "price": (i % 17) as f64 * 1.25,
        "ts": 1_704_067_200_000_i64 + (i as i64) * 3_600_000,
        "ok": i.is_multiple_of(3),
        "addr": format!("10.0.{}.{}", i % 4, i % 250),
        "title": format!("{} {} {}", word(0), word(1), word(2)),
    });
    if i % 8 == 1 {
        doc["tags"] = json!([KINDS[(i % 3) as usize]]);
    } else if !i.is_multiple_of(4) {
        doc["tags"] = json!([KINDS[(i % 3) as usize], KINDS[(i % 2 + 3) as usize]]);
    }
    if i % 6 != 1 {
        doc["body"] = json!(format!("{} {} {} {}", word(3), word(4), word(1), word(5)));
        doc["small"] = json!((i % 7) as i64);
    }
    doc
}

fn load(server: &Server) -> Result<()> {
    let settings = json!({"number_of_shards": 2});
    let (status, body) = server.put(
        "/own",
        &json!({"settings": settings, "mappings": {"properties": properties()}}),
    )?;
    ensure!(status == 200, "create own: {body}");
    let (status, body) = server.put("/late", &json!({"settings": settings}))?;
    ensure!(status == 200, "create late: {body}");
    let (status, body) = server.put("/late/_mapping", &json!({"properties": properties()}))?;
    ensure!(status == 200, "map late: {body}");
    for index in ["own", "late"] {
        let mut lines = Vec::new();
        for i in 0..DOCS {
            lines.push(json!({"index": {"_id": i.to_string()}}));
            lines.push(doc(i));
        }
        let (status, body) = server.bulk(&format!("/{index}/_bulk?refresh=true"), &lines)?;
        ensure!(status == 200 && body["errors"] == false, "bulk {index}: {body}");
    }
    Ok(())
}

/// The tantivy field names of the shards of the index named `name`.
fn shard_schema_fields(data_dir: &Path, name: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(data_dir.join("indices"))? {
        let dir = entry?.path();
        let matches = dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.rsplit_once('-').is_some_and(|(index, _)| index == name));
        if !matches {
            continue;
        }
        for shard in std::fs::read_dir(dir.join("shards"))? {
            let meta: Value = serde_json::from_slice(&std::fs::read(shard?.path().join("meta.json"))?)?;
            let fields = meta["schema"].as_array().context("schema")?;
            out.extend(
                fields
                    .iter()
                    .filter_map(|f| f["name"].as_str().map(str::to_string)),
            );
        }
    }
    ensure!(!out.is_empty(), "no shards of [{name}] in {}", data_dir.display());
    Ok(out)
}

/// How many hits a query is expected to have.
#[derive(Clone, Copy)]
enum Hits {
    /// Some, but not every document.
    Some,
    /// None.
    None,
}

fn search(server: &Server, index: &str, body: &Value) -> Result<Value> {
    let (status, answer) = server.post(&format!("/{index}/_search"), body)?;
    ensure!(status == 200, "{index} {body}: {status} {answer}");
    Ok(answer)
}

/// The ids of the hits, in order, and the total.
fn hits(answer: &Value) -> Result<(Vec<String>, u64)> {
    let ids = answer["hits"]["hits"]
        .as_array()
        .context("hits")?
        .iter()
        .map(|h| h["_id"].as_str().unwrap_or_default().to_string())
        .collect();
    let total = answer["hits"]["total"]["value"].as_u64().context("total")?;
    Ok((ids, total))
}

#[test]
fn fields_mapped_at_creation_answer_as_fields_mapped_later() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    load(&server)?;

    // The index mapped at creation has a field of its own per column; the
    // other keeps every value in the JSON fields.
    let own = shard_schema_fields(dir.path(), "own")?;
    for name in [
        "_field.kind",
        "_field.n",
        "_field.d",
        "_field.ok",
        "_field.title.raw",
        "_analyzed.title",
    ] {
        ensure!(own.iter().any(|f| f == name), "own has no {name}: {own:?}");
    }
    let late = shard_schema_fields(dir.path(), "late")?;
    ensure!(
        !late
            .iter()
            .any(|f| f.starts_with("_field.") || f.starts_with("_analyzed.")),
        "late has fields of its own: {late:?}"
    );

    let queries: Vec<(Value, Hits)> = vec![
        (json!({"term": {"kind": "beta"}}), Hits::Some),
        (json!({"terms": {"tags": ["alpha", "delta"]}}), Hits::Some),
        (json!({"term": {"n": 5}}), Hits::Some),
        (json!({"term": {"n": 5.0}}), Hits::Some),
        (json!({"term": {"d": 2}}), Hits::Some),
        (json!({"term": {"d": 1.5}}), Hits::Some),
        (json!({"term": {"f": 2.25}}), Hits::Some),
        (json!({"term": {"price": 3.75}}), Hits::Some),
        (json!({"term": {"ok": true}}), Hits::Some),
        (json!({"term": {"addr": "10.0.1.5"}}), Hits::Some),
        (json!({"range": {"n": {"gte": 1.5, "lt": 6.5}}}), Hits::Some),
        (json!({"range": {"n": {"gt": 1.5, "lte": 6.5}}}), Hits::Some),
        (json!({"range": {"n": {"gt": 2, "lt": 3}}}), Hits::None),
        (json!({"range": {"small": {"gte": 2, "lte": 4}}}), Hits::Some),
        (json!({"range": {"d": {"gt": 1, "lte": 3}}}), Hits::Some),
        (json!({"range": {"price": {"gte": 2.5, "lt": 10}}}), Hits::Some),
        (
            json!({"range": {"ts": {"gte": "2024-01-03", "lt": "2024-01-05T12:00:00Z"}}}),
            Hits::Some,
        ),
        (json!({"exists": {"field": "tags"}}), Hits::Some),
        (json!({"exists": {"field": "body"}}), Hits::Some),
        (json!({"exists": {"field": "small"}}), Hits::Some),
        (json!({"prefix": {"kind": "alp"}}), Hits::Some),
        (json!({"wildcard": {"kind": "*ta"}}), Hits::Some),
        (json!({"regexp": {"kind": "g.*a"}}), Hits::Some),
        (json!({"fuzzy": {"kind": "gamme"}}), Hits::Some),
        (json!({"prefix": {"title": "qui"}}), Hits::Some),
        (json!({"match": {"title": "quick fox"}}), Hits::Some),
        (
            json!({"match": {"title": {"query": "quick fox", "operator": "and"}}}),
            Hits::Some,
        ),
        (json!({"match": {"title.raw": "quick jumps dog"}}), Hits::Some),
        (json!({"match": {"title.raw": "quick"}}), Hits::None),
        (json!({"match_phrase": {"body": "over jumps"}}), Hits::Some),
        (json!({"match_phrase_prefix": {"title": "qui"}}), Hits::Some),
        (json!({"match_phrase_prefix": {"body": "jumps do"}}), Hits::Some),
        (
            json!({"multi_match": {"query": "lazy", "fields": ["title", "body"]}}),
            Hits::Some,
        ),
        (
            json!({"query_string": {"query": "title:quick AND n:[2 TO 5]"}}),
            Hits::Some,
        ),
        (json!({"query_string": {"query": "lazy -dog"}}), Hits::Some),
        (
            json!({"query_string": {"query": "kind:beta OR ok:true"}}),
            Hits::Some,
        ),
        (
            json!({"query_string": {"query": "n:5 OR price:3.75"}}),
            Hits::Some,
        ),
        (json!({"query_string": {"query": "ts:2024-01-03"}}), Hits::Some),
        (
            json!({"query_string": {"query": "n: IN [3 5] AND ok:true"}}),
            Hits::Some,
        ),
        (json!({"query_string": {"query": "n:5.0 OR d:1.5"}}), Hits::Some),
        (
            json!({"query_string": {"query": "tags:* AND kind:/al.*/"}}),
            Hits::Some,
        ),
        (json!({"query_string": {"query": "body:* AND n:*"}}), Hits::Some),
        (
            json!({"query_string": {"query": "5", "fields": ["title", "small"]}}),
            Hits::Some,
        ),
        // `lenient`: values that do not parse for their field match nothing.
        (
            json!({"query_string": {"query": "quick OR n:abc OR d:[x TO 3]", "fields": ["title"], "lenient": true}}),
            Hits::Some,
        ),
        (
            json!({"query_string": {"query": "n:abc OR ts:yesterday", "lenient": true}}),
            Hits::None,
        ),
        (
            json!({"query_string": {"query": "n: IN [5 abc]", "lenient": true}}),
            Hits::Some,
        ),
        (
            json!({"bool": {"must": [{"match": {"body": "brown"}}], "filter": [{"range": {"f": {"lt": 3}}}], "must_not": [{"term": {"kind": "alpha"}}]}}),
            Hits::Some,
        ),
    ];
    for (query, expected) in &queries {
        let body = json!({"query": query, "size": DOCS, "sort": [{"_id": "asc"}]});
        let (own_ids, own_total) = hits(&search(&server, "own", &body)?)?;
        let (late_ids, late_total) = hits(&search(&server, "late", &body)?)?;
        ensure!(
            own_ids == late_ids && own_total == late_total,
            "{query}: own {own_total} {own_ids:?}, late {late_total} {late_ids:?}"
        );
        match expected {
            Hits::Some => ensure!(0 < own_total && own_total < DOCS, "{query}: {own_total} hits"),
            Hits::None => ensure!(own_total == 0, "{query}: {own_total} hits"),
        }
    }

    // With `lenient: false` (over every field a query string is lenient by
    // default, as in Elasticsearch), such a value is the client's error,
    // and so is a pattern query on a field that is not a string.
    for index in ["own", "late"] {
        for (query, reason) in [
            (
                json!({"query_string": {"query": "n:abc", "lenient": false}}),
                "failed to parse",
            ),
            (
                json!({"query_string": {"query": "n: IN [5 abc]", "lenient": false}}),
                "failed to parse",
            ),
            (
                json!({"query_string": {"query": "d:[x TO 3]", "lenient": false}}),
                "failed to parse",
            ),
            (json!({"wildcard": {"ok": "*"}}), "Can only use wildcard queries"),
        ] {
            let body = json!({"query": query});
            let (status, answer) = server.post(&format!("/{index}/_search"), &body)?;
            ensure!(
                status == 400
                    && answer["error"]["failed_shards"][0]["index"] == json!(index)
                    && answer["error"]["root_cause"][0]["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains(reason)),
                "{index} {query}: {status} {answer}"
            );
        }
    }

    // `lenient` of a URL query string too.
    for index in ["own", "late"] {
        let (status, answer) = server.get(&format!("/{index}/_search?q=n:abc&lenient=true"))?;
        ensure!(
            status == 200 && answer["hits"]["total"]["value"] == json!(0),
            "{index}: {status} {answer}"
        );
        let (status, answer) =
            server.get(&format!("/{index}/_count?q=n:abc%20OR%20kind:beta&lenient=true"))?;
        let (_, beta) = server.get(&format!("/{index}/_count?q=kind:beta"))?;
        ensure!(
            status == 200 && answer["count"] == beta["count"] && beta["count"].as_u64() > Some(0),
            "{index}: {status} {answer} {beta}"
        );
        let (status, answer) = server.get(&format!("/{index}/_count?q=n:abc"))?;
        ensure!(
            status == 200 && answer["count"] == json!(0),
            "{index}: _count, lenient by default: {status} {answer}"
        );
        let (status, answer) = server.get(&format!("/{index}/_count?q=n:abc&lenient=false"))?;
        ensure!(
            status == 400 && answer["error"]["failed_shards"][0]["index"] == json!(index),
            "{index}: _count with lenient=false: {status} {answer}"
        );
    }

    // A keyword's score does not depend on how many values a document has
    // (no field norms), as in Elasticsearch.
    for index in ["own", "late"] {
        let answer = search(
            &server,
            index,
            &json!({"query": {"term": {"tags": "alpha"}}, "size": DOCS}),
        )?;
        let scores: Vec<f64> = answer["hits"]["hits"]
            .as_array()
            .context("hits")?
            .iter()
            .filter_map(|h| h["_score"].as_f64())
            .collect();
        ensure!(
            scores.len() > 1 && scores.iter().all(|s| (s - scores[0]).abs() < 1e-6),
            "{index}: {scores:?}"
        );
    }

    // `exists` scores 1, on text as on columns, as in Elasticsearch.
    for (index, field) in [
        ("own", "body"),
        ("late", "body"),
        ("own", "tags"),
        ("late", "tags"),
    ] {
        let answer = search(
            &server,
            index,
            &json!({"query": {"exists": {"field": field}}, "size": DOCS}),
        )?;
        let hits = answer["hits"]["hits"].as_array().context("hits")?;
        ensure!(
            hits.len() > 1 && hits.iter().all(|h| h["_score"].as_f64() == Some(1.0)),
            "{index} {field}: {answer}"
        );
    }

    // Sorts on columns, through the scan's top-k.
    for sort in [
        json!([{"n": "desc"}, {"_id": "asc"}]),
        json!([{"d": "asc"}, {"kind": "desc"}, {"_id": "asc"}]),
    ] {
        let body = json!({"query": {"match": {"body": "lazy"}}, "size": 15, "sort": sort});
        let own = hits(&search(&server, "own", &body)?)?;
        let late = hits(&search(&server, "late", &body)?)?;
        ensure!(
            own == late && own.0.len() == 15,
            "sort {sort}: own {own:?}, late {late:?}"
        );
    }

    // Aggregations read the same columns.
    let aggs = json!({
        "size": 0,
        "aggs": {
            "kinds": {"terms": {"field": "kind"}, "aggs": {"n": {"stats": {"field": "n"}}}},
            "tags": {"terms": {"field": "tags"}},
            "d": {"extended_stats": {"field": "d"}},
            "price": {"sum": {"field": "price"}},
            "f": {"avg": {"field": "f"}},
            "hist": {"histogram": {"field": "small", "interval": 2}},
            "days": {"date_histogram": {"field": "ts", "calendar_interval": "day"}},
            "ranges": {"range": {"field": "n", "ranges": [{"to": 0}, {"from": 0, "to": 4.5}, {"from": 4.5}]}},
            "distinct": {"cardinality": {"field": "kind"}},
            "ok": {"terms": {"field": "ok"}},
            "quick": {
                "filters": {"filters": {"quick": {"match": {"title": "quick"}}}},
                "aggs": {"max_n": {"max": {"field": "n"}}}
            }
        }
    });
    let own = search(&server, "own", &aggs)?["aggregations"].clone();
    let late = search(&server, "late", &aggs)?["aggregations"].clone();
    ensure!(own == late, "aggregations differ:\nown  {own}\nlate {late}");
    ensure!(
        own["kinds"]["buckets"]
            .as_array()
            .is_some_and(|b| b.len() == KINDS.len()),
        "{own}"
    );

    // SQL with pushed-down filters and full text.
    for sql in [
        "SELECT kind, count(*), sum(n), avg(d), min(ts), max(price) FROM {} GROUP BY kind ORDER BY kind",
        "SELECT _id, n, f FROM {} WHERE n BETWEEN 2 AND 5 AND kind LIKE 'al%' AND ok ORDER BY _id",
        "SELECT count(*) FROM {} WHERE match(title, 'quick') AND d > 1.5 AND addr = '10.0.2.6'",
        "SELECT _id FROM {} WHERE small IS NULL ORDER BY _id",
        "SELECT _id FROM {} WHERE n > 1.5 AND n <= 6.5 AND d = 2 ORDER BY _id",
        "SELECT _id FROM {} WHERE match_phrase(body, 'over jumps') ORDER BY _id",
    ] {
        let own = server.sql_rows(&sql.replace("{}", "own"))?;
        let late = server.sql_rows(&sql.replace("{}", "late"))?;
        ensure!(
            own == late && !own.is_empty(),
            "{sql}: own {own:?}, late {late:?}"
        );
    }
    Ok(())
}
