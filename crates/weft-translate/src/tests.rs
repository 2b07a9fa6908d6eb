//! Translation checks on a small Bookinfo-shaped registry.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::route::v3::{route, route_action, RouteConfiguration};
use weft_registry::{ContainerPort, ProxyKind, Registry, Service, ServicePort, Workload};

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) fn workload(name: &str, ip: &str, l: &[(&str, &str)], proxy: ProxyKind) -> Workload {
    Workload {
        name: name.into(),
        namespace: "default".into(),
        labels: labels(l),
        service_account: "default".into(),
        ip: ip.parse().unwrap(),
        ports: vec![ContainerPort {
            container_port: 9080,
            name: "http".into(),
            protocol: None,
        }],
        proxy,
        locality: None,
        entry: None,
        owner: None,
        admin: None,
    }
}

pub(crate) fn registry() -> Registry {
    Registry {
        services: vec![Service {
            name: "reviews".into(),
            namespace: "default".into(),
            vip: Some("198.19.0.10".parse().unwrap()),
            ports: vec![ServicePort {
                name: "http".into(),
                port: 9080,
                ..Default::default()
            }],
            selector: labels(&[("app", "reviews")]),
            entry: None,
        }],
        workloads: vec![
            workload(
                "reviews-v1",
                "198.18.0.2",
                &[("app", "reviews"), ("version", "v1")],
                ProxyKind::Sidecar,
            ),
            workload(
                "reviews-v2",
                "198.18.0.3",
                &[("app", "reviews"), ("version", "v2")],
                ProxyKind::Sidecar,
            ),
            workload(
                "ingress",
                "127.0.0.1",
                &[("istio", "ingressgateway")],
                ProxyKind::Gateway,
            ),
        ],
    }
}

pub(crate) const CONFIG: &str = "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 20
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front}
spec:
  hosts: ['*']
  gateways: [gw]
  http:
  - match:
    - uri: {exact: /productpage}
    route:
    - destination: {host: reviews, port: {number: 9080}}
";

fn translated(proxy: usize) -> ProxyResources {
    translated_with(CONFIG, proxy)
}

fn cluster_of(
    rc: &RouteConfiguration,
    vhost: usize,
    route_index: usize,
) -> route_action::ClusterSpecifier {
    match rc.virtual_hosts[vhost].routes[route_index].action.clone() {
        Some(route::Action::Route(a)) => a.cluster_specifier.unwrap(),
        other => panic!("not a route action: {other:?}"),
    }
}

#[test]
fn sidecar_gets_subset_clusters_and_istio_names() {
    let out = translated(0);
    let names: Vec<&str> = out.clusters.iter().map(|c| c.name.as_str()).collect();
    for expected in [
        "outbound|9080||reviews.default.svc.cluster.local",
        "outbound|9080|v1|reviews.default.svc.cluster.local",
        "outbound|9080|v2|reviews.default.svc.cluster.local",
        "inbound|9080||",
        "PassthroughCluster",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let v2 = out
        .endpoints
        .iter()
        .find(|e| e.cluster_name == "outbound|9080|v2|reviews.default.svc.cluster.local")
        .unwrap();
    assert_eq!(v2.endpoints[0].lb_endpoints.len(), 1);
    let listeners: Vec<&str> = out.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        listeners,
        ["virtualOutbound", "0.0.0.0_9080", "virtualInbound"]
    );
}

