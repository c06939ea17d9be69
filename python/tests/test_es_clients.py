"""The official Elasticsearch and OpenSearch Python clients, unmodified."""

import elasticsearch
import elasticsearch.helpers
import opensearchpy
import opensearchpy.helpers
import pytest

LEVELS = ["info", "warn", "error"]
N = 10_000


def clients(url):
    return {
        "elasticsearch": (elasticsearch.Elasticsearch(url, request_timeout=120), elasticsearch.helpers),
        "opensearch": (opensearchpy.OpenSearch([url], timeout=120), opensearchpy.helpers),
    }


def doc(i):
    return {"level": LEVELS[i % 3], "code": i % 50, "bytes": i * 3, "msg": f"event {i} on node{i % 4}"}


@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
def test_client_round_trip(node, flavor):
    client, helpers = clients(node.url)[flavor]
    index = f"events-{flavor}"
    assert client.ping()
    assert not client.indices.exists(index=index)
    mappings = {
        "properties": {
            "level": {"type": "keyword"},
            "code": {"type": "integer"},
            "bytes": {"type": "long"},
            "msg": {"type": "text"},
        }
    }
    if flavor == "elasticsearch":
        client.indices.create(index=index, mappings=mappings)
    else:
        client.indices.create(index=index, body={"mappings": mappings})
    assert client.indices.exists(index=index)
    assert client.indices.get_mapping(index=index)[index]["mappings"]["properties"]["code"] == {"type": "integer"}

    ok, errors = helpers.bulk(client, ({"_index": index, "_id": str(i), **doc(i)} for i in range(N)), chunk_size=2000)
    assert (ok, errors) == (N, [])
    client.indices.refresh(index=index)

    assert client.count(index=index)["count"] == N
    body = {
        "query": {"bool": {"filter": [{"term": {"level": "error"}}, {"range": {"code": {"lt": 10}}}]}},
        "aggs": {"codes": {"terms": {"field": "code", "size": 100}}, "total": {"sum": {"field": "bytes"}}},
        "size": 3,
        "sort": [{"bytes": "desc"}],
    }
    if flavor == "elasticsearch":
        resp = client.search(index=index, **body)
    else:
        resp = client.search(index=index, body=body)
    matching = [i for i in range(N) if doc(i)["level"] == "error" and doc(i)["code"] < 10]
    assert resp["hits"]["total"] == {"value": len(matching), "relation": "eq"}
    assert [h["_id"] for h in resp["hits"]["hits"]] == [str(i) for i in sorted(matching, reverse=True)[:3]]
    buckets = {b["key"]: b["doc_count"] for b in resp["aggregations"]["codes"]["buckets"]}
    assert buckets == {c: sum(1 for i in matching if doc(i)["code"] == c) for c in {doc(i)["code"] for i in matching}}
    assert resp["aggregations"]["total"]["value"] == sum(doc(i)["bytes"] for i in matching)

    marked = {"query": {"match": {"msg": "node3"}}, "size": 2, "sort": [{"bytes": "asc"}], "highlight": {"fields": {"msg": {}}}}
    if flavor == "elasticsearch":
        resp = client.search(index=index, **marked)
    else:
        resp = client.search(index=index, body=marked)
    assert [h["highlight"] for h in resp["hits"]["hits"]] == [{"msg": [f"event {i} on <em>node3</em>"]} for i in (3, 7)]

    got = client.get(index=index, id="42")
    assert got["found"] and got["_source"] == doc(42)

    seen = [h["_id"] for h in helpers.scan(client, index=index, query={"query": {"match_all": {}}}, size=700)]
    assert len(seen) == N
    assert set(seen) == {str(i) for i in range(N)}

    client.delete(index=index, id="42")
    with pytest.raises(Exception) as missing:
        client.get(index=index, id="42")
    assert "404" in str(missing.value) or "NotFound" in type(missing.value).__name__

    dbq = {"query": {"term": {"level": "warn"}}}
    if flavor == "elasticsearch":
        deleted = client.delete_by_query(index=index, refresh=True, **dbq)
    else:
        deleted = client.delete_by_query(index=index, refresh=True, body=dbq)
    warns = sum(1 for i in range(N) if doc(i)["level"] == "warn" and i != 42)
    assert deleted["deleted"] == warns
    assert client.count(index=index)["count"] == N - 1 - warns
    client.indices.delete(index=index)
    assert not client.indices.exists(index=index)


