//! The data plane: one binary for sidecars and gateways.
//!
//! It speaks Envoy's API only (never Istio's): xDS updates are compiled into
//! plain structures (`compile`), swapped in atomically, and read by the
//! request path without locks. The control side (xDS, admin) runs on the
//! caller's runtime; connections run on `workers`, one single-threaded
//! runtime per core. The layout follows a request: `listeners` (accept,
//! original destination, `sniff` of the first bytes, filter chain), `http`
//! (the connection manager and
//! local replies), `filters` (one module per HTTP filter), `router` (route
//! choice, retries, timeouts), `upstream` (peers, pooled connections),
//! `tls` (terminating TLS), `tcp` (opaque TCP); `error` maps every failure to Envoy's response flags
//! in one place; `admin` serves the admin port.

mod access_log;
mod admin;
pub mod cli;
pub mod compile;
mod dns;
mod dns_proxy;
mod drain;
mod error;
mod filters;
mod http;
mod identity;
mod listeners;
pub mod merged;
mod recent;
mod router;
mod sniff;
pub mod stats;
mod tcp;
mod text;
mod tls;
mod trace;
mod upstream;
mod workers;
mod xds_state;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::config::core::v3::Node;

pub use compile::Compiled;
pub use identity::agent::CaClient;

#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// `http://host:port` of the control plane's xDS server.
    pub xds_address: String,
    /// Istio-style node id (`sidecar~IP~name.ns~ns.svc.cluster.local`).
    pub node_id: String,
    pub admin: SocketAddr,
    /// Listeners on 0.0.0.0 bind this address instead (a gateway on a host
    /// that should only listen on loopback).
    pub bind_ip: Option<IpAddr>,
    /// Worker threads for the data plane (one per core is the usual).
    pub workers: usize,
    /// Where to serve the DNS proxy (Istio's 15053), if at all.
    pub dns: Option<SocketAddr>,
    /// Where to get the workload certificate (none: no mTLS).
    pub ca: Option<CaClient>,
    /// Istio's node metadata for this proxy's workload (what the metrics
    /// label its side with, and what it tells its peers).
    pub metadata: stats::NodeMetadata,
    /// Where to serve only `/stats/prometheus` (Istio's 15090), if at all.
    pub prometheus: Option<SocketAddr>,
    /// Where to serve the merged metrics (Istio's agent port 15020).
    pub merged_metrics: Option<SocketAddr>,
    /// The app's own metrics, merged into those (`prometheus.io/port|path`).
    pub app_metrics: Option<merged::AppMetrics>,
    /// Series unused for this long are dropped (Istio's
    /// `sidecar.istio.io/statsEvictionInterval`); none: kept forever.
    pub stats_eviction: Option<std::time::Duration>,
    /// On SIGTERM, how long connections get to finish (`drain.rs`).
    pub drain_duration: std::time::Duration,
}

/// State shared by every task of one proxy.
pub(crate) struct Shared {
    pub config: ArcSwap<Compiled>,
    /// The DNS proxy's names (from NDS), lower-case, without the last dot.
    pub names: ArcSwap<dns_proxy::Names>,
    pub ready: AtomicBool,
    pub options: ProxyOptions,
    /// The workload certificate (Istio's SDS `default` and `ROOTCA`).
    pub identity: Arc<identity::Identity>,
    /// Istio's standard metrics.
    pub stats: Arc<stats::Stats>,
    /// Finished spans, for the trace collector.
    pub tracer: Arc<trace::report::Reporter>,
    /// The last failed requests, for the dashboard.
    pub recent: Arc<recent::Recent>,
    /// Open downstream connections, and the shutdown's drain.
    pub drain: Arc<drain::Drain>,
}

impl Shared {
    fn new(options: ProxyOptions) -> Shared {
        let own = stats::Own::new(&options.metadata, &options.node_id);
        let workers = options.workers;
        let tracer = Arc::new(trace::report::Reporter::new(
            options.metadata.service_cluster(),
            options.metadata.instance_ip(),
            options.node_id.clone(),
        ));
        Shared {
            config: ArcSwap::from_pointee(Compiled::default()),
            names: ArcSwap::from_pointee(dns_proxy::Names::default()),
            ready: AtomicBool::new(false),
            options,
            identity: Arc::default(),
            stats: Arc::new(stats::Stats::new(own, workers)),
            tracer,
            recent: Arc::default(),
            drain: Arc::default(),
        }
    }
}

