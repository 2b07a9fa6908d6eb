//! Clusters and their endpoints, with the load balancer state they need.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use serde::Serialize;

use super::endpoints::Endpoints;
use super::socket_addr;
use crate::upstream::balancer::Balancer;
use crate::upstream::{Limits, Outliers};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ClusterKind {
    /// Endpoints come from EDS.
    Eds,
    /// Endpoints are inline.
    Static,
    /// The upstream is the connection's original destination.
    OriginalDst,
    /// Endpoints are names the proxy looks up (STRICT_DNS, LOGICAL_DNS).
    Dns,
}

/// Which HTTP version requests to the cluster's hosts use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum UpstreamProtocol {
    Http1,
    Http2(crate::upstream::Http2),
    /// The downstream request's own (`use_downstream_protocol_config`,
    /// Istio's `useClientProtocol`).
    Downstream(crate::upstream::Http2),
}

#[derive(Debug, Serialize)]
pub struct ClusterCfg {
    pub name: String,
    pub kind: ClusterKind,
    pub lb: Balancer,
    pub connect_timeout: std::time::Duration,
    /// Source address for upstream connections (`upstream_bind_config`);
    /// Istio binds inbound passthrough to 127.0.0.6 so iptables lets it by.
    pub bind_source: Option<std::net::IpAddr>,
    /// Upstream HTTP connections idle this long are closed (Envoy: 1 h).
    pub idle_timeout: std::time::Duration,
    pub max_connection_duration: Option<std::time::Duration>,
    pub keepalive: Option<crate::upstream::Keepalive>,
    pub protocol: UpstreamProtocol,
    /// Circuit-breaker limits and their live counts, shared by the workers.
    pub breaker: std::sync::Arc<crate::upstream::Breaker>,
    /// Outlier detection's per-host records, when the cluster asks for it.
    pub outliers: Option<Outliers>,
    /// Below this percentage of hosts not ejected, balance over all of
    /// them anyway (Envoy's panic threshold, 50% by default; Istio sets 0).
    pub panic_threshold: u32,
    pub endpoints: Endpoints,
    /// TLS to the hosts (DestinationRule `tls` SIMPLE or MUTUAL).
    #[serde(skip)]
    pub tls: Option<std::sync::Arc<super::UpstreamTls>>,
    /// Transport socket matches: endpoint metadata wanted → TLS (None:
    /// plaintext).
    #[serde(skip)]
    pub tls_matches: Vec<(
        super::endpoints::Labels,
        Option<std::sync::Arc<super::UpstreamTls>>,
    )>,
    /// The services behind the cluster (its `istio` metadata), for the
    /// metrics' `destination_service*` labels.
    pub services: Vec<std::sync::Arc<crate::stats::ServiceMeta>>,
}

impl ClusterCfg {
    /// How to reach one of this cluster's endpoints, for a request that
    /// came in over HTTP/2 or not.
    pub(crate) fn peer(&self, addr: SocketAddr, downstream_h2: bool) -> crate::upstream::Peer {
        let http2 = match self.protocol {
            UpstreamProtocol::Http1 => None,
            UpstreamProtocol::Http2(h2) => Some(h2),
            UpstreamProtocol::Downstream(h2) => downstream_h2.then_some(h2),
        };
        crate::upstream::Peer {
            http2,
            addr,
            bind_source: self.bind_source,
            connect_timeout: self.connect_timeout,
            idle_timeout: self.idle_timeout,
            max_connection_duration: self.max_connection_duration,
            keepalive: self.keepalive,
            tls: self.tls_for(addr),
        }
    }

    /// The TLS for one endpoint: the first transport socket match its
    /// metadata fits (Istio's auto mTLS: `tlsMode: istio` hosts get mTLS,
    /// others plaintext), else the cluster's own.
    fn tls_for(&self, addr: SocketAddr) -> Option<std::sync::Arc<super::UpstreamTls>> {
        if self.tls_matches.is_empty() {
            return self.tls.clone();
        }
        let none = super::endpoints::Labels::new();
        let labels = self.endpoints.socket_match.get(&addr).unwrap_or(&none);
        self.tls_matches
            .iter()
            .find(|(want, _)| want.iter().all(|(k, v)| labels.get(k) == Some(v)))
            .map_or_else(|| self.tls.clone(), |(_, tls)| tls.clone())
    }

