#!/usr/bin/env bash
# Builds and starts the embedded single node (HTTP on 127.0.0.1:9200, data in
# ./quidditch-data). Extra arguments go to `quidditch serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_system_packages protobuf-compiler
exec cargo run --release -p quidditch-server --bin quidditch -- serve "$@"
