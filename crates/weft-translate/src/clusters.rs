//! Outbound clusters and their endpoints: one per service port, one more per
//! DestinationRule subset.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use weft_config::networking::{DestinationRule, Subset, TrafficPolicy};
use weft_config::Resource;
use weft_registry::{Registry, Resolution, Service, Workload};

use crate::envoy::{ads, socket};
use crate::{hashing, locality, mtls, pool};
use crate::{Inputs, ProxyResources};

pub const PASSTHROUGH: &str = "PassthroughCluster";
pub const INBOUND_PASSTHROUGH: &str = "InboundPassthroughCluster";
/// Where REGISTRY_ONLY sends what the registry does not know: a cluster
/// with no endpoints (TCP is closed, HTTP gets 502 before reaching it).
pub const BLACKHOLE: &str = "BlackHoleCluster";

/// Istio's cluster name: `direction|port|subset|host`.
pub fn cluster_name(direction: &str, port: u16, subset: &str, host: &str) -> String {
    format!("{direction}|{port}|{subset}|{host}")
}

pub(crate) fn outbound(inputs: &Inputs, proxy: &Workload, out: &mut ProxyResources) {
    for service in &inputs.registry.services {
        let rule = destination_rule(inputs.config, inputs.registry, service);
        for port in &service.ports {
            let top = rule.and_then(|r| r.traffic_policy.as_ref());
            let policy = merge(top, None, port.port);
            push_cluster(inputs, proxy, out, service, port, None, policy.as_ref());
            for subset in rule.map(|r| r.subsets.as_slice()).unwrap_or_default() {
                let merged = merge(top, subset.traffic_policy.as_ref(), port.port);
                push_cluster(
                    inputs,
                    proxy,
                    out,
                    service,
                    port,
                    Some(subset),
                    merged.as_ref(),
                );
            }
        }
    }
    out.clusters.push(original_dst(PASSTHROUGH));
    out.clusters.push(blackhole());
    let mut inbound = original_dst(INBOUND_PASSTHROUGH);
    bind_inbound(&mut inbound);
    out.clusters.push(inbound);
}

/// Inbound traffic to the pod's own address leaves from 127.0.0.6, which
/// the capture rules let through; from any other source it would be
/// captured again (istiod binds its inbound clusters the same way).
pub(crate) fn bind_inbound(c: &mut Cluster) {
    use envoy_types::pb::envoy::config::core::v3::{socket_address, BindConfig, SocketAddress};
    c.upstream_bind_config = Some(BindConfig {
        source_address: Some(SocketAddress {
            address: "127.0.0.6".into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
            ..Default::default()
        }),
        ..Default::default()
    });
}

/// The policy for `port` of a service or of one of its subsets, merged as
/// Istio merges them (port-level settings included).
pub(crate) fn merge(
    top: Option<&TrafficPolicy>,
    subset: Option<&TrafficPolicy>,
    port: u16,
) -> Option<TrafficPolicy> {
    match (top, subset) {
        (None, None) => None,
        (Some(t), None) => Some(t.at_port(port)),
        (None, Some(s)) => Some(TrafficPolicy::default().merged_for_subset(s, port)),
        (Some(t), Some(s)) => Some(t.merged_for_subset(s, port)),
    }
}

