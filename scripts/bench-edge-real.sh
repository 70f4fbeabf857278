#!/usr/bin/env bash
# r1-edge on the full-size random-weight exports of models/build/real/ (Qwen2.5-0.5B-Instruct and
# DeepSeek-R1-Distill-Qwen-1.5B shapes): decode tokens/s by batch, dtype and graph layout, against
# onnxruntime-genai's own generator (on its builder's graph) and a plain Python onnxruntime loop (on
# Optimum's), resident memory and KV bytes per row, and a long prompt joining a decoding batch.
#
#   scripts/bench-edge-real.sh [--rounds 2] [--steps 16] [--threads 2] [--spin on|off] [--out DIR] [--max-wait 1500]
#                              [--only 0.5b,spin,1.5b,join,threads]
#
# Every configuration runs in a process of its own (its memory is its own), once per round, the
# configurations interleaved; the report takes the median over rounds. Before each run the load
# (/proc/loadavg) and any test suite or compiler running on the machine is recorded; while one runs,
# the script waits (at most --max-wait seconds in all), then measures anyway. Builds the exports
# with models/build/real/make.sh when missing. Results: DIR/results.jsonl, DIR/report.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="${R1_CACHE_DIR:-$HOME/.cache/r1-hybrid}"
models="$cache/real-models"
venv="${R1_REAL_VENV:-$cache/real-venv}"
genai_venv="${R1_REAL_GENAI_VENV:-$cache/real-genai-venv}"
rounds=2 steps=16 threads=2 spin=on out="" max_wait=1500 only="0.5b,spin,1.5b,join,threads"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --spin) spin="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --max-wait) max_wait="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
out="${out:-$cache/bench-edge-real/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
results="$out/results.jsonl"
q05=qwen2.5-0.5b-instruct
d15=deepseek-r1-distill-qwen-1.5b
want() { [[ ",$only," == *",$1,"* ]]; }

# The exports, built when missing (the 1.5B INT8 quantization peaks at ~21 GB resident).
need() { # name layout dtypes
  local missing=()
  for d in ${3//,/ }; do [[ -f "$models/$1-$2-$d/model.onnx" ]] || missing+=("$d"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  local list; list="$(IFS=,; echo "${missing[*]}")"
  bash models/build/real/make.sh --only "$1" --layouts "$2" "--$2-dtypes" "$list"
}
if want 0.5b || want join || want threads; then
  need "$q05" optimum fp32,fp16,int8
  need "$q05" genai fp32,int4
fi
if want 1.5b; then
  need "$d15" optimum fp32,int8
fi

scripts/fetch-onnxruntime.sh >/dev/null
cargo build --release --locked -p r1-edge --bench decode >/dev/null 2>"$out/build.log" || { cat "$out/build.log" >&2; exit 1; }
bench="$(ls -t "${CARGO_TARGET_DIR:-$root/target}"/release/deps/decode-* | grep -v '\.d$' | head -1)"

# Waits while a test suite or a compiler runs (up to max_wait seconds over the whole run), then
# records the load next to the configuration about to be measured.
waited=0
gate() { # label
  local busy
  while busy="$(pgrep -f 'cargo test|scripts/test.sh|rustc' | tr '\n' ' ')" && [[ -n "$busy" && $waited -lt $max_wait ]]; do
    sleep 20; waited=$((waited + 20))
  done
  printf '{"tool": "load", "label": "%s", "loadavg": "%s", "busy_pids": "%s", "waited_s": %d, "at": "%s"}\n' \
    "$1" "$(cut -d' ' -f1-3 /proc/loadavg)" "${busy:-}" "$waited" "$(date -u +%T)" >>"$results"
}
edge() { # label dir [extra bench args...]
  local label="$1" dir="$2"; shift 2
  gate "r1-edge $label"
  "$bench" --model "$dir" --engine-only --threads "$threads" --spin "$spin" --steps "$steps" --repeats 1 \
    --dump-prompts "$out/prompts.json" --jsonl "$results" "$@" | tee -a "$out/log.md"
}
genai() { # label dir batches
  gate "onnxruntime-genai $1"
  "$genai_venv/bin/python" scripts/bench/genai_decode.py --model "$2" --prompts "$out/prompts.json" \
    --batches "$3" --steps "$steps" --repeats 1 --threads "$threads" --jsonl "$results" | tee -a "$out/log.md"
}
pyloop() { # label dir batches
  gate "python-ort $1"
  "$venv/bin/python" scripts/bench/python_decode.py --model "$2" --prompts "$out/prompts.json" \
    --batches "$3" --steps "$steps" --repeats 1 --threads "$threads" --jsonl "$results" | tee -a "$out/log.md"
}

{
  echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
  echo "# rounds $rounds, steps $steps, threads $threads"
} | tee "$out/log.md"
all=1,4,8,16,32
for round in $(seq "$rounds"); do
  echo "## round $round" | tee -a "$out/log.md"
  if want 0.5b; then
    for v in optimum-fp32 genai-fp32 optimum-int8 genai-int4; do
      edge "$q05-$v" "$models/$q05-$v" --batches "$all"
      case "$v" in
        genai-*) genai "$q05-$v" "$models/$q05-$v" "$all" ;;
        optimum-fp32) pyloop "$q05-$v" "$models/$q05-$v" "$all" ;;
      esac
    done
    edge "$q05-optimum-fp16" "$models/$q05-optimum-fp16" --batches 1,8
  fi
  if want spin; then # ONNX Runtime's spin-wait on and off, one after the other
    for v in optimum-int8 genai-fp32; do
      for s in on off; do
        edge "$q05-$v spin $s" "$models/$q05-$v" --batches 1,16 --spin "$s"
      done
    done
  fi
  if want 1.5b; then
    for v in optimum-fp32 optimum-int8; do
      edge "$d15-$v" "$models/$d15-$v" --batches 1,8 --steps 8
    done
  fi
done
if want threads; then
  for t in 1 2; do
    threads=$t edge "$q05-optimum-int8 threads $t" "$models/$q05-optimum-int8" --batches 1,16
  done
fi
if want join; then
  for v in optimum-fp32 genai-fp32; do
    edge "$q05-$v join" "$models/$q05-$v" --batches 1 --join 2048 --join-rows 4
  done
fi
"$venv/bin/python" scripts/bench/edge_real_report.py "$results" | tee "$out/report.md"
echo "results: $out" >&2
