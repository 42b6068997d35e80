# Shared helpers for the scripts in this folder; sourced, not run.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir="$root/target/nginx-build"       # configured copy of the system nginx's source
say() { printf '\033[1m[relay-guard]\033[0m %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "run as root (it installs packages)"; }

# Starts the project's mock Anthropic upstream in the background; stops it on exit.
# Usage: start_mock PORT [extra args...]; sets mock_pid.
start_mock() {
  local port=$1; shift
  local log="$root/target/mock-$port.log"
  mkdir -p "$root/target"
  python3 "$root/scripts/mock_upstream.py" --listen "127.0.0.1:$port" --quiet "$@" >"$log" 2>&1 &
  local pid=$!
  mock_pids="${mock_pids:-} $pid"
  trap 'kill $mock_pids 2>/dev/null || true' EXIT
  for _ in $(seq 1 50); do
    grep -q 'listening' "$log" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$log" >&2
  die "mock upstream did not start on port $port"
}
