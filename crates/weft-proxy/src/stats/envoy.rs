//! The proxy's own health and xDS stats under the Envoy names Istio's
//! bootstrap keeps by default (its stats inclusion prefixes `server`,
//! `cluster_manager`, `listener_manager` and `cluster.xds-grpc`), so the
//! alerts and dashboards people wrote for Istio's sidecars read a Weft
//! sidecar unchanged: `envoy_server_live`, `envoy_server_uptime`,
//! `envoy_cluster_manager_cds_update_rejected`, `envoy_cluster_upstream_cx_active{cluster_name="xds-grpc"}`, …
//!
//! Envoy's counters carry no `_total` suffix, which OpenMetrics demands of
//! a counter; they are exposed as `unknown` (untyped) samples, exactly
//! named, as Prometheus stores Envoy's own untyped-looking counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// A counter written under its own name (Envoy's), not `<name>_total`.
#[derive(Debug, Clone, Default)]
pub struct EnvoyCounter(Arc<AtomicU64>);

impl EnvoyCounter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl TypedMetric for EnvoyCounter {
    const TYPE: MetricType = MetricType::Unknown;
}

impl EncodeMetric for EnvoyCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Envoy's `<prefix>.update_attempt|success|rejected` of one xDS type.
#[derive(Debug, Clone, Default)]
pub struct UpdateCounters {
    pub attempt: EnvoyCounter,
    pub success: EnvoyCounter,
    pub rejected: EnvoyCounter,
}

impl UpdateCounters {
    fn register(&self, registry: &mut Registry, prefix: &str, what: &str) {
        for (suffix, c, help) in [
            ("update_attempt", &self.attempt, "updates received"),
            ("update_success", &self.success, "updates applied"),
            (
                "update_rejected",
                &self.rejected,
                "updates rejected (NACKed)",
            ),
        ] {
            registry.register(
                format!("{prefix}_{suffix}"),
                format!("{what} {help}"),
                c.clone(),
            );
        }
    }

    /// One update of this type and how it went.
    pub fn record(&self, applied: bool) {
        self.attempt.inc();
        if applied {
            self.success.inc()
        } else {
            self.rejected.inc()
        }
    }
}

/// Envoy's stats of the `xds-grpc` cluster: the control-plane connection.
type ByCluster = [(&'static str, &'static str); 1];
const XDS_GRPC: ByCluster = [("cluster_name", "xds-grpc")];

/// Envoy's `server.state` values.
pub const STATE_LIVE: i64 = 0;
pub const STATE_INITIALIZING: i64 = 3;

pub struct EnvoyStats {
    started: Instant,
    live: Gauge,
    state: Gauge,
    uptime: Gauge,
    memory: Gauge,
    cert_days: Gauge,
    pub cds: UpdateCounters,
    pub lds: UpdateCounters,
    pub active_clusters: Gauge,
    pub active_listeners: Gauge,
    xds_cx_total: Family<ByCluster, EnvoyCounter>,
    xds_cx_connect_fail: Family<ByCluster, EnvoyCounter>,
    xds_cx_active: Family<ByCluster, Gauge>,
}

