#!/usr/bin/env bash
# The embedded stack demo. Today the stack is r1-edge serving the shipped model (the gateway and the
# center path arrive with their issues): it starts r1-edge on loopback, asks it a few questions in
# English and Chinese, prints how to call it yourself, and runs until Ctrl-C.
# No Kafka or Redis is needed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
listen="${R1_DEMO_EDGE:-127.0.0.1:8081}"
scripts/fetch-onnxruntime.sh >/dev/null
cargo build --release --locked -p r1-gateway -p r1-edge -p r1-center

target/release/r1-edge --model models/r1-edge-mini --listen "$listen" --batch_size_dynamic true --max_batch_size 32 &
edge=$!
trap 'kill -TERM "$edge" 2>/dev/null; wait "$edge" 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 300); do
  if curl -fsS "http://$listen/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$edge" 2>/dev/null; then echo "demo: r1-edge exited; see its log above" >&2; exit 1; fi
  sleep 0.1
done
curl -fsS "http://$listen/readyz" >/dev/null

ask() {
  local question="$1"
  local body
  body=$(python3 -c 'import json,sys; print(json.dumps({"model":"r1-edge-mini","messages":[{"role":"user","content":sys.argv[1]}],"max_tokens":48,"temperature":0}))' "$question")
  local answer
  answer=$(curl -fsS "http://$listen/v1/chat/completions" -H 'content-type: application/json' -d "$body" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["choices"][0]["message"]["content"], "  [", r["usage"]["completion_tokens"], "tokens ]")')
  printf '  Q: %s\n  A: %s\n\n' "$question" "$answer"
}

cat <<TXT

r1-edge is serving models/r1-edge-mini on http://$listen  (metrics: http://$listen/metrics)

Sample questions:
TXT
ask "Hello!"
ask "What is the capital of France?"
ask "What is 7 plus 5?"
ask "你好"
ask "法国的首都是哪里？"

cat <<TXT
Try it yourself:
  curl http://$listen/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"r1-edge-mini","messages":[{"role":"user","content":"What day comes after Monday?"}],"stream":true}'

  python3 -c 'from openai import OpenAI; c = OpenAI(base_url="http://$listen/v1", api_key="unused");
  print(c.chat.completions.create(model="r1-edge-mini", messages=[{"role":"user","content":"Hi"}]).choices[0].message.content)'

The gateway (routing, auth, cache) and the Kafka center path are not built yet. Ctrl-C stops the demo.
TXT
wait "$edge"
