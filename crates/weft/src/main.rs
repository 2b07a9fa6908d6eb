//! `weft`: one binary for the whole mesh — CLI (istioctl's role), control
//! plane, proxy, local mesh runtime and demo apps. This file only parses
//! arguments and calls into the libraries.

mod api_client;
mod cmd;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "A service mesh that speaks Istio's configuration API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole mesh on this machine from DIR (mesh.yaml + Istio YAML).
    Up {
        dir: PathBuf,
        /// Mesh name (1-8 lower-case letters or digits).
        #[arg(long, default_value = "weft")]
        name: String,
        /// N in 198.18.N.0/24 (pods) and 198.19.N.0/24 (service VIPs).
        #[arg(long, default_value_t = 0)]
        subnet: u8,
        /// Host port of the ingress gateway, on 127.0.0.1.
        #[arg(long, default_value_t = 8080)]
        ingress_port: u16,
        /// Seconds to wait for every proxy and app to be ready.
        #[arg(long, default_value_t = 90)]
        timeout: u64,
        /// A plugged-in CA (Istio's layout: ca-cert.pem, ca-key.pem,
        /// root-cert.pem, cert-chain.pem); default: a self-signed root
        /// kept with the mesh's state.
        #[arg(long)]
        ca_dir: Option<PathBuf>,
        /// Workload certificate lifetime (Istio's default: 24h).
        #[arg(long, value_parser = duration)]
        workload_cert_ttl: Option<std::time::Duration>,
        /// Start an add-on beside the mesh: `prometheus` (Debian's
        /// package) scrapes every proxy as Istio's addon does.
        #[arg(long = "with", value_enum)]
        with: Vec<AddonArg>,
    },
    /// Remove everything a mesh created (also after `weft up` was killed).
    Down {
        #[arg(long, default_value = "weft")]
        name: String,
    },
    /// Apply Istio YAML to a running mesh (all documents or none).
    Apply(cmd::config::ApplyArgs),
    /// Check Istio YAML offline: file:line, resource, field and reason.
    Validate(cmd::config::FileArgs),
    /// Show config stored in a running mesh (or, with -f, read from files).
    Get(cmd::config::GetArgs),
    /// Delete config applied to a running mesh.
    Delete(cmd::config::DeleteArgs),
    /// Create a resource from files, as kubectl does (`create secret tls`).
    Create {
        #[command(subcommand)]
        what: CreateKind,
    },
    /// Cross-resource checks with Istio's message codes (exit 79 on findings).
    Analyze(cmd::analyze::AnalyzeArgs),
    /// Per proxy and xDS type: sent, ACKed or NACKed (with the reason).
    ProxyStatus(cmd::config::Target),
    /// The built-in dashboard's URL (service graph, golden metrics, recent
    /// failures, sync status), opened with xdg-open when there is a display.
    Dashboard(cmd::config::Target),
    /// A proxy's config as it runs (istioctl proxy-config): `secret`.
    #[command(subcommand)]
    ProxyConfig(cmd::proxy_config::ProxyConfig),
    /// Run the control plane (started by `weft up`).
    ControlPlane {
        #[arg(long)]
        config_dir: Option<PathBuf>,
        /// The installed mesh config (YAML, as the `istio` ConfigMap's
        /// `mesh` key): used until config names its own ConfigMap.
        #[arg(long)]
        mesh_config: Option<PathBuf>,
        #[arg(long)]
        registry: PathBuf,
        #[arg(long, default_value = "127.0.0.1:15010")]
        xds: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:15014")]
        api: SocketAddr,
        /// Be the mesh's certificate authority with the files here (Istio's
        /// plugged-in layout: ca-cert.pem, ca-key.pem, root-cert.pem,
        /// cert-chain.pem); a self-signed root is made and kept here when
        /// there are none.
        #[arg(long)]
        ca_dir: Option<PathBuf>,
        /// The key pod tokens are checked with (default: token-key in --ca-dir).
        #[arg(long)]
        token_key: Option<PathBuf>,
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// Workload certificate lifetime when a request names none.
        #[arg(long, default_value = "24h", value_parser = duration)]
        workload_cert_ttl: std::time::Duration,
        /// The longest workload certificate lifetime granted.
        #[arg(long, default_value = "2160h", value_parser = duration)]
        max_workload_cert_ttl: std::time::Duration,
    },
    /// Run a proxy (sidecar or gateway) fed by a control plane over ADS.
    /// Connections run on WEFT_WORKER_THREADS workers (default: one per core).
    Proxy {
        /// Control plane xDS address, e.g. http://127.0.0.1:15010
        #[arg(long)]
        xds: String,
        /// Istio-style node id: sidecar~IP~name.namespace~namespace.svc.cluster.local
        #[arg(long)]
        node_id: String,
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: SocketAddr,
        /// Bind listeners that say 0.0.0.0 on this address instead.
        #[arg(long)]
        bind_ip: Option<std::net::IpAddr>,
        /// Serve Istio's DNS proxy here (UDP and TCP), e.g. 127.0.0.1:15053.
        #[arg(long)]
        dns: Option<SocketAddr>,
        /// The mesh CA, e.g. http://127.0.0.1:15010 (default: the xDS
        /// address, when a token file is given).
        #[arg(long)]
        ca: Option<String>,
        /// The pod token the CA checks (`weft up` writes one per pod).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Workload certificate lifetime to ask for (default: the CA's).
        #[arg(long, value_parser = duration)]
        cert_ttl: Option<std::time::Duration>,
        /// Istio's node metadata for the workload, as a JSON object
        /// (`NAME`, `NAMESPACE`, `WORKLOAD_NAME`, `LABELS`, `CLUSTER_ID`,
        /// `SERVICE_ACCOUNT`, …): what the metrics label this side with.
        #[arg(long, value_parser = node_metadata)]
        metadata: Option<weft_proxy::stats::NodeMetadata>,
        /// Serve Istio's metrics here too (`/stats/prometheus`, Istio's
        /// 15090), e.g. 0.0.0.0:15090.
        #[arg(long)]
        prometheus: Option<SocketAddr>,
        /// Serve the proxy's and the app's metrics merged here (Istio's
        /// agent port), e.g. 0.0.0.0:15020.
        #[arg(long)]
        merged_metrics: Option<SocketAddr>,
        /// Where the app serves its own metrics on the pod's loopback, as
        /// PORT or PORT/path (`prometheus.io/port` and `path`).
        #[arg(long, requires = "merged_metrics")]
        app_metrics: Option<weft_proxy::merged::AppMetrics>,
        /// Drop metric series unused for this long (Istio's
        /// `sidecar.istio.io/statsEvictionInterval`), e.g. 60s.
        #[arg(long, value_parser = duration)]
        stats_eviction_interval: Option<std::time::Duration>,
    },
    /// Run one of the Bookinfo-like demo services.
    Demo {
        /// productpage, details, reviews, ratings, httpbin, tcp-echo, ext-authz, zipkin, or a boutique service
        service: weft_demo::Role,
        #[arg(long, default_value = "v1")]
        version: String,
        #[arg(long, default_value = "0.0.0.0:9080")]
        listen: SocketAddr,
        /// Answer this percent of requests with 503 (for retries and
        /// outlier detection); probes of `/` and `/health` still pass.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
        fail_percent: u8,
        /// Add this many milliseconds to every request (a slow service).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
}

