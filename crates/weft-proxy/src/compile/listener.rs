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
use envoy_types::pb::google::protobuf::Any;
use serde::Serialize;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;

use super::route::{compile_route_table, weighted, Clusters, RouteTable};
use super::tls::{compile_downstream_tls, DownstreamTls};
use super::{socket_addr, unpack};
use crate::filters::{compile_chain as compile_http_filters, FilterChain as HttpFilters};
use crate::sniff::Detected;

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
    /// Read a TLS ClientHello (`tls_inspector`), so chains can match on
    /// `server_names`, transport `tls` and the offered ALPN.
    pub inspect_tls: bool,
    pub chains: Vec<ChainCfg>,
    /// The listener's own access logs (connections no chain took).
    #[serde(skip)]
    pub logs: Option<Arc<crate::access_log::Logs>>,
}

#[derive(Debug, Serialize)]
pub struct ChainCfg {
    pub name: String,
    pub destination_port: Option<u16>,
    /// SNI names (exact or `*.suffix`) the chain is for; empty: any.
    pub server_names: Vec<String>,
    /// `tls` or `raw_buffer`; empty: any.
    pub transport_protocol: String,
    /// ALPN-style names the chain is for (`http/1.1`, `h2c`); empty: any.
    pub application_protocols: Vec<String>,
    /// Terminate TLS before the network filter.
    pub tls: Option<Arc<DownstreamTls>>,
    /// How long that TLS handshake may take: the chain's
    /// `transport_socket_connect_timeout`, else the network filter's idle
    /// timeout, whose timer Envoy starts with the connection (so a client
    /// that stalls mid-handshake is closed by it); None: unbounded.
    pub handshake_timeout: Option<std::time::Duration>,
    pub action: ChainAction,
}

impl ChainAction {
    /// The network filter's idle timeout: the connection manager's
    /// connection idle timeout, or the TCP proxy's.
    fn idle_timeout(&self) -> Option<std::time::Duration> {
        match self {
            ChainAction::Http { timeouts, .. } => timeouts.idle,
            ChainAction::Tcp { idle_timeout, .. } => *idle_timeout,
        }
    }
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
        /// `forward_client_cert_details` and what it sets.
        xfcc: crate::http::xfcc::Xfcc,
        /// The client's address and the forwarding headers.
        forwarding: Arc<crate::http::forwarded::Forwarding>,
        /// Istio's metrics (`istio.stats` is there): reporter, overrides.
        stats: Option<Arc<crate::stats::config::StatsCfg>>,
        #[serde(skip)]
        logs: Option<Arc<crate::access_log::Logs>>,
        /// The connection manager's tracer, if it traces.
        #[serde(skip)]
        trace: Option<Arc<crate::trace::TraceCfg>>,
        /// How long the downstream side may stay quiet.
        timeouts: HttpTimeouts,
    },
    Tcp {
        stat_prefix: String,
        /// Network RBAC filters before the proxy, in order.
        rbac: Arc<[crate::filters::rbac::RbacCfg]>,
        clusters: Arc<Clusters>,
        /// No bytes either way for this long closes both sides (Envoy's
        /// default: 1 h; `0s` turns it off, here None).
        idle_timeout: Option<std::time::Duration>,
        /// Istio's TCP metrics: reporter, overrides.
        stats: Option<Arc<crate::stats::config::StatsCfg>>,
        #[serde(skip)]
        logs: Option<Arc<crate::access_log::Logs>>,
    },
}

/// The connection manager's timeouts on its downstream side, Envoy's
/// defaults where the config says nothing; `0s` turns one off (None).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HttpTimeouts {
    /// A connection with no request in flight closes after this
    /// (`common_http_protocol_options.idle_timeout`; 1 h).
    pub idle: Option<std::time::Duration>,
    /// A client that sends nothing of its request for this long gets 408
    /// (`stream_idle_timeout`; 5 min).
    pub stream_idle: Option<std::time::Duration>,
    /// A request head must be whole this long after its first byte, else
    /// 408 (`request_headers_timeout`; none).
    pub headers: Option<std::time::Duration>,
}

fn http_timeouts(hcm: &HttpConnectionManager) -> Result<HttpTimeouts, String> {
    let or = |d: Option<&envoy_types::pb::google::protobuf::Duration>, default: Option<u64>| match d
    {
        None => Ok(default.map(std::time::Duration::from_secs)),
        Some(d) => super::nonzero(Some(d)),
    };
    let common = hcm.common_http_protocol_options.as_ref();
    Ok(HttpTimeouts {
        idle: or(common.and_then(|c| c.idle_timeout.as_ref()), Some(3600))?,
        stream_idle: or(hcm.stream_idle_timeout.as_ref(), Some(300))?,
        headers: or(hcm.request_headers_timeout.as_ref(), None)?,
    })
}

#[derive(Debug, Clone, Serialize)]
pub enum RouteRef {
    Rds(String),
    Inline(Arc<RouteTable>),
}

