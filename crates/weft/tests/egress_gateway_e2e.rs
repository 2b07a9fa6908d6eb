//! End-to-end: Istio's "Egress Gateways", "Egress TLS Origination" and
//! "Egress Gateways with TLS Origination" tasks on `weft up` meshes, with
//! the tasks' YAML unchanged (but for the CA file the origination's
//! DestinationRules name: the stand-in server's certificate is made here,
//! not by a public CA). The egress gateway is a pod deployed as Istio
//! deploys one of its own (`inject.istio.io/templates: gateway`) behind the
//! demo profile's `istio-egressgateway` Service; `edition.cnn.com` is a host
//! outside the mesh (plain HTTP on 80, TLS on 443, with a certificate made
//! here). HTTP, then TLS passthrough, leave the mesh through the gateway,
//! which the gateway's access log shows; then the sidecar itself turns
//! plain HTTP into TLS to the host's port 443; then the sidecar calls the
//! gateway with mesh mTLS and the gateway originates the TLS. The tasks'
//! `/politics` is `/headers` here (the stand-in server's page).
//! Subnets 164 and 172, ingress ports 18164 and 18172.
mod support;

#[path = "../../weft-proxy/tests/support/pki.rs"]
#[allow(dead_code)]
mod pki;

use std::time::Duration;

use support::*;

const EGRESS_GATEWAY_POD: &str = "- name: istio-egressgateway
  namespace: istio-system
  labels: {istio: egressgateway, app: istio-egressgateway}
  annotations: {inject.istio.io/templates: gateway}
  serviceAccount: istio-egressgateway-service-account
  ports: [{containerPort: 8080, name: http2}, {containerPort: 8443, name: https}]
";

const EGRESS_GATEWAY_SERVICE: &str = "- name: istio-egressgateway
  namespace: istio-system
  selector: {istio: egressgateway}
  ports: [{name: http2, port: 80, targetPort: 8080}, {name: https, port: 443, targetPort: 8443}]
";

const SERVICE_ENTRY: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: cnn
spec:
  hosts:
  - edition.cnn.com
  ports:
  - number: 80
    name: http-port
    protocol: HTTP
  - number: 443
    name: https
    protocol: HTTPS
  resolution: DNS
";

const HTTP_THROUGH_GATEWAY: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: istio-egressgateway
spec:
  selector:
    istio: egressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - edition.cnn.com
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: egressgateway-for-cnn
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: cnn
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: direct-cnn-through-egress-gateway
spec:
  hosts:
  - edition.cnn.com
  gateways:
  - istio-egressgateway
  - mesh
  http:
  - match:
    - gateways:
      - mesh
      port: 80
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: cnn
        port:
          number: 80
      weight: 100
  - match:
    - gateways:
      - istio-egressgateway
      port: 80
    route:
    - destination:
        host: edition.cnn.com
        port:
          number: 80
      weight: 100
";

const TLS_THROUGH_GATEWAY: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: istio-egressgateway
spec:
  selector:
    istio: egressgateway
  servers:
  - port:
      number: 443
      name: tls
      protocol: TLS
    hosts:
    - edition.cnn.com
    tls:
      mode: PASSTHROUGH
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: egressgateway-for-cnn
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: cnn
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: direct-cnn-through-egress-gateway
spec:
  hosts:
  - edition.cnn.com
  gateways:
  - mesh
  - istio-egressgateway
  tls:
  - match:
    - gateways:
      - mesh
      port: 443
      sniHosts:
      - edition.cnn.com
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: cnn
        port:
          number: 443
  - match:
    - gateways:
      - istio-egressgateway
      port: 443
      sniHosts:
      - edition.cnn.com
    route:
    - destination:
        host: edition.cnn.com
        port:
          number: 443
      weight: 100
";