impl EnvoyStats {
    pub fn new(registry: &mut Registry, workers: usize) -> EnvoyStats {
        let s = EnvoyStats {
            started: Instant::now(),
            live: Gauge::default(),
            state: Gauge::default(),
            uptime: Gauge::default(),
            memory: Gauge::default(),
            cert_days: Gauge::default(),
            cds: UpdateCounters::default(),
            lds: UpdateCounters::default(),
            active_clusters: Gauge::default(),
            active_listeners: Gauge::default(),
            xds_cx_total: Family::default(),
            xds_cx_connect_fail: Family::default(),
            xds_cx_active: Family::default(),
        };
        s.state.set(STATE_INITIALIZING);
        let concurrency = Gauge::<i64>::default();
        concurrency.set(workers as i64);
        let gauges: [(&str, &str, &Gauge); 6] = [
            (
                "envoy_server_live",
                "1 once the first config is in",
                &s.live,
            ),
            ("envoy_server_state", "0 live, 3 initializing", &s.state),
            ("envoy_server_uptime", "Seconds since start", &s.uptime),
            (
                "envoy_server_memory_physical_size",
                "Resident memory in bytes",
                &s.memory,
            ),
            (
                "envoy_server_days_until_first_cert_expiring",
                "Days until the workload certificate expires",
                &s.cert_days,
            ),
            ("envoy_server_concurrency", "Worker threads", &concurrency),
        ];
        for (name, help, g) in gauges {
            registry.register(name, help, g.clone());
        }
        s.cds
            .register(registry, "envoy_cluster_manager_cds", "Cluster (CDS)");
        s.lds
            .register(registry, "envoy_listener_manager_lds", "Listener (LDS)");
        registry.register(
            "envoy_cluster_manager_active_clusters",
            "Clusters in use",
            s.active_clusters.clone(),
        );
        registry.register(
            "envoy_listener_manager_total_listeners_active",
            "Listeners in use",
            s.active_listeners.clone(),
        );
        registry.register(
            "envoy_cluster_upstream_cx_total",
            "Connections opened to the control plane",
            s.xds_cx_total.clone(),
        );
        registry.register(
            "envoy_cluster_upstream_cx_connect_fail",
            "Failed connections to the control plane",
            s.xds_cx_connect_fail.clone(),
        );
        registry.register(
            "envoy_cluster_upstream_cx_active",
            "Open connections to the control plane",
            s.xds_cx_active.clone(),
        );
        // Present (at zero) before the first attempt, as Envoy's are.
        let _ = s.xds_cx_total.get_or_create(&XDS_GRPC);
        let _ = s.xds_cx_connect_fail.get_or_create(&XDS_GRPC);
        let _ = s.xds_cx_active.get_or_create(&XDS_GRPC);
        s
    }

    /// The first complete config is in: the server is live.
    pub fn set_live(&self) {
        self.live.set(1);
        self.state.set(STATE_LIVE);
    }

    /// The control-plane connection, as the xDS client sees it.
    pub fn xds_session(&self, event: weft_xds::SessionEvent) {
        match event {
            weft_xds::SessionEvent::Connected => {
                self.xds_cx_total.get_or_create(&XDS_GRPC).inc();
                self.xds_cx_active.get_or_create(&XDS_GRPC).set(1);
            }
            weft_xds::SessionEvent::ConnectFailed => {
                self.xds_cx_connect_fail.get_or_create(&XDS_GRPC).inc();
            }
            weft_xds::SessionEvent::Closed => {
                self.xds_cx_active.get_or_create(&XDS_GRPC).set(0);
            }
        }
    }

    /// Values read at scrape time: uptime, memory, and the certificate's
    /// remaining days (`not_after`, seconds since the epoch).
    pub fn refresh(&self, cert_not_after: Option<i64>) {
        self.uptime.set(self.started.elapsed().as_secs() as i64);
        if let Some(rss) = resident_bytes() {
            self.memory.set(rss);
        }
        if let Some(not_after) = cert_not_after {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            self.cert_days.set(((not_after - now).max(0)) / 86_400);
        }
    }
}

/// This process's resident set (Linux `/proc/self/statm`), in bytes.
fn resident_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_keep_envoys_names_and_the_server_goes_live() {
        let mut registry = Registry::default();
        let s = EnvoyStats::new(&mut registry, 2);
        s.cds.record(true);
        s.cds.record(false);
        s.xds_session(weft_xds::SessionEvent::Connected);
        s.refresh(None);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "envoy_cluster_manager_cds_update_attempt 2",
            "envoy_cluster_manager_cds_update_success 1",
            "envoy_cluster_manager_cds_update_rejected 1",
            "envoy_listener_manager_lds_update_attempt 0",
            "envoy_server_live 0",
            "envoy_server_state 3",
            "envoy_server_concurrency 2",
            "envoy_cluster_upstream_cx_total{cluster_name=\"xds-grpc\"} 1",
            "envoy_cluster_upstream_cx_active{cluster_name=\"xds-grpc\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains("update_success_total"), "{text}");
        s.set_live();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("\nenvoy_server_live 1\n"), "{text}");
        assert!(text.contains("\nenvoy_server_state 0\n"), "{text}");
    }
}
