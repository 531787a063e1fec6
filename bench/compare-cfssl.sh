#!/usr/bin/env bash
# Runs writ and cfssl side by side on this machine and prints both.
#
#   bench/compare-cfssl.sh [SECONDS]
#
# cfssl (Debian's golang-cfssl) and wrk are installed from Debian packages if missing.
# Both CAs use an ECDSA P-256 key and are loaded with 64 requests in flight on loopback.
# cfssl's sign API drops URI SANs, so it cannot issue SPIFFE certificates at all; it is
# measured only as a throughput reference for "a CA signing P-256 CSRs over the network".
set -euo pipefail
secs=${1:-10}

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need cfssl golang-cfssl
need wrk wrk

echo "== building writ (release)"
source "$(dirname "$0")/setup.sh"

echo "== writ: renew mode, P-256 CA, 2 connections, 64 in flight, ${secs}s"
# A throwaway CA: unencrypted keys (--dev), and allowed to run as root on a test machine.
"$writ" server --dev "${as_root[@]}" --data-dir "$work/writ" --listen 127.0.0.1:0 -o json > "$work/writ.json" 2>"$work/writ.log" &
for _ in $(seq 50); do [ -s "$work/writ.json" ] && break; sleep 0.1; done
addr=$(python3 -c "import json,sys;print(json.load(open('$work/writ.json'))['listen'])")
"$writ" bench --server "$addr" --data-dir "$work/writ" --mode renew --connections 2 \
  --concurrency 64 --duration "${secs}s" -o json > "$work/writ-bench.json"
python3 - "$work/writ-bench.json" <<'PY'
import json,sys
r=json.load(open(sys.argv[1]))
print(f"writ : {r['per_second']:.0f} certs/s  p50 {r['latency']['p50_ms']:.2f} ms  p99 {r['latency']['p99_ms']:.2f} ms  "
      f"server CPU {r['server_cpu_us_per_cert']:.0f} us/cert = {r['overhead_ratio']:.2f}x crypto ({r['crypto_us_per_cert']:.0f} us)  "
      f"load generator {r['client_cpu_us_per_cert']:.0f} us/cert (TLS, CSRs cycled from 1,024 distinct pre-signed ones, every answer checked)")
PY

echo "== cfssl: HTTP sign API, P-256 CA, wrk -t2 -c64, ${secs}s"
cd "$work"
echo '{"CN":"cfssl bench CA","key":{"algo":"ecdsa","size":256}}' | cfssl gencert -initca - 2>/dev/null | python3 -c '
import json,sys; d=json.load(sys.stdin)
open("ca.pem","w").write(d["cert"]); open("ca-key.pem","w").write(d["key"])'
echo '{"CN":"bench","hosts":["bench.example"],"key":{"algo":"ecdsa","size":256}}' | cfssl genkey - 2>/dev/null \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["csr"], end="")' > leaf.csr
cfssl serve -address 127.0.0.1 -port 8889 -ca ca.pem -ca-key ca-key.pem > cfssl.log 2>&1 &
for _ in $(seq 50); do curl -s -o /dev/null 127.0.0.1:8889 && break; sleep 0.1; done
python3 - > body.json <<'PY'
import json; print(json.dumps({"certificate_request": open("leaf.csr").read()}))
PY
cat > sign.lua <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("body.json"); wrk.body = f:read("*a"); f:close()
LUA
cfssl_pid=$(pgrep -f "cfssl serve" | head -1)
before=$(awk '{print $14+$15}' /proc/$cfssl_pid/stat)
# wrk's own CPU time, from the rusage of the finished child.
wrk_cpu=$(python3 - "$secs" <<'PY'
import resource, subprocess, sys
with open("wrk.txt", "w") as out:
    subprocess.run(["wrk", "-t2", "-c64", f"-d{sys.argv[1]}s", "--latency", "-s", "sign.lua",
                    "http://127.0.0.1:8889/api/v1/cfssl/sign"], stdout=out, check=True)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(r.ru_utime + r.ru_stime)
PY
)
after=$(awk '{print $14+$15}' /proc/$cfssl_pid/stat)
reqs=$(awk '/requests in/ {print $1}' wrk.txt)
rate=$(awk '/Requests\/sec/ {print $2}' wrk.txt)
p50=$(awk '$1=="50%" {print $2}' wrk.txt); p99=$(awk '$1=="99%" {print $2}' wrk.txt)
cpu_us=$(python3 -c "print(f'{($after-$before)*10000/max($reqs,1):.0f}')")
wrk_us=$(python3 -c "print(f'{$wrk_cpu*1e6/max($reqs,1):.0f}')")
echo "cfssl: ${rate} certs/s  p50 ${p50}  p99 ${p99}  server CPU ${cpu_us} us/cert  load generator ${wrk_us} us/cert (wrk: plain HTTP, the same CSR resent)"
