#!/usr/bin/env bash
# The soak: the whole stack at a steady mixed load for a long time, with a fault every few minutes, to
# see what only time shows — memory that grows, work that gets stuck, errors that outlast their fault.
#
# The stack (release builds, loopback, its own Redis and Kafka on free ports via scripts/services.sh):
# r1-gateway (routing mode off, weights 70/30; cache and limits on Redis; center through the Kafka
# hand-off) over two r1-edge members, and one r1-center in front of r1-mock-upstream (the stand-in for
# the big-model API: reasoning, then content). Two r1-loadtest runs share the rate: streams and JSON,
# unique prompts and a few repeated ones (temperature 0: cache hits).
#
# Every --fault-every seconds the next fault of this cycle, with its window logged:
#   edge-kill    SIGKILL one edge member, restarted 20 s later
#   redis-stop   Redis stopped for 20 s (cache misses, local limit fallback)
#   center-kill  SIGKILL r1-center, restarted 5 s later (tasks redelivered)
#   kafka-stop   the broker stopped for 20 s (fast 503s on the center path)
#   reload       the weights edited to 60/40 in the live config, and back 20 s later
#
# Every 10 s it samples each process's RSS and open files, the gateway's requests in flight and the load
# average. The report gives, per 5-minute window, requests, failures and latency, and RSS over time.
# Exits non-zero if a request failed outside a fault's window (a request whose life overlaps a fault, from
# its start to 30 s after its end, is inside it), a stream
# carried a fake [DONE] or ended with neither [DONE] nor an error event, the gateway's RSS grew more than
# 25 % (and 20 MiB) from the end of the first window to the end, or work was still in flight 15 s after
# the load stopped. Figures: docs/RELIABILITY.md ("The soak").
#   scripts/soak.sh [--minutes 30] [--rate 20] [--fault-every 300] [--keep DIR] [--no-build]
#   scripts/soak.sh --report DIR    the report again, over a run kept with --keep DIR
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

minutes=30 rate=20 fault_every=300 keep="" build=1 report_only=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --fault-every) fault_every="$2"; shift 2 ;;
    --keep) keep="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --report) report_only="$2"; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

report() { # dir stuck
  python3 - "$1" "$2" <<'PY'
import json, sys
from collections import defaultdict
work, stuck = sys.argv[1], int(sys.argv[2])
read = lambda path: [json.loads(l) for l in open(path) if l.strip()]
requests = read(f"{work}/requests-stream.jsonl") + read(f"{work}/requests-json.jsonl")
faults = read(f"{work}/faults.jsonl") if __import__("os").path.exists(f"{work}/faults.jsonl") else []
samples = read(f"{work}/samples.jsonl")
begin = min(r["unix_ms"] for r in requests)
# A request is inside a fault's window when its life (scheduled send to end) overlaps the fault, from
# its start to 30 s after its end: one sent just before a broker stops is as affected as one sent after.
def in_fault(r):
    end = r["unix_ms"] + (r["elapsed_ms"] or 0)
    return any(r["unix_ms"] <= f["end_ms"] + 30_000 and end >= f["start_ms"] for f in faults)
pct = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(p * len(xs)))] if xs else 0

