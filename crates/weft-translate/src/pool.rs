//! DestinationRule `connectionPool` and `outlierDetection` → an Envoy
//! cluster's circuit breakers, connect timeout, HTTP protocol options and
//! outlier detection, as istiod writes them: a threshold Istio's user did
//! not set is the largest value (Istio does not want Envoy's 1024 defaults
//! to bite), the connect timeout defaults to 10 s, and outlier detection
//! turns Envoy's panic threshold off unless `minHealthPercent` says.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::cluster::v3::UpstreamConnectionOptions;
use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers::Thresholds, CircuitBreakers, Cluster,
};
use envoy_types::pb::envoy::config::core::v3::TcpKeepalive;
use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, HttpProtocolOptions as CommonOptions,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{
        explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
    },
    HttpProtocolOptions,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;
use weft_config::networking::traffic::{ConnectionPool, OutlierDetection};

use crate::policies::duration;

const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// `cluster` with the pool's settings (and Istio's defaults) applied.
pub(crate) fn apply(mut cluster: Cluster, pool: Option<&ConnectionPool>) -> Cluster {
    let tcp = pool.and_then(|p| p.tcp.as_ref());
    let http = pool.and_then(|p| p.http.as_ref());
    let limit = |v: Option<i32>| {
        Some(UInt32Value {
            value: v.filter(|v| *v > 0).map_or(u32::MAX, |v| v as u32),
        })
    };
    cluster.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![Thresholds {
            max_connections: limit(tcp.and_then(|t| t.max_connections)),
            max_pending_requests: limit(http.and_then(|h| h.http1_max_pending_requests)),
            max_requests: limit(http.and_then(|h| h.http2_max_requests)),
            max_retries: limit(http.and_then(|h| h.max_retries)),
            track_remaining: true,
            ..Default::default()
        }],
        ..Default::default()
    });
    let connect = tcp
        .and_then(|t| t.connect_timeout.as_ref())
        .and_then(|d| d.parse());
    cluster.connect_timeout = Some(duration(
        connect.unwrap_or(std::time::Duration::from_secs(10)),
    ));
    let per_connection = http
        .and_then(|h| h.max_requests_per_connection)
        .filter(|v| *v > 0)
        .map(|v| UInt32Value { value: v as u32 });
    let idle = http
        .and_then(|h| h.idle_timeout.as_ref())
        .and_then(|d| d.parse());
    let max_duration = tcp
        .and_then(|t| t.max_connection_duration.as_ref())
        .and_then(|d| d.parse());
    if let Some(k) = tcp.and_then(|t| t.tcp_keepalive.as_ref()) {
        let secs = |d: Option<&weft_config::networking::Duration>| {
            d.and_then(|d| d.parse()).map(|d| UInt32Value {
                value: d.as_secs() as u32,
            })
        };
        cluster.upstream_connection_options = Some(UpstreamConnectionOptions {
            tcp_keepalive: Some(TcpKeepalive {
                keepalive_probes: k.probes.map(|value| UInt32Value { value }),
                keepalive_time: secs(k.time.as_ref()),
                keepalive_interval: secs(k.interval.as_ref()),
            }),
            ..Default::default()
        });
    }
    if per_connection.is_some() || idle.is_some() || max_duration.is_some() {
        let options = HttpProtocolOptions {
            common_http_protocol_options: Some(CommonOptions {
                max_requests_per_connection: per_connection,
                idle_timeout: idle.map(duration),
                max_connection_duration: max_duration.map(duration),
                ..Default::default()
            }),
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::HttpProtocolOptions(
                        Http1ProtocolOptions::default(),
                    )),
                },
            )),
            ..Default::default()
        };
        cluster.typed_extension_protocol_options =
            HashMap::from([(HTTP_OPTIONS.to_string(), pack_any(options))]);
    }
    cluster
}

/// `outlierDetection` as istiod converts it: a consecutive-error count set
/// to 0 is not enforced; success-rate ejection is off.
pub(crate) fn outlier(mut cluster: Cluster, od: Option<&OutlierDetection>) -> Cluster {
    use envoy_types::pb::envoy::config::cluster::v3::{
        cluster::CommonLbConfig, OutlierDetection as Envoy,
    };
    let Some(od) = od else {
        return cluster;
    };
    let count = |v: Option<u32>| v.map(|v| UInt32Value { value: v });
    let enforce = |v: Option<u32>| {
        v.map(|v| UInt32Value {
            value: if v > 0 { 100 } else { 0 },
        })
    };
    // The deprecated `consecutiveErrors` counts as 5xx errors.
    let five_xx = od
        .consecutive_5xx_errors
        .or(od.consecutive_errors.map(|v| v.max(0) as u32));
    cluster.outlier_detection = Some(Envoy {
        consecutive_5xx: count(five_xx),
        enforcing_consecutive_5xx: enforce(five_xx),
        consecutive_gateway_failure: count(od.consecutive_gateway_errors),
        enforcing_consecutive_gateway_failure: enforce(od.consecutive_gateway_errors),
        interval: od.interval.as_ref().and_then(|d| d.parse()).map(duration),
        base_ejection_time: od
            .base_ejection_time
            .as_ref()
            .and_then(|d| d.parse())
            .map(duration),
        max_ejection_percent: od
            .max_ejection_percent
            .filter(|v| *v > 0)
            .map(|v| UInt32Value { value: v as u32 }),
        enforcing_success_rate: Some(UInt32Value { value: 0 }),
        split_external_local_origin_errors: od.split_external_local_origin_errors == Some(true),
        consecutive_local_origin_failure: count(od.consecutive_local_origin_failures),
        enforcing_consecutive_local_origin_failure: enforce(od.consecutive_local_origin_failures),
        ..Default::default()
    });
    cluster.common_lb_config = Some(CommonLbConfig {
        healthy_panic_threshold: Some(envoy_types::pb::envoy::r#type::v3::Percent {
            value: f64::from(od.min_health_percent.unwrap_or(0).clamp(0, 100)),
        }),
        ..Default::default()
    });
    cluster
}
