//! End-to-end: Istio's standard metrics on Bookinfo, read as an Istio user
//! reads them. Each sidecar's 15090 has both reporters' series with mTLS
//! principals and the metadata exchange's workloads; a real Prometheus
//! (`weft up --with prometheus`, Debian's package) scrapes the mesh with
//! Istio addon's pod labels, and answers the observability task's
//! queries: request rate per service, success rate, p50/p90/p99, TCP
//! bytes, the `response_flags="FI"` series of a fault-injection run with
//! Istio's own YAML, the control plane's `pilot_*`/`citadel_*` series,
//! and every panel of the Grafana dashboards in `addons/grafana`.
//! Subnet 146, ingress port 18146.

mod support;

use std::time::{Duration, Instant};

use support::*;

const PROMETHEUS: &str = "http://198.18.146.1:9090";
const ABORT: &str =
    include_str!("../../../examples/bookinfo/routes/virtual-service-ratings-test-abort.yaml");

/// An instant query's result: (labels, value) per series.
fn query(promql: &str) -> Vec<(serde_json::Value, f64)> {
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "10", &format!("{PROMETHEUS}/api/v1/query")])
        .args(["--data-urlencode", &format!("query={promql}")])
        .output()
        .expect("curl");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{promql}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(v["status"], "success", "{promql}: {v}");
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let value = r["value"][1].as_str().unwrap().parse::<f64>().unwrap();
            (r["metric"].clone(), value)
        })
        .collect()
}

