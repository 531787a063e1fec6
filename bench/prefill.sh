#!/usr/bin/env bash
# Fills a data directory with real issuances, then restarts the server on it and measures
# again: throughput with a large issuance log, start-up time, memory, and the admin views
# that read the log.
#
#   bench/prefill.sh [FILL_SECONDS]     (150 s gives about a million records on 2 cores)
#
# The records are genuine certificates signed by `writ bench --mode renew`, not synthetic
# entries: a CA's audit log should never contain anything it did not do.
set -euo pipefail
fill=${1:-150}
source "$(dirname "$0")/setup.sh"
ulimit -n "$(ulimit -Hn)"

start() {
  rm -f "$work/server.json"
  local t0; t0=$(date +%s.%N)
  "$writ" server --dev "${as_root[@]}" --data-dir "$work/data" --listen 127.0.0.1:0 -o json \
    > "$work/server.json" 2>"$work/server.log" &
  server=$!
  for _ in $(seq 1200); do [ -s "$work/server.json" ] && break; sleep 0.05; done
  echo "server ready in $(python3 -c "print(round($(date +%s.%N)-$t0,2))") s," \
    "VmRSS $(awk '/VmRSS/ {print $2}' /proc/$server/status) KiB"
  addr=$(python3 -c "import json;print(json.load(open('$work/server.json'))['listen'])")
}
run() {
  WRIT_LOG=warn "$writ" bench --server "$addr" --data-dir "$work/data" --mode renew \
    --connections 2 --concurrency 64 --duration "$1" -o json 2>/dev/null | python3 -c "
import json,sys; d=json.load(sys.stdin)
print(f\"  {d['certificates']} certs, {d['per_second']:.0f}/s, p99 {d['latency']['p99_ms']:.1f} ms,\",
      f\"server {d['server_cpu_us_per_cert']:.0f} us/cert, crypto {d['crypto_us_per_cert']:.0f} us\")"
}
timed() {
  local t0; t0=$(date +%s.%N); "$@" > /dev/null
  echo "  $* : $(python3 -c "print(round($(date +%s.%N)-$t0,3))") s"
}

echo "== empty log"; start; run 10s
echo "== filling for ${fill}s"; run "${fill}s"
kill "$server"; wait "$server" 2>/dev/null || true
echo "== journal: $(wc -l < "$work/data/audit.jsonl") records, $(du -m "$work/data/audit.jsonl" | cut -f1) MiB"
echo "== restarted on the full log"; start; run 10s
echo "  VmRSS after: $(awk '/VmRSS/ {print $2}' /proc/$server/status) KiB"
timed "$writ" root status --data-dir "$work/data" -o json
timed "$writ" certs list --data-dir "$work/data" -o json
