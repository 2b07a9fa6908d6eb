//! Envoy's outlier detection, consecutive-error kinds: a host that fails
//! `consecutive_5xx` times in a row (5xx responses and local failures:
//! connect failures, resets, timeouts), or `consecutive_gateway_failure`
//! times (502/503/504 and local failures), is ejected for
//! `base_ejection_time × times ejected` (at most `max_ejection_time`), as
//! long as no more than `max_ejection_percent` of the hosts are out.
//! With `split_external_local_origin_errors`, local failures count apart,
//! against `consecutive_local_origin_failure`, and the two 5xx kinds see
//! only the upstream's own responses.
//! Ejection is immediate, as in Envoy; the host comes back when its time
//! has passed. Success-rate and failure-percentage ejection are not built.
//!
//! The state lives with the compiled cluster, so a config push that
//! recompiles the cluster starts every host afresh.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::OutlierDetection;
use serde::Serialize;

use crate::compile::duration;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OutlierCfg {
    /// (threshold, enforced)
    pub consecutive_5xx: (u32, bool),
    pub consecutive_gateway: (u32, bool),
    /// Local failures counted on their own (split), with their threshold.
    pub consecutive_local: Option<(u32, bool)>,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

pub(crate) fn compile(o: &OutlierDetection) -> Result<OutlierCfg, String> {
    let value = |v: Option<envoy_types::pb::google::protobuf::UInt32Value>, default| {
        v.map_or(default, |v| v.value)
    };
    let time = |d: &Option<envoy_types::pb::google::protobuf::Duration>, default| {
        d.as_ref()
            .map(duration)
            .transpose()
            .map(|d| d.unwrap_or(default))
    };
    Ok(OutlierCfg {
        consecutive_5xx: (
            value(o.consecutive_5xx, 5),
            value(o.enforcing_consecutive_5xx, 100) > 0,
        ),
        consecutive_gateway: (
            value(o.consecutive_gateway_failure, 5),
            value(o.enforcing_consecutive_gateway_failure, 0) > 0,
        ),
        consecutive_local: o.split_external_local_origin_errors.then(|| {
            (
                value(o.consecutive_local_origin_failure, 5),
                value(o.enforcing_consecutive_local_origin_failure, 100) > 0,
            )
        }),
        base_ejection_time: time(&o.base_ejection_time, Duration::from_secs(30))?,
        max_ejection_time: time(&o.max_ejection_time, Duration::from_secs(300))?,
        max_ejection_percent: value(o.max_ejection_percent, 10).min(100),
    })
}

/// One host's record.
#[derive(Debug, Default)]
struct HostState {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    times_ejected: AtomicU32,
    /// Milliseconds since `epoch()` until which the host is out; 0: in.
    ejected_until: AtomicU64,
}

/// The outlier state of one cluster's hosts (indexed as its endpoints).
#[derive(Debug, Serialize)]
pub struct Outliers {
    pub cfg: OutlierCfg,
    #[serde(skip)]
    hosts: Vec<HostState>,
}

/// How a try ended, for the host's record.
pub(crate) enum Result5xx {
    Success,
    /// A 5xx response: gateway errors (502–504) count for both kinds.
    ServerError {
        gateway: bool,
    },
    /// No response: connect failure, reset or timeout (a 503/504 to Envoy).
    LocalFailure,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

impl Outliers {
    pub fn new(cfg: OutlierCfg, hosts: usize) -> Outliers {
        Outliers {
            cfg,
            hosts: (0..hosts).map(|_| HostState::default()).collect(),
        }
    }

    pub fn is_ejected(&self, host: usize) -> bool {
        self.hosts
            .get(host)
            .is_some_and(|h| h.ejected_until.load(Ordering::Acquire) > now_ms())
    }

    fn ejected_count(&self) -> usize {
        (0..self.hosts.len())
            .filter(|i| self.is_ejected(*i))
            .count()
    }

    pub(crate) fn report(&self, host: usize, result: Result5xx) {
        let Some(h) = self.hosts.get(host) else {
            return;
        };
        let (five_xx, gateway) = match (result, self.cfg.consecutive_local) {
            (Result5xx::Success, _) => {
                h.consecutive_5xx.store(0, Ordering::Release);
                h.consecutive_gateway.store(0, Ordering::Release);
                h.consecutive_local.store(0, Ordering::Release);
                return;
            }
            (Result5xx::LocalFailure, Some((threshold, enforced))) => {
                let n = h.consecutive_local.fetch_add(1, Ordering::AcqRel) + 1;
                if enforced && n >= threshold && !self.is_ejected(host) {
                    self.eject(h);
                }
                return;
            }
            (Result5xx::ServerError { gateway }, split) => {
                // The upstream answered, so its connection worked.
                if split.is_some() {
                    h.consecutive_local.store(0, Ordering::Release);
                }
                (true, gateway)
            }
            (Result5xx::LocalFailure, None) => (true, true),
        };
        let mut trip = false;
        if five_xx {
            let n = h.consecutive_5xx.fetch_add(1, Ordering::AcqRel) + 1;
            trip |= self.cfg.consecutive_5xx.1 && n >= self.cfg.consecutive_5xx.0;
        }
        if gateway {
            let n = h.consecutive_gateway.fetch_add(1, Ordering::AcqRel) + 1;
            trip |= self.cfg.consecutive_gateway.1 && n >= self.cfg.consecutive_gateway.0;
        } else {
            h.consecutive_gateway.store(0, Ordering::Release);
        }
        if trip && !self.is_ejected(host) {
            self.eject(h);
        }
    }

    /// Ejects unless that would put more than `max_ejection_percent` of
    /// the hosts out (Envoy's arithmetic: the share after this ejection).
    fn eject(&self, h: &HostState) {
        let after = 100 * (self.ejected_count() + 1) / self.hosts.len().max(1);
        if after > self.cfg.max_ejection_percent as usize {
            return;
        }
        let times = h.times_ejected.fetch_add(1, Ordering::AcqRel) + 1;
        let out = (self.cfg.base_ejection_time * times)
            .min(self.cfg.max_ejection_time.max(self.cfg.base_ejection_time));
        h.ejected_until
            .store(now_ms() + out.as_millis() as u64, Ordering::Release);
        h.consecutive_5xx.store(0, Ordering::Release);
        h.consecutive_gateway.store(0, Ordering::Release);
        h.consecutive_local.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_percent: u32) -> OutlierCfg {
        OutlierCfg {
            consecutive_5xx: (2, true),
            consecutive_gateway: (5, false),
            consecutive_local: None,
            base_ejection_time: Duration::from_secs(60),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: max_percent,
        }
    }

    #[test]
    fn consecutive_errors_eject_and_a_success_resets_the_count() {
        let o = Outliers::new(cfg(100), 2);
        o.report(0, Result5xx::ServerError { gateway: false });
        o.report(0, Result5xx::Success);
        o.report(0, Result5xx::ServerError { gateway: false });
        assert!(!o.is_ejected(0), "the success reset the count");
        o.report(0, Result5xx::LocalFailure);
        assert!(o.is_ejected(0));
        assert!(!o.is_ejected(1));
    }

    #[test]
    fn max_ejection_percent_keeps_hosts_in() {
        let o = Outliers::new(cfg(50), 2);
        for host in [0, 1] {
            o.report(host, Result5xx::ServerError { gateway: true });
            o.report(host, Result5xx::ServerError { gateway: true });
        }
        assert!(o.is_ejected(0));
        assert!(!o.is_ejected(1), "a second ejection would be 100% > 50%");
    }

    #[test]
    fn split_local_failures_count_apart_from_responses() {
        let o = Outliers::new(
            OutlierCfg {
                consecutive_local: Some((3, true)),
                ..cfg(100)
            },
            1,
        );
        // Two local failures, then a 5xx: the 5xx count is 1, not 3.
        o.report(0, Result5xx::LocalFailure);
        o.report(0, Result5xx::LocalFailure);
        o.report(0, Result5xx::ServerError { gateway: false });
        assert!(!o.is_ejected(0), "the 5xx reset the local count");
        for _ in 0..2 {
            o.report(0, Result5xx::LocalFailure);
        }
        assert!(!o.is_ejected(0));
        o.report(0, Result5xx::LocalFailure);
        assert!(o.is_ejected(0), "three local failures in a row");
    }
}
