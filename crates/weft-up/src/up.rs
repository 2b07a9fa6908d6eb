//! Bringing a mesh up, waiting until it serves, and taking it down.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use weft_registry::{MeshSpec, Protocol, ProxyKind};

use crate::net;
use crate::plan::{Plan, Pod};
use crate::procs::{self, Launch};
use crate::state::{MeshState, ProcRecord};

/// The mesh config a local mesh is installed with: Istio's demo profile's
/// (access logs on standard output, which `<pod>.sidecar.log` collects).
/// An `istio` ConfigMap in the mesh's config replaces it whole, as
/// applying one over an installed mesh does.
const DEMO_MESH_CONFIG: &str = "accessLogFile: /dev/stdout\n";
use crate::tokens::Tokens;

#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Directory with mesh.yaml and Istio YAML.
    pub dir: PathBuf,
    pub mesh: String,
    pub subnet: u8,
    pub ingress_port: u16,
    /// The weft binary (for the control plane and `weft …` apps); proxies
    /// run `weft-proxy` from beside it.
    pub exe: PathBuf,
    pub ready_timeout: Duration,
    /// A plugged-in CA (Istio's file layout); None: a self-signed root
    /// kept in the mesh's state directory.
    pub ca_dir: Option<PathBuf>,
    /// Workload certificate lifetime (None: Istio's 24 h).
    pub workload_cert_ttl: Option<Duration>,
    /// Add-ons to start beside the mesh (`--with`).
    pub with: Vec<Addon>,
}

/// What `weft up --with` can start beside the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addon {
    /// A Prometheus scraping every proxy, as Istio's addon does.
    Prometheus,
}

