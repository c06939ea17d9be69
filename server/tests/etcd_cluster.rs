//! Clusters kept in a real etcd: nodes find each other through leases,
//! index metadata lives in etcd, and the master-eligible nodes elect a
//! leader that allocates shards.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use common::{Etcd, Proxy, Server, assert_es_error, etcd_flags};
use serde_json::{Value, json};

/// `_cat/nodes` as JSON rows.
fn cat_nodes(s: &Server) -> Result<Vec<Value>> {
    let (status, body) = s.get("/_cat/nodes?format=json")?;
    ensure!(status == 200, "_cat/nodes: {body}");
    Ok(body.as_array().cloned().unwrap_or_default())
}

/// The node `s` reports as the elected master, if any.
fn master(s: &Server) -> Result<Option<String>> {
    Ok(cat_nodes(s)?
        .iter()
        .find(|n| n["master"] == "*")
        .and_then(|n| n["name"].as_str().map(str::to_string)))
}

/// Waits until `cond` holds, for at most `limit`.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what}: not within {limit:?}")
}

/// A coordinator (the only master-eligible node) and `n` data nodes
/// `data-<i>` in `etcd`, with leases of `ttl` seconds, once the coordinator
/// lists them all and a leader is elected.
fn start_cluster(etcd: &Etcd, root: &std::path::Path, n: usize, ttl: u32) -> Result<(Server, Vec<Server>)> {
    let coordinator = Server::start_etcd(etcd, root, "coord", "coordinator,master", ttl)?;
    let data = (0..n)
        .map(|i| Server::start_etcd(etcd, root, &format!("data-{i}"), "data", ttl))
        .collect::<Result<Vec<_>>>()?;
    wait_until(Duration::from_secs(10), "every node and a master", || {
        Ok(cat_nodes(&coordinator)?.len() == n + 1 && master(&coordinator)?.is_some())
    })?;
    Ok((coordinator, data))
}

fn index_docs(s: &Server, index: &str, n: usize) -> Result<()> {
    let mut lines = Vec::new();
    for i in 0..n {
        lines.push(json!({"index": {"_id": format!("d{i}")}}));
        lines.push(json!({"n": i, "tag": format!("t{}", i % 3)}));
    }
    let (status, body) = s.bulk(&format!("/{index}/_bulk?refresh=true"), &lines)?;
    ensure!(status == 200 && body["errors"] == json!(false), "bulk: {body}");
    Ok(())
}

fn count(s: &Server, index: &str) -> Result<u64> {
    let (status, body) = s.post(&format!("/{index}/_count"), &json!({}))?;
    ensure!(status == 200, "count: {body}");
    body["count"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no count in {body}"))
}

#[test]
fn a_data_node_that_joins_gets_shards_of_new_indices_within_two_seconds() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let etcd = Etcd::start(&dir.path().join("etcd"))?;
    let coordinator = Server::start_etcd(&etcd, dir.path(), "coord", "coordinator,master", 5)?;
    let _d0 = Server::start_etcd(&etcd, dir.path(), "data-0", "data", 5)?;
    let _d1 = Server::start_etcd(&etcd, dir.path(), "data-1", "data", 5)?;
    wait_until(Duration::from_secs(10), "three nodes and a master", || {
        Ok(cat_nodes(&coordinator)?.len() == 3 && master(&coordinator)?.as_deref() == Some("coord"))
    })?;
    let (status, body) = coordinator.put("/before", &json!({"settings": {"number_of_shards": 2}}))?;
    ensure!(status == 200, "{body}");
    index_docs(&coordinator, "before", 20)?;

    let started = Instant::now();
    let _d2 = Server::start_etcd(&etcd, dir.path(), "data-2", "data", 5)?;
    wait_until(Duration::from_secs(2), "the coordinator sees data-2", || {
        Ok(cat_nodes(&coordinator)?.iter().any(|n| n["name"] == "data-2"))
    })?;
    // Three shards over three data nodes: one each, data-2 included.
    let (status, body) = coordinator.put("/after", &json!({"settings": {"number_of_shards": 3}}))?;
    ensure!(status == 200, "{body}");
    index_docs(&coordinator, "after", 30)?;
    let (_, shards) = coordinator.get("/_cat/shards?format=json")?;
    let on_new: Vec<&Value> = shards
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["index"] == "after" && s["node"] == "data-2")
        .collect();
    ensure!(on_new.len() == 1, "data-2 holds one shard of [after]: {shards}");
    ensure!(count(&coordinator, "after")? == 30);
    let (status, body) = coordinator.post(
        "/after/_search",
        &json!({"size": 0, "aggs": {"tags": {"terms": {"field": "tag.keyword"}}}}),
    )?;
    ensure!(status == 200, "{body}");
    let buckets: Vec<u64> = body["aggregations"]["tags"]["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["doc_count"].as_u64())
        .collect();
    ensure!(buckets == vec![10, 10, 10], "{body}");
    let elapsed = started.elapsed();
    eprintln!("data-2 started, got a shard and answered within {elapsed:?}");
    ensure!(
        elapsed < Duration::from_secs(2),
        "data-2 served its first query {elapsed:?} after it was started"
    );
    // The index made before it joined stays where it was, and answers.
    ensure!(count(&coordinator, "before")? == 20);
    Ok(())
}

