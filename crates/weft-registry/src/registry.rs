//! The resolved registry: what the control plane translates against.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::entries::Entry;
use crate::mesh::{ContainerPort, ServicePort};

pub const DOMAIN_SUFFIX: &str = "svc.cluster.local";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    pub services: Vec<Service>,
    pub workloads: Vec<Workload>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    /// The ClusterIP, when the service has one.
    pub vip: Option<IpAddr>,
    pub ports: Vec<ServicePort>,
    pub selector: BTreeMap<String, String>,
    /// Set when a ServiceEntry declares the service: `name` is then the
    /// entry's host, taken as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    Sidecar,
    Gateway,
    /// No proxy: the app's own gRPC library takes xDS from the control
    /// plane (Istio's `grpc-agent` injection template).
    Proxyless,
    /// Outside the mesh: no sidecar and no capture
    /// (`sidecar.istio.io/inject: "false"`); the pod reaches services as
    /// Kubernetes' kube-proxy lets it, and is reached in plaintext.
    NoSidecar,
}

/// The annotation Istio's injector reads to pick injection templates;
/// `grpc-agent` among them makes a proxyless gRPC pod, `gateway` a
/// gateway (Istio's way to deploy a gateway of one's own).
pub const INJECT_TEMPLATES: &str = "inject.istio.io/templates";
/// The label (or, as before Istio 1.10, annotation) that turns injection
/// off for a pod: `"false"`.
pub const INJECT: &str = "sidecar.istio.io/inject";
/// The cluster every workload is in (Istio's default `CLUSTER_ID`).
pub const CLUSTER_ID: &str = "Kubernetes";

impl ProxyKind {
    /// The kind of a pod (not a gateway) from its labels and annotations,
    /// as Istio's injector decides it; the label wins over the annotation.
    pub fn of_pod(
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> ProxyKind {
        let inject = labels.get(INJECT).or_else(|| annotations.get(INJECT));
        if inject.is_some_and(|v| v == "false") {
            return ProxyKind::NoSidecar;
        }
        let template = |name: &str| {
            annotations
                .get(INJECT_TEMPLATES)
                .is_some_and(|t| t.split(',').any(|t| t.trim() == name))
        };
        if template("gateway") {
            ProxyKind::Gateway
        } else if template("grpc-agent") {
            ProxyKind::Proxyless
        } else {
            ProxyKind::Sidecar
        }
    }

    /// Whether the pod runs a proxy that takes xDS (a sidecar or gateway).
    pub fn has_proxy(self) -> bool {
        matches!(self, ProxyKind::Sidecar | ProxyKind::Gateway)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub ip: IpAddr,
    pub ports: Vec<ContainerPort>,
    pub proxy: ProxyKind,
    /// Where the proxy's admin port answers (its metrics on 15090 of the
    /// same address) when not on the workload's address: the local mesh's
    /// gateway runs on the host and answers on the bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<std::net::SocketAddr>,
    /// `region/zone/subzone` (any part may be empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// For an endpoint of a ServiceEntry: the entry's name. Such a
    /// workload is an endpoint of that entry's hosts only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// The workload (a Deployment's name) a pod of several replicas
    /// belongs to; None when the pod's name is the workload's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// How the proxy treats a port's traffic, decided as Istio does: the
/// appProtocol if set, else the port name's prefix (`http-web`, `grpc`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Tcp,
    /// TLS the sidecar passes through (`https`, `tls`): routed by SNI with
    /// VirtualService `tls[]` routes, never terminated.
    Tls,
    /// No protocol declared, or one Istio does not know: the sidecar
    /// sniffs each connection for HTTP, as Istio's protocol selection does.
    Auto,
}

impl Protocol {
    pub fn of(port: &ServicePort) -> Protocol {
        let declared = port
            .app_protocol
            .as_deref()
            .unwrap_or_else(|| port.name.split('-').next().unwrap_or(""));
        match declared.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "http2" | "grpc-web" | "kubernetes.io/h2c" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            "https" | "tls" => Protocol::Tls,
            // Istio's other protocols are opaque to the sidecar.
            "tcp" | "mongo" | "mysql" | "redis" | "udp" => Protocol::Tcp,
            _ => Protocol::Auto,
        }
    }

    /// Declared as HTTP of some kind (not sniffed).
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }
}

impl Service {
    pub fn fqdn(&self) -> String {
        if self.entry.is_some() {
            return self.name.clone();
        }
        format!("{}.{}.{DOMAIN_SUFFIX}", self.name, self.namespace)
    }

