//! A typed, validated config resource and the kinds Weft knows.

use std::fmt;

use serde::Serialize;

use crate::extensions::{TrafficExtension, WasmPlugin};
use crate::gateway_api::{
    GatewayClass, GrpcRoute, HttpRoute, KubeGateway, ReferenceGrant, TcpRoute, TlsRoute,
};
use crate::kube;
use crate::meta::{ObjectMeta, Origin};
use crate::networking::{
    DestinationRule, EnvoyFilter, Gateway, ProxyConfig, ServiceEntry, Sidecar, VirtualService,
    WorkloadEntry, WorkloadGroup,
};
use crate::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::telemetry::Telemetry;

/// Every Istio kind Weft accepts. All are typed and validated; the first
/// three are compiled into proxy config, the others are stored and served
/// back with a warning that this version does not enforce them, so nothing
/// is ignored silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    Sidecar,
    WorkloadEntry,
    WorkloadGroup,
    EnvoyFilter,
    ProxyConfig,
    PeerAuthentication,
    RequestAuthentication,
    AuthorizationPolicy,
    Telemetry,
    WasmPlugin,
    TrafficExtension,
    GatewayClass,
    /// The Gateway API's Gateway (gateway.networking.k8s.io), not Istio's.
    KubeGateway,
    HttpRoute,
    GrpcRoute,
    TcpRoute,
    TlsRoute,
    ReferenceGrant,
    Namespace,
    Service,
    Pod,
    Deployment,
    ServiceAccount,
    EndpointSlice,
    Secret,
    ConfigMap,
    /// networking.k8s.io's Ingress, which Istio's ingress gateway serves.
    Ingress,
    IngressClass,
}

