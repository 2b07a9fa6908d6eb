//! DestinationRule `tls` → a cluster's transport socket, as istiod writes
//! it: SIMPLE originates TLS (Istio's "Egress TLS Origination"), MUTUAL
//! adds a client certificate. The SNI is the rule's `sni`, else the host;
//! the upstream's certificate is checked against `caCertificates`, else
//! the system's CAs (istiod's default), unless `insecureSkipVerify`; with
//! `subjectAltNames`, against those names. Certificate fields are file
//! paths on the proxy's machine, as in Istio.

use envoy_types::pb::envoy::config::core::v3::{transport_socket::ConfigType, TransportSocket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, subject_alt_name_matcher::SanType,
    CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, TlsCertificate,
    UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use weft_config::networking::traffic::ClientTls;
use weft_registry::Protocol;

use crate::envoy::file_source;

/// Where istiod points a client at the system's CAs (Debian's bundle).
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The transport socket for `tls` (DISABLE, SIMPLE or MUTUAL; the mesh's
/// own ISTIO_MUTUAL is `mtls`'s) towards `host` on a port of `protocol`;
/// None for plaintext. TLS the user asked for and Weft cannot set up is
/// an error: the cluster then gets no endpoints rather than sending in
/// the clear.
pub(crate) fn transport_socket(
    tls: &ClientTls,
    host: &str,
    protocol: Protocol,
) -> Result<Option<TransportSocket>, String> {
    let mode = tls.mode.as_deref().unwrap_or("DISABLE");
    if mode == "DISABLE" {
        return Ok(None);
    }
    if tls.credential_name.is_some() {
        return Err("tls.credentialName in a DestinationRule is read on gateways only (as in Istio): a sidecar uses file paths; the cluster gets no endpoints rather than going out in plaintext".into());
    }
    let mut common = CommonTlsContext::default();
    if mode == "MUTUAL" {
        let (Some(cert), Some(key)) = (&tls.client_certificate, &tls.private_key) else {
            return Err("tls mode MUTUAL needs clientCertificate and privateKey; the cluster gets no endpoints rather than going out in plaintext".into());
        };
        common.tls_certificates.push(TlsCertificate {
            certificate_chain: Some(file_source(cert)),
            private_key: Some(file_source(key)),
            ..Default::default()
        });
    }
    if !tls.insecure_skip_verify.unwrap_or(false) {
        let ca = tls.ca_certificates.as_deref().unwrap_or(SYSTEM_CAS);
        common.validation_context_type = Some(ValidationContextType::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(file_source(ca)),
                match_typed_subject_alt_names: tls
                    .subject_alt_names
                    .iter()
                    .map(|name| SubjectAltNameMatcher {
                        san_type: SanType::Dns as i32,
                        matcher: Some(StringMatcher {
                            match_pattern: Some(MatchPattern::Exact(name.clone())),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        ));
    }
    // A wildcard host has no name to send: no SNI, as Envoy does then.
    let sni = match &tls.sni {
        Some(sni) => sni.clone(),
        None if !host.contains('*') => host.to_string(),
        None => String::new(),
    };
    // HTTP/2 ports ask for h2 by ALPN, as istiod writes it.
    if matches!(protocol, Protocol::Http2 | Protocol::Grpc) {
        common.alpn_protocols = vec!["h2".into()];
    }
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(common),
        sni,
        ..Default::default()
    };
    Ok(Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(ConfigType::TypedConfig(envoy_types::util::pack_any(ctx))),
    }))
}

/// `credentialName` on a gateway (Istio reads it there only, for the
/// egress gateway's TLS origination): the Secret in the gateway's
/// namespace, as SDS secrets `kubernetes://<name>` (MUTUAL's client
/// certificate) and `kubernetes://<name>-cacert` (the CAs the upstream is
/// checked against; without them, the system's), with the socket that
/// names them.
pub(crate) fn credential_socket(
    config: &[weft_config::Resource],
    namespace: &str,
    tls: &ClientTls,
    host: &str,
    protocol: Protocol,
) -> Result<
    (
        TransportSocket,
        Vec<envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret>,
    ),
    String,
> {
    use crate::credentials::{certificate, trusted_ca};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        common_tls_context::CombinedCertificateValidationContext, SdsSecretConfig,
    };
    let name = tls.credential_name.as_deref().unwrap_or_default();
    let mode = tls.mode.as_deref().unwrap_or("DISABLE");
    let sds = |n: &str| SdsSecretConfig {
        name: n.to_string(),
        sds_config: Some(crate::envoy::ads()),
    };
    let mut secrets = Vec::new();
    let mut common = CommonTlsContext::default();
    if mode == "MUTUAL" {
        let cert =
            certificate(config, namespace, name).map_err(|e| format!("tls.credentialName: {e}"))?;
        common
            .tls_certificate_sds_secret_configs
            .push(sds(&cert.name));
        secrets.push(cert);
    }
    let sans: Vec<SubjectAltNameMatcher> = tls
        .subject_alt_names
        .iter()
        .map(|n| SubjectAltNameMatcher {
            san_type: SanType::Dns as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(n.clone())),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    common.validation_context_type = match trusted_ca(config, namespace, name) {
        Ok(ca) => {
            let v = ValidationContextType::CombinedValidationContext(
                CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext {
                        match_typed_subject_alt_names: sans,
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(sds(&ca.name)),
                    ..Default::default()
                },
            );
            secrets.push(ca);
            Some(v)
        }
        Err(_) if !tls.insecure_skip_verify.unwrap_or(false) => Some(
            ValidationContextType::ValidationContext(CertificateValidationContext {
                trusted_ca: Some(file_source(SYSTEM_CAS)),
                match_typed_subject_alt_names: sans,
                ..Default::default()
            }),
        ),
        Err(_) => None,
    };
    if matches!(protocol, Protocol::Http2 | Protocol::Grpc) {
        common.alpn_protocols = vec!["h2".into()];
    }
    let sni = match &tls.sni {
        Some(sni) => sni.clone(),
        None if !host.contains('*') => host.to_string(),
        None => String::new(),
    };
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(common),
        sni,
        ..Default::default()
    };
    let socket = TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(ConfigType::TypedConfig(envoy_types::util::pack_any(ctx))),
    };
    Ok((socket, secrets))
}
