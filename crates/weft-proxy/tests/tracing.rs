//! Distributed tracing on loopback: a client sidecar (outbound, CLIENT
//! spans) and a server sidecar (inbound, SERVER spans) in front of an app,
//! both with Envoy's Zipkin tracer config as istiod writes it, reporting to
//! a collector that keeps what it is POSTed. The spans join into one
//! trace, the app sees the B3 context, and sampling decides as Envoy's
//! does.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::config::route::v3::Decorator;
use envoy_types::pb::envoy::config::trace::v3::{
    tracing::http::ConfigType, tracing::Http, ZipkinConfig,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::Tracing, HttpConnectionManager,
};
use envoy_types::pb::envoy::r#type::tracing::v3::{custom_tag, CustomTag};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::util::pack_any;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prost::Message;
use serde_json::Value;
use support::*;
use weft_proxy::stats::NodeMetadata;
use weft_proxy::StaticProxy;

const OPERATION: &str = "ratings.default.svc.cluster.local:9080/*";

/// A Zipkin stand-in: keeps every span it is sent.
async fn collector() -> (SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let kept = kept.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let kept = kept.clone();
                async move {
                    assert_eq!(req.uri().path(), "/api/v2/spans");
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let v: Vec<Value> = serde_json::from_slice(&body).unwrap();
                    kept.lock().unwrap().extend(v);
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .status(202)
                            .body(Full::new(Bytes::new()))
                            .unwrap(),
                    )
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, spans)
}

fn tracing(percent: f64) -> Tracing {
    Tracing {
        random_sampling: Some(Percent { value: percent }),
        client_sampling: Some(Percent { value: 100.0 }),
        overall_sampling: Some(Percent { value: 100.0 }),
        custom_tags: vec![CustomTag {
            tag: "istio.canonical_service".into(),
            r#type: Some(custom_tag::Type::Literal(custom_tag::Literal {
                value: "ratings".into(),
            })),
        }],
        provider: Some(Http {
            name: "envoy.tracers.zipkin".into(),
            config_type: Some(ConfigType::TypedConfig(pack_any(ZipkinConfig {
                collector_cluster: "zipkin".into(),
                collector_endpoint: "/api/v2/spans".into(),
                collector_endpoint_version: 1,
                ..Default::default()
            }))),
        }),
        ..Default::default()
    }
}

/// The standard listener, traced, in `direction`, its route decorated.
fn traced(addr: SocketAddr, cluster: &str, direction: TrafficDirection, percent: f64) -> Listener {
    let mut route = route_to(cluster);
    route.decorator = Some(Decorator {
        operation: OPERATION.into(),
        ..Default::default()
    });
    let mut l = listener(addr, vec![route]);
    l.traffic_direction = direction as i32;
    let Some(filter::ConfigType::TypedConfig(any)) = &mut l.filter_chains[0].filters[0].config_type
    else {
        panic!()
    };
    let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    hcm.tracing = Some(tracing(percent));
    *any = pack_any(hcm);
    l
}

fn metadata(app: &str) -> NodeMetadata {
    let v = serde_json::json!({
        "NAMESPACE": "default", "WORKLOAD_NAME": format!("{app}-v1"),
        "LABELS": {"app": app}, "INSTANCE_IPS": "127.0.0.1",
    });
    NodeMetadata(v.as_object().unwrap().clone())
}

/// client proxy → server proxy → app, both proxies reporting to `zipkin`.
fn pair(app: SocketAddr, zipkin: SocketAddr, percent: f64) -> (Proxy, Proxy) {
    let start = |meta,
                 clusters: Vec<envoy_types::pb::envoy::config::cluster::v3::Cluster>,
                 build: &dyn Fn(SocketAddr) -> Listener| {
        let addr = free_port();
        let mut inner = StaticProxy::start_as(1, meta).unwrap();
        let clusters: Vec<_> = clusters.into_iter().map(pack_any).collect::<Vec<_>>();
        inner.apply(support::CLUSTER, &clusters).unwrap();
        inner
            .apply(support::LISTENER, &[pack_any(build(addr))])
            .unwrap();
        Proxy { addr, inner }
    };
    let server = start(
        metadata("ratings"),
        vec![
            static_cluster("app", &[app]),
            static_cluster("zipkin", &[zipkin]),
        ],
        &|a| traced(a, "app", TrafficDirection::Inbound, percent),
    );
    let to_server = server.addr;
    let client = start(
        metadata("reviews"),
        vec![
            static_cluster("server", &[to_server]),
            static_cluster("zipkin", &[zipkin]),
        ],
        &|a| traced(a, "server", TrafficDirection::Outbound, percent),
    );
    (client, server)
}