#[test]
fn metadata_lives_in_etcd_and_a_killed_leader_is_replaced() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let etcd = Etcd::start(&dir.path().join("etcd"))?;
    let mut masters = Vec::new();
    for i in 0..3 {
        masters.push(Server::start_etcd(
            &etcd,
            dir.path(),
            &format!("master-{i}"),
            "coordinator,master",
            5,
        )?);
    }
    let data = Server::start_etcd(&etcd, dir.path(), "data-0", "data", 5)?;
    wait_until(Duration::from_secs(10), "four nodes and one master", || {
        let views: Vec<Option<String>> = masters.iter().map(master).collect::<Result<_>>()?;
        Ok(cat_nodes(&masters[0])?.len() == 4 && views[0].is_some() && views.iter().all(|v| *v == views[0]))
    })?;

    // Two coordinators create the same index at once: exactly one wins, and
    // both end up with the winner's index.
    let (a, b) = (&masters[1], &masters[2]);
    let body_a = json!({"mappings": {"properties": {"x": {"type": "keyword"}}}});
    let body_b = json!({"mappings": {"properties": {"x": {"type": "long"}}}});
    let (ra, rb) = std::thread::scope(|scope| {
        let ha = scope.spawn(|| a.put("/race", &body_a));
        let hb = scope.spawn(|| b.put("/race", &body_b));
        (ha.join(), hb.join())
    });
    let (ra, rb) = (
        ra.map_err(|_| anyhow::anyhow!("panicked"))??,
        rb.map_err(|_| anyhow::anyhow!("panicked"))??,
    );
    let statuses = [ra.0, rb.0];
    ensure!(
        statuses.contains(&200) && statuses.contains(&400),
        "one create wins: {ra:?} {rb:?}"
    );
    let loser = if ra.0 == 400 { &ra } else { &rb };
    assert_es_error(loser.0, &loser.1, 400, "resource_already_exists_exception");
    let winner_type = if ra.0 == 200 { "keyword" } else { "long" };
    wait_until(
        Duration::from_secs(2),
        "both coordinators have the winner's mapping",
        || {
            let mut same = true;
            for s in [a, b] {
                let (_, m) = s.get("/race/_mapping")?;
                same &= m["race"]["mappings"]["properties"]["x"]["type"] == winner_type;
            }
            Ok(same)
        },
    )?;

    // Two coordinators create different indices at once: each tells the
    // other, neither waits on the other, both indices exist everywhere.
    let (ra, rb) = std::thread::scope(|scope| {
        let ha = scope.spawn(|| a.put("/made-on-a", &json!({})));
        let hb = scope.spawn(|| b.put("/made-on-b", &json!({})));
        (ha.join(), hb.join())
    });
    for r in [ra, rb] {
        let (status, body) = r.map_err(|_| anyhow::anyhow!("panicked"))??;
        ensure!(status == 200, "a concurrent create: {body}");
    }
    for s in [a, b] {
        for name in ["/made-on-a", "/made-on-b"] {
            let (status, body) = s.get(name)?;
            ensure!(status == 200, "{name} on {}: {body}", s.node_id);
        }
    }

    // A delete on one coordinator reaches the others, and a new index of
    // the same name is a new index everywhere.
    index_docs(a, "gone", 5)?;
    ensure!(count(b, "gone")? == 5);
    let (status, _) = b.delete("/gone")?;
    ensure!(status == 200);
    wait_until(
        Duration::from_secs(2),
        "the delete reaches the other coordinator",
        || Ok(a.get("/gone/_count")?.0 == 404),
    )?;
    index_docs(b, "gone", 2)?;
    ensure!(count(a, "gone")? == 2);

    // An alias made on one coordinator is known on the other when the
    // request is answered: searches and writes go through it there.
    let actions =
        json!({"actions": [{"add": {"index": "gone", "alias": "current", "is_write_index": true}}]});
    let (status, body) = a.post("/_aliases", &actions)?;
    ensure!(status == 200, "adding an alias: {body}");
    let (status, body) = b.get("/_alias/current")?;
    ensure!(
        status == 200 && body == json!({"gone": {"aliases": {"current": {"is_write_index": true}}}}),
        "the other coordinator's view of the alias: {status} {body}"
    );
    ensure!(count(b, "current")? == 2);
    let (status, body) = b.put("/current/_doc/via-alias?refresh=true", &json!({"n": 99}))?;
    ensure!(
        status == 201 && body["_index"] == "gone",
        "a write through the alias: {body}"
    );
    ensure!(count(a, "gone")? == 3);
    // Two coordinators adding aliases to one index at once keep both.
    let add = |alias: &str| json!({"actions": [{"add": {"index": "gone", "alias": alias}}]});
    let (ra, rb) = std::thread::scope(|scope| {
        let ha = scope.spawn(|| a.post("/_aliases", &add("from-a")));
        let hb = scope.spawn(|| b.post("/_aliases", &add("from-b")));
        (ha.join(), hb.join())
    });
    for r in [ra, rb] {
        let (status, body) = r.map_err(|_| anyhow::anyhow!("panicked"))??;
        ensure!(status == 200, "a concurrent alias change: {body}");
    }
    wait_until(
        Duration::from_secs(2),
        "both coordinators list both aliases",
        || {
            let mut both = true;
            for s in [a, b] {
                let (_, body) = s.get("/gone/_alias")?;
                let names = &body["gone"]["aliases"];
                both &= names.get("from-a").is_some()
                    && names.get("from-b").is_some()
                    && names.get("current").is_some();
            }
            Ok(both)
        },
    )?;

    // Templates live in etcd: two coordinators' concurrent changes both
    // stay, and an index created on one takes a template made on the other.
    let shards = json!({"template": {"settings": {"number_of_shards": 2}}});
    let level = json!({"template": {"mappings": {"properties": {"level": {"type": "keyword"}}}}});
    let (ra, rb) = std::thread::scope(|scope| {
        let ha = scope.spawn(|| a.put("/_component_template/from-a", &shards));
        let hb = scope.spawn(|| b.put("/_component_template/from-b", &level));
        (ha.join(), hb.join())
    });
    for r in [ra, rb] {
        let (status, body) = r.map_err(|_| anyhow::anyhow!("panicked"))??;
        ensure!(status == 200, "a concurrent template change: {body}");
    }
    let events = json!({"index_patterns": ["events-*"], "composed_of": ["from-a", "from-b"]});
    let (status, body) = a.put("/_index_template/events", &events)?;
    ensure!(status == 200, "an index template made of both: {body}");
    let (status, body) = b.put("/events-1/_doc/1?refresh=true", &json!({"level": "info"}))?;
    ensure!(status == 201, "a write that creates an index: {body}");
    let (_, settings) = a.get("/events-1/_settings")?;
    let (_, mapping) = a.get("/events-1/_mapping")?;
    ensure!(
        settings["events-1"]["settings"]["index"]["number_of_shards"] == "2"
            && mapping["events-1"]["mappings"]["properties"]["level"]["type"] == "keyword",
        "the index has the template's settings and mapping: {settings} {mapping}"
    );

    // So do cluster settings: set on one coordinator, applied by the other.
    let guard = json!({"persistent": {"action.auto_create_index": "-nope*,+*"}});
    let (status, body) = a.put("/_cluster/settings", &guard)?;
    ensure!(status == 200, "setting a cluster setting: {body}");
    let (status, body) = b.put("/nope-1/_doc/1", &json!({"a": 1}))?;
    ensure!(
        status == 404,
        "auto-creation the setting forbids: {status} {body}"
    );
    let reset = json!({"persistent": {"action.auto_create_index": null}});
    ensure!(b.put("/_cluster/settings", &reset)?.0 == 200);
    ensure!(a.put("/nope-1/_doc/1", &json!({"a": 1}))?.0 == 201);
    let terms = json!({"size": 0, "aggs": {"l": {"terms": {"field": "level"}}}});
    let limit = |max: Value| json!({"persistent": {"search.max_buckets": max}});
    // Another coordinator reads it again within a second.
    ensure!(a.put("/_cluster/settings", &limit(json!(0)))?.0 == 200);
    wait_until(
        Duration::from_secs(5),
        "the limit on the other coordinator",
        || {
            let (status, body) = b.post("/events-1/_search", &terms)?;
            Ok(status == 400
                && body["error"]["type"] == "too_many_buckets_exception"
                && body["error"]["max_buckets"] == 0)
        },
    )?;
    ensure!(b.put("/_cluster/settings", &limit(Value::Null))?.0 == 200);
    wait_until(Duration::from_secs(5), "the default limit again", || {
        let (status, body) = a.post("/events-1/_search", &terms)?;
        Ok(status == 200 && body["aggregations"]["l"]["buckets"][0]["key"] == "info")
    })?;

    // SIGKILL the leader: its lease (the default 5 s) expires and another
    // master takes over.
    let leader = master(&masters[0])?.ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let at = masters
        .iter()
        .position(|m| m.node_id == leader)
        .ok_or_else(|| anyhow::anyhow!("leader {leader} is not a master"))?;
    masters.remove(at).kill()?;
    let killed = Instant::now();
    let survivor = &masters[0];
    wait_until(Duration::from_secs(10), "a new leader", || {
        Ok(master(survivor)?.is_some_and(|m| m != leader))
    })?;
    let new_leader = master(survivor)?;
    eprintln!(
        "{leader} killed; {new_leader:?} leads after {:?}",
        killed.elapsed()
    );
    let (status, body) = survivor.put("/after-failover", &json!({"settings": {"number_of_shards": 2}}))?;
    ensure!(status == 200, "creating an index after the failover: {body}");
    index_docs(survivor, "after-failover", 7)?;
    ensure!(count(&masters[1], "after-failover")? == 7);
    let (_, body) = survivor.get("/_alias")?;
    ensure!(
        body["gone"]["aliases"]["current"] == json!({"is_write_index": true}),
        "the alias outlives the leader: {body}"
    );
    let (status, body) = survivor.get("/_index_template/events")?;
    ensure!(
        status == 200
            && body["index_templates"][0]["index_template"]["composed_of"] == json!(["from-a", "from-b"]),
        "the template outlives the leader: {body}"
    );
    ensure!(
        !cat_nodes(survivor)?.iter().any(|n| n["name"] == leader),
        "the killed leader left the cluster"
    );
    drop(data);
    Ok(())
}

