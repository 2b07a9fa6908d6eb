//! Istio's standard metrics from a pair of proxies on loopback: a client
//! sidecar (outbound listener, reporter `source`) and a server sidecar
//! (inbound listener, reporter `destination`), each with its workload's
//! node metadata. The metadata exchange tells each side who the other is
//! (and never reaches the apps); every label set is Istio's own, read from
//! Istio's tests in `shared/conformance/istio/metrics`.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{Metadata, TrafficDirection};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::google::protobuf::{value::Kind, Any, ListValue, Struct, Value};
use envoy_types::util::pack_any;
use prost::Message;
use support::*;
use weft_proxy::stats::NodeMetadata;
use weft_proxy::StaticProxy;
use weft_xds::stats_config::{MetricConfig, PluginConfig};

const RATINGS: &str = "ratings.default.svc.cluster.local";

fn metadata(name: &str, app: &str, version: &str) -> NodeMetadata {
    let v = serde_json::json!({
        "NAME": format!("{name}-0"), "NAMESPACE": "default", "WORKLOAD_NAME": name,
        "CLUSTER_ID": "Kubernetes", "SERVICE_ACCOUNT": format!("bookinfo-{app}"),
        "LABELS": {"app": app, "version": version},
    });
    NodeMetadata(v.as_object().unwrap().clone())
}

fn text(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

fn strings(pairs: &[(&str, &str)]) -> Struct {
    Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), text(v)))
            .collect(),
    }
}

fn stats_config() -> Any {
    Any {
        type_url: "type.googleapis.com/stats.PluginConfig".into(),
        value: vec![],
    }
}

/// A listener of `http_listener`'s shape whose stats filter carries
/// `config` (what istiod makes of Telemetry metric overrides).
fn tweaked_listener(addr: SocketAddr, cluster: &str, config: &PluginConfig) -> Listener {
    let mut l = http_listener(addr, cluster, true);
    let Some(filter::ConfigType::TypedConfig(any)) = &mut l.filter_chains[0].filters[0].config_type
    else {
        panic!()
    };
    let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    for f in &mut hcm.http_filters {
        if f.name == "istio.stats" {
            f.config_type = Some(http_filter::ConfigType::TypedConfig(Any {
                type_url: "type.googleapis.com/stats.PluginConfig".into(),
                value: config.encode_to_vec(),
            }));
        }
    }
    *any = pack_any(hcm);
    l
}

/// `listener` with `istio.stats` before the router and a direction.
fn http_listener(addr: SocketAddr, cluster: &str, inbound: bool) -> Listener {
    let mut l = listener(addr, vec![route_to(cluster)]);
    let Some(filter::ConfigType::TypedConfig(any)) = &mut l.filter_chains[0].filters[0].config_type
    else {
        panic!()
    };
    let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    let at = hcm.http_filters.len() - 1;
    hcm.http_filters.insert(
        at,
        HttpFilter {
            name: "istio.stats".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(stats_config())),
            ..Default::default()
        },
    );
    *any = pack_any(hcm);
    l.traffic_direction = direction(inbound);
    l
}

fn direction(inbound: bool) -> i32 {
    if inbound {
        TrafficDirection::Inbound as i32
    } else {
        TrafficDirection::Outbound as i32
    }
}

