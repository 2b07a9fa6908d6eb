//! Type URLs of the resources Weft exchanges, in the order a server should
//! send them (clusters before the endpoints that fill them, listeners before
//! the routes they name), as Envoy's protocol docs recommend.

pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

pub use crate::nds::NAME_TABLE;

/// Secrets go before the listeners whose TLS contexts name them, so a new
/// listener finds its certificate (Envoy would hold it warming instead);
/// the DNS proxy's name table goes last.
pub const PUSH_ORDER: [&str; 6] = [CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE, NAME_TABLE];

/// The short name used in logs and the debug API (CDS, EDS, LDS, RDS, SDS).
pub fn short_name(type_url: &str) -> &'static str {
    match type_url {
        CLUSTER => "CDS",
        ENDPOINT => "EDS",
        LISTENER => "LDS",
        ROUTE => "RDS",
        SECRET => "SDS",
        NAME_TABLE => "NDS",
        _ => "unknown",
    }
}
