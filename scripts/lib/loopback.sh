# Shared by the benchmark and drill scripts (source it): processes on free loopback ports, stopped on exit.
#
#   port                 a free TCP port on 127.0.0.1
#   wait_for URL WHAT    poll URL until it answers 2xx (60 s), else log and exit 1
#   track PID            stop PID (SIGINT) when the script exits; safe from $(...) subshells
#   work                 a temp folder, removed on exit
# The script defines log() before using wait_for.

work="$(mktemp -d)"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() {
  local deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || { log "$2 did not come up ($1)"; exit 1; }
    sleep 0.1
  done
}
# Pids go to a file: a function run in $(...) is a subshell, whose variables never reach the trap.
track() { echo "$1" >>"$work/pids"; }
cleanup() {
  local pid
  if [[ -f "$work/pids" ]]; then
    # SIGINT: a gateway stops at once (SIGTERM would drain for its grace period first).
    while read -r pid; do kill -INT "$pid" 2>/dev/null || true; done <"$work/pids"
  fi
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
