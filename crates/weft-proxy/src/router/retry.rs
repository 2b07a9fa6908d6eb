//! Envoy's retry policy: which outcomes are retried (`retry_on`), how many
//! times, with what per-try timeout, and Envoy's fully jittered exponential
//! back-off between tries.

use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::{retry_policy, RetryPolicy as RetryProto};
use http::{HeaderMap, StatusCode};
use serde::Serialize;

use crate::compile::duration;

/// `retry_on` conditions as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetryOn(u16);

impl RetryOn {
    const FIVE_XX: u16 = 1 << 0;
    const GATEWAY_ERROR: u16 = 1 << 1;
    const RESET: u16 = 1 << 2;
    const CONNECT_FAILURE: u16 = 1 << 3;
    const RETRIABLE_4XX: u16 = 1 << 4;
    const REFUSED_STREAM: u16 = 1 << 5;
    const RETRIABLE_STATUS_CODES: u16 = 1 << 6;
    const GRPC_CANCELLED: u16 = 1 << 7;
    const GRPC_DEADLINE_EXCEEDED: u16 = 1 << 8;
    const GRPC_INTERNAL: u16 = 1 << 9;
    const GRPC_RESOURCE_EXHAUSTED: u16 = 1 << 10;
    const GRPC_UNAVAILABLE: u16 = 1 << 11;
    const ENVOY_RATELIMITED: u16 = 1 << 12;

    fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }

    /// Parses Envoy's comma-separated list. `retriable-headers` needs the
    /// route's `retriable_headers` (which Istio never sets, and which this
    /// proxy refuses), and `http3-post-connect-failure` needs HTTP/3
    /// upstreams: without them Envoy never retries on either, nor does Weft.
    pub fn parse(text: &str) -> Result<RetryOn, String> {
        let mut bits = 0;
        for c in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            bits |= match c {
                "5xx" => Self::FIVE_XX,
                "gateway-error" => Self::GATEWAY_ERROR,
                "reset" | "reset-before-request" => Self::RESET,
                "connect-failure" => Self::CONNECT_FAILURE,
                "retriable-4xx" => Self::RETRIABLE_4XX,
                "refused-stream" => Self::REFUSED_STREAM,
                "retriable-status-codes" => Self::RETRIABLE_STATUS_CODES,
                "cancelled" => Self::GRPC_CANCELLED,
                "deadline-exceeded" => Self::GRPC_DEADLINE_EXCEEDED,
                "internal" => Self::GRPC_INTERNAL,
                "resource-exhausted" => Self::GRPC_RESOURCE_EXHAUSTED,
                "unavailable" => Self::GRPC_UNAVAILABLE,
                "envoy-ratelimited" => Self::ENVOY_RATELIMITED,
                "retriable-headers" | "http3-post-connect-failure" => 0,
                other => return Err(format!("retry_on {other:?} is not supported")),
            };
        }
        Ok(RetryOn(bits))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    pub on: RetryOn,
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub status_codes: Vec<u16>,
    pub base_interval: Duration,
    pub max_interval: Duration,
    /// Avoid hosts already tried (`envoy.retry_host_predicates.previous_hosts`).
    pub previous_hosts: bool,
    pub host_selection_attempts: u32,
    /// Retry in the priorities (localities) not tried yet
    /// (`envoy.retry_priorities.previous_priorities`, Istio's
    /// `retryRemoteLocalities`).
    pub previous_priorities: bool,
}

const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";
const PREVIOUS_PRIORITIES: &str = "envoy.retry_priorities.previous_priorities";

