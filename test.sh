#!/usr/bin/env bash
# Runs writ's tests on a fresh Debian-like machine: finds or installs what they drive as
# independent checkers, then `cargo test --workspace --locked`. Idempotent; quick when
# everything is already there. Extra arguments go to `cargo test`.
#
#   system packages  openssl, make, a C compiler (apt-get when root; otherwise the command
#                    that installs them is printed)
#   Python tools     pkilint and py-spiffe (grpcio) in a venv inside the build directory,
#                    never the system Python: target/test-venv
#   environment      WRIT_PKILINT and WRIT_PYTHON name that venv's interpreter
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v make >/dev/null || missing+=(make)
command -v cc >/dev/null || missing+=(gcc)
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing ${missing[*]}" >&2
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "test.sh: missing ${missing[*]}; install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

# The venv lives in the target directory, so `cargo clean` removes it too.
target="${CARGO_TARGET_DIR:-target}"
venv="$target/test-venv"
python_tools=(pkilint spiffe)
if ! "$venv/bin/python" -c 'import pkilint, spiffe, grpc' 2>/dev/null; then
  mkdir -p "$target"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$venv"
    else
      echo "test.sh: python3 cannot make a venv; install it with:" >&2
      echo "  sudo apt-get install -y python3-venv" >&2
      exit 1
    fi
  fi
  echo "test.sh: installing ${python_tools[*]} into $venv" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${python_tools[@]}"
fi
python="$(cd "$venv/bin" && pwd)/python"
export WRIT_PKILINT="$python" WRIT_PYTHON="$python"

exec cargo test --workspace --locked "$@"
