//! End-to-end: the mesh's edges. Pods outside the mesh
//! (`sidecar.istio.io/inject: "false"`): no sidecar, no capture, services
//! reached as kube-proxy reaches them. Subnets 160–169, ingress ports
//! 18160–18169.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::*;

/// Bookinfo plus Istio's `sleep` sample without a sidecar, and a legacy
/// httpbin without one.
fn with_pods_outside_the_mesh(mesh_yaml: String) -> String {
    let outside = "- name: sleep\n  labels: {app: sleep, sidecar.istio.io/inject: \"false\"}\n  command: [sleep, infinity]\n- name: legacy\n  labels: {app: legacy}\n  annotations: {sidecar.istio.io/inject: \"false\"}\n  command: [weft, demo, httpbin, --listen, \"0.0.0.0:8000\"]\n  ports: [{containerPort: 8000, name: http}]\nservices:\n- name: legacy\n  ports: [{name: http, port: 8000}]\n  selector: {app: legacy}\n";
    mesh_yaml.replacen("services:\n", outside, 1)
}

/// The reviews version of each of `n` calls from `workload`'s pod.
fn reviews_from(mesh: &Mesh, workload: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let body = pod_curl(mesh, workload, &["http://reviews:9080/reviews/0"]);
            ["reviews-v1", "reviews-v2", "reviews-v3"]
                .into_iter()
                .find(|v| body.contains(v))
                .unwrap_or("none")
                .to_string()
        })
        .collect()
}

/// Istio's behaviour for pods without a sidecar: a VirtualService is
/// applied by the client's proxy, so a pod outside the mesh is not routed
/// by it (kube-proxy spreads its calls over every version), while a meshed
/// pod is; a meshed pod reaches a service outside the mesh in plaintext.
#[test]
fn pods_outside_the_mesh_are_not_routed_by_virtual_services() {
    let mesh = Mesh::up_edited(
        "bookinfo",
        "outside",
        160,
        18160,
        with_pods_outside_the_mesh,
    );
    let all_v1 = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
    .join("../../examples/bookinfo/routes/virtual-service-all-v1.yaml");
    mesh.apply_ok(&all_v1);
    wait_until(
        "reviews v1 only from the mesh",
        Duration::from_secs(20),
        || {
            reviews_from(&mesh, "productpage-v1", 5)
                .iter()
                .all(|v| v == "reviews-v1")
        },
    );
    let meshed = reviews_from(&mesh, "productpage-v1", 12);
    assert!(meshed.iter().all(|v| v == "reviews-v1"), "{meshed:?}");
    let outside = reviews_from(&mesh, "sleep", 30);
    let versions: std::collections::BTreeSet<&String> = outside.iter().collect();
    assert!(versions.len() >= 2, "kube-proxy spreads calls: {outside:?}");
    // The servers' sidecars took the plaintext calls from the sleep pod.
    let registry =
        std::fs::read_to_string(format!("/run/weft/{}/registry.json", mesh.name)).unwrap();
    let registry: serde_json::Value = serde_json::from_str(&registry).unwrap();
    let sleep_ip = registry["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "sleep")
        .and_then(|w| w["ip"].as_str())
        .unwrap()
        .to_string();
    // Access logs are flushed once a second.
    wait_until(
        &format!("inbound access-log lines from {sleep_ip} on two versions or more"),
        Duration::from_secs(10),
        || {
            ["reviews-v1", "reviews-v2", "reviews-v3"]
                .iter()
                .map(|w| mesh.log(&format!("{w}.sidecar.log")))
                .filter(|log| log.contains(&format!("{sleep_ip}:")))
                .count()
                >= 2
        },
    );
    // Meshed → outside: through the client's sidecar, in plaintext.
    let body = pod_curl(&mesh, "productpage-v1", &["http://legacy:8000/get"]);
    assert!(body.contains("\"url\""), "{body}");
    // Outside → outside, by the service's cluster IP.
    let body = pod_curl(&mesh, "sleep", &["http://legacy:8000/get"]);
    assert!(body.contains("\"url\""), "{body}");
    // The pods outside run no proxy and have no capture rules.
    for pod in ["sleep", "legacy"] {
        let ns = mesh.netns(pod);
        let rules = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "iptables-save", "-t", "nat"])
            .output()
            .unwrap();
        let rules = String::from_utf8_lossy(&rules.stdout);
        assert!(!rules.contains("ISTIO_REDIRECT"), "{pod}: {rules}");
        assert!(rules.contains("KUBE-SERVICES"), "{pod}: {rules}");
        assert!(mesh.log(&format!("{pod}.sidecar.log")).is_empty());
    }
}
