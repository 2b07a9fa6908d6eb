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
    Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonOptions,
    KeepaliveSettings,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{
        explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
    },
    HttpProtocolOptions,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;
use weft_config::networking::traffic::{ConnectionPool, HttpPool, OutlierDetection};
use weft_registry::Protocol;

use crate::policies::duration;

const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// `cluster` with the pool's settings (and Istio's defaults) applied.
pub(crate) fn apply(
    mut cluster: Cluster,
    protocol: Protocol,
    pool: Option<&ConnectionPool>,
    od: Option<&OutlierDetection>,
) -> Cluster {
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
    // The HTTP idle timeout wins; the TCP one stands in for it.
    let idle = http
        .and_then(|h| h.idle_timeout.as_ref())
        .or(tcp.and_then(|t| t.idle_timeout.as_ref()))
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
    let errors = error_codes(od);
    let upstream = upstream_protocol(protocol, http);
    let common =
        (per_connection.is_some() || idle.is_some() || max_duration.is_some()).then(|| {
            CommonOptions {
                max_requests_per_connection: per_connection,
                idle_timeout: idle.map(duration),
                max_connection_duration: max_duration.map(duration),
                ..Default::default()
            }
        });
    if common.is_some() || errors.is_some() || upstream != Upstream::Http1 {
        let options = HttpProtocolOptions {
            common_http_protocol_options: common,
            upstream_protocol_options: Some(protocol_options(upstream, http)),
            outlier_detection: errors,
            ..Default::default()
        };
        cluster.typed_extension_protocol_options =
            HashMap::from([(HTTP_OPTIONS.to_string(), pack_any(options))]);
    }
    cluster
}

/// The HTTP version a cluster's connections speak, as istiod decides it:
/// `useClientProtocol` follows the client; gRPC and HTTP/2 ports speak
/// HTTP/2; an HTTP port does when `h2UpgradePolicy: UPGRADE` says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upstream {
    Http1,
    Http2,
    Downstream,
}

fn upstream_protocol(protocol: Protocol, http: Option<&HttpPool>) -> Upstream {
    if http.and_then(|h| h.use_client_protocol) == Some(true) {
        return Upstream::Downstream;
    }
    let upgrade = http.and_then(|h| h.h2_upgrade_policy.as_deref()) == Some("UPGRADE");
    match protocol {
        Protocol::Grpc | Protocol::Http2 => Upstream::Http2,
        // A sniffed port carries whatever the client spoke.
        Protocol::Auto => Upstream::Downstream,
        Protocol::Http if upgrade => Upstream::Http2,
        _ => Upstream::Http1,
    }
}

fn protocol_options(upstream: Upstream, http: Option<&HttpPool>) -> UpstreamProtocolOptions {
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::UseDownstreamHttpConfig;
    match upstream {
        Upstream::Http1 => UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::HttpProtocolOptions(
                Http1ProtocolOptions::default(),
            )),
        }),
        Upstream::Http2 => UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(http2_options(http))),
        }),
        // istiod's fresh HTTP/2 block here drops keepalive settings.
        Upstream::Downstream => {
            UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig {
                http_protocol_options: Some(Http1ProtocolOptions::default()),
                http2_protocol_options: Some(Default::default()),
                ..Default::default()
            })
        }
    }
}

/// `http2KeepAlive` becomes the connection's PING keepalive, and
/// `maxConcurrentStreams` the streams one connection may carry.
fn http2_options(http: Option<&HttpPool>) -> Http2ProtocolOptions {
    let keepalive = http.and_then(|h| h.http2_keep_alive.as_ref());
    let time =
        |d: Option<&weft_config::networking::Duration>| d.and_then(|d| d.parse()).map(duration);
    Http2ProtocolOptions {
        connection_keepalive: keepalive.map(|k| KeepaliveSettings {
            interval: time(k.interval.as_ref()),
            timeout: time(k.timeout.as_ref()),
            ..Default::default()
        }),
        max_concurrent_streams: http
            .and_then(|h| h.max_concurrent_streams)
            .filter(|n| *n > 0)
            .map(|n| UInt32Value { value: n as u32 }),
        ..Default::default()
    }
}

/// `outlierDetectionHttpErrorCodes`: the responses outlier detection
/// counts as errors, one `:status` match per code, or-ed.
fn error_codes(
    od: Option<&OutlierDetection>,
) -> Option<envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::OutlierDetection>
{
    use envoy_types::pb::envoy::config::common::matcher::v3::{
        match_predicate::{MatchSet, Rule},
        HttpHeadersMatch, MatchPredicate,
    };
    use envoy_types::pb::envoy::config::route::v3::{header_matcher, HeaderMatcher};
    use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
    let codes = &od?.outlier_detection_http_error_codes;
    if codes.is_empty() {
        return None;
    }
    let status = |code: &u32| MatchPredicate {
        rule: Some(Rule::HttpResponseHeadersMatch(HttpHeadersMatch {
            headers: vec![HeaderMatcher {
                name: ":status".into(),
                header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                    StringMatcher {
                        match_pattern: Some(string_matcher::MatchPattern::Exact(code.to_string())),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }],
        })),
    };
    let matcher = match codes.as_slice() {
        [one] => status(one),
        many => MatchPredicate {
            rule: Some(Rule::OrMatch(MatchSet {
                rules: many.iter().map(status).collect(),
            })),
        },
    };
    Some(
        envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::OutlierDetection {
            error_matcher: Some(matcher),
        },
    )
}

/// The local-origin half of outlier detection: only with
/// `splitExternalLocalOriginErrors`, and its count only when above 0.
fn local_origin(
    od: &OutlierDetection,
) -> envoy_types::pb::envoy::config::cluster::v3::OutlierDetection {
    let mut out = envoy_types::pb::envoy::config::cluster::v3::OutlierDetection::default();
    if od.split_external_local_origin_errors != Some(true) {
        return out;
    }
    out.split_external_local_origin_errors = true;
    out.enforcing_local_origin_success_rate = Some(UInt32Value { value: 0 });
    if let Some(n) = od.consecutive_local_origin_failures.filter(|n| *n > 0) {
        out.consecutive_local_origin_failure = Some(UInt32Value { value: n });
        out.enforcing_consecutive_local_origin_failure = Some(UInt32Value { value: 100 });
    }
    out
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
        ..local_origin(od)
    });
    cluster.common_lb_config = Some(CommonLbConfig {
        healthy_panic_threshold: Some(envoy_types::pb::envoy::r#type::v3::Percent {
            value: f64::from(od.min_health_percent.unwrap_or(0).clamp(0, 100)),
        }),
        ..Default::default()
    });
    cluster
}
