//! The HTTP API as a user sees it: mappings, documents, refresh, SQL, errors.

mod common;

use anyhow::{Result, anyhow};
use common::{Server, assert_es_error};
use serde_json::{Value, json};

#[test]
fn every_mapping_type_round_trips_through_sql() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let mapping = json!({"mappings": {"properties": {
        "kw": {"type": "keyword"},
        "title": {"type": "text", "fields": {"raw": {"type": "keyword"}}},
        "l": {"type": "long"}, "i": {"type": "integer"}, "sh": {"type": "short"}, "b": {"type": "byte"},
        "d": {"type": "double"}, "f": {"type": "float"},
        "ts": {"type": "date"}, "day": {"type": "date", "format": "yyyy-MM-dd HH:mm:ss||epoch_millis"},
        "ok": {"type": "boolean"}, "addr": {"type": "ip"},
        "user": {"properties": {"name": {"type": "keyword"}, "age": {"type": "integer"}}},
        "nums": {"type": "long"}, "tags": {"type": "keyword"}
    }}});
    let (status, body) = s.put("/types", &mapping)?;
    assert_eq!(status, 200, "{body}");
    let doc = json!({
        "kw": "alpha", "title": "Hello Wide World", "l": -9_007_199_254_740_993i64, "i": 2_000_000_000,
        "sh": -300, "b": 7, "d": 2.5, "f": 1.25, "ts": "2024-02-29T12:34:56.789Z", "day": "2024-03-01 08:00:00",
        "ok": true, "addr": "192.168.1.10", "user": {"name": "ann", "age": 41},
        "nums": [3, 1, 2], "tags": ["x", "y"]
    });
    let (status, body) = s.put("/types/_doc/1?refresh=true", &doc)?;
    assert_eq!(status, 201, "{body}");
    // A second document with few fields: the rest must come back as NULL, and a whole double.
    let (status, _) = s.put("/types/_doc/2?refresh=true", &json!({"kw": "beta", "d": 4.0}))?;
    assert_eq!(status, 201);
    let rows = s.sql_rows(
        "SELECT kw, title, \"title.raw\", l, i, sh, b, d, f, ts, day, ok, addr, \"user.name\", \"user.age\", nums, tags \
         FROM types ORDER BY kw",
    )?;
    assert_eq!(
        rows,
        vec![
            json!([
                "alpha",
                "Hello Wide World",
                "Hello Wide World",
                -9_007_199_254_740_993i64,
                2_000_000_000,
                -300,
                7,
                2.5,
                1.25,
                "2024-02-29T12:34:56.789Z",
                "2024-03-01T08:00:00.000Z",
                true,
                "192.168.1.10",
                "ann",
                41,
                [3, 1, 2],
                ["x", "y"]
            ]),
            json!([
                "beta", null, null, null, null, null, null, 4.0, null, null, null, null, null, null, null,
                null, null
            ]),
        ]
    );
    let schema = s.sql("SELECT kw, l, d, ts, ok, nums FROM types LIMIT 0")?;
    let types: Vec<&str> = schema["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert_eq!(
        types,
        vec!["keyword", "long", "double", "datetime", "boolean", "array<long>"]
    );
    // Filters on each type are pushed into the scan and give the right rows.
    for (filter, want) in [
        ("kw = 'alpha'", 1),
        ("l < 0", 1),
        ("d >= 4", 1),
        ("d BETWEEN 2 AND 3", 1),
        ("ts > '2024-01-01'", 1),
        ("ok = true", 1),
        ("\"user.name\" = 'ann'", 1),
        ("addr = '192.168.1.10'", 1),
        ("match(title, 'wide')", 1),
        ("match_phrase(title, 'wide world')", 1),
        ("match_phrase(title, 'world wide')", 0),
        ("query_string('title:hello AND i:[1000 TO 3000000000]')", 1),
        ("title IS NULL", 1),
    ] {
        let rows = s.sql_rows(&format!("SELECT count(*) FROM types WHERE {filter}"))?;
        assert_eq!(rows, vec![json!([want])], "{filter}");
    }
    Ok(())
}

#[test]
fn dynamic_mapping_follows_elasticsearch_rules() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, body) = s.post(
        "/auto/_doc?refresh=true",
        &json!({"name": "Ada Lovelace", "born": "1815-12-10", "papers": 3, "ratio": 0.5, "alive": false,
                "address": {"city": "London"}}),
    )?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["result"], json!("created"));
    let (_, mapping) = s.get("/auto/_mapping")?;
    let props = &mapping["auto"]["mappings"]["properties"];
    assert_eq!(
        props["name"],
        json!({"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}})
    );
    assert_eq!(props["born"]["type"], json!("date"));
    assert_eq!(props["papers"]["type"], json!("long"));
    assert_eq!(props["ratio"]["type"], json!("float"));
    assert_eq!(props["alive"]["type"], json!("boolean"));
    assert_eq!(props["address"]["properties"]["city"]["type"], json!("text"));
    let rows = s.sql_rows("SELECT \"name.keyword\", born, papers FROM auto WHERE match(name, 'ada')")?;
    assert_eq!(rows, vec![json!(["Ada Lovelace", "1815-12-10T00:00:00.000Z", 3])]);
    // A value that does not fit the dynamically chosen type fails that document only.
    let (status, body) = s.bulk(
        "/auto/_bulk?refresh=true",
        &[
            json!({"index": {}}),
            json!({"papers": "many"}),
            json!({"index": {}}),
            json!({"papers": 4}),
        ],
    )?;
    assert_eq!(status, 200);
    assert_eq!(body["errors"], json!(true));
    assert_eq!(body["items"][0]["index"]["status"], json!(400));
    assert_eq!(
        body["items"][0]["index"]["error"]["type"],
        json!("document_parsing_exception")
    );
    assert_eq!(body["items"][1]["index"]["status"], json!(201));
    assert_eq!(s.count("auto")?, 2);
    Ok(())
}

/// A server with an index `items` whose `n` is an `integer`.
fn items_server(dir: &std::path::Path) -> Result<Server> {
    let s = Server::start(dir)?;
    let (status, _) = s.put(
        "/items",
        &json!({"mappings": {"properties": {"n": {"type": "integer"}, "l": {"type": "long"}}}}),
    )?;
    assert_eq!(status, 200);
    Ok(s)
}

/// Each item of a bulk response: its action, status, `result` (or error
/// type) and `_version`.
fn item_outcomes(body: &Value) -> Vec<(String, i64, Value, Value)> {
    body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.as_object().and_then(|o| o.iter().next()))
        .map(|(action, r)| {
            (
                action.clone(),
                r["status"].as_i64().unwrap_or(0),
                r.get("result")
                    .cloned()
                    .unwrap_or_else(|| r["error"]["type"].clone()),
                r["_version"].clone(),
            )
        })
        .collect()
}

/// The status, result (or error type) and version of each item of a bulk
/// response.
fn item_results(body: &Value) -> Vec<(i64, Value, Value)> {
    item_outcomes(body)
        .into_iter()
        .map(|(_, status, result, version)| (status, result, version))
        .collect()
}

/// The status of each item of a bulk response.
fn item_statuses(body: &Value) -> Vec<i64> {
    item_outcomes(body)
        .into_iter()
        .map(|(_, status, _, _)| status)
        .collect()
}

#[test]
fn bulk_reports_each_item_beside_successes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = items_server(dir.path())?;
    let (status, body) = s.bulk(
        "/_bulk?refresh=true",
        &[
            json!({"index": {"_index": "items", "_id": "1"}}),
            json!({"n": 1}),
            json!({"create": {"_index": "items", "_id": "1"}}),
            json!({"n": 2}),
            json!({"index": {"_index": "items", "_id": "2"}}),
            json!({"n": "not a number"}),
            json!({"update": {"_index": "items", "_id": "1"}}),
            json!({"doc": {"n": 5}}),
            json!({"update": {"_index": "items", "_id": "3"}}),
            json!({"doc": {"n": 3}}),
            json!({"update": {"_index": "items", "_id": "4"}}),
            json!({"doc": {"n": 4}, "doc_as_upsert": true}),
            json!({"delete": {"_index": "items", "_id": "9"}}),
            json!({"delete": {"_index": "items", "_id": "4"}}),
            // A string is read as a number; a long's untrimmed, as
            // Elasticsearch reads it.
            json!({"index": {"_index": "items", "_id": "5"}}),
            json!({"n": " 7 ", "l": "8"}),
            json!({"index": {"_index": "items", "_id": "6"}}),
            json!({"l": " 8 "}),
        ],
    )?;
    assert_eq!(status, 200);
    assert_eq!(body["errors"], json!(true));
    let summary: Vec<(String, i64, Value)> = item_outcomes(&body)
        .into_iter()
        .map(|(action, status, result, _)| (action, status, result))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("index".into(), 201, json!("created")),
            ("create".into(), 409, json!("version_conflict_engine_exception")),
            ("index".into(), 400, json!("document_parsing_exception")),
            ("update".into(), 200, json!("updated")),
            ("update".into(), 404, json!("document_missing_exception")),
            ("update".into(), 201, json!("created")),
            ("delete".into(), 404, json!("not_found")),
            ("delete".into(), 200, json!("deleted")),
            ("index".into(), 201, json!("created")),
            ("index".into(), 400, json!("document_parsing_exception")),
        ]
    );
    assert_eq!(
        s.sql_rows("SELECT _id, n, l FROM items ORDER BY _id")?,
        vec![json!(["1", 5, null]), json!(["5", 7, 8])]
    );
    Ok(())
}

/// A bulk of only `index` and `create` writes with ids is parsed outside
/// the index's write lock; its shards still resolve versions and repeated
/// ids in request order.
#[test]
fn bulk_with_ids_resolves_versions_in_request_order() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = items_server(dir.path())?;
    let (status, body) = s.bulk(
        "/items/_bulk?refresh=true",
        &[
            json!({"index": {"_id": "a"}}),
            json!({"n": 1}),
            json!({"index": {"_id": "a"}}),
            json!({"n": 2}),
            json!({"create": {"_id": "a"}}),
            json!({"n": 3}),
            json!({"create": {"_id": "b"}}),
            json!({"n": 4}),
            json!({"index": {"_id": ""}}),
            json!({"n": 5}),
            json!({"index": {"_id": "c"}}),
            json!({"n": "x"}),
        ],
    )?;
    assert_eq!(status, 200);
    assert_eq!(
        item_results(&body),
        vec![
            (201, json!("created"), json!(1)),
            (200, json!("updated"), json!(2)),
            (409, json!("version_conflict_engine_exception"), Value::Null),
            (201, json!("created"), json!(1)),
            (400, json!("illegal_argument_exception"), Value::Null),
            (400, json!("document_parsing_exception"), Value::Null),
        ]
    );
    assert_eq!(
        s.sql_rows("SELECT _id, n FROM items ORDER BY _id")?,
        vec![json!(["a", 2]), json!(["b", 4])]
    );
    Ok(())
}

#[test]
fn refresh_semantics() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, _) = s.put("/manual", &json!({"settings": {"refresh_interval": "-1"}}))?;
    assert_eq!(status, 200);
    let (status, _) = s.put("/manual/_doc/a", &json!({"v": 1}))?;
    assert_eq!(status, 201);
    assert_eq!(
        s.count("manual")?,
        0,
        "not refreshed yet: searches must not see it"
    );
    let (status, doc) = s.get("/manual/_doc/a")?;
    assert_eq!(
        (status, &doc["_source"]),
        (200, &json!({"v": 1})),
        "GET by id is realtime"
    );
    let (status, body) = s.post("/manual/_refresh", &json!({}))?;
    assert_eq!(status, 200);
    assert_eq!(body["_shards"]["failed"], json!(0));
    assert_eq!(s.count("manual")?, 1);
    let (status, body) = s.put("/manual/_doc/b?refresh=true", &json!({"v": 2}))?;
    assert_eq!((status, &body["forced_refresh"]), (201, &json!(true)));
    assert_eq!(s.count("manual")?, 2);

    let (status, _) = s.put("/periodic", &json!({"settings": {"refresh_interval": "300ms"}}))?;
    assert_eq!(status, 200);
    let (status, _) = s.bulk(
        "/periodic/_bulk?refresh=wait_for",
        &[json!({"index": {}}), json!({"v": 1})],
    )?;
    assert_eq!(status, 200);
    assert_eq!(
        s.count("periodic")?,
        1,
        "wait_for returns once a refresh made the write visible"
    );
    let (status, _) = s.put("/periodic/_doc/x", &json!({"v": 2}))?;
    assert_eq!(status, 201);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while s.count("periodic")? < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "periodic refresh never made the write visible"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn replace_get_and_delete_by_id() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, body) = s.put("/docs/_doc/1?refresh=true", &json!({"title": "first"}))?;
    assert_eq!(
        (status, &body["result"], &body["_version"]),
        (201, &json!("created"), &json!(1))
    );
    let (status, body) = s.put("/docs/_doc/1?refresh=true", &json!({"title": "second"}))?;
    assert_eq!(
        (status, &body["result"], &body["_version"]),
        (200, &json!("updated"), &json!(2))
    );
    let (status, body) = s.get("/docs/_doc/1")?;
    assert_eq!(status, 200);
    assert_eq!(body["found"], json!(true));
    assert_eq!(body["_version"], json!(2));
    assert_eq!(body["_source"], json!({"title": "second"}));
    assert_eq!(
        s.sql_rows("SELECT _id, \"title.keyword\" FROM docs")?,
        vec![json!(["1", "second"])]
    );
    // Versions read back from the index (a first version has no value in
    // the `_version` column), by SQL, a search and a get after a refresh.
    let (status, _) = s.put("/docs/_doc/2?refresh=true", &json!({"title": "other"}))?;
    assert_eq!(status, 201);
    assert_eq!(
        s.sql_rows("SELECT _id, _version FROM docs ORDER BY _id")?,
        vec![json!(["1", 2]), json!(["2", 1])]
    );
    let (_, body) = s.post(
        "/docs/_search",
        &json!({"version": true, "sort": [{"_id": "asc"}]}),
    )?;
    let versions: Vec<&Value> = body["hits"]["hits"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| &h["_version"])
        .collect();
    assert_eq!(versions, [&json!(2), &json!(1)], "{body}");
    assert_eq!(s.get("/docs/_doc/2")?.1["_version"], json!(1));
    let (status, body) = s.put("/docs/_doc/2?refresh=true", &json!({"title": "other again"}))?;
    assert_eq!((status, &body["_version"]), (200, &json!(2)), "{body}");
    let (status, body) = s.request("DELETE", "/docs/_doc/2?refresh=true", None, "")?;
    assert_eq!((status, &body["_version"]), (200, &json!(3)), "{body}");
    let (status, body) = s.request("DELETE", "/docs/_doc/1?refresh=true", None, "")?;
    assert_eq!(
        (status, &body["result"], &body["_version"]),
        (200, &json!("deleted"), &json!(3))
    );
    let (status, body) = s.get("/docs/_doc/1")?;
    assert_eq!((status, &body["found"]), (404, &json!(false)));
    let (status, body) = s.delete("/docs/_doc/1")?;
    assert_eq!((status, &body["result"]), (404, &json!("not_found")));
    assert_eq!(s.count("docs")?, 0);
    Ok(())
}

#[test]
fn gets_filter_the_source_as_asked() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let doc = json!({"title": "lamp", "price": 12, "tags": ["a", "b"], "dims": {"w": 3, "h": 4}});
    let (status, _) = s.put("/shop/_doc/1?refresh=true", &doc)?;
    assert_eq!(status, 201);
    for (query, want) in [
        ("", Some(doc.clone())),
        ("?_source=true", Some(doc.clone())),
        ("?_source=false", None),
        (
            "?_source=title,dims.w",
            Some(json!({"title": "lamp", "dims": {"w": 3}})),
        ),
        ("?_source_includes=dims", Some(json!({"dims": {"w": 3, "h": 4}}))),
        (
            "?_source_excludes=dims.*,tags",
            Some(json!({"title": "lamp", "price": 12, "dims": {}})),
        ),
        ("?_source=false&_source_includes=price", None),
        (
            "?_source_includes=d*&_source_excludes=dims.h",
            Some(json!({"dims": {"w": 3}})),
        ),
    ] {
        let (status, body) = s.get(&format!("/shop/_doc/1{query}"))?;
        assert_eq!((status, &body["found"]), (200, &json!(true)), "{query}: {body}");
        assert_eq!(body.get("_source"), want.as_ref(), "{query}");
        // The source endpoint answers the same source alone.
        let (status, source) = s.get(&format!("/shop/_source/1{query}"))?;
        assert_eq!(
            (status, Some(&source)),
            (200, want.as_ref().or(Some(&json!({})))),
            "{query}"
        );
        // So do searches, by the same URL parameters.
        let (_, found) = s.get(&format!("/shop/_search{query}"))?;
        assert_eq!(found["hits"]["hits"][0].get("_source"), want.as_ref(), "{query}");
    }
    let (status, body) = s.get("/shop/_source/2")?;
    assert_es_error(status, &body, 404, "resource_not_found_exception");
    assert_eq!(body["error"]["reason"], json!("Document not found [shop]/[2]"));
    assert_eq!(s.request("HEAD", "/shop/_source/1", None, "")?.0, 200);
    assert_eq!(s.request("HEAD", "/shop/_source/2", None, "")?.0, 404);

    // `_mget` filters each document by its own `_source`, else the URL's.
    let (status, body) = s.post(
        "/shop/_mget?_source_includes=price",
        &json!({"docs": [{"_id": "1"}, {"_id": "1", "_source": false}, {"_id": "1", "_source": ["tags"]},
                         {"_id": "1", "_source": {"includes": ["dims"], "excludes": ["dims.w"]}}]}),
    )?;
    assert_eq!(status, 200, "{body}");
    let sources: Vec<Option<&Value>> = body["docs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| d.get("_source"))
        .collect();
    assert_eq!(
        sources,
        [
            Some(&json!({"price": 12})),
            None,
            Some(&json!({"tags": ["a", "b"]})),
            Some(&json!({"dims": {"h": 4}}))
        ]
    );
    Ok(())
}

