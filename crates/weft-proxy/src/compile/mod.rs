//! Envoy resources → the proxy's own structures, built once per update and
//! swapped in whole. Everything the request path needs is precomputed here
//! (regexes compiled, weights summed, endpoints joined to their clusters).
//!
//! Compiling is also validation: a field or extension this proxy does not
//! implement is an error, which becomes the NACK's reason.

mod cluster;
mod endpoints;
mod headers;
mod listener;
mod matcher;
mod route;
mod secret;
mod tls;
mod upstream_tls;

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

pub use cluster::{ClusterCfg, ClusterKind};
pub(crate) use endpoints::OVERPROVISIONING;
pub use endpoints::{Endpoints, Locality};
pub use headers::{Append, HeaderOps};
pub use listener::{ChainAction, ChainCfg, HttpTimeouts, ListenerCfg, RouteRef};
pub use matcher::{HeaderKey, HeaderMatch, PathMatch, QueryMatch, RequestView, ValueMatch};
pub use route::{
    Action, Clusters, Forward, Mirror, PathRewrite, Redirect, RouteCfg, RouteTable, VirtualHostCfg,
    WeightedTarget,
};

pub(crate) use cluster::{compile_cluster, compile_endpoints};
pub(crate) use listener::compile_listener;
pub(crate) use matcher::{compile_header, string_match};
pub(crate) use route::compile_route_table;
pub(crate) use secret::bytes as secret_bytes;
pub(crate) use secret::roots as secret_roots;
pub use secret::SecretCfg;
pub(crate) use secret::{compile_secret, fingerprint as secrets_fingerprint, Secrets};
pub use tls::DownstreamTls;
pub use upstream_tls::UpstreamTls;

/// One immutable snapshot of everything the proxy runs. Requests hold an
/// `Arc` to the snapshot they started with, so a push never changes a
/// request midway.
#[derive(Debug, Default, Serialize)]
pub struct Compiled {
    pub listeners: Vec<Arc<ListenerCfg>>,
    /// FxHash, as every map a request looks into: SipHash was 3% of a
    /// request's instructions; the keys are the control plane's own.
    pub routes: rustc_hash::FxHashMap<String, Arc<RouteTable>>,
    pub clusters: rustc_hash::FxHashMap<String, Arc<ClusterCfg>>,
    /// SDS secrets by name; the chains' TLS configs are built from them.
    pub secrets: HashMap<String, Arc<SecretCfg>>,
    /// Versions of each xDS type this snapshot was built from.
    pub versions: HashMap<&'static str, String>,
    /// Counts snapshots: a connection that took its filter chain from an
    /// older one looks it up again for its next request.
    pub generation: u64,
}

impl Compiled {
    /// The listener a redirected connection belongs to: an exact
    /// `ip:port` match first, then `0.0.0.0:port` (Envoy's rule for
    /// `use_original_dst`).
    pub fn listener_for(&self, dst: std::net::SocketAddr) -> Option<&Arc<ListenerCfg>> {
        let exact = self.listeners.iter().find(|l| !l.bind && l.address == dst);
        exact.or_else(|| {
            self.listeners.iter().find(|l| {
                !l.bind && l.address.ip().is_unspecified() && l.address.port() == dst.port()
            })
        })
    }

    pub fn listener_named(&self, name: &str) -> Option<&Arc<ListenerCfg>> {
        self.listeners.iter().find(|l| l.name == name)
    }
}

/// Decodes an `Any` into the message type its filter name implies, with the
/// type URL checked so a mismatch is a clear error rather than garbage.
pub(crate) fn unpack<M: prost::Message + prost::Name + Default>(
    any: &envoy_types::pb::google::protobuf::Any,
) -> Result<M, String> {
    if any.type_url != M::type_url() {
        return Err(format!("expected {}, got {}", M::type_url(), any.type_url));
    }
    M::decode(any.value.as_slice()).map_err(|e| format!("decoding {}: {e}", any.type_url))
}

/// The config of a transport socket, which must be an `M` (a TLS
/// context), with the raw `Any` it came in.
pub(crate) fn transport_config<M: prost::Message + prost::Name + Default>(
    ts: &envoy_types::pb::envoy::config::core::v3::TransportSocket,
) -> Result<(M, &envoy_types::pb::google::protobuf::Any), String> {
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    let Some(ConfigType::TypedConfig(any)) = &ts.config_type else {
        return Err(format!(
            "transport socket {:?} has no typed_config",
            ts.name
        ));
    };
    if any.type_url != M::type_url() {
        return Err(format!(
            "transport socket {:?} ({}) is not supported here (only {})",
            ts.name,
            any.type_url,
            M::type_url()
        ));
    }
    Ok((unpack(any)?, any))
}

