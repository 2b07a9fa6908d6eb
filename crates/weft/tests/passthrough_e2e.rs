//! End-to-end: Istio's "Ingress Gateway without TLS Termination" task (SNI
//! passthrough to a TLS server in the mesh) and "TCP Traffic Shifting"
//! task through the ingress gateway, with their YAML unchanged, and TLS
//! routed by SNI between sidecars. The TLS servers are `openssl s_server`
//! with certificates made by openssl, as the task makes them. Subnet 162,
//! ingress port 18162 (TLS 18525); Gateway port 31400 is served at its own
//! number.

mod support;

#[path = "../../weft-proxy/tests/support/pki.rs"]
#[allow(dead_code)]
mod pki;

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use support::*;

const TLS_PORT: u16 = 18162 + 363;

/// The task's Gateway and VirtualService, as published.
const NGINX_PASSTHROUGH: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: mygateway
spec:
  selector:
    istio: ingressgateway # use istio default ingress gateway
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    tls:
      mode: PASSTHROUGH
    hosts:
    - nginx.example.com
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: nginx
spec:
  hosts:
  - nginx.example.com
  gateways:
  - mygateway
  tls:
  - match:
    - port: 443
      sniHosts:
      - nginx.example.com
    route:
    - destination:
        host: my-nginx
        port:
          number: 443
"#;

/// The TCP traffic-shifting task's gateway, destination rule and
/// all-v1 VirtualService (tcp-echo-all-v1.yaml).
const TCP_ECHO_ALL_V1: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: tcp-echo-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 31400
      name: tcp
      protocol: TCP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: tcp-echo-destination
spec:
  host: tcp-echo
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: tcp-echo
spec:
  hosts:
  - "*"
  gateways:
  - tcp-echo-gateway
  tcp:
  - match:
    - port: 31400
    route:
    - destination:
        host: tcp-echo
        port:
          number: 9000
        subset: v1
"#;

/// tcp-echo-20-v2.yaml of the same task.
const TCP_ECHO_20_V2: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: tcp-echo
spec:
  hosts:
  - "*"
  gateways:
  - tcp-echo-gateway
  tcp:
  - match:
    - port: 31400
    route:
    - destination:
        host: tcp-echo
        port:
          number: 9000
        subset: v1
      weight: 80
    - destination:
        host: tcp-echo
        port:
          number: 9000
        subset: v2
      weight: 20
"#;

/// Sidecars: TLS for nginx.example.com to my-nginx goes to v2 only.
const SIDECAR_SNI: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: my-nginx
spec:
  host: my-nginx
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: my-nginx
spec:
  hosts:
  - my-nginx.default.svc.cluster.local
  - nginx.example.com
  tls:
  - match:
    - port: 443
      sniHosts:
      - nginx.example.com
    route:
    - destination:
        host: my-nginx
        subset: v2
"#;

/// The task's nginx, as two versions of `openssl s_server -www` (whose
/// page shows its command line, so the certificate file names the
/// version), and Istio's tcp-echo v1 and v2.
fn extra_workloads(pki: &pki::Pki) -> (String, String) {
    let mut workloads = String::new();
    for version in ["v1", "v2"] {
        let (crt, key) = (
            pki.path(&format!("nginx-{version}.crt")),
            pki.path("nginx.example.com.key"),
        );
        workloads.push_str(&format!(
            "- name: my-nginx-{version}\n  labels: {{run: my-nginx, version: {version}}}\n  command: [openssl, s_server, -accept, \"443\", -cert, {crt}, -key, {key}, -www, -quiet]\n  ports: [{{containerPort: 443, name: https}}]\n\
             - name: tcp-echo-{version}\n  labels: {{app: tcp-echo, version: {version}}}\n  command: [weft, demo, tcp-echo, --version, {version}, --listen, \"0.0.0.0:9000\"]\n  ports: [{{containerPort: 9000, name: tcp}}]\n"
        ));
    }
    let services = "- name: my-nginx\n  ports: [{name: https, port: 443}]\n  selector: {run: my-nginx}\n\
                    - name: tcp-echo\n  ports: [{name: tcp, port: 9000}]\n  selector: {app: tcp-echo}\n";
    (workloads, services.to_string())
}

