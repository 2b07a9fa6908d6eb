//! The Kubernetes kinds the mesh reads for discovery and injection:
//! Namespace, Service, Pod, Deployment, ServiceAccount, EndpointSlice,
//! Secret, ConfigMap; and Ingress (with IngressClass), which the ingress
//! gateway serves as Istio's does.
//!
//! Only the fields the mesh uses are typed. Unknown fields are accepted:
//! Kubernetes' own schema is the API server's to enforce, and these objects
//! carry much (status, managed fields) that the mesh never reads. Ingress
//! and IngressClass are the exception: they are routing config, read as
//! Istio's kinds are (every field of their `spec` typed).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::selectors::port_in_range;
use crate::validate::Report;

type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Namespace {}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Service {
    #[serde(default)]
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub selector: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default)]
    pub name: String,
    pub port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Pod {
    #[serde(default)]
    pub spec: PodSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    pub container_port: i64,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Deployment {
    #[serde(default)]
    pub spec: DeploymentSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeploymentSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
    #[serde(default)]
    pub selector: LabelSelector,
    #[serde(default)]
    pub template: PodTemplate,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PodTemplate {
    #[serde(default)]
    pub metadata: TemplateMeta,
    #[serde(default)]
    pub spec: PodSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TemplateMeta {
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ServiceAccount {}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    #[serde(default)]
    pub address_type: String,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub secret_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
}

impl Secret {
    /// A key's bytes: `stringData` as written (it wins, as the API server
    /// merges it over `data`), else `data` base64-decoded. A value that is
    /// not base64 is an error naming the key.
    pub fn value(&self, key: &str) -> Option<Result<Vec<u8>, String>> {
        use base64::Engine;
        if let Some(v) = self.string_data.get(key) {
            return Some(Ok(v.as_bytes().to_vec()));
        }
        let v = self.data.get(key)?;
        let compact: String = v.split_whitespace().collect();
        Some(
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|e| format!("data.{key} is not base64: {e}")),
        )
    }

    /// The keys the Secret holds.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.data.keys().chain(self.string_data.keys())
    }

    /// An Opaque Secret of files, as `kubectl create secret generic
    /// --from-file` makes it.
    pub fn opaque(files: &BTreeMap<String, Vec<u8>>) -> Secret {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        Secret {
            secret_type: Some("Opaque".into()),
            data: files.iter().map(|(k, v)| (k.clone(), b64(v))).collect(),
            string_data: BTreeMap::new(),
        }
    }

    /// A `kubernetes.io/tls` Secret, as `kubectl create secret tls` makes it.
    pub fn tls(cert: &[u8], key: &[u8]) -> Secret {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let data = BTreeMap::from([("tls.crt".into(), b64(cert)), ("tls.key".into(), b64(key))]);
        Secret {
            secret_type: Some("kubernetes.io/tls".into()),
            data,
            string_data: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMap {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
}

/// networking.k8s.io/v1 Ingress (its `spec`): the fields istiod turns
/// into a Gateway and VirtualServices. Read like Istio's kinds, so that a
/// misspelt field is refused at its line, as kubectl refuses it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ingress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<IngressBackend>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<IngressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<IngressTls>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpIngressRuleValue>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpIngressRuleValue {
    #[serde(default)]
    pub paths: Vec<HttpIngressPath>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpIngressPath {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_type: Option<String>,
    #[serde(default)]
    pub backend: IngressBackend,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<IngressServiceBackend>,
    /// A backend that is another object (not a Service): Istio serves none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressServiceBackend {
    pub name: String,
    #[serde(default)]
    pub port: ServiceBackendPort,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceBackendPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IngressTls {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

/// networking.k8s.io/v1 IngressClass (its `spec`): Istio serves the
/// Ingresses of a class whose controller is `istio.io/ingress-controller`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressClass {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// The controller's own settings: Istio's takes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
}

pub const INGRESS_PATH_TYPES: &[&str] = &["Exact", "Prefix", "ImplementationSpecific"];

/// The API server's rules for an Ingress (path types, absolute paths, one
/// backend each), and warnings for what istiod leaves out.
pub(crate) fn check_ingress(r: &mut Report, spec: &Ingress) {
    if spec.rules.is_empty() && spec.default_backend.is_none() {
        r.error(
            "spec",
            "Invalid value: either `defaultBackend` or `rules` must be specified",
        );
    }
    if spec.default_backend.is_some() {
        r.warn(
            "spec.defaultBackend",
            "ignored, as Istio ignores it: route the catch-all with a VirtualService",
        );
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        if let Some(host) = &rule.host {
            let name = host.strip_prefix("*.").unwrap_or(host);
            if name.parse::<std::net::IpAddr>().is_ok() || !crate::validate::host_is_valid(name) {
                r.error(
                    format!("{at}.host"),
                    format!("Invalid value: {host:?}: must be a DNS name, not an IP address"),
                );
            }
        }
        let Some(http) = &rule.http else { continue };
        for (j, path) in http.paths.iter().enumerate() {
            check_ingress_path(r, &format!("{at}.http.paths[{j}]"), path);
        }
    }
    for (i, tls) in spec.tls.iter().enumerate() {
        if tls.secret_name.as_deref().unwrap_or("").is_empty() {
            r.warn(
                format!("spec.tls[{i}].secretName"),
                "missing: Istio serves no TLS for these hosts",
            );
        }
    }
}

fn check_ingress_path(r: &mut Report, at: &str, path: &HttpIngressPath) {
    let text = path.path.as_deref().unwrap_or("");
    match path.path_type.as_deref() {
        None => r.error(
            format!("{at}.pathType"),
            "Required value: pathType must be specified",
        ),
        Some(t) if !INGRESS_PATH_TYPES.contains(&t) => r.error(
            format!("{at}.pathType"),
            format!(
                "Unsupported value: {t:?}: use one of {}",
                INGRESS_PATH_TYPES.join(", ")
            ),
        ),
        Some(t)
            if (t != "ImplementationSpecific" || !text.is_empty()) && !text.starts_with('/') =>
        {
            r.error(
                format!("{at}.path"),
                format!("Invalid value: {text:?}: must be an absolute path"),
            )
        }
        Some(_) => {}
    }
    let backend = &path.backend;
    match (&backend.service, &backend.resource) {
        (Some(svc), None) => {
            let port = &svc.port;
            if port.name.is_some() == port.number.is_some() {
                r.error(
                    format!("{at}.backend.service.port"),
                    "Invalid value: give the port's name or its number, not both",
                );
            }
            if let Some(n) = port.number {
                port_in_range(r, &format!("{at}.backend.service.port.number"), n);
            }
        }
        (None, Some(_)) => r.warn(
            format!("{at}.backend.resource"),
            "not served, as Istio serves none: the path is left out",
        ),
        _ => r.error(
            format!("{at}.backend"),
            "Invalid value: exactly one of `service` or `resource` must be given",
        ),
    }
}

pub(crate) fn check_service(r: &mut Report, s: &Service) {
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in s.spec.ports.iter().enumerate() {
        port_in_range(r, &format!("spec.ports[{i}].port"), p.port);
        if s.spec.ports.len() > 1 && p.name.is_empty() {
            r.error(
                format!("spec.ports[{i}].name"),
                "Required value: a Service with several ports names each one",
            );
        }
        if !names.insert(p.name.as_str()) {
            r.error(
                format!("spec.ports[{i}].name"),
                format!("Duplicate value: {:?}", p.name),
            );
        }
    }
}

pub(crate) fn check_deployment(r: &mut Report, d: &Deployment) {
    let selector = &d.spec.selector.match_labels;
    if selector.is_empty() {
        r.error(
            "spec.selector",
            "Required value: a Deployment needs a selector",
        );
    }
    let labels = &d.spec.template.metadata.labels;
    if selector.iter().any(|(k, v)| labels.get(k) != Some(v)) {
        r.error(
            "spec.template.metadata.labels",
            "selector does not match template labels",
        );
    }
    check_pod_spec(r, "spec.template.spec", &d.spec.template.spec);
}

pub(crate) fn check_pod(r: &mut Report, p: &Pod) {
    check_pod_spec(r, "spec", &p.spec);
}

fn check_pod_spec(r: &mut Report, at: &str, spec: &PodSpec) {
    if spec.containers.is_empty() {
        r.error(
            format!("{at}.containers"),
            "Required value: at least one container",
        );
    }
    for (i, c) in spec.containers.iter().enumerate() {
        for (j, p) in c.ports.iter().enumerate() {
            port_in_range(
                r,
                &format!("{at}.containers[{i}].ports[{j}].containerPort"),
                p.container_port,
            );
        }
    }
}