/// The documents of each shard of `index`, from `_cat/shards`.
fn shard_docs(s: &Server, index: &str) -> Result<Vec<(u64, String, u64)>> {
    let (_, shards) = s.get("/_cat/shards?format=json")?;
    Ok(shards
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["index"] == index)
        .filter_map(|r| {
            Some((
                r["shard"].as_str()?.parse().ok()?,
                r["node"].as_str()?.to_string(),
                r["docs"].as_str()?.parse().ok()?,
            ))
        })
        .collect())
}

/// Runs a one-number query over Flight SQL twice: without and with the
/// call header that allows partial results. Returns the error of the first
/// run and the number of the second.
fn flight_sql_count(flight: &str, sql: &str) -> Result<(String, i64)> {
    use arrow_flight::sql::client::FlightSqlServiceClient;
    use datafusion::arrow::array::Int64Array;
    use futures::TryStreamExt;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{flight}"))?
            .connect()
            .await?;
        let mut client = FlightSqlServiceClient::new(channel);
        let run = |client: &mut FlightSqlServiceClient<tonic::transport::Channel>| {
            let mut client = client.clone();
            let sql = sql.to_string();
            async move {
                let info = client.execute(sql, None).await?;
                let ticket = info.endpoint[0]
                    .ticket
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("no ticket"))?;
                let batches: Vec<datafusion::arrow::record_batch::RecordBatch> =
                    client.do_get(ticket).await?.try_collect().await?;
                let col = batches
                    .first()
                    .and_then(|b| b.column(0).as_any().downcast_ref::<Int64Array>().cloned())
                    .ok_or_else(|| anyhow::anyhow!("no Int64 answer"))?;
                anyhow::Ok(col.value(0))
            }
        };
        let refused = match run(&mut client).await {
            Ok(n) => bail!("Flight SQL answered {n} over lost shards"),
            Err(err) => format!("{err:#}"),
        };
        client.set_header("x-quidditch-allow-partial-results", "true");
        Ok((refused, run(&mut client).await?))
    })
}

