//! A filter chain's `DownstreamTlsContext` → a rustls server config. The
//! context names its certificate and trusted CAs by SDS secret; the config
//! is built whenever the chain or a secret changes, so a replaced
//! certificate serves the next handshake while open connections go on.

use std::sync::Arc;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, tls_parameters::TlsProtocol, CommonTlsContext,
    DownstreamTlsContext, SdsSecretConfig,
};
use rustls::crypto::CryptoProvider;
use rustls::{ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};
use serde::Serialize;

use super::secret::SecretCfg;
use crate::identity::ROOTCA;

/// What a chain's TLS context asks for, with the server config it makes.
#[derive(Debug, Serialize)]
pub struct DownstreamTls {
    /// SDS secret with the certificate and key.
    pub certificate: String,
    /// SDS secret with the CAs client certificates are checked against.
    pub validation: Option<String>,
    pub require_client_certificate: bool,
    pub alpn: Vec<String>,
    pub versions: (&'static str, &'static str),
    pub cipher_suites: Vec<String>,
    /// Why no handshake can be done (a secret that has not arrived).
    pub problem: Option<String>,
    #[serde(skip)]
    pub server: Option<Arc<ServerConfig>>,
    /// The same with no ALPN, for clients that offer none of `alpn`.
    #[serde(skip)]
    no_alpn: Option<Arc<ServerConfig>>,
}

impl DownstreamTls {
    /// The server config for a ClientHello offering `offered` (ALPN).
    /// A client whose protocols are none of the chain's is served with
    /// no protocol selected, as Envoy serves it (BoringSSL's NOACK),
    /// where rustls alone would refuse the handshake: a sidecar calling
    /// a gateway's ISTIO_MUTUAL server offers only Istio's own ALPN.
    pub fn server_for(&self, offered: &[String]) -> Option<Arc<ServerConfig>> {
        let overlap = offered.is_empty() || offered.iter().any(|p| self.alpn.contains(p));
        if overlap {
            self.server.clone()
        } else {
            self.no_alpn.clone()
        }
    }
}

pub(crate) fn compile_downstream_tls(
    ctx: &DownstreamTlsContext,
    secrets: &super::Secrets,
) -> Result<DownstreamTls, String> {
    let common = ctx
        .common_tls_context
        .as_ref()
        .ok_or("common_tls_context is missing")?;
    let certificate = certificate_secret(common)?;
    let validation = validation_secret(common)?;
    let require_client_certificate = ctx.require_client_certificate.is_some_and(|b| b.value);
    if require_client_certificate && validation.is_none() {
        return Err("require_client_certificate needs a validation context".into());
    }
    let params = common.tls_params.clone().unwrap_or_default();
    if !params.ecdh_curves.is_empty() || !params.signature_algorithms.is_empty() {
        return Err("tls_params ecdh_curves and signature_algorithms are not supported".into());
    }
    let mut tls = DownstreamTls {
        certificate,
        validation,
        require_client_certificate,
        alpn: common.alpn_protocols.clone(),
        versions: versions(
            params.tls_minimum_protocol_version,
            params.tls_maximum_protocol_version,
        )?,
        cipher_suites: params.cipher_suites.clone(),
        problem: None,
        server: None,
        no_alpn: None,
    };
    // Built now so that a bad list is a NACK, not a handshake failure.
    let provider = provider(&tls.cipher_suites)?;
    match server_config(&tls, provider, secrets) {
        Ok(server) => {
            let mut plain = server.clone();
            plain.alpn_protocols.clear();
            tls.no_alpn = Some(Arc::new(plain));
            tls.server = Some(Arc::new(server));
        }
        Err(problem) => tls.problem = Some(problem),
    }
    Ok(tls)
}

fn sds_name(c: &SdsSecretConfig) -> Result<String, String> {
    if c.name.is_empty() {
        return Err("an SDS secret config needs a name".into());
    }
    Ok(c.name.clone())
}

fn certificate_secret(common: &CommonTlsContext) -> Result<String, String> {
    if !common.tls_certificates.is_empty() {
        return Err("inline tls_certificates are not supported; use SDS".into());
    }
    match common.tls_certificate_sds_secret_configs.as_slice() {
        [one] => sds_name(one),
        [] => Err("a downstream TLS context needs a certificate (SDS)".into()),
        _ => Err("several certificates per context are not supported".into()),
    }
}

fn validation_secret(common: &CommonTlsContext) -> Result<Option<String>, String> {
    match &common.validation_context_type {
        None => Ok(None),
        Some(ValidationContextType::ValidationContextSdsSecretConfig(c)) => sds_name(c).map(Some),
        Some(ValidationContextType::CombinedValidationContext(c)) => {
            let default = c.default_validation_context.clone().unwrap_or_default();
            if default != Default::default() {
                return Err(
                    "a default validation context (subject alt names, hashes) is not supported"
                        .into(),
                );
            }
            let sds = c
                .validation_context_sds_secret_config
                .as_ref()
                .ok_or("combined_validation_context needs an SDS secret config")?;
            sds_name(sds).map(Some)
        }
        Some(_) => Err("validation contexts are supported over SDS only".into()),
    }
}

