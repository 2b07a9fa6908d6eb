//! ServiceEntries as services. As istiod does, every host of a ServiceEntry
//! becomes a service of its own (named by that host, in the entry's
//! namespace) beside the platform's, so routing, DestinationRules and
//! listeners treat both alike. How its endpoints are found is the entry's
//! `resolution`:
//! - STATIC: the entry's `endpoints` (IP addresses), or the pods and
//!   WorkloadEntries its `workloadSelector` picks (WorkloadEntries are
//!   workloads of the registry, which Kubernetes Services select too). Endpoints become workloads of the registry,
//!   tagged with the entry's name, so subsets and localities apply to them.
//! - DNS / DNS_ROUND_ROBIN: names the proxy resolves itself, the entry's
//!   endpoint addresses or else the host.
//! - NONE: no endpoints; the proxy connects where the client meant to.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use weft_config::networking::ServiceEntry;
use weft_config::{Resource, Spec};

use crate::mesh::{ContainerPort, ServicePort};
use crate::registry::{ProxyKind, Registry, Service, Workload};

/// What a ServiceEntry adds to one of its hosts' services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The ServiceEntry's name (its namespace is the service's).
    pub name: String,
    pub resolution: Resolution,
    /// `location: MESH_EXTERNAL`: outside the mesh (no sidecar, no mTLS).
    pub external: bool,
    /// For DNS resolution: the names to resolve. Empty means the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<DnsEndpoint>,
    /// The entry gives address ranges only (CIDRs), which are not served
    /// yet: its non-HTTP ports get no listener rather than every address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ranges_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    None,
    Static,
    /// Every address a name resolves to is an endpoint (Envoy STRICT_DNS).
    Dns,
    /// Only the first address is used, per connection (Envoy LOGICAL_DNS).
    DnsRoundRobin,
}

/// An endpoint the proxy resolves by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsEndpoint {
    pub address: String,
    /// The port number on this endpoint, by the entry's port name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// What DestinationRule subsets select this endpoint by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl DnsEndpoint {
    /// The port this endpoint serves a service port on: its own mapping
    /// by port name, else the port's target, else the port itself.
    pub fn port(&self, port: &ServicePort) -> u16 {
        self.ports
            .get(&port.name)
            .copied()
            .unwrap_or_else(|| port.target())
    }
}

impl Resolution {
    fn of(se: &ServiceEntry) -> Resolution {
        match se.resolution.as_deref() {
            Some("STATIC") => Resolution::Static,
            Some("DNS") => Resolution::Dns,
            Some("DNS_ROUND_ROBIN") => Resolution::DnsRoundRobin,
            _ => Resolution::None,
        }
    }
}

/// Whether a ServiceEntry in `own` namespace is visible to proxies in
/// `namespace`, by its `exportTo` (`*` or none: everywhere; `.`: its own
/// namespace; `~`: nowhere; else the namespaces named).
pub fn exported(export_to: &[String], own: &str, namespace: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == namespace || (e == "." && own == namespace))
}

