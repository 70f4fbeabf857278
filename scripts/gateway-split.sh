#!/usr/bin/env bash
# The gateway's weighted split under load, and a live config edit during load.
#   1. 2,000 middle-band requests at the configured 70/30 → edge share must be 70 % ± 3 %, no failures;
#   2. 2,000 more while the file is edited to 30/70 halfway → zero failed requests, and the share moves.
# Runs `r1-gateway demo` (gateway + r1-edge + local center) on free loopback ports; every conversation is new
# (unique prompts), since a conversation that reached the center stays there by design.
#   scripts/gateway-split.sh [--rate 100]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
rate="${2:-100}"
profile="${PROFILE:-debug}"
[[ "$profile" == release ]] && cargo build --release --locked -p r1-gateway -p r1-loadtest >/dev/null
bin="target/$profile"
work="$(mktemp -d)"
trap 'kill -INT "${gw:-0}" 2>/dev/null || true; wait "${gw:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
public="127.0.0.1:$(port)"; admin="127.0.0.1:$(port)"; edge="127.0.0.1:$(port)"; center="127.0.0.1:$(port)"
cat > "$work/gateway.toml" <<TOML
[listen]
public = "$public"
admin = "$admin"
[routing]
edge_max = 0.0
center_min = 1.0
weights = { edge = 70, center = 30 }
[edge]
model = "r1-edge-mini"
members = ["$edge"]
[center]
model = "deepseek-ai/DeepSeek-R1"
members = ["$center"]
[auth]
enabled = false
TOML
python3 -c '
import json
for run in ("a", "b"):
    with open(f"'"$work"'/prompts-{run}.jsonl", "w") as f:
        for i in range(2000):
            f.write(json.dumps({"messages": [{"role": "user", "content": f"Tell me about item {i} of batch {run}"}], "temperature": 0}) + "\n")
'
RUST_LOG=warn "$bin/r1-gateway" demo --config "$work/gateway.toml" --listen "$public" --admin "$admin" --models models >"$work/demo.log" 2>&1 &
gw=$!
for _ in $(seq 1 600); do
  if curl -fsS "http://$admin/admin/pools" 2>/dev/null | python3 -c 'import json,sys; p=json.load(sys.stdin)["pools"]; sys.exit(0 if all(m["ready"] for x in p for m in x["members"]) else 1)' 2>/dev/null; then break; fi
  sleep 0.1
done

load() { "$bin/r1-loadtest" --url "http://$public" --rate "$rate" --requests 2000 --max-tokens 1 --prompts "$work/prompts-$1.jsonl" --json; }
share() { python3 -c '
import json, sys
r = json.load(sys.stdin)
e = r["routes"].get("edge", {}).get("ok", 0)
c = r["routes"].get("center", {}).get("ok", 0)
lat = r["latency_ms"] or {}
print("edge %d  center %d  edge share %.1f %%  failed %d  dropped %d  p50 %.1f ms  p99 %.1f ms"
      % (e, c, 100 * e / max(e + c, 1), r["failed"], r["dropped"], lat.get("p50", 0), lat.get("p99", 0)))'; }

echo "# $(date -u +%FT%TZ) r1-gateway demo ($profile), $rate req/s, 2,000 middle-band requests per run, max_tokens 1"
echo "run 1 (weights 70/30):                $(load a | share)"
( sleep "$(python3 -c "print(1000/$rate)")"; sed -i 's/edge = 70, center = 30/edge = 30, center = 70/' "$work/gateway.toml" ) &
editor=$!
echo "run 2 (edited to 30/70 halfway):      $(load b | share)"
wait "$editor"
echo "reloads applied: $(curl -fsS "http://$admin/metrics" | awk '/^r1_config_reloads_total/ {print $2}')"