#[test]
fn every_json_answer_takes_filter_path_and_pretty() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let lines = [
        json!({"index": {"_id": "1"}}),
        json!({"title": "lamp", "n": 1}),
        json!({"index": {"_id": "2"}}),
        json!({"title": "desk", "n": "x"}),
    ];
    let (status, body) = s.bulk(
        "/shop/_bulk?refresh=true&filter_path=errors,items.*.status",
        &lines,
    )?;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"errors": true, "items": [{"index": {"status": 201}}, {"index": {"status": 400}}]})
    );
    // A bulk response is cut to the filter as it is written (each action's
    // successful items by the fields the filter kept of its first one).
    let more = [
        json!({"index": {"_id": "3"}}),
        json!({"title": "bed", "n": 3}),
        json!({"delete": {"_id": "9"}}),
        json!({"index": {"_id": "4"}}),
        json!({"title": "rug", "n": "y"}),
        json!({"index": {"_id": "3"}}),
        json!({"title": "bed", "n": 4}),
    ];
    let (_, body) = s.bulk("/shop/_bulk?filter_path=items.*.error.type", &more)?;
    assert_eq!(
        body,
        json!({"items": [{"index": {"error": {"type": "document_parsing_exception"}}}]})
    );
    let (_, body) = s.bulk(
        "/shop/_bulk?filter_path=errors,items.*._shards.total,**.result,items.delete._id",
        &more,
    )?;
    assert_eq!(
        body,
        json!({"errors": true, "items": [
            {"index": {"result": "updated", "_shards": {"total": 1}}},
            {"delete": {"_id": "9", "result": "not_found", "_shards": {"total": 1}}},
            {"index": {"result": "updated", "_shards": {"total": 1}}}
        ]})
    );
    let (_, body) = s.bulk("/shop/_bulk?filter_path=took", &more)?;
    assert!(
        body["took"].is_u64() && body.as_object().is_some_and(|o| o.len() == 1),
        "{body}"
    );
    let (_, body) = s.bulk("/shop/_bulk?filter_path=items.*._version", &more[..2])?;
    assert_eq!(body, json!({"items": [{"index": {"_version": 7}}]}));
    let pretty = s.bulk_text("/shop/_bulk?pretty&filter_path=items.*.status", &more[2..3])?;
    assert_eq!(
        pretty,
        "{\n  \"items\": [\n    {\n      \"delete\": {\n        \"status\": 404\n      }\n    }\n  ]\n}\n"
    );
    let (_, body) = s.get("/shop/_doc/1?filter_path=_source.title,_version")?;
    assert_eq!(body, json!({"_version": 1, "_source": {"title": "lamp"}}));
    let (_, body) = s.get("/shop/_search?filter_path=hits.total.value,hits.hits._id")?;
    assert_eq!(
        body,
        json!({"hits": {"total": {"value": 1}, "hits": [{"_id": "1"}]}})
    );
    let (_, body) = s.get("/_cat/indices?format=json&filter_path=index")?;
    assert_eq!(body, json!([{"index": "shop"}]));
    // An error is answered whole.
    let (status, body) = s.get("/nope/_doc/1?filter_path=_id")?;
    assert_es_error(status, &body, 404, "index_not_found_exception");

    let pretty = s.get_text("/shop/_doc/1?pretty")?;
    assert!(pretty.starts_with("{\n  \"_index\": \"shop\""), "{pretty}");
    assert!(pretty.ends_with("}\n"), "{pretty}");
    assert_eq!(serde_json::from_str::<Value>(&pretty)?, s.get("/shop/_doc/1")?.1);
    let compact = s.get_text("/shop/_doc/1?pretty=false&filter_path=found")?;
    assert_eq!(compact, r#"{"found":true}"#);
    Ok(())
}

#[test]
fn analyze_lists_the_terms_a_text_is_indexed_as() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, _) = s.put(
        "/books",
        &json!({"mappings": {"properties": {"title": {"type": "text"}, "isbn": {"type": "keyword"}, "n": {"type": "long"}}}}),
    )?;
    assert_eq!(status, 200);
    let terms = |body: &Value| -> Vec<(String, i64)> {
        body["tokens"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["token"].as_str().unwrap_or("").to_string(),
                    t["position"].as_i64().unwrap_or(-1),
                )
            })
            .collect()
    };
    let (status, body) = s.post("/_analyze", &json!({"text": "The Quick-Brown fox"}))?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        terms(&body),
        [("the", 0), ("quick", 1), ("brown", 2), ("fox", 3)].map(|(t, p)| (t.to_string(), p))
    );
    assert_eq!(
        body["tokens"][1],
        json!({"token": "quick", "start_offset": 4, "end_offset": 9, "type": "<ALPHANUM>", "position": 1})
    );
    let (_, body) = s.post(
        "/books/_analyze",
        &json!({"field": "title", "text": ["red fox", "jay"]}),
    )?;
    assert_eq!(
        terms(&body),
        [("red", 0), ("fox", 1), ("jay", 102)].map(|(t, p)| (t.to_string(), p))
    );
    let (_, body) = s.post("/books/_analyze", &json!({"field": "isbn", "text": "978-3 X"}))?;
    assert_eq!(terms(&body), [("978-3 X".to_string(), 0)]);
    // What the analysis says is what a search finds.
    let (status, _) = s.put(
        "/books/_doc/1?refresh=true",
        &json!({"title": "The Quick-Brown fox"}),
    )?;
    assert_eq!(status, 201);
    let (_, found) = s.post(
        "/books/_count",
        &json!({"query": {"match_phrase": {"title": "quick brown"}}}),
    )?;
    assert_eq!(found["count"], json!(1));

    for (path, body, status, es_type) in [
        ("/_analyze", json!({}), 400, "action_request_validation_exception"),
        (
            "/_analyze",
            json!({"text": "a", "analyzer": "nope"}),
            400,
            "illegal_argument_exception",
        ),
        (
            "/_analyze",
            json!({"text": "a", "field": "title"}),
            400,
            "illegal_argument_exception",
        ),
        (
            "/_analyze",
            json!({"text": "a", "tokenizer": "whitespace"}),
            400,
            "illegal_argument_exception",
        ),
        (
            "/books/_analyze",
            json!({"text": "a", "field": "n"}),
            400,
            "illegal_argument_exception",
        ),
        (
            "/nope/_analyze",
            json!({"text": "a"}),
            404,
            "index_not_found_exception",
        ),
    ] {
        let (got, answer) = s.post(path, &body)?;
        assert_es_error(got, &answer, status, es_type);
    }
    Ok(())
}

#[test]
fn validate_query_says_whether_each_index_runs_a_query() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, _) = s.put(
        "/books",
        &json!({"mappings": {"properties": {"title": {"type": "text"}, "n": {"type": "long"}}}}),
    )?;
    assert_eq!(status, 200);
    let (status, body) = s.post(
        "/books/_validate/query?explain=true",
        &json!({"query": {"match": {"title": "red fox"}}}),
    )?;
    assert_eq!((status, &body["valid"]), (200, &json!(true)), "{body}");
    assert_eq!(body["explanations"][0]["index"], json!("books"));
    assert!(
        body["explanations"][0]["explanation"]
            .as_str()
            .is_some_and(|e| e.contains("match(title, 'red')") && e.contains("match(title, 'fox')")),
        "{body}"
    );
    let (_, body) = s.get("/books/_validate/query?q=title:fox")?;
    assert_eq!(body["valid"], json!(true), "{body}");
    assert!(body.get("explanations").is_none(), "{body}");
    // What the query language refuses, and what only a shard finds wrong
    // (a prefix on a number field), are answered as invalid, not as errors.
    for query in [
        json!({"nope": {}}),
        json!({"query_string": {"query": "n:1*", "lenient": false}}),
    ] {
        let (status, body) = s.post("/_validate/query?explain", &json!({"query": query}))?;
        assert_eq!((status, &body["valid"]), (200, &json!(false)), "{query}: {body}");
        assert!(
            body["explanations"][0]["error"]
                .as_str()
                .is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    let (status, body) = s.post("/nope/_validate/query", &json!({}))?;
    assert_es_error(status, &body, 404, "index_not_found_exception");
    let (status, body) = s.post("/books/_validate/query", &json!({"size": 1}))?;
    assert_es_error(status, &body, 400, "parsing_exception");
    Ok(())
}

#[test]
fn pushdown_is_visible_and_bounded() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, _) = s.put(
        "/corpus",
        &json!({"settings": {"number_of_shards": 2, "refresh_interval": "-1"},
                "mappings": {"properties": {"body": {"type": "text"}, "n": {"type": "long"}}}}),
    )?;
    assert_eq!(status, 200);
    let words = [
        "storm", "river", "stone", "glass", "ember", "cloud", "frost", "maple",
    ];
    for chunk in 0..10 {
        let mut lines = Vec::with_capacity(20_000);
        for i in 0..10_000 {
            let n = chunk * 10_000 + i;
            let text = format!("{} {} {}", words[n % 8], words[(n / 8) % 8], words[(n / 64) % 8]);
            lines.push(json!({"index": {}}));
            lines.push(json!({"body": text, "n": n}));
        }
        let (status, body) = s.bulk("/corpus/_bulk", &lines)?;
        assert_eq!((status, &body["errors"]), (200, &json!(false)));
    }
    let (status, _) = s.post("/corpus/_refresh", &json!({}))?;
    assert_eq!(status, 200);
    assert_eq!(s.count("corpus")?, 100_000);

    let plan = s.sql_text(
        "EXPLAIN SELECT _id, _score FROM corpus WHERE match(body, 'storm') ORDER BY _score DESC LIMIT 10",
        "txt",
    )?;
    assert!(
        plan.contains("TantivyScanExec: index=corpus, shards=[0,1], query=match(body, 'storm')"),
        "{plan}"
    );
    assert!(plan.contains("topk=_score DESC, fetch=10"), "{plan}");
    assert!(
        !plan.contains("SortExec"),
        "the sort is absorbed by the scan: {plan}"
    );

    let analyzed = s.sql_text(
        "EXPLAIN ANALYZE SELECT _id, _score FROM corpus WHERE match(body, 'storm') ORDER BY _score DESC LIMIT 10",
        "txt",
    )?;
    let scan_line = analyzed
        .lines()
        .find(|l| l.contains("TantivyScanExec"))
        .unwrap_or_default();
    let output_rows: usize = metric(scan_line, "output_rows=").unwrap_or(usize::MAX);
    assert!(
        output_rows <= 20,
        "at most 10 rows per shard leave the scan: {scan_line}"
    );
    let rows = s.sql_rows("SELECT count(*) FROM corpus WHERE match(body, 'storm')")?;
    let storms = (0..100_000usize)
        .filter(|n| n % 8 == 0 || (n / 8) % 8 == 0 || (n / 64) % 8 == 0)
        .count();
    assert_eq!(rows, vec![json!([storms])]);

    let count_plan = s.sql_text(
        "EXPLAIN SELECT count(*) FROM corpus WHERE match(body, 'storm') AND n < 5000",
        "txt",
    )?;
    assert!(
        count_plan.contains("TantivyAggregateExec")
            && count_plan.contains("aggr=[CountRows(*)]")
            && count_plan.contains("storm"),
        "{count_plan}"
    );
    let top_by_field = s.sql_text("EXPLAIN SELECT n FROM corpus ORDER BY n DESC LIMIT 3", "txt")?;
    assert!(top_by_field.contains("topk=n DESC, fetch=3"), "{top_by_field}");
    assert_eq!(
        s.sql_rows("SELECT n FROM corpus ORDER BY n DESC LIMIT 3")?,
        vec![json!([99_999]), json!([99_998]), json!([99_997])]
    );
    Ok(())
}

fn metric(line: &str, key: &str) -> Option<usize> {
    let start = line.find(key)? + key.len();
    let digits: String = line[start..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, _) = s.put(
        "/shop",
        &json!({"mappings": {"properties": {"price": {"type": "long"}, "name": {"type": "text"}}}}),
    )?;
    assert_eq!(status, 200);
    let (status, _) = s.bulk(
        "/shop/_bulk?refresh=true",
        &[
            json!({"index": {"_id": "1"}}),
            json!({"price": 10, "name": "lamp"}),
        ],
    )?;
    assert_eq!(status, 200);

    // A malformed action line rejects the whole bulk, the items before it too.
    let malformed =
        "{\"index\":{\"_id\":\"2\"}}\n{\"price\": 11}\n{\"index\":{\"_id\":\"3\"}\n{\"price\": 12}\n";
    let (status, body) = s.request(
        "POST",
        "/shop/_bulk?refresh=true",
        Some(malformed),
        "application/x-ndjson",
    )?;
    assert_es_error(status, &body, 400, "illegal_argument_exception");
    // A malformed source line fails its item alone, as in Elasticsearch.
    let malformed = "{\"index\":{\"_id\":\"a\"}}\n{\"price\": 11, \"name\": \n{\"create\":{\"_id\":\"b\"}}\n[12]\n{\"index\":{\"_id\":\"c\"}}\n{\"price\": 13}\n";
    let (status, body) = s.request(
        "POST",
        "/loose/_bulk?refresh=true",
        Some(malformed),
        "application/x-ndjson",
    )?;
    assert_eq!((status, &body["errors"]), (200, &json!(true)), "{body}");
    let items: Vec<_> = (0..3)
        .map(|i| {
            let item = body["items"][i].as_object().and_then(|o| o.values().next());
            item.map(|r| (r["_id"].clone(), r["status"].clone(), r["error"]["type"].clone()))
        })
        .collect();
    assert_eq!(
        items,
        [
            Some((json!("a"), json!(400), json!("document_parsing_exception"))),
            Some((json!("b"), json!(400), json!("document_parsing_exception"))),
            Some((json!("c"), json!(201), Value::Null)),
        ],
        "{body}"
    );
    assert_eq!(
        s.sql_rows("SELECT _id, price FROM loose")?,
        vec![json!(["c", 13])]
    );

    let (status, body) = s.get("/missing/_doc/1")?;
    assert_es_error(status, &body, 404, "index_not_found_exception");
    let (status, body) = s.post("/_sql", &json!({"query": "SELECT * FROM missing"}))?;
    assert_es_error(status, &body, 400, "verification_exception");

    let (status, body) = s.put(
        "/typo",
        &json!({"mappings": {"properties": {"a": {"type": "lnog"}}}}),
    )?;
    assert_es_error(status, &body, 400, "mapper_parsing_exception");
    let (status, _) = s.request("HEAD", "/typo", None, "")?;
    assert_eq!(status, 404, "a failed create leaves no index behind");

    let (status, body) = s.put("/shop/_doc/4?refresh=true", &json!({"price": "expensive"}))?;
    assert_es_error(status, &body, 400, "document_parsing_exception");

    let (status, body) = s.post("/_sql", &json!({"query": "SELEKT price FROM shop"}))?;
    assert_es_error(status, &body, 400, "verification_exception");
    let (status, body) = s.post("/_sql", &json!({"query": "SELECT nope FROM shop"}))?;
    assert_es_error(status, &body, 400, "verification_exception");
    let (status, body) = s.post(
        "/_sql",
        &json!({"query": "SELECT price FROM shop WHERE match(name, 'lamp') OR length(name) > 3"}),
    )?;
    assert_es_error(status, &body, 400, "verification_exception");
    assert!(
        body["error"]["reason"].as_str().unwrap_or("").contains("match()"),
        "{body}"
    );
    let (status, body) = s.post("/_sql", &json!({"query": "SELECT match(name, 'lamp') FROM shop"}))?;
    assert_es_error(status, &body, 400, "verification_exception");

    let (status, body) = s.request("PUT", "/shop/_doc/5", Some("{not json"), "application/json")?;
    assert_es_error(status, &body, 400, "parse_exception");
    let (status, body) = s.put("/Upper", &json!({}))?;
    assert_es_error(status, &body, 400, "invalid_index_name_exception");
    let (status, body) = s.put("/shop", &json!({}))?;
    assert_es_error(status, &body, 400, "resource_already_exists_exception");

    // Nothing changed, and the server still serves.
    assert_eq!(s.sql_rows("SELECT _id, price FROM shop")?, vec![json!(["1", 10])]);
    let (_, mapping) = s.get("/shop/_mapping")?;
    assert_eq!(
        mapping["shop"]["mappings"]["properties"]["price"],
        json!({"type": "long"})
    );
    let (status, root) = s.get("/")?;
    assert_eq!((status, &root["tagline"]), (200, &json!("You Know, for Search")));
    Ok(())
}

