//! End-to-end: Istio's "Accessing External Services" task on a `weft up`
//! mesh. Hosts outside the mesh are pods without a sidecar whose names
//! (`httpbin.org`, `www.example.com`) every pod resolves; the mesh config's
//! `outboundTrafficPolicy` (the `istio` ConfigMap, applied as istioctl
//! writes it) lets sidecars reach them (ALLOW_ANY) or not (REGISTRY_ONLY:
//! HTTP gets 502, TLS is cut before its handshake); the task's
//! ServiceEntries open them again under REGISTRY_ONLY (the sidecar looks
//! their names up itself), and its VirtualService sets a timeout on one.
//! Subnet 163, ingress port 18163.

mod support;

#[path = "../../weft-proxy/tests/support/pki.rs"]
#[allow(dead_code)]
mod pki;

use std::time::Duration;

use support::*;

fn mesh_config(mode: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |-\n    accessLogFile: /dev/stdout\n    defaultConfig:\n      discoveryAddress: istiod.istio-system.svc:15012\n    outboundTrafficPolicy:\n      mode: {mode}\n"
    )
}

/// The task's ServiceEntries, as written there but for the TLS host.
const SERVICE_ENTRIES: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: httpbin-ext
spec:
  hosts:
  - httpbin.org
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: google
spec:
  hosts:
  - www.example.com
  ports:
  - number: 443
    name: https
    protocol: HTTPS
  resolution: DNS
  location: MESH_EXTERNAL
";

/// The task's timeout on the external host.
const TIMEOUT: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin-ext
spec:
  hosts:
    - httpbin.org
  http:
  - timeout: 3s
    route:
      - destination:
          host: httpbin.org
        weight: 100
";

/// A Sidecar for the default namespace that imports only httpbin.org.
fn sidecar(mode: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: default
spec:
  egress:
  - hosts:
    - \"./httpbin.org\"
  outboundTrafficPolicy:
    mode: {mode}
"
    )
}

/// (resources, bytes) of the config a proxy was last sent, from the
/// CONFIG column of `weft proxy-status`.
fn config_of(mesh: &Mesh, proxy: &str) -> (u64, f64) {
    let status = ok(weft(&["proxy-status", "--mesh", &mesh.name]));
    let row = status
        .lines()
        .find(|l| l.starts_with(proxy))
        .unwrap_or_else(|| panic!("no row for {proxy}:\n{status}"));
    let words: Vec<&str> = row.split_whitespace().collect();
    let n = words.len();
    assert_eq!((words[n - 3], words[n - 1]), ("res", "KiB"), "{row}");
    (words[n - 4].parse().unwrap(), words[n - 2].parse().unwrap())
}

/// The address Istio's DNS-proxying example gives `address.internal`,
/// here one of this mesh's unused service addresses.
const ADDRESS_INTERNAL: &str = "198.19.163.200";

/// Istio's example entry, with an endpoint (the stand-in httpbin.org) so
/// that requests to it are answered.
fn address_internal(endpoint: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external-address
spec:
  addresses:
  - {ADDRESS_INTERNAL}
  hosts:
  - address.internal
  ports:
  - name: http
    number: 80
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: {endpoint}
"
    )
}

/// Port 9999 of httpbin-v1 to its app on 8080.
const INGRESS_SIDECAR: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: httpbin-v1-ingress
spec:
  workloadSelector:
    labels:
      app: httpbin
      version: v1
  ingress:
  - port:
      number: 9999
      protocol: HTTP
      name: http-alt
    defaultEndpoint: 127.0.0.1:8080
";

/// A WorkloadEntry for the stand-in host and a ServiceEntry selecting it.
fn legacy(address: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: legacy-vm
spec:
  address: {address}
  labels:
    app: legacy
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: legacy
spec:
  hosts:
  - legacy.internal
  addresses:
  - 198.19.163.201
  ports:
  - number: 80
    name: http
    protocol: HTTP
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector:
    labels:
      app: legacy
"
    )
}

