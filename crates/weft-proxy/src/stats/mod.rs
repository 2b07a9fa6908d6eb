//! Istio's standard metrics, the `istio.stats` filter's job: the same
//! names, types, buckets and labels as Istio's proxies, so Istio's
//! Prometheus queries and Grafana dashboards read a Weft mesh unchanged.
//!
//! A chain whose HTTP connection manager (or TCP proxy) lists `istio.stats`
//! records every request (connection) once, when its access-log line is
//! written. The reporter follows the listener's direction, as in Istio:
//! `destination` on inbound, `source` on outbound and on gateways. The
//! other side's workload comes from the metadata exchange (`peer`), the
//! service from the cluster's `istio` metadata.
//!
//! The families live in `prometheus-client`'s registry; a label set is a
//! handful of `Arc`s and small values, hashed once per request.

pub(crate) mod config;
pub mod envoy;
mod evict;
mod labels;
pub(crate) mod peer;
pub(crate) mod record;
mod series;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;

use config::{Expr, Metric, StatsCfg};
pub(crate) use labels::{HttpLabels, TcpLabels};
use labels::{Key, Labels, Parties};
pub use peer::{NodeMetadata, Own, Peer};

/// The filter's name in a listener (HTTP and network alike).
pub const NAME: &str = "istio.stats";
/// Its config's type (Istio's own message; its defaults are the standard
/// metrics, and Weft reads no field of it yet).
pub const PLUGIN_CONFIG: &str = "/stats.PluginConfig";

/// Whether a network filter is `istio.stats`.
pub(crate) fn is_stats(name: &str, config: &envoy_types::pb::google::protobuf::Any) -> bool {
    name == NAME || config.type_url.ends_with(PLUGIN_CONFIG)
}

/// Which side of a request the proxy reports as (Istio's `reporter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Reporter {
    /// The client's proxy, or a gateway.
    Source,
    /// The server's proxy.
    Destination,
}

impl Reporter {
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
}

/// The service a request went to (a cluster's `istio` metadata, as istiod
/// writes it: `services: [{host, name, namespace}]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ServiceMeta {
    pub host: String,
    pub name: String,
    pub namespace: String,
}

impl ServiceMeta {
    /// No cluster metadata: the Host header names the service (Istio's
    /// host header fallback), else nothing is known.
    pub fn from_authority(authority: &str) -> ServiceMeta {
        let host = authority.rsplit_once(':').map_or(authority, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                authority
            }
        });
        let host = if host.is_empty() { "unknown" } else { host };
        ServiceMeta {
            host: host.into(),
            name: host.into(),
            namespace: "unknown".into(),
        }
    }
}

/// Envoy's default histogram buckets (Istio keeps them for its duration
/// and size histograms).
const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// One proxy's metrics.
pub struct Stats {
    registry: Registry,
    requests: Family<Key<HttpLabels>, Counter>,
    duration: Histograms<Key<HttpLabels>>,
    request_bytes: Histograms<Key<HttpLabels>>,
    response_bytes: Histograms<Key<HttpLabels>>,
    request_messages: Family<Key<Parties>, Counter>,
    response_messages: Family<Key<Parties>, Counter>,
    tcp_opened: Family<Key<TcpLabels>, Counter>,
    tcp_closed: Family<Key<TcpLabels>, Counter>,
    tcp_sent: Family<Key<TcpLabels>, Counter>,
    tcp_received: Family<Key<TcpLabels>, Counter>,
    /// The proxy's own health and xDS stats, in Envoy's names.
    pub envoy: envoy::EnvoyStats,
    /// This proxy's workload, for its side's labels and the exchange.
    pub own: Own,
    /// Tells this proxy's per-thread caches apart from another's in the
    /// same process (tests run several).
    id: u64,
    /// Whether series are evicted when unused (`evict.rs`); until then no
    /// use is tracked.
    evicting: AtomicBool,
    /// Bumped by each eviction, so threads drop their handles.
    epoch: AtomicU64,
    http_used: evict::Used<(Metric, Key<HttpLabels>)>,
    grpc_used: evict::Used<(Metric, Key<Parties>)>,
    tcp_used: evict::Used<(Metric, Key<TcpLabels>)>,
}

