"""`quidditch load` brings NDJSON, CSV and Parquet into an index through a running node."""

import json
import os
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import requests

from conftest import BIN


def load(node, index, path):
    done = subprocess.run(
        [BIN, "load", "--quiet", "--index", index, "--url", node.url, "--batch-size", "7", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_ndjson_csv_and_parquet(node, tmp_path):
    ndjson = tmp_path / "a.ndjson"
    ndjson.write_text("".join(json.dumps({"n": i, "word": f"w{i % 3}"}) + "\n" for i in range(50)))
    out = load(node, "mixed", ndjson)
    assert "loaded 50 documents into [mixed]" in out

    csv = tmp_path / "b.csv"
    csv.write_text("n,word,flag\n" + "".join(f"{i},w{i % 3},{'true' if i % 2 else 'false'}\n" for i in range(50, 80)))
    load(node, "mixed", csv)

    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"n": list(range(80, 100)), "word": [f"w{i % 3}" for i in range(80, 100)]}), parquet)
    load(node, "mixed", parquet)

    assert node.sql("SELECT count(*), sum(n) FROM mixed") == [[100, sum(range(100))]]
    assert node.sql('SELECT "word.keyword", count(*) FROM mixed GROUP BY 1 ORDER BY 1') == [
        ["w0", 34],
        ["w1", 33],
        ["w2", 33],
    ]
    assert node.sql("SELECT count(*) FROM mixed WHERE flag") == [[15]]
    mapping = requests.get(f"{node.url}/mixed/_mapping", timeout=10).json()["mixed"]["mappings"]["properties"]
    assert mapping["n"]["type"] == "long"
    assert mapping["flag"]["type"] == "boolean"


def test_rejected_documents_fail_the_command(node, tmp_path):
    requests.put(f"{node.url}/strict", json={"mappings": {"properties": {"n": {"type": "integer"}}}}, timeout=10)
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"n": 1}\n{"n": "one"}\n{"n": 3}\n')
    done = subprocess.run(
        [BIN, "load", "--quiet", "--index", "strict", "--url", node.url, str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "1 failed" in done.stdout
    assert "failed to parse field [n] of type [integer]" in done.stderr
    assert node.sql("SELECT count(*) FROM strict") == [[2]]