#[test]
fn losing_data_nodes_without_replicas_gives_exact_partial_results() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let etcd = Etcd::start(&dir.path().join("etcd"))?;
    let (coordinator, data) = start_cluster(&etcd, dir.path(), 5, 2)?;
    let mut data: Vec<Option<Server>> = data.into_iter().map(Some).collect();
    let (status, body) = coordinator.put("/logs", &json!({"settings": {"number_of_shards": 10}}))?;
    ensure!(status == 200, "{body}");
    index_docs(&coordinator, "logs", 1000)?;
    let shards = shard_docs(&coordinator, "logs")?;
    ensure!(
        shards.len() == 10 && shards.iter().map(|s| s.2).sum::<u64>() == 1000,
        "{shards:?}"
    );

    let mut killed: Vec<String> = Vec::new();
    for victim in 0..3 {
        let node = data[victim].take().ok_or_else(|| anyhow::anyhow!("no node"))?;
        killed.push(node.node_id.clone());
        node.kill()?;
        let lost: Vec<&(u64, String, u64)> = shards.iter().filter(|s| killed.contains(&s.1)).collect();
        let remaining: u64 = shards
            .iter()
            .filter(|s| !killed.contains(&s.1))
            .map(|s| s.2)
            .sum();
        // Once the node's lease has expired it is out of the cluster.
        wait_until(Duration::from_secs(10), "the killed node leaves", || {
            Ok(!cat_nodes(&coordinator)?
                .iter()
                .any(|n| n["name"] == killed[victim].as_str()))
        })?;
        let started = Instant::now();
        let (status, body) = coordinator.post(
            "/logs/_search",
            &json!({"track_total_hits": true, "size": 0, "aggs": {"n": {"sum": {"field": "n"}}}}),
        )?;
        ensure!(status == 200, "{body}");
        let report = &body["_shards"];
        ensure!(
            report["total"] == 10
                && report["failed"] == json!(lost.len())
                && report["successful"] == json!(10 - lost.len()),
            "after losing {killed:?}: {report}"
        );
        let mut failed: Vec<(u64, String)> = report["failures"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                ensure!(f["index"] == "logs" && f["reason"]["reason"].is_string(), "{f}");
                Ok((
                    f["shard"].as_u64().unwrap_or(u64::MAX),
                    f["node"].as_str().unwrap_or_default().to_string(),
                ))
            })
            .collect::<Result<_>>()?;
        failed.sort();
        let want: Vec<(u64, String)> = lost.iter().map(|s| (s.0, s.1.clone())).collect();
        ensure!(failed == want, "failures {failed:?}, lost {want:?}");
        ensure!(
            body["hits"]["total"]["value"] == json!(remaining),
            "{remaining} documents remain: {body}"
        );
        let (_, counted) = coordinator.post("/logs/_count", &json!({}))?;
        ensure!(counted["count"] == json!(remaining), "{counted}");
        let (status, body) =
            coordinator.post("/logs/_search?allow_partial_search_results=false", &json!({}))?;
        assert_es_error(status, &body, 503, "search_phase_execution_exception");
        let (status, body) = coordinator.post("/_sql", &json!({"query": "SELECT count(*) FROM logs"}))?;
        ensure!(
            status >= 500 && killed.iter().any(|k| body.to_string().contains(k.as_str())),
            "SQL over lost shards: {status} {body}"
        );
        // Unless the request allows partial results.
        let (status, body) = coordinator.post(
            "/_sql",
            &json!({"query": "SELECT count(*) FROM logs", "allow_partial_search_results": true}),
        )?;
        ensure!(
            status == 200 && body["rows"] == json!([[remaining]]),
            "{status} {body}"
        );
        let (refused, partial) = flight_sql_count(&coordinator.flight, "SELECT count(*) FROM logs")?;
        ensure!(
            refused.contains("does not answer") || refused.contains("not a data node"),
            "{refused}"
        );
        ensure!(
            partial == remaining as i64,
            "{partial} over Flight SQL, {remaining} remain"
        );
        let (_, health) = coordinator.get("/_cluster/health")?;
        ensure!(
            health["status"] == "red" && health["unassigned_shards"] == json!(lost.len()),
            "{health}"
        );
        // Nothing hangs: every answer above came back well within the
        // client's timeout.
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
    }
    // Each round ran a search and a count that left out 2, 4, then 6
    // shards, and a search that refused to.
    let text = coordinator.get_text("/metrics")?;
    for (name, want) in [
        ("quidditch_searches_total", 9),
        ("quidditch_search_errors_total", 3),
        ("quidditch_partial_searches_total", 6),
        ("quidditch_failed_shards_total", 24),
        ("quidditch_node_joins_total", 5),
        ("quidditch_node_leaves_total", 3),
        ("quidditch_leader", 1),
    ] {
        let line = format!("{name} {want}");
        ensure!(text.lines().any(|l| l == line), "no [{line}] in:\n{text}");
    }
    Ok(())
}

