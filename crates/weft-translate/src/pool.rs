//! DestinationRule `connectionPool` → an Envoy cluster's circuit breakers,
//! connect timeout and HTTP protocol options, as istiod writes them: a
//! threshold Istio's user did not set is the largest value (Istio does not
//! want Envoy's 1024 defaults to bite), the connect timeout defaults to 10 s.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers::Thresholds, CircuitBreakers, Cluster,
};
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
use weft_config::networking::traffic::ConnectionPool;

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
    if per_connection.is_some() || idle.is_some() {
        let options = HttpProtocolOptions {
            common_http_protocol_options: Some(CommonOptions {
                max_requests_per_connection: per_connection,
                idle_timeout: idle.map(duration),
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