/// Envoy's protocol bounds as rustls can honour them: TLS 1.2 and 1.3.
fn versions(min: i32, max: i32) -> Result<(&'static str, &'static str), String> {
    let name = |v: i32, auto: &'static str| match TlsProtocol::try_from(v) {
        Ok(TlsProtocol::TlsAuto) => Ok(auto),
        // rustls has no TLS 1.0 or 1.1: the floor is 1.2 whatever is asked.
        Ok(TlsProtocol::TlSv10 | TlsProtocol::TlSv11 | TlsProtocol::TlSv12) => Ok("TLSv1_2"),
        Ok(TlsProtocol::TlSv13) => Ok("TLSv1_3"),
        Err(_) => Err(format!("unknown TLS protocol version {v}")),
    };
    let (lo, hi) = (name(min, "TLSv1_2")?, name(max, "TLSv1_3")?);
    if matches!(
        TlsProtocol::try_from(max),
        Ok(TlsProtocol::TlSv10 | TlsProtocol::TlSv11)
    ) {
        return Err(
            "a maximum below TLS 1.2 is not supported (rustls speaks TLS 1.2 and 1.3)".into(),
        );
    }
    if lo > hi {
        return Err(format!("minimum version {lo} is above maximum {hi}"));
    }
    Ok((lo, hi))
}

fn protocol_versions(v: (&str, &str)) -> Vec<&'static SupportedProtocolVersion> {
    let mut out = Vec::new();
    if v.0 == "TLSv1_2" {
        out.push(&rustls::version::TLS12);
    }
    if v.1 == "TLSv1_3" {
        out.push(&rustls::version::TLS13);
    }
    out
}

/// The ring provider, its TLS 1.2 suites cut to `names` (OpenSSL names, as
/// Envoy takes them, `[a|b]` groups included). TLS 1.3 suites are not
/// configurable, as in Envoy.
fn provider(names: &[String]) -> Result<Arc<CryptoProvider>, String> {
    let mut p = weft_tls::provider();
    if names.is_empty() {
        return Ok(Arc::new(p));
    }
    let wanted: Vec<&str> = names
        .iter()
        .flat_map(|n| n.trim_matches(|c| c == '[' || c == ']').split('|'))
        .collect();
    let known = |s: &SupportedCipherSuite| match s {
        SupportedCipherSuite::Tls13(_) => true,
        SupportedCipherSuite::Tls12(_) => wanted.contains(&openssl_name(s)),
    };
    p.cipher_suites.retain(known);
    if !p
        .cipher_suites
        .iter()
        .any(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
    {
        return Err(format!(
            "none of the cipher suites {names:?} is supported (ECDHE with AES-GCM or ChaCha20-Poly1305 are)"
        ));
    }
    Ok(Arc::new(p))
}

fn openssl_name(s: &SupportedCipherSuite) -> &'static str {
    use rustls::CipherSuite as C;
    match s.suite() {
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => "",
    }
}

fn server_config(
    tls: &DownstreamTls,
    provider: Arc<CryptoProvider>,
    secrets: &super::Secrets,
) -> Result<ServerConfig, String> {
    use crate::identity::{tls as mesh, DEFAULT};
    let key: Arc<dyn rustls::server::ResolvesServerCert> =
        match secrets.sds.get(&tls.certificate).map(|s| &**s) {
            _ if tls.certificate == DEFAULT => {
                Arc::new(mesh::WorkloadKey(secrets.workload.clone()))
            }
            Some(SecretCfg::Certificate { key, .. }) => Arc::new(Fixed(key.clone())),
            Some(_) => return Err(format!("secret {:?} holds no certificate", tls.certificate)),
            None => return Err(format!("secret {:?} has not arrived", tls.certificate)),
        };
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&protocol_versions(tls.versions))
        .map_err(|e| e.to_string())?;
    let builder = match &tls.validation {
        None => builder.with_no_client_auth(),
        Some(name) if name == ROOTCA => {
            if !tls.require_client_certificate {
                return Err(
                    "ROOTCA validation needs require_client_certificate (mesh mTLS)".into(),
                );
            }
            builder.with_client_cert_verifier(Arc::new(mesh::MeshClients::new(
                secrets.workload.clone(),
            )))
        }
        Some(name) => {
            let roots = match secrets.sds.get(name).map(|s| &**s) {
                Some(SecretCfg::Trust { roots, .. }) => roots.clone(),
                Some(_) => return Err(format!("secret {name:?} holds no CA certificates")),
                None => return Err(format!("secret {name:?} has not arrived")),
            };
            let verifier = weft_tls::client_verifier(roots, !tls.require_client_certificate)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(key);
    config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    if tls.validation.as_deref() == Some(ROOTCA) {
        // A resumed session skips the client certificate's check: mesh
        // sessions are kept only as long as a full handshake would still
        // pass (`identity::resume`).
        config.session_storage = Arc::new(crate::identity::resume::ServerSessions::new(
            secrets.workload.clone(),
        ));
    }
    Ok(config)
}

/// The chain's one certificate, whatever the client asks for (the chain
/// was already chosen by SNI).
#[derive(Debug)]
struct Fixed(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}