/// A TCP listener: `istio.stats`, then tcp_proxy to `cluster`.
fn tcp_listener(addr: SocketAddr, cluster: &str, inbound: bool) -> Listener {
    Listener {
        name: "tcp".into(),
        address: Some(socket(addr)),
        traffic_direction: direction(inbound),
        filter_chains: vec![FilterChain {
            filters: vec![
                Filter {
                    name: "istio.stats".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(stats_config())),
                },
                tcp_proxy_filter(cluster),
            ],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A static cluster with istiod's `istio` metadata naming ratings; with
/// `sidecar`, its endpoints are tagged as ratings-v1 pods with sidecars.
fn ratings_cluster(name: &str, endpoints: &[SocketAddr], sidecar: bool) -> Cluster {
    let mut c = static_cluster(name, endpoints);
    let service = Value {
        kind: Some(Kind::StructValue(strings(&[
            ("host", RATINGS),
            ("name", "ratings"),
            ("namespace", "default"),
        ]))),
    };
    let services = Struct {
        fields: [(
            "services".to_string(),
            Value {
                kind: Some(Kind::ListValue(ListValue {
                    values: vec![service],
                })),
            },
        )]
        .into_iter()
        .collect(),
    };
    c.metadata = Some(Metadata {
        filter_metadata: [("istio".to_string(), services)].into_iter().collect(),
        ..Default::default()
    });
    if sidecar {
        for ep in &mut c.load_assignment.as_mut().unwrap().endpoints[0].lb_endpoints {
            ep.metadata = Some(Metadata {
                filter_metadata: [
                    (
                        "envoy.transport_socket_match".to_string(),
                        strings(&[("tlsMode", "istio")]),
                    ),
                    (
                        "istio".to_string(),
                        strings(&[("workload", "ratings-v1;default;ratings;v1;Kubernetes")]),
                    ),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            });
        }
    }
    c
}

fn start(
    meta: NodeMetadata,
    clusters: Vec<Cluster>,
    l: impl FnOnce(SocketAddr) -> Listener,
) -> Proxy {
    let addr = free_port();
    let mut inner = StaticProxy::start_as(1, meta).unwrap();
    let clusters: Vec<_> = clusters.into_iter().map(pack_any).collect();
    inner.apply(CLUSTER, &clusters).unwrap();
    inner.apply(LISTENER, &[pack_any(l(addr))]).unwrap();
    Proxy { addr, inner }
}

/// One sample of the exposition: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn get(&self, k: &str) -> &str {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map_or("", |(_, v)| v.as_str())
    }
}

fn parse(exposition: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let (head, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').unwrap()),
            None => (head, ""),
        };
        let mut pairs = Vec::new();
        let mut rest = labels;
        while let Some((k, after)) = rest.split_once("=\"") {
            let (v, after) = after.split_once('"').unwrap();
            pairs.push((k.trim_start_matches(',').to_string(), v.to_string()));
            rest = after;
        }
        out.push(Sample {
            name: name.into(),
            labels: pairs,
            value: value.parse().unwrap(),
        });
    }
    out
}

/// The samples of `name` whose labels include `want`.
fn find<'a>(samples: &'a [Sample], name: &str, want: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name && want.iter().all(|(k, v)| s.get(k) == *v))
        .collect()
}

fn total(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    find(samples, name, want).iter().map(|s| s.value).sum()
}

/// Istio's label names for a metric, from one of its test templates (a
/// label listed twice there counts once).
fn istio_labels(template: &str) -> BTreeSet<String> {
    let dir = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
    .join("../../../shared/conformance/istio/metrics");
    let path = dir.join(template);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "Istio's metric label sets are missing at {}: {e} (the tests read them from shared/ beside the clone)",
            path.display()
        )
    });
    text.lines()
        .filter_map(|l| l.strip_prefix("  - name: "))
        .map(|s| s.trim().to_string())
        .collect()
}

fn names(s: &Sample) -> BTreeSet<String> {
    s.labels.iter().map(|(k, _)| k.clone()).collect()
}

