//! End-to-end: mesh mTLS on a `weft up` mesh of Istio's security-task
//! layout (`examples/security`: httpbin and curl in foo and bar with
//! sidecars, curl in legacy without), with Istio's YAML as its tasks
//! publish it: "Mutual TLS Migration" (PERMISSIVE by default, STRICT per
//! namespace, then mesh-wide), the wire seen by tcpdump, the SVID seen by
//! openssl, an AuthorizationPolicy on principals and namespaces, and
//! certificates rotating under steady load with no failed request.
//! Subnets 166 and 152, ingress ports 18166 and 18152.

mod support;

use std::time::Duration;

use support::*;

const STRICT_FOO: &str = r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: "default"
  namespace: "foo"
spec:
  mtls:
    mode: STRICT
"#;

const STRICT_MESH: &str = r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: "default"
  namespace: "istio-system"
spec:
  mtls:
    mode: STRICT
"#;

const ONLY_BAR: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/bar/sa/curl"]
  - from:
    - source:
        namespaces: ["legacy"]
"#;

/// The Istio task's matrix: "curl.FROM to httpbin.TO: CODE" for each pair.
fn matrix(mesh: &Mesh) -> Vec<String> {
    let mut out = Vec::new();
    for from in ["foo", "bar", "legacy"] {
        for to in ["foo", "bar"] {
            let url = format!("http://httpbin.{to}:8000/ip");
            let body = pod_curl(
                mesh,
                &format!("curl-{from}"),
                &["-o", "/dev/null", "-w", "%{http_code}", &url],
            );
            out.push(format!("curl.{from} to httpbin.{to}: {body}"));
        }
    }
    out
}

fn expect(codes: [&str; 6]) -> Vec<String> {
    let pairs = [
        ("foo", "foo"),
        ("foo", "bar"),
        ("bar", "foo"),
        ("bar", "bar"),
        ("legacy", "foo"),
        ("legacy", "bar"),
    ];
    pairs
        .iter()
        .zip(codes)
        .map(|((f, t), c)| format!("curl.{f} to httpbin.{t}: {c}"))
        .collect()
}

/// What crossed the mesh bridge on port 8080 while `traffic` ran.
fn captured(mesh: &Mesh, traffic: impl FnOnce()) -> String {
    let file = std::env::temp_dir().join(format!("weft-mtls-{}.pcap.txt", std::process::id()));
    let out = std::fs::File::create(&file).unwrap();
    let mut dump = std::process::Command::new("tcpdump")
        .args([
            "-i",
            &format!("wb-{}", mesh.name),
            "-A",
            "-nn",
            "-l",
            "-s",
            "0",
            "tcp port 8080",
        ])
        .stdout(out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tcpdump must be installed (scripts/setup.sh installs it)");
    std::thread::sleep(Duration::from_millis(700));
    traffic();
    std::thread::sleep(Duration::from_millis(500));
    let _ = dump.kill();
    let _ = dump.wait();
    let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).to_string();
    let _ = std::fs::remove_file(&file);
    text
}

