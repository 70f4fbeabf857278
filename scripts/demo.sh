#!/usr/bin/env bash
# The embedded stack demo: builds r1-hybrid, makes sure ONNX Runtime is there, runs `r1-gateway demo`.
# No Kafka or Redis is needed: the embedded default uses an in-process queue and cache.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/fetch-onnxruntime.sh >/dev/null
cargo build --release --locked -p r1-gateway -p r1-edge -p r1-center
exec target/release/r1-gateway demo --models models "$@"
