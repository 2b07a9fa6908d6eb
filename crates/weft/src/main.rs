//! `weft`: one binary for the whole mesh — CLI (istioctl's role), control
//! plane, proxy, local mesh runtime and demo apps. This file only parses
//! arguments and calls into the libraries. Meshes run their proxies from
//! `weft-proxy` beside it (`src/bin/weft-proxy.rs`), the proxy alone.

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
        #[arg(long, value_parser = weft_proxy::cli::duration)]
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
        #[arg(long, default_value = "24h", value_parser = weft_proxy::cli::duration)]
        workload_cert_ttl: std::time::Duration,
        /// The longest workload certificate lifetime granted.
        #[arg(long, default_value = "2160h", value_parser = weft_proxy::cli::duration)]
        max_workload_cert_ttl: std::time::Duration,
    },
    /// Run a proxy (sidecar or gateway) fed by a control plane over ADS,
    /// as `weft-proxy` does. Connections run on WEFT_WORKER_THREADS
    /// workers (default: one per core).
    Proxy(weft_proxy::cli::ProxyArgs),
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
        #[command(flatten)]
        to: cmd::secret::Destination,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    weft_proxy::cli::init_logging();
    let command = match cli.command {
        Command::Proxy(args) => return weft_proxy::cli::main(args),
        command => command,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
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
            what: CreateKind::Secret { kind, to },
        } => return cmd::secret::create(&kind, &to).await,
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
        Command::Proxy(_) => unreachable!("run by main on its own runtime"),
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
