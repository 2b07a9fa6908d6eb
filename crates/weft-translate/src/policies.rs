//! A VirtualService HTTP route's policies in Envoy's terms, as istiod
//! writes them: timeout, retry policy (Istio's default when none is given),
//! fault injection as the fault filter's per-route config, rewrites,
//! redirects, direct responses and header mutations.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{
    data_source, header_value_option::HeaderAppendAction, DataSource, HeaderValue,
    HeaderValueOption,
};
use envoy_types::pb::envoy::config::route::v3::{
    redirect_action, retry_policy, DirectResponseAction, RedirectAction, RetryPolicy,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{fault_delay, FaultDelay};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    fault_abort, FaultAbort, HttpFault,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use envoy_types::pb::envoy::r#type::v3::{fractional_percent::DenominatorType, FractionalPercent};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, UInt32Value};
use envoy_types::util::pack_any;
use weft_config::networking::http_policies::{
    HttpDirectResponse, HttpFault as IstioFault, HttpRedirect, HttpRetry, Percent,
};
use weft_config::networking::virtual_service::HeaderOperations;

pub const FAULT: &str = "envoy.filters.http.fault";

pub(crate) fn duration(d: std::time::Duration) -> PbDuration {
    PbDuration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// The route timeout: the VirtualService's, or `0s` (none), which is
/// istiod's default rather than Envoy's 15 s.
pub(crate) fn timeout(t: Option<&weft_config::networking::common::Duration>) -> PbDuration {
    duration(t.and_then(|t| t.parse()).unwrap_or_default())
}

/// istiod's default retry policy, used when a route sets no `retries`.
pub(crate) fn default_retry() -> RetryPolicy {
    RetryPolicy {
        retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
            .into(),
        num_retries: Some(UInt32Value { value: 2 }),
        retriable_status_codes: vec![503],
        retry_host_predicate: vec![retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
                pack_any(PreviousHostsPredicate::default()),
            )),
        }],
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    }
}

/// `retries` as istiod converts it: none means the default policy,
/// `attempts: 0` means no retries; numbers in `retryOn` are status codes.
pub(crate) fn retry(r: Option<&HttpRetry>) -> Option<RetryPolicy> {
    let Some(r) = r else {
        return Some(default_retry());
    };
    let attempts = r.attempts.unwrap_or(0);
    if attempts <= 0 {
        return None;
    }
    let mut p = default_retry();
    p.num_retries = Some(UInt32Value {
        value: attempts as u32,
    });
    if let Some(on) = r.retry_on.as_deref().filter(|s| !s.trim().is_empty()) {
        let mut conditions = Vec::new();
        let mut codes = Vec::new();
        for c in on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            match c.parse::<u32>() {
                Ok(code) => codes.push(code),
                Err(_) => conditions.push(c.to_string()),
            }
        }
        if !codes.is_empty() && !conditions.iter().any(|c| c == "retriable-status-codes") {
            conditions.push("retriable-status-codes".into());
        }
        p.retry_on = conditions.join(",");
        p.retriable_status_codes = codes;
    }
    p.per_try_timeout = r
        .per_try_timeout
        .as_ref()
        .and_then(|d| d.parse())
        .map(duration);
    if r.retry_remote_localities == Some(true) {
        p.retry_priority = Some(retry_policy::RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".into(),
            config_type: Some(retry_policy::retry_priority::ConfigType::TypedConfig(
                pack_any(PreviousPrioritiesConfig {
                    update_frequency: 2,
                }),
            )),
        });
    }
    if r.retry_ignore_previous_hosts == Some(false) {
        p.retry_host_predicate.clear();
    }
    if let Some(b) = r.backoff.as_ref().and_then(|b| b.parse()) {
        p.retry_back_off = Some(retry_policy::RetryBackOff {
            base_interval: Some(duration(b)),
            max_interval: None,
        });
    }
    Some(p)
}

/// Istio's percentage (a float of 100) in Envoy's millionths.
fn percent(p: &Percent) -> FractionalPercent {
    percent_of(p.value)
}

pub(crate) fn percent_of(value: f64) -> FractionalPercent {
    FractionalPercent {
        numerator: (value.clamp(0.0, 100.0) * 10_000.0).round() as u32,
        denominator: DenominatorType::Million as i32,
    }
}

/// The fault filter's per-route config, keyed by the filter's name.
pub(crate) fn fault(f: &IstioFault) -> HashMap<String, Any> {
    let delay = f.delay.as_ref().map(|d| FaultDelay {
        fault_delay_secifier: d
            .fixed_delay
            .as_ref()
            .and_then(|t| t.parse())
            .map(|t| fault_delay::FaultDelaySecifier::FixedDelay(duration(t))),
        percentage: Some(match (&d.percentage, d.percent) {
            (Some(p), _) => percent(p),
            (None, n) => FractionalPercent {
                numerator: n.unwrap_or(0).max(0) as u32,
                denominator: DenominatorType::Hundred as i32,
            },
        }),
    });
    let abort = f.abort.as_ref().map(|a| FaultAbort {
        error_type: match (a.http_status, &a.grpc_status) {
            (Some(s), _) => Some(fault_abort::ErrorType::HttpStatus(s.max(0) as u32)),
            (None, Some(g)) => grpc_code(g).map(fault_abort::ErrorType::GrpcStatus),
            (None, None) => None,
        },
        percentage: a.percentage.as_ref().map(percent),
        ..Default::default()
    });
    let http_fault = HttpFault {
        delay,
        abort,
        ..Default::default()
    };
    HashMap::from([(FAULT.to_string(), pack_any(http_fault))])
}