print(f"{'window':>8} {'sent':>6} {'ok':>6} {'failed':>6} {'in fault':>8} {'p50 ms':>7} {'p99 ms':>7} {'ttft p50':>8}  routes")
windows = defaultdict(list)
for r in requests:
    windows[(r["unix_ms"] - begin) // 300_000].append(r)
for w in sorted(windows):
    rs = windows[w]
    ok = [r for r in rs if r["ok"]]
    failed = [r for r in rs if not r["ok"]]
    routes = defaultdict(int)
    for r in rs:
        routes[r.get("route") or "none"] += 1
    ttft = [r["ttft_ms"] for r in ok if r.get("ttft_ms") is not None]
    print(f"{w * 5:>3}–{w * 5 + 5:<3}m {len(rs):>6} {len(ok):>6} {len(failed):>6} "
          f"{sum(in_fault(r) for r in failed):>8} {pct([r['elapsed_ms'] for r in ok], 0.5):>7.0f} "
          f"{pct([r['elapsed_ms'] for r in ok], 0.99):>7.0f} {pct(ttft, 0.5):>8.0f}  "
          + ", ".join(f"{k} {v}" for k, v in sorted(routes.items())))
for f in faults:
    print(f"fault {f['fault']:<12} at {(f['start_ms'] - begin) / 60000:5.1f} min, {(f['end_ms'] - f['start_ms']) / 1000:.0f} s")

print("RSS (MiB) at each 5-minute mark:")
by_process = defaultdict(list)
for s in samples:
    if "rss_kib" in s:
        by_process[s["process"]].append(s)
for name, ss in sorted(by_process.items()):
    marks = [ss[0]] + [min(ss, key=lambda s: abs(s["unix_ms"] - begin - m * 300_000)) for m in range(1, 1 + (ss[-1]["unix_ms"] - begin) // 300_000)] + [ss[-1]]
    print(f"  {name:<8} " + " ".join(f"{s['rss_kib'] / 1024:6.1f}" for s in marks) + f"   max {max(s['rss_kib'] for s in ss) / 1024:.1f}, fds last {ss[-1]['fds']}")

problems = []
outside = [r for r in requests if not r["ok"] and not in_fault(r)]
if outside:
    problems.append(f"{len(outside)} request(s) failed outside any fault's window, first: {json.dumps(outside[0])}")
bad_streams = [r for r in requests if r.get("stream") in ("fake_done", "cut")]
if bad_streams:
    problems.append(f"{len(bad_streams)} stream(s) with a fake [DONE] or no end, first: {json.dumps(bad_streams[0])}")
gw = by_process.get("gateway", [])
after_warmup = [s for s in gw if s["unix_ms"] - begin >= 300_000]
if after_warmup:
    first, last = after_warmup[0]["rss_kib"], gw[-1]["rss_kib"]
    print(f"gateway RSS from the 5-minute mark to the end: {first / 1024:.1f} → {last / 1024:.1f} MiB")
    if last > first * 1.25 and last - first > 20 * 1024:
        problems.append(f"the gateway's RSS grew {first / 1024:.1f} → {last / 1024:.1f} MiB")
if stuck:
    problems.append("requests or tasks were still in flight 15 s after the load stopped")
total_failed = sum(not r["ok"] for r in requests)
print(f"requests: {len(requests)} sent, {len(requests) - total_failed} ok, {total_failed} failed "
      f"({total_failed - len(outside)} inside a fault's window)")
for p in problems:
    print(f"FAIL: {p}")
print("PASS" if not problems else "FAILED")
sys.exit(1 if problems else 0)
PY
}

if [[ -n "$report_only" ]]; then
  report "$report_only" 0
  exit $?
fi

(( build )) && cargo build --release --locked -p r1-gateway -p r1-edge -p r1-center -p r1-loadtest \
  -p r1-mock-upstream >/dev/null
bin="target/release"
work="$(mktemp -d)"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Its own Redis and Kafka: free ports and a state directory of its own, so it runs beside the test suite.
export R1_STATE_DIR="$work/services" R1_REDIS_PORT="$(port)" R1_KAFKA_PORT="$(port)" \
  R1_KAFKA_CONTROLLER_PORT="$(port)" R1_KAFKA_SECURE_PORT="$(port)"
declare -A pid=()
cleanup() {
  local status=$?
  for name in "${!pid[@]}"; do kill -INT "${pid[$name]}" 2>/dev/null || true; done
  for name in "${!pid[@]}"; do wait "${pid[$name]}" 2>/dev/null || true; done
  scripts/services.sh down >/dev/null 2>&1 || true
  if [[ $status -ne 0 && -f "$work/gateway.log" ]]; then
    echo "--- last lines of the gateway's log" >&2
    tail -n 20 "$work/gateway.log" >&2
  fi
  if [[ -n "$keep" ]]; then mkdir -p "$keep" && cp -r "$work"/. "$keep"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
now_ms() { date +%s%3N; }
# Polls `probe` every 50 ms for up to `seconds`; fails the script if it never passes.
wait_for() {
  local what="$1" seconds="$2"; shift 2
  local deadline=$(( $(date +%s) + seconds ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) >= deadline )); then echo "timed out waiting for $what" >&2; exit 1; fi
    sleep 0.05
  done
}

scripts/services.sh up >"$work/services.log" 2>&1 || { cat "$work/services.log" >&2; exit 1; }
eval "$(scripts/services.sh env)"

public="127.0.0.1:$(port)"; admin="127.0.0.1:$(port)"
edge_a="127.0.0.1:$(port)"; edge_b="127.0.0.1:$(port)"; model_api="127.0.0.1:$(port)"
center_metrics="127.0.0.1:$(port)"
center_model="deepseek-ai/DeepSeek-R1"

printf '[onnxruntime]\nintra_threads = 1\ninter_threads = 1\n' >"$work/edge.toml"
start_edge() { # name address
  RUST_LOG=warn "$bin/r1-edge" --config "$work/edge.toml" --model models/r1-edge-mini --listen "$2" \
    --served-model-name r1-edge-mini >>"$work/$1.log" 2>&1 &
  pid[$1]=$!
  disown "${pid[$1]}" # killed on purpose: no notice from the shell
}
start_edge edge-a "$edge_a"
start_edge edge-b "$edge_b"
"$bin/r1-mock-upstream" --listen "$model_api" --reasoning 20 --chunks 40 --chunk-delay 20ms \
  --model "$center_model" >"$work/model-api.log" 2>&1 &
pid[model-api]=$!

cat >"$work/center.toml" <<TOML
[node]
id = "soak-center"
max_in_flight = 64
metrics = "$center_metrics"
[backend]
kind = "openai"
base_url = "http://$model_api/v1"
model = "$center_model"
[kafka]
brokers = "$R1_TEST_KAFKA_BROKERS"
client_id = "soak-center"
group = "soak"
session_timeout = "6s"
[redis]
url = "$R1_TEST_REDIS_URL"
TOML
"$bin/r1-center" --config "$work/center.toml" --check-config >/dev/null
start_center() {
  RUST_LOG=info,rdkafka=warn "$bin/r1-center" --config "$work/center.toml" >>"$work/center.log" 2>&1 &
  pid[center]=$!
  disown "${pid[center]}"
}
start_center

gateway_config() { # edge-weight center-weight
  cat >"$work/gateway.toml.new" <<TOML
[listen]
public = "$public"
admin = "$admin"
shutdown_grace = "0s"
shutdown_drain = "5s"
[routing]
mode = "off"
weights = { edge = $1, center = $2 }
[edge]
model = "r1-edge-mini"
members = ["$edge_a", "$edge_b"]
health = { interval = "250ms", healthy_threshold = 2, unhealthy_threshold = 2 }
[center]
transport = "kafka"
model = "$center_model"
[center.kafka]
brokers = "$R1_TEST_KAFKA_BROKERS"
results_partition = 0
result_partitions = 4
send_timeout = "3s"
center_group = "soak"
[redis]
url = "$R1_TEST_REDIS_URL"
timeout = "250ms"
[cache]
enabled = true
[limits]
requests_per_second = 10000
[timeouts]
first_token = "60s"
idle = "30s"
total = "5m"
[auth]
enabled = false
TOML
  mv "$work/gateway.toml.new" "$work/gateway.toml"
}
gateway_config 70 30
"$bin/r1-gateway" --config "$work/gateway.toml" --check-config >/dev/null
RUST_LOG=warn "$bin/r1-gateway" --config "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
pid[gateway]=$!
pools_ready() {
  curl -fsS "http://$admin/admin/pools" | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if all(m["ready"] for p in s["pools"] for m in p["members"]) and (s.get("handoff") or {}).get("ready") else 1)'
}
wait_for "r1-edge members" 60 curl -fsS "http://$edge_a/readyz"
wait_for "r1-edge members" 60 curl -fsS "http://$edge_b/readyz"
wait_for "the gateway" 60 curl -fsS "http://$public/healthz"
wait_for "the pools and the hand-off" 120 pools_ready
wait_for "r1-center in its group" 120 grep -q "r1-center ready" "$work/center.log"

duration=$(( minutes * 60 ))
half=$(python3 -c "print($rate / 2)")
# Unique prompts, and every fifth one of a small set at temperature 0 (cacheable: repeated, so hits).
python3 - "$(( rate * duration + 100 ))" >"$work/prompts.jsonl" <<'PY'
import json, sys
for i in range(int(sys.argv[1])):
    if i % 5 == 0:
        line = {"messages": [{"role": "user", "content": f"What is {i % 20} plus {i % 7}?"}], "temperature": 0}
    else:
        line = {"messages": [{"role": "user", "content": f"Tell me about lighthouse {i} and its keeper."}]}
    print(json.dumps(line))
PY

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -n 1)," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg) before the run"
echo "# soak: $minutes min at $rate req/s (half streams, half JSON, max_tokens 64), a fault every ${fault_every}s"
for kind in stream json; do
  flag=""; [[ $kind == stream ]] && flag="--stream"
  "$bin/r1-loadtest" --url "http://$public" --rate "$half" --duration "${duration}s" --max-tokens 64 $flag \
    --timeout 60s --prompts "$work/prompts.jsonl" --request-log "$work/requests-$kind.jsonl" --json \
    >"$work/report-$kind.json" 2>"$work/loadtest-$kind.err" &
  pid[load-$kind]=$!