/// Starts the mesh, prints where everything runs, and serves until SIGINT
/// or SIGTERM, then removes everything it created; or until `weft down`
/// removed it. A signal during start-up
/// abandons the start and cleans up just the same.
pub async fn up(opts: UpOptions) -> anyhow::Result<()> {
    let dir = crate::state_dir(&opts.mesh);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    tokio::pin!(stop);
    // Biased: start runs first, so by the time a signal can win, the mesh
    // this process creates is the one recorded in its state directory.
    tokio::select! {
        biased;
        started = start(&opts, &dir) => { started?; }
        _ = &mut stop => {
            eprintln!("interrupted while starting mesh {:?}", opts.mesh);
            down(&opts.mesh)?;
            bail!("mesh {:?} did not start: interrupted", opts.mesh);
        }
    }
    // `weft down` from elsewhere removes the state file: nothing is left
    // to serve.
    let removed = async {
        while dir.join("state.json").exists() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::select! {
        _ = &mut stop => {}
        _ = removed => {
            eprintln!("mesh {:?} was removed (weft down)", opts.mesh);
            return Ok(());
        }
    }
    eprintln!("stopping mesh {:?} …", opts.mesh);
    down(&opts.mesh)?;
    eprintln!("mesh {:?} removed", opts.mesh);
    Ok(())
}

/// Starts everything and waits for readiness; on any failure removes what
/// was created and returns the error.
pub async fn start(opts: &UpOptions, dir: &Path) -> anyhow::Result<Plan> {
    if !nix::unistd::geteuid().is_root() {
        bail!("weft up needs root (network namespaces and iptables): run it with sudo");
    }
    let mesh_file = opts.dir.join("mesh.yaml");
    let text = std::fs::read_to_string(&mesh_file)
        .with_context(|| format!("reading {}", mesh_file.display()))?;
    let spec =
        MeshSpec::from_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", mesh_file.display()))?;
    let mut plan = Plan::new(&opts.mesh, opts.subnet, opts.ingress_port, &spec)?;
    plan.drains = crate::drain::Drains::read(&opts.dir, plan.pods.iter().map(|p| &p.spec))?;
    if dir.join("state.json").exists() {
        bail!(
            "mesh {:?} is already up (or was not cleaned up): run `weft down --name {}` first",
            opts.mesh,
            opts.mesh
        );
    }
    if net::link_exists(&plan.bridge) {
        bail!(
            "interface {} already exists: is mesh {:?} running? `weft down --name {}` removes it",
            plan.bridge,
            opts.mesh,
            opts.mesh
        );
    }
    // The gateway would find out only after the mesh is up, as a NACK.
    if let Err(e) = std::net::TcpListener::bind(plan.ingress) {
        bail!(
            "the ingress address {} is not free ({e}): stop what listens there, or choose another with --ingress-port",
            plan.ingress
        );
    }
    std::fs::create_dir_all(dir.join("logs"))?;
    let mut state = MeshState {
        name: opts.mesh.clone(),
        bridge: plan.bridge.clone(),
        api: Some(plan.addresses.api),
        ingress: Some(plan.ingress),
        config_dir: Some(std::fs::canonicalize(&opts.dir)?),
        ..Default::default()
    };
    state.save(dir)?;
    let started = launch(&plan, opts, &mut state, dir).await;
    if let Err(e) = started {
        let _ = down(&opts.mesh);
        return Err(e);
    }
    let mut prometheus = None;
    if opts.with.contains(&Addon::Prometheus) {
        match crate::prometheus::start(&plan, &mut state, dir) {
            Ok(addr) => prometheus = Some(addr),
            Err(e) => {
                let _ = down(&opts.mesh);
                return Err(e);
            }
        }
    }
    print_table(&plan, dir);
    if let Some(addr) = prometheus {
        println!("prometheus:     http://{addr}");
    }
    Ok(plan)
}

async fn launch(
    plan: &Plan,
    opts: &UpOptions,
    state: &mut MeshState,
    dir: &Path,
) -> anyhow::Result<()> {
    net::create_bridge(&plan.bridge, plan.addresses.gateway)?;
    let registry_file = dir.join("registry.json");
    std::fs::write(&registry_file, serde_json::to_vec_pretty(&plan.registry)?)?;
    let programs = Programs::beside(&opts.exe);
    let exe = programs.weft.clone();
    let logs = dir.join("logs");
    let config_dir = state.config_dir.clone().expect("set above");
    let tokens = Tokens::open(dir)?;
    let ca_dir = opts.ca_dir.clone().unwrap_or_else(|| dir.join("ca"));
    let mesh_config = dir.join("mesh-config.yaml");
    std::fs::write(&mesh_config, DEMO_MESH_CONFIG)?;
    let mut argv = vec![
        exe.clone(),
        "control-plane".into(),
        "--config-dir".into(),
        config_dir.display().to_string(),
        "--registry".into(),
        registry_file.display().to_string(),
        "--xds".into(),
        plan.addresses.xds.to_string(),
        "--api".into(),
        plan.addresses.api.to_string(),
        "--ca-dir".into(),
        ca_dir.display().to_string(),
        "--token-key".into(),
        tokens.key_file.display().to_string(),
        "--mesh-config".into(),
        mesh_config.display().to_string(),
    ];
    if let Some(ttl) = opts.workload_cert_ttl {
        argv.extend([
            "--workload-cert-ttl".into(),
            format!("{}s", ttl.as_secs().max(1)),
        ]);
    }
    let cp = procs::spawn(Launch {
        role: "control-plane".into(),
        argv,
        netns: None,
        uid: None,
        env: vec![],
        log: &logs.join("control-plane.log"),
    })?;
    state.processes.push(cp);
    state.save(dir)?;
    for pod in &plan.pods {
        start_pod(plan, pod, &programs, state, dir, &tokens)?;
    }
    let mut argv = proxy_argv(
        &programs.proxy,
        plan,
        plan.gateway(),
        &plan.addresses.gateway_admin.to_string(),
        &tokens.issue(plan.gateway(), None)?,
        plan.drains.mesh,
    );
    argv.extend(["--bind-ip".into(), "127.0.0.1".into()]);
    // Beside its admin port on the bridge, where a scraper reaches it.
    let metrics = SocketAddr::new(plan.addresses.gateway_admin.ip(), PROMETHEUS_PORT);
    argv.extend(["--prometheus".into(), metrics.to_string()]);
    let gateway = procs::spawn(Launch {
        role: "ingress-gateway".into(),
        argv,
        netns: None,
        uid: None,
        env: vec![],
        log: &logs.join("istio-ingressgateway.log"),
    })?;
    state.processes.push(ProcRecord {
        grace_ms: Some(crate::drain::grace_ms(plan.drains.mesh)),
        ..gateway
    });
    state.save(dir)?;
    wait_ready(plan, opts.ready_timeout, || all_alive(state, &logs)).await
}

/// The programs a mesh runs: `weft` for its control plane and apps, and
/// the command its proxies run.
struct Programs {
    weft: String,
    /// `weft-proxy` beside `weft` (the proxy's code alone: an idle sidecar
    /// holds a third less memory); where only `weft` was installed,
    /// `weft proxy`, the same proxy from the all-in-one binary.
    proxy: Vec<String>,
}

impl Programs {
    fn beside(exe: &Path) -> Programs {
        let weft = exe.display().to_string();
        let alone = exe.with_file_name("weft-proxy");
        let proxy = match alone.is_file() {
            true => vec![alone.display().to_string()],
            false => {
                eprintln!(
                    "note: no weft-proxy beside {weft}: proxies run as `weft proxy` (more memory per proxy)"
                );
                vec![weft.clone(), "proxy".into()]
            }
        };
        Programs { weft, proxy }
    }
}

/// Every process started must still run: an app that exits at once (a
/// typo in its command, a port in use) is an error, with its log.
fn all_alive(state: &MeshState, logs: &Path) -> anyhow::Result<()> {
    for p in &state.processes {
        if !procs::running(p) {
            let name = p
                .role
                .replace("app/", "")
                .replace("sidecar/", "")
                .replace("gateway/", "");
            let file = if p.role.starts_with("sidecar/") {
                format!("{name}.sidecar.log")
            } else {
                format!("{name}.log")
            };
            let log = std::fs::read_to_string(logs.join(&file)).unwrap_or_default();
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            bail!(
                "{} exited right after it started; the end of its log ({file}):\n{}",
                p.role,
                tail.join("\n")
            );
        }
    }
    Ok(())
}

fn start_pod(
    plan: &Plan,
    pod: &Pod,
    programs: &Programs,
    state: &mut MeshState,
    dir: &Path,
    tokens: &Tokens,
) -> anyhow::Result<()> {
    state.netns.push(pod.netns.clone());
    state.save(dir)?;
    let etc = Path::new("/etc/netns").join(&pod.netns);
    std::fs::create_dir_all(&etc)?;
    std::fs::write(etc.join("hosts"), plan.hosts_file(pod))?;
    // The mesh has no cluster DNS: a pod's resolver is the bridge's host
    // address, where nothing answers, so DNS stays inside the mesh's
    // addresses (names are in the hosts file; a sidecar's DNS proxy
    // answers for ServiceEntry addresses and forwards the rest here).
    std::fs::write(
        etc.join("resolv.conf"),
        format!(
            "nameserver {}\noptions timeout:1 attempts:1\n",
            plan.addresses.gateway
        ),
    )?;
    net::create_pod(
        &pod.netns,
        &pod.veth,
        &plan.bridge,
        pod.ip,
        plan.addresses.gateway,
    )?;
    let workload = plan
        .registry
        .workloads
        .iter()
        .find(|w| w.name == pod.spec.name && w.namespace == pod.spec.namespace)
        .expect("every pod is in the registry");
    if workload.proxy == ProxyKind::Gateway {
        let token = tokens.issue(workload, None)?;
        return start_gateway_pod(plan, pod, workload, &programs.proxy, state, dir, &token);
    }
    let proxyless = workload.proxy == ProxyKind::Proxyless;
    let sidecar = workload.proxy.has_proxy();
    if sidecar {
        net::install_capture(&pod.netns)?;
    } else {
        net::iptables_restore(&pod.netns, &crate::kube_proxy::rules(&plan.registry))?;
    }
    let logs = dir.join("logs");
    let argv: Vec<String> = pod
        .spec
        .command
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if i == 0 && a == "weft" {
                programs.weft.clone()
            } else {
                a.clone()
            }
        })
        .collect();
    let mut env: Vec<(String, String)> = pod.spec.env.clone().into_iter().collect();
    env.extend([
        ("POD_NAME".into(), pod.spec.name.clone()),
        ("POD_NAMESPACE".into(), pod.spec.namespace.clone()),
        ("INSTANCE_IP".into(), pod.ip.to_string()),
        ("SERVICE_ACCOUNT".into(), pod.spec.service_account.clone()),
    ]);
    if proxyless {
        let path = crate::bootstrap::write(plan, workload, dir)?;
        env.push((
            crate::bootstrap::BOOTSTRAP_ENV.into(),
            path.display().to_string(),
        ));
    }
    let app = procs::spawn(Launch {
        role: format!("app/{}", pod.spec.name),
        argv,
        netns: Some(&pod.netns),
        uid: None,
        env,
        log: &logs.join(format!("{}.log", pod.spec.name)),
    })?;
    state.processes.push(app);
    if !sidecar {
        return state.save(dir);
    }
    let token = tokens.issue(workload, Some(crate::capture::PROXY_UID))?;
    let drain = plan.drains.of(&pod.spec.name);
    let mut argv = pod_proxy_argv(&programs.proxy, plan, workload, &token, drain);
    argv.extend([
        "--dns".into(),
        format!("127.0.0.1:{}", crate::capture::DNS_CAPTURE_PORT),
        "--merged-metrics".into(),
        format!("0.0.0.0:{MERGED_METRICS_PORT}"),
    ]);
    if crate::prometheus::merges(&pod.spec) {
        if let Some((port, path)) = crate::prometheus::app_metrics(&pod.spec) {
            argv.extend(["--app-metrics".into(), format!("{port}{path}")]);
        }
    }
    if let Some(every) = stats_eviction(&pod.spec)? {
        argv.extend(["--stats-eviction-interval".into(), format!("{}s", every)]);
    }
    let sidecar = procs::spawn(Launch {
        role: format!("sidecar/{}", pod.spec.name),
        argv,
        netns: Some(&pod.netns),
        uid: Some(crate::capture::PROXY_UID),
        env: vec![],
        log: &logs.join(format!("{}.sidecar.log", pod.spec.name)),
    })?;
    state.processes.push(ProcRecord {
        grace_ms: Some(crate::drain::grace_ms(drain)),
        ..sidecar
    });
    state.save(dir)
}

