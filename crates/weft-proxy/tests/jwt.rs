//! The JWT filter on loopback, configured as Weft's translation writes it
//! for RequestAuthentication, with tokens made by `scripts/gen-jwt.py`
//! (PyJWT): a table of tokens and the answers Envoy gives them, the
//! request as the upstream sees it after a token is taken, and RBAC
//! reading the verified claims.

mod support;

use std::path::PathBuf;

use envoy_types::pb::envoy::config::listener::v3::filter;
use envoy_types::pb::envoy::config::rbac::v3::Rbac as Rules;
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, rbac, Permission, Policy, Principal,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    list_matcher, metadata_matcher, path_matcher, string_matcher::MatchPattern, value_matcher,
    ListMatcher, MetadataMatcher, PathMatcher, StringMatcher, ValueMatcher,
};
use envoy_types::util::pack_any;
use prost::Message;
use support::*;

const ISSUER: &str = "testing@secure.istio.io";

/// Fresh keys and tokens from the generator script.
fn tokens(tag: &str, issuer: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-jwt-{tag}-{}", std::process::id()));
    let script = &format!(
        "{}/../../scripts/gen-jwt.py",
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
    );
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&dir)
        .arg(issuer)
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "gen-jwt.py (PyJWT; scripts/setup.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn token(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.jwt"))).unwrap()
}

/// The translated JWT filter for a RequestAuthentication with these rules.
fn jwt_filter(rules_yaml: &str) -> HttpFilter {
    let yaml = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: foo}}\nspec:\n  jwtRules:\n{rules_yaml}"
    );
    let loaded = weft_config::load_str(&yaml, "ra.yaml");
    assert!(!loaded.has_errors(), "{:?}", loaded.problems);
    let ra = loaded.resources[0].as_request_authentication().unwrap();
    let mut problems = Vec::new();
    let f = weft_translate::jwt::filter(
        ra.jwt_rules.iter().collect(),
        &Default::default(),
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems:?}");
    f
}

/// ALLOW: anything but /admin from anyone; /admin for group1 only.
fn rbac_filter() -> HttpFilter {
    let admin = || Permission {
        rule: Some(permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(StringMatcher {
                match_pattern: Some(MatchPattern::Prefix("/admin".into())),
                ..Default::default()
            })),
        })),
    };
    #[allow(deprecated)]
    let group1 = Principal {
        identifier: Some(principal::Identifier::Metadata(MetadataMatcher {
            filter: "envoy.filters.http.jwt_authn".into(),
            path: ["payload", "groups"]
                .iter()
                .map(|k| metadata_matcher::PathSegment {
                    segment: Some(metadata_matcher::path_segment::Segment::Key(k.to_string())),
                })
                .collect(),
            value: Some(ValueMatcher {
                match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
                    ListMatcher {
                        match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(
                            ValueMatcher {
                                match_pattern: Some(value_matcher::MatchPattern::StringMatch(
                                    StringMatcher {
                                        match_pattern: Some(MatchPattern::Exact("group1".into())),
                                        ..Default::default()
                                    },
                                )),
                            },
                        ))),
                    },
                ))),
            }),
            ..Default::default()
        })),
    };
    let anyone = Principal {
        identifier: Some(principal::Identifier::Any(true)),
    };
    let policies = [
        (
            "not-admin".to_string(),
            Policy {
                permissions: vec![Permission {
                    rule: Some(permission::Rule::NotRule(Box::new(admin()))),
                }],
                principals: vec![anyone],
                ..Default::default()
            },
        ),
        (
            "admin-group1".to_string(),
            Policy {
                permissions: vec![admin()],
                principals: vec![group1],
                ..Default::default()
            },
        ),
    ];
    HttpFilter {
        name: "envoy.filters.http.rbac".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(Rbac {
            rules: Some(Rules {
                action: rbac::Action::Allow as i32,
                policies: policies.into_iter().collect(),
                ..Default::default()
            }),
            ..Default::default()
        }))),
        ..Default::default()
    }
}

/// A proxy whose HTTP filters start with `front`.
async fn guarded(front: Vec<HttpFilter>) -> (Proxy, Upstream) {
    let backend = upstream("backend", None).await;
    let proxy = serve(vec![static_cluster("backend", &[backend.addr])], |addr| {
        let mut l = listener(addr, vec![route_to("backend")]);
        let Some(filter::ConfigType::TypedConfig(any)) =
            &mut l.filter_chains[0].filters[0].config_type
        else {
            panic!()
        };
        let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        let mut all = front;
        all.append(&mut hcm.http_filters);
        hcm.http_filters = all;
        *any = pack_any(hcm);
        l
    });
    (proxy, backend)
}

async fn with_bearer(p: &Proxy, path: &str, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    get_with(p.addr, path, &headers).await
}