pub(crate) fn compile(p: &RetryProto) -> Result<RetryPolicy, String> {
    let supported = RetryProto {
        retry_on: p.retry_on.clone(),
        num_retries: p.num_retries,
        per_try_timeout: p.per_try_timeout,
        retry_priority: p.retry_priority.clone(),
        retry_host_predicate: p.retry_host_predicate.clone(),
        host_selection_retry_max_attempts: p.host_selection_retry_max_attempts,
        retriable_status_codes: p.retriable_status_codes.clone(),
        retry_back_off: p.retry_back_off,
        ..Default::default()
    };
    if *p != supported {
        return Err("retry_policy supports retry_on, num_retries, per_try_timeout, retry_priority, retry_host_predicate, host_selection_retry_max_attempts, retriable_status_codes and retry_back_off only".into());
    }
    let mut previous_hosts = false;
    for pred in &p.retry_host_predicate {
        let is_previous = pred.name == PREVIOUS_HOSTS
            || matches!(&pred.config_type, Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(a)) if a.type_url.ends_with("PreviousHostsPredicate"));
        if !is_previous {
            return Err(format!(
                "retry host predicate {:?} is not supported",
                pred.name
            ));
        }
        previous_hosts = true;
    }
    if let Some(pri) = &p.retry_priority {
        if pri.name != PREVIOUS_PRIORITIES {
            return Err(format!("retry priority {:?} is not supported", pri.name));
        }
    }
    let status_codes = p
        .retriable_status_codes
        .iter()
        .map(|&c| u16::try_from(c).ok().filter(|c| (100..600).contains(c)))
        .collect::<Option<Vec<u16>>>()
        .ok_or("retriable_status_codes must be HTTP status codes")?;
    let base_interval = match p
        .retry_back_off
        .as_ref()
        .and_then(|b| b.base_interval.as_ref())
    {
        Some(d) => duration(d)?,
        None => Duration::from_millis(25),
    };
    let max_interval = match p
        .retry_back_off
        .as_ref()
        .and_then(|b| b.max_interval.as_ref())
    {
        Some(d) => duration(d)?,
        None => base_interval * 10,
    };
    if base_interval.is_zero() || max_interval < base_interval {
        return Err("retry_back_off: base_interval must be > 0 and ≤ max_interval".into());
    }
    Ok(RetryPolicy {
        on: RetryOn::parse(&p.retry_on)?,
        num_retries: p.num_retries.map_or(1, |n| n.value),
        per_try_timeout: p
            .per_try_timeout
            .as_ref()
            .map(duration)
            .transpose()?
            .filter(|d| !d.is_zero()),
        status_codes,
        base_interval,
        max_interval,
        previous_hosts,
        host_selection_attempts: u32::try_from(p.host_selection_retry_max_attempts.max(1))
            .unwrap_or(1),
        previous_priorities: p.retry_priority.is_some(),
    })
}

/// How one try ended, in the terms retry conditions are written in.
pub(crate) enum Outcome<'a> {
    Response(StatusCode, &'a HeaderMap),
    ConnectFailure,
    /// The connection failed after the request was handed to it.
    Reset,
    PerTryTimeout,
}

impl RetryPolicy {
    /// Whether Envoy would retry this outcome (budget aside).
    pub(crate) fn retries(&self, outcome: &Outcome) -> bool {
        let on = self.on;
        match outcome {
            Outcome::ConnectFailure => {
                on.has(RetryOn::CONNECT_FAILURE)
                    || on.has(RetryOn::FIVE_XX)
                    || on.has(RetryOn::GATEWAY_ERROR)
                    || on.has(RetryOn::RESET)
            }
            Outcome::Reset | Outcome::PerTryTimeout => {
                on.has(RetryOn::FIVE_XX) || on.has(RetryOn::GATEWAY_ERROR) || on.has(RetryOn::RESET)
            }
            Outcome::Response(status, headers) => {
                let code = status.as_u16();
                (on.has(RetryOn::FIVE_XX) && status.is_server_error())
                    || (on.has(RetryOn::GATEWAY_ERROR) && matches!(code, 502..=504))
                    || (on.has(RetryOn::RETRIABLE_4XX) && code == 409)
                    || (on.has(RetryOn::RETRIABLE_STATUS_CODES)
                        && self.status_codes.contains(&code))
                    || (on.has(RetryOn::ENVOY_RATELIMITED)
                        && headers.contains_key("x-envoy-ratelimited"))
                    || self.grpc_retries(headers)
            }
        }
    }

    /// gRPC conditions read the `grpc-status` of a trailers-only response.
    fn grpc_retries(&self, headers: &HeaderMap) -> bool {
        let Some(code) = headers
            .get(crate::http::GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u8>().ok())
        else {
            return false;
        };
        let bit = match code {
            1 => RetryOn::GRPC_CANCELLED,
            4 => RetryOn::GRPC_DEADLINE_EXCEEDED,
            8 => RetryOn::GRPC_RESOURCE_EXHAUSTED,
            13 => RetryOn::GRPC_INTERNAL,
            14 => RetryOn::GRPC_UNAVAILABLE,
            _ => return false,
        };
        self.on.has(bit)
    }