impl Kind {
    pub const ALL: [Kind; 32] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::Sidecar,
        Kind::WorkloadEntry,
        Kind::WorkloadGroup,
        Kind::EnvoyFilter,
        Kind::ProxyConfig,
        Kind::PeerAuthentication,
        Kind::RequestAuthentication,
        Kind::AuthorizationPolicy,
        Kind::Telemetry,
        Kind::WasmPlugin,
        Kind::TrafficExtension,
        Kind::GatewayClass,
        Kind::KubeGateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::TcpRoute,
        Kind::TlsRoute,
        Kind::ReferenceGrant,
        Kind::Namespace,
        Kind::Service,
        Kind::Pod,
        Kind::Deployment,
        Kind::ServiceAccount,
        Kind::EndpointSlice,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::Ingress,
        Kind::IngressClass,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Sidecar => "Sidecar",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::WorkloadGroup => "WorkloadGroup",
            Kind::EnvoyFilter => "EnvoyFilter",
            Kind::ProxyConfig => "ProxyConfig",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::Telemetry => "Telemetry",
            Kind::WasmPlugin => "WasmPlugin",
            Kind::TrafficExtension => "TrafficExtension",
            Kind::GatewayClass => "GatewayClass",
            Kind::KubeGateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::TcpRoute => "TCPRoute",
            Kind::TlsRoute => "TLSRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::Ingress => "Ingress",
            Kind::IngressClass => "IngressClass",
        }
    }

    /// The API group and the versions Istio serves for this kind.
    pub fn group_versions(self) -> (&'static str, &'static [&'static str]) {
        const NET: &[&str] = &["v1", "v1beta1", "v1alpha3"];
        match self {
            Kind::VirtualService
            | Kind::DestinationRule
            | Kind::Gateway
            | Kind::ServiceEntry
            | Kind::Sidecar
            | Kind::WorkloadEntry
            | Kind::WorkloadGroup => ("networking.istio.io", NET),
            Kind::EnvoyFilter => ("networking.istio.io", &["v1alpha3"]),
            Kind::ProxyConfig => ("networking.istio.io", &["v1beta1"]),
            Kind::PeerAuthentication | Kind::RequestAuthentication | Kind::AuthorizationPolicy => {
                ("security.istio.io", &["v1", "v1beta1"])
            }
            Kind::Telemetry => ("telemetry.istio.io", &["v1", "v1alpha1"]),
            Kind::WasmPlugin | Kind::TrafficExtension => ("extensions.istio.io", &["v1alpha1"]),
            Kind::GatewayClass | Kind::KubeGateway | Kind::HttpRoute => {
                (GATEWAY_API, &["v1", "v1beta1"])
            }
            Kind::GrpcRoute => (GATEWAY_API, &["v1", "v1alpha2"]),
            Kind::TcpRoute | Kind::TlsRoute => (GATEWAY_API, &["v1alpha2", "v1alpha3"]),
            Kind::ReferenceGrant => (GATEWAY_API, &["v1beta1", "v1alpha2"]),
            Kind::Namespace
            | Kind::Service
            | Kind::Pod
            | Kind::ServiceAccount
            | Kind::Secret
            | Kind::ConfigMap => ("", &["v1"]),
            Kind::Deployment => ("apps", &["v1"]),
            Kind::EndpointSlice => ("discovery.k8s.io", &["v1"]),
            Kind::Ingress | Kind::IngressClass => ("networking.k8s.io", &["v1"]),
        }
    }

    /// Accepts the kind's name, its lower-case plural and Istio's short names,
    /// as `kubectl get` does.
    pub fn parse(text: &str) -> Option<Kind> {
        let t = text.to_ascii_lowercase();
        let short = match t.as_str() {
            "vs" => Some(Kind::VirtualService),
            "dr" => Some(Kind::DestinationRule),
            "gw" => Some(Kind::Gateway),
            "se" => Some(Kind::ServiceEntry),
            "we" => Some(Kind::WorkloadEntry),
            "wg" => Some(Kind::WorkloadGroup),
            "pa" => Some(Kind::PeerAuthentication),
            "ra" => Some(Kind::RequestAuthentication),
            "ap" => Some(Kind::AuthorizationPolicy),
            "gtw" | "gateways.gateway.networking.k8s.io" | "gateway.gateway.networking.k8s.io" => {
                Some(Kind::KubeGateway)
            }
            _ => None,
        };
        short.or_else(|| {
            Kind::ALL.into_iter().find(|k| {
                let n = k.name().to_ascii_lowercase();
                t == n || t == format!("{n}s") || t == format!("{n}es")
            })
        })
    }

    /// False for the cluster-scoped kinds, which live in no namespace.
    pub fn namespaced(self) -> bool {
        !matches!(
            self,
            Kind::Namespace | Kind::GatewayClass | Kind::IngressClass
        )
    }

    /// Kubernetes' own kinds: read for discovery and analysis, not Istio config.
    pub fn is_kube(self) -> bool {
        matches!(
            self,
            Kind::Namespace
                | Kind::Service
                | Kind::Pod
                | Kind::Deployment
                | Kind::ServiceAccount
                | Kind::EndpointSlice
                | Kind::Secret
                | Kind::ConfigMap
        )
    }

    /// The apiVersion string for a version: `v1` for the core group.
    pub fn api_version(self, version: &str) -> String {
        match self.group_versions().0 {
            "" => version.to_string(),
            group => format!("{group}/{version}"),
        }
    }

    pub fn is_enforced(self) -> bool {
        matches!(
            self,
            Kind::VirtualService
                | Kind::DestinationRule
                | Kind::Gateway
                | Kind::ServiceEntry
                | Kind::WorkloadEntry
                | Kind::Sidecar
                | Kind::AuthorizationPolicy
                | Kind::PeerAuthentication
                | Kind::RequestAuthentication
                | Kind::Telemetry
                | Kind::Ingress
                | Kind::IngressClass
        )
    }
}

/// The Kubernetes Gateway API's group.
pub const GATEWAY_API: &str = "gateway.networking.k8s.io";

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Two kinds are called Gateway: say which one.
            Kind::KubeGateway => write!(f, "Gateway.{GATEWAY_API}"),
            _ => f.write_str(self.name()),
        }
    }
}

