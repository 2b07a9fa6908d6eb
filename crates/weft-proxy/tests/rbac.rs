//! The RBAC filter on loopback, as istiod writes it for AuthorizationPolicy:
//! a table of policies and requests, each answered by the upstream or with
//! 403 `RBAC: access denied`.

mod support;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, rbac, Permission, Policy, Principal, Rbac as Rules,
};
use envoy_types::pb::envoy::config::route::v3::{header_matcher, HeaderMatcher};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    path_matcher, string_matcher::MatchPattern, PathMatcher, StringMatcher,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;
use prost::Message;
use support::*;

fn string(p: MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ..Default::default()
    }
}

fn header(name: &str, p: MatchPattern) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(string(p))),
        ..Default::default()
    }
}

fn perm(r: permission::Rule) -> Permission {
    Permission { rule: Some(r) }
}

fn who(i: principal::Identifier) -> Principal {
    Principal {
        identifier: Some(i),
    }
}

fn any_who() -> Principal {
    who(principal::Identifier::Any(true))
}

fn cidr(ip: &str, len: u32) -> CidrRange {
    CidrRange {
        address_prefix: ip.into(),
        prefix_len: Some(UInt32Value { value: len }),
    }
}

/// GET on /headers and below, from anyone.
fn get_headers() -> Policy {
    Policy {
        permissions: vec![perm(permission::Rule::AndRules(permission::Set {
            rules: vec![
                perm(permission::Rule::Header(header(
                    ":method",
                    MatchPattern::Exact("GET".into()),
                ))),
                perm(permission::Rule::UrlPath(PathMatcher {
                    rule: Some(path_matcher::Rule::Path(string(MatchPattern::Prefix(
                        "/headers".into(),
                    )))),
                })),
            ],
        }))],
        principals: vec![any_who()],
        ..Default::default()
    }
}

fn rules(action: rbac::Action, policies: Vec<Policy>) -> Rules {
    Rules {
        action: action as i32,
        policies: policies
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("rule[{i}]"), p))
            .collect(),
        ..Default::default()
    }
}

/// The standard listener with RBAC filters in front.
fn guarded(addr: std::net::SocketAddr, filters: Vec<Option<Rules>>) -> Listener {
    guarded_routes(addr, vec![route_to("c")], filters)
}

fn guarded_routes(
    addr: std::net::SocketAddr,
    routes: Vec<envoy_types::pb::envoy::config::route::v3::Route>,
    filters: Vec<Option<Rules>>,
) -> Listener {
    let mut l = listener(addr, routes);
    let f = &mut l.filter_chains[0].filters[0];
    let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
        panic!()
    };
    let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    let mut front: Vec<HttpFilter> = filters
        .into_iter()
        .map(|rules| HttpFilter {
            name: "envoy.filters.http.rbac".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(Rbac {
                rules,
                ..Default::default()
            }))),
            ..Default::default()
        })
        .collect();
    front.append(&mut hcm.http_filters);
    hcm.http_filters = front;
    *any = pack_any(hcm);
    l
}

async fn status(p: &Proxy, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", p.addr));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = send(
        p.addr,
        req.body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    (r.status.as_u16(), r.body)
}

