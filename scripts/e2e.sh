#!/usr/bin/env bash
# End-to-end tests with real clients (the official openai Python SDK, requests) against the real
# binaries: installs the pinned clients into a venv in the cache, then runs pytest on scripts/e2e.
# Expects target/debug/r1-gateway to be built (scripts/test.sh builds it) or R1_GATEWAY_BIN.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="${R1_CACHE_DIR:-$HOME/.cache/r1-hybrid}"
venv="$cache/e2e-venv"
stamp="$venv/.requirements"
if [[ ! -x "$venv/bin/python" ]] || ! cmp -s scripts/e2e/requirements.txt "$stamp"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r scripts/e2e/requirements.txt
  cp scripts/e2e/requirements.txt "$stamp"
fi
export R1_GATEWAY_BIN="${R1_GATEWAY_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/r1-gateway}"
exec "$venv/bin/python" -m pytest -q scripts/e2e "$@"
