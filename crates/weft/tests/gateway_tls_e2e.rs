//! End-to-end: Istio's "Secure Gateways" task on a `weft up` mesh, with
//! its YAML and its openssl commands unchanged. Gateway port 443 is served
//! at the HTTP ingress port + 363 (8443 by default). Subnet 161, ingress
//! port 18161 (TLS 18524).

mod support;

#[path = "../../weft-proxy/tests/support/pki.rs"]
#[allow(dead_code)]
mod pki;

use std::process::Output;
use std::time::Duration;

use support::*;

const GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
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
      mode: SIMPLE
      credentialName: httpbin-credential # must be the same as secret
    hosts:
    - httpbin.example.com
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts:
  - "httpbin.example.com"
  gateways:
  - mygateway
  http:
  - match:
    - uri:
        prefix: /status
    - uri:
        prefix: /delay
    route:
    - destination:
        port:
          number: 8000
        host: httpbin
"#;

const TLS_PORT: u16 = 18161 + 363;

/// The task's curl: `--resolve` to the ingress, `--cacert` the root.
fn teapot(pki: &pki::Pki, root: &str, extra: &[&str]) -> (u16, String) {
    let resolve = format!("httpbin.example.com:{TLS_PORT}:127.0.0.1");
    let ca = pki.path(&format!("{root}.crt"));
    let mut args = vec![
        "-HHost:httpbin.example.com",
        "--resolve",
        &resolve,
        "--cacert",
        &ca,
    ];
    args.extend_from_slice(extra);
    curl(
        &format!("https://httpbin.example.com:{TLS_PORT}/status/418"),
        &args,
    )
}