#[test]
fn header_route_then_weighted_split() {
    let out = translated(0);
    let rc = out.routes.iter().find(|r| r.name == "9080").unwrap();
    assert!(rc.virtual_hosts[0].domains.contains(&"reviews".to_string()));
    assert!(rc.virtual_hosts[0]
        .domains
        .contains(&"198.19.0.10:9080".to_string()));
    let first = &rc.virtual_hosts[0].routes[0];
    assert_eq!(first.r#match.as_ref().unwrap().headers[0].name, "end-user");
    assert_eq!(
        cluster_of(rc, 0, 0),
        route_action::ClusterSpecifier::Cluster(
            "outbound|9080|v2|reviews.default.svc.cluster.local".into()
        )
    );
    let route_action::ClusterSpecifier::WeightedClusters(w) = cluster_of(rc, 0, 1) else {
        panic!("expected a weighted split")
    };
    let weights: Vec<u32> = w.clusters.iter().map(|c| c.weight.unwrap().value).collect();
    assert_eq!(weights, [80, 20]);
}

#[test]
fn gateway_binds_server_port_and_routes_bound_virtual_services() {
    let out = translated(2);
    let listeners: Vec<&str> = out.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(listeners, ["0.0.0.0_8080"]);
    let rc = &out.routes[0];
    assert_eq!(rc.name, "http.8080");
    assert_eq!(rc.virtual_hosts.len(), 1);
    assert_eq!(rc.virtual_hosts[0].domains, ["*"]);
    assert_eq!(
        cluster_of(rc, 0, 0),
        route_action::ClusterSpecifier::Cluster(
            "outbound|9080||reviews.default.svc.cluster.local".into()
        )
    );
}

/// A gateway is the mesh's edge (istiod's `use_remote_address`), with the
/// mesh's `gatewayTopology.numTrustedProxies` in front of it; sidecars
/// are not.
#[test]
fn gateways_are_the_edge_behind_the_mesh_configs_trusted_proxies() {
    use envoy_types::pb::envoy::config::listener::v3::filter;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    let hcm = |out: &ProxyResources, listener: &str| -> HttpConnectionManager {
        let l = out.listeners.iter().find(|l| l.name == listener).unwrap();
        let Some(filter::ConfigType::TypedConfig(any)) = &l.filter_chains[0].filters[0].config_type
        else {
            panic!()
        };
        prost::Message::decode(any.value.as_slice()).unwrap()
    };
    let edge = |m: &HttpConnectionManager| {
        (
            m.use_remote_address.map(|b| b.value),
            m.xff_num_trusted_hops,
        )
    };
    assert_eq!(edge(&hcm(&translated(2), "0.0.0.0_8080")), (Some(true), 0));
    let mesh = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |-\n    defaultConfig:\n      gatewayTopology:\n        numTrustedProxies: 2\n";
    let out = translated_with(&format!("{CONFIG}{mesh}"), 2);
    assert_eq!(edge(&hcm(&out, "0.0.0.0_8080")), (Some(true), 2));
    let sidecar = translated(0);
    let outbound = hcm(&sidecar, "0.0.0.0_9080");
    assert_ne!(edge(&outbound).0, Some(true));
}

pub(crate) fn translated_with(config: &str, proxy: usize) -> ProxyResources {
    let loaded = weft_config::load_str(config, "t.yaml");
    assert!(!loaded.has_errors(), "{:?}", loaded.problems);
    // As the control plane does: ServiceEntries are services too.
    let registry = registry().with_entries(&loaded.resources, "default");
    let inputs = Inputs::new(&loaded.resources, &registry);
    translate(&inputs, &registry.workloads[proxy])
}

#[test]
fn every_match_condition_reaches_envoy() {
    use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - match:\n    - method: {exact: POST}\n      authority: {prefix: reviews}\n      scheme: {exact: http}\n      headers: {x-canary: {}}\n      withoutHeaders: {x-debug: {exact: '1'}}\n      queryParams: {v: {exact: '2'}}\n      ignoreUriCase: true\n      uri: {prefix: /API}\n    route: [{destination: {host: reviews, subset: v2}}]\n";
    let out = translated_with(vs, 0);
    let rc = out.routes.iter().find(|r| r.name == "9080").unwrap();
    let m = rc.virtual_hosts[0].routes[0].r#match.as_ref().unwrap();
    let names: Vec<&str> = m.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [":method", ":authority", ":scheme", "x-canary", "x-debug"]
    );
    assert_eq!(
        m.headers[3].header_match_specifier,
        Some(HeaderMatchSpecifier::PresentMatch(true)),
        "an empty match checks presence"
    );
    let without = &m.headers[4];
    assert!(without.invert_match && without.treat_missing_header_as_empty);
    assert_eq!(m.query_parameters[0].name, "v");
    assert_eq!(m.case_sensitive.map(|b| b.value), Some(false));
}

