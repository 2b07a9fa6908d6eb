//! networking.istio.io kinds that Weft compiles into proxy config.

pub mod common;
pub mod destination_rule;
pub mod envoy_filter;
pub mod gateway;
pub mod http_policies;
pub mod service_entry;
pub mod sidecar;
pub mod traffic;
pub mod virtual_service;

pub use common::{Duration, PortSelector, StringMatch};
pub use destination_rule::{DestinationRule, Subset, TrafficPolicy};
pub use envoy_filter::{EnvoyFilter, ProxyConfig};
pub use gateway::{Gateway, Server};
pub use service_entry::{ServiceEntry, WorkloadEntry, WorkloadGroup};
pub use sidecar::Sidecar;
pub use virtual_service::{
    Destination, HttpMatchRequest, HttpRoute, HttpRouteDestination, VirtualService,
};
