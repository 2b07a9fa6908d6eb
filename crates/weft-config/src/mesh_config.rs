//! Istio's MeshConfig, read where istiod reads it: the `mesh` key of the
//! ConfigMap `istio` in the root namespace (`istio-system`). Applying that
//! ConfigMap (`weft apply -f`, or a file in the config directory) changes
//! mesh-wide behaviour at once, as editing it does for istiod.
//!
//! Fields Weft acts on are typed; the rest of Istio's MeshConfig is kept
//! and named in a warning, so a real mesh config loads unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::resource::{Resource, Spec};

/// The ConfigMap istiod takes its mesh config from, and its key.
pub const CONFIG_MAP: &str = "istio";
pub const ROOT_NAMESPACE: &str = "istio-system";
pub const MESH_KEY: &str = "mesh";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// The SPIFFE trust domain of the mesh's identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    /// Clients use mTLS to workloads with a sidecar on their own (Istio:
    /// on by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_auto_mtls: Option<bool>,
    /// Providers CUSTOM AuthorizationPolicies (external authorization) and
    /// the Telemetry API (access logs) name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extension_providers: Vec<ExtensionProvider>,
    /// Where every proxy writes its access log (`/dev/stdout`); none when
    /// empty (Istio's default profile; the demo profile sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_file: Option<String>,
    /// `TEXT` (default) or `JSON`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_encoding: Option<String>,
    /// Envoy format string (TEXT) or JSON object of them (JSON); Istio's
    /// own format when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_format: Option<String>,
    /// The Ingress class the ingress gateway serves (`istio`), named by
    /// an Ingress's `kubernetes.io/ingress.class` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class: Option<String>,
    /// Which Ingresses are served: `STRICT` (the default) those of the
    /// class, `DEFAULT` also those naming no class, `OFF` none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_controller_mode: Option<String>,
    /// The `istio` label of the gateway that serves Ingresses
    /// (`ingressgateway`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_selector: Option<String>,
    /// The same, as the gateway's Service name (when the selector is unset
    /// and this is not `istio-ingressgateway`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_service: Option<String>,
    /// Every other MeshConfig field: accepted, not acted on.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml_ng::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutboundTrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

pub const OUTBOUND_MODES: &[&str] = &["ALLOW_ANY", "REGISTRY_ONLY"];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProvider {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_http: Option<ExtAuthzHttp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_grpc: Option<ExtAuthzGrpc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_file_access_log: Option<FileAccessLog>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<Zipkin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opentelemetry: Option<OpenTelemetry>,
    /// Other kinds (SkyWalking, Datadog, …): kept, not used.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml_ng::Value>,
}

/// `envoyExtAuthzHttp`: an HTTP authorization service in the mesh.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtAuthzHttp {
    /// `name.namespace.svc.cluster.local`, optionally `namespace/` first.
    pub service: String,
    /// A number, which Istio's examples quote.
    pub port: serde_yaml_ng::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_open: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_on_error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_request_headers_in_check: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_request_body_in_check: Option<serde_yaml_ng::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_upstream_on_allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_deny: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_allow: Vec<String>,
}

/// `envoyExtAuthzGrpc`: a gRPC authorization service (Envoy's
/// `envoy.service.auth.v3.Authorization`) in the mesh.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtAuthzGrpc {
    pub service: String,
    pub port: serde_yaml_ng::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_open: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_on_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_request_body_in_check: Option<serde_yaml_ng::Value>,
}

/// `envoyFileAccessLog`: an access log file and its format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileAccessLog {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// `zipkin`: a Zipkin collector in the mesh (spans as v2 JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Zipkin {
    /// `name.namespace.svc.cluster.local`, optionally `namespace/` first.
    pub service: String,
    pub port: serde_yaml_ng::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable64bit_trace_id: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context_option: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<serde_yaml_ng::Value>,
}

/// `opentelemetry`: an OTLP collector in the mesh (Weft exports over HTTP).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OpenTelemetry {
    pub service: String,
    pub port: serde_yaml_ng::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<OtelHttp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<serde_yaml_ng::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_detectors: Option<serde_yaml_ng::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynatrace_sampler: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OtelHttp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<serde_yaml_ng::Value>,
}

