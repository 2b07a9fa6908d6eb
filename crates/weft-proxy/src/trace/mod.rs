//! Distributed tracing as Envoy's Zipkin and OpenTelemetry tracers do it
//! for a sidecar: one span per connection manager per request (SERVER on
//! inbound listeners, CLIENT elsewhere), the caller's context read and this
//! hop's written for the next (B3 for Zipkin, W3C `traceparent` and
//! `tracestate` for OpenTelemetry), the decision taken once per trace
//! (Envoy's sampling of the request id, forced by `x-client-trace-id` or
//! `x-envoy-force-trace`) and carried in `x-request-id`, and sampled spans
//! sent to the collector cluster (`report`: Zipkin v2 JSON, or OTLP over
//! HTTP, `otlp`).

mod context;
mod otlp;
pub(crate) mod report;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::config::trace::v3::ZipkinConfig;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;
use envoy_types::pb::envoy::r#type::tracing::v3::custom_tag;
use http::{HeaderMap, HeaderName, Request};

use context::{Reason, TraceId};

/// A connection manager's tracing: how to decide, what to tag, where to
/// send spans.
#[derive(Debug)]
pub struct TraceCfg {
    /// Percentages (0–100).
    random: f64,
    client: f64,
    overall: f64,
    max_path: usize,
    tags: Vec<(String, Tag)>,
    pub(crate) collector: Arc<report::Collector>,
    /// SERVER spans (inbound, or a hop of its own); CLIENT otherwise.
    pub(crate) server: bool,
    /// Envoy's ingress operation (an inbound listener): the span takes
    /// its name from the caller's `x-envoy-decorator-operation`; egress
    /// ones (sidecar outbound, gateways) pass their route's decorator on.
    inbound: bool,
    /// `spawn_upstream_span` (istiod sets it on gateways): the proxy is a
    /// hop of its own, a SERVER span with a CLIENT child for upstream.
    spawn_upstream: bool,
    /// W3C trace context (OpenTelemetry) rather than B3 (Zipkin).
    w3c: bool,
}

#[derive(Debug)]
enum Tag {
    Literal(String),
    Header(HeaderName, String),
}

fn percent(p: &Option<envoy_types::pb::envoy::r#type::v3::Percent>) -> f64 {
    p.as_ref().map_or(100.0, |p| p.value.clamp(0.0, 100.0))
}

/// None when the connection manager traces nothing (no `tracing`, or no
/// provider: istiod's legacy path without a tracer in the bootstrap).
pub(crate) fn compile(t: Option<&Tracing>, server: bool) -> Result<Option<Arc<TraceCfg>>, String> {
    let Some(t) = t else { return Ok(None) };
    let Some(provider) = &t.provider else {
        return Ok(None);
    };
    use envoy_types::pb::envoy::config::trace::v3::tracing::http::ConfigType;
    let Some(ConfigType::TypedConfig(any)) = &provider.config_type else {
        return Err(format!("tracer {:?} needs a typed_config", provider.name));
    };
    let (collector, w3c) = if any.type_url.ends_with("trace.v3.ZipkinConfig") {
        (zipkin(&crate::compile::unpack(any)?)?, false)
    } else if any.type_url.ends_with("trace.v3.OpenTelemetryConfig") {
        (open_telemetry(&crate::compile::unpack(any)?)?, true)
    } else {
        return Err(format!(
            "tracer {} is not supported (Weft speaks Zipkin and OpenTelemetry)",
            any.type_url
        ));
    };
    let tags = t
        .custom_tags
        .iter()
        .filter_map(|c| tag(c).transpose())
        .collect::<Result<_, String>>()?;
    let spawn_upstream = t.spawn_upstream_span.as_ref().is_some_and(|b| b.value);
    Ok(Some(Arc::new(TraceCfg {
        random: percent(&t.random_sampling),
        client: percent(&t.client_sampling),
        overall: percent(&t.overall_sampling),
        max_path: t
            .max_path_tag_length
            .as_ref()
            .map_or(256, |m| m.value as usize),
        tags,
        collector: Arc::new(collector),
        server: server || spawn_upstream,
        inbound: server,
        spawn_upstream,
        w3c,
    })))
}

