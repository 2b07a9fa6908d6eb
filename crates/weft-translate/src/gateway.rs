//! A gateway's listeners and routes, from the Gateways that select it and
//! the VirtualServices bound to those Gateways.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{virtual_host, RouteConfiguration, VirtualHost};
use envoy_types::pb::google::protobuf::BoolValue;
use weft_config::networking::{Server, VirtualService};
use weft_config::Resource;
use weft_registry::Workload;

use crate::envoy::{gateway_hcm, socket, tls_inspector};
use crate::gateway_tls;
use crate::routes::{virtual_service_routes, Context, Scope};
use crate::tls_routes::{self, SniChains};
use crate::{Inputs, ProxyResources};

/// A Gateway server, resolved to the port the gateway proxy really binds.
pub(crate) struct BoundServer<'a> {
    pub gateway: &'a Resource,
    pub server: &'a Server,
    /// Its place in `spec.servers`, to name it in problems.
    pub index: usize,
}

impl BoundServer<'_> {
    /// Whether one of the server's hosts admits VirtualService host `host`.
    pub fn admits(&self, host: &str) -> bool {
        self.server.hosts.iter().any(|sh| host_admitted(sh, host))
    }

    /// Whether VirtualService `vs` (in `ns`) is bound to this server: it
    /// names the server's Gateway and has a host the server admits.
    pub fn binds(&self, vs: &VirtualService, ns: &str) -> bool {
        vs.gateways
            .iter()
            .any(|g| names_gateway(g, ns, self.gateway))
            && vs.hosts.iter().any(|h| self.admits(h))
    }

    /// The scope of this server's routes on the bound `port`.
    pub fn scope<'a>(
        &'a self,
        inputs: &Inputs<'a>,
        proxy: &'a Workload,
        ns: &'a str,
        port: u16,
    ) -> Scope<'a> {
        Scope {
            registry: inputs.registry,
            config: inputs.config,
            namespace: ns,
            port,
            match_ports: vec![self.server.port.number],
            proxy,
            context: Context::Gateways(vec![self.gateway]),
        }
    }

    /// A problem with this server, which is therefore left out.
    pub fn problem(&self, what: &str) -> String {
        format!(
            "Gateway {}/{}: spec.servers[{}]: {what}; the server is left out",
            self.gateway.namespace(),
            self.gateway.meta.name,
            self.index
        )
    }
}

/// What one bound port serves: plaintext HTTP servers (merged into one
/// route table, as istiod merges them), TLS-terminating HTTPS servers (a
/// filter chain and route table each, chosen by SNI), TLS passthrough
/// servers (chains from VirtualService `tls[]` routes) and TCP servers
/// (plaintext or TLS-terminating, routed by VirtualService `tcp[]`).
#[derive(Default)]
struct PortServers<'a> {
    plain: Vec<BoundServer<'a>>,
    https: Vec<BoundServer<'a>>,
    passthrough: Vec<BoundServer<'a>>,
    tcp: Vec<BoundServer<'a>>,
}

/// How a server's port protocol and TLS mode are served.
enum Serving {
    Plain,
    Https,
    Passthrough,
    Tcp,
}

fn serving(server: &Server) -> Option<Serving> {
    let mode = server.tls.as_ref().and_then(|t| t.mode.as_deref());
    let passthrough = matches!(mode, None | Some("PASSTHROUGH"));
    Some(match server.port.protocol.to_ascii_uppercase().as_str() {
        "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => Serving::Plain,
        "HTTPS" | "TLS" if passthrough => Serving::Passthrough,
        "HTTPS" => Serving::Https,
        "TLS" | "TCP" | "MONGO" | "MYSQL" | "REDIS" => Serving::Tcp,
        _ => return None,
    })
}

pub(crate) fn build(inputs: &Inputs, proxy: &Workload, out: &mut ProxyResources) {
    let mut by_port: BTreeMap<u16, PortServers> = BTreeMap::new();
    for gateway in selecting_gateways(inputs, proxy) {
        let spec = gateway.as_gateway().expect("filtered to gateways");
        for (i, server) in spec.servers.iter().enumerate() {
            let port = bind_port(inputs, proxy, server.port.number);
            let bound = BoundServer {
                gateway,
                server,
                index: i,
            };
            let servers = by_port.entry(port).or_default();
            match serving(server) {
                Some(Serving::Plain) => servers.plain.push(bound),
                Some(Serving::Https) => servers.https.push(bound),
                Some(Serving::Passthrough) => servers.passthrough.push(bound),
                Some(Serving::Tcp) => servers.tcp.push(bound),
                None => out.problems.push(bound.problem(&format!(
                    "port.protocol {} is not served",
                    server.port.protocol
                ))),
            }
        }
    }
    for (port, servers) in by_port {
        port_listener(inputs, proxy, port, servers, out);
    }
}

