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
    pub fn unenforced_fields(&self) -> Vec<&'static str> {
        let tcp = self.connection_pool.as_ref().and_then(|p| p.tcp.as_ref());
        let http = self.connection_pool.as_ref().and_then(|p| p.http.as_ref());
        let od = self.outlier_detection.as_ref();
        let lb = self.load_balancer.as_ref();
        let locality = lb.and_then(|l| l.locality_lb_setting.as_ref());
        [
            (
                "loadBalancer.localityLbSetting.distribute",
                locality.is_some_and(|l| !l.distribute.is_empty()),
            ),
            (
                "loadBalancer.localityLbSetting.failoverPriority",
                locality.is_some_and(|l| !l.failover_priority.is_empty()),
            ),
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
            (
                "connectionPool.tcp.idleTimeout",
                tcp.is_some_and(|t| t.idle_timeout.is_some()),
            ),
            (
                "connectionPool.http.h2UpgradePolicy",
                http.is_some_and(|h| h.h2_upgrade_policy.is_some()),
            ),
            (
                "connectionPool.http.useClientProtocol",
                http.is_some_and(|h| h.use_client_protocol.is_some()),
            ),
            (
                "connectionPool.http.maxConcurrentStreams",
                http.is_some_and(|h| h.max_concurrent_streams.is_some()),
            ),
            (
                "connectionPool.http.http2KeepAlive",
                http.is_some_and(|h| h.http2_keep_alive.is_some()),
            ),
            (
                "outlierDetection.splitExternalLocalOriginErrors",
                od.is_some_and(|o| o.split_external_local_origin_errors.is_some()),
            ),
            (
                "outlierDetection.consecutiveLocalOriginFailures",
                od.is_some_and(|o| o.consecutive_local_origin_failures.is_some()),
            ),
            (
                "outlierDetection.outlierDetectionHttpErrorCodes",
                od.is_some_and(|o| !o.outlier_detection_http_error_codes.is_empty()),
            ),
            ("tls", self.tls.is_some()),
            ("portLevelSettings", self.port_level_settings.is_some()),
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