#[test]
fn cat_indices_and_index_info() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, _) = s.put(
        "/alpha",
        &json!({"settings": {"index": {"number_of_shards": "3"}}}),
    )?;
    assert_eq!(status, 200);
    let (status, _) = s.bulk(
        "/alpha/_bulk?refresh=true",
        &[
            json!({"index": {}}),
            json!({"a": 1}),
            json!({"index": {}}),
            json!({"a": 2}),
        ],
    )?;
    assert_eq!(status, 200);
    let (status, cat) = s.get("/_cat/indices?format=json")?;
    assert_eq!(status, 200);
    assert_eq!(cat[0]["index"], json!("alpha"));
    assert_eq!(cat[0]["pri"], json!("3"));
    assert_eq!(cat[0]["docs.count"], json!("2"));
    let (status, counted) = s.get("/_cat/count/alpha?format=json")?;
    assert_eq!((status, &counted[0]["count"]), (200, &json!("2")), "{counted}");
    let (status, counted) = s.post(
        "/_cat/count/alpha?format=json",
        &json!({"query": {"term": {"a": 2}}}),
    )?;
    assert_eq!((status, &counted[0]["count"]), (200, &json!("1")), "{counted}");
    let (status, counted) = s.get("/_cat/count/alpha?q=a:1&format=json")?;
    assert_eq!((status, &counted[0]["count"]), (200, &json!("1")), "{counted}");
    let text = s.get_text("/_cat/count?v")?;
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["epoch", "timestamp", "count"], "{text}");
    assert_eq!((lines.len(), lines[1].len(), lines[1][2]), (2, 3, "2"), "{text}");
    let (status, body) = s.get("/_cat/count/nope")?;
    assert_es_error(status, &body, 404, "index_not_found_exception");
    assert_eq!(cat[0]["health"], json!("green"));
    let (status, info) = s.get("/alpha")?;
    assert_eq!(status, 200);
    assert_eq!(info["alpha"]["settings"]["index"]["number_of_shards"], json!("3"));
    assert_eq!(
        info["alpha"]["mappings"]["properties"]["a"]["type"],
        json!("long")
    );
    let (status, _) = s.request("HEAD", "/alpha", None, "")?;
    assert_eq!(status, 200);
    let (status, body) = s.delete("/alpha")?;
    assert_eq!((status, &body["acknowledged"]), (200, &json!(true)));
    let (status, _) = s.request("HEAD", "/alpha", None, "")?;
    assert_eq!(status, 404);
    Ok(())
}

#[test]
fn scaled_float_is_an_exact_decimal() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, body) = s.put(
        "/prices",
        &json!({"settings": {"number_of_shards": 3},
                "mappings": {"properties": {"price": {"type": "scaled_float", "scaling_factor": 100}}}}),
    )?;
    assert_eq!(status, 200, "{body}");
    let (_, mapping) = s.get("/prices/_mapping")?;
    assert_eq!(
        mapping["prices"]["mappings"]["properties"]["price"],
        json!({"type": "scaled_float", "scaling_factor": 100.0})
    );
    // Ten times 0.1, which sums to 0.9999999999999999 in doubles; 0.07 and
    // 0.05, the ends of the range below; 1.006, stored as 1.01 (rounded to
    // whole hundredths as Elasticsearch does).
    let mut lines = Vec::new();
    for (i, price) in [0.1; 10].into_iter().chain([0.07, 0.05, 1.006]).enumerate() {
        lines.push(json!({"index": {"_id": i.to_string()}}));
        lines.push(json!({"price": price}));
    }
    lines.push(json!({"index": {"_id": "bad"}}));
    lines.push(json!({"price": "not a number"}));
    let (status, body) = s.bulk("/prices/_bulk?refresh=true", &lines)?;
    assert_eq!(status, 200);
    assert_eq!(body["items"][13]["index"]["status"], json!(400), "{body}");
    assert_eq!(body["items"][12]["index"]["status"], json!(201), "{body}");

    let schema = s.sql("SELECT price FROM prices LIMIT 0")?;
    assert_eq!(schema["columns"][0]["type"], json!("double"), "{schema}");
    assert_eq!(
        s.sql_rows("SELECT sum(price) FROM prices WHERE price = 0.1")?,
        vec![json!([1.0])]
    );
    assert_eq!(
        s.sql_rows("SELECT price FROM prices WHERE _id = '12'")?,
        vec![json!([1.01])]
    );
    for (filter, want) in [
        ("price BETWEEN 0.06 - 0.01 AND 0.06 + 0.01", 2),
        ("price > 0.05 AND price < 0.1", 1),
        ("price >= 1.006", 1),
        ("price > 1.01", 0),
        ("price IN (0.07, 1.01)", 2),
        ("price < 1", 12),
        // More digits than the field keeps: no stored value equals them.
        ("price = 0.065", 0),
        ("price = 1.006", 0),
        ("price = 0.070", 1),
        ("price <> 0.065", 13),
        ("price IN (0.065, 0.05)", 1),
    ] {
        let rows = s.sql_rows(&format!("SELECT count(*) FROM prices WHERE {filter}"))?;
        assert_eq!(rows, vec![json!([want])], "{filter}");
    }
    let plan = s.sql_text(
        "EXPLAIN SELECT count(*) FROM prices WHERE price BETWEEN 0.05 AND 0.07",
        "txt",
    )?;
    assert!(
        plan.contains("price:[0.05 TO *), price:(* TO 0.07]") && plan.contains("aggr=[CountRows(*)]"),
        "the range runs in the scan: {plan}"
    );

    // The DSL sees doubles, and its bounds round to stored hundredths inwards.
    let (status, body) = s.post(
        "/prices/_search",
        &json!({"size": 1, "query": {"range": {"price": {"gt": 0.051, "lte": 0.079}}},
                "sort": [{"price": "desc"}],
                "aggs": {"total": {"sum": {"field": "price"}}, "p": {"terms": {"field": "price", "size": 1}}}}),
    )?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hits"]["total"]["value"], json!(1), "{body}");
    assert_eq!(body["hits"]["hits"][0]["sort"], json!([0.07]), "{body}");
    assert_eq!(body["aggregations"]["total"]["value"], json!(0.07), "{body}");
    assert_eq!(
        body["aggregations"]["p"]["buckets"][0]["key"],
        json!(0.07),
        "{body}"
    );
    let (status, body) = s.post("/prices/_count", &json!({"query": {"term": {"price": 0.1}}}))?;
    assert_eq!((status, &body["count"]), (200, &json!(10)), "{body}");

    // A scaling factor must be given, and a power of ten.
    for (def, reason) in [
        (json!({"type": "scaled_float"}), "[scaling_factor] is required"),
        (
            json!({"type": "scaled_float", "scaling_factor": 3}),
            "power of ten",
        ),
    ] {
        let (status, body) = s.put("/bad", &json!({"mappings": {"properties": {"p": def}}}))?;
        assert_es_error(status, &body, 400, "mapper_parsing_exception");
        assert!(
            body["error"]["reason"]
                .as_str()
                .unwrap_or_default()
                .contains(reason),
            "{body}"
        );
    }
    Ok(())
}

/// A `range` on a `text` field, and a query-string range, ranges over its
/// terms (the bounds not analyzed), and query-string wildcard and fuzzy
/// terms match its terms, as in Elasticsearch, whether the field was mapped at creation
/// (a field of its own) or later (the shared JSON field, where an open end
/// must not reach another field's terms).
#[test]
fn text_terms_by_range_wildcard_and_fuzzy() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, body) = s.put(
        "/mapped",
        &json!({"mappings": {"properties": {
            "title": {"type": "text"},
            "body": {"type": "text"},
            "zone": {"type": "text"}
        }}}),
    )?;
    assert_eq!(status, 200, "{body}");
    let docs = [
        json!({"title": "apple pie"}),
        json!({"title": "banana split"}),
        json!({"title": "cherry tart"}),
        json!({"title": "Date Cake"}),
        json!({"body": "aardvark", "zone": "abc"}),
    ];
    for index in ["mapped", "late"] {
        let mut lines = Vec::new();
        for (i, doc) in docs.iter().enumerate() {
            lines.push(json!({"index": {"_id": (i + 1).to_string()}}));
            lines.push(doc.clone());
        }
        let (status, body) = s.bulk(&format!("/{index}/_bulk?refresh=true"), &lines)?;
        assert_eq!((status, &body["errors"]), (200, &json!(false)), "{body}");
        for (range, want) in [
            (json!({"gte": "b", "lt": "d"}), vec!["2", "3", "4"]),
            (json!({"gte": "s"}), vec!["2", "3"]),
            (json!({"lte": "apple"}), vec!["1"]),
            (json!({"gt": "cherry", "lte": "pie"}), vec!["1", "4"]),
        ] {
            let mut ids = search_ids(&s, index, &json!({"query": {"range": {"title": range}}}))?;
            ids.sort();
            assert_eq!(ids, want, "{index}: {range}");
        }
        for (query, want) in [
            ("title:[b TO d}", vec!["2", "3", "4"]),
            ("title:>s", vec!["2", "3"]),
            ("title:BAN*", vec!["2"]),
            ("title:c?ke", vec!["4"]),
            ("title:chery~1", vec!["3"]),
        ] {
            let mut ids = search_ids(&s, index, &json!({"query": {"query_string": {"query": query}}}))?;
            ids.sort();
            assert_eq!(ids, want, "{index}: {query}");
        }
    }
    Ok(())
}

/// A query-string term without a field searches every field, keyword ones
/// too, and scores as the best of its fields (a `dis_max`, as
/// Elasticsearch's `best_fields`), not as their sum.
#[test]
fn query_string_terms_score_their_best_field() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let mapping = json!({"mappings": {"properties": {
        "title": {"type": "text"}, "body": {"type": "text"}, "tag": {"type": "keyword"}, "n": {"type": "integer"}
    }}});
    let (status, body) = s.put("/best", &mapping)?;
    assert_eq!(status, 200, "{body}");
    let mut lines = Vec::new();
    for (id, doc) in [
        (
            "1",
            json!({"title": "rust", "body": "rust and more rust", "tag": "rust", "n": 1}),
        ),
        (
            "2",
            json!({"title": "go", "body": "a rust mention", "tag": "go", "n": 2}),
        ),
        (
            "3",
            json!({"title": "zig", "body": "nothing here", "tag": "rust", "n": 3}),
        ),
    ] {
        lines.push(json!({"index": {"_id": id}}));
        lines.push(doc);
    }
    let (status, body) = s.bulk("/best/_bulk?refresh=true", &lines)?;
    assert_eq!((status, &body["errors"]), (200, &json!(false)), "{body}");
    let scores = |q: &str| -> Result<Vec<(String, f64)>> {
        let (status, answer) = s.get(&format!("/best/_search?q={q}"))?;
        assert_eq!(status, 200, "{q}: {answer}");
        let mut out: Vec<(String, f64)> = answer["hits"]["hits"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| Some((h["_id"].as_str()?.to_string(), h["_score"].as_f64()?)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    };
    let every = scores("rust")?;
    assert_eq!(
        every.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
    let per_field = [scores("title:rust")?, scores("body:rust")?, scores("tag:rust")?];
    for (id, score) in &every {
        let found: Vec<f64> = per_field
            .iter()
            .filter_map(|hits| hits.iter().find(|(i, _)| i == id).map(|(_, s)| *s))
            .collect();
        let best = found.iter().copied().fold(f64::MIN, f64::max);
        assert!(
            (score - best).abs() < 1e-6,
            "doc {id}: {score} is not the best of {found:?}"
        );
    }
    // The integer field reads `1` (and matches nothing for `rust`).
    assert_eq!(
        scores("1")?.into_iter().map(|(id, _)| id).collect::<Vec<_>>(),
        ["1"]
    );
    Ok(())
}

/// A `range` on a long takes integer bounds exactly, beyond 2^53 too, where
/// neighbouring longs share one f64; a fractional bound still rounds inwards.
#[test]
fn long_range_bounds_are_exact() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, body) = s.put(
        "/big",
        &json!({"mappings": {"properties": {"n": {"type": "long"}}}}),
    )?;
    assert_eq!(status, 200, "{body}");
    let base: i64 = 1 << 53;
    let mut lines = Vec::new();
    for (i, n) in [base - 1, base, base + 1, base + 2, 1, 2].into_iter().enumerate() {
        lines.push(json!({"index": {"_id": i.to_string()}}));
        lines.push(json!({"n": n}));
    }
    let (status, body) = s.bulk("/big/_bulk?refresh=true", &lines)?;
    assert_eq!((status, &body["errors"]), (200, &json!(false)), "{body}");
    for (range, want) in [
        (json!({"gte": base + 1, "lte": base + 1}), vec!["2"]),
        (json!({"gt": base}), vec!["2", "3"]),
        (json!({"lt": base + 1, "gt": base - 1}), vec!["1"]),
        (json!({"gte": (base + 1).to_string(), "lt": base + 2}), vec!["2"]),
        (json!({"gt": 1.5, "lt": 3}), vec!["5"]),
    ] {
        let body = json!({"query": {"range": {"n": range}}, "sort": [{"n": "asc"}]});
        assert_eq!(search_ids(&s, "big", &body)?, want, "{range}");
    }
    // A bound that is not a finite number is the client's error.
    for query in [
        json!({"range": {"n": {"gte": "NaN"}}}),
        json!({"range": {"n": {"lt": "inf"}}}),
        json!({"query_string": {"query": "n:[NaN TO 5]", "lenient": false}}),
        json!({"query_string": {"query": "n:[inf TO *]", "lenient": false}}),
    ] {
        let (status, body) = s.post("/big/_search", &json!({ "query": query }))?;
        assert_eq!(status, 400, "{query}: {body}");
    }
    // A query string's range bounds too.
    let (status, body) = s.post(
        "/big/_search",
        &json!({"query": {"query_string": {"query": format!("n:[{} TO {}]", base + 1, base + 1)}}}),
    )?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hits"]["hits"][0]["_id"], json!("2"), "{body}");
    assert_eq!(body["hits"]["total"]["value"], json!(1), "{body}");
    Ok(())
}

/// A query string's date range reads its bounds in the field's format, and
/// a bound that includes a period (a bare day, a `yyyy/MM` month) covers
/// all of it, in query strings and DSL ranges.
#[test]
fn query_string_date_ranges_read_the_field_format() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let mapping = json!({"mappings": {"properties": {"d": {"type": "date", "format": "dd.MM.yyyy||yyyy/MM||epoch_millis"}}}});
    let (status, body) = s.put("/days", &mapping)?;
    assert_eq!(status, 200, "{body}");
    let mut lines = Vec::new();
    for (i, d) in ["29.02.2024", "01.03.2024", "02.03.2024", "03.03.2024"]
        .into_iter()
        .enumerate()
    {
        lines.push(json!({"index": {"_id": i.to_string()}}));
        lines.push(json!({"d": d}));
    }
    let (status, body) = s.bulk("/days/_bulk?refresh=true", &lines)?;
    assert_eq!((status, &body["errors"]), (200, &json!(false)), "{body}");
    for (query, want) in [
        ("d:[01.03.2024 TO 02.03.2024]", vec!["1", "2"]),
        ("d:{01.03.2024 TO 03.03.2024}", vec!["2"]),
        ("d:[02.03.2024 TO *]", vec!["2", "3"]),
        ("d:[2024-03-03 TO *]", vec!["3"]),
        // A month of the format's `yyyy/MM` is the whole month.
        ("d:[* TO 2024/02]", vec!["0"]),
        ("d:{2024/02 TO *}", vec!["1", "2", "3"]),
    ] {
        let body = json!({"query": {"query_string": {"query": query}}, "sort": [{"d": "asc"}]});
        assert_eq!(search_ids(&s, "days", &body)?, want, "{query}");
    }
    for (range, want) in [
        (json!({"lte": "2024/02"}), vec!["0"]),
        (json!({"gt": "2024/02"}), vec!["1", "2", "3"]),
        (json!({"gte": "2024/03", "lt": "02.03.2024"}), vec!["1"]),
    ] {
        let body = json!({"query": {"range": {"d": range}}, "sort": [{"d": "asc"}]});
        assert_eq!(search_ids(&s, "days", &body)?, want, "{range}");
    }
    Ok(())
}

/// In SQL only full-text functions score: a comparison next to `match`
/// filters as a DSL `bool` `filter` clause does, so `_score` is the same
/// with it or without it, and the same as the DSL's.
#[test]
fn sql_comparisons_filter_without_scoring() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, _) = s.put(
        "/notes",
        &json!({"mappings": {"properties": {"body": {"type": "text"}, "n": {"type": "long"}, "tag": {"type": "keyword"}}}}),
    )?;
    assert_eq!(status, 200);
    let lines = [
        json!({"index": {"_id": "1"}}),
        json!({"body": "storm over the river", "n": 1, "tag": "a"}),
        json!({"index": {"_id": "2"}}),
        json!({"body": "storm storm", "n": 2, "tag": "b"}),
        json!({"index": {"_id": "3"}}),
        json!({"body": "quiet river", "n": 1, "tag": "a"}),
    ];
    let (status, body) = s.bulk("/notes/_bulk?refresh=true", &lines)?;
    assert_eq!((status, &body["errors"]), (200, &json!(false)));

    let score_of_1 = |condition: &str| -> Result<f64> {
        let rows = s.sql_rows(&format!(
            "SELECT _id, _score FROM notes WHERE {condition} ORDER BY _score DESC"
        ))?;
        let row = rows.iter().find(|r| r[0] == json!("1"));
        row.and_then(|r| r[1].as_f64())
            .ok_or_else(|| anyhow!("document 1 not in {rows:?}"))
    };
    let alone = score_of_1("match(body, 'storm')")?;
    assert!(alone > 0.0);
    for condition in [
        "match(body, 'storm') AND n = 1",
        "match(body, 'storm') AND tag = 'a' AND n >= 1 AND n < 5",
        "match(body, 'storm') AND tag <> 'b'",
        "(match(body, 'storm') OR n = 7) AND tag = 'a'",
    ] {
        let score = score_of_1(condition)?;
        assert!((score - alone).abs() < 1e-6, "{condition}: {score} vs {alone}");
    }
    let (status, dsl) = s.post(
        "/notes/_search",
        &json!({"query": {"bool": {"must": [{"match": {"body": "storm"}}],
                                   "filter": [{"term": {"tag": "a"}}, {"range": {"n": {"gte": 1}}}]}}}),
    )?;
    assert_eq!(status, 200);
    assert_eq!(dsl["hits"]["hits"][0]["_id"], json!("1"), "{dsl}");
    let dsl_score = dsl["hits"]["hits"][0]["_score"].as_f64().unwrap_or_default();
    assert!((dsl_score - alone).abs() < 1e-6, "DSL {dsl_score} vs SQL {alone}");
    Ok(())
}