/// Waits until `promql` has a series for which `ok` holds.
fn eventually(
    promql: &str,
    ok: impl Fn(&serde_json::Value, f64) -> bool,
) -> Vec<(serde_json::Value, f64)> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let result = query(promql);
        if result.iter().any(|(m, v)| ok(m, *v)) {
            return result;
        }
        assert!(
            Instant::now() < deadline,
            "{promql}: never as wanted: {result:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Steady traffic for a few scrapes, so rates have two points to span.
fn drive(mesh: &Mesh, seconds: u64, extra: &[&str]) {
    let url = format!("{}/productpage", mesh.ingress);
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        let (code, _) = curl(&url, extra);
        assert!(code == 200, "productpage answered {code}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bookinfo_metrics_in_the_proxies_and_in_prometheus() {
    // ratings says where its own metrics are, as a pod does for Istio's
    // metrics merging.
    let mut mesh = Mesh::up_with(
        "bookinfo",
        "metrics",
        146,
        18146,
        |m| {
            m.replace(
                "  serviceAccount: bookinfo-ratings\n",
                "  serviceAccount: bookinfo-ratings\n  annotations: {prometheus.io/scrape: \"true\", prometheus.io/port: \"9080\", prometheus.io/path: /metrics}\n",
            )
        },
        &["--with", "prometheus"],
    );
    drive(&mesh, 2, &[]);
    // The bridge keeps the MAC it was made with (a pod plugged in later
    // must not change it under the pods already talking to the control
    // plane, which stalled a proxy's ACKs for a minute).
    let mac = std::fs::read_to_string("/sys/class/net/wb-metrics/address").unwrap();
    assert_eq!(mac.trim(), "02:57:c6:12:92:01");

    // productpage-v1 is 198.18.146.10 (pods take addresses in mesh.yaml
    // order). Its server side knows the gateway by the exchange and by
    // its certificate; its client side knows reviews the same way.
    let page = scrape("198.18.146.10");
    let inbound = metric_lines(
        &page,
        "istio_requests_total",
        &[
            r#"reporter="destination""#,
            r#"source_workload="istio-ingressgateway""#,
            r#"source_workload_namespace="istio-system""#,
            r#"source_principal="spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account""#,
            r#"destination_principal="spiffe://cluster.local/ns/default/sa/bookinfo-productpage""#,
            r#"destination_service="productpage.default.svc.cluster.local""#,
            r#"response_code="200""#,
            r#"connection_security_policy="mutual_tls""#,
        ],
    );
    assert_eq!(inbound.len(), 1, "{page}");
    let outbound = metric_lines(
        &page,
        "istio_requests_total",
        &[
            r#"reporter="source""#,
            r#"source_workload="productpage-v1""#,
            r#"destination_service_name="reviews""#,
            r#"destination_principal="spiffe://cluster.local/ns/default/sa/bookinfo-reviews""#,
            r#"destination_app="reviews""#,
        ],
    );
    assert!(!outbound.is_empty(), "{page}");
    assert!(
        metric_lines(
            &page,
            "istio_request_duration_milliseconds_bucket",
            &[r#"le="0.5""#]
        )
        .len()
            >= 2,
        "{page}"
    );

    // Opaque TCP: productpage's pod to tcp-echo, counted on both sides;
    // enough connections that both versions serve some.
    let script = "import socket\nfor _ in range(6):\n    s=socket.create_connection(('tcp-echo', 9000), timeout=5); s.sendall(b'hello mesh\\n'); print(s.recv(200).decode().strip()); s.close()";
    let out = pod_python(&mesh, "productpage-v1", script);
    let replies = String::from_utf8_lossy(&out.stdout).to_string();
    for v in ["tcp-echo-v1 hello mesh", "tcp-echo-v2 hello mesh"] {
        assert!(replies.contains(v), "{v}: {replies} {out:?}");
    }

    // Prometheus scrapes every proxy, each target labelled as the pod.
    // Eight sidecars and the ingress gateway.
    eventually("count(up{job=\"kubernetes-pods\"} == 1)", |_, v| v >= 9.0);
    // Istio's metrics merging: ratings' pod serves its proxy's metrics and
    // its app's own on 15020, one target labelled as the pod.
    let merged = curl("http://198.18.146.15:15020/stats/prometheus", &[]).1;
    for family in [
        "# TYPE istio_requests_total counter",
        "bookinfo_requests_total{workload=\"ratings-v1\"}",
        "istio_agent_scrapes_total",
    ] {
        assert!(merged.contains(family), "{family} in\n{merged}");
    }
    assert!(!merged.contains("# EOF"), "one text-format page");
    eventually(
        "bookinfo_requests_total{pod=\"ratings-v1\",app=\"ratings\",namespace=\"default\"}",
        |_, v| v > 0.0,
    );
    // The proxies' own health and xDS stats, under Envoy's names.
    eventually("count(envoy_server_live == 1)", |_, v| v >= 9.0);
    eventually(
        "count(envoy_cluster_upstream_cx_active{cluster_name=\"xds-grpc\"} == 1)",
        |_, v| v >= 9.0,
    );
    eventually(
        "min(envoy_cluster_manager_cds_update_success) > 0 and min(envoy_listener_manager_lds_update_success) > 0",
        |_, _| true,
    );
    drive(&mesh, 12, &[]);

    // Istio's observability task: request rate per service.
    let rates = eventually(
        "sum(rate(istio_requests_total{reporter=\"destination\"}[1m])) by (destination_service_name)",
        |m, v| m["destination_service_name"] == "ratings" && v > 0.0,
    );
    for service in ["productpage", "details", "reviews", "ratings"] {
        let rate = rates
            .iter()
            .find(|(m, _)| m["destination_service_name"] == service)
            .map(|(_, v)| *v);
        assert!(rate.is_some_and(|r| r > 0.0), "{service}: {rates:?}");
    }
    // The scrape labels the series as the addon's pod scrape does.
    let by_pod = query("sum(istio_requests_total{reporter=\"destination\",destination_app=\"productpage\"}) by (namespace, pod, app, version)");
    assert_eq!(by_pod.len(), 1, "{by_pod:?}");
    let m = &by_pod[0].0;
    assert_eq!(
        (&m["namespace"], &m["pod"], &m["app"], &m["version"]),
        (
            &"default".into(),
            &"productpage-v1".into(),
            &"productpage".into(),
            &"v1".into()
        ),
        "{m}"
    );
    // Success rate, and latency quantiles from the duration histogram.
    let success = query("sum(rate(istio_requests_total{reporter=\"destination\",destination_service_name=\"productpage\",response_code!~\"5.*\"}[1m])) / sum(rate(istio_requests_total{reporter=\"destination\",destination_service_name=\"productpage\"}[1m]))");
    assert_eq!(success.len(), 1, "{success:?}");
    assert!((success[0].1 - 1.0).abs() < 1e-9, "{success:?}");
    for q in ["0.5", "0.9", "0.99"] {
        let p = query(&format!("histogram_quantile({q}, sum(rate(istio_request_duration_milliseconds_bucket{{reporter=\"destination\",destination_service_name=\"productpage\"}}[1m])) by (le))"));
        assert_eq!(p.len(), 1, "p{q}: {p:?}");
        assert!(p[0].1.is_finite() && p[0].1 > 0.0, "p{q}: {p:?}");
    }
    let tcp = query(
        "sum(istio_tcp_sent_bytes_total{destination_service_name=\"tcp-echo\"}) by (reporter)",
    );
    assert_eq!(tcp.len(), 2, "both reporters: {tcp:?}");
    assert!(tcp.iter().all(|(_, v)| *v >= 11.0), "{tcp:?}");

    // Istio's fault-injection task: jason's ratings calls are aborted,
    // and the series says so (FI, 500) on the reviews sidecars.
    ok(mesh.apply_yaml("virtual-service-ratings-test-abort.yaml", ABORT));
    // The page still answers 200: reviews says ratings are unavailable.
    drive(&mesh, 4, &["-H", "end-user: jason"]);
    let faults = eventually(
        "sum(istio_requests_total{reporter=\"source\",response_flags=\"FI\"}) by (source_workload, destination_service_name, response_code)",
        |_, v| v > 0.0,
    );
    for (m, _) in &faults {
        assert_eq!(m["destination_service_name"], "ratings", "{faults:?}");
        assert_eq!(m["response_code"], "500", "{faults:?}");
        let from = m["source_workload"].as_str().unwrap();
        assert!(from == "reviews-v2" || from == "reviews-v3", "{faults:?}");
    }
    // The control plane's own metrics, under istiod's names.
    eventually("pilot_xds{job=\"istiod\"}", |_, v| v >= 9.0);
    eventually("sum(pilot_xds_pushes{type=\"lds\"})", |_, v| v >= 9.0);
    eventually("pilot_proxy_convergence_time_count", |_, v| v >= 1.0);
    eventually("citadel_server_success_cert_issuance_count", |_, v| {
        v >= 9.0
    });
    every_dashboard_panel_is_answered();
    ok(mesh.down());
}

/// What the test binds each dashboard variable to: every value must be
/// among the variable's own query's answers, and every panel must have
/// data for at least one binding.
const BINDINGS: [(&str, &[&str]); 3] = [
    (
        "service",
        &[
            "productpage.default.svc.cluster.local",
            "ratings.default.svc.cluster.local",
            "tcp-echo.default.svc.cluster.local",
        ],
    ),
    ("namespace", &["default"]),
    (
        "workload",
        &["productpage-v1", "reviews-v2", "tcp-echo-v1", "tcp-echo-v2"],
    ),
];

/// Panels that may be empty on Bookinfo, and why.
const MAY_BE_EMPTY: [(&str, &str); 1] = [(
    "Outgoing gRPC messages",
    "Bookinfo speaks no gRPC (the panel's query must still be valid)",
)];

fn bindings(name: &str) -> &'static [&'static str] {
    BINDINGS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no binding for dashboard variable ${name}"))
        .1
}

/// `text` with each `$var` replaced by its value in `env`.
fn bind(text: &str, env: &[(&str, &str)]) -> String {
    let mut out = text.to_string();
    for (k, v) in env {
        out = out.replace(&format!("${k}"), v);
    }
    out
}

/// Every binding of the variables `expr` uses, one at a time (the others
/// at their first value).
fn environments(expr: &str) -> Vec<Vec<(&'static str, &'static str)>> {
    let used: Vec<&str> = BINDINGS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| expr.contains(&format!("${n}")))
        .collect();
    let first: Vec<(&str, &str)> = used.iter().map(|n| (*n, bindings(n)[0])).collect();
    let mut out = vec![first.clone()];
    for n in &used {
        for v in &bindings(n)[1..] {
            let mut env = first.clone();
            env.retain(|(k, _)| k != n);
            env.push((n, v));
            out.push(env);
        }
    }
    out
}

/// A Grafana `label_values(selector, label)` query, as Prometheus's
/// label API answers it.
fn label_values(query: &str) -> Vec<String> {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not label_values: {query}"));
    let (selector, label) = inner.rsplit_once(',').unwrap();
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "10", "-G"])
        .arg(format!("{PROMETHEUS}/api/v1/label/{}/values", label.trim()))
        .args(["--data-urlencode", &format!("match[]={}", selector.trim())])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "success", "{query}: {v}");
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The shipped Grafana dashboards (`addons/grafana`) against this mesh's
/// Prometheus: each variable's query offers the test's bindings, and each
/// panel's queries are valid and have data.
fn every_dashboard_panel_is_answered() {
    let dir = std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
    .join("../../addons/grafana");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        4,
        "mesh, service, workload, control plane: {files:?}"
    );
    for file in files {
        let board: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let title = board["title"].as_str().unwrap();
        for var in board["templating"]["list"].as_array().unwrap() {
            if var["type"] != "query" {
                continue;
            }
            let name = var["name"].as_str().unwrap();
            let env: Vec<(&str, &str)> = BINDINGS.iter().map(|(n, vals)| (*n, vals[0])).collect();
            let offered = label_values(&bind(var["definition"].as_str().unwrap(), &env));
            for want in bindings(name) {
                assert!(
                    offered.iter().any(|o| o == want),
                    "{title}: ${name} does not offer {want}: {offered:?}"
                );
            }
        }
        for panel in board["panels"].as_array().unwrap() {
            let name = panel["title"].as_str().unwrap();
            let exempt = MAY_BE_EMPTY.iter().any(|(p, _)| *p == name);
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let answered = environments(expr)
                        .iter()
                        .any(|env| !query(&bind(expr, env)).is_empty());
                    if answered || exempt {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{title} / {name}: no data for any binding: {expr}"
                    );
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
}