def test_scroll_pages_and_clears(node):
    client = elasticsearch.Elasticsearch(node.url, request_timeout=60)
    client.indices.create(index="pages", mappings={"properties": {"n": {"type": "long"}}})
    elasticsearch.helpers.bulk(client, ({"_index": "pages", "_id": str(i), "n": i % 7} for i in range(2500)))
    client.indices.refresh(index="pages")
    resp = client.search(index="pages", scroll="1m", size=1000, sort=[{"n": "asc"}], query={"range": {"n": {"gte": 2}}})
    expected = sum(1 for i in range(2500) if i % 7 >= 2)
    ids, values = [], []
    while resp["hits"]["hits"]:
        assert resp["hits"]["total"]["value"] == expected
        ids += [h["_id"] for h in resp["hits"]["hits"]]
        values += [h["sort"][0] for h in resp["hits"]["hits"]]
        resp = client.scroll(scroll_id=resp["_scroll_id"], scroll="1m")
    assert len(ids) == expected == len(set(ids))
    assert values == sorted(values)
    assert client.clear_scroll(scroll_id=resp["_scroll_id"])["num_freed"] == 1
    with pytest.raises(elasticsearch.NotFoundError):
        client.scroll(scroll_id=resp["_scroll_id"], scroll="1m")


def test_versioned_media_types_are_accepted_and_answered(node):
    import requests

    media = "application/vnd.elasticsearch+json; compatible-with=8"
    r = requests.put(f"{node.url}/typed", data="{}", headers={"Content-Type": media, "Accept": media}, timeout=30)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/vnd.elasticsearch+json;compatible-with=8"
    assert r.headers["X-Elastic-Product"] == "Elasticsearch"
    r = requests.head(f"{node.url}/typed", timeout=30)
    assert r.status_code == 200
    assert requests.head(f"{node.url}/absent", timeout=30).status_code == 404


def test_cluster_health_and_cat(node):
    import requests

    client = elasticsearch.Elasticsearch(node.url)
    health = client.cluster.health()
    assert (health["status"], health["number_of_nodes"], health["number_of_data_nodes"]) == ("green", 1, 1)
    assert (health["active_shards"], health["unassigned_shards"]) == (0, 0)
    client.indices.create(index="three", settings={"number_of_shards": 3})
    client.indices.create(index="copies", settings={"number_of_shards": 2, "number_of_replicas": 1})
    client.index(index="three", id="a", document={"x": 1}, refresh=True)
    health = client.cluster.health(wait_for_status="yellow", timeout="5s")
    assert (health["status"], health["active_shards"], health["unassigned_shards"]) == ("yellow", 5, 2)
    assert client.cluster.health(index="three")["status"] == "green"
    r = requests.get(f"{node.url}/_cluster/health?wait_for_status=green&timeout=300ms", timeout=30)
    assert r.status_code == 408 and r.json()["timed_out"] is True
    nodes = client.cat.nodes(format="json")
    assert len(nodes) == 1 and nodes[0]["master"] == "*" and nodes[0]["http"] == node.addr
    assert nodes[0]["flight"] == node.flight.removeprefix("grpc://")
    shards = client.cat.shards(format="json")
    assert [(s["index"], s["shard"], s["prirep"], s["state"]) for s in shards] == [
        ("copies", "0", "p", "STARTED"),
        ("copies", "0", "r", "UNASSIGNED"),
        ("copies", "1", "p", "STARTED"),
        ("copies", "1", "r", "UNASSIGNED"),
        ("three", "0", "p", "STARTED"),
        ("three", "1", "p", "STARTED"),
        ("three", "2", "p", "STARTED"),
    ]
    assert sum(int(s["docs"]) for s in shards if s["index"] == "three") == 1


