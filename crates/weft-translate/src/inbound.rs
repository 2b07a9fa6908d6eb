//! A sidecar's `virtualInbound` (15006): per port the app serves (or per
//! port its Sidecar resource's `ingress` lists, to its `defaultEndpoint`),
//! the chains PeerAuthentication's mode asks for, then the passthrough
//! chains for ports nothing names.
//!
//! - Plaintext (PERMISSIVE, DISABLE): HTTP for declared HTTP ports, TCP
//!   for the rest, and for ports with no declared protocol both, chosen
//!   by sniffing.
//! - mTLS (PERMISSIVE, STRICT): chains for a ClientHello offering a
//!   sidecar's `istio*` ALPN, terminating the mesh TLS. On ports with no
//!   declared protocol the client's ALPN tells HTTP (`istio-http/1.1`,
//!   `istio-h2`) from TCP (`istio`), as the bytes inside cannot be
//!   sniffed before the handshake.
//! - STRICT: anything else on the port is closed by a deny-all network
//!   RBAC chain (`mtls-strict`), so it never falls through to another.

use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener,
};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::google::protobuf::UInt32Value;
use weft_registry::{Protocol, Workload};

use crate::clusters::{cluster_name, static_cluster, INBOUND_PASSTHROUGH};
use crate::envoy::{hcm_inline, socket, tcp_proxy, tls_inspector};
use crate::mtls::{self, Mode, ALPN_HTTP, ALPN_TCP};
use crate::routes::{route_to_cluster, DefaultRoute};
use crate::sidecar::{inbound_ports, original_dst_filter, sniffing, VIRTUAL_INBOUND};
use crate::{Inputs, ProxyResources};

const INBOUND_PORT: u32 = 15006;

pub(crate) fn build(inputs: &Inputs, proxy: &Workload, out: &mut ProxyResources) {
    let mut listener = Listener {
        name: VIRTUAL_INBOUND.into(),
        address: Some(socket("0.0.0.0", INBOUND_PORT)),
        listener_filters: vec![original_dst_filter()],
        ..Default::default()
    };
    let mut sniffed = Vec::new();
    let ports = match crate::scope::ingress(inputs, proxy, &mut out.problems) {
        Some(declared) => declared,
        None => inbound_ports(inputs, proxy)
            .into_iter()
            .map(|(port, protocol, ..)| (port, protocol, ("127.0.0.1".to_string(), port)))
            .collect(),
    };
    for (port, protocol, (ip, target)) in ports {
        let cluster = cluster_name("inbound", port, "", "");
        let mut c = static_cluster(&cluster, &ip, target, protocol);
        if ip != "127.0.0.1" && ip != "::1" {
            crate::clusters::bind_inbound(&mut c);
        }
        out.clusters.push(c);
        let http = || http_filter(&cluster, port);
        let tcp = || tcp_proxy(&cluster, &cluster);
        let mode = mtls::inbound_mode(inputs.config, proxy, Some(port));
        let at = Some(port);
        if mode != Mode::Strict {
            let main = if protocol.is_http() { http() } else { tcp() };
            listener
                .filter_chains
                .push(chain(format!("0.0.0.0_{port}"), at, "", &[], main));
            if protocol == Protocol::Auto {
                sniffed.push((port, http()));
            }
        }
        if mode != Mode::Disable {
            let all: Vec<&str> = ALPN_TCP.iter().chain(&ALPN_HTTP).copied().collect();
            let mtls_chains = match protocol {
                Protocol::Auto => vec![(ALPN_HTTP.to_vec(), http()), (ALPN_TCP.to_vec(), tcp())],
                p if p.is_http() => vec![(all, http())],
                _ => vec![(all, tcp())],
            };
            for (alpn, filter) in mtls_chains {
                let name = format!("0.0.0.0_{port}_mtls");
                listener
                    .filter_chains
                    .push(mtls_chain(name, at, &alpn, filter));
            }
        }
        if mode == Mode::Strict {
            listener.filter_chains.push(strict_denial(at));
        }
    }
    let served: Vec<u16> = listener
        .filter_chains
        .iter()
        .filter_map(|c| {
            c.filter_chain_match
                .as_ref()?
                .destination_port
                .map(|p| p.value as u16)
        })
        .collect();
    // Ports a PeerAuthentication names that no chain serves keep their
    // own mode on the way through (a STRICT one is never plaintext).
    for port in mtls::port_levels(inputs.config, proxy) {
        if !served.contains(&port) {
            passthrough(inputs, proxy, &mut listener, Some(port));
        }
    }
    passthrough(inputs, proxy, &mut listener, None);
    for (port, http) in sniffed {
        sniffing(&mut listener, Some(port), http);
    }
    if listener
        .filter_chains
        .iter()
        .any(|c| c.transport_socket.is_some())
    {
        listener.listener_filters.push(tls_inspector());
    }
    out.listeners.push(listener);
}

/// The chains that pass connections to the address the client meant, by
/// the mode of `port` (None: ports nothing names, the workload's mode).
fn passthrough(inputs: &Inputs, proxy: &Workload, listener: &mut Listener, port: Option<u16>) {
    let mode = mtls::inbound_mode(inputs.config, proxy, port);
    let filter = || tcp_proxy(INBOUND_PASSTHROUGH, INBOUND_PASSTHROUGH);
    let base = match port {
        Some(p) => format!("{INBOUND_PASSTHROUGH}_{p}"),
        None => INBOUND_PASSTHROUGH.to_string(),
    };
    if mode != Mode::Disable {
        let all: Vec<&str> = ALPN_TCP.iter().chain(&ALPN_HTTP).copied().collect();
        let name = format!("{base}_mtls");
        listener
            .filter_chains
            .push(mtls_chain(name, port, &all, filter()));
    }
    if mode == Mode::Strict {
        listener.filter_chains.push(strict_denial(port));
    } else {
        listener
            .filter_chains
            .push(chain(base, port, "", &[], filter()));
    }
}

fn http_filter(cluster: &str, port: u16) -> Filter {
    hcm_inline(
        cluster,
        RouteConfiguration {
            name: format!("inbound|{port}||"),
            virtual_hosts: vec![VirtualHost {
                name: format!("inbound|http|{port}"),
                domains: vec!["*".into()],
                routes: vec![route_to_cluster("default", cluster, DefaultRoute::Inbound)],
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

fn chain(
    name: String,
    port: Option<u16>,
    transport: &str,
    alpn: &[&str],
    filter: Filter,
) -> FilterChain {
    FilterChain {
        name,
        filter_chain_match: Some(FilterChainMatch {
            destination_port: port.map(|p| UInt32Value {
                value: u32::from(p),
            }),
            transport_protocol: transport.into(),
            application_protocols: alpn.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        }),
        filters: vec![filter],
        ..Default::default()
    }
}

fn mtls_chain(name: String, port: Option<u16>, alpn: &[&str], filter: Filter) -> FilterChain {
    FilterChain {
        transport_socket: Some(mtls::inbound_socket()),
        ..chain(name, port, "tls", alpn, filter)
    }
}

/// What STRICT leaves for anything but a sidecar's mTLS: closed.
fn strict_denial(port: Option<u16>) -> FilterChain {
    let name = match port {
        Some(p) => format!("0.0.0.0_{p}_plaintext"),
        None => format!("{INBOUND_PASSTHROUGH}_plaintext"),
    };
    let mut c = chain(
        name,
        port,
        "",
        &[],
        tcp_proxy("BlackHoleCluster", "BlackHoleCluster"),
    );
    c.filters
        .insert(0, crate::authz::deny_connections("mtls-strict"));
    c
}
