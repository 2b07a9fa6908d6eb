//! `weft up --with prometheus`: a real Prometheus (Debian's `prometheus`
//! package) scraping the mesh, with a generated config that labels every
//! target as the Kubernetes pod scrape of Istio's Prometheus addon would
//! (`namespace`, `pod` and each pod label, with Kubernetes' `labelmap`
//! spelling), so Istio's queries and dashboards work unchanged.
//!
//! As Istio's injector points `prometheus.io/*` at the agent's 15020,
//! a sidecar'd pod is scraped there: its proxy merges its own metrics with
//! the app's (the pod's `prometheus.io/port` and `path`, when it says
//! `prometheus.io/scrape: "true"`). Gateways are scraped on 15090, pods
//! without a sidecar at their own port and path.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use weft_registry::{ProxyKind, Workload};

use crate::plan::Plan;
use crate::procs::{self, Launch};
use crate::state::MeshState;

/// Prometheus's own port (on the mesh bridge's address).
pub const PORT: u16 = 9090;
/// Seconds between scrapes (Istio's addon: 15 s; shorter here so a test
/// or a demo sees rates soon).
const INTERVAL: &str = "5s";

/// Where the mesh's Prometheus answers.
pub fn address(plan: &Plan) -> SocketAddr {
    SocketAddr::new(plan.addresses.gateway.into(), PORT)
}

/// A Prometheus label name from a Kubernetes one, as `labelmap` spells
/// it (`app.kubernetes.io/name` → `app_kubernetes_io_name`).
fn label_name(k: &str) -> String {
    let name: String = k
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{name}")
    } else {
        name
    }
}

fn target_labels(w: &Workload) -> Value {
    let mut labels = serde_json::Map::new();
    for (k, v) in &w.labels {
        labels.insert(label_name(k), v.clone().into());
    }
    labels.insert("namespace".into(), w.namespace.clone().into());
    labels.insert("pod".into(), w.name.clone().into());
    Value::Object(labels)
}

/// One static target group: `addr` at `path`, labelled as the pod.
fn group(job_targets: &mut Vec<(String, Value)>, path: &str, addr: SocketAddr, w: &Workload) {
    job_targets.push((
        path.to_string(),
        json!({"targets": [addr.to_string()], "labels": target_labels(w)}),
    ));
}

/// Whether a sidecar'd pod's metrics are merged on 15020 (Istio's
/// default; `prometheus.istio.io/merge-metrics: "false"` opts out, and
/// the proxy and the app are then scraped apart).
pub fn merges(pod: &weft_registry::WorkloadSpec) -> bool {
    pod.annotations
        .get("prometheus.istio.io/merge-metrics")
        .is_none_or(|v| v != "false")
}

/// Where a pod's app serves its own metrics, when its annotations say it
/// is scraped: `prometheus.io/port` (else its first port) and
/// `prometheus.io/path` (else `/metrics`).
pub fn app_metrics(pod: &weft_registry::WorkloadSpec) -> Option<(u16, String)> {
    let a = &pod.annotations;
    if a.get("prometheus.io/scrape").is_none_or(|v| v != "true") {
        return None;
    }
    let port = a
        .get("prometheus.io/port")
        .and_then(|p| p.parse().ok())
        .or_else(|| pod.ports.first().map(|p| p.container_port))?;
    let path = a
        .get("prometheus.io/path")
        .cloned()
        .unwrap_or_else(|| "/metrics".into());
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    Some((port, path))
}

