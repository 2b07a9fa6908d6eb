#!/usr/bin/env bash
# Writes crates/weft/layout/weft-proxy.order: the functions a sidecar runs,
# busiest first, which release builds of `weft-proxy` place together
# (crates/weft/build.rs says why). Run it again when the list has gone
# stale: after a dependency changed version, or when much of the proxy's
# code is new (its report says how many of the listed names the current
# build still has).
#
# How: a `weft up` mesh of two pods with sidecars (mTLS between them) and an
# ingress gateway, each proxy under valgrind's callgrind, which records every
# function run. The sidecars start, take their config and certificates,
# serve HTTP/1.1 and HTTP/2 through the pair (and through a plaintext pair),
# and stop; callgrind's counts of instructions per function give the order
# (what a third sidecar, which only starts and serves one request each way,
# ran first: an idle sidecar's code is one block), followed by the rest of
# the crypto library's C and assembly. As root.
#
#   bench/layout.sh
#
# WEFT_BIN=PATH uses that build of `weft` (and the `weft-proxy` beside it).
set -euo pipefail
cd "$(dirname "$0")/.."
WEFT_BENCH=1 scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weft-target}"
if [ -z "${WEFT_BIN:-}" ]; then scripts/release.sh -q; fi
WEFT="${WEFT_BIN:-$CARGO_TARGET_DIR/release/weft}"
PROXY="$(dirname "$WEFT")/weft-proxy"
NAME=layout
SUBNET=201
OUT=crates/weft/layout/weft-proxy.order

