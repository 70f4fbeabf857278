#!/usr/bin/env bash
# Installs and runs the real Redis and Apache Kafka (KRaft, single node) that the
# r1-hybrid test suite talks to.  See `scripts/services.sh --help`.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd -- "${SCRIPT_DIR}/.." && pwd -P)"
PROG="scripts/services.sh"

KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
R1_CACHE_DIR="${R1_CACHE_DIR:-${HOME:-/root}/.cache/r1-hybrid}"
R1_STATE_DIR="${R1_STATE_DIR:-${REPO_ROOT}/.r1/services}"
R1_REDIS_PORT="${R1_REDIS_PORT:-16379}"
R1_KAFKA_PORT="${R1_KAFKA_PORT:-19092}"
R1_KAFKA_CONTROLLER_PORT="${R1_KAFKA_CONTROLLER_PORT:-19093}"
R1_KAFKA_SECURE_PORT="${R1_KAFKA_SECURE_PORT:-19094}"
R1_REDIS_TLS_PORT="${R1_REDIS_TLS_PORT:-16380}"
R1_REDIS_CLUSTER_PORT="${R1_REDIS_CLUSTER_PORT:-17000}"
R1_REDIS_START_TIMEOUT="${R1_REDIS_START_TIMEOUT:-30}"
R1_KAFKA_START_TIMEOUT="${R1_KAFKA_START_TIMEOUT:-120}"
R1_STOP_TIMEOUT="${R1_STOP_TIMEOUT:-20}"
R1_KAFKA_HEAP_OPTS="${R1_KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}"
R1_LOG_LINES="${R1_LOG_LINES:-200}"

HOST="127.0.0.1"
KAFKA_LIBS="${R1_CACHE_DIR}/kafka/${KAFKA_VERSION}/libs"

REDIS_DIR="${R1_STATE_DIR}/redis"
REDIS_DATA="${REDIS_DIR}/data"
REDIS_PID="${REDIS_DIR}/redis.pid"
REDIS_LOG="${REDIS_DIR}/redis.log"

# Redis over TLS with an ACL user (the `default` user off): a test CA and the server's key and
# certificate (made with openssl on the first 'up', kept by 'stop', deleted by 'down').
REDIS_TLS_DIR="${R1_STATE_DIR}/redis-tls"
REDIS_TLS_PID="${REDIS_TLS_DIR}/redis.pid"
REDIS_TLS_LOG="${REDIS_TLS_DIR}/redis.log"
REDIS_TLS_CONF="${REDIS_TLS_DIR}/redis.conf"
REDIS_TLS_CERTS="${REDIS_TLS_DIR}/tls"
REDIS_TLS_CA="${REDIS_TLS_CERTS}/ca.pem"
# Test-only credentials of a loopback Redis (printed by 'env'); never used anywhere else.
REDIS_TLS_USER="r1-test"
REDIS_TLS_PASSWORD="r1-test-redis-secret"

# Redis Cluster: 3 masters with one replica each, on R1_REDIS_CLUSTER_PORT .. +5 (cluster bus on
# port + 100); a node that stops answering for REDIS_CLUSTER_NODE_TIMEOUT ms is failed over.
REDIS_CLUSTER_DIR="${R1_STATE_DIR}/redis-cluster"
REDIS_CLUSTER_NODES=6
REDIS_CLUSTER_BUS_OFFSET=100
REDIS_CLUSTER_NODE_TIMEOUT=2000

KAFKA_DIR="${R1_STATE_DIR}/kafka"
KAFKA_DATA="${KAFKA_DIR}/data"
KAFKA_PID="${KAFKA_DIR}/kafka.pid"
KAFKA_LOGDIR="${KAFKA_DIR}/logs"
KAFKA_LOG="${KAFKA_LOGDIR}/server.log"  # log4j2 output
KAFKA_OUT="${KAFKA_LOGDIR}/kafka.out"   # JVM stdout/stderr (crashes, bad flags)
KAFKA_PROPS="${KAFKA_DIR}/server.properties"
KAFKA_LOG4J="${KAFKA_DIR}/log4j2.properties"
# The SASL_SSL listener: a test CA and the broker's key and certificate (made with openssl on the first
# 'up', kept by 'stop', deleted by 'down'), and the test users (created when the storage is formatted).
KAFKA_TLS="${KAFKA_DIR}/tls"
KAFKA_CA="${KAFKA_TLS}/ca.pem"
KAFKA_KEYSTORE="${KAFKA_TLS}/broker.p12"
KAFKA_SECURE_MARK="${KAFKA_DATA}/.r1-scram-users"
# Test-only credentials of a loopback broker (printed by 'env'); never used anywhere else.
KAFKA_KEYSTORE_PASSWORD="r1-test-keystore"
KAFKA_SCRAM_USER="r1-test"
KAFKA_SCRAM_PASSWORD="r1-test-scram-secret"
KAFKA_PLAIN_USER="r1-plain"
KAFKA_PLAIN_PASSWORD="r1-test-plain-secret"

