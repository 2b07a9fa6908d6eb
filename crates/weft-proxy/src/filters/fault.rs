//! `envoy.filters.http.fault`: delays and aborts a share of requests, before
//! they are routed upstream. The filter's own config is the default; a
//! route's `typed_per_filter_config` replaces it for that route.

use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{fault_abort, HttpFault};
use envoy_types::pb::envoy::r#type::v3::{fractional_percent::DenominatorType, FractionalPercent};
use http::StatusCode;
use serde::Serialize;

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

/// A share of requests, in parts per million (Envoy's finest denominator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PerMillion(pub u32);

impl PerMillion {
    fn hit(self) -> bool {
        self.0 >= 1_000_000 || fastrand::u32(..1_000_000) < self.0
    }
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

/// No percentage is Envoy's proto default, 0% (Istio's "not specified,
/// no request is delayed/aborted").
fn share(p: Option<&FractionalPercent>) -> Result<PerMillion, String> {
    let Some(p) = p else {
        return Ok(PerMillion(0));
    };
    let scale = match DenominatorType::try_from(p.denominator) {
        Ok(DenominatorType::Hundred) => 10_000,
        Ok(DenominatorType::TenThousand) => 100,
        Ok(DenominatorType::Million) => 1,
        Err(_) => return Err(format!("unknown percentage denominator {}", p.denominator)),
    };
    Ok(PerMillion(p.numerator.saturating_mul(scale).min(1_000_000)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_convert_to_parts_per_million() {
        let p = |numerator, d: DenominatorType| FractionalPercent {
            numerator,
            denominator: d as i32,
        };
        assert_eq!(share(None).unwrap(), PerMillion(0));
        assert_eq!(
            share(Some(&p(50, DenominatorType::Hundred))).unwrap(),
            PerMillion(500_000)
        );
        assert_eq!(
            share(Some(&p(1, DenominatorType::TenThousand))).unwrap(),
            PerMillion(100)
        );
        assert_eq!(
            share(Some(&p(250_000, DenominatorType::Million))).unwrap(),
            PerMillion(250_000)
        );
        assert_eq!(
            share(Some(&p(900, DenominatorType::Hundred))).unwrap(),
            PerMillion(1_000_000)
        );
        assert!(!PerMillion(0).hit());
        assert!(PerMillion(1_000_000).hit());
    }
}
