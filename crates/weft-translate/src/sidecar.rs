//! A sidecar's listeners and routes: `virtualOutbound` (15001) hands captured
//! connections to per-port listeners; `virtualInbound` (15006) forwards to
//! the app on localhost.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::listener::v3::{
    listener_filter, Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::config::route::v3::{
    route, DirectResponseAction, Route, RouteConfiguration, VirtualHost,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use weft_registry::{Protocol, Service, Workload};

use crate::clusters::{cluster_name, BLACKHOLE, PASSTHROUGH};
use crate::envoy::{hcm_rds, socket, tcp_proxy, tls_inspector};
use crate::routes::{route_to_cluster, virtual_service_routes, DefaultRoute, Scope};
use crate::{Inputs, ProxyResources};

pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
pub const VIRTUAL_INBOUND: &str = "virtualInbound";
const OUTBOUND_PORT: u32 = 15001;

/// `outbound`: what the proxy's Sidecar resource lets it see; `all`: the
/// whole mesh (inbound is not scoped).
pub(crate) fn build(outbound: &Inputs, all: &Inputs, proxy: &Workload, out: &mut ProxyResources) {
    let outside = Outside::of(outbound);
    out.listeners.push(virtual_outbound(outside));
    outbound_listeners(outbound, proxy, out);
    crate::inbound::build(all, proxy, out);
}

pub(crate) fn original_dst_filter() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.original_dst".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(
            envoy_types::util::pack_any(
                envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst {},
            ),
        )),
        ..Default::default()
    }
}

/// Where a sidecar sends traffic for hosts the registry does not know:
/// mesh config `outboundTrafficPolicy.mode` ALLOW_ANY (Istio's default)
/// lets it out as it is, REGISTRY_ONLY stops it.
#[derive(Clone, Copy, PartialEq)]
enum Outside {
    AllowAny,
    RegistryOnly,
}

impl Outside {
    fn of(inputs: &Inputs) -> Outside {
        if inputs.mesh().registry_only() {
            Outside::RegistryOnly
        } else {
            Outside::AllowAny
        }
    }

    /// The cluster unknown TCP destinations go to.
    fn cluster(self) -> &'static str {
        match self {
            Outside::AllowAny => PASSTHROUGH,
            Outside::RegistryOnly => BLACKHOLE,
        }
    }

    /// The last virtual host of an outbound route table, for hosts no
    /// service claims: `allow_any` passes them through, `block_all`
    /// answers 502, as istiod writes them.
    fn virtual_host(self) -> VirtualHost {
        let route = match self {
            Outside::AllowAny => {
                route_to_cluster("allow_any", PASSTHROUGH, DefaultRoute::Passthrough)
            }
            Outside::RegistryOnly => Route {
                name: "block_all".into(),
                r#match: Some(crate::routes::catch_all()),
                action: Some(route::Action::DirectResponse(DirectResponseAction {
                    status: 502,
                    ..Default::default()
                })),
                ..Default::default()
            },
        };
        VirtualHost {
            name: route.name.clone(),
            domains: vec!["*".into()],
            routes: vec![route],
            ..Default::default()
        }
    }
}