#[tokio::test]
async fn policies_allow_and_deny_as_istio_writes_them() {
    let up = upstream("app", None).await;
    let allow = |policies| Some(rules(rbac::Action::Allow, policies));
    let deny = |policies| Some(rules(rbac::Action::Deny, policies));
    // DENY when x-token is not admin (Istio's "explicit deny": notValues).
    let not_admin = Policy {
        permissions: vec![perm(permission::Rule::Any(true))],
        principals: vec![who(principal::Identifier::NotId(Box::new(who(
            principal::Identifier::Header(header("x-token", MatchPattern::Exact("admin".into()))),
        ))))],
        ..Default::default()
    };
    let from = |ip: &str, len: u32| Policy {
        permissions: vec![perm(permission::Rule::Any(true))],
        principals: vec![who(principal::Identifier::DirectRemoteIp(cidr(ip, len)))],
        ..Default::default()
    };
    let mtls_only = Policy {
        permissions: vec![perm(permission::Rule::Any(true))],
        principals: vec![who(principal::Identifier::Authenticated(
            principal::Authenticated {
                principal_name: Some(string(MatchPattern::Suffix("/sa/curl".into()))),
            },
        ))],
        ..Default::default()
    };
    type Case<'a> = (
        &'a str,
        Vec<Option<Rules>>,
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        u16,
    );
    let cases: Vec<Case> = vec![
        ("no rules: all pass", vec![None], "GET", "/ip", &[], 200),
        (
            "allow nothing",
            vec![allow(vec![])],
            "GET",
            "/headers",
            &[],
            403,
        ),
        (
            "allow GET /headers*",
            vec![allow(vec![get_headers()])],
            "GET",
            "/headers/x",
            &[],
            200,
        ),
        (
            "… not /ip",
            vec![allow(vec![get_headers()])],
            "GET",
            "/ip",
            &[],
            403,
        ),
        (
            "… not POST",
            vec![allow(vec![get_headers()])],
            "POST",
            "/headers",
            &[],
            403,
        ),
        (
            "deny without admin token",
            vec![deny(vec![not_admin.clone()])],
            "GET",
            "/get",
            &[],
            403,
        ),
        (
            "… with it",
            vec![deny(vec![not_admin.clone()])],
            "GET",
            "/get",
            &[("x-token", "admin")],
            200,
        ),
        (
            "deny first, then allow",
            vec![deny(vec![not_admin]), allow(vec![get_headers()])],
            "GET",
            "/headers",
            &[("x-token", "admin")],
            200,
        ),
        (
            "allow loopback peers",
            vec![allow(vec![from("127.0.0.0", 8)])],
            "GET",
            "/ip",
            &[],
            200,
        ),
        (
            "allow other peers only",
            vec![allow(vec![from("198.18.0.0", 15)])],
            "GET",
            "/ip",
            &[],
            403,
        ),
        (
            "an identity needs mTLS",
            vec![allow(vec![mtls_only])],
            "GET",
            "/ip",
            &[],
            403,
        ),
    ];
    for (what, filters, method, path, headers, want) in cases {
        let p = serve(vec![static_cluster("c", &[up.addr])], |addr| {
            guarded(addr, filters)
        });
        let (got, body) = status(&p, method, path, headers).await;
        assert_eq!(got, want, "{what}: {body}");
        if want == 403 {
            assert_eq!(body, "RBAC: access denied", "{what}");
        }
    }
}

/// At the edge (`use_remote_address`, one trusted proxy in front) the
/// client `remote_ip` (Istio's `remoteIpBlocks`) reads is the one the
/// trusted proxy wrote into `x-forwarded-for`; `direct_remote_ip` still
/// reads the peer. The upstream sees the peer appended and the client as
/// `x-envoy-external-address`.
#[tokio::test]
async fn remote_ip_is_the_client_behind_the_trusted_proxies() {
    let up = upstream("app", None).await;
    let policy = |i: principal::Identifier| Policy {
        permissions: vec![perm(permission::Rule::Any(true))],
        principals: vec![who(i)],
        ..Default::default()
    };
    let edge = |addr, rules: Rules| {
        let mut l = guarded(addr, vec![Some(rules)]);
        let Some(filter::ConfigType::TypedConfig(any)) =
            &mut l.filter_chains[0].filters[0].config_type
        else {
            panic!()
        };
        let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        hcm.use_remote_address = Some(envoy_types::pb::google::protobuf::BoolValue { value: true });
        hcm.xff_num_trusted_hops = 1;
        *any = pack_any(hcm);
        l
    };
    let remote = rules(
        rbac::Action::Allow,
        vec![policy(principal::Identifier::RemoteIp(cidr("5.6.7.0", 24)))],
    );
    let p = serve(vec![static_cluster("c", &[up.addr])], |addr| {
        edge(addr, remote)
    });
    let (code, body) = status(&p, "GET", "/ip", &[("x-forwarded-for", "9.9.9.9, 5.6.7.8")]).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("x-forwarded-for: 9.9.9.9, 5.6.7.8,127.0.0.1\n"),
        "{body}"
    );
    assert!(
        body.contains("x-envoy-external-address: 5.6.7.8\n"),
        "{body}"
    );
    let (code, _) = status(&p, "GET", "/ip", &[("x-forwarded-for", "5.6.7.8, 9.9.9.9")]).await;
    assert_eq!(code, 403, "the last hop's word is the client");
    assert_eq!(
        status(&p, "GET", "/ip", &[]).await.0,
        403,
        "no header: the peer"
    );
    let direct = rules(
        rbac::Action::Allow,
        vec![policy(principal::Identifier::DirectRemoteIp(cidr(
            "127.0.0.0",
            8,
        )))],
    );
    let p = serve(vec![static_cluster("c", &[up.addr])], |addr| {
        edge(addr, direct)
    });
    let (code, _) = status(&p, "GET", "/ip", &[("x-forwarded-for", "5.6.7.8")]).await;
    assert_eq!(code, 200, "ipBlocks read the peer");
}

