//! PeerAuthentication: which mTLS mode a workload's inbound traffic needs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::selectors::{check_targets, WorkloadSelector};
use crate::validate::Report;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerAuthentication {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// Keyed by port number, written as a string key in YAML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_level_mtls: Option<BTreeMap<String, MutualTls>>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MutualTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

pub const MODES: &[&str] = &["UNSET", "DISABLE", "PERMISSIVE", "STRICT"];

fn mode(r: &mut Report, at: &str, m: &MutualTls) {
    if let Some(mode) = &m.mode {
        if !MODES.contains(&mode.as_str()) {
            r.error(
                format!("{at}.mode"),
                format!(
                    "Unsupported value: {mode:?}: use one of {}",
                    MODES.join(", ")
                ),
            );
        }
    }
}

pub(crate) fn check(r: &mut Report, pa: &PeerAuthentication) {
    check_targets(r, pa.selector.as_ref(), None, &[]);
    if let Some(m) = &pa.mtls {
        mode(r, "spec.mtls", m);
    }
    let Some(ports) = &pa.port_level_mtls else {
        return;
    };
    if ports.is_empty() {
        r.error(
            "spec.portLevelMtls",
            "spec.portLevelMtls in body should have at least 1 properties",
        );
    }
    if pa
        .selector
        .as_ref()
        .is_none_or(|s| s.match_labels.is_empty())
    {
        r.error("spec.portLevelMtls", "portLevelMtls requires selector: port numbers only mean something for selected workloads");
    }
    for (port, m) in ports {
        let at = format!("spec.portLevelMtls.{port}");
        match port.parse::<i64>() {
            Ok(p) => crate::selectors::port_in_range(r, &at, p),
            Err(_) => r.error(
                &at,
                format!("type conversion error from {port:?} to a port number"),
            ),
        }
        mode(r, &at, m);
    }
}
