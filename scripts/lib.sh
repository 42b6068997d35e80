# Shared helpers for the scripts in this folder; sourced, not run.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir="$root/target/nginx-build"       # configured copy of the system nginx's source
say() { printf '\033[1m[relay-guard]\033[0m %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "run as root (it installs packages)"; }