/// Where every proxy serves Istio's metrics (Istio's 15090).
pub const PROMETHEUS_PORT: u16 = 15090;
/// Where a sidecar serves its metrics merged with its app's (Istio's
/// agent port), which Prometheus scrapes.
pub const MERGED_METRICS_PORT: u16 = 15020;

/// The pod's `sidecar.istio.io/statsEvictionInterval`, in seconds: as in
/// Istio, a whole multiple of the 5 s stats flush interval.
pub(crate) fn stats_eviction(pod: &weft_registry::WorkloadSpec) -> anyhow::Result<Option<u64>> {
    const KEY: &str = "sidecar.istio.io/statsEvictionInterval";
    let Some(text) = pod.annotations.get(KEY) else {
        return Ok(None);
    };
    let every = weft_config::networking::common::parse_duration(text)
        .filter(|d| d.subsec_nanos() == 0 && d.as_secs() > 0 && d.as_secs() % 5 == 0)
        .with_context(|| {
            format!(
                "pod {}: {KEY}: {text:?} is not a duration in whole multiples of 5s (the stats flush interval)",
                pod.name
            )
        })?;
    Ok(Some(every.as_secs()))
}

/// `proxy_argv` for a pod's own proxy: admin and metrics on the pod's
/// address, as in a Kubernetes pod.
fn pod_proxy_argv(
    proxy: &[String],
    plan: &Plan,
    workload: &weft_registry::Workload,
    token: &Path,
    drain: Duration,
) -> Vec<String> {
    let mut argv = proxy_argv(proxy, plan, workload, "0.0.0.0:15000", token, drain);
    argv.extend(["--prometheus".into(), format!("0.0.0.0:{PROMETHEUS_PORT}")]);
    argv
}