pub(crate) fn socket_addr(
    address: &Option<envoy_types::pb::envoy::config::core::v3::Address>,
) -> Result<std::net::SocketAddr, String> {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
    let Some(address::Address::SocketAddress(sa)) =
        address.as_ref().and_then(|a| a.address.as_ref())
    else {
        return Err("only socket addresses are supported".into());
    };
    let port = match sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => {
            u16::try_from(p).map_err(|_| format!("port {p} out of range"))?
        }
        _ => return Err("named ports are not supported".into()),
    };
    let ip: std::net::IpAddr = sa.address.parse().map_err(|_| {
        format!(
            "{:?} is not an IP address (DNS names are not supported)",
            sa.address
        )
    })?;
    Ok(std::net::SocketAddr::new(ip, port))
}

/// A protobuf duration as a std one; negative ones are an error.
pub(crate) fn duration(
    d: &envoy_types::pb::google::protobuf::Duration,
) -> Result<std::time::Duration, String> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(format!("negative duration {}s {}ns", d.seconds, d.nanos));
    }
    Ok(std::time::Duration::new(d.seconds as u64, d.nanos as u32))
}

/// An optional duration where Envoy reads zero as "none" (disabled).
pub(crate) fn nonzero(
    d: Option<&envoy_types::pb::google::protobuf::Duration>,
) -> Result<Option<std::time::Duration>, String> {
    Ok(d.map(duration).transpose()?.filter(|d| !d.is_zero()))
}

/// A share of requests, in parts per million (Envoy's finest denominator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PerMillion(pub u32);

impl PerMillion {
    pub const ALL: PerMillion = PerMillion(1_000_000);

    /// One draw: does this request fall in the share?
    pub fn hit(self) -> bool {
        self.0 >= 1_000_000 || fastrand::u32(..1_000_000) < self.0
    }
}

/// An Envoy percentage; none is the proto default, 0% (Istio's "not
/// specified, no request is delayed/aborted").
pub(crate) fn share(
    p: Option<&envoy_types::pb::envoy::r#type::v3::FractionalPercent>,
) -> Result<PerMillion, String> {
    use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
    let Some(p) = p else {
        return Ok(PerMillion(0));
    };
    let scale = match DenominatorType::try_from(p.denominator) {
        Ok(DenominatorType::Hundred) => 10_000,
        Ok(DenominatorType::TenThousand) => 100,
        Ok(DenominatorType::Million) => 1,
        Err(_) => return Err(format!("unknown percentage denominator {}", p.denominator)),
    };
    Ok(PerMillion(p.numerator.saturating_mul(scale).min(1_000_000)))
}

/// Decodes one resource of an xDS type from its protobuf bytes and
/// compiles it, as an update would, without touching any state: the entry
/// point of the compile step's fuzz target.
pub fn check(type_url: &str, bytes: &[u8]) -> Result<(), String> {
    use envoy_types::pb::envoy::config::{
        cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
        route::v3::RouteConfiguration,
    };
    use prost::Message;
    let bad = |e: prost::DecodeError| e.to_string();
    match type_url {
        weft_xds::types::LISTENER => {
            let secrets = Secrets {
                sds: &HashMap::new(),
                workload: &Arc::default(),
                fingerprint: 0,
            };
            compile_listener(&Listener::decode(bytes).map_err(bad)?, &secrets).map(drop)
        }
        weft_xds::types::ROUTE => {
            compile_route_table(&RouteConfiguration::decode(bytes).map_err(bad)?).map(drop)
        }
        weft_xds::types::CLUSTER => {
            let secrets = Secrets {
                sds: &HashMap::new(),
                workload: &Arc::default(),
                fingerprint: 0,
            };
            compile_cluster(&Cluster::decode(bytes).map_err(bad)?, None, &secrets).map(drop)
        }
        weft_xds::types::ENDPOINT => {
            compile_endpoints(&ClusterLoadAssignment::decode(bytes).map_err(bad)?).map(drop)
        }
        weft_xds::types::SECRET => {
            use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
            compile_secret(&Secret::decode(bytes).map_err(bad)?).map(drop)
        }
        other => Err(format!("resource type {other} is not supported")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::r#type::v3::{
        fractional_percent::DenominatorType, FractionalPercent,
    };

    #[test]
    fn shares_convert_to_parts_per_million() {
        let p = |numerator, d: DenominatorType| FractionalPercent {
            numerator,
            denominator: d as i32,
        };
        assert_eq!(share(None).unwrap(), PerMillion(0));
        assert_eq!(
            share(Some(&p(50, DenominatorType::Hundred))).unwrap(),
            PerMillion(500_000)
        );
        assert_eq!(
            share(Some(&p(1, DenominatorType::TenThousand))).unwrap(),
            PerMillion(100)
        );
        assert_eq!(
            share(Some(&p(250_000, DenominatorType::Million))).unwrap(),
            PerMillion(250_000)
        );
        assert_eq!(
            share(Some(&p(900, DenominatorType::Hundred))).unwrap(),
            PerMillion::ALL
        );
        assert!(!PerMillion(0).hit());
        assert!(PerMillion::ALL.hit());
    }
}