@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
def test_flush_force_merge_and_segments(node, flavor):
    client, helpers = clients(node.url)[flavor]
    index = f"merge-{flavor}"
    client.indices.create(index=index, body={"settings": {"number_of_shards": 1, "refresh_interval": "-1"}})
    for batch in range(3):
        actions = ({"_index": index, "_id": f"{batch}-{i}", "_source": doc(i)} for i in range(100))
        helpers.bulk(client, actions)
        client.indices.flush(index=index)
    assert client.count(index=index)["count"] == 300
    segments = client.cat.segments(index=index, format="json")
    assert len(segments) >= 3
    assert sum(int(s["docs.count"]) for s in segments) == 300
    merged = client.indices.forcemerge(index=index, max_num_segments=1)
    assert merged["_shards"] == {"total": 1, "successful": 1, "failed": 0}
    segments = client.cat.segments(index=index, format="json")
    assert [(s["index"], s["shard"], s["prirep"], s["docs.count"], s["docs.deleted"]) for s in segments] == [
        (index, "0", "p", "300", "0")
    ]
    with pytest.raises((elasticsearch.BadRequestError, opensearchpy.RequestError)) as bad:
        client.indices.forcemerge(index=index, max_num_segments=1, only_expunge_deletes=True)
    assert "only_expunge_deletes" in str(bad.value)
    client.delete(index=index, id="0-1", refresh=True)
    stats = client.indices.stats(index=index)
    assert stats["_shards"] == {"total": 1, "successful": 1, "failed": 0}
    primaries = stats["indices"][index]["primaries"]
    assert (primaries["docs"], primaries["segments"]) == ({"count": 299, "deleted": 1}, {"count": 1})
    assert primaries["store"]["size_in_bytes"] > 0 and stats["_all"]["total"] == primaries
    docs_only = client.indices.stats(index=index, metric="docs")["_all"]["primaries"]
    assert docs_only == {"docs": {"count": 299, "deleted": 1}}
    assert index in client.indices.stats()["indices"]
    shards = client.indices.stats(index=index, level="shards")["indices"][index]["shards"]
    assert [(c["routing"]["primary"], c["docs"]["count"]) for c in shards["0"]] == [(True, 299)]
    # Indexing and search activity: 300 documents and one delete written;
    # each scan or aggregation a search makes of the shard is a query (a
    # search for hits and their total makes two), and the one that read
    # sources a fetch too.
    activity = client.indices.stats(index=index, metric="indexing,search")["_all"]["primaries"]
    assert (activity["indexing"]["index_total"], activity["indexing"]["delete_total"]) == (300, 1)
    before = activity["search"]
    client.search(index=index, body={"query": {"match_all": {}}, "size": 3})
    client.search(index=index, body={"query": {"match_all": {}}, "size": 0})
    after = client.indices.stats(index=index, metric="search")["_all"]["primaries"]["search"]
    assert after["query_total"] - before["query_total"] >= 2
    assert after["fetch_total"] - before["fetch_total"] == 1


