#!/usr/bin/env bash
# The whole test suite, as CI runs it: install what is missing, start the real Redis and Kafka on loopback,
# run the CI gate (fmt, clippy -D warnings, every test, a short fuzz run, docs, config examples), stop the
# services. R1_FUZZ_SECONDS sets the fuzz run per target (default 10; 0 leaves it out while iterating).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

step() { printf '\n==> %s\n' "$*" >&2; }
started=$SECONDS

step "bootstrap"
scripts/bootstrap.sh

step "services up (Redis, Redis over TLS, a Redis Cluster, Apache Kafka; loopback)"
trap 'step "services down"; scripts/services.sh down' EXIT
if ! scripts/services.sh up; then
  scripts/services.sh logs || true
  exit 1
fi
step "services up: the three-broker Kafka cluster (failover drills)"
if ! scripts/services.sh up kafka-cluster; then
  scripts/services.sh logs kafka-cluster || true
  exit 1
fi
scripts/services.sh status
eval "$(scripts/services.sh env)"
export R1_TEST_REDIS_URL R1_TEST_KAFKA_BROKERS
export R1_TEST_REDIS_TLS_URL R1_TEST_REDIS_CA_FILE R1_TEST_REDIS_USERNAME R1_TEST_REDIS_PASSWORD R1_TEST_REDIS_CLUSTER_URLS

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "production build: r1-gateway without the embedded center"
# The demo build embeds r1-center's worker and r1-edge's engine; a production gateway links neither.
embedded="$(cargo tree -p r1-gateway --no-default-features -e normal,build --locked --prefix none |
  grep -E '^(r1-center|r1-edge|ort|ort-sys|tokenizers|nvml-wrapper) ' | sort -u || true)"
if [[ -n "$embedded" ]]; then
  printf 'r1-gateway --no-default-features still links:\n%s\n' "$embedded" >&2
  exit 1
fi
cargo clippy -p r1-gateway --no-default-features --lib --bins --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked --no-fail-fast

step "the Redis tests again: over TLS as the ACL user, and on the Redis Cluster"
for target in tls cluster; do
  R1_TEST_REDIS_TARGET="$target" cargo test --locked -p r1-gateway --test cache --test limits
  R1_TEST_REDIS_TARGET="$target" cargo test --locked -p r1-queue --test redis_state
  R1_TEST_REDIS_TARGET="$target" cargo test --locked -p r1-center --test redis_server
done

step "the readiness and tracing tests again: on the three-broker cluster over SASL_SSL (SCRAM), claims and task state on the Redis Cluster"
R1_TEST_KAFKA_TARGET=cluster R1_TEST_REDIS_TARGET=cluster \
  cargo test --locked -p r1-gateway --test center_readiness --test tracing

step "end-to-end: openai (Python, Node), LangChain, LiteLLM, requests and vLLM protocol checks against the real stack"
cargo build --locked -p r1-gateway
scripts/e2e.sh

fuzz_seconds="${R1_FUZZ_SECONDS:-10}"
if ((fuzz_seconds > 0)); then
  step "fuzzing: every parser of untrusted bytes under libFuzzer, ${fuzz_seconds} s each (scripts/fuzz.sh)"
  scripts/fuzz.sh "$fuzz_seconds"
fi

step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "config examples"
for f in deploy/config/*.toml; do
  case "$(basename "$f")" in
    center*) cargo run --quiet --locked -p r1-center -- --config "$f" --check-config ;;
    edge*) cargo run --quiet --locked -p r1-edge -- --config "$f" --model models/r1-edge-mini --check ;;
    *) cargo run --quiet --locked -p r1-gateway -- --config "$f" --check-config ;;
  esac
done

step "deploy manifests, alerts, dashboards (scripts/check-deploy.sh)"
scripts/check-deploy.sh

step "all checks passed in $((SECONDS - started)) s"