fn zipkin(z: &ZipkinConfig) -> Result<report::Collector, String> {
    if z.collector_endpoint_version != 1 {
        return Err("Zipkin collector_endpoint_version must be HTTP_JSON".into());
    }
    if z.collector_cluster.is_empty() {
        return Err("Zipkin needs a collector_cluster".into());
    }
    Ok(report::Collector {
        cluster: z.collector_cluster.clone(),
        path: match z.collector_endpoint.as_str() {
            "" => "/api/v2/spans".into(),
            p => p.into(),
        },
        host: match z.collector_hostname.as_str() {
            "" => z.collector_cluster.clone(),
            h => h.into(),
        },
        otlp: false,
        grpc: false,
        service: None,
    })
}

/// The gRPC method OTLP's trace exporter calls.
const OTLP_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// OTLP to the collector: over HTTP to `http_service`'s cluster (the URI
/// names the host and path; istiod writes it without a scheme), or over
/// gRPC to `grpc_service`'s Envoy gRPC cluster.
fn open_telemetry(
    o: &envoy_types::pb::envoy::config::trace::v3::OpenTelemetryConfig,
) -> Result<report::Collector, String> {
    use envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier;
    use envoy_types::pb::envoy::config::core::v3::http_uri::HttpUpstreamType;
    let service = Some(o.service_name.clone()).filter(|s| !s.is_empty());
    if let Some(g) = &o.grpc_service {
        let Some(TargetSpecifier::EnvoyGrpc(envoy)) = &g.target_specifier else {
            return Err("OpenTelemetry grpc_service needs envoy_grpc (a cluster)".into());
        };
        return Ok(report::Collector {
            cluster: envoy.cluster_name.clone(),
            path: OTLP_EXPORT.into(),
            host: Some(envoy.authority.clone())
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| envoy.cluster_name.clone()),
            otlp: true,
            grpc: true,
            service,
        });
    }
    let Some(uri) = o.http_service.as_ref().and_then(|h| h.http_uri.as_ref()) else {
        return Err("OpenTelemetry tracing needs http_service or grpc_service".into());
    };
    let Some(HttpUpstreamType::Cluster(cluster)) = &uri.http_upstream_type else {
        return Err("OpenTelemetry http_uri needs a cluster".into());
    };
    let bare = uri
        .uri
        .split_once("://")
        .map_or(uri.uri.as_str(), |(_, rest)| rest);
    let (host, path) = match bare.find('/') {
        Some(i) => (&bare[..i], &bare[i..]),
        None => (bare, "/v1/traces"),
    };
    Ok(report::Collector {
        cluster: cluster.clone(),
        path: path.into(),
        host: host.into(),
        otlp: true,
        grpc: false,
        service,
    })
}

/// A custom tag; environment tags are read once, here. Metadata tags
/// (istiod's dry-run policy tags) have nothing to read and are left out.
fn tag(
    c: &envoy_types::pb::envoy::r#type::tracing::v3::CustomTag,
) -> Result<Option<(String, Tag)>, String> {
    let value = match &c.r#type {
        Some(custom_tag::Type::Literal(l)) => Tag::Literal(l.value.clone()),
        Some(custom_tag::Type::Environment(e)) => {
            Tag::Literal(std::env::var(&e.name).unwrap_or_else(|_| e.default_value.clone()))
        }
        Some(custom_tag::Type::RequestHeader(h)) => Tag::Header(
            HeaderName::try_from(h.name.to_ascii_lowercase())
                .map_err(|_| format!("custom tag {:?}: bad header name", c.tag))?,
            h.default_value.clone(),
        ),
        Some(custom_tag::Type::Metadata(_)) => return Ok(None),
        _ => return Err(format!("custom tag {:?}: unsupported kind", c.tag)),
    };
    Ok(Some((c.tag.clone(), value)))
}

