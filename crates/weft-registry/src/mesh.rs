//! The mesh description a person writes (`mesh.yaml`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshSpec {
    #[serde(default)]
    pub workloads: Vec<WorkloadSpec>,
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
}

/// One pod: an app process with its sidecar, in a network namespace.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSpec {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// As on a Kubernetes pod; `inject.istio.io/templates: grpc-agent`
    /// makes a proxyless gRPC pod (no sidecar, no capture, an xDS
    /// bootstrap for the app), and `gateway` a gateway pod (only the
    /// proxy, as a router), as Istio's injector does.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default = "default_namespace")]
    pub service_account: String,
    /// argv of the app; a first word of `weft` means this very binary.
    /// A gateway pod has none: it runs only its proxy.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
    /// Pods of this workload (each its own network namespace and address,
    /// named `<name>-0`, `<name>-1`, …); one keeps the plain name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u16>,
    /// `region/zone/subzone`, as a WorkloadEntry's locality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// The container's readiness probe, in Kubernetes' shape (`httpGet`
    /// with a path); `weft up` waits on it (default: `GET /`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// DNS names every pod resolves to this pod's address: a host outside
    /// the mesh (with `sidecar.istio.io/inject: "false"`), as `httpbin.org`
    /// would be, for egress and `outboundTrafficPolicy`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Set on the pods of a workload of several replicas: the workload's
    /// name (theirs is `<name>-<i>`).
    #[serde(skip)]
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Probe {
    pub http_get: HttpGet,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpGet {
    #[serde(default = "root")]
    pub path: String,
    /// Accepted as Kubernetes writes it; the probe asks every HTTP port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<serde_json::Value>,
}

fn root() -> String {
    "/".into()
}

impl WorkloadSpec {
    /// The path `weft up` asks to see the app ready.
    pub fn readiness_path(&self) -> &str {
        self.readiness_probe
            .as_ref()
            .map_or("/", |p| p.http_get.path.as_str())
    }
}

impl WorkloadSpec {
    /// One spec per pod: `replicas` copies named `<name>-<i>`.
    pub fn pods(&self) -> Vec<WorkloadSpec> {
        match self.replicas.unwrap_or(1) {
            0 | 1 => vec![WorkloadSpec {
                replicas: None,
                ..self.clone()
            }],
            n => (0..n)
                .map(|i| WorkloadSpec {
                    name: format!("{}-{i}", self.name),
                    owner: Some(self.name.clone()),
                    replicas: None,
                    ..self.clone()
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerPort {
    pub container_port: u16,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// A Kubernetes Service: a name, ports and a selector.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default)]
    pub name: String,
    pub port: u16,
    /// A number, or the name of a container port (as in Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

impl ServicePort {
    /// The port number endpoints serve this port on when no endpoint
    /// says otherwise: a numeric target, else the port itself.
    pub fn target(&self) -> u16 {
        match &self.target_port {
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .unwrap_or(self.port),
            _ => self.port,
        }
    }
}

fn default_namespace() -> String {
    "default".to_string()
}

impl MeshSpec {
    pub fn from_yaml(text: &str) -> Result<MeshSpec, String> {
        let spec: MeshSpec = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        spec.check()?;
        Ok(spec)
    }

    /// Rules that keep names usable as network-namespace and DNS names.
    fn check(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for w in &self.workloads {
            if !valid_name(&w.name) {
                return Err(format!("workload {:?}: names are lower-case letters, digits and '-', at most 40 characters", w.name));
            }
            if !names.insert(&w.name) {
                return Err(format!("workload {:?} is defined twice", w.name));
            }
            let gateway =
                crate::ProxyKind::of_pod(&w.labels, &w.annotations) == crate::ProxyKind::Gateway;
            if w.command.is_empty() && !gateway {
                return Err(format!("workload {:?}: command must not be empty", w.name));
            }
            if !w.command.is_empty() && gateway {
                return Err(format!(
                    "workload {:?}: a gateway pod (inject.istio.io/templates: gateway) runs only its proxy; leave out command",
                    w.name
                ));
            }
            if let Some(bad) = w.hostnames.iter().find(|h| !valid_hostname(h)) {
                return Err(format!(
                    "workload {:?}: hostnames: {bad:?} is not a DNS name",
                    w.name
                ));
            }
            if !w.hostnames.is_empty() && w.replicas.unwrap_or(1) > 1 {
                return Err(format!(
                    "workload {:?}: hostnames name one host; a workload with them has one replica",
                    w.name
                ));
            }
        }
        for s in &self.services {
            if !valid_name(&s.name) {
                return Err(format!("service {:?}: not a valid DNS label", s.name));
            }
            if s.ports.is_empty() {
                return Err(format!(
                    "service {:?}: at least one port is required",
                    s.name
                ));
            }
        }
        Ok(())
    }
}

fn valid_hostname(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 40
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_dns_names_of_one_pod() {
        let mesh = |extra: &str| {
            MeshSpec::from_yaml(&format!(
                "workloads:\n- name: ext\n  command: [x]\n  labels: {{sidecar.istio.io/inject: 'false'}}\n{extra}"
            ))
        };
        assert!(mesh("  hostnames: [httpbin.org, www.example.com]\n").is_ok());
        let bad = mesh("  hostnames: ['httpbin.org/x']\n").unwrap_err();
        assert!(bad.contains("\"httpbin.org/x\" is not a DNS name"), "{bad}");
        let many = mesh("  hostnames: [a.org]\n  replicas: 2\n").unwrap_err();
        assert!(many.contains("one replica"), "{many}");
    }

    #[test]
    fn gateway_pods_run_only_their_proxy() {
        let mesh = |extra: &str| {
            MeshSpec::from_yaml(&format!(
                "workloads:\n- name: istio-egressgateway\n  labels: {{istio: egressgateway}}\n  annotations: {{inject.istio.io/templates: gateway}}\n{extra}"
            ))
        };
        let spec = mesh("").unwrap();
        let w = &spec.workloads[0];
        assert_eq!(
            crate::ProxyKind::of_pod(&w.labels, &w.annotations),
            crate::ProxyKind::Gateway
        );
        let with_app = mesh("  command: [x]\n").unwrap_err();
        assert!(with_app.contains("leave out command"), "{with_app}");
        let app = MeshSpec::from_yaml("workloads:\n- name: a\n").unwrap_err();
        assert!(app.contains("command must not be empty"), "{app}");
    }

    #[test]
    fn replicas_are_pods_named_by_index() {
        let spec = WorkloadSpec {
            name: "reviews-v1".into(),
            replicas: Some(3),
            locality: Some("us/z1".into()),
            ..Default::default()
        };
        let pods = spec.pods();
        let names: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["reviews-v1-0", "reviews-v1-1", "reviews-v1-2"]);
        assert!(pods.iter().all(|p| p.locality.as_deref() == Some("us/z1")));
        let one = WorkloadSpec {
            name: "ratings-v1".into(),
            ..Default::default()
        };
        assert_eq!(
            one.pods()[0].name,
            "ratings-v1",
            "one replica keeps the plain name"
        );
    }
}