/// The best hit is found however deep it sits in the postings: a segment of
/// 2,000 matching documents, where the only one with the term three times
/// is the 1,501st (block-max pruning must not skip its block).
#[test]
fn top_hits_by_score_are_found_past_the_first_postings_block() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, _) = s.put(
        "/w",
        &json!({"mappings": {"properties": {"body": {"type": "text"}}}}),
    )?;
    assert_eq!(status, 200);
    let mut lines = Vec::new();
    for i in 0..2000 {
        lines.push(json!({"index": {"_id": i.to_string()}}));
        let body = if i == 1500 {
            "storm storm storm"
        } else {
            "storm river"
        };
        lines.push(json!({"body": body}));
    }
    let (status, body) = s.bulk("/w/_bulk?refresh=true", &lines)?;
    assert_eq!((status, &body["errors"]), (200, &json!(false)));
    for text in ["storm", "storm calm"] {
        let (status, answer) = s.post(
            "/w/_search",
            &json!({"query": {"match": {"body": text}}, "size": 1, "_source": false}),
        )?;
        assert_eq!(status, 200);
        assert_eq!(
            answer["hits"]["hits"][0]["_id"],
            json!("1500"),
            "{text}: {answer}"
        );
        let rows = s.sql_rows(&format!(
            "SELECT _id FROM w WHERE match(body, '{text}') ORDER BY _score DESC LIMIT 1"
        ))?;
        assert_eq!(rows, vec![json!(["1500"])], "{text}");
    }
    Ok(())
}

/// `_cat/segments` rows of `index` (JSON), as (docs.count, docs.deleted).
fn segments(s: &Server, index: &str) -> Result<Vec<(u64, u64)>> {
    let (status, rows) = s.get(&format!("/_cat/segments/{index}?format=json"))?;
    assert_eq!(status, 200, "{rows}");
    let num = |row: &Value, key: &str| -> Result<u64> {
        row[key]
            .as_str()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no {key} in {row}"))
    };
    rows.as_array()
        .ok_or_else(|| anyhow!("not a list: {rows}"))?
        .iter()
        .map(|row| {
            assert_eq!(row["index"], json!(index));
            assert!(
                row["segment"].as_str().is_some_and(|s| s.starts_with('_')),
                "{row}"
            );
            Ok((num(row, "docs.count")?, num(row, "docs.deleted")?))
        })
        .collect()
}

#[test]
fn force_merge_flush_and_segments() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let settings = json!({"settings": {"number_of_shards": 1, "refresh_interval": "-1"}});
    let (status, _) = s.put("/m", &settings)?;
    assert_eq!(status, 200);
    // Three refreshes of ten documents each: three segments at least, six
    // at most (two indexing threads), fewer than the merge policy merges.
    for batch in 0..3 {
        let mut lines = Vec::new();
        for i in 0..10 {
            lines.push(json!({"index": {"_id": format!("{batch}-{i}")}}));
            lines.push(json!({"batch": batch, "i": i}));
        }
        let (status, body) = s.bulk("/m/_bulk?refresh=true", &lines)?;
        assert_eq!((status, &body["errors"]), (200, &json!(false)));
    }
    // Eight deletions in the first batch's segment, one in the second's.
    let mut deletes: Vec<Value> = (0..8)
        .map(|i| json!({"delete": {"_id": format!("0-{i}")}}))
        .collect();
    deletes.push(json!({"delete": {"_id": "1-0"}}));
    let (status, _) = s.bulk("/m/_bulk", &deletes)?;
    assert_eq!(status, 200);
    // A flush commits: the deletions are searchable after it.
    let (status, body) = s.post("/m/_flush", &json!({}))?;
    assert_eq!((status, &body["_shards"]["failed"]), (200, &json!(0)));
    assert_eq!(s.count("m")?, 21);
    // Each refresh left a segment with live documents (tantivy drops a
    // segment whose documents are all deleted, and the two indexing
    // threads may have split a batch).
    let before = segments(&s, "m")?;
    assert!(before.len() >= 3, "{before:?}");
    assert_eq!(before.iter().map(|s| s.0).sum::<u64>(), 21);
    assert!(
        (1..=9).contains(&before.iter().map(|s| s.1).sum::<u64>()),
        "{before:?}"
    );

    // Only the segments over a tenth deleted are merged, into one.
    let heavy = |s: &&(u64, u64)| s.1 * 10 > s.0 + s.1;
    let mut kept: Vec<(u64, u64)> = before.iter().filter(|s| !heavy(s)).copied().collect();
    let rewritten: u64 = before.iter().filter(heavy).map(|s| s.0).sum();
    if rewritten > 0 {
        kept.push((rewritten, 0));
    }
    let (status, body) = s.post("/m/_forcemerge?only_expunge_deletes=true", &json!({}))?;
    assert_eq!(
        (status, &body["_shards"]["successful"]),
        (200, &json!(1)),
        "{body}"
    );
    let mut expunged = segments(&s, "m")?;
    expunged.sort();
    kept.sort();
    assert_eq!(expunged, kept, "before: {before:?}");

    // Writes since the last refresh are merged too (the merge flushes first).
    let (status, _) = s.put("/m/_doc/late", &json!({"batch": 9}))?;
    assert_eq!(status, 201);
    let (status, _) = s.post("/_forcemerge?max_num_segments=1", &json!({}))?;
    assert_eq!(status, 200);
    assert_eq!(segments(&s, "m")?, vec![(22, 0)]);
    assert_eq!(s.count("m")?, 22);
    let rows = s.sql_rows("SELECT count(*) FROM m WHERE batch = 2")?;
    assert_eq!(rows[0][0], json!(10));
    let (status, doc) = s.get("/m/_doc/2-9")?;
    assert_eq!((status, &doc["_source"]["i"]), (200, &json!(9)));
    // Writes go on after it.
    let (status, _) = s.put("/m/_doc/after?refresh=true", &json!({"batch": 10}))?;
    assert_eq!(status, 201);
    assert_eq!(s.count("m")?, 23);

    // Bad parameters and targets change nothing.
    let (status, body) = s.post(
        "/m/_forcemerge?max_num_segments=1&only_expunge_deletes=true",
        &json!({}),
    )?;
    assert_es_error(status, &body, 400, "action_request_validation_exception");
    for bad in ["max_num_segments=0", "max_num_segments=x", "flush=maybe"] {
        let (status, body) = s.post(&format!("/m/_forcemerge?{bad}"), &json!({}))?;
        assert_es_error(status, &body, 400, "illegal_argument_exception");
    }
    let (status, body) = s.post("/nope/_forcemerge", &json!({}))?;
    assert_es_error(status, &body, 404, "index_not_found_exception");
    let (status, body) = s.get("/_cat/segments/nope")?;
    assert_es_error(status, &body, 404, "index_not_found_exception");
    assert_eq!(s.count("m")?, 23);
    let text = s.get_text("/_cat/segments?v")?;
    assert!(text.starts_with("index"), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
    Ok(())
}

#[test]
fn reindex_copies_into_a_new_mapping() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    // `n` arrives as strings, so the source maps it as text.
    let mut lines = Vec::new();
    for i in 0..25 {
        lines.push(json!({"index": {"_id": i.to_string()}}));
        lines.push(json!({"n": i.to_string(), "tag": if i % 2 == 0 { "even" } else { "odd" }, "msg": format!("doc {i}")}));
    }
    let (status, _) = s.bulk("/src/_bulk?refresh=true", &lines)?;
    assert_eq!(status, 200);
    let (status, _) = s.put(
        "/dst",
        &json!({"mappings": {"properties": {"n": {"type": "long"}}}}),
    )?;
    assert_eq!(status, 200);

    let copy = json!({
        "source": {"index": "src", "query": {"term": {"tag": "even"}}, "size": 4},
        "dest": {"index": "dst"},
    });
    let (status, body) = s.post("/_reindex?refresh=true", &copy)?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            &body["total"],
            &body["created"],
            &body["updated"],
            &body["batches"]
        ),
        (&json!(13), &json!(13), &json!(0), &json!(4)),
        "{body}"
    );
    assert_eq!(body["failures"], json!([]));
    // The destination's mapping applies: `n` is a number there.
    let rows = s.sql_rows("SELECT sum(n), count(*) FROM dst")?;
    assert_eq!(rows, vec![json!([156, 13])]);
    let (status, doc) = s.get("/dst/_doc/12")?;
    assert_eq!(status, 200);
    assert_eq!(doc["_source"], json!({"n": "12", "tag": "even", "msg": "doc 12"}));
    let (_, again) = s.post("/_reindex?refresh=true", &copy)?;
    assert_eq!((&again["created"], &again["updated"]), (&json!(0), &json!(13)));

    // `op_type: create` conflicts with every id the destination holds: the
    // first page (ids 0, 1, 10, 11 in id order) writes what does not
    // conflict, then the copy stops, unless conflicts proceed.
    let create =
        json!({"source": {"index": "src", "size": 4}, "dest": {"index": "dst", "op_type": "create"}});
    let (status, body) = s.post("/_reindex", &create)?;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        (&body["version_conflicts"], &body["created"], &body["batches"]),
        (&json!(2), &json!(2), &json!(1)),
        "{body}"
    );
    let failed: Vec<&Value> = body["failures"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| &f["id"])
        .collect();
    assert_eq!(failed, [&json!("0"), &json!("10")]);
    assert_eq!(
        body["failures"][0]["cause"]["type"],
        json!("version_conflict_engine_exception")
    );
    let mut proceed = create.clone();
    proceed["conflicts"] = json!("proceed");
    let (status, body) = s.post("/_reindex?refresh=true", &proceed)?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["total"], &body["created"], &body["version_conflicts"]),
        (&json!(25), &json!(10), &json!(15))
    );
    assert_eq!(s.count("dst")?, 25);

    // A missing destination is created; `_source` filtering and
    // `max_docs` apply.
    let some =
        json!({"source": {"index": "src", "_source": ["msg"]}, "dest": {"index": "fresh"}, "max_docs": 3});
    let (status, body) = s.post("/_reindex?refresh=true", &some)?;
    assert_eq!((status, &body["created"]), (200, &json!(3)), "{body}");
    let (_, doc) = s.get("/fresh/_doc/0")?;
    assert_eq!(doc["_source"], json!({"msg": "doc 0"}));
    assert_eq!(s.count("fresh")?, 3);

    // A pattern reads the indices it names when the copy starts, not the
    // destination it creates.
    let (status, body) = s.post(
        "/_reindex?refresh=true",
        &json!({"source": {"index": "fr*", "size": 1}, "dest": {"index": "fresh-2"}}),
    )?;
    assert_eq!(
        (status, &body["total"], &body["created"]),
        (200, &json!(3), &json!(3)),
        "{body}"
    );
    let (status, body) = s.post(
        "/_reindex",
        &json!({"source": {"index": "none*"}, "dest": {"index": "y"}}),
    )?;
    assert_eq!((status, &body["total"]), (200, &json!(0)), "{body}");

    // Bad requests change nothing.
    for (bad, status_want, type_want) in [
        (
            json!({"source": {"index": "src"}, "dest": {"index": "src"}}),
            400,
            "action_request_validation_exception",
        ),
        (
            json!({"source": {"index": "nope"}, "dest": {"index": "x"}}),
            404,
            "index_not_found_exception",
        ),
        (
            json!({"source": {"index": "src"}, "dest": {"index": "x"}, "script": {"source": "ctx"}}),
            400,
            "illegal_argument_exception",
        ),
        (
            json!({"source": {"index": "src"}}),
            400,
            "action_request_validation_exception",
        ),
    ] {
        let (status, body) = s.post("/_reindex", &bad)?;
        assert_es_error(status, &body, status_want, type_want);
    }
    for never in ["/x", "/y"] {
        let (status, _) = s.get(never)?;
        assert_eq!(status, 404, "{never}");
    }
    assert_eq!((s.count("dst")?, s.count("fresh")?), (25, 3));
    Ok(())
}

/// The ids of a search's hits, in order.
fn search_ids(s: &Server, index: &str, body: &Value) -> Result<Vec<String>> {
    let (status, answer) = s.post(&format!("/{index}/_search"), body)?;
    assert_eq!(status, 200, "{body}: {answer}");
    Ok(answer["hits"]["hits"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["_id"].as_str().map(str::to_string))
        .collect())
}

