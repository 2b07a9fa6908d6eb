//! DNS clusters (Envoy's STRICT_DNS and LOGICAL_DNS, which istiod writes
//! for DNS ServiceEntries): their endpoints are names, looked up on a
//! thread of their own with the system resolver, so a pod's /etc/hosts and
//! resolv.conf apply as they do to its app. A change in the answers
//! recompiles the config; a failed lookup keeps the last good answer (and
//! is tried again soon), so a resolver hiccup never empties a cluster.
//!
//! STRICT_DNS takes every address a name has; LOGICAL_DNS the first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint;

use crate::compile::Endpoints;

/// The addresses each name resolved to.
pub(crate) type Answers = BTreeMap<String, Vec<IpAddr>>;

/// Envoy's default refresh rate, when a cluster sets none.
const DEFAULT_REFRESH: Duration = Duration::from_secs(5);
/// How soon a name that has no answer yet is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The names some DNS clusters need, and how often to look them up again.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Wanted {
    pub names: BTreeSet<String>,
    pub refresh: Duration,
}

pub(crate) fn is_dns(c: &Cluster) -> bool {
    use cluster::{ClusterDiscoveryType, DiscoveryType};
    matches!(
        c.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(t))
            if t == DiscoveryType::StrictDns as i32 || t == DiscoveryType::LogicalDns as i32
    )
}

fn is_logical(c: &Cluster) -> bool {
    c.cluster_discovery_type
        == Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::LogicalDns as i32,
        ))
}

/// One locality group of a DNS cluster: priority, weight, (host, port)s.
type Group = (u32, Option<u32>, Vec<(String, u16)>);

/// Each (host, port) of a DNS cluster's assignment, by locality group.
fn hosts(c: &Cluster) -> Result<Vec<Group>, String> {
    let Some(cla) = &c.load_assignment else {
        return Err("a DNS cluster needs a load_assignment naming its hosts".into());
    };
    let mut groups = Vec::new();
    for locality in &cla.endpoints {
        let mut hosts = Vec::new();
        for ep in &locality.lb_endpoints {
            let Some(lb_endpoint::HostIdentifier::Endpoint(e)) = &ep.host_identifier else {
                return Err("named endpoints are not supported".into());
            };
            let Some(address::Address::SocketAddress(sa)) =
                e.address.as_ref().and_then(|a| a.address.as_ref())
            else {
                return Err("only socket addresses are supported".into());
            };
            let Some(socket_address::PortSpecifier::PortValue(port)) = sa.port_specifier else {
                return Err(format!("{:?}: a port number is required", sa.address));
            };
            let port = u16::try_from(port).map_err(|_| format!("port {port} out of range"))?;
            if sa.address.is_empty() {
                return Err("an endpoint address is empty".into());
            }
            hosts.push((sa.address.clone(), port));
        }
        let weight = locality.load_balancing_weight.map(|w| w.value);
        groups.push((locality.priority, weight, hosts));
    }
    Ok(groups)
}

/// Checks a DNS cluster's assignment (its hosts are names or addresses).
pub(crate) fn check(c: &Cluster) -> Result<(), String> {
    hosts(c).map(drop)
}

/// The names a set of clusters needs looked up (addresses need none).
#[allow(deprecated)] // dns_refresh_rate: the field istiod writes
pub(crate) fn wanted(clusters: &[Cluster]) -> Wanted {
    let mut names = BTreeSet::new();
    let mut refresh: Option<Duration> = None;
    for c in clusters.iter().filter(|c| is_dns(c)) {
        for (_, _, hosts) in hosts(c).unwrap_or_default() {
            names.extend(
                hosts
                    .into_iter()
                    .map(|h| h.0)
                    .filter(|h| h.parse::<IpAddr>().is_err()),
            );
        }
        let rate = c
            .dns_refresh_rate
            .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_REFRESH);
        refresh = Some(refresh.map_or(rate, |r| r.min(rate)));
    }
    Wanted {
        names,
        refresh: refresh.unwrap_or(DEFAULT_REFRESH),
    }
}

/// A DNS cluster's endpoints under the current answers; a name with no
/// answer yet contributes no host.
pub(crate) fn endpoints(c: &Cluster, answers: &Answers) -> Result<Endpoints, String> {
    let logical = is_logical(c);
    let mut groups = Vec::new();
    for (priority, weight, hosts) in hosts(c)? {
        let mut addrs = Vec::new();
        for (host, port) in hosts {
            let ips = match host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => family(c, answers.get(&host).cloned().unwrap_or_default()),
            };
            let take = if logical { 1 } else { ips.len() };
            addrs.extend(
                ips.into_iter()
                    .take(take)
                    .map(|ip| SocketAddr::new(ip, port)),
            );
        }
        groups.push((priority, weight, addrs));
    }
    Ok(Endpoints::new(groups, crate::compile::OVERPROVISIONING))
}