WORK=$(mktemp -d /tmp/weft-layout.XXXXXX)
UP_PID=""
cleanup() {
  [ -n "$UP_PID" ] && kill "$UP_PID" 2>/dev/null || true
  "$WEFT" down --name "$NAME" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# `weft up` runs the `weft-proxy` beside `weft`: here, callgrind running
# the real one. Proxies run as uid 1337, so the counts' directory is open.
mkdir -p "$WORK/bin" "$WORK/cg" "$WORK/mesh"
chmod 755 "$WORK" "$WORK/bin"
chmod 1777 "$WORK/cg"
cp "$WEFT" "$WORK/bin/weft"
cat > "$WORK/bin/weft-proxy" <<SH
#!/bin/sh
exec valgrind --tool=callgrind --dump-instr=no --compress-strings=no --compress-pos=no \
  --demangle=no --callgrind-out-file=$WORK/cg/%p "$PROXY" "\$@"
SH
chmod +x "$WORK/bin/weft-proxy"

. bench/pods.sh
{
echo "workloads:"
client_pod client
server_pod server server "$(nginx_conf "$WORK" server)"
server_pod server-pair server "$(nginx_conf "$WORK" pair)"
server_pod idle idle "$(nginx_conf "$WORK" idle)"
echo "services:"
for s in idle server server-pair; do service "$s"; done
} > "$WORK/mesh/mesh.yaml"
cat > "$WORK/mesh/routes.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: server}
spec:
  hosts: [server, "*"]
  gateways: [edge, mesh]
  http:
  - timeout: 5s
    retries: {attempts: 2, retryOn: "connect-failure,5xx"}
    route: [{destination: {host: server}}]
YAML

"$WEFT" down --name "$NAME" >/dev/null 2>&1 || true
"$WORK/bin/weft" up "$WORK/mesh" --name "$NAME" --subnet "$SUBNET" --ingress-port 18201 >"$WORK/up.log" 2>&1 &
UP_PID=$!
for _ in $(seq 180); do grep -q "is up" "$WORK/up.log" && break; kill -0 "$UP_PID" 2>/dev/null || break; sleep 1; done
grep -q "is up" "$WORK/up.log" || { echo "the mesh did not come up:"; cat "$WORK/up.log"; exit 1; }
in_pod() { local pod=$1; shift; ip netns exec "weft-$NAME-$pod" "$@"; }
for _ in $(seq 100); do in_pod client curl -sf -o /dev/null http://server:8080/ && break; sleep 0.3; done
in_pod client curl -sf -o /dev/null http://server:8080/ || { echo "client cannot reach server"; exit 1; }

# The idle pod's sidecar serves one request each way and nothing more: what
# a sidecar runs to be up and to have served (its functions go first).
for _ in $(seq 100); do in_pod client curl -sf -o /dev/null http://idle:8080/ && break; sleep 0.3; done
in_pod idle curl -sf -o /dev/null http://server:8080/ || { echo "idle cannot reach server"; exit 1; }

# The traffic: keep-alive HTTP/1.1, HTTP/2 (h2c from the client), new
# connections (over TCP ports too: mTLS, its sessions resumed), a 404,
# and the ingress gateway.
load() {
  timeout 120 ip netns exec "weft-$NAME-client" h2load "$@" | grep -q " 0 failed" ||
    { echo "failed: h2load $*"; exit 1; }
}
load --h1 -n 2000 -c 10 http://server:8080/
load -n 500 -c 2 -m 10 http://server:8080/
load --h1 -n 1000 -c 10 http://server-pair:8080/
# A config push while the proxies serve, as in bench/mtls_pair.sh.
"$WEFT" apply --mesh "$NAME" -f bench/plaintext-pair.yaml >/dev/null
sleep 10
load --h1 -n 1000 -c 10 http://server-pair:8080/
load --h1 -n 1000 -c 10 http://server:8080/
for _ in $(seq 20); do in_pod client curl -s -o /dev/null http://server:8080/missing; done
for _ in $(seq 20); do in_pod client curl -sf -o /dev/null http://server:9090/; done
for _ in $(seq 20); do in_pod client curl -sf -o /dev/null http://server-pair:9090/; done
for _ in $(seq 20); do curl -s -o /dev/null http://127.0.0.1:18201/ || true; done

# callgrind writes its counts as each proxy ends.
STATE=/run/weft/$NAME/state.json
PIDS=$(python3 -c 'import json,sys; print(" ".join(str(p["pid"]) for p in json.load(open(sys.argv[1]))["processes"] if p["role"].startswith("sidecar/") or p["role"] == "ingress-gateway"))' "$STATE")
IDLE_PID=$(python3 -c 'import json,sys; print(next(p["pid"] for p in json.load(open(sys.argv[1]))["processes"] if p["role"] == "sidecar/idle"))' "$STATE")
kill $PIDS
for _ in $(seq 60); do
  alive=0; for p in $PIDS; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break; sleep 1
done

python3 - "$PROXY" "$OUT" "$WORK/cg/$IDLE_PID" "$WORK"/cg/* <<'PY'
import collections, os, re, subprocess, sys
binary, out, idle_file, files = os.path.realpath(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
# Each function's own instructions (not its callees'), in the proxy's
# binary only; callgrind marks recursion levels with 'N.
cost, idle = collections.Counter(), set()
for path in files:
    ob = fn = None
    after_calls = False
    for line in open(path, errors="replace"):
        if line.startswith("ob="):
            ob = line[3:].strip()
        elif line.startswith("fn="):
            fn = re.sub(r"'\d+$", "", line[3:].strip())
            after_calls = False
        elif line.startswith("calls="):
            after_calls = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if after_calls:  # the callee's inclusive cost, not this function's
                after_calls = False
            elif ob and os.path.realpath(ob) == binary and fn:
                cost[fn] += int(line.split()[1])
                if path == idle_file:
                    idle.add(fn)
names = set()
for l in subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True).stdout.splitlines():
    parts = l.split()
    if len(parts) == 3 and parts[1] in "tTwW":
        names.add(parts[2])
# What the idle sidecar ran first, then the rest, each busiest first: an
# idle sidecar's code is then one block, not spread over all of it.
ranked = [f for f, _ in cost.most_common() if f in names]
order = [f for f in ranked if f in idle] + [f for f in ranked if f not in idle]
# Then the rest of the C and assembly (the crypto library's): the machine
# picks among its variants by CPU features, and callgrind's CPU is not this
# one.
order += sorted(n for n in names if not n.startswith(("_ZN", "_R")) and n not in cost)
with open(out, "w") as f:
    f.write("\n".join(order) + "\n")
print(f"{out}: {len(order)} functions, {sum(f in idle for f in ranked)} of them an idle sidecar's first (of {len(names)} in {binary})")
PY
