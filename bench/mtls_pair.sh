#!/usr/bin/env bash
# The sidecar pair: client → its sidecar → the server's sidecar → server,
# on a `weft up` mesh of this machine (network namespaces, iptables
# capture, as pods), against the direct path (the same pods without
# sidecars) and against the pair in plaintext (PeerAuthentication and
# DestinationRule DISABLE). Two measurements per path:
#   - at a fixed 1000 req/s (h2load --h1, 10 connections × 100 req/s, its
#     per-request log): p50, p90, p99 latency, and what the pair adds
#     over the direct path;
#   - the most it serves (wrk -t1 -c32, keep-alive);
#   - new connections: a TCP port (`tcp`, so each client connection is
#     a new mTLS connection between the sidecars, resumed after the
#     first), one request per connection (wrk `Connection: close`).
# The same for nginx as the pair (`nginx-mtls`): an nginx in the client's
# pod (`proxy_pass https://` with `proxy_ssl_certificate`, verifying the
# server) and one in the server's pod (`listen ssl`, `ssl_verify_client
# on`), keep-alive on both hops, ECDSA P-256 certificates as Weft's CA
# issues: what a pair of well-tuned C proxies costs on this machine.
# And what the sidecars cost: each sidecar's RSS idle and at the end of
# the mTLS run at 1000 req/s, their CPU over that run in vCPU per 1000
# req/s (Istio publishes 0.20 vCPU per sidecar), and the control plane's
# RSS per connected proxy.
# The server is nginx (`return 200`, one worker). As root.
#
#   bench/mtls_pair.sh [seconds per run, default 10]
#
# WEFT_BIN=PATH runs that build of `weft` (and the `weft-proxy` beside it).
#
# With SYSCALLS=1, the syscalls and context switches of each pair (Weft's
# sidecars, then the two nginx) per request over its run at 1000 req/s
# are counted too (perf's tracepoints: its CPU figures rise a little).
#
# With PROFILE=FILE, the client's sidecar is recorded by `perf record`
# during the mTLS run at 1000 req/s (PROFILE_CALLGRAPH=dwarf for callers).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
WEFT_BENCH=1 scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weft-target}"
# WEFT_BIN=PATH runs a given build (its `weft-proxy` beside it), as run.sh.
if [ -z "${WEFT_BIN:-}" ]; then scripts/release.sh -q; fi
WEFT="${WEFT_BIN:-$CARGO_TARGET_DIR/release/weft}"
NAME=benchmt
SUBNET=200

WORK=$(mktemp -d /tmp/weft-mtls-bench.XXXXXX)
UP_PID=""
NGX_PIDS=()
cleanup() {
  for p in "${NGX_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$UP_PID" ] && kill "$UP_PID" 2>/dev/null || true
  "$WEFT" down --name "$NAME" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

. bench/pods.sh
mkdir -p "$WORK/mesh"
BARE=', sidecar.istio.io/inject: "false"'
{
echo "workloads:"
# A client pod and a server pod without sidecars (the direct path, and
# the pods of nginx's pair).
for s in plain ngx; do
  client_pod "client-$s" "$BARE"
  server_pod "server-$s" server "$(nginx_conf "$WORK" "$s")" "$BARE"
done
client_pod client
server_pod server-pair server "$(nginx_conf "$WORK" pair)"
server_pod server-mtls server "$(nginx_conf "$WORK" mtls)"
echo "services:"
for s in server-plain server-pair server-mtls; do service "$s"; done
} > "$WORK/mesh/mesh.yaml"
# The plaintext pair: neither side uses mTLS for server-pair.
cp bench/plaintext-pair.yaml "$WORK/mesh/plaintext-pair.yaml"

