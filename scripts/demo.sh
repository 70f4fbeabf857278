#!/usr/bin/env bash
# The embedded stack demo (the README's main command): builds r1-hybrid, makes sure ONNX Runtime is
# there, and runs `r1-gateway demo`: the gateway, one r1-edge and a local "center" on loopback with the
# shipped model, a few sample prompts with the route each took, then serving until Ctrl-C.
# No Kafka or Redis is needed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/bootstrap.sh build   # C toolchain, cmake, zlib, python3/pip, the ONNX Runtime library
cargo build --release --locked -p r1-gateway -p r1-edge -p r1-center
exec target/release/r1-gateway demo --config deploy/config/gateway-demo.toml --models models "$@"
