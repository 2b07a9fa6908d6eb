//! Clusters and their endpoints, with the load balancer state they need.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment};
use serde::Serialize;

use super::socket_addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ClusterKind {
    /// Endpoints come from EDS.
    Eds,
    /// Endpoints are inline.
    Static,
    /// The upstream is the connection's original destination.
    OriginalDst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LbPolicy {
    RoundRobin,
    Random,
}

#[derive(Debug, Default, Serialize)]
pub struct Endpoints {
    pub addresses: Vec<SocketAddr>,
    #[serde(skip)]
    next: AtomicUsize,
}

#[derive(Debug, Serialize)]
pub struct ClusterCfg {
    pub name: String,
    pub kind: ClusterKind,
    pub lb: LbPolicy,
    pub connect_timeout: std::time::Duration,
    /// Source address for upstream connections (`upstream_bind_config`);
    /// Istio binds inbound passthrough to 127.0.0.6 so iptables lets it by.
    pub bind_source: Option<std::net::IpAddr>,
    pub endpoints: Endpoints,
}

impl ClusterCfg {
    /// How to reach one of this cluster's endpoints.
    pub(crate) fn peer(&self, addr: SocketAddr) -> crate::upstream::Peer {
        crate::upstream::Peer {
            addr,
            bind_source: self.bind_source,
            connect_timeout: self.connect_timeout,
        }
    }

    /// The endpoint for the next request or connection; None when the
    /// cluster has no endpoint (Envoy's "no healthy upstream", flag UH).
    pub fn pick(&self, original_dst: SocketAddr) -> Option<SocketAddr> {
        if self.kind == ClusterKind::OriginalDst {
            return Some(original_dst);
        }
        let eps = &self.endpoints.addresses;
        if eps.is_empty() {
            return None;
        }
        let i = match self.lb {
            LbPolicy::RoundRobin => self.endpoints.next.fetch_add(1, Ordering::Relaxed),
            LbPolicy::Random => fastrand::usize(..eps.len()),
        };
        Some(eps[i % eps.len()])
    }
}

pub(crate) fn compile_cluster(
    c: &Cluster,
    eds: Option<&[SocketAddr]>,
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
    let lb = match P::try_from(c.lb_policy) {
        Ok(P::RoundRobin) => LbPolicy::RoundRobin,
        Ok(P::Random) => LbPolicy::Random,
        Ok(P::ClusterProvided) if kind == ClusterKind::OriginalDst => LbPolicy::RoundRobin,
        Ok(other) => {
            return Err(format!(
                "lb_policy {} is not supported",
                other.as_str_name()
            ))
        }
        Err(_) => return Err(format!("unknown lb_policy {}", c.lb_policy)),
    };
    if c.transport_socket.is_some() {
        return Err("transport_socket (upstream TLS) is not supported yet".into());
    }
    if c.circuit_breakers.is_some() || c.outlier_detection.is_some() {
        return Err("circuit_breakers and outlier_detection are not supported yet".into());
    }
    let addresses = match kind {
        ClusterKind::Eds => eds.map(<[SocketAddr]>::to_vec).unwrap_or_default(),
        ClusterKind::Static => c
            .load_assignment
            .as_ref()
            .map(endpoint_addresses)
            .transpose()?
            .unwrap_or_default(),
        ClusterKind::OriginalDst => Vec::new(),
    };
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
    Ok(ClusterCfg {
        name: c.name.clone(),
        kind,
        lb,
        connect_timeout,
        bind_source,
        endpoints: Endpoints {
            addresses,
            next: AtomicUsize::new(0),
        },
    })
}

pub(crate) fn compile_endpoints(cla: &ClusterLoadAssignment) -> Result<Vec<SocketAddr>, String> {
    endpoint_addresses(cla)
}

/// Healthy (or unknown-health) endpoints of all localities, flattened:
/// Weft does not do locality-weighted balancing yet.
fn endpoint_addresses(cla: &ClusterLoadAssignment) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for locality in &cla.endpoints {
        for ep in &locality.lb_endpoints {
            let usable = ep.health_status == HealthStatus::Unknown as i32
                || ep.health_status == HealthStatus::Healthy as i32;
            match &ep.host_identifier {
                Some(lb_endpoint::HostIdentifier::Endpoint(e)) if usable => {
                    out.push(socket_addr(&e.address)?)
                }
                Some(lb_endpoint::HostIdentifier::Endpoint(_)) => {}
                _ => return Err("named endpoints are not supported".into()),
            }
        }
    }
    Ok(out)
}
