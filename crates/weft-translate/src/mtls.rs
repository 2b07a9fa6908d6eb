//! Mesh mutual TLS as istiod writes it.
//!
//! Server side: PeerAuthentication picks each inbound port's mode —
//! workload port level, then workload, then namespace, then mesh (the
//! root namespace), each UNSET one inheriting, PERMISSIVE by default.
//! STRICT ports take mTLS only, PERMISSIVE ports take mTLS and plaintext
//! (told apart by the ClientHello and its `istio*` ALPN), DISABLE ports
//! plaintext only. The TLS chains present the workload certificate
//! (SDS `default`) and check clients against the mesh roots (`ROOTCA`).
//!
//! Client side: a cluster towards a mesh service speaks ISTIO_MUTUAL to
//! endpoints that carry `tlsMode: istio` (pods with a sidecar) and
//! plaintext to the others (auto mTLS), unless a DestinationRule sets
//! `tls`, or the service's namespace or the mesh DISABLEs mTLS. The
//! upstream's certificate must name one of the service's accounts.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use envoy_types::pb::envoy::config::core::v3::{
    transport_socket::ConfigType, Metadata, TransportSocket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    subject_alt_name_matcher::SanType,
    tls_parameters::TlsProtocol,
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, TlsParameters, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use envoy_types::pb::google::protobuf::{value::Kind, BoolValue, Struct, Value};
use weft_config::security::PeerAuthentication;
use weft_config::{mesh_config::ROOT_NAMESPACE, Resource};
use weft_registry::{Service, Workload};

use crate::envoy::ads;

/// ALPN a client sidecar offers for TCP, and for HTTP/1.x and HTTP/2
/// streams (Istio's ALPN filter); server chains match on them.
pub const ALPN_TCP: [&str; 2] = ["istio-peer-exchange", "istio"];
pub const ALPN_HTTP: [&str; 3] = ["istio-http/1.0", "istio-http/1.1", "istio-h2"];

/// Endpoint metadata key and the value pods with a sidecar carry.
const SOCKET_MATCH: &str = "envoy.transport_socket_match";
const TLS_MODE: &str = "tlsMode";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Permissive,
    Strict,
}

fn parse(mode: Option<&str>) -> Option<Mode> {
    match mode? {
        "DISABLE" => Some(Mode::Disable),
        "PERMISSIVE" => Some(Mode::Permissive),
        "STRICT" => Some(Mode::Strict),
        _ => None, // UNSET: inherit
    }
}

/// The oldest policy in `namespace` that `pick` accepts (istiod takes the
/// oldest when several apply at one level).
fn oldest<'a>(
    config: &'a [Resource],
    namespace: &str,
    pick: impl Fn(&PeerAuthentication) -> bool,
) -> Option<&'a PeerAuthentication> {
    let mut found: Vec<&Resource> = config
        .iter()
        .filter(|r| r.namespace() == namespace)
        .filter(|r| r.as_peer_authentication().is_some_and(&pick))
        .collect();
    found.sort_by(|a, b| a.creation_order().cmp(&b.creation_order()));
    found.first().and_then(|r| r.as_peer_authentication())
}

fn level_mode(pa: Option<&PeerAuthentication>) -> Option<Mode> {
    parse(pa?.mtls.as_ref()?.mode.as_deref())
}

/// The mode of a namespace as a whole: its own policy without selector,
/// else the mesh's, else PERMISSIVE.
pub fn namespace_mode(config: &[Resource], namespace: &str) -> Mode {
    let whole = |pa: &PeerAuthentication| pa.selector.is_none();
    level_mode(oldest(config, namespace, whole))
        .or_else(|| level_mode(oldest(config, ROOT_NAMESPACE, whole)))
        .unwrap_or(Mode::Permissive)
}

/// The mode for `proxy`'s inbound container `port` (None: the
/// workload's mode for ports it does not name).
pub fn inbound_mode(config: &[Resource], proxy: &Workload, port: Option<u16>) -> Mode {
    let selected = |pa: &PeerAuthentication| {
        pa.selector.as_ref().is_some_and(|s| {
            s.match_labels
                .iter()
                .all(|(k, v)| proxy.labels.get(k) == Some(v))
        })
    };
    let workload = oldest(config, &proxy.namespace, selected);
    let port_mode = port.and_then(|p| {
        let ports = workload?.port_level_mtls.as_ref()?;
        parse(ports.get(&p.to_string())?.mode.as_deref())
    });
    port_mode
        .or_else(|| level_mode(workload))
        .unwrap_or_else(|| namespace_mode(config, &proxy.namespace))
}

/// The ports `proxy`'s own PeerAuthentication names (`portLevelMtls`),
/// with their modes.
pub fn port_levels(config: &[Resource], proxy: &Workload) -> Vec<u16> {
    let selected = |pa: &PeerAuthentication| {
        pa.selector.as_ref().is_some_and(|s| {
            s.match_labels
                .iter()
                .all(|(k, v)| proxy.labels.get(k) == Some(v))
        })
    };
    oldest(config, &proxy.namespace, selected)
        .and_then(|pa| pa.port_level_mtls.as_ref())
        .map(|ports| ports.keys().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.into(),
        sds_config: Some(ads()),
    }
}

fn tls_socket(any: envoy_types::pb::google::protobuf::Any) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(ConfigType::TypedConfig(any)),
    }
}

