//! EnvoyFilter and ProxyConfig: low-level proxy customisation.
//!
//! A patch's `value` is Envoy config of any shape and stays opaque; the
//! match and the operation are typed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::service_entry::LabelSelector;
use crate::selectors::{PolicyTargetReference, WorkloadSelector};
use crate::validate::{one_of, Report};

type Opaque = Option<serde_json::Value>;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvoyFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_patches: Vec<ConfigPatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigPatch {
    #[serde(default)]
    pub apply_to: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: Option<PatchMatch>,
    #[serde(default)]
    pub patch: Option<Patch>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchMatch {
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub proxy: Option<ProxyMatch>,
    #[serde(default)]
    pub listener: Option<ListenerMatch>,
    #[serde(default)]
    pub route_configuration: Option<RouteConfigurationMatch>,
    #[serde(default)]
    pub cluster: Option<ClusterMatch>,
    #[serde(default)]
    pub waypoint: Option<WaypointMatch>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WaypointMatch {
    #[serde(default)]
    pub filter: Option<FilterMatch>,
    #[serde(default)]
    pub route: Option<NameMatch>,
    #[serde(default)]
    pub port_number: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxyMatch {
    #[serde(default)]
    pub proxy_version: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListenerMatch {
    #[serde(default)]
    pub port_number: Option<u32>,
    #[serde(default)]
    pub port_name: Option<String>,
    #[serde(default)]
    pub filter_chain: Option<FilterChainMatch>,
    #[serde(default)]
    pub listener_filter: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterChainMatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub transport_protocol: Option<String>,
    #[serde(default)]
    pub application_protocols: Option<String>,
    #[serde(default)]
    pub filter: Option<FilterMatch>,
    #[serde(default)]
    pub destination_port: Option<u32>,
    #[serde(default)]
    pub transport_socket: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterMatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub sub_filter: Option<NameMatch>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameMatch {
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteConfigurationMatch {
    #[serde(default)]
    pub port_number: Option<u32>,
    #[serde(default)]
    pub port_name: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub vhost: Option<VirtualHostMatch>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VirtualHostMatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub domain_name: Option<String>,
    #[serde(default)]
    pub route: Option<RouteMatch>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterMatch {
    #[serde(default)]
    pub port_number: Option<u32>,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub subset: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Patch {
    #[serde(default)]
    pub operation: Option<String>,
    /// Envoy config of any shape: opaque by design.
    #[serde(default)]
    pub value: Opaque,
    #[serde(default)]
    pub filter_class: Option<String>,
}

const APPLY_TO: &[&str] = &[
    "INVALID",
    "LISTENER",
    "FILTER_CHAIN",
    "NETWORK_FILTER",
    "HTTP_FILTER",
    "ROUTE_CONFIGURATION",
    "VIRTUAL_HOST",
    "HTTP_ROUTE",
    "CLUSTER",
    "EXTENSION_CONFIG",
    "BOOTSTRAP",
    "LISTENER_FILTER",
];
const CONTEXTS: &[&str] = &[
    "ANY",
    "SIDECAR_INBOUND",
    "SIDECAR_OUTBOUND",
    "GATEWAY",
    "WAYPOINT",
];
const OPERATIONS: &[&str] = &[
    "INVALID",
    "MERGE",
    "ADD",
    "REMOVE",
    "INSERT_BEFORE",
    "INSERT_AFTER",
    "INSERT_FIRST",
    "REPLACE",
    "MERGE_AND_REPLACE_LIST",
];

pub(crate) fn check(r: &mut Report, ef: &EnvoyFilter) {
    if ef.workload_selector.is_some() && !ef.target_refs.is_empty() {
        r.error(
            "spec",
            "only one of targetRefs or workloadSelector can be set",
        );
    }
    let ns = r.namespace();
    for (i, t) in ef.target_refs.iter().enumerate() {
        t.check(r, &format!("spec.targetRefs[{i}]"), &ns);
    }
    for (i, p) in ef.config_patches.iter().enumerate() {
        let at = format!("spec.configPatches[{i}]");
        one_of(r, &format!("{at}.applyTo"), p.apply_to.as_deref(), APPLY_TO);
        if let Some(m) = &p.matches {
            one_of(
                r,
                &format!("{at}.match.context"),
                m.context.as_deref(),
                CONTEXTS,
            );
            let waypoint_context = m.context.as_deref() == Some("WAYPOINT");
            if waypoint_context != m.waypoint.is_some() {
                r.error(
                    format!("{at}.match"),
                    "Invalid value: only support waypointMatch when context is WAYPOINT",
                );
            }
            if let Some(port) = m.waypoint.as_ref().and_then(|w| w.port_number) {
                crate::selectors::port_in_range(
                    r,
                    &format!("{at}.match.waypoint.portNumber"),
                    port,
                );
            }
        }
        if let Some(patch) = &p.patch {
            one_of(
                r,
                &format!("{at}.patch.operation"),
                patch.operation.as_deref(),
                OPERATIONS,
            );
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxyConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment_variables: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ProxyImage>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxyImage {
    #[serde(default)]
    pub image_type: Option<String>,
}

pub(crate) fn check_proxy_config(r: &mut Report, pc: &ProxyConfig) {
    if let Some(s) = &pc.selector {
        s.check(r, "spec.selector");
    }
    if pc.concurrency.is_some_and(|c| c < 0) {
        r.error(
            "spec.concurrency",
            "spec.concurrency in body should be greater than or equal to 0",
        );
    }
}
