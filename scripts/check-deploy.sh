#!/usr/bin/env bash
# Checks everything under deploy/ offline, against the real binaries (scripts/test.sh runs it):
#   - kustomize render of every overlay -> Kubernetes schemas (strict) + the Istio CRD schemas in deploy/schemas
#   - promtool: check config, check rules, test rules (every alert fires over its threshold, quiet below)
#   - every config a manifest or the compose file mounts, and the three scheme configs, pass their binary's check;
#     every r1-* command line in the manifests and the compose file is accepted by its binary
#   - the gateway, r1-edge and r1-center started from the Kubernetes ConfigMaps with real Kafka and Redis:
#     every metric name the alerts, the dashboard and the autoscalers use is in their /metrics; a ConfigMap-style
#     symlink swap of the routing config reaches the running gateway's live reload
#   - the Dockerfiles, statically (scripts/images.sh builds them)
# Installs what it needs once, into the cache (idempotent): kustomize with `go install`, promtool from Debian's
# prometheus package (unpacked, not installed), a Python venv with kubernetes-validate. Uses R1_TEST_KAFKA_BROKERS / R1_TEST_REDIS_URL when set (scripts/test.sh),
# else the services scripts/services.sh runs (starting them, and stopping them after, if none run).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="${R1_CACHE_DIR:-$HOME/.cache/r1-hybrid}"
tools="$cache/deploy-tools"
KUSTOMIZE_VERSION=v5.7.1
log() { printf 'check-deploy: %s\n' "$*" >&2; }

# --- tools (each skipped when present at its pinned version) ---------------------------------------
mkdir -p "$tools/bin"
go_tool() { # name module version
  local name="$1" module="$2" version="$3" stamp="$tools/bin/.$1.version"
  if [[ -x "$tools/bin/$name" && "$(cat "$stamp" 2>/dev/null)" == "$version" ]]; then return; fi
  command -v go >/dev/null || { log "go is needed to install $name ($module@$version)"; exit 1; }
  log "installing $name $version (go install, once)"
  GOTOOLCHAIN=local GOBIN="$tools/bin" GOFLAGS=-mod=mod go install "$module@$version"
  echo "$version" >"$stamp"
}
go_tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
# promtool from Debian's prometheus package, unpacked into the cache (no daemon installed or started).
# Building promtool with `go install` pulls every service-discovery plugin and takes a quarter of an hour on
# two cores, so the package it is; set R1_PROMTOOL to a full build to check the Kubernetes discovery too.
promtool="${R1_PROMTOOL:-}"
if [[ -z "$promtool" ]]; then
  promtool="$(ls "$tools"/prometheus-*/usr/bin/promtool 2>/dev/null | tail -1 || true)"
  if [[ -z "$promtool" ]]; then
    log "unpacking promtool from Debian's prometheus package (once)"
    ( cd "$tools" && rm -f prometheus_*.deb && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; }; } )
    deb="$(ls "$tools"/prometheus_*.deb)"
    dir="$tools/prometheus-$(dpkg-deb -f "$deb" Version)"
    dpkg-deb -x "$deb" "$dir.tmp" && mv "$dir.tmp" "$dir" && rm -f "$deb"
    promtool="$dir/usr/bin/promtool"
  fi
fi
venv="$tools/venv"
if [[ ! -x "$venv/bin/python" ]] || ! cmp -s scripts/lib/check-deploy-requirements.txt "$venv/.requirements"; then
  log "installing the Python checkers (venv, once)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r scripts/lib/check-deploy-requirements.txt
  cp scripts/lib/check-deploy-requirements.txt "$venv/.requirements"
fi
scripts/fetch-onnxruntime.sh >/dev/null

# --- promtool ------------------------------------------------------------------------------------
log "$("$promtool" --version 2>&1 | head -1)"
if "$promtool" check config --syntax-only deploy/prometheus/prometheus.yml >/dev/null 2>&1 ||
   ! grep -q kubernetes_sd_configs deploy/prometheus/prometheus.yml; then
  "$promtool" check config deploy/prometheus/prometheus.yml
else
  # Debian builds promtool without Kubernetes discovery: check everything else of the file (jobs,
  # relabelling, rule files) with each kubernetes_sd_configs block swapped for file discovery.
  log "this promtool lacks Kubernetes discovery: checking prometheus.yml with it swapped for file_sd"
  sd_free="deploy/prometheus/.prometheus-no-k8s-sd.yml"
  trap 'rm -f "$root/$sd_free"' EXIT
  "$venv/bin/python" - deploy/prometheus/prometheus.yml "$sd_free" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
allowed = {"role", "namespaces", "selectors", "api_server", "kubeconfig_file", "attach_metadata"}
for job in doc["scrape_configs"]:
    for sd in job.pop("kubernetes_sd_configs", []):
        if set(sd) - allowed or sd.get("role") not in ("pod", "endpoints", "service", "node", "ingress", "endpointslice"):
            sys.exit(f"{job['job_name']}: kubernetes_sd_configs {sd} has unknown keys or role")
        job.setdefault("file_sd_configs", [{"files": ["targets/*.json"]}])
yaml.safe_dump(doc, open(sys.argv[2], "w"), sort_keys=False)
PY
  "$promtool" check config "$sd_free"
  rm -f "$sd_free"
fi
# The compose file mounts the rules next to it in the container: syntax here, the rules themselves below.
"$promtool" check config --syntax-only deploy/compose/prometheus.yml
"$promtool" check rules deploy/prometheus/rules/r1-alerts.yml
"$promtool" test rules deploy/prometheus/tests/r1-alerts.test.yml
# The tests must cover every alert: one that no test names could be broken unnoticed.
for alert in $(sed -n 's/^ *- alert: *//p' deploy/prometheus/rules/r1-alerts.yml); do
  grep -q "alertname: $alert\$" deploy/prometheus/tests/r1-alerts.test.yml || { log "no promtool test for alert $alert"; exit 1; }
  grep -A12 "alertname: $alert\$" deploy/prometheus/tests/r1-alerts.test.yml | grep -q 'exp_alerts: \[\]' ||
    { log "alert $alert has no test that it stays quiet"; exit 1; }
done
log "promtool: every alert has a test that it fires and one that it stays quiet"

# --- binaries, services --------------------------------------------------------------------------
cargo build --quiet --locked -p r1-gateway -p r1-edge -p r1-center -p r1-mock-upstream
started_services=no
if [[ -z "${R1_TEST_KAFKA_BROKERS:-}" || -z "${R1_TEST_REDIS_URL:-}" ]]; then
  if ! scripts/services.sh status >/dev/null 2>&1; then
    started_services=yes
    trap 'scripts/services.sh down' EXIT
    scripts/services.sh up
  fi
  eval "$(scripts/services.sh env)"
fi
export R1_TEST_KAFKA_BROKERS R1_TEST_REDIS_URL
log "Kafka $R1_TEST_KAFKA_BROKERS, Redis $R1_TEST_REDIS_URL (started here: $started_services)"

R1_KUSTOMIZE="$tools/bin/kustomize" R1_BIN_DIR="${CARGO_TARGET_DIR:-$root/target}/debug" \
  "$venv/bin/python" scripts/lib/check_deploy.py
