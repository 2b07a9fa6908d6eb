//! Finished spans, batched and POSTed as Zipkin v2 JSON to the collector
//! cluster, from a thread of their own so that a slow or dead collector
//! never holds up a request: at most `MAX_QUEUED` spans wait, the rest are
//! dropped and counted, and a failed POST is logged and its batch dropped
//! (as Envoy's Zipkin tracer does).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;

use crate::Shared;

/// Where a connection manager's spans go.
#[derive(Debug, PartialEq)]
pub(crate) struct Collector {
    pub cluster: String,
    pub path: String,
    pub host: String,
    /// OTLP protobuf, else Zipkin v2 JSON.
    pub otlp: bool,
    /// OTLP as a gRPC call (`path` is the method) over HTTP/2.
    pub grpc: bool,
    /// The service the spans are reported as, when the tracer names one
    /// (OpenTelemetry's `service_name`); else the proxy's service cluster.
    pub service: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Span {
    pub trace: String,
    pub id: String,
    pub parent: Option<String>,
    pub trace_state: Option<String>,
    pub name: String,
    pub server: bool,
    pub start: SystemTime,
    pub duration: Duration,
    pub tags: Vec<(String, String)>,
}

const MAX_QUEUED: usize = 10_000;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// The proxy's span queue, and who it reports as.
#[derive(Debug, Default)]
pub(crate) struct Reporter {
    queue: Mutex<Vec<(Arc<Collector>, Span)>>,
    /// Zipkin's `localEndpoint.serviceName`: Envoy's service cluster
    /// (`<app>.<namespace>`).
    service: String,
    ip: Option<std::net::IpAddr>,
    node_id: String,
    dropped: std::sync::atomic::AtomicU64,
    /// The last sampled spans, for the built-in dashboard's traces.
    recent: Mutex<std::collections::VecDeque<Recent>>,
}

/// A finished span as the dashboard shows it.
#[derive(Debug, Clone)]
struct Recent {
    trace: String,
    id: String,
    parent: Option<String>,
    name: String,
    server: bool,
    start: SystemTime,
    duration: Duration,
    status: String,
}

/// Spans kept for the dashboard (a few traces' worth).
const KEEP_RECENT: usize = 200;

impl Reporter {
    pub fn new(service: String, ip: Option<std::net::IpAddr>, node_id: String) -> Reporter {
        Reporter {
            service,
            ip,
            node_id,
            ..Default::default()
        }
    }

    pub fn submit(&self, collector: &Arc<Collector>, span: Span) {
        self.remember(&span);
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= MAX_QUEUED {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        q.push((collector.clone(), span));
    }

    fn remember(&self, s: &Span) {
        let status = s
            .tags
            .iter()
            .find(|(k, _)| k == "http.status_code")
            .map_or_else(String::new, |(_, v)| v.clone());
        let mut ring = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == KEEP_RECENT {
            ring.pop_front();
        }
        ring.push_back(Recent {
            trace: s.trace.clone(),
            id: s.id.clone(),
            parent: s.parent.clone(),
            name: s.name.clone(),
            server: s.server,
            start: s.start,
            duration: s.duration,
            status,
        });
    }

    /// The last sampled spans, newest first, for `/recent_spans`.
    pub fn recent(&self) -> Vec<serde_json::Value> {
        let ring = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter()
            .rev()
            .map(|s| {
                let start = s
                    .start
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                serde_json::json!({
                    "trace": s.trace,
                    "id": s.id,
                    "parent": s.parent,
                    "name": s.name,
                    "kind": if s.server { "SERVER" } else { "CLIENT" },
                    "service": self.service,
                    "start_us": start.as_micros() as u64,
                    "duration_ms": s.duration.as_secs_f64() * 1000.0,
                    "status": s.status,
                })
            })
            .collect()
    }

    /// A batch in the collector's wire format.
    fn encode(&self, c: &Collector, batch: &[Span]) -> Vec<u8> {
        if c.otlp {
            let service = c.service.as_deref().unwrap_or(&self.service);
            let req = super::otlp::request(service, &self.node_id, batch);
            return prost::Message::encode_to_vec(&req);
        }
        let spans: Vec<serde_json::Value> = batch.iter().map(|s| self.json(s)).collect();
        serde_json::to_vec(&spans).unwrap_or_default()
    }

    fn take(&self) -> Vec<(Arc<Collector>, Span)> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn json(&self, s: &Span) -> serde_json::Value {
        let micros = |d: Duration| d.as_micros() as u64;
        let mut tags: serde_json::Map<String, serde_json::Value> = s
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        tags.insert("node_id".into(), self.node_id.clone().into());
        let mut local = serde_json::json!({ "serviceName": self.service });
        match self.ip {
            Some(std::net::IpAddr::V4(ip)) => local["ipv4"] = ip.to_string().into(),
            Some(std::net::IpAddr::V6(ip)) => local["ipv6"] = ip.to_string().into(),
            None => {}
        }
        let mut span = serde_json::json!({
            "traceId": s.trace,
            "id": s.id,
            "name": s.name,
            "kind": if s.server { "SERVER" } else { "CLIENT" },
            "timestamp": micros(s.start.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()),
            "duration": micros(s.duration).max(1),
            "localEndpoint": local,
            "tags": tags,
        });
        if let Some(p) = &s.parent {
            span["parentId"] = p.clone().into();
        }
        span
    }
}

/// Starts the thread that sends `shared`'s spans; it ends when the proxy
/// is dropped.
pub(crate) fn start(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    let spawned = std::thread::Builder::new()
        .name("weft-spans".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return tracing::error!(error = %e, "span reporter cannot start"),
            };
            rt.block_on(flush_loop(weak));
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "span reporter thread cannot start");
    }
}

