#!/usr/bin/env bash
# Killing the edge member mid-run. Two r1-edge processes on loopback — one serves the
# edge model, the other stands in for the center (transport "http", so both pools are plain HTTP) — behind
# r1-gateway with routing mode "off" and weights 70/30. r1-loadtest streams unique prompts (no sticky
# sessions) at a steady rate, and the edge process is SIGKILLed partway through. The rules it checks:
#   - requests not yet sent upstream fail over to the center (x-r1-route-reason: failover_unhealthy);
#   - streams the edge had already started end with an in-band SSE error event, never a fake [DONE];
#   - once the health checks have had --grace seconds to notice, no new request fails.
# Exits non-zero if any stream carried both an error event and [DONE] (a fake [DONE]) or ended with
# neither, if no request failed over, or if any request scheduled --grace seconds or more after the kill
# failed (or was dropped) other than by a refusal within 1 s (429/503: the survivor shedding what it has no
# room for, r1-edge's server.max_queue_wait). Figures: docs/RELIABILITY.md.
#   scripts/gateway-failover.sh [--rate 20] [--duration 20] [--kill-at 8] [--max-tokens 400] [--grace 2]
#                               [--open-at-kill 3] [--keep DIR] [--no-build]
# --open-at-kill N: after --kill-at seconds, the kill waits (up to 5 s) until the edge has N requests in flight.
# --keep DIR copies the logs, the config, the report and r1-loadtest's per-request log there;
# --no-build runs the binaries already in target/release.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

rate=20 duration=20 kill_at=8 max_tokens=400 grace=2 open_at_kill=3 keep="" build=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rate) rate="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --kill-at) kill_at="$2"; shift 2 ;;
    --max-tokens) max_tokens="$2"; shift 2 ;;
    --grace) grace="$2"; shift 2 ;;
    --open-at-kill) open_at_kill="$2"; shift 2 ;;
    --keep) keep="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

(( build )) && cargo build --release --locked -p r1-gateway -p r1-edge -p r1-loadtest >/dev/null
bin="target/release"
work="$(mktemp -d)"
pids=()
cleanup() {
  local status=$?
  # SIGINT: the fast stop (the gateway's SIGTERM would first wait out its drain grace period).
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ $status -ne 0 && -f "$work/gateway.log" ]]; then
    echo "--- last lines of the gateway's log" >&2
    tail -n 20 "$work/gateway.log" >&2
  fi
  if [[ -n "$keep" ]]; then mkdir -p "$keep" && cp -r "$work"/. "$keep"/; fi
  rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
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
public="127.0.0.1:$(port)"; admin="127.0.0.1:$(port)"; edge="127.0.0.1:$(port)"; center="127.0.0.1:$(port)"
center_model="deepseek-ai/DeepSeek-R1"

# The edge member and the stand-in center: the same tiny model under the two pools' model names. One
# ONNX Runtime thread each: two processes that each take a thread per core fight over them (and over the
# gateway's and the load generator's share) and answer many times slower than one alone.
printf '[onnxruntime]\nintra_threads = 1\ninter_threads = 1\n' >"$work/edge.toml"
RUST_LOG=warn "$bin/r1-edge" --config "$work/edge.toml" --model models/r1-edge-mini --listen "$edge" \
  --served-model-name r1-edge-mini >"$work/edge.log" 2>&1 &
edge_pid=$!; pids+=("$edge_pid")
disown "$edge_pid" # it is meant to die: no "Killed" notice from the shell
RUST_LOG=warn "$bin/r1-edge" --config "$work/edge.toml" --model models/r1-edge-mini --listen "$center" \
  --served-model-name "$center_model" >"$work/center.log" 2>&1 &
pids+=($!)
wait_for "r1-edge on $edge" 60 curl -fsS "http://$edge/readyz"
wait_for "r1-edge on $center" 60 curl -fsS "http://$center/readyz"

