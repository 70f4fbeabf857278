#!/usr/bin/env bash
# The gateway's proxy path against going direct and against nginx (and, with --saturate, a bare Pingora,
# the policy path and HAProxy), in one run.
#
# One fast upstream (r1-mock-upstream, release: a small non-streamed JSON answer, no delays) and three
# targets in front of it, all on loopback:
#   direct   r1-loadtest -> upstream
#   gateway  r1-loadtest -> r1-gateway (release; routing off, every request to the edge pool whose only
#            member is the upstream) -> upstream
#   nginx    r1-loadtest -> Debian's nginx (proxy_pass, upstream keepalive, HTTP/1.1 upstream,
#            proxy_buffering off; own config, pid and logs in a temp dir) -> upstream
# Each step of the offered-rate ladder runs every target back to back (so machine noise hits all three
# alike), --repeats times; the summary takes medians. r1-loadtest is open loop: latency runs from each
# request's scheduled send time, and a request that finds --max-in-flight already out is dropped.
#
# Cores: with 2 or more, the load generator is pinned to CPU 0 and the proxy + upstream share CPU 1
# (taskset), so the generator's own work never competes with the path it measures. The gateway runs
# Pingora's 2 worker threads (listen.threads defaults to the core count) and nginx gets worker_processes 2 to
# match; the upstream gets 1 runtime thread. Upstream keep-alive is the same size on both: Pingora's
# connection pool holds 128 idle connections (ServerConf::upstream_keepalive_pool_size, its default; the
# gateway does not set it), nginx's `keepalive` is per worker, so 64 × 2 workers.
#
# Each run also reads the CPU time (utime + stime from /proc) the proxy's and the upstream's processes
# spent, divided by the requests the upstream saw (its /stats): CPU µs per request; and the CPU every
# process outside this script spent meanwhile ("other CPU", % of one core): a build running beside the
# benchmark shows there, and rows with much of it are not to be trusted.
#
#   scripts/bench-gateway.sh [--rates "1000 2000 4000 8000"] [--duration 4s] [--warmup 1s]
#                            [--repeats 5] [--no-pin] [--perf RATE] [--out DIR]
#   scripts/bench-gateway.sh --summarize DIR      # the summary of an earlier run's reports, again
# --perf RATE: after the ladder, `perf record -g` the gateway and then nginx for one run each at RATE;
# the reports go to --out as perf-{gateway,nginx}.txt.
# Prints a Markdown summary on stdout (progress on stderr); raw r1-loadtest JSON reports go to --out
# (default target/bench-gateway/<UTC time>).
#
#   scripts/bench-gateway.sh --saturate [--connections 64] [--duration 20s] [--warmup 5s] [--rounds 2]
#                            [--targets "direct floor bare policy nginx haproxy"] [--baseline DIR]
#                            [--perf] [--out DIR]
# --saturate: the closed-loop comparison instead of the ladder — one worker per proxy, alone on CPU 1;
# wrk -t1 and a static nginx upstream on CPU 0; targets direct, floor (r1-pingora-floor: Pingora's own
# proxy example, what Pingora costs), bare and policy r1-gateways, nginx and HAProxy, interleaved
# rounds; req/s, × nginx, CPU µs per request, RSS, p50/p99 (scripts/lib/bench-saturate.sh says how).
# --baseline DIR: also run the r1-gateway and r1-pingora-floor binaries in DIR (an earlier build, copied
# there) as floor-base, bare-base and policy-base, in the same rounds: an A/B of two builds in one run.
# --perf: then `perf record` (DWARF call graphs) the floor and both gateways at saturation; reports in
# --out as perf-<target>.txt (and flame-<target>.svg when inferno is installed: cargo install inferno).
# Installs Debian's nginx, haproxy and wrk when missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [[ "${1:-}" == --saturate ]]; then
  shift
  out="target/bench-gateway/saturate-$(date -u +%Y%m%dT%H%M%SZ)"
  log() { printf 'bench-gateway: %s\n' "$*" >&2; }
  # shellcheck source=scripts/lib/bench-saturate.sh
  source "$root/scripts/lib/bench-saturate.sh"
  exit 0
