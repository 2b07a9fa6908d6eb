//! The admin port (Envoy's 15000): readiness, config dump, clusters,
//! certificates and Istio's metrics; and the metrics alone on their own
//! port (Istio's 15090), which Prometheus scrapes from outside the pod.
//!
//! `/config_dump` has the shape of Envoy's (`configs[]` with `@type`,
//! `dynamic_*` entries and versions); each resource inside is Weft's compiled
//! form, not Envoy's proto3 JSON, because the proto crate carries no JSON
//! mapping (see ARCHITECTURE.md).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;
use tokio::net::TcpListener;

use crate::Shared;

pub(crate) async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("admin port {addr}: {e}"))
}

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    weft_xds::debug_http::serve(listener, "admin", move |req| {
        let response = handle(req, &shared);
        async move { response }
    })
    .await
}

fn json_response(body: String) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn handle(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/ready" => {
            if shared.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "LIVE\n".into())
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "PRE_INITIALIZING\n".into())
            }
        }
        "/config_dump" => {
            json_response(serde_json::to_string_pretty(&config_dump(shared)).unwrap_or_default())
        }
        "/clusters" => text(StatusCode::OK, clusters(shared)),
        "/certs" => {
            let certs = json!({ "certificates": shared.identity.view() });
            json_response(serde_json::to_string_pretty(&certs).unwrap_or_default())
        }
        "/stats/prometheus" => prometheus(shared),
        "/recent_spans" => {
            json_response(serde_json::to_string(&shared.tracer.recent()).unwrap_or_default())
        }
        "/recent_failures" => {
            json_response(serde_json::to_string(&shared.recent.list()).unwrap_or_default())
        }
        "/" => text(
            StatusCode::OK,
            "weft proxy admin: /ready /config_dump /clusters /certs /stats/prometheus /recent_failures /recent_spans\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// Serves `/stats/prometheus` and nothing else.
pub(crate) async fn serve_prometheus(listener: TcpListener, shared: Arc<Shared>) {
    weft_xds::debug_http::serve(listener, "prometheus", move |req| {
        let response = match req.uri().path() {
            "/stats/prometheus" | "/metrics" => prometheus(&shared),
            _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
        };
        async move { response }
    })
    .await
}

/// The metrics in OpenMetrics text, which Prometheus reads.
fn prometheus(shared: &Shared) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::OK, prometheus_text(shared));
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    r
}

/// The proxy's metrics (OpenMetrics), values read at scrape time first.
pub(crate) fn prometheus_text(shared: &Shared) -> String {
    let not_after = shared
        .identity
        .current()
        .and_then(|c| c.chain.first().map(|leaf| leaf.not_after));
    shared.stats.envoy.refresh(not_after);
    shared.stats.encode()
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

fn config_dump(shared: &Shared) -> serde_json::Value {
    let c = shared.config.load_full();
    let version = |t: &str| c.versions.get(t).cloned().unwrap_or_default();
    let mut routes: Vec<_> = c.routes.values().collect();
    routes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut clusters: Vec<_> = c.clusters.values().collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    json!({
        "node": { "id": shared.options.node_id },
        "configs": [
            {
                "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                "version_info": version("LDS"),
                "dynamic_listeners": c.listeners.iter().map(|l| json!({
                    "name": l.name,
                    "active_state": { "version_info": version("LDS"), "listener": l },
                })).collect::<Vec<_>>(),
            },
            {
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                "version_info": version("CDS"),
                "dynamic_active_clusters": clusters.iter().map(|cl| json!({
                    "version_info": version("CDS"),
                    "cluster": cl,
                })).collect::<Vec<_>>(),
            },
            {
                "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
                "dynamic_route_configs": routes.iter().map(|r| json!({
                    "version_info": version("RDS"),
                    "route_config": r,
                })).collect::<Vec<_>>(),
            },
        ],
    })
}

/// Envoy's `/clusters` text form: `cluster::address::field::value`.
fn clusters(shared: &Shared) -> String {
    let c = shared.config.load_full();
    let mut names: Vec<_> = c.clusters.keys().collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        let cl = &c.clusters[name];
        for addr in &cl.endpoints.addresses {
            out.push_str(&format!("{name}::{addr}::health_flags::healthy\n"));
        }
    }
    out
}
