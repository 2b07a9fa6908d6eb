//! Envoy's xDS v3 transport, both ends: an ADS server that tracks versions,
//! nonces, ACKs and NACKs per proxy, and an ADS client that hands each update
//! to the proxy and answers with an ACK or a NACK carrying the reason; and
//! the small HTTP server both ends use for their debug ports, and their
//! shared RFC 3339 clock format.
//!
//! This crate moves opaque `Any` resources; it knows nothing of Istio's API
//! and nothing of what the resources mean, but for declaring the one
//! message of Istio's own it carries (`nds`: the DNS proxy's name table).

pub mod ca;
pub mod client;
pub mod clock;
pub mod debug_http;
pub mod metrics;
pub mod nds;
pub mod server;
pub mod stats_config;
pub mod status;
pub mod types;

pub use client::{run_client, Applier, ClientConfig, SessionEvent};
pub use server::{AdsServer, Generated, Generator};
pub use status::{ProxyStatus, StatusBoard, TypeStatus};

/// The node metadata's `GENERATOR`, which Istio's agents set to pick the
/// flavour of xDS a client takes (`grpc` for proxyless gRPC).
pub fn node_generator(node: &envoy_types::pb::envoy::config::core::v3::Node) -> Option<&str> {
    use envoy_types::pb::google::protobuf::value::Kind;
    match node
        .metadata
        .as_ref()?
        .fields
        .get("GENERATOR")?
        .kind
        .as_ref()?
    {
        Kind::StringValue(s) => Some(s),
        _ => None,
    }
}