/// One port's listener. Each connection is served once: a name claimed by
/// an earlier server stays with it, and plaintext HTTP, then the first TCP
/// server, takes connections no name picks.
fn port_listener(
    inputs: &Inputs,
    proxy: &Workload,
    port: u16,
    servers: PortServers,
    out: &mut ProxyResources,
) {
    let mut chains = SniChains::default();
    let hops = trusted_proxies(inputs);
    if !servers.plain.is_empty() {
        let route_name = format!("http.{port}");
        chains.push(&[], http_chain(port, &route_name, hops));
        out.routes
            .push(route_table(route_name, inputs, proxy, &servers.plain, port));
    }
    for bound in servers.https {
        let route_name = gateway_tls::route_name(&bound);
        let hcm = gateway_hcm(&format!("outbound_0.0.0.0_{port}"), &route_name, hops);
        let chain = gateway_tls::terminating_chain(inputs, proxy, &bound, vec![hcm], out);
        if add_chain(&mut chains, &bound, chain, out) {
            out.routes
                .push(route_table(route_name, inputs, proxy, &[bound], port));
        }
    }
    for bound in &servers.tcp {
        let chain = tcp_filter(inputs, proxy, bound, port).and_then(|filter| {
            if bound.server.port.protocol.eq_ignore_ascii_case("TLS") {
                gateway_tls::terminating_chain(inputs, proxy, bound, vec![filter], out)
            } else {
                Ok(FilterChain {
                    filters: vec![filter],
                    ..Default::default()
                })
            }
        });
        add_chain(&mut chains, bound, chain, out);
    }
    tls_routes::gateway_chains(inputs, proxy, &servers.passthrough, port, &mut chains);
    let chains = chains.into_chains();
    if chains.is_empty() {
        for bound in &servers.passthrough {
            out.problems.push(bound.problem(
                "no VirtualService bound to this Gateway has a tls route whose sniHosts the server's hosts admit",
            ));
        }
        return;
    }
    let inspect_tls = chains.iter().any(|c| {
        c.transport_socket.is_some()
            || c.filter_chain_match
                .as_ref()
                .is_some_and(|m| !m.server_names.is_empty() || m.transport_protocol == "tls")
    });
    out.listeners.push(Listener {
        name: format!("0.0.0.0_{port}"),
        address: Some(socket("0.0.0.0", u32::from(port))),
        listener_filters: if inspect_tls {
            vec![tls_inspector()]
        } else {
            Vec::new()
        },
        filter_chains: chains,
        ..Default::default()
    });
}

/// The mesh's `defaultConfig.gatewayTopology.numTrustedProxies`: how many
/// proxies in front of the gateways append to `x-forwarded-for`.
fn trusted_proxies(inputs: &Inputs) -> u32 {
    inputs
        .mesh()
        .other
        .get("defaultConfig")
        .and_then(|d| d.get("gatewayTopology"))
        .and_then(|t| t.get("numTrustedProxies"))
        .and_then(weft_config::mesh_config::uint)
        .unwrap_or(0)
}

fn http_chain(port: u16, route_name: &str, hops: u32) -> FilterChain {
    FilterChain {
        filters: vec![gateway_hcm(
            &format!("outbound_0.0.0.0_{port}"),
            route_name,
            hops,
        )],
        ..Default::default()
    }
}

/// Adds a server's chain, or says why it is left out; true when added.
fn add_chain(
    chains: &mut SniChains,
    bound: &BoundServer,
    chain: Result<FilterChain, String>,
    out: &mut ProxyResources,
) -> bool {
    let problem = match chain {
        Ok(chain) => {
            let names = chain
                .filter_chain_match
                .as_ref()
                .map(|m| m.server_names.clone())
                .unwrap_or_default();
            if chains.push(&names, chain) {
                return true;
            }
            "an earlier server on this port already serves its hosts".to_string()
        }
        Err(problem) => problem,
    };
    out.problems.push(bound.problem(&problem));
    false
}

