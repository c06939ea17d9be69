#!/usr/bin/env bash
# The one test command: installs what is missing, checks formatting and lints,
# and runs the Rust and Python suites.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/quidditch-target}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
VENV="${QUIDDITCH_VENV:-/var/tmp/quidditch-venv}"

install_system_packages protobuf-compiler etcd-server fonts-dejavu-core

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if ! cmp -s python/requirements.txt "$VENV/.requirements.txt"; then
    "$VENV/bin/pip" install -q --disable-pip-version-check -r python/requirements.txt
    cp python/requirements.txt "$VENV/.requirements.txt"
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
echo "== pytest"
# The binaries with the features the test build resolved, so that no
# dependency is compiled twice.
cargo build --workspace --all-targets
QUIDDITCH_BIN="$CARGO_TARGET_DIR/debug/quidditch" QBENCH_BIN="$CARGO_TARGET_DIR/debug/qbench" \
    "$VENV/bin/python" -m pytest -q python/tests