#[test]
fn bad_cluster_flags_are_refused_and_a_restarted_node_serves_its_shards() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let etcd = Etcd::start(&dir.path().join("etcd"))?;
    let coordinator = Server::start_etcd(&etcd, dir.path(), "coord", "coordinator,master", 5)?;
    let _d0 = Server::start_etcd(&etcd, dir.path(), "data-0", "data", 5)?;
    let d1 = Server::start_etcd(&etcd, dir.path(), "data-1", "data", 5)?;
    wait_until(Duration::from_secs(10), "three nodes", || {
        Ok(cat_nodes(&coordinator)?.len() == 3)
    })?;
    let (status, body) = coordinator.put(
        "/logs",
        &json!({"settings": {"number_of_shards": 4, "number_of_replicas": 0}}),
    )?;
    ensure!(status == 200, "create: {body}");
    index_docs(&coordinator, "logs", 200)?;
    assert_eq!(count(&coordinator, "logs")?, 200);

    // A second node with a node id in use.
    let stderr = Server::refused(
        &dir.path().join("imposter"),
        &etcd_flags(&etcd.url, "test", "data-0", "data", 5),
    )?;
    assert!(
        stderr.contains("node id [data-0] is already used by another node"),
        "{stderr}"
    );
    // No etcd at the address.
    let stderr = Server::refused(
        &dir.path().join("lost"),
        &etcd_flags("http://127.0.0.1:1", "test", "data-9", "data", 5),
    )?;
    assert!(stderr.contains("etcd at http://127.0.0.1:1"), "{stderr}");
    // A data node of a cluster nobody formed (a misspelt name).
    let stderr = Server::refused(
        &dir.path().join("misspelt"),
        &etcd_flags(&etcd.url, "tset", "data-8", "data", 5),
    )?;
    assert!(stderr.contains("etcd has no cluster [tset]"), "{stderr}");

    // SIGKILL, and a restart on the same data directory before the lease
    // ran out: the node takes over its registration and serves its shards.
    let data_dir = d1.data_dir.clone();
    d1.kill()?;
    let flags = etcd_flags(&etcd.url, "test", "data-1", "data", 5);
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let d1 = Server::start_with(&data_dir, &flag_refs)?;
    wait_until(Duration::from_secs(10), "all documents", || {
        Ok(count(&coordinator, "logs")? == 200)
    })?;
    index_docs(&coordinator, "logs", 300)?;
    assert_eq!(count(&coordinator, "logs")?, 300);

    // Its data directory belongs to cluster "test": another cluster name,
    // or an etcd without the cluster, is refused and its data stays.
    d1.kill()?;
    let stderr = Server::refused(&data_dir, &etcd_flags(&etcd.url, "other", "data-1", "data", 5))?;
    assert!(
        stderr.contains("belongs to the cluster with uuid") && stderr.contains("etcd has no cluster [other]"),
        "{stderr}"
    );
    let d1 = Server::start_with(&data_dir, &flag_refs)?;
    wait_until(Duration::from_secs(10), "all documents after the refusal", || {
        Ok(count(&coordinator, "logs")? == 300)
    })?;

    // A copy that does not open keeps a node of a cluster down (so that the
    // leader can promote replicas, where there are any, rather than leave
    // primaries with a node that looks up), and its files stay as they were.
    d1.kill()?;
    let shard_meta = shard_meta_files(&data_dir)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("data-1 holds no shard"))?;
    let good = std::fs::read(&shard_meta)?;
    std::fs::write(&shard_meta, b"{ not tantivy metadata")?;
    let stderr = Server::refused(&data_dir, &flags)?;
    assert!(stderr.contains("Meta file cannot be deserialized"), "{stderr}");
    assert_eq!(std::fs::read(&shard_meta)?, b"{ not tantivy metadata");
    std::fs::write(&shard_meta, good)?;
    // Started as an embedded node, without its cluster, it refuses too.
    let stderr = Server::refused(&data_dir, &[])?;
    assert!(stderr.contains("but this node is not in a cluster"), "{stderr}");
    let d1 = Server::start_with(&data_dir, &flag_refs)?;
    wait_until(Duration::from_secs(10), "all documents after the repair", || {
        Ok(count(&coordinator, "logs")? == 300)
    })?;
    drop(d1);
    Ok(())
}

/// The tantivy metadata files of the shards under a node's data directory.
fn shard_meta_files(data_dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for index in std::fs::read_dir(data_dir.join("indices"))? {
        let shards = index?.path().join("shards");
        for shard in std::fs::read_dir(&shards).into_iter().flatten() {
            let meta = shard?.path().join("meta.json");
            if meta.exists() {
                out.push(meta);
            }
        }
    }
    Ok(out)
}

/// `_cluster/health` of `s`.
fn health(s: &Server) -> Result<Value> {
    let (status, body) = s.get("/_cluster/health")?;
    ensure!(status == 200, "health: {body}");
    Ok(body)
}

/// Writes `n` documents with ids `<prefix>-<i>`; returns the ids the
/// cluster acknowledged (a write whose primary is gone fails).
fn write_acked(s: &Server, index: &str, prefix: &str, n: usize) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for i in 0..n {
        lines.push(json!({"index": {"_id": format!("{prefix}-{i}")}}));
        lines.push(json!({"n": i, "batch": prefix}));
    }
    let (status, body) = s.bulk(&format!("/{index}/_bulk?refresh=true"), &lines)?;
    ensure!(status == 200, "bulk: {body}");
    Ok(body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| item["index"]["status"] == 201)
        .filter_map(|item| item["index"]["_id"].as_str().map(str::to_string))
        .collect())
}