/// The tcp_proxy of a TCP (or TLS-terminating) server: the first `tcp[]`
/// route, oldest VirtualService first, that is bound to its Gateway, has a
/// host the server admits and matches its port.
fn tcp_filter(
    inputs: &Inputs,
    proxy: &Workload,
    bound: &BoundServer,
    port: u16,
) -> Result<Filter, String> {
    inputs
        .virtual_services(|vs| !vs.tcp.is_empty())
        .into_iter()
        .find_map(|resource| {
            let vs = resource.as_virtual_service().expect("filtered");
            let ns = resource.namespace();
            if !bound.binds(vs, ns) {
                return None;
            }
            let scope = bound.scope(inputs, proxy, ns, port);
            let route = crate::tcp::gateway_route(vs, &scope)?;
            Some(crate::tcp::route_filter(&route.route, &scope))
        })
        .ok_or_else(|| {
            "no VirtualService bound to this Gateway has a tcp route for its port and hosts"
                .to_string()
        })
}

fn route_table(
    name: String,
    inputs: &Inputs,
    proxy: &Workload,
    servers: &[BoundServer],
    port: u16,
) -> RouteConfiguration {
    RouteConfiguration {
        name,
        virtual_hosts: virtual_hosts(inputs, proxy, servers, port),
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

fn selecting_gateways<'a>(
    inputs: &'a Inputs,
    proxy: &'a Workload,
) -> impl Iterator<Item = &'a Resource> {
    inputs.config.iter().filter(|r| {
        r.as_gateway().is_some_and(|g| {
            !g.selector.is_empty()
                && g.selector
                    .iter()
                    .all(|(k, v)| proxy.labels.get(k) == Some(v))
        })
    })
}

/// A Gateway names the gateway *service* port (80); the proxy binds the
/// service's target port (8080), as Istio's ingress gateway does.
fn bind_port(inputs: &Inputs, proxy: &Workload, number: u32) -> u16 {
    let number = u16::try_from(number).unwrap_or(0);
    inputs
        .registry
        .services_of(proxy)
        .find_map(|s| s.port(number))
        .and_then(|p| weft_registry::target_port(p, &proxy.ports))
        .unwrap_or(number)
}

/// VirtualServices bound to any of these servers' Gateways, one virtual host
/// per VirtualService host that the server's hosts admit.
fn virtual_hosts(
    inputs: &Inputs,
    proxy: &Workload,
    servers: &[BoundServer],
    port: u16,
) -> Vec<VirtualHost> {
    let mut hosts: BTreeMap<String, VirtualHost> = BTreeMap::new();
    // Routes of several VirtualServices for one host follow one another
    // oldest first, as istiod merges them.
    for resource in inputs.virtual_services(|_| true) {
        let Some(vs) = resource.as_virtual_service() else {
            continue;
        };
        let ns = resource.namespace();
        let bound: Vec<&BoundServer> = servers
            .iter()
            .filter(|b| vs.gateways.iter().any(|g| names_gateway(g, ns, b.gateway)))
            .collect();
        if bound.is_empty() {
            continue;
        }
        for host in &vs.hosts {
            if !bound.iter().any(|b| b.admits(host)) {
                continue;
            }
            let vh = hosts.entry(host.clone()).or_insert_with(|| VirtualHost {
                name: format!("{host}:{port}"),
                domains: domains(host, port),
                ..Default::default()
            });
            // httpsRedirect: plaintext requests for the host get a 301.
            if bound.iter().any(|b| {
                b.server
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.https_redirect == Some(true))
                    && b.admits(host)
            }) {
                vh.require_tls = virtual_host::TlsRequirementType::All as i32;
            }
            let scope = Scope {
                registry: inputs.registry,
                config: inputs.config,
                namespace: ns,
                port,
                match_ports: bound.iter().map(|b| b.server.port.number).collect(),
                proxy,
                context: Context::Gateways(bound.iter().map(|b| b.gateway).collect()),
            };
            vh.routes.extend(virtual_service_routes(vs, &scope));
        }
    }
    hosts.into_values().collect()
}

fn domains(host: &str, port: u16) -> Vec<String> {
    if host == "*" {
        vec!["*".into()]
    } else {
        vec![host.to_string(), format!("{host}:{port}")]
    }
}

/// `gateways: [bookinfo-gateway]` names a Gateway in the VirtualService's
/// namespace; `istio-system/gw` names one elsewhere.
pub(crate) fn names_gateway(reference: &str, vs_namespace: &str, gateway: &Resource) -> bool {
    let (ns, name) = reference
        .split_once('/')
        .unwrap_or((vs_namespace, reference));
    ns == gateway.namespace() && name == gateway.meta.name
}

/// Server hosts may be `*`, `ns/host`, `*/host` or `*.suffix`.
fn host_admitted(server_host: &str, vs_host: &str) -> bool {
    let pattern = server_host.split_once('/').map_or(server_host, |(_, h)| h);
    pattern == "*"
        || pattern == vs_host
        || vs_host == "*"
        || pattern
            .strip_prefix('*')
            .is_some_and(|suffix| vs_host.ends_with(suffix))
}
