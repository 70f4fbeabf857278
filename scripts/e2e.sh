#!/usr/bin/env bash
# End-to-end tests with real clients against the real binaries: the official openai Python SDK,
# requests, LangChain (langchain-openai), LiteLLM, the official openai Node SDK, and protocol checks
# ported from vLLM's OpenAI-server tests. Installs the pinned clients into the cache (a Python venv from
# scripts/e2e/requirements.txt, node_modules from scripts/e2e/node/package-lock.json; each re-installed
# only when its pins change), then runs pytest on scripts/e2e with any arguments given:
#   scripts/e2e.sh                 everything
#   scripts/e2e.sh -k vllm -x      pytest's selection and flags
# Expects target/debug/r1-gateway to be built (scripts/test.sh builds it) or R1_GATEWAY_BIN.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="${R1_CACHE_DIR:-$HOME/.cache/r1-hybrid}"

venv="$cache/e2e-venv"
stamp="$venv/.requirements"
if [[ ! -x "$venv/bin/python" ]] || ! cmp -s scripts/e2e/requirements.txt "$stamp"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/e2e/requirements.txt
  cp scripts/e2e/requirements.txt "$stamp"
fi

# Node.js for the Node SDK comes from scripts/bootstrap.sh (which scripts/test.sh runs first).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "e2e: node and npm are missing: run scripts/bootstrap.sh" >&2
  exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if ((node_major < 18)); then
  echo "e2e: Node.js $(node --version) is too old for the pinned openai SDK; Node 18 or later is needed" >&2
  exit 1
fi
node_dir="$cache/e2e-node"
node_pins="$(cat scripts/e2e/node/package.json scripts/e2e/node/package-lock.json)"
if [[ ! -d "$node_dir/node_modules/openai" ]] || [[ "$(cat "$node_dir/.pins" 2>/dev/null)" != "$node_pins" ]]; then
  mkdir -p "$node_dir"
  rm -f "$node_dir/.pins"
  cp scripts/e2e/node/package.json scripts/e2e/node/package-lock.json "$node_dir/"
  (cd "$node_dir" && npm ci --silent --no-audit --no-fund)
  printf '%s' "$node_pins" >"$node_dir/.pins"
fi
export R1_E2E_NODE_MODULES="$node_dir/node_modules"

export R1_GATEWAY_BIN="${R1_GATEWAY_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/r1-gateway}"
exec "$venv/bin/python" -m pytest -q scripts/e2e "$@"