/// The origination task's ServiceEntry and DestinationRule; the rule's
/// `caCertificates` line is added (the task's host has a public CA's
/// certificate, which the system's CAs, the default, would check).
fn tls_origination(ca: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: edition-cnn-com
spec:
  hosts:
  - edition.cnn.com
  ports:
  - number: 80
    name: http-port
    protocol: HTTP
    targetPort: 443
  - number: 443
    name: https-port
    protocol: HTTPS
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: edition-cnn-com
spec:
  host: edition.cnn.com
  trafficPolicy:
    portLevelSettings:
    - port:
        number: 80
      tls:
        mode: SIMPLE # initiates HTTPS when accessing edition.cnn.com
        caCertificates: {ca}
"
    )
}

/// The httpbin example with the egress gateway and `edition.cnn.com`, a
/// host outside the mesh with two servers: the stand-in httpbin on 80,
/// openssl on 443 with a certificate of `pki`'s `cnn.com` root; `extra`
/// pods and services are added. Ingress port 18000 + `subnet`.
fn cnn_mesh(pki: &pki::Pki, name: &str, subnet: u8, extra: (&str, &str)) -> Mesh {
    pki.root("cnn.com");
    pki.server_leaf("cnn.com", "edition.cnn.com");
    let cnn = format!(
        "- name: edition-cnn-com\n  labels: {{app: cnn, sidecar.istio.io/inject: \"false\"}}\n  hostnames: [edition.cnn.com]\n  command: [sh, -c, \"openssl s_server -accept 443 -cert {} -key {} -www -quiet & exec {} demo httpbin --version cnn --listen 0.0.0.0:80\"]\n  ports: [{{containerPort: 80, name: http}}, {{containerPort: 443, name: https}}]\n",
        pki.path("edition.cnn.com.crt"),
        pki.path("edition.cnn.com.key"),
        env!("CARGO_BIN_EXE_weft"),
    );
    let (pods, services) = extra;
    let port = 18000 + u16::from(subnet);
    Mesh::up_edited("httpbin", name, subnet, port, |text| {
        text.replace(
            "\nservices:\n",
            &format!(
                "\n{cnn}{pods}{EGRESS_GATEWAY_POD}services:\n{EGRESS_GATEWAY_SERVICE}{services}"
            ),
        )
    })
}

/// Lines of the egress gateway's log that mention `what`.
fn gateway_lines(mesh: &Mesh, what: &str) -> usize {
    mesh.log("istio-egressgateway.log")
        .lines()
        .filter(|l| l.contains(what))
        .count()
}

#[test]
fn istio_egress_gateway_task_http_then_tls_passthrough() {
    let pki = pki::Pki::new("egressgw");
    let mesh = cnn_mesh(&pki, "egressgw", 164, ("", ""));
    let http = |mesh: &Mesh| {
        pod_curl(
            mesh,
            "curl",
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://edition.cnn.com/headers",
            ],
        )
    };
    let ca = pki.path("cnn.com.crt");
    let https = |mesh: &Mesh| {
        pod_curl(
            mesh,
            "curl",
            &[
                "--cacert",
                &ca,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "https://edition.cnn.com/",
            ],
        )
    };

    ok(mesh.apply_yaml("cnn-service-entry.yaml", SERVICE_ENTRY));
    wait_until("edition.cnn.com directly", Duration::from_secs(20), || {
        http(&mesh) == "200"
    });
    assert_eq!(gateway_lines(&mesh, "edition.cnn.com"), 0);

    // HTTP through the egress gateway: its access log has the request.
    ok(mesh.apply_yaml("egress-http.yaml", HTTP_THROUGH_GATEWAY));
    wait_until(
        "a request to edition.cnn.com in the egress gateway's log",
        Duration::from_secs(20),
        || http(&mesh) == "200" && gateway_lines(&mesh, "/headers") > 0,
    );
    assert!(
        mesh.log("istio-egressgateway.log")
            .contains("outbound|80||edition.cnn.com"),
        "the gateway sent it to the external host's cluster"
    );

    // TLS passthrough through the egress gateway (the task deletes the
    // HTTP config first; applying over it replaces the same names).
    wait_until(
        "edition.cnn.com over TLS directly",
        Duration::from_secs(20),
        || https(&mesh) == "200",
    );
    ok(mesh.apply_yaml("egress-http.yaml", TLS_THROUGH_GATEWAY));
    wait_until(
        "TLS to edition.cnn.com through the egress gateway",
        Duration::from_secs(20),
        || https(&mesh) == "200" && gateway_lines(&mesh, "outbound|443||edition.cnn.com") > 0,
    );

    // "Egress TLS Origination": the task deletes the gateway config, then
    // plain HTTP to port 80 leaves the sidecar as TLS to port 443 (the
    // stand-in's TLS side answers with its status page).
    for (kind, name) in [
        ("gw", "istio-egressgateway"),
        ("vs", "direct-cnn-through-egress-gateway"),
        ("dr", "egressgateway-for-cnn"),
        ("se", "cnn"),
    ] {
        ok(weft(&["delete", kind, name, "--mesh", &mesh.name]));
    }
    ok(mesh.apply_yaml("origination.yaml", &tls_origination(&ca)));
    wait_until(
        "http://edition.cnn.com answered by the TLS side",
        Duration::from_secs(20),
        || {
            pod_curl(&mesh, "curl", &["http://edition.cnn.com/"])
                .contains("Ciphers supported in s_server binary")
        },
    );
}