"$WEFT" down --name "$NAME" >/dev/null 2>&1 || true
"$WEFT" up "$WORK/mesh" --name "$NAME" --subnet "$SUBNET" --ingress-port 18200 >"$WORK/up.log" 2>&1 &
UP_PID=$!
for _ in $(seq 120); do grep -q "is up" "$WORK/up.log" && break; sleep 1; done
grep -q "is up" "$WORK/up.log" || { echo "the mesh did not come up:"; cat "$WORK/up.log"; exit 1; }
in_pod() { local pod=$1; shift; ip netns exec "weft-$NAME-$pod" "$@"; }
for target in "client-plain server-plain" "client server-pair" "client server-mtls"; do
  set -- $target
  for _ in $(seq 50); do in_pod "$1" curl -sf -o /dev/null "http://$2:8080/" && break; sleep 0.2; done
  in_pod "$1" curl -sf -o /dev/null "http://$2:8080/" || { echo "$1 cannot reach $2"; exit 1; }
done

# The nginx pair: a CA, the server's and the client's certificates, and
# one nginx in each pod (started here, in the pods' namespaces).
ngx_certs() {
  local d="$WORK/pki"; mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench-ca -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
  for who in server client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$who-ngx" \
      -keyout "$d/$who.key" -out "$d/$who.csr" 2>/dev/null
    printf 'subjectAltName=DNS:%s-ngx\n' "$who" > "$d/$who.ext"
    openssl x509 -req -in "$d/$who.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
      -days 2 -extfile "$d/$who.ext" -out "$d/$who.pem" 2>/dev/null
  done
}
pod_ip() { ip -n "weft-$NAME-$1" -4 -o addr show scope global | awk '{split($4, a, "/"); print a[1]; exit}'; }
ngx_pair() {
  ngx_certs
  local d="$WORK/pki" server_ip; server_ip=$(pod_ip server-ngx)
  cat > "$WORK/ngx-out.conf" <<NGINX
worker_processes 1; master_process off; daemon off; pid $WORK/ngx-out.pid; error_log stderr;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000;
  upstream peer { server $server_ip:8443; keepalive 64; keepalive_requests 100000000; }
  server { listen 127.0.0.1:15001;
    location / { proxy_pass https://peer; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_certificate $d/client.pem; proxy_ssl_certificate_key $d/client.key;
      proxy_ssl_trusted_certificate $d/ca.pem; proxy_ssl_verify on; proxy_ssl_name server-ngx;
      proxy_ssl_session_reuse on; } } }
NGINX
  cat > "$WORK/ngx-in.conf" <<NGINX
worker_processes 1; master_process off; daemon off; pid $WORK/ngx-in.pid; error_log stderr;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000;
  upstream app { server 127.0.0.1:8080; keepalive 64; keepalive_requests 100000000; }
  server { listen $server_ip:8443 ssl;
    ssl_certificate $d/server.pem; ssl_certificate_key $d/server.key;
    ssl_client_certificate $d/ca.pem; ssl_verify_client on;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGINX
  # `ip netns exec` execs nginx: $! is nginx's own PID.
  ip netns exec "weft-$NAME-server-ngx" nginx -c "$WORK/ngx-in.conf" 2>"$WORK/ngx-in.log" &
  NGX_IN=$!; NGX_PIDS+=("$NGX_IN")
  ip netns exec "weft-$NAME-client-ngx" nginx -c "$WORK/ngx-out.conf" 2>"$WORK/ngx-out.log" &
  NGX_OUT=$!; NGX_PIDS+=("$NGX_OUT")
  for _ in $(seq 50); do in_pod client-ngx curl -sf -o /dev/null http://127.0.0.1:15001/ && return; sleep 0.2; done
  echo "the nginx pair does not serve:"; cat "$WORK/ngx-in.log" "$WORK/ngx-out.log"; exit 1
}
ngx_pair

