//! Sidecar: which services a workload's proxy sees, and how it listens.

use serde::{Deserialize, Serialize};

use super::service_entry::LabelSelector;
use crate::validate::Report;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sidecar {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressListener>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressListener>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<super::traffic::ConnectionPool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SidecarPort {
    #[serde(default)]
    pub number: i64,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub target_port: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IngressListener {
    #[serde(default)]
    pub port: Option<SidecarPort>,
    #[serde(default)]
    pub bind: Option<String>,
    #[serde(default)]
    pub capture_mode: Option<String>,
    #[serde(default)]
    pub default_endpoint: Option<String>,
    #[serde(default)]
    pub tls: Option<super::traffic::ServerTls>,
    #[serde(default)]
    pub connection_pool: Option<super::traffic::ConnectionPool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EgressListener {
    #[serde(default)]
    pub port: Option<SidecarPort>,
    #[serde(default)]
    pub bind: Option<String>,
    #[serde(default)]
    pub capture_mode: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutboundTrafficPolicy {
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub egress_proxy: Option<EgressProxy>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressProxy {
    pub host: String,
    #[serde(default)]
    pub subset: Option<String>,
    #[serde(default)]
    pub port: Option<super::common::PortSelector>,
}

const CAPTURE_MODES: &[&str] = &["DEFAULT", "IPTABLES", "NONE"];

/// What of a Sidecar Weft does not act on yet, to be warned about.
fn unenforced(s: &Sidecar) -> Vec<String> {
    let mut out = Vec::new();
    for (i, e) in s.egress.iter().enumerate() {
        let at = format!("spec.egress[{i}]");
        if e.port.is_some() {
            out.push(format!(
                "{at}.port (its hosts scope the whole proxy, not one listener)"
            ));
        }
        for (field, set) in [
            ("bind", e.bind.is_some()),
            ("captureMode", e.capture_mode.is_some()),
        ] {
            if set {
                out.push(format!("{at}.{field}"));
            }
        }
    }
    for (i, l) in s.ingress.iter().enumerate() {
        let fields = [
            ("bind", l.bind.is_some()),
            ("captureMode", l.capture_mode.is_some()),
            ("tls", l.tls.is_some()),
            ("connectionPool", l.connection_pool.is_some()),
        ];
        for (field, set) in fields {
            if set {
                out.push(format!("spec.ingress[{i}].{field}"));
            }
        }
    }
    if s.inbound_connection_pool.is_some() {
        out.push("spec.inboundConnectionPool".into());
    }
    if s.outbound_traffic_policy
        .as_ref()
        .is_some_and(|p| p.egress_proxy.is_some())
    {
        out.push("spec.outboundTrafficPolicy.egressProxy".into());
    }
    out
}

pub(crate) fn check(r: &mut Report, s: &Sidecar) {
    for at in unenforced(s) {
        r.warn(at, "accepted but not enforced by this version of Weft");
    }
    for (i, e) in s.egress.iter().enumerate() {
        let at = format!("spec.egress[{i}]");
        if e.hosts.is_empty() {
            r.error(format!("{at}.hosts"), "an egress listener needs hosts (namespace/host, e.g. \"./*\" or \"istio-system/*\")");
        }
        for (j, h) in e.hosts.iter().enumerate() {
            if !h.contains('/') {
                r.error(
                    format!("{at}.hosts[{j}]"),
                    format!("{h:?} must be namespace/dnsName, e.g. \"./{h}\""),
                );
            }
        }
        capture_mode(r, &at, e.capture_mode.as_deref());
        if let Some(p) = &e.port {
            crate::selectors::port_in_range(r, &format!("{at}.port.number"), p.number);
        }
    }
    for (i, l) in s.ingress.iter().enumerate() {
        let at = format!("spec.ingress[{i}]");
        capture_mode(r, &at, l.capture_mode.as_deref());
        match &l.port {
            Some(p) => crate::selectors::port_in_range(r, &format!("{at}.port.number"), p.number),
            None => r.error(
                format!("{at}.port"),
                "Required value: an ingress listener needs a port",
            ),
        }
    }
    if let Some(mode) = s
        .outbound_traffic_policy
        .as_ref()
        .and_then(|p| p.mode.as_deref())
    {
        if !["REGISTRY_ONLY", "ALLOW_ANY"].contains(&mode) {
            r.error(
                "spec.outboundTrafficPolicy.mode",
                format!("Unsupported value: {mode:?}: use REGISTRY_ONLY or ALLOW_ANY"),
            );
        }
    }
}

fn capture_mode(r: &mut Report, at: &str, mode: Option<&str>) {
    if let Some(m) = mode {
        if !CAPTURE_MODES.contains(&m) {
            r.error(
                format!("{at}.captureMode"),
                format!(
                    "Unsupported value: {m:?}: use one of {}",
                    CAPTURE_MODES.join(", ")
                ),
            );
        }
    }
}
