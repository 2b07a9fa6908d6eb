//! `envoy.filters.http.fault`: delays and aborts a share of requests, before
//! they are routed upstream. The filter's own config is the default; a
//! route's `typed_per_filter_config` replaces it for that route.

use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{fault_abort, HttpFault};
use http::StatusCode;
use serde::Serialize;

use crate::compile::{share, PerMillion};
use crate::error::{Flags, ProxyError};

pub const NAME: &str = "envoy.filters.http.fault";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultCfg {
    pub delay: Option<(Duration, PerMillion)>,
    pub abort: Option<(Abort, PerMillion)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Abort {
    Http(u16),
    /// A gRPC status code, sent as `grpc-status` on a 200 response.
    Grpc(u32),
}

pub(crate) fn compile(f: &HttpFault) -> Result<FaultCfg, String> {
    let plain = HttpFault {
        delay: f.delay,
        abort: f.abort.clone(),
        ..Default::default()
    };
    if *f != plain {
        return Err("fault: only delay and abort are supported (not headers, upstream_cluster, downstream_nodes, max_active_faults or rate limits)".into());
    }
    let delay = match &f.delay {
        None => None,
        Some(d) => match &d.fault_delay_secifier {
            Some(FaultDelaySecifier::FixedDelay(t)) => {
                Some((crate::compile::duration(t)?, share(d.percentage.as_ref())?))
            }
            _ => return Err("fault delay: only fixed_delay is supported".into()),
        },
    };
    let abort = match &f.abort {
        None => None,
        Some(a) => {
            let kind = match a.error_type {
                Some(fault_abort::ErrorType::HttpStatus(s)) if (200..600).contains(&s) => {
                    Abort::Http(s as u16)
                }
                Some(fault_abort::ErrorType::HttpStatus(s)) => {
                    return Err(format!("fault abort: http_status {s} is not in 200..599"))
                }
                Some(fault_abort::ErrorType::GrpcStatus(s)) => Abort::Grpc(s),
                _ => return Err("fault abort: header_abort is not supported".into()),
            };
            if !a.response_body.is_empty() {
                return Err("fault abort: response_body is not supported".into());
            }
            Some((kind, share(a.percentage.as_ref())?))
        }
    };
    Ok(FaultCfg { delay, abort })
}

/// The request phase: sleeps for an injected delay (flag DI), then returns
/// the injected abort (flag FI), each drawn on its own as in Envoy.
pub(crate) async fn on_request(cfg: &FaultCfg, flags: &mut Flags) -> Result<(), ProxyError> {
    if let Some((delay, share)) = cfg.delay {
        if share.hit() {
            flags.insert(Flags::DELAY_INJECTED);
            tokio::time::sleep(delay).await;
        }
    }
    if let Some((abort, share)) = cfg.abort {
        if share.hit() {
            return Err(match abort {
                Abort::Http(s) => ProxyError::FaultAbort(
                    StatusCode::from_u16(s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                ),
                Abort::Grpc(code) => ProxyError::GrpcFaultAbort(code),
            });
        }
    }
    Ok(())
}