/// Identity of a resource in the store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Key {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One typed spec per kind; `Kind::is_enforced` says which the proxy honours.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    VirtualService(Box<VirtualService>),
    DestinationRule(Box<DestinationRule>),
    Gateway(Box<Gateway>),
    ServiceEntry(Box<ServiceEntry>),
    Sidecar(Box<Sidecar>),
    WorkloadEntry(Box<WorkloadEntry>),
    WorkloadGroup(Box<WorkloadGroup>),
    EnvoyFilter(Box<EnvoyFilter>),
    ProxyConfig(Box<ProxyConfig>),
    PeerAuthentication(Box<PeerAuthentication>),
    RequestAuthentication(Box<RequestAuthentication>),
    AuthorizationPolicy(Box<AuthorizationPolicy>),
    Telemetry(Box<Telemetry>),
    WasmPlugin(Box<WasmPlugin>),
    TrafficExtension(Box<TrafficExtension>),
    GatewayClass(Box<GatewayClass>),
    KubeGateway(Box<KubeGateway>),
    HttpRoute(Box<HttpRoute>),
    GrpcRoute(Box<GrpcRoute>),
    TcpRoute(Box<TcpRoute>),
    TlsRoute(Box<TlsRoute>),
    ReferenceGrant(Box<ReferenceGrant>),
    Namespace(Box<kube::Namespace>),
    Service(Box<kube::Service>),
    Pod(Box<kube::Pod>),
    Deployment(Box<kube::Deployment>),
    ServiceAccount(Box<kube::ServiceAccount>),
    EndpointSlice(Box<kube::EndpointSlice>),
    Secret(Box<kube::Secret>),
    ConfigMap(Box<kube::ConfigMap>),
    Ingress(Box<kube::Ingress>),
    IngressClass(Box<kube::IngressClass>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub api_version: String,
    pub kind: Kind,
    pub meta: ObjectMeta,
    pub spec: Spec,
    pub origin: Origin,
}

impl Resource {
    /// Istio's order for resources of one kind: oldest first, then by name,
    /// then by namespace.
    pub fn creation_order(&self) -> (&str, &str, &str) {
        (
            self.meta.creation_timestamp.as_deref().unwrap_or(""),
            &self.meta.name,
            self.namespace(),
        )
    }

    pub fn key(&self) -> Key {
        Key {
            kind: self.kind,
            namespace: self.meta.namespace().to_string(),
            name: self.meta.name.clone(),
        }
    }

    pub fn namespace(&self) -> &str {
        self.meta.namespace()
    }

    /// The Kubernetes-shaped document, for `weft get -o yaml|json`.
    pub fn to_document(&self) -> serde_json::Value {
        let mut meta = self.meta.clone();
        meta.namespace = Some(self.namespace().to_string());
        let mut doc = serde_json::json!({
            "apiVersion": self.api_version,
            "kind": self.kind.name(),
            "metadata": meta,
        });
        // Kubernetes kinds keep their fields at the top level (spec, data, …).
        match (self.kind.is_kube(), serde_json::to_value(&self.spec)) {
            (true, Ok(serde_json::Value::Object(body))) => {
                doc.as_object_mut().expect("object").extend(body)
            }
            (_, Ok(spec)) => {
                doc["spec"] = spec;
            }
            (_, Err(_)) => {}
        }
        doc
    }

    pub fn as_virtual_service(&self) -> Option<&VirtualService> {
        match &self.spec {
            Spec::VirtualService(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_destination_rule(&self) -> Option<&DestinationRule> {
        match &self.spec {
            Spec::DestinationRule(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_ingress(&self) -> Option<&kube::Ingress> {
        match &self.spec {
            Spec::Ingress(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_ingress_class(&self) -> Option<&kube::IngressClass> {
        match &self.spec {
            Spec::IngressClass(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_secret(&self) -> Option<&kube::Secret> {
        match &self.spec {
            Spec::Secret(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_gateway(&self) -> Option<&Gateway> {
        match &self.spec {
            Spec::Gateway(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_peer_authentication(&self) -> Option<&crate::security::PeerAuthentication> {
        match &self.spec {
            Spec::PeerAuthentication(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_request_authentication(&self) -> Option<&crate::security::RequestAuthentication> {
        match &self.spec {
            Spec::RequestAuthentication(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_authorization_policy(&self) -> Option<&crate::security::AuthorizationPolicy> {
        match &self.spec {
            Spec::AuthorizationPolicy(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_telemetry(&self) -> Option<&Telemetry> {
        match &self.spec {
            Spec::Telemetry(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_sidecar(&self) -> Option<&crate::networking::Sidecar> {
        match &self.spec {
            Spec::Sidecar(v) => Some(v),
            _ => None,
        }
    }
}
