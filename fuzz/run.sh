#!/usr/bin/env bash
# Builds every fuzz target and runs each for FUZZ_SECONDS (default 30) over its seed
# corpus; exits non-zero on the first crash, leak, timeout or out-of-memory.
#
#   ./fuzz/run.sh                       # CI smoke run, ~30 s per target
#   FUZZ_SECONDS=3600 ./fuzz/run.sh     # an hour per target
#   ./fuzz/run.sh csr pem_bundle        # only these targets
#
# Seeds stay untouched: new inputs libFuzzer finds go to a scratch directory (set
# FUZZ_KEEP_CORPUS=1 to grow fuzz/corpus/<target> instead). Crashes land in
# fuzz/artifacts/<target>/.
set -euo pipefail

cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-30}"
rss_mb="${FUZZ_RSS_MB:-2048}"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

cargo +nightly fuzz build

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
    echo "=== $t: ${seconds}s" >&2
    if [ "${FUZZ_KEEP_CORPUS:-0}" = 1 ]; then
        dirs=("corpus/$t")
    else
        mkdir -p "$scratch/$t"
        dirs=("$scratch/$t" "corpus/$t")
    fi
    extra=()
    [ -d "regressions/$t" ] && extra+=("regressions/$t")
    # The first directory receives new inputs; the others are only read.
    cargo +nightly fuzz run "$t" "${dirs[@]}" "${extra[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout=10 -print_final_stats=1
done
echo "all ${#targets[@]} targets ran ${seconds}s each without a crash" >&2
