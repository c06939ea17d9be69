"""Flight SQL through ADBC (the driver BI tools and dataframes use)."""

import json

import adbc_driver_flightsql.dbapi as flightsql
import pandas
import polars
import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests

COLORS = ["red", "green", "blue"]


@pytest.fixture
def items(node):
    docs = [{"color": COLORS[i % 3], "size": i % 17, "price": i * 1.25} for i in range(300)]
    requests.put(
        f"{node.url}/items",
        json={"mappings": {"properties": {"color": {"type": "keyword"}, "size": {"type": "long"}, "price": {"type": "double"}}}},
        timeout=60,
    ).raise_for_status()
    body = "".join(json.dumps({"index": {"_id": str(i)}}) + "\n" + json.dumps(d) + "\n" for i, d in enumerate(docs))
    r = requests.post(
        f"{node.url}/items/_bulk?refresh=true", data=body, headers={"Content-Type": "application/x-ndjson"}, timeout=60
    )
    r.raise_for_status()
    assert not r.json()["errors"]
    return docs


def test_statement_schema_and_values(node, items):
    with flightsql.connect(node.flight, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT color, count(*) AS n, sum(price) AS total FROM items GROUP BY color ORDER BY color")
        table = cur.fetch_arrow_table()
    assert table.schema.names == ["color", "n", "total"]
    assert table.schema.field("n").type == pa.int64()
    assert table.schema.field("total").type == pa.float64()
    expected = {c: (sum(1 for d in items if d["color"] == c), sum(d["price"] for d in items if d["color"] == c)) for c in COLORS}
    assert table.column("color").to_pylist() == sorted(COLORS)
    assert table.column("n").to_pylist() == [expected[c][0] for c in sorted(COLORS)]
    assert table.column("total").to_pylist() == pytest.approx([expected[c][1] for c in sorted(COLORS)])


def test_prepared_statement_binds_parameters(node, items):
    with flightsql.connect(node.flight, autocommit=True) as conn, conn.cursor() as cur:
        for color, min_size in [("red", 10), ("blue", 3)]:
            cur.execute("SELECT count(*) AS n FROM items WHERE color = ? AND size >= ?", parameters=(color, min_size))
            (n,) = cur.fetchone()
            assert n == sum(1 for d in items if d["color"] == color and d["size"] >= min_size)


def test_catalog_objects_and_table_schema(node, items):
    with flightsql.connect(node.flight, autocommit=True) as conn:
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        tables = [
            t["table_name"]
            for catalog in objects
            for schema in catalog["catalog_db_schemas"]
            if schema["db_schema_name"] == "public"
            for t in schema["db_schema_tables"]
        ]
        assert tables == ["items"]
        schema = conn.adbc_get_table_schema("items")
        assert {"_id", "color", "size", "price"} <= set(schema.names)
        assert schema.field("size").type == pa.int64()
        assert "TABLE" in conn.adbc_get_table_types()


def test_pandas_and_polars_read_through_the_connection(node, items):
    with flightsql.connect(node.flight, autocommit=True) as conn:
        df = pandas.read_sql("SELECT size, price FROM items WHERE color = 'green' ORDER BY size, price", conn)
        green = sorted((d["size"], d["price"]) for d in items if d["color"] == "green")
        assert list(df.itertuples(index=False, name=None)) == green
        with conn.cursor() as cur:
            cur.execute("SELECT color, max(size) AS m FROM items GROUP BY color")
            pl = polars.from_arrow(cur.fetch_arrow_table()).sort("color")
        assert pl["m"].to_list() == [max(d["size"] for d in items if d["color"] == c) for c in sorted(COLORS)]


def varint(n):
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def field1(data):
    """Protobuf field 1 (length-delimited)."""
    return b"\x0a" + varint(len(data)) + data


def any_command(name, payload):
    """A protobuf `Any` holding a Flight SQL command (hand-encoded)."""
    type_url = f"type.googleapis.com/arrow.flight.protocol.sql.{name}".encode()
    return field1(type_url) + b"\x12" + varint(len(payload)) + payload


def test_statement_flight_info_schema_equals_stream_schema(node, items):
    client = flight.connect(node.flight)
    for sql in [
        "SELECT color, size, price, _id FROM items WHERE size > 3",
        "SELECT color, count(*) AS n, avg(price) AS p FROM items GROUP BY color",
        "SELECT * FROM items WHERE size > 1000",
    ]:
        command = any_command("CommandStatementQuery", field1(sql.encode()))
        info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
        table = client.do_get(info.endpoints[0].ticket).read_all()
        assert info.schema == table.schema, sql
        assert [f.nullable for f in info.schema] == [f.nullable for f in table.schema]


def test_malformed_commands_and_unknown_handles(node, items):
    client = flight.connect(node.flight)
    with pytest.raises(pa.ArrowInvalid):
        client.do_get(flight.Ticket(b"\xff\xff\xff")).read_all()
    with pytest.raises(pa.ArrowNotImplementedError):
        client.do_get(flight.Ticket(any_command("NoSuchCommand", b""))).read_all()
    handle = b"\x0a\x04nope"
    with pytest.raises(pa.ArrowKeyError, match="unknown prepared statement handle"):
        client.do_get(flight.Ticket(any_command("CommandPreparedStatementQuery", handle))).read_all()
    with flightsql.connect(node.flight, autocommit=True) as conn, conn.cursor() as cur:
        with pytest.raises(flightsql.ProgrammingError, match="no_such_table"):
            cur.execute("SELECT * FROM no_such_table")
        cur.execute("SELECT count(*) FROM items")
        assert cur.fetchone() == (len(items),)
    assert client.do_get(flight.Ticket(json.dumps({"sql": "SELECT 1 AS one"}))).read_all().to_pylist() == [{"one": 1}]
