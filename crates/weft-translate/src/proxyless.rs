//! xDS for proxyless gRPC clients (node metadata `GENERATOR: grpc`), as
//! istiod's gRPC generator writes it. gRPC has no listeners of its own: it
//! dials `xds:///host:port` and asks for a Listener of that name, an
//! `api_listener` whose connection manager names a route table; the route
//! table's virtual host for the authority picks clusters, and clusters
//! their endpoints. gRPC validates everything it is sent and knows fewer
//! extensions than Envoy, so these resources carry only what it reads:
//! the fault filter and the router, EDS clusters with round robin or ring
//! hash, circuit-breaker limits.

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::util::pack_any;
use weft_registry::Workload;

use crate::envoy::grpc_connection_manager;
use crate::{clusters, policies, sidecar, Inputs, ProxyResources};

/// Every listener, route table, cluster and endpoint set a proxyless
/// client in `proxy`'s place may ask for; the xDS server sends only the
/// ones it names.
pub fn translate_proxyless(inputs: &Inputs, proxy: &Workload) -> ProxyResources {
    let mut all = ProxyResources::default();
    clusters::outbound(inputs, proxy, &mut all);
    let mut out = ProxyResources {
        clusters: all.clusters.into_iter().filter_map(for_grpc).collect(),
        endpoints: all.endpoints.into_iter().map(located).collect(),
        ..Default::default()
    };
    for service in &inputs.registry.services {
        for port in &service.ports {
            let table = format!("{}:{}", service.fqdn(), port.port);
            for alias in service.aliases(&proxy.namespace) {
                out.listeners
                    .push(api_listener(&format!("{alias}:{}", port.port), &table));
            }
            let host = sidecar::service_virtual_host(inputs, proxy, service, port.port);
            out.routes.push(RouteConfiguration {
                name: table,
                virtual_hosts: vec![for_grpc_host(host)],
                ..Default::default()
            });
        }
    }
    out
}

/// gRPC requires every endpoint group to name a locality: endpoints of
/// pods with none get the empty one, which is what Envoy assumes for them.
fn located(mut assignment: ClusterLoadAssignment) -> ClusterLoadAssignment {
    for group in &mut assignment.endpoints {
        group.locality.get_or_insert_with(Default::default);
    }
    assignment
}

fn api_listener(name: &str, route_table: &str) -> Listener {
    Listener {
        name: name.into(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack_any(grpc_connection_manager(route_table))),
        }),
        ..Default::default()
    }
}

/// The routes as Envoy gets them, less per-route config for filters gRPC
/// does not run (it rejects a route table naming one).
fn for_grpc_host(mut host: VirtualHost) -> VirtualHost {
    for route in &mut host.routes {
        route
            .typed_per_filter_config
            .retain(|filter, _| filter == policies::FAULT);
    }
    host.typed_per_filter_config
        .retain(|filter, _| filter == policies::FAULT);
    host
}

/// An EDS cluster as gRPC takes it: its endpoints over ADS, round robin or
/// (for consistent hashing) ring hash, which are the policies istiod's gRPC
/// generator writes, and the request limit. Other clusters (original
/// destination passthrough) have no meaning to gRPC.
fn for_grpc(c: Cluster) -> Option<Cluster> {
    let eds = cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Eds as i32);
    if c.cluster_discovery_type != Some(eds) {
        return None;
    }
    let hashing = matches!(
        c.lb_policy(),
        cluster::LbPolicy::RingHash | cluster::LbPolicy::Maglev
    );
    Some(Cluster {
        name: c.name,
        cluster_discovery_type: c.cluster_discovery_type,
        eds_cluster_config: c.eds_cluster_config,
        lb_policy: if hashing {
            cluster::LbPolicy::RingHash
        } else {
            cluster::LbPolicy::RoundRobin
        } as i32,
        lb_config: if hashing {
            c.lb_config
                .filter(|l| matches!(l, cluster::LbConfig::RingHashLbConfig(_)))
        } else {
            None
        },
        circuit_breakers: c.circuit_breakers,
        ..Default::default()
    })
}
