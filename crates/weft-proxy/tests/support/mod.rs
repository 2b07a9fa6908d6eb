//! The in-process test layer: a Weft proxy on loopback fed with Envoy
//! resources directly (no control plane, no root), real upstream servers
//! and a real HTTP client on real sockets.

#![allow(dead_code)]

pub mod pki;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    retry_policy, route, route_action, route_match, RetryPolicy, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::util::pack_any;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::StaticProxy;

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/// A test upstream: answers `/status/N` with N, `/delay/MS` after MS
/// milliseconds, anything else with 200; every body names the upstream,
/// then the path it received, then the request's headers. With
/// `fail_every: n`, every n-th request gets 503.
pub struct Upstream {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    /// Connections accepted, and of those, ended.
    pub connections: Arc<AtomicUsize>,
    pub closed: Arc<AtomicUsize>,
}

pub async fn upstream(name: &'static str, fail_every: Option<usize>) -> Upstream {
    serve_upstream(false, move |n, req| answer(name, n, fail_every, req)).await
}

/// Serves `handle(n, request)` (n counts requests from 1) on a free
/// loopback port, over HTTP/1.1, or over h2c only.
async fn serve_upstream<F, Fut, B>(h2: bool, handle: F) -> Upstream
where
    F: Fn(usize, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (count, accepted, ended) = (requests.clone(), connections.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let (count, handle, ended) = (count.clone(), handle.clone(), ended.clone());
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let reply = handle(count.fetch_add(1, Ordering::SeqCst) + 1, req);
                async move { Ok::<_, Infallible>(reply.await) }
            });
            let io = TokioIo::new(s);
            tokio::spawn(async move {
                if h2 {
                    let builder = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let _ = builder.serve_connection(io, svc).await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Upstream {
        addr,
        requests,
        connections,
        closed,
    }
}

async fn answer(
    name: &str,
    n: usize,
    fail_every: Option<usize>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().to_string();
    let mut status = StatusCode::OK;
    if let Some(code) = path.strip_prefix("/status/") {
        status = StatusCode::from_u16(code.parse().unwrap()).unwrap();
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
    }
    if fail_every.is_some_and(|k| n.is_multiple_of(k)) {
        status = StatusCode::SERVICE_UNAVAILABLE;
    }
    let mut body = format!("{name}\n{path}\n");
    for (k, v) in req.headers() {
        body.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
    }
    let received = req.into_body().collect().await.unwrap().to_bytes();
    body.push_str(&String::from_utf8_lossy(&received));
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert("x-upstream", name.parse().unwrap());
    r
}

pub fn socket(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..Default::default()
        })),
    }
}

pub fn static_cluster(name: &str, endpoints: &[SocketAddr]) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 1,
            nanos: 0,
        }),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: endpoints
                    .iter()
                    .map(|a| LbEndpoint {
                        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                            address: Some(socket(*a)),
                            ..Default::default()
                        })),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A catch-all route to `cluster` with no timeout and no retries; tests
/// set the fields they are about.
pub fn route_to(cluster: &str) -> Route {
    Route {
        name: "test".into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
            timeout: Some(envoy_types::pb::google::protobuf::Duration::default()),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The retry policy istiod writes on every route by default.
pub fn istio_default_retries() -> RetryPolicy {
    RetryPolicy {
        retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
            .into(),
        num_retries: Some(envoy_types::pb::google::protobuf::UInt32Value { value: 2 }),
        retriable_status_codes: vec![503],
        retry_host_predicate: vec![retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            ..Default::default()
        }],
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    }
}

pub fn action(r: &mut Route) -> &mut RouteAction {
    match r.action.as_mut() {
        Some(route::Action::Route(a)) => a,
        _ => panic!("not a forwarding route"),
    }
}

fn http_filter(name: &str, any: envoy_types::pb::google::protobuf::Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any)),
        ..Default::default()
    }
}

