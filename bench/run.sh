#!/usr/bin/env bash
# Reverse-proxy benchmark, one run, one machine: wrk (HTTP/1.1, keep-alive,
# small body) straight to an upstream, then through Weft, nginx and HAProxy,
# each proxy on one worker thread; then h2load (h2c, multiplexed streams)
# the same way, each proxy speaking HTTP/1.1 to the upstream; then gRPC
# unary calls to a tonic server, each proxy speaking HTTP/2 to it. Prints
# requests/s, latencies and ratios against the direct path and against
# nginx. Loopback only.
#
#   bench/run.sh [seconds per run, default 10] [connections, default 32]
#
# With PROFILE=FILE, the Weft run is also recorded with `perf record -g`
# (PROFILE_CALLGRAPH=dwarf for callers through code without frame pointers)
# into FILE (read it with `perf report -i FILE`). With ONLY=http1, only the
# HTTP/1.1 table is measured (for profiling one change at a time); with
# WEFT_BIN=PATH, that weft binary is measured instead of a fresh build.
# With CALLGRIND=N, the proxies run under valgrind's callgrind and, instead
# of the tables, the run counts the user-space instructions each spends
# per request over N HTTP/1.1 requests (h2load, 8 connections): the same
# count for the same build every time, however busy the machine (the
# kernel's share, the same socket work for every proxy, is not counted);
# CALLGRIND_OUT=DIR keeps callgrind's files for callgrind_annotate;
# CALLGRIND_RPS=R paces each connection at R requests a second (a sidecar's
# light load: each request its own wake-up). The same count over h2c
# (4 connections x 16 streams, as the table's runs) follows for Weft,
# nginx and HAProxy.
# With SYSCALLS=N, the run instead counts what each serving process does
# per request in the kernel over N HTTP/1.1 requests on 32 connections:
# its user and system CPU time (from /proc; perf's tracepoints add a
# little to the latter) and its syscalls and context switches by perf.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNS="${2:-32}"
WEFT_BENCH=1 scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weft-target}"
# WEFT_BIN=PATH measures that build instead (A/B runs of two builds).
if [ -z "${WEFT_BIN:-}" ]; then scripts/release.sh -q; fi
WEFT="${WEFT_BIN:-$CARGO_TARGET_DIR/release/weft}"
# Gateways run weft-proxy from beside weft, as meshes do (a saved build
# without one runs `weft proxy`: the same proxy).
PROXY=("$(dirname "$WEFT")/weft-proxy")
[ -x "${PROXY[0]}" ] || PROXY=("$WEFT" proxy)

WORK=$(mktemp -d /tmp/weft-bench.XXXXXX)
UNDER=()
if [ -n "${CALLGRIND:-}" ]; then
  mkdir "$WORK/cg"
  UNDER=(valgrind --tool=callgrind --callgrind-out-file="$WORK/cg/%p")
fi
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for p in upstream proxy; do
    # nginx may remove its pid file between the test and the read.
    [ -f "$WORK/$p.pid" ] && kill "$(cat "$WORK/$p.pid" 2>/dev/null)" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

UP=18000 WEFT_PORT=18001 NGINX_PORT=18002 HAPROXY_PORT=18003
UP_H2=18004 NGINX_H2_PORT=18005 HAPROXY_H2_PORT=18006
UP_GRPC=18007 NGINX_GRPC_PORT=18008 HAPROXY_GRPC_PORT=18009
mkdir -p "$WORK/config"

