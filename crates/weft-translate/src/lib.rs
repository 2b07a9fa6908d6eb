//! Istio config × registry × one proxy's identity → the Envoy v3 resources
//! that proxy should run (listeners, routes, clusters, endpoints, secrets).
//!
//! Pure functions: no sockets, no clocks, no xDS transport. The names follow
//! Istio's (`outbound|9080|v1|reviews.default.svc.cluster.local`,
//! `virtualOutbound`, `0.0.0.0_9080`, route config `9080`) so that Istio
//! troubleshooting knowledge carries over to `weft proxy-config`.

pub mod access_log;
pub mod attach;
mod authz;
mod clusters;
pub mod credentials;
mod delegate;
mod envoy;
mod ext_authz;
mod gateway;
mod gateway_tls;
mod hashing;
mod inbound;
pub mod ingress;
pub mod jwt;
mod locality;
pub mod mtls;
mod names;
mod policies;
mod pool;
mod proxyless;
mod routes;
mod scope;
mod sidecar;
pub mod stats;
mod tcp;
mod telemetry;
mod tls_routes;
mod tracing;
mod upstream_tls;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use weft_config::Resource;
use weft_registry::{ProxyKind, Registry, Workload};

pub use clusters::cluster_name;
pub use proxyless::translate_proxyless;

/// Everything one proxy is sent, one list per xDS type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyResources {
    pub listeners: Vec<Listener>,
    pub routes: Vec<RouteConfiguration>,
    pub clusters: Vec<Cluster>,
    pub endpoints: Vec<ClusterLoadAssignment>,
    /// SDS secrets the listeners name (gateway credentials).
    pub secrets: Vec<Secret>,
    /// Config this proxy cannot be given, and what was left out for it
    /// (the control plane logs them).
    pub problems: Vec<String>,
    /// The names the sidecar's DNS proxy answers, with their addresses.
    pub names: std::collections::BTreeMap<String, Vec<std::net::IpAddr>>,
}

/// The inputs of one translation: validated config and the registry.
pub struct Inputs<'a> {
    pub config: &'a [Resource],
    pub registry: &'a Registry,
    /// The proxy's Sidecar resource's `outboundTrafficPolicy.mode`, which
    /// replaces the mesh config's for that proxy.
    outbound_mode: Option<&'a str>,
    /// JWKS the control plane fetched, by `jwksUri`.
    jwks: &'a jwt::Jwks,
}

pub(crate) static NO_JWKS: jwt::Jwks = jwt::Jwks::new();

impl<'a> Inputs<'a> {
    pub fn new(config: &'a [Resource], registry: &'a Registry) -> Inputs<'a> {
        Inputs {
            config,
            registry,
            outbound_mode: None,
            jwks: &NO_JWKS,
        }
    }

    /// With the JWKS fetched for RequestAuthentication's `jwksUri`s.
    pub fn with_jwks(self, jwks: &'a jwt::Jwks) -> Inputs<'a> {
        Inputs { jwks, ..self }
    }

    /// The mesh config (Istio's `istio` ConfigMap), or Istio's defaults,
    /// with this proxy's Sidecar's outbound traffic policy.
    pub(crate) fn mesh(&self) -> weft_config::MeshConfig {
        let mut mesh = weft_config::MeshConfig::of(self.config);
        if let Some(mode) = self.outbound_mode {
            mesh.outbound_traffic_policy = Some(weft_config::mesh_config::OutboundTrafficPolicy {
                mode: Some(mode.to_string()),
            });
        }
        mesh
    }

    /// The VirtualServices `keep` accepts, oldest first (then by name and
    /// namespace), the order istiod takes them in.
    pub(crate) fn virtual_services(
        &self,
        keep: impl Fn(&weft_config::networking::VirtualService) -> bool,
    ) -> Vec<&'a Resource> {
        let mut out: Vec<&Resource> = self
            .config
            .iter()
            .filter(|r| r.as_virtual_service().is_some_and(&keep))
            .collect();
        out.sort_by(|a, b| a.creation_order().cmp(&b.creation_order()));
        out
    }
}

pub fn translate(inputs: &Inputs, proxy: &Workload) -> ProxyResources {
    let mut out = ProxyResources::default();
    match proxy.proxy {
        ProxyKind::Sidecar => {
            // Outbound sees what the proxy's Sidecar resource leaves it.
            let scoped = scope::of(inputs, proxy);
            let outbound = scoped.as_ref().map(|s| s.inputs());
            let outbound = outbound.as_ref().unwrap_or(inputs);
            clusters::outbound(outbound, proxy, &mut out);
            sidecar::build(outbound, inputs, proxy, &mut out);
            out.names = names::table(outbound, proxy);
            // Authorization applies to what the sidecar takes inbound.
            let inbound = out
                .listeners
                .iter_mut()
                .filter(|l| l.name == sidecar::VIRTUAL_INBOUND);
            let mut inbound: Vec<&mut envoy_types::pb::envoy::config::listener::v3::Listener> =
                inbound.collect();
            authz::apply_to(inputs, proxy, &mut inbound, &mut out.problems);
            jwt::apply_to(inputs, proxy, &mut inbound, &mut out.problems);
            stats::apply(inputs, proxy, &mut out);
            access_log::apply(inputs, proxy, &mut out);
            tracing::apply(inputs, proxy, &mut out);
        }
        ProxyKind::Gateway => {
            clusters::outbound(inputs, proxy, &mut out);
            gateway::build(inputs, proxy, &mut out);
            let mut all: Vec<_> = out.listeners.iter_mut().collect();
            authz::apply_to(inputs, proxy, &mut all, &mut out.problems);
            jwt::apply_to(inputs, proxy, &mut all, &mut out.problems);
            stats::apply(inputs, proxy, &mut out);
            access_log::apply(inputs, proxy, &mut out);
            tracing::apply(inputs, proxy, &mut out);
        }
        ProxyKind::Proxyless => return translate_proxyless(inputs, proxy),
        // Nothing runs there to take it.
        ProxyKind::NoSidecar => {}
    }
    out
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_entries;
#[cfg(test)]
mod tests_mtls;
#[cfg(test)]
mod tests_scope;
