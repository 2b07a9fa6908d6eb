//! Kubernetes Gateway API kinds (gateway.networking.k8s.io), which Istio
//! supports: GatewayClass, Gateway, HTTPRoute, GRPCRoute, TCPRoute,
//! TLSRoute, ReferenceGrant. Typed and validated; not enforced yet.

use serde::{Deserialize, Serialize};

use crate::selectors::port_in_range;
use crate::validate::Report;

type Opaque = Option<serde_json::Value>;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewayClass {
    #[serde(default)]
    pub controller_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters_ref: Opaque,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Opaque,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure: Opaque,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_listeners: Opaque,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_tls: Opaque,
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
    pub tls: Opaque,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Opaque,
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
    pub filters: Opaque,
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
    pub filters: Opaque,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Opaque,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Opaque,
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
    pub filters: Opaque,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Opaque,
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

pub(crate) fn check_http_route(r: &mut Report, route: &HttpRoute) {
    parents_and_hosts(r, route);
    for (i, rule) in route.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
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