fi

rates="1000 2000 4000 8000 12000 16000 24000"
duration=4s
warmup=1s
repeats=5
pin=1
perf_rate=""
out="target/bench-gateway/$(date -u +%Y%m%dT%H%M%SZ)"
summarize_only=0
while (($#)); do
  case "$1" in
    --rates) rates="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --no-pin) pin=0; shift ;;
    --perf) perf_rate="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --summarize) out="$2"; summarize_only=1; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-gateway: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
log() { printf 'bench-gateway: %s\n' "$*" >&2; }

# The Markdown summary of the reports in a run's folder (medians over its repeats).
summarize() {
  python3 - "$1" <<'PY'
import json, os, statistics, sys

out = sys.argv[1]
targets = ["direct", "gateway", "nginx"]
names = [f[:-5].split("-") for f in os.listdir(out) if f.startswith("direct-") and f.endswith(".json")
         and not f.endswith(".cpu.json")]
rates = sorted({n[1] for n in names}, key=float)
repeats = max(int(n[2]) for n in names)

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

cells = {}
for t in targets:
    for rate in rates:
        reports = [json.load(open(f"{out}/{t}-{rate}-{k}.json")) for k in range(1, repeats + 1)]
        lat = [r["latency_ms"] or {} for r in reports]
        cpus = [json.load(open(f"{out}/{t}-{rate}-{k}.cpu.json")) for k in range(1, repeats + 1)]
        us = lambda c, key: 1e6 * c[key] / c["clk_tck"] / max(c["requests"], 1)
        cells[t, rate] = {
            "ok_s": med([r["throughput"] for r in reports]),
            "p50": med([l.get("p50") for l in lat]),
            "p99": med([l.get("p99") for l in lat]),
            "p99_best": min([l["p99"] for l in lat if l.get("p99") is not None], default=None),
            "bad": med([(r["failed"] + r["dropped"]) / max(r["scheduled"], 1) for r in reports]),
            "lag": med([r["max_send_lag_ms"] for r in reports]),
            "proxy_us": med([us(c, "proxy_ticks") for c in cpus]),
            "upstream_us": med([us(c, "upstream_ticks") for c in cpus]),
            "other": med([100 * c["other_ticks"] / c["clk_tck"] / c["seconds"] for c in cpus if "other_ticks" in c]),
        }

def sustained(t, rate):
    c = cells[t, rate]
    return c["bad"] <= 0.001 and c["ok_s"] >= 0.97 * float(rate)

def f(x, spec=".2f"):
    return "–" if x is None else format(x, spec)

print(open(f"{out}/setup.txt").read().strip().replace("\n", "  \n"))
print()
print("Median of %d repeats per cell. ok/s: responses per second; p50/p99 from the scheduled send (ms);"
      " +p50/+p99: added over direct at the same offered rate; ✗ = not sustained (errors/drops > 0.1 %%"
      " or ok/s < 97 %% of offered); CPU µs/req: CPU time of the proxy's processes (direct: none, –) and"
      " of the upstream per request the upstream served; other CPU: every other process on the machine"
      " meanwhile, %% of one core; best p99: the lowest p99 of the repeats, the least disturbed by other"
      " processes." % repeats)
print()
print("| offered req/s | target | ok/s | p50 | p99 | +p50 | +p99 | errors+drops | gen lag ms | proxy CPU µs/req | upstream CPU µs/req | other CPU | best p99 | +best p99 |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for rate in rates:
    d = cells["direct", rate]
    for t in targets:
        c = cells[t, rate]
        add50 = None if t == "direct" or c["p50"] is None or d["p50"] is None else c["p50"] - d["p50"]
        add99 = None if t == "direct" or c["p99"] is None or d["p99"] is None else c["p99"] - d["p99"]
        add99b = None if t == "direct" or c["p99_best"] is None or d["p99_best"] is None else c["p99_best"] - d["p99_best"]
        mark = "" if sustained(t, rate) else " ✗"
        print(f"| {rate} | {t}{mark} | {c['ok_s']:,.0f} | {f(c['p50'])} | {f(c['p99'])} | {f(add50)} | {f(add99)}"
              f" | {100 * c['bad']:.1f} % | {c['lag']:.1f} | {'–' if t == 'direct' else f(c['proxy_us'], '.1f')}"
              f" | {f(c['upstream_us'], '.1f')} | {f(c['other'], '.0f')} % | {f(c['p99_best'])} | {f(add99b)} |")

print()
best = {t: max((cells[t, r]["ok_s"] for r in rates)) for t in targets}
top = {t: max([float(r) for r in rates if sustained(t, r)] or [0.0]) for t in targets}
common = [r for r in rates if all(sustained(t, r) for t in targets)]
print("| target | highest sustained offered rate | peak ok/s |")
print("|---|---:|---:|")
for t in targets:
    print(f"| {t} | {top[t]:,.0f} | {best[t]:,.0f} |")
print()
if best["nginx"]:
    print(f"- gateway/nginx peak ok/s: **{best['gateway'] / best['nginx']:.2f}×** (target ≥ 0.8×); "
          f"highest sustained rate: {top['gateway']:,.0f} vs {top['nginx']:,.0f} req/s")
for label, rate in (("lowest", common[0] if common else None), ("highest", common[-1] if common else None)):
    if rate is None:
        continue
    d, g, n = (cells[t, rate] for t in targets)
    g99, n99 = g["p99"] - d["p99"], n["p99"] - d["p99"]
    g50, n50 = g["p50"] - d["p50"], n["p50"] - d["p50"]
    ratio = f"{g99 / n99:.2f}×" if n99 > 0 else "n/a (nginx adds nothing at p99)"
    gb, nb = g["p99_best"] - d["p99_best"], n["p99_best"] - d["p99_best"]
    ratio_best = f"{gb / nb:.2f}×" if nb > 0 else "n/a (nginx adds nothing)"
    print(f"- at {rate} req/s ({label} rate all three sustain): added p50 gateway {g50:.2f} ms vs nginx {n50:.2f} ms; "
          f"added p99 gateway {g99:.2f} ms vs nginx {n99:.2f} ms → gateway/nginx p99 added **{ratio}** (target ≤ 1.2×); "
          f"best-of-repeats p99 added gateway {gb:.2f} ms vs nginx {nb:.2f} ms → **{ratio_best}**")
PY
}

if ((summarize_only)); then
  summarize "$out"
  exit 0
fi

# --- what it needs --------------------------------------------------------------------------------
nginx_bin="$(command -v nginx || true)"
[[ -z "$nginx_bin" && -x /usr/sbin/nginx ]] && nginx_bin=/usr/sbin/nginx
if [[ -z "$nginx_bin" ]]; then
  sudo=()
  [[ "$(id -u)" -ne 0 ]] && sudo=(sudo)
  log "installing Debian's nginx"
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
  nginx_bin=/usr/sbin/nginx
fi
command -v taskset >/dev/null 2>&1 || pin=0
(($(nproc) >= 2)) || pin=0
log "building release binaries (r1-mock-upstream, r1-gateway, r1-loadtest)"
cargo build --release --locked -p r1-mock-upstream -p r1-gateway -p r1-loadtest >&2
bin="${CARGO_TARGET_DIR:-target}/release"

mkdir -p "$out"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# CPU sets: the load generator alone on one core, the path under test (proxy + upstream) on the other.
if ((pin)); then
  gen=(taskset -c 0)
  path=(taskset -c 1)
else
  gen=()
  path=()
fi
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
upstream="127.0.0.1:$(port)"
gateway="127.0.0.1:$(port)"
admin="127.0.0.1:$(port)"
nginx="127.0.0.1:$(port)"

# --- the upstream -----------------------------------------------------------------------------------
"${path[@]}" "$bin/r1-mock-upstream" --listen "$upstream" --chunks 1 --text "Paris." --threads 1 \
  2>"$work/upstream.log" &
upstream_pid=$!
pids+=("$upstream_pid")

# --- the gateway: routing off, 100 % to the edge pool = the upstream -------------------------------
cat >"$work/gateway.toml" <<TOML
[listen]
public = "$gateway"
admin = "$admin"
[routing]
mode = "off"
weights = { edge = 100, center = 0 }
[edge]
members = ["$upstream"]
# Above r1-loadtest's --max-in-flight (1024), so the pool never reports itself saturated.
max_in_flight = 4096
health = { path = "/healthz", interval = "1s" }
[center]
members = []
# The bare proxy path: authentication off (its cost is measured separately).
[auth]
enabled = false
TOML
"$bin/r1-gateway" --config "$work/gateway.toml" --check-config 2>"$work/check.log" ||
  { cat "$work/check.log" >&2; exit 1; }
RUST_LOG=warn "${path[@]}" "$bin/r1-gateway" --config "$work/gateway.toml" 2>"$work/gateway.log" &
gateway_pid=$!
pids+=("$gateway_pid")

# --- nginx: the same upstream, keep-alive, no buffering --------------------------------------------
mkdir -p "$work/nginx/tmp"
user_line=""
[[ "$(id -u)" -eq 0 ]] && user_line="user root;" # workers stay this user; no /var paths needed
cat >"$work/nginx/nginx.conf" <<NGINX
$user_line
worker_processes 2;
worker_rlimit_nofile 16384;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
daemon off;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $work/nginx/tmp/body;
  proxy_temp_path $work/nginx/tmp/proxy;
  fastcgi_temp_path $work/nginx/tmp/fastcgi;
  uwsgi_temp_path $work/nginx/tmp/uwsgi;
  scgi_temp_path $work/nginx/tmp/scgi;
  keepalive_requests 100000;
  upstream mock {
    server $upstream;
    keepalive 64; # per worker: 128 in all, the size of the gateway's (Pingora's default) pool
    keepalive_requests 100000;
  }
  server {
    listen $nginx;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
"${path[@]}" "$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
nginx_pid=$!
pids+=("$nginx_pid")

# --- ready? -----------------------------------------------------------------------------------------
ready() { # URL: a chat request answered 200
  curl -fsS -o /dev/null -H 'content-type: application/json' \
    -d '{"model":"deepseek-r1","messages":[{"role":"user","content":"hi"}]}' "$1/v1/chat/completions" 2>/dev/null
}
for target in "$upstream" "$gateway" "$nginx"; do
  for _ in $(seq 1 300); do ready "http://$target" && break; sleep 0.1; done
  ready "http://$target" || {
    log "http://$target never answered"
    tail -n 20 "$work"/*.log "$work/nginx/error.log" >&2 || true
    exit 1
  }
done

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
{
  # shellcheck disable=SC1091
  echo "machine: $(nproc) cores ($cpu), $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "nginx: $("$nginx_bin" -v 2>&1 | cut -d/ -f2), gateway: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- gateway || echo '+dirty')"
  echo "pinning: $( ((pin)) && echo 'generator CPU 0; proxy + upstream CPU 1' || echo none)"
  echo "ladder: $rates req/s, $duration each after $warmup warm-up, $repeats repeats"
} >"$out/setup.txt"
log "$(tr '\n' ';' <"$out/setup.txt")"
log "reports in $out"

# --- the ladder -------------------------------------------------------------------------------------
# CPU ticks (user + system) of processes, and of their children (nginx's workers).
ticks() {
  local total=0 pid child stat
  for pid in "$@"; do
    for child in "$pid" $(pgrep -P "$pid" || true); do
      read -r -a stat <"/proc/$child/stat" || continue
      total=$((total + stat[13] + stat[14]))
    done
  done
  echo "$total"
}
served() { curl -fsS "http://$upstream/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["received"])'; }
proxy_pids() {
  case "$1" in
    direct) echo "$upstream_pid" ;; # nothing in between: the "proxy" column repeats the upstream's
    gateway) echo "$gateway_pid" ;;
    nginx) echo "$nginx_pid" ;;
  esac
}
url_of() {
  case "$1" in
    direct) echo "http://$upstream" ;;
    gateway) echo "http://$gateway" ;;
    nginx) echo "http://$nginx" ;;
  esac
}
clk_tck="$(getconf CLK_TCK)"
# CPU ticks of every process that is not this script or one of its descendants (with the ticks of
# children they reaped, so short-lived compiler processes count too).
others() {
  python3 - "$$" <<'PY'
import os, sys
me, stats = int(sys.argv[1]), {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    stats[int(pid)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
ours, grew = {me}, True
while grew:
    grew = False
    for pid, (ppid, _) in stats.items():
        if ppid in ours and pid not in ours:
            ours.add(pid)
            grew = True
print(sum(ticks for pid, (_, ticks) in stats.items() if pid not in ours))
PY
}

for rep in $(seq 1 "$repeats"); do
  for rate in $rates; do
    for target in direct gateway nginx; do
      # shellcheck disable=SC2046 # pids are numbers
      read -r p0 u0 n0 o0 t0 <<<"$(ticks $(proxy_pids "$target")) $(ticks "$upstream_pid") $(served) $(others) $(date +%s.%N)"
      "${gen[@]}" "$bin/r1-loadtest" --url "$(url_of "$target")" --rate "$rate" --duration "$duration" \
        --warmup "$warmup" --timeout 5s --json >"$out/$target-$rate-$rep.json"
      # shellcheck disable=SC2046
      read -r p1 u1 n1 o1 t1 <<<"$(ticks $(proxy_pids "$target")) $(ticks "$upstream_pid") $(served) $(others) $(date +%s.%N)"
      printf '{"proxy_ticks": %d, "upstream_ticks": %d, "requests": %d, "other_ticks": %d, "seconds": %s, "clk_tck": %d}\n' \
        $((p1 - p0)) $((u1 - u0)) $((n1 - n0)) $((o1 - o0)) "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$clk_tck" >"$out/$target-$rate-$rep.cpu.json"
      python3 -c '
import json, sys
r = json.load(open(sys.argv[1] + ".json")); c = json.load(open(sys.argv[1] + ".cpu.json")); l = r["latency_ms"] or {}
us = lambda t: 1e6 * t / c["clk_tck"] / max(c["requests"], 1)
other = 100 * c["other_ticks"] / c["clk_tck"] / c["seconds"]
print("  rep %s %-7s %6s req/s: ok/s %8.0f  p50 %6.2f  p99 %7.2f ms  failed %d dropped %d  send lag %.1f ms  CPU us/req proxy %.1f upstream %.1f  other CPU %.0f %%"
      % (sys.argv[2], sys.argv[3], sys.argv[4], r["throughput"], l.get("p50", 0), l.get("p99", 0),
         r["failed"], r["dropped"], r["max_send_lag_ms"], us(c["proxy_ticks"]), us(c["upstream_ticks"]), other))' \
        "$out/$target-$rate-$rep" "$rep" "$target" "$rate" >&2
    done
  done
done

if [[ -n "$perf_rate" ]] && command -v perf >/dev/null 2>&1; then
  for target in gateway nginx; do
    log "perf record -g on $target at $perf_rate req/s"
    pidlist="$(proxy_pids "$target")"
    [[ $target == nginx ]] && pidlist+=" $(pgrep -P "$nginx_pid" | xargs)"
    perf record -q -F 2999 -g -o "$out/perf-$target.data" -p "${pidlist// /,}" -- \
      "${gen[@]}" "$bin/r1-loadtest" --url "$(url_of "$target")" --rate "$perf_rate" --duration "$duration" \
      --warmup "$warmup" --timeout 5s --json >"$out/perf-$target-run.json" 2>/dev/null
    {
      perf report -i "$out/perf-$target.data" --no-children --stdio --sort dso -g none
      perf report -i "$out/perf-$target.data" --no-children --stdio --sort dso,symbol -g none --percent-limit 0.3
    } >"$out/perf-$target.txt" 2>/dev/null || true
  done
fi

# --- summary ----------------------------------------------------------------------------------------
summarize "$out"
