//! End-to-end: a plugged-in CA (Istio's file layout, made with openssl as
//! Istio's "Plug in CA Certificates" task makes them) and a root rotation
//! under steady load, the failure Istio and Linkerd users hit most:
//! trust the new root beside the old, sign with the new, then drop the
//! old, each phase begun once every proxy holds the previous one's
//! bundle, as an operator must. Workload certificates live 20 s (renewed
//! every ~10 s); not one request between sidecars may fail. Subnet
//! 169, ingress port 18169.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

/// A self-signed root CA `name` (EC P-256) in `dir`: `<name>.pem`, `<name>.key`.
fn root(dir: &Path, name: &str) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args([
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "30",
        ])
        .args(["-subj", &format!("/O=Istio/CN=Root CA {name}")])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args([
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ])
        .output()
        .expect("openssl must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Puts the CA files in place, each by an atomic rename.
fn plug(ca: &Path, keys: &Path, signer: &str, roots: &[&str]) {
    let read = |f: String| std::fs::read_to_string(keys.join(f)).unwrap();
    let bundle: String = roots.iter().map(|r| read(format!("{r}.pem"))).collect();
    for (file, text) in [
        ("root-cert.pem", bundle),
        ("ca-key.pem", read(format!("{signer}.key"))),
        ("ca-cert.pem", read(format!("{signer}.pem"))),
    ] {
        let tmp = ca.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, ca.join(file)).unwrap();
    }
}

fn issuer_of(pod: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(&ok(weft(&[
        "proxy-config",
        "secret",
        pod,
        "--mesh",
        "carot",
        "-o",
        "json",
    ])))
    .unwrap();
    let roots = json["certificates"][1]["certificates"]
        .as_array()
        .unwrap()
        .len();
    format!(
        "{} roots={roots}",
        json["certificates"][0]["certificates"][0]["issuer"]
            .as_str()
            .unwrap()
    )
}

#[test]
fn a_root_rotation_under_load_fails_no_request() {
    let keys = std::env::temp_dir().join(format!("weft-ca-rotation-{}", std::process::id()));
    let ca = keys.join("cacerts");
    std::fs::create_dir_all(&ca).unwrap();
    root(&keys, "a");
    root(&keys, "b");
    plug(&ca, &keys, "a", &["a"]);
    let mesh = Mesh::up_with(
        "security",
        "carot",
        169,
        18169,
        |m| m,
        &[
            "--ca-dir",
            ca.to_str().unwrap(),
            "--workload-cert-ttl",
            "20s",
        ],
    );
    assert_eq!(
        issuer_of("httpbin-foo.foo"),
        "O=Istio, CN=Root CA a roots=1"
    );

    // Steady load between sidecars for the whole rotation (~90 s).
    let netns = mesh.netns("curl-bar");
    let load = std::thread::spawn(move || {
        let out = Command::new("ip")
            .args(["netns", "exec", &netns, "sh", "-c"])
            .arg("for i in $(seq 1 600); do curl -s -o /dev/null -m 5 -w '%{http_code}\\n' http://httpbin.foo:8000/ip; sleep 0.1; done")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    });
    // Each phase waits, as an operator does, until every proxy holds
    // what the phase gives (renewals every ~10 s): moving on before one
    // has the new bundle is what breaks rotations.
    let proxies = [
        "httpbin-foo.foo",
        "httpbin-bar.bar",
        "curl-foo.foo",
        "curl-bar.bar",
        "ext-authz.foo",
        "istio-ingressgateway.istio-system",
    ];
    let phase = |state: &str| {
        wait_until(state, Duration::from_secs(60), || {
            proxies.iter().all(|pod| issuer_of(pod) == state)
        })
    };
    // 1. Trust both roots; still signed by the old one.
    plug(&ca, &keys, "a", &["a", "b"]);
    phase("O=Istio, CN=Root CA a roots=2");
    // 2. Sign with the new root.
    plug(&ca, &keys, "b", &["a", "b"]);
    phase("O=Istio, CN=Root CA b roots=2");
    // 3. Drop the old root.
    plug(&ca, &keys, "b", &["b"]);
    phase("O=Istio, CN=Root CA b roots=1");

    let codes = load.join().unwrap();
    let failed: Vec<&str> = codes.lines().filter(|c| *c != "200").collect();
    assert!(
        codes.lines().count() >= 300,
        "{} requests",
        codes.lines().count()
    );
    assert!(
        failed.is_empty(),
        "{} failed of {}: {failed:?}",
        failed.len(),
        codes.lines().count()
    );
    // After the rotation, traffic still flows.
    assert_eq!(
        pod_curl_status(&mesh, "curl-foo", &["http://httpbin.bar:8000/ip"]).0,
        200
    );
    let _ = std::fs::remove_dir_all(&keys);
}
