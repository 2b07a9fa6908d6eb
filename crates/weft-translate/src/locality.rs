//! Locality-aware endpoints, as istiod computes them for each proxy.
//!
//! Endpoints are grouped by locality; each group's weight is its number of
//! endpoints. Then one of two settings of `localityLbSetting` applies:
//! - `distribute`: the first rule whose `from` matches the proxy's
//!   locality reweighs the localities its `to` names (a locality a pattern
//!   matches shares the pattern's percentage with the others it matches)
//!   and empties the rest; every group stays at priority 0.
//! - failover, when the DestinationRule turns outlier detection on
//!   (Istio's condition, as nothing would ever fail over without it):
//!   `failoverPriority` ranks endpoints by how many of the listed labels
//!   they share with the proxy, in order; otherwise (or, with `failover`
//!   rules, within each rank) localities rank by nearness: same
//!   region/zone/subzone 0, same zone 1, same region 2, elsewhere 3, and
//!   with a `failover` rule for the proxy's region, regions other than its
//!   `to` 4. Priorities are then numbered without gaps.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::Locality;
use envoy_types::pb::envoy::config::endpoint::v3::{LbEndpoint, LocalityLbEndpoints};
use envoy_types::pb::google::protobuf::UInt32Value;
use weft_config::networking::traffic::LocalityLb;
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

/// The locality setting in force: the DestinationRule's, unless it turns
/// locality load balancing off.
fn setting(policy: Option<&TrafficPolicy>) -> Option<&LocalityLb> {
    policy?
        .load_balancer
        .as_ref()?
        .locality_lb_setting
        .as_ref()
        .filter(|l| l.enabled != Some(false))
}

/// Istio's mesh-wide default: locality load balancing on, no rules.
static DEFAULT: LocalityLb = LocalityLb {
    distribute: Vec::new(),
    failover: Vec::new(),
    failover_priority: Vec::new(),
    enabled: None,
    min_cluster_size: None,
};

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

/// Whether the cluster weighs localities (`locality_weighted_lb_config`):
/// with `distribute`, or with explicit failover rules under outlier
/// detection, as istiod decides it.
pub(crate) fn weighted(policy: Option<&TrafficPolicy>) -> bool {
    setting(policy).is_some_and(|s| {
        !s.distribute.is_empty()
            || (failover_enabled(policy)
                && (!s.failover.is_empty() || !s.failover_priority.is_empty()))
    })
}

/// Istio's locality match: `*` or an empty zone/subzone matches anything.
fn matches(locality: &[&str; 3], rule: &str) -> bool {
    let r = parts(Some(rule));
    (r[0] == "*" || r[0] == locality[0])
        && (1..3).all(|i| r[i] == "*" || r[i].is_empty() || r[i] == locality[i])
}

/// The endpoints, one group per locality (and priority), for `proxy`.
pub(crate) fn groups(
    endpoints: Vec<(SocketAddr, &Workload)>,
    proxy: &Workload,
    policy: Option<&TrafficPolicy>,
    endpoint: impl Fn(SocketAddr) -> LbEndpoint,
) -> Vec<LocalityLbEndpoints> {
    let mut by_locality: BTreeMap<[&str; 3], Vec<(SocketAddr, &Workload)>> = BTreeMap::new();
    for (addr, w) in endpoints {
        by_locality
            .entry(parts(w.locality.as_deref()))
            .or_default()
            .push((addr, w));
    }
    let me = parts(proxy.locality.as_deref());
    let setting = setting(policy);
    let distribute = setting.map(|s| s.distribute.as_slice()).unwrap_or_default();
    // (locality, priority, weight, endpoints)
    let mut out: Vec<([&str; 3], u32, u32, Vec<SocketAddr>)> = Vec::new();
    if !distribute.is_empty() {
        // With `distribute`, failover never applies; a proxy no rule is
        // `from` keeps the plain groups, as istiod leaves them.
        let rule = distribute.iter().find(|d| matches(&me, &d.from));
        let weights = rule.map(|r| distributed(&by_locality, &r.to));
        for (l, eps) in &by_locality {
            let own = eps.len() as u32;
            let (weight, addrs) = match weights.as_ref().map(|w| w.get(l)) {
                None => (own, eps.iter().map(|e| e.0).collect()),
                Some(Some(w)) => (*w, eps.iter().map(|e| e.0).collect()),
                Some(None) => (own, Vec::new()),
            };
            out.push((*l, 0, weight, addrs));
        }
    } else {
        let failover = failover_enabled(policy).then(|| setting.unwrap_or(&DEFAULT));
        for (l, eps) in &by_locality {
            let mut ranks: BTreeMap<u32, Vec<SocketAddr>> = BTreeMap::new();
            for (addr, w) in eps {
                ranks
                    .entry(rank(proxy, w, l, failover))
                    .or_default()
                    .push(*addr);
            }
            for (p, addrs) in ranks {
                out.push((*l, p, addrs.len() as u32, addrs));
            }
        }
    }
    // Envoy wants priorities 0, 1, 2, … with no level empty.
    let mut levels: Vec<u32> = out.iter().map(|g| g.1).collect();
    levels.sort_unstable();
    levels.dedup();
    out.into_iter()
        .map(|(l, p, weight, addrs)| LocalityLbEndpoints {
            locality: (l != ["", "", ""]).then(|| Locality {
                region: l[0].into(),
                zone: l[1].into(),
                sub_zone: l[2].into(),
            }),
            lb_endpoints: addrs.into_iter().map(&endpoint).collect(),
            load_balancing_weight: Some(UInt32Value { value: weight }),
            priority: levels.iter().position(|x| *x == p).unwrap_or(0) as u32,
            ..Default::default()
        })
        .collect()
}

