//! Access logs, configured as istiod configures them: with no Telemetry
//! `accessLogging` anywhere (and no `defaultProviders.accessLogging`), the
//! mesh config's `accessLogFile`/`accessLogEncoding`/`accessLogFormat`
//! give every connection manager and TCP proxy one file logger in Istio's
//! format; otherwise the Telemetry levels (root namespace, namespace,
//! workload) choose providers per side (CLIENT: outbound and gateways,
//! SERVER: inbound), each with its CEL filter, and a level may disable a
//! provider. Listeners get the same loggers filtered to `NR` (a
//! connection no filter chain took).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::accesslog::v3::{
    access_log, access_log_filter::FilterSpecifier, extension_filter, AccessLog, AccessLogFilter,
    AndFilter, ExtensionFilter, ResponseFlagFilter,
};
use envoy_types::pb::envoy::config::core::v3::{
    data_source, substitution_format_string, DataSource, SubstitutionFormatString,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
    file_access_log, FileAccessLog,
};
use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use envoy_types::util::pack_any;
use weft_config::mesh_config::{FileAccessLog as Provider, MeshConfig};
use weft_registry::Workload;

use crate::ProxyResources;

/// istiod's `EnvoyTextLogFormat`: Istio's default access log line.
pub const ISTIO_TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// istiod's `EnvoyJSONLogFormatIstio`: the JSON encoding's fields.
const ISTIO_JSON_FIELDS: [(&str, &str); 24] = [
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
];

/// The provider every Istio mesh has (`envoy`: Envoy's file logger on
/// standard output, formatted by the mesh config).
const BUILTIN: &str = "envoy";
const FILE_LOGGER: &str = "envoy.access_loggers.file";
const CEL_FILTER: &str = "envoy.access_loggers.extension_filters.cel";

/// The loggers of one side, for chains and for the listener.
#[derive(Debug, Default, Clone)]
struct Loggers {
    chains: Vec<AccessLog>,
    listener: Vec<AccessLog>,
}

pub(crate) fn apply(inputs: &crate::Inputs, proxy: &Workload, out: &mut ProxyResources) {
    let mesh = inputs.mesh();
    let client = loggers(inputs, proxy, &mesh, "CLIENT");
    let server = loggers(inputs, proxy, &mesh, "SERVER");
    for l in &mut out.listeners {
        let side = if l.name == crate::sidecar::VIRTUAL_INBOUND {
            &server
        } else {
            &client
        };
        add_to_listener(l, side);
    }
}

fn add_to_listener(l: &mut Listener, side: &Loggers) {
    if side.chains.is_empty() {
        return;
    }
    l.access_log.extend(side.listener.iter().cloned());
    crate::envoy::edit_connection_managers(l, |h| h.access_log.extend(side.chains.iter().cloned()));
    for chain in &mut l.filter_chains {
        let Some(last) = chain.filters.last_mut() else {
            continue;
        };
        let Some(filter::ConfigType::TypedConfig(any)) = &mut last.config_type else {
            continue;
        };
        if !any.type_url.ends_with(".TcpProxy") {
            continue;
        }
        if let Ok(mut t) = <TcpProxy as prost::Message>::decode(any.value.as_slice()) {
            t.access_log.extend(side.chains.iter().cloned());
            *any = pack_any(t);
        }
    }
}

/// One side's loggers: from the Telemetry API when any level (or the mesh
/// default) speaks of access logs, else from the mesh config.
fn loggers(inputs: &crate::Inputs, proxy: &Workload, mesh: &MeshConfig, mode: &str) -> Loggers {
    let levels: Vec<_> = crate::telemetry::levels(inputs.config, proxy)
        .into_iter()
        .filter(|t| !t.access_logging.is_empty())
        .collect();
    let defaults = default_providers(mesh);
    if levels.is_empty() && defaults.is_empty() {
        let Some(path) = mesh.access_log_file.as_deref().filter(|p| !p.is_empty()) else {
            return Loggers::default();
        };
        return with_listener(vec![(from_mesh_config(path, mesh), None)]);
    }
    let mut chosen = Vec::new();
    for (name, spec) in merge(&levels, &defaults, mode) {
        if let (Spec::On(filter), Some(logger)) = (spec, provider(mesh, &name)) {
            chosen.push((logger, filter));
        }
    }
    with_listener(chosen)
}

fn default_providers(mesh: &MeshConfig) -> Vec<String> {
    crate::telemetry::mesh_defaults(mesh, "accessLogging").unwrap_or_default()
}