cat > "$work/gateway.toml" <<TOML
[listen]
public = "$public"
admin = "$admin"
[routing]
mode = "off"
weights = { edge = 70, center = 30 }
[edge]
model = "r1-edge-mini"
members = ["$edge"]
health = { interval = "250ms", healthy_threshold = 2, unhealthy_threshold = 2 }
[center]
transport = "http"
model = "$center_model"
members = ["$center"]
health = { interval = "250ms", healthy_threshold = 2, unhealthy_threshold = 2 }
[auth]
enabled = false
TOML
"$bin/r1-gateway" --config "$work/gateway.toml" --check-config >/dev/null
RUST_LOG=warn "$bin/r1-gateway" --config "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
pids+=($!)
pools_ready() {
  curl -fsS "http://$admin/admin/pools" | python3 -c '
import json, sys
pools = json.load(sys.stdin)["pools"]
sys.exit(0 if all(m["ready"] for p in pools for m in p["members"]) else 1)'
}
edge_down() {
  curl -fsS "http://$admin/admin/pools" | python3 -c '
import json, sys
edge = next(p for p in json.load(sys.stdin)["pools"] if p["pool"] == "edge")
sys.exit(0 if not any(m["ready"] for m in edge["members"]) else 1)'
}
wait_for "the gateway's public listener" 60 curl -fsS "http://$public/healthz"
wait_for "both pools ready" 60 pools_ready

# Unique prompts (a conversation's tier is sticky), each long enough to be mid-stream at the kill.
python3 -c '
import json, sys
for i in range(int(sys.argv[1])):
    content = f"Write a long story about lighthouse {i} and the keeper who never slept."
    print(json.dumps({"messages": [{"role": "user", "content": content}], "ignore_eos": True}))
' "$(python3 -c "print(int($rate * $duration) + 100)")" >"$work/prompts.jsonl"

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -n 1)," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg) before the run"
echo "# r1-gateway (release, mode off, weights 70/30, health every 250 ms, 2 failures = down) over two r1-edge"
echo "# processes; r1-loadtest --stream at $rate req/s for ${duration}s, max_tokens $max_tokens, ignore_eos;"
echo "# SIGKILL to the edge member at ${kill_at}s or soon after, once it has $open_at_kill requests in flight"
"$bin/r1-loadtest" --url "http://$public" --rate "$rate" --duration "${duration}s" --max-tokens "$max_tokens" \
  --stream --timeout 30s --prompts "$work/prompts.jsonl" --request-log "$work/requests.jsonl" --json \
  >"$work/report.json" 2>"$work/loadtest.err" &
loadtest=$!; pids+=("$loadtest")
sleep "$kill_at" # the drill's schedule, not a readiness wait
# The kill waits (up to 5 s) for a moment when the edge pool has --open-at-kill requests in flight, so
# every run cuts some streams short (the tiny model writes 400 tokens in about 100 ms, so at any instant
# only one or two are open); /admin/pools is polled every 5 ms and the SIGKILL follows the reading at once.
read -r killed_ms in_flight_at_kill < <(python3 - "$admin" "$edge_pid" "$open_at_kill" <<'PY'
import json, os, signal, sys, time, urllib.request
admin, pid, want = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
deadline = time.time() + 5
while True:
    with urllib.request.urlopen(f"http://{admin}/admin/pools", timeout=1) as answer:
        edge = next(p for p in json.load(answer)["pools"] if p["pool"] == "edge")
    if edge["in_flight"] >= want or time.time() >= deadline:
        break
    time.sleep(0.005)
killed = int(time.time() * 1000)
os.kill(pid, signal.SIGKILL)
print(killed, edge["in_flight"])
PY
)
[[ -n "${killed_ms:-}" ]] || { echo "could not read /admin/pools to time the kill" >&2; exit 1; }
wait_for "the health checks to mark the edge down" 10 edge_down
noticed_ms="$(now_ms)"
wait "$loadtest" || { cat "$work/loadtest.err" >&2; exit 1; }

curl -fsS "http://$admin/metrics" | grep -E '^r1_(route_decisions|upstream_errors)_total' >"$work/metrics.txt" || true
python3 - "$work/report.json" "$work/requests.jsonl" "$killed_ms" "$noticed_ms" "$grace" "$work/metrics.txt" \
  "$in_flight_at_kill" <<'PY'
import json, sys
from collections import Counter

report = json.load(open(sys.argv[1]))
entries = [json.loads(line) for line in open(sys.argv[2])]
killed, noticed, grace = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]) * 1000
metrics = open(sys.argv[6]).read().split("\n")