/// A listener on `addr` with Istio's filter list (fault, router) and the
/// given routes inline.
pub fn listener(addr: SocketAddr, routes: Vec<Route>) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: "test".into(),
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: "test".into(),
            virtual_hosts: vec![VirtualHost {
                name: "test".into(),
                domains: vec!["*".into()],
                routes,
                ..Default::default()
            }],
            ..Default::default()
        })),
        http_filters: vec![
            http_filter("envoy.filters.http.fault", pack_any(HttpFault::default())),
            http_filter("envoy.filters.http.router", pack_any(Router::default())),
        ],
        // As istiod writes every connection manager.
        upgrade_configs: vec![
            envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::UpgradeConfig {
                upgrade_type: "websocket".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    Listener {
        name: "test".into(),
        address: Some(socket(addr)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A protobuf duration of `n` milliseconds.
pub fn ms(n: u64) -> envoy_types::pb::google::protobuf::Duration {
    envoy_types::pb::google::protobuf::Duration {
        seconds: (n / 1000) as i64,
        nanos: ((n % 1000) * 1_000_000) as i32,
    }
}

/// Edits the connection manager of a chain made by `listener`.
pub fn edit_hcm(chain: &mut FilterChain, edit: impl FnOnce(&mut HttpConnectionManager)) {
    use prost::Message;
    let Some(filter::ConfigType::TypedConfig(any)) = &mut chain.filters[0].config_type else {
        panic!("the chain's first filter is the connection manager")
    };
    let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    edit(&mut hcm);
    *any = pack_any(hcm);
}

/// A tcp_proxy network filter to `cluster`.
pub fn tcp_proxy_filter(cluster: &str) -> Filter {
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        tcp_proxy::ClusterSpecifier, TcpProxy,
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(TcpProxy {
            stat_prefix: cluster.into(),
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        }))),
    }
}

/// A free loopback port (bound and released; the proxy binds it next).
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A running proxy: clusters first, then the listener, as xDS orders them.
pub struct Proxy {
    pub addr: SocketAddr,
    pub inner: StaticProxy,
}

/// A proxy with the standard HTTP listener (see `listener`) on a free port.
pub fn proxy(clusters: Vec<Cluster>, routes: Vec<Route>) -> Proxy {
    serve(clusters, |addr| listener(addr, routes))
}

/// A proxy with whatever listener `build` makes for a free port.
pub fn serve(clusters: Vec<Cluster>, build: impl FnOnce(SocketAddr) -> Listener) -> Proxy {
    let addr = free_port();
    let mut inner = StaticProxy::start(1).unwrap();
    let clusters: Vec<_> = clusters.into_iter().map(pack_any).collect();
    inner.apply(CLUSTER, &clusters).unwrap();
    inner.apply(LISTENER, &[pack_any(build(addr))]).unwrap();
    Proxy { addr, inner }
}

/// A static cluster whose first host is priority 0 and the rest priority 1
/// (a near locality and a far one).
pub fn two_priorities(name: &str, near: SocketAddr, far: &[SocketAddr]) -> Cluster {
    localities(name, &[(0, None, &[near]), (1, None, far)])
}

/// A static cluster with one locality per (priority, weight, hosts).
pub fn localities(name: &str, groups: &[(u32, Option<u32>, &[SocketAddr])]) -> Cluster {
    let mut cluster = static_cluster(name, &[]);
    if let Some(cla) = cluster.load_assignment.as_mut() {
        cla.endpoints = groups
            .iter()
            .map(|(priority, weight, hosts)| {
                let mut group = static_cluster(name, hosts)
                    .load_assignment
                    .unwrap()
                    .endpoints[0]
                    .clone();
                group.priority = *priority;
                group.load_balancing_weight =
                    weight.map(|value| envoy_types::pb::google::protobuf::UInt32Value { value });
                group
            })
            .collect();
    }
    cluster
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// A request body of unknown length (sent chunked over HTTP/1.1, without
/// content-length over HTTP/2), in the given pieces.
pub struct Chunks(pub std::collections::VecDeque<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// One request on a new connection.
pub async fn send<B>(to: SocketAddr, req: Request<B>) -> Reply
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let s = TcpStream::connect(to).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub async fn get(to: SocketAddr, path: &str) -> Reply {
    get_with(to, path, &[]).await
}

pub async fn get_with(to: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut b = Request::get(path).header("host", "test.local");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(to, b.body(Full::new(Bytes::new())).unwrap()).await
}

/// How many replies had each status, over `n` requests.
pub async fn statuses(to: SocketAddr, path: &str, n: usize) -> HashMap<u16, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        *seen.entry(get(to, path).await.status.as_u16()).or_default() += 1;
    }
    seen
}

/// An HTTP/2-only (h2c) upstream: answers `name\n` (`/delay/MS` after MS
/// milliseconds), echoes what it saw in `x-version`, `x-authority` and
/// `x-te`, and ends with a `grpc-status: 0` trailer, as a gRPC server does.
pub async fn h2_upstream(name: &'static str) -> Upstream {
    serve_upstream(true, move |_, req| async move {
        if let Some(ms) = req.uri().path().strip_prefix("/delay/") {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
        }
        h2_answer(name, &req)
    })
    .await
}

/// A gRPC-shaped h2c upstream: answers every call with two
/// length-prefixed messages and the `grpc-status` the path names
/// (`/pkg.Svc/Status14` → 14; otherwise 0) in its trailers.
pub async fn grpc_upstream() -> Upstream {
    serve_upstream(true, move |_, req| async move {
        let status = req
            .uri()
            .path()
            .rsplit_once("/Status")
            .map_or("0".to_string(), |(_, s)| s.to_string());
        let _ = req.into_body().collect().await;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", status.parse().unwrap());
        let mut body = Vec::new();
        for message in [&b"one"[..], &b"three"[..]] {
            body.push(0);
            body.extend_from_slice(&(message.len() as u32).to_be_bytes());
            body.extend_from_slice(message);
        }
        let body = Full::new(Bytes::from(body))
            .with_trailers(async move { Some(Ok(trailers)) })
            .boxed();
        Response::builder()
            .header("content-type", "application/grpc")
            .body(body)
            .unwrap()
    })
    .await
}

fn h2_answer(
    name: &str,
    req: &Request<Incoming>,
) -> Response<http_body_util::combinators::BoxBody<Bytes, Infallible>> {
    let seen =
        |v: Option<&http::HeaderValue>| v.and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let body = Full::new(Bytes::from(format!("{name}\n")))
        .with_trailers(async move { Some(Ok(trailers)) })
        .boxed();
    Response::builder()
        .header("x-version", format!("{:?}", req.version()))
        .header(
            "x-authority",
            req.uri().authority().map_or("-".into(), |a| a.to_string()),
        )
        .header("x-te", seen(req.headers().get("te")))
        .body(body)
        .unwrap()
}

/// `cluster` speaking HTTP/2 to its hosts, as istiod writes it for a
/// `grpc` or `http2` port.
pub fn http2_cluster(cluster: Cluster) -> Cluster {
    http2_cluster_with(cluster, Default::default())
}

/// `cluster` speaking HTTP/2 with `options`.
pub fn http2_cluster_with(
    mut cluster: Cluster,
    options: envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions,
) -> Cluster {
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
        http_protocol_options::{
            explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
        },
        HttpProtocolOptions,
    };
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(options)),
            },
        )),
        ..Default::default()
    };
    cluster.typed_extension_protocol_options.insert(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
        pack_any(options),
    );
    cluster
}