#[tokio::test]
async fn a_sidecar_pair_reports_istios_http_metrics() {
    let app = upstream("ratings", None).await;
    let server = start(
        metadata("ratings-v1", "ratings", "v1"),
        vec![ratings_cluster("inbound|9080||", &[app.addr], false)],
        |a| http_listener(a, "inbound|9080||", true),
    );
    let dead = free_port();
    let outbound = format!("outbound|9080||{RATINGS}");
    let client = start(
        metadata("productpage-v1", "productpage", "v1"),
        vec![
            ratings_cluster(&outbound, &[server.addr], true),
            ratings_cluster("dead", &[dead], true),
        ],
        |a| {
            let mut l = http_listener(a, &outbound, false);
            let Some(filter::ConfigType::TypedConfig(any)) =
                &mut l.filter_chains[0].filters[0].config_type
            else {
                panic!()
            };
            // `/dead` goes to a port nobody listens on.
            let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
            if let Some(
                envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier::RouteConfig(rc),
            ) = &mut hcm.route_specifier
            {
                let mut dead = route_to("dead");
                if let Some(envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier::Prefix(p)) =
                    dead.r#match.as_mut().unwrap().path_specifier.as_mut()
                {
                    *p = "/dead".into();
                }
                rc.virtual_hosts[0].routes.insert(0, dead);
            }
            *any = pack_any(hcm);
            l
        },
    );

    for _ in 0..3 {
        let r = get(client.addr, "/ratings/0").await;
        assert_eq!(r.status, 200, "{}", r.body);
        // Neither app sees the other side's exchange headers.
        assert!(!r.body.contains("x-envoy-peer-metadata"), "{}", r.body);
        assert!(
            !r.headers.contains_key("x-envoy-peer-metadata"),
            "{:?}",
            r.headers
        );
    }
    assert_eq!(get(client.addr, "/status/503").await.status, 503);
    assert_eq!(get(client.addr, "/dead").await.status, 503);
    // The record is written once the response has ended.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let source = parse(&client.inner.prometheus());
    let ok = find(&source, "istio_requests_total", &[("response_code", "200")]);
    assert_eq!(ok.len(), 1, "{source:#?}");
    let s = ok[0];
    assert_eq!(s.value, 3.0);
    let want = [
        ("reporter", "source"),
        ("source_workload", "productpage-v1"),
        ("source_workload_namespace", "default"),
        ("source_app", "productpage"),
        ("source_version", "v1"),
        ("source_canonical_service", "productpage"),
        ("source_canonical_revision", "v1"),
        ("source_cluster", "Kubernetes"),
        ("source_principal", "unknown"),
        ("destination_workload", "ratings-v1"),
        ("destination_workload_namespace", "default"),
        ("destination_app", "ratings"),
        ("destination_version", "v1"),
        ("destination_service", RATINGS),
        ("destination_service_name", "ratings"),
        ("destination_service_namespace", "default"),
        ("destination_canonical_service", "ratings"),
        ("destination_canonical_revision", "v1"),
        ("destination_cluster", "Kubernetes"),
        ("request_protocol", "http"),
        ("grpc_response_status", ""),
        ("response_flags", "-"),
        ("connection_security_policy", "unknown"),
    ];
    for (k, v) in want {
        assert_eq!(s.get(k), v, "{k} in {s:?}");
    }
    assert_eq!(names(s), istio_labels("client_request_total.yaml.tmpl"));
    assert_eq!(
        total(
            &source,
            "istio_requests_total",
            &[("response_code", "503"), ("response_flags", "-")]
        ),
        1.0
    );
    // A dead endpoint: no exchange, so the endpoint's metadata names it.
    let uf = find(&source, "istio_requests_total", &[("response_flags", "UF")]);
    assert_eq!(uf.len(), 1, "{source:#?}");
    assert_eq!(uf[0].get("destination_workload"), "ratings-v1");
    assert_eq!(uf[0].get("response_code"), "503");

    // Histograms: Envoy's buckets, every request counted once.
    let count = total(&source, "istio_request_duration_milliseconds_count", &[]);
    assert_eq!(count, 5.0, "{source:#?}");
    let buckets = find(
        &source,
        "istio_request_duration_milliseconds_bucket",
        &[("response_code", "200")],
    );
    let les: Vec<&str> = buckets.iter().map(|b| b.get("le")).collect();
    assert_eq!(les.first(), Some(&"0.5"), "{les:?}");
    assert!(
        les.contains(&"3600000.0") || les.contains(&"3600000"),
        "{les:?}"
    );
    let sizes = find(
        &source,
        "istio_response_bytes_sum",
        &[("response_code", "200")],
    );
    assert!(
        sizes[0].value > 3.0 * 20.0,
        "response bytes counted: {sizes:?}"
    );
    assert_eq!(total(&source, "istio_request_bytes_count", &[]), 5.0);

    let dest = parse(&server.inner.prometheus());
    let ok = find(&dest, "istio_requests_total", &[("response_code", "200")]);
    assert_eq!(ok.len(), 1, "{dest:#?}");
    let s = ok[0];
    assert_eq!(s.value, 3.0);
    for (k, v) in [
        ("reporter", "destination"),
        ("source_workload", "productpage-v1"),
        ("source_app", "productpage"),
        ("destination_workload", "ratings-v1"),
        ("destination_app", "ratings"),
        ("destination_service", RATINGS),
        ("connection_security_policy", "none"),
        ("source_principal", "unknown"),
    ] {
        assert_eq!(s.get(k), v, "{k} in {s:?}");
    }
    assert_eq!(names(s), istio_labels("server_request_total.yaml.tmpl"));
    assert_eq!(app.requests.load(std::sync::atomic::Ordering::SeqCst), 4);
    // Istio's build gauge, with Istio's label set.
    let build = find(&dest, "istio_build", &[("component", "proxy")]);
    assert_eq!(build.len(), 1, "{dest:#?}");
    assert_eq!(build[0].value, 1.0);
    assert_eq!(names(build[0]), istio_labels("istio_build.yaml"));
}

