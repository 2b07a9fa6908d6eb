//! A cluster's `UpstreamTlsContext` (DestinationRule `tls` SIMPLE or
//! MUTUAL, as istiod writes it) → a rustls client config: the SNI to send,
//! the CAs and names the upstream's certificate is checked against, and a
//! client certificate for MUTUAL. Certificates come inline or from files
//! (Istio's `caCertificates`, `clientCertificate`, `privateKey` are paths).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use super::secret::bytes;

/// How to speak TLS to a cluster's hosts.
#[derive(Debug)]
pub struct UpstreamTls {
    pub sni: ServerName<'static>,
    pub config: Arc<ClientConfig>,
    /// Tells configs apart without comparing them (connection pools are
    /// keyed by it): a hash of the context and of the files it read.
    fingerprint: u64,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for UpstreamTls {}

impl Hash for UpstreamTls {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.fingerprint.hash(state);
    }
}

/// The cluster's upstream TLS, if its transport socket asks for it.
pub(crate) fn compile_upstream_tls(c: &Cluster) -> Result<Option<Arc<UpstreamTls>>, String> {
    let Some(socket) = &c.transport_socket else {
        return Ok(None);
    };
    let Some(ConfigType::TypedConfig(any)) = &socket.config_type else {
        return Err(format!(
            "transport_socket {:?}: typed_config is missing",
            socket.name
        ));
    };
    if !any.type_url.ends_with("UpstreamTlsContext") {
        return Err(format!(
            "transport_socket {:?} ({}): only UpstreamTlsContext is supported",
            socket.name, any.type_url
        ));
    }
    let ctx: UpstreamTlsContext = super::unpack(any)?;
    let mut seen = std::collections::hash_map::DefaultHasher::new();
    any.value.hash(&mut seen);
    let common = ctx.common_tls_context.clone().unwrap_or_default();
    if !common.tls_certificate_sds_secret_configs.is_empty() {
        return Err("upstream certificates by SDS are not supported yet".into());
    }
    let (roots, names) = validation(&common.validation_context_type, &mut seen)?;
    let verifier = weft_tls::server_verifier(roots, names)?;
    let builder = ClientConfig::builder_with_provider(Arc::new(weft_tls::provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match common.tls_certificates.first() {
        None => builder.with_no_client_auth(),
        Some(cert) => {
            let chain = bytes(&cert.certificate_chain, "certificate_chain")?;
            let key = bytes(&cert.private_key, "private_key")?;
            (&chain, &key).hash(&mut seen);
            // Checks that the key belongs to the certificate.
            weft_tls::certified_key(&chain, &key)?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key)
                .map_err(|e| format!("private key: {e}"))?;
            builder
                .with_client_auth_cert(weft_tls::certificates(&chain)?, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
    };
    config.alpn_protocols = common
        .alpn_protocols
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    let sni = ServerName::try_from(ctx.sni.clone())
        .map_err(|_| format!("sni {:?} is not a DNS name or address", ctx.sni))?;
    Ok(Some(Arc::new(UpstreamTls {
        sni,
        config: Arc::new(config),
        fingerprint: seen.finish(),
    })))
}

/// The trusted CAs (none: any certificate) and the names the upstream's
/// certificate must be valid for (none: the SNI).
fn validation(
    v: &Option<ValidationContextType>,
    seen: &mut impl Hasher,
) -> Result<(Option<Arc<rustls::RootCertStore>>, Vec<String>), String> {
    let ctx = match v {
        None => return Ok((None, Vec::new())),
        Some(ValidationContextType::ValidationContext(ctx)) => ctx,
        Some(_) => return Err("validation contexts by SDS are not supported yet".into()),
    };
    let mut names = Vec::new();
    for m in &ctx.match_typed_subject_alt_names {
        match m.matcher.as_ref().and_then(|m| m.match_pattern.as_ref()) {
            Some(MatchPattern::Exact(name)) => names.push(name.clone()),
            _ => return Err("subject alt names are matched exactly only".into()),
        }
    }
    if ctx.trusted_ca.is_none() {
        return Ok((None, names));
    }
    let pem = bytes(&ctx.trusted_ca, "trusted_ca")?;
    pem.hash(seen);
    let mut roots = rustls::RootCertStore::empty();
    for (i, ca) in weft_tls::certificates(&pem)
        .map_err(|e| format!("trusted_ca: {e}"))?
        .into_iter()
        .enumerate()
    {
        // A system bundle has certificates webpki cannot take; Envoy skips
        // none, but one bad entry must not void the rest.
        if let Err(e) = roots.add(ca) {
            tracing::debug!(index = i, error = %e, "trusted_ca entry skipped");
        }
    }
    if roots.is_empty() {
        return Err("trusted_ca: no usable CA certificate".into());
    }
    Ok((Some(Arc::new(roots)), names))
}
