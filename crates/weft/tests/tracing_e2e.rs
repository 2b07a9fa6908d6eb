//! End-to-end: Istio's "Zipkin" distributed-tracing task on Bookinfo. A
//! Zipkin collector (`weft demo zipkin`, Zipkin's v2 API) runs in
//! `istio-system` without a sidecar; the mesh config names it as an
//! extension provider and a mesh-wide Telemetry turns tracing on at 100%,
//! as the task does. Loading the product page through the ingress gateway
//! gives one trace whose spans come from the gateway, productpage, details
//! and reviews, each linked to its parent, found by the query the Zipkin
//! UI makes. Then the same through Istio's OpenTelemetry task: the
//! provider switched to OTLP over HTTP, a Python receiver decoding with
//! `opentelemetry-proto` gets the call tree productpage → reviews →
//! ratings with W3C context; then a provider without `http`, which Istio
//! exports over gRPC, and the same receiver's grpcio `TraceService` gets
//! the spans. Subnets 148 and 149, ingress ports 18148 and 18149.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

/// Bookinfo plus Istio's Zipkin addon and an OTLP receiver.
fn with_collectors(mesh: String) -> String {
    let mesh = with_zipkin(mesh);
    let receiver = &format!(
        "{}/tests/otlp_receiver.py",
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
    );
    let otel = format!(
        "- name: otel-collector
  namespace: observability
  labels: {{app: otel-collector, sidecar.istio.io/inject: \"false\"}}
  command: [python3, \"{receiver}\"]
  ports: [{{containerPort: 4318, name: http-otlp}}, {{containerPort: 4317, name: grpc-otlp}}]
"
    );
    let otel_service = "- name: otel-collector
  namespace: observability
  ports: [{name: http-otlp, port: 4318}, {name: grpc-otlp, port: 4317}]
  selector: {app: otel-collector}
";
    mesh.replacen(
        "services:\n",
        &format!("{otel}services:\n{otel_service}"),
        1,
    )
}

const MESH_CONFIG: &str = "accessLogFile: /dev/stdout
extensionProviders:
- name: zipkin
  zipkin:
    service: zipkin.istio-system.svc.cluster.local
    port: 9411
";

/// The same with an OpenTelemetry provider over OTLP/HTTP, as Istio's
/// OpenTelemetry task declares it.
const OTEL: &str = "- name: otel-tracing
  opentelemetry:
    port: 4318
    service: otel-collector.observability.svc.cluster.local
    http:
      path: /v1/traces
- name: otel-grpc
  opentelemetry:
    port: 4317
    service: otel-collector.observability.svc.cluster.local
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
    let mesh = Mesh::up_edited("bookinfo", "trace", 148, 18148, with_collectors);
    ok(mesh.apply_yaml("mesh-config.yaml", &istio_config_map(MESH_CONFIG)));
    ok(mesh.apply_yaml("telemetry.yaml", TRACE_EVERYTHING));
    let page = format!("{}/productpage", mesh.ingress);
    // A trace made once every proxy had the Telemetry, and had flushed
    // its spans, has every hop: load pages until Zipkin holds one.
    let hops = [
        "istio-ingressgateway.istio-system",
        "productpage.default",
        "details.default",
        "reviews.default",
    ];
    // Each proxy reports its spans in its own batches: a trace is whole
    // once every span's parent has arrived too (a client span is reported
    // after the server span it caused).
    let whole = |t: &Vec<Value>| {
        let ids: Vec<&str> = t.iter().filter_map(|s| s["id"].as_str()).collect();
        t.iter()
            .filter_map(|s| s["parentId"].as_str())
            .all(|p| ids.contains(&p))
    };
    let mut found = None;
    wait_until("a trace through every hop", Duration::from_secs(40), || {
        assert_eq!(curl(&page, &[]).0, 200);
        let traces =
            zipkin_api("/api/v2/traces?serviceName=istio-ingressgateway.istio-system&limit=10");
        found = traces
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_array().unwrap().clone())
            .find(|t| hops.iter().all(|h| t.iter().any(|s| service(s) == *h)) && whole(t));
        found.is_some()
    });
    let full = found.unwrap();
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

#[test]
fn istios_opentelemetry_task_on_bookinfo() {
    let mesh = Mesh::up_edited("bookinfo", "otel", 149, 18149, with_collectors);
    ok(mesh.apply_yaml(
        "mesh-config.yaml",
        &istio_config_map(&format!("{MESH_CONFIG}{OTEL}")),
    ));
    ok(mesh.apply_yaml(
        "telemetry.yaml",
        &TRACE_EVERYTHING.replace("name: zipkin", "name: otel-tracing"),
    ));
    let page = format!("{}/productpage", mesh.ingress);
    // Reviews v2 and v3 call ratings; v1 does not: load until a trace has
    // ratings in it.
    // The traces through ratings, newest first: those made while the
    // Telemetry was reaching the proxies may miss some hops.
    let with_ratings = || {
        let spans = otlp_spans_of(149);
        let mut traces: Vec<String> = spans
            .iter()
            .rev()
            .filter(|s| s["service"] == "ratings.default")
            .map(|s| s["trace"].as_str().unwrap().to_string())
            .collect();
        traces.dedup();
        traces
            .into_iter()
            .map(|trace| {
                spans
                    .iter()
                    .filter(|s| s["trace"] == trace)
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    // Spans arrive as each proxy flushes: wait until a whole path up from
    // ratings' SERVER span is there, through every hop.
    let mut found = None;
    wait_until(
        "a whole trace through ratings",
        Duration::from_secs(40),
        || {
            assert_eq!(curl(&page, &[]).0, 200);
            let details = |t: &Vec<Value>| {
                t.iter()
                    .any(|s| s["service"] == "details.default" && s["kind"] == 2)
            };
            found = with_ratings()
                .into_iter()
                .filter(details)
                .find_map(|t| walk(&t).filter(|p| p.len() == 4).map(|path| (t, path)));
            found.is_some()
        },
    );
    let (trace, path) = found.unwrap();
    assert_eq!(
        path,
        [
            "ratings.default",
            "reviews.default",
            "productpage.default",
            "istio-ingressgateway.istio-system"
        ],
        "{trace:#?}"
    );
    let root = trace
        .iter()
        .find(|s| s["parent"].as_str() == Some(""))
        .unwrap();
    // The gateway is a hop of its own (istiod's spawn_upstream_span): a
    // SERVER span for the request, and a CLIENT child for productpage.
    assert_eq!(root["kind"], 2, "the gateway's request is a SERVER span");
    let upstream = trace
        .iter()
        .find(|s| s["parent"] == root["id"])
        .unwrap_or_else(|| panic!("{trace:#?}"));
    assert_eq!(upstream["kind"], 3, "{upstream:#?}");
    assert_eq!(upstream["service"], "istio-ingressgateway.istio-system");
    assert_eq!(
        upstream["name"],
        "router outbound|9080||productpage.default.svc.cluster.local egress"
    );
    let details = trace
        .iter()
        .find(|s| s["service"] == "details.default" && s["kind"] == 2)
        .unwrap_or_else(|| panic!("{trace:#?}"));
    assert_eq!(details["name"], "details.default.svc.cluster.local:9080/*");
    assert_eq!(details["attributes"]["http.status_code"], "200");
    assert_eq!(details["attributes"]["istio.canonical_service"], "details");
    assert!(details["end"].as_u64() > details["start"].as_u64());
    assert!(trace.iter().all(|s| s["transport"] == "http"));

    // Istio's default for an `opentelemetry` provider without `http`:
    // OTLP over gRPC, to the receiver's TraceService on 4317.
    ok(mesh.apply_yaml(
        "telemetry.yaml",
        &TRACE_EVERYTHING.replace("name: zipkin", "name: otel-grpc"),
    ));
    wait_until("spans over gRPC", Duration::from_secs(40), || {
        assert_eq!(curl(&page, &[]).0, 200);
        otlp_spans_of(149).iter().any(|s| {
            s["transport"] == "grpc"
                && s["service"] == "productpage.default"
                && s["kind"] == 2
                && s["attributes"]["istio.canonical_service"] == "productpage"
        })
    });
}

/// The OTLP receiver's spans (the mesh's tenth pod), none while it starts.
fn otlp_spans_of(subnet: u8) -> Vec<Value> {
    let (code, body) = curl(&format!("http://198.18.{subnet}.19:4318/spans"), &[]);
    if code != 200 {
        return Vec::new();
    }
    serde_json::from_str::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The services from ratings' SERVER span up to the root, each parent in
/// the trace (None while one is missing or the root is not the gateway's).
fn walk(trace: &[Value]) -> Option<Vec<String>> {
    let mut span = trace
        .iter()
        .find(|s| s["service"] == "ratings.default" && s["kind"] == 2)?;
    let mut path = vec![service_of(span)];
    while let Some(parent) = span["parent"].as_str().filter(|p| !p.is_empty()) {
        span = trace.iter().find(|s| s["id"] == parent)?;
        path.push(service_of(span));
    }
    path.dedup();
    (path.last().map(String::as_str) == Some("istio-ingressgateway.istio-system")).then_some(path)
}

fn service_of(span: &Value) -> String {
    span["service"].as_str().unwrap_or_default().to_string()
}
