#!/usr/bin/env bash
# The Kafka hand-off at cold start and while a center node joins, in one run: the latency of tasks sent
# from the moment the stack reports ready, against the same stack warm, and of tasks sent while a
# second r1-center joins under load (a cooperative rebalance).
#
# Per round (--rounds): fresh topics and consumer group; one backend (r1-mock-upstream, release, a
# one-token answer, no delay), one r1-center and one r1-gateway (release), on loopback with the real
# Kafka and Redis of scripts/services.sh. "Ready" is what an orchestrator waits for: the gateway's
# /readyz, r1-center's /readyz (200 once its group assigned it partitions) and the gateway's view of the
# center nodes (/admin/pools: handoff.consumers). Then, back to back:
#   cold   --rate req/s for --duration, the first request sent the moment the stack is ready (no warm-up)
#   warm   the same again
#   join   the same, with a second r1-center started as it begins
# With --ready healthz the script waits for r1-center's /healthz instead (its listener only, which opens
# before the node has joined its group) and skips the gateway's view: what waiting on liveness costs.
#
#   scripts/bench-coldstart.sh [--rounds 3] [--rate 200] [--duration 8s] [--ready readyz|healthz] [--out DIR]
#
# Prints a Markdown summary on stdout (medians over the rounds; progress on stderr); raw r1-loadtest
# JSON reports go to --out (default target/bench-coldstart/<UTC time>).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

