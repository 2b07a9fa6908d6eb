//! Clusters and their endpoints, with the load balancer state they need.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment};
use serde::Serialize;

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
}

/// A cluster's hosts, with the priority of each (0 is preferred; levels
/// come from EDS, where istiod ranks localities by nearness).
#[derive(Debug, Default, Serialize)]
pub struct Endpoints {
    pub addresses: Vec<SocketAddr>,
    pub priorities: Vec<u32>,
    /// Whether the hosts span more than one priority.
    #[serde(skip)]
    tiered: bool,
}

impl Endpoints {
    fn new(hosts: Vec<(SocketAddr, u32)>) -> Endpoints {
        let (addresses, priorities): (Vec<_>, Vec<_>) = hosts.into_iter().unzip();
        let tiered = priorities.windows(2).any(|w| w[0] != w[1]);
        Endpoints {
            addresses,
            priorities,
            tiered,
        }
    }
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
    /// Circuit-breaker limits and their live counts, shared by the workers.
    pub breaker: std::sync::Arc<crate::upstream::Breaker>,
    /// Outlier detection's per-host records, when the cluster asks for it.
    pub outliers: Option<Outliers>,
    /// Below this percentage of hosts not ejected, balance over all of
    /// them anyway (Envoy's panic threshold, 50% by default; Istio sets 0).
    pub panic_threshold: u32,
    pub endpoints: Endpoints,
}

impl ClusterCfg {
    /// How to reach one of this cluster's endpoints.
    pub(crate) fn peer(&self, addr: SocketAddr) -> crate::upstream::Peer {
        crate::upstream::Peer {
            addr,
            bind_source: self.bind_source,
            connect_timeout: self.connect_timeout,
            idle_timeout: self.idle_timeout,
            max_connection_duration: self.max_connection_duration,
            keepalive: self.keepalive,
        }
    }

    /// The endpoint for the next request or connection, skipping ejected
    /// hosts (unless so many are out that Envoy's panic threshold says to
    /// use them all); `hash` is the request's hash for consistent
    /// balancers. None when no host is usable (Envoy's "no healthy
    /// upstream", flag UH).
    pub fn pick(&self, original_dst: SocketAddr, hash: Option<u64>) -> Option<SocketAddr> {
        self.pick_excluding(original_dst, hash, &[])
    }