/// The scrape config (JSON, which Prometheus reads as YAML).
pub fn config(plan: &Plan) -> Value {
    let mut targets: Vec<(String, Value)> = Vec::new();
    for pod in &plan.pods {
        let Some(w) = plan
            .registry
            .workloads
            .iter()
            .find(|w| w.name == pod.spec.name && w.namespace == pod.spec.namespace)
        else {
            continue;
        };
        match w.proxy {
            ProxyKind::Sidecar if merges(&pod.spec) => {
                let addr = SocketAddr::new(w.ip, crate::up::MERGED_METRICS_PORT);
                group(&mut targets, "/stats/prometheus", addr, w);
            }
            ProxyKind::Sidecar => {
                let addr = SocketAddr::new(w.ip, crate::up::PROMETHEUS_PORT);
                group(&mut targets, "/stats/prometheus", addr, w);
                if let Some((port, path)) = app_metrics(&pod.spec) {
                    group(&mut targets, &path, SocketAddr::new(w.ip, port), w);
                }
            }
            ProxyKind::Gateway => {
                let addr = SocketAddr::new(w.ip, crate::up::PROMETHEUS_PORT);
                group(&mut targets, "/stats/prometheus", addr, w);
            }
            _ => {
                if let Some((port, path)) = app_metrics(&pod.spec) {
                    group(&mut targets, &path, SocketAddr::new(w.ip, port), w);
                }
            }
        }
    }
    let gateway = plan.gateway();
    let metrics = SocketAddr::new(plan.addresses.gateway.into(), crate::up::PROMETHEUS_PORT);
    group(&mut targets, "/stats/prometheus", metrics, gateway);
    // One job per metrics path, as a path is per job.
    let mut paths: Vec<&str> = targets.iter().map(|(p, _)| p.as_str()).collect();
    paths.sort();
    paths.dedup();
    let jobs: Vec<Value> = paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let groups: Vec<&Value> = targets
                .iter()
                .filter(|(p, _)| p == path)
                .map(|(_, g)| g)
                .collect();
            let name = if i == 0 {
                "kubernetes-pods".to_string()
            } else {
                format!("kubernetes-pods-{i}")
            };
            json!({"job_name": name, "metrics_path": path, "static_configs": groups})
        })
        .chain(std::iter::once(json!({
            "job_name": "istiod",
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [plan.addresses.api.to_string()],
                "labels": {"namespace": "istio-system", "app": "istiod"}}],
        })))
        .collect();
    json!({
        "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
        "scrape_configs": jobs,
    })
}

/// Starts Prometheus with the mesh's scrape config and waits until it is
/// ready; returns its address.
pub fn start(plan: &Plan, state: &mut MeshState, dir: &Path) -> anyhow::Result<SocketAddr> {
    let exe = which("prometheus").context(
        "--with prometheus: Prometheus is not installed (Debian: apt-get install prometheus)",
    )?;
    let home = dir.join("prometheus");
    std::fs::create_dir_all(home.join("data"))?;
    let file = home.join("prometheus.yml");
    std::fs::write(&file, serde_json::to_vec_pretty(&config(plan))?)?;
    let addr = address(plan);
    let record = procs::spawn(Launch {
        role: "prometheus".into(),
        argv: vec![
            exe,
            format!("--config.file={}", file.display()),
            format!("--storage.tsdb.path={}", home.join("data").display()),
            format!("--web.listen-address={addr}"),
        ],
        netns: None,
        uid: None,
        env: vec![],
        log: &dir.join("logs").join("prometheus.log"),
    })?;
    state.processes.push(record);
    state.save(dir)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if crate::up::http_get(addr, "/-/ready").is_some_and(|(code, _)| code == 200) {
            return Ok(addr);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "Prometheus did not become ready at {addr} within 30 s (log: {})",
        dir.join("logs").join("prometheus.log").display()
    )
}

fn which(name: &str) -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_registry::WorkloadSpec;

    fn pod(annotations: &[(&str, &str)]) -> WorkloadSpec {
        WorkloadSpec {
            name: "ratings-v1".into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ports: vec![weft_registry::ContainerPort {
                container_port: 9080,
                name: "http".into(),
                protocol: None,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn annotations_say_where_app_metrics_are_and_whether_they_merge() {
        assert_eq!(app_metrics(&pod(&[])), None);
        let scraped = pod(&[("prometheus.io/scrape", "true")]);
        assert_eq!(app_metrics(&scraped), Some((9080, "/metrics".into())));
        let placed = pod(&[
            ("prometheus.io/scrape", "true"),
            ("prometheus.io/port", "9100"),
            ("prometheus.io/path", "stats"),
        ]);
        assert_eq!(app_metrics(&placed), Some((9100, "/stats".into())));
        assert!(merges(&placed));
        assert!(!merges(&pod(&[(
            "prometheus.istio.io/merge-metrics",
            "false"
        )])));
    }

    #[test]
    fn stats_eviction_intervals_are_multiples_of_the_flush_interval() {
        let key = "sidecar.istio.io/statsEvictionInterval";
        assert_eq!(crate::up::stats_eviction(&pod(&[])).unwrap(), None);
        assert_eq!(
            crate::up::stats_eviction(&pod(&[(key, "1m30s")])).unwrap(),
            Some(90)
        );
        let err = crate::up::stats_eviction(&pod(&[(key, "11s")])).unwrap_err();
        assert!(format!("{err:#}").contains("ratings-v1"), "{err:#}");
        assert!(crate::up::stats_eviction(&pod(&[(key, "soon")])).is_err());
    }
}