#[tokio::test]
async fn tokens_are_verified_as_envoy_does_and_claims_reach_rbac() {
    let dir = tokens("table", ISSUER);
    let jwks = std::fs::read_to_string(dir.join("jwks.json")).unwrap();
    let rules = format!(
        "  - issuer: testing@secure.istio.io\n    jwks: '{jwks}'\n    outputPayloadToHeader: x-jwt-payload\n    outputClaimToHeaders:\n    - {{header: x-foo, claim: foo}}\n"
    );
    let (proxy, _backend) = guarded(vec![jwt_filter(&rules), rbac_filter()]).await;

    // No token: passes (an AuthorizationPolicy decides if that is enough).
    assert_eq!(with_bearer(&proxy, "/ip", None).await.status, 200);
    // Valid tokens of every key kind.
    for name in ["demo", "groups-scope", "ps256", "es256", "eddsa"] {
        let r = with_bearer(&proxy, "/ip", Some(&token(&dir, name))).await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
    }
    // The taken token leaves its header; payload and claim go on in theirs.
    let r = with_bearer(&proxy, "/ip", Some(&token(&dir, "demo"))).await;
    assert!(!r.body.contains("authorization:"), "{}", r.body);
    assert!(r.body.contains("x-foo: bar"), "{}", r.body);
    assert!(r.body.contains("x-jwt-payload: ey"), "{}", r.body);
    // A token in the `access_token` query parameter counts too.
    let r = get(
        proxy.addr,
        &format!("/ip?access_token={}", token(&dir, "demo")),
    )
    .await;
    assert_eq!(r.status, 200);

    // Tokens that do not verify: 401 with Envoy's reason.
    let refused = [
        (
            "deadbeef".to_string(),
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        ),
        (token(&dir, "expired"), "Jwt is expired"),
        (token(&dir, "wrong-key"), "Jwt verification fails"),
        (token(&dir, "other-issuer"), "Jwt issuer is not configured"),
        (token(&dir, "alg-none"), "Jwt header [alg] is not supported"),
    ];
    for (t, reason) in refused {
        let r = with_bearer(&proxy, "/ip", Some(&t)).await;
        assert_eq!((r.status.as_u16(), r.body.as_str()), (401, reason), "{t}");
        let challenge = r.headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }

    // A client cannot pass its own "verified" payload or claim.
    let r = get_with(
        proxy.addr,
        "/ip",
        &[("x-jwt-payload", "forged"), ("x-foo", "forged")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("forged"), "{}", r.body);

    // RBAC reads the claims: /admin is for group1 only.
    let r = with_bearer(&proxy, "/admin", Some(&token(&dir, "demo"))).await;
    assert_eq!(r.status, 403);
    let r = with_bearer(&proxy, "/admin", Some(&token(&dir, "groups-scope"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(with_bearer(&proxy, "/admin", None).await.status, 403);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A key labelled with an algorithm of another kind (an EC key as an
/// HMAC secret: the classic confusion) is not used at all; the other
/// keys still are.
#[tokio::test]
async fn keys_verify_only_their_own_kind_of_algorithm() {
    let dir = tokens("kinds", ISSUER);
    let mut jwks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("jwks.json")).unwrap()).unwrap();
    for k in jwks["keys"].as_array_mut().unwrap() {
        if k["kty"] == "EC" {
            k["alg"] = "HS256".into();
        }
    }
    jwks["keys"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"}));
    let rules = format!("  - issuer: testing@secure.istio.io\n    jwks: '{jwks}'\n");
    let (proxy, _backend) = guarded(vec![jwt_filter(&rules)]).await;
    let r = with_bearer(&proxy, "/ip", Some(&token(&dir, "es256"))).await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (401, "Jwks doesn't have key to match kid or alg from Jwt")
    );
    assert_eq!(
        with_bearer(&proxy, "/ip", Some(&token(&dir, "demo")))
            .await
            .status,
        200
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn audiences_headers_and_several_issuers() {
    let dir = tokens("aud", ISSUER);
    let other = tokens("other", "someone@else");
    let jwks = std::fs::read_to_string(dir.join("jwks.json")).unwrap();
    let other_jwks = std::fs::read_to_string(other.join("jwks.json")).unwrap();
    let rules = format!(
        "  - issuer: testing@secure.istio.io\n    jwks: '{jwks}'\n    audiences: [weft-test]\n    fromHeaders: [{{name: x-token, prefix: 'Token '}}]\n    forwardOriginalToken: true\n  - issuer: someone@else\n    jwks: '{other_jwks}'\n"
    );
    let (proxy, _backend) = guarded(vec![jwt_filter(&rules)]).await;
    let send = |t: String| {
        let addr = proxy.addr;
        async move { get_with(addr, "/ip", &[("x-token", &format!("Token {t}"))]).await }
    };
    let r = send(token(&dir, "audience")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("x-token: Token "), "forwarded: {}", r.body);
    let r = send(token(&dir, "demo")).await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (403, "Audiences in Jwt are not allowed")
    );
    // This rule does not look in Authorization; the other issuer's rule
    // does, and the token is not its issuer's.
    let r = with_bearer(&proxy, "/ip", Some(&token(&dir, "audience"))).await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (401, "Jwt issuer is not configured")
    );
    // The second issuer's rule takes its own tokens (from the default
    // places); the first issuer's keys do not verify them.
    let r = with_bearer(&proxy, "/ip", Some(&token(&other, "demo"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = with_bearer(&proxy, "/ip", Some(&token(&other, "wrong-key"))).await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (401, "Jwt verification fails")
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}