/// Runs the proxy until SIGTERM or SIGINT, then drains its connections
/// (`drain.rs`); buffered access-log lines and spans are sent before it
/// returns.
pub async fn run(options: ProxyOptions) -> anyhow::Result<()> {
    // First: a SIGTERM from now on drains rather than kills.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shared = Arc::new(Shared::new(options.clone()));
    if let Some(ca) = options.ca.clone() {
        tokio::spawn(identity::agent::run(shared.identity.clone(), ca));
    }
    if let Some(addr) = options.dns {
        dns_proxy::start(addr, shared.clone()).await?;
    }
    access_log::start_flusher();
    trace::report::start(&shared);
    if let Some(every) = options.stats_eviction {
        shared.stats.enable_eviction();
        tokio::spawn(evict_stats(shared.clone(), every));
    }
    let admin = admin::bind(options.admin).await?;
    tokio::spawn(admin::serve(admin, shared.clone()));
    if let Some(addr) = options.prometheus {
        let listener = admin::bind(addr).await?;
        tokio::spawn(admin::serve_prometheus(listener, shared.clone()));
    }
    if let Some(addr) = options.merged_metrics {
        let listener = admin::bind(addr).await?;
        let app = options.app_metrics.clone();
        tokio::spawn(merged::serve(listener, shared.clone(), app));
    }
    let workers = workers::Workers::start(options.workers, shared.clone())?;
    let applier = xds_state::Locked(xds_state::XdsState::shared(shared.clone(), workers)?);
    let client = weft_xds::ClientConfig {
        address: options.xds_address.clone(),
        node: Node {
            id: options.node_id.clone(),
            cluster: "weft".into(),
            metadata: options.metadata.to_struct(),
            ..Default::default()
        },
    };
    // The xDS client owns the workers (through the applied state): its
    // end is theirs, and their connections'. It goes on while they drain,
    // as Envoy's does, so that endpoint changes still arrive.
    let xds = weft_xds::run_client(client, applier);
    let mut xds = std::pin::pin!(xds);
    tokio::select! {
        () = &mut xds => return finish(&shared).await,
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    // A second signal (Ctrl-C again) ends the wait.
    let limit = options.drain_duration;
    tracing::info!(?limit, "draining before exit");
    tokio::select! {
        left = shared.drain.run(limit) => if left > 0 {
            tracing::info!(connections = left, "drain time over; closing");
        },
        () = &mut xds => {}
        _ = term.recv() => tracing::info!("signalled again; closing"),
        _ = tokio::signal::ctrl_c() => tracing::info!("signalled again; closing"),
    }
    finish(&shared).await
}

/// What is still buffered goes out: access-log lines, then spans (for at
/// most a second: a dead collector must not hold up the exit).
async fn finish(shared: &Shared) -> anyhow::Result<()> {
    access_log::flush();
    let spans = trace::report::flush(shared);
    if tokio::time::timeout(std::time::Duration::from_secs(1), spans)
        .await
        .is_err()
    {
        tracing::warn!("the trace collector did not take the last spans in time");
    }
    Ok(())
}

/// Every `every`, drops the metric series nothing updated since the last
/// time.
async fn evict_stats(shared: Arc<Shared>, every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let gone = shared.stats.evict_unused();
        if gone > 0 {
            tracing::debug!(series = gone, "evicted unused stats");
        }
    }
}

/// A proxy fed with fixed Envoy resources instead of a control plane: the
/// in-process test layer (the proxy on loopback, no root) and a way to run
/// the data plane without xDS. Each `apply` is one xDS response for one
/// type, accepted whole or rejected with the reason a NACK would carry.
pub struct StaticProxy {
    state: xds_state::Locked,
    shared: Arc<Shared>,
    version: u64,
}

impl StaticProxy {
    /// Starts `workers` worker threads with no listeners yet.
    pub fn start(workers: usize) -> std::io::Result<StaticProxy> {
        StaticProxy::start_as(workers, stats::NodeMetadata::default())
    }

    /// `start` for a proxy of the workload `metadata` describes (Istio's
    /// node metadata keys), as the metrics and the metadata exchange see it.
    pub fn start_as(workers: usize, metadata: stats::NodeMetadata) -> std::io::Result<StaticProxy> {
        let options = ProxyOptions {
            xds_address: String::new(),
            node_id: "static".into(),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            bind_ip: None,
            workers,
            dns: None,
            ca: None,
            metadata,
            prometheus: None,
            merged_metrics: None,
            app_metrics: None,
            stats_eviction: None,
            drain_duration: drain::DEFAULT_DURATION,
        };
        let shared = Arc::new(Shared::new(options));
        trace::report::start(&shared);
        let workers = workers::Workers::start(workers, shared.clone())?;
        access_log::start_flusher();
        Ok(StaticProxy {
            state: xds_state::Locked(xds_state::XdsState::shared(shared.clone(), workers)?),
            shared,
            version: 0,
        })
    }

    /// Serves the DNS proxy on a free loopback port, forwarding to
    /// `upstreams`; returns its address.
    pub async fn serve_dns(&self, upstreams: Vec<SocketAddr>) -> std::io::Result<SocketAddr> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        dns_proxy::start_with(any, self.shared.clone(), upstreams).await
    }

    /// Gives the proxy a workload certificate (chain leaf first, its key,
    /// the trust bundle), as the CA agent would.
    pub fn install_identity(&self, chain: &str, key: &str, roots: &str) -> Result<(), String> {
        self.shared.identity.install(chain, key, roots)
    }

    /// Drains as on SIGTERM: returns when no connection is left open, or
    /// after `limit`, with how many were still open.
    pub async fn drain(&self, limit: std::time::Duration) -> usize {
        self.shared.drain.run(limit).await
    }

    /// The proxy's metrics, as `/stats/prometheus` serves them.
    pub fn prometheus(&self) -> String {
        self.shared.stats.encode()
    }

    /// Tracks which metric series are used, for `evict_unused_stats`;
    /// call before traffic.
    pub fn enable_stats_eviction(&self) {
        self.shared.stats.enable_eviction()
    }

    /// One eviction sweep (what the interval timer does): drops the series
    /// unused since the last sweep; returns how many.
    pub fn evict_unused_stats(&self) -> usize {
        self.shared.stats.evict_unused()
    }

    pub fn apply(
        &mut self,
        type_url: &str,
        resources: &[envoy_types::pb::google::protobuf::Any],
    ) -> Result<(), String> {
        use weft_xds::Applier;
        self.version += 1;
        self.state
            .apply(type_url, &self.version.to_string(), resources)
    }
}
