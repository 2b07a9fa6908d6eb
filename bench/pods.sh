# Pieces of the `weft up` meshes bench/mtls_pair.sh and bench/layout.sh
# build (sourced by both): the server pods run nginx, answering 200 on an
# HTTP port (8080) and a TCP port (9090).

# nginx_conf DIR NAME: writes DIR/nginx-NAME.conf, one worker, its own pid
# file; prints its path.
nginx_conf() {
  cat > "$1/nginx-$2.conf" <<NGINX
worker_processes 1; daemon off; pid $1/nginx-$2.pid; error_log stderr;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000;
  server { listen 8080; listen 9090; location / { return 200 "hello from the server\n"; } } }
NGINX
  echo "$1/nginx-$2.conf"
}

# server_pod NAME SERVICE_ACCOUNT CONF [LABELS]: a workload running nginx
# with CONF (labels `app: NAME`, plus LABELS, e.g. `, sidecar.istio.io/inject: "false"`).
server_pod() {
  cat <<YAML
- name: $1
  labels: {app: $1${4:-}}
  serviceAccount: $2
  command: [nginx, -c, $3]
  ports: [{containerPort: 8080, name: http}, {containerPort: 9090, name: tcp}]
YAML
}

# client_pod NAME [LABELS]: a workload that only sleeps (traffic comes from
# `ip netns exec` in its namespace).
client_pod() {
  cat <<YAML
- name: $1
  labels: {app: $1${2:-}}
  serviceAccount: $1
  command: [sleep, infinity]
YAML
}

# service NAME: the service of pods labelled `app: NAME`, both ports.
service() {
  echo "- {name: $1, ports: [{name: http, port: 8080}, {name: tcp, port: 9090}], selector: {app: $1}}"
}
