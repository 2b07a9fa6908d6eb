//! telemetry.istio.io Telemetry and extensions.istio.io WasmPlugin.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::networking::common::parse_duration;
use crate::selectors::{check_targets, PolicyTargetReference, WorkloadSelector};
use crate::validate::Report;

type Opaque = Option<serde_json::Value>;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Telemetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<Tracing>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metrics>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<AccessLogging>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderRef {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeMatch {
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tracing {
    #[serde(default, rename = "match")]
    pub matches: Option<ModeMatch>,
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    #[serde(default)]
    pub random_sampling_percentage: Option<f64>,
    #[serde(default)]
    pub disable_span_reporting: Option<bool>,
    #[serde(default)]
    pub custom_tags: BTreeMap<String, CustomTag>,
    #[serde(default)]
    pub use_request_id_for_trace_sampling: Option<bool>,
    #[serde(default)]
    pub disable_context_propagation: Option<bool>,
    #[serde(default)]
    pub enable_istio_tags: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metrics {
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    #[serde(default)]
    pub overrides: Vec<MetricsOverride>,
    #[serde(default)]
    pub reporting_interval: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricsOverride {
    #[serde(default, rename = "match")]
    pub matches: Option<MetricSelector>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricSelector {
    #[serde(default)]
    pub metric: Option<String>,
    #[serde(default)]
    pub custom_metric: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagOverride {
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogging {
    #[serde(default, rename = "match")]
    pub matches: Option<ModeMatch>,
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub filter: Option<AccessLogFilter>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFilter {
    #[serde(default)]
    pub expression: String,
}

/// One of literal, environment, header or formatter.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomTag {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<TagValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<TagSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<TagSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatter: Option<TagValue>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagValue {
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TagSource {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
}

fn providers(r: &mut Report, at: &str, list: &[ProviderRef]) {
    for (i, p) in list.iter().enumerate() {
        if p.name.is_empty() {
            r.error(
                format!("{at}.providers[{i}].name"),
                "name in body should be at least 1 chars long",
            );
        }
    }
}

const MODES: &[&str] = &["CLIENT_AND_SERVER", "CLIENT", "SERVER"];
const MODES_WITH_UNDEFINED: &[&str] = &["UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"];
const METRICS: &[&str] = &[
    "ALL_METRICS",
    "REQUEST_COUNT",
    "REQUEST_DURATION",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
    "TCP_OPENED_CONNECTIONS",
    "TCP_CLOSED_CONNECTIONS",
    "TCP_SENT_BYTES",
    "TCP_RECEIVED_BYTES",
    "GRPC_REQUEST_MESSAGES",
    "GRPC_RESPONSE_MESSAGES",
];

pub(crate) fn check_telemetry(r: &mut Report, t: &Telemetry) {
    use crate::validate::one_of;
    let ns = r.namespace();
    check_targets(
        r,
        t.selector.as_ref(),
        t.target_ref.as_ref(),
        &t.target_refs,
        &ns,
    );
    for (i, tr) in t.tracing.iter().enumerate() {
        one_of(
            r,
            &format!("spec.tracing[{i}].match.mode"),
            tr.matches.as_ref().and_then(|m| m.mode.as_deref()),
            MODES,
        );
    }
    for (i, al) in t.access_logging.iter().enumerate() {
        one_of(
            r,
            &format!("spec.accessLogging[{i}].match.mode"),
            al.matches.as_ref().and_then(|m| m.mode.as_deref()),
            MODES,
        );
    }
    for (i, m) in t.metrics.iter().enumerate() {
        for (j, o) in m.overrides.iter().enumerate() {
            let sel = o.matches.as_ref();
            one_of(
                r,
                &format!("spec.metrics[{i}].overrides[{j}].match.metric"),
                sel.and_then(|s| s.metric.as_deref()),
                METRICS,
            );
            one_of(
                r,
                &format!("spec.metrics[{i}].overrides[{j}].match.mode"),
                sel.and_then(|s| s.mode.as_deref()),
                MODES,
            );
        }
    }
    for (i, tr) in t.tracing.iter().enumerate() {
        let at = format!("spec.tracing[{i}]");
        providers(r, &at, &tr.providers);
        if tr
            .random_sampling_percentage
            .is_some_and(|p| !(0.0..=100.0).contains(&p))
        {
            r.error(
                format!("{at}.randomSamplingPercentage"),
                "must be between 0 and 100",
            );
        }
    }
    for (i, al) in t.access_logging.iter().enumerate() {
        providers(r, &format!("spec.accessLogging[{i}]"), &al.providers);
    }
    for (i, m) in t.metrics.iter().enumerate() {
        let at = format!("spec.metrics[{i}]");
        providers(r, &at, &m.providers);
        if let Some(d) = &m.reporting_interval {
            if parse_duration(d).is_none_or(|d| d < std::time::Duration::from_millis(1)) {
                r.error(
                    format!("{at}.reportingInterval"),
                    "must be a valid duration greater than 1ms",
                );
            }
        }
        for (j, o) in m.overrides.iter().enumerate() {
            let at = format!("{at}.overrides[{j}]");
            if o.matches.as_ref().and_then(|m| m.custom_metric.as_deref()) == Some("") {
                r.error(
                    format!("{at}.match.customMetric"),
                    "customMetric in body should be at least 1 chars long",
                );
            }
            for (tag, op) in &o.tag_overrides {
                let here = format!("{at}.tagOverrides.{tag}");
                match (op.operation.as_deref().unwrap_or("UPSERT"), &op.value) {
                    ("UPSERT", None) => r.error(here, "value must be set when operation is UPSERT"),
                    ("REMOVE", Some(_)) => {
                        r.error(here, "value must not be set when operation is REMOVE")
                    }
                    ("UPSERT" | "REMOVE", _) => {}
                    (other, _) => r.error(
                        format!("{here}.operation"),
                        format!("Unsupported value: {other:?}: use UPSERT or REMOVE"),
                    ),
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WasmPlugin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_config: Opaque,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_config: Option<VmConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<TrafficSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    #[serde(default)]
    pub env: Vec<EnvVar>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVar {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value_from: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSelector {
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub ports: Vec<PortNumber>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortNumber {
    pub number: i64,
}

pub(crate) fn check_wasm_plugin(r: &mut Report, w: &WasmPlugin) {
    let ns = r.namespace();
    check_targets(
        r,
        w.selector.as_ref(),
        w.target_ref.as_ref(),
        &w.target_refs,
        &ns,
    );
    if w.url.is_empty() {
        r.error(
            "spec.url",
            "spec.url in body should be at least 1 chars long",
        );
    } else if !url_scheme_ok(&w.url) {
        r.error(
            "spec.url",
            format!(
                "url must have schema one of [http, https, file, oci]: {:?}",
                w.url
            ),
        );
    }
    if let Some(sha) = &w.sha256 {
        if !(sha.is_empty()
            || sha.len() == 64
                && sha
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        {
            r.error(
                "spec.sha256",
                "spec.sha256 in body should match (^$|^[a-f0-9]{64}$)",
            );
        }
    }
    for (field, value) in [
        ("imagePullSecret", &w.image_pull_secret),
        ("pluginName", &w.plugin_name),
    ] {
        if value.as_deref() == Some("") {
            r.error(
                format!("spec.{field}"),
                format!("spec.{field} in body should be at least 1 chars long"),
            );
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, env) in w.vm_config.iter().flat_map(|v| v.env.iter()).enumerate() {
        let at = format!("spec.vmConfig.env[{i}]");
        if env.name.is_empty() {
            r.error(
                format!("{at}.name"),
                "spec.vmConfig.env[].name in body should be at least 1 chars long",
            );
        } else if !names.insert(env.name.as_str()) {
            r.error(
                format!("{at}.name"),
                format!("Duplicate value: {:?}", env.name),
            );
        }
        if env.value_from.as_deref() == Some("HOST") && env.value.is_some() {
            r.error(
                format!("{at}.value"),
                "value may only be set when valueFrom is INLINE",
            );
        }
    }
    use crate::validate::one_of;
    one_of(
        r,
        "spec.phase",
        w.phase.as_deref(),
        &["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"],
    );
    one_of(
        r,
        "spec.failStrategy",
        w.fail_strategy.as_deref(),
        &["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"],
    );
    one_of(
        r,
        "spec.imagePullPolicy",
        w.image_pull_policy.as_deref(),
        &["UNSPECIFIED_POLICY", "IfNotPresent", "Always"],
    );
    one_of(
        r,
        "spec.type",
        w.r#type.as_deref(),
        &["UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"],
    );
    for (i, env) in w.vm_config.iter().flat_map(|v| v.env.iter()).enumerate() {
        one_of(
            r,
            &format!("spec.vmConfig.env[{i}].valueFrom"),
            env.value_from.as_deref(),
            &["INLINE", "HOST"],
        );
    }
    for (i, m) in w.r#match.iter().enumerate() {
        one_of(
            r,
            &format!("spec.match[{i}].mode"),
            m.mode.as_deref(),
            MODES_WITH_UNDEFINED,
        );
        for (j, p) in m.ports.iter().enumerate() {
            crate::selectors::port_in_range(
                r,
                &format!("spec.match[{i}].ports[{j}].number"),
                p.number,
            );
        }
    }
}

/// Istio accepts http, https, oci and file URLs, or a bare registry
/// reference (which it reads as oci).
fn url_scheme_ok(url: &str) -> bool {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            ["http", "https", "oci", "file"].contains(&scheme.to_ascii_lowercase().as_str())
                && !rest.is_empty()
        }
        None => {
            url.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
                && url
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._~/:@".contains(c))
        }
    }
}