/// The `_cat` rows of shard `n`'s two copies: its primary, then its replica.
fn primary_and_replica(rows: &[Value], n: u32) -> Result<(&Value, &Value)> {
    let copies: Vec<&Value> = rows
        .iter()
        .filter(|r| r["shard"] == json!(n.to_string()))
        .collect();
    ensure!(
        copies.len() == 2 && copies[0]["prirep"] == "p" && copies[1]["prirep"] == "r",
        "shard {n}: {copies:?}"
    );
    Ok((copies[0], copies[1]))
}

#[test]
fn losing_a_data_node_with_one_replica_keeps_every_acknowledged_write() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let etcd = Etcd::start(&dir.path().join("etcd"))?;
    let (coordinator, data) = start_cluster(&etcd, dir.path(), 3, 2)?;
    let mut data: Vec<Option<Server>> = data.into_iter().map(Some).collect();
    let (status, body) = coordinator.put(
        "/logs",
        &json!({"settings": {"number_of_shards": 6, "number_of_replicas": 1}}),
    )?;
    ensure!(status == 200, "{body}");
    let h = health(&coordinator)?;
    ensure!(
        h["status"] == "green" && h["active_shards"] == 12 && h["active_primary_shards"] == 6,
        "{h}"
    );
    let (_, shards) = coordinator.get("/_cat/shards?format=json")?;
    let rows = shards.as_array().cloned().unwrap_or_default();
    ensure!(rows.len() == 12, "{shards}");
    for n in 0..6 {
        let (primary, replica) = primary_and_replica(&rows, n)?;
        ensure!(
            primary["state"] == "STARTED"
                && replica["state"] == "STARTED"
                && primary["node"] != replica["node"],
            "shard {n}: {primary} {replica}"
        );
    }

    // A force merge reaches every copy, replicas too, and `_cat/segments`
    // lists each copy's segments from the node that holds it.
    let mut acked: Vec<String> = Vec::new();
    // Two refreshed bulks: two segments per copy before the merge.
    acked.extend(write_acked(&coordinator, "logs", "seg0", 60)?);
    acked.extend(write_acked(&coordinator, "logs", "seg1", 60)?);
    let (_, segments) = coordinator.get("/_cat/segments/logs?format=json")?;
    let rows = segments.as_array().cloned().unwrap_or_default();
    ensure!(
        rows.len() > 12,
        "more than one segment in some copies: {segments}"
    );
    let (status, body) = coordinator.post("/logs/_forcemerge?max_num_segments=1", &json!({}))?;
    ensure!(status == 200, "{body}");
    let (_, segments) = coordinator.get("/_cat/segments/logs?format=json")?;
    let rows = segments.as_array().cloned().unwrap_or_default();
    let docs = |r: &Value| r["docs.count"].as_str().and_then(|d| d.parse::<u64>().ok());
    let mut primaries = 0;
    for n in 0..6 {
        let (primary, replica) = primary_and_replica(&rows, n)?;
        ensure!(
            docs(primary).is_some() && docs(primary) == docs(replica),
            "shard {n}: one merged segment per copy, alike: {primary} {replica}"
        );
        primaries += docs(primary).unwrap_or(0);
    }
    ensure!(primaries == 120, "{segments}");
    // `_stats` sums the primaries, and every copy.
    let (status, stats) = coordinator.get("/logs/_stats/docs")?;
    ensure!(
        status == 200
            && stats["_all"]["primaries"]["docs"]["count"] == 120
            && stats["_all"]["total"]["docs"]["count"] == 240
            && stats["_shards"]["successful"] == 12,
        "{stats}"
    );
    // So does the indexing: each write once on its primary, and again on
    // its replica, which the primary sends it to.
    let (status, stats) = coordinator.get("/logs/_stats/indexing")?;
    ensure!(
        status == 200
            && stats["_all"]["primaries"]["indexing"]["index_total"] == 120
            && stats["_all"]["total"]["indexing"]["index_total"] == 240,
        "{stats}"
    );

    // A client writes and searches in a loop; data-1 is killed part-way.
    let mut killed_at: Option<Instant> = None;
    for round in 0.. {
        acked.extend(write_acked(&coordinator, "logs", &format!("r{round}"), 20)?);
        let (status, body) = coordinator.post("/logs/_count", &json!({}))?;
        ensure!(status == 200 || status == 503, "count during the loss: {body}");
        // Once the lease ended, counts are complete (the lost node's shards
        // are read from their other copy) and hold every acknowledged write.
        if killed_at.is_some_and(|at| at.elapsed() > Duration::from_secs(3)) {
            ensure!(
                status == 200
                    && body["_shards"]["failed"] == 0
                    && body["count"].as_u64().is_some_and(|c| c >= acked.len() as u64),
                "count after the lease ended: {body}, {} acknowledged",
                acked.len()
            );
        }
        if round == 3 {
            data[1].take().ok_or_else(|| anyhow::anyhow!("no node"))?.kill()?;
            killed_at = Some(Instant::now());
        }
        // Until well after the lease (2 s) ended.
        if killed_at.is_some_and(|at| at.elapsed() > Duration::from_secs(5)) {
            break;
        }
    }
    ensure!(acked.len() >= 80, "only {} writes acknowledged", acked.len());

    // The replicas of the lost primaries were promoted: every query is
    // complete and every acknowledged write is there.
    wait_until(Duration::from_secs(10), "every primary active", || {
        Ok(health(&coordinator)?["active_primary_shards"] == 6)
    })?;
    acked.extend(write_acked(&coordinator, "logs", "after", 20)?);
    for _ in 0..5 {
        let (status, body) = coordinator.post(
            "/logs/_search",
            &json!({"size": 0, "track_total_hits": true, "query": {"ids": {"values": acked}}}),
        )?;
        ensure!(status == 200, "{body}");
        ensure!(
            body["_shards"]["successful"] == 6 && body["_shards"]["failed"] == 0,
            "{}",
            body["_shards"]
        );
        assert_eq!(
            body["hits"]["total"]["value"],
            json!(acked.len()),
            "acknowledged writes"
        );
    }
    let sql = coordinator.sql_rows(&format!(
        "SELECT count(*) FROM logs WHERE _id IN ({})",
        acked
            .iter()
            .map(|id| format!("'{id}'"))
            .collect::<Vec<_>>()
            .join(",")
    ))?;
    assert_eq!(sql, vec![json!([acked.len()])]);

    // The lost copies are rebuilt on the two nodes left: green again.
    wait_until(Duration::from_secs(30), "green after recovery", || {
        Ok(health(&coordinator)?["status"] == "green")
    })?;
    let h = health(&coordinator)?;
    ensure!(h["active_shards"] == 12 && h["unassigned_shards"] == 0, "{h}");
    acked.extend(write_acked(&coordinator, "logs", "recovered", 20)?);

    // The rebuilt copies are complete: with a second node lost, every
    // shard is read from the last one.
    data[0].take().ok_or_else(|| anyhow::anyhow!("no node"))?.kill()?;
    wait_until(Duration::from_secs(15), "every primary on the last node", || {
        Ok(health(&coordinator)?["active_primary_shards"] == 6)
    })?;
    let (status, body) = coordinator.post(
        "/logs/_search",
        &json!({"size": 0, "track_total_hits": true, "query": {"ids": {"values": acked}}}),
    )?;
    ensure!(status == 200 && body["_shards"]["failed"] == 0, "{body}");
    assert_eq!(
        body["hits"]["total"]["value"],
        json!(acked.len()),
        "acknowledged writes"
    );
    Ok(())
}