/// One EDS cluster and its endpoints, for the service or one subset of it;
/// the endpoints are grouped by locality for this proxy.
fn push_cluster(
    inputs: &Inputs,
    proxy: &Workload,
    out: &mut ProxyResources,
    service: &Service,
    port: &weft_registry::ServicePort,
    subset: Option<&Subset>,
    policy: Option<&TrafficPolicy>,
) {
    let (subset_name, labels) = match subset {
        Some(s) => (s.name.as_str(), s.labels.clone()),
        None => ("", BTreeMap::new()),
    };
    let name = cluster_name("outbound", port.port, subset_name, &service.fqdn());
    let protocol = weft_registry::Protocol::of(port);
    let mut cluster = eds_cluster(&name, protocol, policy);
    let endpoints = inputs.registry.endpoints(service, port, &labels);
    let mesh_socket = |tls: Option<&weft_config::networking::traffic::ClientTls>| {
        let named = tls.map(|t| t.subject_alt_names.clone()).unwrap_or_default();
        let sans = if named.is_empty() {
            let td = mtls::trust_domain(inputs.config);
            mtls::accounts(&td, endpoints.iter().map(|(_, w)| *w))
        } else {
            named
        };
        let sni = tls.and_then(|t| t.sni.clone());
        let sni = sni.unwrap_or_else(|| mtls::sni(port.port, subset_name, &service.fqdn()));
        mtls::upstream_socket(sni, &sans)
    };
    match policy.and_then(|p| p.tls.as_ref()) {
        Some(tls) if tls.mode.as_deref() == Some("ISTIO_MUTUAL") => {
            cluster.transport_socket = Some(mesh_socket(Some(tls)));
        }
        Some(tls)
            if tls.credential_name.is_some()
                && proxy.proxy == weft_registry::ProxyKind::Gateway =>
        {
            use crate::upstream_tls::credential_socket;
            match credential_socket(
                inputs.config,
                &proxy.namespace,
                tls,
                &service.fqdn(),
                protocol,
            ) {
                Ok((socket, secrets)) => {
                    cluster.transport_socket = Some(socket);
                    for secret in secrets {
                        if !out.secrets.iter().any(|s| s.name == secret.name) {
                            out.secrets.push(secret);
                        }
                    }
                }
                Err(e) => {
                    out.problems.push(format!(
                        "cluster {name}: {e}; no endpoints rather than plaintext"
                    ));
                    out.clusters.push(no_endpoints(&name));
                    return;
                }
            }
        }
        Some(tls) => {
            use crate::upstream_tls::transport_socket;
            match transport_socket(tls, &service.fqdn(), protocol) {
                Ok(socket) => cluster.transport_socket = socket,
                Err(e) => {
                    out.problems.push(format!("cluster {name}: {e}"));
                    out.clusters.push(no_endpoints(&name));
                    return;
                }
            }
        }
        // Proxyless gRPC clients have no certificate to present.
        None if proxy.proxy == weft_registry::ProxyKind::Proxyless => {}
        None if mtls::auto_applies(inputs.config, service) => {
            cluster.transport_socket_matches = mtls::auto_matches(mesh_socket(None));
        }
        None => {}
    }
    match service.entry.as_ref().map(|e| e.resolution) {
        Some(Resolution::None) => {
            let socket = cluster.transport_socket.take();
            out.clusters.push(Cluster {
                transport_socket: socket,
                ..original_dst(&name)
            });
            return;
        }
        Some(kind @ (Resolution::Dns | Resolution::DnsRoundRobin)) => {
            let entry = service.entry.as_ref().expect("matched an entry");
            dns_cluster(&mut cluster, kind, service, entry, port, &labels);
            out.clusters.push(cluster);
            return;
        }
        Some(Resolution::Static) | None => {}
    }
    out.clusters.push(cluster);
    let metadata: std::collections::HashMap<_, _> = endpoints
        .iter()
        .map(|(a, w)| (*a, mtls::endpoint_metadata(w)))
        .collect();
    out.endpoints.push(ClusterLoadAssignment {
        cluster_name: name,
        endpoints: locality::groups(endpoints, proxy, policy, |a| LbEndpoint {
            metadata: metadata.get(&a).cloned().flatten(),
            ..lb_endpoint_at(&a.ip().to_string(), a.port())
        }),
        ..Default::default()
    });
}

/// Turns an EDS cluster into one whose endpoints are names the proxy
/// resolves (Envoy STRICT_DNS, or LOGICAL_DNS for DNS_ROUND_ROBIN), as
/// istiod writes a DNS ServiceEntry's: the entry's endpoints that carry a
/// subset's `labels`, or the host itself. istiod's refresh rate (the mesh
/// default, 60 s) and the records' own TTLs set how often names are
/// looked up again. These are the cluster fields istiod writes (Envoy has
/// deprecated them for its DNS cluster extension, and still reads them).
#[allow(deprecated)]
fn dns_cluster(
    c: &mut Cluster,
    kind: Resolution,
    service: &Service,
    entry: &weft_registry::Entry,
    port: &weft_registry::ServicePort,
    labels: &BTreeMap<String, String>,
) {
    let discovery = if kind == Resolution::Dns {
        cluster::DiscoveryType::StrictDns
    } else {
        cluster::DiscoveryType::LogicalDns
    };
    c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(discovery as i32));
    c.eds_cluster_config = None;
    c.dns_refresh_rate = Some(envoy_types::pb::google::protobuf::Duration {
        seconds: 60,
        nanos: 0,
    });
    c.respect_dns_ttl = true;
    c.dns_lookup_family = cluster::DnsLookupFamily::V4Only as i32;
    let mut lb_endpoints: Vec<LbEndpoint> = entry
        .dns
        .iter()
        .filter(|e| labels.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
        .map(|e| {
            let mut ep = lb_endpoint_at(&e.address, e.port(port));
            ep.load_balancing_weight = e.weight.map(|value| UInt32Value { value });
            ep
        })
        .collect();
    if entry.dns.is_empty() {
        lb_endpoints.push(lb_endpoint_at(&service.name, port.target()));
    }
    c.load_assignment = Some(ClusterLoadAssignment {
        cluster_name: c.name.clone(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }],
        ..Default::default()
    });
}

