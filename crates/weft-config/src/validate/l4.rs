//! VirtualService `tcp[]` and `tls[]` routes, checked as istiod checks them:
//! destinations and weights, match ports and subnets, and for TLS routes
//! the SNI hosts every match must name, each inside the VirtualService's
//! own hosts.

use std::net::IpAddr;

use super::{destination, host_is_valid, route_weights, Report};
use crate::networking::http_policies::L4Match;
use crate::networking::virtual_service::RouteDestination;
use crate::networking::VirtualService;

pub(super) fn routes(r: &mut Report, vs: &VirtualService) {
    for (i, route) in vs.tcp.iter().enumerate() {
        let at = format!("spec.tcp[{i}]");
        destinations(r, &at, &route.route, "a TCP route");
        for (j, m) in route.matches.iter().enumerate() {
            l4_match(r, &format!("{at}.match[{j}]"), m);
        }
    }
    for (i, route) in vs.tls.iter().enumerate() {
        let at = format!("spec.tls[{i}]");
        if route.matches.is_empty() {
            r.error(
                format!("{at}.match"),
                "a TLS route needs at least one match (with sniHosts)",
            );
        }
        destinations(r, &at, &route.route, "a TLS route");
        for (j, m) in route.matches.iter().enumerate() {
            let at = format!("{at}.match[{j}]");
            l4_match(r, &at, m);
            sni_hosts(r, &at, m, &vs.hosts);
        }
    }
}

fn destinations(r: &mut Report, at: &str, route: &[RouteDestination], what: &str) {
    if route.is_empty() {
        r.error(
            format!("{at}.route"),
            format!("{what} needs at least one destination"),
        );
    }
    route_weights(r, at, route.iter().map(|d| d.weight));
    for (j, d) in route.iter().enumerate() {
        destination(
            r,
            &format!("{at}.route[{j}].destination"),
            &d.destination.host,
            d.destination.subset.as_deref(),
        );
    }
}

fn l4_match(r: &mut Report, at: &str, m: &L4Match) {
    if let Some(port) = m.port {
        if !(1..=65535).contains(&port) {
            r.error(
                format!("{at}.port"),
                format!("port {port} is not between 1 and 65535"),
            );
        }
    }
    for (k, subnet) in m.destination_subnets.iter().enumerate() {
        if !is_subnet(subnet) {
            r.error(
                format!("{at}.destinationSubnets[{k}]"),
                format!("{subnet:?} is not an IP address or CIDR block"),
            );
        }
    }
    if m.source_subnet.is_some() {
        r.warn(
            format!("{at}.sourceSubnet"),
            "accepted but not enforced by this version of Weft",
        );
    }
}

/// `198.51.100.0/24`, `2001:db8::/32`, or a bare address.
fn is_subnet(text: &str) -> bool {
    let (addr, len) = text.split_once('/').unwrap_or((text, ""));
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return false;
    };
    let width = if ip.is_ipv4() { 32 } else { 128 };
    len.is_empty() || len.parse::<u8>().is_ok_and(|n| n <= width)
}

/// Every TLS match names SNI hosts, each a DNS name (or `*.suffix`, or an
/// IP) inside one of the VirtualService's hosts: a name outside them could
/// never reach this VirtualService.
fn sni_hosts(r: &mut Report, at: &str, m: &L4Match, vs_hosts: &[String]) {
    if m.sni_hosts.is_empty() {
        r.error(
            format!("{at}.sniHosts"),
            "a TLS match needs at least one SNI host",
        );
    }
    for (k, sni) in m.sni_hosts.iter().enumerate() {
        let field = format!("{at}.sniHosts[{k}]");
        if !host_is_valid(sni) && sni.parse::<IpAddr>().is_err() {
            r.error(&field, format!("{sni:?} is not a valid SNI host"));
        } else if !vs_hosts.iter().any(|h| subset_of(sni, h)) {
            r.error(
                &field,
                format!(
                    "SNI host {sni:?} is not within any of the VirtualService's hosts [{}]",
                    vs_hosts.join(", ")
                ),
            );
        }
    }
}

/// Whether every name `inner` matches is one `outer` matches (Istio's
/// `host.Name.SubsetOf`): `*.a.com` is within `*.com`, `b.a.com` within
/// `*.a.com`, and everything within `*`.
fn subset_of(inner: &str, outer: &str) -> bool {
    if outer == "*" || inner == outer {
        return true;
    }
    match (inner.strip_prefix('*'), outer.strip_prefix('*')) {
        (_, None) => false,
        (Some(inner_suffix), Some(outer_suffix)) => inner_suffix.ends_with(outer_suffix),
        (None, Some(outer_suffix)) => inner.ends_with(outer_suffix),
    }
}

#[cfg(test)]
mod tests {
    use super::{is_subnet, subset_of};
    use crate::load::load_str;

    fn problems(spec: &str) -> Vec<String> {
        let doc = format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: x}}\nspec:\n{spec}"
        );
        load_str(&doc, "t.yaml")
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn tls_routes_need_sni_hosts_within_the_hosts() {
        let p = problems(
            "  hosts: ['*.example.com']\n  tls:\n  - match:\n    - sniHosts: [a.example.com, b.other.org]\n      port: 70000\n      destinationSubnets: [10.0.0.0/40]\n    - port: 443\n    route:\n    - destination: {host: a}\n  - route:\n    - destination: {host: a}\n  - match:\n    - sniHosts: [c.example.com]\n",
        );
        let want = [
            "spec.tls[0].match[0].sniHosts[1]: SNI host \"b.other.org\" is not within any of the VirtualService's hosts [*.example.com]",
            "spec.tls[0].match[0].port: port 70000 is not between 1 and 65535",
            "spec.tls[0].match[0].destinationSubnets[0]: \"10.0.0.0/40\" is not an IP address or CIDR block",
            "spec.tls[0].match[1].sniHosts: a TLS match needs at least one SNI host",
            "spec.tls[1].match: a TLS route needs at least one match",
            "spec.tls[2].route: a TLS route needs at least one destination",
        ];
        for w in want {
            assert!(p.iter().any(|p| p.contains(w)), "{w}: {p:#?}");
        }
        assert_eq!(p.len(), want.len(), "{p:#?}");
        let ok = problems(
            "  hosts: [nginx.example.com]\n  gateways: [mygateway]\n  tls:\n  - match:\n    - port: 443\n      sniHosts: [nginx.example.com]\n    route:\n    - destination: {host: my-nginx, port: {number: 443}}\n",
        );
        assert!(ok.is_empty(), "Istio's SNI passthrough task: {ok:#?}");
    }

    #[test]
    fn host_subsets() {
        assert!(subset_of("a.example.com", "*"));
        assert!(subset_of("a.example.com", "*.example.com"));
        assert!(subset_of("*.a.example.com", "*.example.com"));
        assert!(subset_of("a.example.com", "a.example.com"));
        assert!(!subset_of("*.example.com", "a.example.com"));
        assert!(!subset_of("example.com", "*.example.com"));
        assert!(!subset_of("*", "*.example.com"));
    }

    #[test]
    fn subnets() {
        assert!(is_subnet("198.51.100.0/24"));
        assert!(is_subnet("198.51.100.7"));
        assert!(is_subnet("2001:db8::/32"));
        assert!(!is_subnet("198.51.100.0/33"));
        assert!(!is_subnet("example.com/8"));
    }
}
