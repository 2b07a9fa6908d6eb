//! End-to-end: AuthorizationPolicy on a `weft up` mesh of httpbin, with
//! Istio's YAML: the course's "allow nothing" lockdown (the mesh and the
//! ingress answer 403), Istio's "Explicit Deny" task (in `default`, where
//! the task uses `foo`), and its ingress-gateway task's IP allow list,
//! enforced by the gateway itself, first by the peer's address
//! (`ipBlocks`), then by the client's as a trusted proxy in front wrote it
//! in `X-Forwarded-For` (`remoteIpBlocks` with the mesh's
//! `gatewayTopology.numTrustedProxies: 1`). Identities (principals, namespaces)
//! are `authz_bookinfo_e2e`'s and `mtls_e2e`'s. Subnet 165, ingress port
//! 18165.

mod support;

use std::time::Duration;

use support::*;

const DENY_METHOD_GET: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-method-get
  namespace: default
spec:
  selector:
    matchLabels:
      app: httpbin
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["GET"]
    when:
    - key: request.headers[x-token]
      notValues: ["admin"]
"#;

fn ingress_policy(blocks: &str) -> String {
    ingress_source("ipBlocks", blocks)
}

fn ingress_source(field: &str, blocks: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ingress-policy
  namespace: istio-system
spec:
  selector:
    matchLabels:
      app: istio-ingressgateway
  action: ALLOW
  rules:
  - from:
    - source:
        {field}: [{blocks}]
"
    )
}

/// (status, body) of a request from the `curl` pod.
fn from_curl(mesh: &Mesh, args: &[&str]) -> (u16, String) {
    pod_curl_status(mesh, "curl", args)
}

#[test]
fn allow_nothing_explicit_deny_and_the_ingress_allow_list() {
    let mesh = Mesh::up_example("httpbin", "authz", 165, 18165);
    let ingress = format!("{}/headers", mesh.ingress);
    let inside = "http://httpbin:8000/headers";
    assert_eq!(from_curl(&mesh, &[inside]).0, 200);
    assert_eq!(curl(&ingress, &[]).0, 200);

    // allow-nothing: every request to a workload of `default` is refused,
    // whether it comes from a pod or through the ingress gateway.
    ok(mesh.apply_yaml("allow-nothing.yaml", ALLOW_NOTHING));
    wait_until("403 inside the mesh", Duration::from_secs(20), || {
        from_curl(&mesh, &[inside]) == (403, "RBAC: access denied".into())
    });
    assert_eq!(curl(&ingress, &[]).0, 403);

    // Explicit deny: GET without the admin token is refused, the rest goes.
    ok(weft(&[
        "delete",
        "ap",
        "allow-nothing",
        "--mesh",
        &mesh.name,
    ]));
    ok(mesh.apply_yaml("deny-method-get.yaml", DENY_METHOD_GET));
    let get = |token: &str| {
        from_curl(
            &mesh,
            &[
                "http://httpbin:8000/get",
                "-X",
                "GET",
                "-H",
                &format!("x-token: {token}"),
            ],
        )
        .0
    };
    // The stand-in httpbin takes POST on /anything (the task's /post).
    let post = || {
        from_curl(
            &mesh,
            &[
                "http://httpbin:8000/anything",
                "-X",
                "POST",
                "-H",
                "x-token: a",
            ],
        )
        .0
    };
    // Both httpbin pods have dropped allow-nothing and taken the new
    // policy once every kind of request gets its answer, a few times.
    wait_until(
        "GET without the token refused, the rest let through",
        Duration::from_secs(20),
        || (0..4).all(|_| get("a") == 403 && get("admin") == 200 && post() == 200),
    );
    ok(weft(&[
        "delete",
        "ap",
        "deny-method-get",
        "--mesh",
        &mesh.name,
    ]));

    // The ingress gateway's own allow list, by client address.
    ok(mesh.apply_yaml(
        "ingress-policy.yaml",
        &ingress_policy(r#""1.2.3.4", "5.6.7.0/24""#),
    ));
    wait_until(
        "the gateway refuses 127.0.0.1",
        Duration::from_secs(20),
        || curl(&ingress, &[]).0 == 403,
    );
    // Pods are not behind the gateway (once deny-method-get is gone
    // from both httpbin pods).
    wait_until("pods reach httpbin", Duration::from_secs(20), || {
        (0..4).all(|_| from_curl(&mesh, &[inside]).0 == 200)
    });
    assert_eq!(curl(&ingress, &[]).0, 403);
    ok(mesh.apply_yaml(
        "ingress-policy.yaml",
        &ingress_policy(r#""1.2.3.4", "5.6.7.0/24", "127.0.0.1""#),
    ));
    wait_until(
        "the gateway lets 127.0.0.1 in",
        Duration::from_secs(20),
        || curl(&ingress, &[]).0 == 200,
    );

    // Istio's task, behind one trusted proxy: the client is who the
    // proxy says in X-Forwarded-For, and the gateway appends its peer.
    ok(mesh.apply_yaml(
        "mesh-config.yaml",
        &istio_config_map("defaultConfig:\n  gatewayTopology:\n    numTrustedProxies: 1"),
    ));
    ok(mesh.apply_yaml(
        "ingress-policy.yaml",
        &ingress_source("remoteIpBlocks", r#""1.2.3.4", "5.6.7.0/24""#),
    ));
    let from = |client: &str| curl(&ingress, &["-H", &format!("X-Forwarded-For: {client}")]);
    wait_until(
        "the gateway lets 1.2.3.4 in by X-Forwarded-For",
        Duration::from_secs(20),
        || from("1.2.3.4").0 == 200 && from("9.9.9.9").0 == 403,
    );
    assert_eq!(from("5.6.7.8").0, 200);
    assert_eq!(curl(&ingress, &[]).0, 403, "without the header, the peer");
    let (_, body) = from("5.6.7.8");
    let seen: serde_json::Value = serde_json::from_str(&body).expect("httpbin's JSON");
    let headers = &seen["headers"];
    assert_eq!(headers["X-Envoy-External-Address"], "5.6.7.8", "{body}");
    let xff = headers["X-Forwarded-For"].as_str().unwrap_or_default();
    assert!(
        xff.starts_with("5.6.7.8,") && xff.split(',').count() == 2,
        "the gateway appends its peer: {body}"
    );
}
