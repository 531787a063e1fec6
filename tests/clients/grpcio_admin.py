"""Calls writ's admin socket with plain grpcio (gRPC C-core), as a Python operator tool would.

Usage: grpcio_admin.py SOCKET

Calls /writ.admin.v1.Admin/GetBundle with grpcio's default :authority for a unix socket
(the percent-encoded path) and prints {"trust_domain": ..., "bytes": N}. The response is
read without generated code: field 1 of writ.v1.TrustBundle is the trust domain.
"""

import json
import sys

import grpc


def main():
    with grpc.insecure_channel("unix:" + sys.argv[1]) as channel:
        call = channel.unary_unary("/writ.admin.v1.Admin/GetBundle")
        raw = call(b"", timeout=10)
    # Field 1, wire type 2 (tag 0x0a), a one-byte length: a trust domain under 128 bytes.
    if len(raw) < 2 or raw[0] != 0x0A or raw[1] >= 0x80:
        raise SystemExit(f"unexpected TrustBundle encoding: {raw[:16].hex()}")
    trust_domain = raw[2 : 2 + raw[1]].decode()
    print(json.dumps({"trust_domain": trust_domain, "bytes": len(raw)}), flush=True)


if __name__ == "__main__":
    main()