#[test]
fn matches_for_other_proxies_are_left_out() {
    // sourceLabels and match-level gateways are decided per proxy: the
    // reviews-v1 sidecar gets the route, reviews-v2's gets none (not a catch-all).
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - match:\n    - sourceLabels: {version: v1}\n    - gateways: [gw]\n    - port: 9999\n    route: [{destination: {host: reviews, subset: v2}}]\n";
    let routes = |proxy: usize| {
        let out = translated_with(vs, proxy);
        let rc = out.routes.iter().find(|r| r.name == "9080").unwrap();
        rc.virtual_hosts[0]
            .routes
            .iter()
            .map(|r| r.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(routes(0), ["route-0"], "one match applies to reviews-v1");
    assert_eq!(
        routes(1),
        ["default"],
        "none applies to reviews-v2: the service's default route only"
    );
}

/// Istio's route policies reach Envoy as istiod writes them: the fault as
/// the fault filter's per-route config, `timeout`, `retries` converted, and
/// Istio's default retry policy on a route that sets none.
#[test]
fn route_policies_reach_envoy_as_istiod_writes_them() {
    use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - match:\n    - headers: {end-user: {exact: jason}}\n    fault:\n      delay: {percentage: {value: 50}, fixedDelay: 7s}\n      abort: {percentage: {value: 0.5}, httpStatus: 500}\n    timeout: 2s\n    retries: {attempts: 3, perTryTimeout: 1s, retryOn: 'gateway-error,409'}\n    headers:\n      request: {set: {x-a: '1'}, remove: [x-b]}\n    route: [{destination: {host: reviews, subset: v2}}]\n  - route: [{destination: {host: reviews, subset: v1}}]\n";
    let out = translated_with(vs, 0);
    let rc = out.routes.iter().find(|r| r.name == "9080").unwrap();
    let routes = &rc.virtual_hosts[0].routes;
    let action = |i: usize| match routes[i].action.clone() {
        Some(route::Action::Route(a)) => a,
        other => panic!("not a route action: {other:?}"),
    };
    let faulty = action(0);
    assert_eq!(faulty.timeout.unwrap().seconds, 2);
    let retry = faulty.retry_policy.unwrap();
    assert_eq!(retry.retry_on, "gateway-error,retriable-status-codes");
    assert_eq!(retry.retriable_status_codes, vec![409]);
    assert_eq!(retry.num_retries.unwrap().value, 3);
    assert_eq!(retry.per_try_timeout.unwrap().seconds, 1);
    let any = &routes[0].typed_per_filter_config["envoy.filters.http.fault"];
    let fault: HttpFault = prost::Message::decode(any.value.as_slice()).unwrap();
    let delay = fault.delay.unwrap();
    assert_eq!(
        delay.percentage.unwrap().numerator,
        500_000,
        "50% in millionths"
    );
    let abort = fault.abort.unwrap();
    assert_eq!(abort.percentage.unwrap().numerator, 5_000);
    assert_eq!(
        routes[0].request_headers_to_add[0]
            .header
            .as_ref()
            .unwrap()
            .key,
        "x-a"
    );
    assert_eq!(routes[0].request_headers_to_remove, vec!["x-b".to_string()]);
    let plain = action(1);
    assert_eq!(plain.timeout.unwrap(), Default::default(), "no timeout: 0s");
    assert_eq!(
        plain.retry_policy.unwrap().retriable_status_codes,
        vec![503]
    );
    assert!(routes[1].typed_per_filter_config.is_empty());
}

/// corsPolicy becomes the CORS filter's per-route policy; mirror becomes a
/// mirror policy at 100% unless a percentage says otherwise.
#[test]
fn cors_and_mirror_reach_envoy() {
    use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - corsPolicy:\n      allowOrigins: [{exact: 'https://a.example'}, {prefix: 'https://b.'}]\n      allowMethods: [GET, POST]\n      maxAge: 24h\n      allowCredentials: true\n    mirror: {host: reviews, subset: v2}\n    mirrorPercentage: {value: 25}\n    route: [{destination: {host: reviews, subset: v1}}]\n";
    let out = translated_with(vs, 0);
    let rc = out.routes.iter().find(|r| r.name == "9080").unwrap();
    let route = &rc.virtual_hosts[0].routes[0];
    let any = &route.typed_per_filter_config["envoy.filters.http.cors"];
    let cors: CorsPolicy = prost::Message::decode(any.value.as_slice()).unwrap();
    assert_eq!(cors.allow_origin_string_match.len(), 2);
    assert_eq!(cors.allow_methods, "GET,POST");
    assert_eq!(cors.max_age, "86400");
    assert!(cors.allow_credentials.unwrap().value);
    let Some(route::Action::Route(a)) = &route.action else {
        panic!("not a route action")
    };
    let m = &a.request_mirror_policies[0];
    assert_eq!(
        m.cluster,
        "outbound|9080|v2|reviews.default.svc.cluster.local"
    );
    assert_eq!(
        m.runtime_fraction
            .as_ref()
            .unwrap()
            .default_value
            .unwrap()
            .numerator,
        250_000
    );
}

/// A delegate's routes take the root route's place, under its match.
#[test]
fn delegate_routes_merge_under_the_root_match() {
    let config = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - match:\n    - uri: {prefix: /api}\n      headers: {end-user: {exact: jason}}\n    delegate: {name: reviews-api}\n  - route: [{destination: {host: reviews, subset: v1}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews-api}\nspec:\n  http:\n  - match:\n    - uri: {prefix: /api/v2}\n    route: [{destination: {host: reviews, subset: v2}}]\n  - match:\n    - uri: {prefix: /elsewhere}\n    route: [{destination: {host: reviews, subset: v2}}]\n  - route: [{destination: {host: reviews, subset: v1}}]\n";
    let out = translated_with(config, 0);
    let rc = out.routes.iter().find(|r| r.name == "9080").unwrap();
    let routes = &rc.virtual_hosts[0].routes;
    let path = |i: usize| format!("{:?}", routes[i].r#match.as_ref().unwrap().path_specifier);
    assert_eq!(
        routes.len(),
        3,
        "the /elsewhere route lies outside /api: {routes:?}"
    );
    assert!(path(0).contains("/api/v2"), "{}", path(0));
    assert_eq!(
        routes[0].r#match.as_ref().unwrap().headers[0].name,
        "end-user"
    );
    assert!(path(1).contains("\"/api\""), "{}", path(1));
    assert_eq!(
        cluster_of(rc, 0, 0),
        route_action::ClusterSpecifier::Cluster(
            "outbound|9080|v2|reviews.default.svc.cluster.local".into()
        )
    );
    assert_eq!(
        cluster_of(rc, 0, 1),
        route_action::ClusterSpecifier::Cluster(
            "outbound|9080|v1|reviews.default.svc.cluster.local".into()
        )
    );
}

/// Two VirtualServices for one host on one gateway share its virtual
/// host, the older one's routes first, as Istio merges them.
#[test]
fn gateway_virtual_services_for_one_host_merge() {
    let second = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: other, creationTimestamp: '2020-01-01T00:00:00Z'}\nspec:\n  hosts: ['*']\n  gateways: [gw]\n  http:\n  - match:\n    - uri: {prefix: /other}\n    route:\n    - destination: {host: reviews, port: {number: 9080}, subset: v2}\n";
    let config = CONFIG.replace(
        "metadata: {name: front}",
        "metadata: {name: front, creationTimestamp: '2024-01-01T00:00:00Z'}",
    );
    let out = translated_with(&format!("{config}{second}"), 2);
    let rc = &out.routes[0];
    assert_eq!(rc.virtual_hosts.len(), 1, "{rc:?}");
    let paths: Vec<String> = rc.virtual_hosts[0]
        .routes
        .iter()
        .map(|r| format!("{:?}", r.r#match.as_ref().unwrap().path_specifier))
        .collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(paths[0].contains("/other"), "the older first: {paths:?}");
    assert!(paths[1].contains("/productpage"), "{paths:?}");
}

/// With outlier detection on, each proxy's endpoints are ranked by
/// locality: its own zone first, then its region, then `failover` regions,
/// then the rest; without it, every endpoint is priority 0.
#[test]
fn localities_become_priorities_for_each_proxy() {
    let mut registry = registry();
    let place = |w: &mut Workload, l: &str| w.locality = Some(l.into());
    place(&mut registry.workloads[0], "eu/zone1/a");
    place(&mut registry.workloads[1], "us/zone1/a");
    let mut third = registry.workloads[1].clone();
    third.name = "reviews-v2-b".into();
    third.ip = "198.18.0.4".parse().unwrap();
    place(&mut third, "ap/zone1/a");
    registry.workloads.insert(2, third);
    let rule = |extra: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec:\n  host: reviews\n  trafficPolicy:\n{extra}")
    };
    // region → (priority, weight, endpoints), and whether the cluster
    // weighs localities.
    let eds = |config: &str| {
        let loaded = weft_config::load_str(config, "t.yaml");
        assert!(!loaded.has_errors(), "{:?}", loaded.problems);
        let inputs = Inputs::new(&loaded.resources, &registry);
        let out = translate(&inputs, &registry.workloads[0]);
        let name = "outbound|9080||reviews.default.svc.cluster.local";
        let cla = out
            .endpoints
            .iter()
            .find(|c| c.cluster_name == name)
            .unwrap();
        let groups = cla
            .endpoints
            .iter()
            .map(|l| {
                let region = l.locality.as_ref().unwrap().region.clone();
                let weight = l.load_balancing_weight.unwrap().value;
                (region, (l.priority, weight, l.lb_endpoints.len()))
            })
            .collect::<std::collections::BTreeMap<_, _>>();
        let cluster = out.clusters.iter().find(|c| c.name == name).unwrap();
        let weighted = cluster
            .common_lb_config
            .as_ref()
            .is_some_and(|c| c.locality_config_specifier.is_some());
        (groups, weighted)
    };
    let priorities = |config: &str| {
        let (groups, _) = eds(config);
        groups
            .into_iter()
            .map(|(r, g)| (r, g.0))
            .collect::<Vec<_>>()
    };
    let (plain, weighted) = eds(&rule("    loadBalancer: {simple: ROUND_ROBIN}\n"));
    assert!(plain.values().all(|g| g.0 == 0 && g.1 == 1), "{plain:?}");
    assert!(!weighted);
    let failover = priorities(&rule("    outlierDetection: {consecutive5xxErrors: 1}\n    loadBalancer:\n      localityLbSetting:\n        failover: [{from: eu, to: us}]\n"));
    assert_eq!(
        failover,
        [("ap".into(), 2), ("eu".into(), 0), ("us".into(), 1)],
        "the failover region next"
    );
    // distribute: the proxy's region sends 80% to us, 20% to ap, none home.
    let (split, weighted) = eds(&rule("    loadBalancer:\n      localityLbSetting:\n        distribute:\n        - from: eu/*\n          to: {\"us/*\": 80, \"ap/*\": 20}\n"));
    assert_eq!(split["us"], (0, 80, 1));
    assert_eq!(split["ap"], (0, 20, 1));
    assert_eq!(split["eu"].2, 0, "an unnamed locality is emptied");
    assert!(weighted);
    // failoverPriority: ranked by the labels shared with the proxy (v1).
    let od = "    outlierDetection: {consecutive5xxErrors: 1}\n    loadBalancer:\n      localityLbSetting:\n";
    let by_version = priorities(&rule(&format!("{od}        failoverPriority: [version]\n")));
    assert_eq!(
        by_version,
        [("ap".into(), 1), ("eu".into(), 0), ("us".into(), 1)]
    );
    let wanted = priorities(&rule(&format!(
        "{od}        failoverPriority: [version=v2]\n"
    )));
    assert_eq!(
        wanted,
        [("ap".into(), 0), ("eu".into(), 1), ("us".into(), 0)]
    );
    // With failover rules too, localities rank within each label rank.
    let both = priorities(&rule(&format!(
        "{od}        failoverPriority: [version]\n        failover: [{{from: eu, to: ap}}]\n"
    )));
    assert_eq!(both, [("ap".into(), 1), ("eu".into(), 0), ("us".into(), 2)]);
}

/// A DestinationRule's traffic policy reaches the cluster as istiod writes
/// it: circuit breakers (unset thresholds at the maximum), connect
/// timeout, requests per connection, outlier detection with the panic
/// threshold off, ring hash; and the routes to it carry the hash policy.
#[test]
fn destination_rule_policies_reach_the_cluster() {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 2048}}\n    connectionPool:\n      tcp: {maxConnections: 7, connectTimeout: 2s, maxConnectionDuration: 30m, tcpKeepalive: {time: 7200s, interval: 75s, probes: 9}}\n      http: {http1MaxPendingRequests: 3, maxRequestsPerConnection: 1}\n    outlierDetection: {consecutive5xxErrors: 2, interval: 5s, baseEjectionTime: 1m, maxEjectionPercent: 50}\n";
    let out = translated_with(dr, 0);
    let c = out
        .clusters
        .iter()
        .find(|c| c.name == "outbound|9080||reviews.default.svc.cluster.local")
        .unwrap();
    let t = &c.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(t.max_connections.unwrap().value, 7);
    assert_eq!(t.max_pending_requests.unwrap().value, 3);
    assert_eq!(
        t.max_requests.unwrap().value,
        u32::MAX,
        "unset: the maximum"
    );
    assert_eq!(c.connect_timeout.unwrap().seconds, 2);
    let keepalive = c
        .upstream_connection_options
        .as_ref()
        .unwrap()
        .tcp_keepalive
        .unwrap();
    assert_eq!(keepalive.keepalive_time.unwrap().value, 7200);
    assert_eq!(keepalive.keepalive_probes.unwrap().value, 9);
    assert!(c
        .typed_extension_protocol_options
        .contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"));
    let od = c.outlier_detection.as_ref().unwrap();
    assert_eq!(od.consecutive_5xx.unwrap().value, 2);
    assert_eq!(od.enforcing_consecutive_5xx.unwrap().value, 100);
    assert_eq!(od.base_ejection_time.unwrap().seconds, 60);
    assert_eq!(od.max_ejection_percent.unwrap().value, 50);
    let panic = c
        .common_lb_config
        .as_ref()
        .unwrap()
        .healthy_panic_threshold
        .unwrap();
    assert_eq!(panic.value, 0.0);
    assert_eq!(c.lb_policy, LbPolicy::RingHash as i32);
    let rc = out.routes.iter().find(|r| r.name == "9080").unwrap();
    let Some(route::Action::Route(a)) = &rc.virtual_hosts[0].routes[0].action else {
        panic!("not a route action")
    };
    assert_eq!(
        a.hash_policy.len(),
        1,
        "the default route hashes by the rule's header"
    );
}

/// `connectionPool.tcp.idleTimeout` reaches the outbound tcp_proxy (and
/// stands in for the HTTP idle timeout on the cluster);
/// `splitExternalLocalOriginErrors` counts local failures apart, as
/// istiod writes it.
#[test]
fn tcp_idle_timeout_and_local_origin_errors_reach_envoy() {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
    use prost::Message;
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  trafficPolicy:\n    connectionPool:\n      tcp: {idleTimeout: 90s}\n    outlierDetection: {splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 3}\n";
    let loaded = weft_config::load_str(dr, "t.yaml");
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    let mut registry = registry();
    registry.services[0].ports[0].name = "tcp".into();
    let inputs = Inputs::new(&loaded.resources, &registry);
    let out = translate(&inputs, &registry.workloads[0]);
    let tcp = out
        .listeners
        .iter()
        .flat_map(|l| &l.filter_chains)
        .flat_map(|c| &c.filters)
        .filter_map(|f| match &f.config_type {
            Some(ConfigType::TypedConfig(any)) if any.type_url.ends_with("TcpProxy") => {
                TcpProxy::decode(any.value.as_slice()).ok()
            }
            _ => None,
        })
        .find(|t| t.stat_prefix.starts_with("outbound|"))
        .expect("an outbound tcp_proxy for the TCP port");
    assert_eq!(tcp.idle_timeout.unwrap().seconds, 90);
    let c = out
        .clusters
        .iter()
        .find(|c| c.name == "outbound|9080||reviews.default.svc.cluster.local")
        .unwrap();
    assert!(c
        .typed_extension_protocol_options
        .contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"));
    let od = c.outlier_detection.as_ref().unwrap();
    assert!(od.split_external_local_origin_errors);
    assert_eq!(od.consecutive_local_origin_failure.unwrap().value, 3);
    assert_eq!(
        od.enforcing_consecutive_local_origin_failure.unwrap().value,
        100
    );
    assert_eq!(od.enforcing_local_origin_success_rate.unwrap().value, 0);
}

/// `portLevelSettings` override the top-level policy for their port, in
/// the service's cluster and in its subsets' (whose own fields then win).
#[test]
fn port_level_settings_override_for_their_port() {
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  trafficPolicy:\n    connectionPool: {tcp: {maxConnections: 7}}\n    loadBalancer: {simple: RANDOM}\n    portLevelSettings:\n    - port: {number: 9080}\n      connectionPool: {tcp: {maxConnections: 3}}\n    - port: {number: 9999}\n      connectionPool: {tcp: {maxConnections: 1}}\n  subsets:\n  - name: v2\n    labels: {version: v2}\n    trafficPolicy:\n      loadBalancer: {simple: LEAST_REQUEST}\n";
    let loaded = weft_config::load_str(dr, "t.yaml");
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    let out = translated_with(dr, 0);
    let cluster = |name: &str| {
        out.clusters
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no cluster {name}"))
            .clone()
    };
    let max_connections = |c: &envoy_types::pb::envoy::config::cluster::v3::Cluster| {
        c.circuit_breakers.as_ref().unwrap().thresholds[0]
            .max_connections
            .unwrap()
            .value
    };
    use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
    let service = cluster("outbound|9080||reviews.default.svc.cluster.local");
    assert_eq!(max_connections(&service), 3, "the port's own setting");
    assert_eq!(service.lb_policy, LbPolicy::Random as i32);
    let v2 = cluster("outbound|9080|v2|reviews.default.svc.cluster.local");
    assert_eq!(max_connections(&v2), 3);
    assert_eq!(
        v2.lb_policy,
        LbPolicy::LeastRequest as i32,
        "the subset's wins"
    );
}

/// With no algorithm named, a cluster balances as istiod's do: least
/// request (two random choices), not Envoy's own round robin.
#[test]
fn clusters_balance_by_least_request_unless_told_otherwise() {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
    let policy = |dr: &str| {
        let out = translated_with(dr, 0);
        let c = out
            .clusters
            .iter()
            .find(|c| c.name == "outbound|9080||reviews.default.svc.cluster.local")
            .expect("the reviews cluster");
        LbPolicy::try_from(c.lb_policy).unwrap()
    };
    let rule = |spec: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec:\n  host: reviews\n{spec}")
    };
    assert_eq!(policy(""), LbPolicy::LeastRequest, "no rule");
    let unnamed = rule("  trafficPolicy:\n    connectionPool: {tcp: {maxConnections: 7}}\n");
    assert_eq!(policy(&unnamed), LbPolicy::LeastRequest, "no loadBalancer");
    let unspecified = rule("  trafficPolicy:\n    loadBalancer: {simple: UNSPECIFIED}\n");
    assert_eq!(policy(&unspecified), LbPolicy::LeastRequest);
    let rr = rule("  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n");
    assert_eq!(policy(&rr), LbPolicy::RoundRobin, "named");
}

/// The upstream HTTP version, as istiod decides it: gRPC and HTTP/2 ports
/// speak HTTP/2 (outbound and inbound), an HTTP port does with
/// `h2UpgradePolicy: UPGRADE`, and `useClientProtocol` follows the client.
#[test]
fn upstream_protocols_follow_ports_and_policies() {
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
        http_protocol_options::{explicit_http_config::ProtocolConfig, UpstreamProtocolOptions},
        HttpProtocolOptions,
    };
    use prost::Message;
    let protocol = |out: &ProxyResources, name: &str| {
        let c = out.clusters.iter().find(|c| c.name == name).unwrap();
        let Some(any) = c
            .typed_extension_protocol_options
            .get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
        else {
            return "http1";
        };
        let o = HttpProtocolOptions::decode(any.value.as_slice()).unwrap();
        match o.upstream_protocol_options {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match e.protocol_config {
                Some(ProtocolConfig::Http2ProtocolOptions(_)) => "http2",
                _ => "http1",
            },
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)) => "downstream",
            _ => "other",
        }
    };
    let outbound = "outbound|9080||reviews.default.svc.cluster.local";
    let out = translated_with(CONFIG, 0);
    assert_eq!(protocol(&out, outbound), "http1");
    let dr = |http: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec:\n  host: reviews\n  trafficPolicy:\n    connectionPool:\n      http: {{{http}}}\n")
    };
    let upgraded = translated_with(&dr("h2UpgradePolicy: UPGRADE"), 0);
    assert_eq!(protocol(&upgraded, outbound), "http2");
    // maxConcurrentStreams caps the streams of an HTTP/2 connection.
    let capped = translated_with(&dr("h2UpgradePolicy: UPGRADE, maxConcurrentStreams: 5"), 0);
    let c = capped.clusters.iter().find(|c| c.name == outbound).unwrap();
    let any = &c.typed_extension_protocol_options
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    let o = HttpProtocolOptions::decode(any.value.as_slice()).unwrap();
    let Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) = o.upstream_protocol_options else {
        panic!("explicit HTTP/2")
    };
    let Some(ProtocolConfig::Http2ProtocolOptions(h2)) = e.protocol_config else {
        panic!("explicit HTTP/2")
    };
    assert_eq!(h2.max_concurrent_streams.unwrap().value, 5);
    let client = translated_with(&dr("useClientProtocol: true"), 0);
    assert_eq!(protocol(&client, outbound), "downstream");
    // A gRPC port: HTTP/2 both ways.
    let mut registry = registry();
    registry.services[0].ports[0].name = "grpc".into();
    let loaded = weft_config::load_str(CONFIG, "t.yaml");
    let inputs = Inputs::new(&loaded.resources, &registry);
    let out = translate(&inputs, &registry.workloads[0]);
    assert_eq!(protocol(&out, outbound), "http2");
    assert_eq!(protocol(&out, "inbound|9080||"), "http2");
}

