//! The proxy on loopback, one scenario per test: HTTP filters (fault), the
//! router's timeouts and retries, redirects, direct responses, rewrites
//! and header mutations, each through real sockets.

mod support;

use std::collections::HashMap;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
};
use envoy_types::pb::envoy::config::route::v3::{
    redirect_action, retry_policy, route, DirectResponseAction, RedirectAction, RetryPolicy,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{fault_delay, FaultDelay};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    fault_abort, FaultAbort, HttpFault,
};
use envoy_types::pb::envoy::r#type::v3::{fractional_percent::DenominatorType, FractionalPercent};
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};
use envoy_types::util::pack_any;
use support::*;

fn millis(ms: u64) -> PbDuration {
    PbDuration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

fn percent(p: u32) -> Option<FractionalPercent> {
    Some(FractionalPercent {
        numerator: p,
        denominator: DenominatorType::Hundred as i32,
    })
}

/// A route with the fault filter's per-route config.
fn with_fault(
    mut r: envoy_types::pb::envoy::config::route::v3::Route,
    f: HttpFault,
) -> envoy_types::pb::envoy::config::route::v3::Route {
    r.typed_per_filter_config
        .insert("envoy.filters.http.fault".into(), pack_any(f));
    r
}

fn abort(status: u32, pct: u32) -> HttpFault {
    HttpFault {
        abort: Some(FaultAbort {
            error_type: Some(fault_abort::ErrorType::HttpStatus(status)),
            percentage: percent(pct),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn delay(ms: u64, pct: u32) -> HttpFault {
    HttpFault {
        delay: Some(FaultDelay {
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(millis(ms))),
            percentage: percent(pct),
        }),
        ..Default::default()
    }
}

/// Istio's default retry policy, as istiod sends it.
#[tokio::test]
async fn plain_route_forwards() {
    let up = upstream("a", None).await;
    let p = proxy(vec![static_cluster("c", &[up.addr])], vec![route_to("c")]);
    let r = get(p.addr, "/hello?x=1").await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("a\n/hello?x=1\n"), "{}", r.body);
    assert!(r.body.contains("x-request-id: "), "{}", r.body);
}

/// A STRICT_DNS cluster (a DNS ServiceEntry's) reaches its host by name,
/// looked up with the system resolver once the cluster arrives.
#[tokio::test]
async fn dns_clusters_reach_their_hosts_by_name() {
    use envoy_types::pb::envoy::config::cluster::v3::cluster;
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
    let up = upstream("named", None).await;
    let mut c = static_cluster("by-name", &[up.addr]);
    c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
        cluster::DiscoveryType::StrictDns as i32,
    ));
    c.dns_lookup_family = cluster::DnsLookupFamily::V4Only as i32;
    let lb = &mut c.load_assignment.as_mut().unwrap().endpoints[0].lb_endpoints[0];
    let Some(envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(
        e,
    )) = &mut lb.host_identifier
    else {
        panic!()
    };
    let Some(address::Address::SocketAddress(sa)) =
        e.address.as_mut().and_then(|a| a.address.as_mut())
    else {
        panic!()
    };
    sa.address = "localhost".into();
    assert!(matches!(
        sa.port_specifier,
        Some(socket_address::PortSpecifier::PortValue(_))
    ));
    let p = proxy(vec![c], vec![route_to("by-name")]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(p.addr, "/").await;
        if r.status == 200 {
            assert!(r.body.starts_with("named\n"), "{}", r.body);
            break;
        }
        assert_eq!(r.status, 503, "no host until the name is looked up");
        assert!(Instant::now() < deadline, "localhost never resolved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn fault_abort_answers_for_the_upstream() {
    let up = upstream("a", None).await;
    let route = with_fault(route_to("c"), abort(418, 100));
    let p = proxy(vec![static_cluster("c", &[up.addr])], vec![route]);
    let r = get(p.addr, "/").await;
    assert_eq!(r.status, 418);
    assert_eq!(r.body, "fault filter abort");
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn fault_abort_of_half_hits_half() {
    let up = upstream("a", None).await;
    let route = with_fault(route_to("c"), abort(503, 50));
    let p = proxy(vec![static_cluster("c", &[up.addr])], vec![route]);
    let seen = statuses(p.addr, "/", 400).await;
    let aborted = seen.get(&503).copied().unwrap_or(0);
    assert_share(&format!("aborted {seen:?}"), aborted, 400, 0.5);
    assert_eq!(seen.values().sum::<usize>(), 400);
}

#[tokio::test]
async fn fault_delay_holds_the_request() {
    let up = upstream("a", None).await;
    let delay = delay(300, 100);
    let p = proxy(
        vec![static_cluster("c", &[up.addr])],
        vec![with_fault(route_to("c"), delay)],
    );
    let start = Instant::now();
    let r = get(p.addr, "/").await;
    assert_eq!(r.status, 200);
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn route_timeout_is_504_upstream_request_timeout() {
    let up = upstream("a", None).await;
    let mut route = route_to("c");
    action(&mut route).timeout = Some(millis(200));
    let p = proxy(vec![static_cluster("c", &[up.addr])], vec![route]);
    let r = get(p.addr, "/delay/2000").await;
    assert_eq!(r.status, 504);
    assert_eq!(r.body, "upstream request timeout");
    assert_eq!(get(p.addr, "/delay/10").await.status, 200);
}

#[tokio::test]
async fn default_retries_hide_an_upstream_failing_one_in_three() {
    let up = upstream("a", Some(3)).await;
    let mut route = route_to("c");
    action(&mut route).retry_policy = Some(istio_default_retries());
    let p = proxy(vec![static_cluster("c", &[up.addr])], vec![route]);
    let seen = statuses(p.addr, "/", 300).await;
    assert_eq!(seen.get(&200), Some(&300), "{seen:?}");
    assert!(
        up.requests.load(Ordering::SeqCst) > 300,
        "failed tries were retried"
    );
}

#[tokio::test]
async fn without_retries_the_failure_reaches_the_client() {
    let up = upstream("a", Some(3)).await;
    let p = proxy(vec![static_cluster("c", &[up.addr])], vec![route_to("c")]);
    let seen = statuses(p.addr, "/", 30).await;
    assert_eq!(seen.get(&503), Some(&10), "{seen:?}");
}

#[tokio::test]
async fn exhausted_retries_pass_the_last_response_on() {
    let up = upstream("a", None).await;
    let mut route = route_to("c");
    action(&mut route).retry_policy = Some(istio_default_retries());
    let p = proxy(vec![static_cluster("c", &[up.addr])], vec![route]);
    let r = get(p.addr, "/status/503").await;
    assert_eq!(r.status, 503);
    assert!(
        r.body.starts_with("a\n"),
        "the upstream's own response: {}",
        r.body
    );
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        3,
        "one try and two retries"
    );
}

#[tokio::test]
async fn a_dead_endpoint_is_retried_on_another_host() {
    let up = upstream("a", None).await;
    let dead = free_port();
    let mut route = route_to("c");
    action(&mut route).retry_policy = Some(istio_default_retries());
    let p = proxy(vec![static_cluster("c", &[dead, up.addr])], vec![route]);
    let seen = statuses(p.addr, "/", 20).await;
    assert_eq!(seen.get(&200), Some(&20), "{seen:?}");
}

#[tokio::test]
async fn a_dead_upstream_without_retries_is_503_connect_failure() {
    let dead = free_port();
    let p = proxy(vec![static_cluster("c", &[dead])], vec![route_to("c")]);
    let r = get(p.addr, "/").await;
    assert_eq!(r.status, 503);
    assert!(
        r.body.ends_with("reset reason: connection failure"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn per_try_timeout_moves_on_to_the_next_try() {
    let up = upstream("a", None).await;
    let mut route = route_to("c");
    action(&mut route).retry_policy = Some(RetryPolicy {
        retry_on: "5xx".into(),
        num_retries: Some(UInt32Value { value: 2 }),
        per_try_timeout: Some(millis(100)),
        ..Default::default()
    });
    let p = proxy(vec![static_cluster("c", &[up.addr])], vec![route]);
    let r = get(p.addr, "/delay/1000").await;
    assert_eq!(r.status, 504);
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        3,
        "each try timed out in turn"
    );
}

#[tokio::test]
async fn post_bodies_are_replayed_on_retry() {
    let up = upstream("a", Some(2)).await;
    let mut route = route_to("c");
    action(&mut route).retry_policy = Some(istio_default_retries());
    let p = proxy(vec![static_cluster("c", &[up.addr])], vec![route]);
    let req = http::Request::post("/submit")
        .header("host", "test.local")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"payload",
        )))
        .unwrap();
    let first = send(p.addr, req).await;
    assert_eq!(first.status, 200);
    let req = http::Request::post("/submit")
        .header("host", "test.local")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"payload",
        )))
        .unwrap();
    let retried = send(p.addr, req).await;
    assert_eq!(
        retried.status, 200,
        "the second request's first try got 503"
    );
    assert!(retried.body.ends_with("payload"), "{}", retried.body);
}

