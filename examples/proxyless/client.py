#!/usr/bin/env python3
"""A proxyless gRPC client: Python's grpcio in xDS mode.

It dials an `xds:///host:port` target, so grpcio asks the control plane named
in $GRPC_XDS_BOOTSTRAP for that listener, its routes, clusters and endpoints,
and routes each call itself (weights, header matches, faults) with no proxy.
Calls are generic unary calls carrying raw bytes (an empty request message),
so no generated stubs are needed. One line per call, tab-separated: the
`hostname` the answer named (the boutique's services send it as initial
metadata) or the gRPC status, the call's duration in seconds, and when it
started (Unix time).
"""
import argparse
import sys
import time

try:
    import grpc
except ImportError:
    sys.exit("client.py needs Python's grpcio: pip install grpcio")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "target",
        nargs="?",
        default="xds:///productcatalogservice.default.svc.cluster.local:3550",
    )
    p.add_argument("--method", default="/hipstershop.ProductCatalogService/ListProducts")
    p.add_argument("-n", "--count", type=int, default=10)
    p.add_argument("--interval", type=float, default=0.0, help="seconds between calls")
    p.add_argument("-H", "--metadata", action="append", default=[], help="key=value")
    p.add_argument("--timeout", type=float, default=10.0, help="deadline of each call")
    p.add_argument(
        "--fail-fast",
        action="store_true",
        help="do not wait for the channel to be ready (see resolution errors at once)",
    )
    a = p.parse_args()
    metadata = [tuple(kv.split("=", 1)) for kv in a.metadata]
    if not all(len(kv) == 2 for kv in metadata):
        sys.exit("--metadata takes key=value")
    call = grpc.insecure_channel(a.target).unary_unary(a.method)
    for i in range(a.count):
        started = time.time()
        start = time.monotonic()
        try:
            _, c = call.with_call(
                b"",
                metadata=metadata,
                timeout=a.timeout,
                wait_for_ready=not a.fail_fast,
            )
            answer = dict(c.initial_metadata()).get("hostname", "?")
        except grpc.RpcError as e:
            answer = f"{e.code().name}: {e.details()}"
        print(f"{answer}\t{time.monotonic() - start:.3f}\t{started:.3f}", flush=True)
        if i + 1 < a.count:
            time.sleep(a.interval)


if __name__ == "__main__":
    main()
