//! A cluster's hosts and how its load spreads over their priorities and
//! localities, as Envoy spreads it.
//!
//! Priorities: each level's health is `overprovisioning × usable / total`
//! (capped at 100%; the factor is 1.4 unless the assignment says), and
//! levels take load in order, each as much as its health allows, so a
//! level that loses a few hosts spills only a share of its traffic to the
//! next one. When no level is healthy at all, a non-zero panic threshold
//! spreads load by host count over every host (Envoy's total panic).
//!
//! Localities: with `locality_weighted_lb_config` on the cluster, a pick
//! first draws a locality of the chosen level by its `load_balancing_weight`
//! scaled by its own health, then a host inside it.
//!
//! Hosts are stored sorted by priority, so every level and every locality
//! is one contiguous range of host indexes.

use std::net::SocketAddr;
use std::ops::Range;

use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment};
use serde::Serialize;

use super::socket_addr;

/// Envoy's default overprovisioning factor, in percent.
pub(crate) const OVERPROVISIONING: u32 = 140;

#[derive(Debug, Clone, Serialize)]
pub struct Locality {
    pub priority: u32,
    /// `load_balancing_weight`, when the assignment gives one.
    pub weight: Option<u32>,
    pub hosts: Range<usize>,
}

/// One priority level: its hosts and its localities, both as ranges.
#[derive(Debug, Clone, Serialize)]
struct Level {
    hosts: Range<usize>,
    localities: Range<usize>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Endpoints {
    pub addresses: Vec<SocketAddr>,
    pub localities: Vec<Locality>,
    /// Overprovisioning factor in percent (Envoy: 140).
    pub overprovisioning: u32,
    #[serde(skip)]
    levels: Vec<Level>,
    /// Whether picks weigh localities (the cluster's
    /// `locality_weighted_lb_config`).
    #[serde(skip)]
    weighted: bool,
    /// Endpoints' `envoy.transport_socket_match` metadata (Istio's
    /// `tlsMode: istio` on hosts with a sidecar), for the cluster's
    /// transport socket matches.
    #[serde(skip)]
    pub socket_match: rustc_hash::FxHashMap<SocketAddr, Labels>,
    /// Endpoints' `istio.workload` metadata: who serves there, for the
    /// client's metrics when the server's own metadata does not come back.
    #[serde(skip)]
    pub workloads: rustc_hash::FxHashMap<SocketAddr, std::sync::Arc<crate::stats::Peer>>,
}

/// String fields of a metadata struct.
pub type Labels = std::collections::BTreeMap<String, String>;

/// The string fields of `s`.
pub(crate) fn labels(s: &envoy_types::pb::google::protobuf::Struct) -> Labels {
    use envoy_types::pb::google::protobuf::value::Kind;
    s.fields
        .iter()
        .filter_map(|(k, v)| match &v.kind {
            Some(Kind::StringValue(v)) => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect()
}

/// Which hosts one pick may use: a range, and whether ejected hosts count
/// (a level in panic uses every host).
pub(crate) struct Candidates {
    pub hosts: Range<usize>,
    pub panic: bool,
}

impl Endpoints {
    /// The usable endpoints of an assignment (healthy or of unknown
    /// health), grouped by locality and sorted by priority.
    pub fn from_assignment(cla: &ClusterLoadAssignment) -> Result<Endpoints, String> {
        let mut groups = Vec::new();
        let mut socket_match = rustc_hash::FxHashMap::default();
        let mut workloads = rustc_hash::FxHashMap::default();
        for locality in &cla.endpoints {
            let mut addrs = Vec::new();
            for ep in &locality.lb_endpoints {
                let usable = ep.health_status == HealthStatus::Unknown as i32
                    || ep.health_status == HealthStatus::Healthy as i32;
                match &ep.host_identifier {
                    Some(lb_endpoint::HostIdentifier::Endpoint(e)) if usable => {
                        let addr = socket_addr(&e.address)?;
                        let meta = |key: &str| {
                            ep.metadata
                                .as_ref()
                                .and_then(|m| m.filter_metadata.get(key))
                        };
                        if let Some(m) = meta("envoy.transport_socket_match") {
                            socket_match.insert(addr, labels(m));
                        }
                        let workload = meta("istio").and_then(|m| labels(m).remove("workload"));
                        if let Some(peer) = workload
                            .as_deref()
                            .and_then(crate::stats::Peer::of_endpoint)
                        {
                            workloads.insert(addr, std::sync::Arc::new(peer));
                        }
                        addrs.push(addr)
                    }
                    Some(lb_endpoint::HostIdentifier::Endpoint(_)) => {}
                    _ => return Err("named endpoints are not supported".into()),
                }
            }
            let weight = locality.load_balancing_weight.map(|w| w.value);
            if weight == Some(0) {
                return Err("locality load_balancing_weight must be at least 1".into());
            }
            groups.push((locality.priority, weight, addrs));
        }
        let overprovisioning = cla
            .policy
            .as_ref()
            .and_then(|p| p.overprovisioning_factor)
            .map_or(OVERPROVISIONING, |f| f.value);
        Ok(Endpoints {
            socket_match,
            workloads,
            ..Endpoints::new(groups, overprovisioning)
        })
    }

    /// Endpoints from (priority, locality weight, hosts) groups.
    pub fn new(
        mut groups: Vec<(u32, Option<u32>, Vec<SocketAddr>)>,
        overprovisioning: u32,
    ) -> Endpoints {
        groups.retain(|g| !g.2.is_empty());
        groups.sort_by_key(|g| g.0);
        let mut eps = Endpoints {
            overprovisioning: overprovisioning.max(1),
            ..Endpoints::default()
        };
        for (priority, weight, addrs) in groups {
            let start = eps.addresses.len();
            eps.addresses.extend(addrs);
            let hosts = start..eps.addresses.len();
            let l = eps.localities.len();
            match eps.levels.last_mut() {
                Some(level) if eps.localities[l - 1].priority == priority => {
                    level.hosts.end = hosts.end;
                    level.localities.end = l + 1;
                }
                _ => eps.levels.push(Level {
                    hosts: hosts.clone(),
                    localities: l..l + 1,
                }),
            }
            eps.localities.push(Locality {
                priority,
                weight,
                hosts,
            });
        }
        eps
    }

    /// Turns locality weighting on (the cluster asks for it).
    pub(crate) fn weigh_localities(&mut self, on: bool) {
        self.weighted = on && self.localities.iter().any(|l| l.weight.is_some());
    }

    /// The hosts a pick chooses among, given which hosts are usable now;
    /// `draw` picks the level and locality (the request's hash for
    /// consistent balancers, else random). None: nothing usable and no
    /// panic to fall back on.
    pub(crate) fn candidates(
        &self,
        draw: u64,
        usable: impl Fn(usize) -> bool,
        panic_threshold: u32,
    ) -> Option<Candidates> {
        let count = |r: &Range<usize>| r.clone().filter(|i| usable(*i)).count() as u64;
        let health = |r: &Range<usize>| {
            (u64::from(self.overprovisioning) * count(r) / r.len().max(1) as u64).min(100)
        };
        let below_threshold = |r: &Range<usize>| {
            panic_threshold > 0 && count(r) * 100 < u64::from(panic_threshold) * r.len() as u64
        };
        if self.levels.len() == 1 && !self.weighted {
            let hosts = self.levels[0].hosts.clone();
            // Envoy never panics while the levels together are fully
            // available.
            let panic = health(&hosts) < 100 && below_threshold(&hosts);
            return Some(Candidates { hosts, panic });
        }
        let healths: Vec<u64> = self.levels.iter().map(|l| health(&l.hosts)).collect();
        let total: u64 = healths.iter().sum::<u64>().min(100);
        let in_panic = |r: &Range<usize>| total < 100 && below_threshold(r);
        let level = if total == 0 {
            if panic_threshold == 0 || self.addresses.is_empty() {
                return None;
            }
            // Total panic: load by host count, every host used.
            let host = (draw % self.addresses.len() as u64) as usize;
            let level = self.levels.iter().find(|l| l.hosts.contains(&host))?;
            return Some(Candidates {
                hosts: level.hosts.clone(),
                panic: true,
            });
        } else {
            &self.levels[choose_level(&healths, total, draw % 100)]
        };
        let panic = in_panic(&level.hosts);
        let hosts = if self.weighted {
            self.locality_in(level, draw / 100, panic, &health)
        } else {
            level.hosts.clone()
        };
        Some(Candidates { hosts, panic })
    }

    /// A locality of `level` drawn by weight × health (weight alone in
    /// panic); localities without a weight count as weight 1.
    fn locality_in(
        &self,
        level: &Level,
        draw: u64,
        panic: bool,
        health: &impl Fn(&Range<usize>) -> u64,
    ) -> Range<usize> {
        let localities = &self.localities[level.localities.clone()];
        let effective = |l: &Locality| {
            let w = u64::from(l.weight.unwrap_or(1));
            if panic {
                w * 100
            } else {
                w * health(&l.hosts)
            }
        };
        let sum: u64 = localities.iter().map(effective).sum();
        if sum == 0 {
            return level.hosts.clone();
        }
        let mut at = draw % sum;
        for l in localities {
            let e = effective(l);
            if at < e {
                return l.hosts.clone();
            }
            at -= e;
        }
        level.hosts.clone()
    }

    /// The level holding host `i`.
    pub(crate) fn level_of(&self, i: usize) -> Option<Range<usize>> {
        self.levels
            .iter()
            .find(|l| l.hosts.contains(&i))
            .map(|l| l.hosts.clone())
    }
}

/// Envoy's load distribution: each level in order takes
/// `health × 100 / total` percent of what is left; the rounding remainder
/// goes to the first level with any load. Returns the level `draw` (0–99)
/// falls in.
fn choose_level(healths: &[u64], total: u64, draw: u64) -> usize {
    let mut left = 100u64;
    let mut loads: Vec<u64> = healths
        .iter()
        .map(|h| {
            let load = (h * 100 / total).min(left);
            left -= load;
            load
        })
        .collect();
    if let Some(first) = loads.iter().position(|l| *l > 0) {
        loads[first] += left;
    }
    let mut at = draw;
    for (i, load) in loads.iter().enumerate() {
        if at < *load {
            return i;
        }
        at -= load;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(first: u8, n: u8) -> Vec<SocketAddr> {
        (first..first + n)
            .map(|i| SocketAddr::from(([198, 18, 0, i], 80)))
            .collect()
    }

    /// How many of 100 draws (0–99) land in each level.
    fn shares(eps: &Endpoints, usable: impl Fn(usize) -> bool + Copy) -> Vec<usize> {
        let mut out = vec![0; eps.levels.len()];
        for draw in 0..100 {
            let c = eps.candidates(draw, usable, 0).unwrap();
            out[eps.levels.iter().position(|l| l.hosts == c.hosts).unwrap()] += 1;
        }
        out
    }

    #[test]
    fn a_degraded_level_spills_part_of_its_load() {
        // Four near hosts, four far ones.
        let eps = Endpoints::new(
            vec![(1, None, hosts(10, 4)), (0, None, hosts(0, 4))],
            OVERPROVISIONING,
        );
        assert_eq!(eps.addresses[0], hosts(0, 1)[0], "sorted by priority");
        assert_eq!(shares(&eps, |_| true), [100, 0]);
        // One near host out: 1.4 × 3/4 = 105% ≥ 100%, nothing moves.
        assert_eq!(shares(&eps, |i| i != 0), [100, 0]);
        // Two out: 1.4 × 2/4 = 70%, so 30% goes far.
        assert_eq!(shares(&eps, |i| i >= 2), [70, 30]);
        // All near hosts out: everything goes far.
        assert_eq!(shares(&eps, |i| i >= 4), [0, 100]);
        assert!(eps.candidates(0, |_| false, 0).is_none());
        // With a panic threshold, total failure uses every host.
        assert!(eps.candidates(0, |_| false, 50).unwrap().panic);
    }

    #[test]
    fn no_level_panics_while_the_levels_together_are_available() {
        let eps = Endpoints::new(
            vec![(0, None, hosts(0, 10)), (1, None, hosts(20, 10))],
            OVERPROVISIONING,
        );
        // Level 0 has 4 of 10 (below a 50% threshold); level 1 makes up
        // the rest, so level 0's share uses only its usable hosts.
        let usable = |i: usize| !(4..10).contains(&i);
        for draw in 0..100 {
            assert!(
                !eps.candidates(draw, usable, 50).unwrap().panic,
                "draw {draw}"
            );
        }
        // Alone, a level that far down is in panic.
        let alone = Endpoints::new(vec![(0, None, hosts(0, 10))], OVERPROVISIONING);
        assert!(alone.candidates(0, usable, 50).unwrap().panic);
    }

    #[test]
    fn weighted_localities_share_a_level_by_weight_and_health() {
        let mut eps = Endpoints::new(
            vec![(0, Some(80), hosts(0, 2)), (0, Some(20), hosts(10, 2))],
            OVERPROVISIONING,
        );
        eps.weigh_localities(true);
        // Draws above 100 pick the locality: one pass over every draw
        // counts each locality's share exactly.
        let first = |usable: fn(usize) -> bool, sum: u64| {
            (0..sum)
                .filter(|d| eps.candidates(d * 100, usable, 0).unwrap().hosts == (0..2))
                .count()
        };
        assert_eq!(first(|_| true, 80 * 100 + 20 * 100), 80 * 100);
        // Half the first locality out: its health is 70%, so it gets
        // 80×70 of 80×70 + 20×100.
        assert_eq!(first(|i| i != 0, 80 * 70 + 20 * 100), 80 * 70);
    }
}
