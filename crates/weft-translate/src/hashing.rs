//! DestinationRule `consistentHash` → the cluster's ring-hash or Maglev
//! balancer, and the hash policy istiod puts on every route to it (the key:
//! a header, a cookie, the source IP or a query parameter).

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    LbConfig, MaglevLbConfig, RingHashLbConfig,
};
use envoy_types::pb::envoy::config::route::v3::route_action::{hash_policy, HashPolicy};
use envoy_types::pb::google::protobuf::UInt64Value;
use weft_config::networking::traffic::ConsistentHash;
use weft_config::networking::{Destination, TrafficPolicy};

use crate::clusters::{destination_rule, merge};
use crate::policies::duration;
use crate::routes::Scope;

fn consistent(policy: Option<&TrafficPolicy>) -> Option<&ConsistentHash> {
    policy?.load_balancer.as_ref()?.consistent_hash.as_ref()
}

/// Whether the policy asks for Maglev (else ring hash, Istio's default).
pub(crate) fn is_maglev(policy: Option<&TrafficPolicy>) -> bool {
    consistent(policy).is_some_and(|c| c.maglev.is_some())
}

pub(crate) fn lb_config(policy: Option<&TrafficPolicy>) -> Option<LbConfig> {
    let c = consistent(policy)?;
    if let Some(m) = &c.maglev {
        return Some(LbConfig::MaglevLbConfig(MaglevLbConfig {
            table_size: m.table_size.map(|value| UInt64Value { value }),
        }));
    }
    let min = c
        .ring_hash
        .as_ref()
        .and_then(|r| r.minimum_ring_size)
        .or(c.minimum_ring_size);
    Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
        minimum_ring_size: min.map(|value| UInt64Value { value }),
        ..Default::default()
    }))
}

/// The hash policy for a route to `destinations`: the consistent hash of
/// their DestinationRule (subset policy over the rule's), when they all
/// agree on one.
pub(crate) fn route_hash_policy<'a>(
    destinations: impl Iterator<Item = &'a Destination>,
    scope: &Scope,
) -> Vec<HashPolicy> {
    let mut chosen: Option<Vec<HashPolicy>> = None;
    for d in destinations {
        let policy = destination_policy(d, scope);
        let this = consistent(policy.as_ref())
            .map(to_envoy)
            .unwrap_or_default();
        match &chosen {
            None => chosen = Some(this),
            Some(c) if *c == this => {}
            Some(_) => return Vec::new(),
        }
    }
    chosen.unwrap_or_default()
}

fn destination_policy(d: &Destination, scope: &Scope) -> Option<TrafficPolicy> {
    let service = scope.registry.service(&d.host, scope.namespace)?;
    let rule = destination_rule(scope.config, scope.registry, service)?;
    let subset = d
        .subset
        .as_ref()
        .and_then(|name| rule.subsets.iter().find(|s| s.name == *name))
        .and_then(|s| s.traffic_policy.as_ref());
    merge(
        rule.traffic_policy.as_ref(),
        subset,
        crate::routes::destination_port(d, scope),
    )
}

fn to_envoy(c: &ConsistentHash) -> Vec<HashPolicy> {
    use hash_policy::PolicySpecifier as P;
    let specifier = if let Some(h) = &c.http_header_name {
        P::Header(hash_policy::Header {
            header_name: h.clone(),
            ..Default::default()
        })
    } else if let Some(cookie) = &c.http_cookie {
        P::Cookie(hash_policy::Cookie {
            name: cookie.name.clone(),
            ttl: cookie.ttl.as_ref().and_then(|t| t.parse()).map(duration),
            path: cookie.path.clone().unwrap_or_default(),
            ..Default::default()
        })
    } else if c.use_source_ip == Some(true) {
        P::ConnectionProperties(hash_policy::ConnectionProperties { source_ip: true })
    } else if let Some(q) = &c.http_query_parameter_name {
        P::QueryParameter(hash_policy::QueryParameter { name: q.clone() })
    } else {
        return Vec::new();
    };
    vec![HashPolicy {
        policy_specifier: Some(specifier),
        ..Default::default()
    }]
}
