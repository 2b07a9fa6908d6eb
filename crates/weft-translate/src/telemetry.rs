//! The Telemetry API's `metrics` for one proxy, merged as istiod merges
//! them: the mesh's Telemetry (root namespace, no selector), then the
//! proxy's namespace's, then one selecting the workload (the oldest at
//! each level). A level that names providers replaces the ones above it;
//! overrides apply in that order, later ones winning per metric and tag.
//! Disabling every metric for a mode drops the stats filter there; the
//! rest becomes Istio's `stats.PluginConfig` for the client side
//! (outbound, gateways) and the server side (inbound).

use std::collections::BTreeMap;

use crate::attach::Targets;
use weft_config::mesh_config::ROOT_NAMESPACE;
use weft_config::telemetry::{Metrics, Telemetry};
use weft_config::Resource;
use weft_registry::Workload;
use weft_xds::stats_config::{MetricConfig, PluginConfig};

/// Istio's metric enum → the Prometheus name without `istio_`.
const METRICS: [(&str, &str); 10] = [
    ("REQUEST_COUNT", "requests_total"),
    ("REQUEST_DURATION", "request_duration_milliseconds"),
    ("REQUEST_SIZE", "request_bytes"),
    ("RESPONSE_SIZE", "response_bytes"),
    ("TCP_OPENED_CONNECTIONS", "tcp_connections_opened_total"),
    ("TCP_CLOSED_CONNECTIONS", "tcp_connections_closed_total"),
    ("TCP_SENT_BYTES", "tcp_sent_bytes_total"),
    ("TCP_RECEIVED_BYTES", "tcp_received_bytes_total"),
    ("GRPC_REQUEST_MESSAGES", "request_messages_total"),
    ("GRPC_RESPONSE_MESSAGES", "response_messages_total"),
];

/// The provider Istio's standard metrics go to.
const PROMETHEUS: &str = "prometheus";

/// One side's stats config: None when its metrics are all disabled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sides {
    pub client: Option<PluginConfig>,
    pub server: Option<PluginConfig>,
}

/// What one metric's overrides came to.
#[derive(Debug, Clone, Default)]
struct Override {
    drop: Option<bool>,
    /// Tag → Some(expression) to set, None to remove.
    tags: BTreeMap<String, Option<String>>,
}

/// The Telemetry resources that apply to `proxy`, least specific first:
/// the oldest namespace-wide one of the root namespace, then of the
/// proxy's namespace, then every workload-scoped one there that attaches
/// (istiod appends them all, oldest first).
pub(crate) fn levels<'a>(config: &'a [Resource], proxy: &Workload) -> Vec<&'a Telemetry> {
    let in_namespace = |namespace: &str| {
        let mut found: Vec<(&Resource, &Telemetry)> = config
            .iter()
            .filter(|r| r.namespace() == namespace)
            .filter_map(|r| Some((r, r.as_telemetry()?)))
            .collect();
        found.sort_by(|a, b| a.0.creation_order().cmp(&b.0.creation_order()));
        found
    };
    let wide = |found: &[(&Resource, &'a Telemetry)]| {
        found
            .iter()
            .find(|(r, t)| Targets::telemetry(r.namespace(), t).namespace_wide())
            .map(|(_, t)| *t)
    };
    let own = in_namespace(&proxy.namespace);
    let mut out = Vec::new();
    out.extend(wide(&in_namespace(ROOT_NAMESPACE)));
    if proxy.namespace != ROOT_NAMESPACE {
        out.extend(wide(&own));
    }
    out.extend(
        own.iter()
            .filter(|(r, t)| {
                let targets = Targets::telemetry(r.namespace(), t);
                !targets.namespace_wide() && targets.attach(proxy)
            })
            .map(|(_, t)| *t),
    );
    out
}

/// The mesh config's default metrics providers (Istio's: prometheus).
fn default_providers(config: &[Resource]) -> Vec<String> {
    let mesh = weft_config::MeshConfig::of(config);
    mesh_defaults(&mesh, "metrics").unwrap_or_else(|| vec![PROMETHEUS.into()])
}

/// The mesh config's `defaultProviders.<kind>` (`metrics`, `tracing`,
/// `accessLogging`), when it lists them.
pub(crate) fn mesh_defaults(mesh: &weft_config::MeshConfig, kind: &str) -> Option<Vec<String>> {
    let listed = mesh
        .other
        .get("defaultProviders")?
        .get(kind)?
        .as_sequence()?;
    Some(
        listed
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
    )
}