#[derive(Debug, Clone)]
enum Spec {
    /// On, with this CEL filter.
    On(Option<String>),
    Disabled,
}

/// istiod's `mergeLogs`: the most specific level that names providers
/// chooses them; each level may then disable or filter them.
fn merge(
    levels: &[&weft_config::telemetry::Telemetry],
    defaults: &[String],
    mode: &str,
) -> BTreeMap<String, Spec> {
    let mut out = BTreeMap::new();
    if levels.is_empty() {
        for d in defaults {
            out.insert(d.clone(), Spec::On(None));
        }
        return out;
    }
    let mode_matches = |al: &weft_config::telemetry::AccessLogging| match al
        .matches
        .as_ref()
        .and_then(|m| m.mode.as_deref())
    {
        None | Some("CLIENT_AND_SERVER") => true,
        Some(m) => m == mode,
    };
    let names = |al: &weft_config::telemetry::AccessLogging| -> Vec<String> {
        al.providers.iter().map(|p| p.name.clone()).collect()
    };
    let mut in_scope: Vec<String> = defaults.to_vec();
    let mut filters: BTreeMap<String, Option<String>> = BTreeMap::new();
    for level in levels {
        let mut named = Vec::new();
        for al in level.access_logging.iter().filter(|a| mode_matches(a)) {
            for p in names(al) {
                filters.insert(p.clone(), al.filter.as_ref().map(|f| f.expression.clone()));
                named.push(p);
            }
        }
        if !named.is_empty() {
            in_scope = named;
        }
    }
    let mut parent = defaults.to_vec();
    for level in levels {
        for al in &level.access_logging {
            let mut here = names(al);
            if here.is_empty() {
                here = parent.clone();
            }
            parent = here.clone();
            for p in here {
                if !in_scope.contains(&p) || !mode_matches(al) {
                    continue;
                }
                let spec = if al.disabled == Some(true) {
                    Spec::Disabled
                } else {
                    Spec::On(filters.get(&p).cloned().flatten())
                };
                out.insert(p, spec);
            }
        }
    }
    out
}

/// A provider's logger: a mesh extension provider's `envoyFileAccessLog`,
/// or the built-in `envoy`. Other kinds log nothing here (as istiod skips
/// them).
fn provider(mesh: &MeshConfig, name: &str) -> Option<AccessLog> {
    let declared = mesh
        .extension_providers
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name));
    match declared {
        Some(p) => {
            let file = p.envoy_file_access_log.as_ref()?;
            let builtin_like = p.name == BUILTIN && file.log_format.is_none();
            let path = file
                .path
                .as_deref()
                .filter(|p| !p.is_empty())
                .unwrap_or("/dev/stdout");
            Some(if builtin_like {
                from_mesh_config(path, mesh)
            } else {
                from_provider(path, file)
            })
        }
        None if name == BUILTIN => Some(from_mesh_config("/dev/stdout", mesh)),
        None => None,
    }
}

/// istiod's `FileAccessLogFromMeshConfig`: a file logger at `path` in the
/// mesh config's encoding and format.
pub fn from_mesh_config(path: &str, mesh: &MeshConfig) -> AccessLog {
    let custom = mesh
        .access_log_format
        .as_deref()
        .filter(|f| !f.trim().is_empty());
    let format = match mesh.access_log_encoding.as_deref() {
        Some("JSON") => {
            let parsed = custom.and_then(|f| serde_json::from_str(f).ok());
            json_format(parsed.as_ref())
        }
        _ => text_format(custom),
    };
    file_logger(path, format)
}

fn from_provider(path: &str, p: &Provider) -> AccessLog {
    let format = match p.log_format.as_ref() {
        Some(f) if f.labels.is_some() => json_format(f.labels.as_ref()),
        Some(f) => text_format(f.text.as_deref()),
        None => text_format(None),
    };
    file_logger(path, format)
}