# The upstream and the nginx proxy are two nginx processes of one worker
# each, so that nginx as a proxy, like Weft and HAProxy, has a worker to
# itself and the upstream costs every path the same.
nginx_conf() { # name, server block
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/$1.pid;
error_log $WORK/$1/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  $2
}
NGINX
  if [ "$1" = proxy ] && [ -n "${CALLGRIND:-}" ]; then
    # One process in the foreground, which callgrind_control can reach
    # (it does not see a daemon's forked worker).
    "${UNDER[@]}" nginx -c "$WORK/$1/nginx.conf" -p "$WORK/$1" -g "master_process off; daemon off;" 2>/dev/null &
    PIDS+=($!)
    NGINX_PROXY_PID=$!
  else
    nginx -c "$WORK/$1/nginx.conf" -p "$WORK/$1"
  fi
}
nginx_conf upstream "server { listen 127.0.0.1:$UP; location / { return 200 \"hello from the upstream\\n\"; } }
  server { listen 127.0.0.1:$UP_H2 http2; keepalive_requests 100000000; location / { return 200 \"hello from the upstream\\n\"; } }"
nginx_conf proxy "upstream origin { server 127.0.0.1:$UP; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }
  # nginx ends an HTTP/2 connection after keepalive_requests (1000) streams;
  # h2load does not reconnect.
  server {
    listen 127.0.0.1:$NGINX_H2_PORT http2;
    keepalive_requests 100000000;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }
  upstream grpc_origin { server 127.0.0.1:$UP_GRPC; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_GRPC_PORT http2;
    keepalive_requests 100000000;
    location / { grpc_pass grpc://grpc_origin; }
  }"

cat > "$WORK/haproxy.cfg" <<HAPROXY
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAPROXY_PORT
  bind 127.0.0.1:$HAPROXY_H2_PORT proto h2
  default_backend be
backend be
  server origin 127.0.0.1:$UP
frontend fe_grpc
  bind 127.0.0.1:$HAPROXY_GRPC_PORT proto h2
  default_backend be_grpc
backend be_grpc
  server grpc_origin 127.0.0.1:$UP_GRPC proto h2
HAPROXY
"${UNDER[@]}" haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
HAPROXY_PID=$!

# The gRPC upstream: the boutique demo's currencyservice (tonic).
"$WEFT" demo currencyservice --version bench --listen 127.0.0.1:$UP_GRPC >/dev/null 2>"$WORK/grpc.log" &
PIDS+=($!)

# Weft: a control plane with an HTTP and a gRPC service and a gateway
# routing to them, configured with Istio's Gateway + VirtualService. The
# upstreams have no sidecar (so the gateway speaks plaintext to them, as
# auto mTLS does), and a second gateway runs without Istio's metrics.
cat > "$WORK/registry.json" <<JSON
{"services":[{"name":"origin","namespace":"default","vip":null,"ports":[{"name":"http","port":$UP}],"selector":{"app":"origin"}},
  {"name":"grpc-origin","namespace":"default","vip":null,"ports":[{"name":"grpc","port":$UP_GRPC}],"selector":{"app":"grpc-origin"}}],
 "workloads":[
  {"name":"origin","namespace":"default","labels":{"app":"origin"},"service_account":"default","ip":"127.0.0.1","ports":[{"containerPort":$UP}],"proxy":"nosidecar"},
  {"name":"grpc-origin","namespace":"default","labels":{"app":"grpc-origin"},"service_account":"default","ip":"127.0.0.1","ports":[{"containerPort":$UP_GRPC}],"proxy":"nosidecar"},
  {"name":"bench-gateway","namespace":"default","labels":{"istio":"ingressgateway"},"service_account":"default","ip":"127.0.0.2","ports":[{"containerPort":$WEFT_PORT}],"proxy":"gateway"},
  {"name":"bench-gateway-nostats","namespace":"default","labels":{"istio":"ingressgateway","stats":"off"},"service_account":"default","ip":"127.0.0.3","ports":[{"containerPort":$WEFT_PORT}],"proxy":"gateway"},
  {"name":"bench-gateway-policy","namespace":"default","labels":{"istio":"ingressgateway","policy":"on"},"service_account":"default","ip":"127.0.0.4","ports":[{"containerPort":$WEFT_PORT}],"proxy":"gateway"}]}
JSON
# Istio's demo profile: every proxy writes Istio's access-log line to its
# standard output (here /dev/null), as issue 11 measures.
cat > "$WORK/config/mesh.yaml" <<YAML
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    accessLogFile: /dev/stdout
YAML
cat > "$WORK/config/gateway.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: $WEFT_PORT, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench}
spec:
  hosts: ["*"]
  gateways: [bench]
  http:
  - match: [{uri: {prefix: /hipstershop.}}]
    route:
    - destination: {host: grpc-origin, port: {number: $UP_GRPC}}
  # The policy row: a route as a resilience course writes it, served by a
  # gateway that also enforces an AuthorizationPolicy (below).
  - match: [{uri: {prefix: /policy}}]
    timeout: 5s
    retries: {attempts: 2, perTryTimeout: 2s, retryOn: "5xx,connect-failure"}
    headers: {request: {set: {x-bench: policy}}}
    fault: {abort: {httpStatus: 503, percentage: {value: 0}}}
    route:
    - destination: {host: origin, port: {number: $UP}}
  - route:
    - destination: {host: origin, port: {number: $UP}}
---
# The policy row's gateway allows only what the route serves.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bench-allow}
spec:
  selector: {matchLabels: {policy: "on"}}
  action: ALLOW
  rules:
  - to: [{operation: {methods: [GET, HEAD], paths: [/policy*]}}]
    when: [{key: "request.headers[user-agent]", notValues: [blocked]}]
---
# The same gateway without Istio's metrics (the stats-off row).
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: no-stats}
spec:
  selector: {matchLabels: {stats: "off"}}
  metrics:
  - overrides:
    - match: {metric: ALL_METRICS}
      disabled: true
YAML
WEFT_LOG=warn "$WEFT" control-plane --config-dir "$WORK/config" --registry "$WORK/registry.json" \
  --xds 127.0.0.1:18010 --api 127.0.0.1:18014 2>"$WORK/cp.log" &
PIDS+=($!)
WEFT_LOG=warn WEFT_WORKER_THREADS=1 "${UNDER[@]}" "${PROXY[@]}" --xds http://127.0.0.1:18010 \
  --node-id "router~127.0.0.2~bench-gateway.default~default.svc.cluster.local" \
  --admin 127.0.0.1:18015 --bind-ip 127.0.0.1 >/dev/null 2>"$WORK/proxy.log" &
PIDS+=($!)
WEFT_PROXY_PID=$!
WEFT_LOG=warn WEFT_WORKER_THREADS=1 "${UNDER[@]}" "${PROXY[@]}" --xds http://127.0.0.1:18010 \
  --node-id "router~127.0.0.3~bench-gateway-nostats.default~default.svc.cluster.local" \
  --admin 127.0.0.1:18016 --bind-ip 127.0.0.3 >/dev/null 2>"$WORK/proxy-nostats.log" &
PIDS+=($!)
WEFT_NOSTATS_PID=$!
WEFT_LOG=warn WEFT_WORKER_THREADS=1 "${UNDER[@]}" "${PROXY[@]}" --xds http://127.0.0.1:18010 \
  --node-id "router~127.0.0.4~bench-gateway-policy.default~default.svc.cluster.local" \
  --admin 127.0.0.1:18017 --bind-ip 127.0.0.4 >/dev/null 2>"$WORK/proxy-policy.log" &
PIDS+=($!)
WEFT_POLICY_PID=$!

for target in 127.0.0.1:$UP/ 127.0.0.1:$WEFT_PORT/ 127.0.0.3:$WEFT_PORT/ 127.0.0.4:$WEFT_PORT/policy 127.0.0.1:$NGINX_PORT/ 127.0.0.1:$HAPROXY_PORT/; do
  for _ in $(seq 600); do curl -sf "http://$target" >/dev/null && break; sleep 0.1; done
  curl -sf "http://$target" >/dev/null || { echo "nothing answers on $target"; cat "$WORK"/*.log; exit 1; }
done
# The policy is in force: what it does not allow is denied.
DENIED=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.4:$WEFT_PORT/")
[ "$DENIED" = 403 ] ||
  { echo "the policy row's AuthorizationPolicy is not in force: GET / got $DENIED, not 403"; cat "$WORK"/cp.log "$WORK"/proxy-policy.log; exit 1; }

# nginx's work is done by its worker, the master's one child.
nginx_worker() { pgrep -P "$(cat "$WORK/$1.pid")" | head -1; }

# The HTTP/1.1 paths through a proxy, measured alike in both modes:
# name, port, path, host.
PATHS=(
  "weft $WEFT_PORT / 127.0.0.1"
  "weft-policy $WEFT_PORT /policy 127.0.0.4"
  "weft-nostats $WEFT_PORT / 127.0.0.3"
  "nginx $NGINX_PORT / 127.0.0.1"
  "haproxy $HAPROXY_PORT / 127.0.0.1"
)
NAMES=$(printf '%s\n' "${PATHS[@]}" | cut -d' ' -f1)
# The process that serves a path: nginx's worker (under callgrind, its one
# process).
serving_pid() {
  case $1 in
    direct) nginx_worker upstream ;;
    weft) echo "$WEFT_PROXY_PID" ;;
    weft-policy) echo "$WEFT_POLICY_PID" ;;
    weft-nostats) echo "$WEFT_NOSTATS_PID" ;;
    haproxy) echo "$HAPROXY_PID" ;;
    nginx) if [ -n "${CALLGRIND:-}" ]; then echo "$NGINX_PROXY_PID"; else nginx_worker proxy; fi ;;
  esac
}

if [ -n "${CALLGRIND:-}" ]; then
  declare -A IR
  # Instructions per request: counters zeroed after a warm-up, N requests,
  # then callgrind dumps what the process ran since.
  # HTTP/1.1 over 8 connections, or (a name ending in -h2) h2c as the
  # tables' runs, 4 connections × 16 streams.
  count() { # name port path host pid
    local url="http://$4:$2$3" out how=(--h1 -c 8)
    [[ $1 == *-h2 ]] && how=(-c 4 -m 16)
    h2load "${how[@]}" -n 2000 "$url" >/dev/null
    callgrind_control -z "$5" >/dev/null
    out=$(h2load "${how[@]}" -n "$CALLGRIND" ${CALLGRIND_RPS:+--rps "$CALLGRIND_RPS"} "$url")
    grep -q " $CALLGRIND succeeded" <<<"$out" || { echo "$1: not every request succeeded"; echo "$out"; exit 1; }
    callgrind_control -d "$5" >/dev/null
    IR[$1]=$(awk '/^totals:/ {print $2}' "$(ls -t "$WORK/cg/$5"* | head -1)")
  }
  for path in "${PATHS[@]}"; do
    read -r name port at host <<<"$path"
    count "$name" "$port" "$at" "$host" "$(serving_pid "$name")"
  done
  count weft-h2 "$WEFT_PORT" / 127.0.0.1 "$(serving_pid weft)"
  count nginx-h2 "$NGINX_H2_PORT" / 127.0.0.1 "$(serving_pid nginx)"
  count haproxy-h2 "$HAPROXY_H2_PORT" / 127.0.0.1 "$(serving_pid haproxy)"
  echo
  echo "user-space instructions per request (callgrind), $CALLGRIND requests: HTTP/1.1 over 8 connections; -h2: h2c, 4 connections x 16 streams"
  printf '%-12s %14s %10s\n' path instr/req vs_nginx
  for name in $NAMES weft-h2 nginx-h2 haproxy-h2; do
    local_nginx=nginx; [[ $name == *-h2 ]] && local_nginx=nginx-h2
    printf '%-12s %14.0f %10s\n' "$name" "$(awk -v a="${IR[$name]}" -v n="$CALLGRIND" 'BEGIN{print a/n}')" \
      "$(awk -v a="${IR[$name]}" -v b="${IR[$local_nginx]}" 'BEGIN{printf "%.2f", a/b}')"
  done
  # CALLGRIND_OUT=DIR keeps the counts, for callgrind_annotate.
  [ -n "${CALLGRIND_OUT:-}" ] && mkdir -p "$CALLGRIND_OUT" && cp "$WORK"/cg/* "$CALLGRIND_OUT"/
  exit 0
fi

if [ -n "${SYSCALLS:-}" ]; then
  # Syscalls per request: the kernel's share of a proxy's CPU is the socket
  # work each syscall does, so fewer syscalls per request is the lever
  # there. Counted by perf's tracepoints on the serving process over N
  # requests on 32 connections (as wrk's runs), after a warm-up.
  EVENTS=raw_syscalls:sys_enter
  for s in read recvfrom write writev sendto epoll_wait epoll_pwait epoll_ctl futex; do
    EVENTS+=",syscalls:sys_enter_$s"
  done
  EVENTS+=",page-faults,context-switches"
  printf '%-12s %8s %8s' path user_us sys_us
  tr ',' '\n' <<<"$EVENTS" | sed 's/.*sys_enter_//; s/raw_syscalls:sys_enter/all/; s/context-switches/switches/; s/page-faults/faults/' | xargs printf ' %10s'
  echo
  for path in "direct $UP / 127.0.0.1" "${PATHS[@]}"; do
    read -r name port at host <<<"$path"
    url="http://$host:$port$at"
    h2load --h1 -n 5000 -c 32 "$url" >/dev/null
    perf stat -x, -e "$EVENTS" -o "$WORK/syscalls" -p "$(serving_pid "$name")" &
    PERF_PID=$!
    sleep 0.5
    pid=$(serving_pid "$name")
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    h2load --h1 -n "$SYSCALLS" -c 32 "$url" >/dev/null
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    kill -INT "$PERF_PID"; wait "$PERF_PID" || true
    # User and system CPU per request, from /proc (clock ticks).
    awk -v n="$SYSCALLS" -v hz="$(getconf CLK_TCK)" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v name="$name" \
      'BEGIN {printf "%-12s %8.2f %8.2f", name, u / hz * 1e6 / n, s / hz * 1e6 / n}'
    awk -F, -v n="$SYSCALLS" '$3 ~ /sys_enter|faults|switches/ {printf " %10.2f", $1 / n}' "$WORK/syscalls"
    echo
  done
  exit 0
fi

# wrk prints "Requests/sec: N" and, with --latency, "50% 1.2ms" lines.
to_ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 } printf "%.3f", v }'; }
declare -A RPS P50 P99 CPU
# CPU time (user + system, all threads) a process has used, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The CPU a request costs the process that served it (the proxy, or the
# upstream on the direct path), in microseconds. Unlike req/s, this hardly
# moves when the machine is busy elsewhere: it is the figure to compare
# builds by (A/B) on a noisy machine.
measure() {
  local name=$1 port=$2 path=${3:-/} host=${4:-127.0.0.1} pid=$5 out before
  wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://$host:$port$path" >/dev/null 2>&1 # warm-up pass is the same run, shorter
  before=$(cpu_ticks "$pid")
  out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://$host:$port$path")
  CPU[$name]=$(awk -v t="$(( $(cpu_ticks "$pid") - before ))" -v hz="$(getconf CLK_TCK)" \
    '/requests in/ {printf "%.1f", t / hz * 1e6 / $1}' <<<"$out")
  RPS[$name]=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  P50[$name]=$(awk '$1=="50%" {print $2}' <<<"$out" | to_ms)
  P99[$name]=$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)
}
measure direct $UP / 127.0.0.1 "$(nginx_worker upstream)"
for path in "${PATHS[@]}"; do
  read -r name port at host <<<"$path"
  if [ "$name" = weft ] && [ -n "${PROFILE:-}" ]; then
    perf record --call-graph "${PROFILE_CALLGRAPH:-fp}" -o "$PROFILE" -p "$WEFT_PROXY_PID" -- sleep $((DURATION * 2)) 2>/dev/null &
    PERF_PID=$!
  fi
  measure "$name" "$port" "$at" "$host" "$(serving_pid "$name")"
  if [ "$name" = weft ] && [ -n "${PROFILE:-}" ]; then wait "$PERF_PID"; fi
done
echo
echo "wrk -t1 -c$CONNS -d${DURATION}s, keep-alive, 24-byte body; each proxy on one worker thread; $(nproc) cores"
printf '%-12s %12s %10s %10s %12s %12s %12s %14s\n' path req/s p50_ms p99_ms vs_direct vs_nginx cpu_us/req cpu_vs_nginx
for name in direct $NAMES; do
  printf '%-12s %12.0f %10s %10s %12s %12s %12s %14s\n' "$name" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}" \
    "$(awk -v a="${RPS[$name]}" -v b="${RPS[direct]}" 'BEGIN{printf "%.2f", a/b}')" \
    "$(awk -v a="${RPS[$name]}" -v b="${RPS[nginx]}" 'BEGIN{printf "%.2f", a/b}')" \
    "${CPU[$name]}" "$(awk -v a="${CPU[$name]}" -v b="${CPU[nginx]}" 'BEGIN{printf "%.2f", a/b}')"
done
echo "cpu_us/req: CPU time of the serving process per request (direct: the upstream's)"
echo "weft-policy (timeout, retries, a header set, a 0% fault, an AuthorizationPolicy) vs the plain route: $(awk -v a="${RPS[weft-policy]}" -v b="${RPS[weft]}" 'BEGIN{printf "%.2f", a/b}')"
echo "Istio's metrics on vs off (weft vs weft-nostats): $(awk -v a="${RPS[weft]}" -v b="${RPS[weft-nostats]}" 'BEGIN{printf "%.2f", a/b}')"
[ "${ONLY:-}" = http1 ] && exit 0

# The proxy's memory with 1000 label combinations: a Telemetry adds the
# Host header as a tag, and 1000 hosts each make their own series.
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$WEFT_PROXY_PID/status"; }
cat > "$WORK/config/hosts.yaml" <<YAML
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: host-tag}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT}
      tagOverrides:
        request_host: {value: request.host}
YAML
sleep 2
BEFORE_KB=$(rss_kb)
for i in $(seq 1000); do
  [ "$i" = 1 ] || echo next
  printf 'url = "http://127.0.0.1:%s/"\nheader = "Host: h%s.example"\noutput = "/dev/null"\n' "$WEFT_PORT" "$i"
done > "$WORK/hosts.curl"
curl -s -K "$WORK/hosts.curl"
SERIES=$(curl -s "http://127.0.0.1:18015/stats/prometheus" | grep -c '^istio_requests_total{.*request_host="h[0-9]*.example"')
AFTER_KB=$(rss_kb)
echo "memory with $SERIES istio_requests_total series by Host: RSS $BEFORE_KB kB before, $AFTER_KB kB after (+$((AFTER_KB - BEFORE_KB)) kB)"
rm -f "$WORK/config/hosts.yaml"

# HTTP/2: h2load over h2c, 4 connections × 16 streams; h2load prints
# "finished in …, N req/s" and "time for request: min max mean sd".
declare -A H2RPS H2MEAN
H2_ARGS=()
measure_h2() {
  local name=$1 port=$2 path=${3:-/} out
  h2load -t1 -c4 -m16 -D 1 "${H2_ARGS[@]}" "http://127.0.0.1:$port$path" >/dev/null # warm-up
  out=$(h2load -t1 -c4 -m16 -D "$DURATION" "${H2_ARGS[@]}" "http://127.0.0.1:$port$path")
  grep -q " 0 failed" <<<"$out" || { echo "h2load against $name failed:"; echo "$out"; exit 1; }
  H2RPS[$name]=$(awk '/^finished in/ {print $4}' <<<"$out")
  H2MEAN[$name]=$(awk '/^time for request:/ {print $6}' <<<"$out" | to_ms)
}
measure_h2 direct $UP_H2
measure_h2 weft $WEFT_PORT
measure_h2 nginx $NGINX_H2_PORT
measure_h2 haproxy $HAPROXY_H2_PORT
echo
echo "h2load -c4 -m16 -D${DURATION}, h2c; proxies speak HTTP/1.1 upstream"
printf '%-12s %12s %10s %12s %12s\n' path req/s mean_ms vs_direct vs_nginx
h2_table() {
  for name in direct weft nginx haproxy; do
    printf '%-12s %12.0f %10s %12s %12s\n' "$name" "${H2RPS[$name]}" "${H2MEAN[$name]}" \
      "$(awk -v a="${H2RPS[$name]}" -v b="${H2RPS[direct]}" 'BEGIN{printf "%.2f", a/b}')" \
      "$(awk -v a="${H2RPS[$name]}" -v b="${H2RPS[nginx]}" 'BEGIN{printf "%.2f", a/b}')"
  done
}
h2_table

# gRPC unary: GetSupportedCurrencies (an empty message: a 5-byte frame)
# against the tonic server, and through each proxy speaking HTTP/2 to it.
printf '\0\0\0\0\0' > "$WORK/empty.grpc"
GRPC_PATH=/hipstershop.CurrencyService/GetSupportedCurrencies
H2_ARGS=(-d "$WORK/empty.grpc" -H "content-type: application/grpc" -H "te: trailers")
for port in $UP_GRPC $WEFT_PORT $NGINX_GRPC_PORT $HAPROXY_GRPC_PORT; do
  ok=""
  for _ in $(seq 50); do
    if curl -s --http2-prior-knowledge -o /dev/null -D - --data-binary @"$WORK/empty.grpc" \
      -H "content-type: application/grpc" -H "te: trailers" "http://127.0.0.1:$port$GRPC_PATH" |
      grep -qi "grpc-status: 0"; then ok=1; break; fi
    sleep 0.1
  done
  [ -n "$ok" ] || { echo "no gRPC answer (grpc-status 0) on port $port"; cat "$WORK"/*.log; exit 1; }
done
measure_h2 direct $UP_GRPC "$GRPC_PATH"
measure_h2 weft $WEFT_PORT "$GRPC_PATH"
measure_h2 nginx $NGINX_GRPC_PORT "$GRPC_PATH"
measure_h2 haproxy $HAPROXY_GRPC_PORT "$GRPC_PATH"
echo
echo "gRPC unary (h2load, same settings); proxies speak HTTP/2 upstream"
printf '%-12s %12s %10s %12s %12s\n' path req/s mean_ms vs_direct vs_nginx
h2_table