/// One request's span, from its start to its record's end.
#[derive(Debug)]
pub(crate) struct Active {
    cfg: Arc<TraceCfg>,
    reporter: Arc<report::Reporter>,
    trace: TraceId,
    id: u64,
    parent: Option<u64>,
    /// The CLIENT child's id, when the proxy spawns upstream spans: the
    /// context the upstream sees.
    upstream: Option<u64>,
    /// The caller's W3C `tracestate`, passed on and reported.
    state: Option<String>,
    pub sampled: bool,
    start: SystemTime,
    started: Instant,
    /// The span's name: the route's decorator, or Envoy's default.
    pub name: String,
    /// Tags known when the request arrived.
    tags: Vec<(String, String)>,
}

impl Active {
    /// Decides, reads the caller's context and writes this hop's into the
    /// request (and the decision into its request id).
    pub fn start<B>(
        cfg: &Arc<TraceCfg>,
        reporter: &Arc<report::Reporter>,
        req: &mut Request<B>,
        request_id: &mut String,
        tls: bool,
    ) -> Active {
        let headers = req.headers();
        let (caller, state) = match cfg.w3c {
            true => context::extract_w3c(headers),
            false => (context::extract(headers), None),
        };
        let reason = decide(cfg, headers, caller.sampled, request_id);
        if caller.sampled.is_none() {
            context::mark(request_id, reason);
            if let Ok(v) = http::HeaderValue::from_str(request_id) {
                req.headers_mut().insert("x-request-id", v);
            }
        }
        let sampled = caller.sampled.unwrap_or(reason.traced());
        let trace = caller.trace.unwrap_or_else(TraceId::random);
        let id = fastrand::u64(..);
        // Tags cost a few strings: only a reported span gets them.
        let tags = match sampled {
            true => request_tags(cfg, req, request_id, tls),
            false => Vec::new(),
        };
        // A CLIENT span named by its caller's decorator keeps Envoy's
        // habit: the server side takes the name from the header.
        let named = req
            .headers_mut()
            .remove("x-envoy-decorator-operation")
            .and_then(|v| v.to_str().ok().map(str::to_string));
        let name = match named {
            Some(n) if cfg.inbound => n,
            _ if cfg.inbound => "ingress".into(),
            _ => format!("egress {}", crate::router::authority(req)),
        };
        let upstream = cfg.spawn_upstream.then(|| fastrand::u64(..));
        // The next hop's parent: this span, or its upstream child.
        let (hop, hop_parent) = match upstream {
            Some(child) => (child, Some(id)),
            None => (id, caller.span),
        };
        match cfg.w3c {
            true => context::inject_w3c(req.headers_mut(), trace, hop, sampled, state.as_deref()),
            false => context::inject(req.headers_mut(), trace, hop, hop_parent, sampled),
        }
        Active {
            cfg: cfg.clone(),
            reporter: reporter.clone(),
            trace,
            id,
            parent: caller.span,
            upstream,
            state,
            sampled,
            start: SystemTime::now(),
            started: Instant::now(),
            name,
            tags,
        }
    }

    /// The route's decorator names the span; an egress one also tells the
    /// server side (`x-envoy-decorator-operation`), as Envoy does.
    pub fn route<B>(&mut self, operation: Option<&str>, req: &mut Request<B>) {
        let Some(op) = operation else { return };
        if !self.cfg.inbound {
            if let Ok(v) = http::HeaderValue::from_str(op) {
                req.headers_mut().insert("x-envoy-decorator-operation", v);
            }
        }
        if !(self.cfg.inbound && self.name != "ingress") {
            self.name = op.to_string();
        }
    }

