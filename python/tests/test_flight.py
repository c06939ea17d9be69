"""pyarrow.flight against a real node: JSON tickets, descriptors, ListFlights, DoPut."""

import json
import os

import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests

SERVICES = ["api", "web", "db", "cache"]


def make_docs(n=600):
    return [
        {
            "service": SERVICES[i % len(SERVICES)],
            "status": 200 + (i * 37) % 400,
            "latency": round((i * 7919) % 1000 / 10.0, 1),
            "message": f"request {i} from host{i % 7}",
        }
        for i in range(n)
    ]


@pytest.fixture
def logs(node):
    docs = make_docs()
    requests.put(
        f"{node.url}/logs",
        json={
            "mappings": {
                "properties": {
                    "service": {"type": "keyword"},
                    "status": {"type": "long"},
                    "latency": {"type": "double"},
                    "message": {"type": "text"},
                }
            }
        },
        timeout=60,
    ).raise_for_status()
    lines = []
    for i, d in enumerate(docs):
        lines.append(json.dumps({"index": {"_id": str(i)}}))
        lines.append(json.dumps(d))
    r = requests.post(
        f"{node.url}/logs/_bulk?refresh=true",
        data="\n".join(lines) + "\n",
        headers={"Content-Type": "application/x-ndjson"},
        timeout=120,
    )
    r.raise_for_status()
    assert not r.json()["errors"]
    return docs


def ticket(obj):
    return flight.Ticket(json.dumps(obj).encode())


def test_sql_ticket_streams_the_answer(node, logs):
    client = flight.connect(node.flight)
    table = client.do_get(
        ticket({"sql": "SELECT service, count(*) AS n, sum(status) AS total FROM logs GROUP BY service ORDER BY service"})
    ).read_all()
    expected = {}
    for d in logs:
        n, total = expected.get(d["service"], (0, 0))
        expected[d["service"]] = (n + 1, total + d["status"])
    assert table.column_names == ["service", "n", "total"]
    assert table.schema.field("service").type == pa.string()
    assert table.column("service").to_pylist() == sorted(expected)
    assert table.column("n").to_pylist() == [expected[s][0] for s in sorted(expected)]
    assert table.column("total").to_pylist() == [expected[s][1] for s in sorted(expected)]


def test_dsl_ticket_returns_hits_as_rows(node, logs):
    client = flight.connect(node.flight)
    search = {
        "query": {"bool": {"filter": [{"term": {"service": "db"}}, {"range": {"status": {"gte": 400}}}]}},
        "size": 1000,
        "sort": [{"status": "asc"}],
        "fields": ["status", "service"],
    }
    table = client.do_get(ticket({"index": "logs", "search": search})).read_all()
    matching = sorted(
        (d["status"], str(i)) for i, d in enumerate(logs) if d["service"] == "db" and d["status"] >= 400
    )
    assert len(matching) > 10
    assert table.column_names[:3] == ["_index", "_id", "_score"]
    assert set(table.column_names[3:]) == {"status", "service"}
    assert table.num_rows == len(matching)
    assert table.column("status").to_pylist() == [s for s, _ in matching]
    assert sorted(table.column("_id").to_pylist()) == sorted(i for _, i in matching)
    assert set(table.column("_index").to_pylist()) == {"logs"}


def test_flight_info_schema_equals_stream_schema(node, logs):
    client = flight.connect(node.flight)
    for command in [
        {"sql": "SELECT service, status, latency FROM logs WHERE status > 500"},
        {"index": "logs", "search": {"query": {"match": {"message": "host3"}}, "fields": ["latency"]}},
    ]:
        info = client.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(command)))
        reader = client.do_get(info.endpoints[0].ticket)
        table = reader.read_all()
        assert info.schema == table.schema
        assert table.num_rows > 0
    info = client.get_flight_info(flight.FlightDescriptor.for_path("logs"))
    table = client.do_get(info.endpoints[0].ticket).read_all()
    assert info.schema == table.schema
    assert table.num_rows == len(logs)
    assert client.get_schema(flight.FlightDescriptor.for_path("logs")).schema == info.schema


def test_list_flights_lists_indices(node, logs):
    client = flight.connect(node.flight)
    flights = list(client.list_flights())
    by_path = {tuple(p.decode() for p in f.descriptor.path): f for f in flights}
    assert ("logs",) in by_path
    assert by_path[("logs",)].total_records == len(logs)
    assert "status" in by_path[("logs",)].schema.names