/// gRPC deadlines as istiod writes them: outbound routes bound a call's
/// `grpc-timeout` by the route timeout (`max_grpc_timeout`), the inbound
/// route lets it bound the stream (`max_stream_duration`).
#[test]
#[allow(deprecated)]
fn grpc_deadlines_reach_the_routes() {
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - timeout: 2s\n    route:\n    - destination: {host: reviews}\n";
    let out = translated_with(vs, 0);
    let action = |rc: &RouteConfiguration| match rc.virtual_hosts[0].routes[0].action.clone() {
        Some(route::Action::Route(a)) => a,
        other => panic!("not a route action: {other:?}"),
    };
    let outbound = out.routes.iter().find(|r| r.name == "9080").unwrap();
    let a = action(outbound);
    assert_eq!(a.timeout.unwrap().seconds, 2);
    assert_eq!(a.max_grpc_timeout.unwrap().seconds, 2);
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        http_connection_manager::RouteSpecifier, HttpConnectionManager,
    };
    use prost::Message;
    let inbound = out
        .listeners
        .iter()
        .find(|l| l.name == "virtualInbound")
        .expect("the inbound listener");
    let Some(ConfigType::TypedConfig(any)) = &inbound.filter_chains[0].filters[0].config_type
    else {
        panic!("no typed config")
    };
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    let Some(RouteSpecifier::RouteConfig(rc)) = &hcm.route_specifier else {
        panic!("inline routes expected")
    };
    let a = action(rc);
    let stream = a.max_stream_duration.unwrap();
    assert_eq!(stream.grpc_timeout_header_max.unwrap().seconds, 0);
    assert!(a.max_grpc_timeout.is_none());
}

