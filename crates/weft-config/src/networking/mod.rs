//! networking.istio.io kinds that Weft compiles into proxy config.

pub mod common;
pub mod destination_rule;
pub mod gateway;
pub mod virtual_service;

pub use common::{Duration, PortSelector, StringMatch};
pub use destination_rule::{DestinationRule, Subset, TrafficPolicy};
pub use gateway::{Gateway, Server};
pub use virtual_service::{
    Destination, HttpMatchRequest, HttpRoute, HttpRouteDestination, VirtualService,
};
