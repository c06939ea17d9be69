//! Acknowledged writes survive SIGKILL; a torn translog tail is dropped, not
//! fatal; an index whose files do not open fails alone, not the node.

mod common;

use std::fs::OpenOptions;
use std::io::Write;

use anyhow::Result;
use common::{Server, assert_es_error};
use serde_json::{Value, json};

fn translogs(data_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![data_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "translog.log") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn create_unrefreshed(server: &Server, index: &str, shards: u32) -> Result<()> {
    let (status, body) = server.put(
        &format!("/{index}"),
        &json!({"settings": {"number_of_shards": shards, "refresh_interval": "-1"},
                "mappings": {"properties": {"n": {"type": "long"}, "tag": {"type": "keyword"}}}}),
    )?;
    assert_eq!(status, 200, "{body}");
    Ok(())
}

#[test]
fn acknowledged_writes_survive_sigkill() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    create_unrefreshed(&server, "events", 3)?;
    // Nothing is ever refreshed (committed): every document lives only in translogs.
    for batch in 0..10 {
        let mut lines = Vec::new();
        for i in 0..300 {
            let n = batch * 300 + i;
            lines.push(json!({"index": {"_id": n.to_string()}}));
            lines.push(json!({"n": n, "tag": format!("t{}", n % 7)}));
        }
        let (status, body) = server.bulk("/events/_bulk", &lines)?;
        assert_eq!(status, 200);
        assert_eq!(body["errors"], json!(false));
    }
    let (status, body) = server.bulk(
        "/events/_bulk",
        &[
            json!({"delete": {"_id": "5"}}),
            json!({"update": {"_id": "6"}}),
            json!({"doc": {"tag": "updated"}}),
            json!({"index": {"_id": "7"}}),
            json!({"n": 7000, "tag": "replaced"}),
        ],
    )?;
    assert_eq!((status, &body["errors"]), (200, &json!(false)), "{body}");
    server.kill()?;

    let server = Server::start(dir.path())?;
    assert_eq!(server.count("events")?, 2999);
    let (status, doc) = server.get("/events/_doc/6")?;
    assert_eq!(status, 200);
    assert_eq!(doc["_source"], json!({"n": 6, "tag": "updated"}));
    assert_eq!(doc["_version"], json!(2));
    let (_, doc) = server.get("/events/_doc/7")?;
    assert_eq!(doc["_source"]["n"], json!(7000));
    let (status, _) = server.get("/events/_doc/5")?;
    assert_eq!(status, 404);
    let rows = server.sql_rows("SELECT sum(n) FROM events WHERE tag = 't3'")?;
    let expected: i64 = (0..3000)
        .filter(|n| n % 7 == 3 && *n != 5 && *n != 6 && *n != 7)
        .sum();
    assert_eq!(rows, vec![json!([expected])]);
    Ok(())
}

#[test]
fn torn_translog_tail_is_dropped_not_fatal() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    create_unrefreshed(&server, "logs", 1)?;
    let lines: Vec<Value> = (0..50)
        .flat_map(|i| [json!({"index": {"_id": i.to_string()}}), json!({"n": i})])
        .collect();
    let (status, _) = server.bulk("/logs/_bulk", &lines)?;
    assert_eq!(status, 200);
    server.kill()?;

    let logs = translogs(dir.path());
    assert_eq!(logs.len(), 1);
    let before = std::fs::metadata(&logs[0])?.len();
    assert!(before > 0, "writes must be in the translog");
    // A crash in the middle of an append: a header announcing 1000 bytes, and 3 of them.
    let mut f = OpenOptions::new().append(true).open(&logs[0])?;
    f.write_all(&1000u32.to_le_bytes())?;
    f.write_all(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3])?;
    drop(f);

    let server = Server::start(dir.path())?;
    assert_eq!(server.count("logs")?, 50);
    let (status, body) = server.bulk(
        "/logs/_bulk?refresh=true",
        &[json!({"index": {"_id": "x"}}), json!({"n": 99})],
    )?;
    assert_eq!((status, &body["errors"]), (200, &json!(false)));
    assert_eq!(server.count("logs")?, 51);
    server.kill()?;
    let server = Server::start(dir.path())?;
    assert_eq!(server.count("logs")?, 51);
    Ok(())
}