#[tokio::test]
async fn direct_response_answers_with_its_body() {
    let mut route = route_to("c");
    route.action = Some(route::Action::DirectResponse(DirectResponseAction {
        status: 418,
        body: Some(envoy_types::pb::envoy::config::core::v3::DataSource {
            specifier: Some(
                envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineString(
                    "short and stout".into(),
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }));
    let p = proxy(vec![], vec![route]);
    let r = get(p.addr, "/teapot").await;
    assert_eq!(r.status, 418);
    assert_eq!(r.body, "short and stout");
}

#[tokio::test]
async fn redirect_swaps_the_parts_it_names() {
    let mut route = route_to("c");
    route.action = Some(route::Action::Redirect(RedirectAction {
        host_redirect: "new.example".into(),
        path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::PathRedirect(
            "/v2/login".into(),
        )),
        scheme_rewrite_specifier: Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(
            "https".into(),
        )),
        response_code: redirect_action::RedirectResponseCode::PermanentRedirect as i32,
        ..Default::default()
    }));
    let p = proxy(vec![], vec![route]);
    let r = get(p.addr, "/login?next=home").await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.headers["location"],
        "https://new.example/v2/login?next=home"
    );
}

#[tokio::test]
async fn prefix_and_host_rewrites_reach_the_upstream() {
    let up = upstream("a", None).await;
    let mut route = route_to("c");
    if let Some(envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier::Prefix(p)) =
        route
            .r#match
            .as_mut()
            .and_then(|m| m.path_specifier.as_mut())
    {
        *p = "/old".into();
    }
    let a = action(&mut route);
    a.prefix_rewrite = "/new".into();
    a.host_rewrite_specifier = Some(
        envoy_types::pb::envoy::config::route::v3::route_action::HostRewriteSpecifier::HostRewriteLiteral(
            "rewritten.local".into(),
        ),
    );
    let p = proxy(vec![static_cluster("c", &[up.addr])], vec![route]);
    let r = get(p.addr, "/old/page?q=1").await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("a\n/new/page?q=1\n"), "{}", r.body);
    assert!(r.body.contains("host: rewritten.local"), "{}", r.body);
    assert!(
        r.body.contains("x-envoy-original-path: /old/page?q=1"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn header_mutations_on_request_and_response() {
    let up = upstream("a", None).await;
    let mut route = route_to("c");
    let set = |k: &str, v: &str, action: HeaderAppendAction| HeaderValueOption {
        header: Some(HeaderValue {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    };
    route.request_headers_to_add = vec![set(
        "x-set",
        "mesh",
        HeaderAppendAction::OverwriteIfExistsOrAdd,
    )];
    route.request_headers_to_remove = vec!["x-secret".into()];
    route.response_headers_to_add = vec![set(
        "x-served-by",
        "weft",
        HeaderAppendAction::AppendIfExistsOrAdd,
    )];
    route.response_headers_to_remove = vec!["x-upstream".into()];
    let p = proxy(vec![static_cluster("c", &[up.addr])], vec![route]);
    let r = get_with(p.addr, "/", &[("x-set", "client"), ("x-secret", "s3cr3t")]).await;
    assert!(r.body.contains("x-set: mesh"), "{}", r.body);
    assert!(!r.body.contains("client"), "{}", r.body);
    assert!(!r.body.contains("s3cr3t"), "{}", r.body);
    assert_eq!(r.headers["x-served-by"], "weft");
    assert!(!r.headers.contains_key("x-upstream"));
}

#[tokio::test]
async fn an_unknown_http_filter_is_rejected_with_its_name() {
    let mut p = proxy(vec![], vec![route_to("c")]);
    let mut l = listener(free_port(), vec![route_to("c")]);
    let mut hcm: envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager =
        weft_proxy_unpack(&l);
    hcm.http_filters.insert(
        0,
        envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter {
            name: "envoy.filters.http.lua".into(),
            ..Default::default()
        },
    );
    l.filter_chains[0].filters[0].config_type = Some(
        envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(pack_any(
            hcm,
        )),
    );
    let err = p.inner.apply(LISTENER, &[pack_any(l)]).unwrap_err();
    assert!(err.contains("envoy.filters.http.lua"), "{err}");
    assert_eq!(
        get(p.addr, "/").await.status,
        503,
        "the old listener still serves"
    );
}

fn weft_proxy_unpack<M: prost::Message + Default>(
    l: &envoy_types::pb::envoy::config::listener::v3::Listener,
) -> M {
    match &l.filter_chains[0].filters[0].config_type {
        Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(
            any,
        )) => M::decode(any.value.as_slice()).unwrap(),
        _ => panic!("no typed config"),
    }
}

fn mirror_to(
    cluster: &str,
) -> envoy_types::pb::envoy::config::route::v3::route_action::RequestMirrorPolicy {
    envoy_types::pb::envoy::config::route::v3::route_action::RequestMirrorPolicy {
        cluster: cluster.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn mirrors_get_a_copy_and_the_client_gets_the_main_answer() {
    let main = upstream("main", None).await;
    let shadow = upstream("shadow", None).await;
    let mut route = route_to("main");
    action(&mut route).request_mirror_policies = vec![mirror_to("shadow")];
    let clusters = vec![
        static_cluster("main", &[main.addr]),
        static_cluster("shadow", &[shadow.addr]),
    ];
    let p = proxy(clusters, vec![route]);
    for _ in 0..10 {
        let r = get(p.addr, "/copy").await;
        assert!(r.body.starts_with("main\n"), "{}", r.body);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while shadow.requests.load(Ordering::SeqCst) < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(shadow.requests.load(Ordering::SeqCst), 10);
    assert_eq!(main.requests.load(Ordering::SeqCst), 10);
}

#[tokio::test]
async fn a_dead_mirror_never_fails_the_main_request() {
    let main = upstream("main", None).await;
    let mut route = route_to("main");
    action(&mut route).request_mirror_policies = vec![mirror_to("dead"), mirror_to("missing")];
    let clusters = vec![
        static_cluster("main", &[main.addr]),
        static_cluster("dead", &[free_port()]),
    ];
    let p = proxy(clusters, vec![route]);
    let seen = statuses(p.addr, "/", 20).await;
    assert_eq!(seen.get(&200), Some(&20), "{seen:?}");
}

/// Istio's circuit-breaking settings (one connection, one pending request,
/// one request per connection): of five concurrent requests, one is
/// served, one waits for the connection and is served next, and three
/// overflow with 503 UO.
#[tokio::test]
async fn circuit_breaker_overflow_is_503_uo() {
    use envoy_types::pb::envoy::config::cluster::v3::{
        circuit_breakers::Thresholds, CircuitBreakers,
    };
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
    let up = upstream("a", None).await;
    let mut cluster = static_cluster("c", &[up.addr]);
    let one = Some(UInt32Value { value: 1 });
    cluster.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![Thresholds {
            max_connections: one,
            max_pending_requests: one,
            ..Default::default()
        }],
        ..Default::default()
    });
    let options = HttpProtocolOptions {
        common_http_protocol_options: Some(
            envoy_types::pb::envoy::config::core::v3::HttpProtocolOptions {
                max_requests_per_connection: one,
                ..Default::default()
            },
        ),
        ..Default::default()
    };
    cluster.typed_extension_protocol_options.insert(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
        pack_any(options),
    );
    let p = proxy(vec![cluster], vec![route_to("c")]);
    let calls: Vec<_> = (0..5)
        .map(|_| tokio::spawn(get(p.addr, "/delay/300")))
        .collect();
    let mut ok = 0;
    let mut overflow = 0;
    for c in calls {
        let r = c.await.unwrap();
        match r.status.as_u16() {
            200 => ok += 1,
            503 => {
                assert!(r.body.ends_with("reset reason: overflow"), "{}", r.body);
                overflow += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!((ok, overflow), (2, 3));
    assert_eq!(up.requests.load(Ordering::SeqCst), 2);
}

fn with_outlier_detection(
    mut c: envoy_types::pb::envoy::config::cluster::v3::Cluster,
) -> envoy_types::pb::envoy::config::cluster::v3::Cluster {
    use envoy_types::pb::envoy::config::cluster::v3::{cluster::CommonLbConfig, OutlierDetection};
    c.outlier_detection = Some(OutlierDetection {
        consecutive_5xx: Some(UInt32Value { value: 1 }),
        interval: Some(millis(1000)),
        base_ejection_time: Some(millis(60_000)),
        max_ejection_percent: Some(UInt32Value { value: 100 }),
        ..Default::default()
    });
    c.common_lb_config = Some(CommonLbConfig {
        healthy_panic_threshold: Some(envoy_types::pb::envoy::r#type::v3::Percent { value: 0.0 }),
        ..Default::default()
    });
    c
}

#[tokio::test]
async fn outlier_detection_ejects_the_failing_host() {
    let good = upstream("good", None).await;
    let bad = upstream("bad", Some(1)).await;
    let cluster = with_outlier_detection(static_cluster("c", &[bad.addr, good.addr]));
    let p = proxy(vec![cluster], vec![route_to("c")]);
    let seen = statuses(p.addr, "/", 20).await;
    assert_eq!(
        bad.requests.load(Ordering::SeqCst),
        1,
        "ejected after its first 5xx"
    );
    assert_eq!(seen.get(&200), Some(&19), "{seen:?}");
}

#[tokio::test]
async fn all_hosts_ejected_is_503_no_healthy_upstream() {
    let bad = upstream("bad", Some(1)).await;
    let cluster = with_outlier_detection(static_cluster("c", &[bad.addr]));
    let p = proxy(vec![cluster], vec![route_to("c")]);
    assert!(get(p.addr, "/").await.body.starts_with("bad\n"));
    let r = get(p.addr, "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "no healthy upstream");
    assert_eq!(bad.requests.load(Ordering::SeqCst), 1);
}

fn hashed_route(
    policy: envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::PolicySpecifier,
) -> envoy_types::pb::envoy::config::route::v3::Route {
    let mut route = route_to("c");
    action(&mut route).hash_policy = vec![
        envoy_types::pb::envoy::config::route::v3::route_action::HashPolicy {
            policy_specifier: Some(policy),
            ..Default::default()
        },
    ];
    route
}

async fn ring_of_three() -> (
    Vec<support::Upstream>,
    envoy_types::pb::envoy::config::cluster::v3::Cluster,
) {
    let ups = vec![
        upstream("u0", None).await,
        upstream("u1", None).await,
        upstream("u2", None).await,
    ];
    let mut cluster = static_cluster("c", &ups.iter().map(|u| u.addr).collect::<Vec<_>>());
    cluster.lb_policy =
        envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy::RingHash as i32;
    (ups, cluster)
}

#[tokio::test]
async fn ring_hash_keeps_each_header_value_on_one_host() {
    use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::{
        Header, PolicySpecifier,
    };
    let (_ups, cluster) = ring_of_three().await;
    let route = hashed_route(PolicySpecifier::Header(Header {
        header_name: "x-user".into(),
        ..Default::default()
    }));
    let p = proxy(vec![cluster], vec![route]);
    let mut hosts_seen = std::collections::HashSet::new();
    for user in 0..12 {
        let user = format!("user-{user}");
        let first = get_with(p.addr, "/", &[("x-user", &user)]).await.body[..2].to_string();
        for _ in 0..5 {
            let again = get_with(p.addr, "/", &[("x-user", &user)]).await;
            assert_eq!(&again.body[..2], first, "{user} moved");
        }
        hosts_seen.insert(first);
    }
    assert!(
        hosts_seen.len() > 1,
        "users spread over hosts: {hosts_seen:?}"
    );
}

#[tokio::test]
async fn a_generated_cookie_pins_the_client() {
    use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::{
        Cookie, PolicySpecifier,
    };
    let (_ups, cluster) = ring_of_three().await;
    let route = hashed_route(PolicySpecifier::Cookie(Cookie {
        name: "session".into(),
        ttl: Some(millis(60_000)),
        path: "/".into(),
        ..Default::default()
    }));
    let p = proxy(vec![cluster], vec![route]);
    let first = get(p.addr, "/").await;
    let set = first.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.starts_with("session=\"") && set.contains("Max-Age=60") && set.contains("Path=/"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    for _ in 0..10 {
        let r = get_with(p.addr, "/", &[("cookie", &cookie)]).await;
        assert_eq!(&r.body[..2], &first.body[..2]);
        assert!(
            !r.headers.contains_key("set-cookie"),
            "a client with the cookie keeps it"
        );
    }
}

fn with_cors(
    mut route: envoy_types::pb::envoy::config::route::v3::Route,
) -> envoy_types::pb::envoy::config::route::v3::Route {
    use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
    use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
    let policy = CorsPolicy {
        allow_origin_string_match: vec![StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(
                "https://app.example".into(),
            )),
            ..Default::default()
        }],
        allow_methods: "GET,POST".into(),
        allow_headers: "x-token".into(),
        expose_headers: "x-upstream".into(),
        max_age: "600".into(),
        allow_credentials: Some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
        ..Default::default()
    };
    route
        .typed_per_filter_config
        .insert("envoy.filters.http.cors".into(), pack_any(policy));
    route
}

/// The CORS filter in the chain, as istiod lists it.
fn cors_proxy(
    clusters: Vec<envoy_types::pb::envoy::config::cluster::v3::Cluster>,
    route: envoy_types::pb::envoy::config::route::v3::Route,
) -> Proxy {
    serve(clusters, |addr| {
        with_cors_filter(listener(addr, vec![route]))
    })
}

fn with_cors_filter(
    mut l: envoy_types::pb::envoy::config::listener::v3::Listener,
) -> envoy_types::pb::envoy::config::listener::v3::Listener {
    let mut hcm: envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager =
        weft_proxy_unpack(&l);
    hcm.http_filters.insert(
        1,
        envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter {
            name: "envoy.filters.http.cors".into(),
            config_type: Some(envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(
                pack_any(envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors::default()),
            )),
            ..Default::default()
        },
    );
    l.filter_chains[0].filters[0].config_type = Some(
        envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(pack_any(
            hcm,
        )),
    );
    l
}

#[tokio::test]
async fn cors_preflight_is_answered_by_the_proxy() {
    let up = upstream("a", None).await;
    let p = cors_proxy(
        vec![static_cluster("c", &[up.addr])],
        with_cors(route_to("c")),
    );
    let req = http::Request::options("/api")
        .header("host", "test.local")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let r = send(p.addr, req).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(r.headers["access-control-allow-methods"], "GET,POST");
    assert_eq!(r.headers["access-control-allow-headers"], "x-token");
    assert_eq!(r.headers["access-control-max-age"], "600");
    assert_eq!(r.headers["access-control-allow-credentials"], "true");
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        0,
        "the preflight stays in the proxy"
    );
}

#[tokio::test]
async fn cors_headers_only_for_allowed_origins() {
    let up = upstream("a", None).await;
    let p = cors_proxy(
        vec![static_cluster("c", &[up.addr])],
        with_cors(route_to("c")),
    );
    let ok = get_with(p.addr, "/", &[("origin", "https://app.example")]).await;
    assert_eq!(
        ok.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(ok.headers["access-control-expose-headers"], "x-upstream");
    let other = get_with(p.addr, "/", &[("origin", "https://evil.example")]).await;
    assert_eq!(other.status, 200);
    assert!(!other.headers.contains_key("access-control-allow-origin"));
}

/// Endpoints in two priorities (two localities): the first takes every
/// request; once its host is ejected, the next takes over.
#[tokio::test]
async fn priorities_fail_over_when_the_local_hosts_are_ejected() {
    let near = upstream("near", Some(5)).await;
    let far = upstream("far", None).await;
    let cluster = with_outlier_detection(two_priorities("c", near.addr, &[far.addr]));
    let p = proxy(vec![cluster], vec![route_to("c")]);
    for i in 0..4 {
        let r = get(p.addr, "/").await;
        assert!(
            r.body.starts_with("near\n"),
            "request {i} stays near: {}",
            r.body
        );
    }
    // The fifth request fails on the near host, which is ejected.
    assert_eq!(get(p.addr, "/").await.status, 503);
    for i in 0..10 {
        let r = get(p.addr, "/").await;
        assert!(
            r.body.starts_with("far\n"),
            "request {i} fails over: {}",
            r.body
        );
    }
    assert_eq!(near.requests.load(Ordering::SeqCst), 5);
}

/// How many of `n` requests each upstream answered (by the first line of
/// the body, the upstream's name).
async fn answered_by(to: SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let r = get(to, "/").await;
        let name = r.body.lines().next().unwrap_or("").to_string();
        *seen.entry(name).or_default() += 1;
    }
    seen
}

/// Envoy's gradual failover: with half of the near level ejected, its
/// health is 1.4 × 1/2 = 70%, so 30% of requests spill to the far level
/// and the rest stay near.
#[tokio::test]
async fn a_half_ejected_priority_spills_a_share_to_the_next() {
    let good = upstream("near", None).await;
    let bad = upstream("bad", Some(1)).await;
    let far = upstream("far", None).await;
    let cluster = with_outlier_detection(localities(
        "c",
        &[(0, None, &[good.addr, bad.addr]), (1, None, &[far.addr])],
    ));
    let p = proxy(vec![cluster], vec![route_to("c")]);
    // Round robin reaches the bad host within two requests; it is ejected.
    statuses(p.addr, "/", 2).await;
    let seen = answered_by(p.addr, 300).await;
    assert_eq!(seen.get("bad"), None, "{seen:?}");
    let far = seen.get("far").copied().unwrap_or(0);
    assert_share(&format!("far {seen:?}"), far, 300, 0.3);
}

/// `locality_weighted_lb_config`: localities of one level share it by
/// their weights (80/20, as Istio's `distribute` writes them).
#[tokio::test]
async fn localities_share_a_priority_by_weight() {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{common_lb_config, CommonLbConfig};
    let a = upstream("a", None).await;
    let b = upstream("b", None).await;
    let mut cluster = localities("c", &[(0, Some(80), &[a.addr]), (0, Some(20), &[b.addr])]);
    cluster.common_lb_config = Some(CommonLbConfig {
        locality_config_specifier: Some(
            common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(Default::default()),
        ),
        ..Default::default()
    });
    let p = proxy(vec![cluster], vec![route_to("c")]);
    let seen = answered_by(p.addr, 300).await;
    let a = seen.get("a").copied().unwrap_or(0);
    assert_share(&format!("to a {seen:?}"), a, 300, 0.8);
}

/// A 2 s delay on 50% of requests: of 100 concurrent requests, about half
/// take at least 2 s, and the rest do not wait.
#[tokio::test]
async fn fault_delay_of_half_delays_half() {
    let up = upstream("a", None).await;
    let delay = delay(2000, 50);
    let p = proxy(
        vec![static_cluster("c", &[up.addr])],
        vec![with_fault(route_to("c"), delay)],
    );
    let calls: Vec<_> = (0..100)
        .map(|_| {
            tokio::spawn(async move {
                let start = Instant::now();
                let r = get(p.addr, "/").await;
                (r.status, start.elapsed())
            })
        })
        .collect();
    let mut delayed = 0;
    for c in calls {
        let (status, took) = c.await.unwrap();
        assert_eq!(status, 200);
        if took >= Duration::from_secs(2) {
            delayed += 1;
        } else {
            assert!(took < Duration::from_secs(1), "undelayed took {took:?}");
        }
    }
    assert_share("delayed", delayed, 100, 0.5);
}

/// An ejected host comes back once its ejection time has passed.
#[tokio::test]
async fn an_ejected_host_returns_after_its_ejection_time() {
    let good = upstream("good", None).await;
    let flaky = upstream("flaky", Some(2)).await;
    let mut cluster = with_outlier_detection(static_cluster("c", &[flaky.addr, good.addr]));
    if let Some(od) = cluster.outlier_detection.as_mut() {
        od.base_ejection_time = Some(millis(500));
    }
    let p = proxy(vec![cluster], vec![route_to("c")]);
    // Round robin: flaky's first request passes, its second fails and ejects it.
    let _ = statuses(p.addr, "/", 4).await;
    assert_eq!(flaky.requests.load(Ordering::SeqCst), 2);
    let _ = statuses(p.addr, "/", 10).await;
    assert_eq!(
        flaky.requests.load(Ordering::SeqCst),
        2,
        "nothing while ejected"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let _ = statuses(p.addr, "/", 10).await;
    assert!(
        flaky.requests.load(Ordering::SeqCst) > 2,
        "back after base_ejection_time"
    );
}

/// With the previous-priorities retry plugin (Istio's
/// `retryRemoteLocalities`), a failed try in the near locality is retried
/// in the next one.
#[tokio::test]
async fn retries_move_to_remote_localities() {
    let near = upstream("near", Some(1)).await;
    let far = upstream("far", None).await;
    let cluster = two_priorities("c", near.addr, &[far.addr]);
    let mut route = route_to("c");
    let mut retry = istio_default_retries();
    retry.retry_priority = Some(retry_policy::RetryPriority {
        name: "envoy.retry_priorities.previous_priorities".into(),
        ..Default::default()
    });
    action(&mut route).retry_policy = Some(retry);
    let p = proxy(vec![cluster], vec![route]);
    for i in 0..5 {
        let r = get(p.addr, "/").await;
        assert!(r.body.starts_with("far\n"), "request {i}: {}", r.body);
    }
    assert_eq!(
        near.requests.load(Ordering::SeqCst),
        5,
        "each first try stays near"
    );
}

/// A proxy whose one listener is `tcp` (its cluster set to "c") to `cluster`.
fn tcp_proxy(
    cluster: envoy_types::pb::envoy::config::cluster::v3::Cluster,
    tcp: envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy,
) -> Proxy {
    use envoy_types::pb::envoy::config::listener::v3::{filter::ConfigType, Filter};
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        tcp_proxy::ClusterSpecifier, TcpProxy,
    };
    let tcp = TcpProxy {
        stat_prefix: "c".into(),
        cluster_specifier: Some(ClusterSpecifier::Cluster("c".into())),
        ..tcp
    };
    serve(vec![cluster], move |addr| {
        let mut l = listener(addr, vec![]);
        l.filter_chains[0].filters[0] = Filter {
            name: "envoy.filters.network.tcp_proxy".into(),
            config_type: Some(ConfigType::TypedConfig(pack_any(tcp.clone()))),
        };
        l
    })
}

/// Opaque TCP honours the cluster's connection limit: over it, the
/// connection is closed at once (UO); a freed slot admits the next one.
#[tokio::test]
async fn tcp_connections_over_the_limit_are_closed() {
    use envoy_types::pb::envoy::config::cluster::v3::{
        circuit_breakers::Thresholds, CircuitBreakers,
    };
    use tokio::io::AsyncReadExt;
    let up = upstream("a", None).await;
    let mut cluster = static_cluster("c", &[up.addr]);
    cluster.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![Thresholds {
            max_connections: Some(UInt32Value { value: 1 }),
            ..Default::default()
        }],
        ..Default::default()
    });
    let p = tcp_proxy(cluster, Default::default());
    let addr = p.addr;
    let closed_soon = |mut s: tokio::net::TcpStream| async move {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await,
            Ok(Ok(0))
        )
    };
    let first = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(closed_soon(second).await, "over the limit: closed");
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(!closed_soon(third).await, "the freed slot admits the next");
}

/// tcp_proxy's idle timeout: bytes flow, and once neither side sends for
/// the timeout the proxy closes the connection.
#[tokio::test]
async fn quiet_tcp_connections_are_closed_after_the_idle_timeout() {
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upstream("a", None).await;
    let p = tcp_proxy(
        static_cluster("c", &[up.addr]),
        TcpProxy {
            idle_timeout: Some(millis(300)),
            ..Default::default()
        },
    );
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: c\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "the request went through"
    );
    // The upstream keeps its connection open; the proxy ends it.
    let end = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(end, Ok(Ok(0))), "closed when idle: {end:?}");
}

/// A cluster with `http2_protocol_options` speaks h2c to its hosts: an
/// HTTP/1.1 request arrives as HTTP/2 with its Host as `:authority`.
#[tokio::test]
async fn http2_clusters_send_http2_upstream() {
    let up = h2_upstream("h2").await;
    let p = proxy(
        vec![http2_cluster(static_cluster("c", &[up.addr]))],
        vec![route_to("c")],
    );
    let r = get(p.addr, "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "h2\n");
    assert_eq!(r.headers["x-version"], "HTTP/2.0");
    assert_eq!(r.headers["x-authority"], "test.local");
}

/// gRPC's shape end to end over h2c: `te: trailers` reaches the server and
/// the response's trailers (`grpc-status`) reach the client.
#[tokio::test]
async fn h2c_requests_keep_te_trailers_and_trailers_come_back() {
    let up = h2_upstream("grpc").await;
    let p = proxy(
        vec![http2_cluster(static_cluster("c", &[up.addr]))],
        vec![route_to("c")],
    );
    let req = Request::post("http://svc/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let (r, trailers) = send_h2(p.addr, req).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["x-te"], "trailers");
    let trailers = trailers.expect("trailers come back");
    assert_eq!(trailers["grpc-status"], "0");
}

/// A local reply to a gRPC request is gRPC's: HTTP 200, trailers-only,
/// `grpc-status` 14 (UNAVAILABLE) for Envoy's 503 and the text in
/// `grpc-message`.
#[tokio::test]
async fn grpc_requests_get_grpc_local_replies() {
    let p = proxy(vec![static_cluster("c", &[])], vec![route_to("c")]);
    let req = Request::post("http://svc/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (r, _) = send_h2(p.addr, req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/grpc");
    assert_eq!(r.headers["grpc-status"], "14");
    assert_eq!(r.headers["grpc-message"], "no healthy upstream");
    assert_eq!(r.body, "");
}

/// A WebSocket upgrade (the connection manager's `upgrade_configs`, as
/// istiod writes them) is switched through: 101 comes back with its
/// headers, then bytes flow both ways on the same connection.
#[tokio::test]
async fn websocket_upgrades_are_switched_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upgrade_echo_upstream().await;
    let p = proxy(vec![static_cluster("c", &[up])], vec![route_to("c")]);
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nhost: test.local\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"ping"[..], b"pong twice"] {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, msg);
    }
}

/// A route as istiod writes it for gRPC (`max_grpc_timeout`): a gRPC
/// call's `grpc-timeout` is its deadline, and on expiry the client gets
/// UNAVAILABLE with "upstream request timeout"; under
/// `max_stream_duration.grpc_timeout_header_max` (istiod's inbound routes)
/// it gets DEADLINE_EXCEEDED.
#[tokio::test]
async fn grpc_timeout_headers_set_the_deadline() {
    use envoy_types::pb::envoy::config::route::v3::route_action::MaxStreamDuration;
    let slow = upstream("slow", None).await;
    let call = || {
        Request::post("http://svc/delay/2000")
            .header("content-type", "application/grpc")
            .header("grpc-timeout", "200m")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let mut router_style = route_to("c");
    #[allow(deprecated)]
    {
        action(&mut router_style).max_grpc_timeout = Some(millis(0));
    }
    let p = proxy(vec![static_cluster("c", &[slow.addr])], vec![router_style]);
    let started = Instant::now();
    let (r, _) = send_h2(p.addr, call()).await;
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(r.headers["grpc-status"], "14", "{:?}", r.headers);
    assert_eq!(r.headers["grpc-message"], "upstream request timeout");
    let mut stream_style = route_to("c");
    action(&mut stream_style).max_stream_duration = Some(MaxStreamDuration {
        grpc_timeout_header_max: Some(millis(0)),
        ..Default::default()
    });
    let p = proxy(vec![static_cluster("c", &[slow.addr])], vec![stream_style]);
    let (r, _) = send_h2(p.addr, call()).await;
    assert_eq!(r.headers["grpc-status"], "4", "{:?}", r.headers);
    assert_eq!(r.headers["grpc-message"], "downstream duration timeout");
}

/// A body of unknown length (chunked; a gRPC call's over HTTP/2) streams
/// to the first try while a copy is kept, so Istio's default retry replays
/// it whole on the next try.
#[tokio::test]
async fn unsized_bodies_are_replayed_on_retry() {
    let up = upstream("a", Some(2)).await;
    let mut route = route_to("c");
    action(&mut route).retry_policy = Some(istio_default_retries());
    let p = proxy(vec![static_cluster("c", &[up.addr])], vec![route]);
    let chunked = || {
        Request::post("/submit")
            .header("host", "test.local")
            .body(Chunks(
                [&b"pay"[..], b"load"]
                    .into_iter()
                    .map(Bytes::from_static)
                    .collect(),
            ))
            .unwrap()
    };
    assert_eq!(send(p.addr, chunked()).await.status, 200);
    let retried = send(p.addr, chunked()).await;
    assert_eq!(
        retried.status, 200,
        "the first try got 503: {}",
        retried.body
    );
    assert!(retried.body.ends_with("payload"), "{}", retried.body);
    assert_eq!(up.requests.load(Ordering::SeqCst), 3);
}

/// Protocol sniffing (`http_inspector` and chains matched on
/// `application_protocols`): HTTP/1.1 and h2c take the HTTP chain, other
/// bytes the TCP chain.
#[tokio::test]
async fn sniffed_listeners_send_http_and_tcp_their_own_ways() {
    use envoy_types::pb::envoy::config::listener::v3::{FilterChainMatch, ListenerFilter};
    use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let http = upstream("http", None).await;
    let echo = tcp_echo().await;
    let p = serve(
        vec![
            static_cluster("c", &[http.addr]),
            static_cluster("e", &[echo]),
        ],
        |addr| {
            let mut l = listener(addr, vec![route_to("c")]);
            l.listener_filters.push(ListenerFilter {
                name: "envoy.filters.listener.http_inspector".into(),
                config_type: Some(
                    envoy_types::pb::envoy::config::listener::v3::listener_filter::ConfigType::TypedConfig(
                        pack_any(HttpInspector {}),
                    ),
                ),
                ..Default::default()
            });
            l.filter_chains[0].filter_chain_match = Some(FilterChainMatch {
                application_protocols: vec!["http/1.1".into(), "h2c".into()],
                transport_protocol: "raw_buffer".into(),
                ..Default::default()
            });
            let mut tcp = l.filter_chains[0].clone();
            tcp.filter_chain_match = None;
            tcp.filters = vec![tcp_proxy_filter("e")];
            l.filter_chains.push(tcp);
            l
        },
    );
    let r = get(p.addr, "/").await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("http\n"), "{}", r.body);
    let r = get_h2(p.addr, "/").await;
    assert!(r.body.starts_with("http\n"), "h2c: {}", r.body);
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"\x00\x01 not http\n").await.unwrap();
    let mut got = [0u8; 12];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"\x00\x01 not http\n");
}

