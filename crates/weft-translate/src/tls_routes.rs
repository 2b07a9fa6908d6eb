//! VirtualService `tls[]` routes → filter chains chosen by the ClientHello's
//! server name (SNI), each proxying the still-encrypted bytes to the
//! route's destinations. A sidecar gets them on the outbound listener of a
//! TLS or sniffed service port; a gateway on its PASSTHROUGH servers. TLS
//! is never terminated here.

use std::collections::BTreeSet;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, FilterChainMatch};
use weft_config::networking::http_policies::{L4Match, TlsRoute};
use weft_registry::{Service, Workload};

use crate::gateway::BoundServer;
use crate::routes::Scope;
use crate::tcp::{fits, route_filter};
use crate::Inputs;

/// Filter chains told apart by server name. A chain that names a server
/// name an earlier chain claimed is dropped whole, as istiod drops a
/// duplicate SNI match (the oldest VirtualService keeps it); so is a
/// second chain that names none.
#[derive(Default)]
pub(crate) struct SniChains {
    chains: Vec<FilterChain>,
    taken: BTreeSet<String>,
    catch_all: bool,
}

impl SniChains {
    /// Adds a chain for `names` (empty: any name), returning false when it
    /// overlaps an earlier chain.
    pub(crate) fn push(&mut self, names: &[String], mut chain: FilterChain) -> bool {
        if names.is_empty() {
            if std::mem::replace(&mut self.catch_all, true) {
                return false;
            }
        } else if names.iter().any(|n| self.taken.contains(n)) {
            return false;
        }
        self.taken.extend(names.iter().cloned());
        let matched = chain
            .filter_chain_match
            .get_or_insert_with(Default::default);
        matched.server_names = names.to_vec();
        self.chains.push(chain);
        true
    }

    pub(crate) fn into_chains(self) -> Vec<FilterChain> {
        self.chains
    }
}

/// A chain that proxies TLS with one of `names` (any, when empty) to
/// `filter`'s destinations.
fn passthrough_chain(filter: Filter) -> FilterChain {
    FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            transport_protocol: "tls".into(),
            ..Default::default()
        }),
        filters: vec![filter],
        ..Default::default()
    }
}

/// SNI names of a match as Envoy takes them: a `*` host matches any name,
/// which Envoy spells as no names at all.
fn sni_names<'a>(hosts: impl Iterator<Item = &'a String>) -> Vec<String> {
    let names: Vec<String> = hosts.cloned().collect();
    if names.iter().any(|n| n == "*") {
        Vec::new()
    } else {
        names
    }
}

/// The SNI chains of `service`'s TLS `port` on `vip`, from the `tls[]`
/// routes of the VirtualServices for its host that apply to sidecars.
pub(crate) fn sidecar_chains(
    inputs: &Inputs,
    proxy: &Workload,
    service: &Service,
    port: u16,
    vip: IpAddr,
) -> Vec<FilterChain> {
    let mut chains = SniChains::default();
    add_service_routes(&mut chains, inputs, proxy, service, port, Some(vip));
    chains.into_chains()
}

/// The SNI chains of ServiceEntry hosts served on a TLS `port` of every
/// address (the entries declare no `addresses`), as istiod builds them:
/// a host's `tls[]` routes if it has any, else a chain for its own name
/// to its own cluster.
pub(crate) fn entry_chains(
    inputs: &Inputs,
    proxy: &Workload,
    services: &[&Service],
    port: u16,
) -> Vec<FilterChain> {
    let mut chains = SniChains::default();
    for service in services {
        if add_service_routes(&mut chains, inputs, proxy, service, port, None) {
            continue;
        }
        let scope = Scope::sidecar(inputs, proxy, &service.namespace, port);
        let own = weft_config::networking::virtual_service::RouteDestination {
            destination: weft_config::networking::Destination {
                host: service.fqdn(),
                ..Default::default()
            },
            weight: None,
        };
        let names = sni_names(std::iter::once(&service.name));
        chains.push(&names, passthrough_chain(route_filter(&[own], &scope)));
    }
    chains.into_chains()
}