/// "Egress Gateways with TLS Origination": the sidecar calls the egress
/// gateway with mesh mTLS (the gateway's ISTIO_MUTUAL server on port 80,
/// SNI `edition.cnn.com` from the subset's `tls`), the gateway originates
/// TLS to the host's port 443.
const MTLS_TO_GATEWAY: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: istio-egressgateway
spec:
  selector:
    istio: egressgateway
  servers:
  - port:
      number: 80
      name: https-port-for-tls-origination
      protocol: HTTPS
    hosts:
    - edition.cnn.com
    tls:
      mode: ISTIO_MUTUAL
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: egressgateway-for-cnn
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: cnn
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN
      portLevelSettings:
      - port:
          number: 80
        tls:
          mode: ISTIO_MUTUAL
          sni: edition.cnn.com
";

/// The task's VirtualService and origination rule; the rule's
/// `caCertificates` line is added, as in `tls_origination`.
fn gateway_originates(ca: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: direct-cnn-through-egress-gateway
spec:
  hosts:
  - edition.cnn.com
  gateways:
  - istio-egressgateway
  - mesh
  http:
  - match:
    - gateways:
      - mesh
      port: 80
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: cnn
        port:
          number: 80
      weight: 100
  - match:
    - gateways:
      - istio-egressgateway
      port: 80
    route:
    - destination:
        host: edition.cnn.com
        port:
          number: 443
      weight: 100
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: originate-tls-for-edition-cnn-com
spec:
  host: edition.cnn.com
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    portLevelSettings:
    - port:
        number: 443
      tls:
        mode: SIMPLE # initiates HTTPS for connections to edition.cnn.com
        caCertificates: {ca}
"
    )
}

/// An AuthorizationPolicy on the egress gateway letting in `principal`
/// only: the gateway knows its callers by their mesh certificates.
fn gateway_allows(principal: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: egress-callers
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: egressgateway
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [\"{principal}\"]
"
    )
}

/// "Perform mutual TLS origination with an egress gateway": the sidecar
/// calls the gateway with mesh mTLS (ISTIO_MUTUAL on 443, SNI the nginx
/// host), the gateway presents `client-credential` to nginx.
const NGINX_THROUGH_GATEWAY: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: istio-egressgateway
spec:
  selector:
    istio: egressgateway
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    hosts:
    - my-nginx.mesh-external.svc.cluster.local
    tls:
      mode: ISTIO_MUTUAL
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: egressgateway-for-nginx
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: nginx
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN
      portLevelSettings:
      - port:
          number: 443
        tls:
          mode: ISTIO_MUTUAL
          sni: my-nginx.mesh-external.svc.cluster.local
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: direct-nginx-through-egress-gateway
spec:
  hosts:
  - my-nginx.mesh-external.svc.cluster.local
  gateways:
  - istio-egressgateway
  - mesh
  http:
  - match:
    - gateways:
      - mesh
      port: 80
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: nginx
        port:
          number: 443
      weight: 100
  - match:
    - gateways:
      - istio-egressgateway
      port: 443
    route:
    - destination:
        host: my-nginx.mesh-external.svc.cluster.local
        port:
          number: 443
      weight: 100
