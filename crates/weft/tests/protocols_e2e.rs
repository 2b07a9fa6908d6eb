//! End-to-end: HTTP/2 and gRPC through sidecars, on `weft up` meshes of the
//! httpbin example, with real clients (curl, h2load). Each test owns one
//! mesh (subnets 130–139, ingress ports 18130–18139).

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

/// httpbin with its service port named `http2`, as a team declares an
/// HTTP/2 service.
fn http2_mesh(name: &str, subnet: u8) -> Mesh {
    Mesh::up_edited("httpbin", name, subnet, 18000 + u16::from(subnet), |m| {
        m.replace("{name: http, port: 8000", "{name: http2, port: 8000")
    })
}

/// The response head of one curl call from the `curl` pod.
fn head(mesh: &Mesh, args: &[&str]) -> String {
    let mut all = vec!["-o", "/dev/null", "-D", "-"];
    all.extend_from_slice(args);
    pod_curl(mesh, "curl", &all)
}

/// A port named `http2`: the client's sidecar takes h2c (and HTTP/1.1),
/// both sidecars speak HTTP/2 to each other and to the app, and h2load's
/// multiplexed load all succeeds.
#[test]
fn http2_through_sidecars() {
    let mesh = http2_mesh("h2", 130);
    let url = "http://httpbin:8000/get";
    wait_until("the mesh to serve", Duration::from_secs(10), || {
        head(&mesh, &[url]).contains(" 200")
    });
    let h2 = head(&mesh, &["--http2-prior-knowledge", url]);
    assert!(h2.starts_with("HTTP/2 200"), "{h2}");
    assert!(
        h2.contains("x-protocol: HTTP/2.0"),
        "the app got HTTP/2: {h2}"
    );
    let h1 = head(&mesh, &[url]);
    assert!(h1.starts_with("HTTP/1.1 200"), "{h1}");
    assert!(
        h1.contains("x-protocol: HTTP/2.0"),
        "an HTTP/1.1 client is carried over HTTP/2 on an http2 port: {h1}"
    );
    let out = Command::new("ip")
        .args(["netns", "exec", &mesh.netns("curl")])
        .args(["h2load", "-n", "400", "-c", "4", "-m", "10", url])
        .output()
        .expect("h2load (nghttp2-client) runs; scripts/setup.sh installs it");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("400 succeeded, 0 failed") && report.contains("400 2xx"),
        "{report}"
    );
    // The ingress gateway takes h2c too, and h2load through it succeeds.
    let edge = format!("{}/get", mesh.ingress);
    let (code, body) = curl(&edge, &["--http2-prior-knowledge", "-D", "-"]);
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("HTTP/2 200"), "{body}");
    let out = Command::new("h2load")
        .args(["-n", "200", "-c", "2", "-m", "10", &edge])
        .output()
        .expect("h2load (nghttp2-client) runs; scripts/setup.sh installs it");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("200 succeeded, 0 failed"), "{report}");
    std::thread::sleep(Duration::from_millis(1500)); // one access-log flush
    let log = mesh.log("curl.sidecar.log");
    assert!(
        log.contains("HTTP/2\""),
        "the client sidecar logs HTTP/2: {log}"
    );
}

/// Istio's fault abort with `grpcStatus` answers a gRPC call the gRPC
/// way: HTTP 200, `grpc-status` 14 (UNAVAILABLE), flag FI.
#[test]
fn grpc_fault_abort_through_a_sidecar() {
    let mesh = http2_mesh("grpcfi", 131);
    let out = mesh.apply_yaml("abort.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: httpbin\nspec:\n  hosts:\n  - httpbin\n  http:\n  - fault:\n      abort:\n        grpcStatus: UNAVAILABLE\n        percentage:\n          value: 100\n    route:\n    - destination:\n        host: httpbin\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let call = [
        "--http2-prior-knowledge",
        "-X",
        "POST",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "http://httpbin:8000/grpc.health.v1.Health/Check",
    ];
    wait_until("the abort to apply", Duration::from_secs(10), || {
        head(&mesh, &call).contains("grpc-status: 14")
    });
    let h = head(&mesh, &call);
    assert!(h.starts_with("HTTP/2 200"), "{h}");
    assert!(h.contains("content-type: application/grpc"), "{h}");
    std::thread::sleep(Duration::from_millis(1500)); // one access-log flush
    let log = mesh.log("curl.sidecar.log");
    assert!(log.contains(" 200 FI "), "{log}");
}