/// Text, or labels (JSON: key → format string).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFormat {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A uint32 as protobuf's JSON mapping reads one: a number, or a number
/// in a string.
pub fn uint(v: &serde_yaml_ng::Value) -> Option<u32> {
    match v {
        serde_yaml_ng::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_yaml_ng::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The port of a provider, a number Istio's examples quote.
pub fn port_number(port: &serde_yaml_ng::Value) -> Option<u16> {
    uint(port).and_then(|n| u16::try_from(n).ok())
}

impl ExtAuthzHttp {
    pub fn port_number(&self) -> Option<u16> {
        port_number(&self.port)
    }
}

impl MeshConfig {
    /// The mesh config of a set of resources: Istio's defaults, or what
    /// the `istio` ConfigMap's `mesh` key says (when it parses; a bad one
    /// is rejected by validation, so it never reaches here).
    pub fn of(config: &[Resource]) -> MeshConfig {
        config
            .iter()
            .find_map(mesh_text)
            .and_then(|text| MeshConfig::parse(text).ok())
            .unwrap_or_default()
    }

    pub fn parse(text: &str) -> Result<MeshConfig, String> {
        if text.trim().is_empty() {
            return Ok(MeshConfig::default());
        }
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
    }

    pub fn extension_provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers.iter().find(|p| p.name == name)
    }

    /// Whether sidecars may reach hosts outside the registry (ALLOW_ANY,
    /// Istio's default) or only those in it (REGISTRY_ONLY).
    pub fn registry_only(&self) -> bool {
        self.outbound_traffic_policy
            .as_ref()
            .and_then(|p| p.mode.as_deref())
            == Some("REGISTRY_ONLY")
    }
}

/// The `mesh` text of `resource` when it is the mesh config ConfigMap.
pub fn mesh_text(resource: &Resource) -> Option<&str> {
    let Spec::ConfigMap(map) = &resource.spec else {
        return None;
    };
    (resource.meta.name == CONFIG_MAP && resource.namespace() == ROOT_NAMESPACE)
        .then(|| map.data.get(MESH_KEY).map(String::as_str))
        .flatten()
}

/// A format string Weft cannot read is an error (Envoy refuses it too);
/// one with a command Weft does not write is accepted with a warning, and
/// proxies leave that logger out.
fn check_format(r: &mut crate::validate::Report, at: &str, text: &str) {
    use crate::log_format::{check, Problem};
    match check(text) {
        Ok(()) => {}
        Err(Problem::Syntax(e)) => r.error(at, format!("not an access log format: {e}")),
        Err(Problem::Unsupported(e)) => r.warn(at, format!("{e}; proxies leave this logger out")),
    }
}

/// JSON labels: each string value is a format string (nested objects too).
fn check_labels(
    r: &mut crate::validate::Report,
    at: &str,
    labels: &serde_json::Map<String, serde_json::Value>,
) {
    for (key, value) in labels {
        match value {
            serde_json::Value::String(text) => check_format(r, &format!("{at}.{key}"), text),
            serde_json::Value::Object(inner) => check_labels(r, &format!("{at}.{key}"), inner),
            _ => {}
        }
    }
}

/// Checks the mesh config ConfigMap: its `mesh` key parses as MeshConfig,
/// `outboundTrafficPolicy.mode` is one of Istio's, and the fields Weft does
/// not act on are named.
pub(crate) fn check(r: &mut crate::validate::Report, resource: &Resource) {
    let Some(text) = mesh_text(resource) else {
        return;
    };
    let at = format!("data.{MESH_KEY}");
    let mesh = match MeshConfig::parse(text) {
        Ok(mesh) => mesh,
        Err(e) => {
            r.error(&at, format!("not a valid MeshConfig: {e}"));
            return;
        }
    };
    crate::validate::one_of(
        r,
        &format!("{at}.accessLogEncoding"),
        mesh.access_log_encoding.as_deref(),
        &["TEXT", "JSON"],
    );
    let format = mesh.access_log_format.as_deref().unwrap_or("");
    let format_at = format!("{at}.accessLogFormat");
    if mesh.access_log_encoding.as_deref() == Some("JSON") && !format.trim().is_empty() {
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(format) {
            Ok(labels) => check_labels(r, &format_at, &labels),
            Err(_) => r.error(
                &format_at,
                "with accessLogEncoding JSON, a JSON object of field → format string",
            ),
        }
    } else if !format.trim().is_empty() {
        check_format(r, &format_at, format);
    }
    crate::validate::one_of(
        r,
        &format!("{at}.ingressControllerMode"),
        mesh.ingress_controller_mode.as_deref(),
        &["UNSPECIFIED", "OFF", "DEFAULT", "STRICT"],
    );
    crate::validate::one_of(
        r,
        &format!("{at}.outboundTrafficPolicy.mode"),
        mesh.outbound_traffic_policy
            .as_ref()
            .and_then(|p| p.mode.as_deref()),
        OUTBOUND_MODES,
    );
    for (i, p) in mesh.extension_providers.iter().enumerate() {
        let at = format!("{at}.extensionProviders[{i}]");
        let log_format = p
            .envoy_file_access_log
            .as_ref()
            .and_then(|f| f.log_format.as_ref());
        if let Some(f) = log_format {
            let at = format!("{at}.envoyFileAccessLog.logFormat");
            if let Some(text) = &f.text {
                check_format(r, &format!("{at}.text"), text);
            }
            if let Some(labels) = &f.labels {
                check_labels(r, &format!("{at}.labels"), labels);
            }
        }
        if let Some(http) = &p.envoy_ext_authz_http {
            if http.port_number().is_none() {
                r.error(
                    format!("{at}.envoyExtAuthzHttp.port"),
                    "a port number (1-65535)",
                );
            }
        }
        if let Some(z) = &p.zipkin {
            if port_number(&z.port).is_none() {
                r.error(format!("{at}.zipkin.port"), "a port number (1-65535)");
            }
            let unenforced = [
                ("traceContextOption", z.trace_context_option.is_some()),
                ("headers", z.headers.is_some()),
            ];
            for (field, set) in unenforced.iter().filter(|(_, set)| *set) {
                let _ = set;
                r.warn(
                    format!("{at}.zipkin.{field}"),
                    "accepted but not enforced (Weft propagates B3 only)",
                );
            }
        }
        if let Some(o) = &p.opentelemetry {
            if port_number(&o.port).is_none() {
                r.error(
                    format!("{at}.opentelemetry.port"),
                    "a port number (1-65535)",
                );
            }
            let unenforced = [
                ("grpc", o.grpc.is_some()),
                ("resourceDetectors", o.resource_detectors.is_some()),
                ("dynatraceSampler", o.dynatrace_sampler.is_some()),
                (
                    "http.headers",
                    o.http.as_ref().is_some_and(|h| h.headers.is_some()),
                ),
            ];
            for (field, _) in unenforced.iter().filter(|(_, set)| *set) {
                r.warn(
                    format!("{at}.opentelemetry.{field}"),
                    "accepted but not enforced by this version of Weft",
                );
            }
        }
        for kind in p.other.keys() {
            r.warn(
                format!("{at}.{kind}"),
                "accepted but not enforced by this version of Weft",
            );
        }
    }
    for (field, value) in &mesh.other {
        // `enableTracing`, `defaultConfig.tracing` (its zipkin address and
        // sampling), `defaultConfig.gatewayTopology.numTrustedProxies` and
        // `defaultConfig.terminationDrainDuration` are enforced; the rest of
        // defaultConfig is not.
        if field == "enableTracing" {
            continue;
        }
        if field == "defaultConfig" {
            let keys = value.as_mapping().into_iter().flat_map(|m| m.keys());
            // terminationDrainDuration: `weft up` gives it to each proxy
            // when its pod starts, as istio-agent does.
            let enforced =
                |k: &&str| ["tracing", "gatewayTopology", "terminationDrainDuration"].contains(k);
            for key in keys.filter_map(|k| k.as_str()).filter(|k| !enforced(k)) {
                r.warn(
                    format!("{at}.defaultConfig.{key}"),
                    "accepted but not enforced by this version of Weft",
                );
            }
            let drain = value.get("terminationDrainDuration");
            if drain.is_some_and(|d| {
                d.as_str()
                    .and_then(crate::networking::common::parse_duration)
                    .is_none()
            }) {
                r.error(
                    format!("{at}.defaultConfig.terminationDrainDuration"),
                    "a duration (5s, 1m30s)",
                );
            }
            let topology = value.get("gatewayTopology").and_then(|t| t.as_mapping());
            let keys = topology.into_iter().flat_map(|m| m.keys());
            let hops = topology.and_then(|t| t.get("numTrustedProxies"));
            if hops.is_some_and(|n| uint(n).is_none()) {
                r.error(
                    format!("{at}.defaultConfig.gatewayTopology.numTrustedProxies"),
                    "a whole number of proxies (0 or more)",
                );
            }
            for key in keys.filter_map(|k| k.as_str()) {
                if key != "numTrustedProxies" {
                    r.warn(
                        format!("{at}.defaultConfig.gatewayTopology.{key}"),
                        "accepted but not enforced: Weft reads numTrustedProxies",
                    );
                }
            }
            let tracing = value.get("tracing").and_then(|t| t.as_mapping());
            let keys = tracing.into_iter().flat_map(|m| m.keys());
            for key in keys.filter_map(|k| k.as_str()) {
                if key != "sampling" && key != "zipkin" {
                    r.warn(
                        format!("{at}.defaultConfig.tracing.{key}"),
                        "accepted but not enforced: Weft reads zipkin.address and sampling",
                    );
                }
            }
            continue;
        }
        // `defaultProviders.metrics`, `.accessLogging` and `.tracing` are
        // enforced (the Telemetry API's defaults); others are not.
        if field == "defaultProviders" {
            let kinds = value.as_mapping().into_iter().flat_map(|m| m.keys());
            let enforced = |k: &&str| !["metrics", "accessLogging", "tracing"].contains(k);
            for kind in kinds.filter_map(|k| k.as_str()).filter(enforced) {
                r.warn(
                    format!("{at}.defaultProviders.{kind}"),
                    "accepted but not enforced by this version of Weft",
                );
            }
            continue;
        }
        if field == "enablePrometheusMerge" {
            // Istio's injector reads it; `weft up` merges per pod instead.
            r.warn(
                format!("{at}.{field}"),
                "accepted but not enforced: weft up merges each sidecar's metrics on 15020 unless its pod says prometheus.istio.io/merge-metrics: \"false\"",
            );
            continue;
        }
        r.warn(
            format!("{at}.{field}"),
            "accepted but not enforced by this version of Weft",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(mesh: &str) -> crate::Loaded {
        let indented: String = mesh.lines().map(|l| format!("    {l}\n")).collect();
        let doc = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |-\n{indented}"
        );
        crate::load_str(&doc, "mesh.yaml")
    }

    #[test]
    fn the_istio_config_map_sets_the_mesh_config() {
        let loaded =
            load("outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\naccessLogFile: /dev/stdout\nenablePrometheusMerge: true");
        assert!(!loaded.has_errors(), "{:?}", loaded.problems);
        let mesh = MeshConfig::of(&loaded.resources);
        assert!(mesh.registry_only());
        assert_eq!(mesh.access_log_file.as_deref(), Some("/dev/stdout"));
        let warned: Vec<String> = loaded.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].contains("data.mesh.enablePrometheusMerge: accepted but not enforced"),
            "{warned:?}"
        );
        assert!(!MeshConfig::of(&[]).registry_only(), "ALLOW_ANY by default");
    }

    #[test]
    fn default_providers_and_tracing_are_enforced_and_others_warned() {
        let loaded = load("defaultProviders:\n  metrics: [prometheus]\n  tracing: [zipkin]\ndefaultConfig:\n  tracing: {sampling: 100}\n  holdApplicationUntilProxyStarts: true");
        let warned: Vec<String> = loaded.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].contains("data.mesh.defaultConfig.holdApplicationUntilProxyStarts"),
            "{warned:?}"
        );
    }

    #[test]
    fn access_log_encoding_and_json_format_are_checked() {
        let errors =
            |text: &str| -> Vec<String> { load(text).errors().map(|p| p.to_string()).collect() };
        assert!(errors(
            "accessLogEncoding: JSON\naccessLogFormat: '{\"code\": \"%RESPONSE_CODE%\"}'"
        )
        .is_empty());
        let bad = errors("accessLogEncoding: XML");
        assert!(bad[0].contains("data.mesh.accessLogEncoding"), "{bad:?}");
        let bad = errors("accessLogEncoding: JSON\naccessLogFormat: '%RESPONSE_CODE%'");
        assert!(bad[0].contains("data.mesh.accessLogFormat"), "{bad:?}");
    }

    /// `weft up` gives it to each proxy: no warning, and a duration.
    #[test]
    fn termination_drain_duration_is_a_duration() {
        let loaded = load("defaultConfig:\n  terminationDrainDuration: 30s");
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        let bad = load("defaultConfig:\n  terminationDrainDuration: soon");
        let errors: Vec<String> = bad.errors().map(|p| p.to_string()).collect();
        assert!(
            errors[0].contains("defaultConfig.terminationDrainDuration: a duration"),
            "{errors:?}"
        );
    }

    #[test]
    fn gateway_topology_is_a_whole_number() {
        let errors = |m: &str| load(m).errors().map(|p| p.to_string()).collect::<Vec<_>>();
        assert!(
            errors("defaultConfig:\n  gatewayTopology:\n    numTrustedProxies: '2'").is_empty()
        );
        let bad = errors("defaultConfig:\n  gatewayTopology:\n    numTrustedProxies: -1");
        assert!(
            bad[0].contains("gatewayTopology.numTrustedProxies"),
            "{bad:?}"
        );
    }

    /// Format strings are read at apply: one that is not a format string
    /// is refused where it is, one with a command Weft does not write is
    /// accepted with a warning naming it.
    #[test]
    fn access_log_formats_are_checked_at_apply() {
        let loaded = load("accessLogFormat: '[%START_TIME%] %RESPONSE_CODE\n'");
        let errors: Vec<String> = loaded.errors().map(|p| p.to_string()).collect();
        assert!(
            errors.len() == 1
                && errors[0].contains("data.mesh.accessLogFormat")
                && errors[0].contains("unterminated"),
            "{errors:?}"
        );
        assert!(
            errors[0].contains("mesh.yaml:"),
            "file and line: {errors:?}"
        );
        let json =
            load("accessLogEncoding: JSON\naccessLogFormat: '{\"a\": {\"b\": \"%REQ(x y)%\"}}'");
        let errors: Vec<String> = json.errors().map(|p| p.to_string()).collect();
        assert!(errors[0].contains("accessLogFormat.a.b"), "{errors:?}");
        let provider = load(
            "extensionProviders:\n- name: log\n  envoyFileAccessLog:\n    path: /dev/stdout\n    logFormat:\n      text: '%UPSTREAM_PEER_SUBJECT% %RESPONSE_CODE%'",
        );
        assert_eq!(provider.errors().count(), 0);
        let warned: Vec<String> = provider.problems.iter().map(|p| p.to_string()).collect();
        assert!(
            warned.iter().any(|w| w
                .contains("extensionProviders[0].envoyFileAccessLog.logFormat.text")
                && w.contains("%UPSTREAM_PEER_SUBJECT%")),
            "{warned:?}"
        );
    }

    #[test]
    fn a_bad_mode_or_bad_yaml_is_an_error_naming_the_field() {
        let loaded = load("outboundTrafficPolicy:\n  mode: DENY_ALL");
        let errors: Vec<String> = loaded.errors().map(|p| p.to_string()).collect();
        assert!(
            errors.iter().any(|e| e
                .contains("data.mesh.outboundTrafficPolicy.mode: Unsupported value: \"DENY_ALL\"")),
            "{errors:?}"
        );
        let loaded = load("outboundTrafficPolicy: [");
        assert!(
            loaded
                .errors()
                .any(|p| p.to_string().contains("data.mesh: not a valid MeshConfig")),
            "{:?}",
            loaded.problems
        );
    }
}