#[test]
fn mutual_tls_migration_the_wire_and_identities() {
    let mesh = Mesh::up_example("security", "mtls", 166, 18166);

    // PERMISSIVE by default: everyone reaches everyone.
    assert_eq!(matrix(&mesh), expect(["200"; 6]));

    // Over mTLS the server's sidecar tells httpbin who called (Istio's
    // auto mTLS task looks for this header); a plaintext caller cannot
    // forge it.
    let headers = pod_curl(&mesh, "curl-foo", &["http://httpbin.foo:8000/headers"]);
    let xfcc = "By=spiffe://cluster.local/ns/foo/sa/httpbin;Hash=";
    assert!(headers.contains(xfcc), "{headers}");
    assert!(
        headers.contains("Subject=\\\"\\\";URI=spiffe://cluster.local/ns/foo/sa/curl"),
        "{headers}"
    );
    let forged = pod_curl(
        &mesh,
        "curl-legacy",
        &[
            "-H",
            "X-Forwarded-Client-Cert: By=me;URI=spiffe://cluster.local/ns/foo/sa/admin",
            "http://httpbin.foo:8000/headers",
        ],
    );
    assert!(forged.contains("\"Host\""), "{forged}");
    assert!(
        !forged.to_lowercase().contains("forwarded-client-cert"),
        "{forged}"
    );

    // The wire: between sidecars, TLS; from legacy, plaintext HTTP.
    let wire = captured(&mesh, || {
        pod_curl(&mesh, "curl-foo", &["http://httpbin.bar:8000/headers"]);
    });
    assert!(wire.contains("8080"), "tcpdump saw nothing:\n{wire}");
    assert!(
        !wire.contains("GET /headers"),
        "plaintext between sidecars:\n{wire}"
    );
    let wire = captured(&mesh, || {
        pod_curl(&mesh, "curl-legacy", &["http://httpbin.bar:8000/headers"]);
    });
    assert!(
        wire.contains("GET /headers"),
        "the capture sees plaintext when there is some:\n{wire}"
    );

    // STRICT in foo: legacy is refused there (curl: 000, exit 56).
    ok(mesh.apply_yaml("strict-foo.yaml", STRICT_FOO));
    wait_until("legacy refused by foo", Duration::from_secs(20), || {
        matrix(&mesh) == expect(["200", "200", "200", "200", "000", "200"])
    });
    // Mesh-wide STRICT: legacy is refused everywhere.
    ok(mesh.apply_yaml("strict-mesh.yaml", STRICT_MESH));
    wait_until("legacy refused everywhere", Duration::from_secs(20), || {
        matrix(&mesh) == expect(["200", "200", "200", "200", "000", "000"])
    });

    // Identities: only bar's curl (a principal) and legacy's namespace
    // may call httpbin.foo; legacy has no identity, so it still cannot.
    ok(mesh.apply_yaml("only-bar.yaml", ONLY_BAR));
    wait_until("principals decide", Duration::from_secs(20), || {
        matrix(&mesh) == expect(["403", "200", "200", "200", "000", "000"])
    });

    // The SVID: weft proxy-config secret, openssl verify, openssl s_client.
    let table = ok(weft(&[
        "proxy-config",
        "secret",
        "httpbin-foo.foo",
        "--mesh",
        "mtls",
    ]));
    assert!(
        table.contains("spiffe://cluster.local/ns/foo/sa/httpbin"),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(weft(&[
        "proxy-config",
        "secret",
        "httpbin-foo.foo",
        "--mesh",
        "mtls",
        "-o",
        "json",
    ])))
    .unwrap();
    let dir = std::env::temp_dir().join(format!("weft-mtls-svid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = |i: usize| json["certificates"][i]["pem"].as_str().unwrap().to_string();
    let (chain, roots) = (
        write(&dir, "chain.pem", &pem(0)),
        write(&dir, "roots.pem", &pem(1)),
    );
    let verify = std::process::Command::new("openssl")
        .args([
            "verify",
            "-CAfile",
            roots.to_str().unwrap(),
            chain.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains(": OK"),
        "{verify:?}"
    );
    let seen = in_pod(&mesh, "curl-legacy", &[
        "sh", "-c",
        "openssl s_client -connect 198.18.166.10:8080 -alpn istio </dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName",
    ]);
    let seen = String::from_utf8_lossy(&seen.stdout);
    assert!(
        seen.contains("URI:spiffe://cluster.local/ns/foo/sa/httpbin"),
        "{seen}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The serial column of `weft proxy-config secret`'s first row.
fn serial(table: &str) -> String {
    table
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .nth(5)
        .unwrap_or("")
        .to_string()
}

/// Istio's rotation check, scaled: its 1-minute certificates under 10
/// minutes of load cross ~20 rotations; 6 s certificates renew every
/// ~3 s, so 70 s of steady requests between two sidecars cross as many
/// on both ends, with none failed. Subnet 152, ingress port 18152.
#[test]
fn twenty_rotations_under_steady_load_fail_nothing() {
    let mesh = Mesh::up_with(
        "security",
        "rotate",
        152,
        18152,
        |m| m,
        &["--workload-cert-ttl", "6s"],
    );
    let secret = || {
        ok(weft(&[
            "proxy-config",
            "secret",
            "httpbin-foo.foo",
            "--mesh",
            "rotate",
        ]))
    };
    let before = serial(&secret());
    let load = in_pod(&mesh, "curl-bar", &[
        "sh", "-c",
        "for i in $(seq 1 700); do curl -s -o /dev/null -m 5 -w '%{http_code}\\n' http://httpbin.foo:8000/ip; sleep 0.1; done",
    ]);
    let codes = String::from_utf8_lossy(&load.stdout).to_string();
    let failed: Vec<&str> = codes.lines().filter(|c| *c != "200").collect();
    assert_eq!(codes.lines().count(), 700);
    assert!(failed.is_empty(), "failed across rotations: {failed:?}");
    assert_ne!(before, serial(&secret()), "the certificate was renewed");
    for sidecar in ["httpbin-foo.sidecar.log", "curl-bar.sidecar.log"] {
        let installed = mesh
            .log(sidecar)
            .matches("workload certificate installed")
            .count();
        assert!(installed >= 20, "{installed} certificates in {sidecar}");
    }
}
