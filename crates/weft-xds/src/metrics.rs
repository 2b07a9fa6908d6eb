//! The control plane's own metrics under istiod's names and label sets
//! (`pilot_xds`, `pilot_xds_pushes`, `pilot_total_xds_rejects`,
//! `pilot_proxy_convergence_time`, `citadel_server_*`), so Istio's
//! control-plane dashboard reads a Weft control plane unchanged.
//!
//! istiod exports its counters without the `_total` suffix (its OpenTelemetry
//! exporter is told so), which OpenMetrics does not allow; so this is the
//! Prometheus text format (0.0.4), written here in a few lines rather than
//! bent out of a client library. One set per process, as istiod's are.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// istiod's buckets for `pilot_proxy_convergence_time` (seconds).
const CONVERGENCE_BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];

#[derive(Default)]
pub struct ControlMetrics {
    /// Open xDS streams (`pilot_xds`).
    connected: AtomicI64,
    /// Responses sent, by type (`cds`, `eds`, …).
    pushes: Mutex<BTreeMap<String, u64>>,
    /// NACKs, by type (`lds`, …), as istiod labels them.
    rejects: Mutex<BTreeMap<String, u64>>,
    convergence: Histogram,
    pub csr_count: AtomicU64,
    pub csr_parsing_errors: AtomicU64,
    pub authentication_failures: AtomicU64,
    pub issued: AtomicU64,
}

#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; CONVERGENCE_BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds (an integer, so it can be atomic).
    sum_micros: AtomicU64,
}

/// The process's control-plane metrics.
pub fn metrics() -> &'static ControlMetrics {
    static METRICS: OnceLock<ControlMetrics> = OnceLock::new();
    METRICS.get_or_init(ControlMetrics::default)
}

fn bump(map: &Mutex<BTreeMap<String, u64>>, key: &str) {
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    *m.entry(key.to_string()).or_default() += 1;
}

impl ControlMetrics {
    pub fn stream_opened(&self) {
        self.connected.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stream_closed(&self) {
        self.connected.fetch_sub(1, Ordering::Relaxed);
    }

    /// A response of `kind` (CDS, EDS, …) sent.
    pub fn pushed(&self, kind: &str) {
        bump(&self.pushes, &kind.to_ascii_lowercase());
    }

    /// A proxy rejected a response of `kind` (LDS, …).
    pub fn rejected(&self, kind: &str) {
        bump(&self.rejects, &kind.to_ascii_lowercase());
    }

    /// A proxy had everything of a config change after `took`.
    pub fn converged(&self, took: Duration) {
        let h = &self.convergence;
        let secs = took.as_secs_f64();
        for (i, le) in CONVERGENCE_BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The exposition, in Prometheus's text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut out,
            "istio_build",
            "gauge",
            "Istio component build info",
        );
        let tag = env!("CARGO_PKG_VERSION");
        let _ = writeln!(out, "istio_build{{component=\"pilot\",tag=\"{tag}\"}} 1");
        head(
            &mut out,
            "pilot_xds",
            "gauge",
            "Number of endpoints connected to this pilot using XDS.",
        );
        let connected = self.connected.load(Ordering::Relaxed);
        let _ = writeln!(out, "pilot_xds{{version=\"weft\"}} {connected}");
        let labelled =
            |out: &mut String, name: &str, help: &str, map: &Mutex<BTreeMap<String, u64>>| {
                head(out, name, "counter", help);
                for (k, v) in map.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                    let _ = writeln!(out, "{name}{{type=\"{k}\"}} {v}");
                }
            };
        labelled(
            &mut out,
            "pilot_xds_pushes",
            "Pilot build and send errors for lds, rds, cds and eds.",
            &self.pushes,
        );
        labelled(
            &mut out,
            "pilot_total_xds_rejects",
            "Total number of XDS responses from pilot rejected by proxy.",
            &self.rejects,
        );
        let name = "pilot_proxy_convergence_time";
        head(&mut out, name, "histogram", "Delay in seconds between config change and a proxy receiving all required configuration.");
        let h = &self.convergence;
        for (i, le) in CONVERGENCE_BUCKETS.iter().enumerate() {
            let n = h.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
        }
        let count = h.count.load(Ordering::Relaxed);
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
        );
        for (name, help, v) in [
            (
                "citadel_server_csr_count",
                "The number of CSRs received by Citadel server.",
                &self.csr_count,
            ),
            (
                "citadel_server_csr_parsing_err_count",
                "The number of errors occurred when parsing the CSR.",
                &self.csr_parsing_errors,
            ),
            (
                "citadel_server_authentication_failure_count",
                "The number of authentication failures.",
                &self.authentication_failures,
            ),
            (
                "citadel_server_success_cert_issuance_count",
                "The number of certificates issuances that have succeeded.",
                &self.issued,
            ),
        ] {
            head(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_istiods_names_and_cumulative_buckets() {
        let m = ControlMetrics::default();
        m.stream_opened();
        m.pushed("CDS");
        m.pushed("CDS");
        m.rejected("LDS");
        m.converged(Duration::from_millis(300));
        m.converged(Duration::from_secs(4));
        let text = m.encode();
        for line in [
            "pilot_xds{version=\"weft\"} 1",
            "pilot_xds_pushes{type=\"cds\"} 2",
            "pilot_total_xds_rejects{type=\"lds\"} 1",
            "pilot_proxy_convergence_time_bucket{le=\"0.1\"} 0",
            "pilot_proxy_convergence_time_bucket{le=\"0.5\"} 1",
            "pilot_proxy_convergence_time_bucket{le=\"5\"} 2",
            "pilot_proxy_convergence_time_bucket{le=\"+Inf\"} 2",
            "pilot_proxy_convergence_time_count 2",
            "citadel_server_csr_count 0",
            concat!(
                "istio_build{component=\"pilot\",tag=\"",
                env!("CARGO_PKG_VERSION"),
                "\"} 1"
            ),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