impl ListenerCfg {
    /// The filter chain for a connection, in Envoy's order of match
    /// criteria: destination port, then server name (exact over the
    /// longest wildcard), then transport protocol, then application
    /// protocol. At each step the chains that name the best matching value
    /// are tried first, then the ones that name nothing. (Envoy does not
    /// go back to the second group and closes the connection instead;
    /// Weft's own sniffing chains rely on going back.)
    pub(crate) fn chain_for(&self, port: u16, seen: &Detected) -> Option<&ChainCfg> {
        let by_port = |c: &ChainCfg| c.destination_port.map(|p| (p == port).then_some(0));
        let by_name = |c: &ChainCfg| {
            (!c.server_names.is_empty()).then(|| server_name_rank(&c.server_names, seen))
        };
        let by_transport = |c: &ChainCfg| {
            (!c.transport_protocol.is_empty())
                .then(|| (c.transport_protocol == seen.transport()).then_some(0))
        };
        let by_protocol = |c: &ChainCfg| {
            (!c.application_protocols.is_empty()).then(|| {
                c.application_protocols
                    .iter()
                    .any(|a| seen.protocols.contains(a))
                    .then_some(0)
            })
        };
        let criteria: [&Rank; 4] = [&by_port, &by_name, &by_transport, &by_protocol];
        pick(self.chains.iter().collect(), &criteria)
    }

    /// Whether any chain for `port` asks for a plaintext protocol, so that
    /// sniffing HTTP matters.
    pub fn sniffs(&self, port: u16) -> bool {
        self.inspect_http
            && self.chains.iter().any(|c| {
                !c.application_protocols.is_empty() && c.destination_port.is_none_or(|p| p == port)
            })
    }
}

/// How a chain fits one criterion: None when it does not name it,
/// Some(None) when it names it and the connection does not fit,
/// Some(Some(r)) when it fits (lower is more specific).
type Rank<'a> = dyn Fn(&ChainCfg) -> Option<Option<usize>> + 'a;

fn pick<'c>(chains: Vec<&'c ChainCfg>, criteria: &[&Rank]) -> Option<&'c ChainCfg> {
    let Some((rank, rest)) = criteria.split_first() else {
        return chains.first().copied();
    };
    let best = chains.iter().filter_map(|c| rank(c).flatten()).min();
    let fitting = best.and_then(|b| {
        let group = chains.iter().copied().filter(|c| rank(c) == Some(Some(b)));
        pick(group.collect(), rest)
    });
    fitting.or_else(|| {
        let open = chains.iter().copied().filter(|c| rank(c).is_none());
        pick(open.collect(), rest)
    })
}

/// 0 for an exact name; a wildcard ranks by how much of the name it
/// leaves open, so the longest suffix wins.
fn server_name_rank(names: &[String], seen: &Detected) -> Option<usize> {
    let sni = seen.server_name.as_deref()?;
    names
        .iter()
        .filter_map(|n| {
            if n.eq_ignore_ascii_case(sni) {
                Some(0)
            } else {
                let suffix = n.strip_prefix('*')?;
                let fits = sni.len() > suffix.len()
                    && sni[sni.len() - suffix.len()..].eq_ignore_ascii_case(suffix);
                fits.then(|| 1 + sni.len() - suffix.len())
            }
        })
        .min()
}

const ORIGINAL_DST: &str = "envoy.filters.listener.original_dst";
const HTTP_INSPECTOR: &str = "envoy.filters.listener.http_inspector";
const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
const HCM: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";