def test_field_caps_match_what_searches_do(node):
    client = elasticsearch.Elasticsearch(node.url)
    client.indices.create(
        index="caps-a",
        mappings={"properties": {"title": {"type": "text", "fields": {"raw": {"type": "keyword"}}},
                                 "user": {"properties": {"age": {"type": "integer"}}},
                                 "code": {"type": "long"}}},
    )
    client.indices.create(index="caps-b", mappings={"properties": {"code": {"type": "keyword"}}})
    client.index(index="caps-a", id="1", document={"title": "Red fox", "user": {"age": 3}, "code": 7}, refresh=True)
    client.index(index="caps-b", id="2", document={"code": "x7"}, refresh=True)
    caps = client.field_caps(index="caps-*", fields="*")
    assert caps["indices"] == ["caps-a", "caps-b"]
    fields = caps["fields"]
    assert fields["title"] == {"text": {"type": "text", "metadata_field": False, "searchable": True, "aggregatable": False}}
    assert fields["title.raw"]["keyword"]["aggregatable"] is True
    assert fields["user"]["object"]["searchable"] is False
    assert fields["user.age"] == {"integer": {"type": "integer", "metadata_field": False, "searchable": True, "aggregatable": True}}
    assert fields["code"]["long"]["indices"] == ["caps-a"] and fields["code"]["keyword"]["indices"] == ["caps-b"]
    assert fields["_index"]["_index"] == {"type": "_index", "metadata_field": True, "searchable": True, "aggregatable": True}
    assert fields["_id"]["_id"]["searchable"] is True
    # What field_caps claims, the search API does: _index and _id are searchable, _index aggregatable.
    found = client.search(index="caps-*", query={"bool": {"filter": [{"term": {"_index": "caps-a"}}, {"ids": {"values": ["1"]}}]}})
    assert [h["_id"] for h in found["hits"]["hits"]] == ["1"]
    for query in [{"terms": {"_index": ["caps-b", "other"]}}, {"prefix": {"_index": "caps-b"}},
                  {"wildcard": {"_index": "c?ps-b*"}}, {"match": {"_index": "caps-b"}}]:
        hits = client.search(index="caps-*", query=query)["hits"]["hits"]
        assert [(h["_index"], h["_id"]) for h in hits] == [("caps-b", "2")], query
    aggs = {"i": {"terms": {"field": "_index"}, "aggs": {"codes": {"value_count": {"field": "code"}}}},
            "n": {"cardinality": {"field": "_index"}}}
    by_index = client.search(index="caps-*", size=0, aggs=aggs)["aggregations"]
    assert [(b["key"], b["doc_count"], b["codes"]["value"]) for b in by_index["i"]["buckets"]] == [("caps-a", 1, 1), ("caps-b", 1, 1)]
    assert by_index["n"]["value"] == 2
    only = client.field_caps(index="caps-a", fields="user*,code", types="integer,long")["fields"]
    assert set(only) == {"user.age", "code"}
    unmapped = client.field_caps(index="caps-*", fields="title", include_unmapped=True)["fields"]["title"]
    assert unmapped["unmapped"]["indices"] == ["caps-b"] and unmapped["text"]["indices"] == ["caps-a"]
    with pytest.raises(elasticsearch.BadRequestError) as bad:
        client.field_caps(index="caps-a", fields="")
    assert bad.value.meta.status == 400
    with pytest.raises(elasticsearch.NotFoundError):
        client.field_caps(index="caps-none", fields="*")


@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
def test_reindex_into_a_new_mapping(node, flavor):
    client, helpers = clients(node.url)[flavor]
    source, dest = f"old-{flavor}", f"new-{flavor}"
    helpers.bulk(client, ({"_index": source, "_id": str(i), "_source": {"code": str(i % 50)}} for i in range(300)))
    client.indices.refresh(index=source)
    client.indices.create(index=dest, body={"mappings": {"properties": {"code": {"type": "long"}}}})
    done = client.reindex(body={"source": {"index": source}, "dest": {"index": dest}}, refresh=True)
    assert (done["total"], done["created"], done["failures"]) == (300, 300, [])
    assert client.count(index=dest)["count"] == 300
    top = client.search(index=dest, body={"size": 0, "aggs": {"m": {"max": {"field": "code"}}}})
    assert top["aggregations"]["m"]["value"] == 49