/// Istio's text format, or `text` with a newline added (as Istio does).
fn text_format(text: Option<&str>) -> SubstitutionFormatString {
    let text = match text.filter(|t| !t.is_empty()) {
        Some(t) if t.ends_with('\n') => t.to_string(),
        Some(t) => format!("{t}\n"),
        None => ISTIO_TEXT_FORMAT.to_string(),
    };
    SubstitutionFormatString {
        format: Some(substitution_format_string::Format::TextFormatSource(
            DataSource {
                specifier: Some(data_source::Specifier::InlineString(text)),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// JSON lines of `labels`, or of Istio's default fields.
fn json_format(
    labels: Option<&serde_json::Map<String, serde_json::Value>>,
) -> SubstitutionFormatString {
    let fields = match labels.filter(|l| !l.is_empty()) {
        Some(l) => l.iter().map(|(k, v)| (k.clone(), value(v))).collect(),
        None => ISTIO_JSON_FIELDS
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    value(&serde_json::Value::String(v.to_string())),
                )
            })
            .collect(),
    };
    SubstitutionFormatString {
        format: Some(substitution_format_string::Format::JsonFormat(Struct {
            fields,
        })),
        ..Default::default()
    }
}

fn value(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    let kind = match v {
        J::String(s) => Kind::StringValue(s.clone()),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Null => Kind::NullValue(0),
        J::Object(m) => Kind::StructValue(Struct {
            fields: m.iter().map(|(k, v)| (k.clone(), value(v))).collect(),
        }),
        J::Array(_) => Kind::StringValue(v.to_string()),
    };
    Value { kind: Some(kind) }
}

fn file_logger(path: &str, format: SubstitutionFormatString) -> AccessLog {
    let config = FileAccessLog {
        path: path.to_string(),
        access_log_format: Some(file_access_log::AccessLogFormat::LogFormat(format)),
    };
    AccessLog {
        name: FILE_LOGGER.into(),
        config_type: Some(access_log::ConfigType::TypedConfig(pack_any(config))),
        ..Default::default()
    }
}

/// The chains' loggers (each with its CEL filter) and the listener's
/// (the same, and only for `NR`).
fn with_listener(chosen: Vec<(AccessLog, Option<String>)>) -> Loggers {
    let nr = AccessLogFilter {
        filter_specifier: Some(FilterSpecifier::ResponseFlagFilter(ResponseFlagFilter {
            flags: vec!["NR".into()],
        })),
    };
    let mut out = Loggers::default();
    for (logger, expression) in chosen {
        let cel = expression.map(cel);
        out.chains.push(AccessLog {
            filter: cel.clone(),
            ..logger.clone()
        });
        let filter = match cel {
            Some(c) => AccessLogFilter {
                filter_specifier: Some(FilterSpecifier::AndFilter(AndFilter {
                    filters: vec![nr.clone(), c],
                })),
            },
            None => nr.clone(),
        };
        out.listener.push(AccessLog {
            filter: Some(filter),
            ..logger
        });
    }
    out
}

/// The filter Istio makes of a Telemetry `filter.expression`.
pub fn cel(expression: String) -> AccessLogFilter {
    AccessLogFilter {
        filter_specifier: Some(FilterSpecifier::ExtensionFilter(ExtensionFilter {
            name: CEL_FILTER.into(),
            config_type: Some(extension_filter::ConfigType::TypedConfig(pack_any(
                ExpressionFilter {
                    expression,
                    ..Default::default()
                },
            ))),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    use envoy_types::pb::google::protobuf::Any;

    /// What each chain of a listener logs to: (path, CEL filter) per logger.
    type Seen = Vec<Vec<(String, Option<String>)>>;

    fn chains(out: &ProxyResources, listener: &str) -> Seen {
        let l = out.listeners.iter().find(|l| l.name == listener).unwrap();
        l.filter_chains
            .iter()
            .filter_map(|c| match &c.filters.last()?.config_type {
                Some(filter::ConfigType::TypedConfig(any)) => Some(logs_of(any)),
                _ => None,
            })
            .collect()
    }

    fn logs_of(any: &Any) -> Vec<(String, Option<String>)> {
        let logs = if any.type_url.ends_with(".TcpProxy") {
            <TcpProxy as prost::Message>::decode(any.value.as_slice())
                .unwrap()
                .access_log
        } else {
            <HttpConnectionManager as prost::Message>::decode(any.value.as_slice())
                .unwrap()
                .access_log
        };
        logs.iter().map(summary).collect()
    }

    fn summary(l: &AccessLog) -> (String, Option<String>) {
        let Some(access_log::ConfigType::TypedConfig(any)) = &l.config_type else {
            panic!()
        };
        let f: FileAccessLog = prost::Message::decode(any.value.as_slice()).unwrap();
        let cel = l.filter.as_ref().and_then(|f| match &f.filter_specifier {
            Some(FilterSpecifier::ExtensionFilter(x)) => {
                x.config_type
                    .as_ref()
                    .map(|extension_filter::ConfigType::TypedConfig(a)| {
                        <ExpressionFilter as prost::Message>::decode(a.value.as_slice())
                            .unwrap()
                            .expression
                    })
            }
            _ => None,
        });
        (f.path, cel)
    }

    fn with(extra: &str) -> String {
        format!("{}\n---\n{extra}", crate::tests::CONFIG)
    }

    const MESH: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |-\n";

    #[test]
    fn no_access_log_file_logs_nothing() {
        let out = crate::tests::translated_with(crate::tests::CONFIG, 0);
        for l in &out.listeners {
            assert!(l.access_log.is_empty(), "{}", l.name);
        }
        assert!(chains(&out, "virtualInbound").iter().all(Vec::is_empty));
    }

    #[test]
    fn the_mesh_configs_file_reaches_every_chain_and_listener() {
        let out = crate::tests::translated_with(
            &with(&format!("{MESH}    accessLogFile: /dev/stdout")),
            0,
        );
        for name in ["virtualInbound", "virtualOutbound"] {
            let seen = chains(&out, name);
            assert!(!seen.is_empty());
            for chain in seen {
                assert_eq!(chain, vec![("/dev/stdout".to_string(), None)], "{name}");
            }
            let l = out.listeners.iter().find(|l| l.name == name).unwrap();
            let Some(FilterSpecifier::ResponseFlagFilter(nr)) = l.access_log[0]
                .filter
                .as_ref()
                .and_then(|f| f.filter_specifier.clone())
            else {
                panic!("{:?}", l.access_log)
            };
            assert_eq!(nr.flags, vec!["NR".to_string()]);
        }
        let AccessLog {
            config_type: Some(access_log::ConfigType::TypedConfig(any)),
            ..
        } = &out.listeners[0].access_log[0]
        else {
            panic!()
        };
        let f: FileAccessLog = prost::Message::decode(any.value.as_slice()).unwrap();
        let Some(file_access_log::AccessLogFormat::LogFormat(format)) = f.access_log_format else {
            panic!()
        };
        let Some(substitution_format_string::Format::TextFormatSource(src)) = format.format else {
            panic!()
        };
        assert_eq!(
            src.specifier,
            Some(data_source::Specifier::InlineString(
                ISTIO_TEXT_FORMAT.into()
            ))
        );
    }

    /// Istio's access-logging task: the Telemetry API turns the built-in
    /// `envoy` provider on mesh-wide, a namespace filters it, a workload
    /// turns it off for one mode.
    #[test]
    fn telemetry_chooses_filters_and_disables_by_level() {
        let mesh_wide = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: istio-system}\nspec:\n  accessLogging:\n  - providers:\n    - name: envoy\n";
        let out = crate::tests::translated_with(&with(mesh_wide), 0);
        assert_eq!(
            chains(&out, "virtualInbound")[0],
            vec![("/dev/stdout".into(), None)]
        );
        let filtered = format!("{mesh_wide}---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: ns, namespace: default}}\nspec:\n  accessLogging:\n  - providers:\n    - name: envoy\n    filter:\n      expression: response.code >= 400\n");
        let out = crate::tests::translated_with(&with(&filtered), 0);
        assert_eq!(
            chains(&out, "virtualOutbound")[0],
            vec![("/dev/stdout".into(), Some("response.code >= 400".into()))]
        );
        let server_off = format!("{filtered}---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: one, namespace: default}}\nspec:\n  selector:\n    matchLabels: {{app: reviews}}\n  accessLogging:\n  - match: {{mode: SERVER}}\n    disabled: true\n");
        let out = crate::tests::translated_with(&with(&server_off), 0);
        assert!(chains(&out, "virtualInbound").iter().all(Vec::is_empty));
        assert_eq!(chains(&out, "virtualOutbound")[0].len(), 1);
    }

    #[test]
    fn a_file_provider_with_labels_writes_json() {
        let provider = format!("{MESH}    extensionProviders:\n    - name: json-file\n      envoyFileAccessLog:\n        path: /var/log/weft.json\n        logFormat:\n          labels:\n            code: \"%RESPONSE_CODE%\"\n---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: t, namespace: istio-system}}\nspec:\n  accessLogging:\n  - providers:\n    - name: json-file\n");
        let out = crate::tests::translated_with(&with(&provider), 0);
        assert_eq!(
            chains(&out, "virtualInbound")[0],
            vec![("/var/log/weft.json".into(), None)]
        );
    }
}
