//! End-to-end: RequestAuthentication, JWT-based authorization and
//! external authorization (CUSTOM) on a `weft up` mesh of Istio's
//! security-task layout (`examples/security`), with Istio's YAML from its
//! "Authorization on JWT", "End User Authentication" and "External
//! Authorization" tasks (the last with a stand-in for Istio's sample
//! authorizer, `weft demo ext-authz`). The only change: `jwksUri` points at a JWKS
//! served on this machine (the tasks fetch Istio's sample JWKS from
//! GitHub), and the tokens, shaped like Istio's samples, are made with
//! PyJWT (`scripts/gen-jwt.py`). The control plane fetches the JWKS and
//! inlines it, as istiod does. Subnet 167, ingress port 18167.

mod support;

use std::process::{Child, Command};
use std::time::Duration;

use support::*;

fn request_authentication(jwks_uri: &str) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: "jwt-example"
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwksUri: "{jwks_uri}"
"#
    )
}

const REQUIRE_JWT: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: require-jwt
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
       requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]
"#;

const REQUIRE_GROUP: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: require-jwt
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
       requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]
    when:
    - key: request.auth.claims[groups]
      values: ["group1"]
"#;

fn ingress_jwt(jwks_uri: &str) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: "jwt-example"
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwksUri: "{jwks_uri}"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: "frontend-ingress"
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  action: DENY
  rules:
  - from:
    - source:
        notRequestPrincipals: ["*"]
"#
    )
}

const EXT_AUTHZ_MESH: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |-
    extensionProviders:
    - name: "sample-ext-authz-http"
      envoyExtAuthzHttp:
        service: "ext-authz.foo.svc.cluster.local"
        port: "8000"
        includeRequestHeadersInCheck: ["x-ext-authz"]
    - name: "sample-ext-authz-grpc"
      envoyExtAuthzGrpc:
        service: "ext-authz.foo.svc.cluster.local"
        port: "9000"
"#;

const EXT_AUTHZ_POLICY: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ext-authz
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: CUSTOM
  provider:
    name: sample-ext-authz-http
  rules:
  - to:
    - operation:
        paths: ["/headers"]
"#;

/// A JWKS server on loopback (Python's http.server), stopped on drop.
struct KeyServer(Child);

impl Drop for KeyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn key_server(dir: &std::path::Path, port: u16) -> KeyServer {
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
            "--directory",
        ])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    KeyServer(child)
}