    /// Whether requests to `addr` go over mesh mTLS.
    pub(crate) fn mesh_mtls(&self, addr: SocketAddr) -> bool {
        self.tls_for(addr).is_some_and(|t| t.is_mesh())
    }

    /// Whether `addr` runs a sidecar (`tlsMode: istio`), which takes the
    /// metadata exchange headers off.
    pub(crate) fn in_mesh(&self, addr: SocketAddr) -> bool {
        self.endpoints
            .socket_match
            .get(&addr)
            .is_some_and(|m| m.get("tlsMode").is_some_and(|v| v == "istio"))
    }

    /// The service a request for `authority` went to: the cluster's one
    /// service, or among several the one the Host header names.
    pub(crate) fn service_for(
        &self,
        authority: &str,
    ) -> Option<std::sync::Arc<crate::stats::ServiceMeta>> {
        match self.services.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            many => {
                let host = authority.split(':').next().unwrap_or("");
                many.iter()
                    .find(|s| {
                        s.host == host || s.name == host || s.host.starts_with(&format!("{host}."))
                    })
                    .cloned()
            }
        }
    }

    /// The endpoint for the next request or connection: a priority level
    /// and locality by Envoy's load rules, then a host by the cluster's
    /// balancer, skipping ejected hosts (unless the level is in panic);
    /// `hash` is the request's hash for consistent balancers. None when no
    /// host is usable (Envoy's "no healthy upstream", flag UH).
    pub fn pick(&self, original_dst: SocketAddr, hash: Option<u64>) -> Option<SocketAddr> {
        self.pick_leaving(original_dst, hash, &[])
    }

    /// `pick` for a retry that leaves the priority levels already `tried`
    /// (Envoy's previous-priorities plugin); with every level tried, the
    /// plain pick.
    pub fn pick_leaving(
        &self,
        original_dst: SocketAddr,
        hash: Option<u64>,
        tried: &[SocketAddr],
    ) -> Option<SocketAddr> {
        if self.kind == ClusterKind::OriginalDst {
            return Some(original_dst);
        }
        let eps = &self.endpoints;
        let left: Vec<std::ops::Range<usize>> = tried
            .iter()
            .filter_map(|a| eps.addresses.iter().position(|x| x == a))
            .filter_map(|i| eps.level_of(i))
            .collect();
        let ejected = |i: usize| self.outliers.as_ref().is_some_and(|o| o.is_ejected(i));
        let usable = |i: usize| !ejected(i) && !left.iter().any(|r| r.contains(&i));
        if !left.is_empty() && !(0..eps.addresses.len()).any(usable) {
            return self.pick(original_dst, hash);
        }
        let draw = hash.unwrap_or_else(|| fastrand::u64(..));
        // With no host ejected or left, nothing can be in panic.
        let threshold = if self.outliers.is_none() && left.is_empty() {
            0
        } else {
            self.panic_threshold
        };
        let c = eps.candidates(draw, usable, threshold)?;
        let in_panic = |i: usize| c.panic && !left.iter().any(|r| r.contains(&i));
        self.lb
            .choose(c.hosts.clone(), hash, |i| usable(i) || in_panic(i))
            .map(|i| eps.addresses[i])
    }

    /// Counts a request as active on `addr` while the guard lives (for
    /// least-request balancing).
    pub(crate) fn track(&self, addr: SocketAddr) -> Option<crate::upstream::balancer::Active<'_>> {
        if !matches!(self.lb, Balancer::LeastRequest(_)) {
            return None;
        }
        let i = self.endpoints.addresses.iter().position(|a| *a == addr)?;
        self.lb.track(i)
    }

    /// Tells outlier detection how a request to `addr` ended.
    pub(crate) fn report(&self, addr: SocketAddr, result: crate::upstream::outlier::Result5xx) {
        if let Some(o) = &self.outliers {
            if let Some(i) = self.endpoints.addresses.iter().position(|a| *a == addr) {
                o.report(i, result);
            }
        }
    }
}

