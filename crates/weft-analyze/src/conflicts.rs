//! Resources that contradict each other, or themselves.

use std::collections::BTreeMap;

use weft_config::networking::HttpMatchRequest;
use weft_config::{Kind, Resource, Spec};

use crate::{
    Findings, Input, Level, CONFLICTING_GATEWAYS, CONFLICTING_MESH_GATEWAY_VS_HOSTS,
    CONFLICTING_SIDECAR_SELECTORS, MTLS_POLICY_CONFLICT, MULTIPLE_SIDECARS_WITHOUT_SELECTOR,
    VS_INEFFECTIVE_MATCH, VS_UNREACHABLE_RULE,
};

pub(crate) fn check(input: &Input, f: &mut Findings) {
    mesh_virtual_service_hosts(input, f);
    sidecars(input, f);
    mtls(input, f);
    for vs in input.of_kind(Kind::VirtualService) {
        ineffective_matches(f, vs);
    }
    gateways(input, f);
}

/// Two Gateways that select the same workloads and claim the same port for
/// the same host: the proxy cannot serve both. (Different hosts on one port
/// are fine: they become virtual hosts of one listener.)
fn gateways(input: &Input, f: &mut Findings) {
    type Claim<'a> = (&'a Resource, &'a BTreeMap<String, String>, u32, String);
    let mut claims: Vec<Claim> = Vec::new();
    for r in input.of_kind(Kind::Gateway) {
        let gw = r.as_gateway().expect("gateway");
        for server in &gw.servers {
            for host in &server.hosts {
                let host = host.rsplit('/').next().unwrap_or(host).to_string();
                claims.push((r, &gw.selector, server.port.number, host));
            }
        }
    }
    for (i, (a, selector, port, host)) in claims.iter().enumerate() {
        for (b, other_selector, other_port, other_host) in &claims[i + 1..] {
            if a.key() == b.key()
                || port != other_port
                || host != other_host
                || selector != other_selector
            {
                continue;
            }
            for (r, other) in [(a, b), (b, a)] {
                f.push(
                    Level::Error,
                    CONFLICTING_GATEWAYS,
                    r,
                    format!(
                        "Conflict with Gateway {}/{} (same workload selector, port {port}, host {host}).",
                        other.namespace(),
                        other.meta.name
                    ),
                    Some("serve the host from one Gateway, or give the servers different ports"),
                );
            }
        }
    }
}

/// Two VirtualServices bound to the mesh for one host: only one wins.
fn mesh_virtual_service_hosts(input: &Input, f: &mut Findings) {
    let mut by_host: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
    for r in input.of_kind(Kind::VirtualService) {
        let vs = r.as_virtual_service().expect("virtual service");
        if !(vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")) {
            continue;
        }
        for h in &vs.hosts {
            by_host
                .entry(input.registry.qualify(h, r.namespace()))
                .or_default()
                .push(r);
        }
    }
    for (host, rs) in by_host.into_iter().filter(|(_, rs)| rs.len() > 1) {
        let names: Vec<String> = rs
            .iter()
            .map(|r| format!("{}/{}", r.namespace(), r.meta.name))
            .collect();
        for r in rs {
            f.push(
                Level::Error,
                CONFLICTING_MESH_GATEWAY_VS_HOSTS,
                r,
                format!("The VirtualServices {} associated with mesh define the same host ({host}), which can lead to undefined behavior.", names.join(",")),
                Some("merge the conflicting VirtualServices into one"),
            );
        }
    }
}

