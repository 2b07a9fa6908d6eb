//! VirtualService `tcp[]` routes → the tcp_proxy of a service's outbound
//! TCP listener: the first route whose matches apply to this proxy and
//! this listener wins; its destinations become one cluster or weighted
//! clusters (Istio's TCP traffic shifting). No route: the service's own
//! cluster. The idle timeout is `connectionPool.tcp.idleTimeout` of the
//! first destination's DestinationRule (its top-level policy, as istiod
//! reads it).

use std::net::IpAddr;

use envoy_types::pb::envoy::config::listener::v3::Filter;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::{
    weighted_cluster::ClusterWeight, ClusterSpecifier, WeightedCluster,
};
use weft_config::networking::http_policies::L4Match;
use weft_config::networking::virtual_service::{RouteDestination, TcpRoute};
use weft_config::networking::VirtualService;
use weft_registry::{Service, Workload};

use crate::clusters::cluster_name;
use crate::envoy::tcp_proxy_to;
use crate::routes::{destination_cluster, source_fits, Scope};
use crate::Inputs;

/// The tcp_proxy filter for `service`'s TCP `port` on `vip` (none: a
/// ServiceEntry port served on every address).
pub(crate) fn outbound_filter(
    inputs: &Inputs,
    proxy: &Workload,
    service: &Service,
    port: u16,
    vip: Option<IpAddr>,
) -> Filter {
    let fqdn = service.fqdn();
    let default = cluster_name("outbound", port, "", &fqdn);
    let chosen = crate::sidecar::mesh_virtual_services(inputs)
        .filter_map(|r| Some((r, r.as_virtual_service()?)))
        .filter(|(r, vs)| {
            vs.hosts
                .iter()
                .any(|h| inputs.registry.qualify(h, r.namespace()) == fqdn)
        })
        .find_map(|(r, vs)| {
            let scope = Scope::sidecar(inputs, proxy, r.namespace(), port);
            let route = vs.tcp.iter().find(|t| applies(t, &scope, vip))?;
            let first = route.route.first().map(|d| {
                let host = &d.destination.host;
                (host.clone(), r.namespace().to_string())
            });
            Some((specifier(&route.route, &scope), first))
        });
    let (specifier, first) = match chosen {
        Some((s, first)) => (s, first),
        None => (ClusterSpecifier::Cluster(default.clone()), None),
    };
    let (host, namespace) = first.unwrap_or((fqdn, service.namespace.clone()));
    tcp_proxy_to(default, specifier, idle_timeout(inputs, &host, &namespace))
}

/// The tcp_proxy filter for an L4 (TCP or TLS) route's destinations, its
/// idle timeout from the first destination's DestinationRule.
pub(crate) fn route_filter(route: &[RouteDestination], scope: &Scope) -> Filter {
    let first = route.first().map(|d| d.destination.host.as_str());
    let stat_prefix = route
        .first()
        .map(|d| destination_cluster(&d.destination, scope))
        .unwrap_or_default();
    let inputs = Inputs::new(scope.config, scope.registry);
    let idle = first.and_then(|h| idle_timeout(&inputs, h, scope.namespace));
    tcp_proxy_to(stat_prefix, specifier(route, scope), idle)
}

/// `connectionPool.tcp.idleTimeout` of `host`'s DestinationRule (unset:
/// Envoy's default of one hour).
fn idle_timeout(
    inputs: &Inputs,
    host: &str,
    namespace: &str,
) -> Option<envoy_types::pb::google::protobuf::Duration> {
    let service = inputs.registry.service(host, namespace)?;
    let rule = crate::clusters::destination_rule(inputs.config, inputs.registry, service)?;
    let tcp = rule
        .traffic_policy
        .as_ref()?
        .connection_pool
        .as_ref()?
        .tcp
        .as_ref()?;
    tcp.idle_timeout
        .as_ref()
        .and_then(|d| d.parse())
        .map(crate::policies::duration)
}

/// A route with no match applies everywhere; otherwise one of its matches
/// must fit: port, source labels and namespace, `mesh` among its gateways,
/// and the VIP inside one of its destination subnets.
fn applies(route: &TcpRoute, scope: &Scope, vip: Option<IpAddr>) -> bool {
    route.matches.is_empty() || route.matches.iter().any(|m| fits(m, scope, vip))
}

/// Whether an L4 match applies to this proxy and listener: port, source
/// labels and namespace, its gateways, and (where the listener has one)
/// the VIP inside one of its destination subnets.
pub(crate) fn fits(m: &L4Match, scope: &Scope, vip: Option<IpAddr>) -> bool {
    source_fits(
        m.port,
        &m.source_labels,
        m.source_namespace.as_ref(),
        &m.gateways,
        scope,
    ) && (m.destination_subnets.is_empty()
        || vip.is_none_or(|vip| m.destination_subnets.iter().any(|c| in_subnet(vip, c))))
}

/// The TCP route of a gateway's TCP or TLS-terminating server: the first
/// whose matches fit (or that has none).
pub(crate) fn gateway_route<'a>(vs: &'a VirtualService, scope: &Scope) -> Option<&'a TcpRoute> {
    vs.tcp
        .iter()
        .find(|t| t.matches.is_empty() || t.matches.iter().any(|m| fits(m, scope, None)))
}

fn specifier(route: &[RouteDestination], scope: &Scope) -> ClusterSpecifier {
    match route {
        [only] => ClusterSpecifier::Cluster(destination_cluster(&only.destination, scope)),
        many => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many
                .iter()
                .map(|d| ClusterWeight {
                    name: destination_cluster(&d.destination, scope),
                    weight: u32::try_from(d.weight.unwrap_or(0)).unwrap_or(0),
                    ..Default::default()
                })
                .collect(),
        }),
    }
}

/// Whether `ip` lies in `cidr` (`a.b.c.d/n`, `x::/n`, or a bare address).
fn in_subnet(ip: IpAddr, cidr: &str) -> bool {
    let (addr, len) = cidr.split_once('/').unwrap_or((cidr, ""));
    let Ok(net) = addr.parse::<IpAddr>() else {
        return false;
    };
    let bits = |ip: IpAddr| -> (u128, u32) {
        match ip {
            IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
            IpAddr::V6(v) => (u128::from(v), 128),
        }
    };
    let ((a, width), (b, width_b)) = (bits(ip), bits(net));
    if width != width_b {
        return false;
    }
    let len: u32 = if len.is_empty() {
        width
    } else {
        len.parse().unwrap_or(u32::MAX)
    };
    if len > width {
        return false;
    }
    let shift = width - len;
    len == 0 || (a >> shift) == (b >> shift)
}

#[cfg(test)]
mod tests {
    use super::in_subnet;

    #[test]
    fn subnets() {
        let ip = "198.19.0.14".parse().unwrap();
        assert!(in_subnet(ip, "198.19.0.0/16"));
        assert!(in_subnet(ip, "198.19.0.14"));
        assert!(in_subnet(ip, "0.0.0.0/0"));
        assert!(!in_subnet(ip, "198.18.0.0/16"));
        assert!(!in_subnet(ip, "::/0"));
    }
}