/// An h2c connection to `to` (prior knowledge), its driver spawned.
pub async fn h2_client<B>(
    to: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<B>,
    tokio::task::JoinHandle<hyper::Result<()>>,
)
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let s = TcpStream::connect(to).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(s),
    )
    .await
    .unwrap();
    (sender, tokio::spawn(conn))
}

/// One request over HTTP/2 with prior knowledge (h2c); the reply with its
/// trailers.
pub async fn send_h2(
    to: SocketAddr,
    req: Request<Full<Bytes>>,
) -> (Reply, Option<http::HeaderMap>) {
    let (mut sender, _) = h2_client(to).await;
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    (
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        },
        trailers,
    )
}

/// A bare upstream that accepts any HTTP/1.1 upgrade (`101`, echoing the
/// `Upgrade` token) and then echoes every byte, as a WebSocket echo server
/// would echo frames.
pub async fn upgrade_echo_upstream() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let token = text
                    .lines()
                    .find_map(|l| l.strip_prefix("upgrade:"))
                    .map(str::trim)
                    .unwrap_or("none")
                    .to_string();
                let reply = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nupgrade: {token}\r\nconnection: upgrade\r\n\r\n"
                );
                if s.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A TCP echo server.
pub async fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A GET over h2c.
pub async fn get_h2(to: SocketAddr, path: &str) -> Reply {
    let req = Request::get(format!("http://test.local{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send_h2(to, req).await.0
}

/// Asserts that `hits` of `n` independent draws fit probability `p`: within
/// 4.5 standard deviations of `n·p`. A correct proxy fails this about once
/// in 150 000 runs; tighter bands (±2σ, ±3σ) made CI flaky.
pub fn assert_share(what: &str, hits: usize, n: usize, p: f64) {
    let mean = n as f64 * p;
    let band = 4.5 * (mean * (1.0 - p)).sqrt();
    assert!(
        (hits as f64 - mean).abs() <= band,
        "{what}: {hits} of {n}, expected {mean:.0} ± {band:.0}"
    );
}

/// A log file path, removed when the test ends (pass or fail).
pub struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl std::ops::Deref for Temp {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

pub fn temp(name: &str) -> Temp {
    let p = std::env::temp_dir().join(format!("weft-access-log-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    Temp(p)
}

/// The file's lines once `n` are there (the proxy flushes each second).
pub async fn lines(path: &Path, n: usize) -> Vec<String> {
    for _ in 0..50 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} has fewer than {n} lines", path.display());
}