    /// Every name a client in `from_ns` may use for this service (a
    /// ServiceEntry host has only itself).
    pub fn aliases(&self, from_ns: &str) -> Vec<String> {
        if self.entry.is_some() {
            return vec![self.name.clone()];
        }
        let mut names = vec![
            self.fqdn(),
            format!("{}.{}.svc", self.name, self.namespace),
            format!("{}.{}", self.name, self.namespace),
        ];
        if from_ns == self.namespace {
            names.push(self.name.clone());
        }
        names
    }

    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }

    /// Whether `w` is an endpoint of this service: a ServiceEntry's own
    /// endpoints belong to its hosts alone; pods are picked by selector.
    pub fn picks(&self, w: &Workload) -> bool {
        match (&w.entry, &self.entry) {
            (Some(of), Some(entry)) => *of == entry.name,
            (Some(_), None) => false,
            (None, _) => self.selects(&w.labels),
        }
    }

    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.selector.is_empty() && self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl Workload {
    /// Istio's workload name: the owner's, else the pod's own.
    pub fn workload_name(&self) -> &str {
        self.owner.as_deref().unwrap_or(&self.name)
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Istio's canonical service: its label, else Kubernetes' name label,
    /// else `app`, else the workload's name.
    pub fn canonical_service(&self) -> &str {
        self.label("service.istio.io/canonical-name")
            .or(self.label("app.kubernetes.io/name"))
            .or(self.label("app"))
            .unwrap_or(self.workload_name())
    }

    /// Istio's canonical revision: its label, else Kubernetes' version
    /// label, else `version`, else `latest`.
    pub fn canonical_revision(&self) -> &str {
        self.label("service.istio.io/canonical-revision")
            .or(self.label("app.kubernetes.io/version"))
            .or(self.label("version"))
            .unwrap_or("latest")
    }

    /// Istio's node id for this workload's proxy: `sidecar~IP~name.ns~ns.svc.cluster.local`.
    pub fn node_id(&self) -> String {
        let kind = match self.proxy {
            // Istio's grpc-agent names its node as a sidecar does.
            ProxyKind::Sidecar | ProxyKind::Proxyless | ProxyKind::NoSidecar => "sidecar",
            ProxyKind::Gateway => "router",
        };
        format!(
            "{kind}~{}~{}.{}~{}.{DOMAIN_SUFFIX}",
            self.ip, self.name, self.namespace, self.namespace
        )
    }

    /// The port this workload serves a service port on. A ServiceEntry
    /// endpoint names every port of its entry (with its own number).
    pub fn serves(&self, port: &ServicePort) -> Option<u16> {
        if self.entry.is_some() {
            let own = self.ports.iter().find(|c| c.name == port.name);
            return own.map(|c| c.container_port);
        }
        target_port(port, &self.ports)
    }

    pub fn spiffe_id(&self) -> String {
        format!(
            "spiffe://cluster.local/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
}

impl Registry {
    pub fn from_json(text: &str) -> Result<Registry, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// Resolves a host as written in Istio config (short name, `name.ns`,
    /// FQDN), relative to the namespace of the resource that wrote it.
    pub fn service(&self, host: &str, from_ns: &str) -> Option<&Service> {
        let fqdn = self.qualify(host, from_ns);
        self.services.iter().find(|s| s.fqdn() == fqdn)
    }

    /// Istio's host expansion: `reviews` in namespace `default` means
    /// `reviews.default.svc.cluster.local`; `reviews.prod` means `reviews.prod.svc.cluster.local`.
    /// A host a ServiceEntry declares is taken as written.
    pub fn qualify(&self, host: &str, from_ns: &str) -> String {
        let declared = || {
            self.services
                .iter()
                .any(|s| s.entry.is_some() && s.name == host)
        };
        if host.contains('*') || host.ends_with(DOMAIN_SUFFIX) || declared() {
            return host.to_string();
        }
        match host.split('.').count() {
            1 => format!("{host}.{from_ns}.{DOMAIN_SUFFIX}"),
            2 => format!("{host}.{DOMAIN_SUFFIX}"),
            3 if host.ends_with(".svc") => format!("{host}.cluster.local"),
            _ => host.to_string(),
        }
    }

    pub fn workload_by_node_id(&self, node_id: &str) -> Option<&Workload> {
        // Match on IP and name.ns; the suffix is informational.
        let mut parts = node_id.split('~');
        let (_, ip, name_ns) = (parts.next()?, parts.next()?, parts.next()?);
        self.workloads
            .iter()
            .find(|w| w.ip.to_string() == ip && format!("{}.{}", w.name, w.namespace) == name_ns)
    }

    /// Endpoints of a service port, restricted to workloads that also carry
    /// `subset` labels. The port is resolved per workload (a named target port
    /// may be a different number on each).
    pub fn endpoints(
        &self,
        service: &Service,
        port: &ServicePort,
        subset: &BTreeMap<String, String>,
    ) -> Vec<(SocketAddr, &Workload)> {
        self.workloads
            .iter()
            // The local mesh's ingress gateway runs on the host's loopback,
            // where no pod can reach it.
            .filter(|w| !(w.proxy == ProxyKind::Gateway && w.ip.is_loopback()))
            .filter(|w| w.namespace == service.namespace)
            .filter(|w| service.picks(w))
            .filter(|w| subset.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
            .filter_map(|w| Some((SocketAddr::new(w.ip, w.serves(port)?), w)))
            .collect()
    }

    /// The services whose selector picks this workload.
    pub fn services_of<'a>(&'a self, w: &'a Workload) -> impl Iterator<Item = &'a Service> + 'a {
        self.services
            .iter()
            .filter(move |s| s.namespace == w.namespace && s.picks(w))
    }
}

/// Resolves a Service's targetPort (number, name, or absent = same as port).
pub fn target_port(port: &ServicePort, container: &[ContainerPort]) -> Option<u16> {
    match &port.target_port {
        None => Some(port.port),
        Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Some(serde_json::Value::String(name)) => match name.parse::<u16>() {
            Ok(n) => Some(n),
            Err(_) => container
                .iter()
                .find(|c| &c.name == name)
                .map(|c| c.container_port),
        },
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let labels = |v: &str| {
            BTreeMap::from([
                ("app".to_string(), "reviews".to_string()),
                ("version".to_string(), v.to_string()),
            ])
        };
        let wl = |name: &str, ip: &str, v: &str| Workload {
            name: name.into(),
            namespace: "default".into(),
            labels: labels(v),
            service_account: "bookinfo-reviews".into(),
            ip: ip.parse().unwrap(),
            ports: vec![ContainerPort {
                container_port: 9080,
                name: "http".into(),
                protocol: None,
            }],
            proxy: ProxyKind::Sidecar,
            locality: None,
            entry: None,
            owner: None,
            admin: None,
        };
        Registry {
            services: vec![Service {
                name: "reviews".into(),
                namespace: "default".into(),
                vip: None,
                ports: vec![ServicePort {
                    name: "http".into(),
                    port: 9080,
                    target_port: Some("http".into()),
                    app_protocol: None,
                    protocol: None,
                }],
                selector: BTreeMap::from([("app".to_string(), "reviews".to_string())]),
                entry: None,
            }],
            workloads: vec![
                wl("reviews-v1", "198.18.0.2", "v1"),
                wl("reviews-v2", "198.18.0.3", "v2"),
            ],
        }
    }

    #[test]
    fn hosts_resolve_like_istio() {
        let r = registry();
        assert!(r.service("reviews", "default").is_some());
        assert!(r.service("reviews.default", "prod").is_some());
        assert!(r
            .service("reviews.default.svc.cluster.local", "x")
            .is_some());
        assert!(r.service("reviews", "prod").is_none());
    }

    #[test]
    fn subset_endpoints_follow_labels_and_named_ports() {
        let r = registry();
        let s = &r.services[0];
        let all = r.endpoints(s, &s.ports[0], &BTreeMap::new());
        assert_eq!(all.len(), 2);
        let v2 = r.endpoints(
            s,
            &s.ports[0],
            &BTreeMap::from([("version".into(), "v2".into())]),
        );
        assert_eq!(v2.len(), 1);
        assert_eq!(v2[0].0, "198.18.0.3:9080".parse().unwrap());
    }

    #[test]
    fn protocol_from_name_or_app_protocol() {
        let p = |name: &str, app: Option<&str>| {
            Protocol::of(&ServicePort {
                name: name.into(),
                port: 1,
                target_port: None,
                app_protocol: app.map(Into::into),
                protocol: None,
            })
        };
        assert_eq!(p("http", None), Protocol::Http);
        assert_eq!(p("http-web", None), Protocol::Http);
        assert_eq!(p("grpc", None), Protocol::Grpc);
        assert_eq!(p("db", None), Protocol::Auto, "not a protocol: sniffed");
        assert_eq!(p("", None), Protocol::Auto);
        assert_eq!(p("tcp-echo", None), Protocol::Tcp);
        assert_eq!(p("mysql", None), Protocol::Tcp);
        assert_eq!(p("https", None), Protocol::Tls);
        assert_eq!(p("web", Some("tls")), Protocol::Tls);
        assert_eq!(p("web", Some("http")), Protocol::Http);
        assert_eq!(p("web", Some("kubernetes.io/h2c")), Protocol::Http2);
    }

    #[test]
    fn node_ids_round_trip() {
        let r = registry();
        let id = r.workloads[1].node_id();
        assert_eq!(
            id,
            "sidecar~198.18.0.3~reviews-v2.default~default.svc.cluster.local"
        );
        assert_eq!(r.workload_by_node_id(&id).unwrap().name, "reviews-v2");
    }
}