/// A WebSocket upgrade from the curl pod to httpbin's `/websocket/echo`
/// crosses both sidecars: 101, then bytes echoed on the same connection.
#[test]
fn websocket_through_sidecars() {
    let mesh = Mesh::up_example("httpbin", "ws", 132, 18132);
    let script = r#"
import socket, sys
s = socket.create_connection(("httpbin", 8000), timeout=5)
s.sendall(b"GET /websocket/echo HTTP/1.1\r\nHost: httpbin:8000\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(1)
    if not chunk:
        break
    head += chunk
print(head.split(b"\r\n")[0].decode())
for msg in [b"hello", b"mesh"]:
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        got += s.recv(len(msg) - len(got))
    print(got.decode())
"#;
    let mut last = String::new();
    wait_until("the upgrade to go through", Duration::from_secs(10), || {
        let out = pod_python(&mesh, "curl", script);
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        last.starts_with("HTTP/1.1 101")
    });
    assert_eq!(
        last.lines().collect::<Vec<_>>(),
        ["HTTP/1.1 101 Switching Protocols", "hello", "mesh"],
        "{last}"
    );
    // Both sidecars' metrics name both workloads and their identities,
    // as for any request: the upgrade carries the metadata exchange.
    let has = |pods: &[&str], want: &[&str]| {
        pods.iter().any(|pod| {
            let page = scrape(&format!("198.18.132.{pod}"));
            !metric_lines(&page, "istio_requests_total", want).is_empty()
        })
    };
    let client = [
        "reporter=\"source\"",
        "response_code=\"101\"",
        "destination_workload=\"httpbin-v",
        "destination_principal=\"spiffe://cluster.local/ns/default/sa/httpbin\"",
    ];
    let server = [
        "reporter=\"destination\"",
        "response_code=\"101\"",
        "source_workload=\"curl\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/curl\"",
    ];
    wait_until("both sidecars' 101 series", Duration::from_secs(5), || {
        has(&["12"], &client) && has(&["10", "11"], &server)
    });
}

/// A service port that declares no protocol (`web` is not one Istio
/// knows) is sniffed: HTTP/1.1 and h2c clients get HTTP routing, so a
/// VirtualService applies to it.
#[test]
fn undeclared_ports_are_sniffed_for_http() {
    let mesh = Mesh::up_edited("httpbin", "sniff", 133, 18133, |m| {
        m.replace("{name: http, port: 8000", "{name: web, port: 8000")
    });
    let url = "http://httpbin:8000/get";
    wait_until("the mesh to serve", Duration::from_secs(10), || {
        head(&mesh, &[url]).contains(" 200")
    });
    let h2 = head(&mesh, &["--http2-prior-knowledge", url]);
    assert!(h2.starts_with("HTTP/2 200"), "{h2}");
    let out = mesh.apply_yaml("teapot.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: httpbin\nspec:\n  hosts:\n  - httpbin\n  http:\n  - fault:\n      abort:\n        httpStatus: 418\n        percentage:\n          value: 100\n    route:\n    - destination:\n        host: httpbin\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the route to apply", Duration::from_secs(10), || {
        head(&mesh, &[url]).starts_with("HTTP/1.1 418")
    });
    std::thread::sleep(Duration::from_millis(1500)); // one access-log flush
    let log = mesh.log("curl.sidecar.log");
    assert!(log.contains("\"GET /get HTTP/1.1\" 418 FI"), "{log}");
}