/// The proxy for `workload`, fed by the mesh's control plane.
fn proxy_argv(
    proxy: &[String],
    plan: &Plan,
    workload: &weft_registry::Workload,
    admin: &str,
    token: &Path,
    drain: Duration,
) -> Vec<String> {
    let mut argv = proxy.to_vec();
    argv.extend([
        "--xds".into(),
        format!("http://{}", plan.addresses.xds),
        "--node-id".into(),
        workload.node_id(),
        "--admin".into(),
        admin.to_string(),
        "--token-file".into(),
        token.display().to_string(),
        "--metadata".into(),
        crate::bootstrap::node_metadata(workload).to_string(),
        // `down` waits a second longer before SIGKILL, so that a proxy a
        // held TCP stream keeps draining still writes its last log lines.
        "--drain-duration".into(),
        format!("{}ms", drain.as_millis()),
    ]);
    argv
}

/// A gateway pod (`inject.istio.io/templates: gateway`), such as an egress
/// gateway: its proxy alone, as a router, with no capture.
fn start_gateway_pod(
    plan: &Plan,
    pod: &Pod,
    workload: &weft_registry::Workload,
    proxy: &[String],
    state: &mut MeshState,
    dir: &Path,
    token: &Path,
) -> anyhow::Result<()> {
    let drain = plan.drains.of(&pod.spec.name);
    let gateway = procs::spawn(Launch {
        role: format!("gateway/{}", pod.spec.name),
        argv: pod_proxy_argv(proxy, plan, workload, token, drain),
        netns: Some(&pod.netns),
        uid: None,
        env: vec![],
        log: &dir.join("logs").join(format!("{}.log", pod.spec.name)),
    })?;
    state.processes.push(ProcRecord {
        grace_ms: Some(crate::drain::grace_ms(drain)),
        ..gateway
    });
    state.save(dir)
}

