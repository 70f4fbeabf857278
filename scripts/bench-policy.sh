#!/usr/bin/env bash
# The gateway's policy path against its bare proxy path, in one run: what JWT
# verification + limits (counted in Redis) + a cache lookup (in Redis) add per request, and what a
# cache hit costs.
#
# One fast upstream (r1-mock-upstream, release: a small JSON answer, no delay) and two gateways in
# front of it (release, routing off, every request to the edge pool = the upstream), on the real
# Redis of scripts/services.sh:
#   bare    auth off, no per-subject limits, cache off
#   policy  HS256 JWT verified on every request, per-subject rate + concurrency + token limits in
#           Redis (set high: nothing is refused), the exact-match cache in Redis
# Three loads, each at every --rates step, back to back per repeat:
#   bare    unique prompts (temperature 0) through the bare gateway
#   policy  the same prompts through the policy gateway: every request verifies a token, is
#           admitted by the limiter, looks the cache up (a miss), goes upstream and stores its answer
#   hit     one prompt through the policy gateway: after the first, every request is a cache hit
# "added" = policy - bare at the same offered rate. Medians of --repeats.
#
#   scripts/bench-policy.sh [--rates "1000 2500 5000"] [--duration 8s] [--repeats 3] [--out DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

rates="1000 2500 5000"
duration=8s
repeats=3
out="target/bench-policy/$(date -u +%Y%m%dT%H%M%SZ)"
while (($#)); do
  case "$1" in
    --rates) rates="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-policy: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
log() { printf 'bench-policy: %s\n' "$*" >&2; }

log "building release binaries (r1-mock-upstream, r1-gateway, r1-loadtest)"
cargo build --release --locked -p r1-mock-upstream -p r1-gateway -p r1-loadtest >&2
bin="${CARGO_TARGET_DIR:-target}/release"
scripts/services.sh up redis >&2
eval "$(scripts/services.sh env)"

mkdir -p "$out"
# shellcheck source=scripts/lib/loopback.sh
source "$root/scripts/lib/loopback.sh"

upstream="127.0.0.1:$(port)"
"$bin/r1-mock-upstream" --listen "$upstream" --chunks 1 --text "Paris." >"$work/upstream.log" 2>&1 &
track $!
wait_for "http://$upstream/healthz" upstream

secret="bench-policy-$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
printf '%s' "$secret" >"$work/secret"
token="$(python3 "$root/scripts/lib/hs256.py" "$secret" bench 3600)"

gateway() { # name policy? -> public address
  local name="$1" policy="$2" public admin
  public="127.0.0.1:$(port)"
  admin="127.0.0.1:$(port)"
  {
    printf '[listen]\npublic = "%s"\nadmin = "%s"\n[routing]\nmode = "off"\nweights = { edge = 100, center = 0 }\n' "$public" "$admin"
    printf '[edge]\nmembers = ["%s"]\nmax_in_flight = 100000\nhealth = { path = "/healthz", interval = "1s" }\n[center]\nmembers = []\n' "$upstream"
    if [[ "$policy" == yes ]]; then
      printf '[redis]\nurl = "%s"\n' "$R1_TEST_REDIS_URL"
      printf '[auth]\nsecret_file = "%s"\n' "$work/secret"
      printf '[limits]\nrequests_per_second = 1000000\nconcurrent_requests = 100000\ntokens_per_minute = 1000000000\n'
      printf '[cache]\nenabled = true\n'
    else
      printf '[auth]\nenabled = false\n[cache]\nenabled = false\n'
    fi
  } >"$work/gateway-$name.toml"
  RUST_LOG=warn "$bin/r1-gateway" --config "$work/gateway-$name.toml" >"$work/gateway-$name.log" 2>&1 &
  track $!
  wait_for "http://$public/healthz" "gateway ($name)"
  local deadline=$((SECONDS + 30))
  until curl -fsS "http://$admin/admin/pools" | grep -q '"ready":true'; do
    ((SECONDS < deadline)) || { log "gateway ($name): the edge member never became ready"; exit 1; }
    sleep 0.2
  done
  echo "$public"
}
bare="$(gateway bare no)"
policy="$(gateway policy yes)"

python3 - "$work" <<'PY'
import json, sys, uuid
work = sys.argv[1]
run = uuid.uuid4().hex[:8]
# One file per run, every prompt new to the cache (a later run must not hit an earlier run's entries).
for n in range(64):
    with open(f"{work}/unique-{n}.jsonl", "w") as f:
        for i in range(60_000):
            f.write(json.dumps({"model": "r1-edge-mini", "messages": [{"role": "user", "content": f"Question {run}-{n}-{i}: what is the capital of France?"}], "temperature": 0, "max_tokens": 4}) + "\n")
with open(f"{work}/same.jsonl", "w") as f:
    f.write(json.dumps({"model": "r1-edge-mini", "messages": [{"role": "user", "content": f"The cached question {run}"}], "temperature": 0, "max_tokens": 4}) + "\n")
PY

run() { # url prompts rate file
  "$bin/r1-loadtest" --url "$1" --prompts "$2" --rate "$3" --duration "$duration" --warmup 1s --timeout 10s \
    --max-in-flight 4096 --header "authorization: Bearer $token" --json >"$4"
}
n=0
for rep in $(seq 1 "$repeats"); do
  for rate in $rates; do
    run "http://$bare" "$work/unique-$((n % 64)).jsonl" "$rate" "$out/bare-$rate-$rep.json"
    run "http://$policy" "$work/unique-$(((n + 1) % 64)).jsonl" "$rate" "$out/policy-$rate-$rep.json"
    n=$((n + 2))
    run "http://$policy" "$work/same.jsonl" "$rate" "$out/hit-$rate-$rep.json"
    log "  rep $rep at $rate req/s done"
  done
done

python3 - "$out" "$repeats" $rates <<'PY'
import json, statistics, sys
out, repeats, rates = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
med = statistics.median
print(f"Median of {repeats} runs; ms from the scheduled send.\n")
print("| offered req/s | load | ok/s | p50 | p99 | added p50 vs bare | added p99 vs bare | failed+dropped | routes |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---|")
for rate in rates:
    rows = {}
    for t in ["bare", "policy", "hit"]:
        rs = [json.load(open(f"{out}/{t}-{rate}-{k}.json")) for k in range(1, repeats + 1)]
        rows[t] = {
            "ok": med([r["throughput"] for r in rs]),
            "p50": med([(r["latency_ms"] or {}).get("p50", 0) for r in rs]),
            "p99": med([(r["latency_ms"] or {}).get("p99", 0) for r in rs]),
            "bad": sum(r["failed"] + r["dropped"] for r in rs),
            "routes": ",".join(sorted({k for r in rs for k in r["routes"]})),
        }
    b = rows["bare"]
    for t in ["bare", "policy", "hit"]:
        r = rows[t]
        a50 = "" if t == "bare" else f"{r['p50'] - b['p50']:+.2f}"
        a99 = "" if t == "bare" else f"{r['p99'] - b['p99']:+.2f}"
        print(f"| {rate} | {t} | {r['ok']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {a50} | {a99} | {r['bad']} | {r['routes']} |")
PY