/// An upstream that does not switch protocols answers the upgrade request
/// with its own status, which reaches the client as it is.
#[tokio::test]
async fn a_refused_upgrade_is_answered_with_the_upstreams_status() {
    let up = upstream("plain", None).await;
    let p = proxy(vec![static_cluster("c", &[up.addr])], vec![route_to("c")]);
    let r = get_with(
        p.addr,
        "/status/426",
        &[("connection", "upgrade"), ("upgrade", "websocket")],
    )
    .await;
    assert_eq!(r.status, 426);
    assert!(r.body.starts_with("plain\n"), "{}", r.body);
}

/// A client that breaks HTTP/2 framing loses its own connection (GOAWAY);
/// other connections are served as before.
#[tokio::test]
async fn a_malformed_http2_client_loses_only_its_connection() {
    let up = upstream("a", None).await;
    let p = proxy(vec![static_cluster("c", &[up.addr])], vec![route_to("c")]);
    // A HEADERS frame on stream 0, which HTTP/2 forbids.
    let (types, _) = raw_h2(p.addr, &[0, 0, 1, 1, 4, 0, 0, 0, 0, 0x82]).await;
    assert!(types.contains(&7), "a GOAWAY was sent: {types:?}");
    assert_eq!(get_h2(p.addr, "/").await.status, 200);
}