impl Stats {
    /// `workers`: the proxy's worker threads (Envoy's concurrency).
    pub fn new(own: Own, workers: usize) -> Stats {
        let mut registry = Registry::default();
        let envoy = envoy::EnvoyStats::new(&mut registry, workers);
        // Istio's build gauge, which dashboards read the version from.
        let build = Family::<[(&'static str, &'static str); 2], Gauge>::default();
        build
            .get_or_create(&[("component", "proxy"), ("tag", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register("istio_build", "Istio component build info", build);
        let requests = Family::default();
        registry.register("istio_requests", "Requests", requests.clone());
        let h =
            || Histograms::<Key<HttpLabels>>::new_with_constructor(histogram as fn() -> Histogram);
        let (duration, request_bytes, response_bytes) = (h(), h(), h());
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration",
            duration.clone(),
        );
        registry.register("istio_request_bytes", "Request size", request_bytes.clone());
        registry.register(
            "istio_response_bytes",
            "Response size",
            response_bytes.clone(),
        );
        let request_messages = Family::default();
        let response_messages = Family::default();
        registry.register(
            "istio_request_messages",
            "gRPC messages sent by the client",
            request_messages.clone(),
        );
        registry.register(
            "istio_response_messages",
            "gRPC messages sent by the server",
            response_messages.clone(),
        );
        let tcp = || Family::<Key<TcpLabels>, Counter>::default();
        let (tcp_opened, tcp_closed, tcp_sent, tcp_received) = (tcp(), tcp(), tcp(), tcp());
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            tcp_closed.clone(),
        );
        registry.register("istio_tcp_sent_bytes", "Bytes sent", tcp_sent.clone());
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received",
            tcp_received.clone(),
        );
        Stats {
            registry,
            requests,
            duration,
            request_bytes,
            response_bytes,
            request_messages,
            response_messages,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
            envoy,
            own,
            id: {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed)
            },
            evicting: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            http_used: Default::default(),
            grpc_used: Default::default(),
            tcp_used: Default::default(),
        }
    }

    /// One finished request.
    pub(crate) fn record_http(&self, labels: &HttpLabels, sample: &HttpSample, how: &Labelling) {
        let millis = sample.duration.as_secs_f64() * 1000.0;
        if how.cfg.plain_http() {
            self.with_series(labels, |s| {
                s.requests.inc();
                s.duration.observe(millis);
                s.request_bytes.observe(sample.request_bytes as f64);
                s.response_bytes.observe(sample.response_bytes as f64);
            });
        } else {
            self.record_custom(labels, sample, how, millis);
        }
        if let Some((sent, received)) = sample.grpc_messages {
            let p = &labels.parties;
            if let Some(k) = how.key(Metric::RequestMessages, p) {
                self.request_messages.get_or_create(&k).inc_by(sent);
                self.mark(&self.grpc_used, Metric::RequestMessages, k);
            }
            if let Some(k) = how.key(Metric::ResponseMessages, p) {
                self.response_messages.get_or_create(&k).inc_by(received);
                self.mark(&self.grpc_used, Metric::ResponseMessages, k);
            }
        }
    }

    /// A request whose HTTP metrics the Telemetry API customized.
    fn record_custom(
        &self,
        labels: &HttpLabels,
        sample: &HttpSample,
        how: &Labelling,
        millis: f64,
    ) {
        if let Some(k) = how.key(Metric::Requests, labels) {
            self.requests.get_or_create(&k).inc();
            self.mark(&self.http_used, Metric::Requests, k);
        }
        let observe = |family: &Histograms<Key<HttpLabels>>, m: Metric, value: f64| {
            if let Some(k) = how.key(m, labels) {
                family.get_or_create(&k).observe(value);
                self.mark(&self.http_used, m, k);
            }
        };
        observe(&self.duration, Metric::Duration, millis);
        observe(
            &self.request_bytes,
            Metric::RequestBytes,
            sample.request_bytes as f64,
        );
        observe(
            &self.response_bytes,
            Metric::ResponseBytes,
            sample.response_bytes as f64,
        );
    }

    /// A TCP connection began.
    pub(crate) fn tcp_opened(&self, labels: &TcpLabels, how: &Labelling) {
        if let Some(k) = how.key(Metric::TcpOpened, labels) {
            self.tcp_opened.get_or_create(&k).inc();
            self.mark(&self.tcp_used, Metric::TcpOpened, k);
        }
    }

    /// A TCP connection moved these bytes since it was last counted
    /// (sent: to the downstream client, received: from it, as Istio
    /// counts them); `closed` when it has ended.
    pub(crate) fn tcp_moved(
        &self,
        labels: &TcpLabels,
        (sent, received): (u64, u64),
        closed: bool,
        how: &Labelling,
    ) {
        let count = |family: &Family<Key<TcpLabels>, Counter>, m: Metric, n: u64| {
            if let Some(k) = how.key(m, labels) {
                family.get_or_create(&k).inc_by(n);
                self.mark(&self.tcp_used, m, k);
            }
        };
        if closed {
            count(&self.tcp_closed, Metric::TcpClosed, 1);
        }
        count(&self.tcp_sent, Metric::TcpSent, sent);
        count(&self.tcp_received, Metric::TcpReceived, received);
    }

    /// From now on, series unused between two `evict_unused` calls are
    /// removed by the second.
    pub fn enable_eviction(&self) {
        self.evicting.store(true, Ordering::Relaxed);
    }

    fn evicting(&self) -> bool {
        self.evicting.load(Ordering::Relaxed)
    }

    /// The used flag of a standard label set, one for its four metrics.
    fn http_used_flag(&self, key: &Key<HttpLabels>) -> Arc<AtomicBool> {
        let flag = self.http_used.flag(&(Metric::Requests, key.clone()));
        for m in [
            Metric::Duration,
            Metric::RequestBytes,
            Metric::ResponseBytes,
        ] {
            self.http_used.share(&(m, key.clone()), &flag);
        }
        flag
    }

    fn mark<K: std::hash::Hash + Eq + Clone>(
        &self,
        used: &evict::Used<(Metric, K)>,
        m: Metric,
        key: K,
    ) {
        if self.evicting() {
            used.mark(&(m, key));
        }
    }

    /// Removes every series not updated since the last call; returns how
    /// many went.
    pub fn evict_unused(&self) -> usize {
        let (http, grpc, tcp) = (
            self.http_used.sweep(),
            self.grpc_used.sweep(),
            self.tcp_used.sweep(),
        );
        let gone = http.len() + grpc.len() + tcp.len();
        if gone == 0 {
            return 0;
        }
        self.epoch.fetch_add(1, Ordering::Release);
        for (m, k) in http {
            match m {
                Metric::Requests => self.requests.remove(&k),
                Metric::Duration => self.duration.remove(&k),
                Metric::RequestBytes => self.request_bytes.remove(&k),
                _ => self.response_bytes.remove(&k),
            };
        }
        for (m, k) in grpc {
            match m {
                Metric::RequestMessages => self.request_messages.remove(&k),
                _ => self.response_messages.remove(&k),
            };
        }
        for (m, k) in tcp {
            match m {
                Metric::TcpOpened => self.tcp_opened.remove(&k),
                Metric::TcpClosed => self.tcp_closed.remove(&k),
                Metric::TcpSent => self.tcp_sent.remove(&k),
                _ => self.tcp_received.remove(&k),
            };
        }
        gone
    }

    /// The Prometheus exposition (OpenMetrics text).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// How one record is labelled: the chain's stats config, and the values
/// of the tags it adds for this request.
pub(crate) struct Labelling<'a> {
    pub cfg: &'a StatsCfg,
    pub value: &'a dyn Fn(&Expr) -> String,
}

impl Labelling<'_> {
    fn key<L: Labels + Clone>(&self, m: Metric, labels: &L) -> Option<Key<L>> {
        Key::of(labels, self.cfg.tweak(m), self.value)
    }
}

/// What one request measured, beside its labels.
#[derive(Debug, Default)]
pub(crate) struct HttpSample {
    pub duration: std::time::Duration,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// gRPC messages (client's, server's), for gRPC requests.
    pub grpc_messages: Option<(u64, u64)>,
}

/// Who gets the labels of a request's or connection's other side.
pub(crate) fn unknown_peer() -> Arc<Peer> {
    static UNKNOWN: std::sync::OnceLock<Arc<Peer>> = std::sync::OnceLock::new();
    UNKNOWN.get_or_init(|| Arc::new(Peer::default())).clone()
}