";

/// Applied with `-n istio-system`, as the task does.
const ORIGINATE_MTLS_FOR_NGINX: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: originate-mtls-for-nginx
spec:
  host: my-nginx.mesh-external.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    portLevelSettings:
    - port:
        number: 443
      tls:
        mode: MUTUAL
        credentialName: client-credential # this must match the secret created earlier to hold client certs
        sni: my-nginx.mesh-external.svc.cluster.local
";

const NGINX_HOST: &str = "my-nginx.mesh-external.svc.cluster.local";

/// The task's nginx (its `nginx.conf`, with this machine's paths; one
/// process in the foreground), in namespace `mesh-external` without a
/// sidecar, behind the task's `my-nginx` Service; and Istio's curl
/// sample's Service (port 80), whose listener carries the calls.
fn nginx_and_curl_service(pki: &pki::Pki) -> (String, String) {
    let dir = pki.path("nginx");
    std::fs::create_dir_all(format!("{dir}/html")).unwrap();
    std::fs::write(
        format!("{dir}/html/index.html"),
        "<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n</head>\n</html>\n",
    )
    .unwrap();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\nevents {{\n}}\nhttp {{\n  access_log off;\n  server {{\n    listen 443 ssl;\n    root {dir}/html;\n    index index.html;\n    server_name {NGINX_HOST};\n    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_client_certificate {};\n    ssl_verify_client on;\n  }}\n}}\n",
        pki.path(&format!("{NGINX_HOST}.crt")),
        pki.path(&format!("{NGINX_HOST}.key")),
        pki.path("example.com.crt"),
    );
    std::fs::write(format!("{dir}/nginx.conf"), conf).unwrap();
    let pod = format!(
        "- name: my-nginx\n  namespace: mesh-external\n  labels: {{run: my-nginx, sidecar.istio.io/inject: \"false\"}}\n  command: [nginx, -c, {dir}/nginx.conf, -p, {dir}]\n  ports: [{{containerPort: 443}}]\n"
    );
    let services = "- name: my-nginx\n  namespace: mesh-external\n  ports: [{port: 443, protocol: TCP}]\n  selector: {run: my-nginx}\n- name: curl\n  ports: [{name: http, port: 80, targetPort: 8080}]\n  selector: {app: curl}\n".to_string();
    (pod, services)
}