@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
def test_aliases_swap_with_a_reindex(node, flavor):
    client, helpers = clients(node.url)[flavor]
    old, new, alias = f"v1-{flavor}", f"v2-{flavor}", f"items-{flavor}"
    client.indices.create(index=old, body={"aliases": {alias: {}}})
    helpers.bulk(client, ({"_index": alias, "_id": str(i), "_source": {"code": str(i)}} for i in range(40)))
    client.indices.refresh(index=alias)
    assert client.count(index=alias)["count"] == 40
    assert client.get(index=alias, id="7")["_index"] == old
    client.indices.create(index=new, body={"mappings": {"properties": {"code": {"type": "long"}}}})
    client.reindex(body={"source": {"index": alias}, "dest": {"index": new}}, refresh=True)
    client.indices.update_aliases(body={"actions": [
        {"remove": {"index": old, "alias": alias}},
        {"add": {"index": new, "alias": alias, "is_write_index": True}},
    ]})
    assert dict(client.indices.get_alias(name=alias)) == {new: {"aliases": {alias: {"is_write_index": True}}}}
    assert client.indices.exists_alias(name=alias)
    top = client.search(index=alias, body={"size": 0, "aggs": {"m": {"max": {"field": "code"}}}})
    assert top["aggregations"]["m"]["value"] == 39
    assert client.index(index=alias, id="new", body={"code": 40}, refresh=True)["_index"] == new
    rows = list(client.cat.aliases(name=alias, format="json"))
    assert [(r["alias"], r["index"], r["is_write_index"]) for r in rows] == [(alias, new, "true")]
    client.indices.delete_alias(index=new, name=alias)
    assert not client.indices.exists_alias(name=alias)
    missing = elasticsearch.NotFoundError if flavor == "elasticsearch" else opensearchpy.NotFoundError
    with pytest.raises(missing):
        client.indices.get_alias(name=alias)


def test_conditional_writes_and_update_by_query(node):
    client = elasticsearch.Elasticsearch(node.url)
    first = client.index(index="occ", id="1", document={"title": "red fox"}, refresh=True)
    second = client.index(index="occ", id="1", document={"title": "blue jay"}, if_seq_no=first["_seq_no"], if_primary_term=first["_primary_term"])
    with pytest.raises(elasticsearch.ConflictError):
        client.index(index="occ", id="1", document={"title": "stale"}, if_seq_no=first["_seq_no"], if_primary_term=1)
    with pytest.raises(elasticsearch.ConflictError):
        client.delete(index="occ", id="1", if_seq_no=first["_seq_no"], if_primary_term=1)
    got = client.get(index="occ", id="1")
    assert (got["_source"], got["_seq_no"]) == ({"title": "blue jay"}, second["_seq_no"])
    client.indices.put_mapping(index="occ", properties={"title": {"type": "text", "fields": {"raw": {"type": "keyword"}}}})
    done = client.update_by_query(index="occ", refresh=True, conflicts="proceed")
    assert (done["total"], done["updated"], done["version_conflicts"], done["failures"]) == (1, 1, 0, [])
    found = client.search(index="occ", query={"term": {"title.raw": "blue jay"}})
    assert [h["_id"] for h in found["hits"]["hits"]] == ["1"]


def test_external_versions(node):
    client = elasticsearch.Elasticsearch(node.url)
    first = client.index(index="extv", id="1", document={"n": 10}, version=10, version_type="external")
    assert (first["result"], first["_version"]) == ("created", 10)
    with pytest.raises(elasticsearch.ConflictError):
        client.index(index="extv", id="1", document={"n": 9}, version=9, version_type="external")
    with pytest.raises(elasticsearch.BadRequestError):
        client.index(index="extv", id="2", document={"n": 1}, version_type="external")
    ok, errors = elasticsearch.helpers.bulk(client, [
        {"_index": "extv", "_id": "1", "_version": 11, "_version_type": "external", "_source": {"n": 11}},
        {"_index": "extv", "_id": "2", "_version": 3, "_version_type": "external_gte", "_source": {"n": 3}},
        {"_index": "extv", "_id": "1", "_version": 5, "_version_type": "external", "_source": {"n": 5}},
    ], raise_on_error=False, refresh=True)
    assert ok == 2
    assert [(e["index"]["_id"], e["index"]["status"]) for e in errors] == [("1", 409)]
    got = client.get(index="extv", id="1")
    assert (got["_version"], got["_source"]) == (11, {"n": 11})
    hits = client.search(index="extv", version=True, sort=["_id"])["hits"]["hits"]
    assert [(h["_id"], h["_version"]) for h in hits] == [("1", 11), ("2", 3)]


