//! Kubernetes Gateway API kinds (gateway.networking.k8s.io), which Istio
//! supports: GatewayClass, Gateway, HTTPRoute, GRPCRoute, TCPRoute,
//! TLSRoute, ReferenceGrant. Typed and validated; not enforced yet.

use serde::{Deserialize, Serialize};

use crate::selectors::port_in_range;
use crate::validate::Report;

/// A reference to another object (parameters, certificates, extensions).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayAddress {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Infrastructure {
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters_ref: Option<ObjectRef>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListenerTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificate_refs: Vec<ObjectRef>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub options: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend_validation: Option<FrontendValidation>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FrontendValidation {
    #[serde(default)]
    pub ca_certificate_refs: Vec<ObjectRef>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedRoutes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<RouteNamespaces>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<RouteGroupKind>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteNamespaces {
    /// All, Same (default) or Selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteGroupKind {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: String,
}

/// An HTTPRoute or GRPCRoute filter: `type` names which one field is set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteFilter {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderModifier {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValue {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestMirror {
    pub backend_ref: BackendRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<Fraction>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fraction {
    pub numerator: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestRedirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PathModifier {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRetry {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SessionPersistence {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_config: Option<CookieConfig>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CookieConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewayClass {
    #[serde(default)]
    pub controller_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters_ref: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeGateway {
    #[serde(default)]
    pub gateway_class_name: String,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<GatewayAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure: Option<Infrastructure>,
    /// Experimental channel fields, kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_listeners: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_tls: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Listener {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub port: i64,
    #[serde(default)]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<AllowedRoutes>,
}

/// A route's attachment to a Gateway (or Service, for mesh routes).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParentRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<RouteFilter>>,
}

/// HTTPRoute and GRPCRoute share their outer shape; their rules differ.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Route<R> {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<R>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpRouteMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<RouteFilter>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RouteRetry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<SessionPersistence>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Timeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<TypedValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<NamedMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<NamedMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypedValue {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedMatch {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcRouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<GrpcRouteMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<RouteFilter>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<SessionPersistence>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GrpcMethod>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<NamedMatch>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcMethod {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// TCPRoute and TLSRoute rules: backends only.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRef>,
}

pub type HttpRoute = Route<HttpRouteRule>;
pub type GrpcRoute = Route<GrpcRouteRule>;
pub type TcpRoute = Route<BackendRule>;
pub type TlsRoute = Route<BackendRule>;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceGrant {
    #[serde(default)]
    pub from: Vec<GrantFrom>,
    #[serde(default)]
    pub to: Vec<GrantTo>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantFrom {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantTo {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

pub(crate) fn check_gateway_class(r: &mut Report, gc: &GatewayClass) {
    if gc.controller_name.is_empty() {
        r.error(
            "spec.controllerName",
            "Required value: e.g. istio.io/gateway-controller",
        );
    }
}

pub(crate) fn check_gateway(r: &mut Report, gw: &KubeGateway) {
    if gw.gateway_class_name.is_empty() {
        r.error(
            "spec.gatewayClassName",
            "Required value: the GatewayClass this Gateway belongs to (istio)",
        );
    }
    if gw.listeners.is_empty() {
        r.error("spec.listeners", "Required value: at least one listener");
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, l) in gw.listeners.iter().enumerate() {
        let at = format!("spec.listeners[{i}]");
        if l.name.is_empty() {
            r.error(
                format!("{at}.name"),
                "Required value: a listener needs a name",
            );
        } else if !names.insert(l.name.as_str()) {
            r.error(
                format!("{at}.name"),
                format!("Duplicate value: listener name {:?}", l.name),
            );
        }
        port_in_range(r, &format!("{at}.port"), l.port);
        if l.protocol.is_empty() {
            r.error(
                format!("{at}.protocol"),
                "Required value: HTTP, HTTPS, TLS, TCP or UDP",
            );
        }
        if let Some(h) = &l.hostname {
            hostname(r, &format!("{at}.hostname"), h);
        }
    }
}

fn hostname(r: &mut Report, at: &str, h: &str) {
    let name = h.strip_prefix("*.").unwrap_or(h);
    let ip = h.parse::<std::net::IpAddr>().is_ok();
    let ok = !ip
        && !name.is_empty()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if !ok {
        r.error(at, format!("{h:?} is not a valid hostname (lower-case DNS name, optionally *.-prefixed; no IP addresses)"));
    }
}

fn parents_and_hosts<R>(r: &mut Report, route: &Route<R>) {
    for (i, p) in route.parent_refs.iter().enumerate() {
        if p.name.is_empty() {
            r.error(format!("spec.parentRefs[{i}].name"), "Required value");
        }
        if let Some(port) = p.port {
            port_in_range(r, &format!("spec.parentRefs[{i}].port"), port);
        }
    }
    for (i, h) in route.hostnames.iter().enumerate() {
        hostname(r, &format!("spec.hostnames[{i}]"), h);
    }
}

fn backends(r: &mut Report, at: &str, refs: &[BackendRef]) {
    for (j, b) in refs.iter().enumerate() {
        let here = format!("{at}.backendRefs[{j}]");
        if b.name.is_empty() {
            r.error(format!("{here}.name"), "Required value");
        }
        let is_service = b.group.as_deref().unwrap_or("").is_empty()
            && b.kind.as_deref().unwrap_or("Service") == "Service";
        match b.port {
            None if is_service => r.error(
                format!("{here}.port"),
                "Required value: a Service backend needs a port",
            ),
            Some(p) => port_in_range(r, &format!("{here}.port"), p),
            None => {}
        }
        if b.weight.is_some_and(|w| !(0..=1_000_000).contains(&w)) {
            r.error(format!("{here}.weight"), "must be between 0 and 1000000");
        }
    }
}

const PATH_TYPES: &[&str] = &["Exact", "PathPrefix", "RegularExpression"];
const VALUE_TYPES: &[&str] = &["Exact", "RegularExpression"];

const FILTER_TYPES: &[&str] = &[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "RequestRedirect",
    "URLRewrite",
    "ExtensionRef",
    "CORS",
];

fn filters(r: &mut Report, at: &str, list: Option<&Vec<RouteFilter>>) {
    for (j, f) in list.into_iter().flatten().enumerate() {
        let here = format!("{at}.filters[{j}]");
        if !FILTER_TYPES.contains(&f.kind.as_str()) {
            r.error(
                format!("{here}.type"),
                format!(
                    "Unsupported value: {:?}: use one of {}",
                    f.kind,
                    FILTER_TYPES.join(", ")
                ),
            );
        }
        let set = [
            ("RequestHeaderModifier", f.request_header_modifier.is_some()),
            (
                "ResponseHeaderModifier",
                f.response_header_modifier.is_some(),
            ),
            ("RequestMirror", f.request_mirror.is_some()),
            ("RequestRedirect", f.request_redirect.is_some()),
            ("URLRewrite", f.url_rewrite.is_some()),
            ("ExtensionRef", f.extension_ref.is_some()),
            ("CORS", f.cors.is_some()),
        ];
        if !set.iter().any(|(k, is)| *is && *k == f.kind)
            || set.iter().filter(|(_, is)| *is).count() != 1
        {
            r.error(
                &here,
                format!("a {} filter sets exactly the field of its type", f.kind),
            );
        }
    }
}

pub(crate) fn check_http_route(r: &mut Report, route: &HttpRoute) {
    parents_and_hosts(r, route);
    for (i, rule) in route.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        filters(r, &at, rule.filters.as_ref());
        for (j, m) in rule.matches.iter().enumerate() {
            if let Some(path) = &m.path {
                let kind = path.kind.as_deref().unwrap_or("PathPrefix");
                let here = format!("{at}.matches[{j}].path");
                if !PATH_TYPES.contains(&kind) {
                    r.error(
                        format!("{here}.type"),
                        format!(
                            "Unsupported value: {kind:?}: use one of {}",
                            PATH_TYPES.join(", ")
                        ),
                    );
                }
                let value = path.value.as_deref().unwrap_or("/");
                if kind != "RegularExpression" && !value.starts_with('/') {
                    r.error(
                        format!("{here}.value"),
                        "must be an absolute path starting with /",
                    );
                }
            }
            for (k, h) in m.headers.iter().chain(&m.query_params).enumerate() {
                let kind = h.kind.as_deref().unwrap_or("Exact");
                if !VALUE_TYPES.contains(&kind) {
                    r.error(
                        format!("{at}.matches[{j}].headers[{k}].type"),
                        format!("Unsupported value: {kind:?}: use Exact or RegularExpression"),
                    );
                }
                if h.name.is_empty() {
                    r.error(
                        format!("{at}.matches[{j}].headers[{k}].name"),
                        "Required value",
                    );
                }
            }
        }
        backends(r, &at, &rule.backend_refs);
        if let Some(t) = &rule.timeouts {
            for (field, v) in [
                ("request", &t.request),
                ("backendRequest", &t.backend_request),
            ] {
                if v.as_deref()
                    .is_some_and(|d| crate::networking::common::parse_duration(d).is_none())
                {
                    r.error(
                        format!("{at}.timeouts.{field}"),
                        "must be a duration such as 10s or 500ms",
                    );
                }
            }
        }
    }
}

pub(crate) fn check_grpc_route(r: &mut Report, route: &GrpcRoute) {
    parents_and_hosts(r, route);
    for (i, rule) in route.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        filters(r, &at, rule.filters.as_ref());
        for (j, m) in rule.matches.iter().enumerate() {
            if let Some(method) = &m.method {
                if method.service.is_none() && method.method.is_none() {
                    r.error(
                        format!("{at}.matches[{j}].method"),
                        "one or both of service and method must be specified",
                    );
                }
            }
        }
        backends(r, &at, &rule.backend_refs);
    }
}

pub(crate) fn check_backend_route(r: &mut Report, route: &Route<BackendRule>) {
    parents_and_hosts(r, route);
    if route.rules.is_empty() {
        r.error("spec.rules", "Required value: at least one rule");
    }
    for (i, rule) in route.rules.iter().enumerate() {
        backends(r, &format!("spec.rules[{i}]"), &rule.backend_refs);
    }
}

pub(crate) fn check_reference_grant(r: &mut Report, g: &ReferenceGrant) {
    if g.from.is_empty() {
        r.error("spec.from", "Required value: at least one source");
    }
    if g.to.is_empty() {
        r.error("spec.to", "Required value: at least one target");
    }
    for (i, f) in g.from.iter().enumerate() {
        if f.kind.is_empty() || f.namespace.is_empty() {
            r.error(format!("spec.from[{i}]"), "kind and namespace are required");
        }
    }
    for (i, t) in g.to.iter().enumerate() {
        if t.kind.is_empty() {
            r.error(format!("spec.to[{i}].kind"), "Required value");
        }
    }
}