/// The `_index` of every hit of a search.
fn hit_indices(body: &Value) -> Vec<String> {
    let mut names: Vec<String> = body["hits"]["hits"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["_index"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

#[test]
fn aliases_name_indices_for_searches_and_writes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, body) = s.put("/v1", &json!({"aliases": {"books": {}}}))?;
    assert_eq!(status, 200, "{body}");

    // An alias that names one index takes its writes and single-document reads.
    let lines = [
        json!({"index": {"_id": "1"}}),
        json!({"title": "dune"}),
        json!({"index": {"_id": "2"}}),
        json!({"title": "emma"}),
    ];
    let (status, body) = s.bulk("/books/_bulk?refresh=true", &lines)?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"][0]["index"]["_index"], json!("v1"), "{body}");
    let (status, body) = s.put("/books/_doc/3?refresh=true", &json!({"title": "ulysses"}))?;
    assert_eq!((status, &body["_index"]), (201, &json!("v1")), "{body}");
    let (status, doc) = s.get("/books/_doc/1")?;
    assert_eq!(
        (status, &doc["_index"], &doc["found"]),
        (200, &json!("v1"), &json!(true))
    );
    let (_, v1) = s.get("/v1")?;
    assert_eq!(v1["v1"]["aliases"], json!({"books": {}}));

    // With a second index it reads both, and writes need a write index.
    let (status, _) = s.put("/v2/_doc/9?refresh=true", &json!({"title": "walden"}))?;
    assert_eq!(status, 201);
    let (_, v2) = s.get("/v2")?;
    assert_eq!(v2["v2"]["aliases"], json!({}));
    let add = json!({"actions": [{"add": {"index": "v2", "alias": "books"}}]});
    let (status, body) = s.post("/_aliases", &add)?;
    assert_eq!((status, &body["acknowledged"]), (200, &json!(true)), "{body}");
    let (status, body) = s.get("/books/_search")?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(hit_indices(&body), ["v1", "v1", "v1", "v2"]);
    let (_, body) = s.get("/boo*/_count")?;
    assert_eq!(body["count"], json!(4), "{body}");
    let (status, body) = s.put("/books/_doc/4", &json!({"title": "beloved"}))?;
    assert_es_error(status, &body, 400, "illegal_argument_exception");
    assert!(
        body["error"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no write index"),
        "{body}"
    );
    let (status, body) = s.get("/books/_doc/1")?;
    assert_es_error(status, &body, 400, "illegal_argument_exception");

    // Moving the alias is one request; the write index takes the writes.
    let swap = json!({"actions": [
        {"remove": {"index": "v1", "alias": "books"}},
        {"add": {"index": "v2", "alias": "books", "is_write_index": true}},
    ]});
    let (status, body) = s.post("/_aliases", &swap)?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.get("/_alias/books")?;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"v2": {"aliases": {"books": {"is_write_index": true}}}})
    );
    let (status, body) = s.put("/books/_doc/5?refresh=true", &json!({"title": "beloved"}))?;
    assert_eq!((status, &body["_index"]), (201, &json!("v2")), "{body}");
    assert_eq!((s.count("v1")?, s.count("v2")?, s.count("books")?), (3, 2, 2));

    // The views: by index, by pattern, HEAD, and _cat/aliases.
    let (status, body) = s.put("/v1/_alias/old", &json!({}))?;
    assert_eq!((status, &body["acknowledged"]), (200, &json!(true)), "{body}");
    let (_, body) = s.get("/_alias")?;
    assert_eq!(
        body,
        json!({"v1": {"aliases": {"old": {}}}, "v2": {"aliases": {"books": {"is_write_index": true}}}})
    );
    let (_, body) = s.get("/v1/_alias/o*")?;
    assert_eq!(body, json!({"v1": {"aliases": {"old": {}}}}));
    assert_eq!(s.request("HEAD", "/_alias/old", None, "")?.0, 200);
    assert_eq!(s.request("HEAD", "/v2/_alias/old", None, "")?.0, 404);
    let (status, body) = s.get("/_alias/nope")?;
    assert_eq!(status, 404);
    assert_eq!(body, json!({"error": "alias [nope] missing", "status": 404}));
    let (_, rows) = s.get("/_cat/aliases?format=json")?;
    let rows: Vec<(&Value, &Value, &Value)> = rows
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| (&r["alias"], &r["index"], &r["is_write_index"]))
        .collect();
    assert_eq!(
        rows,
        [
            (&json!("books"), &json!("v2"), &json!("true")),
            (&json!("old"), &json!("v1"), &json!("-"))
        ]
    );

    // A swap whose remove finds nothing yet still adds; capitals are fine
    // in alias names.
    let first_swap = json!({"actions": [
        {"remove": {"index": "*", "alias": "Latest"}},
        {"add": {"index": "v2", "alias": "Latest"}},
    ]});
    let (status, body) = s.post("/_aliases", &first_swap)?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.delete("/_all/_alias/Latest")?;
    assert_eq!(status, 200, "{body}");

    // Bad requests change nothing: two write indices (after an add that
    // would have been fine), a name taken by an index or an alias, a
    // filter, removing what is not there, deleting an index by its alias.
    let (_, aliases_before) = s.get("/_alias")?;
    let two_writers = json!({"actions": [
        {"add": {"index": "v1", "alias": "fresh"}},
        {"add": {"index": "v1", "alias": "books", "is_write_index": true}},
    ]});
    let (status, body) = s.post("/_aliases", &two_writers)?;
    assert_es_error(status, &body, 400, "illegal_argument_exception");
    assert_eq!(s.get("/_alias/fresh")?.0, 404);
    let (status, body) = s.put("/v1/_alias/v2", &json!({}))?;
    assert_es_error(status, &body, 400, "invalid_alias_name_exception");
    let (status, body) = s.put("/books", &json!({}))?;
    assert_es_error(status, &body, 400, "invalid_index_name_exception");
    let (status, body) = s.put("/v1/_alias/f", &json!({"filter": {"term": {"title": "dune"}}}))?;
    assert_es_error(status, &body, 400, "illegal_argument_exception");
    let (status, body) = s.delete("/v1/_alias/nope")?;
    assert_es_error(status, &body, 404, "aliases_not_found_exception");
    let (status, body) = s.delete("/books")?;
    assert_es_error(status, &body, 400, "illegal_argument_exception");
    let only_missing = json!({"actions": [{"remove": {"index": "v1", "alias": "nope"}}]});
    let (status, body) = s.post("/_aliases", &only_missing)?;
    assert_es_error(status, &body, 404, "aliases_not_found_exception");
    let required = json!({"actions": [
        {"add": {"index": "v1", "alias": "fresh"}},
        {"remove": {"index": "v1", "alias": "nope", "must_exist": true}},
    ]});
    let (status, body) = s.post("/_aliases", &required)?;
    assert_es_error(status, &body, 404, "resource_not_found_exception");
    let (status, body) = s.post(
        "/_aliases",
        &json!({"actions": [{"add": {"index": "zz*", "alias": "fresh"}}]}),
    )?;
    assert_es_error(status, &body, 404, "index_not_found_exception");
    let (status, body) = s.post(
        "/_aliases",
        &json!({"actions": [{"remove_index": {"index": "v*"}}]}),
    )?;
    assert_es_error(status, &body, 400, "illegal_argument_exception");
    assert_eq!(s.get("/_alias")?.1, aliases_before);
    assert_eq!((s.count("v1")?, s.count("v2")?), (3, 2));

    // Aliases survive a restart; `remove_index` deletes the index.
    s.terminate()?;
    let s = Server::start(dir.path())?;
    let (_, body) = s.get("/_alias/books,old")?;
    assert_eq!(
        body,
        json!({"v1": {"aliases": {"old": {}}}, "v2": {"aliases": {"books": {"is_write_index": true}}}})
    );
    let (status, body) = s.delete("/v1/_alias/old")?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.post(
        "/_aliases",
        &json!({"actions": [{"remove_index": {"index": "v1"}}]}),
    )?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.get("/v1")?.0, 404);
    assert_eq!(s.count("books")?, 2);

    // `require_alias` refuses writes to an index by its own name.
    let (status, body) = s.put("/v2/_doc/x?require_alias=true", &json!({"title": "x"}))?;
    assert_es_error(status, &body, 404, "index_not_found_exception");
    let (status, body) = s.put(
        "/books/_doc/y?require_alias=true&refresh=true",
        &json!({"title": "y"}),
    )?;
    assert_eq!((status, &body["_index"]), (201, &json!("v2")), "{body}");
    // An action line overrides the request's flag; a missing name is not
    // created; a delete writes no document and needs no alias.
    let lines = [
        json!({"index": {"_index": "v2", "_id": "z", "require_alias": true}}),
        json!({"title": "z"}),
        json!({"index": {"_index": "books", "_id": "w"}}),
        json!({"title": "w"}),
        json!({"index": {"_index": "v2", "_id": "u", "require_alias": false}}),
        json!({"title": "u"}),
        json!({"index": {"_index": "nope", "_id": "n"}}),
        json!({"title": "n"}),
        json!({"delete": {"_index": "v2", "_id": "u"}}),
    ];
    let (status, body) = s.bulk("/_bulk?refresh=true&require_alias=true", &lines)?;
    assert_eq!(status, 200, "{body}");
    let statuses = item_statuses(&body);
    assert_eq!(statuses, [404, 201, 201, 404, 200], "{body}");
    assert_eq!(s.get("/nope")?.0, 404);
    let (status, body) = s.delete("/v2/_doc/y?require_alias=true&refresh=true")?;
    assert_eq!((status, &body["result"]), (200, &json!("deleted")), "{body}");
    assert_eq!(s.count("books")?, 3);
    // A copy into the index it reads is refused through the alias too.
    let (status, body) = s.post(
        "/_reindex",
        &json!({"source": {"index": "v2"}, "dest": {"index": "books"}}),
    )?;
    assert_es_error(status, &body, 400, "action_request_validation_exception");
    assert_eq!(s.count("books")?, 3);
    Ok(())
}

/// The `_version` a get answers for a document of `occ`.
fn doc_version(s: &Server, id: &str) -> Result<Value> {
    Ok(s.get(&format!("/occ/_doc/{id}"))?.1["_version"].clone())
}

#[test]
fn writes_conditional_on_the_last_sequence_number() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, first) = s.put("/occ/_doc/1", &json!({"v": 1}))?;
    assert_eq!(status, 201, "{first}");
    let seq = |body: &Value| {
        body["_seq_no"]
            .as_u64()
            .ok_or_else(|| anyhow!("no _seq_no in {body}"))
    };
    let s1 = seq(&first)?;
    assert_eq!(first["_primary_term"], json!(1));
    let (status, second) = s.put(
        &format!("/occ/_doc/1?if_seq_no={s1}&if_primary_term=1"),
        &json!({"v": 2}),
    )?;
    assert_eq!(status, 200, "{second}");
    let s2 = seq(&second)?;
    assert!(s2 > s1);

    // A write over a stale sequence number conflicts and changes nothing.
    let (status, body) = s.put(
        &format!("/occ/_doc/1?if_seq_no={s1}&if_primary_term=1"),
        &json!({"v": 3}),
    )?;
    assert_es_error(status, &body, 409, "version_conflict_engine_exception");
    let reason = body["error"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains(&format!("required seqNo [{s1}]"))
            && reason.contains(&format!("current document has seqNo [{s2}]")),
        "{reason}"
    );
    let (status, body) = s.post(
        &format!("/occ/_update/1?if_seq_no={s1}&if_primary_term=1"),
        &json!({"doc": {"v": 4}}),
    )?;
    assert_es_error(status, &body, 409, "version_conflict_engine_exception");
    let (status, body) = s.delete(&format!("/occ/_doc/1?if_seq_no={s1}&if_primary_term=1"))?;
    assert_es_error(status, &body, 409, "version_conflict_engine_exception");
    let (status, body) = s.put(
        &format!("/occ/_doc/1?if_seq_no={s2}&if_primary_term=2"),
        &json!({"v": 5}),
    )?;
    assert_es_error(status, &body, 409, "version_conflict_engine_exception");
    let (_, doc) = s.get("/occ/_doc/1")?;
    assert_eq!((&doc["_source"], &doc["_seq_no"]), (&json!({"v": 2}), &json!(s2)));
    let (status, body) = s.put("/occ/_doc/2?if_seq_no=0&if_primary_term=1", &json!({"v": 1}))?;
    assert_es_error(status, &body, 409, "version_conflict_engine_exception");
    assert!(
        body["error"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no document was found"),
        "{body}"
    );

    // The current sequence number lets each kind of write through.
    let (status, updated) = s.post(
        &format!("/occ/_update/1?if_seq_no={s2}&if_primary_term=1"),
        &json!({"doc": {"w": 1}}),
    )?;
    assert_eq!(status, 200, "{updated}");
    let s3 = seq(&updated)?;
    let (_, doc) = s.get("/occ/_doc/1")?;
    assert_eq!(doc["_source"], json!({"v": 2, "w": 1}));

    // Hits carry what a conditional write needs, when asked.
    s.post("/occ/_refresh", &json!({}))?;
    let (_, found) = s.post(
        "/occ/_search",
        &json!({"version": true, "seq_no_primary_term": true, "query": {"ids": {"values": ["1"]}}}),
    )?;
    let hit = &found["hits"]["hits"][0];
    assert_eq!(
        (&hit["_seq_no"], &hit["_primary_term"], &hit["_version"]),
        (&json!(s3), &json!(1), &doc_version(&s, "1")?),
        "{found}"
    );
    let (_, plain) = s.post("/occ/_search", &json!({"query": {"ids": {"values": ["1"]}}}))?;
    assert!(plain["hits"]["hits"][0].get("_seq_no").is_none(), "{plain}");

    // In a bulk the condition fails its own item only.
    let lines = [
        json!({"index": {"_id": "1", "if_seq_no": s2, "if_primary_term": 1}}),
        json!({"v": 6}),
        json!({"index": {"_id": "9"}}),
        json!({"v": 9}),
        json!({"delete": {"_id": "1", "if_seq_no": s3, "if_primary_term": 1}}),
    ];
    let (status, body) = s.bulk("/occ/_bulk", &lines)?;
    assert_eq!((status, &body["errors"]), (200, &json!(true)), "{body}");
    let statuses = item_statuses(&body);
    assert_eq!(statuses, [409, 201, 200], "{body}");
    assert_eq!(s.get("/occ/_doc/1")?.0, 404);
    // A write earlier in the same bulk is a last write no client could
    // have seen the sequence number of.
    let lines = [
        json!({"index": {"_id": "8"}}),
        json!({"v": 8}),
        json!({"update": {"_id": "8", "if_seq_no": s3, "if_primary_term": 1}}),
        json!({"doc": {"w": 8}}),
    ];
    let (status, body) = s.bulk("/occ/_bulk", &lines)?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            &body["items"][0]["index"]["status"],
            &body["items"][1]["update"]["status"]
        ),
        (&json!(201), &json!(409)),
        "{body}"
    );
    assert_eq!(s.get("/occ/_doc/8")?.1["_source"], json!({"v": 8}));
    // An update needs the document; an upsert cannot be conditional.
    let (status, body) = s.post(
        "/occ/_update/1?if_seq_no=0&if_primary_term=1",
        &json!({"doc": {"v": 1}}),
    )?;
    assert_es_error(status, &body, 404, "document_missing_exception");
    for body in [
        json!({"doc": {"v": 1}, "upsert": {"v": 0}}),
        json!({"doc": {"v": 1}, "doc_as_upsert": true}),
    ] {
        let (status, body) = s.post("/occ/_update/1?if_seq_no=0&if_primary_term=1", &body)?;
        assert_es_error(status, &body, 400, "action_request_validation_exception");
    }
    assert_eq!(s.get("/occ/_doc/1")?.0, 404);

    // Malformed conditions and versions are refused before anything is written.
    let (status, body) = s.put("/occ/_doc/5?if_seq_no=1", &json!({"v": 1}))?;
    assert_es_error(status, &body, 400, "action_request_validation_exception");
    let (status, body) = s.put("/occ/_create/5?if_seq_no=1&if_primary_term=1", &json!({"v": 1}))?;
    assert_es_error(status, &body, 400, "action_request_validation_exception");
    let (status, body) = s.put("/occ/_doc/5?version=3", &json!({"v": 1}))?;
    assert_es_error(status, &body, 400, "action_request_validation_exception");
    let lines = [
        json!({"index": {"_id": "6"}}),
        json!({"v": 6}),
        json!({"index": {"_id": "7", "version": 2}}),
        json!({"v": 7}),
    ];
    let (status, body) = s.bulk("/occ/_bulk", &lines)?;
    assert_es_error(status, &body, 400, "action_request_validation_exception");
    for id in ["5", "6", "7"] {
        assert_eq!(s.get(&format!("/occ/_doc/{id}"))?.0, 404, "{id}");
    }
    Ok(())
}

/// The reason of an Elasticsearch error body.
fn reason(body: &Value) -> &str {
    body["error"]["reason"].as_str().unwrap_or("")
}