fn create_secret(mesh: &Mesh, args: &[&str]) -> Output {
    let mut all = vec!["create", "secret"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-n", "istio-system", "--mesh", &mesh.name]);
    weft(&all)
}

#[test]
fn istio_secure_gateway_task_simple_rotation_and_mutual() {
    let mesh = Mesh::up_example("httpbin", "securegw", 161, 18161);
    let pki = pki::Pki::new("securegw");
    pki.root("example.com");
    pki.leaf("example.com", "httpbin.example.com");
    pki.leaf("example.com", "client.example.com");
    let (crt, key) = (
        pki.path("httpbin.example.com.crt"),
        pki.path("httpbin.example.com.key"),
    );
    ok(create_secret(
        &mesh,
        &["tls", "httpbin-credential", "--key", &key, "--cert", &crt],
    ));
    ok(mesh.apply_yaml("gateway.yaml", GATEWAY));
    wait_until("the teapot over HTTPS", Duration::from_secs(20), || {
        teapot(&pki, "example.com", &[]).0 == 418
    });
    let h2 = std::process::Command::new("curl")
        .args([
            "-s",
            "-m",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            "--http2",
        ])
        .args([
            "--resolve",
            &format!("httpbin.example.com:{TLS_PORT}:127.0.0.1"),
        ])
        .args(["--cacert", &pki.path("example.com.crt")])
        .arg(format!("https://httpbin.example.com:{TLS_PORT}/status/200"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&h2.stdout),
        "2",
        "ALPN h2 at the gateway"
    );
    // openssl s_client: the chain verifies against the root.
    let s_client = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{TLS_PORT}")])
        .args([
            "-servername",
            "httpbin.example.com",
            "-CAfile",
            &pki.path("example.com.crt"),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&s_client.stdout);
    assert!(said.contains("Verify return code: 0 (ok)"), "{said}");

    // Rotation: the Secret is replaced by one from another root; the next
    // connection gets it without a restart.
    let pki2 = pki::Pki::new("securegw2");
    pki2.root("example2.com");
    pki2.leaf("example2.com", "httpbin.example.com");
    let (crt2, key2) = (
        pki2.path("httpbin.example.com.crt"),
        pki2.path("httpbin.example.com.key"),
    );
    ok(create_secret(
        &mesh,
        &["tls", "httpbin-credential", "--key", &key2, "--cert", &crt2],
    ));
    wait_until("the new certificate", Duration::from_secs(20), || {
        teapot(&pki2, "example2.com", &[]).0 == 418 && teapot(&pki, "example.com", &[]).0 == 0
    });

    // MUTUAL, with the CA in the same generic Secret (the task's command).
    ok(create_secret(
        &mesh,
        &[
            "generic",
            "httpbin-credential",
            "--from-file",
            &format!("tls.key={key}"),
            "--from-file",
            &format!("tls.crt={crt}"),
            "--from-file",
            &format!("ca.crt={}", pki.path("example.com.crt")),
        ],
    ));
    ok(mesh.apply_yaml(
        "mutual.yaml",
        &GATEWAY.replace("mode: SIMPLE", "mode: MUTUAL"),
    ));
    let (client_crt, client_key) = (
        pki.path("client.example.com.crt"),
        pki.path("client.example.com.key"),
    );
    let with_cert = ["--cert", client_crt.as_str(), "--key", client_key.as_str()];
    wait_until(
        "MUTUAL with a client certificate",
        Duration::from_secs(20),
        || {
            teapot(&pki, "example.com", &with_cert).0 == 418
                && teapot(&pki, "example.com", &[]).0 == 0
        },
    );
    let started = std::time::Instant::now();
    let without = std::process::Command::new("curl")
        .args([
            "-sS",
            "-m",
            "10",
            "--resolve",
            &format!("httpbin.example.com:{TLS_PORT}:127.0.0.1"),
        ])
        .args(["--cacert", &pki.path("example.com.crt")])
        .arg(format!("https://httpbin.example.com:{TLS_PORT}/status/418"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&without.stderr);
    assert!(err.contains("alert"), "a TLS alert, not a hang: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "answered at once"
    );

    // A server whose Secret does not exist is left out and named; the
    // other server goes on.
    let broken = GATEWAY.replace("mode: SIMPLE", "mode: MUTUAL").replace(
        "    hosts:\n    - httpbin.example.com\n",
        "    hosts:\n    - httpbin.example.com\n  - port: {number: 443, name: https-hello, protocol: HTTPS}\n    tls: {mode: SIMPLE, credentialName: helloworld-credential}\n    hosts: [helloworld.example.com]\n",
    );
    ok(mesh.apply_yaml("broken.yaml", &broken));
    wait_until(
        "the missing Secret named in the control plane log",
        Duration::from_secs(20),
        || {
            mesh.log("control-plane.log").contains(
                "Secret istio-system/helloworld-credential not found; the server is left out",
            )
        },
    );
    assert_eq!(teapot(&pki, "example.com", &with_cert).0, 418);

    // Certificates from files on the gateway's machine, as Istio's older
    // file-mount task wrote them (serverCertificate, privateKey,
    // caCertificates), served MUTUAL with a new root and its client.
    pki.root("files.example.com");
    pki.leaf("files.example.com", "httpbin.example.com");
    pki.leaf("files.example.com", "client.example.com");
    let files = GATEWAY.replace(
        "      mode: SIMPLE\n      credentialName: httpbin-credential",
        &format!(
            "      mode: MUTUAL\n      serverCertificate: {}\n      privateKey: {}\n      caCertificates: {}",
            pki.path("httpbin.example.com.crt"),
            pki.path("httpbin.example.com.key"),
            pki.path("files.example.com.crt"),
        ),
    );
    assert_ne!(files, GATEWAY, "the task's server, with files");
    ok(mesh.apply_yaml("gateway.yaml", &files));
    let (client_crt, client_key) = (
        pki.path("client.example.com.crt"),
        pki.path("client.example.com.key"),
    );
    let with_file_client = ["--cert", &client_crt, "--key", &client_key];
    wait_until(
        "the certificate from files",
        Duration::from_secs(20),
        || teapot(&pki, "files.example.com", &with_file_client).0 == 418,
    );
}

/// Istio's "Kubernetes Ingress" task: its Ingress, unchanged.
const INGRESS: &str = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  annotations:
    kubernetes.io/ingress.class: istio
  name: ingress
spec:
  rules:
  - host: httpbin.example.com
    http:
      paths:
      - path: /status
        pathType: Prefix
        backend:
          service:
            name: httpbin
            port:
              number: 8000
";

/// The task's "Specifying IngressClass" YAML, unchanged.
const INGRESS_CLASS: &str = "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: istio
spec:
  controller: istio.io/ingress-controller
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: ingress
spec:
  ingressClassName: istio
  rules:
  - host: httpbin.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: httpbin
            port:
              number: 8000
";

/// "Kubernetes Ingress": an Ingress of class `istio` exposes httpbin's
/// `/status` through the ingress gateway (other paths 404), then by
/// IngressClass everything; an Ingress of another class is not served;
/// its TLS section serves HTTPS with a Secret in istio-system (the task's
/// "Next steps"). Subnet 173, ingress port 18173 (TLS 18536).
#[test]
fn istio_kubernetes_ingress_task() {
    let mesh = Mesh::up_example("httpbin", "k8singr", 173, 18173);
    let get = |path: &str, host: &str| {
        curl(
            &format!("{}{path}", mesh.ingress),
            &["-o", "/dev/null", "-H", &format!("Host:{host}")],
        )
        .0
    };
    // The task starts from httpbin alone: the example's catch-all
    // Gateway and VirtualService (a file of the watched directory) go.
    std::fs::remove_file(mesh.config_dir.join("httpbin-gateway.yaml")).unwrap();
    wait_until("the catch-all gone", Duration::from_secs(20), || {
        get("/headers", "anything.example.com") != 200
    });
    ok(mesh.apply_yaml("ingress.yaml", INGRESS));
    wait_until(
        "/status/200 through the Ingress",
        Duration::from_secs(20),
        || get("/status/200", "httpbin.example.com") == 200,
    );
    assert_eq!(get("/headers", "httpbin.example.com"), 404, "not exposed");
    assert_eq!(
        get("/statuses", "httpbin.example.com"),
        404,
        "whole segments"
    );

    // Another controller's Ingress is not the mesh's to serve.
    let other = INGRESS
        .replace("ingress.class: istio", "ingress.class: nginx")
        .replace("name: ingress", "name: other")
        .replace("httpbin.example.com", "other.example.com");
    ok(mesh.apply_yaml("other.yaml", &other));

    ok(mesh.apply_yaml("ingress-class.yaml", INGRESS_CLASS));
    wait_until(
        "/headers by the IngressClass",
        Duration::from_secs(20),
        || get("/headers", "httpbin.example.com") == 200,
    );
    assert_eq!(get("/status/200", "other.example.com"), 404);

    // TLS: the Secret where the gateway runs, the Ingress's tls section.
    let pki = pki::Pki::new("k8singr");
    pki.root("example.com");
    pki.leaf("example.com", "httpbin.example.com");
    ok(create_secret(
        &mesh,
        &[
            "tls",
            "httpbin-credential",
            "--key",
            &pki.path("httpbin.example.com.key"),
            "--cert",
            &pki.path("httpbin.example.com.crt"),
        ],
    ));
    let with_tls = INGRESS_CLASS.replacen(
        "spec:\n  ingressClassName: istio\n",
        "spec:\n  ingressClassName: istio\n  tls:\n  - hosts: [httpbin.example.com]\n    secretName: httpbin-credential\n",
        1,
    );
    ok(mesh.apply_yaml("ingress-class.yaml", &with_tls));
    let tls_port = 18173 + 363;
    let resolve = format!("httpbin.example.com:{tls_port}:127.0.0.1");
    let ca = pki.path("example.com.crt");
    wait_until("HTTPS through the Ingress", Duration::from_secs(20), || {
        curl(
            &format!("https://httpbin.example.com:{tls_port}/status/418"),
            &["--resolve", &resolve, "--cacert", &ca],
        )
        .0 == 418
    });
}