def test_mappings_settings_and_health_of_every_index(node):
    client = elasticsearch.Elasticsearch(node.url)
    client.indices.create(index="every-a", mappings={"properties": {"title": {"type": "text", "fields": {"raw": {"type": "keyword"}}}}})
    client.indices.create(index="every-b", settings={"number_of_shards": 2}, mappings={"properties": {"n": {"type": "long"}}})
    mappings = client.indices.get_mapping()
    assert mappings["every-a"]["mappings"]["properties"]["title"]["fields"]["raw"] == {"type": "keyword"}
    assert mappings["every-b"]["mappings"]["properties"]["n"] == {"type": "long"}
    settings = client.indices.get_settings()
    assert settings["every-b"]["settings"]["index"]["number_of_shards"] == "2"
    fields = client.indices.get_field_mapping(index="every-*", fields="title.raw,n")
    assert fields["every-a"]["mappings"] == {"title.raw": {"full_name": "title.raw", "mapping": {"raw": {"type": "keyword"}}}}
    assert fields["every-b"]["mappings"] == {"n": {"full_name": "n", "mapping": {"n": {"type": "long"}}}}
    assert client.indices.get_field_mapping(fields="nothing*")["every-a"]["mappings"] == {}
    health = client.cat.health(format="json")
    assert len(health) == 1
    row = health[0]
    assert (row["status"], row["node.total"], row["node.data"]) == ("green", "1", "1")
    assert int(row["shards"]) >= 3 and row["active_shards_percent"] == "100.0%"
    assert "status" in client.cat.health(v=True).body.splitlines()[0]


def test_mget(node):
    client = elasticsearch.Elasticsearch(node.url)
    client.index(index="m1", id="1", document={"a": 1})
    client.index(index="m2", id="2", document={"b": 2})
    docs = client.mget(docs=[{"_index": "m1", "_id": "1"}, {"_index": "m2", "_id": "2"}, {"_index": "m1", "_id": "9"}])["docs"]
    assert [(d["_id"], d["found"], d.get("_source")) for d in docs] == [("1", True, {"a": 1}), ("2", True, {"b": 2}), ("9", False, None)]
    assert [d["found"] for d in client.mget(index="m1", ids=["1", "2"])["docs"]] == [True, False]
    missing = client.mget(docs=[{"_index": "nope", "_id": "1"}])["docs"][0]
    assert missing["error"]["type"] == "index_not_found_exception"


def test_get_source_filtering(node):
    client = elasticsearch.Elasticsearch(node.url)
    client.index(index="src", id="1", document={"a": 1, "b": {"c": 2, "d": 3}})
    assert client.get_source(index="src", id="1", source_excludes=["b.d"]).body == {"a": 1, "b": {"c": 2}}
    assert client.get(index="src", id="1", source_includes=["b.c"])["_source"] == {"b": {"c": 2}}
    assert "_source" not in client.get(index="src", id="1", source=False)
    assert client.exists_source(index="src", id="1")
    assert not client.exists_source(index="src", id="2")
    with pytest.raises(elasticsearch.NotFoundError):
        client.get_source(index="src", id="2")
    docs = client.mget(index="src", ids=["1"], source=["a"])["docs"]
    assert docs[0]["_source"] == {"a": 1}
    assert client.get(index="src", id="1", filter_path="found,_source.a").body == {"found": True, "_source": {"a": 1}}


def test_analyze_and_validate(node):
    client = elasticsearch.Elasticsearch(node.url)
    client.index(index="v", id="1", document={"title": "red fox"}, refresh=True)
    assert client.indices.validate_query(index="v", query={"match": {"title": "fox"}})["valid"]
    assert not client.indices.validate_query(index="v", query={"no_such_query": {}})["valid"]
    tokens = client.indices.analyze(analyzer="standard", text="Hello, World 42")["tokens"]
    assert [(t["token"], t["type"], t["position"]) for t in tokens] == [("hello", "<ALPHANUM>", 0), ("world", "<ALPHANUM>", 1), ("42", "<NUM>", 2)]


