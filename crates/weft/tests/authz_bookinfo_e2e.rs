//! End-to-end: authorization by identity on Bookinfo, with Istio's YAML.
//! The course's lockdown lab: `allow-nothing` in `default` makes the
//! ingress answer 403; an ALLOW for the ingress gateway's identity opens
//! productpage, and ALLOWs for productpage's and reviews' identities open
//! the path hop by hop (Istio's "Authorization for HTTP traffic" task
//! with principals). Then Istio's "Authorization for TCP traffic" task on
//! tcp-echo: a TCP ALLOW by principal and port, and an ALLOW with an
//! HTTP-only field, which never matches TCP. Subnet 168, ingress 18168.

mod support;

use std::time::Duration;

use support::*;

/// An ALLOW for `app`'s workloads from `principal`, GET only.
fn viewer(app: &str, principal: &str) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: "{app}-viewer"
  namespace: default
spec:
  selector:
    matchLabels:
      app: {app}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["{principal}"]
    to:
    - operation:
        methods: ["GET"]
"#
    )
}

fn tcp_policy(operation: &str) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: tcp-policy
  namespace: default
spec:
  selector:
    matchLabels:
      app: tcp-echo
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]
    to:
    - operation:
{operation}
"#
    )
}

/// What tcp-echo answers a pod (empty when the connection is closed).
fn echo_from(mesh: &Mesh, pod: &str) -> String {
    let script = "import socket\ntry:\n  s=socket.create_connection(('tcp-echo', 9000), timeout=2); s.sendall(b'hello\\n'); print(s.recv(200).decode().strip())\nexcept Exception as e:\n  print('')";
    String::from_utf8_lossy(&pod_python(mesh, pod, script).stdout)
        .trim()
        .to_string()
}

#[test]
fn lockdown_then_open_hop_by_hop_and_tcp_by_principal() {
    let mesh = Mesh::up_example("bookinfo", "authzbi", 168, 18168);
    let page = format!("{}/productpage", mesh.ingress);
    assert_eq!(curl(&page, &[]).0, 200);

    ok(mesh.apply_yaml("allow-nothing.yaml", ALLOW_NOTHING));
    wait_until("the ingress gets 403", Duration::from_secs(20), || {
        curl(&page, &[]) == (403, "RBAC: access denied".into())
    });

    // The ingress gateway's identity may open productpage; productpage
    // itself may reach nothing yet.
    let gateway = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
    ok(mesh.apply_yaml("productpage-viewer.yaml", &viewer("productpage", gateway)));
    wait_until(
        "productpage without details and reviews",
        Duration::from_secs(20),
        || {
            let (code, body) = curl(&page, &[]);
            code == 200
                && body.contains(weft_demo::DETAILS_UNAVAILABLE)
                && body.contains(weft_demo::REVIEWS_UNAVAILABLE)
        },
    );

    // productpage's identity opens details and reviews; reviews' opens ratings.
    let productpage = "cluster.local/ns/default/sa/bookinfo-productpage";
    ok(mesh.apply_yaml("details-viewer.yaml", &viewer("details", productpage)));
    ok(mesh.apply_yaml("reviews-viewer.yaml", &viewer("reviews", productpage)));
    wait_until(
        "details and reviews, no ratings",
        Duration::from_secs(20),
        || {
            let (code, body) = curl(&page, &[]);
            code == 200
                && !body.contains(weft_demo::DETAILS_UNAVAILABLE)
                && !body.contains(weft_demo::REVIEWS_UNAVAILABLE)
                && (body.contains(weft_demo::RATINGS_UNAVAILABLE) || body.contains("reviews-v1"))
        },
    );
    let reviews = "cluster.local/ns/default/sa/bookinfo-reviews";
    ok(mesh.apply_yaml("ratings-viewer.yaml", &viewer("ratings", reviews)));
    wait_until("the whole page", Duration::from_secs(20), || {
        let seen = reviews_seen(&page, 6, &[]);
        seen.iter().any(|v| v == "reviews-v2" || v == "reviews-v3")
            && (0..3).all(|_| !curl(&page, &[]).1.contains(weft_demo::RATINGS_UNAVAILABLE))
    });
    // The identity is the client's certificate, not where it connects
    // from: details may not call reviews.
    let from_details = pod_curl_status(&mesh, "details-v1", &["http://reviews:9080/reviews/0"]);
    assert_eq!(from_details.0, 403, "{from_details:?}");

    // AUDIT changes nothing but marks what it matches in the access log.
    let audit = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: audit-details
  namespace: default
spec:
  selector:
    matchLabels:
      app: details
  action: AUDIT
  rules:
  - to:
    - operation:
        methods: [\"GET\"]
";
    ok(mesh.apply_yaml("audit-details.yaml", audit));
    // Envoy marks an audited request with the `access_log_hint` dynamic
    // metadata; a mesh config format that prints it shows the mark.
    let mesh_config = istio_config_map(
        r#"accessLogFile: /dev/stdout
accessLogFormat: "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% audit=%DYNAMIC_METADATA(envoy.common:access_log_hint)%""#,
    );
    ok(mesh.apply_yaml("mesh-config.yaml", &mesh_config));
    wait_until("the audit mark", Duration::from_secs(20), || {
        curl(&page, &[]).0 == 200
            && mesh
                .log("details-v1.sidecar.log")
                .contains("GET /details/0 200 via_upstream - audit=true")
    });

    // TCP: allow-nothing closes tcp-echo; productpage's identity on port
    // 9000 opens it for productpage only.
    assert_eq!(echo_from(&mesh, "productpage-v1"), "");
    ok(mesh.apply_yaml("tcp-policy.yaml", &tcp_policy("        ports: [\"9000\"]")));
    wait_until(
        "productpage reaches tcp-echo",
        Duration::from_secs(20),
        || echo_from(&mesh, "productpage-v1").ends_with("hello"),
    );
    assert_eq!(echo_from(&mesh, "details-v1"), "");
    // An HTTP-only field never matches TCP: the ALLOW opens nothing.
    ok(mesh.apply_yaml(
        "tcp-policy.yaml",
        &tcp_policy("        methods: [\"GET\"]\n        ports: [\"9000\"]"),
    ));
    wait_until("tcp-echo closed again", Duration::from_secs(20), || {
        echo_from(&mesh, "productpage-v1").is_empty()
    });
    // The sidecar's access log says why (lines are written each second).
    wait_until(
        "the denial in the access log",
        Duration::from_secs(5),
        || {
            let log = mesh.log("tcp-echo-v1.sidecar.log") + &mesh.log("tcp-echo-v2.sidecar.log");
            log.contains("rbac_access_denied_matched_policy[none]")
        },
    );
}
