"""A Workload API caller the agent does not allow, as py-spiffe (grpcio) sees it.

Usage: py_spiffe_refused.py SOCKET

Prints one JSON object: {"code": the gRPC status name, "details": its message,
"py_spiffe": the error py-spiffe's client raises}. Exits non-zero if the call succeeds.
"""

import json
import sys
import warnings

import grpc
from spiffe import WorkloadApiClient
from spiffe._proto import workload_pb2, workload_pb2_grpc


def main():
    warnings.simplefilter("ignore")
    endpoint = "unix:" + sys.argv[1]
    result = {}
    with grpc.insecure_channel(endpoint) as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
        try:
            call = stub.FetchX509SVID(
                workload_pb2.X509SVIDRequest(),
                metadata=(("workload.spiffe.io", "true"),),
                timeout=10,
            )
            next(iter(call))
            raise SystemExit("the agent served a caller it should have refused")
        except grpc.RpcError as err:
            result["code"] = err.code().name
            result["details"] = err.details()
    client = WorkloadApiClient(endpoint)
    try:
        client.fetch_x509_context(timeout=10)
        raise SystemExit("py-spiffe was served although the caller is not allowed")
    except SystemExit:
        raise
    except Exception as err:  # py-spiffe wraps the status in its own error types
        result["py_spiffe"] = str(err)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
