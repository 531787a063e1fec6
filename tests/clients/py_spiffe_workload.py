"""Drives writ's Workload API with py-spiffe (grpcio underneath), as a Python workload would.

Usage: py_spiffe_workload.py SOCKET TRUST_DOMAIN UPDATES

Prints one JSON object per line, for the Rust test to assert on:
  {"fetch": {...}}      FetchX509SVID: the SVID's SPIFFE ID, chain length, serial, and
                        the trust domains and root count of the bundles it came with
  {"bundles": {...}}    FetchX509Bundles: trust domain -> number of roots
  {"update": {...}}     each X.509 context pushed on the stream, until UPDATES distinct
                        leaf serials were seen (rotation seen on the stream)
  {"no_header": CODE}   FetchX509SVID over plain grpcio without the security header
Exits non-zero with the exception on stderr if any call fails.
"""

import json
import warnings
import sys
import threading

import grpc
from spiffe import TrustDomain, WorkloadApiClient
from spiffe._proto import workload_pb2, workload_pb2_grpc


def emit(kind, value):
    print(json.dumps({kind: value}), flush=True)


def svid_facts(svid):
    return {
        "spiffe_id": str(svid.spiffe_id),
        "chain": len(svid.cert_chain),
        "serial": format(svid.leaf.serial_number, "x"),
    }


def main():
    warnings.simplefilter("ignore")
    socket, trust_domain, wanted = sys.argv[1], sys.argv[2], int(sys.argv[3])
    endpoint = "unix:" + socket
    # No grpc.default_authority override: grpcio sends the percent-encoded socket path as
    # :authority, exactly what a real workload's client does.
    client = WorkloadApiClient(endpoint)

    context = client.fetch_x509_context(timeout=10)
    facts = svid_facts(context.default_svid)
    bundle = context.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(trust_domain))
    facts["bundle_roots"] = len(bundle.x509_authorities) if bundle else 0
    emit("fetch", facts)

    bundles = client.fetch_x509_bundles(timeout=10)
    emit(
        "bundles",
        {str(b.trust_domain): len(b.x509_authorities) for b in bundles.bundles},
    )

    serials = []
    done = threading.Event()
    failure = []

    def on_success(ctx):
        facts = svid_facts(ctx.default_svid)
        emit("update", facts)
        if facts["serial"] not in serials:
            serials.append(facts["serial"])
        if len(serials) >= wanted:
            done.set()

    def on_error(err):
        failure.append(err)
        done.set()

    handle = client.stream_x509_contexts(on_success, on_error, retry_connect=False)
    if not done.wait(timeout=60):
        raise SystemExit(f"only {len(serials)} distinct SVIDs seen on the stream in 60 s")
    handle.cancel()
    if failure:
        raise failure[0]
    client.close()

    # The same call without the `workload.spiffe.io: true` header (Workload API §5.3).
    with grpc.insecure_channel(endpoint) as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
        try:
            next(iter(stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), timeout=10)))
            emit("no_header", "OK")
        except grpc.RpcError as err:
            emit("no_header", err.code().name)


if __name__ == "__main__":
    main()
