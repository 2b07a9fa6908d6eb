//! Gateway servers that terminate TLS (HTTPS with `tls.mode` SIMPLE,
//! MUTUAL or OPTIONAL_MUTUAL): a filter chain per server, matched by SNI
//! on the server's hosts, with a DownstreamTlsContext whose certificate
//! and CAs come over SDS, as istiod writes them for `credentialName`.

use envoy_types::pb::envoy::config::core::v3::{transport_socket, TransportSocket};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    tls_parameters::TlsProtocol,
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, TlsParameters,
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;
use weft_config::networking::traffic::ServerTls;
use weft_registry::Workload;

use crate::credentials;
use crate::envoy::{ads, hcm_rds};
use crate::gateway::BoundServer;
use crate::{Inputs, ProxyResources};

/// istiod's route table name for an HTTPS server:
/// `https.<port>.<port name>.<gateway>.<namespace>`.
pub(crate) fn route_name(b: &BoundServer) -> String {
    format!(
        "https.{}.{}.{}.{}",
        b.server.port.number,
        b.server.port.name,
        b.gateway.meta.name,
        b.gateway.namespace()
    )
}

/// The server's filter chain, with the secrets it names added to `out`;
/// an error says why the server cannot be served.
pub(crate) fn terminating_chain(
    inputs: &Inputs,
    proxy: &Workload,
    bound: &BoundServer,
    port: u16,
    out: &mut ProxyResources,
) -> Result<FilterChain, String> {
    let tls = bound
        .server
        .tls
        .as_ref()
        .ok_or("an HTTPS server needs tls settings")?;
    let mode = tls.mode.as_deref().unwrap_or("PASSTHROUGH");
    let mutual = match mode {
        "SIMPLE" => None,
        "MUTUAL" => Some(true),
        "OPTIONAL_MUTUAL" => Some(false),
        other => return Err(format!("tls.mode {other} is not supported yet")),
    };
    let name = credential_name(tls)?;
    refuse_unserved_checks(tls)?;
    let ns = proxy.namespace.as_str();
    let mut secrets = vec![credentials::certificate(inputs.config, ns, name)
        .map_err(|e| format!("tls.credentialName {name:?}: {e}"))?];
    let validation = match (mutual, &tls.ca_cert_credential_name) {
        (None, _) => None,
        (Some(_), Some(ca_name)) => Some(ca_name.as_str()),
        (Some(_), None) => Some(name),
    };
    if let Some(ca_name) = validation {
        let ca = credentials::trusted_ca(inputs.config, ns, ca_name)
            .map_err(|e| format!("tls.credentialName {name:?}: {e}"))?;
        secrets.push(ca);
    }
    let context = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_params: Some(tls_params(tls)?),
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            tls_certificate_sds_secret_configs: vec![sds(&secrets[0].name)],
            validation_context_type: secrets.get(1).map(|ca| {
                ValidationContextType::CombinedValidationContext(
                    CombinedCertificateValidationContext {
                        default_validation_context: Some(Default::default()),
                        validation_context_sds_secret_config: Some(sds(&ca.name)),
                        ..Default::default()
                    },
                )
            }),
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue {
            value: mutual == Some(true),
        }),
        ..Default::default()
    };
    for s in secrets {
        if !out.secrets.iter().any(|have| have.name == s.name) {
            out.secrets.push(s);
        }
    }
    Ok(FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            server_names: server_names(&bound.server.hosts),
            ..Default::default()
        }),
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(context))),
        }),
        filters: vec![hcm_rds(
            &format!("outbound_0.0.0.0_{port}"),
            &route_name(bound),
        )],
        ..Default::default()
    })
}

fn credential_name(tls: &ServerTls) -> Result<&str, String> {
    if tls.server_certificate.is_some() || tls.private_key.is_some() {
        return Err("certificates from files (serverCertificate, privateKey) are not supported yet; use credentialName".into());
    }
    tls.credential_name
        .as_deref()
        .or(tls.credential_names.first().map(String::as_str))
        .ok_or_else(|| "tls.credentialName is required".to_string())
}

/// Checks on the client's certificate that are not built: serving without
/// them would let in clients the user meant to keep out.
fn refuse_unserved_checks(tls: &ServerTls) -> Result<(), String> {
    let set = [
        ("subjectAltNames", !tls.subject_alt_names.is_empty()),
        (
            "verifyCertificateSpki",
            !tls.verify_certificate_spki.is_empty(),
        ),
        (
            "verifyCertificateHash",
            !tls.verify_certificate_hash.is_empty(),
        ),
        ("caCrl", tls.ca_crl.is_some()),
    ];
    match set.iter().find(|(_, on)| *on) {
        Some((field, _)) => Err(format!("tls.{field} is not supported yet")),
        None => Ok(()),
    }
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.into(),
        sds_config: Some(ads()),
    }
}

/// Istio's defaults for gateways: TLS 1.2 at least, the maximum automatic.
fn tls_params(tls: &ServerTls) -> Result<TlsParameters, String> {
    let version = |v: Option<&str>, default: TlsProtocol| -> Result<i32, String> {
        Ok(match v {
            None | Some("TLS_AUTO") => default,
            Some("TLSV1_0") => TlsProtocol::TlSv10,
            Some("TLSV1_1") => TlsProtocol::TlSv11,
            Some("TLSV1_2") => TlsProtocol::TlSv12,
            Some("TLSV1_3") => TlsProtocol::TlSv13,
            Some(other) => return Err(format!("unknown TLS version {other}")),
        } as i32)
    };
    Ok(TlsParameters {
        tls_minimum_protocol_version: version(
            tls.min_protocol_version.as_deref(),
            TlsProtocol::TlSv12,
        )?,
        tls_maximum_protocol_version: version(
            tls.max_protocol_version.as_deref(),
            TlsProtocol::TlsAuto,
        )?,
        cipher_suites: tls.cipher_suites.clone(),
        ..Default::default()
    })
}

/// The SNI names of a server's hosts (`ns/` dropped); `*` matches any
/// name, so a server with it matches on none.
fn server_names(hosts: &[String]) -> Vec<String> {
    let names: Vec<String> = hosts
        .iter()
        .map(|h| h.split_once('/').map_or(h.as_str(), |(_, h)| h).to_string())
        .collect();
    if names.iter().any(|n| n == "*") {
        Vec::new()
    } else {
        names
    }
}
