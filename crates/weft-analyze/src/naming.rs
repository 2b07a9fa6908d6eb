//! Ports and annotations that hide what they mean.

use weft_config::Kind;
use weft_registry::Protocol;

use crate::{
    Findings, Input, Level, DEPRECATED_ANNOTATION, GATEWAY_PORT_NOT_ON_WORKLOAD,
    PORT_NAME_NOT_UNDER_CONVENTION, UNKNOWN_ANNOTATION,
};

pub(crate) fn check(input: &Input, f: &mut Findings) {
    port_names(input, f);
    gateway_ports(input, f);
    annotations(input, f);
}

/// Istio's port-name prefixes (`http`, `http-web`, `grpc`, …).
const PROTOCOL_PREFIXES: &[&str] = &[
    "http", "http2", "https", "grpc", "grpc-web", "tcp", "tls", "mongo", "mysql", "redis", "udp",
    "h2c",
];

fn port_names(input: &Input, f: &mut Findings) {
    for s in &input.registry.services {
        for p in &s.ports {
            let prefix = p.name.split('-').next().unwrap_or("").to_ascii_lowercase();
            let named = PROTOCOL_PREFIXES.contains(&prefix.as_str())
                || p.name.to_ascii_lowercase().starts_with("grpc-web");
            if p.app_protocol.is_none() && !named {
                f.push_registry(
                    Level::Info,
                    PORT_NAME_NOT_UNDER_CONVENTION,
                    format!("Service {}/{}", s.namespace, s.name),
                    format!("Port name {:?} (port {}) doesn't follow Istio's naming convention; Weft treats it as opaque TCP ({:?}).", p.name, p.port, Protocol::of(p)),
                    Some("name the port <protocol>[-<suffix>] (http, http-web, grpc, tcp, …) or set appProtocol"),
                );
            }
        }
    }
}

/// A Gateway server port that no selected workload exposes.
fn gateway_ports(input: &Input, f: &mut Findings) {
    for r in input.of_kind(Kind::Gateway) {
        let gw = r.as_gateway().expect("gateway");
        let selected: Vec<_> = input
            .registry
            .workloads
            .iter()
            .filter(|w| {
                !gw.selector.is_empty()
                    && gw.selector.iter().all(|(k, v)| w.labels.get(k) == Some(v))
            })
            .collect();
        if selected.is_empty() {
            continue; // reported as a missing selector
        }
        for server in &gw.servers {
            let number = u16::try_from(server.port.number).unwrap_or(0);
            let exposed = selected.iter().any(|w| {
                w.ports.iter().any(|p| p.container_port == number)
                    || input
                        .registry
                        .services_of(w)
                        .any(|s| s.port(number).is_some())
            });
            if !exposed {
                f.push(
                    Level::Warning,
                    GATEWAY_PORT_NOT_ON_WORKLOAD,
                    r,
                    format!("The gateway refers to a port that is not exposed on the workload (selector {:?}; port {number}).", gw.selector),
                    Some("use a port of the gateway's service or workload"),
                );
            }
        }
    }
}

/// Annotations under istio.io that Istio defines.
const KNOWN_ANNOTATIONS: &[&str] = &[
    "sidecar.istio.io/inject",
    "sidecar.istio.io/status",
    "sidecar.istio.io/proxyCPU",
    "sidecar.istio.io/proxyMemory",
    "sidecar.istio.io/logLevel",
    "sidecar.istio.io/rewriteAppHTTPProbers",
    "proxy.istio.io/config",
    "traffic.sidecar.istio.io/includeOutboundIPRanges",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges",
    "traffic.sidecar.istio.io/includeInboundPorts",
    "traffic.sidecar.istio.io/excludeInboundPorts",
    "traffic.sidecar.istio.io/excludeOutboundPorts",
    "traffic.sidecar.istio.io/includeOutboundPorts",
    "networking.istio.io/exportTo",
    "sidecar.istio.io/nativeSidecar",
    "sidecar.istio.io/bootstrapOverride",
    "sidecar.istio.io/userVolume",
    "sidecar.istio.io/userVolumeMount",
    "sidecar.istio.io/statsInclusionPrefixes",
    "sidecar.istio.io/statsEvictionInterval",
    "sidecar.istio.io/agentLogLevel",
    "sidecar.istio.io/proxyImage",
    "sidecar.istio.io/interceptionMode",
    "istio.io/dry-run",
    "istio.io/rev",
    "galley.istio.io/analyze-suppress",
    "inject.istio.io/templates",
    "prometheus.istio.io/merge-metrics",
    "readiness.status.sidecar.istio.io/applicationPorts",
    "readiness.status.sidecar.istio.io/initialDelaySeconds",
    "readiness.status.sidecar.istio.io/periodSeconds",
    "readiness.status.sidecar.istio.io/failureThreshold",
    "ambient.istio.io/redirection",
    "ambient.istio.io/bypass-inbound-capture",
    "install.operator.istio.io/chart-owner",
    "install.operator.istio.io/owner-generation",
    "install.operator.istio.io/version",
];

/// Annotations Istio still recognises but has deprecated.
const DEPRECATED_ANNOTATIONS: &[&str] = &[
    "alpha.istio.io/canonical-serviceaccounts",
    "alpha.istio.io/identity",
    "alpha.istio.io/kubernetes-serviceaccounts",
];

fn annotations(input: &Input, f: &mut Findings) {
    for r in input.config {
        for key in r.meta.annotations.keys() {
            let domain = key.split_once('/').map(|(d, _)| d).unwrap_or("");
            if DEPRECATED_ANNOTATIONS.contains(&key.as_str()) {
                f.push(
                    Level::Warning,
                    DEPRECATED_ANNOTATION,
                    r,
                    format!("Deprecated annotation: {key}"),
                    Some("remove it before upgrading; it will stop taking effect"),
                );
            } else if domain.ends_with("istio.io") && !KNOWN_ANNOTATIONS.contains(&key.as_str()) {
                f.push(
                    Level::Warning,
                    UNKNOWN_ANNOTATION,
                    r,
                    format!("Unknown annotation: {key}"),
                    Some("check the spelling against Istio's annotation list"),
                );
            }
        }
    }
}
