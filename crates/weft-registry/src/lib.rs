//! The service registry: services, workloads and their endpoints.
//!
//! Two shapes live here. `MeshSpec` is what a person writes for `weft up`
//! (workloads and services in Kubernetes' shapes). `Registry` is the resolved
//! form, with every workload's address and every service's virtual IP, which
//! the local runtime writes and the control plane reads. The control plane
//! never sees how addresses were allocated, so a Kubernetes source can fill
//! the same `Registry` later.
//!
//! This crate knows nothing of Envoy, xDS or sockets.

mod entries;
mod kube;
mod mesh;
mod registry;

pub use entries::{exported, DnsEndpoint, Entry, Resolution};
pub use mesh::{ContainerPort, MeshSpec, ServicePort, ServiceSpec, WorkloadSpec};
pub use registry::{
    target_port, Protocol, ProxyKind, Registry, Service, Workload, CLUSTER_ID, DOMAIN_SUFFIX,
};
