//! An ingress gateway's listeners and routes, from the Gateways that select
//! it and the VirtualServices bound to those Gateways.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{virtual_host, RouteConfiguration, VirtualHost};
use envoy_types::pb::google::protobuf::BoolValue;
use weft_config::networking::Server;
use weft_config::Resource;
use weft_registry::Workload;

use crate::envoy::{hcm_rds, socket, tls_inspector};
use crate::gateway_tls;
use crate::routes::{virtual_service_routes, Context, Scope};
use crate::{Inputs, ProxyResources};

/// A Gateway server, resolved to the port the gateway proxy really binds.
pub(crate) struct BoundServer<'a> {
    pub gateway: &'a Resource,
    pub server: &'a Server,
}

/// What one bound port serves: plaintext HTTP servers (merged into one
/// route table, as istiod merges them) and TLS-terminating ones (a filter
/// chain and route table each, chosen by SNI).
#[derive(Default)]
struct PortServers<'a> {
    plain: Vec<BoundServer<'a>>,
    tls: Vec<(BoundServer<'a>, FilterChain)>,
}

pub(crate) fn build(inputs: &Inputs, proxy: &Workload, out: &mut ProxyResources) {
    let mut by_port: BTreeMap<u16, PortServers> = BTreeMap::new();
    for gateway in selecting_gateways(inputs, proxy) {
        let spec = gateway.as_gateway().expect("filtered to gateways");
        for (i, server) in spec.servers.iter().enumerate() {
            let port = bind_port(inputs, proxy, server.port.number);
            let bound = BoundServer { gateway, server };
            match server.port.protocol.to_ascii_uppercase().as_str() {
                "HTTP" | "HTTP2" | "GRPC" => by_port.entry(port).or_default().plain.push(bound),
                "HTTPS" => match gateway_tls::terminating_chain(inputs, proxy, &bound, port, out) {
                    Ok(chain) => by_port.entry(port).or_default().tls.push((bound, chain)),
                    Err(problem) => out.problems.push(format!(
                        "Gateway {}/{}: spec.servers[{i}]: {problem}; the server is left out",
                        gateway.namespace(),
                        gateway.meta.name
                    )),
                },
                // TLS/TCP servers: the config crate warns that they are not enforced.
                _ => {}
            }
        }
    }
    for (port, servers) in by_port {
        let mut chains = Vec::new();
        if !servers.plain.is_empty() {
            let route_name = format!("http.{port}");
            chains.push(FilterChain {
                filters: vec![hcm_rds(&format!("outbound_0.0.0.0_{port}"), &route_name)],
                ..Default::default()
            });
            out.routes
                .push(route_table(route_name, inputs, proxy, &servers.plain, port));
        }
        let tls = !servers.tls.is_empty();
        for (bound, chain) in servers.tls {
            let route_name = gateway_tls::route_name(&bound);
            out.routes
                .push(route_table(route_name, inputs, proxy, &[bound], port));
            chains.push(chain);
        }
        out.listeners.push(Listener {
            name: format!("0.0.0.0_{port}"),
            address: Some(socket("0.0.0.0", u32::from(port))),
            listener_filters: if tls {
                vec![tls_inspector()]
            } else {
                Vec::new()
            },
            filter_chains: chains,
            ..Default::default()
        });
    }
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
            if !bound
                .iter()
                .any(|b| b.server.hosts.iter().any(|sh| host_admitted(sh, host)))
            {
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
                    && b.server.hosts.iter().any(|sh| host_admitted(sh, host))
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