impl Registry {
    /// This registry and the services the ServiceEntries of `config`
    /// export to `namespace`. A host the platform already has, or an
    /// older entry declared, keeps its first declaration (istiod's order).
    pub fn with_entries(&self, config: &[Resource], namespace: &str) -> Registry {
        let mut out = self.clone();
        // WorkloadEntries are workloads like pods: Services and entries
        // with a workloadSelector pick them by their labels.
        for r in config {
            if let Spec::WorkloadEntry(we) = &r.spec {
                out.workloads
                    .extend(workload_entry(&r.meta.name, r.namespace(), we));
            }
        }
        let mut entries: Vec<(&Resource, &ServiceEntry)> = config
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::ServiceEntry(se) => Some((r, se.as_ref())),
                _ => None,
            })
            .filter(|(r, se)| exported(&se.export_to, r.namespace(), namespace))
            .collect();
        entries.sort_by(|a, b| a.0.creation_order().cmp(&b.0.creation_order()));
        for (r, se) in entries {
            out.add_entry(r.meta.name.as_str(), r.namespace(), se);
        }
        out
    }

    fn add_entry(&mut self, name: &str, namespace: &str, se: &ServiceEntry) {
        let resolution = Resolution::of(se);
        let ports: Vec<ServicePort> = se.ports.iter().map(entry_port).collect();
        if resolution == Resolution::Static {
            let endpoints = se.endpoints.as_deref().unwrap_or_default();
            for (i, e) in endpoints.iter().enumerate() {
                if let Some(w) = entry_workload(name, namespace, i, e, &ports) {
                    self.workloads.push(w);
                }
            }
        }
        let dns = match resolution {
            Resolution::Dns | Resolution::DnsRoundRobin => se
                .endpoints
                .iter()
                .flatten()
                .filter_map(|e| {
                    Some(DnsEndpoint {
                        address: e.address.clone()?,
                        ports: e
                            .ports
                            .iter()
                            .flatten()
                            .filter_map(|(k, v)| Some((k.clone(), u16::try_from(*v).ok()?)))
                            .collect(),
                        weight: e.weight.and_then(|w| u32::try_from(w).ok()),
                        labels: e.labels.clone(),
                    })
                })
                .collect(),
            _ => Vec::new(),
        };
        let single = |a: &String| {
            let ip = a.strip_suffix("/32").or(a.strip_suffix("/128"));
            ip.unwrap_or(a).parse::<IpAddr>().ok()
        };
        let vip = se.addresses.iter().find_map(single);
        let ranges_only = vip.is_none() && !se.addresses.is_empty();
        for host in &se.hosts {
            let taken = self.services.iter().any(|s| s.fqdn() == *host);
            if taken {
                continue;
            }
            self.services.push(Service {
                name: host.clone(),
                namespace: namespace.to_string(),
                vip,
                ports: ports.clone(),
                selector: se
                    .workload_selector
                    .as_ref()
                    .map(|s| s.labels.clone())
                    .unwrap_or_default(),
                entry: Some(Entry {
                    name: name.to_string(),
                    resolution,
                    external: se.location.as_deref() != Some("MESH_INTERNAL"),
                    dns: dns.clone(),
                    ranges_only,
                }),
            });
        }
    }
}

/// A ServiceEntry port as a Service port: its protocol is what Istio's
/// protocol selection reads (as an appProtocol would be).
fn entry_port(p: &weft_config::networking::service_entry::SePort) -> ServicePort {
    ServicePort {
        name: p.name.clone(),
        port: u16::try_from(p.number).unwrap_or(0),
        target_port: p
            .target_port
            .and_then(|t| u16::try_from(t).ok())
            .map(serde_json::Value::from),
        app_protocol: p.protocol.as_ref().map(|s| s.to_ascii_lowercase()),
        protocol: None,
    }
}

/// A WorkloadEntry (a VM, or any host outside the platform) as a
/// workload without a sidecar; its `ports` name its container ports.
fn workload_entry(
    name: &str,
    namespace: &str,
    we: &weft_config::networking::WorkloadEntry,
) -> Option<Workload> {
    let ip: IpAddr = we.address.as_deref()?.parse().ok()?;
    let ports = we
        .ports
        .iter()
        .flatten()
        .filter_map(|(port_name, n)| {
            Some(ContainerPort {
                container_port: u16::try_from(*n).ok()?,
                name: port_name.clone(),
                protocol: None,
            })
        })
        .collect();
    Some(Workload {
        name: name.to_string(),
        namespace: namespace.to_string(),
        labels: we.labels.clone(),
        service_account: we.service_account.clone().unwrap_or_default(),
        ip,
        ports,
        proxy: ProxyKind::NoSidecar,
        locality: we.locality.clone(),
        entry: None,
        owner: None,
        admin: None,
    })
}