def test_do_put_ingests_a_million_rows(node):
    client = flight.connect(node.flight)
    n = 1_000_000
    table = pa.table(
        {
            "_id": pa.array([f"r{i}" for i in range(n)]),
            "k": pa.array([i % 10 for i in range(n)], pa.int32()),
            "v": pa.array([i * 0.5 for i in range(n)], pa.float64()),
            "tag": pa.array([f"t{i % 3}" for i in range(n)]),
        }
    )
    writer, reader = client.do_put(flight.FlightDescriptor.for_path("big"), table.schema)
    writer.write_table(table, max_chunksize=100_000)
    writer.done_writing()
    summary = json.loads(reader.read().to_pybytes())
    writer.close()
    assert summary == {"index": "big", "rows": n, "written": n, "created_index": True}
    counts = client.do_get(
        ticket({"sql": "SELECT count(*) AS n, sum(k) AS k, count(DISTINCT tag) AS tags FROM big"})
    ).read_all()
    assert counts.to_pylist() == [{"n": n, "k": sum(i % 10 for i in range(10)) * (n // 10), "tags": 3}]
    mapping = requests.get(f"{node.url}/big/_mapping", timeout=30).json()
    assert mapping["big"]["mappings"]["properties"] == {
        "k": {"type": "integer"},
        "v": {"type": "double"},
        "tag": {"type": "keyword"},
    }
    got = requests.get(f"{node.url}/big/_doc/r12345", timeout=30).json()
    assert got["_source"] == {"k": 5, "v": 6172.5, "tag": "t0"}


def test_decimals_stay_exact_decimals(node):
    from decimal import Decimal

    client = flight.connect(node.flight)
    prices = [Decimal("0.10")] * 10 + [Decimal("12345678.99")]
    table = pa.table({"price": pa.array(prices, pa.decimal128(15, 2))})
    writer, reader = client.do_put(flight.FlightDescriptor.for_path("prices"), table.schema)
    writer.write_table(table)
    writer.done_writing()
    assert json.loads(reader.read().to_pybytes())["written"] == len(prices)
    writer.close()
    mapping = requests.get(f"{node.url}/prices/_mapping", timeout=30).json()
    assert mapping["prices"]["mappings"]["properties"] == {"price": {"type": "scaled_float", "scaling_factor": 100.0}}
    got = client.do_get(ticket({"sql": "SELECT sum(price) AS total, max(price) AS top FROM prices"})).read_all()
    assert got.schema.field("top").type == pa.decimal128(19, 2)
    assert got.to_pylist() == [{"total": Decimal("12345679.99"), "top": Decimal("12345678.99")}]


def test_bad_requests_get_clear_statuses_and_the_node_keeps_serving(node, logs):
    client = flight.connect(node.flight)
    with pytest.raises(pa.ArrowInvalid, match="ticket is not valid JSON"):
        client.do_get(flight.Ticket(b"{not json")).read_all()
    with pytest.raises(pa.ArrowInvalid, match="unknown ticket field"):
        client.do_get(ticket({"query": "SELECT 1"})).read_all()
    with pytest.raises(pa.ArrowInvalid, match="larger than the limit"):
        client.do_get(flight.Ticket(b"{" + b" " * (2 << 20) + b"}")).read_all()
    with pytest.raises(pa.ArrowInvalid, match="no_such_table"):
        client.do_get(ticket({"sql": "SELECT * FROM no_such_table"})).read_all()
    with pytest.raises(pa.ArrowInvalid, match="parse error"):
        client.do_get(ticket({"sql": "SELEC 1"})).read_all()
    with pytest.raises(pa.ArrowKeyError, match="no such index"):
        client.do_get(ticket({"index": "missing", "search": {}})).read_all()
    with pytest.raises(pa.ArrowInvalid, match="cannot be indexed"):
        table = pa.table({"b": pa.array([b"\x00"], pa.binary())})
        writer, _ = client.do_put(flight.FlightDescriptor.for_path("binary"), table.schema)
        writer.write_table(table)
        writer.close()
    leak = os.path.join(node.data_dir, "leak.csv")
    for statement in [f"COPY (SELECT 1 AS x) TO '{leak}' STORED AS CSV", "CREATE TABLE t AS SELECT 1", "SET x = 1"]:
        with pytest.raises(pa.ArrowInvalid, match="only reads"):
            client.do_get(ticket({"sql": statement})).read_all()
    assert not os.path.exists(leak)
    with pytest.raises(pa.ArrowInvalid, match="reserved for metadata"):
        table = pa.table({"_routing": ["a"]})
        writer, _ = client.do_put(flight.FlightDescriptor.for_path("reserved"), table.schema)
        writer.write_table(table)
        writer.close()
    table = client.do_get(ticket({"sql": "SELECT count(*) AS n FROM logs"})).read_all()
    assert table.column("n").to_pylist() == [len(logs)]


def test_query_results_can_be_put_back(node, logs):
    client = flight.connect(node.flight)
    hits = client.do_get(
        ticket({"index": "logs", "search": {"query": {"term": {"service": "web"}}, "size": 50, "fields": ["status"]}})
    ).read_all()
    writer, reader = client.do_put(flight.FlightDescriptor.for_path("copy"), hits.schema)
    writer.write_table(hits)
    writer.done_writing()
    assert json.loads(reader.read().to_pybytes())["written"] == 50
    writer.close()
    copied = client.do_get(ticket({"sql": "SELECT _id, status FROM copy ORDER BY _id"})).read_all()
    assert copied.to_pylist() == sorted(({"_id": i, "status": s} for i, s in zip(hits["_id"].to_pylist(), hits["status"].to_pylist())), key=lambda r: r["_id"])


def test_do_put_to_an_alias_writes_to_its_write_index(node):
    client = flight.connect(node.flight)
    for name in ["rows-1", "rows-2"]:
        assert requests.put(f"{node.url}/{name}", json={"mappings": {"properties": {"k": {"type": "long"}}}}, timeout=30).ok
    actions = [
        {"add": {"index": "rows-1", "alias": "rows"}},
        {"add": {"index": "rows-2", "alias": "rows", "is_write_index": True}},
    ]
    assert requests.post(f"{node.url}/_aliases", json={"actions": actions}, timeout=30).ok
    table = pa.table({"k": pa.array([1, 2, 3], pa.int64())})
    writer, reader = client.do_put(flight.FlightDescriptor.for_path("rows"), table.schema)
    writer.write_table(table)
    writer.done_writing()
    assert json.loads(reader.read().to_pybytes())["written"] == 3
    writer.close()
    requests.post(f"{node.url}/rows/_refresh", timeout=30)
    counts = {name: requests.get(f"{node.url}/{name}/_count", timeout=30).json()["count"] for name in ["rows-1", "rows-2"]}
    assert counts == {"rows-1": 0, "rows-2": 3}