/// HTTP status of a request from curl.foo to httpbin.foo, with a token.
fn status(mesh: &Mesh, token: Option<&str>) -> u16 {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    if let Some(a) = &auth {
        args.extend(["-H", a.as_str()]);
    }
    args.push("http://httpbin.foo:8000/headers");
    pod_curl(mesh, "curl-foo", &args)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn ingress_status(mesh: &Mesh, token: Option<&str>) -> u16 {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut extra = vec![];
    if let Some(a) = &auth {
        extra.extend(["-H", a.as_str()]);
    }
    curl(&format!("{}/headers", mesh.ingress), &extra).0
}

#[test]
fn jwt_authentication_and_authorization_as_istios_tasks() {
    let mesh = Mesh::up_example("security", "jwt", 167, 18167);
    let dir = std::env::temp_dir().join(format!("weft-jwt-e2e-{}", std::process::id()));
    let gen = Command::new("python3")
        .arg(format!(
            "{}/../../scripts/gen-jwt.py",
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
        ))
        .arg(&dir)
        .output()
        .expect("python3");
    assert!(
        gen.status.success(),
        "gen-jwt.py: {}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let token = |name: &str| std::fs::read_to_string(dir.join(format!("{name}.jwt"))).unwrap();
    let port = 18967;
    let _keys = key_server(&dir, port);
    let jwks_uri = format!("http://127.0.0.1:{port}/jwks.json");

    // RequestAuthentication alone: a bad token is 401, none is fine.
    assert_eq!(status(&mesh, None), 200);
    ok(mesh.apply_yaml("jwt-example.yaml", &request_authentication(&jwks_uri)));
    // The policy has reached the proxy once a bad token is refused (a
    // valid one passes before it too, so it cannot tell).
    wait_until("a bad token is refused", Duration::from_secs(30), || {
        status(&mesh, Some("invalidToken")) == 401
    });
    // A valid token passes once the control plane has fetched the JWKS.
    wait_until("a valid token passes", Duration::from_secs(30), || {
        status(&mesh, Some(&token("demo"))) == 200
    });
    assert_eq!(status(&mesh, None), 200);
    assert_eq!(status(&mesh, Some(&token("expired"))), 401);

    // require-jwt: the token's principal is needed.
    ok(mesh.apply_yaml("require-jwt.yaml", REQUIRE_JWT));
    wait_until("no token is 403", Duration::from_secs(20), || {
        status(&mesh, None) == 403
    });
    assert_eq!(status(&mesh, Some(&token("demo"))), 200);

    // ... and a group claim.
    ok(mesh.apply_yaml("require-jwt.yaml", REQUIRE_GROUP));
    wait_until("demo.jwt lacks group1", Duration::from_secs(20), || {
        status(&mesh, Some(&token("demo"))) == 403
    });
    assert_eq!(status(&mesh, Some(&token("groups-scope"))), 200);

    // End-user authentication at the ingress gateway (the task's httpbin
    // has no policy of its own).
    ok(weft(&[
        "delete",
        "authorizationpolicy",
        "require-jwt",
        "-n",
        "foo",
        "--mesh",
        "jwt",
    ]));
    ok(mesh.apply_yaml("ingress-jwt.yaml", &ingress_jwt(&jwks_uri)));
    wait_until("the ingress wants a token", Duration::from_secs(30), || {
        ingress_status(&mesh, None) == 403
    });
    assert_eq!(ingress_status(&mesh, Some("deadbeef")), 401);
    assert_eq!(ingress_status(&mesh, Some(&token("demo"))), 200);
    assert_eq!(ingress_status(&mesh, Some(&token("expired"))), 401);

    // CUSTOM: the sample authorizer decides about /headers only.
    ok(mesh.apply_yaml("mesh-config.yaml", EXT_AUTHZ_MESH));
    ok(mesh.apply_yaml("ext-authz.yaml", EXT_AUTHZ_POLICY));
    let ask = |path: &str, verdict: &str| {
        let header = format!("x-ext-authz: {verdict}");
        let url = format!("http://httpbin.foo:8000{path}");
        pod_curl_status(&mesh, "curl-foo", &["-H", &header, &url])
    };
    wait_until("the authorizer denies", Duration::from_secs(20), || {
        ask("/headers", "deny")
            == (
                403,
                "denied by ext_authz for not found header `x-ext-authz: allow` in the request"
                    .into(),
            )
    });
    let (code, body) = ask("/headers", "allow");
    assert_eq!(code, 200, "{body}");
    assert_eq!(ask("/ip", "deny").0, 200, "only /headers is checked");
    // The same authorizer over gRPC (Envoy's Authorization/Check).
    let grpc = EXT_AUTHZ_POLICY.replace("sample-ext-authz-http", "sample-ext-authz-grpc");
    ok(mesh.apply_yaml("ext-authz.yaml", &grpc));
    wait_until(
        "httpbin's sidecar asks over gRPC",
        Duration::from_secs(20),
        || {
            let dump = curl("http://198.18.167.10:15000/config_dump", &[]).1;
            dump.contains("\"grpc\": true") && dump.contains("outbound|9000||ext-authz.foo")
        },
    );
    assert_eq!(ask("/headers", "allow").0, 200);
    assert_eq!(
        ask("/headers", "deny"),
        (
            403,
            "denied by ext_authz for not found header `x-ext-authz: allow` in the request".into()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}
