# The saturation half of scripts/bench-gateway.sh (sourced by it for --saturate; see its --help).
#
# Closed loop: wrk keeps --connections requests out at all times, so each proxy runs as fast as its one
# worker can. Every proxy gets one worker and CPU 1 to itself; wrk and the upstream share CPU 0.
#   upstream  Debian's nginx answering a static chat completion (`return 200`): the fake OpenAI server
#   direct    wrk -> upstream
#   floor     wrk -> r1-pingora-floor (Pingora's ProxyHttp example, one upstream: what Pingora costs)
#   bare      wrk -> r1-gateway (routing off, auth off, cache off) -> upstream
#   policy    wrk -> r1-gateway (HS256 JWT on every request, routing enforce = scoring, hygiene, limits
#             and the result cache in memory: every request a cache miss) -> upstream
#   nginx     wrk -> nginx (worker_processes 1, proxy_pass, upstream keepalive) -> upstream
#   haproxy   wrk -> HAProxy (nbthread 1, http-reuse always) -> upstream
# Every target gets the same requests: a chat body whose prompt carries a counter (so none is a cache
# hit) and a bearer token (ignored where auth is off). Rounds are interleaved (round 1 runs every
# target, then round 2 ...), and each run is a --warmup run (thrown away) and a --duration run.
# Per run: req/s and latency from wrk, the proxy's CPU time per request (utime + stime from /proc, over
# the measured run, divided by the requests wrk completed), its RSS after the run, and the CPU of every
# other process on the machine meanwhile.

sat_connections=64
sat_duration=20
sat_warmup=5
sat_rounds=2
sat_targets="direct floor bare policy nginx haproxy"
sat_perf=0
sat_base=""
sat_args=()
while (($#)); do
  case "$1" in
    --connections) sat_connections="$2"; shift 2 ;;
    --duration) sat_duration="${2%s}"; shift 2 ;;
    --warmup) sat_warmup="${2%s}"; shift 2 ;;
    --rounds | --repeats) sat_rounds="$2"; shift 2 ;;
    --targets) sat_targets="$2"; shift 2 ;;
    --perf) sat_perf=1; shift ;;
    --baseline) sat_base="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) sat_args+=("$1"); shift ;;
  esac
