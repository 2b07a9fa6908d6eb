//! Istio's standard metrics, wired as istiod wires them: every sidecar
//! and gateway chain gets the `istio.stats` filter (HTTP: just before the
//! router; TCP: in front of `tcp_proxy`), each listener says its traffic
//! direction (which makes the reporter `destination` inbound and `source`
//! elsewhere), and each cluster names its service in `istio` metadata
//! (`services: [{host, name, namespace}]`) for the `destination_service*`
//! labels.
//!
//! The filter's config is Istio's `stats.PluginConfig`, from the
//! Telemetry API's metrics (`telemetry`): empty for the standard metrics;
//! a side whose metrics are all disabled gets no filter.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{Metadata, TrafficDirection};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::google::protobuf::{value::Kind, Any, ListValue, Struct, Value};
use weft_registry::{Registry, Service, Workload};
use weft_xds::stats_config::PluginConfig;

use crate::ProxyResources;
use envoy_types::util::pack_any;

/// The filter's name, in connection managers and network chains alike.
pub const NAME: &str = "istio.stats";
fn config(c: &PluginConfig) -> Any {
    Any {
        type_url: weft_xds::stats_config::TYPE_URL.into(),
        value: prost::Message::encode_to_vec(c),
    }
}

/// Adds the filter to every chain, the direction to every listener and
/// the service metadata to every cluster of a sidecar or gateway.
pub(crate) fn apply(inputs: &crate::Inputs, proxy: &Workload, out: &mut ProxyResources) {
    let sides = crate::telemetry::metrics_for(inputs.config, proxy);
    for l in &mut out.listeners {
        add_to_listener(l, &sides);
    }
    let registry = inputs.registry;
    for c in &mut out.clusters {
        let services = services_of_cluster(registry, proxy, &c.name);
        if !services.is_empty() {
            set_metadata(c, &services);
        }
    }
}

fn add_to_listener(l: &mut Listener, sides: &crate::telemetry::Sides) {
    let inbound = l.name == crate::sidecar::VIRTUAL_INBOUND;
    l.traffic_direction = if inbound {
        TrafficDirection::Inbound as i32
    } else {
        TrafficDirection::Outbound as i32
    };
    let side = if inbound {
        &sides.server
    } else {
        &sides.client
    };
    let Some(side) = side else {
        return;
    };
    for chain in &mut l.filter_chains {
        let Some(last) = chain.filters.last_mut() else {
            continue;
        };
        let Some(filter::ConfigType::TypedConfig(any)) = &mut last.config_type else {
            continue;
        };
        if any.type_url.ends_with(".TcpProxy") {
            let at = chain.filters.len() - 1;
            chain.filters.insert(
                at,
                Filter {
                    name: NAME.into(),
                    config_type: Some(filter::ConfigType::TypedConfig(config(side))),
                },
            );
        } else if any.type_url.ends_with(".HttpConnectionManager") {
            add_before_router(any, side);
        }
    }
}

fn add_before_router(any: &mut Any, side: &PluginConfig) {
    let Ok(mut hcm) = <HttpConnectionManager as prost::Message>::decode(any.value.as_slice())
    else {
        return;
    };
    if hcm.http_filters.iter().any(|f| f.name == NAME) {
        return;
    }
    let at = hcm.http_filters.len().saturating_sub(1);
    hcm.http_filters.insert(
        at,
        HttpFilter {
            name: NAME.into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(config(side))),
            ..Default::default()
        },
    );
    *any = pack_any(hcm);
}

/// The services behind a cluster: an outbound cluster's host
/// (`outbound|port|subset|host`), or the proxy's own services on an
/// inbound cluster's port (`inbound|port||`).
fn services_of_cluster<'a>(
    registry: &'a Registry,
    proxy: &'a Workload,
    cluster: &str,
) -> Vec<&'a Service> {
    let mut parts = cluster.split('|');
    match (parts.next(), parts.next(), parts.nth(1)) {
        (Some("outbound"), Some(_), Some(host)) => registry
            .services
            .iter()
            .filter(|s| s.fqdn() == host)
            .take(1)
            .collect(),
        (Some("inbound"), Some(port), _) => {
            let Ok(port) = port.parse::<u16>() else {
                return Vec::new();
            };
            registry
                .services_of(proxy)
                .filter(|s| s.ports.iter().any(|p| proxy.serves(p) == Some(port)))
                .collect()
        }
        _ => Vec::new(),
    }
}

fn text(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

fn set_metadata(c: &mut Cluster, services: &[&Service]) {
    let list = services
        .iter()
        .map(|s| Value {
            kind: Some(Kind::StructValue(Struct {
                fields: [
                    ("host".to_string(), text(&s.fqdn())),
                    ("name".to_string(), text(&s.name)),
                    ("namespace".to_string(), text(&s.namespace)),
                ]
                .into_iter()
                .collect(),
            })),
        })
        .collect();
    let istio = Struct {
        fields: [(
            "services".to_string(),
            Value {
                kind: Some(Kind::ListValue(ListValue { values: list })),
            },
        )]
        .into_iter()
        .collect(),
    };
    c.metadata
        .get_or_insert_with(Metadata::default)
        .filter_metadata
        .insert("istio".into(), istio);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chain_records_and_clusters_name_their_service() {
        let out = crate::tests::translated_with(crate::tests::CONFIG, 0);
        let inbound = out
            .listeners
            .iter()
            .find(|l| l.name == crate::sidecar::VIRTUAL_INBOUND)
            .expect("virtualInbound");
        assert_eq!(inbound.traffic_direction, TrafficDirection::Inbound as i32);
        for l in &out.listeners {
            for chain in &l.filter_chains {
                let names = chain_filter_names(chain);
                assert!(names.iter().any(|n| n == NAME), "{} {names:?}", l.name);
            }
        }
        let ratings = out
            .clusters
            .iter()
            .find(|c| c.name == "outbound|9080||reviews.default.svc.cluster.local")
            .expect("reviews cluster");
        let meta = &ratings.metadata.as_ref().unwrap().filter_metadata["istio"];
        let Some(Kind::ListValue(l)) = &meta.fields["services"].kind else {
            panic!("{meta:?}")
        };
        let Some(Kind::StructValue(s)) = &l.values[0].kind else {
            panic!()
        };
        assert_eq!(s.fields["name"], text("reviews"));
        let own = out
            .clusters
            .iter()
            .find(|c| c.name == "inbound|9080||")
            .unwrap();
        assert!(own.metadata.is_some(), "inbound cluster names reviews");
    }

    /// Network filter names, and the HTTP filters of a connection manager.
    fn chain_filter_names(
        chain: &envoy_types::pb::envoy::config::listener::v3::FilterChain,
    ) -> Vec<String> {
        let mut names = Vec::new();
        for f in &chain.filters {
            names.push(f.name.clone());
            if let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type {
                if any.type_url.ends_with(".HttpConnectionManager") {
                    let hcm: HttpConnectionManager =
                        prost::Message::decode(any.value.as_slice()).unwrap();
                    names.extend(hcm.http_filters.iter().map(|h| h.name.clone()));
                }
            }
        }
        names
    }
}