/// Compiles a cluster; `eds` are its endpoints when they come from
/// elsewhere (EDS, or the answers for a DNS cluster's names).
pub(crate) fn compile_cluster(
    c: &Cluster,
    eds: Option<&Endpoints>,
    secrets: &super::Secrets,
) -> Result<ClusterCfg, String> {
    use cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy as P};
    let kind = match c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32 => ClusterKind::Eds,
        Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Static as i32 => {
            ClusterKind::Static
        }
        Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::OriginalDst as i32 => {
            ClusterKind::OriginalDst
        }
        None => ClusterKind::Static,
        _ if crate::dns::is_dns(c) => {
            crate::dns::check(c)?;
            ClusterKind::Dns
        }
        _ => {
            return Err(
                "discovery type must be STATIC, EDS, ORIGINAL_DST, STRICT_DNS or LOGICAL_DNS"
                    .into(),
            )
        }
    };
    let policy =
        P::try_from(c.lb_policy).map_err(|_| format!("unknown lb_policy {}", c.lb_policy))?;
    let tls = super::upstream_tls::compile_upstream_tls(c.transport_socket.as_ref(), secrets)?;
    let tls_matches = c
        .transport_socket_matches
        .iter()
        .map(|m| {
            let want = m
                .r#match
                .as_ref()
                .map(super::endpoints::labels)
                .unwrap_or_default();
            super::upstream_tls::compile_upstream_tls(m.transport_socket.as_ref(), secrets)
                .map(|tls| (want, tls))
                .map_err(|e| format!("transport_socket_matches {:?}: {e}", m.name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let HttpOptions {
        mut limits,
        idle_timeout,
        max_connection_duration,
        protocol,
    } = http_options(c)?;
    let keepalive = keepalive(c)?;
    apply_thresholds(c, &mut limits)?;
    let mut endpoints = match kind {
        // A DNS cluster's endpoints are its names' current answers.
        ClusterKind::Eds | ClusterKind::Dns => eds.cloned().unwrap_or_default(),
        ClusterKind::Static => c
            .load_assignment
            .as_ref()
            .map(Endpoints::from_assignment)
            .transpose()?
            .unwrap_or_default(),
        ClusterKind::OriginalDst => Endpoints::default(),
    };
    endpoints.weigh_localities(locality_weighted(c)?);
    let addresses = &endpoints.addresses;
    let connect_timeout = c
        .connect_timeout
        .map(|d| std::time::Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
        .filter(|d| !d.is_zero())
        .unwrap_or(std::time::Duration::from_secs(5));
    let bind_source = match &c.upstream_bind_config {
        Some(b) => Some(
            socket_addr(&Some(envoy_types::pb::envoy::config::core::v3::Address {
                address: b
                    .source_address
                    .clone()
                    .map(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress),
            }))?
            .ip(),
        ),
        None => None,
    };
    let lb = balancer(c, policy, kind, addresses)?;
    Ok(ClusterCfg {
        name: c.name.clone(),
        kind,
        lb,
        connect_timeout,
        bind_source,
        idle_timeout,
        max_connection_duration,
        keepalive,
        protocol,
        breaker: std::sync::Arc::new(crate::upstream::Breaker::new(limits)),
        outliers: c
            .outlier_detection
            .as_ref()
            .map(crate::upstream::outlier::compile)
            .transpose()?
            .map(|cfg| Outliers::new(cfg, addresses.len())),
        panic_threshold: c
            .common_lb_config
            .as_ref()
            .and_then(|l| l.healthy_panic_threshold.as_ref())
            .map_or(50, |p| p.value.clamp(0.0, 100.0) as u32),
        endpoints,
        services: services(c),
        tls,
        tls_matches,
    })
}

/// The cluster's load balancer, built for its hosts.
fn balancer(
    c: &Cluster,
    policy: cluster::LbPolicy,
    kind: ClusterKind,
    hosts: &[SocketAddr],
) -> Result<Balancer, String> {
    use cluster::{LbConfig, LbPolicy as P};
    let round_robin = || Balancer::RoundRobin(AtomicUsize::new(0));
    let lb = match policy {
        P::RoundRobin => round_robin(),
        P::Random => Balancer::Random,
        P::LeastRequest => Balancer::least_request(hosts.len()),
        P::ClusterProvided if kind == ClusterKind::OriginalDst => round_robin(),
        P::RingHash => {
            let min = match &c.lb_config {
                Some(LbConfig::RingHashLbConfig(r)) => {
                    r.minimum_ring_size.map_or(1024, |v| v.value)
                }
                _ => 1024,
            };
            // Envoy caps rings at 8M entries; Weft keeps them smaller.
            Balancer::ring(hosts, min.clamp(1, 1 << 20))
        }
        P::Maglev => {
            let size = match &c.lb_config {
                Some(LbConfig::MaglevLbConfig(m)) => m.table_size.map_or(65537, |v| v.value),
                _ => 65537,
            };
            Balancer::maglev(hosts, size.clamp(1, 5_000_011))
        }
        other => {
            return Err(format!(
                "lb_policy {} is not supported",
                other.as_str_name()
            ))
        }
    };
    Ok(lb)
}

const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

struct HttpOptions {
    limits: Limits,
    idle_timeout: std::time::Duration,
    max_connection_duration: Option<std::time::Duration>,
    protocol: UpstreamProtocol,
}

/// The cluster's HTTP protocol options: the upstream HTTP version,
/// requests per connection, the idle timeout and the maximum age.
#[allow(deprecated)] // `max_requests_per_connection` on the cluster itself.
fn http_options(c: &Cluster) -> Result<HttpOptions, String> {
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
        http_protocol_options::{explicit_http_config::ProtocolConfig, UpstreamProtocolOptions},
        HttpProtocolOptions,
    };
    let mut out = HttpOptions {
        limits: Limits {
            max_requests_per_connection: c
                .max_requests_per_connection
                .map(|v| v.value)
                .filter(|v| *v > 0),
            ..Limits::default()
        },
        idle_timeout: std::time::Duration::from_secs(3600),
        max_connection_duration: None,
        protocol: UpstreamProtocol::Http1,
    };
    for (name, any) in &c.typed_extension_protocol_options {
        if name != HTTP_OPTIONS {
            return Err(format!(
                "typed_extension_protocol_options {name:?} is not supported"
            ));
        }
        let o: HttpProtocolOptions = super::unpack(any)?;
        out.protocol = match &o.upstream_protocol_options {
            None => UpstreamProtocol::Http1,
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match &e.protocol_config {
                None | Some(ProtocolConfig::HttpProtocolOptions(_)) => UpstreamProtocol::Http1,
                Some(ProtocolConfig::Http2ProtocolOptions(h2)) => {
                    UpstreamProtocol::Http2(http2_options(h2)?)
                }
                Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                    return Err("upstream HTTP/3 is not supported".into())
                }
            },
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(d)) => {
                let h2 = d.http2_protocol_options.as_ref().map(http2_options);
                UpstreamProtocol::Downstream(h2.transpose()?.unwrap_or_default())
            }
            Some(UpstreamProtocolOptions::AutoConfig(_)) => {
                return Err(
                    "upstream auto_config (ALPN protocol selection) is not supported yet".into(),
                )
            }
        };
        if o.outlier_detection.is_some() {
            return Err(
                "HttpProtocolOptions outlier_detection (error_matcher, Istio's outlierDetectionHttpErrorCodes) is not supported yet".into(),
            );
        }
        if !o.http_filters.is_empty() || o.upstream_http_protocol_options.is_some() {
            return Err(
                "upstream http_filters and upstream_http_protocol_options are not supported".into(),
            );
        }
        if let Some(common) = &o.common_http_protocol_options {
            if let Some(max) = common
                .max_requests_per_connection
                .map(|v| v.value)
                .filter(|v| *v > 0)
            {
                out.limits.max_requests_per_connection = Some(max);
            }
            if let Some(d) = common.idle_timeout.as_ref() {
                // Zero turns the idle timeout off, as in Envoy.
                out.idle_timeout = super::nonzero(Some(d))?.unwrap_or(std::time::Duration::MAX);
            }
            if let Some(d) = common.max_connection_duration.as_ref() {
                out.max_connection_duration = super::nonzero(Some(d))?;
            }
        }
    }
    Ok(out)
}

/// `http2_protocol_options` as far as the upstream HTTP/2 pool honours
/// them: flow-control windows, connection keepalive (PING) and the streams
/// one connection carries.
fn http2_options(
    o: &envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions,
) -> Result<crate::upstream::Http2, String> {
    use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;
    let honoured = Http2ProtocolOptions {
        initial_stream_window_size: o.initial_stream_window_size,
        initial_connection_window_size: o.initial_connection_window_size,
        connection_keepalive: o.connection_keepalive,
        max_concurrent_streams: o.max_concurrent_streams,
        ..Default::default()
    };
    if *o != honoured {
        return Err("http2_protocol_options supports initial_stream_window_size, initial_connection_window_size, connection_keepalive and max_concurrent_streams only".into());
    }
    let keepalive = o.connection_keepalive.as_ref();
    let time = super::nonzero;
    Ok(crate::upstream::Http2 {
        initial_stream_window: o.initial_stream_window_size.map(|v| v.value),
        initial_connection_window: o.initial_connection_window_size.map(|v| v.value),
        keepalive_interval: time(keepalive.and_then(|k| k.interval.as_ref()))?,
        keepalive_timeout: time(keepalive.and_then(|k| k.timeout.as_ref()))?,
        max_concurrent_streams: o.max_concurrent_streams.map(|v| v.value).filter(|v| *v > 0),
    })
}

/// `upstream_connection_options.tcp_keepalive`: keepalive on, with the
/// parts the cluster sets.
fn keepalive(c: &Cluster) -> Result<Option<crate::upstream::Keepalive>, String> {
    let Some(options) = &c.upstream_connection_options else {
        return Ok(None);
    };
    let only_keepalive = envoy_types::pb::envoy::config::cluster::v3::UpstreamConnectionOptions {
        tcp_keepalive: options.tcp_keepalive,
        ..Default::default()
    };
    if *options != only_keepalive {
        return Err("upstream_connection_options supports tcp_keepalive only".into());
    }
    let Some(k) = &options.tcp_keepalive else {
        return Ok(None);
    };
    let secs = |v: Option<envoy_types::pb::google::protobuf::UInt32Value>| {
        v.map(|v| std::time::Duration::from_secs(u64::from(v.value)))
    };
    Ok(Some(crate::upstream::Keepalive {
        time: secs(k.keepalive_time),
        interval: secs(k.keepalive_interval),
        probes: k.keepalive_probes.map(|v| v.value),
    }))
}

/// The default-priority thresholds; other priorities are never used, as
/// Weft routes everything at default priority.
fn apply_thresholds(c: &Cluster, limits: &mut Limits) -> Result<(), String> {
    let Some(cb) = &c.circuit_breakers else {
        return Ok(());
    };
    for t in cb.thresholds.iter().filter(|t| t.priority == 0) {
        if t.retry_budget.is_some() {
            return Err("circuit_breakers retry_budget is not supported".into());
        }
        let set = |v: Option<envoy_types::pb::google::protobuf::UInt32Value>, into: &mut u32| {
            if let Some(v) = v {
                *into = v.value;
            }
        };
        set(t.max_connections, &mut limits.max_connections);
        set(t.max_pending_requests, &mut limits.max_pending_requests);
        set(t.max_requests, &mut limits.max_requests);
        set(t.max_retries, &mut limits.max_retries);
    }
    Ok(())
}

/// The `istio` metadata's `services` list (as istiod writes it).
fn services(c: &Cluster) -> Vec<std::sync::Arc<crate::stats::ServiceMeta>> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let Some(istio) = c
        .metadata
        .as_ref()
        .and_then(|m| m.filter_metadata.get("istio"))
    else {
        return Vec::new();
    };
    let Some(Kind::ListValue(list)) = istio.fields.get("services").and_then(|v| v.kind.as_ref())
    else {
        return Vec::new();
    };
    list.values
        .iter()
        .filter_map(|v| match &v.kind {
            Some(Kind::StructValue(s)) => {
                let l = super::endpoints::labels(s);
                let field = |k: &str| l.get(k).cloned().unwrap_or_else(|| "unknown".into());
                Some(std::sync::Arc::new(crate::stats::ServiceMeta {
                    host: field("host"),
                    name: field("name"),
                    namespace: field("namespace"),
                }))
            }
            _ => None,
        })
        .collect()
}

pub(crate) fn compile_endpoints(cla: &ClusterLoadAssignment) -> Result<Endpoints, String> {
    Endpoints::from_assignment(cla)
}

/// Whether the cluster weighs localities (`locality_weighted_lb_config`);
/// zone-aware routing, the other locality mode, is refused.
fn locality_weighted(c: &Cluster) -> Result<bool, String> {
    use cluster::common_lb_config::LocalityConfigSpecifier as L;
    match c
        .common_lb_config
        .as_ref()
        .and_then(|l| l.locality_config_specifier.as_ref())
    {
        None => Ok(false),
        Some(L::LocalityWeightedLbConfig(_)) => Ok(true),
        Some(L::ZoneAwareLbConfig(_)) => {
            Err("common_lb_config zone_aware_lb_config is not supported".into())
        }
    }
}