/// A port with no declared protocol is sniffed, as Istio does: its VIP
/// listener and its inbound chain gain an HTTP chain for `http/1.1`/`h2c`
/// ahead of the TCP one, with the `http_inspector` listener filter; the
/// port's routes exist; the clusters follow the client's protocol.
#[test]
fn undeclared_ports_are_sniffed() {
    let mut registry = registry();
    registry.services[0].ports[0].name = String::new();
    let loaded = weft_config::load_str(CONFIG, "t.yaml");
    let inputs = Inputs::new(&loaded.resources, &registry);
    let out = translate(&inputs, &registry.workloads[0]);
    let sniffs = |name: &str| {
        let l = out.listeners.iter().find(|l| l.name == name).unwrap();
        assert!(
            l.listener_filters
                .iter()
                .any(|f| f.name == "envoy.filters.listener.http_inspector"),
            "{name}: {:?}",
            l.listener_filters
        );
        let protocols: Vec<Vec<String>> = l
            .filter_chains
            .iter()
            .map(|c| {
                c.filter_chain_match
                    .as_ref()
                    .map(|m| m.application_protocols.clone())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(protocols[0], ["http/1.1", "http/1.0", "h2c"], "{name}");
        assert!(
            protocols[1..].iter().any(Vec::is_empty),
            "{name}: a TCP chain"
        );
    };
    sniffs("198.19.0.10_9080");
    sniffs("virtualInbound");
    assert!(
        out.routes.iter().any(|r| r.name == "9080"),
        "the port's routes"
    );
    assert!(
        !out.listeners.iter().any(|l| l.name == "0.0.0.0_9080"),
        "no HTTP-only listener"
    );
}

/// A proxyless gRPC client gets istiod's gRPC flavour: a Listener per name
/// it may dial (`host:port`, short names too) with an api_listener whose
/// connection manager runs only fault and router, the route table with the
/// VirtualService's routes less per-route config gRPC cannot run, EDS
/// clusters only, and endpoint groups that all name a locality.
#[test]
fn proxyless_grpc_gets_api_listeners_and_lean_clusters() {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        http_connection_manager::RouteSpecifier, HttpConnectionManager,
    };
    let vs = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}, outlierDetection: {consecutive5xxErrors: 3}}\n  subsets:\n  - {name: v1, labels: {version: v1}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - corsPolicy: {allowOrigins: [{exact: 'https://a.example'}]}\n    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}\n    route: [{destination: {host: reviews, subset: v1}}]\n";
    let loaded = weft_config::load_str(vs, "t.yaml");
    let mut reg = registry();
    reg.workloads[0].proxy = ProxyKind::Proxyless;
    let inputs = Inputs::new(&loaded.resources, &reg);
    let out = translate(&inputs, &reg.workloads[0]);
    let names: Vec<&str> = out.listeners.iter().map(|l| l.name.as_str()).collect();
    for name in [
        "reviews.default.svc.cluster.local:9080",
        "reviews.default:9080",
        "reviews:9080",
    ] {
        assert!(names.contains(&name), "{names:?}");
    }
    let api = out.listeners[0]
        .api_listener
        .clone()
        .unwrap()
        .api_listener
        .unwrap();
    let hcm: HttpConnectionManager = prost::Message::decode(api.value.as_slice()).unwrap();
    let filters: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        filters,
        ["envoy.filters.http.fault", "envoy.filters.http.router"]
    );
    let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
        panic!("routes from RDS")
    };
    assert_eq!(
        rds.route_config_name,
        "reviews.default.svc.cluster.local:9080"
    );
    let rc = out
        .routes
        .iter()
        .find(|r| r.name == rds.route_config_name)
        .unwrap();
    assert_eq!(rc.virtual_hosts.len(), 1, "no passthrough host for gRPC");
    let vh = &rc.virtual_hosts[0];
    assert!(
        vh.domains.contains(&"reviews:9080".to_string()),
        "{:?}",
        vh.domains
    );
    let filters: Vec<&String> = vh.routes[0].typed_per_filter_config.keys().collect();
    assert_eq!(filters, ["envoy.filters.http.fault"], "CORS is left out");
    assert!(out.clusters.iter().all(|c| c.name.starts_with("outbound|")));
    for c in &out.clusters {
        assert_eq!(c.lb_policy(), LbPolicy::RingHash, "{}", c.name);
        assert!(c.outlier_detection.is_none() && c.common_lb_config.is_none());
    }
    assert!(out
        .endpoints
        .iter()
        .flat_map(|e| &e.endpoints)
        .all(|g| g.locality.is_some() && g.load_balancing_weight.is_some()));
}