/// Ready means: every proxy ACKed its listeners and clusters, and every
/// HTTP app answers through its sidecar.
/// `alive` is checked on every round, so a process that dies fails the
/// start at once, with its log, instead of at the timeout.
async fn wait_ready(
    plan: &Plan,
    timeout: Duration,
    alive: impl Fn() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let expected: Vec<String> = plan
        .registry
        .workloads
        .iter()
        // A proxyless app asks for xDS when it first dials a service; a
        // pod outside the mesh never does.
        .filter(|w| w.proxy.has_proxy())
        .map(|w| w.node_id())
        .collect();
    loop {
        let sync = sync_status(plan.addresses.api);
        if let Some((id, kind, reason)) = sync.nacks.first() {
            bail!(
                "proxy {id} rejected its {kind} config: {reason}\n(the mesh cannot start on this config; logs in {})",
                crate::state_dir(&plan.mesh).join("logs").display()
            );
        }
        let missing: Vec<&String> = expected
            .iter()
            .filter(|id| !sync.synced.contains(id))
            .collect();
        if missing.is_empty() {
            break;
        }
        alive()?;
        if Instant::now() > deadline {
            bail!(
                "proxies not synced after {timeout:?}: {missing:?} (logs in {})",
                crate::state_dir(&plan.mesh).join("logs").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for pod in &plan.pods {
        for (port, http1) in http_ports(plan, pod) {
            let addr = SocketAddr::new(pod.ip.into(), port);
            let ready = || match http1 {
                true => answers(addr, pod.spec.readiness_path()),
                // An HTTP/2-only server (gRPC) without a sidecar need not
                // speak HTTP/1.0: listening is ready.
                false => TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok(),
            };
            while !ready() {
                alive()?;
                if Instant::now() > deadline {
                    bail!(
                        "{} does not answer on {addr} after {timeout:?} (see {}.log)",
                        pod.spec.name,
                        pod.spec.name
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    alive()
}

/// The ports to probe a pod's app on (a gateway pod has no app), each
/// with whether a GET can probe it (through a sidecar, or plain HTTP);
/// an HTTP/2-only port of a pod without a sidecar is ready once it
/// accepts connections.
fn http_ports(plan: &Plan, pod: &Pod) -> Vec<(u16, bool)> {
    let workload = plan
        .registry
        .workloads
        .iter()
        .find(|w| w.name == pod.spec.name)
        .expect("planned");
    if workload.proxy == ProxyKind::Gateway {
        return Vec::new();
    }
    plan.registry
        .services_of(workload)
        .flat_map(|s| s.ports.iter())
        .filter(|p| Protocol::of(p).is_http())
        .filter_map(|p| {
            let port = weft_registry::target_port(p, &pod.spec.ports)?;
            // A sidecar answers HTTP/1 for its app whatever the port's
            // protocol; an app alone on an HTTP/2 port may not.
            let http1 = workload.proxy == ProxyKind::Sidecar || Protocol::of(p) == Protocol::Http;
            Some((port, http1))
        })
        .collect()
}

/// What the control plane reports of its proxies.
#[derive(Default)]
struct SyncStatus {
    /// Node ids whose listeners and clusters are ACKed at the sent version.
    synced: Vec<String>,
    /// (node id, xDS type, reason) of every NACK of the sent version.
    nacks: Vec<(String, String, String)>,
}

fn sync_status(api: SocketAddr) -> SyncStatus {
    let Some(body) =
        http_get(api, "/debug/syncz").and_then(|(code, body)| (code == 200).then_some(body))
    else {
        return SyncStatus::default();
    };
    let Ok(list) = serde_json::from_str::<Vec<serde_json::Value>>(&body) else {
        return SyncStatus::default();
    };
    let mut status = SyncStatus::default();
    for p in list
        .iter()
        .filter(|p| p["connected"].as_bool() == Some(true))
    {
        let id = p["node_id"].as_str().unwrap_or_default().to_string();
        for (kind, s) in p["types"].as_object().into_iter().flatten() {
            if s["state"] == "NACKED" {
                let reason = s["nack"].as_str().unwrap_or("no reason given");
                status
                    .nacks
                    .push((id.clone(), kind.clone(), reason.to_string()));
            }
        }
        if p["synced"] == true {
            status.synced.push(id);
        }
    }
    status
}

/// True once the app answers (through its sidecar) with anything but a 503.
fn answers(addr: SocketAddr, path: &str) -> bool {
    http_get(addr, path).is_some_and(|(code, _)| code != 503)
}

/// A minimal HTTP/1.0 GET, to avoid an HTTP client in this crate.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

fn print_table(plan: &Plan, dir: &Path) {
    println!("mesh {:?} is up\n", plan.mesh);
    println!(
        "{:<28} {:<14} {:<16} LABELS",
        "WORKLOAD", "NAMESPACE", "ADDRESS"
    );
    for pod in &plan.pods {
        let labels: Vec<String> = pod
            .spec
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "{:<28} {:<14} {:<16} {}",
            pod.spec.name,
            pod.spec.namespace,
            pod.ip,
            labels.join(",")
        );
    }
    println!(
        "{:<28} {:<14} {:<16} istio=ingressgateway",
        "istio-ingressgateway", "istio-system", plan.ingress
    );
    println!(
        "\n{:<28} {:<14} {:<16} PORTS",
        "SERVICE", "NAMESPACE", "VIP"
    );
    for s in plan.registry.services.iter().filter(|s| s.vip.is_some()) {
        let ports: Vec<String> = s
            .ports
            .iter()
            .map(|p| format!("{}/{}", p.port, p.name))
            .collect();
        println!(
            "{:<28} {:<14} {:<16} {}",
            s.name,
            s.namespace,
            s.vip.map(|v| v.to_string()).unwrap_or_default(),
            ports.join(",")
        );
    }
    for w in plan
        .registry
        .workloads
        .iter()
        .filter(|w| w.proxy == ProxyKind::NoSidecar)
    {
        let names = plan
            .pods
            .iter()
            .find(|p| p.spec.name == w.name && !p.spec.hostnames.is_empty())
            .map(|p| format!(", resolved as {}", p.spec.hostnames.join(", ")))
            .unwrap_or_default();
        println!("\nno sidecar:     {} (outside the mesh{names})", w.name);
    }
    for w in plan
        .registry
        .workloads
        .iter()
        .filter(|w| w.proxy == ProxyKind::Proxyless)
    {
        println!(
            "\nproxyless gRPC: {} (no sidecar; {}={})",
            w.name,
            crate::bootstrap::BOOTSTRAP_ENV,
            crate::bootstrap::path(dir, w).display()
        );
    }
    println!(
        "\ningress:        http://{}/   (Gateway port 80)",
        plan.ingress
    );
    println!(
        "                https://{}/  (Gateway port 443)",
        plan.ingress_tls
    );
    println!("                other Gateway ports from 1024 up: 127.0.0.1:<port>");
    println!(
        "control plane:  xDS {}  API/debug http://{}/debug/syncz",
        plan.addresses.xds, plan.addresses.api
    );
    println!(
        "dashboard:      http://{}/dashboard   (`weft dashboard --mesh {}`)",
        plan.addresses.api, plan.mesh
    );
    println!("logs:           {}", dir.join("logs").display());
    println!(
        "stop:           Ctrl-C, or `weft down --name {}`",
        plan.mesh
    );
}

/// How long `down` waits after SIGTERM for a process that records no
/// grace of its own (a proxy waits its drain and a second).
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Removes everything mesh `name` created: processes (by recorded PID and
/// by namespace), namespaces with their veths and iptables rules, the
/// bridge, the hosts files, the state directory. Safe to run twice.
pub fn down(name: &str) -> anyhow::Result<()> {
    let dir = crate::state_dir(name);
    let state = MeshState::load(&dir).unwrap_or_default();
    procs::stop_all(&state.processes, STOP_GRACE);
    let mut namespaces = state.netns.clone();
    for ns in net::namespaces_with_prefix(&format!("weft-{name}-")) {
        if !namespaces.contains(&ns) {
            namespaces.push(ns);
        }
    }
    let mut errors = Vec::new();
    for ns in &namespaces {
        procs::kill_namespace(ns);
        if net::namespaces_with_prefix(ns).iter().any(|n| n == ns) {
            if let Err(e) = net::ip(&["netns", "del", ns]) {
                errors.push(e.to_string());
            }
        }
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
    }
    procs::reap();
    for veth in net::mesh_veths(name) {
        if let Err(e) = net::delete_link(&veth) {
            errors.push(e.to_string());
        }
    }
    let bridge = if state.bridge.is_empty() {
        format!("wb-{name}")
    } else {
        state.bridge.clone()
    };
    if net::link_exists(&bridge) {
        if let Err(e) = net::delete_link(&bridge) {
            errors.push(e.to_string());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if !errors.is_empty() {
        bail!("mesh {name:?} partly removed: {}", errors.join("; "));
    }
    Ok(())
}