#[test]
fn a_frozen_data_node_is_left_out_once_the_timeout_passed_and_serves_again_when_thawed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let etcd = Etcd::start(&dir.path().join("etcd"))?;
    let (coordinator, data) = start_cluster(&etcd, dir.path(), 3, 5)?;
    let (status, body) = coordinator.put("/logs", &json!({"settings": {"number_of_shards": 6}}))?;
    ensure!(status == 200, "{body}");
    index_docs(&coordinator, "logs", 600)?;
    let shards = shard_docs(&coordinator, "logs")?;
    let frozen: Vec<&(u64, String, u64)> = shards.iter().filter(|s| s.1 == "data-1").collect();
    ensure!(!frozen.is_empty(), "{shards:?}");
    let reachable: u64 = shards.iter().filter(|s| s.1 != "data-1").map(|s| s.2).sum();

    data[1].signal("STOP")?;
    let started = Instant::now();
    let (status, body) = coordinator.post(
        "/logs/_search",
        &json!({"timeout": "1s", "size": 0, "track_total_hits": true}),
    )?;
    let took = started.elapsed();
    ensure!(status == 200, "{body}");
    // Within the timeout and one second more, with what the other nodes had.
    ensure!(took < Duration::from_secs(2), "answered after {took:?}");
    ensure!(body["timed_out"] == true, "{body}");
    ensure!(
        body["_shards"]["failed"] == json!(frozen.len())
            && body["hits"]["total"]["value"] == json!(reachable),
        "{body}"
    );
    for failure in body["_shards"]["failures"].as_array().into_iter().flatten() {
        ensure!(failure["node"] == "data-1", "{failure}");
    }

    data[1].signal("CONT")?;
    wait_until(Duration::from_secs(10), "the thawed node serves", || {
        let (status, body) =
            coordinator.post("/logs/_search", &json!({"size": 0, "track_total_hits": true}))?;
        Ok(status == 200 && body["_shards"]["failed"] == 0 && body["hits"]["total"]["value"] == 600)
    })?;
    Ok(())
}