/// A STATIC endpoint as a workload of the entry: every port of the entry
/// is named on it, mapped as the endpoint says or to the port's target.
fn entry_workload(
    entry: &str,
    namespace: &str,
    index: usize,
    e: &weft_config::networking::WorkloadEntry,
    ports: &[ServicePort],
) -> Option<Workload> {
    let ip: IpAddr = e.address.as_deref()?.parse().ok()?;
    let own = e.ports.clone().unwrap_or_default();
    let container = ports
        .iter()
        .map(|p| ContainerPort {
            container_port: own
                .get(&p.name)
                .and_then(|n| u16::try_from(*n).ok())
                .unwrap_or_else(|| p.target()),
            name: p.name.clone(),
            protocol: None,
        })
        .collect();
    Some(Workload {
        name: format!("{entry}-endpoint-{index}"),
        namespace: namespace.to_string(),
        labels: e.labels.clone(),
        service_account: e.service_account.clone().unwrap_or_default(),
        ip,
        ports: container,
        proxy: ProxyKind::NoSidecar,
        locality: e.locality.clone(),
        entry: Some(entry.to_string()),
        owner: None,
        admin: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Vec<Resource> {
        let loaded = weft_config::load_str(yaml, "entries.yaml");
        assert!(!loaded.has_errors(), "{:?}", loaded.problems);
        loaded.resources
    }

    #[test]
    fn dns_entries_become_services_named_by_their_hosts() {
        let cfg = config(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: httpbin-ext, namespace: default}\nspec:\n  hosts: [httpbin.org]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n  location: MESH_EXTERNAL\n",
        );
        let r = Registry::default().with_entries(&cfg, "default");
        let s = r.service("httpbin.org", "default").expect("declared");
        assert_eq!(s.fqdn(), "httpbin.org");
        assert_eq!(s.aliases("default"), vec!["httpbin.org".to_string()]);
        assert_eq!(crate::Protocol::of(&s.ports[0]), crate::Protocol::Http);
        let e = s.entry.as_ref().unwrap();
        assert_eq!((e.resolution, e.external), (Resolution::Dns, true));
        assert_eq!(r.qualify("httpbin.org", "other"), "httpbin.org");
        assert!(Registry::default()
            .with_entries(&cfg, "default")
            .service("httpbin.org", "elsewhere")
            .is_some());
    }

    #[test]
    fn static_endpoints_are_workloads_with_their_port_mapping() {
        let cfg = config(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db, namespace: prod}\nspec:\n  hosts: [db.internal]\n  addresses: [198.19.0.9]\n  ports: [{number: 5432, name: tcp-db, protocol: TCP}, {number: 80, name: http, protocol: HTTP, targetPort: 8080}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  exportTo: [\".\"]\n  endpoints:\n  - {address: 198.19.0.1, labels: {version: v1}}\n  - {address: 198.19.0.2, ports: {tcp-db: 6432}, labels: {version: v2}}\n",
        );
        assert!(Registry::default()
            .with_entries(&cfg, "default")
            .services
            .is_empty());
        let r = Registry::default().with_entries(&cfg, "prod");
        let s = r.service("db.internal", "prod").unwrap();
        assert_eq!(s.vip, Some("198.19.0.9".parse().unwrap()));
        let v2 = BTreeMap::from([("version".to_string(), "v2".to_string())]);
        let db = r.endpoints(s, &s.ports[0], &Default::default());
        let addrs: Vec<String> = db.iter().map(|e| e.0.to_string()).collect();
        assert_eq!(addrs, ["198.19.0.1:5432", "198.19.0.2:6432"]);
        let web = r.endpoints(s, &s.ports[1], &v2);
        assert_eq!(web[0].0.to_string(), "198.19.0.2:8080");
    }

    #[test]
    fn workload_entries_are_picked_by_selectors() {
        let cfg = config(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm-1, namespace: legacy}\nspec: {address: 198.18.0.77, labels: {app: legacy}, ports: {http: 8080}}\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: legacy, namespace: legacy}\nspec:\n  hosts: [legacy.internal]\n  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]\n  resolution: STATIC\n  workloadSelector: {labels: {app: legacy}}\n",
        );
        let r = Registry::default().with_entries(&cfg, "legacy");
        let s = r.service("legacy.internal", "legacy").unwrap();
        let eps = r.endpoints(s, &s.ports[0], &Default::default());
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].0.to_string(), "198.18.0.77:8080");
        assert_eq!(eps[0].1.proxy, ProxyKind::NoSidecar);
    }

    #[test]
    fn the_platform_and_older_entries_keep_their_hosts() {
        let mut platform = Registry::default();
        platform.services.push(Service {
            name: "reviews".into(),
            namespace: "default".into(),
            ..Default::default()
        });
        let cfg = config(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a, namespace: default, creationTimestamp: \"2026-01-01T00:00:00Z\"}\nspec: {hosts: [reviews.default.svc.cluster.local, api.example.com], resolution: DNS, ports: [{number: 443, name: tls, protocol: TLS}]}\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: b, namespace: default, creationTimestamp: \"2026-02-01T00:00:00Z\"}\nspec: {hosts: [api.example.com], resolution: NONE, ports: [{number: 443, name: tls, protocol: TLS}]}\n",
        );
        let r = platform.with_entries(&cfg, "default");
        assert_eq!(r.services.len(), 2);
        assert!(r.services[0].entry.is_none());
        assert_eq!(r.services[1].entry.as_ref().unwrap().name, "a");
    }
}