#[tokio::test]
async fn tcp_connections_and_bytes_are_counted_on_both_sides() {
    let echo = tcp_echo().await;
    let server = start(
        metadata("ratings-v1", "ratings", "v1"),
        vec![ratings_cluster("inbound|9000||", &[echo], false)],
        |a| tcp_listener(a, "inbound|9000||", true),
    );
    let client = start(
        metadata("productpage-v1", "productpage", "v1"),
        vec![ratings_cluster(
            "outbound|9000||ratings",
            &[server.addr],
            true,
        )],
        |a| tcp_listener(a, "outbound|9000||ratings", false),
    );
    for _ in 0..2 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(client.addr).await.unwrap();
        s.write_all(b"hello, mesh").await.unwrap();
        let mut buf = [0u8; 11];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello, mesh");
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let source = parse(&client.inner.prometheus());
    let closed = find(&source, "istio_tcp_connections_closed_total", &[]);
    assert_eq!(closed.len(), 1, "{source:#?}");
    let s = closed[0];
    assert_eq!(s.value, 2.0);
    assert_eq!(s.get("reporter"), "source");
    assert_eq!(s.get("request_protocol"), "tcp");
    assert_eq!(s.get("destination_workload"), "ratings-v1");
    assert_eq!(s.get("destination_service"), RATINGS);
    assert_eq!(
        names(s),
        istio_labels("tcp_client_connection_close.yaml.tmpl")
    );
    assert_eq!(
        total(&source, "istio_tcp_connections_opened_total", &[]),
        2.0
    );
    assert_eq!(total(&source, "istio_tcp_sent_bytes_total", &[]), 22.0);
    assert_eq!(total(&source, "istio_tcp_received_bytes_total", &[]), 22.0);

    let dest = parse(&server.inner.prometheus());
    let s = find(&dest, "istio_tcp_sent_bytes_total", &[]);
    assert_eq!(s.len(), 1, "{dest:#?}");
    assert_eq!(s[0].value, 22.0);
    assert_eq!(s[0].get("reporter"), "destination");
    assert_eq!(s[0].get("destination_workload"), "ratings-v1");
    assert_eq!(s[0].get("connection_security_policy"), "none");
    assert_eq!(
        names(s[0]),
        istio_labels("tcp_server_connection_open_without_mx.yaml.tmpl")
    );
}