    /// The finished span, for the collector (only a sampled one).
    pub fn finish(self, e: &crate::access_log::Entry) {
        if !self.sampled {
            return;
        }
        let duration = self.started.elapsed();
        let tags = finished_tags(self.tags, e);
        if let Some(child) = self.upstream {
            // Envoy's upstream span: named by the cluster, as long as
            // the request (retries are not split out).
            let upstream = report::Span {
                trace: self.trace.to_string(),
                id: format!("{child:016x}"),
                parent: Some(format!("{:016x}", self.id)),
                trace_state: self.state.clone(),
                name: format!("router {} egress", e.cluster),
                server: false,
                start: self.start,
                duration,
                tags: tags.clone(),
            };
            self.reporter.submit(&self.cfg.collector, upstream);
        }
        let span = report::Span {
            trace: self.trace.to_string(),
            id: format!("{:016x}", self.id),
            parent: self.parent.map(|p| format!("{p:016x}")),
            trace_state: self.state,
            name: self.name,
            server: self.cfg.server,
            start: self.start,
            duration,
            tags,
        };
        self.reporter.submit(&self.cfg.collector, span);
    }
}

fn decide(cfg: &TraceCfg, h: &HeaderMap, explicit: Option<bool>, request_id: &str) -> Reason {
    if let Some(s) = explicit {
        return if s {
            Reason::Sampled
        } else {
            Reason::NotTraced
        };
    }
    if let Some(r) = context::reason_in(request_id) {
        return r;
    }
    let reason = if h.contains_key("x-client-trace-id") && fastrand::f64() * 100.0 < cfg.client {
        Reason::ClientForced
    } else if h.contains_key("x-envoy-force-trace") {
        Reason::ServiceForced
    } else if context::sampled_by_id(request_id, cfg.random) {
        Reason::Sampled
    } else {
        Reason::NotTraced
    };
    if reason.traced() && !context::sampled_by_id(request_id, cfg.overall) {
        return Reason::NotTraced;
    }
    reason
}

fn request_tags<B>(
    cfg: &TraceCfg,
    req: &Request<B>,
    request_id: &str,
    tls: bool,
) -> Vec<(String, String)> {
    let h = req.headers();
    let header = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    let scheme = if tls { "https" } else { "http" };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut url = format!("{scheme}://{}{path}", crate::router::authority(req));
    if url.len() > cfg.max_path {
        let mut cut = cfg.max_path;
        while !url.is_char_boundary(cut) {
            cut -= 1;
        }
        url.truncate(cut);
    }
    let mut tags = vec![
        ("guid:x-request-id".into(), request_id.to_string()),
        ("http.url".into(), url),
        ("http.method".into(), req.method().to_string()),
        (
            "downstream_cluster".into(),
            header("x-envoy-downstream-service-cluster"),
        ),
        ("user_agent".into(), header("user-agent")),
        (
            "http.protocol".into(),
            match req.version() {
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            }
            .into(),
        ),
        ("component".into(), "proxy".into()),
    ];
    if let Some(id) = h.get("x-client-trace-id").and_then(|v| v.to_str().ok()) {
        tags.push(("guid:x-client-trace-id".into(), id.to_string()));
    }
    for (name, t) in &cfg.tags {
        let value = match t {
            Tag::Literal(v) => v.clone(),
            Tag::Header(n, default) => h
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map_or_else(|| default.clone(), str::to_string),
        };
        if !value.is_empty() {
            tags.push((name.clone(), value));
        }
    }
    tags
}

fn finished_tags(
    mut tags: Vec<(String, String)>,
    e: &crate::access_log::Entry,
) -> Vec<(String, String)> {
    if let Some(peer) = e.downstream {
        tags.push(("peer.address".into(), peer.ip().to_string()));
    }
    tags.push(("request_size".into(), e.bytes_received().to_string()));
    tags.push(("response_size".into(), e.bytes_sent.to_string()));
    if !e.cluster.is_empty() {
        tags.push(("upstream_cluster".into(), e.cluster.to_string()));
        tags.push(("upstream_cluster.name".into(), e.cluster.to_string()));
    }
    tags.push(("http.status_code".into(), e.status.to_string()));
    tags.push(("response_flags".into(), e.flags.to_string()));
    if e.status == 0 || e.status >= 500 {
        tags.push(("error".into(), "true".into()));
    }
    tags
}