/// Adds the chains of the `tls[]` routes of the VirtualServices for
/// `service`'s host; false when no VirtualService names the host.
fn add_service_routes(
    chains: &mut SniChains,
    inputs: &Inputs,
    proxy: &Workload,
    service: &Service,
    port: u16,
    vip: Option<IpAddr>,
) -> bool {
    let fqdn = service.fqdn();
    let mut named = false;
    for resource in crate::sidecar::mesh_virtual_services(inputs) {
        let Some(vs) = resource.as_virtual_service() else {
            continue;
        };
        if !vs
            .hosts
            .iter()
            .any(|h| inputs.registry.qualify(h, resource.namespace()) == fqdn)
        {
            continue;
        }
        named |= !vs.tls.is_empty();
        let scope = Scope::sidecar(inputs, proxy, resource.namespace(), port);
        for route in &vs.tls {
            let fitting = route.matches.iter().filter(|m| fits(m, &scope, vip));
            add_route(chains, route, fitting, &scope);
        }
    }
    named
}

/// One chain per fitting match of `route`.
fn add_route<'a>(
    chains: &mut SniChains,
    route: &TlsRoute,
    fitting: impl Iterator<Item = &'a L4Match>,
    scope: &Scope,
) {
    for m in fitting.filter(|m| !m.sni_hosts.is_empty()) {
        let names = sni_names(m.sni_hosts.iter());
        chains.push(&names, passthrough_chain(route_filter(&route.route, scope)));
    }
}