#[test]
fn external_versions_order_writes_by_the_clients_versions() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, _) = s.put("/ext", &json!({"settings": {"number_of_shards": 2}}))?;
    assert_eq!(status, 200);
    let put = |id: &str, query: &str, v: i64| s.put(&format!("/ext/_doc/{id}?{query}"), &json!({"v": v}));

    // The status, result and version of a write's answer.
    let outcome = |(status, body): (u16, Value)| (status, body["result"].clone(), body["_version"].clone());
    let conflict = |(status, body): (u16, Value), why: &str| {
        assert_es_error(status, &body, 409, "version_conflict_engine_exception");
        assert_eq!(reason(&body), why);
    };

    // The client's version becomes the document's, and a write must bring
    // a higher one (external_gte: one at least as high).
    let external = "version_type=external";
    assert_eq!(
        outcome(put("1", &format!("version=5&{external}"), 1)?),
        (201, json!("created"), json!(5))
    );
    conflict(
        put("1", &format!("version=5&{external}"), 2)?,
        "[1]: version conflict, current version [5] is higher or equal to the one provided [5]",
    );
    assert_eq!(
        outcome(put("1", "version=5&version_type=external_gte", 3)?),
        (200, json!("updated"), json!(5))
    );
    conflict(
        put("1", "version=4&version_type=external_gte", 4)?,
        "[1]: version conflict, current version [5] is higher than the one provided [4]",
    );
    let (_, doc) = s.get("/ext/_doc/1")?;
    assert_eq!((&doc["_version"], &doc["_source"]), (&json!(5), &json!({"v": 3})));

    // A delete brings a version too, and keeps it: a late write with a
    // lower one does not bring the document back.
    conflict(
        s.delete(&format!("/ext/_doc/1?version=4&{external}"))?,
        "[1]: version conflict, current version [5] is higher or equal to the one provided [4]",
    );
    assert_eq!(
        outcome(s.delete(&format!("/ext/_doc/1?version=9&{external}"))?),
        (200, json!("deleted"), json!(9))
    );
    s.post("/ext/_refresh", &json!({}))?;
    conflict(
        put("1", &format!("version=8&{external}"), 5)?,
        "[1]: version conflict, current version [9] is higher or equal to the one provided [8]",
    );
    assert_eq!(s.get("/ext/_doc/1")?.0, 404);
    assert_eq!(
        outcome(put("1", &format!("version=10&{external}"), 6)?),
        (201, json!("created"), json!(10))
    );

    // Version 0 is a version like another.
    let (status, body) = put("0", "version=0&version_type=external", 0)?;
    assert_eq!((status, &body["_version"]), (201, &json!(0)), "{body}");
    assert_eq!(s.get("/ext/_doc/0")?.1["_version"], json!(0));

    // Internal versions go on from a delete too.
    let mut versions = Vec::new();
    for _ in 0..2 {
        versions.push(put("2", "", 1)?.1["_version"].clone());
        versions.push(s.delete("/ext/_doc/2")?.1["_version"].clone());
    }
    versions.push(put("2", "", 1)?.1["_version"].clone());
    assert_eq!(versions, [1, 2, 3, 4, 5].map(|v| json!(v)));

    // In a bulk, each item is ordered by its own version.
    let lines = [
        json!({"index": {"_id": "3", "version": 20, "version_type": "external"}}),
        json!({"v": 20}),
        json!({"index": {"_id": "3", "version": 19, "version_type": "external"}}),
        json!({"v": 19}),
        json!({"index": {"_id": "4", "version": "7", "version_type": "external_gte"}}),
        json!({"v": 7}),
        json!({"delete": {"_id": "4", "version": 7, "version_type": "external"}}),
        json!({"delete": {"_id": "4", "version": 8, "version_type": "external"}}),
    ];
    let (status, body) = s.bulk("/ext/_bulk?refresh=true", &lines)?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        item_results(&body),
        vec![
            (201, json!("created"), json!(20)),
            (409, json!("version_conflict_engine_exception"), Value::Null),
            (201, json!("created"), json!(7)),
            (409, json!("version_conflict_engine_exception"), Value::Null),
            (200, json!("deleted"), json!(8)),
        ]
    );
    s.post("/ext/_refresh", &json!({}))?;
    let (_, found) = s.post(
        "/ext/_search",
        &json!({"version": true, "query": {"ids": {"values": ["1", "3"]}}, "sort": ["_id"]}),
    )?;
    let hits: Vec<(Value, Value)> = found["hits"]["hits"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|h| (h["_id"].clone(), h["_version"].clone()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(hits, vec![(json!("1"), json!(10)), (json!("3"), json!(20))]);

    // Requests Elasticsearch refuses, each refused before anything is
    // written.
    for (query, status, es_type, why) in [
        (
            "version_type=external",
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: illegal version value [-3] for version type [EXTERNAL];",
        ),
        (
            "version=-1&version_type=external",
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: illegal version value [-1] for version type [EXTERNAL];",
        ),
        (
            "version=3&version_type=external&if_seq_no=0&if_primary_term=1",
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: compare and write operations can not use versioning;",
        ),
        (
            "version=3&version_type=external&op_type=create",
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: create operations only support internal versioning. use index instead;",
        ),
        (
            "version=3&version_type=newest",
            400,
            "illegal_argument_exception",
            "No version type match [newest]",
        ),
        (
            "version=three&version_type=external",
            400,
            "illegal_argument_exception",
            "Failed to parse long parameter [version] with value [three]",
        ),
    ] {
        let (got, body) = put("5", query, 1)?;
        assert_es_error(got, &body, status, es_type);
        assert_eq!(reason(&body), why, "{query}");
    }
    let (status, body) = s.post(
        "/ext/_update/1?version=11&version_type=external",
        &json!({"doc": {"w": 1}}),
    )?;
    assert_es_error(status, &body, 400, "action_request_validation_exception");
    let lines = [
        json!({"update": {"_id": "1", "version": 11, "version_type": "external"}}),
        json!({"doc": {"w": 1}}),
    ];
    let (status, body) = s.bulk("/ext/_bulk", &lines)?;
    assert_es_error(status, &body, 400, "illegal_argument_exception");
    assert_eq!(
        reason(&body),
        "Update requests do not support versioning. Please use `if_seq_no` and `if_primary_term` instead"
    );
    assert_eq!(s.get("/ext/_doc/5")?.0, 404);
    assert_eq!(s.get("/ext/_doc/1")?.1["_source"], json!({"v": 6}));

    // A reindex with external versions copies each document's version, and
    // a later one replaces only the copies that are older.
    let copy = json!({"source": {"index": "ext"}, "dest": {"index": "copy", "version_type": "external"}});
    let (status, body) = s.post("/_reindex?refresh=true", &copy)?;
    assert_eq!((status, &body["created"]), (200, &json!(4)), "{body}");
    let versions = |index: &str| -> Result<Vec<Value>> {
        ["0", "1", "2", "3"]
            .iter()
            .map(|id| Ok(s.get(&format!("/{index}/_doc/{id}"))?.1["_version"].clone()))
            .collect()
    };
    assert_eq!(versions("copy")?, [0, 10, 5, 20].map(|v| json!(v)));
    put("3", "version=30&version_type=external&refresh=true", 30)?;
    let mut again = copy.clone();
    again["conflicts"] = json!("proceed");
    let (status, body) = s.post("/_reindex?refresh=true", &again)?;
    assert_eq!(
        (status, &body["updated"], &body["version_conflicts"]),
        (200, &json!(1), &json!(3)),
        "{body}"
    );
    assert_eq!(s.get("/copy/_doc/3")?.1["_source"], json!({"v": 30}));
    assert_eq!(versions("copy")?, versions("ext")?);
    Ok(())
}

#[test]
fn update_by_query_indexes_documents_again_by_the_current_mapping() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, _) = s.put(
        "/ubq",
        &json!({
            "settings": {"refresh_interval": "-1"},
            "mappings": {"properties": {"title": {"type": "text"}, "n": {"type": "long"}}},
        }),
    )?;
    assert_eq!(status, 200);
    let mut lines = Vec::new();
    for i in 0..12 {
        lines.push(json!({"index": {"_id": i.to_string()}}));
        lines.push(json!({"title": if i % 3 == 0 { "red fox" } else { "blue jay" }, "n": i}));
    }
    let (status, _) = s.bulk("/ubq/_bulk?refresh=true", &lines)?;
    assert_eq!(status, 200);
    // A multi-field mapped now covers only documents written from now on.
    let (status, body) = s.put(
        "/ubq/_mapping",
        &json!({"properties": {"title": {"type": "text", "fields": {"raw": {"type": "keyword"}}}}}),
    )?;
    assert_eq!(status, 200, "{body}");
    let raw_buckets = || -> Result<Vec<(Value, Value)>> {
        let (_, body) = s.post(
            "/ubq/_search",
            &json!({"size": 0, "aggs": {"t": {"terms": {"field": "title.raw"}}}}),
        )?;
        Ok(body["aggregations"]["t"]["buckets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| (b["key"].clone(), b["doc_count"].clone()))
            .collect())
    };
    assert_eq!(raw_buckets()?, []);

    // The query and max_docs choose what is written again.
    let (status, body) = s.post(
        "/ubq/_update_by_query?refresh=true",
        &json!({"query": {"match": {"title": "fox"}}, "max_docs": 3}),
    )?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            &body["total"],
            &body["updated"],
            &body["version_conflicts"],
            &body["failures"]
        ),
        (&json!(3), &json!(3), &json!(0), &json!([]))
    );
    assert_eq!(raw_buckets()?, [(json!("red fox"), json!(3))]);
    let (status, body) = s.post("/ubq/_update_by_query?refresh=true", &json!({}))?;
    assert_eq!((status, &body["updated"]), (200, &json!(12)), "{body}");
    assert_eq!(
        raw_buckets()?,
        [(json!("blue jay"), json!(8)), (json!("red fox"), json!(4))]
    );
    // Each write is a new version of the same document.
    let (_, doc) = s.get("/ubq/_doc/0")?;
    assert_eq!(
        (&doc["_version"], &doc["_source"]),
        (&json!(3), &json!({"title": "red fox", "n": 0}))
    );
    assert_eq!(s.count("ubq")?, 12);

    let (status, body) = s.post(
        "/ubq/_update_by_query",
        &json!({"script": {"source": "ctx._source.n++"}}),
    )?;
    assert_es_error(status, &body, 400, "illegal_argument_exception");
    let (status, body) = s.post("/ubq/_update_by_query?conflicts=maybe", &json!({}))?;
    assert_es_error(status, &body, 400, "illegal_argument_exception");
    let (_, doc) = s.get("/ubq/_doc/0")?;
    assert_eq!(doc["_version"], json!(3));

    // A document written after the searcher it was matched in is a
    // version conflict: neither overwritten with what the query saw nor
    // deleted. (The index refreshes only when asked.)
    let (status, _) = s.put("/ubq/_doc/0", &json!({"title": "red fox", "n": 100}))?;
    assert_eq!(status, 200);
    let (status, body) = s.post("/ubq/_update_by_query", &json!({}))?;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        (
            &body["updated"],
            &body["version_conflicts"],
            &body["failures"][0]["cause"]["type"]
        ),
        (&json!(11), &json!(1), &json!("version_conflict_engine_exception")),
        "{body}"
    );
    let (_, doc) = s.get("/ubq/_doc/0")?;
    assert_eq!(doc["_source"]["n"], json!(100));
    s.post("/ubq/_refresh", &json!({}))?;
    // So is a document deleted after it.
    let (status, _) = s.delete("/ubq/_doc/2")?;
    assert_eq!(status, 200);
    let (status, body) = s.post(
        "/ubq/_update_by_query",
        &json!({"query": {"ids": {"values": ["2"]}}}),
    )?;
    assert_eq!((status, &body["updated"]), (409, &json!(0)), "{body}");
    let reason = body["failures"][0]["cause"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("no document was found"), "{body}");
    assert_eq!(s.get("/ubq/_doc/2")?.0, 404);
    let (status, _) = s.put("/ubq/_doc/1", &json!({"title": "blue jay", "n": 101}))?;
    assert_eq!(status, 200);
    let (status, body) = s.post(
        "/ubq/_delete_by_query?conflicts=proceed&refresh=true",
        &json!({"query": {"match_all": {}}}),
    )?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["deleted"], &body["version_conflicts"]),
        (&json!(10), &json!(2)),
        "{body}"
    );
    assert_eq!(s.count("ubq")?, 1);
    let (_, doc) = s.get("/ubq/_doc/1")?;
    assert_eq!(doc["_source"]["n"], json!(101));
    Ok(())
}

/// SQL reads an alias of several indices, a pattern or a list as the
/// union of their rows: each column any of them maps, NULL where one lacks
/// it, and full-text functions and top-k still inside each index's scan.
#[test]
fn sql_reads_several_indices_as_one_table() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    // `region` is a keyword in one index and dynamic text in the other.
    for (name, n_type, region) in [("sales-a", "long", Some("keyword")), ("sales-b", "double", None)] {
        let mut properties = json!({"title": {"type": "text"}, "n": {"type": n_type}});
        if let Some(ty) = region {
            properties["region"] = json!({"type": ty});
        }
        let (status, body) = s.put(
            &format!("/{name}"),
            &json!({"mappings": {"properties": properties}}),
        )?;
        assert_eq!(status, 200, "{body}");
    }
    let lines = [
        json!({"index": {"_index": "sales-a", "_id": "a1"}}),
        json!({"title": "red fox", "n": 1}),
        json!({"index": {"_index": "sales-a", "_id": "a2"}}),
        json!({"title": "blue jay", "n": 2}),
        json!({"index": {"_index": "sales-b", "_id": "b1"}}),
        json!({"title": "quick fox fox", "n": 2.5, "region": "north", "note": "late delivery"}),
    ];
    let (status, body) = s.bulk("/_bulk?refresh=true", &lines)?;
    assert_eq!((status, &body["errors"]), (200, &json!(false)), "{body}");
    let (status, body) = s.post(
        "/_aliases",
        &json!({"actions": [{"add": {"index": "sales-*", "alias": "sales"}}]}),
    )?;
    assert_eq!(status, 200, "{body}");

    for table in ["sales", "\"sales-*\"", "\"sales-a,sales-b\""] {
        assert_eq!(
            s.sql_rows(&format!("SELECT count(*), sum(n), count(region) FROM {table}"))?,
            vec![json!([3, 5.5, 1])],
            "{table}"
        );
    }
    assert_eq!(
        s.sql_rows("SELECT _id, n, region FROM sales ORDER BY _id")?,
        vec![
            json!(["a1", 1.0, null]),
            json!(["a2", 2.0, null]),
            json!(["b1", 2.5, "north"])
        ]
    );
    // Each index scores its own documents, as each shard does.
    let query = "SELECT _id FROM sales WHERE match(title, 'fox') ORDER BY _score DESC LIMIT 5";
    let mut found = s.sql_rows(query)?;
    found.sort_by_key(|row| row[0].to_string());
    assert_eq!(found, vec![json!(["a1"]), json!(["b1"])]);
    // Each scan runs the full-text condition and keeps its own top 5; the
    // sort above merges them.
    let plan = s.sql_text(&format!("EXPLAIN {query}"), "txt")?;
    for index in ["sales-a", "sales-b"] {
        let scan = plan
            .lines()
            .find(|l| l.contains(&format!("TantivyScanExec: index={index},")))
            .unwrap_or_default();
        assert!(
            scan.contains("query=match(title, 'fox')") && scan.contains("topk=_score DESC, fetch=5"),
            "{plan}"
        );
    }
    assert_eq!(s.count("sales")?, 3);
    // A full-text condition on a field one index lacks matches nothing
    // there; the other index's scan runs it.
    assert_eq!(
        s.sql_rows("SELECT _id FROM sales WHERE match(note, 'delivery')")?,
        vec![json!(["b1"])]
    );
    // A branch that projects a column its index lacks still takes the top-k.
    let plan = s.sql_text(
        "EXPLAIN SELECT _id, note FROM sales WHERE match(title, 'fox') ORDER BY _score DESC LIMIT 2",
        "txt",
    )?;
    let topk_scans = plan
        .lines()
        .filter(|l| l.contains("TantivyScanExec") && l.contains("topk=_score DESC, fetch=2"))
        .count();
    assert_eq!(topk_scans, 2, "{plan}");
    // The alias is listed beside the indices, as a view of them.
    let tables = s.sql_rows("SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name")?;
    assert_eq!(
        tables,
        vec![
            json!(["sales", "VIEW"]),
            json!(["sales-a", "BASE TABLE"]),
            json!(["sales-b", "BASE TABLE"])
        ]
    );

    // Columns no type can hold for both indices are refused, naming them.
    let (status, body) = s.put(
        "/sales-c",
        &json!({"mappings": {"properties": {"n": {"type": "keyword"}}}}),
    )?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.post("/_sql", &json!({"query": "SELECT count(*) FROM \"sales-*\""}))?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("column [n]"),
        "{body}"
    );
    // Such an alias is left out of the table list, which still answers.
    let (status, body) = s.post(
        "/_aliases",
        &json!({"actions": [{"add": {"indices": ["sales-a", "sales-c"], "alias": "mixed"}}]}),
    )?;
    assert_eq!(status, 200, "{body}");
    let tables = s.sql_rows(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name",
    )?;
    assert_eq!(
        tables,
        vec![
            json!(["sales"]),
            json!(["sales-a"]),
            json!(["sales-b"]),
            json!(["sales-c"])
        ]
    );
    Ok(())
}

#[test]
fn an_update_that_changes_nothing_is_a_noop() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, created) = s.put("/n/_doc/1", &json!({"a": 1, "b": {"c": 2}}))?;
    assert_eq!(status, 201);
    let (status, body) = s.post("/n/_update/1", &json!({"doc": {"b": {"c": 2}}}))?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            &body["result"],
            &body["_version"],
            &body["_seq_no"],
            &body["_shards"]["total"]
        ),
        (&json!("noop"), &json!(1), &created["_seq_no"], &json!(0)),
        "{body}"
    );
    // With detect_noop off, or a value that changes, the update is written.
    let (_, body) = s.post("/n/_update/1", &json!({"doc": {"a": 1}, "detect_noop": false}))?;
    assert_eq!(
        (&body["result"], &body["_version"]),
        (&json!("updated"), &json!(2)),
        "{body}"
    );
    let lines = [
        json!({"update": {"_id": "1"}}),
        json!({"doc": {"a": 1}}),
        json!({"update": {"_id": "1"}}),
        json!({"doc": {"a": 2}}),
        json!({"update": {"_id": "1"}}),
        json!({"doc": {"a": 2}}),
    ];
    let (status, body) = s.bulk("/n/_bulk", &lines)?;
    assert_eq!(status, 200, "{body}");
    // The last line leaves the write of the line before it as it is: a
    // noop with that write's version and sequence number.
    assert_eq!(
        item_results(&body),
        vec![
            (200, json!("noop"), json!(2)),
            (200, json!("updated"), json!(3)),
            (200, json!("noop"), json!(3)),
        ]
    );
    let items = body["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        items[2]["update"]["_seq_no"], items[1]["update"]["_seq_no"],
        "{body}"
    );
    let (_, stored) = s.get("/n/_doc/1")?;
    assert_eq!(
        (&stored["_source"], &stored["_version"], &stored["_seq_no"]),
        (
            &json!({"a": 2, "b": {"c": 2}}),
            &json!(3),
            &items[1]["update"]["_seq_no"]
        )
    );
    // An update after a write of the same bulk that failed (a create of a
    // stored document, or of one the bulk created) applies to the document
    // as stored, as the items apply one after the other.
    let lines = [
        json!({"create": {"_id": "1"}}),
        json!({"a": 9}),
        json!({"update": {"_id": "1"}}),
        json!({"doc": {"d": 1}}),
        json!({"create": {"_id": "2"}}),
        json!({"a": 1}),
        json!({"create": {"_id": "2"}}),
        json!({"a": 9}),
        json!({"update": {"_id": "2"}}),
        json!({"doc": {"d": 1}}),
    ];
    let (_, failed_first) = s.bulk("/n/_bulk", &lines)?;
    assert_eq!(
        item_statuses(&failed_first),
        [409, 200, 201, 409, 200],
        "{failed_first}"
    );
    assert_eq!(
        s.get("/n/_doc/1")?.1["_source"],
        json!({"a": 2, "b": {"c": 2}, "d": 1})
    );
    assert_eq!(s.get("/n/_doc/2")?.1["_source"], json!({"a": 1, "d": 1}));
    // So does a chain of updates after it, each on the one before. An
    // index write after the chain keeps it from being applied again out of
    // turn (over the index write).
    let lines = [
        json!({"create": {"_id": "2"}}),
        json!({"a": 9}),
        json!({"update": {"_id": "2"}}),
        json!({"doc": {"e": 1}}),
        json!({"update": {"_id": "2"}}),
        json!({"doc": {"f": 1}}),
        json!({"create": {"_id": "3"}}),
        json!({"a": 3}),
        json!({"create": {"_id": "3"}}),
        json!({"a": 9}),
        json!({"update": {"_id": "3"}}),
        json!({"doc": {"e": 1}}),
        json!({"index": {"_id": "3"}}),
        json!({"a": 4}),
    ];
    let (status, chained) = s.bulk("/n/_bulk", &lines)?;
    assert_eq!(status, 200, "{chained}");
    let statuses = item_statuses(&chained);
    assert_eq!(
        (&statuses[..4], statuses[6]),
        (&[409, 200, 200, 201][..], 200),
        "{chained}"
    );
    assert_eq!(
        s.get("/n/_doc/2")?.1["_source"],
        json!({"a": 1, "d": 1, "e": 1, "f": 1})
    );
    assert_eq!(s.get("/n/_doc/3")?.1["_source"], json!({"a": 4}));
    // A failed write before the failed one changes nothing of that.
    let lines = [
        json!({"update": {"_id": "2"}}),
        json!({"doc": {"a": "not a number"}}),
        json!({"create": {"_id": "2"}}),
        json!({"a": 9}),
        json!({"update": {"_id": "2"}}),
        json!({"doc": {"g": 1}}),
    ];
    let (_, after_two) = s.bulk("/n/_bulk", &lines)?;
    assert_eq!(item_statuses(&after_two), [400, 409, 200], "{after_two}");
    assert_eq!(
        s.get("/n/_doc/2")?.1["_source"],
        json!({"a": 1, "d": 1, "e": 1, "f": 1, "g": 1})
    );
    Ok(())
}

