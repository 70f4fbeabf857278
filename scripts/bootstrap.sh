#!/usr/bin/env bash
# Installs what building and testing r1-hybrid needs on a fresh machine, and nothing that is already there.
#   - Debian packages: a C toolchain, cmake, pkg-config, zlib and OpenSSL's headers (librdkafka is built from
#     source by rdkafka-sys, with TLS and SASL: libssl-dev, found through pkg-config, linked dynamically),
#     python3 + pip (to fetch the ONNX Runtime wheel), Node.js + npm (the end-to-end suite's Node client), and
#     the service packages (via scripts/services.sh install)
#   - the ONNX Runtime shared library, into the cache (scripts/fetch-onnxruntime.sh)
# The Rust toolchain is pinned by rust-toolchain.toml and comes with rustup.
# Idempotent: a second run checks and does nothing.
#   scripts/bootstrap.sh          everything (what `make test` needs)
#   scripts/bootstrap.sh build    only what building and running the demo needs (no Redis/Kafka)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

need=()
for pkg in build-essential cmake pkg-config zlib1g-dev libssl-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# python3 + pip may come from elsewhere (pyenv): ask apt only when they are really missing.
python3 -m pip --version >/dev/null 2>&1 || need+=(python3 python3-pip)
# The end-to-end suite's Node SDK client (any Node >= 18 on PATH will do).
if [[ "${1:-all}" != build ]] && ! { command -v node && command -v npm; } >/dev/null 2>&1; then
  need+=(nodejs npm)
fi
if ((${#need[@]})); then
  echo "bootstrap: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "bootstrap: cargo not found; install rustup (the toolchain is pinned in rust-toolchain.toml)" >&2
  exit 1
fi

if [[ "${1:-all}" != build ]]; then
  "$root/scripts/services.sh" install
fi
"$root/scripts/fetch-onnxruntime.sh" >/dev/null
echo "bootstrap: ready" >&2
