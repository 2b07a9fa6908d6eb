//! Listeners and filter chains.

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::{
    filter, listener_filter, FilterChain, Listener,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use serde::Serialize;

use super::route::{compile_route_table, weighted, Clusters, RouteTable};
use super::{socket_addr, unpack};
use crate::filters::{compile_chain as compile_http_filters, FilterChain as HttpFilters};

#[derive(Debug, Serialize)]
pub struct ListenerCfg {
    pub name: String,
    pub address: SocketAddr,
    /// False for the per-port listeners that only receive connections handed
    /// over by a `use_original_dst` listener.
    pub bind: bool,
    pub use_original_dst: bool,
    /// Match filter chains on the connection's original destination.
    pub original_dst_filter: bool,
    /// Sniff the first bytes for HTTP (`http_inspector`), so chains can
    /// match on `application_protocols`.
    pub inspect_http: bool,
    pub chains: Vec<ChainCfg>,
}

#[derive(Debug, Serialize)]
pub struct ChainCfg {
    pub name: String,
    pub destination_port: Option<u16>,
    /// ALPN-style names the chain is for (`http/1.1`, `h2c`); empty: any.
    pub application_protocols: Vec<String>,
    pub action: ChainAction,
}

#[derive(Debug, Clone, Serialize)]
pub enum ChainAction {
    Http {
        stat_prefix: String,
        routes: RouteRef,
        filters: Arc<HttpFilters>,
        /// Upgrade types (lower case) the manager lets through, as its
        /// `upgrade_configs` name them (Istio: `websocket`).
        upgrades: Arc<[String]>,
    },
    Tcp {
        stat_prefix: String,
        clusters: Arc<Clusters>,
        /// No bytes either way for this long closes both sides (Envoy's
        /// default: 1 h; `0s` turns it off, here None).
        idle_timeout: Option<std::time::Duration>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub enum RouteRef {
    Rds(String),
    Inline(Arc<RouteTable>),
}

impl ListenerCfg {
    /// The filter chain for a destination port and the sniffed protocol,
    /// in Envoy's order: a chain that names the port wins over one that
    /// names none; then one that names the protocol over one that names
    /// none.
    pub fn chain_for(&self, port: u16, protocol: Option<&str>) -> Option<&ChainCfg> {
        let fits = |c: &&ChainCfg| match protocol {
            Some(p) => c.application_protocols.iter().any(|a| a == p),
            None => false,
        };
        let any_protocol = |c: &&ChainCfg| c.application_protocols.is_empty();
        let by_port = |want: Option<u16>| {
            let mut of_port = self
                .chains
                .iter()
                .filter(move |c| c.destination_port == want);
            of_port
                .clone()
                .find(fits)
                .or_else(|| of_port.find(any_protocol))
        };
        by_port(Some(port)).or_else(|| by_port(None))
    }

    /// Whether any chain for `port` asks for a protocol, so that sniffing
    /// the connection matters.
    pub fn sniffs(&self, port: u16) -> bool {
        self.inspect_http
            && self.chains.iter().any(|c| {
                !c.application_protocols.is_empty() && c.destination_port.is_none_or(|p| p == port)
            })
    }
}

const ORIGINAL_DST: &str = "envoy.filters.listener.original_dst";
const HTTP_INSPECTOR: &str = "envoy.filters.listener.http_inspector";
const HCM: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";

pub(crate) fn compile_listener(l: &Listener) -> Result<ListenerCfg, String> {
    let address = socket_addr(&l.address)?;
    let (mut original_dst_filter, mut inspect_http) = (false, false);
    for f in &l.listener_filters {
        let type_url = match &f.config_type {
            Some(listener_filter::ConfigType::TypedConfig(any)) => any.type_url.as_str(),
            _ => "",
        };
        if f.name == ORIGINAL_DST || type_url.ends_with("original_dst.v3.OriginalDst") {
            original_dst_filter = true;
        } else if f.name == HTTP_INSPECTOR || type_url.ends_with("http_inspector.v3.HttpInspector")
        {
            inspect_http = true;
        } else {
            return Err(format!("listener filter {:?} is not supported", f.name));
        }
    }
    if l.filter_chains.is_empty() {
        return Err("a listener needs at least one filter chain".into());
    }
    if l.default_filter_chain.is_some() {
        return Err("default_filter_chain is not supported".into());
    }
    let chains = l
        .filter_chains
        .iter()
        .enumerate()
        .map(|(i, c)| compile_chain(c).map_err(|e| format!("filter_chains[{i}]: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(ListenerCfg {
        name: l.name.clone(),
        address,
        bind: l.bind_to_port.as_ref().is_none_or(|b| b.value),
        use_original_dst: l.use_original_dst.as_ref().is_some_and(|b| b.value),
        original_dst_filter,
        inspect_http,
        chains,
    })
}

fn compile_chain(c: &FilterChain) -> Result<ChainCfg, String> {
    if c.transport_socket.is_some() {
        return Err("transport_socket (TLS) is not supported yet".into());
    }
    let (destination_port, application_protocols) = match &c.filter_chain_match {
        None => (None, Vec::new()),
        Some(m) => {
            let supported = envoy_types::pb::envoy::config::listener::v3::FilterChainMatch {
                destination_port: m.destination_port,
                application_protocols: m.application_protocols.clone(),
                transport_protocol: m.transport_protocol.clone(),
                ..Default::default()
            };
            if *m != supported {
                return Err("filter_chain_match supports destination_port, application_protocols and transport_protocol raw_buffer only".into());
            }
            if !matches!(m.transport_protocol.as_str(), "" | "raw_buffer") {
                return Err(format!(
                    "filter_chain_match transport_protocol {:?} is not supported (plaintext only)",
                    m.transport_protocol
                ));
            }
            (
                m.destination_port.map(|p| p.value as u16),
                m.application_protocols.clone(),
            )
        }
    };
    let [filter] = c.filters.as_slice() else {
        return Err(format!(
            "exactly one network filter is supported, got {}",
            c.filters.len()
        ));
    };
    let Some(filter::ConfigType::TypedConfig(any)) = &filter.config_type else {
        return Err(format!("filter {:?} has no typed_config", filter.name));
    };
    let action = match any.type_url.rsplit('/').next().unwrap_or("") {
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" => {
            http_action(&unpack::<HttpConnectionManager>(any)?)?
        }
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy" => {
            tcp_action(&unpack::<TcpProxy>(any)?)?
        }
        other => {
            return Err(format!(
                "network filter {:?} ({other}) is not supported",
                filter.name
            ))
        }
    };
    let _ = (HCM, TCP_PROXY);
    Ok(ChainCfg {
        name: c.name.clone(),
        destination_port,
        application_protocols,
        action,
    })
}

fn http_action(hcm: &HttpConnectionManager) -> Result<ChainAction, String> {
    let filters = Arc::new(compile_http_filters(&hcm.http_filters)?);
    let routes = match &hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => RouteRef::Rds(rds.route_config_name.clone()),
        Some(RouteSpecifier::RouteConfig(rc)) => {
            RouteRef::Inline(Arc::new(compile_route_table(rc)?))
        }
        _ => return Err("HTTP connection manager needs rds or route_config".into()),
    };
    Ok(ChainAction::Http {
        stat_prefix: hcm.stat_prefix.clone(),
        routes,
        filters,
        upgrades: upgrades(hcm)?,
    })
}

/// The enabled `upgrade_configs`; per-upgrade filter chains and CONNECT
/// (tunnelling) are refused.
fn upgrades(hcm: &HttpConnectionManager) -> Result<Arc<[String]>, String> {
    let mut out = Vec::new();
    for u in &hcm.upgrade_configs {
        if !u.filters.is_empty() {
            return Err(format!(
                "upgrade_configs {:?}: per-upgrade filters are not supported",
                u.upgrade_type
            ));
        }
        if u.upgrade_type.eq_ignore_ascii_case("CONNECT") {
            return Err("CONNECT upgrades (tunnelling) are not supported".into());
        }
        if u.enabled.is_none_or(|e| e.value) {
            out.push(u.upgrade_type.to_ascii_lowercase());
        }
    }
    Ok(out.into())
}

/// One cluster, or weighted clusters drawn once per connection (Istio's
/// TCP traffic shifting).
fn tcp_action(t: &TcpProxy) -> Result<ChainAction, String> {
    let clusters = match &t.cluster_specifier {
        Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => Clusters::One(c.as_str().into()),
        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
            weighted(w.clusters.iter().map(|c| match c.metadata_match {
                Some(_) => Err("tcp_proxy weighted cluster metadata_match is not supported".into()),
                None => Ok((
                    c.name.as_str(),
                    c.weight,
                    Default::default(),
                    Default::default(),
                )),
            }))?
        }
        _ => return Err("tcp_proxy needs a cluster or weighted_clusters".into()),
    };
    let idle_timeout = match &t.idle_timeout {
        None => Some(std::time::Duration::from_secs(3600)),
        Some(d) => super::nonzero(Some(d))?,
    };
    Ok(ChainAction::Tcp {
        stat_prefix: t.stat_prefix.clone(),
        clusters: Arc::new(clusters),
        idle_timeout,
    })
}