/// Concurrent partial updates of one document each merge into the latest
/// write: `retry_on_conflict` reads and merges again when another write
/// landed in between, so none is lost and none fails.
#[test]
fn concurrent_updates_retry_on_conflict_and_lose_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    // Each worker's updates go through `_update`, or as bulk update lines.
    for (id, through_bulk) in [("c", false), ("b", true)] {
        let (status, _) = s.put(&format!("/counters/_doc/{id}"), &json!({"start": 0}))?;
        assert_eq!(status, 201);
        let statuses = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|t| {
                    let s = &s;
                    scope.spawn(move || -> Result<Vec<u16>> {
                        let mut out = Vec::new();
                        for i in 0..10 {
                            let doc = json!({"doc": {format!("t{t}_{i}"): i}});
                            let status = if through_bulk {
                                let line = json!({"update": {"_id": id, "retry_on_conflict": 100}});
                                let (status, body) = s.bulk("/counters/_bulk", &[line, doc])?;
                                item_statuses(&body).first().map_or(status, |item| *item as u16)
                            } else {
                                let path = format!("/counters/_update/{id}?retry_on_conflict=100");
                                s.post(&path, &doc)?.0
                            };
                            out.push(status);
                        }
                        Ok(out)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().map_err(|_| anyhow!("a worker panicked"))?)
                .collect::<Result<Vec<_>>>()
        })?;
        assert!(statuses.iter().flatten().all(|s| *s == 200), "{statuses:?}");
        let (_, doc) = s.get(&format!("/counters/_doc/{id}"))?;
        let keys = doc["_source"].as_object().map_or(0, |o| o.len());
        assert_eq!((keys, &doc["_version"]), (41, &json!(41)), "{doc}");
    }

    // A bulk update line takes it too, and the writes after it to the same
    // id apply after it, in order; a conditional update cannot retry.
    let lines = [
        json!({"update": {"_id": "c", "retry_on_conflict": 3}}),
        json!({"doc": {"bulk": true}}),
        json!({"index": {"_id": "c"}}),
        json!({"replaced": true}),
        json!({"update": {"_id": "c"}}),
        json!({"doc": {"after": 1}}),
    ];
    let (status, body) = s.bulk("/counters/_bulk", &lines)?;
    let statuses = item_statuses(&body);
    assert_eq!((status, statuses), (200, vec![200; 3]), "{body}");
    let (_, doc) = s.get("/counters/_doc/c")?;
    assert_eq!(doc["_source"], json!({"replaced": true, "after": 1}));
    let (status, body) = s.post(
        "/counters/_update/c?retry_on_conflict=2&if_seq_no=1&if_primary_term=1",
        &json!({"doc": {"x": 1}}),
    )?;
    assert_es_error(status, &body, 400, "action_request_validation_exception");
    Ok(())
}

/// Index templates give a new index whose name they match their settings,
/// mappings and aliases (component templates first, then the index
/// template's own, then the create request's), and are kept across
/// restarts.
#[test]
fn templates_shape_the_indices_they_match() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, body) = s.put(
        "/_component_template/base",
        &json!({"template": {
            "settings": {"index": {"number_of_shards": 2}},
            "mappings": {"properties": {
                "host": {"type": "keyword"},
                "labels": {"properties": {"env": {"type": "keyword"}}}
            }}
        }, "version": 1}),
    )?;
    assert_eq!((status, &body), (200, &json!({"acknowledged": true})));
    let logs = json!({
        "index_patterns": ["logs-*"],
        "composed_of": ["base"],
        "priority": 10,
        "version": 3,
        "_meta": {"owner": "ops"},
        "template": {
            "settings": {"refresh_interval": "5s"},
            "mappings": {"properties": {
                "status": {"type": "long"},
                "labels": {"properties": {"team": {"type": "keyword"}}}
            }},
            "aliases": {"all-logs": {}, "{index}-alias": {}}
        }
    });
    assert_eq!(s.put("/_index_template/logs", &logs)?.0, 200);
    let (status, body) = s.get("/_index_template/logs")?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"index_templates": [{"name": "logs", "index_template": {
            "index_patterns": ["logs-*"],
            "composed_of": ["base"],
            "priority": 10,
            "version": 3,
            "_meta": {"owner": "ops"},
            "template": {
                "settings": {"index": {"refresh_interval": "5s"}},
                "mappings": {"properties": {
                    "status": {"type": "long"},
                    "labels": {"properties": {"team": {"type": "keyword"}}}
                }},
                "aliases": {"all-logs": {}, "{index}-alias": {}}
            }
        }}]})
    );

    // An index created by its first write takes the composition.
    let (status, body) = s.put(
        "/logs-a/_doc/1?refresh=true",
        &json!({"host": "h1", "status": "200", "labels": {"env": "prod", "team": "web"}}),
    )?;
    assert_eq!(status, 201, "{body}");
    let props = &s.get("/logs-a/_mapping")?.1["logs-a"]["mappings"]["properties"];
    assert_eq!(
        (&props["host"]["type"], &props["status"]["type"]),
        (&json!("keyword"), &json!("long")),
        "{props}"
    );
    assert_eq!(
        props["labels"]["properties"],
        json!({"env": {"type": "keyword"}, "team": {"type": "keyword"}})
    );
    let settings = &s.get("/logs-a/_settings")?.1["logs-a"]["settings"]["index"];
    assert_eq!(
        (&settings["number_of_shards"], &settings["refresh_interval"]),
        (&json!("2"), &json!("5s")),
        "{settings}"
    );
    let (_, found) = s.post("/all-logs/_search", &json!({"query": {"term": {"status": 200}}}))?;
    assert_eq!(found["hits"]["total"]["value"], json!(1), "{found}");
    // `{index}` in a template's alias names the index.
    let (_, aliases) = s.get("/logs-a/_alias")?;
    assert_eq!(
        aliases,
        json!({"logs-a": {"aliases": {"all-logs": {}, "logs-a-alias": {}}}})
    );

    // The create request's own settings and fields win over the template's.
    let (status, body) = s.put(
        "/logs-b",
        &json!({"settings": {"number_of_shards": 1}, "mappings": {"properties": {"host": {"type": "text"}}}}),
    )?;
    assert_eq!(status, 200, "{body}");
    let props = &s.get("/logs-b/_mapping")?.1["logs-b"]["mappings"]["properties"];
    assert_eq!(
        (&props["host"]["type"], &props["status"]["type"]),
        (&json!("text"), &json!("long")),
        "{props}"
    );
    assert_eq!(
        s.get("/logs-b/_settings")?.1["logs-b"]["settings"]["index"]["number_of_shards"],
        json!("1")
    );
    // A name no template matches is created with the defaults.
    assert_eq!(s.put("/metrics", &json!({}))?.0, 200);
    assert_eq!(
        s.get("/metrics/_mapping")?.1["metrics"]["mappings"],
        json!({"properties": {}})
    );

    // Two templates of one priority may not match one name; of different
    // priorities, the higher applies.
    let prod = json!({"index_patterns": ["*-prod"], "priority": 10,
        "template": {"settings": {"number_of_shards": 3}}});
    let (status, body) = s.put("/_index_template/prod", &prod)?;
    assert_es_error(status, &body, 400, "illegal_argument_exception");
    assert!(
        reason(&body).contains("that have the same priority [10]"),
        "{body}"
    );
    let mut prod = prod;
    prod["priority"] = json!(20);
    assert_eq!(s.put("/_index_template/prod", &prod)?.0, 200);
    let (_, simulated) = s.post("/_index_template/_simulate_index/logs-prod", &json!({}))?;
    assert_eq!(
        simulated["template"]["settings"],
        json!({"index": {"number_of_shards": "3"}})
    );
    assert_eq!(
        simulated["overlapping"],
        json!([{"name": "logs", "index_patterns": ["logs-*"]}])
    );
    // Overlapping: the templates whose patterns overlap the chosen one's,
    // whether or not they match the name.
    let (_, simulated) = s.post("/_index_template/_simulate_index/logs-c", &json!({}))?;
    assert_eq!(
        (&simulated["overlapping"], &simulated["template"]["aliases"]),
        (
            &json!([{"name": "prod", "index_patterns": ["*-prod"]}]),
            &json!({"all-logs": {}, "logs-c-alias": {}})
        )
    );
    // A stored template, or one given, is simulated without being stored;
    // one given is checked as storing it would check it.
    let (status, simulated) = s.request("POST", "/_index_template/_simulate/prod", None, "")?;
    assert_eq!(
        (status, simulated),
        (
            200,
            json!({"template": {"settings": {"index": {"number_of_shards": "3"}}, "mappings": {}, "aliases": {}},
                "overlapping": [{"name": "logs", "index_patterns": ["logs-*"]}]})
        )
    );
    let given = json!({"index_patterns": ["logs-x*"], "composed_of": ["base"], "priority": 30,
        "template": {"mappings": {"properties": {"status": {"type": "keyword"}}}}});
    let (status, simulated) = s.post("/_index_template/_simulate", &given)?;
    assert_eq!(status, 200, "{simulated}");
    assert_eq!(
        simulated["template"]["mappings"]["properties"]["status"],
        json!({"type": "keyword"})
    );
    assert_eq!(
        simulated["template"]["settings"],
        json!({"index": {"number_of_shards": "2"}})
    );
    assert_eq!(
        simulated["overlapping"],
        json!([{"name": "logs", "index_patterns": ["logs-*"]}, {"name": "prod", "index_patterns": ["*-prod"]}])
    );
    let (_, named) = s.post("/_index_template/_simulate/logs", &given)?;
    assert_eq!(
        named["overlapping"],
        json!([{"name": "prod", "index_patterns": ["*-prod"]}]),
        "{named}"
    );
    assert_eq!(
        s.get("/_index_template/logs")?.1["index_templates"][0]["index_template"]["index_patterns"],
        json!(["logs-*"])
    );
    for (body, status, es_type) in [
        (
            json!({"index_patterns": ["logs-*"], "priority": 10}),
            400,
            "illegal_argument_exception",
        ),
        (
            json!({"index_patterns": ["y-*"], "composed_of": ["nope"]}),
            400,
            "invalid_index_template_exception",
        ),
    ] {
        let (got, error) = s.post("/_index_template/_simulate", &body)?;
        assert_es_error(got, &error, status, es_type);
    }
    let (status, error) = s.request("POST", "/_index_template/_simulate/nope", None, "")?;
    assert_es_error(status, &error, 400, "illegal_argument_exception");
    // Other methods take `_simulate` as the name of a template, which none has.
    let (status, error) = s.get("/_index_template/_simulate")?;
    assert_es_error(status, &error, 404, "resource_not_found_exception");
    let (status, error) = s.delete("/_index_template/_simulate")?;
    assert_es_error(status, &error, 404, "index_template_missing_exception");
    assert_eq!(s.request("HEAD", "/_index_template/_simulate", None, "")?.0, 404);
    assert_eq!(s.put("/logs-prod", &json!({}))?.0, 200);
    assert_eq!(
        s.get("/logs-prod/_settings")?.1["logs-prod"]["settings"]["index"]["number_of_shards"],
        json!("3")
    );

    // Refused, and nothing changes.
    for (method, path, body, status, es_type) in [
        (
            "PUT",
            "/_index_template/x",
            json!({"index_patterns": ["x-*"], "composed_of": ["nope"]}),
            400,
            "invalid_index_template_exception",
        ),
        (
            "PUT",
            "/_index_template/x",
            json!({"index_patterns": ["x-*"],
            "template": {"mappings": {"properties": {"a": {"type": "nope"}}}}}),
            400,
            "illegal_argument_exception",
        ),
        (
            "PUT",
            "/_index_template/x",
            json!({"index_patterns": ["x-*"],
            "template": {"settings": {"number_of_shards": 0}}}),
            400,
            "illegal_argument_exception",
        ),
        (
            "PUT",
            "/_index_template/x",
            json!({"template": {}}),
            400,
            "action_request_validation_exception",
        ),
        (
            "PUT",
            "/_index_template/x",
            json!({"index_patterns": ["x-*"], "data_stream": {}}),
            400,
            "illegal_argument_exception",
        ),
        (
            "PUT",
            "/_index_template/logs?create=true",
            logs.clone(),
            400,
            "illegal_argument_exception",
        ),
        (
            "PUT",
            "/_component_template/c",
            json!({"version": 1}),
            400,
            "x_content_parse_exception",
        ),
        (
            "PUT",
            "/_component_template/base",
            json!({"template": {"mappings": {"dynamic": "sometimes"}}}),
            400,
            "mapper_parsing_exception",
        ),
        (
            "DELETE",
            "/_component_template/base",
            Value::Null,
            400,
            "illegal_argument_exception",
        ),
        (
            "GET",
            "/_index_template/nope",
            Value::Null,
            404,
            "resource_not_found_exception",
        ),
        (
            "DELETE",
            "/_index_template/nope",
            Value::Null,
            404,
            "index_template_missing_exception",
        ),
        (
            "PUT",
            "/_index_template/_simulate",
            json!({"index_patterns": ["s-*"]}),
            400,
            "invalid_index_template_exception",
        ),
        (
            "PUT",
            "/_component_template/Base",
            json!({"template": {}}),
            400,
            "invalid_index_template_exception",
        ),
        (
            "PUT",
            "/_template/a*",
            json!({"index_patterns": ["a-*"]}),
            400,
            "invalid_index_template_exception",
        ),
    ] {
        let text = (!body.is_null()).then(|| body.to_string());
        let (got, resp) = s.request(method, path, text.as_deref(), "application/json")?;
        assert_es_error(got, &resp, status, es_type);
        assert!(!reason(&resp).is_empty(), "{method} {path}: {resp}");
    }
    let (_, all) = s.get("/_index_template")?;
    let names: Vec<&Value> = all["index_templates"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| &t["name"])
        .collect();
    assert_eq!(names, [&json!("logs"), &json!("prod")], "{all}");
    assert_eq!(
        s.get("/_component_template/ba*")?.1,
        json!({"component_templates": [{"name": "base", "component_template": {
            "template": {
                "settings": {"index": {"number_of_shards": "2"}},
                "mappings": {"properties": {
                    "host": {"type": "keyword"},
                    "labels": {"properties": {"env": {"type": "keyword"}}}
                }}
            },
            "version": 1
        }}]})
    );
    assert_eq!(s.request("HEAD", "/_index_template/logs", None, "")?.0, 200);
    assert_eq!(s.request("HEAD", "/_index_template/nope", None, "")?.0, 404);
    assert_eq!(
        s.get_text("/_cat/templates?v")?,
        "name index_patterns order version composed_of\n\
         logs [logs-*]       10    3       [base]\n\
         prod [*-prod]       20            []\n"
    );

    // Templates are kept across a restart, and go when deleted.
    s.terminate()?;
    let s = Server::start(dir.path())?;
    assert_eq!(
        s.get("/_index_template/logs")?.1["index_templates"][0]["index_template"],
        {
            let mut shown = logs.clone();
            shown["template"]["settings"] = json!({"index": {"refresh_interval": "5s"}});
            shown
        }
    );
    assert_eq!(s.delete("/_index_template/logs,prod")?.0, 200);
    assert_eq!(s.delete("/_component_template/base")?.0, 200);
    assert_eq!(s.get("/_index_template")?.1, json!({"index_templates": []}));
    assert_eq!(s.put("/logs-c", &json!({}))?.0, 200);
    assert_eq!(
        s.get("/logs-c/_settings")?.1["logs-c"]["settings"]["index"]["number_of_shards"],
        json!("1")
    );
    Ok(())
}