fn virtual_outbound(outside: Outside) -> Listener {
    let cluster = outside.cluster();
    Listener {
        name: VIRTUAL_OUTBOUND.into(),
        address: Some(socket("0.0.0.0", OUTBOUND_PORT)),
        use_original_dst: Some(BoolValue { value: true }),
        filter_chains: vec![FilterChain {
            name: cluster.into(),
            filters: vec![tcp_proxy(cluster, cluster)],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// HTTP ports share one `0.0.0.0_PORT` listener and one route table named by
/// the port; TCP ports get a listener on the service's VIP; a port with no
/// protocol declared gets a VIP listener that sniffs each connection: HTTP
/// goes through the port's route table, the rest through TCP proxying.
fn outbound_listeners(inputs: &Inputs, proxy: &Workload, out: &mut ProxyResources) {
    let mut http_ports: BTreeMap<u16, Vec<&Service>> = BTreeMap::new();
    let mut route_ports: BTreeMap<u16, Vec<&Service>> = BTreeMap::new();
    let mut on_every_address: BTreeMap<u16, Vec<&Service>> = BTreeMap::new();
    for service in &inputs.registry.services {
        for port in &service.ports {
            let protocol = Protocol::of(port);
            if protocol.is_http() {
                http_ports.entry(port.port).or_default().push(service);
                route_ports.entry(port.port).or_default().push(service);
                continue;
            }
            let Some(vip) = service.vip else {
                match &service.entry {
                    Some(e) if e.ranges_only => out.problems.push(format!(
                        "ServiceEntry host {} port {}: address ranges (CIDRs) are not served yet; the port is left out",
                        service.name, port.port
                    )),
                    Some(_) => on_every_address.entry(port.port).or_default().push(service),
                    None => {}
                }
                continue;
            };
            let mut listener = Listener {
                name: format!("{vip}_{}", port.port),
                address: Some(socket(&vip.to_string(), u32::from(port.port))),
                bind_to_port: Some(BoolValue { value: false }),
                ..Default::default()
            };
            if protocol == Protocol::Tls {
                tls_listener(inputs, proxy, service, port.port, vip, &mut listener);
                out.listeners.push(listener);
                continue;
            }
            listener.filter_chains.push(FilterChain {
                filters: vec![crate::tcp::outbound_filter(
                    inputs,
                    proxy,
                    service,
                    port.port,
                    Some(vip),
                )],
                ..Default::default()
            });
            if protocol == Protocol::Auto {
                route_ports.entry(port.port).or_default().push(service);
                let http = hcm_rds(
                    &format!("outbound_{vip}_{}", port.port),
                    &port.port.to_string(),
                );
                sniffing(&mut listener, None, http);
            }
            out.listeners.push(listener);
        }
    }
    for port in http_ports.keys() {
        out.listeners.push(Listener {
            name: format!("0.0.0.0_{port}"),
            address: Some(socket("0.0.0.0", u32::from(*port))),
            bind_to_port: Some(BoolValue { value: false }),
            filter_chains: vec![FilterChain {
                filters: vec![hcm_rds(
                    &format!("outbound_0.0.0.0_{port}"),
                    &port.to_string(),
                )],
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    for (port, services) in on_every_address {
        if http_ports.contains_key(&port) {
            let hosts: Vec<String> = services.iter().map(|s| s.fqdn()).collect();
            out.problems.push(format!(
                "ServiceEntry hosts {} on port {port}: the port serves HTTP for other services, so a non-HTTP entry there needs `addresses`; left out",
                hosts.join(", ")
            ));
            continue;
        }
        out.listeners.push(entry_listener(
            inputs,
            proxy,
            port,
            &services,
            &mut out.problems,
        ));
    }
    for (port, services) in route_ports {
        out.routes
            .push(outbound_routes(inputs, proxy, port, &services));
    }
}

/// `0.0.0.0_PORT` for the TLS and TCP ports of ServiceEntries that
/// declare no addresses, as istiod builds it: TLS hosts are told apart by
/// SNI; a TCP host takes every other connection to the port (the first
/// such entry; a second one cannot be told apart and is left out).
fn entry_listener(
    inputs: &Inputs,
    proxy: &Workload,
    port: u16,
    services: &[&Service],
    problems: &mut Vec<String>,
) -> Listener {
    let (tls, other): (Vec<&Service>, Vec<&Service>) = services.iter().partition(|s| {
        s.port(port)
            .is_some_and(|p| Protocol::of(p) == Protocol::Tls)
    });
    let mut listener = Listener {
        name: format!("0.0.0.0_{port}"),
        address: Some(socket("0.0.0.0", u32::from(port))),
        bind_to_port: Some(BoolValue { value: false }),
        filter_chains: crate::tls_routes::entry_chains(inputs, proxy, &tls, port),
        ..Default::default()
    };
    if !listener.filter_chains.is_empty() {
        listener.listener_filters.push(tls_inspector());
    }
    let fallback = match other.split_first() {
        Some((first, rest)) => {
            for s in rest {
                problems.push(format!(
                    "ServiceEntry host {} port {port}: {} already takes every address on this port (give the entries `addresses`); left out",
                    s.fqdn(),
                    first.fqdn()
                ));
            }
            crate::tcp::outbound_filter(inputs, proxy, first, port, None)
        }
        None => {
            let cluster = Outside::of(inputs).cluster();
            tcp_proxy(cluster, cluster)
        }
    };
    listener.filter_chains.push(FilterChain {
        filters: vec![fallback],
        ..Default::default()
    });
    listener
}

/// A TLS port's listener, as istiod builds it: chains by SNI from the
/// VirtualServices' `tls[]` routes, and for other names the passthrough
/// (the service's own cluster when no route applies at all). `tcp[]`
/// routes do not apply to TLS ports.
fn tls_listener(
    inputs: &Inputs,
    proxy: &Workload,
    service: &Service,
    port: u16,
    vip: std::net::IpAddr,
    listener: &mut Listener,
) {
    let chains = crate::tls_routes::sidecar_chains(inputs, proxy, service, port, vip);
    let (name, cluster) = if chains.is_empty() {
        let cluster = cluster_name("outbound", port, "", &service.fqdn());
        (cluster.clone(), cluster)
    } else {
        listener.listener_filters.push(tls_inspector());
        let cluster = Outside::of(inputs).cluster();
        (cluster.to_string(), cluster.to_string())
    };
    listener.filter_chains = chains;
    listener.filter_chains.push(FilterChain {
        filters: vec![tcp_proxy(&name, &cluster)],
        ..Default::default()
    });
}

/// Istio's protocol sniffing on a listener: the `http_inspector` listener
/// filter, and ahead of the listener's (TCP) chains an HTTP chain for
/// plaintext HTTP/1.1 and h2c (on `port`, when the listener serves several).
pub(crate) fn sniffing(listener: &mut Listener, port: Option<u16>, http: Filter) {
    let inspector = ListenerFilter {
        name: "envoy.filters.listener.http_inspector".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(
            envoy_types::util::pack_any(
                envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector {},
            ),
        )),
        ..Default::default()
    };
    if !listener
        .listener_filters
        .iter()
        .any(|f| f.name == inspector.name)
    {
        listener.listener_filters.push(inspector);
    }
    let chain = FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            destination_port: port.map(|p| UInt32Value {
                value: u32::from(p),
            }),
            application_protocols: vec!["http/1.1".into(), "http/1.0".into(), "h2c".into()],
            transport_protocol: "raw_buffer".into(),
            ..Default::default()
        }),
        filters: vec![http],
        ..Default::default()
    };
    listener.filter_chains.insert(0, chain);
}

fn outbound_routes(
    inputs: &Inputs,
    proxy: &Workload,
    port: u16,
    services: &[&Service],
) -> RouteConfiguration {
    let mut virtual_hosts: Vec<VirtualHost> = services
        .iter()
        .map(|s| service_virtual_host(inputs, proxy, s, port))
        .collect();
    virtual_hosts.extend(virtual_service_hosts(inputs, proxy, port, &virtual_hosts));
    virtual_hosts.push(Outside::of(inputs).virtual_host());
    RouteConfiguration {
        name: port.to_string(),
        virtual_hosts,
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// Virtual hosts for the hosts of mesh VirtualServices that no service
/// on `port` claims (hosts outside the registry, and services that have
/// no such port), as istiod builds them: the host (a short name in the
/// VirtualService's namespace), and with the port, as domains; the
/// VirtualService's routes that fit the port. A
/// domain one of `taken` (or an older VirtualService) has stays with it,
/// as in istiod. Istio's "Egress Gateways with TLS Origination" task sends
/// `http://my-nginx.mesh-external.svc.cluster.local` (a service on 443
/// only) on port 80 through such a host.
fn virtual_service_hosts(
    inputs: &Inputs,
    proxy: &Workload,
    port: u16,
    taken: &[VirtualHost],
) -> Vec<VirtualHost> {
    let mut claimed: std::collections::BTreeSet<String> = taken
        .iter()
        .flat_map(|vh| vh.domains.iter().cloned())
        .chain(["*".to_string()])
        .collect();
    let on_port: Vec<String> = taken.iter().map(|vh| vh.name.clone()).collect();
    let mut out = Vec::new();
    for resource in mesh_virtual_services(inputs) {
        let vs = resource
            .as_virtual_service()
            .expect("filtered to virtual services");
        let ns = resource.namespace();
        let unclaimed: Vec<&String> = vs
            .hosts
            .iter()
            .filter(|h| {
                let fqdn = inputs.registry.qualify(h, ns);
                !on_port.contains(&format!("{fqdn}:{port}"))
            })
            .collect();
        if unclaimed.is_empty() {
            continue;
        }
        let scope = Scope::sidecar(inputs, proxy, ns, port);
        let routes = virtual_service_routes(vs, &scope);
        if routes.is_empty() {
            continue;
        }
        for host in unclaimed {
            // istiod takes a short name (no dot) in the VirtualService's
            // namespace, any other name as written.
            let host = if host.contains('.') || host == "*" {
                host.clone()
            } else {
                inputs.registry.qualify(host, ns)
            };
            let domains = vec![format!("{host}:{port}"), host.clone()];
            if domains.iter().any(|d| claimed.contains(d)) {
                continue;
            }
            claimed.extend(domains.iter().cloned());
            out.push(VirtualHost {
                name: format!("{host}:{port}"),
                domains,
                routes: routes.clone(),
                ..Default::default()
            });
        }
    }
    out
}

pub(crate) fn service_virtual_host(
    inputs: &Inputs,
    proxy: &Workload,
    service: &Service,
    port: u16,
) -> VirtualHost {
    let mut domains = Vec::new();
    for alias in service.aliases(&proxy.namespace) {
        domains.push(format!("{alias}:{port}"));
        domains.push(alias);
    }
    if let Some(vip) = service.vip {
        domains.push(format!("{vip}:{port}"));
        domains.push(vip.to_string());
    }
    let fqdn = service.fqdn();
    let mut routes = Vec::new();
    for resource in mesh_virtual_services(inputs) {
        let vs = resource
            .as_virtual_service()
            .expect("filtered to virtual services");
        let ns = resource.namespace();
        if vs
            .hosts
            .iter()
            .any(|h| inputs.registry.qualify(h, ns) == fqdn)
        {
            let scope = Scope::sidecar(inputs, proxy, ns, port);
            routes.extend(virtual_service_routes(vs, &scope));
        }
    }
    if routes.is_empty() {
        let mut route = route_to_cluster(
            "default",
            &cluster_name("outbound", port, "", &fqdn),
            DefaultRoute::Outbound,
        );
        // The service's DestinationRule may still ask for consistent hashing.
        let scope = Scope::sidecar(inputs, proxy, &service.namespace, port);
        let itself = weft_config::networking::Destination {
            host: fqdn.clone(),
            ..Default::default()
        };
        if let Some(envoy_types::pb::envoy::config::route::v3::route::Action::Route(a)) =
            &mut route.action
        {
            a.hash_policy = crate::hashing::route_hash_policy(std::iter::once(&itself), &scope);
        }
        routes.push(route);
    }
    VirtualHost {
        name: format!("{fqdn}:{port}"),
        domains,
        routes,
        ..Default::default()
    }
}

/// VirtualServices that apply to sidecars (no `gateways`, or `mesh` among
/// them), oldest first: for a host several name, the oldest wins, as in
/// Istio.
pub(crate) fn mesh_virtual_services<'a>(
    inputs: &'a Inputs,
) -> impl Iterator<Item = &'a weft_config::Resource> {
    inputs
        .virtual_services(|vs| vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh"))
        .into_iter()
}

/// The ports the app serves: its container ports and the target ports of the
/// services that select it.
pub(crate) fn inbound_ports(inputs: &Inputs, proxy: &Workload) -> BTreeMap<u16, Protocol> {
    let mut ports = BTreeMap::new();
    for service in inputs.registry.services_of(proxy) {
        for port in &service.ports {
            if let Some(target) = weft_registry::target_port(port, &proxy.ports) {
                ports.insert(target, Protocol::of(port));
            }
        }
    }
    for cp in &proxy.ports {
        ports.entry(cp.container_port).or_insert(Protocol::Tcp);
    }
    ports
}
