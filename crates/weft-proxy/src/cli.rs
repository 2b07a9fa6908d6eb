//! The proxy's command line, shared by the `weft-proxy` binary (what a
//! sidecar or gateway runs: the proxy's code alone, so an idle sidecar
//! maps few pages) and `weft proxy` (the all-in-one CLI's convenience).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A proxy (sidecar or gateway) fed by a control plane over ADS.
/// Connections run on WEFT_WORKER_THREADS workers (default: one per core).
#[derive(clap::Args, Debug)]
pub struct ProxyArgs {
    /// Control plane xDS address, e.g. http://127.0.0.1:15010
    #[arg(long)]
    pub xds: String,
    /// Istio-style node id: sidecar~IP~name.namespace~namespace.svc.cluster.local
    #[arg(long)]
    pub node_id: String,
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin: SocketAddr,
    /// Bind listeners that say 0.0.0.0 on this address instead.
    #[arg(long)]
    pub bind_ip: Option<std::net::IpAddr>,
    /// Serve Istio's DNS proxy here (UDP and TCP), e.g. 127.0.0.1:15053.
    #[arg(long)]
    pub dns: Option<SocketAddr>,
    /// The mesh CA, e.g. http://127.0.0.1:15010 (default: the xDS
    /// address, when a token file is given).
    #[arg(long)]
    pub ca: Option<String>,
    /// The pod token the CA checks (`weft up` writes one per pod).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Workload certificate lifetime to ask for (default: the CA's).
    #[arg(long, value_parser = duration)]
    pub cert_ttl: Option<Duration>,
    /// Istio's node metadata for the workload, as a JSON object
    /// (`NAME`, `NAMESPACE`, `WORKLOAD_NAME`, `LABELS`, `CLUSTER_ID`,
    /// `SERVICE_ACCOUNT`, …): what the metrics label this side with.
    #[arg(long, value_parser = node_metadata)]
    pub metadata: Option<crate::stats::NodeMetadata>,
    /// Serve Istio's metrics here too (`/stats/prometheus`, Istio's
    /// 15090), e.g. 0.0.0.0:15090.
    #[arg(long)]
    pub prometheus: Option<SocketAddr>,
    /// Serve the proxy's and the app's metrics merged here (Istio's
    /// agent port), e.g. 0.0.0.0:15020.
    #[arg(long)]
    pub merged_metrics: Option<SocketAddr>,
    /// Where the app serves its own metrics on the pod's loopback, as
    /// PORT or PORT/path (`prometheus.io/port` and `path`).
    #[arg(long, requires = "merged_metrics")]
    pub app_metrics: Option<crate::merged::AppMetrics>,
    /// Drop metric series unused for this long (Istio's
    /// `sidecar.istio.io/statsEvictionInterval`), e.g. 60s.
    #[arg(long, value_parser = duration)]
    pub stats_eviction_interval: Option<Duration>,
    /// On SIGTERM, how long connections get to finish before the proxy
    /// exits (Istio's `terminationDrainDuration`); it exits sooner when
    /// none is left open.
    #[arg(long, value_parser = duration, default_value = "5s")]
    pub drain_duration: Duration,
}

impl ProxyArgs {
    /// The proxy's options, with `workers` worker threads.
    pub fn options(self, workers: usize) -> crate::ProxyOptions {
        let ca = match (self.ca, &self.token_file) {
            (None, None) => None,
            (address, _) => Some(crate::CaClient {
                address: address.unwrap_or_else(|| self.xds.clone()),
                token_file: self.token_file,
                ttl: self.cert_ttl,
            }),
        };
        crate::ProxyOptions {
            xds_address: self.xds,
            node_id: self.node_id,
            admin: self.admin,
            bind_ip: self.bind_ip,
            dns: self.dns,
            ca,
            workers,
            metadata: self.metadata.unwrap_or_default(),
            prometheus: self.prometheus,
            merged_metrics: self.merged_metrics,
            app_metrics: self.app_metrics,
            stats_eviction: self.stats_eviction_interval,
            drain_duration: self.drain_duration,
        }
    }
}

/// Runs the proxy until it fails. Its main thread only follows xDS and
/// serves the admin port, on a current-thread runtime; connections run on
/// WEFT_WORKER_THREADS workers of their own (default: one per core).
pub fn main(args: ProxyArgs) -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(crate::run(args.options(worker_threads()))) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to standard error, filtered by WEFT_LOG (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// WEFT_WORKER_THREADS, else one per core.
fn worker_threads() -> usize {
    std::env::var("WEFT_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A duration in Istio's syntax (`24h`, `90s`, `1.5m`).
pub fn duration(text: &str) -> Result<Duration, String> {
    weft_config::networking::common::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration (e.g. 24h, 90s)"))
}

/// `--metadata`: a JSON object.
fn node_metadata(text: &str) -> Result<crate::stats::NodeMetadata, String> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(m)) => Ok(crate::stats::NodeMetadata(m)),
        Ok(_) => Err("node metadata must be a JSON object".into()),
        Err(e) => Err(format!("node metadata is not JSON: {e}")),
    }
}