def ends(es):
    c = Counter(e["stream"] or (f"status {e['status']}" if e["status"] else e["error"]) for e in es)
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "-"

def line(label, es):
    routes = Counter((e["route"] or "none", e["reason"] or "-") for e in es)
    by_route = ", ".join(f"{r}/{why} {n}" for (r, why), n in sorted(routes.items())) or "-"
    failed = sum(not e["ok"] for e in es)
    ok = sorted(e["elapsed_ms"] for e in es if e["ok"])
    pct = lambda p: ok[min(len(ok) - 1, int(p * len(ok)))] if ok else 0
    print(f"  {label:<34} {len(es):>5} sent {failed:>4} failed  route/reason: {by_route}")
    print(f"  {'':<34} {'':>22} ends: {ends(es)}; ok latency p50 {pct(0.5):.0f} ms, p99 {pct(0.99):.0f} ms")

before = [e for e in entries if e["unix_ms"] < killed]
after = [e for e in entries if e["unix_ms"] >= killed]
open_at_kill = [e for e in before if e["elapsed_ms"] is not None and e["unix_ms"] + e["elapsed_ms"] > killed]
blind = [e for e in after if e["unix_ms"] < killed + grace]
settled = [e for e in after if e["unix_ms"] >= killed + grace]
streams = report["streams"] or {}
print(f"edge SIGKILLed at {(killed - entries[0]['unix_ms']) / 1000:.2f} s of the run with {sys.argv[7]} requests "
      f"in flight on it; /admin/pools showed it down {noticed - killed} ms later")
line("sent before the kill", before)
line("  of which still open at the kill", open_at_kill)
line("sent after the kill", after)
line(f"  of which in the first {grace / 1000:g} s", blind)
line("  of which after that", settled)
cut_short = [e for e in open_at_kill if e["route"] == "edge" and e["stream"] == "error_event"]
started = sum(e["ttft_ms"] is not None and killed - e["unix_ms"] > e["ttft_ms"] for e in cut_short)
print(f"  edge streams open at the kill that ended with an error event: {len(cut_short)} "
      f"({started} had streamed tokens before the kill, {len(cut_short) - started} only their headers)")
print(f"  streams overall: done {streams.get('done')}, error_event {streams.get('error_event')}, "
      f"fake_done {streams.get('fake_done')}, cut {streams.get('cut')}, connection reset {streams.get('reset')}")
statuses = ", ".join(f"{k} {v}" for k, v in report["statuses"].items())
print(f"  HTTP statuses: {statuses}; dropped {report['dropped']}; "
      f"errors: {json.dumps({**report['errors']['by_status'], **report['errors']['by_kind']})}")
for m in metrics:
    if m and ("failover" in m or "upstream_errors" in m):
        print(f"  gateway metric: {m}")

problems = []
if streams.get("fake_done", 0) or any(e["stream"] == "fake_done" for e in entries):
    problems.append("a stream carried an error event and [DONE] (fake [DONE])")
if streams.get("cut", 0):
    problems.append(f"{streams['cut']} stream(s) ended with neither [DONE] nor an error event")
# A pool with no room left sheds at once (429/503 with Retry-After) rather than letting streams wait past
# their first-token budget: such a fast refusal is an answer, not a failure; anything slower is.
shed = [e for e in settled if not e["ok"] and e["status"] in (429, 503)
        and e["elapsed_ms"] is not None and e["elapsed_ms"] < 1000]
print(f"  shed at once after the grace (429/503 + Retry-After in under 1 s): {len(shed)}")
bad = [e for e in settled if not e["ok"] and e not in shed]
if bad:
    problems.append(f"{len(bad)} request(s) sent {grace / 1000:g} s or more after the kill failed, "
                    f"first: {json.dumps(bad[0])}")
if noticed - killed > grace:
    problems.append(f"the health checks took {noticed - killed} ms to mark the edge down")
if not after or not any(e["reason"] == "failover_unhealthy" for e in after):
    problems.append("no request after the kill was failed over")
for p in problems:
    print(f"FAIL: {p}")
print("PASS" if not problems else "FAILED")
sys.exit(1 if problems else 0)
PY