/// `distribute`'s weights: each `to` pattern's percentage split over the
/// localities it matches (and no earlier pattern took), in proportion to
/// their endpoints, rounded up. Localities not in the map get no traffic.
fn distributed<'a>(
    by_locality: &BTreeMap<[&'a str; 3], Vec<(SocketAddr, &Workload)>>,
    to: &BTreeMap<String, u32>,
) -> BTreeMap<[&'a str; 3], u32> {
    let mut weights = BTreeMap::new();
    for (pattern, percent) in to {
        let matched: Vec<([&str; 3], u64)> = by_locality
            .iter()
            .filter(|(l, _)| !weights.contains_key(*l) && matches(l, pattern))
            .map(|(l, eps)| (*l, eps.len() as u64))
            .collect();
        let total: u64 = matched.iter().map(|m| m.1).sum();
        for (l, own) in matched {
            let w = (own * u64::from(*percent)).div_ceil(total.max(1));
            weights.insert(l, if w > 0 { w as u32 } else { own as u32 });
        }
    }
    weights
}

/// An endpoint's failover rank for `proxy` (before renumbering).
fn rank(proxy: &Workload, w: &Workload, l: &[&str; 3], setting: Option<&LocalityLb>) -> u32 {
    let Some(s) = setting else {
        return 0;
    };
    if s.failover_priority.is_empty() {
        return nearness(proxy, l, s);
    }
    let by_labels = label_rank(proxy, w, &s.failover_priority);
    if s.failover.is_empty() {
        by_labels
    } else {
        by_labels * 5 + nearness(proxy, l, s)
    }
}

/// 0 when the endpoint shares every listed label with the proxy; else
/// `n - j` for the first label `j` it does not share. `key=value` compares
/// the endpoint's label with that value instead of the proxy's.
fn label_rank(proxy: &Workload, w: &Workload, keys: &[String]) -> u32 {
    let (mine, theirs) = (topology_labels(proxy), topology_labels(w));
    for (j, key) in keys.iter().enumerate() {
        let (key, wanted) = match key.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (key.as_str(), None),
        };
        let wanted = wanted.or(mine.get(key).map(String::as_str));
        if wanted != theirs.get(key).map(String::as_str) {
            return (keys.len() - j) as u32;
        }
    }
    0
}

/// A workload's labels with the topology labels Istio adds from its
/// locality and cluster.
fn topology_labels(w: &Workload) -> BTreeMap<String, String> {
    let mut labels = w.labels.clone();
    let [region, zone, subzone] = parts(w.locality.as_deref());
    for (key, value) in [
        ("topology.kubernetes.io/region", region),
        ("topology.kubernetes.io/zone", zone),
        ("topology.istio.io/subzone", subzone),
        ("topology.istio.io/cluster", "Kubernetes"),
    ] {
        labels.insert(key.into(), value.into());
    }
    labels
}

/// Locality rank by nearness to the proxy; the first `failover` rule from
/// the proxy's region keeps its `to` region ahead of the others.
fn nearness(proxy: &Workload, l: &[&str; 3], s: &LocalityLb) -> u32 {
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
    match s.failover.iter().find(|f| f.from == me[0]) {
        Some(rule) if rule.to != l[0] => 4,
        _ => 3,
    }
}