    /// `pick`, treating the `exclude`d hosts as unusable (a retry that
    /// should leave the hosts, and so the priorities, already tried); with
    /// every host excluded, the plain pick.
    pub fn pick_excluding(
        &self,
        original_dst: SocketAddr,
        hash: Option<u64>,
        exclude: &[SocketAddr],
    ) -> Option<SocketAddr> {
        if self.kind == ClusterKind::OriginalDst {
            return Some(original_dst);
        }
        let eps = &self.endpoints.addresses;
        let n = eps.len();
        let outliers = self.outliers.as_ref().filter(|o| {
            let healthy = (0..n).filter(|i| !o.is_ejected(*i)).count();
            // In panic, every host is used, ejected or not.
            healthy * 100 >= self.panic_threshold as usize * n
        });
        let usable =
            |i: usize| outliers.is_none_or(|o| !o.is_ejected(i)) && !exclude.contains(&eps[i]);
        if !exclude.is_empty() && !(0..n).any(usable) {
            return self.pick_excluding(original_dst, hash, &[]);
        }
        if !self.endpoints.tiered {
            return self.lb.choose(n, hash, usable).map(|i| eps[i]);
        }
        // The best priority with a usable host takes every request (Envoy
        // would spill a share to the next level as the first degrades; Weft
        // moves when the level has no usable host left).
        let prio = &self.endpoints.priorities;
        let best = (0..n).filter(|i| usable(*i)).map(|i| prio[i]).min()?;
        self.lb
            .choose(n, hash, |i| prio[i] == best && usable(i))
            .map(|i| eps[i])
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

pub(crate) fn compile_cluster(
    c: &Cluster,
    eds: Option<&[(SocketAddr, u32)]>,
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
        _ => {
            return Err(
                "discovery type must be STATIC, EDS or ORIGINAL_DST (DNS is not supported)".into(),
            )
        }
    };
    let policy =
        P::try_from(c.lb_policy).map_err(|_| format!("unknown lb_policy {}", c.lb_policy))?;
    if c.transport_socket.is_some() {
        return Err("transport_socket (upstream TLS) is not supported yet".into());
    }
    let (mut limits, idle_timeout, max_connection_duration) = http_options(c)?;
    let keepalive = keepalive(c)?;
    apply_thresholds(c, &mut limits)?;
    let hosts = match kind {
        ClusterKind::Eds => eds.map(<[(SocketAddr, u32)]>::to_vec).unwrap_or_default(),
        ClusterKind::Static => c
            .load_assignment
            .as_ref()
            .map(endpoint_addresses)
            .transpose()?
            .unwrap_or_default(),
        ClusterKind::OriginalDst => Vec::new(),
    };
    let endpoints = Endpoints::new(hosts);
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

/// The cluster's HTTP protocol options: requests per connection and the
/// idle timeout; HTTP/1.1 only (HTTP/2 upstreams are not built yet).
#[allow(deprecated)] // `max_requests_per_connection` on the cluster itself.
fn http_options(
    c: &Cluster,
) -> Result<(Limits, std::time::Duration, Option<std::time::Duration>), String> {
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
        http_protocol_options::{explicit_http_config::ProtocolConfig, UpstreamProtocolOptions},
        HttpProtocolOptions,
    };
    let mut limits = Limits {
        max_requests_per_connection: c
            .max_requests_per_connection
            .map(|v| v.value)
            .filter(|v| *v > 0),
        ..Limits::default()
    };
    let mut idle = std::time::Duration::from_secs(3600);
    let mut max_duration = None;
    for (name, any) in &c.typed_extension_protocol_options {
        if name != HTTP_OPTIONS {
            return Err(format!(
                "typed_extension_protocol_options {name:?} is not supported"
            ));
        }
        let o: HttpProtocolOptions = super::unpack(any)?;
        match &o.upstream_protocol_options {
            None => {}
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e))
                if matches!(e.protocol_config, None | Some(ProtocolConfig::HttpProtocolOptions(_))) => {}
            Some(_) => {
                return Err("upstream HTTP/2, HTTP/3 and protocol selection are not supported yet (HTTP/1.1 only)".into())
            }
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
                limits.max_requests_per_connection = Some(max);
            }
            if let Some(d) = common.idle_timeout.as_ref() {
                idle = super::duration(d)?;
            }
            if let Some(d) = common.max_connection_duration.as_ref() {
                max_duration = Some(super::duration(d)?).filter(|d| !d.is_zero());
            }
        }
    }
    Ok((limits, idle, max_duration))
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

pub(crate) fn compile_endpoints(
    cla: &ClusterLoadAssignment,
) -> Result<Vec<(SocketAddr, u32)>, String> {
    endpoint_addresses(cla)
}

/// Healthy (or unknown-health) endpoints of every locality, each with its
/// locality's priority. Locality weights (`load_balancing_weight`) are
/// refused: locality-weighted balancing is not built.
fn endpoint_addresses(cla: &ClusterLoadAssignment) -> Result<Vec<(SocketAddr, u32)>, String> {
    let mut out = Vec::new();
    for locality in &cla.endpoints {
        if locality.load_balancing_weight.is_some() {
            return Err("locality load_balancing_weight is not supported yet".into());
        }
        for ep in &locality.lb_endpoints {
            let usable = ep.health_status == HealthStatus::Unknown as i32
                || ep.health_status == HealthStatus::Healthy as i32;
            match &ep.host_identifier {
                Some(lb_endpoint::HostIdentifier::Endpoint(e)) if usable => {
                    out.push((socket_addr(&e.address)?, locality.priority))
                }
                Some(lb_endpoint::HostIdentifier::Endpoint(_)) => {}
                _ => return Err("named endpoints are not supported".into()),
            }
        }
    }
    Ok(out)
}