#[tokio::test]
async fn grpc_calls_carry_their_status_and_message_counts() {
    let app = grpc_upstream().await;
    let outbound = format!("outbound|9080||{RATINGS}");
    let client = start(
        metadata("productpage-v1", "productpage", "v1"),
        vec![http2_cluster(ratings_cluster(
            &outbound,
            &[app.addr],
            false,
        ))],
        |a| http_listener(a, &outbound, false),
    );
    // Three messages, the first cut across two DATA frames.
    let mut framed = Vec::new();
    for m in [&b"a"[..], &b"bb"[..], &b"ccc"[..]] {
        framed.push(0u8);
        framed.extend_from_slice(&(m.len() as u32).to_be_bytes());
        framed.extend_from_slice(m);
    }
    let chunks = Chunks(
        vec![
            Bytes::copy_from_slice(&framed[..3]),
            Bytes::copy_from_slice(&framed[3..]),
        ]
        .into(),
    );
    let (mut sender, _) = h2_client(client.addr).await;
    for path in ["/ratings.Ratings/Get", "/ratings.Ratings/Status14"] {
        let req = http::Request::post(format!("http://ratings{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Chunks(chunks.0.clone()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        use http_body_util::BodyExt;
        let got = resp.into_body().collect().await.unwrap();
        assert!(got.trailers().is_some());
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let source = parse(&client.inner.prometheus());
    for status in ["0", "14"] {
        let calls = find(
            &source,
            "istio_requests_total",
            &[
                ("request_protocol", "grpc"),
                ("grpc_response_status", status),
            ],
        );
        assert_eq!(calls.len(), 1, "status {status}: {source:#?}");
        assert_eq!(calls[0].get("response_code"), "200");
    }
    let sent = find(&source, "istio_request_messages_total", &[]);
    assert_eq!(sent.len(), 1, "{source:#?}");
    assert_eq!(sent[0].value, 6.0, "three messages per call");
    assert_eq!(total(&source, "istio_response_messages_total", &[]), 4.0);
    assert_eq!(
        names(sent[0]),
        istio_labels("server_request_messages.yaml.tmpl")
    );
    // Request bytes: headers and the 5+1 + 5+2 + 5+3 framed body.
    let bytes = find(
        &source,
        "istio_request_bytes_sum",
        &[("grpc_response_status", "0")],
    );
    assert!(bytes[0].value > 21.0, "{bytes:?}");
}

#[tokio::test]
async fn telemetry_overrides_drop_remove_and_add_tags() {
    let app = upstream("ratings", None).await;
    // Istio's "Customizing Istio Metrics" task: remove a tag, add two
    // (request.host, the destination port); and drop one metric.
    let config = PluginConfig {
        disable_host_header_fallback: true,
        metrics: vec![
            MetricConfig {
                name: "requests_total".into(),
                tags_to_remove: vec!["grpc_response_status".into()],
                dimensions: [
                    ("request_host".to_string(), "request.host".to_string()),
                    (
                        "destination_port".to_string(),
                        "string(destination.port)".to_string(),
                    ),
                    (
                        "agent".to_string(),
                        "request.headers['User-Agent']".to_string(),
                    ),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            },
            MetricConfig {
                name: "request_duration_milliseconds".into(),
                drop: true,
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let server = start(
        metadata("ratings-v1", "ratings", "v1"),
        vec![ratings_cluster("inbound|9080||", &[app.addr], false)],
        |a| tweaked_listener(a, "inbound|9080||", &config),
    );
    for _ in 0..2 {
        let r = get_with(server.addr, "/ratings/0", &[("user-agent", "course/1.0")]).await;
        assert_eq!(r.status, 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let text = server.inner.prometheus();
    let samples = parse(&text);
    let count = find(&samples, "istio_requests_total", &[]);
    assert_eq!(count.len(), 1, "{text}");
    let s = count[0];
    assert_eq!(s.value, 2.0);
    assert_eq!(s.get("request_host"), "test.local");
    assert_eq!(s.get("destination_port"), server.addr.port().to_string());
    assert_eq!(s.get("agent"), "course/1.0");
    assert!(!names(s).contains("grpc_response_status"), "{s:?}");
    assert!(find(&samples, "istio_request_duration_milliseconds_count", &[]).is_empty());
    assert_eq!(total(&samples, "istio_request_bytes_count", &[]), 2.0);
}

#[tokio::test]
async fn exchange_headers_never_reach_an_app_even_without_stats() {
    let app = upstream("ratings", None).await;
    // A chain without istio.stats (a side whose metrics are disabled).
    let server = proxy(
        vec![static_cluster("app", &[app.addr])],
        vec![route_to("app")],
    );
    let r = get_with(
        server.addr,
        "/",
        &[
            ("x-envoy-peer-metadata", "c3Bvb2Zl"),
            (
                "x-envoy-peer-metadata-id",
                "sidecar~1.2.3.4~evil.default~default.svc.cluster.local",
            ),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("x-envoy-peer-metadata"), "{}", r.body);
}

/// The proxy's own xDS stats under Envoy's names (Istio keeps
/// `cluster_manager` and `listener_manager`): a rejected update counts as
/// one and changes nothing in use.
#[tokio::test]
async fn xds_updates_are_counted_as_envoy_counts_them() {
    let app = upstream("ratings", None).await;
    let outbound = format!("outbound|9080||{RATINGS}");
    let mut proxy = start(
        metadata("productpage-v1", "productpage", "v1"),
        vec![ratings_cluster(&outbound, &[app.addr], false)],
        |a| http_listener(a, &outbound, false),
    );
    let mut bad = ratings_cluster("bad", &[app.addr], false);
    bad.lb_policy = 999;
    let bad = vec![pack_any(bad)];
    assert!(proxy.inner.apply(CLUSTER, &bad).is_err());
    let text = proxy.inner.prometheus();
    for line in [
        "envoy_cluster_manager_cds_update_attempt 2",
        "envoy_cluster_manager_cds_update_success 1",
        "envoy_cluster_manager_cds_update_rejected 1",
        "envoy_cluster_manager_active_clusters 1",
        "envoy_listener_manager_lds_update_success 1",
        "envoy_listener_manager_total_listeners_active 1",
        "envoy_server_concurrency 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
}

/// Stats eviction (Istio's `statsEvictionInterval`): a series used in an
/// interval survives its sweep; one idle for a whole interval is gone
/// from the exposition, and comes back from zero when used again. TCP
/// series go the same way.
#[tokio::test]
async fn series_idle_for_an_interval_are_evicted() {
    let app = upstream("ratings", None).await;
    let server = start(
        metadata("ratings-v1", "ratings", "v1"),
        vec![ratings_cluster("inbound|9080||", &[app.addr], false)],
        |a| http_listener(a, "inbound|9080||", true),
    );
    server.inner.enable_stats_eviction();
    let requests = |p: &Proxy| {
        parse(&p.inner.prometheus())
            .into_iter()
            .filter(|s| s.name == "istio_requests_total")
            .map(|s| s.value)
            .collect::<Vec<f64>>()
    };
    for _ in 0..2 {
        assert_eq!(get(server.addr, "/ratings/0").await.status, 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(requests(&server), [2.0]);
    assert_eq!(server.inner.evict_unused_stats(), 0, "used this interval");
    assert_eq!(requests(&server), [2.0]);
    assert_eq!(
        server.inner.evict_unused_stats(),
        4,
        "the label set's four HTTP metrics"
    );
    assert!(requests(&server).is_empty());
    let text = server.inner.prometheus();
    assert!(
        !text.contains("istio_request_duration_milliseconds_bucket"),
        "{text}"
    );
    assert_eq!(get(server.addr, "/ratings/0").await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(requests(&server), [1.0], "back, from zero");

    let echo = tcp_echo().await;
    let tcp = start(
        metadata("tcp-echo-v1", "tcp-echo", "v1"),
        vec![ratings_cluster("inbound|9000||", &[echo], false)],
        |a| tcp_listener(a, "inbound|9000||", true),
    );
    tcp.inner.enable_stats_eviction();
    let mut s = tokio::net::TcpStream::connect(tcp.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"hi\n").await.unwrap();
    let mut buf = [0u8; 3];
    s.read_exact(&mut buf).await.unwrap();
    drop(s);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(tcp
        .inner
        .prometheus()
        .contains("istio_tcp_connections_closed_total{"));
    tcp.inner.evict_unused_stats();
    assert_eq!(
        tcp.inner.evict_unused_stats(),
        4,
        "opened, closed, sent, received"
    );
    assert!(!tcp
        .inner
        .prometheus()
        .contains("istio_tcp_connections_closed_total{"));
}

/// Istio's stats filter counts an open TCP connection's bytes every
/// reporting interval (`reportingInterval`, `tcp_reporting_duration`),
/// not only when it closes; the close counts the rest, never twice.
#[tokio::test]
async fn open_tcp_connections_are_reported_every_interval() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = tcp_echo().await;
    let every = PluginConfig {
        tcp_reporting_duration: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 0,
            nanos: 200_000_000,
        }),
        ..Default::default()
    };
    let server = start(
        metadata("ratings-v1", "ratings", "v1"),
        vec![ratings_cluster("inbound|9000||", &[echo], false)],
        |a| {
            let mut l = tcp_listener(a, "inbound|9000||", true);
            l.filter_chains[0].filters[0].config_type =
                Some(filter::ConfigType::TypedConfig(Any {
                    type_url: "type.googleapis.com/stats.PluginConfig".into(),
                    value: every.encode_to_vec(),
                }));
            l
        },
    );
    let total = |name: &str| -> f64 {
        parse(&server.inner.prometheus())
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    };
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"hello, mesh").await.unwrap();
    let mut buf = [0u8; 11];
    s.read_exact(&mut buf).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(total("istio_tcp_received_bytes_total"), 11.0, "while open");
    assert_eq!(total("istio_tcp_sent_bytes_total"), 11.0, "while open");
    assert_eq!(total("istio_tcp_connections_closed_total"), 0.0);
    s.write_all(b"bye").await.unwrap();
    let mut buf = [0u8; 3];
    s.read_exact(&mut buf).await.unwrap();
    drop(s);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(total("istio_tcp_connections_closed_total"), 1.0);
    assert_eq!(total("istio_tcp_received_bytes_total"), 14.0);
    assert_eq!(total("istio_tcp_sent_bytes_total"), 14.0);
}