/// `max_concurrent_streams` (Istio's `maxConcurrentStreams`): streams past
/// it go on another connection; without it one connection carries all;
/// and with the cluster's connection limit reached, a request waits for a
/// stream to finish instead of opening one more.
#[tokio::test]
async fn max_concurrent_streams_spreads_streams_over_connections() {
    use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;
    use envoy_types::pb::google::protobuf::UInt32Value;
    let cases = [
        (None, None, 1),
        (Some(1), None, 3),
        (Some(2), None, 2),
        (Some(1), Some(1), 1),
    ];
    for (streams, max_connections, expected) in cases {
        let up = h2_upstream("a").await;
        let options = Http2ProtocolOptions {
            max_concurrent_streams: streams.map(|value| UInt32Value { value }),
            ..Default::default()
        };
        let mut cluster = http2_cluster_with(static_cluster("c", &[up.addr]), options);
        if let Some(max) = max_connections {
            use envoy_types::pb::envoy::config::cluster::v3::{
                circuit_breakers::Thresholds, CircuitBreakers,
            };
            cluster.circuit_breakers = Some(CircuitBreakers {
                thresholds: vec![Thresholds {
                    max_connections: Some(UInt32Value { value: max }),
                    max_pending_requests: Some(UInt32Value { value: 10 }),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        let p = proxy(vec![cluster], vec![route_to("c")]);
        let slow = || get(p.addr, "/delay/300");
        let (a, b, c) = tokio::join!(slow(), slow(), slow());
        for r in [a, b, c] {
            assert_eq!(r.status, 200, "{streams:?}/{max_connections:?}: {}", r.body);
        }
        assert_eq!(
            up.connections.load(std::sync::atomic::Ordering::SeqCst),
            expected,
            "max_concurrent_streams {streams:?}, max_connections {max_connections:?}"
        );
    }
}

/// An HTTP/2 connection past `max_requests_per_connection` takes no new
/// stream and closes once its stream is answered; an idle timeout of 0
/// (off, in Envoy) keeps one connection for every request.
#[tokio::test]
async fn spent_http2_connections_close_and_zero_idle_timeout_is_off() {
    use envoy_types::pb::envoy::config::core::v3::HttpProtocolOptions as Common;
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
    use std::sync::atomic::Ordering::SeqCst;
    for (common, opened) in [
        (
            Common {
                max_requests_per_connection: Some(UInt32Value { value: 1 }),
                ..Default::default()
            },
            3,
        ),
        (
            Common {
                idle_timeout: Some(Default::default()),
                ..Default::default()
            },
            1,
        ),
    ] {
        let up = h2_upstream("a").await;
        let mut cluster = http2_cluster(static_cluster("c", &[up.addr]));
        let key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
        let mut options: HttpProtocolOptions = prost::Message::decode(
            cluster.typed_extension_protocol_options[key]
                .value
                .as_slice(),
        )
        .unwrap();
        options.common_http_protocol_options = Some(common);
        cluster
            .typed_extension_protocol_options
            .insert(key.into(), pack_any(options));
        let p = proxy(vec![cluster], vec![route_to("c")]);
        for _ in 0..3 {
            let r = tokio::time::timeout(Duration::from_secs(5), get(p.addr, "/"))
                .await
                .expect("answered, not hung");
            assert_eq!(r.status, 200, "{}", r.body);
        }
        assert_eq!(up.connections.load(SeqCst), opened);
        let spent = opened - 1;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while up.closed.load(SeqCst) < spent && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(up.closed.load(SeqCst), spent, "spent connections closed");
    }
}

/// A request body whose end is known only after its data: hyper sends it
/// as DATA and then an empty DATA frame with END_STREAM, as gRPC clients
/// (tonic) do.
struct OpenEnded(Option<Bytes>);

impl hyper::body::Body for OpenEnded {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.take().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// Hundreds of gRPC-style requests on one HTTP/2 connection: the proxy
/// does not forward the empty DATA frames that end them, which HTTP/2
/// servers count and answer, past 100 on a connection, with GOAWAY
/// ENHANCE_YOUR_CALM (`too_many_data_frames`), failing what is in flight.
#[tokio::test]
async fn empty_data_frames_that_end_bodies_are_not_forwarded() {
    let up = h2_upstream("a").await;
    let p = proxy(
        vec![http2_cluster(static_cluster("c", &[up.addr]))],
        vec![route_to("c")],
    );
    let (mut sender, _) = h2_client(p.addr).await;
    for i in 0..250 {
        let req = Request::post("http://svc/pkg.Svc/Call")
            .header("content-type", "application/grpc")
            .body(OpenEnded(Some(Bytes::from_static(b"\0\0\0\0\0"))))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "call {i}");
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
        assert_eq!(
            body.trailers().and_then(|t| t.get("grpc-status")).unwrap(),
            "0",
            "call {i} answered by the upstream"
        );
    }
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Sends the HTTP/2 preface and `frames` on a new connection to `addr`
/// and reads until the proxy closes it (which it must, within 10 s); the
/// frame types it sent, with a GOAWAY's error code.
async fn raw_h2(addr: std::net::SocketAddr, frames: &[u8]) -> (Vec<u8>, Option<u32>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut bytes = Vec::from(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]);
    bytes.extend_from_slice(frames);
    // The proxy may close before it has read everything.
    let _ = conn.write_all(&bytes).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection is closed, not left open");
    frame_types(&rest)
}

/// The frame types in `bytes` (a 24-bit length, a type, flags, a stream
/// id, then the payload), with a GOAWAY's error code.
fn frame_types(bytes: &[u8]) -> (Vec<u8>, Option<u32>) {
    let (mut types, mut goaway, mut at) = (Vec::new(), None, 0);
    while at + 9 <= bytes.len() {
        let len = usize::from(bytes[at]) << 16
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]);
        types.push(bytes[at + 3]);
        if bytes[at + 3] == 7 && at + 17 <= bytes.len() {
            let code = &bytes[at + 13..at + 17];
            goaway = Some(u32::from_be_bytes([code[0], code[1], code[2], code[3]]));
        }
        at += 9 + len;
    }
    (types, goaway)
}

/// A rapid-reset flood (CVE-2023-44487: each stream opened and cancelled at
/// once) ends in GOAWAY for that connection alone, before it turns into
/// as many upstream requests; other clients are served as before.
#[tokio::test]
async fn a_stream_flood_loses_only_its_connection() {
    let up = upstream("a", None).await;
    let p = proxy(vec![static_cluster("c", &[up.addr])], vec![route_to("c")]);
    let mut flood = vec![0, 0, 0, 4, 0, 0, 0, 0, 0]; // empty SETTINGS
    const STREAMS: u32 = 5000;
    for i in 0..STREAMS {
        let id = (2 * i + 1).to_be_bytes();
        // HEADERS (END_STREAM | END_HEADERS): GET http://svc/, HPACK with
        // indexed :method, :scheme, :path and a literal :authority.
        let block = [0x82, 0x86, 0x84, 0x01, 3, b's', b'v', b'c'];
        flood.extend([0, 0, block.len() as u8, 1, 5]);
        flood.extend(id);
        flood.extend(block);
        // RST_STREAM (CANCEL).
        flood.extend([0, 0, 4, 3, 0]);
        flood.extend(id);
        flood.extend(8u32.to_be_bytes());
    }
    let (types, goaway) = raw_h2(p.addr, &flood).await;
    assert!(types.contains(&7), "a GOAWAY was sent: {types:?}");
    assert_eq!(goaway, Some(0xb), "ENHANCE_YOUR_CALM");
    let forwarded = up.requests.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        forwarded < STREAMS as usize / 10,
        "{forwarded} of {STREAMS} cancelled streams reached the upstream"
    );
    assert_eq!(get_h2(p.addr, "/").await.status, 200);
}

/// A gRPC call routed to an HTTP/1.1 cluster whose server speaks only
/// HTTP/2 fails at once with a gRPC error (UNAVAILABLE), never a hang.
#[tokio::test]
async fn grpc_to_an_http1_only_cluster_is_a_clear_error() {
    let up = h2_upstream("h2-only").await;
    let p = proxy(vec![static_cluster("c", &[up.addr])], vec![route_to("c")]);
    let req = Request::post("http://svc/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let (r, _) = tokio::time::timeout(Duration::from_secs(5), send_h2(p.addr, req))
        .await
        .expect("answered, not hung");
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["grpc-status"], "14", "{:?}", r.headers);
    assert!(
        r.headers["grpc-message"]
            .to_str()
            .unwrap()
            .starts_with("upstream connect error or disconnect/reset before headers"),
        "{:?}",
        r.headers
    );
}