/// Mesh config `outboundTrafficPolicy` REGISTRY_ONLY (the `istio`
/// ConfigMap): unknown TCP destinations go to BlackHoleCluster, unknown
/// HTTP hosts get 502 from `block_all`; ALLOW_ANY (the default) lets both
/// through.
#[test]
fn outbound_traffic_policy_follows_the_mesh_config() {
    use envoy_types::pb::envoy::config::listener::v3::filter;
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        tcp_proxy::ClusterSpecifier, TcpProxy,
    };
    let outside = |out: &ProxyResources| {
        let outbound = out
            .listeners
            .iter()
            .find(|l| l.name == "virtualOutbound")
            .unwrap();
        let Some(filter::ConfigType::TypedConfig(any)) = &outbound.filter_chains[0]
            .filters
            .last()
            .unwrap()
            .config_type
        else {
            panic!()
        };
        let tcp: TcpProxy = prost::Message::decode(any.value.as_slice()).unwrap();
        let Some(ClusterSpecifier::Cluster(cluster)) = tcp.cluster_specifier else {
            panic!()
        };
        let table = out.routes.iter().find(|r| r.name == "9080").unwrap();
        let last = table.virtual_hosts.last().unwrap();
        let action = match &last.routes[0].action {
            Some(route::Action::DirectResponse(d)) => format!("direct {}", d.status),
            Some(route::Action::Route(r)) => format!("{:?}", r.cluster_specifier),
            other => format!("{other:?}"),
        };
        (cluster, last.name.clone(), action)
    };
    let (cluster, vhost, action) = outside(&translated(0));
    assert_eq!(
        (cluster.as_str(), vhost.as_str()),
        ("PassthroughCluster", "allow_any")
    );
    assert!(action.contains("PassthroughCluster"), "{action}");
    let registry_only = format!(
        "{CONFIG}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |-\n    outboundTrafficPolicy:\n      mode: REGISTRY_ONLY\n"
    );
    let out = translated_with(&registry_only, 0);
    assert_eq!(
        outside(&out),
        (
            "BlackHoleCluster".into(),
            "block_all".into(),
            "direct 502".into()
        )
    );
    assert!(out.clusters.iter().any(|c| c.name == "BlackHoleCluster"));
}