done
((${#sat_args[@]} == 0)) || { log "--saturate: unknown argument ${sat_args[0]} (see --help)"; exit 2; }

# --- what it needs: Debian's nginx, HAProxy and wrk ---------------------------------------------------
missing=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if ((${#missing[@]})); then
  sudo=()
  [[ "$(id -u)" -ne 0 ]] && sudo=(sudo)
  log "installing Debian's ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
haproxy_bin="$(command -v haproxy || echo /usr/sbin/haproxy)"
(($(nproc) >= 2)) || { log "--saturate needs 2 cores (the proxy alone on CPU 1)"; exit 1; }

log "building release binaries (r1-gateway as shipped: --no-default-features; r1-pingora-floor)"
cargo build --release --locked --no-default-features -p r1-gateway -p r1-pingora-floor >&2
bin="${CARGO_TARGET_DIR:-target}/release"

mkdir -p "$out"
# shellcheck source=scripts/lib/loopback.sh
source "$root/scripts/lib/loopback.sh"
gen=(taskset -c 0)
path=(taskset -c 1)
user_line=""
[[ "$(id -u)" -eq 0 ]] && user_line="user root;"

nginx_conf() { # DIR BODY-OF-HTTP-BLOCK: an nginx with one worker, its files under DIR
  mkdir -p "$1/tmp"
  cat >"$1/nginx.conf" <<NGINX
$user_line
worker_processes 1;
worker_rlimit_nofile 16384;
pid $1/nginx.pid;
error_log $1/error.log warn;
daemon off;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $1/tmp/body;
  proxy_temp_path $1/tmp/proxy;
  fastcgi_temp_path $1/tmp/fastcgi;
  uwsgi_temp_path $1/tmp/uwsgi;
  scgi_temp_path $1/tmp/scgi;
  keepalive_requests 1000000;
$2
}
NGINX
}

# --- the upstream: a static chat completion ---------------------------------------------------------
upstream="127.0.0.1:$(port)"
completion='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"r1-edge-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}}'
nginx_conf "$work/upstream" "  server {
    listen $upstream;
    location = /healthz { return 200 ok; }
    location / { default_type application/json; return 200 '$completion'; }
  }"
"${gen[@]}" "$nginx_bin" -p "$work/upstream" -c "$work/upstream/nginx.conf" -e "$work/upstream/error.log" &
track $!
upstream_pid=$!

declare -A url pid
url[direct]="http://$upstream"
pid[direct]=$upstream_pid

# --- the floor: Pingora alone -------------------------------------------------------------------------
start_floor() { # name binary-folder
  local listen
  listen="127.0.0.1:$(port)"
  RUST_LOG=warn "${path[@]}" "$2/r1-pingora-floor" --listen "$listen" --upstream "$upstream" --threads 1 \
    >"$work/$1.log" 2>&1 &
  track $!
  pid[$1]=$!
  url[$1]="http://$listen"
}

# --- the two gateways ----------------------------------------------------------------------------------
secret="bench-saturate-$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
printf '%s' "$secret" >"$work/secret"
token="$(python3 "$root/scripts/lib/hs256.py" "$secret" bench 86400)"
start_gateway() { # name policy? binary-folder
  local name="$1" public admin
  public="127.0.0.1:$(port)"
  admin="127.0.0.1:$(port)"
  {
    printf '[listen]\npublic = "%s"\nadmin = "%s"\nthreads = 1\n' "$public" "$admin"
    if [[ "$2" == yes ]]; then
      printf '[routing]\nmode = "enforce"\nweights = { edge = 100, center = 0 }\n'
    else
      printf '[routing]\nmode = "off"\nweights = { edge = 100, center = 0 }\n'
    fi
    printf '[edge]\nmembers = ["%s"]\nmax_in_flight = 100000\nhealth = { path = "/healthz", interval = "1s" }\n[center]\nmembers = []\n' "$upstream"
    if [[ "$2" == yes ]]; then
      printf '[auth]\nsecret_file = "%s"\n' "$work/secret"
      printf '[limits]\nrequests_per_second = 1000000\nconcurrent_requests = 100000\ntokens_per_minute = 1000000000\n'
      printf '[cache]\nenabled = true\nmax_entries = 100000\n'
    else
      printf '[auth]\nenabled = false\n[cache]\nenabled = false\n'
    fi
  } >"$work/gateway-$name.toml"
  "$3/r1-gateway" --config "$work/gateway-$name.toml" --check-config >"$work/check-$name.log" 2>&1 ||
    { cat "$work/check-$name.log" >&2; exit 1; }
  RUST_LOG=warn "${path[@]}" "$3/r1-gateway" --config "$work/gateway-$name.toml" >"$work/gateway-$name.log" 2>&1 &
  track $!
  pid[$name]=$!
  url[$name]="http://$public"
  local deadline=$((SECONDS + 30))
  until curl -fsS "http://$admin/admin/pools" 2>/dev/null | grep -q '"ready":true'; do
    ((SECONDS < deadline)) || { log "gateway ($name): the edge member never became ready"; exit 1; }
    sleep 0.2
  done
}

# --- nginx and HAProxy as proxies ---------------------------------------------------------------------
nginx="127.0.0.1:$(port)"
nginx_conf "$work/nginx" "  upstream fake { server $upstream; keepalive 128; keepalive_requests 1000000; }
  server {
    listen $nginx;
    location / { proxy_pass http://fake; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; }
  }"
"${path[@]}" "$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
track $!
pid[nginx]=$!
url[nginx]="http://$nginx"

haproxy="127.0.0.1:$(port)"
cat >"$work/haproxy.cfg" <<HAPROXY
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend bench
  bind $haproxy
  default_backend fake
backend fake
  server upstream $upstream maxconn 1024
HAPROXY
"${path[@]}" "$haproxy_bin" -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pid[haproxy]=$!
url[haproxy]="http://$haproxy"
# HAProxy stops on SIGTERM (loopback.sh's cleanup sends SIGINT, which it ignores in the foreground).
trap 'kill -TERM "${pid[haproxy]}" 2>/dev/null || true; cleanup' EXIT

wait_for "http://$upstream/healthz" upstream
for target in $sat_targets; do
  case "$target" in
    floor) start_floor floor "$bin" ;;
    bare) start_gateway bare no "$bin" ;;
    policy) start_gateway policy yes "$bin" ;;
  esac
done
if [[ -n "$sat_base" ]]; then
  # The baseline's binaries beside this build's, in the same rounds: an A/B on one noisy machine.
  with_base=""
  for target in $sat_targets; do
    with_base+=" $target"
    case "$target" in
      floor) start_floor floor-base "$sat_base"; with_base+=" floor-base" ;;
      bare) start_gateway bare-base no "$sat_base"; with_base+=" bare-base" ;;
      policy) start_gateway policy-base yes "$sat_base"; with_base+=" policy-base" ;;
    esac
  done
  sat_targets="${with_base# }"
fi