fn sidecars(input: &Input, f: &mut Findings) {
    let mut by_ns: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
    for r in input.of_kind(Kind::Sidecar) {
        by_ns.entry(r.namespace()).or_default().push(r);
    }
    for (_, rs) in by_ns {
        let selector = |r: &Resource| match &r.spec {
            Spec::Sidecar(s) => s
                .workload_selector
                .as_ref()
                .map(|w| w.labels.clone())
                .filter(|l| !l.is_empty()),
            _ => None,
        };
        let without: Vec<&&Resource> = rs.iter().filter(|r| selector(r).is_none()).collect();
        if without.len() > 1 {
            for r in without {
                f.push(
                    Level::Error,
                    MULTIPLE_SIDECARS_WITHOUT_SELECTOR,
                    r,
                    "More than one Sidecar in this namespace has no workloadSelector.".into(),
                    None,
                );
            }
        }
        for w in &input.registry.workloads {
            let selecting: Vec<&&Resource> = rs
                .iter()
                .filter(|r| {
                    r.namespace() == w.namespace
                        && selector(r)
                            .is_some_and(|s| s.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
                })
                .collect();
            if selecting.len() > 1 {
                for r in selecting {
                    f.push(
                        Level::Error,
                        CONFLICTING_SIDECAR_SELECTORS,
                        r,
                        format!("The Sidecars select the same workload {}.", w.name),
                        None,
                    );
                }
            }
        }
    }
}

/// The PeerAuthentication mode that applies to a workload: its own
/// selector-based policy, else its namespace's, else the mesh's, else PERMISSIVE.
fn peer_mode(input: &Input, ns: &str, labels: &BTreeMap<String, String>) -> String {
    let mut best: Option<(u8, String)> = None;
    for r in input.of_kind(Kind::PeerAuthentication) {
        let Spec::PeerAuthentication(pa) = &r.spec else {
            continue;
        };
        let Some(mode) = pa
            .mtls
            .as_ref()
            .and_then(|m| m.mode.clone())
            .filter(|m| m != "UNSET")
        else {
            continue;
        };
        let selector = pa
            .selector
            .as_ref()
            .map(|s| &s.match_labels)
            .filter(|s| !s.is_empty());
        let rank = match selector {
            Some(s) if r.namespace() == ns && s.iter().all(|(k, v)| labels.get(k) == Some(v)) => 3,
            None if r.namespace() == ns => 2,
            None if r.namespace() == "istio-system" => 1,
            _ => continue,
        };
        if best.as_ref().is_none_or(|(b, _)| rank > *b) {
            best = Some((rank, mode));
        }
    }
    best.map(|(_, m)| m).unwrap_or_else(|| "PERMISSIVE".into())
}

fn mtls(input: &Input, f: &mut Findings) {
    for r in input.of_kind(Kind::DestinationRule) {
        let dr = r.as_destination_rule().expect("destination rule");
        let tls_mode = dr
            .traffic_policy
            .as_ref()
            .and_then(|tp| tp.tls.as_ref())
            .and_then(|t| t.mode.as_deref());
        let Some(tls_mode) = tls_mode else { continue };
        let Some(service) = input.registry.service(&dr.host, r.namespace()) else {
            continue;
        };
        for w in input
            .registry
            .workloads
            .iter()
            .filter(|w| w.namespace == service.namespace && service.selects(&w.labels))
        {
            let peer = peer_mode(input, &w.namespace, &w.labels);
            let conflict = (tls_mode == "DISABLE" && peer == "STRICT")
                || (tls_mode == "ISTIO_MUTUAL" && peer == "DISABLE");
            if conflict {
                f.push(
                    Level::Error,
                    MTLS_POLICY_CONFLICT,
                    r,
                    format!("DestinationRule tls mode {tls_mode} conflicts with PeerAuthentication mode {peer} on workload {}: requests to it will fail.", w.name),
                    Some("make the DestinationRule's tls mode and the PeerAuthentication agree (ISTIO_MUTUAL with STRICT or PERMISSIVE)"),
                );
                break;
            }
        }
    }
}

/// A match that matches every request: no conditions, or only `prefix: /`.
fn matches_everything(m: &HttpMatchRequest) -> bool {
    let plain = HttpMatchRequest {
        uri: m.uri.clone(),
        name: m.name.clone(),
        ..Default::default()
    };
    *m == plain
        && m.uri.as_ref().is_none_or(|u| {
            u.prefix.as_deref() == Some("/") && u.exact.is_none() && u.regex.is_none()
        })
}

/// Routes after a catch-all, and matches that repeat an earlier one, never apply.
fn ineffective_matches(f: &mut Findings, r: &Resource) {
    let vs = r.as_virtual_service().expect("virtual service");
    let mut catch_all: Option<usize> = None;
    let mut seen: Vec<(usize, &HttpMatchRequest)> = Vec::new();
    for (i, route) in vs.http.iter().enumerate() {
        if let Some(c) = catch_all {
            f.push(Level::Warning, VS_UNREACHABLE_RULE, r, format!("VirtualService rule #{i} not used (rule #{c} before it matches every request)."), Some("put the most specific routes first and the catch-all last"));
            continue;
        }
        for (j, m) in route.matches.iter().enumerate() {
            let without_name = |m: &HttpMatchRequest| HttpMatchRequest {
                name: None,
                ..m.clone()
            };
            if let Some((k, _)) = seen
                .iter()
                .find(|(_, earlier)| without_name(earlier) == without_name(m))
            {
                f.push(Level::Info, VS_INEFFECTIVE_MATCH, r, format!("VirtualService rule #{i} match #{j} is not used (duplicates a match in rule #{k})."), None);
            }
        }
        seen.extend(route.matches.iter().map(|m| (i, m)));
        if route.matches.is_empty() || route.matches.iter().any(matches_everything) {
            catch_all = Some(i);
        }
    }
}
