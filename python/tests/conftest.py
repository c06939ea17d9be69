"""Fixtures: a real `quidditch serve` process on a free port."""

import json
import os
import subprocess
import tempfile

import pytest
import requests

BIN = os.environ.get("QUIDDITCH_BIN", "quidditch")


class Node:
    def __init__(self, data_dir, *extra_args):
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [
                BIN,
                "serve",
                "--http-addr",
                "127.0.0.1:0",
                "--flight-addr",
                "127.0.0.1:0",
                "--data-dir",
                data_dir,
                *extra_args,
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("quidditch exited before it was ready")
        ready = json.loads(line)
        self.addr = ready["http"]
        self.url = f"http://{self.addr}"
        self.flight = f"grpc://{ready['flight']}"

    def sql(self, query):
        r = requests.post(f"{self.url}/_sql", json={"query": query}, timeout=60)
        r.raise_for_status()
        return r.json()["rows"]

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def node():
    with tempfile.TemporaryDirectory() as d:
        n = Node(d)
        try:
            yield n
        finally:
            n.stop()
