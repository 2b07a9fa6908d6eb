//! ServiceEntry, WorkloadEntry and WorkloadGroup: services and workloads
//! outside the platform registry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::selectors::{labels, port_in_range};
use crate::validate::Report;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceEntry {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<SePort>,
    /// MESH_EXTERNAL or MESH_INTERNAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// NONE (default), STATIC, DNS, DNS_ROUND_ROBIN, DYNAMIC_DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<WorkloadEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SePort {
    pub number: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<i64>,
}

/// `workloadSelector: {labels: {…}}` (ServiceEntry, Sidecar, EnvoyFilter).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<BTreeMap<String, i64>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadGroup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<GroupMetadata>,
    #[serde(default)]
    pub template: WorkloadEntry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMetadata {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Probe {
    #[serde(default)]
    pub initial_delay_seconds: Option<i32>,
    #[serde(default)]
    pub timeout_seconds: Option<i32>,
    #[serde(default)]
    pub period_seconds: Option<i32>,
    #[serde(default)]
    pub success_threshold: Option<i32>,
    #[serde(default)]
    pub failure_threshold: Option<i32>,
    #[serde(default)]
    pub http_get: Option<HttpProbe>,
    #[serde(default)]
    pub tcp_socket: Option<TcpProbe>,
    #[serde(default)]
    pub exec: Option<ExecProbe>,
    #[serde(default)]
    pub grpc: Option<GrpcProbe>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpProbe {
    #[serde(default)]
    pub path: Option<String>,
    pub port: i64,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub http_headers: Vec<ProbeHeader>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeHeader {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProbe {
    #[serde(default)]
    pub host: Option<String>,
    pub port: i64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecProbe {
    pub command: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcProbe {
    pub port: i64,
    #[serde(default)]
    pub service: Option<String>,
}

const RESOLUTIONS: &[&str] = &["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"];

pub(crate) fn check_service_entry(r: &mut Report, se: &ServiceEntry) {
    if se.hosts.is_empty() {
        r.error("spec.hosts", "Required value: at least one host");
    }
    for (i, h) in se.hosts.iter().enumerate() {
        if h == "*" {
            r.error(format!("spec.hosts[{i}]"), "hostname cannot be wildcard");
        }
    }
    if se.workload_selector.is_some() && se.endpoints.is_some() {
        r.error(
            "spec",
            "only one of WorkloadSelector or Endpoints can be set",
        );
    }
    if let Some(sel) = &se.workload_selector {
        for (k, v) in &sel.labels {
            if k.contains('*') || v.contains('*') {
                r.error(
                    format!("spec.workloadSelector.labels.{k}"),
                    "wildcard is not supported in selector",
                );
            }
        }
    }
    crate::validate::one_of(
        r,
        "spec.location",
        se.location.as_deref(),
        &["MESH_EXTERNAL", "MESH_INTERNAL"],
    );
    let resolution = se.resolution.as_deref().unwrap_or("NONE");
    if !RESOLUTIONS.contains(&resolution) {
        r.error(
            "spec.resolution",
            format!(
                "Unsupported value: {resolution:?}: use one of {}",
                RESOLUTIONS.join(", ")
            ),
        );
    }
    for (i, a) in se.addresses.iter().enumerate() {
        if a.contains('/') && !a.ends_with("/32") {
            r.warn(
                format!("spec.addresses[{i}]"),
                "CIDR ranges are accepted but not enforced by this version of Weft (a single address is)",
            );
        }
    }
    if resolution == "DYNAMIC_DNS" {
        r.warn(
            "spec.resolution",
            "DYNAMIC_DNS is accepted but not enforced by this version of Weft (treated as NONE: connections go where the client meant)",
        );
    }
    if se.addresses.iter().any(|a| a.contains('/')) && !["NONE", "STATIC"].contains(&resolution) {
        r.error(
            "spec.addresses",
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
    }
    let endpoints = se.endpoints.as_deref().unwrap_or_default();
    if matches!(resolution, "DNS" | "DNS_ROUND_ROBIN") && endpoints.is_empty() {
        for (i, h) in se.hosts.iter().enumerate() {
            if h.contains('*') {
                r.error(
                    format!("spec.hosts[{i}]"),
                    format!("hosts must be FQDN if no endpoints are provided for resolution mode {resolution}"),
                );
            }
        }
    }
    if resolution == "NONE" && se.endpoints.is_some() {
        r.error("spec.endpoints", "NONE mode cannot set endpoints");
    }
    if resolution == "DNS_ROUND_ROBIN" && endpoints.len() > 1 {
        r.error(
            "spec.endpoints",
            "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
        );
    }
    let mut names = std::collections::BTreeSet::new();
    let mut numbers = std::collections::BTreeSet::new();
    for (i, p) in se.ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        if !names.insert(p.name.as_str()) {
            r.error(
                format!("{at}.name"),
                format!("Duplicate value: port name {:?}", p.name),
            );
        }
        if !numbers.insert(p.number) {
            r.error(
                format!("{at}.number"),
                format!("port number cannot be duplicated: {}", p.number),
            );
        }
        port_in_range(r, &format!("{at}.number"), p.number);
        if let Some(t) = p.target_port {
            port_in_range(r, &format!("{at}.targetPort"), t);
        }
    }
    for (i, e) in endpoints.iter().enumerate() {
        check_workload_entry_at(r, &format!("spec.endpoints[{i}]"), e, true);
    }
}

pub(crate) fn check_workload_entry(r: &mut Report, we: &WorkloadEntry) {
    check_workload_entry_at(r, "spec", we, true);
}

/// The rules of a WorkloadEntry, also for ServiceEntry endpoints and a
/// WorkloadGroup's template (where the address may be left out).
fn check_workload_entry_at(r: &mut Report, at: &str, we: &WorkloadEntry, address_required: bool) {
    if address_required && we.address.is_none() && we.network.is_none() {
        r.error(
            format!("{at}.address"),
            "Address is required (or a network)",
        );
    }
    if let Some(addr) = &we.address {
        if let Some(path) = addr.strip_prefix("unix://") {
            if !(path.starts_with('/') || path.starts_with('@')) {
                r.error(
                    format!("{at}.address"),
                    "UDS must be an absolute path or abstract socket",
                );
            } else if path.ends_with('/') {
                r.error(format!("{at}.address"), "UDS may not be a dir");
            }
            if we.ports.is_some() {
                r.error(format!("{at}.ports"), "UDS may not include ports");
            }
        }
    }
    for (name, port) in we.ports.iter().flatten() {
        let valid_name = name.len() < 63
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && name
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid_name {
            r.error(
                format!("{at}.ports"),
                format!("Invalid value: port name {name:?} must be valid (letters, digits, '-')"),
            );
        }
        port_in_range(r, &format!("{at}.ports.{name}"), *port);
    }
    labels(r, &format!("{at}.labels"), &we.labels);
}

pub(crate) fn check_workload_group(r: &mut Report, wg: &WorkloadGroup) {
    check_workload_entry_at(r, "spec.template", &wg.template, false);
    let Some(probe) = &wg.probe else { return };
    if let Some(h) = &probe.http_get {
        port_in_range(r, "spec.probe.httpGet.port", h.port);
        for (i, header) in h.http_headers.iter().enumerate() {
            if header.name.is_empty()
                || !header
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                r.error(
                    format!("spec.probe.httpGet.httpHeaders[{i}].name"),
                    format!("in body should match ^[-_A-Za-z0-9]+$: {:?}", header.name),
                );
            }
        }
        if h.scheme
            .as_deref()
            .is_some_and(|s| !["", "HTTP", "HTTPS"].contains(&s))
        {
            r.error(
                "spec.probe.httpGet.scheme",
                "scheme must be one of [HTTP, HTTPS]",
            );
        }
    }
    if let Some(t) = &probe.tcp_socket {
        port_in_range(r, "spec.probe.tcpSocket.port", t.port);
    }
    if let Some(g) = &probe.grpc {
        port_in_range(r, "spec.probe.grpc.port", g.port);
    }
}
