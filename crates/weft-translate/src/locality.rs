//! Locality-aware endpoints, as istiod computes them per proxy: endpoints
//! are grouped by locality, and when the DestinationRule turns outlier
//! detection on (Istio's condition for locality failover) each group gets
//! a priority by how close it is to the proxy — same region/zone/subzone
//! 0, same zone 1, same region 2, elsewhere 3 — with `failover` regions
//! ahead of the rest. Priorities are then numbered without gaps.
//! `distribute` and `failoverPriority` are not built (the config crate
//! warns).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::Locality;
use envoy_types::pb::envoy::config::endpoint::v3::LocalityLbEndpoints;
use weft_config::networking::TrafficPolicy;
use weft_registry::Workload;

/// `region/zone/subzone` split into its three parts.
fn parts(locality: Option<&str>) -> [&str; 3] {
    let mut it = locality.unwrap_or("").splitn(3, '/');
    [
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
    ]
}

/// Whether failover by locality applies to this cluster's policy.
pub(crate) fn failover_enabled(policy: Option<&TrafficPolicy>) -> bool {
    let Some(p) = policy else {
        return false;
    };
    let enabled = p
        .load_balancer
        .as_ref()
        .and_then(|lb| lb.locality_lb_setting.as_ref())
        .and_then(|l| l.enabled)
        .unwrap_or(true);
    enabled && p.outlier_detection.is_some()
}

/// The endpoints, one group per locality, with priorities relative to
/// `proxy` when `policy` asks for failover.
pub(crate) fn groups(
    endpoints: Vec<(SocketAddr, &Workload)>,
    proxy: &Workload,
    policy: Option<&TrafficPolicy>,
    endpoint: impl Fn(SocketAddr) -> envoy_types::pb::envoy::config::endpoint::v3::LbEndpoint,
) -> Vec<LocalityLbEndpoints> {
    let mut by_locality: BTreeMap<[&str; 3], Vec<SocketAddr>> = BTreeMap::new();
    for (addr, w) in &endpoints {
        by_locality
            .entry(parts(w.locality.as_deref()))
            .or_default()
            .push(*addr);
    }
    let failover = failover_enabled(policy);
    let raw: Vec<u32> = by_locality
        .keys()
        .map(|l| {
            if failover {
                priority(proxy, l, policy)
            } else {
                0
            }
        })
        .collect();
    // Envoy wants priorities 0, 1, 2, … with no level empty.
    let mut levels = raw.clone();
    levels.sort_unstable();
    levels.dedup();
    by_locality
        .into_iter()
        .zip(raw)
        .map(|((l, addrs), p)| LocalityLbEndpoints {
            locality: (l != ["", "", ""]).then(|| Locality {
                region: l[0].into(),
                zone: l[1].into(),
                sub_zone: l[2].into(),
            }),
            lb_endpoints: addrs.into_iter().map(&endpoint).collect(),
            priority: levels.iter().position(|x| *x == p).unwrap_or(0) as u32,
            ..Default::default()
        })
        .collect()
}

fn priority(proxy: &Workload, l: &[&str; 3], policy: Option<&TrafficPolicy>) -> u32 {
    let me = parts(proxy.locality.as_deref());
    let same = |n: usize| (0..n).all(|i| me[i] == l[i]);
    if same(3) {
        return 0;
    }
    if same(2) {
        return 1;
    }
    if same(1) {
        return 2;
    }
    // Regions a `failover` rule names for the proxy's region come next.
    let to = policy
        .and_then(|p| p.load_balancer.as_ref())
        .and_then(|lb| lb.locality_lb_setting.as_ref())
        .map(|s| {
            s.failover
                .iter()
                .filter(|f| f.from == me[0])
                .any(|f| f.to == l[0])
        })
        .unwrap_or(false);
    if to {
        3
    } else {
        4
    }
}
