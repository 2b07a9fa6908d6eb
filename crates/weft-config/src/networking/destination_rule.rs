//! DestinationRule (networking.istio.io v1, v1beta1, v1alpha3).
//!
//! Subsets are typed because routing depends on them; traffic policies are
//! typed down to the load balancer, the part the proxy honours today.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

type Opaque = Option<serde_json::Value>;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DestinationRule {
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Opaque,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Subset {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Opaque,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Opaque,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Opaque,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_level_settings: Opaque,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Opaque,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Opaque,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Opaque,
}

impl TrafficPolicy {
    pub fn unenforced_fields(&self) -> Vec<&'static str> {
        [
            ("connectionPool", &self.connection_pool),
            ("outlierDetection", &self.outlier_detection),
            ("tls", &self.tls),
            ("portLevelSettings", &self.port_level_settings),
            ("tunnel", &self.tunnel),
            ("proxyProtocol", &self.proxy_protocol),
            ("retryBudget", &self.retry_budget),
        ]
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(n, _)| *n)
        .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancerSettings {
    /// ROUND_ROBIN, LEAST_CONN, RANDOM, PASSTHROUGH, LEAST_REQUEST, UNSPECIFIED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Opaque,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Opaque,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Warmup>,
}

/// Slow start for new endpoints.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Warmup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggression: Option<f64>,
}

pub const SIMPLE_LB_POLICIES: &[&str] = &[
    "UNSPECIFIED",
    "LEAST_CONN",
    "RANDOM",
    "PASSTHROUGH",
    "ROUND_ROBIN",
    "LEAST_REQUEST",
];
