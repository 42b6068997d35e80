#!/usr/bin/env bash
# Checks the helpers in scripts/lib.sh and the option handling of every script that uses them:
# --help prints the script's whole leading comment block; each option that takes a value, given
# without one, fails with an error naming it; on_exit, wait_for and stop_pid do what lib.sh says.
# Needs no root, network or build, and starts nothing but sleep and bash (about 5 s).
#   scripts/test_lib.sh
# shellcheck disable=SC2016  # the bash -c bodies expand their own arguments
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fails=0
ok() { printf 'ok - %s\n' "$1"; }
not_ok() { printf 'not ok - %s\n' "$1"; fails=$((fails + 1)); }
check() {  # description, then a command that must succeed
  local d=$1; shift
  if "$@"; then ok "$d"; else not_ok "$d"; fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- usage: the comment block, counted here independently of lib.sh's sed ---------------------
for s in bench build fuzz gen-test-ca install run setup stress test; do
  f="$here/$s"
  want=$(awk 'NR == 1 && /^#!/ { next } !/^#/ { exit } { n++ } END { print n + 0 }' "$f")
  out=$("$f" --help 2>&1); rc=$?
  got=$(printf '%s\n' "$out" | wc -l)
  check "$s --help exits 0" [ "$rc" = 0 ]
  check "$s --help prints all $want comment lines (got $got)" test "$want" -gt 1 -a "$got" = "$want"
  check "$s --help shows no code and no comment marks" \
    bash -c '! grep -qE "^#|set -euo|^here=" <<<"$1"' _ "$out"
done
check "bench --help reaches the end of its variant list" \
  bash -c '"$1/bench" --help | grep -q "\"metrics-off\" is another name"' _ "$here"

# --- need_arg: every option that takes a value, last on the line or followed by an option -----
# Followed by "--help --not-an-option": should need_arg let --help through as the value, the
# script still stops at parsing (on the unknown option) instead of going on to install, build or
# start anything; as a last resort each run is cut off after 30 s.
value_opts="
bench --duration --rounds --connections --threads --only --nginx --module --compare
install --module
run --listen --upstream --upstream-ca --upstream-key-file --keys --prefix --nginx --module
stress --nginx --module --duration
test --nginx
fuzz --seconds
"
while read -r s opts; do
  [ -n "$s" ] || continue
  for o in $opts; do
    for extra in "" "--help --not-an-option"; do
      # shellcheck disable=SC2086  # $extra is two words or none
      out=$(timeout 30 "$here/$s" "$o" $extra 2>&1); rc=$?
      check "$s $o $extra: exit 1 naming $o" \
        bash -c '[ "$1" = 1 ] && grep -q -- "error: $2 needs a value" <<<"$3" && ! grep -q unbound <<<"$3"' \
        _ "$rc" "$o" "$out"
    done
  done
done <<<"$value_opts"
out=$("$here/test" --nginx=bogus 2>&1); rc=$?
check "test --nginx=bogus fails at once" bash -c '[ "$1" = 1 ] && grep -q "system, vendored or debian13" <<<"$2"' _ "$rc" "$out"
out=$("$here/gen-test-ca" 2>&1); rc=$?
check "gen-test-ca without DIR: exit 1 and a clear error" bash -c '[ "$1" = 1 ] && grep -q "needs a DIR" <<<"$2"' _ "$rc" "$out"

# --- on_exit ----------------------------------------------------------------------------------
cat >"$tmp/exit.sh" <<EOF
set -euo pipefail
. "$here/lib.sh"
on_exit echo first "a  b"
on_exit false
on_exit echo second
case \$1 in
  status) exit 3 ;;
  die) die "boom" ;;
  term) sleep 30 & wait \$! ;;
  error) false ;;