# The mesh's processes, from weft up's record: a role names each one.
STATE=/run/weft/$NAME/state.json
pid_of() { python3 -c 'import json,sys; print(next(p["pid"] for p in json.load(open(sys.argv[1]))["processes"] if p["role"] == sys.argv[2]))' "$STATE" "$1"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# RSS counts the pages of the weft-proxy binary that every proxy maps
# (shared, clean); a process's own memory is its anonymous part.
anon_kb() { awk '/^Anonymous/ {print $2}' "/proc/$1/smaps_rollup"; }
mb() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
user_ticks() { awk '{print $14}' "/proc/$1/stat"; }
# The user-space share of CPU ticks since a start (user then all, before).
user_share() { # pid-list user0 all0
  local u=0 a=0 pid
  for pid in $1; do u=$((u + $(user_ticks "$pid"))) a=$((a + $(cpu_ticks "$pid"))); done
  awk -v u=$((u - $2)) -v a=$((a - $3)) 'BEGIN{printf "%.0f%%", a ? 100 * u / a : 0}'
}
CP_PID=$(pid_of control-plane)
CLIENT_SC=$(pid_of sidecar/client)
SERVER_SC=$(pid_of sidecar/server-mtls)
PROXIES=$(python3 -c 'import json,sys; print(sum(p["role"].startswith("sidecar/") or p["role"] == "ingress-gateway" for p in json.load(open(sys.argv[1]))["processes"]))' "$STATE")
sleep 2
IDLE_CLIENT_KB=$(rss_kb "$CLIENT_SC") IDLE_SERVER_KB=$(rss_kb "$SERVER_SC")
IDLE_CLIENT_ANON=$(anon_kb "$CLIENT_SC") IDLE_SERVER_ANON=$(anon_kb "$SERVER_SC")

declare -A P50 P90 P99 MAX
url() { case $1 in */*) echo "$1" ;; *) echo "http://$1:8080/" ;; esac; }
fixed_rate() { # name client server-or-URL
  local log="$WORK/$1.h2load.log"
  in_pod "$2" h2load --h1 -c10 --rps 100 -D 2 "$(url "$3")" >/dev/null # warm-up
  in_pod "$2" h2load --h1 -c10 --rps 100 -D "$DURATION" --log-file="$log" "$(url "$3")" >"$WORK/$1.out"
  grep -q " 0 failed" "$WORK/$1.out" || { echo "h2load $1:"; cat "$WORK/$1.out"; exit 1; }
  # The log: start time (µs), status, duration (µs) per request.
  read -r P50[$1] P90[$1] P99[$1] < <(awk '{print $3}' "$log" | sort -n | awk '
    { v[NR] = $1 } END { printf "%.3f %.3f %.3f\n", v[int(NR*0.50)]/1000, v[int(NR*0.90)]/1000, v[int(NR*0.99)]/1000 }')
}
max_rate() { # name client server-or-URL
  MAX[$1]=$(in_pod "$2" wrk -t1 -c32 -d"${DURATION}s" "$(url "$3")" | awk '/Requests\/sec/ {print $2}')
}
fixed_rate direct client-plain server-plain
"$WEFT" apply --mesh "$NAME" -f "$WORK/mesh/plaintext-pair.yaml" >/dev/null
sleep 3
fixed_rate plaintext client server-pair
if [ -n "${PROFILE:-}" ]; then
  perf record --call-graph "${PROFILE_CALLGRAPH:-fp}" -o "$PROFILE" -p "$CLIENT_SC" -- sleep $((DURATION + 2)) 2>/dev/null &
  PERF_PID=$!
fi
# SYSCALLS=1: the syscalls (and context switches) each proxy of a pair
# makes per request during its run at 1000 req/s, by perf's tracepoints
# (at this rate a request rarely shares a wake-up with another, so this is
# where a proxy's per-request kernel work shows).
syscalls_start() { # name pid...
  local name=$1; shift
  [ -n "${SYSCALLS:-}" ] || return 0
  perf stat -x, -e 'raw_syscalls:sys_enter,syscalls:sys_enter_*,context-switches' \
    -o "$WORK/$name.syscalls" -p "$(IFS=,; echo "$*")" 2>/dev/null &
  SYSCALLS_PID=$!
  sleep 0.5
}
syscalls_stop() { # name requests
  [ -n "${SYSCALLS:-}" ] || return 0
  kill -INT "$SYSCALLS_PID"; wait "$SYSCALLS_PID" || true
  awk -F, -v n="$2" -v name="$1" '$1 ~ /^[0-9]+$/ && $1 > 0 {
      e = $3; sub(/.*sys_enter_/, "", e); sub(/raw_syscalls:sys_enter/, "all", e)
      line = line sprintf(" %s %.2f", e, $1 / n) }
    END { print name " per request (both proxies):" line }' "$WORK/$1.syscalls" >> "$WORK/syscalls.txt"
}
requests_of() { grep -o '[0-9]* succeeded' "$WORK/$1.out" | awk '{print $1}'; }
syscalls_start mtls "$CLIENT_SC" "$SERVER_SC"
T0_CLIENT=$(cpu_ticks "$CLIENT_SC") T0_SERVER=$(cpu_ticks "$SERVER_SC") T0=$(date +%s.%N)
U0_PAIR=$(( $(user_ticks "$CLIENT_SC") + $(user_ticks "$SERVER_SC") )) A0_PAIR=$((T0_CLIENT + T0_SERVER))
fixed_rate mtls client server-mtls
[ -n "${PROFILE:-}" ] && wait "$PERF_PID"
T1=$(date +%s.%N)
syscalls_stop mtls "$(requests_of mtls)"
# The run includes its 2 s warm-up; CPU over the whole of it.
VCPU_CLIENT=$(awk -v a="$(cpu_ticks "$CLIENT_SC")" -v b="$T0_CLIENT" -v hz="$(getconf CLK_TCK)" -v t0="$T0" -v t1="$T1" 'BEGIN{printf "%.3f", (a-b)/hz/(t1-t0)}')
VCPU_SERVER=$(awk -v a="$(cpu_ticks "$SERVER_SC")" -v b="$T0_SERVER" -v hz="$(getconf CLK_TCK)" -v t0="$T0" -v t1="$T1" 'BEGIN{printf "%.3f", (a-b)/hz/(t1-t0)}')
USER_PAIR=$(user_share "$CLIENT_SC $SERVER_SC" "$U0_PAIR" "$A0_PAIR")
LOAD_CLIENT_KB=$(rss_kb "$CLIENT_SC") LOAD_SERVER_KB=$(rss_kb "$SERVER_SC")
LOAD_CLIENT_ANON=$(anon_kb "$CLIENT_SC") LOAD_SERVER_ANON=$(anon_kb "$SERVER_SC")
NGX_URL=http://127.0.0.1:15001/
T0_NGX=$(( $(cpu_ticks "$NGX_OUT") + $(cpu_ticks "$NGX_IN") )) T0=$(date +%s.%N)
U0_NGX=$(( $(user_ticks "$NGX_OUT") + $(user_ticks "$NGX_IN") ))
syscalls_start nginx-mtls "$NGX_OUT" "$NGX_IN"
fixed_rate nginx-mtls client-ngx "$NGX_URL"
T1=$(date +%s.%N)
syscalls_stop nginx-mtls "$(requests_of nginx-mtls)"
VCPU_NGX=$(awk -v a="$(( $(cpu_ticks "$NGX_OUT") + $(cpu_ticks "$NGX_IN") ))" -v b="$T0_NGX" -v hz="$(getconf CLK_TCK)" -v t0="$T0" -v t1="$T1" 'BEGIN{printf "%.3f", (a-b)/hz/(t1-t0)/2}')
USER_NGX=$(user_share "$NGX_OUT $NGX_IN" "$U0_NGX" "$T0_NGX")
max_rate direct client-plain server-plain
max_rate plaintext client server-pair
max_rate mtls client server-mtls
max_rate nginx-mtls client-ngx "$NGX_URL"
declare -A CONNS CONN_P50
new_conns() { # name client server
  local out; out=$(in_pod "$2" wrk -t1 -c4 -d5s -H 'Connection: close' "http://$3:9090/")
  CONNS[$1]=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  CONN_P50[$1]=$(in_pod "$2" wrk -t1 -c1 -d2s --latency -H 'Connection: close' "http://$3:9090/" | awk '$1 == "50%" {print $2}')
}
new_conns direct client-plain server-plain
new_conns plaintext client server-pair
new_conns mtls client server-mtls

echo
echo "fixed 1000 req/s (h2load --h1 -c10 --rps 100 -D$DURATION), HTTP/1.1 keep-alive; max: wrk -t1 -c32; $(nproc) cores"
printf '%-10s %9s %9s %9s %12s %12s %10s\n' path p50_ms p90_ms p99_ms +p50_ms +p99_ms max_req/s
for name in direct plaintext mtls nginx-mtls; do
  printf '%-10s %9s %9s %9s %12s %12s %10.0f\n' "$name" "${P50[$name]}" "${P90[$name]}" "${P99[$name]}" \
    "$(awk -v a="${P50[$name]}" -v b="${P50[direct]}" 'BEGIN{printf "%.3f", a-b}')" \
    "$(awk -v a="${P99[$name]}" -v b="${P99[direct]}" 'BEGIN{printf "%.3f", a-b}')" \
    "${MAX[$name]}"
done
echo "new connections (TCP port, one request each; wrk -t1 -c4 'Connection: close'): conn/s direct ${CONNS[direct]}, plaintext pair ${CONNS[plaintext]}, mtls pair ${CONNS[mtls]}; p50 with one connection at a time: ${CONN_P50[direct]}, ${CONN_P50[plaintext]}, ${CONN_P50[mtls]}"
echo "mtls pair max req/s vs plaintext pair: $(awk -v a="${MAX[mtls]}" -v b="${MAX[plaintext]}" 'BEGIN{printf "%.2f", a/b}'), vs the nginx mTLS pair: $(awk -v a="${MAX[mtls]}" -v b="${MAX[nginx-mtls]}" 'BEGIN{printf "%.2f", a/b}')"
echo
# The proxy's code layout (crates/weft/build.rs): how many of the functions
# bench/layout.sh listed this build still has; a low count means the list is
# stale and the RSS above is higher than it need be.
ORDER=crates/weft/layout/weft-proxy.order
LISTED=$(grep -c . "$ORDER")
KNOWN=$(nm --defined-only "$(dirname "$WEFT")/weft-proxy" | awk '{print $3}' | sort -u | comm -12 - <(sort -u "$ORDER") | wc -l)
echo "code layout: $KNOWN of the $LISTED functions in $ORDER are in this build"
echo "sidecar RSS idle / at 1000 req/s with mTLS (its own, anonymous, in brackets): client $(mb "$IDLE_CLIENT_KB") ($(mb "$IDLE_CLIENT_ANON")) / $(mb "$LOAD_CLIENT_KB") ($(mb "$LOAD_CLIENT_ANON")) MB, server $(mb "$IDLE_SERVER_KB") ($(mb "$IDLE_SERVER_ANON")) / $(mb "$LOAD_SERVER_KB") ($(mb "$LOAD_SERVER_ANON")) MB"
echo "sidecar CPU at 1000 req/s with mTLS (vCPU per 1000 req/s): client $VCPU_CLIENT, server $VCPU_SERVER, $USER_PAIR of it in user space (Istio's published Envoy sidecar: 0.20); the nginx pair, each: $VCPU_NGX ($USER_NGX in user space)"
CP_KB=$(rss_kb "$CP_PID") CP_ANON=$(anon_kb "$CP_PID")
echo "control plane RSS $(mb "$CP_KB") MB, its own $(mb "$CP_ANON") MB, with $PROXIES proxies connected: at most $(mb $((CP_ANON / PROXIES))) MB of its own per proxy (the whole process divided)"
[ -n "${SYSCALLS:-}" ] && cat "$WORK/syscalls.txt"