# --- the requests ---------------------------------------------------------------------------------------
cat >"$work/chat.lua" <<'LUA'
-- A chat request per call, its prompt new each time; the summary as one JSON line.
local n = 0
local token = os.getenv("R1_BENCH_TOKEN") or ""
local run = os.getenv("R1_BENCH_RUN") or ""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token
request = function()
  n = n + 1
  local body = '{"model":"r1-edge-mini","temperature":0,"max_tokens":16,"messages":[{"role":"user","content":"Question '
    .. run .. "-" .. n .. ': what is the capital of France?"}]}'
  return wrk.format(nil, "/v1/chat/completions", nil, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
LUA
probe() { # target: a chat request answered 200
  curl -fsS -o /dev/null -H 'content-type: application/json' -H "authorization: Bearer $token" \
    -d '{"model":"r1-edge-mini","temperature":0,"messages":[{"role":"user","content":"probe"}]}' \
    "${url[$1]}/v1/chat/completions" 2>/dev/null
}
for target in $sat_targets; do
  deadline=$((SECONDS + 30))
  until probe "$target"; do
    ((SECONDS < deadline)) || { log "$target never answered a chat request"; tail -n 20 "$work"/*.log >&2; exit 1; }
    sleep 0.1
  done
done

cpu_model="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
{
  # shellcheck disable=SC1091
  echo "machine: $(nproc) cores ($cpu_model), $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
  echo "versions: nginx $("$nginx_bin" -v 2>&1 | cut -d/ -f2), HAProxy $("$haproxy_bin" -v | head -1 | awk '{print $3}'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), pingora 0.9.1, gateway $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- gateway testkit || echo '+dirty')"
  [[ -n "$sat_base" ]] && echo "baseline (the *-base targets): the binaries in $sat_base"
  echo "load: wrk -t1 -c$sat_connections (Lua body per request), ${sat_warmup}s warm-up then ${sat_duration}s measured, $sat_rounds interleaved rounds"
  echo "cores: wrk and the upstream (nginx, 1 worker, static answer) on CPU 0; each proxy (1 worker) alone on CPU 1"
} >"$out/setup.txt"
log "$(tr '\n' ';' <"$out/setup.txt")"

clk_tck="$(getconf CLK_TCK)"
ticks_of() { # PID: user + system ticks of it and its children (nginx's and HAProxy's workers)
  local total=0 p stat
  for p in "$1" $(pgrep -P "$1" || true); do
    read -r -a stat <"/proc/$p/stat" || continue
    total=$((total + stat[13] + stat[14]))
  done
  echo "$total"
}
rss_of() { # PID: RSS in KiB of it and its children
  local total=0 p kb
  for p in "$1" $(pgrep -P "$1" || true); do
    kb="$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)"
    total=$((total + kb))
  done
  echo "$total"
}
all_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }

run_wrk() { # target seconds -> the RESULT line
  R1_BENCH_TOKEN="$token" R1_BENCH_RUN="$RANDOM$RANDOM" "${gen[@]}" wrk -t1 -c"$sat_connections" -d"${2}s" \
    --timeout 5s -s "$work/chat.lua" "${url[$1]}" | sed -n 's/^RESULT //p'
}

for round in $(seq 1 "$sat_rounds"); do
  for target in $sat_targets; do
    run_wrk "$target" "$sat_warmup" >/dev/null
    p0="$(ticks_of "${pid[$target]}")"
    u0="$(ticks_of "$upstream_pid")"
    a0="$(all_ticks)"
    t0="$(date +%s.%N)"
    result="$(run_wrk "$target" "$sat_duration")"
    t1="$(date +%s.%N)"
    a1="$(all_ticks)"
    p1="$(ticks_of "${pid[$target]}")"
    u1="$(ticks_of "$upstream_pid")"
    rss="$(rss_of "${pid[$target]}")"
    python3 - "$out/$target-$round.json" "$result" "$((p1 - p0))" "$((u1 - u0))" "$((a1 - a0))" "$t0" "$t1" \
      "$clk_tck" "$rss" "$target" "$round" <<'PY' >&2
import json, sys
path, result, proxy, upstream, machine, t0, t1, tck, rss, target, rnd = sys.argv[1:]
r = json.loads(result)
secs = float(t1) - float(t0)
r.update(proxy_ticks=int(proxy), upstream_ticks=int(upstream), machine_ticks=int(machine), seconds=secs,
         clk_tck=int(tck), rss_kib=int(rss), target=target, round=int(rnd))
json.dump(r, open(path, "w"))
rps = r["requests"] / (r["duration_us"] / 1e6)
errors = sum(r[k] for k in ("connect", "read", "write", "status", "timeout"))
us = 1e6 * int(proxy) / int(tck) / max(r["requests"], 1) if target != "direct" else float("nan")
print(f"  round {rnd} {target:<8} {rps:9.0f} req/s  p50 {r['p50_us']/1e3:6.2f}  p99 {r['p99_us']/1e3:6.2f} ms  "
      f"errors {errors}  proxy CPU {us:6.1f} us/req  RSS {int(rss)/1024:5.1f} MiB")
PY
  done
done

if ((sat_perf)) && command -v perf >/dev/null 2>&1; then
  for target in floor bare policy floor-base bare-base policy-base; do
    [[ " $sat_targets " == *" $target "* ]] || continue
    log "perf record on $target at saturation (${sat_duration}s)"
    perf record -q -F 1999 --call-graph dwarf,16384 -o "$out/perf-$target.data" -p "${pid[$target]}" -- \
      sleep "$sat_duration" 2>/dev/null &
    perf_pid=$!
    run_wrk "$target" "$sat_duration" >/dev/null
    wait "$perf_pid" || true
    {
      echo "## $target: by DSO"
      perf report -i "$out/perf-$target.data" --no-children --stdio --sort dso -g none 2>/dev/null | grep -v '^#' | sed '/^$/d' | head -15 || true
      echo "## $target: by symbol (self, ≥ 0.5 %)"
      perf report -i "$out/perf-$target.data" --no-children --stdio --sort symbol -g none --percent-limit 0.5 2>/dev/null | grep -v '^#' | sed '/^$/d' || true
      echo "## $target: inclusive (children), ≥ 2 %"
      perf report -i "$out/perf-$target.data" --children --stdio --sort symbol -g none --percent-limit 2 2>/dev/null | grep -v '^#' | sed '/^$/d' | head -80 || true
      echo "## $target: inclusive, the gateway's own code and the libraries it calls per request, ≥ 0.2 %"
      perf report -i "$out/perf-$target.data" --children --stdio --sort symbol -g none --percent-limit 0.2 2>/dev/null |
        grep -E 'r1_gateway::|r1_proto::|serde_json::|moka::|sha2::|aho_corasick::|jsonwebtoken::|prometheus::|regex|unicode_normalization::' |
        grep -v '(inlined)' | head -80 || true
    } >"$out/perf-$target.txt"
    if command -v inferno-collapse-perf >/dev/null 2>&1 && command -v inferno-flamegraph >/dev/null 2>&1; then
      perf script -i "$out/perf-$target.data" 2>/dev/null | inferno-collapse-perf >"$out/perf-$target.folded" &&
        inferno-flamegraph --title "$target at saturation" <"$out/perf-$target.folded" >"$out/flame-$target.svg"
    fi
    rm -f "$out/perf-$target.data"
  done
fi

# --- summary --------------------------------------------------------------------------------------------
python3 - "$out" "$sat_rounds" $sat_targets <<'PY'
import json, math, statistics, sys
out, rounds, targets = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
runs = {(t, k): json.load(open(f"{out}/{t}-{k}.json")) for t in targets for k in range(1, rounds + 1)}
rps = lambda r: r["requests"] / (r["duration_us"] / 1e6)
cpu = lambda r: 1e6 * r["proxy_ticks"] / r["clk_tck"] / max(r["requests"], 1)
other = lambda r: 100 * max(r["machine_ticks"] - r["proxy_ticks"] - r["upstream_ticks"], 0) / r["clk_tck"] / r["seconds"]
errs = lambda r: sum(r[k] for k in ("connect", "read", "write", "status", "timeout"))
med = statistics.median
print(open(f"{out}/setup.txt").read().strip().replace("\n", "  \n"))
print()
print(f"Medians of {rounds} rounds (best round in brackets). × nginx: the target's req/s over nginx's in the same"
      " round, median of the rounds. CPU µs/req: the proxy's CPU time over the measured run / requests"
      " completed. other: CPU of wrk, the upstream and everything else on the machine, % of one core"
      " (wrk + upstream take most of CPU 0).")
print()
print("| target | req/s | × nginx | CPU µs/req | RSS MiB | p50 ms | p99 ms | errors | other CPU % |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for t in targets:
    rs = [runs[t, k] for k in range(1, rounds + 1)]
    ratio = "–"
    if "nginx" in targets:
        ratio = f"{med([rps(runs[t, k]) / rps(runs['nginx', k]) for k in range(1, rounds + 1)]):.2f}"
    c = "–" if t == "direct" else f"{med([cpu(r) for r in rs]):.1f}"
    print(f"| {t} | {med([rps(r) for r in rs]):,.0f} ({max(rps(r) for r in rs):,.0f}) | {ratio} | {c} | "
          f"{med([r['rss_kib'] for r in rs]) / 1024:.0f} | {med([r['p50_us'] for r in rs]) / 1e3:.2f} | "
          f"{med([r['p99_us'] for r in rs]) / 1e3:.2f} | {sum(errs(r) for r in rs)} | {med([other(r) for r in rs]):.0f} |")
PY