esac
EOF
out=$(bash "$tmp/exit.sh" status 2>/dev/null); rc=$?
check "on_exit: every command runs, latest first, arguments kept" [ "$out" = $'second\nfirst a  b' ]
check "on_exit: a failing command keeps the exit status (3, got $rc)" [ "$rc" = 3 ]
out=$(bash "$tmp/exit.sh" die 2>/dev/null); rc=$?
check "on_exit: runs after die, status 1 (got $rc)" bash -c '[ "$1" = 1 ] && [ "$2" = "$(printf "second\nfirst a  b")" ]' _ "$rc" "$out"
out=$(bash "$tmp/exit.sh" error 2>/dev/null); rc=$?
check "on_exit: runs after a set -e failure, status 1 (got $rc)" bash -c '[ "$1" = 1 ] && [ -n "$2" ]' _ "$rc" "$out"
bash "$tmp/exit.sh" term >"$tmp/term.out" 2>/dev/null & p=$!
sleep 0.3; kill -TERM "$p"; wait "$p"; rc=$?
check "on_exit: runs on SIGTERM (status $rc)" bash -c '[ "$1" = 143 ] && grep -q second "$2"' _ "$rc" "$tmp/term.out"

# --- wait_for, stop_pid (in a child bash, so lib.sh's die cannot end this script) -------------
lib() { bash -c ". '$here/lib.sh'; $1"; }
check "wait_for: 0 once the command succeeds" \
  lib 'sleep 5 & p=$!; f=$(mktemp); (sleep 0.3; touch "$f.ok") & wait_for 3 $p test -e "$f.ok"; rc=$?; kill $p; rm -f "$f" "$f.ok"; exit $rc'
start=$(date +%s%N)
check "wait_for: 1 when the process has exited (a zombie child)" \
  lib 'sleep 0.1 & p=$!; ! wait_for 5 $p false'
ms=$((($(date +%s%N) - start) / 1000000))
check "wait_for: gives up on an exited process at once (${ms} ms < 1500)" [ "$ms" -lt 1500 ]
start=$(date +%s%N)
check "wait_for: 1 after its timeout" lib 'sleep 5 & p=$!; ! wait_for 1 $p false; rc=$?; kill $p; exit $rc'
ms=$((($(date +%s%N) - start) / 1000000))
check "wait_for: the timeout is about 1 s (${ms} ms)" test "$ms" -ge 900 -a "$ms" -lt 2500
start=$(date +%s%N)
check "stop_pid: kills a process that ignores SIGTERM, after its grace time" \
  lib 'bash -c "trap \"\" TERM; while :; do sleep 0.1; done" & p=$!; sleep 0.2; stop_pid $p 1; ! alive $p'
ms=$((($(date +%s%N) - start) / 1000000))
check "stop_pid: does not hang (${ms} ms < 3000)" [ "$ms" -lt 3000 ]
# A zombie nobody reaps: its parent execs into a program that never waits.
bash -c 'sleep 0.1 & echo $! >"$1"; exec sleep 3' _ "$tmp/zombie.pid" & zparent=$!
sleep 0.4; read -r zpid <"$tmp/zombie.pid"
check "alive: a zombie is not alive (kill -0 would say it is)" \
  bash -c 'kill -0 "$2" && ! bash -c ". \"$1/lib.sh\"; alive $2"' _ "$here" "$zpid"
start=$(date +%s%N)
check "stop_pid: returns at once once the process is a zombie" lib "stop_pid $zpid"
ms=$((($(date +%s%N) - start) / 1000000))
check "stop_pid: on a zombie it does not wait out its grace time (${ms} ms < 1000)" test "$ms" -lt 1000
kill "$zparent" 2>/dev/null; wait "$zparent" 2>/dev/null
check "stop_pid: an empty or gone pid is no error" lib 'stop_pid ""; sleep 0.01 & p=$!; wait $p; stop_pid $p'

echo
if [ $fails = 0 ]; then echo "test_lib: all passed"; else echo "test_lib: $fails failed"; exit 1; fi