def test_sniffing_finds_the_node(node):
    client = elasticsearch.Elasticsearch(node.url, sniff_on_start=True)
    host, port = node.addr.rsplit(":", 1)
    assert [(n.host, n.port) for n in client.transport.node_pool.all()] == [(host, int(port))]
    info = client.nodes.info(metric="http")
    (only,) = info["nodes"].values()
    assert only["http"]["publish_address"] == node.addr
    assert set(only["roles"]) == {"data", "master"}
    client.index(index="sniffed", id="1", document={"a": 1}, refresh=True)
    assert client.count(index="sniffed")["count"] == 1


def test_put_mapping_and_settings(node):
    client = elasticsearch.Elasticsearch(node.url)
    client.indices.create(index="grow", mappings={"dynamic": "strict", "properties": {"a": {"type": "long"}}})
    with pytest.raises(elasticsearch.BadRequestError):
        client.index(index="grow", id="1", document={"a": 1, "b": "x"})
    client.indices.put_mapping(index="grow", properties={"b": {"type": "keyword"}})
    client.index(index="grow", id="1", document={"a": 1, "b": "x"}, refresh=True)
    assert client.count(index="grow", query={"term": {"b": "x"}})["count"] == 1
    assert client.indices.get_mapping(index="grow")["grow"]["mappings"]["properties"]["b"] == {"type": "keyword"}
    with pytest.raises(elasticsearch.BadRequestError, match="cannot be changed from type \\[long\\] to \\[keyword\\]"):
        client.indices.put_mapping(index="grow", properties={"a": {"type": "keyword"}})
    assert client.indices.get_mapping(index="grow")["grow"]["mappings"]["properties"]["a"] == {"type": "long"}
    settings = client.indices.get_settings(index="grow")["grow"]["settings"]["index"]
    assert settings["number_of_shards"] == "1"


def test_put_mapping_refuses_path_conflicts(node):
    client = elasticsearch.Elasticsearch(node.url)
    client.index(index="paths", id="1", document={"title": "hello", "user": {"name": "ann"}}, refresh=True)
    for properties in [
        {"title": {"properties": {"keyword": {"type": "keyword"}}}},
        {"user": {"type": "keyword"}},
        {"title": {"properties": {"lang": {"type": "keyword"}}}},
    ]:
        with pytest.raises(elasticsearch.BadRequestError, match="can't merge a non object mapping"):
            client.indices.put_mapping(index="paths", properties=properties)
    assert client.search(index="paths", query={"match": {"title": "hello"}})["hits"]["total"]["value"] == 1
    client.indices.put_mapping(index="paths", properties={"user": {"properties": {"age": {"type": "integer"}}}})
    client.indices.put_mapping(
        index="paths", properties={"title": {"type": "text", "fields": {"raw": {"type": "keyword"}}}}
    )
    assert set(client.indices.get_mapping(index="paths")["paths"]["mappings"]["properties"]["title"]["fields"]) == {
        "keyword",
        "raw",
    }
    client.index(index="paths", id="2", document={"user": {"name": "bob", "age": 7}}, refresh=True)
    assert client.count(index="paths", query={"range": {"user.age": {"gte": 5}}})["count"] == 1


def test_a_failed_scroll_page_keeps_the_scroll(node):
    client = elasticsearch.Elasticsearch(node.url)
    elasticsearch.helpers.bulk(client, ({"_index": "gone", "_id": str(i), "n": i} for i in range(30)), refresh=True)
    first = client.search(index="gone", scroll="1m", size=10)
    client.indices.delete(index="gone")
    for _ in range(2):
        with pytest.raises(elasticsearch.NotFoundError) as err:
            client.scroll(scroll_id=first["_scroll_id"], scroll="1m")
        assert err.value.body["error"]["type"] == "index_not_found_exception"
    assert client.clear_scroll(scroll_id=first["_scroll_id"])["num_freed"] == 1


