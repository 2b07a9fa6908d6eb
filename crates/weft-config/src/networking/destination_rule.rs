//! DestinationRule (networking.istio.io v1, v1beta1, v1alpha3).
//!
//! Subsets are typed because routing depends on them; traffic policies are
//! typed down to the load balancer, the part the proxy honours today.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::traffic::{
    BackendUtilization, ClientTls, ConnectionPool, ConsistentHash, LocalityLb, OutlierDetection,
    PortTrafficPolicy, ProxyProtocol, RetryBudget, Tunnel,
};

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
    pub workload_selector: Option<crate::selectors::WorkloadSelector>,
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
    pub connection_pool: Option<ConnectionPool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_level_settings: Option<Vec<PortTrafficPolicy>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<Tunnel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

impl TrafficPolicy {
    /// The policy for one port, as Istio resolves it: the
    /// `portLevelSettings` entry for `port` replaces the load balancer,
    /// connection pool, outlier detection and TLS it sets.
    pub fn at_port(&self, port: u16) -> TrafficPolicy {
        let mut out = TrafficPolicy {
            port_level_settings: None,
            ..self.clone()
        };
        if let Some(p) = self.port_setting(port) {
            out.override_with(&p.as_policy());
        }
        out
    }

    fn port_setting(&self, port: u16) -> Option<&super::traffic::PortTrafficPolicy> {
        self.port_level_settings
            .iter()
            .flatten()
            .find(|p| p.port.as_ref().is_some_and(|s| s.number == u32::from(port)))
    }

    /// A subset's policy over this (the service's) one, for `port`, as
    /// Istio merges them: the service's port-level settings, then the
    /// subset's fields, then the subset's own port-level settings.
    pub fn merged_for_subset(&self, subset: &TrafficPolicy, port: u16) -> TrafficPolicy {
        let mut out = self.at_port(port);
        out.override_with(subset);
        if let Some(p) = subset.port_setting(port) {
            out.override_with(&p.as_policy());
        }
        out
    }

    /// Each field `other` sets replaces this one's.
    fn override_with(&mut self, other: &TrafficPolicy) {
        fn take<T: Clone>(into: &mut Option<T>, from: &Option<T>) {
            if from.is_some() {
                into.clone_from(from);
            }
        }
        take(&mut self.load_balancer, &other.load_balancer);
        take(&mut self.connection_pool, &other.connection_pool);
        take(&mut self.outlier_detection, &other.outlier_detection);
        take(&mut self.tls, &other.tls);
        take(&mut self.tunnel, &other.tunnel);
        take(&mut self.proxy_protocol, &other.proxy_protocol);
        take(&mut self.retry_budget, &other.retry_budget);
    }

    pub fn unenforced_fields(&self) -> Vec<&'static str> {
        let lb = self.load_balancer.as_ref();
        let tls = self.tls.as_ref();
        [
            (
                "loadBalancer.warmupDurationSecs",
                lb.is_some_and(|l| l.warmup_duration_secs.is_some() || l.warmup.is_some()),
            ),
            (
                "loadBalancer.zoneAwareLbSetting",
                lb.is_some_and(|l| l.zone_aware_lb_setting.is_some()),
            ),
            (
                "loadBalancer.backendUtilization",
                lb.is_some_and(|l| l.backend_utilization.is_some()),
            ),
            ("tls.caCrl", tls.is_some_and(|t| t.ca_crl.is_some())),
            ("tunnel", self.tunnel.is_some()),
            ("proxyProtocol", self.proxy_protocol.is_some()),
            ("retryBudget", self.retry_budget.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
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
    pub consistent_hash: Option<ConsistentHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLb>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_aware_lb_setting: Option<LocalityLb>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_utilization: Option<BackendUtilization>,
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