#[test]
fn istio_egress_gateway_tls_origination_task() {
    let pki = pki::Pki::new("egresstls");
    pki.root("example.com");
    pki.server_leaf("example.com", NGINX_HOST);
    pki.leaf("example.com", "client.example.com");
    let (nginx, services) = nginx_and_curl_service(&pki);
    let mesh = cnn_mesh(&pki, "egrmtls", 172, (&nginx, &services));
    let headers = |mesh: &Mesh| pod_curl_status(mesh, "curl", &["http://edition.cnn.com/headers"]);
    ok(mesh.apply_yaml("cnn-service-entry.yaml", SERVICE_ENTRY));
    wait_until("edition.cnn.com directly", Duration::from_secs(20), || {
        headers(&mesh).0 == 200
    });

    ok(mesh.apply_yaml("egress-mtls.yaml", MTLS_TO_GATEWAY));
    let ca = pki.path("cnn.com.crt");
    ok(mesh.apply_yaml("egress-originate.yaml", &gateway_originates(&ca)));
    // The stand-in's TLS side answers: the gateway originated TLS.
    wait_until(
        "http://edition.cnn.com/headers answered over TLS through the egress gateway",
        Duration::from_secs(20),
        || {
            let (code, body) = headers(&mesh);
            code == 200 && body.contains("Ciphers supported in s_server binary")
        },
    );
    // Its access log (flushed each second) has the request, sent on to
    // the host's port 443.
    wait_until(
        "the request in the egress gateway's log",
        Duration::from_secs(10),
        || {
            mesh.log("istio-egressgateway.log")
                .lines()
                .any(|l| l.contains("GET /headers") && l.contains("outbound|443||edition.cnn.com"))
        },
    );

    // Only mesh clients get in: without a client certificate the
    // gateway's port refuses the handshake.
    let gateway = format!(
        "edition.cnn.com:8080:{}",
        mesh.pod_ip("istio-egressgateway")
    );
    let (code, _) = curl(
        "https://edition.cnn.com:8080/headers",
        &["-k", "--resolve", &gateway],
    );
    assert_eq!(code, 0, "no HTTP answer without a mesh certificate");

    // The gateway knows its caller by its certificate: a policy naming
    // another identity turns it away, one naming curl's lets it in.
    ok(mesh.apply_yaml(
        "egress-authz.yaml",
        &gateway_allows("cluster.local/ns/default/sa/httpbin"),
    ));
    wait_until("the gateway denies curl", Duration::from_secs(20), || {
        headers(&mesh).0 == 403
    });
    ok(mesh.apply_yaml(
        "egress-authz.yaml",
        &gateway_allows("cluster.local/ns/default/sa/curl"),
    ));
    wait_until("the gateway lets curl in", Duration::from_secs(20), || {
        headers(&mesh).0 == 200
    });

    // The task's cleanup, then its mutual TLS origination.
    for (kind, name, ns) in [
        ("gw", "istio-egressgateway", "default"),
        ("se", "cnn", "default"),
        ("vs", "direct-cnn-through-egress-gateway", "default"),
        ("dr", "originate-tls-for-edition-cnn-com", "default"),
        ("dr", "egressgateway-for-cnn", "default"),
        ("ap", "egress-callers", "istio-system"),
    ] {
        ok(weft(&[
            "delete", kind, name, "-n", ns, "--mesh", &mesh.name,
        ]));
    }
    // nginx wants a client certificate (the task's check from a pod).
    let nginx_at = format!("{NGINX_HOST}:443:{}", mesh.pod_ip("my-nginx"));
    let (code, body) = curl(
        &format!("https://{NGINX_HOST}/"),
        &["-k", "--resolve", &nginx_at],
    );
    assert!(
        code == 400 && body.contains("No required SSL certificate was sent"),
        "{code} {body}"
    );
    ok(weft(&[
        "create",
        "secret",
        "-n",
        "istio-system",
        "generic",
        "client-credential",
        &format!("--from-file=tls.key={}", pki.path("client.example.com.key")),
        &format!("--from-file=tls.crt={}", pki.path("client.example.com.crt")),
        &format!("--from-file=ca.crt={}", pki.path("example.com.crt")),
        "--mesh",
        &mesh.name,
    ]));
    ok(mesh.apply_yaml("nginx-gateway.yaml", NGINX_THROUGH_GATEWAY));
    ok(mesh.apply_yaml_args(
        "nginx-origination.yaml",
        ORIGINATE_MTLS_FOR_NGINX,
        &["-n", "istio-system"],
    ));
    let url = format!("http://{NGINX_HOST}");
    wait_until(
        "nginx's page through the egress gateway",
        Duration::from_secs(20),
        || pod_curl(&mesh, "curl", &["-sS", &url]).contains("<title>Welcome to nginx!</title>"),
    );
    wait_until(
        "the nginx request in the egress gateway's log",
        Duration::from_secs(10),
        || {
            mesh.log("istio-egressgateway.log")
                .lines()
                .any(|l| l.contains(NGINX_HOST) && l.contains("HTTP"))
        },
    );
}
