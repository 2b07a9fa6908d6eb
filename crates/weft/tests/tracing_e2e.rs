//! End-to-end: Istio's "Zipkin" distributed-tracing task on Bookinfo. A
//! Zipkin collector (`weft demo zipkin`, Zipkin's v2 API) runs in
//! `istio-system` without a sidecar; the mesh config names it as an
//! extension provider and a mesh-wide Telemetry turns tracing on at 100%,
//! as the task does. Loading the product page through the ingress gateway
//! gives one trace whose spans come from the gateway, productpage, details
//! and reviews, each linked to its parent, found by the query the Zipkin
//! UI makes. Subnet 148, ingress port 18148.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

/// Bookinfo plus Istio's Zipkin addon (`samples/addons/extras/zipkin.yaml`).
fn with_zipkin(mesh: String) -> String {
    let zipkin = "- name: zipkin
  namespace: istio-system
  labels: {app: zipkin, sidecar.istio.io/inject: \"false\"}
  command: [weft, demo, zipkin, --listen, \"0.0.0.0:9411\"]
  ports: [{containerPort: 9411, name: http-query}]
";
    let service = "- name: zipkin
  namespace: istio-system
  ports: [{name: http-query, port: 9411}]
  selector: {app: zipkin}
";
    let mesh = mesh.replacen("services:\n", &format!("{zipkin}services:\n{service}"), 1);
    assert!(mesh.contains("demo, zipkin"), "{mesh}");
    mesh
}

const MESH_CONFIG: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |-
    accessLogFile: /dev/stdout
    extensionProviders:
    - name: zipkin
      zipkin:
        service: zipkin.istio-system.svc.cluster.local
        port: 9411
";

const TELEMETRY: &str = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  tracing:
  - providers:
    - name: zipkin
    randomSamplingPercentage: 100.0
";

fn zipkin_api(path: &str) -> Value {
    // The ninth pod of the mesh (after Bookinfo's and tcp-echo's eight).
    let (code, body) = curl(&format!("http://198.18.148.18:9411{path}"), &[]);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn service(span: &Value) -> &str {
    span["localEndpoint"]["serviceName"].as_str().unwrap_or("")
}

#[test]
fn istios_zipkin_task_on_bookinfo() {
    let mesh = Mesh::up_edited("bookinfo", "trace", 148, 18148, with_zipkin);
    ok(mesh.apply_yaml("mesh-config.yaml", MESH_CONFIG));
    ok(mesh.apply_yaml("telemetry.yaml", TELEMETRY));
    let page = format!("{}/productpage", mesh.ingress);
    wait_until(
        "a productpage trace in Zipkin",
        Duration::from_secs(30),
        || {
            assert_eq!(curl(&page, &[]).0, 200);
            let services = zipkin_api("/api/v2/services");
            services
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == "productpage.default")
        },
    );
    std::thread::sleep(Duration::from_millis(2500)); // the rest of the trace's spans
    let traces = zipkin_api("/api/v2/traces?serviceName=istio-ingressgateway.istio-system&limit=5");
    let full = traces
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_array().unwrap().clone())
        .find(|t| t.iter().any(|s| service(s) == "details.default"))
        .unwrap_or_else(|| panic!("no trace through details: {traces:#}"));
    let services: std::collections::BTreeSet<&str> = full.iter().map(service).collect();
    for want in [
        "istio-ingressgateway.istio-system",
        "productpage.default",
        "details.default",
        "reviews.default",
    ] {
        assert!(services.contains(want), "{want} in {services:?}");
    }
    // One root (the gateway's span); every other span's parent is in the
    // trace.
    let ids: Vec<&str> = full.iter().map(|s| s["id"].as_str().unwrap()).collect();
    let roots: Vec<&Value> = full
        .iter()
        .filter(|s| s.get("parentId").is_none())
        .collect();
    assert_eq!(roots.len(), 1, "{full:#?}");
    assert_eq!(service(roots[0]), "istio-ingressgateway.istio-system");
    for s in &full {
        if let Some(p) = s["parentId"].as_str() {
            assert!(ids.contains(&p), "{s} has a parent outside the trace");
        }
    }
    // Names and tags as Istio's: the service's operation, the route's
    // cluster, the workload's canonical service.
    let details_server = full
        .iter()
        .find(|s| service(s) == "details.default" && s["kind"] == "SERVER")
        .unwrap_or_else(|| panic!("{full:#?}"));
    assert_eq!(
        details_server["name"],
        "details.default.svc.cluster.local:9080/*"
    );
    assert_eq!(details_server["tags"]["istio.canonical_service"], "details");
    assert_eq!(details_server["tags"]["http.status_code"], "200");
    let spans = zipkin_api("/api/v2/spans?serviceName=productpage.default");
    assert!(
        spans
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "productpage.default.svc.cluster.local:9080/*"),
        "{spans}"
    );
}