/// GET https://nginx.example.com through the ingress's TLS port, the
/// certificate checked against the task's root.
fn nginx_at_ingress(pki: &pki::Pki, host: &str) -> (u16, String) {
    let resolve = format!("{host}:{TLS_PORT}:127.0.0.1");
    let ca = pki.path("example.com.crt");
    curl(
        &format!("https://{host}:{TLS_PORT}/"),
        &["--resolve", &resolve, "--cacert", &ca],
    )
}

/// One line through the gateway's TCP port 31400; the echo names its pod.
fn tcp_echo_line() -> Option<String> {
    let mut s = std::net::TcpStream::connect("127.0.0.1:31400").ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"hello\n").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    Some(line.trim().to_string())
}

#[test]
fn istio_sni_passthrough_and_tcp_gateway_tasks_and_sidecar_sni_routing() {
    let pki = pki::Pki::new("passthrough");
    pki.root("example.com");
    pki.leaf("example.com", "nginx.example.com");
    for version in ["v1", "v2"] {
        std::fs::copy(
            pki.path("nginx.example.com.crt"),
            pki.path(&format!("nginx-{version}.crt")),
        )
        .unwrap();
    }
    let (workloads, services) = extra_workloads(&pki);
    let mesh = Mesh::up_edited("httpbin", "sni", 162, 18162, |text| {
        text.replace(
            "\nservices:\n",
            &format!("\n{workloads}services:\n{services}"),
        )
    });

    // Ingress SNI passthrough: nginx's own certificate reaches curl.
    ok(mesh.apply_yaml("nginx.yaml", NGINX_PASSTHROUGH));
    wait_until("nginx through the gateway", Duration::from_secs(30), || {
        let (status, body) = nginx_at_ingress(&pki, "nginx.example.com");
        status == 200 && body.contains("s_server -accept 443")
    });
    // A name no route claims gets no connection.
    assert_eq!(nginx_at_ingress(&pki, "other.example.com").0, 0);

    // TCP through the gateway: all to v1, then 80/20.
    ok(mesh.apply_yaml("tcp-echo.yaml", TCP_ECHO_ALL_V1));
    wait_until(
        "tcp-echo through port 31400",
        Duration::from_secs(30),
        || tcp_echo_line().as_deref() == Some("tcp-echo-v1 hello"),
    );
    ok(mesh.apply_yaml("tcp-echo-20-v2.yaml", TCP_ECHO_20_V2));
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    wait_until("the 20% shift to v2", Duration::from_secs(30), || {
        let line = tcp_echo_line().unwrap_or_default();
        *seen.entry(line).or_default() += 1;
        seen.contains_key("tcp-echo-v2 hello")
    });
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..50 {
        *seen.entry(tcp_echo_line().unwrap_or_default()).or_default() += 1;
    }
    let (v1, v2) = (seen["tcp-echo-v1 hello"], seen["tcp-echo-v2 hello"]);
    assert_eq!(v1 + v2, 50, "{seen:?}");
    assert!(v1 > v2, "80/20: {seen:?}");

    // Sidecars: with no route both versions serve the TLS port; with the
    // tls route, nginx.example.com goes to v2 only.
    let from_curl_pod = || {
        pod_curl(
            &mesh,
            "curl",
            &[
                "--cacert",
                &pki.path("example.com.crt"),
                "--connect-to",
                "nginx.example.com:443:my-nginx:443",
                "https://nginx.example.com/",
            ],
        )
    };
    let versions = |n: usize| -> Vec<&'static str> {
        (0..n)
            .map(|_| {
                let page = from_curl_pod();
                ["nginx-v1", "nginx-v2"]
                    .into_iter()
                    .find(|v| page.contains(v))
                    .unwrap_or("error")
            })
            .collect()
    };
    wait_until(
        "both versions by the TLS port",
        Duration::from_secs(30),
        || {
            let seen = versions(4);
            seen.contains(&"nginx-v1") && seen.contains(&"nginx-v2")
        },
    );
    ok(mesh.apply_yaml("sidecar-sni.yaml", SIDECAR_SNI));
    wait_until(
        "nginx.example.com to v2 only",
        Duration::from_secs(30),
        || versions(6).iter().all(|v| *v == "nginx-v2"),
    );
    let log = mesh.log("control-plane.log");
    assert!(!log.contains("left out"), "{log}");
}
