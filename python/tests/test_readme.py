"""The README's quickstart works verbatim against a running node."""

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def quickstart_steps():
    text = README.read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(bash|text)\n(.*?)\n```", section, flags=re.S)
    steps = []
    for kind, body in blocks:
        if kind == "bash":
            steps.append([body, None])
        elif steps and steps[-1][1] is None:
            steps[-1][1] = body
    return steps


def test_quickstart_runs_verbatim(node):
    steps = quickstart_steps()
    assert len(steps) >= 5, "the quickstart lost its steps"
    assert sum(1 for _, expected in steps if expected) >= 4
    for command, expected in steps:
        command = command.replace("localhost:9200", node.addr)
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{command}\n{done.stderr}"
        if expected is not None:
            assert done.stdout.strip() == expected.strip(), command


def connect_examples():
    text = README.read_text()
    section = text.split("## Connect", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)\n```", section, flags=re.S)


def test_connect_examples_run_in_order(node):
    examples = connect_examples()
    assert len(examples) >= 3, "the Connect section lost its examples"
    flight_addr = node.flight.removeprefix("grpc://")
    for code in examples:
        code = code.replace("localhost:9200", node.addr).replace("localhost:50051", flight_addr)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{code}\n{done.stderr}"
        assert done.stdout.strip(), code
