#!/usr/bin/env bash
# A fleet reconnecting after a crash: mints N agent identities, kills the server with
# SIGKILL, restarts it on the same data directory and renews every identity once over
# mTLS with the certificate it held before the crash. Prints the restarted server's CPU
# time per renewal and how it checked the presented certificates.
#
#   bench/recovery.sh [N]     (default 400)
#
# Renewals run two at a time from `writ renew` processes, like agents coming back one by
# one rather than a load generator's steady stream, so the CPU figure includes a flush
# per renewal and is not comparable with `writ bench`.
set -euo pipefail
n=${1:-400}
source "$(dirname "$0")/setup.sh"

start() {
  rm -f "$work/server.json"
  "$writ" server --dev "${as_root[@]}" --data-dir "$work/data" --listen 127.0.0.1:0 \
    --metrics-listen 127.0.0.1:0 -o json > "$work/server.json" 2>/dev/null &
  server=$!
  for _ in $(seq 100); do [ -s "$work/server.json" ] && break; sleep 0.05; done
  field() { python3 -c "import json;print(json.load(open('$work/server.json'))['$1'])"; }
  addr=$(field listen); metrics=$(field metrics_listen)
}
cpu_ticks() { awk '{print $14+$15}' "/proc/$server/stat"; }

start
echo "== minting $n identities"
seq "$n" | xargs -P 2 -I{} "$writ" x509 mint --spiffe-id "spiffe://cluster.local/ns/fleet/sa/w{}" \
  --out-dir "$work/id{}" --ttl 1h --data-dir "$work/data" -o json > /dev/null
kill -9 "$server"; wait "$server" 2>/dev/null || true
echo "== SIGKILL, restart, $n renewals"
start
before=$(cpu_ticks)
seq "$n" | xargs -P 2 -I{} "$writ" renew --server "$addr" --dir "$work/id{}" -o json > /dev/null
after=$(cpu_ticks)
ticks=$(getconf CLK_TCK)
python3 -c "print(f'server CPU: {($after-$before)*1e6/$ticks/$n:.0f} µs per renewal')"
curl -s "http://$metrics/metrics" | grep '^writ_server_client_cert_checks_total' | sort