def test_index_templates_shape_new_indices(node):
    client = elasticsearch.Elasticsearch(node.url)
    client.cluster.put_component_template(name="shards", template={"settings": {"number_of_shards": 2}})
    client.indices.put_index_template(
        name="logs",
        index_patterns=["logs-*"],
        composed_of=["shards"],
        priority=5,
        template={"mappings": {"properties": {"status": {"type": "keyword"}}}, "aliases": {"logs": {}}},
    )
    assert client.indices.exists_index_template(name="logs")
    assert not client.indices.exists_index_template(name="nope")
    (got,) = client.indices.get_index_template(name="logs")["index_templates"]
    assert got["index_template"]["composed_of"] == ["shards"]
    simulated = client.indices.simulate_index_template(name="logs-2")["template"]
    assert simulated["settings"] == {"index": {"number_of_shards": "2"}}
    simulated = client.indices.simulate_template(
        index_patterns=["logs-x*"], composed_of=["shards"], priority=9, template={"settings": {"number_of_shards": 1}}
    )
    assert simulated["template"]["settings"] == {"index": {"number_of_shards": "1"}}
    assert simulated["overlapping"] == [{"name": "logs", "index_patterns": ["logs-*"]}]
    stored = client.indices.simulate_template(name="logs")["template"]
    assert stored["mappings"] == {"properties": {"status": {"type": "keyword"}}}
    client.index(index="logs-1", id="1", document={"status": 200}, refresh=True)
    settings = client.indices.get_settings(index="logs-1")["logs-1"]["settings"]["index"]
    assert settings["number_of_shards"] == "2"
    mapping = client.indices.get_mapping(index="logs-1")["logs-1"]["mappings"]["properties"]
    assert mapping["status"] == {"type": "keyword"}
    assert client.count(index="logs", query={"term": {"status": "200"}})["count"] == 1
    with pytest.raises(elasticsearch.BadRequestError, match="still in use"):
        client.cluster.delete_component_template(name="shards")
    client.indices.delete_index_template(name="logs")
    client.cluster.delete_component_template(name="shards")
    assert client.indices.get_index_template()["index_templates"] == []
    client.indices.put_template(name="old", index_patterns=["old-*"], settings={"number_of_shards": 3}, order=1)
    assert client.indices.get_template(name="old")["old"]["settings"] == {"index": {"number_of_shards": "3"}}
    client.indices.create(index="old-1")
    assert client.indices.get_settings(index="old-1")["old-1"]["settings"]["index"]["number_of_shards"] == "3"
    client.indices.delete_template(name="old")
    assert not client.indices.exists_template(name="old")


def test_rollover(node):
    client = elasticsearch.Elasticsearch(node.url)
    client.indices.create(index="app-000001", aliases={"app": {"is_write_index": True}})
    client.index(index="app", id="1", document={"n": 1}, refresh=True)
    held = client.indices.rollover(alias="app", conditions={"max_docs": 2})
    assert (held["rolled_over"], held["conditions"]) == (False, {"[max_docs: 2]": False})
    rolled = client.indices.rollover(alias="app", conditions={"max_docs": 1})
    assert (rolled["old_index"], rolled["new_index"], rolled["rolled_over"]) == ("app-000001", "app-000002", True)
    assert client.index(index="app", document={"n": 2}, refresh=True)["_index"] == "app-000002"
    assert client.count(index="app")["count"] == 2


def test_terms_enum(node):
    client = elasticsearch.Elasticsearch(node.url)
    client.indices.create(index="t", mappings={"properties": {"tag": {"type": "keyword"}}})
    for i, tag in enumerate(["red", "rose", "blue"]):
        client.index(index="t", id=str(i), document={"tag": tag}, refresh=True)
    answer = client.terms_enum(index="t", field="tag", string="r")
    assert (answer["terms"], answer["complete"]) == (["red", "rose"], True)


def test_cluster_settings(node):
    client = elasticsearch.Elasticsearch(node.url)
    client.indices.create(index="keep-1")
    with pytest.raises(elasticsearch.BadRequestError, match="Wildcard expressions"):
        client.indices.delete(index="keep-*")
    client.cluster.put_settings(persistent={"action.auto_create_index": "false"})
    assert client.cluster.get_settings()["persistent"] == {"action": {"auto_create_index": "false"}}
    with pytest.raises(elasticsearch.NotFoundError):
        client.index(index="typo", document={"a": 1})
    client.cluster.put_settings(persistent={"action.auto_create_index": None})
    assert client.index(index="typo", document={"a": 1})["result"] == "created"