#[test]
fn sigterm_commits_every_shard_and_exits_cleanly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    create_unrefreshed(&server, "metrics", 2)?;
    let lines: Vec<Value> = (0..40)
        .flat_map(|i| [json!({"index": {}}), json!({"n": i})])
        .collect();
    let (status, _) = server.bulk("/metrics/_bulk", &lines)?;
    assert_eq!(status, 200);
    let exit = server.terminate()?;
    assert!(exit.success(), "exit status {exit:?}");
    for log in translogs(dir.path()) {
        assert_eq!(
            std::fs::metadata(&log)?.len(),
            0,
            "{} not truncated by the final commit",
            log.display()
        );
    }
    let server = Server::start(dir.path())?;
    assert_eq!(server.count("metrics")?, 40);
    Ok(())
}

/// Creates the one-shard indices `good` and `bad` and writes documents
/// 0..`docs` to each in `bulks` bulks, with `params`.
fn good_and_bad(server: &Server, docs: usize, bulks: usize, params: &str) -> Result<()> {
    for index in ["good", "bad"] {
        create_unrefreshed(server, index, 1)?;
        let lines: Vec<Value> = (0..docs)
            .flat_map(|i| [json!({"index": {"_id": i.to_string()}}), json!({"n": i})])
            .collect();
        for part in lines.chunks(lines.len() / bulks) {
            let (status, body) = server.bulk(&format!("/{index}/_bulk{params}"), part)?;
            assert_eq!((status, &body["errors"]), (200, &json!(false)), "{body}");
        }
    }
    Ok(())
}

/// A translog generation that a crash left behind uncommitted, with a
/// record that does not decode in front of a later append: cutting there
/// would lose the acknowledged writes after it, so its index stays failed,
/// files untouched, while the node serves the others.
#[test]
fn a_damaged_translog_generation_fails_its_index_alone() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    // Two bulks, two appends: the damage hits the first.
    good_and_bad(&server, 20, 2, "")?;
    server.kill()?;
    let shard = shard_meta(dir.path(), "bad")?.with_file_name("");
    let rolled = shard.join("translog-1.log");
    std::fs::rename(shard.join("translog.log"), &rolled)?;
    let mut bytes = std::fs::read(&rolled)?;
    bytes[20] ^= 0xff;
    std::fs::write(&rolled, &bytes)?;

    let server = Server::start(dir.path())?;
    assert_eq!(server.count("good")?, 20);
    let (status, body) = server.post("/bad/_search", &json!({}))?;
    assert_es_error(status, &body, 503, "unavailable_shards_exception");
    let reason = body["error"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("index [bad] could not be opened") && reason.contains("translog-1.log is corrupt"),
        "{body}"
    );
    let (status, body) = server.bulk(
        "/good/_bulk?refresh=true",
        &[json!({"index": {"_id": "x"}}), json!({"n": 99})],
    )?;
    assert_eq!((status, &body["errors"]), (200, &json!(false)), "{body}");
    assert_eq!(server.count("good")?, 21);
    assert!(server.terminate()?.success());
    assert_eq!(
        std::fs::read(&rolled)?,
        bytes,
        "the damaged generation is left as it was"
    );
    Ok(())
}

/// The tantivy metadata file of shard 0 of `index`.
fn shard_meta(data_dir: &std::path::Path, index: &str) -> Result<std::path::PathBuf> {
    for entry in std::fs::read_dir(data_dir.join("indices"))? {
        let dir = entry?.path();
        let name = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if name.rsplit_once('-').is_some_and(|(n, _)| n == index) {
            return Ok(dir.join("shards").join("0").join("meta.json"));
        }
    }
    anyhow::bail!("no directory of index {index}")
}

