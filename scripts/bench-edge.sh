#!/usr/bin/env bash
# r1-edge decode throughput, FP32 and INT8, batch 1..32, against a Python onnxruntime loop on the same
# model and prompts, in one run. Results go to stdout as Markdown rows (docs/BENCHMARKS.md quotes them).
#   scripts/bench-edge.sh [--steps 64] [--repeats 3] [--threads 2]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="${R1_CACHE_DIR:-$HOME/.cache/r1-hybrid}"
venv="$cache/bench-venv"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r scripts/bench/requirements.txt
fi
scripts/fetch-onnxruntime.sh >/dev/null
prompts="$(mktemp)"
trap 'rm -f "$prompts"' EXIT
models=(--model "$root/models/r1-edge-mini" --model "$root/models/r1-edge-mini-int8")
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
cargo bench --locked -p r1-edge --bench decode -- "${models[@]}" --dump-prompts "$prompts" "$@"
"$venv/bin/python" scripts/bench/python_decode.py "${models[@]}" --prompts "$prompts" "$@"