#[test]
fn with_etcd_down_searches_work_metadata_writes_fail_fast_and_the_cluster_recovers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut etcd = Etcd::start(&dir.path().join("etcd"))?;
    let (coordinator, _data) = start_cluster(&etcd, dir.path(), 2, 5)?;
    let (status, body) = coordinator.put("/logs", &json!({"settings": {"number_of_shards": 4}}))?;
    ensure!(status == 200, "{body}");
    index_docs(&coordinator, "logs", 100)?;

    etcd.kill()?;
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(5) {
        let (status, body) =
            coordinator.post("/logs/_search", &json!({"size": 0, "track_total_hits": true}))?;
        ensure!(
            status == 200 && body["_shards"]["failed"] == 0 && body["hits"]["total"]["value"] == 100,
            "search with etcd down: {body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Writes that fit the known mapping need no metadata.
    let (status, body) = coordinator.bulk(
        "/logs/_bulk?refresh=true",
        &[json!({"index": {"_id": "during"}}), json!({"n": 1, "tag": "t1"})],
    )?;
    ensure!(status == 200 && body["errors"] == false, "{body}");
    // A new index needs etcd: a 503 at once, not a hang.
    let started = Instant::now();
    let (status, body) = coordinator.put("/other", &json!({}))?;
    ensure!(status == 503, "create with etcd down: {status} {body}");
    ensure!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    // So does a new field.
    let (status, body) = coordinator.bulk(
        "/logs/_bulk",
        &[json!({"index": {"_id": "new-field"}}), json!({"fresh": "field"})],
    )?;
    ensure!(
        status == 503 || body["items"][0]["index"]["status"] == 503,
        "a mapping change with etcd down: {status} {body}"
    );

    etcd.restart()?;
    wait_until(Duration::from_secs(20), "creating an index works again", || {
        let (status, _) = coordinator.put("/other", &json!({}))?;
        Ok(status == 200)
    })?;
    wait_until(Duration::from_secs(10), "three nodes and a master again", || {
        Ok(cat_nodes(&coordinator)?.len() == 3 && master(&coordinator)?.is_some())
    })?;
    assert_eq!(count(&coordinator, "logs")?, 101);
    index_docs(&coordinator, "other", 10)?;
    assert_eq!(count(&coordinator, "other")?, 10);
    Ok(())
}

#[test]
fn a_partitioned_data_node_is_left_out_like_a_lost_one_and_serves_again_after_healing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let etcd = Etcd::start(&dir.path().join("etcd"))?;
    let coordinator = Server::start_etcd(&etcd, dir.path(), "coord", "coordinator,master", 5)?;
    let _d0 = Server::start_etcd(&etcd, dir.path(), "data-0", "data", 5)?;
    let _d2 = Server::start_etcd(&etcd, dir.path(), "data-2", "data", 5)?;
    // data-1 is reached through a proxy: it advertises 127.0.0.2, where the
    // proxy listens on its port. Its own link to etcd stays up, so its
    // lease does not end: only the others cannot reach it.
    let mut flags = etcd_flags(&etcd.url, "test", "data-1", "data", 5);
    flags.extend(["--advertise-host".to_string(), "127.0.0.2".to_string()]);
    let d1 = Server::start_with(
        &dir.path().join("data-1"),
        &flags.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    let port = d1
        .flight
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .unwrap_or_default();
    let proxy = Proxy::start(&format!("127.0.0.2:{port}"), &d1.flight)?;
    wait_until(Duration::from_secs(10), "four nodes and a master", || {
        Ok(cat_nodes(&coordinator)?.len() == 4 && master(&coordinator)?.is_some())
    })?;
    let (status, body) = coordinator.put("/plain", &json!({"settings": {"number_of_shards": 6}}))?;
    ensure!(status == 200, "{body}");
    let (status, body) = coordinator.put(
        "/copied",
        &json!({"settings": {"number_of_shards": 6, "number_of_replicas": 1}}),
    )?;
    ensure!(status == 200, "{body}");
    index_docs(&coordinator, "plain", 600)?;
    let mut acked = write_acked(&coordinator, "copied", "before", 100)?;
    ensure!(acked.len() == 100, "{acked:?}");
    let shards = shard_docs(&coordinator, "plain")?;
    let cut_off: Vec<u64> = shards.iter().filter(|s| s.1 == "data-1").map(|s| s.0).collect();
    let reachable: u64 = shards.iter().filter(|s| s.1 != "data-1").map(|s| s.2).sum();
    ensure!(!cut_off.is_empty(), "{shards:?}");

    proxy.cut();
    // Without replicas: partial results naming the node, or 503.
    wait_until(
        Duration::from_secs(15),
        "the partitioned node's shards are reported",
        || {
            let (status, body) =
                coordinator.post("/plain/_search", &json!({"size": 0, "track_total_hits": true}))?;
            Ok(status == 200 && body["_shards"]["failed"] == json!(cut_off.len()))
        },
    )?;
    let (status, body) = coordinator.post("/plain/_search", &json!({"size": 0, "track_total_hits": true}))?;
    ensure!(
        status == 200 && body["hits"]["total"]["value"] == json!(reachable),
        "{body}"
    );
    let mut failed: Vec<u64> = body["_shards"]["failures"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| f["shard"].as_u64().unwrap_or(u64::MAX))
        .collect();
    failed.sort();
    ensure!(failed == cut_off, "{failed:?} vs {cut_off:?}");
    let (status, body) = coordinator.post(
        "/plain/_search?allow_partial_search_results=false",
        &json!({"size": 0}),
    )?;
    assert_es_error(status, &body, 503, "search_phase_execution_exception");

    // With a replica: complete answers, and once the leader gave up on the
    // node its primaries moved, so writes are acknowledged again and none
    // is lost.
    wait_until(Duration::from_secs(20), "writes acknowledged again", || {
        let ids = write_acked(&coordinator, "copied", &format!("cut{}", acked.len()), 20)?;
        let all = ids.len() == 20;
        acked.extend(ids);
        Ok(all)
    })?;
    let (status, body) = coordinator.post(
        "/copied/_search",
        &json!({"size": 0, "track_total_hits": true, "query": {"ids": {"values": acked}}}),
    )?;
    ensure!(status == 200 && body["_shards"]["failed"] == 0, "{body}");
    assert_eq!(body["hits"]["total"]["value"], json!(acked.len()));

    proxy.heal();
    wait_until(Duration::from_secs(20), "the healed node serves again", || {
        let (status, body) =
            coordinator.post("/plain/_search", &json!({"size": 0, "track_total_hits": true}))?;
        Ok(status == 200 && body["_shards"]["failed"] == 0 && body["hits"]["total"]["value"] == 600)
    })?;
    wait_until(Duration::from_secs(30), "green after healing", || {
        Ok(health(&coordinator)?["status"] == "green")
    })?;
    let (status, body) = coordinator.post(
        "/copied/_search",
        &json!({"size": 0, "track_total_hits": true, "query": {"ids": {"values": acked}}}),
    )?;
    ensure!(status == 200 && body["_shards"]["failed"] == 0, "{body}");
    assert_eq!(body["hits"]["total"]["value"], json!(acked.len()));
    Ok(())
}