/// The address the `curl` pod's resolver gives `name` (hosts file, then
/// DNS, which its sidecar captures), if any.
fn getent(mesh: &Mesh, name: &str) -> Option<String> {
    let out = in_pod(mesh, "curl", &["getent", "ahostsv4", name]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().next().map(str::to_string)
}

/// curl inside the `curl` pod; (exit code, what `-w` wrote).
fn from_pod(mesh: &Mesh, args: &[&str]) -> (i32, String) {
    let mut argv = vec!["curl", "-sS", "-m", "5"];
    argv.extend_from_slice(args);
    let out = in_pod(mesh, "curl", &argv);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn http_code(mesh: &Mesh, url: &str) -> (i32, String) {
    from_pod(mesh, &["-o", "/dev/null", "-w", "%{http_code}", url])
}

#[test]
fn istio_external_services_task_allow_any_then_registry_only() {
    let pki = pki::Pki::new("egress");
    pki.root("example.com");
    pki.leaf("example.com", "www.example.com");
    let outside = format!(
        "- name: httpbin-org\n  labels: {{app: httpbin-org, sidecar.istio.io/inject: \"false\"}}\n  hostnames: [httpbin.org]\n  command: [weft, demo, httpbin, --version, external, --listen, \"0.0.0.0:80\"]\n  ports: [{{containerPort: 80, name: http}}]\n\
         - name: www-example-com\n  labels: {{app: www-example-com, sidecar.istio.io/inject: \"false\"}}\n  hostnames: [www.example.com]\n  command: [openssl, s_server, -accept, \"443\", -cert, {}, -key, {}, -www, -quiet]\n  ports: [{{containerPort: 443, name: https}}]\n",
        pki.path("www.example.com.crt"),
        pki.path("www.example.com.key"),
    );
    let mesh = Mesh::up_edited("httpbin", "egress", 163, 18163, |text| {
        text.replace("\nservices:\n", &format!("\n{outside}services:\n"))
    });
    let ca = pki.path("example.com.crt");
    let https = |mesh: &Mesh| {
        from_pod(
            mesh,
            &[
                "--cacert",
                &ca,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "https://www.example.com/",
            ],
        )
    };

    // ALLOW_ANY, Istio's default: both leave the mesh.
    wait_until("httpbin.org over HTTP", Duration::from_secs(20), || {
        http_code(&mesh, "http://httpbin.org/headers") == (0, "200".into())
    });
    wait_until("www.example.com over TLS", Duration::from_secs(20), || {
        https(&mesh) == (0, "200".into())
    });

    // REGISTRY_ONLY: TLS is cut (curl's exit code 35, as in the task),
    // HTTP gets 502 on ports the mesh serves HTTP on (80 is the ingress
    // gateway Service's); services in the registry still answer.
    ok(mesh.apply_yaml("mesh-config.yaml", &mesh_config("REGISTRY_ONLY")));
    wait_until(
        "TLS to www.example.com cut",
        Duration::from_secs(20),
        || https(&mesh).0 == 35,
    );
    for url in [
        "http://httpbin.org/headers",
        "http://httpbin.org:8000/headers",
    ] {
        assert_eq!(http_code(&mesh, url), (0, "502".into()), "block_all: {url}");
    }
    assert_eq!(
        http_code(&mesh, "http://httpbin:8000/status/418"),
        (0, "418".into())
    );

    // The task's ServiceEntries (with www.example.com for www.google.com):
    // the hosts they declare leave the mesh again, the rest stays blocked.
    ok(mesh.apply_yaml("service-entries.yaml", SERVICE_ENTRIES));
    wait_until(
        "httpbin.org through its ServiceEntry",
        Duration::from_secs(20),
        || http_code(&mesh, "http://httpbin.org/headers") == (0, "200".into()),
    );
    wait_until(
        "www.example.com through its ServiceEntry",
        Duration::from_secs(20),
        || https(&mesh) == (0, "200".into()),
    );
    assert_eq!(
        http_code(&mesh, "http://httpbin.org:8000/headers"),
        (0, "502".into()),
        "port 8000 of httpbin.org is not declared"
    );

    // "Manage traffic to external services": a 3 s timeout on httpbin.org.
    assert_eq!(
        http_code(&mesh, "http://httpbin.org/delay/2"),
        (0, "200".into())
    );
    ok(mesh.apply_yaml("httpbin-ext-timeout.yaml", TIMEOUT));
    wait_until("the timeout answers 504", Duration::from_secs(20), || {
        http_code(&mesh, "http://httpbin.org/delay/4") == (0, "504".into())
    });

    // A Sidecar resource scopes the curl pod to httpbin.org: the other
    // host is unknown to it, so REGISTRY_ONLY cuts it again, and the
    // proxy is sent less config; the Sidecar's own outboundTrafficPolicy
    // then lets unknown hosts out for this pod alone.
    let before = config_of(&mesh, "curl.default");
    ok(mesh.apply_yaml("sidecar.yaml", &sidecar("REGISTRY_ONLY")));
    wait_until(
        "TLS to www.example.com cut by the Sidecar's scope",
        Duration::from_secs(20),
        || https(&mesh).0 == 35,
    );
    assert_eq!(
        http_code(&mesh, "http://httpbin.org/headers"),
        (0, "200".into())
    );
    let after = config_of(&mesh, "curl.default");
    assert!(
        after.0 < before.0 && after.1 < before.1,
        "{before:?} -> {after:?}"
    );
    ok(mesh.apply_yaml("sidecar.yaml", &sidecar("ALLOW_ANY")));
    wait_until(
        "www.example.com through the Sidecar's ALLOW_ANY",
        Duration::from_secs(20),
        || https(&mesh) == (0, "200".into()),
    );
    ok(weft(&[
        "delete", "sidecar", "default", "--mesh", &mesh.name,
    ]));

    // "DNS Proxying": a ServiceEntry's address.internal is in no pod's
    // hosts file; the sidecar's DNS proxy answers for it with the entry's
    // address, and traffic to that address reaches the entry's endpoint.
    let external_ip = getent(&mesh, "httpbin.org").expect("httpbin.org in the hosts file");
    assert_eq!(getent(&mesh, "address.internal"), None);
    ok(mesh.apply_yaml("address-internal.yaml", &address_internal(&external_ip)));
    wait_until(
        "address.internal answered by the DNS proxy",
        Duration::from_secs(20),
        || getent(&mesh, "address.internal").as_deref() == Some(ADDRESS_INTERNAL),
    );
    assert_eq!(
        http_code(&mesh, "http://address.internal/headers"),
        (0, "200".into())
    );

    // A host outside the platform as a WorkloadEntry, which a ServiceEntry
    // selects by label (the shape of Istio's VM workloads).
    ok(mesh.apply_yaml("legacy.yaml", &legacy(&external_ip)));
    wait_until(
        "legacy.internal through its WorkloadEntry",
        Duration::from_secs(20),
        || http_code(&mesh, "http://legacy.internal/headers") == (0, "200".into()),
    );

    // Back to ALLOW_ANY.
    ok(mesh.apply_yaml("mesh-config.yaml", &mesh_config("ALLOW_ANY")));
    wait_until(
        "TLS to www.example.com again",
        Duration::from_secs(20),
        || https(&mesh) == (0, "200".into()),
    );

    // A Sidecar's ingress listener: httpbin-v1 (the mesh's first pod)
    // takes port 9999, where nothing listens, to its app on 8080.
    let url = "http://198.18.163.10:9999/headers";
    assert_ne!(http_code(&mesh, url), (0, "200".into()));
    ok(mesh.apply_yaml("ingress-sidecar.yaml", INGRESS_SIDECAR));
    wait_until(
        "port 9999 served by the Sidecar's ingress listener",
        Duration::from_secs(20),
        || http_code(&mesh, url) == (0, "200".into()),
    );
}