/// The stats config of each side of `proxy`.
pub fn metrics_for(config: &[Resource], proxy: &Workload) -> Sides {
    let entries: Vec<&Metrics> = levels(config, proxy)
        .into_iter()
        .flat_map(|t| t.metrics.iter())
        .collect();
    let mut providers = default_providers(config);
    for m in &entries {
        if !m.providers.is_empty() {
            providers = m.providers.iter().map(|p| p.name.clone()).collect();
        }
    }
    if !providers.iter().any(|p| p == PROMETHEUS) {
        return Sides::default();
    }
    // Per mode (client, server): all disabled?, and per metric overrides.
    let mut all_off = [false, false];
    let mut per: [BTreeMap<&str, Override>; 2] = Default::default();
    // An entry without providers inherits the one above it.
    let mut parent = default_providers(config);
    // The most specific `reportingInterval` for prometheus wins.
    let mut reporting = None;
    for m in &entries {
        if !m.providers.is_empty() {
            parent = m.providers.iter().map(|p| p.name.clone()).collect();
        }
        if !parent.iter().any(|p| p == PROMETHEUS) {
            continue;
        }
        if let Some(d) = m
            .reporting_interval
            .as_deref()
            .and_then(weft_config::networking::common::parse_duration)
        {
            reporting = Some(envoy_types::pb::google::protobuf::Duration {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
            });
        }
        for o in &m.overrides {
            let selector = o.matches.as_ref();
            // Custom metrics are not Weft's to define; their overrides
            // touch no standard metric.
            if selector.is_some_and(|s| s.custom_metric.is_some()) {
                continue;
            }
            let metric = selector
                .and_then(|s| s.metric.as_deref())
                .unwrap_or("ALL_METRICS");
            let modes: &[usize] = match selector.and_then(|s| s.mode.as_deref()) {
                Some("CLIENT") => &[0],
                Some("SERVER") => &[1],
                _ => &[0, 1],
            };
            for &mode in modes {
                if metric == "ALL_METRICS" && o.disabled == Some(true) && o.tag_overrides.is_empty()
                {
                    all_off[mode] = true;
                    continue;
                }
                all_off[mode] = false;
                let names: Vec<&str> = if metric == "ALL_METRICS" {
                    METRICS.iter().map(|(_, n)| *n).collect()
                } else {
                    METRICS
                        .iter()
                        .filter(|(k, _)| *k == metric)
                        .map(|(_, n)| *n)
                        .collect()
                };
                for name in names {
                    let entry = per[mode].entry(name).or_default();
                    if o.disabled.is_some() {
                        entry.drop = o.disabled;
                    }
                    for (tag, t) in &o.tag_overrides {
                        let value = match t.operation.as_deref() {
                            Some("REMOVE") => None,
                            _ => Some(t.value.clone().unwrap_or_default()),
                        };
                        entry.tags.insert(tag.clone(), value);
                    }
                }
            }
        }
    }
    let side = |mode: usize| -> Option<PluginConfig> {
        if all_off[mode] {
            return None;
        }
        let metrics = per[mode]
            .iter()
            .map(|(name, o)| MetricConfig {
                name: name.to_string(),
                drop: o.drop.unwrap_or(false),
                tags_to_remove: o
                    .tags
                    .iter()
                    .filter(|(_, v)| v.is_none())
                    .map(|(k, _)| k.clone())
                    .collect(),
                dimensions: o
                    .tags
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
                    .collect(),
            })
            .collect();
        Some(PluginConfig {
            disable_host_header_fallback: mode == 1,
            tcp_reporting_duration: reporting,
            metrics,
        })
    };
    Sides {
        client: side(0),
        server: side(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sides(yaml: &str) -> Sides {
        let loaded = weft_config::load_str(yaml, "t.yaml");
        assert!(!loaded.has_errors(), "{:?}", loaded.problems);
        let registry = crate::tests::registry();
        metrics_for(&loaded.resources, &registry.workloads[0])
    }

    #[test]
    fn no_telemetry_is_every_metric_on_both_sides() {
        let s = sides("");
        assert_eq!(s.client, Some(PluginConfig::default()));
        assert_eq!(
            s.server,
            Some(PluginConfig {
                disable_host_header_fallback: true,
                ..Default::default()
            })
        );
    }

    #[test]
    fn the_most_specific_reporting_interval_wins() {
        let telemetry = |ns: &str, name: &str, every: &str| {
            format!("apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  metrics:\n  - providers: [{{name: prometheus}}]\n    reportingInterval: {every}\n")
        };
        let both = format!(
            "{}---\n{}",
            telemetry("istio-system", "mesh-default", "30s"),
            telemetry("default", "ns", "500ms")
        );
        let s = sides(&both);
        let d = s.client.unwrap().tcp_reporting_duration.unwrap();
        assert_eq!((d.seconds, d.nanos), (0, 500_000_000));
        let s = sides(&telemetry("istio-system", "mesh-default", "30s"));
        assert_eq!(
            s.server.unwrap().tcp_reporting_duration.unwrap().seconds,
            30
        );
    }

    #[test]
    fn levels_merge_and_the_workload_wins() {
        let mesh = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: istio-system}\nspec:\n  metrics:\n  - providers: [{name: prometheus}]\n    overrides:\n    - match: {metric: ALL_METRICS, mode: CLIENT}\n      disabled: true\n    - match: {metric: REQUEST_COUNT, mode: SERVER}\n      tagOverrides:\n        grpc_response_status: {operation: REMOVE}\n        request_host: {value: request.host}\n";
        let s = sides(mesh);
        assert_eq!(s.client, None, "client metrics are off mesh-wide");
        let server = s.server.unwrap();
        let count = server
            .metrics
            .iter()
            .find(|m| m.name == "requests_total")
            .unwrap();
        assert_eq!(count.tags_to_remove, ["grpc_response_status"]);
        assert_eq!(count.dimensions["request_host"], "request.host");
        // The workload turns its client side back on, dropping one metric.
        let workload = format!("{mesh}---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: reviews}}}}\n  metrics:\n  - overrides:\n    - match: {{metric: REQUEST_DURATION, mode: CLIENT}}\n      disabled: true\n");
        let client = sides(&workload).client.expect("client back on");
        let duration = client
            .metrics
            .iter()
            .find(|m| m.name == "request_duration_milliseconds")
            .unwrap();
        assert!(duration.drop);
        // Another provider only: no Prometheus metrics at all.
        let other = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: x, namespace: default}\nspec:\n  metrics:\n  - providers: [{name: stackdriver}]\n";
        assert_eq!(sides(other), Sides::default());
    }
}