pub(crate) fn compile_listener(
    l: &Listener,
    secrets: &super::Secrets,
) -> Result<ListenerCfg, String> {
    let address = socket_addr(&l.address)?;
    let (mut original_dst_filter, mut inspect_http, mut inspect_tls) = (false, false, false);
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
        } else if f.name == TLS_INSPECTOR || type_url.ends_with("tls_inspector.v3.TlsInspector") {
            inspect_tls = true;
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
    // Istio's stats report as the destination on inbound listeners, as
    // the source everywhere else (outbound, gateways).
    let inbound = envoy_types::pb::envoy::config::core::v3::TrafficDirection::Inbound as i32;
    let reporter = if l.traffic_direction == inbound {
        crate::stats::Reporter::Destination
    } else {
        crate::stats::Reporter::Source
    };
    let chains = l
        .filter_chains
        .iter()
        .enumerate()
        .map(|(i, c)| {
            compile_chain(c, secrets, reporter).map_err(|e| format!("filter_chains[{i}]: {e}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(ListenerCfg {
        name: l.name.clone(),
        address,
        bind: l.bind_to_port.as_ref().is_none_or(|b| b.value),
        use_original_dst: l.use_original_dst.as_ref().is_some_and(|b| b.value),
        original_dst_filter,
        inspect_http,
        inspect_tls,
        chains,
        logs: crate::access_log::config::compile(&l.access_log)
            .map_err(|e| format!("listener {e}"))?,
    })
}

fn compile_chain(
    c: &FilterChain,
    secrets: &super::Secrets,
    reporter: crate::stats::Reporter,
) -> Result<ChainCfg, String> {
    let m = c.filter_chain_match.clone().unwrap_or_default();
    let supported = envoy_types::pb::envoy::config::listener::v3::FilterChainMatch {
        destination_port: m.destination_port,
        server_names: m.server_names.clone(),
        transport_protocol: m.transport_protocol.clone(),
        application_protocols: m.application_protocols.clone(),
        ..Default::default()
    };
    if m != supported {
        return Err("filter_chain_match supports destination_port, server_names, transport_protocol and application_protocols only".into());
    }
    if !matches!(m.transport_protocol.as_str(), "" | "raw_buffer" | "tls") {
        return Err(format!(
            "filter_chain_match transport_protocol {:?} is not supported",
            m.transport_protocol
        ));
    }
    let tls = match &c.transport_socket {
        None => None,
        Some(ts) => Some(Arc::new(downstream_tls(ts, secrets)?)),
    };
    let Some((filter, front)) = c.filters.split_last() else {
        return Err("a filter chain needs a network filter".into());
    };
    let (rbac, stats) = network_front(front)?;
    let stats = stats
        .map(|any| crate::stats::config::compile(Some(&any), reporter).map(Arc::new))
        .transpose()?;
    let Some(filter::ConfigType::TypedConfig(any)) = &filter.config_type else {
        return Err(format!("filter {:?} has no typed_config", filter.name));
    };
    let action = match any.type_url.rsplit('/').next().unwrap_or("") {
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" => {
            http_action(&unpack::<HttpConnectionManager>(any)?, reporter)?
        }
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy" => {
            tcp_action(&unpack::<TcpProxy>(any)?, rbac, stats)?
        }
        _ if !rbac.is_empty() || stats.is_some() => {
            return Err("network RBAC and istio.stats are supported before tcp_proxy only".into())
        }
        other => {
            return Err(format!(
                "network filter {:?} ({other}) is not supported",
                filter.name
            ))
        }
    };
    let _ = (HCM, TCP_PROXY);
    let handshake_timeout = match &c.transport_socket_connect_timeout {
        Some(d) => super::nonzero(Some(d))?,
        None => action.idle_timeout(),
    };
    Ok(ChainCfg {
        name: c.name.clone(),
        destination_port: m.destination_port.map(|p| p.value as u16),
        server_names: m
            .server_names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect(),
        transport_protocol: m.transport_protocol,
        application_protocols: m.application_protocols,
        tls,
        handshake_timeout,
        action,
    })
}

/// The TLS transport socket of a chain (`envoy.transport_sockets.tls`).
fn downstream_tls(
    ts: &envoy_types::pb::envoy::config::core::v3::TransportSocket,
    secrets: &super::Secrets,
) -> Result<DownstreamTls, String> {
    let (ctx, _) = super::transport_config::<DownstreamTlsContext>(ts)?;
    compile_downstream_tls(&ctx, secrets)
}

fn http_action(
    hcm: &HttpConnectionManager,
    reporter: crate::stats::Reporter,
) -> Result<ChainAction, String> {
    let filters = Arc::new(compile_http_filters(&hcm.http_filters)?);
    let stats = filters
        .stats
        .as_ref()
        .map(|any| crate::stats::config::compile(Some(any), reporter).map(Arc::new))
        .transpose()?;
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
        xfcc: crate::http::xfcc::compile(hcm)?,
        forwarding: Arc::new(crate::http::forwarded::compile(hcm)?),
        stats,
        logs: crate::access_log::config::compile(&hcm.access_log)?,
        trace: crate::trace::compile(
            hcm.tracing.as_ref(),
            reporter == crate::stats::Reporter::Destination,
        )?,
        timeouts: http_timeouts(hcm)?,
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

/// The network filters in front of a chain's last filter: RBAC filters,
/// and `istio.stats`'s config if it is there (any other is refused).
fn network_front(
    front: &[envoy_types::pb::envoy::config::listener::v3::Filter],
) -> Result<(Vec<crate::filters::rbac::RbacCfg>, Option<Any>), String> {
    let mut rbac = Vec::new();
    let mut stats = None;
    for f in front {
        match &f.config_type {
            Some(filter::ConfigType::TypedConfig(any))
                if any.type_url.ends_with(".network.rbac.v3.RBAC") =>
            {
                rbac.push(crate::filters::rbac::compile_network(&unpack(any)?)?)
            }
            Some(filter::ConfigType::TypedConfig(any)) if crate::stats::is_stats(&f.name, any) => {
                stats = Some(any.clone())
            }
            _ => {
                return Err(format!(
                    "network filter {:?} is not supported before the last filter",
                    f.name
                ))
            }
        }
    }
    Ok((rbac, stats))
}

/// One cluster, or weighted clusters drawn once per connection (Istio's
/// TCP traffic shifting).
fn tcp_action(
    t: &TcpProxy,
    rbac: Vec<crate::filters::rbac::RbacCfg>,
    stats: Option<Arc<crate::stats::config::StatsCfg>>,
) -> Result<ChainAction, String> {
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
        rbac: rbac.into(),
        clusters: Arc::new(clusters),
        idle_timeout,
        stats,
        logs: crate::access_log::config::compile(&t.access_log)?,
    })
}