usage() {
  cat <<EOF
Usage: ${PROG} <command> [redis|redis-tls|redis-cluster|kafka|kafka-cluster]

Installs and runs the Redis and Apache Kafka the test suite uses, on loopback only,
on ports chosen not to clash with a Redis/Kafka you may already run.

Commands:
  install              Install what is missing: apt packages (redis-server, kcat, and
                       openjdk-17-jre-headless / maven when no java / mvn), and the
                       Kafka ${KAFKA_VERSION} jars, resolved from Maven Central with
                       'mvn dependency:copy-dependencies' on scripts/kafka/pom.xml into
                       \$R1_CACHE_DIR/kafka/\$KAFKA_VERSION/libs (written atomically;
                       a second run is a no-op).
  up [SERVICE]         install, then start the service(s) (default: all) unless they
                       already run, and wait until they answer: Redis 'PING' -> PONG,
                       Kafka a metadata request (kcat -L) listing the broker, on the
                       PLAINTEXT listener and on the SASL_SSL one (TLS + SASL PLAIN).
                       Kafka runs in KRaft combined mode (broker+controller, node 1);
                       its storage is formatted with a fresh cluster id when empty,
                       and the SCRAM users are created then (kafka-storage format
                       --add-scram). The SASL_SSL listener (port R1_KAFKA_SECURE_PORT)
                       takes SCRAM-SHA-512, SCRAM-SHA-256 (user ${KAFKA_SCRAM_USER}) and
                       PLAIN (user ${KAFKA_PLAIN_USER}); its certificate (SAN 127.0.0.1,
                       localhost) is signed by a test CA that openssl makes on the
                       first 'up' (kafka/tls/ca.pem). The PLAINTEXT listener is
                       unchanged.
                       redis-tls: one Redis on R1_REDIS_TLS_PORT speaking TLS only
                       (certificate SAN 127.0.0.1, localhost, signed by a test CA that
                       openssl makes on the first 'up', redis-tls/tls/ca.pem), with
                       the ACL user ${REDIS_TLS_USER} and the default user off; ready
                       when it answers PING over TLS as that user.
                       redis-cluster: a Redis Cluster of 3 masters with one replica
                       each on R1_REDIS_CLUSTER_PORT .. +5 (cluster bus on port + ${REDIS_CLUSTER_BUS_OFFSET},
                       cluster-node-timeout ${REDIS_CLUSTER_NODE_TIMEOUT} ms), created with
                       'redis-cli --cluster create --cluster-replicas 1' when new;
                       ready when every node reports cluster_state:ok. A node that
                       is missing (killed) is started again and rejoins.
  up kafka-cluster     Start the three-node cluster (not part of a bare 'up'): nodes
                       1..3, each broker + controller (KRaft, a static 3-voter quorum),
                       replication factor 3, min.insync.replicas 2 (offsets and
                       transaction logs too), each with a PLAINTEXT and a SASL_SSL
                       listener (the same users, its own test CA in kafka-cluster/tls/).
                       Ready when every node's metadata lists the three brokers on
                       both listeners.
  down [SERVICE]       Stop what 'up' started (SIGTERM, SIGKILL after
                       \$R1_STOP_TIMEOUT s) and delete its data (logs are kept), so
                       the next 'up' starts fresh. Succeeds when nothing runs.
                       Without an argument the Kafka cluster goes too.
  stop [SERVICE]       Stop the service(s) like 'down' but keep Kafka's data (Redis keeps
                       none: it runs without persistence; the Redis cluster keeps its
                       node tables, so it comes back as the same cluster), so the next
                       'up' resumes with the same topics, offsets and keys (outage drills).
                       Without an argument the Kafka cluster stops too.
  kill-broker N        SIGKILL node N (1..3) of the cluster; its data is kept.
  start-broker N       Start node N again and wait until it lists the three brokers.
  status               One line per service; exits 0 only if the Redis services and Kafka
                       run and answer, and the Kafka cluster's three nodes too once it
                       was started.
  env                  Print the variables the tests read, for eval:
                           eval "\$(${PROG} env)"
                       R1_TEST_REDIS_URL, R1_TEST_KAFKA_BROKERS (PLAINTEXT), and for
                       the SASL_SSL listener R1_TEST_KAFKA_SECURE_BROKERS,
                       R1_TEST_KAFKA_CA_FILE, R1_TEST_KAFKA_SCRAM_USERNAME,
                       R1_TEST_KAFKA_SCRAM_PASSWORD (SCRAM-SHA-256 and -512),
                       R1_TEST_KAFKA_PLAIN_USERNAME, R1_TEST_KAFKA_PLAIN_PASSWORD;
                       for the cluster R1_TEST_KAFKA_CLUSTER_BROKERS (PLAINTEXT),
                       R1_TEST_KAFKA_CLUSTER_SECURE_BROKERS (SASL_SSL, the same users),
                       R1_TEST_KAFKA_CLUSTER_CA_FILE, R1_TEST_KAFKA_CLUSTER_PID_FILES
                       (node 1's, 2's and 3's, comma-separated) and
                       R1_TEST_KAFKA_CLUSTER_CONTROL (this script: kill-broker N,
                       start-broker N);
                       for redis-tls R1_TEST_REDIS_TLS_URL, R1_TEST_REDIS_CA_FILE,
                       R1_TEST_REDIS_USERNAME, R1_TEST_REDIS_PASSWORD; for
                       redis-cluster R1_TEST_REDIS_CLUSTER_URLS (comma-separated).
  logs [SERVICE]       Print the last \$R1_LOG_LINES lines of the log file(s).
  -h, --help, help     This text.

Environment (defaults in brackets):
  R1_REDIS_PORT             Redis port [16379]
  R1_REDIS_TLS_PORT         Redis TLS port [16380]
  R1_REDIS_CLUSTER_PORT     first Redis Cluster node's port; the nodes take 6 [17000]
  R1_KAFKA_PORT             Kafka broker (PLAINTEXT) port [19092]
  R1_KAFKA_CONTROLLER_PORT  Kafka KRaft controller port [19093]
  R1_KAFKA_SECURE_PORT      Kafka broker SASL_SSL port [19094]
  R1_KAFKA_CLUSTER_PORT     first of the cluster's PLAINTEXT ports, node N at +N-1 [19192]
                            (the cluster's ports belong below the ephemeral range, so that a
                            restarted node finds its ports free)
  R1_KAFKA_CLUSTER_CONTROLLER_PORT  first controller port [19195]
  R1_KAFKA_CLUSTER_SECURE_PORT      first SASL_SSL port [19198]
  R1_KAFKA_CLUSTER_HEAP_OPTS        each node's JVM heap [-Xms128m -Xmx384m]
  R1_STATE_DIR              data, pid and log files [<repo>/.r1/services]
  R1_CACHE_DIR              downloaded Kafka jars [\$HOME/.cache/r1-hybrid]
  KAFKA_VERSION             org.apache.kafka:kafka_2.13 version [4.4.0]
  R1_REDIS_START_TIMEOUT    seconds to wait for Redis to answer [30]
  R1_KAFKA_START_TIMEOUT    seconds to wait for Kafka to answer [120]
  R1_STOP_TIMEOUT           seconds between SIGTERM and SIGKILL on 'down' [20]
  R1_KAFKA_HEAP_OPTS        Kafka JVM heap flags [-Xms256m -Xmx768m]
  R1_LOG_LINES              lines shown by 'logs' [200]
  JAVA_HOME                 if set, \$JAVA_HOME/bin/java is used (needs Java >= 17)

Files (under \$R1_STATE_DIR):
  redis/redis.log, redis/redis.pid, redis/data/
  redis-tls/ (redis.conf, redis.log, redis.pid; tls/ca.pem, the test CA clients trust)
  redis-cluster/<port>/ (each node's redis.log, redis.pid, nodes.conf)
  kafka/logs/server.log (broker log), kafka/logs/kafka.out (JVM output),
  kafka/kafka.pid, kafka/server.properties, kafka/log4j2.properties, kafka/data/,
  kafka/tls/ (ca.pem, the test CA clients trust; broker.p12, the broker's keystore)
  kafka-cluster/node{1,2,3}/ (kafka.pid, server.properties, data/, logs/), kafka-cluster/tls/
EOF
}

log() { printf '%s: %s\n' "${PROG}" "$*" >&2; }
die() { printf '%s: error: %s\n' "${PROG}" "$*" >&2; exit 1; }

java_bin() {
  if [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
    printf '%s\n' "${JAVA_HOME}/bin/java"
  else
    printf '%s\n' java
  fi
}

validate_port() {
  local name="$1" value="$2"
  if ! [[ "${value}" =~ ^[0-9]+$ ]] || ((value < 1 || value > 65535)); then
    die "${name}='${value}' is not a valid TCP port"
  fi
}

# ---------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------

APT_UPDATED=0
apt_install() {
  local -a sudo=()
  if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 ||
      die "need to install $* but not root and no sudo; install them by hand"
    sudo=(sudo)
  fi
  command -v apt-get >/dev/null 2>&1 ||
    die "need to install $* but apt-get is not available; install them by hand"
  if [[ "${APT_UPDATED}" -eq 0 ]]; then
    log "apt-get update"
    "${sudo[@]}" apt-get update -qq || die "apt-get update failed"
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" ||
    die "apt-get install $* failed"
}

install_packages() {
  local -a pkgs=()
  command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || pkgs+=(redis-tools)
  command -v kcat >/dev/null 2>&1 || pkgs+=(kcat)
  command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
  if [[ -z "${JAVA_HOME:-}" ]] && ! command -v java >/dev/null 2>&1; then
    pkgs+=(openjdk-17-jre-headless)
  fi
  kafka_libs_ok || command -v mvn >/dev/null 2>&1 || pkgs+=(maven)
  if ((${#pkgs[@]} > 0)); then
    apt_install "${pkgs[@]}"
  fi
}

kafka_libs_ok() {
  [[ -f "${KAFKA_LIBS}/kafka_2.13-${KAFKA_VERSION}.jar" ]] &&
    compgen -G "${KAFKA_LIBS}/log4j-slf4j*-impl-*.jar" >/dev/null
}

KAFKA_TMP=""
cleanup_kafka_tmp() {
  if [[ -n "${KAFKA_TMP}" && -d "${KAFKA_TMP}" ]]; then
    rm -rf -- "${KAFKA_TMP}"
  fi
}

install_kafka_libs() {
  if kafka_libs_ok; then
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found (needed to fetch the Kafka jars)"
  local parent
  parent="$(dirname -- "${KAFKA_LIBS}")"
  mkdir -p -- "${parent}"
  # Leftovers of runs killed hard (the trap below handles normal interruption).
  find "${parent}" -maxdepth 1 -name '.libs.tmp.*' -mmin +60 -exec rm -rf -- {} + 2>/dev/null || true
  KAFKA_TMP="$(mktemp -d "${parent}/.libs.tmp.XXXXXX")"
  trap cleanup_kafka_tmp EXIT
  trap 'cleanup_kafka_tmp; exit 130' INT TERM
  log "fetching Kafka ${KAFKA_VERSION} jars from Maven Central into ${KAFKA_LIBS}"
  local mvn_log="${KAFKA_TMP}/mvn.log"
  # Output is kept quiet unless mvn fails (Debian's Maven 3.8 prints stray
  # ANSI resets even with -B -q; they are stripped from the error output).
  if ! mvn -B -q -f "${SCRIPT_DIR}/kafka/pom.xml" \
      -Dkafka.version="${KAFKA_VERSION}" \
      dependency:copy-dependencies \
      -DincludeScope=runtime \
      -DoutputDirectory="${KAFKA_TMP}/libs" >"${mvn_log}" 2>&1; then
    sed 's/\x1b\[[0-9;]*m//g' -- "${mvn_log}" | grep -v '^\[ERROR\] *$' | tail -n 40 >&2 || true
    cleanup_kafka_tmp
    rmdir -- "${parent}" 2>/dev/null || true
    die "mvn could not resolve org.apache.kafka:kafka_2.13:${KAFKA_VERSION} from scripts/kafka/pom.xml (see output above; is Maven Central reachable, does that version exist?)"
  fi
  local tmp_libs="${KAFKA_TMP}/libs"
  [[ -f "${tmp_libs}/kafka_2.13-${KAFKA_VERSION}.jar" ]] ||
    die "mvn succeeded but kafka_2.13-${KAFKA_VERSION}.jar is missing from its output"
  compgen -G "${tmp_libs}/log4j-slf4j*-impl-*.jar" >/dev/null ||
    die "mvn succeeded but no log4j SLF4J binding was resolved (check scripts/kafka/pom.xml)"
  # rename(2) within one directory: the cache is either absent or complete.
  if ! mv -T -- "${tmp_libs}" "${KAFKA_LIBS}" 2>/dev/null; then
    kafka_libs_ok || die "could not move the Kafka jars into ${KAFKA_LIBS}"
    # Another run finished first; its copy is as good as ours.
  fi
  cleanup_kafka_tmp
  KAFKA_TMP=""
  trap - EXIT INT TERM
  log "Kafka jars ready ($(find "${KAFKA_LIBS}" -name '*.jar' | wc -l) jars)"
}

cmd_install() {
  install_packages
  install_kafka_libs
}

# ---------------------------------------------------------------------------
# process helpers
# ---------------------------------------------------------------------------

# Prints the pid from PIDFILE if that process is alive and its command line
# contains every given marker (guards against stale pid files / pid reuse).
our_pid() {
  local pidfile="$1"; shift
  local pid cmdline marker
  [[ -f "${pidfile}" ]] || return 1
  pid="$(tr -dc '0-9' <"${pidfile}")"
  [[ -n "${pid}" ]] || return 1
  kill -0 "${pid}" 2>/dev/null || return 1
  cmdline="$(tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null)" || return 1
  for marker in "$@"; do
    [[ "${cmdline}" == *"${marker}"* ]] || return 1
  done
  printf '%s\n' "${pid}"
}

redis_pid() { our_pid "${REDIS_PID}" redis-server; }
kafka_pid() { our_pid "${KAFKA_PID}" kafka.Kafka "${KAFKA_PROPS}"; }

port_in_use() {
  local port="$1"
  if command -v ss >/dev/null 2>&1; then
    [[ -n "$(ss -Htln "sport = :${port}" 2>/dev/null)" ]] && return 0
  fi
  # Fallback / belt and braces: can we connect on loopback?
  timeout 2 bash -c "exec 3<>/dev/tcp/${HOST}/${port}" 2>/dev/null
}

require_free_port() {
  local svc="$1" port="$2" what="$3"
  if port_in_use "${port}"; then
    local who=""
    if command -v ss >/dev/null 2>&1; then
      who="$(ss -Htlnp "sport = :${port}" 2>/dev/null | head -n 1 | sed -n 's/.*users:(\(.*\))/\1/p')"
    fi
    die "${svc}: port ${port} (${what}) is already in use by something not started by this script${who:+ (${who})}; stop it or choose another port (see --help)"
  fi
}

# stop_pid NAME PID: SIGTERM, bounded wait, SIGKILL.
stop_pid() {
  local name="$1" pid="$2" i
  log "${name}: stopping (pid ${pid})"
  kill -TERM "${pid}" 2>/dev/null || return 0
  for ((i = 0; i < R1_STOP_TIMEOUT * 10; i++)); do
    kill -0 "${pid}" 2>/dev/null || return 0
    sleep 0.1
  done
  log "${name}: still running after ${R1_STOP_TIMEOUT}s, sending SIGKILL"
  kill -KILL "${pid}" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "${pid}" 2>/dev/null || return 0
    sleep 0.1
  done
  die "${name}: pid ${pid} survived SIGKILL"
}

# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------

redis_probe() {
  [[ "$(timeout 3 redis-cli -h "${HOST}" -p "${R1_REDIS_PORT}" ping 2>/dev/null)" == "PONG" ]]
}

redis_up() {
  local pid
  if pid="$(redis_pid)"; then
    if redis_probe; then
      log "redis: already running (pid ${pid}, ${HOST}:${R1_REDIS_PORT})"
      return 0
    fi
  else
    require_free_port redis "${R1_REDIS_PORT}" "Redis"
    rm -f -- "${REDIS_PID}"
    mkdir -p -- "${REDIS_DATA}"
    log "redis: starting on ${HOST}:${R1_REDIS_PORT}"
    redis-server --bind "${HOST}" --port "${R1_REDIS_PORT}" \
      --save '' --appendonly no --daemonize yes \
      --pidfile "${REDIS_PID}" --logfile "${REDIS_LOG}" --dir "${REDIS_DATA}" \
      </dev/null 9>&- || die "redis: redis-server failed to start; see ${REDIS_LOG}"
  fi
  local deadline=$((SECONDS + R1_REDIS_START_TIMEOUT))
  until redis_probe; do
    if ((SECONDS >= deadline)); then
      tail -n 20 -- "${REDIS_LOG}" >&2 2>/dev/null || true
      die "redis: no PONG on ${HOST}:${R1_REDIS_PORT} after ${R1_REDIS_START_TIMEOUT}s; see ${REDIS_LOG}"
    fi
    if [[ -f "${REDIS_PID}" ]] && ! redis_pid >/dev/null; then
      tail -n 20 -- "${REDIS_LOG}" >&2 2>/dev/null || true
      die "redis: redis-server exited during startup; see ${REDIS_LOG}"
    fi
    sleep 0.1
  done
  log "redis: ready (pid $(redis_pid || echo '?'), ${HOST}:${R1_REDIS_PORT})"
}

redis_stop() {
  local pid
  if pid="$(redis_pid)"; then
    stop_pid redis "${pid}"
  else
    log "redis: not running"
  fi
  rm -f -- "${REDIS_PID}"
}

redis_down() {
  redis_stop
  rm -rf -- "${REDIS_DATA}"
}

# ---------------------------------------------------------------------------
# Redis over TLS, with an ACL user
# ---------------------------------------------------------------------------

redis_tls_pid() { our_pid "${REDIS_TLS_PID}" redis-server; }

redis_tls_probe() {
  [[ "$(timeout 3 redis-cli -h "${HOST}" -p "${R1_REDIS_TLS_PORT}" --tls --cacert "${REDIS_TLS_CA}" \
    --user "${REDIS_TLS_USER}" --pass "${REDIS_TLS_PASSWORD}" --no-auth-warning ping 2>/dev/null)" == "PONG" ]]
}

# Makes the test CA and the server's key and certificate when they are missing or expire within a day.
write_redis_tls_certs() {
  if [[ -f "${REDIS_TLS_CERTS}/server.pem" ]] &&
    openssl x509 -checkend 86400 -noout -in "${REDIS_TLS_CA}" >/dev/null 2>&1; then
    return 0
  fi
  command -v openssl >/dev/null 2>&1 || die "redis-tls: openssl not found (run '${PROG} install')"
  log "redis-tls: making the test CA and the server's certificate (${REDIS_TLS_CERTS})"
  rm -rf -- "${REDIS_TLS_CERTS}"
  mkdir -p -- "${REDIS_TLS_CERTS}"
  local d="${REDIS_TLS_CERTS}" ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes) out
  if ! out="$(
    openssl req -x509 "${ec[@]}" -keyout "${d}/ca.key" -out "${d}/ca.pem" -days 30 \
      -subj "/CN=r1-hybrid test Redis CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>&1 &&
      openssl req "${ec[@]}" -keyout "${d}/server.key" -out "${d}/server.csr" -subj "/CN=localhost" 2>&1 &&
      printf 'subjectAltName=IP:%s,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' \
        "${HOST}" >"${d}/server.ext" &&
      openssl x509 -req -in "${d}/server.csr" -CA "${d}/ca.pem" -CAkey "${d}/ca.key" -CAcreateserial \
        -out "${d}/server.pem" -days 30 -extfile "${d}/server.ext" 2>&1
  )"; then
    printf '%s\n' "${out}" | tail -n 20 >&2
    rm -rf -- "${REDIS_TLS_CERTS}"
    die "redis-tls: openssl could not make the test CA and the server's certificate"
  fi
  rm -f -- "${d}/server.csr" "${d}/server.ext" "${d}/ca.srl"
}

write_redis_tls_config() {
  cat >"${REDIS_TLS_CONF}" <<CONF
# Written by ${PROG}; regenerated on every 'up'.  TLS only, an ACL user, no persistence.
bind ${HOST}
port 0
tls-port ${R1_REDIS_TLS_PORT}
tls-cert-file ${REDIS_TLS_CERTS}/server.pem
tls-key-file ${REDIS_TLS_CERTS}/server.key
tls-ca-cert-file ${REDIS_TLS_CA}
tls-auth-clients optional
save ""
appendonly no
daemonize yes
pidfile ${REDIS_TLS_PID}
logfile ${REDIS_TLS_LOG}
dir ${REDIS_TLS_DIR}
user default off
user ${REDIS_TLS_USER} on >${REDIS_TLS_PASSWORD} ~* &* +@all
CONF
}

# wait_for NAME SECONDS PROBE PIDFN LOG: polls PROBE until it succeeds; dies if PIDFN finds no process.
wait_for() {
  local name="$1" seconds="$2" probe="$3" pidfn="$4" logfile="$5"
  local deadline=$((SECONDS + seconds))
  until "${probe}"; do
    if ((SECONDS >= deadline)); then
      tail -n 20 -- "${logfile}" >&2 2>/dev/null || true
      die "${name}: not ready after ${seconds}s; see ${logfile}"
    fi
    if ! "${pidfn}" >/dev/null; then
      tail -n 20 -- "${logfile}" >&2 2>/dev/null || true
      die "${name}: redis-server exited during startup; see ${logfile}"
    fi
    sleep 0.1
  done
}

redis_tls_up() {
  local pid
  if pid="$(redis_tls_pid)" && redis_tls_probe; then
    log "redis-tls: already running (pid ${pid}, ${HOST}:${R1_REDIS_TLS_PORT})"
    return 0
  fi
  if ! redis_tls_pid >/dev/null; then
    require_free_port redis-tls "${R1_REDIS_TLS_PORT}" "Redis TLS"
    rm -f -- "${REDIS_TLS_PID}"
    mkdir -p -- "${REDIS_TLS_DIR}"
    write_redis_tls_certs
    write_redis_tls_config
    log "redis-tls: starting on ${HOST}:${R1_REDIS_TLS_PORT} (TLS, user ${REDIS_TLS_USER})"
    redis-server "${REDIS_TLS_CONF}" </dev/null 9>&- ||
      die "redis-tls: redis-server failed to start; see ${REDIS_TLS_LOG}"
  fi
  wait_for redis-tls "${R1_REDIS_START_TIMEOUT}" redis_tls_probe redis_tls_pid "${REDIS_TLS_LOG}"
  log "redis-tls: ready (pid $(redis_tls_pid || echo '?'), ${HOST}:${R1_REDIS_TLS_PORT})"
}

redis_tls_stop() {
  local pid
  if pid="$(redis_tls_pid)"; then
    stop_pid redis-tls "${pid}"
  else
    log "redis-tls: not running"
  fi
  rm -f -- "${REDIS_TLS_PID}"
}

redis_tls_down() {
  redis_tls_stop
  rm -rf -- "${REDIS_TLS_DIR}"
}

# ---------------------------------------------------------------------------
# Redis Cluster: 3 masters, one replica each
# ---------------------------------------------------------------------------

redis_cluster_ports() {
  local i
  for ((i = 0; i < REDIS_CLUSTER_NODES; i++)); do
    printf '%s\n' "$((R1_REDIS_CLUSTER_PORT + i))"
  done
}

redis_cluster_node_pid() { our_pid "${REDIS_CLUSTER_DIR}/$1/redis.pid" redis-server "$1"; }

redis_cluster_node_info() {
  timeout 3 redis-cli -h "${HOST}" -p "$1" cluster info 2>/dev/null | tr -d '\r'
}

# Every node runs and says the cluster is whole (all slots served, state ok).
redis_cluster_probe() {
  local port info
  for port in $(redis_cluster_ports); do
    info="$(redis_cluster_node_info "${port}")" || return 1
    grep -qx 'cluster_state:ok' <<<"${info}" || return 1
    grep -qx 'cluster_slots_assigned:16384' <<<"${info}" || return 1
  done
}

redis_cluster_pids_alive() {
  local port
  for port in $(redis_cluster_ports); do
    redis_cluster_node_pid "${port}" >/dev/null || return 1
  done
}

redis_cluster_start_node() {
  local port="$1" dir="${REDIS_CLUSTER_DIR}/$1"
  require_free_port redis-cluster "${port}" "Redis Cluster node"
  require_free_port redis-cluster "$((port + REDIS_CLUSTER_BUS_OFFSET))" "Redis Cluster bus"
  mkdir -p -- "${dir}"
  rm -f -- "${dir}/redis.pid"
  redis-server --bind "${HOST}" --port "${port}" \
    --cluster-enabled yes --cluster-config-file "${dir}/nodes.conf" \
    --cluster-port "$((port + REDIS_CLUSTER_BUS_OFFSET))" \
    --cluster-node-timeout "${REDIS_CLUSTER_NODE_TIMEOUT}" \
    --save '' --appendonly no --daemonize yes \
    --pidfile "${dir}/redis.pid" --logfile "${dir}/redis.log" --dir "${dir}" \
    </dev/null 9>&- || die "redis-cluster: redis-server on ${port} failed to start; see ${dir}/redis.log"
}

redis_cluster_up() {
  local port started=0 created=0 first="${R1_REDIS_CLUSTER_PORT}"
  if redis_cluster_pids_alive && redis_cluster_probe; then
    log "redis-cluster: already running (${HOST}:${first}..$((first + REDIS_CLUSTER_NODES - 1)))"
    return 0
  fi
  for port in $(redis_cluster_ports); do
    if ! redis_cluster_node_pid "${port}" >/dev/null; then
      log "redis-cluster: starting node ${HOST}:${port}"
      redis_cluster_start_node "${port}"
      started=$((started + 1))
    fi
  done
  local deadline=$((SECONDS + R1_REDIS_START_TIMEOUT))
  for port in $(redis_cluster_ports); do
    until [[ "$(timeout 3 redis-cli -h "${HOST}" -p "${port}" ping 2>/dev/null)" == "PONG" ]]; do
      ((SECONDS < deadline)) || die "redis-cluster: node ${port} never answered PING; see ${REDIS_CLUSTER_DIR}/${port}/redis.log"
      redis_cluster_node_pid "${port}" >/dev/null ||
        die "redis-cluster: node ${port} exited during startup; see ${REDIS_CLUSTER_DIR}/${port}/redis.log"
      sleep 0.1
    done
  done
  # A cluster is created once: a node that knows only itself has never been part of one.
  if grep -qx 'cluster_known_nodes:1' <<<"$(redis_cluster_node_info "${first}")"; then
    local -a nodes=()
    for port in $(redis_cluster_ports); do nodes+=("${HOST}:${port}"); done
    log "redis-cluster: creating the cluster (3 masters, 1 replica each)"
    local out
    out="$(redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes 2>&1)" || {
      printf '%s\n' "${out}" | tail -n 20 >&2
      die "redis-cluster: 'redis-cli --cluster create' failed"
    }
    created=1
  fi
  deadline=$((SECONDS + R1_REDIS_START_TIMEOUT))
  until redis_cluster_probe; do
    if ((SECONDS >= deadline)); then
      for port in $(redis_cluster_ports); do
        printf '%s: %s\n' "${port}" "$(redis_cluster_node_info "${port}" | grep -E '^cluster_state' || echo no-answer)" >&2
      done
      die "redis-cluster: not cluster_state:ok on every node after ${R1_REDIS_START_TIMEOUT}s"
    fi
    sleep 0.1
  done
  log "redis-cluster: ready (${HOST}:${first}..$((first + REDIS_CLUSTER_NODES - 1)); ${started} node(s) started, created: ${created})"
}

redis_cluster_stop() {
  local port pid any=0
  for port in $(redis_cluster_ports); do
    if pid="$(redis_cluster_node_pid "${port}")"; then
      stop_pid "redis-cluster ${port}" "${pid}"
      any=1
    fi
    rm -f -- "${REDIS_CLUSTER_DIR}/${port}/redis.pid"
  done
  ((any)) || log "redis-cluster: not running"
}

redis_cluster_down() {
  redis_cluster_stop
  rm -rf -- "${REDIS_CLUSTER_DIR}"
}

# ---------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------

check_java() {
  local java out ver major
  java="$(java_bin)"
  command -v "${java}" >/dev/null 2>&1 || die "kafka: java not found (run '${PROG} install' or set JAVA_HOME)"
  out="$("${java}" -version 2>&1)" || die "kafka: '${java} -version' failed: ${out}"
  ver="$(sed -n 's/.*version "\([^"]*\)".*/\1/p' <<<"${out}" | head -n 1)"
  if [[ "${ver}" == 1.* ]]; then
    major="$(cut -d. -f2 <<<"${ver}")"
  else
    major="${ver%%[.+-]*}"
  fi
  [[ "${major}" =~ ^[0-9]+$ ]] || die "kafka: cannot parse the Java version from: ${out}"
  ((major >= 17)) ||
    die "kafka: Kafka ${KAFKA_VERSION} needs Java 17 or newer, but '${java}' is Java ${ver}; install openjdk-17-jre-headless or set JAVA_HOME"
}

kafka_probe() {
  local md
  md="$(timeout 10 kcat -b "${HOST}:${R1_KAFKA_PORT}" -L -m 2 2>/dev/null)" || return 1
  grep -q "broker 1 at ${HOST}:${R1_KAFKA_PORT}" <<<"${md}"
}

# The SASL_SSL listener answers a metadata request over TLS checked against the test CA. The probe logs in
# with PLAIN: Debian's kcat (librdkafka 2.0) computes SCRAM proofs this broker refuses, while the
# librdkafka that r1-hybrid links (2.12, bundled by rdkafka-sys) logs in with SCRAM fine — the tests prove
# it; the SCRAM users exist from the moment the storage is formatted.
kafka_secure_probe() {
  local md
  md="$(timeout 10 kcat -b "${HOST}:${R1_KAFKA_SECURE_PORT}" -L -m 2 \
    -X security.protocol=SASL_SSL -X sasl.mechanisms=PLAIN \
    -X sasl.username="${KAFKA_PLAIN_USER}" -X sasl.password="${KAFKA_PLAIN_PASSWORD}" \
    -X ssl.ca.location="${KAFKA_CA}" 2>/dev/null)" || return 1
  grep -q "broker 1 at ${HOST}:${R1_KAFKA_SECURE_PORT}" <<<"${md}"
}

kafka_probes() {
  kafka_probe && kafka_secure_probe
}

# Makes a test CA and a broker keystore in DIR (default: the single broker's) when they are missing or
# expire within a day. The certificate names 127.0.0.1 and localhost, so it serves every broker on loopback.
write_kafka_tls() {
  local t="${1:-${KAFKA_TLS}}" out
  if [[ -f "${t}/broker.p12" ]] && openssl x509 -checkend 86400 -noout -in "${t}/ca.pem" >/dev/null 2>&1; then
    return 0
  fi
  command -v openssl >/dev/null 2>&1 || die "kafka: openssl not found (run '${PROG} install')"
  log "kafka: making the test CA and the broker's certificate (${t})"
  rm -rf -- "${t}"
  mkdir -p -- "${t}"
  if ! out="$(
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "${t}/ca.key" -out "${t}/ca.pem" -days 30 -subj "/CN=r1-hybrid test Kafka CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>&1 &&
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "${t}/broker.key" -out "${t}/broker.csr" -subj "/CN=localhost" 2>&1 &&
      printf 'subjectAltName=IP:%s,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' \
        "${HOST}" >"${t}/broker.ext" &&
      openssl x509 -req -in "${t}/broker.csr" -CA "${t}/ca.pem" -CAkey "${t}/ca.key" -CAcreateserial \
        -out "${t}/broker.pem" -days 30 -extfile "${t}/broker.ext" 2>&1 &&
      openssl pkcs12 -export -in "${t}/broker.pem" -inkey "${t}/broker.key" -certfile "${t}/ca.pem" \
        -name broker -out "${t}/broker.p12" -passout "pass:${KAFKA_KEYSTORE_PASSWORD}" 2>&1
  )"; then
    printf '%s\n' "${out}" | tail -n 20 >&2
    rm -rf -- "${t}"
    die "kafka: openssl could not make the test CA and the broker's keystore"
  fi
  rm -f -- "${t}/broker.csr" "${t}/broker.ext" "${t}/ca.srl"
}

# Prints the SASL_SSL listener's broker properties, with the keystore at KEYSTORE.
kafka_sasl_ssl_properties() {
  cat <<EOF
# SASL_SSL for clients only (the controller and inter-broker traffic stay on PLAINTEXT): SCRAM users
# are created at format time; PLAIN's user is listed here.
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_${KAFKA_PLAIN_USER}="${KAFKA_PLAIN_PASSWORD}";
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$1
listener.name.sasl_ssl.ssl.keystore.password=${KAFKA_KEYSTORE_PASSWORD}
listener.name.sasl_ssl.ssl.key.password=${KAFKA_KEYSTORE_PASSWORD}
EOF
}

# Prints the topic defaults of a broker whose partitions have REPLICAS copies, MIN_ISR of them in sync
# for a write (the internal topics' too).
kafka_replication_properties() {
  cat <<EOF
num.partitions=3
default.replication.factor=$1
min.insync.replicas=$2
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=$1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=$1
transaction.state.log.min.isr=$2
transaction.state.log.num.partitions=5
share.coordinator.state.topic.replication.factor=$1
share.coordinator.state.topic.min.isr=$2
group.initial.rebalance.delay.ms=0
EOF
}

# Writes to FILE a log4j2 configuration that sends a broker's log to LOG.
write_kafka_log4j() {
  cat >"$1" <<EOF
# Written by ${PROG}: broker logs go to $2, not the terminal.
status = warn
name = r1-test-kafka
# Kafka logs while it shuts down; keep the file appender alive until the JVM
# exits instead of log4j's hook stopping it (which falls back to stderr).
shutdownHook = disable
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $2
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
EOF
}

write_kafka_config() {
  cat >"${KAFKA_PROPS}" <<EOF
# Written by ${PROG}; regenerated on every 'up'.  Single-node KRaft test broker.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=${HOST}:${R1_KAFKA_CONTROLLER_PORT}
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://${HOST}:${R1_KAFKA_PORT},CONTROLLER://${HOST}:${R1_KAFKA_CONTROLLER_PORT},SASL_SSL://${HOST}:${R1_KAFKA_SECURE_PORT}
advertised.listeners=PLAINTEXT://${HOST}:${R1_KAFKA_PORT},CONTROLLER://${HOST}:${R1_KAFKA_CONTROLLER_PORT},SASL_SSL://${HOST}:${R1_KAFKA_SECURE_PORT}
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
log.dirs=${KAFKA_DATA}

$(kafka_sasl_ssl_properties "${KAFKA_KEYSTORE}")

$(kafka_replication_properties 1 1)

num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=24
EOF
  write_kafka_log4j "${KAFKA_LOG4J}" "${KAFKA_LOG}"
}

kafka_java_opts() {
  local -a opts
  # shellcheck disable=SC2206 # word splitting of the heap flags is intended
  opts=(${R1_KAFKA_HEAP_OPTS})
  opts+=(
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15
    -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true
    -Dlog4j2.configurationFile="file:${KAFKA_LOG4J}"
    -Dkafka.logs.dir="${KAFKA_LOGDIR}"
  )
  printf '%s\n' "${opts[@]}"
}

# Runs a Kafka tool class; its output goes to KAFKA_OUT and, on failure, the
# tail of it to stderr before dying with MESSAGE.  Stdout is kept in TOOL_OUT.
TOOL_OUT=""
kafka_tool() {
  local message="$1"; shift
  local java rc=0
  java="$(java_bin)"
  local -a opts
  mapfile -t opts < <(kafka_java_opts)
  TOOL_OUT="$("${java}" "${opts[@]}" -cp "${KAFKA_LIBS}/*" "$@" 2>&1)" || rc=$?
  printf '%s\n' "${TOOL_OUT}" >>"${KAFKA_OUT}"
  if ((rc != 0)); then
    printf '%s\n' "${TOOL_OUT}" | tail -n 20 >&2
    die "kafka: ${message} (exit ${rc}); see ${KAFKA_OUT}"
  fi
}

kafka_format_if_needed() {
  if [[ -f "${KAFKA_DATA}/meta.properties" ]]; then
    [[ -f "${KAFKA_SECURE_MARK}" ]] ||
      die "kafka: ${KAFKA_DATA} was formatted without the SASL_SSL listener's SCRAM users; run '${PROG} down kafka' (it deletes the data) and 'up' again"
    return 0
  fi
  new_cluster_id
  log "kafka: formatting storage (cluster id ${CLUSTER_ID})"
  # --standalone: this node is the whole (dynamic) controller quorum, as
  # controller.quorum.bootstrap.servers requires in KRaft.
  kafka_format "${KAFKA_DATA}" "${KAFKA_PROPS}" "${CLUSTER_ID}" --standalone
}

# Sets CLUSTER_ID to a fresh cluster id.
CLUSTER_ID=""
new_cluster_id() {
  kafka_tool "'StorageTool random-uuid' failed" kafka.tools.StorageTool random-uuid
  CLUSTER_ID="$(tail -n 1 <<<"${TOOL_OUT}" | tr -d '[:space:]')"
  [[ "${CLUSTER_ID}" =~ ^[A-Za-z0-9_-]{22}$ ]] ||
    die "kafka: StorageTool random-uuid printed no cluster id (got '${CLUSTER_ID}'); see ${KAFKA_OUT}"
}

# kafka_format DATA PROPS ID [FLAG...]: formats DATA afresh for the broker of PROPS in cluster ID, with the
# SCRAM users (and a mark saying so), the StorageTool FLAGs added.
kafka_format() {
  local data="$1" props="$2" id="$3"; shift 3
  rm -rf -- "${data}"
  mkdir -p -- "${data}"
  kafka_tool "storage format of ${data} failed" kafka.tools.StorageTool \
    format "$@" -t "${id}" -c "${props}" \
    --add-scram "SCRAM-SHA-512=[name=${KAFKA_SCRAM_USER},password=${KAFKA_SCRAM_PASSWORD}]" \
    --add-scram "SCRAM-SHA-256=[name=${KAFKA_SCRAM_USER},password=${KAFKA_SCRAM_PASSWORD}]"
  : >"${data}/.r1-scram-users"
}

# Prints what was appended to FILE since byte offset OFFSET.
new_since() {
  tail -c "+$(($2 + 1))" -- "$1" 2>/dev/null || true
}

file_size() {
  if [[ -f "$1" ]]; then stat -c %s -- "$1"; else echo 0; fi
}

kafka_up() {
  local pid log_offset=0 out_offset=0
  if pid="$(kafka_pid)"; then
    if kafka_probes; then
      log "kafka: already running (pid ${pid}, ${HOST}:${R1_KAFKA_PORT}, SASL_SSL ${HOST}:${R1_KAFKA_SECURE_PORT})"
      return 0
    fi
  else
    check_java
    require_free_port kafka "${R1_KAFKA_PORT}" "Kafka broker"
    require_free_port kafka "${R1_KAFKA_CONTROLLER_PORT}" "Kafka controller"
    require_free_port kafka "${R1_KAFKA_SECURE_PORT}" "Kafka broker SASL_SSL"
    rm -f -- "${KAFKA_PID}"
    mkdir -p -- "${KAFKA_DIR}" "${KAFKA_LOGDIR}"
    write_kafka_tls
    write_kafka_config
    log_offset="$(file_size "${KAFKA_LOG}")"
    printf '\n=== %s: starting Kafka %s ===\n' "$(date -u +%FT%TZ)" "${KAFKA_VERSION}" >>"${KAFKA_OUT}"
    kafka_format_if_needed
    local java
    java="$(java_bin)"
    local -a opts
    mapfile -t opts < <(kafka_java_opts)
    out_offset="$(file_size "${KAFKA_OUT}")"
    log "kafka: starting on ${HOST}:${R1_KAFKA_PORT} (SASL_SSL ${HOST}:${R1_KAFKA_SECURE_PORT}, controller ${HOST}:${R1_KAFKA_CONTROLLER_PORT})"
    # The inner shell writes its own pid and then execs java, so the pid file
    # holds the JVM's pid; setsid detaches it from our terminal / process group.
    # shellcheck disable=SC2016 # $$ and "$@" are for the inner shell
    setsid nohup bash -c 'echo "$$" >"$1"; shift; exec "$@"' r1-kafka \
      "${KAFKA_PID}" "${java}" "${opts[@]}" -cp "${KAFKA_LIBS}/*" kafka.Kafka "${KAFKA_PROPS}" \
      </dev/null >>"${KAFKA_OUT}" 2>&1 9>&- &
    disown 2>/dev/null || true
  fi
  local deadline=$((SECONDS + R1_KAFKA_START_TIMEOUT)) started=${SECONDS}
  until kafka_probes; do
    if ((SECONDS >= deadline)); then
      new_since "${KAFKA_LOG}" "${log_offset}" | tail -n 30 >&2
      die "kafka: no metadata answer from ${HOST}:${R1_KAFKA_PORT} and SASL_SSL ${HOST}:${R1_KAFKA_SECURE_PORT} after ${R1_KAFKA_START_TIMEOUT}s; see ${KAFKA_LOG} and ${KAFKA_OUT} ('${PROG} logs kafka')"
    fi
    # Give the wrapper a moment to write the pid file before judging.
    if ((SECONDS - started >= 2)) && ! kafka_pid >/dev/null; then
      new_since "${KAFKA_OUT}" "${out_offset}" | tail -n 10 >&2
      new_since "${KAFKA_LOG}" "${log_offset}" | grep -E -A 3 '^\[[^]]*\] (ERROR|FATAL) ' | tail -n 20 >&2 || true
      die "kafka: the broker exited during startup; see ${KAFKA_OUT} and ${KAFKA_LOG}"
    fi
    sleep 0.5
  done
  log "kafka: ready (pid $(kafka_pid || echo '?'), ${HOST}:${R1_KAFKA_PORT}, SASL_SSL ${HOST}:${R1_KAFKA_SECURE_PORT}) after $((SECONDS - started))s"
}

kafka_stop() {
  local pid
  if pid="$(kafka_pid)"; then
    stop_pid kafka "${pid}"
  else
    log "kafka: not running"
  fi
  rm -f -- "${KAFKA_PID}"
}

kafka_down() {
  kafka_stop
  rm -rf -- "${KAFKA_DATA}" "${KAFKA_TLS}"
}

# ---------------------------------------------------------------------------
# Kafka cluster: three KRaft nodes on loopback, each broker + controller
# ---------------------------------------------------------------------------

# Node N (1..3) listens on R1_KAFKA_CLUSTER_PORT + N - 1 (PLAINTEXT), R1_KAFKA_CLUSTER_CONTROLLER_PORT +
# N - 1 and R1_KAFKA_CLUSTER_SECURE_PORT + N - 1 (SASL_SSL): 19192-19200 by default, beside the single
# broker's 19092-19094. Keep them below the ephemeral range (/proc/sys/net/ipv4/ip_local_port_range,
# 32768 up by default): a killed node's port may otherwise be some client's source port by the time it
# starts again, and the node cannot bind it.
R1_KAFKA_CLUSTER_PORT="${R1_KAFKA_CLUSTER_PORT:-19192}"
R1_KAFKA_CLUSTER_CONTROLLER_PORT="${R1_KAFKA_CLUSTER_CONTROLLER_PORT:-19195}"
R1_KAFKA_CLUSTER_SECURE_PORT="${R1_KAFKA_CLUSTER_SECURE_PORT:-19198}"
R1_KAFKA_CLUSTER_HEAP_OPTS="${R1_KAFKA_CLUSTER_HEAP_OPTS:--Xms128m -Xmx384m}"
CLUSTER_NODES=(1 2 3)
CLUSTER_DIR="${R1_STATE_DIR}/kafka-cluster"
# One test CA and one broker certificate (SAN 127.0.0.1, localhost) for the three nodes.
CLUSTER_TLS="${CLUSTER_DIR}/tls"
CLUSTER_ID_FILE="${CLUSTER_DIR}/cluster.id"

cluster_validate() {
  local name
  for name in R1_KAFKA_CLUSTER_PORT R1_KAFKA_CLUSTER_CONTROLLER_PORT R1_KAFKA_CLUSTER_SECURE_PORT; do
    validate_port "${name}" "${!name}"
    validate_port "${name} + 2" "$((${!name} + 2))"
  done
  local -a starts=("${R1_KAFKA_CLUSTER_PORT}" "${R1_KAFKA_CLUSTER_CONTROLLER_PORT}" "${R1_KAFKA_CLUSTER_SECURE_PORT}")
  local a b
  for a in "${starts[@]}"; do
    for b in "${starts[@]}"; do
      if ((a != b && a <= b && b <= a + 2)); then
        die "R1_KAFKA_CLUSTER_PORT, R1_KAFKA_CLUSTER_CONTROLLER_PORT and R1_KAFKA_CLUSTER_SECURE_PORT each take three ports; their ranges overlap"
      fi
    done
  done
}

validate_node() {
  [[ "${1:-}" =~ ^[123]$ ]] || die "kafka-cluster: node '${1:-}' does not exist (expected 1, 2 or 3)"
}

# cluster_port plain|controller|secure N
cluster_port() {
  case "$1" in
    plain) printf '%s\n' "$((R1_KAFKA_CLUSTER_PORT + $2 - 1))" ;;
    controller) printf '%s\n' "$((R1_KAFKA_CLUSTER_CONTROLLER_PORT + $2 - 1))" ;;
    secure) printf '%s\n' "$((R1_KAFKA_CLUSTER_SECURE_PORT + $2 - 1))" ;;
  esac
}

# cluster_addresses plain|secure: the bootstrap list of every node.
cluster_addresses() {
  local n out=""
  for n in "${CLUSTER_NODES[@]}"; do out+="${out:+,}${HOST}:$(cluster_port "$1" "${n}")"; done
  printf '%s\n' "${out}"
}

node_dir() { printf '%s/node%s\n' "${CLUSTER_DIR}" "$1"; }
node_pidfile() { printf '%s/kafka.pid\n' "$(node_dir "$1")"; }
node_pid() { our_pid "$(node_pidfile "$1")" kafka.Kafka "$(node_dir "$1")/server.properties"; }

# The metadata node N answers on LISTENER (plain|secure) lists all three brokers at that listener's ports:
# the node runs, has joined the quorum and is not fenced, as the others are.
node_probe() {
  local n="$1" listener="$2" md m port
  local -a tls=()
  port="$(cluster_port "${listener}" "${n}")"
  if [[ "${listener}" == secure ]]; then
    # PLAIN for the reason given at kafka_secure_probe.
    tls=(-X security.protocol=SASL_SSL -X sasl.mechanisms=PLAIN -X sasl.username="${KAFKA_PLAIN_USER}"
      -X sasl.password="${KAFKA_PLAIN_PASSWORD}" -X ssl.ca.location="${CLUSTER_TLS}/ca.pem")
  fi
  md="$(timeout 10 kcat -b "${HOST}:${port}" -L -m 2 "${tls[@]}" 2>/dev/null)" || return 1
  for m in "${CLUSTER_NODES[@]}"; do
    grep -q "broker ${m} at ${HOST}:$(cluster_port "${listener}" "${m}")" <<<"${md}" || return 1
  done
}

node_probes() { node_probe "$1" plain && node_probe "$1" secure; }

write_node_config() {
  local n="$1" d voters="" m
  d="$(node_dir "${n}")"
  for m in "${CLUSTER_NODES[@]}"; do voters+="${voters:+,}${m}@${HOST}:$(cluster_port controller "${m}")"; done
  local plain secure controller
  plain="$(cluster_port plain "${n}")" secure="$(cluster_port secure "${n}")" controller="$(cluster_port controller "${n}")"
  cat >"${d}/server.properties" <<EOF
# Written by ${PROG}; regenerated on every start.  Node ${n} of the three-node KRaft test cluster.
process.roles=broker,controller
node.id=${n}
controller.quorum.voters=${voters}
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://${HOST}:${plain},CONTROLLER://${HOST}:${controller},SASL_SSL://${HOST}:${secure}
advertised.listeners=PLAINTEXT://${HOST}:${plain},CONTROLLER://${HOST}:${controller},SASL_SSL://${HOST}:${secure}
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
log.dirs=${d}/data

$(kafka_sasl_ssl_properties "${CLUSTER_TLS}/broker.p12")

# What production runs: every partition on three brokers, a write acknowledged by two.
$(kafka_replication_properties 3 2)
unclean.leader.election.enable=false

# Lean: three JVMs beside the single broker on a small machine.
num.network.threads=1
num.io.threads=2
num.replica.fetchers=1
background.threads=2
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=8388608
num.recovery.threads.per.data.dir=1
log.retention.hours=24
EOF
  write_kafka_log4j "${d}/log4j2.properties" "${d}/logs/server.log"
}

# The single broker's helpers (kafka_tool, kafka_java_opts) read these variables; a node's functions
# declare them local (bash scopes locals dynamically), so the helpers work on that node.
#   with_node N COMMAND...: runs COMMAND with KAFKA_OUT, KAFKA_LOG4J, KAFKA_LOGDIR and the heap of node N.
with_node() {
  local d
  d="$(node_dir "$1")"; shift
  local KAFKA_OUT="${d}/logs/kafka.out" KAFKA_LOG4J="${d}/log4j2.properties" KAFKA_LOGDIR="${d}/logs"
  local R1_KAFKA_HEAP_OPTS="${R1_KAFKA_CLUSTER_HEAP_OPTS}"
  "$@"
}

# Formats node N's storage with the cluster's id (made once) and the SCRAM users.
node_format_if_needed() {
  local n="$1" d cluster_id
  d="$(node_dir "${n}")"
  if [[ -f "${d}/data/meta.properties" ]]; then
    [[ -f "${d}/data/.r1-scram-users" ]] ||
      die "kafka-cluster: ${d}/data was formatted without the SCRAM users; run '${PROG} down kafka-cluster' (it deletes the data) and 'up' again"
    return 0
  fi
  if [[ ! -s "${CLUSTER_ID_FILE}" ]]; then
    new_cluster_id
    printf '%s\n' "${CLUSTER_ID}" >"${CLUSTER_ID_FILE}"
  fi
  cluster_id="$(<"${CLUSTER_ID_FILE}")"
  log "kafka-cluster: formatting node ${n} (cluster id ${cluster_id})"
  # A static quorum (controller.quorum.voters): each node is formatted alike, none --standalone.
  kafka_format "${d}/data" "${d}/server.properties" "${cluster_id}"
}

# Starts node N's JVM unless it runs (no waiting: a node answers only once a quorum has formed).
node_spawn() {
  local n="$1" d java
  d="$(node_dir "${n}")"
  if node_pid "${n}" >/dev/null; then
    return 0
  fi
  local p
  for p in plain controller secure; do
    require_free_port kafka-cluster "$(cluster_port "${p}" "${n}")" "node ${n} ${p}"
  done
  mkdir -p -- "${d}/logs"
  rm -f -- "$(node_pidfile "${n}")"
  write_node_config "${n}"
  printf '\n=== %s: starting node %s of the Kafka %s cluster ===\n' "$(date -u +%FT%TZ)" "${n}" "${KAFKA_VERSION}" \
    >>"${d}/logs/kafka.out"
  with_node "${n}" node_format_if_needed "${n}"
  java="$(java_bin)"
  local -a opts
  mapfile -t opts < <(with_node "${n}" kafka_java_opts)
  log "kafka-cluster: starting node ${n} (${HOST}:$(cluster_port plain "${n}"), SASL_SSL $(cluster_port secure "${n}"), controller $(cluster_port controller "${n}"))"
  # As kafka_up: the pid file holds the JVM's pid, detached from our terminal.
  # shellcheck disable=SC2016 # $$ and "$@" are for the inner shell
  setsid nohup bash -c 'echo "$$" >"$1"; shift; exec "$@"' r1-kafka-node \
    "$(node_pidfile "${n}")" "${java}" "${opts[@]}" -cp "${KAFKA_LIBS}/*" kafka.Kafka "${d}/server.properties" \
    </dev/null >>"${d}/logs/kafka.out" 2>&1 9>&- &
  disown 2>/dev/null || true
}

# Waits until every node N given answers metadata listing the three brokers, on both listeners.
nodes_wait() {
  local started=${SECONDS} deadline=$((SECONDS + R1_KAFKA_START_TIMEOUT)) n waiting
  while :; do
    waiting=()
    for n in "$@"; do node_probes "${n}" || waiting+=("${n}"); done
    ((${#waiting[@]} == 0)) && break
    for n in "${waiting[@]}"; do
      if ((SECONDS - started >= 2)) && ! node_pid "${n}" >/dev/null; then
        tail -n 10 -- "$(node_dir "${n}")/logs/kafka.out" >&2 2>/dev/null || true
        die "kafka-cluster: node ${n} exited during startup; see $(node_dir "${n}")/logs/ ('${PROG} logs kafka-cluster')"
      fi
    done
    if ((SECONDS >= deadline)); then
      die "kafka-cluster: node(s) ${waiting[*]} did not list three brokers on both listeners after ${R1_KAFKA_START_TIMEOUT}s; see ${CLUSTER_DIR}/node*/logs/"
    fi
    sleep 0.5
  done
  log "kafka-cluster: node(s) $* ready after $((SECONDS - started))s (PLAINTEXT $(cluster_addresses plain), SASL_SSL $(cluster_addresses secure))"
}

kafka_cluster_up() {
  local n
  check_java
  mkdir -p -- "${CLUSTER_DIR}"
  write_kafka_tls "${CLUSTER_TLS}"
  for n in "${CLUSTER_NODES[@]}"; do node_spawn "${n}"; done
  nodes_wait "${CLUSTER_NODES[@]}"
}

# SIGTERM to every node at once (one by one, the last would wait for a quorum that is gone), then as stop_pid.
kafka_cluster_stop() {
  local n pid i
  local -a pids=()
  for n in "${CLUSTER_NODES[@]}"; do
    if pid="$(node_pid "${n}")"; then
      log "kafka-cluster: stopping node ${n} (pid ${pid})"
      kill -TERM "${pid}" 2>/dev/null || true
      pids+=("${pid}")
    fi
  done
  ((${#pids[@]} > 0)) || log "kafka-cluster: not running"
  for pid in "${pids[@]}"; do
    for ((i = 0; i < R1_STOP_TIMEOUT * 10; i++)); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "${pid}" 2>/dev/null || continue
    stop_pid kafka-cluster "${pid}"
  done
  for n in "${CLUSTER_NODES[@]}"; do rm -f -- "$(node_pidfile "${n}")"; done
}

kafka_cluster_down() {
  kafka_cluster_stop
  rm -rf -- "${CLUSTER_DIR}"
}

# The drills: SIGKILL one node (its data is kept), and start it again.
cmd_kill_broker() {
  local n="$1" pid i
  validate_node "${n}"
  take_lock
  pid="$(node_pid "${n}")" || die "kafka-cluster: node ${n} is not running"
  log "kafka-cluster: SIGKILL to node ${n} (pid ${pid})"
  kill -KILL "${pid}"
  for ((i = 0; i < 100; i++)); do
    kill -0 "${pid}" 2>/dev/null || break
    sleep 0.1
  done
  ! kill -0 "${pid}" 2>/dev/null || die "kafka-cluster: node ${n} (pid ${pid}) survived SIGKILL"
  rm -f -- "$(node_pidfile "${n}")"
}

cmd_start_broker() {
  local n="$1"
  validate_node "${n}"
  take_lock
  [[ -d "$(node_dir "${n}")/data" ]] || die "kafka-cluster: node ${n} has no data; start the cluster with '${PROG} up kafka-cluster'"
  node_spawn "${n}"
  nodes_wait "${n}"
}

# One status line for the cluster; fails unless every node runs and answers on both listeners.
cluster_status() {
  local n pid rc=0 line=""
  for n in "${CLUSTER_NODES[@]}"; do
    if pid="$(node_pid "${n}")"; then line+=" node${n}=pid:${pid}"; else line+=" node${n}=stopped"; rc=1; fi
    if command -v kcat >/dev/null 2>&1 && node_probes "${n}"; then line+=",metadata-ok"; else line+=",no-answer"; rc=1; fi
  done
  printf 'kafka-cluster%s addrs=%s sasl_ssl=%s\n' "${line}" "$(cluster_addresses plain)" "$(cluster_addresses secure)"
  return "${rc}"
}

# Whether the cluster was started and not stopped since (a pid file of any node is left).
cluster_started() {
  local n
  for n in "${CLUSTER_NODES[@]}"; do [[ -f "$(node_pidfile "${n}")" ]] && return 0; done
  return 1
}

cluster_env() {
  printf 'export R1_TEST_KAFKA_CLUSTER_BROKERS=%s\n' "$(cluster_addresses plain)"
  printf 'export R1_TEST_KAFKA_CLUSTER_SECURE_BROKERS=%s\n' "$(cluster_addresses secure)"
  printf 'export R1_TEST_KAFKA_CLUSTER_CA_FILE=%q\n' "${CLUSTER_TLS}/ca.pem"
  local n files=""
  for n in "${CLUSTER_NODES[@]}"; do files+="${files:+,}$(node_pidfile "${n}")"; done
  printf 'export R1_TEST_KAFKA_CLUSTER_PID_FILES=%q\n' "${files}"
  printf 'export R1_TEST_KAFKA_CLUSTER_CONTROL=%q\n' "${SCRIPT_DIR}/services.sh"
}

cluster_log_files() {
  local n
  for n in "${CLUSTER_NODES[@]}"; do
    printf '%s\n' "$(node_dir "${n}")/logs/kafka.out" "$(node_dir "${n}")/logs/server.log"
  done
}

# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------

# Sets SVCS from the optional service argument (in this shell, so that an
# unknown name really aborts the script).
# Without one, 'up' means Redis and the broker; 'down' and 'stop' the cluster as well.
SVCS=()
parse_services() {
  case "${1:-all}" in
    all) SVCS=(redis redis-tls redis-cluster kafka) ;;
    redis | redis-tls | redis-cluster | kafka | kafka-cluster) SVCS=("$1") ;;
    *) die "unknown service '$1' (expected redis, redis-tls, redis-cluster, kafka or kafka-cluster)" ;;
  esac
}

# Serializes up/down on one state dir (e.g. parallel test jobs calling 'up').
# The daemons are started with fd 9 closed so they do not inherit the lock.
take_lock() {
  mkdir -p -- "${R1_STATE_DIR}"
  command -v flock >/dev/null 2>&1 || return 0
  exec 9>"${R1_STATE_DIR}/.lock"
  flock -w 300 9 || die "another ${PROG} is still working on ${R1_STATE_DIR} after 300s"
}

cmd_up() {
  local svc
  parse_services "${1:-all}"
  take_lock
  install_packages
  for svc in "${SVCS[@]}"; do
    if [[ "${svc}" == kafka* ]]; then install_kafka_libs; fi
  done
  for svc in "${SVCS[@]}"; do
    "${svc//-/_}_up"
  done
}

cmd_down() {
  local svc
  parse_services "${1:-all}"
  (($# > 0)) || SVCS+=(kafka-cluster)
  take_lock
  for svc in "${SVCS[@]}"; do
    "${svc//-/_}_down"
  done
}

cmd_stop() {
  local svc
  parse_services "${1:-all}"
  (($# > 0)) || SVCS+=(kafka-cluster)
  take_lock
  for svc in "${SVCS[@]}"; do
    "${svc//-/_}_stop"
  done
}

cmd_status() {
  local rc=0 pid state probe secure
  if pid="$(redis_pid)"; then state="running pid=${pid}"; else state="stopped pid=-"; fi
  if command -v redis-cli >/dev/null 2>&1 && redis_probe; then probe="PONG"; else probe="no-answer"; rc=1; fi
  [[ "${state}" == running* ]] || rc=1
  printf 'redis  %-20s addr=%s:%s probe=%s\n' "${state}" "${HOST}" "${R1_REDIS_PORT}" "${probe}"
  redis_tls_status || rc=1
  redis_cluster_status || rc=1
  if pid="$(kafka_pid)"; then state="running pid=${pid}"; else state="stopped pid=-"; fi
  if command -v kcat >/dev/null 2>&1 && kafka_probe; then probe="metadata-ok"; else probe="no-answer"; rc=1; fi
  if command -v kcat >/dev/null 2>&1 && kafka_secure_probe; then secure="metadata-ok"; else secure="no-answer"; rc=1; fi
  [[ "${state}" == running* ]] || rc=1
  printf 'kafka  %-20s addr=%s:%s probe=%s sasl_ssl=%s:%s probe=%s\n' "${state}" "${HOST}" "${R1_KAFKA_PORT}" "${probe}" \
    "${HOST}" "${R1_KAFKA_SECURE_PORT}" "${secure}"
  if ! cluster_status && cluster_started; then rc=1; fi
  return "${rc}"
}

redis_tls_status() {
  local pid state probe rc=0
  if pid="$(redis_tls_pid)"; then state="running pid=${pid}"; else state="stopped pid=-"; rc=1; fi
  if command -v redis-cli >/dev/null 2>&1 && redis_tls_probe; then probe="PONG"; else probe="no-answer"; rc=1; fi
  printf 'redis-tls  %-16s addr=%s:%s probe=%s\n' "${state}" "${HOST}" "${R1_REDIS_TLS_PORT}" "${probe}"
  return "${rc}"
}

redis_cluster_status() {
  local port running=0 state probe rc=0
  for port in $(redis_cluster_ports); do
    if redis_cluster_node_pid "${port}" >/dev/null; then running=$((running + 1)); fi
  done
  state="nodes ${running}/${REDIS_CLUSTER_NODES}"
  ((running == REDIS_CLUSTER_NODES)) || rc=1
  if command -v redis-cli >/dev/null 2>&1 && redis_cluster_probe; then probe="cluster_state:ok"; else probe="not-ok"; rc=1; fi
  printf 'redis-cluster  %-12s addr=%s:%s-%s probe=%s\n' "${state}" "${HOST}" "${R1_REDIS_CLUSTER_PORT}" \
    "$((R1_REDIS_CLUSTER_PORT + REDIS_CLUSTER_NODES - 1))" "${probe}"
  return "${rc}"
}

redis_env() {
  local port urls=()
  printf 'export R1_TEST_REDIS_TLS_URL=rediss://%s:%s\n' "${HOST}" "${R1_REDIS_TLS_PORT}"
  printf 'export R1_TEST_REDIS_CA_FILE=%q\n' "${REDIS_TLS_CA}"
  printf 'export R1_TEST_REDIS_USERNAME=%s\n' "${REDIS_TLS_USER}"
  printf 'export R1_TEST_REDIS_PASSWORD=%s\n' "${REDIS_TLS_PASSWORD}"
  for port in $(redis_cluster_ports); do urls+=("redis://${HOST}:${port}"); done
  printf 'export R1_TEST_REDIS_CLUSTER_URLS=%s\n' "$(IFS=,; printf '%s' "${urls[*]}")"
}

cmd_env() {
  printf 'export R1_TEST_REDIS_URL=redis://%s:%s\n' "${HOST}" "${R1_REDIS_PORT}"
  printf 'export R1_TEST_KAFKA_BROKERS=%s:%s\n' "${HOST}" "${R1_KAFKA_PORT}"
  printf 'export R1_TEST_KAFKA_SECURE_BROKERS=%s:%s\n' "${HOST}" "${R1_KAFKA_SECURE_PORT}"
  printf 'export R1_TEST_KAFKA_CA_FILE=%q\n' "${KAFKA_CA}"
  printf 'export R1_TEST_KAFKA_SCRAM_USERNAME=%s\n' "${KAFKA_SCRAM_USER}"
  printf 'export R1_TEST_KAFKA_SCRAM_PASSWORD=%s\n' "${KAFKA_SCRAM_PASSWORD}"
  printf 'export R1_TEST_KAFKA_PLAIN_USERNAME=%s\n' "${KAFKA_PLAIN_USER}"
  printf 'export R1_TEST_KAFKA_PLAIN_PASSWORD=%s\n' "${KAFKA_PLAIN_PASSWORD}"
  redis_env
  cluster_env
}

cmd_logs() {
  local svc f
  parse_services "${1:-all}"
  for svc in "${SVCS[@]}"; do
    local -a files
    case "${svc}" in
      redis) files=("${REDIS_LOG}") ;;
      redis-tls) files=("${REDIS_TLS_LOG}") ;;
      redis-cluster) mapfile -t files < <(redis_cluster_ports | sed "s|.*|${REDIS_CLUSTER_DIR}/&/redis.log|") ;;
      kafka) files=("${KAFKA_OUT}" "${KAFKA_LOG}") ;;
      kafka-cluster) mapfile -t files < <(cluster_log_files) ;;
    esac
    for f in "${files[@]}"; do
      printf '==> %s (last %s lines) <==\n' "${f}" "${R1_LOG_LINES}"
      if [[ -f "${f}" ]]; then tail -n "${R1_LOG_LINES}" -- "${f}"; else echo "(no such file)"; fi
    done
  done
}

validate_seconds() {
  local name="$1" value="$2"
  [[ "${value}" =~ ^[0-9]+$ ]] || die "${name}='${value}' is not a whole number of seconds"
}

main() {
  validate_seconds R1_REDIS_START_TIMEOUT "${R1_REDIS_START_TIMEOUT}"
  validate_seconds R1_KAFKA_START_TIMEOUT "${R1_KAFKA_START_TIMEOUT}"
  validate_seconds R1_STOP_TIMEOUT "${R1_STOP_TIMEOUT}"
  validate_port R1_REDIS_PORT "${R1_REDIS_PORT}"
  validate_port R1_KAFKA_PORT "${R1_KAFKA_PORT}"
  validate_port R1_KAFKA_CONTROLLER_PORT "${R1_KAFKA_CONTROLLER_PORT}"
  validate_port R1_KAFKA_SECURE_PORT "${R1_KAFKA_SECURE_PORT}"
  validate_port R1_REDIS_TLS_PORT "${R1_REDIS_TLS_PORT}"
  validate_port R1_REDIS_CLUSTER_PORT "${R1_REDIS_CLUSTER_PORT}"
  validate_port R1_REDIS_CLUSTER_PORT "$((R1_REDIS_CLUSTER_PORT + REDIS_CLUSTER_NODES - 1 + REDIS_CLUSTER_BUS_OFFSET))"
  [[ "${R1_KAFKA_PORT}" != "${R1_KAFKA_CONTROLLER_PORT}" && "${R1_KAFKA_SECURE_PORT}" != "${R1_KAFKA_PORT}" &&
    "${R1_KAFKA_SECURE_PORT}" != "${R1_KAFKA_CONTROLLER_PORT}" ]] ||
    die "R1_KAFKA_PORT, R1_KAFKA_CONTROLLER_PORT and R1_KAFKA_SECURE_PORT must differ"
  cluster_validate
  local cmd="${1:-}"
  if (($# > 0)); then shift; fi
  (($# <= 1)) || die "too many arguments (see --help)"
  case "${cmd}" in
    install) (($# == 0)) || die "install takes no argument"; cmd_install ;;
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    stop) cmd_stop "$@" ;;
    status) (($# == 0)) || die "status takes no argument"; cmd_status ;;
    env) (($# == 0)) || die "env takes no argument"; cmd_env ;;
    logs) cmd_logs "$@" ;;
    kill-broker) (($# == 1)) || die "kill-broker takes a node (1, 2 or 3)"; cmd_kill_broker "$1" ;;
    start-broker) (($# == 1)) || die "start-broker takes a node (1, 2 or 3)"; cmd_start_broker "$1" ;;
    "" | -h | --help | help) usage ;;
    *) usage >&2; die "unknown command '${cmd}'" ;;
  esac
}

main "$@"