/// gRPC status names as Istio accepts them (`UNAVAILABLE`) or a number.
fn grpc_code(name: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    name.parse()
        .ok()
        .or_else(|| NAMES.iter().position(|n| *n == name).map(|i| i as u32))
}

pub(crate) fn regex_rewrite(pattern: &str, substitution: &str) -> RegexMatchAndSubstitute {
    RegexMatchAndSubstitute {
        pattern: Some(envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
            regex: pattern.into(),
            ..Default::default()
        }),
        substitution: substitution.into(),
    }
}

/// A redirect as istiod writes it. `derivePort: FROM_REQUEST_PORT` becomes
/// the port the route serves (the request's port, in this route's
/// context); `FROM_PROTOCOL_DEFAULT` leaves the port to the scheme.
pub(crate) fn redirect(r: &HttpRedirect, port: u16) -> RedirectAction {
    use redirect_action::{
        PathRewriteSpecifier, RedirectResponseCode as Code, SchemeRewriteSpecifier,
    };
    let response_code = match r.redirect_code.unwrap_or(301) {
        302 => Code::Found,
        303 => Code::SeeOther,
        307 => Code::TemporaryRedirect,
        308 => Code::PermanentRedirect,
        _ => Code::MovedPermanently,
    };
    let port_redirect = match (r.port, r.derive_port.as_deref()) {
        (Some(p), _) => p,
        (None, Some("FROM_REQUEST_PORT")) => u32::from(port),
        _ => 0,
    };
    let path_rewrite_specifier = match (&r.uri, &r.prefix_rewrite) {
        (Some(uri), _) => Some(PathRewriteSpecifier::PathRedirect(uri.clone())),
        (None, Some(prefix)) => Some(PathRewriteSpecifier::PrefixRewrite(prefix.clone())),
        (None, None) => None,
    };
    RedirectAction {
        host_redirect: r.authority.clone().unwrap_or_default(),
        port_redirect,
        response_code: response_code as i32,
        scheme_rewrite_specifier: r.scheme.clone().map(SchemeRewriteSpecifier::SchemeRedirect),
        path_rewrite_specifier,
        ..Default::default()
    }
}

pub(crate) fn direct_response(d: &HttpDirectResponse) -> DirectResponseAction {
    let specifier = d.body.as_ref().and_then(|b| match (&b.string, &b.bytes) {
        (Some(s), _) => Some(data_source::Specifier::InlineString(s.clone())),
        (None, Some(b64)) => base64_decode(b64).map(data_source::Specifier::InlineBytes),
        (None, None) => None,
    });
    DirectResponseAction {
        status: d.status,
        body: specifier.map(|s| DataSource {
            specifier: Some(s),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Standard base64 (the proto JSON form of `bytes`), padding optional.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Header operations: `set` overwrites, `add` appends, `remove` removes.
pub(crate) struct HeaderMutations {
    pub add: Vec<HeaderValueOption>,
    pub remove: Vec<String>,
}

pub(crate) fn header_mutations(ops: Option<&HeaderOperations>) -> HeaderMutations {
    let Some(ops) = ops else {
        return HeaderMutations {
            add: Vec::new(),
            remove: Vec::new(),
        };
    };
    let option = |(k, v): (&String, &String), action: HeaderAppendAction| HeaderValueOption {
        header: Some(HeaderValue {
            key: k.clone(),
            value: v.clone(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    };
    let mut add: Vec<HeaderValueOption> = ops
        .set
        .iter()
        .map(|kv| option(kv, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .collect();
    add.extend(
        ops.add
            .iter()
            .map(|kv| option(kv, HeaderAppendAction::AppendIfExistsOrAdd)),
    );
    HeaderMutations {
        add,
        remove: ops.remove.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_bodies() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert!(base64_decode("!!").is_none());
    }

    #[test]
    fn retry_on_numbers_are_status_codes() {
        let r = HttpRetry {
            attempts: Some(3),
            retry_on: Some("gateway-error,connect-failure,409".into()),
            per_try_timeout: Some(weft_config::networking::common::Duration("2s".into())),
            ..Default::default()
        };
        let p = retry(Some(&r)).unwrap();
        assert_eq!(
            p.retry_on,
            "gateway-error,connect-failure,retriable-status-codes"
        );
        assert_eq!(p.retriable_status_codes, vec![409]);
        assert_eq!(p.num_retries.unwrap().value, 3);
        assert_eq!(p.per_try_timeout.unwrap().seconds, 2);
        let none = HttpRetry {
            attempts: Some(0),
            ..Default::default()
        };
        assert!(retry(Some(&none)).is_none(), "attempts: 0 disables retries");
        assert_eq!(retry(None), Some(default_retry()));
    }
}