/// The addresses of the families the cluster's `dns_lookup_family` asks
/// for, as Envoy picks them (AUTO prefers IPv6, V4_PREFERRED IPv4).
fn family(c: &Cluster, ips: Vec<IpAddr>) -> Vec<IpAddr> {
    use cluster::DnsLookupFamily as F;
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = ips.iter().partition(|ip| ip.is_ipv4());
    let or =
        |first: Vec<IpAddr>, second: Vec<IpAddr>| if first.is_empty() { second } else { first };
    match F::try_from(c.dns_lookup_family).unwrap_or(F::Auto) {
        F::V4Only => v4,
        F::V6Only => v6,
        F::V4Preferred => or(v4, v6),
        F::All => ips,
        F::Auto => or(v6, v4),
    }
}

/// Where new answers go: the config, recompiled with them.
pub(crate) trait Install: Send + 'static {
    fn install_answers(&mut self, answers: Answers) -> Result<(), String>;
}

/// Starts the lookup thread for `state`; send it the names to look up.
/// It ends when the sender is dropped or `state` is gone.
pub(crate) fn start<S: Install>(state: Weak<Mutex<S>>) -> std::io::Result<Sender<Wanted>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("weft-dns".into())
        .spawn(move || lookups(rx, state))?;
    Ok(tx)
}

fn lookups<S: Install>(rx: Receiver<Wanted>, state: Weak<Mutex<S>>) {
    let mut wanted = Wanted {
        names: BTreeSet::new(),
        refresh: DEFAULT_REFRESH,
    };
    let mut answers = Answers::new();
    loop {
        let unanswered = wanted.names.iter().any(|n| !answers.contains_key(n));
        let wait = if unanswered { RETRY } else { wanted.refresh };
        match rx.recv_timeout(wait) {
            Ok(w) => wanted = rx.try_iter().last().unwrap_or(w),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let fresh = look_up(&wanted.names, &answers);
        if fresh == answers {
            continue;
        }
        let Some(state) = state.upgrade() else { return };
        let mut state = state.lock().expect("xDS state lock");
        // Only answers the config took count as current: rejected ones
        // are tried again at the next round.
        match state.install_answers(fresh.clone()) {
            Ok(()) => answers = fresh,
            Err(e) => tracing::warn!(error = %e, "config with new DNS answers rejected"),
        }
    }
}

/// Answers for `names`: a name that fails keeps its last answer.
fn look_up(names: &BTreeSet<String>, last: &Answers) -> Answers {
    let mut out = Answers::new();
    for name in names {
        match (name.as_str(), 0).to_socket_addrs() {
            Ok(addrs) => {
                // Sorted: a resolver that rotates its answers is no change.
                let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                ips.sort();
                ips.dedup();
                out.insert(name.clone(), ips);
            }
            Err(e) => {
                tracing::warn!(name, error = %e, "DNS lookup failed");
                if let Some(ips) = last.get(name) {
                    out.insert(name.clone(), ips.clone());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::endpoint::v3::{
        ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
    };

    fn dns_cluster(kind: cluster::DiscoveryType, hosts: &[(&str, u32)]) -> Cluster {
        let lb_endpoints = hosts
            .iter()
            .map(|(h, p)| LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(envoy_types::pb::envoy::config::core::v3::Address {
                        address: Some(address::Address::SocketAddress(
                            envoy_types::pb::envoy::config::core::v3::SocketAddress {
                                address: h.to_string(),
                                port_specifier: Some(socket_address::PortSpecifier::PortValue(*p)),
                                ..Default::default()
                            },
                        )),
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            })
            .collect();
        Cluster {
            name: "outbound|80||example.com".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(kind as i32)),
            load_assignment: Some(ClusterLoadAssignment {
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn names_become_every_address_or_the_first() {
        let strict = dns_cluster(
            cluster::DiscoveryType::StrictDns,
            &[("example.com", 80), ("198.18.0.9", 81)],
        );
        let w = wanted(std::slice::from_ref(&strict));
        assert_eq!(w.names, BTreeSet::from(["example.com".to_string()]));
        let answers = Answers::from([(
            "example.com".to_string(),
            vec!["198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap()],
        )]);
        let addrs = |c: &Cluster, a: &Answers| -> Vec<String> {
            endpoints(c, a)
                .unwrap()
                .addresses
                .iter()
                .map(|a| a.to_string())
                .collect()
        };
        assert_eq!(
            addrs(&strict, &answers),
            ["198.18.0.1:80", "198.18.0.2:80", "198.18.0.9:81"]
        );
        assert_eq!(addrs(&strict, &Answers::new()), ["198.18.0.9:81"]);
        let logical = dns_cluster(cluster::DiscoveryType::LogicalDns, &[("example.com", 80)]);
        assert_eq!(addrs(&logical, &answers), ["198.18.0.1:80"]);
    }

    #[test]
    fn the_system_resolver_answers_and_failures_keep_the_last_answer() {
        let names = BTreeSet::from(["localhost".to_string(), "no-such-host.invalid".to_string()]);
        let last = Answers::from([(
            "no-such-host.invalid".to_string(),
            vec!["198.18.0.7".parse().unwrap()],
        )]);
        let got = look_up(&names, &last);
        assert!(got["localhost"].iter().any(|ip| ip.is_loopback()));
        assert_eq!(got["no-such-host.invalid"], last["no-such-host.invalid"]);
    }
}