done
started=$(date +%s)

sample() {
  local t; t="$(now_ms)"
  for name in gateway center edge-a edge-b; do
    local p="${pid[$name]:-}" rss=0 fds=0
    if [[ -n "$p" && -r "/proc/$p/status" ]]; then
      rss="$(awk '/^VmRSS/ {print $2}' "/proc/$p/status")"
      fds="$(find "/proc/$p/fd" -maxdepth 1 2>/dev/null | wc -l)"
    fi
    printf '{"unix_ms": %s, "process": "%s", "rss_kib": %s, "fds": %s}\n' "$t" "$name" "${rss:-0}" "$fds"
  done >>"$work/samples.jsonl"
  local in_flight
  in_flight="$(curl -fsS "http://$admin/metrics" 2>/dev/null | awk '/^r1_in_flight / {print $2}')"
  printf '{"unix_ms": %s, "process": "gateway", "in_flight": %s, "load1": %s}\n' "$t" "${in_flight:-null}" \
    "$(cut -d' ' -f1 /proc/loadavg)" >>"$work/samples.jsonl"
}
fault_log() { printf '{"fault": "%s", "start_ms": %s, "end_ms": %s}\n' "$1" "$2" "$3" >>"$work/faults.jsonl"; }
run_fault() {
  local kind="$1" start; start="$(now_ms)"
  echo "# $(date -u +%T) fault: $kind"
  case "$kind" in
    edge-kill) kill -KILL "${pid[edge-a]}"; sleep 20; start_edge edge-a "$edge_a" ;;
    redis-stop) scripts/services.sh stop redis >/dev/null 2>&1; sleep 20; scripts/services.sh up redis >/dev/null 2>&1 ;;
    center-kill) kill -KILL "${pid[center]}"; sleep 5; start_center ;;
    kafka-stop) scripts/services.sh stop kafka >/dev/null 2>&1; sleep 20; scripts/services.sh up kafka >/dev/null 2>&1 ;;
    reload) gateway_config 60 40; kill -HUP "${pid[gateway]}"; sleep 20; gateway_config 70 30; kill -HUP "${pid[gateway]}" ;;
  esac
  fault_log "$kind" "$start" "$(now_ms)"
}
faults=(edge-kill redis-stop center-kill kafka-stop reload)
next_fault=$(( started + fault_every )) n=0
# The schedule's clock, not a readiness wait: sample every 10 s, a fault when one is due.
while (( $(date +%s) < started + duration )); do
  sample
  if (( $(date +%s) >= next_fault && $(date +%s) + 60 < started + duration )); then
    run_fault "${faults[$(( n % ${#faults[@]} ))]}"
    n=$(( n + 1 )); next_fault=$(( next_fault + fault_every ))
  fi
  sleep 10
done
for kind in stream json; do wait "${pid[load-$kind]}" || { cat "$work/loadtest-$kind.err" >&2; exit 1; }; unset "pid[load-$kind]"; done
# Nothing stuck: in flight drains to zero once the load stops (polled for up to 15 s).
idle() {
  [[ "$(curl -fsS "http://$admin/metrics" | awk '/^r1_in_flight / {print $2}')" == "0" ]] &&
    [[ "$(curl -fsS "http://$center_metrics/metrics" | awk '/^r1_center_in_flight / {print $2}')" == "0" ]]
}
stuck=0
deadline=$(( $(date +%s) + 15 ))
until idle; do
  if (( $(date +%s) >= deadline )); then stuck=1; break; fi
  sleep 0.2
done
sample

report "$work" "$stuck"
