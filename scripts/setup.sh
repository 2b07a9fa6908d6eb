#!/usr/bin/env bash
# Installs what Weft's mesh, tests and benchmarks use on a fresh Debian
# machine (as root). Safe to run again: it installs only what is missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip || need+=(iproute2)
have iptables-restore || need+=(iptables)
have curl || need+=(curl)
have setpriv || need+=(util-linux)
have ps || need+=(procps)
have python3 || need+=(python3)
have h2load || need+=(nghttp2-client)
# The TLS tests make certificates as Istio's tasks do, and check them
# with s_client.
have openssl || need+=(openssl)
# The mTLS test captures the mesh bridge to show no plaintext crosses it.
have tcpdump || need+=(tcpdump)
# `weft up --with prometheus` and the metrics test run Debian's
# Prometheus (not as a service: the mesh starts its own).
have prometheus || need+=(prometheus)
# The dashboard test loads the built-in dashboard in headless Chromium.
have chromium || need+=(chromium)
if [ "${WEFT_BENCH:-0}" = 1 ]; then
  have wrk || need+=(wrk)
  have nginx || need+=(nginx)
  have haproxy || need+=(haproxy)
  # CALLGRIND=N bench/run.sh and bench/layout.sh count instructions.
  have valgrind || need+=(valgrind)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
have cargo || { echo "cargo is required (Rust toolchain via rustup)"; exit 1; }
# Python's grpcio: the proxyless gRPC client of the tests and examples.
# pip first (the python3 on PATH may not be Debian's); Debian's package
# where pip may not install into the system Python.
if ! python3 -c 'import grpc' 2>/dev/null; then
  echo "installing: grpcio (Python)"
  python3 -m pip install --quiet grpcio 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages grpcio 2>/dev/null ||
    { apt-get update -qq && apt-get install -y -qq python3-grpcio >/dev/null; }
  python3 -c 'import grpc' || { echo "could not install Python's grpcio"; exit 1; }
fi
# PyJWT with its crypto backend: the JWT tests sign their tokens with it,
# as Istio's samples are made (security/tools/jwt/samples/gen-jwt.py).
if ! python3 -c 'import jwt, cryptography' 2>/dev/null; then
  echo "installing: PyJWT, cryptography (Python)"
  python3 -m pip install --quiet 'pyjwt[crypto]' 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages 'pyjwt[crypto]' 2>/dev/null ||
    { apt-get update -qq && apt-get install -y -qq python3-jwt python3-cryptography >/dev/null; }
  python3 -c 'import jwt, cryptography' || { echo "could not install PyJWT"; exit 1; }
fi
# opentelemetry-proto: the tracing test's OTLP receiver decodes what the
# proxies export with OpenTelemetry's own generated messages.
if ! python3 -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' 2>/dev/null; then
  echo "installing: opentelemetry-proto (Python)"
  python3 -m pip install --quiet opentelemetry-proto 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages opentelemetry-proto 2>/dev/null || true
  python3 -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' ||
    { echo "could not install Python's opentelemetry-proto"; exit 1; }
fi