#[derive(Subcommand)]
enum CreateKind {
    /// A Secret (a Gateway's credentialName names one).
    Secret {
        #[command(subcommand)]
        kind: cmd::secret::SecretKind,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // A proxy's main thread only follows xDS and serves the admin port: its
    // connections run on worker threads of their own (WEFT_WORKER_THREADS,
    // default one per core). Everything else gets tokio's usual runtime.
    let mut builder = match cli.command {
        Command::Proxy { .. } => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = builder.enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// WEFT_WORKER_THREADS, else one per core.
fn worker_threads() -> usize {
    std::env::var("WEFT_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

async fn run(command: Command) -> anyhow::Result<std::process::ExitCode> {
    use std::process::ExitCode;
    match command {
        Command::Up {
            dir,
            name,
            subnet,
            ingress_port,
            timeout,
            ca_dir,
            workload_cert_ttl,
            with,
        } => {
            let opts = weft_up::UpOptions {
                with: with.into_iter().map(AddonArg::addon).collect(),
                dir,
                mesh: name,
                subnet,
                ingress_port,
                exe: std::env::current_exe()?,
                ready_timeout: std::time::Duration::from_secs(timeout),
                ca_dir,
                workload_cert_ttl,
            };
            weft_up::up(opts).await?;
        }
        Command::Down { name } => {
            weft_up::down(&name)?;
            println!("mesh {name:?} removed");
        }
        Command::Apply(args) => return cmd::config::apply(&args).await,
        Command::Validate(args) => return cmd::config::validate(&args),
        Command::Get(args) => return cmd::config::get(&args).await,
        Command::Delete(args) => return cmd::config::delete(&args).await,
        Command::Create {
            what: CreateKind::Secret { kind },
        } => return cmd::secret::create(&kind).await,
        Command::Analyze(args) => return cmd::analyze::analyze(&args).await,
        Command::ProxyStatus(target) => return cmd::status::proxy_status(&target).await,
        Command::Dashboard(target) => return cmd::status::dashboard(&target),
        Command::ProxyConfig(what) => return cmd::proxy_config::run(&what).await,
        Command::ControlPlane {
            config_dir,
            mesh_config,
            registry,
            xds,
            api,
            ca_dir,
            token_key,
            trust_domain,
            workload_cert_ttl,
            max_workload_cert_ttl,
        } => {
            let ca = ca_dir.map(|dir| weft_control::CaOptions {
                token_key: token_key.unwrap_or_else(|| dir.join("token-key")),
                dir,
                trust_domain,
                default_ttl: workload_cert_ttl,
                max_ttl: max_workload_cert_ttl,
            });
            weft_control::run(weft_control::Options {
                config_dir,
                registry_file: registry,
                xds_addr: xds,
                api_addr: api,
                ca,
                mesh_config,
            })
            .await?;
        }
        Command::Proxy {
            xds,
            node_id,
            admin,
            bind_ip,
            dns,
            ca,
            token_file,
            cert_ttl,
            metadata,
            prometheus,
            merged_metrics,
            app_metrics,
            stats_eviction_interval,
        } => {
            let ca = match (ca, &token_file) {
                (None, None) => None,
                (address, _) => Some(weft_proxy::CaClient {
                    address: address.unwrap_or_else(|| xds.clone()),
                    token_file,
                    ttl: cert_ttl,
                }),
            };
            weft_proxy::run(weft_proxy::ProxyOptions {
                xds_address: xds,
                node_id,
                admin,
                bind_ip,
                dns,
                ca,
                workers: worker_threads(),
                metadata: metadata.unwrap_or_default(),
                prometheus,
                merged_metrics,
                app_metrics,
                stats_eviction: stats_eviction_interval,
            })
            .await?;
        }
        Command::Demo {
            service,
            version,
            listen,
            fail_percent,
            delay_ms,
        } => {
            let knob = weft_demo::Knob {
                fail_percent,
                delay: std::time::Duration::from_millis(delay_ms),
            };
            weft_demo::run(service, version, listen, knob).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A duration in Istio's syntax (`24h`, `90s`, `1.5m`).
fn duration(text: &str) -> Result<std::time::Duration, String> {
    weft_config::networking::common::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration (e.g. 24h, 90s)"))
}

/// `--metadata`: a JSON object.
fn node_metadata(text: &str) -> Result<weft_proxy::stats::NodeMetadata, String> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(m)) => Ok(weft_proxy::stats::NodeMetadata(m)),
        Ok(_) => Err("node metadata must be a JSON object".into()),
        Err(e) => Err(format!("node metadata is not JSON: {e}")),
    }
}

/// `weft up --with`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AddonArg {
    Prometheus,
}

impl AddonArg {
    fn addon(self) -> weft_up::Addon {
        match self {
            AddonArg::Prometheus => weft_up::Addon::Prometheus,
        }
    }
}
