//! Istio's `stats.PluginConfig` (istio.io/api `envoy/extensions/stats`),
//! the config istiod gives the `istio.stats` filter: what the Telemetry
//! API's metric overrides become. Only the fields Weft reads or writes
//! are declared; prost skips the others.

/// `type.googleapis.com/stats.PluginConfig`.
pub const TYPE_URL: &str = "type.googleapis.com/stats.PluginConfig";

#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginConfig {
    /// The Host header is not taken for `destination_service` when the
    /// cluster names none (istiod sets it on inbound and gateways).
    #[prost(bool, tag = "6")]
    pub disable_host_header_fallback: bool,
    /// How often an open TCP connection's bytes are reported (Istio's
    /// default: 15 s); the Telemetry API's `reportingInterval`.
    #[prost(message, optional, tag = "7")]
    pub tcp_reporting_duration: Option<envoy_types::pb::google::protobuf::Duration>,
    #[prost(message, repeated, tag = "8")]
    pub metrics: Vec<MetricConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricConfig {
    /// Tag name → expression (Telemetry's `tagOverrides` UPSERT).
    #[prost(map = "string, string", tag = "1")]
    pub dimensions: std::collections::HashMap<String, String>,
    /// The metric without `istio_` (`requests_total`); empty: all.
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, repeated, tag = "3")]
    pub tags_to_remove: Vec<String>,
    /// The metric is not reported.
    #[prost(bool, tag = "5")]
    pub drop: bool,
}
