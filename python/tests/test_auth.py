"""Authentication: with users and tokens configured, every interface refuses
missing and wrong credentials and serves correct ones."""

import json
import subprocess
import tempfile

import adbc_driver_flightsql.dbapi as flightsql
import elasticsearch
import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests

from conftest import BIN, Node

PASSWORD = "correct horse"
TOKEN = "tok-8d7f6e5c4b3a"


def hashed(secret):
    done = subprocess.run([BIN, "hash-password"], input=secret + "\n", capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def secure_node():
    with tempfile.TemporaryDirectory() as d:
        config = f"{d}/quidditch.toml"
        with open(config, "w") as f:
            f.write(
                "[[users]]\n"
                'name = "alice"\n'
                f'password_hash = "{hashed(PASSWORD)}"\n'
                "[[tokens]]\n"
                'name = "loader"\n'
                f'token_hash = "{hashed(TOKEN)}"\n'
            )
        with open(config) as f:
            text = f.read()
        assert PASSWORD not in text and TOKEN not in text and "$argon2id$" in text
        n = Node(f"{d}/data", "--config", config)
        try:
            yield n
        finally:
            n.stop()


def test_http_requires_credentials(secure_node):
    url = secure_node.url
    r = requests.get(url, timeout=30)
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "security_exception"
    assert "Basic" in r.headers["WWW-Authenticate"]
    assert requests.get(url, auth=("alice", "wrong"), timeout=30).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=30).status_code == 401
    assert requests.put(f"{url}/sneaky", json={}, timeout=30).status_code == 401
    assert requests.get(url, auth=("alice", PASSWORD), timeout=30).status_code == 200
    assert requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).status_code == 200
    assert requests.get(f"{url}/sneaky", auth=("alice", PASSWORD), timeout=30).status_code == 404

    es = elasticsearch.Elasticsearch(url, basic_auth=("alice", PASSWORD))
    es.index(index="notes", id="1", document={"text": "hello"}, refresh=True)
    assert es.get(index="notes", id="1")["_source"] == {"text": "hello"}
    with pytest.raises(elasticsearch.AuthenticationException):
        elasticsearch.Elasticsearch(url, basic_auth=("alice", "nope")).count(index="notes")


def test_flight_requires_a_handshake_or_bearer(secure_node):
    client = flight.connect(secure_node.flight)
    sql = flight.Ticket(json.dumps({"sql": "SELECT 1 AS one"}).encode())
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.do_get(sql).read_all()
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token("alice", "wrong")
    header = client.authenticate_basic_token("alice", PASSWORD)
    options = flight.FlightCallOptions(headers=[header])
    assert client.do_get(sql, options).read_all().to_pylist() == [{"one": 1}]
    token = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {TOKEN}".encode())])
    assert client.do_get(sql, token).read_all().to_pylist() == [{"one": 1}]
    bad = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer forged")])
    with pytest.raises(flight.FlightUnauthenticatedError):
        list(client.list_flights(options=bad))


def test_adbc_authenticates_with_user_and_password(secure_node):
    with pytest.raises(flightsql.Error):
        with flightsql.connect(secure_node.flight, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    with pytest.raises(flightsql.Error):
        with flightsql.connect(
            secure_node.flight, db_kwargs={"username": "alice", "password": "wrong"}, autocommit=True
        ) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    kwargs = {"username": "alice", "password": PASSWORD}
    with flightsql.connect(secure_node.flight, db_kwargs=kwargs, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT 40 + 2 AS answer")
        table = cur.fetch_arrow_table()
        assert table.schema.field("answer").type == pa.int64()
        assert table.to_pylist() == [{"answer": 42}]


def test_command_line_clients_send_credentials(secure_node, tmp_path):
    data = tmp_path / "rows.ndjson"
    data.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(25)))
    load = [BIN, "load", "--quiet", "--index", "cli-rows", "--url", secure_node.url, str(data)]
    denied = subprocess.run(load, capture_output=True, text=True)
    assert denied.returncode != 0 and "401" in denied.stderr
    loaded = subprocess.run([*load, "--token", TOKEN], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    sql = [BIN, "sql", "--url", secure_node.url, "--format", "csv", "SELECT count(*) AS n FROM \"cli-rows\""]
    assert subprocess.run(sql, capture_output=True, text=True).returncode != 0
    done = subprocess.run([*sql, "--user", f"alice:{PASSWORD}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["n", "25"]