/// The workload certificate and the mesh roots, with `sans` (URI,
/// exact) as the peer names to accept.
fn common(sans: &[String], alpn: Vec<String>) -> CommonTlsContext {
    CommonTlsContext {
        tls_params: Some(TlsParameters {
            tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
            tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
            ..Default::default()
        }),
        tls_certificate_sds_secret_configs: vec![sds("default")],
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_typed_subject_alt_names: sans
                        .iter()
                        .map(|san| SubjectAltNameMatcher {
                            san_type: SanType::Uri as i32,
                            matcher: Some(StringMatcher {
                                match_pattern: Some(MatchPattern::Exact(san.clone())),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(sds("ROOTCA")),
                ..Default::default()
            },
        )),
        alpn_protocols: alpn,
        ..Default::default()
    }
}

/// A sidecar's inbound TLS chain: the workload's certificate, a client
/// certificate from the mesh required. Every ALPN a sidecar offers is
/// accepted (the chain was already chosen by it).
pub fn inbound_socket() -> TransportSocket {
    let alpn = ["h2", "http/1.1"]
        .into_iter()
        .chain(ALPN_TCP)
        .chain(ALPN_HTTP)
        .map(String::from)
        .collect();
    server_socket(alpn)
}

/// The server side of mesh mTLS offering `alpn`: the workload's
/// certificate, a client certificate from the mesh required (a sidecar's
/// inbound chains, a gateway's ISTIO_MUTUAL servers).
pub fn server_socket(alpn: Vec<String>) -> TransportSocket {
    tls_socket(envoy_types::util::pack_any(DownstreamTlsContext {
        common_tls_context: Some(common(&[], alpn)),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    }))
}

/// The client side (ISTIO_MUTUAL): SNI `outbound_.PORT_.SUBSET_.HOST` as
/// istiod writes it, the peer's certificate checked for `sans`.
pub fn upstream_socket(sni: String, sans: &[String]) -> TransportSocket {
    let alpn = ALPN_TCP.iter().map(|a| a.to_string()).collect();
    tls_socket(envoy_types::util::pack_any(UpstreamTlsContext {
        common_tls_context: Some(common(sans, alpn)),
        sni,
        ..Default::default()
    }))
}

pub fn sni(port: u16, subset: &str, host: &str) -> String {
    format!("outbound_.{port}_.{subset}_.{host}")
}

/// Auto mTLS: mTLS to endpoints labelled `tlsMode: istio`, plaintext to
/// the rest.
pub fn auto_matches(mtls: TransportSocket) -> Vec<TransportSocketMatch> {
    vec![
        TransportSocketMatch {
            name: "tlsMode-istio".into(),
            r#match: Some(labels_struct(&[(TLS_MODE, "istio")])),
            transport_socket: Some(mtls),
        },
        TransportSocketMatch {
            name: "tlsMode-disabled".into(),
            r#match: Some(Struct::default()),
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.raw_buffer".into(),
                config_type: Some(ConfigType::TypedConfig(envoy_types::util::pack_any(
                    RawBuffer::default(),
                ))),
            }),
        },
    ]
}

fn labels_struct(pairs: &[(&str, &str)]) -> Struct {
    Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value {
                        kind: Some(Kind::StringValue(v.to_string())),
                    },
                )
            })
            .collect(),
    }
}

/// The endpoint metadata of a workload: `tlsMode: istio` when a sidecar
/// runs beside it (Istio's `security.istio.io/tlsMode` label), and, as
/// istiod writes it, `istio.workload` (`name;namespace;canonical
/// service;canonical revision;cluster`), which names the server in a
/// client's metrics when the server's own metadata did not come back.
pub fn endpoint_metadata(w: &Workload) -> Option<Metadata> {
    if w.entry.is_some() {
        return None;
    }
    let workload = [
        w.workload_name(),
        &w.namespace,
        w.canonical_service(),
        w.canonical_revision(),
        weft_registry::CLUSTER_ID,
    ]
    .join(";");
    let mut filter_metadata: std::collections::HashMap<String, Struct> = [(
        "istio".to_string(),
        labels_struct(&[("workload", &workload)]),
    )]
    .into_iter()
    .collect();
    if w.proxy == weft_registry::ProxyKind::Sidecar {
        filter_metadata.insert(SOCKET_MATCH.into(), labels_struct(&[(TLS_MODE, "istio")]));
    }
    Some(Metadata {
        filter_metadata,
        ..Default::default()
    })
}

/// Whether a client should try mTLS towards `service` on its own (auto
/// mTLS on, the service in the mesh, not DISABLEd for its namespace).
pub fn auto_applies(config: &[Resource], service: &Service) -> bool {
    let enabled = weft_config::MeshConfig::of(config)
        .enable_auto_mtls
        .unwrap_or(true);
    let external = service.entry.as_ref().is_some_and(|e| e.external);
    enabled && !external && namespace_mode(config, &service.namespace) != Mode::Disable
}

/// The mesh's trust domain (mesh config `trustDomain`, else Istio's).
pub fn trust_domain(config: &[Resource]) -> String {
    weft_config::MeshConfig::of(config)
        .trust_domain
        .unwrap_or_else(|| "cluster.local".into())
}

/// The SPIFFE ids of the accounts `endpoints` run as, sorted.
pub fn accounts<'a>(
    trust_domain: &str,
    endpoints: impl Iterator<Item = &'a Workload>,
) -> Vec<String> {
    let ids: BTreeSet<String> = endpoints
        .map(|w| {
            let sa = if w.service_account.is_empty() {
                "default"
            } else {
                &w.service_account
            };
            format!("spiffe://{trust_domain}/ns/{}/sa/{sa}", w.namespace)
        })
        .collect();
    ids.into_iter().collect()
}
