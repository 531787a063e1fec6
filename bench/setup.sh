# Sourced by the scripts beside it. Builds writ (release) and sets:
#   here     the repository
#   work     a scratch directory, removed (background jobs killed first) on exit
#   writ     the release binary
#   as_root  --allow-root when running as root (a throwaway test machine)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
(cd "$here" && cargo build --release -q)
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target="$here/$target" ;; esac
writ="$target/release/writ"
as_root=(); [ "$(id -u)" = 0 ] && as_root=(--allow-root)