/// The SNI chains of a gateway's PASSTHROUGH servers on one port, from the
/// `tls[]` routes of the VirtualServices bound to their Gateways with a
/// host the server admits. As in istiod, a match's SNI hosts are taken as
/// written (validation keeps them within the VirtualService's hosts).
pub(crate) fn gateway_chains(
    inputs: &Inputs,
    proxy: &Workload,
    servers: &[BoundServer],
    port: u16,
    chains: &mut SniChains,
) {
    for resource in inputs.virtual_services(|vs| !vs.tls.is_empty()) {
        let vs = resource.as_virtual_service().expect("filtered");
        let ns = resource.namespace();
        for bound in servers.iter().filter(|b| b.binds(vs, ns)) {
            let scope = bound.scope(inputs, proxy, ns, port);
            for route in &vs.tls {
                let fitting = route.matches.iter().filter(|m| fits(m, &scope, None));
                add_route(chains, route, fitting, &scope);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        tcp_proxy::ClusterSpecifier, TcpProxy,
    };

    use super::*;
    use crate::{translate, Inputs, ProxyResources};

    /// Each chain as (server names, transport protocol, clusters proxied to).
    pub(crate) fn chains(
        out: &ProxyResources,
        listener: &str,
    ) -> Vec<(Vec<String>, String, Vec<String>)> {
        let l: &Listener = out
            .listeners
            .iter()
            .find(|l| l.name == listener)
            .unwrap_or_else(|| panic!("no listener {listener}: {:?}", out.problems));
        l.filter_chains
            .iter()
            .map(|c| {
                let m = c.filter_chain_match.clone().unwrap_or_default();
                (
                    m.server_names,
                    m.transport_protocol,
                    c.filters.iter().flat_map(clusters).collect(),
                )
            })
            .collect()
    }

    fn clusters(f: &Filter) -> Vec<String> {
        let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            return vec![];
        };
        if f.name == crate::stats::NAME {
            return vec![];
        }
        let Ok(proxy) = prost::Message::decode(any.value.as_slice()).map(|p: TcpProxy| p) else {
            return vec![];
        };
        if !any.type_url.ends_with("TcpProxy") {
            return vec![f.name.clone()];
        }
        match proxy.cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) => vec![c],
            Some(ClusterSpecifier::WeightedClusters(w)) => {
                w.clusters.into_iter().map(|c| c.name).collect()
            }
            None => vec![],
        }
    }

    const SUBSETS: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n";

    #[test]
    fn sidecar_tls_ports_route_by_sni_and_default_to_the_service() {
        let mut registry = crate::tests::registry();
        registry.services[0].ports[0].name = "https".into();
        let config = format!(
            "{SUBSETS}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews-sni}}
spec:
  hosts: [reviews, '*.example.com']
  tls:
  - match:
    - sniHosts: [v1.example.com]
      port: 9080
    - sniHosts: [other.example.com]
      port: 443
    route:
    - destination: {{host: reviews, subset: v1}}
  - match:
    - sniHosts: ['*.example.com']
    route:
    - destination: {{host: reviews, subset: v1}}
      weight: 30
    - destination: {{host: reviews, subset: v2}}
      weight: 70
  - match:
    - sniHosts: [v2.example.com, v1.example.com]
    route:
    - destination: {{host: reviews, subset: v2}}
"
        );
        let loaded = weft_config::load_str(&config, "t.yaml");
        assert!(!loaded.has_errors(), "{:?}", loaded.problems);
        let inputs = Inputs::new(&loaded.resources, &registry);
        let out = translate(&inputs, &registry.workloads[0]);
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let v1 = "outbound|9080|v1|reviews.default.svc.cluster.local";
        let v2 = "outbound|9080|v2|reviews.default.svc.cluster.local";
        assert_eq!(
            chains(&out, "198.19.0.10_9080"),
            vec![
                (names(&["v1.example.com"]), "tls".into(), names(&[v1])),
                (names(&["*.example.com"]), "tls".into(), names(&[v1, v2])),
                // The third route names v1.example.com again: left out.
                // Names no route claims pass through, as in istiod.
                (vec![], String::new(), names(&["PassthroughCluster"])),
            ]
        );
        // Without tls routes a TLS port goes to the service.
        let plain = Inputs::new(&[], &registry);
        let without = translate(&plain, &registry.workloads[0]);
        assert_eq!(
            chains(&without, "198.19.0.10_9080"),
            vec![(
                vec![],
                String::new(),
                names(&["outbound|9080||reviews.default.svc.cluster.local"])
            )]
        );
        let l = out
            .listeners
            .iter()
            .find(|l| l.name == "198.19.0.10_9080")
            .unwrap();
        assert_eq!(
            l.listener_filters[0].name,
            "envoy.filters.listener.tls_inspector"
        );
    }

    #[test]
    fn gateway_passthrough_tcp_and_tls_servers() {
        let config = format!(
            "{SUBSETS}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    tls: {{mode: PASSTHROUGH}}
    hosts: [a.example.com, b.example.com]
  - port: {{number: 31400, name: tcp, protocol: TCP}}
    hosts: ['*']
  - port: {{number: 15443, name: tls, protocol: TLS}}
    tls: {{mode: PASSTHROUGH}}
    hosts: [nothing.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: sni}}
spec:
  hosts: [a.example.com, b.example.com, c.example.com]
  gateways: [gw]
  tls:
  - match:
    - {{port: 443, sniHosts: [a.example.com, c.example.com]}}
    route:
    - destination: {{host: reviews, subset: v1, port: {{number: 9080}}}}
  - match:
    - {{port: 443, sniHosts: [b.example.com]}}
    - {{port: 8443, sniHosts: [a.example.com]}}
    route:
    - destination: {{host: reviews, subset: v2, port: {{number: 9080}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp}}
spec:
  hosts: ['*']
  gateways: [gw]
  tcp:
  - match:
    - port: 31400
    route:
    - destination: {{host: reviews, subset: v2, port: {{number: 9080}}}}
"
        );
        let out = crate::tests::translated_with(&config, 2);
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let v1 = "outbound|9080|v1|reviews.default.svc.cluster.local";
        let v2 = "outbound|9080|v2|reviews.default.svc.cluster.local";
        // SNI hosts are taken as written, as istiod takes them.
        assert_eq!(
            chains(&out, "0.0.0.0_443"),
            vec![
                (
                    names(&["a.example.com", "c.example.com"]),
                    "tls".into(),
                    names(&[v1])
                ),
                (names(&["b.example.com"]), "tls".into(), names(&[v2])),
            ]
        );
        assert_eq!(
            chains(&out, "0.0.0.0_31400"),
            vec![(vec![], String::new(), names(&[v2]))]
        );
        assert!(out.listeners.iter().all(|l| l.name != "0.0.0.0_15443"));
        assert_eq!(out.problems.len(), 1, "{:?}", out.problems);
        assert!(
            out.problems[0].starts_with("Gateway default/gw: spec.servers[2]: no VirtualService"),
            "{:?}",
            out.problems
        );
    }

    fn chain(tag: &str) -> FilterChain {
        FilterChain {
            name: tag.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_first_chain_keeps_a_name() {
        let mut chains = SniChains::default();
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(chains.push(&names(&["a.example.com", "b.example.com"]), chain("first")));
        assert!(!chains.push(
            &names(&["b.example.com", "c.example.com"]),
            chain("overlaps")
        ));
        assert!(chains.push(&names(&["c.example.com"]), chain("second")));
        assert!(chains.push(&[], chain("any")));
        assert!(!chains.push(&[], chain("any again")));
        let got: Vec<(String, Vec<String>)> = chains
            .into_chains()
            .into_iter()
            .map(|c| (c.name, c.filter_chain_match.unwrap().server_names))
            .collect();
        assert_eq!(
            got,
            vec![
                ("first".into(), names(&["a.example.com", "b.example.com"])),
                ("second".into(), names(&["c.example.com"])),
                ("any".into(), vec![]),
            ]
        );
    }
}
