//! End-to-end: Istio's "Envoy's Access Logging" task on the httpbin mesh.
//! A local mesh is installed with the demo profile's mesh config
//! (`accessLogFile: /dev/stdout`), so the client's sidecar writes Istio's
//! default line for `curl httpbin:8000/status/418`; the mesh config's
//! `accessLogEncoding: JSON` turns lines into Istio's JSON fields; and with
//! `accessLogFile` gone, the Telemetry API's built-in `envoy` provider
//! with a filter logs only the failures. Subnet 147, ingress port 18147.

mod support;

use std::time::Duration;

use support::*;

const TELEMETRY: &str = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  accessLogging:
  - providers:
    - name: envoy
    filter:
      expression: response.code >= 400
";

fn call(mesh: &Mesh, path: &str) -> u16 {
    pod_curl_status(mesh, "curl", &[&format!("http://httpbin:8000{path}")]).0
}

/// The client sidecar's log lines that name `marker`.
fn logged(mesh: &Mesh, marker: &str) -> Vec<String> {
    mesh.log("curl.sidecar.log")
        .lines()
        .filter(|l| l.contains(marker))
        .map(str::to_string)
        .collect()
}

#[test]
fn istios_access_logging_task() {
    let mesh = Mesh::up_example("httpbin", "alog", 147, 18147);

    // The installed mesh config logs every request in Istio's format.
    assert_eq!(call(&mesh, "/status/418?step=text"), 418);
    wait_until("the text line", Duration::from_secs(5), || {
        !logged(&mesh, "step=text").is_empty()
    });
    let line = &logged(&mesh, "step=text")[0];
    assert!(
        line.contains("\"GET /status/418?step=text HTTP/1.1\" 418 - via_upstream - \"-\" 0 "),
        "{line}"
    );
    assert!(
        line.contains(" \"httpbin:8000\" \"198.18.147.")
            && line.contains(" outbound|8000||httpbin.default.svc.cluster.local "),
        "{line}"
    );
    assert!(line.contains("\"curl/"), "the user agent: {line}");
    let inbound = mesh.log("httpbin-v1.sidecar.log") + &mesh.log("httpbin-v2.sidecar.log");
    assert!(
        inbound
            .lines()
            .any(|l| l.contains("step=text") && l.contains(" inbound|")),
        "{inbound}"
    );

    // JSON encoding: Istio's fields, numbers as numbers.
    ok(mesh.apply_yaml(
        "mesh-config.yaml",
        &istio_config_map("accessLogFile: /dev/stdout\naccessLogEncoding: JSON"),
    ));
    wait_until("a JSON line", Duration::from_secs(20), || {
        call(&mesh, "/status/419?step=json");
        logged(&mesh, "step=json")
            .iter()
            .any(|l| l.starts_with('{'))
    });
    let json = logged(&mesh, "step=json");
    let line = json.iter().rev().find(|l| l.starts_with('{')).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["response_code"], 419, "{v}");
    assert_eq!(v["method"], "GET");
    assert_eq!(
        v["upstream_cluster"],
        "outbound|8000||httpbin.default.svc.cluster.local"
    );
    assert!(v["x_forwarded_for"].is_null(), "{v}");

    // No accessLogFile, and the Telemetry API's `envoy` provider with a
    // filter: failures only.
    ok(mesh.apply_yaml(
        "mesh-config.yaml",
        &istio_config_map("accessLogEncoding: TEXT"),
    ));
    ok(mesh.apply_yaml("telemetry.yaml", TELEMETRY));
    wait_until("the filter to apply", Duration::from_secs(20), || {
        call(&mesh, "/status/200?step=filtered-ok");
        call(&mesh, "/status/503?step=filtered-fail");
        let fails = logged(&mesh, "step=filtered-fail");
        fails.last().is_some_and(|l| l.starts_with('['))
    });
    // Once the filter logs, successes are no longer written.
    let before = logged(&mesh, "step=filtered-ok").len();
    for _ in 0..3 {
        assert_eq!(call(&mesh, "/status/200?step=filtered-ok"), 200);
        assert_eq!(call(&mesh, "/status/500?step=filtered-fail"), 500);
    }
    std::thread::sleep(Duration::from_millis(1500)); // one flush
    assert_eq!(logged(&mesh, "step=filtered-ok").len(), before);
    let fails = logged(&mesh, "step=filtered-fail");
    assert!(
        fails.iter().filter(|l| l.contains("\" 500 ")).count() >= 3,
        "{fails:?}"
    );
}
