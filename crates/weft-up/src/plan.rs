//! Address allocation: the mesh description becomes a registry with an
//! address for every pod and a virtual IP for every service.
//!
//! Mesh number N (0-255) owns 198.18.N.0/24 for the bridge (.1) and pods
//! (.10 up) and 198.19.N.0/24 for service VIPs, all inside 198.18.0.0/15, the
//! block reserved for benchmarks, so no real network is ever shadowed.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::bail;
use weft_registry::{
    ContainerPort, MeshSpec, ProxyKind, Registry, Service, ServicePort, Workload, WorkloadSpec,
};

#[derive(Debug, Clone)]
pub struct MeshAddresses {
    pub gateway: Ipv4Addr,
    pub xds: SocketAddr,
    pub api: SocketAddr,
    pub gateway_admin: SocketAddr,
}

impl MeshAddresses {
    pub fn new(subnet: u8) -> Self {
        let gateway = Ipv4Addr::new(198, 18, subnet, 1);
        MeshAddresses {
            gateway,
            xds: SocketAddr::new(gateway.into(), 15010),
            api: SocketAddr::new(gateway.into(), 15014),
            gateway_admin: SocketAddr::new(gateway.into(), 15000),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pod {
    pub spec: WorkloadSpec,
    pub ip: Ipv4Addr,
    pub netns: String,
    pub veth: String,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub mesh: String,
    pub bridge: String,
    pub addresses: MeshAddresses,
    pub pods: Vec<Pod>,
    pub registry: Registry,
    pub ingress: SocketAddr,
    /// Where Gateway port 443 is served (8443 by default).
    pub ingress_tls: SocketAddr,
    /// Each proxy's termination drain (set from the config directory when
    /// the mesh starts).
    pub drains: crate::drain::Drains,
}

/// Istio's ingress Service sends 80 to 8080 and 443 to 8443; the local
/// mesh keeps that distance when `--ingress-port` moves the first.
pub const TLS_PORT_OFFSET: u16 = 8443 - 8080;

pub const GATEWAY_NAME: &str = "istio-ingressgateway";
pub const GATEWAY_NAMESPACE: &str = "istio-system";

impl Plan {
    pub fn new(mesh: &str, subnet: u8, ingress_port: u16, spec: &MeshSpec) -> anyhow::Result<Plan> {
        if mesh.is_empty()
            || mesh.len() > 8
            || !mesh
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            bail!("mesh name {mesh:?}: 1-8 lower-case letters or digits (it becomes part of interface names)");
        }
        let pod_specs: Vec<WorkloadSpec> =
            spec.workloads.iter().flat_map(WorkloadSpec::pods).collect();
        if pod_specs.len() > 200 || spec.services.len() > 200 {
            bail!("at most 200 pods (replicas included) and 200 services fit one mesh's /24");
        }
        for w in &pod_specs {
            // Annotations a proxy is started with are read before any pod is.
            crate::up::stats_eviction(w)?;
        }
        let addresses = MeshAddresses::new(subnet);
        let pods: Vec<Pod> = pod_specs
            .iter()
            .enumerate()
            .map(|(i, w)| Pod {
                spec: w.clone(),
                ip: Ipv4Addr::new(198, 18, subnet, 10 + i as u8),
                netns: format!("weft-{mesh}-{}", w.name),
                // `wv<i>-<mesh>`: the mesh name ends it, so one mesh never matches another's.
                veth: format!("wv{i}-{mesh}"),
            })
            .collect();
        let mut services: Vec<Service> = spec
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| Service {
                name: s.name.clone(),
                namespace: s.namespace.clone(),
                vip: Some(IpAddr::V4(Ipv4Addr::new(198, 19, subnet, 10 + i as u8))),
                ports: s.ports.clone(),
                selector: s.selector.clone(),
                entry: None,
            })
            .collect();
        services.push(gateway_service(ingress_port));
        let mut workloads: Vec<Workload> = pods
            .iter()
            .map(|p| Workload {
                name: p.spec.name.clone(),
                namespace: p.spec.namespace.clone(),
                labels: p.spec.labels.clone(),
                service_account: p.spec.service_account.clone(),
                ip: IpAddr::V4(p.ip),
                ports: p.spec.ports.clone(),
                proxy: ProxyKind::of_pod(&p.spec.labels, &p.spec.annotations),
                locality: p.spec.locality.clone(),
                entry: None,
                owner: p.spec.owner.clone(),
                admin: None,
            })
            .collect();
        workloads.push(gateway_workload(ingress_port, addresses.gateway_admin));
        Ok(Plan {
            mesh: mesh.to_string(),
            bridge: format!("wb-{mesh}"),
            addresses,
            pods,
            registry: Registry {
                services,
                workloads,
            },
            ingress: SocketAddr::from(([127, 0, 0, 1], ingress_port)),
            ingress_tls: SocketAddr::from(([127, 0, 0, 1], tls_port(ingress_port)?)),
            drains: Default::default(),
        })
    }

    /// /etc/hosts for one pod: every service by every name a pod in that
    /// namespace may use, resolving to the service VIP, and the names of
    /// hosts outside the mesh (`hostnames`).
    pub fn hosts_file(&self, pod: &Pod) -> String {
        let mut out = format!("127.0.0.1 localhost\n{} {}\n", pod.ip, pod.spec.name);
        for other in self.pods.iter().filter(|p| !p.spec.hostnames.is_empty()) {
            out.push_str(&format!(
                "{} {}\n",
                other.ip,
                other.spec.hostnames.join(" ")
            ));
        }
        for s in &self.registry.services {
            if let Some(vip) = s.vip {
                out.push_str(&format!(
                    "{vip} {}\n",
                    s.aliases(&pod.spec.namespace).join(" ")
                ));
            }
        }
        out
    }

    pub fn gateway(&self) -> &Workload {
        self.registry
            .workloads
            .last()
            .expect("the gateway is always planned")
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn tls_port(ingress_port: u16) -> anyhow::Result<u16> {
    ingress_port
        .checked_add(TLS_PORT_OFFSET)
        .ok_or_else(|| anyhow::anyhow!("--ingress-port {ingress_port}: the TLS port {ingress_port}+{TLS_PORT_OFFSET} does not fit"))
}

/// The ingress gateway's Service, as Istio's demo profile defines it: port
/// 80 (and 8080) to the gateway's HTTP port, 443 to its HTTPS port, and
/// 31400 and 15443 to themselves.
fn gateway_service(ingress_port: u16) -> Service {
    let port = |name: &str, number: u16, target: u16| ServicePort {
        name: name.into(),
        port: number,
        target_port: Some(serde_json::json!(target)),
        app_protocol: None,
        protocol: Some("TCP".into()),
    };
    let tls = ingress_port.saturating_add(TLS_PORT_OFFSET);
    Service {
        name: GATEWAY_NAME.into(),
        namespace: GATEWAY_NAMESPACE.into(),
        vip: None,
        ports: vec![
            port("http2", 80, ingress_port),
            port("http", 8080, ingress_port),
            port("https", 443, tls),
            // The demo profile's TCP and TLS ports, served at their own
            // numbers (Istio's TCP traffic-shifting task uses 31400).
            port("tcp", 31400, 31400),
            port("tls", 15443, 15443),
        ],
        selector: labels(&[("istio", "ingressgateway")]),
        entry: None,
    }
}

fn gateway_workload(ingress_port: u16, admin: SocketAddr) -> Workload {
    Workload {
        name: GATEWAY_NAME.into(),
        namespace: GATEWAY_NAMESPACE.into(),
        labels: labels(&[("istio", "ingressgateway"), ("app", GATEWAY_NAME)]),
        service_account: "istio-ingressgateway-service-account".into(),
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ports: vec![
            ContainerPort {
                container_port: ingress_port,
                name: "http".into(),
                protocol: None,
            },
            ContainerPort {
                container_port: ingress_port.saturating_add(TLS_PORT_OFFSET),
                name: "https".into(),
                protocol: None,
            },
        ],
        proxy: ProxyKind::Gateway,
        locality: None,
        entry: None,
        owner: None,
        admin: Some(admin),
    }
}