rounds=3
rate=200
duration=8s
ready=readyz
out="target/bench-coldstart/$(date -u +%Y%m%dT%H%M%SZ)"
while (($#)); do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --ready) ready="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-coldstart: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$ready" == readyz || "$ready" == healthz ]] || { echo "bench-coldstart: --ready readyz|healthz" >&2; exit 2; }
log() { printf 'bench-coldstart: %s\n' "$*" >&2; }

log "building release binaries (r1-mock-upstream, r1-gateway, r1-center, r1-loadtest)"
cargo build --release --locked -p r1-mock-upstream -p r1-gateway -p r1-center -p r1-loadtest >&2
bin="${CARGO_TARGET_DIR:-target}/release"
scripts/services.sh up >&2
eval "$(scripts/services.sh env)"
mkdir -p "$out"
# shellcheck source=scripts/lib/loopback.sh
source "$root/scripts/lib/loopback.sh"
# shellcheck source=scripts/lib/handoff.sh
source "$root/scripts/lib/handoff.sh"

model="deepseek-ai/DeepSeek-R1"
backend="127.0.0.1:$(port)"
"$bin/r1-mock-upstream" --listen "$backend" --chunks 1 --text "ok" >"$work/backend.log" 2>&1 &
track $!
wait_for "http://$backend/healthz" backend
printf '{"model": "%s", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}\n' "$model" >"$work/prompts.jsonl"

until_ok() { # URL WHAT: poll until 2xx (60 s), 20 ms apart
  local deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || { log "$2 not ready ($1)"; exit 1; }
    sleep 0.02
  done
}

until_pools() { # ADMIN PATTERN WHAT: poll the gateway's /admin/pools until it shows PATTERN (60 s)
  local deadline=$((SECONDS + 60))
  until curl -fsS "http://$1/admin/pools" | grep -q "$2"; do
    ((SECONDS < deadline)) || { log "$3 not ready"; exit 1; }
    sleep 0.02
  done
}

center() { # suffix id -> starts a node, echoes its metrics address
  local suffix="$1" id="$2" metrics
  metrics="127.0.0.1:$(port)"
  center_config "$id" "$metrics" "$backend" "$model" "cold.$suffix" >"$work/center-$suffix-$id.toml"
  RUST_LOG=warn,r1_center=info "$bin/r1-center" --config "$work/center-$suffix-$id.toml" >"$work/center-$suffix-$id.log" 2>&1 &
  track $!
  echo "$metrics"
}

run() { # url file (a .json report; each request's timings beside it, .requests.jsonl)
  "$bin/r1-loadtest" --url "$1" --rate "$rate" --duration "$duration" --warmup 0s --timeout 30s \
    --prompts "$work/prompts.jsonl" --max-in-flight 4096 --request-log "${2%.json}.requests.jsonl" --json >"$2"
}

for round in $(seq 1 "$rounds"); do
  suffix="r$round$(date +%s%N | tail -c 7)"
  public="127.0.0.1:$(port)"
  admin="127.0.0.1:$(port)"
  {
    printf '[listen]\npublic = "%s"\nadmin = "%s"\n[routing]\nmode = "off"\n' "$public" "$admin"
    printf '[edge]\nmembers = ["%s"]\n' "$backend"
    printf '[center]\ntransport = "kafka"\nmodel = "%s"\nmax_in_flight = 100000\n' "$model"
    printf '[auth]\nenabled = false\n'
    gateway_kafka "cold.$suffix"
  } >"$work/gateway-$suffix.toml"
  started=$SECONDS
  RUST_LOG=warn "$bin/r1-gateway" --config "$work/gateway-$suffix.toml" >"$work/gateway-$suffix.log" 2>&1 &
  gateway_pid=$!
  track "$gateway_pid"
  first="$(center "$suffix" a)"
  until_ok "http://$public/readyz" "gateway"
  if [[ "$ready" == readyz ]]; then
    until_ok "http://$first/readyz" "r1-center"
    until_pools "$admin" '"consumers":true' "the gateway's view of the center node"
  else
    until_ok "http://$first/healthz" "r1-center (listener)"
    until_pools "$admin" '"ready":true' "the gateway's hand-off"
  fi
  log "round $round: stack ready after $((SECONDS - started)) s (waited on r1-center's /$ready)"
  run "http://$public" "$out/cold-$round.json"
  run "http://$public" "$out/warm-$round.json"
  center "$suffix" b >/dev/null
  run "http://$public" "$out/join-$round.json"
  grep -q "r1-center ready" "$work/center-$suffix-b.log" ||
    log "round $round: the second node had not joined by the end of the phase (a longer --duration shows it)"
  log "round $round done"
  kill -INT "$gateway_pid" 2>/dev/null || true
done

python3 - "$out" "$rounds" "$rate" "$duration" "$ready" <<'PY'
import json, statistics, sys
out, rounds, rate, duration, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
med = statistics.median
rows = {}
for phase in ["cold", "warm", "join"]:
    rs = [json.load(open(f"{out}/{phase}-{k}.json")) for k in range(1, rounds + 1)]
    lat = [r["latency_ms"] or {} for r in rs]
    rows[phase] = {
        "ok": med([r["ok"] for r in rs]),
        "p50": med([l.get("p50", 0) for l in lat]),
        "p99": med([l.get("p99", 0) for l in lat]),
        "max": med([l.get("max", 0) for l in lat]),
        "worst": max(l.get("max", 0) for l in lat),
        "bad": sum(r["failed"] + r["dropped"] for r in rs),
    }
print(f"Hand-off latency from the moment the stack is ready (waiting on r1-center's /{ready}); {rate} req/s for "
      f"{duration} per phase, medians of {rounds} rounds (ms, from the scheduled send):\n")
print("| phase | ok | p50 | p99 | max | worst max | failed+dropped |")
print("|---|---:|---:|---:|---:|---:|---:|")
labels = {"cold": "cold: sent from ready", "warm": "warm: right after", "join": "a second node joins"}
for phase, r in rows.items():
    print(f"| {labels[phase]} | {r['ok']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.1f} | {r['worst']:.1f} | {r['bad']} |")
w = rows["warm"]["p99"] or 1e-9
print(f"\ncold p99 / warm p99 = **{rows['cold']['p99'] / w:.2f}×**; join p99 / warm p99 = **{rows['join']['p99'] / w:.2f}×**")
PY