async fn spans_eventually(spans: &Arc<Mutex<Vec<Value>>>, n: usize) -> Vec<Value> {
    for _ in 0..50 {
        if spans.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    spans.lock().unwrap().clone()
}

/// The header value the app saw (the upstream echoes headers in its body).
fn seen(body: &str, name: &str) -> Option<String> {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
}

#[tokio::test]
async fn client_and_server_spans_join_one_trace() {
    let app = upstream("ratings", None).await;
    let (zipkin, spans) = collector().await;
    let (client, _server) = pair(app.addr, zipkin, 100.0);
    let r = get(client.addr, "/ratings/0").await;
    assert_eq!(r.status, 200);
    let got = spans_eventually(&spans, 2).await;
    assert_eq!(got.len(), 2, "{got:#?}");
    let kind = |k: &str| got.iter().find(|s| s["kind"] == k).unwrap().clone();
    let (c, s) = (kind("CLIENT"), kind("SERVER"));
    assert_eq!(c["traceId"], s["traceId"]);
    assert_eq!(c["traceId"].as_str().unwrap().len(), 32);
    assert!(c.get("parentId").is_none(), "a new trace: {c}");
    assert_eq!(s["parentId"], c["id"], "the server's parent is the client");
    assert_eq!(c["name"], OPERATION);
    assert_eq!(s["name"], OPERATION);
    assert_eq!(c["localEndpoint"]["serviceName"], "reviews.default");
    assert_eq!(s["localEndpoint"]["serviceName"], "ratings.default");
    assert_eq!(s["localEndpoint"]["ipv4"], "127.0.0.1");
    for span in [&c, &s] {
        let tags = &span["tags"];
        assert_eq!(tags["http.status_code"], "200", "{span}");
        assert_eq!(tags["http.method"], "GET");
        assert_eq!(tags["component"], "proxy");
        assert_eq!(tags["istio.canonical_service"], "ratings");
        assert_eq!(tags["http.url"], "http://test.local/ratings/0");
        assert!(span["duration"].as_u64().unwrap() > 0);
    }
    assert_eq!(c["tags"]["upstream_cluster"], "server");
    // One request id across hops, marked as sampled (version digit 9).
    let rid = c["tags"]["guid:x-request-id"].as_str().unwrap();
    assert_eq!(s["tags"]["guid:x-request-id"], rid);
    assert_eq!(&rid[14..15], "9", "{rid}");
    // The app sees the server span's context.
    assert_eq!(
        seen(&r.body, "x-b3-traceid").as_deref(),
        c["traceId"].as_str()
    );
    assert_eq!(seen(&r.body, "x-b3-spanid").as_deref(), s["id"].as_str());
    assert_eq!(
        seen(&r.body, "x-b3-parentspanid").as_deref(),
        c["id"].as_str()
    );
    assert_eq!(seen(&r.body, "x-b3-sampled").as_deref(), Some("1"));
    assert_eq!(seen(&r.body, "x-envoy-decorator-operation"), None);
}

/// A caller's B3 context (multi or single header) is continued.
#[tokio::test]
async fn a_callers_context_is_continued() {
    let app = upstream("ratings", None).await;
    let (zipkin, spans) = collector().await;
    let (client, _server) = pair(app.addr, zipkin, 0.0);
    let trace = "463ac35c9f6413ad48485a3953bb6124";
    let r = get_with(
        client.addr,
        "/",
        &[("b3", &format!("{trace}-a2fb4a1d1a96d312-1"))],
    )
    .await;
    assert_eq!(seen(&r.body, "x-b3-traceid").as_deref(), Some(trace));
    let got = spans_eventually(&spans, 2).await;
    assert_eq!(got.len(), 2, "sampled by the caller at 0%: {got:#?}");
    let c = got.iter().find(|s| s["kind"] == "CLIENT").unwrap();
    assert_eq!(c["traceId"], trace);
    assert_eq!(c["parentId"], "a2fb4a1d1a96d312");
}

/// At 0% nothing is reported, yet the context (unsampled) is passed on;
/// `x-client-trace-id` forces a trace.
#[tokio::test]
async fn sampling_and_forced_traces() {
    let app = upstream("ratings", None).await;
    let (zipkin, spans) = collector().await;
    let (client, _server) = pair(app.addr, zipkin, 0.0);
    let r = get(client.addr, "/").await;
    assert_eq!(seen(&r.body, "x-b3-sampled").as_deref(), Some("0"));
    let rid = seen(&r.body, "x-request-id").unwrap();
    assert_eq!(&rid[14..15], "4", "not traced: {rid}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(spans.lock().unwrap().is_empty());
    let r = get_with(client.addr, "/", &[("x-client-trace-id", "abc")]).await;
    assert_eq!(seen(&r.body, "x-b3-sampled").as_deref(), Some("1"));
    let got = spans_eventually(&spans, 2).await;
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got
        .iter()
        .all(|s| s["tags"]["guid:x-client-trace-id"] == "abc"));
}