    /// Envoy's back-off before retry number `retry` (1 for the first): a
    /// uniform draw below `(2^retry - 1) × base`, capped at the maximum.
    pub fn back_off(&self, retry: u32, draw: impl FnOnce(u64) -> u64) -> Duration {
        let base = self.base_interval.as_millis().max(1) as u64;
        let ceiling = ((1u64 << retry.min(32)) - 1).saturating_mul(base);
        let max = self.max_interval.as_millis() as u64;
        Duration::from_millis(draw(ceiling.max(1)).min(max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::UInt32Value;

    /// Istio's default policy, as istiod sends it.
    fn istio_default() -> RetryPolicy {
        compile(&RetryProto {
            retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
                .into(),
            num_retries: Some(UInt32Value { value: 2 }),
            retriable_status_codes: vec![503],
            retry_host_predicate: vec![retry_policy::RetryHostPredicate {
                name: PREVIOUS_HOSTS.into(),
                ..Default::default()
            }],
            host_selection_retry_max_attempts: 5,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn istios_default_policy() {
        let p = istio_default();
        let h = HeaderMap::new();
        assert_eq!(p.num_retries, 2);
        assert!(p.previous_hosts);
        assert!(p.retries(&Outcome::ConnectFailure));
        assert!(p.retries(&Outcome::Response(StatusCode::SERVICE_UNAVAILABLE, &h)));
        assert!(!p.retries(&Outcome::Response(StatusCode::INTERNAL_SERVER_ERROR, &h)));
        assert!(!p.retries(&Outcome::Reset));
        assert!(!p.retries(&Outcome::PerTryTimeout));
        let mut grpc = HeaderMap::new();
        grpc.insert("grpc-status", "14".parse().unwrap());
        assert!(p.retries(&Outcome::Response(StatusCode::OK, &grpc)));
        grpc.insert("grpc-status", "13".parse().unwrap());
        assert!(!p.retries(&Outcome::Response(StatusCode::OK, &grpc)));
    }

    #[test]
    fn conditions() {
        let h = HeaderMap::new();
        let p = |on: &str| RetryPolicy {
            on: RetryOn::parse(on).unwrap(),
            ..istio_default()
        };
        assert!(p("5xx").retries(&Outcome::Response(StatusCode::INTERNAL_SERVER_ERROR, &h)));
        assert!(p("5xx").retries(&Outcome::PerTryTimeout));
        assert!(p("gateway-error").retries(&Outcome::Response(StatusCode::GATEWAY_TIMEOUT, &h)));
        assert!(
            !p("gateway-error").retries(&Outcome::Response(StatusCode::INTERNAL_SERVER_ERROR, &h))
        );
        assert!(p("retriable-4xx").retries(&Outcome::Response(StatusCode::CONFLICT, &h)));
        assert!(p("reset").retries(&Outcome::Reset));
        assert!(!p("connect-failure").retries(&Outcome::Reset));
        assert!(RetryOn::parse("5xx,bogus").is_err());
        let mut limited = HeaderMap::new();
        limited.insert("x-envoy-ratelimited", "true".parse().unwrap());
        let ok = StatusCode::TOO_MANY_REQUESTS;
        assert!(p("envoy-ratelimited").retries(&Outcome::Response(ok, &limited)));
        assert!(!p("envoy-ratelimited").retries(&Outcome::Response(ok, &h)));
        // Conditions that never fire here, as in Envoy without their setup.
        let quiet = p("retriable-headers,http3-post-connect-failure");
        assert!(!quiet.retries(&Outcome::Response(StatusCode::SERVICE_UNAVAILABLE, &h)));
    }

    #[test]
    fn back_off_grows_and_is_capped() {
        let p = istio_default();
        // The draw is given its exclusive ceiling; returning ceiling-1 shows it.
        let top = |retry| p.back_off(retry, |ceiling| ceiling - 1);
        assert_eq!(top(1), Duration::from_millis(24));
        assert_eq!(top(2), Duration::from_millis(74));
        assert_eq!(top(3), Duration::from_millis(174));
        assert_eq!(top(4), Duration::from_millis(250), "capped at 10 × base");
    }
}
