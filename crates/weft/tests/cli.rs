//! The CLI's offline commands, run as a user would: validate and analyze.

use std::path::{Path, PathBuf};
use std::process::Command;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const WEFT_PROXY: &str = env!("CARGO_BIN_EXE_weft-proxy");

fn example() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"))
        .join("../../examples/bookinfo")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(example()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    dir
}

#[test]
fn the_example_analyzes_clean() {
    let out = Command::new(WEFT)
        .args(["analyze", "-A", "-f"])
        .arg(example())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("No validation issues"), "{stdout}");
}

#[test]
fn analyze_reports_codes_and_exits_79() {
    let dir = scratch("analyze");
    std::fs::write(
        dir.join("bad.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  gateways: [no-such-gateway]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v9}\n",
    )
    .unwrap();
    let out = Command::new(WEFT)
        .args(["analyze", "-o", "json", "-f"])
        .arg(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        out.status.code(),
        Some(79),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let messages: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let texts: Vec<String> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{} {}", m["code"], m["text"]))
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("IST0101") && t.contains("no-such-gateway")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("IST0101") && t.contains("reviews+v9")),
        "{texts:?}"
    );
    let origin = &messages[0]["origin"];
    assert!(
        origin["file"].as_str().unwrap().ends_with("bad.yaml") && origin["line"] == 1,
        "{origin}"
    );
}

#[test]
fn warnings_fail_only_with_a_lower_threshold() {
    let dir = scratch("threshold");
    let pa = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec:\n  selector: {matchLabels: {app: nothing}}\n  mtls: {mode: STRICT}\n";
    std::fs::write(dir.join("pa.yaml"), pa).unwrap();
    let run = |threshold: &str| {
        Command::new(WEFT)
            .args(["analyze", "--failure-threshold", threshold, "-f"])
            .arg(&dir)
            .output()
            .unwrap()
    };
    let default = run("error");
    let strict = run("warning");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        default.status.success(),
        "a warning alone passes the default threshold"
    );
    assert_eq!(strict.status.code(), Some(79));
    assert!(String::from_utf8_lossy(&strict.stdout).contains("IST0127"));
}

#[test]
fn validate_names_file_line_field() {
    let dir = scratch("validate");
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: reviews\n  subsets:\n  - name: v1\n  - name: v1\n").unwrap();
    let out = Command::new(WEFT)
        .args(["validate", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.yaml:8:5: error: DestinationRule default/r: spec.subsets[1].name"),
        "{err}"
    );
}

#[test]
fn analyze_reads_kubernetes_manifests_as_the_registry() {
    let dir = std::env::temp_dir().join(format!("weft-cli-kube-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("app.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec:\n  ports: [{port: 9080, name: http}]\n  selector: {app: reviews}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: reviews-v1}\nspec:\n  selector: {matchLabels: {app: reviews, version: v1}}\n  template:\n    metadata: {labels: {app: reviews, version: v1}}\n    spec:\n      containers: [{name: reviews, image: reviews:v1, ports: [{containerPort: 9080}]}]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("dr.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v4, labels: {version: v4}}\n",
    )
    .unwrap();
    let out = Command::new(WEFT)
        .args(["analyze", "-f"])
        .arg(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(79), "{stdout}");
    assert!(
        stdout.contains("IST0173") && stdout.contains("Subset v4"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("Subset v1"),
        "v1 selects the Deployment's pods: {stdout}"
    );
}

#[test]
fn a_later_file_replaces_a_resource_of_the_same_name() {
    // The three sample routes all define VirtualService default/reviews: as
    // with kubectl apply, each replaces the one before; they do not conflict.
    let out = Command::new(WEFT)
        .args(["analyze", "-f"])
        .arg(example())
        .arg("-f")
        .arg(example().join("routes"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains("IST0109"), "{stdout}");
    assert!(
        stderr.contains("virtual-service-reviews-v3.yaml:1 replaces the one at"),
        "{stderr}"
    );
}

#[test]
fn get_reads_files_offline() {
    let out = Command::new(WEFT)
        .args(["get", "dr", "reviews", "-o", "json", "-f"])
        .arg(example())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let items: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let items = items.as_array().unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(
        items[0]["metadata"]["namespace"], "default",
        "namespace filled in"
    );
    assert_eq!(items[0]["spec"]["subsets"].as_array().unwrap().len(), 3);
    let unknown = Command::new(WEFT)
        .args(["get", "nosuchkind", "-f"])
        .arg(example())
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown kind \"nosuchkind\""));
}

/// `weft-proxy` and `weft proxy` take the same arguments and refuse bad
/// ones with the same words, before connecting anywhere.
/// kubectl's flags go before or after the secret's kind: Istio's tasks
/// write `create secret -n istio-system generic …`.
#[test]
fn create_secret_takes_its_namespace_before_or_after_the_kind() {
    let dir = std::env::temp_dir().join(format!("weft-cli-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, "not checked for a generic Secret\n").unwrap();
    let from = format!("--from-file=ca.crt={}", ca.display());
    for args in [
        vec![
            "-n",
            "istio-system",
            "generic",
            "client-credential",
            &from,
            "--dry-run",
        ],
        vec![
            "generic",
            "client-credential",
            &from,
            "--dry-run",
            "-n",
            "istio-system",
        ],
    ] {
        let out = Command::new(WEFT)
            .args(["create", "secret"])
            .args(&args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("namespace: istio-system"),
            "{args:?}: {stdout}"
        );
        assert!(stdout.contains("name: client-credential"), "{stdout}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_proxy_binary_takes_weft_proxys_arguments() {
    let bad = [
        "--xds",
        "http://127.0.0.1:1",
        "--node-id",
        "sidecar~x",
        "--metadata",
        "[1]",
    ];
    let alone = Command::new(WEFT_PROXY).args(bad).output().unwrap();
    let mut argv = vec!["proxy"];
    argv.extend(bad);
    let inside = Command::new(WEFT).args(argv).output().unwrap();
    for out in [&alone, &inside] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("node metadata must be a JSON object"),
            "{stderr}"
        );
    }
    let help = Command::new(WEFT_PROXY).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--node-id") && help.contains("--token-file"),
        "{help}"
    );
}

/// SIGTERM drains the proxy, which exits at once with no connection to
/// wait for (as a pod's sidecar does when the pod is deleted), with the
/// exit status of a clean stop.
#[test]
fn the_proxy_drains_and_exits_on_sigterm() {
    let admin = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let mut proxy = Command::new(WEFT_PROXY)
        .args(["--xds", "http://127.0.0.1:1", "--node-id"])
        .arg("sidecar~127.0.0.1~drain.default~default.svc.cluster.local")
        .args(["--admin", &admin.to_string(), "--drain-duration", "30s"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let up = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(admin).is_err() {
        assert!(
            std::time::Instant::now() < up,
            "the admin port never opened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let term = Command::new("kill")
        .args(["-TERM", &proxy.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = proxy.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = proxy.kill();
            panic!("the proxy did not exit within 20 s of SIGTERM (its drain is 30 s)");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut proxy.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("draining before exit"), "{stderr}");
}