async fn flush_loop(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(FLUSH_EVERY).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        flush(&shared).await;
    }
}

/// Sends the spans finished since the last time (each collector within
/// `POST_TIMEOUT`): every `FLUSH_EVERY`, and once more as the proxy exits.
pub(crate) async fn flush(shared: &Shared) {
    let dropped = shared
        .tracer
        .dropped
        .swap(0, std::sync::atomic::Ordering::Relaxed);
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "spans dropped: the trace collector could not keep up"
        );
    }
    let spans = shared.tracer.take();
    for (collector, batch) in by_collector(spans) {
        let body = shared.tracer.encode(&collector, &batch);
        let Some(addr) = endpoint(shared, &collector.cluster) else {
            tracing::warn!(cluster = %collector.cluster, spans = batch.len(), "no endpoint for the trace collector; spans dropped");
            continue;
        };
        match tokio::time::timeout(POST_TIMEOUT, post(addr, &collector, body)).await {
            Ok(Ok(status)) if status.is_success() => {}
            Ok(Ok(status)) => tracing::warn!(%addr, %status, "trace collector refused spans"),
            Ok(Err(e)) => tracing::warn!(%addr, error = %e, "sending spans failed"),
            Err(_) => tracing::warn!(%addr, "trace collector timed out"),
        }
    }
}

fn by_collector(spans: Vec<(Arc<Collector>, Span)>) -> Vec<(Arc<Collector>, Vec<Span>)> {
    let mut out: Vec<(Arc<Collector>, Vec<Span>)> = Vec::new();
    for (c, s) in spans {
        match out.iter_mut().find(|(k, _)| k == &c) {
            Some((_, batch)) => batch.push(s),
            None => out.push((c, vec![s])),
        }
    }
    out
}

fn endpoint(shared: &Shared, cluster: &str) -> Option<SocketAddr> {
    let snapshot = shared.config.load();
    let c = snapshot.clusters.get(cluster)?;
    c.pick(SocketAddr::from(([0, 0, 0, 0], 0)), None)
}

async fn post(addr: SocketAddr, c: &Collector, body: Vec<u8>) -> anyhow::Result<http::StatusCode> {
    if c.grpc {
        return grpc_export(addr, c, body).await;
    }
    let req = http::Request::post(&c.path)
        .header(http::header::HOST, &c.host)
        .header(
            http::header::CONTENT_TYPE,
            if c.otlp {
                "application/x-protobuf"
            } else {
                "application/json"
            },
        )
        .body(Full::new(Bytes::from(body)))?;
    Ok(crate::http::once::send(addr, req).await?.status())
}

/// One unary gRPC call over HTTP/2 (OTLP's `TraceService/Export`): the
/// message in gRPC's length-prefixed frame, success when the call's
/// `grpc-status` (trailers, or headers for a trailers-only reply) is 0.
async fn grpc_export(
    addr: SocketAddr,
    c: &Collector,
    message: Vec<u8>,
) -> anyhow::Result<http::StatusCode> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await?;
    tokio::spawn(conn);
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0); // not compressed
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let req = http::Request::post(format!("http://{}{}", c.host, c.path))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(framed)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let early = resp.headers().get(crate::http::GRPC_STATUS).cloned();
    let collected = resp.into_body().collect().await?;
    let grpc_status =
        early.or_else(|| collected.trailers()?.get(crate::http::GRPC_STATUS).cloned());
    match grpc_status.as_ref().map(|v| v.as_bytes()) {
        Some(b"0") => Ok(status),
        Some(code) => anyhow::bail!("grpc-status {}", String::from_utf8_lossy(code)),
        None => anyhow::bail!("no grpc-status (HTTP {status})"),
    }
}
