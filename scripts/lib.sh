# Shared helpers for the scripts in this folder; sourced, not run.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC2034  # read by the scripts that source this file
build_dir="$root/target/nginx-build"       # configured copy of the system nginx's source
say() { printf '\033[1m[relay-guard]\033[0m %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "run as root (it installs packages)"; }

# Prints the running script's leading comment block (after the #! line, up to the first line
# that is not a comment) without the "# ", and exits 0: the block is the script's --help, so
# the two cannot drift apart.
usage() {
  sed -n '1{/^#!/d}; /^#/!q; s/^# \{0,1\}//p' "$0"
  exit 0
}

# Usage: need_arg "$@" from an option's case branch, before reading $2. An option that takes a
# value, given last, empty, or followed by another option, is an error naming the option
# (rather than set -u's "unbound variable", or the next option silently taken as the value).
need_arg() {
  if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value (see --help)"; fi
  case $2 in --*) die "$1 needs a value, got the option $2 (see --help)" ;; esac
}

# Runs every command given to on_exit when the script exits (also on SIGINT/SIGTERM, which bash
# turns into an exit), the latest first, so each helper can add its own cleanup without
# replacing another's trap. A failing command neither stops the rest nor (set -e would) changes
# the exit status.
_on_exit_cmds=()
_run_on_exit() {
  local i
  for ((i = ${#_on_exit_cmds[@]} - 1; i >= 0; i--)); do
    eval "${_on_exit_cmds[i]}" || true
  done
}
# Usage: on_exit COMMAND [ARG...]; the arguments are taken as they are now (a function reads
# variables at exit).
on_exit() {
  _on_exit_cmds+=("$(printf '%q ' "$@")")
  trap _run_on_exit EXIT
}

# True while process PID runs. Not kill -0: an exited process stays a zombie, and kill -0 keeps
# succeeding, until its parent reaps it; a daemon's parent may be a container's PID 1 that never does.
alive() {
  local stat
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  stat=${stat##*) }                # the command name may hold spaces and parentheses
  [ "${stat:0:1}" != Z ]
}

# Usage: wait_for SECONDS PID COMMAND [ARG...]
# Runs COMMAND every 50 ms until it succeeds (returns 0); returns 1 as soon as process PID has
# exited, or once SECONDS have passed. The one readiness loop: callers show their log and die.
wait_for() {
  local secs=$1 pid=$2 i
  shift 2
  for ((i = 0; i < secs * 20; i++)); do
    "$@" && return 0
    alive "$pid" || return 1
    sleep 0.05
  done
  return 1
}

# Usage: stop_pid PID [SECONDS (10)]. SIGTERM, up to SECONDS for it to exit, then SIGKILL; reaps
# it if it is this shell's child. Never hangs on a process that ignores SIGTERM.
stop_pid() {
  local pid=$1 secs=${2:-10} i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < secs * 20; i++)); do
    alive "$pid" || break
    sleep 0.05
  done
  alive "$pid" && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}

# Starts the project's mock Anthropic upstream in the background; stops it on exit.
# Usage: start_mock PORT [extra args...]; sets mock_pid.
start_mock() {
  local port=$1; shift
  local log="$root/target/mock-$port.log"
  mkdir -p "$root/target"
  python3 "$root/scripts/mock_upstream.py" --listen "127.0.0.1:$port" --quiet "$@" >"$log" 2>&1 &
  mock_pid=$!
  on_exit stop_pid "$mock_pid"
  wait_for 5 "$mock_pid" grep -q 'listening' "$log" && return 0
  cat "$log" >&2
  die "mock upstream did not start on port $port"
}
