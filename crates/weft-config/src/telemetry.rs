//! telemetry.istio.io Telemetry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::networking::common::parse_duration;
use crate::selectors::{check_targets, PolicyTargetReference, WorkloadSelector};
use crate::validate::Report;

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
pub(crate) const MODES_WITH_UNDEFINED: &[&str] =
    &["UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"];
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
    // Metrics, access logs and tracing are enforced; targets attach as
    // istiod attaches them (to Gateway API gateways only).
    check_targets(
        r,
        t.selector.as_ref(),
        t.target_ref.as_ref(),
        &t.target_refs,
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
        let unenforced = [
            (
                "useRequestIdForTraceSampling",
                tr.use_request_id_for_trace_sampling == Some(false),
            ),
            (
                "disableContextPropagation",
                tr.disable_context_propagation == Some(true),
            ),
        ];
        for (field, _) in unenforced.iter().filter(|(_, set)| *set) {
            r.warn(
                format!("{at}.{field}"),
                "accepted but not enforced by this version of Weft",
            );
        }
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
        if al.filter.is_some() && al.providers.is_empty() {
            r.warn(
                format!("spec.accessLogging[{i}].filter"),
                "a filter applies only to the providers its entry names (as in istiod): add providers, e.g. [{name: envoy}]",
            );
        }
        if let Some(f) = &al.filter {
            filter_expression(
                r,
                &format!("spec.accessLogging[{i}].filter.expression"),
                &f.expression,
            );
        }
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
                if !label_name(tag) {
                    r.error(
                        &here,
                        "a tag must be a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*), not le or __…",
                    );
                }
                match (op.operation.as_deref().unwrap_or("UPSERT"), &op.value) {
                    ("UPSERT", None) => r.error(here, "value must be set when operation is UPSERT"),
                    ("REMOVE", Some(_)) => {
                        r.error(here, "value must not be set when operation is REMOVE")
                    }
                    ("UPSERT", Some(v)) if !evaluable(v) => r.warn(
                        format!("{here}.value"),
                        format!("Weft does not evaluate {v:?} (it evaluates quoted literals, request.host, request.method, request.path, request.url_path, request.protocol, request.headers['name'], response.code and destination.port, optionally in string(…)); the tag is reported as \"unknown\""),
                    ),
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

/// Whether `tag` can be a Prometheus label a metric carries.
fn label_name(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag != "le"
        && !tag.starts_with("__")
}

/// An access-log filter: not CEL is an error, as istiod's `cel.Parse`
/// makes it; CEL Weft's proxies do not evaluate is a warning (that logger
/// is left out, as the proxy reports).
fn filter_expression(r: &mut Report, at: &str, expression: &str) {
    if expression.trim().is_empty() {
        r.error(
            at,
            "an expression is required (CEL, e.g. response.code >= 400)",
        );
        return;
    }
    match crate::cel::parse(expression) {
        Ok(_) => {}
        Err(e @ crate::cel::CelError::Syntax(_)) => {
            r.error(at, format!("must be a valid CEL expression: {e}"))
        }
        Err(e) => r.warn(at, format!("{e}; proxies leave this logger out")),
    }
}

/// Whether the proxy evaluates a tag expression (the forms Istio's
/// metric customization task uses).
fn evaluable(expr: &str) -> bool {
    let t = expr.trim();
    let t = t
        .strip_prefix("string(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(t)
        .trim();
    let quoted = |s: &str| {
        s.len() >= 2
            && ((s.starts_with('\'') && s.ends_with('\''))
                || (s.starts_with('"') && s.ends_with('"')))
    };
    quoted(t)
        || t.strip_prefix("request.headers[")
            .and_then(|s| s.strip_suffix(']'))
            .is_some_and(quoted)
        || matches!(
            t,
            "request.host"
                | "request.method"
                | "request.path"
                | "request.url_path"
                | "request.protocol"
                | "response.code"
                | "destination.port"
        )
}

#[cfg(test)]
mod tests {
    #[test]
    fn filter_expressions_that_are_not_cel_are_refused_with_their_line() {
        let telemetry = |expression: &str| {
            format!("apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: t, namespace: istio-system}}\nspec:\n  accessLogging:\n  - providers: [{{name: envoy}}]\n    filter:\n      expression: {expression:?}\n")
        };
        let bad = crate::load_str(&telemetry(")++++"), "t.yaml");
        assert!(bad.has_errors());
        let said = bad.problems[0].to_string();
        assert!(
            said.contains("t.yaml:8") && said.contains("valid CEL"),
            "{said}"
        );
        let unevaluated = crate::load_str(&telemetry("size(request.path) > 10"), "t.yaml");
        assert!(!unevaluated.has_errors(), "{:?}", unevaluated.problems);
        assert!(
            unevaluated.problems[0].to_string().contains("size()"),
            "{:?}",
            unevaluated.problems
        );
        let fine = crate::load_str(&telemetry("response.code >= 400"), "t.yaml");
        assert!(fine.problems.is_empty(), "{:?}", fine.problems);
    }

    #[test]
    fn tag_expressions_weft_cannot_evaluate_are_named() {
        let yaml = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: istio-system}\nspec:\n  metrics:\n  - overrides:\n    - tagOverrides:\n        request_host: {value: request.host}\n        app: {value: \"upstream_peer.labels['app'].value\"}\n";
        let loaded = crate::load_str(yaml, "t.yaml");
        assert!(!loaded.has_errors(), "{:?}", loaded.problems);
        let warned: Vec<String> = loaded.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].contains("t.yaml:")
                && warned[0].contains("spec.metrics[0].overrides[0].tagOverrides.app.value"),
            "{warned:?}"
        );
    }
}
