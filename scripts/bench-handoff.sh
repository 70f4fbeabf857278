#!/usr/bin/env bash
# The Kafka hand-off's cost, in one run: added latency against direct HTTP to the same
# center backend, and small tasks per second through one gateway.
#
# One fast backend (r1-mock-upstream, release: a one-token non-streamed answer, no delays) and three
# paths to it, all on loopback, on the real Kafka and Redis of scripts/services.sh:
#   direct  r1-loadtest -> backend
#   http    r1-loadtest -> r1-gateway (center.transport = "http", member = backend) -> backend
#   kafka   r1-loadtest -> r1-gateway (center.transport = "kafka") -> r1.tasks.interactive -> r1-center
#           -> backend, and the chunks back over r1.results
# Every request names the center model, so the gateway pins it to the center (no scoring spread).
#
# Latency: each path at --latency-rate for --duration, --repeats times, back to back per repeat (so
# machine noise hits all alike); medians of p50/p99; "added" = path - direct at the same offered rate.
# Throughput: the kafka path up an offered-rate ladder (--rates); a step is sustained when errors +
# drops stay under 0.1 % — the highest sustained step is the figure.
#
#   scripts/bench-handoff.sh [--latency-rate 200] [--rates "500 1000 2000 4000 8000 12000"]
#                            [--duration 10s] [--repeats 3] [--out DIR]
# Each ladder step also records the CPU time (utime + stime from /proc) of every process on the path
# — gateway, r1-center, the Kafka broker (JVM), Redis, the backend, the load generator — divided by
# the requests answered: where the time goes.
# Prints a Markdown summary on stdout (progress on stderr); raw r1-loadtest JSON reports go to --out
# (default target/bench-handoff/<UTC time>).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

latency_rate=200
rates="500 1000 2000 4000 8000 12000"
duration=10s
repeats=3
out="target/bench-handoff/$(date -u +%Y%m%dT%H%M%SZ)"
while (($#)); do
  case "$1" in
    --latency-rate) latency_rate="$2"; shift 2 ;;
    --rates) rates="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-handoff: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
log() { printf 'bench-handoff: %s\n' "$*" >&2; }

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
suffix="bench$(date +%s)"
backend="127.0.0.1:$(port)"
"$bin/r1-mock-upstream" --listen "$backend" --chunks 1 --text "ok" >"$work/backend.log" 2>&1 &
track $!
wait_for "http://$backend/healthz" backend

center_metrics="127.0.0.1:$(port)"
center_config bench-center "$center_metrics" "$backend" "$model" "bench.$suffix" >"$work/center.toml"
RUST_LOG=warn "$bin/r1-center" --config "$work/center.toml" >"$work/center.log" 2>&1 &
track $!
wait_for "http://$center_metrics/readyz" "r1-center (partitions assigned)"

gateway() { # name transport -> writes config, starts, echoes the public address
  local name="$1" transport="$2" public admin
  public="127.0.0.1:$(port)"
  admin="127.0.0.1:$(port)"
  {
    printf '[listen]\npublic = "%s"\nadmin = "%s"\n[routing]\nmode = "off"\n' "$public" "$admin"
    printf '[edge]\nmembers = ["%s"]\n' "$backend"
    printf '[center]\ntransport = "%s"\nmodel = "%s"\nmembers = ["%s"]\nmax_in_flight = 100000\n' "$transport" "$model" "$backend"
    printf '[auth]\nenabled = false\n'  # the hand-off's cost alone
    if [[ "$transport" == kafka ]]; then
      gateway_kafka "bench.$suffix"
    fi
  } >"$work/gateway-$name.toml"
  RUST_LOG=warn "$bin/r1-gateway" --config "$work/gateway-$name.toml" >"$work/gateway-$name.log" 2>&1 &
  track $!
  wait_for "http://$public/healthz" "gateway ($name)"
  if [[ "$transport" == kafka ]]; then
    local deadline=$((SECONDS + 60))
    until curl -fsS "http://$admin/admin/pools" | grep -q '"ready":true'; do
      ((SECONDS < deadline)) || { log "the Kafka hand-off did not become ready"; exit 1; }
      sleep 0.2
    done
  fi
  echo "$public"
}
gw_http="$(gateway http http)"
gw_kafka="$(gateway kafka kafka)"
declare -A procs=(
  [gateway]="$(pgrep -f "r1-gateway --config $work/gateway-kafka.toml" | head -n 1)"
  [center]="$(pgrep -f "r1-center --config $work/center.toml" | head -n 1)"
  [backend]="$(pgrep -f "r1-mock-upstream --listen $backend" | head -n 1)"
  [kafka]="$(cat .r1/services/kafka/kafka.pid 2>/dev/null || true)"
  [redis]="$(cat .r1/services/redis/redis.pid 2>/dev/null || true)"
)
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
snapshot() { # -> "name=ticks ..." for every process on the path
  local name
  for name in "${!procs[@]}"; do printf '%s=%s ' "$name" "$(ticks "${procs[$name]}")"; done
}