/// A rollover moves an alias's writes to a new index once its write index
/// meets a condition; the new index takes the templates that match its name.
#[test]
fn rollover_moves_writes_to_a_new_index() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, _) = s.put(
        "/logs-000001",
        &json!({"aliases": {"logs": {"is_write_index": true}}}),
    )?;
    assert_eq!(status, 200);
    for i in 0..3 {
        assert_eq!(s.post("/logs/_doc?refresh=true", &json!({"n": i}))?.0, 201);
    }
    let roll = |body: &Value, query: &str| s.post(&format!("/logs/_rollover{query}"), body);
    // Conditions not met, a dry run, and a min_* condition not reached roll nothing.
    for (body, query, conditions) in [
        (
            json!({"conditions": {"max_docs": 5}}),
            "",
            json!({"[max_docs: 5]": false}),
        ),
        (
            json!({"conditions": {"max_docs": 3}}),
            "?dry_run",
            json!({"[max_docs: 3]": true}),
        ),
        (
            json!({"conditions": {"max_docs": 3, "min_age": "1h"}}),
            "",
            json!({"[max_docs: 3]": true, "[min_age: 1h]": false}),
        ),
    ] {
        let (status, answer) = roll(&body, query)?;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer,
            json!({"acknowledged": false, "shards_acknowledged": false, "old_index": "logs-000001",
                   "new_index": "logs-000002", "rolled_over": false, "dry_run": query == "?dry_run",
                   "lazy": false, "conditions": conditions})
        );
    }
    assert_eq!(s.get("/logs-000002")?.0, 404);

    let (status, answer) = roll(
        &json!({"conditions": {"max_docs": 3, "max_age": "30d"}, "settings": {"number_of_shards": 2}}),
        "",
    )?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (
            &answer["rolled_over"],
            &answer["new_index"],
            &answer["conditions"]
        ),
        (
            &json!(true),
            &json!("logs-000002"),
            &json!({"[max_docs: 3]": true, "[max_age: 30d]": false})
        )
    );
    assert_eq!(
        s.get("/logs-000002/_settings")?.1["logs-000002"]["settings"]["index"]["number_of_shards"],
        json!("2")
    );
    // The old index stays in the alias for searches; writes go to the new one.
    assert_eq!(
        s.get("/_alias/logs")?.1,
        json!({"logs-000001": {"aliases": {"logs": {"is_write_index": false}}},
               "logs-000002": {"aliases": {"logs": {"is_write_index": true}}}})
    );
    let (_, written) = s.post("/logs/_doc?refresh=true", &json!({"n": 3}))?;
    assert_eq!(written["_index"], json!("logs-000002"), "{written}");
    assert_eq!(s.count("logs")?, 4);

    // An alias without a marked write index moves to the new index, which
    // takes the template its name matches.
    let (status, _) = s.put(
        "/_index_template/app",
        &json!({"index_patterns": ["app-*"],
                "template": {"mappings": {"properties": {"level": {"type": "keyword"}}}}}),
    )?;
    assert_eq!(status, 200);
    assert_eq!(s.put("/app-1", &json!({"aliases": {"app": {}}}))?.0, 200);
    let (status, answer) = s.post("/app/_rollover", &json!({}))?;
    assert_eq!(
        (
            status,
            &answer["new_index"],
            &answer["rolled_over"],
            &answer["conditions"]
        ),
        (200, &json!("app-000002"), &json!(true), &json!({})),
        "{answer}"
    );
    assert_eq!(
        s.get("/_alias/app")?.1,
        json!({"app-000002": {"aliases": {"app": {}}}})
    );
    assert_eq!(
        s.get("/app-000002/_mapping")?.1["app-000002"]["mappings"]["properties"]["level"],
        json!({"type": "keyword"})
    );
    // A name of one's choice.
    let (_, answer) = s.post("/app/_rollover/app-next", &json!({}))?;
    assert_eq!(
        (&answer["old_index"], &answer["new_index"]),
        (&json!("app-000002"), &json!("app-next"))
    );

    assert_eq!(s.put("/plain", &json!({"aliases": {"p": {}}}))?.0, 200);
    for (path, body, es_type) in [
        ("/logs-000001/_rollover", json!({}), "illegal_argument_exception"),
        ("/nothing/_rollover", json!({}), "illegal_argument_exception"),
        ("/p/_rollover", json!({}), "illegal_argument_exception"),
        (
            "/logs/_rollover",
            json!({"conditions": {"max_colour": 1}}),
            "x_content_parse_exception",
        ),
        (
            "/logs/_rollover",
            json!({"conditions": {"max_size": "5 parsecs"}}),
            "parse_exception",
        ),
        (
            "/logs/_rollover",
            json!({"conditions": {"min_docs": 1}}),
            "action_request_validation_exception",
        ),
        (
            "/logs/_rollover",
            json!({"colour": 1}),
            "x_content_parse_exception",
        ),
    ] {
        let (status, answer) = s.post(path, &body)?;
        assert_es_error(status, &answer, 400, es_type);
    }
    // The refused rollovers created nothing.
    let (_, indices) = s.get("/_cat/indices?format=json")?;
    let names: Vec<&str> = indices
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["index"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "app-000002",
            "app-1",
            "app-next",
            "logs-000001",
            "logs-000002",
            "plain"
        ]
    );
    Ok(())
}

/// Legacy templates (`_template`) apply when no index template matches:
/// every one that matches, in ascending `order`.
#[test]
fn legacy_templates_apply_in_order_when_no_index_template_matches() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let base = json!({"index_patterns": ["legacy-*"], "order": 0, "settings": {"number_of_shards": 2},
                      "mappings": {"properties": {"a": {"type": "keyword"}}}});
    let more = json!({"index_patterns": ["legacy-x*"], "order": 1, "version": 7,
                      "settings": {"index": {"number_of_shards": 3}},
                      "mappings": {"properties": {"b": {"type": "long"}}}, "aliases": {"legacy": {}}});
    assert_eq!(s.put("/_template/base", &base)?.0, 200);
    assert_eq!(s.put("/_template/more", &more)?.0, 200);
    assert_eq!(
        s.get("/_template/more")?,
        (
            200,
            json!({"more": {"order": 1, "version": 7, "index_patterns": ["legacy-x*"],
                            "settings": {"index": {"number_of_shards": "3"}},
                            "mappings": {"properties": {"b": {"type": "long"}}},
                            "aliases": {"legacy": {}}}})
        )
    );
    let shards = |index: &str| -> Result<Value> {
        Ok(s.get(&format!("/{index}/_settings"))?.1[index]["settings"]["index"]["number_of_shards"].take())
    };
    let fields = |index: &str| -> Result<Vec<String>> {
        let (_, mapping) = s.get(&format!("/{index}/_mapping"))?;
        let props = mapping[index]["mappings"]["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        Ok(props
            .into_iter()
            .map(|(k, v)| format!("{k}:{}", v["type"]))
            .collect())
    };
    assert_eq!(
        s.put("/legacy-x1/_doc/1?refresh=true", &json!({"c": true}))?.0,
        201
    );
    assert_eq!(shards("legacy-x1")?, json!("3"));
    assert_eq!(
        fields("legacy-x1")?,
        ["a:\"keyword\"", "b:\"long\"", "c:\"boolean\""]
    );
    assert_eq!(s.count("legacy")?, 1);
    assert_eq!(s.put("/legacy-y", &json!({}))?.0, 200);
    assert_eq!(shards("legacy-y")?, json!("2"));
    assert_eq!(fields("legacy-y")?, ["a:\"keyword\""]);
    // An index template that matches replaces them all.
    let (status, _) = s.put(
        "/_index_template/x",
        &json!({"index_patterns": ["legacy-x*"], "template": {"mappings": {"properties": {"d": {"type": "long"}}}}}),
    )?;
    assert_eq!(status, 200);
    assert_eq!(s.put("/legacy-x2", &json!({}))?.0, 200);
    assert_eq!(
        (shards("legacy-x2")?, fields("legacy-x2")?),
        (json!("1"), vec!["d:\"long\"".to_string()])
    );
    // The legacy templates it overrides are listed as overlapping.
    let (_, simulated) = s.post("/_index_template/_simulate_index/legacy-x3", &json!({}))?;
    assert_eq!(
        simulated["overlapping"],
        json!([{"name": "base", "index_patterns": ["legacy-*"]}, {"name": "more", "index_patterns": ["legacy-x*"]}])
    );

    assert_eq!(
        s.get_text("/_cat/templates?v")?,
        "name index_patterns order version composed_of\n\
         base [legacy-*]     0\n\
         more [legacy-x*]    1     7\n\
         x    [legacy-x*]    0             []\n"
    );
    assert_eq!(s.get("/_template/nope")?, (404, json!({})));
    assert_eq!(s.request("HEAD", "/_template/base", None, "")?.0, 200);
    for (method, path, body, status, es_type) in [
        (
            "DELETE",
            "/_template/nope",
            Value::Null,
            404,
            "index_template_missing_exception",
        ),
        (
            "PUT",
            "/_template/bad",
            json!({"index_patterns": ["z*"], "settings": {"number_of_shards": "x"}}),
            400,
            "illegal_argument_exception",
        ),
        (
            "PUT",
            "/_template/bad",
            json!({"order": 1}),
            400,
            "action_request_validation_exception",
        ),
        (
            "PUT",
            "/_template/base?create=true",
            base.clone(),
            400,
            "illegal_argument_exception",
        ),
    ] {
        let text = (!body.is_null()).then(|| body.to_string());
        let (got, resp) = s.request(method, path, text.as_deref(), "application/json")?;
        assert_es_error(got, &resp, status, es_type);
    }
    assert_eq!(s.delete("/_template/base,more")?.0, 200);
    assert_eq!(s.get("/_template")?.1, json!({}));
    Ok(())
}

/// `_terms_enum` lists the keyword values that start with a string, in order.
#[test]
fn terms_enum_lists_keyword_values_by_prefix() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, _) = s.put(
        "/tools",
        &json!({"settings": {"number_of_shards": 2}, "mappings": {"properties": {
            "tags": {"type": "keyword"}, "msg": {"type": "text"}, "n": {"type": "long"}}}}),
    )?;
    assert_eq!(status, 200);
    let lines = [
        json!({"index": {"_id": "1"}}),
        json!({"tags": ["Kibana", "logstash"], "msg": "kibana rocks", "n": 1}),
        json!({"index": {"_id": "2"}}),
        json!({"tags": ["kibana-x", "kite"], "n": 2}),
        json!({"index": {"_id": "3"}}),
        json!({"tags": "kib.ana", "n": 3}),
    ];
    assert_eq!(s.bulk("/tools/_bulk?refresh=true", &lines)?.0, 200);
    let terms = |body: Value| -> Result<Value> {
        let (status, answer) = s.post("/tools/_terms_enum", &body)?;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["complete"], json!(true), "{answer}");
        Ok(answer["terms"].clone())
    };
    assert_eq!(
        terms(json!({"field": "tags", "string": "ki"}))?,
        json!(["kib.ana", "kibana-x", "kite"])
    );
    assert_eq!(
        terms(json!({"field": "tags", "string": "KIB", "case_insensitive": true}))?,
        json!(["Kibana", "kib.ana", "kibana-x"])
    );
    assert_eq!(
        terms(json!({"field": "tags", "string": "kib."}))?,
        json!(["kib.ana"])
    );
    assert_eq!(
        terms(json!({"field": "tags", "size": 2}))?,
        json!(["Kibana", "kib.ana"])
    );
    assert_eq!(
        terms(json!({"field": "tags", "index_filter": {"term": {"n": 2}}}))?,
        json!(["kibana-x", "kite"])
    );
    assert_eq!(terms(json!({"field": "msg", "string": "ki"}))?, json!([]));
    let (_, answer) = s.post("/tools/_terms_enum", &json!({"field": "tags"}))?;
    assert_eq!(
        answer["_shards"],
        json!({"total": 2, "successful": 2, "failed": 0})
    );
    for (body, es_type) in [
        (json!({"string": "ki"}), "action_request_validation_exception"),
        (
            json!({"field": "tags", "size": "many"}),
            "x_content_parse_exception",
        ),
        (json!({"field": "tags", "colour": 1}), "x_content_parse_exception"),
    ] {
        let (status, answer) = s.post("/tools/_terms_enum", &body)?;
        assert_es_error(status, &answer, 400, es_type);
    }
    Ok(())
}

/// Cluster settings: deleting indices by wildcards or `_all` is refused
/// unless `action.destructive_requires_name` is turned off, and
/// `action.auto_create_index` decides which writes may create an index,
/// and `search.max_buckets` bounds the buckets of a search response. They
/// are kept across a restart.
#[test]
fn cluster_settings_guard_deletes_and_index_creation() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    assert_eq!(
        s.get("/_cluster/settings")?,
        (200, json!({"persistent": {}, "transient": {}}))
    );
    assert_eq!(
        s.get("/_cluster/settings?include_defaults")?.1["defaults"],
        json!({"action": {"auto_create_index": "true", "destructive_requires_name": "true"},
               "search": {"max_buckets": "65536"}})
    );
    for name in ["a1", "a2"] {
        assert_eq!(s.put(&format!("/{name}"), &json!({}))?.0, 200);
    }
    for path in ["/a*", "/_all", "/a1,a*"] {
        let (status, body) = s.delete(path)?;
        assert_es_error(status, &body, 400, "illegal_argument_exception");
        assert_eq!(
            reason(&body),
            "Wildcard expressions or all indices are not allowed"
        );
    }
    assert_eq!(s.get("/a1,a2")?.0, 200);
    let (status, body) = s.put(
        "/_cluster/settings",
        &json!({"persistent": {"action": {"destructive_requires_name": false}}}),
    )?;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"acknowledged": true, "persistent": {"action": {"destructive_requires_name": "false"}},
                   "transient": {}})
        )
    );
    assert_eq!(s.delete("/a*")?.0, 200);
    assert_eq!(s.get("/a1")?.0, 404);

    let (status, _) = s.put(
        "/_cluster/settings",
        &json!({"persistent": {"action.auto_create_index": "+logs-*,-*"}}),
    )?;
    assert_eq!(status, 200);
    let (status, body) = s.put("/other/_doc/1", &json!({"a": 1}))?;
    assert_es_error(status, &body, 404, "index_not_found_exception");
    assert!(
        reason(&body).contains("[action.auto_create_index] contains [-*]"),
        "{body}"
    );
    assert_eq!(s.put("/logs-1/_doc/1", &json!({"a": 1}))?.0, 201);
    let (_, body) = s.bulk(
        "/_bulk",
        &[
            json!({"index": {"_index": "other"}}),
            json!({"a": 1}),
            json!({"index": {"_index": "logs-2"}}),
            json!({"a": 1}),
        ],
    )?;
    assert_eq!(item_statuses(&body), [404, 201]);
    // An explicit create is not an automatic one.
    assert_eq!(s.put("/other", &json!({}))?.0, 200);

    // `search.max_buckets` bounds the buckets of a response, at every
    // level together.
    assert_eq!(s.put("/buckets", &json!({}))?.0, 200);
    let docs: Vec<Value> = ["a", "b", "c"]
        .iter()
        .flat_map(|k| [json!({"index": {}}), json!({"k": k, "n": 1})])
        .collect();
    s.bulk("/buckets/_bulk?refresh=true", &docs)?;
    let terms = json!({"size": 0, "aggs": {"k": {"terms": {"field": "k.keyword"},
                                                  "aggs": {"n": {"terms": {"field": "n"}}}}}});
    assert_eq!(s.post("/buckets/_search", &terms)?.0, 200);
    let limit = |max: Value| json!({"persistent": {"search.max_buckets": max}});
    assert_eq!(s.put("/_cluster/settings", &limit(json!(5)))?.0, 200);
    let (status, body) = s.post("/buckets/_search", &terms)?;
    assert_es_error(status, &body, 400, "too_many_buckets_exception");
    assert_eq!(body["error"]["max_buckets"], json!(5), "{body}");
    assert!(reason(&body).contains("less than or equal to: [5]"), "{body}");
    for (max, why) in [
        (json!(-1), " must be >= 0"),
        (json!("lots"), ""),
        (json!(2_147_483_648_i64), ""),
    ] {
        let (status, body) = s.put("/_cluster/settings", &limit(max.clone()))?;
        assert_es_error(status, &body, 400, "illegal_argument_exception");
        let max = max.as_str().map_or_else(|| max.to_string(), str::to_string);
        assert_eq!(
            reason(&body),
            format!("Failed to parse value [{max}] for setting [search.max_buckets]{why}")
        );
    }
    // `_terms_enum` is bounded by its own `size`, not by the setting.
    assert_eq!(s.put("/_cluster/settings", &limit(json!(1)))?.0, 200);
    let (status, body) = s.post("/buckets/_terms_enum", &json!({"field": "k.keyword"}))?;
    assert_eq!((status, &body["terms"]), (200, &json!(["a", "b", "c"])), "{body}");
    assert_eq!(s.put("/_cluster/settings", &limit(json!("6")))?.0, 200);
    let (status, body) = s.post("/buckets/_search", &terms)?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["aggregations"]["k"]["buckets"].as_array().map(Vec::len),
        Some(3)
    );

    for (body, es_type) in [
        (
            json!({"persistent": {"cluster.max_shards_per_node": 10}}),
            "illegal_argument_exception",
        ),
        (
            json!({"persistent": {"action.destructive_requires_name": "maybe"}}),
            "illegal_argument_exception",
        ),
        (
            json!({"transient": {"action.auto_create_index": false}}),
            "illegal_argument_exception",
        ),
        (json!({"sometimes": {}}), "x_content_parse_exception"),
        (json!({"transient": {}}), "action_request_validation_exception"),
        (
            json!({"persistent": {"no.such": null}}),
            "illegal_argument_exception",
        ),
    ] {
        let (status, answer) = s.put("/_cluster/settings", &body)?;
        assert_es_error(status, &answer, 400, es_type);
    }
    s.terminate()?;
    let s = Server::start(dir.path())?;
    assert_eq!(
        s.get("/_cluster/settings?flat_settings=true")?.1,
        json!({"persistent": {"action.auto_create_index": "+logs-*,-*",
                              "action.destructive_requires_name": "false",
                              "search.max_buckets": "6"}, "transient": {}})
    );
    let (status, body) = s.post("/buckets/_search", &json!({"size": 0, "aggs": {"k": {"histogram": {"field": "n", "interval": 1, "extended_bounds": {"min": 0, "max": 6}}}}}))?;
    assert_es_error(status, &body, 400, "too_many_buckets_exception");
    assert_eq!(body["error"]["max_buckets"], json!(6), "{body}");
    let reset = json!({"persistent": {"action.auto_create_index": null, "action.destructive_requires_name": null,
                                      "search.max_buckets": null}});
    assert_eq!(s.put("/_cluster/settings", &reset)?.0, 200);
    assert_eq!(
        s.get("/_cluster/settings")?.1,
        json!({"persistent": {}, "transient": {}})
    );
    assert_eq!(s.put("/another/_doc/1", &json!({"a": 1}))?.0, 201);
    let (status, body) = s.post("/buckets/_search", &terms)?;
    assert_eq!(status, 200, "{body}");
    Ok(())
}