/// The DestinationRule for a service: Istio picks the one in the service's
/// namespace first, then any other that names it (sorted, so the pick is stable).
pub(crate) fn destination_rule<'a>(
    config: &'a [Resource],
    registry: &Registry,
    service: &Service,
) -> Option<&'a DestinationRule> {
    let fqdn = service.fqdn();
    let mut rules: Vec<&Resource> = config
        .iter()
        .filter(|r| {
            r.as_destination_rule()
                .is_some_and(|dr| registry.qualify(&dr.host, r.namespace()) == fqdn)
        })
        .collect();
    rules.sort_by_key(|r| (r.namespace() != service.namespace, r.key()));
    rules.first().and_then(|r| r.as_destination_rule())
}

/// The cluster's load balancer. With no algorithm named (no rule, no
/// `loadBalancer`, `UNSPECIFIED`), istiod's default: LEAST_REQUEST (Envoy's
/// own default, round robin, only where named).
fn lb_policy(policy: Option<&TrafficPolicy>) -> cluster::LbPolicy {
    let Some(lb) = policy.and_then(|p| p.load_balancer.as_ref()) else {
        return cluster::LbPolicy::LeastRequest;
    };
    if lb.consistent_hash.is_some() {
        return if hashing::is_maglev(policy) {
            cluster::LbPolicy::Maglev
        } else {
            cluster::LbPolicy::RingHash
        };
    }
    match lb.simple.as_deref() {
        Some("RANDOM") => cluster::LbPolicy::Random,
        Some("ROUND_ROBIN") => cluster::LbPolicy::RoundRobin,
        Some("PASSTHROUGH") => cluster::LbPolicy::ClusterProvided,
        _ => cluster::LbPolicy::LeastRequest,
    }
}

fn eds_cluster(
    name: &str,
    protocol: weft_registry::Protocol,
    policy: Option<&TrafficPolicy>,
) -> Cluster {
    // PASSTHROUGH: connect where the client meant to, as istiod writes it.
    if lb_policy(policy) == cluster::LbPolicy::ClusterProvided {
        return original_dst(name);
    }
    let mut c = Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: name.into(),
        }),
        lb_policy: lb_policy(policy) as i32,
        lb_config: hashing::lb_config(policy),
        ..pool::outlier(
            pool::apply(
                Cluster::default(),
                protocol,
                policy.and_then(|p| p.connection_pool.as_ref()),
                policy.and_then(|p| p.outlier_detection.as_ref()),
            ),
            policy.and_then(|p| p.outlier_detection.as_ref()),
        )
    };
    if locality::weighted(policy) {
        c.common_lb_config
            .get_or_insert_with(Default::default)
            .locality_config_specifier = Some(
            cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                Default::default(),
            ),
        );
    }
    c
}

fn original_dst(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        // Istio's defaults: no circuit-breaker limit (not Envoy's 1024).
        ..pool::apply(Cluster::default(), weft_registry::Protocol::Tcp, None, None)
    }
}

fn blackhole() -> Cluster {
    no_endpoints(BLACKHOLE)
}

/// A cluster that goes nowhere (requests to it get 503 UH, connections
/// are closed).
fn no_endpoints(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        ..Default::default()
    }
}

/// A cluster with fixed endpoints and its assignment inline (inbound).
pub(crate) fn static_cluster(
    name: &str,
    ip: &str,
    port: u16,
    protocol: weft_registry::Protocol,
) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![lb_endpoint_at(ip, port)],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..pool::apply(Cluster::default(), protocol, None, None)
    }
}

fn lb_endpoint_at(ip: &str, port: u16) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket(ip, u32::from(port))),
            ..Default::default()
        })),
        health_status: HealthStatus::Healthy as i32,
        ..Default::default()
    }
}