printf '{"model": "%s", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}\n' "$model" >"$work/prompts.jsonl"
run() { # target url rate file
  "$bin/r1-loadtest" --url "$2" --rate "$3" --duration "$duration" --warmup 2s --timeout 10s \
    --prompts "$work/prompts.jsonl" --max-in-flight 4096 --json >"$4"
}
declare -A url=([direct]="http://$backend" [http]="http://$gw_http" [kafka]="http://$gw_kafka")

log "latency: $latency_rate req/s, $duration, $repeats repeats"
for rep in $(seq 1 "$repeats"); do
  for target in direct http kafka; do
    run "$target" "${url[$target]}" "$latency_rate" "$out/latency-$target-$rep.json"
    log "  rep $rep $target done"
  done
done
log "throughput ladder (kafka path): $rates"
for rate in $rates; do
  before="$(snapshot)"
  /usr/bin/time -f '%U %S' -o "$out/ladder-$rate.loadgen" "$bin/r1-loadtest" --url "${url[kafka]}" --rate "$rate" \
    --duration "$duration" --warmup 2s --timeout 10s --prompts "$work/prompts.jsonl" --max-in-flight 4096 --json \
    >"$out/ladder-$rate.json"
  after="$(snapshot)"
  printf '%s\n%s\n%s\n' "$before" "$after" "$(getconf CLK_TCK)" >"$out/ladder-$rate.cpu"
  log "  $rate req/s done"
done

python3 - "$out" "$repeats" "$latency_rate" $rates <<'PY'
import json, statistics, sys
out, repeats, lrate, rates = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
def load(p): return json.load(open(p))
med = lambda xs: statistics.median(xs)
rows = {}
for t in ["direct", "http", "kafka"]:
    rs = [load(f"{out}/latency-{t}-{k}.json") for k in range(1, repeats + 1)]
    rows[t] = {"p50": med([r["latency_ms"]["p50"] for r in rs]), "p99": med([r["latency_ms"]["p99"] for r in rs]),
               "ok": med([r["throughput"] for r in rs]), "bad": sum(r["failed"] + r["dropped"] for r in rs)}
print(f"Latency at {lrate} req/s offered, median of {repeats} runs (ms, from the scheduled send):\n")
print("| path | ok/s | p50 | p99 | added p50 vs direct | added p99 vs direct | failed+dropped |")
print("|---|---:|---:|---:|---:|---:|---:|")
d = rows["direct"]
for t, label in [("direct", "direct to the backend"), ("http", "gateway, HTTP proxy to the backend"), ("kafka", "gateway → Kafka → r1-center → backend")]:
    r = rows[t]
    a50 = "" if t == "direct" else f"{r['p50'] - d['p50']:.2f}"
    a99 = "" if t == "direct" else f"{r['p99'] - d['p99']:.2f}"
    print(f"| {label} | {r['ok']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {a50} | {a99} | {r['bad']} |")
print("\nThroughput of the Kafka path (one gateway, one r1-center, one-token answers):\n")
print("| offered req/s | ok/s | p50 | p99 | failed | dropped | sustained |")
print("|---:|---:|---:|---:|---:|---:|---|")
best = 0
for rate in rates:
    r = load(f"{out}/ladder-{rate}.json")
    bad = r["failed"] + r["dropped"]
    ok = bad <= 0.001 * max(r["scheduled"], 1)
    if ok: best = max(best, r["throughput"])
    l = r["latency_ms"] or {}
    print(f"| {rate} | {r['throughput']:,.0f} | {l.get('p50', 0):.1f} | {l.get('p99', 0):.1f} | {r['failed']} | {r['dropped']} | {'yes' if ok else 'no'} |")
print(f"\nHighest sustained: **{best:,.0f} tasks/s**.")
print("\nCPU per answered request on the Kafka path (µs; utime+stime over the whole step incl. warm-up, / requests answered):\n")
names = ["gateway", "center", "kafka", "redis", "backend", "loadgen"]
print("| offered req/s | " + " | ".join(names) + " | total |")
print("|---:|" + "---:|" * (len(names) + 1))
for rate in rates:
    r = load(f"{out}/ladder-{rate}.json")
    lines = open(f"{out}/ladder-{rate}.cpu").read().split("\n")
    parse = lambda l: dict(kv.split("=") for kv in l.split())
    b, a, hz = parse(lines[0]), parse(lines[1]), float(lines[2])
    answered = max(r["ok"], 1) * (1 + 2 / float(r["duration_s"] or 10))  # warm-up requests too
    us = {n: (float(a[n]) - float(b[n])) / hz * 1e6 / answered for n in a if n in b}
    u, sy = open(f"{out}/ladder-{rate}.loadgen").read().split()[-2:]
    us["loadgen"] = (float(u) + float(sy)) * 1e6 / answered
    print(f"| {rate} | " + " | ".join(f"{us.get(n, 0):.0f}" for n in names) + f" | {sum(us.values()):.0f} |")
PY
