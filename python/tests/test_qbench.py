"""qbench's suites run at a tiny scale and verify their answers, so the runner cannot rot."""

import json
import os
import subprocess
import sys

QBENCH = os.environ.get("QBENCH_BIN", "qbench")


def run_qbench(tmp_path, suite, *args):
    """Runs a suite with these arguments (the Python of the tests as its
    reference client); its JSON result."""
    done = subprocess.run(
        [QBENCH, suite, *args, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "QBENCH_PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stderr
    return json.loads((tmp_path / f"{suite}.json").read_text())


def run_suite(tmp_path, suite):
    """Runs a suite on 10,000 documents with answer checks; its JSON result."""
    return run_qbench(tmp_path, suite, "--docs", "10000", "--iterations", "2", "--check")


def test_ingest_and_scan_smoke(tmp_path):
    for suite in ["ingest", "scan"]:
        result = run_suite(tmp_path, suite)
        assert result["docs"] == 10000
        assert result["ratio"] > 0
    scan = json.loads((tmp_path / "scan.json").read_text())
    assert scan["answers_match"] is True


def test_aggs_smoke(tmp_path):
    result = run_suite(tmp_path, "aggs")
    assert result["docs"] == 10000
    names = [c["aggregation"] for c in result["cases"]]
    assert len(names) == 14
    assert all(c["answers_match"] for c in result["cases"])
    assert all(c["ratio"] > 0 for c in result["cases"])


def test_flight_smoke(tmp_path):
    result = run_qbench(tmp_path, "flight", "--rows", "100000", "--iterations", "2", "--check")
    assert result["rows"] == 100000
    assert result["answers_match"] is True
    assert result["ratio"] > 0


def test_distributed_smoke(tmp_path):
    result = run_suite(tmp_path, "distributed")
    assert result["docs"] == 10000
    assert [q["query"] for q in result["queries"]] == ["term_top10", "terms_agg"]
    assert all(q["same_answer"] for q in result["queries"])
    assert all(q["ratio_p50"] > 0 for q in result["queries"])


def test_tpch_smoke(tmp_path):
    """TPC-H at SF 0.01: 22 answers checked against DuckDB on the same data."""
    result = run_qbench(tmp_path, "tpch", "--sf", "0.01", "--iterations", "1")
    assert result["verified"] == 22
    assert len(result["queries"]) == 22
    assert all(q["verified"] and q["datafusion_matches_duckdb"] for q in result["queries"])


def test_search_smoke(tmp_path):
    """The query mix on 10,000 documents: every answer of the HTTP DSL and
    of Flight SQL checked against raw tantivy's, at the three concurrencies."""
    result = run_suite(tmp_path, "search")
    assert result["docs"] == 10000
    names = [q["query"] for q in result["queries"]]
    assert names == [
        "term", "match", "phrase", "bool", "range", "top10_by_score", "top10_by_timestamp", "count",
    ]
    for q in result["queries"]:
        assert q["same_answer"], q["query"]
        assert [r["concurrency"] for r in q["runs"]] == [1, 4, 16]
        for run in q["runs"]:
            for interface in ["http", "flight_sql", "tantivy"]:
                stats = run[interface]
                assert 0 < stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"]
                assert stats["qps"] > 0


def test_report_of_the_committed_results(tmp_path):
    """`qbench report` turns the results in benchmarks/results into
    REPORT.md and one PNG chart per suite."""
    results = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "results")
    done = subprocess.run(
        [QBENCH, "report", "--results", results, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = (tmp_path / "REPORT.md").read_text()
    for chart in ["tpch.png", "tpch-cluster.png", "aggs.png", "search.png", "search-qps.png", "summary.png"]:
        png = tmp_path / chart
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", chart
        assert f"({chart})" in report, chart
    for heading in ["TPC-H", "Aggregations", "Search", "Ingest", "Scan", "Flight", "Distributed"]:
        assert f"## {heading}" in report
    assert "Not run" not in report