#[test]
fn an_index_that_does_not_open_fails_alone() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    good_and_bad(&server, 5, 1, "?refresh=true")?;
    assert!(server.terminate()?.success());
    let damaged = shard_meta(dir.path(), "bad")?;
    std::fs::write(&damaged, b"{ not tantivy metadata")?;

    let server = Server::start(dir.path())?;
    assert_eq!(server.count("good")?, 5);
    let unavailable = |(status, body): (u16, Value)| {
        assert_es_error(status, &body, 503, "unavailable_shards_exception");
        let reason = body["error"]["reason"].as_str().unwrap_or_default().to_string();
        assert!(reason.contains("index [bad] could not be opened"), "{body}");
    };
    unavailable(server.post("/bad/_search", &json!({"query": {"match_all": {}}}))?);
    unavailable(server.post("/b*/_count", &json!({}))?);
    // A search over it and others answers from the others, with its shard
    // among the failed ones, as Elasticsearch answers with a red index.
    let (status, body) = server.post("/_all/_search", &json!({"query": {"match_all": {}}}))?;
    assert_eq!(
        (status, &body["hits"]["total"]["value"]),
        (200, &json!(5)),
        "{body}"
    );
    let shards = &body["_shards"];
    assert_eq!(
        (&shards["total"], &shards["successful"], &shards["failed"]),
        (&json!(2), &json!(1), &json!(1)),
        "{body}"
    );
    let failure = &shards["failures"][0];
    assert_eq!(
        (&failure["index"], &failure["shard"]),
        (&json!("bad"), &json!(0)),
        "{body}"
    );
    assert_eq!(
        failure["reason"]["type"],
        json!("no_shard_available_action_exception"),
        "{body}"
    );
    let (status, body) = server.post("/good,bad/_count", &json!({}))?;
    assert_eq!(
        (status, &body["count"], &body["_shards"]["failed"]),
        (200, &json!(5), &json!(1)),
        "{body}"
    );
    let (status, body) = server.post(
        "/_all/_search?allow_partial_search_results=false",
        &json!({"query": {"match_all": {}}}),
    )?;
    assert_es_error(status, &body, 503, "search_phase_execution_exception");
    assert!(
        body["error"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("[bad][0]"),
        "{body}"
    );
    unavailable(server.get("/bad/_doc/1")?);
    unavailable(server.put("/bad/_doc/9", &json!({"n": 9}))?);
    unavailable(server.post("/_sql", &json!({"query": "SELECT count(*) FROM bad"}))?);
    let (status, body) = server.put("/bad", &json!({}))?;
    assert_es_error(status, &body, 400, "resource_already_exists_exception");
    let (status, _) = server.request("HEAD", "/bad", None, "")?;
    assert_eq!(status, 200);
    // Its files are left as they were.
    assert_eq!(std::fs::read(&damaged)?, b"{ not tantivy metadata");

    let (_, cat) = server.get("/_cat/indices?format=json")?;
    let health: Vec<(&str, &str)> = cat
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["index"].as_str().unwrap_or(""),
                r["health"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(health, [("bad", "red"), ("good", "green")], "{cat}");
    let (status, body) = server.get("/_cluster/health")?;
    assert_eq!((status, &body["status"]), (200, &json!("red")), "{body}");
    assert_eq!(body["unassigned_primary_shards"], json!(1), "{body}");
    let (status, body) = server.get("/_cluster/health/b*")?;
    assert_eq!((status, &body["status"]), (200, &json!("red")), "{body}");
    let (status, body) = server.get("/_cat/indices/bad?format=json")?;
    assert_eq!((status, &body[0]["health"]), (200, &json!("red")), "{body}");
    unavailable(server.post("/_refresh", &json!({}))?);
    let (status, shards) = server.get("/_cat/shards?format=json")?;
    let states: Vec<(&str, &str, &str)> = shards
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap_or("");
            (field("index"), field("prirep"), field("state"))
        })
        .collect();
    assert_eq!(
        (status, states),
        (200, vec![("bad", "p", "UNASSIGNED"), ("good", "p", "STARTED")]),
        "{shards}"
    );

    // Deleting it frees the name.
    let (status, body) = server.delete("/bad")?;
    assert_eq!(status, 200, "{body}");
    assert!(!damaged.exists());
    let (_, body) = server.get("/_cluster/health")?;
    assert_eq!(body["status"], json!("green"), "{body}");
    create_unrefreshed(&server, "bad", 1)?;
    assert_eq!(server.count("bad")?, 0);
    assert_eq!(server.count("good")?, 5);
    Ok(())
}