/// A policy applied while a connection is kept alive holds for its next
/// request (Envoy drains connections of a changed chain).
#[tokio::test]
async fn kept_alive_connections_follow_a_new_policy() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    let up = upstream("app", None).await;
    let mut p = serve(vec![static_cluster("c", &[up.addr])], |addr| {
        guarded(addr, vec![None])
    });
    let s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let get = || {
        http::Request::get(format!("http://{}/ip", p.addr))
            .body(Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    let r = sender.send_request(get()).await.unwrap();
    assert_eq!(r.status(), 200);
    r.into_body().collect().await.unwrap();
    let denied = guarded(p.addr, vec![Some(rules(rbac::Action::Allow, vec![]))]);
    p.inner.apply(LISTENER, &[pack_any(denied)]).unwrap();
    let r = sender.send_request(get()).await.unwrap();
    assert_eq!(r.status(), 403, "the same connection, the new policy");
}

/// Network RBAC in front of a TCP proxy: a denied connection is closed
/// before any upstream is dialled; an allowed one carries bytes.
#[tokio::test]
async fn tcp_connections_are_allowed_or_closed() {
    use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain};
    use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = tcp_echo().await;
    let tcp_listener = |addr, rules: Rules| Listener {
        name: "tcp".into(),
        address: Some(socket(addr)),
        filter_chains: vec![FilterChain {
            filters: vec![
                Filter {
                    name: "envoy.filters.network.rbac".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(pack_any(NetworkRbac {
                        rules: Some(rules),
                        stat_prefix: "tcp.".into(),
                        ..Default::default()
                    }))),
                },
                tcp_proxy_filter("e"),
            ],
            ..Default::default()
        }],
        ..Default::default()
    };
    let loopback = Policy {
        permissions: vec![perm(permission::Rule::DestinationPort(0))],
        principals: vec![who(principal::Identifier::DirectRemoteIp(cidr(
            "127.0.0.0",
            8,
        )))],
        ..Default::default()
    };
    for (what, policy_port, want_echo) in [("port matches", true, true), ("no match", false, false)]
    {
        let p = serve(
            vec![static_cluster("e", &[echo])],
            |addr: std::net::SocketAddr| {
                let mut policy = loopback.clone();
                let port = if policy_port { addr.port() } else { 1 };
                policy.permissions = vec![perm(permission::Rule::DestinationPort(u32::from(port)))];
                tcp_listener(addr, rules(rbac::Action::Allow, vec![policy]))
            },
        );
        let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        let _ = s.write_all(b"ping").await;
        let mut buf = [0u8; 4];
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer or a close");
        match got {
            Ok(4) => assert!(want_echo, "{what}: bytes went through"),
            _ => assert!(!want_echo, "{what}: closed"),
        }
    }
}

/// The filters run before the router: a request no route takes is
/// denied (403) when a policy denies it, and only otherwise 404.
#[tokio::test]
async fn a_denied_request_is_403_even_without_a_route() {
    use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
    let up = upstream("c", None).await;
    let mut only_ok = route_to("c");
    only_ok.r#match.as_mut().unwrap().path_specifier = Some(PathSpecifier::Prefix("/ok".into()));
    let deny_all = serve(vec![static_cluster("c", &[up.addr])], |addr| {
        guarded_routes(
            addr,
            vec![only_ok.clone()],
            vec![Some(rules(rbac::Action::Allow, vec![]))],
        )
    });
    assert_eq!(status(&deny_all, "GET", "/missing", &[]).await.0, 403);
    let allow_all = serve(vec![static_cluster("c", &[up.addr])], |addr| {
        guarded_routes(
            addr,
            vec![only_ok.clone()],
            vec![Some(rules(rbac::Action::Deny, vec![]))],
        )
    });
    assert_eq!(status(&allow_all, "GET", "/missing", &[]).await.0, 404);
    assert_eq!(status(&allow_all, "GET", "/ok", &[]).await.0, 200);
}
