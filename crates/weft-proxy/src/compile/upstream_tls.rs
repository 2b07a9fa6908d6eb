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
    /// None: no SNI is sent (the peer's address names it for the checks).
    pub sni: Option<ServerName<'static>>,
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

/// Contexts in use, by their encoded transport socket: every update
/// recompiles every cluster, and a context's files (CAs, client
/// certificate) are read once, when it first arrives, as Envoy reads an
/// inline context's files — not again on each update, where a file that
/// went away would refuse config that never changed.
static IN_USE: std::sync::Mutex<Vec<(Vec<u8>, std::sync::Weak<UpstreamTls>)>> =
    std::sync::Mutex::new(Vec::new());

/// The cluster's upstream TLS, if its transport socket asks for it.
pub(crate) fn compile_upstream_tls(c: &Cluster) -> Result<Option<Arc<UpstreamTls>>, String> {
    let Some(socket) = &c.transport_socket else {
        return Ok(None);
    };
    let key = prost::Message::encode_to_vec(socket);
    let mut in_use = IN_USE.lock().expect("upstream TLS cache");
    in_use.retain(|(_, tls)| tls.strong_count() > 0);
    if let Some(tls) = in_use
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, t)| t.upgrade())
    {
        return Ok(Some(tls));
    }
    let tls = Arc::new(compile_socket(socket)?);
    in_use.push((key, Arc::downgrade(&tls)));
    Ok(Some(tls))
}

fn compile_socket(
    socket: &envoy_types::pb::envoy::config::core::v3::TransportSocket,
) -> Result<UpstreamTls, String> {
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
    let sni = match ctx.sni.as_str() {
        "" => None,
        name => Some(
            ServerName::try_from(name.to_string())
                .map_err(|_| format!("sni {name:?} is not a DNS name or address"))?,
        ),
    };
    Ok(UpstreamTls {
        sni,
        config: Arc::new(config),
        fingerprint: seen.finish(),
    })
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
    if !ctx.verify_certificate_spki.is_empty() || !ctx.verify_certificate_hash.is_empty() {
        return Err("verify_certificate_spki/hash are not supported yet".into());
    }
    #[allow(deprecated)]
    if !ctx.match_subject_alt_names.is_empty() {
        return Err(
            "match_subject_alt_names is not supported (use match_typed_subject_alt_names)".into(),
        );
    }
    let mut names = Vec::new();
    for m in &ctx.match_typed_subject_alt_names {
        match m.matcher.as_ref().and_then(|m| m.match_pattern.as_ref()) {
            Some(MatchPattern::Exact(name)) => names.push(name.clone()),
            _ => return Err("subject alt names are matched exactly only".into()),
        }
    }
    if ctx.trusted_ca.is_none() {
        // Envoy refuses names to check without CAs to check them by.
        if !names.is_empty() {
            return Err("subject alt names to match need a trusted_ca".into());
        }
        return Ok((None, Vec::new()));
    }
    let pem = bytes(&ctx.trusted_ca, "trusted_ca")?;
    pem.hash(seen);
    let roots = super::secret::roots(&pem).map_err(|e| format!("trusted_ca: {e}"))?;
    Ok((Some(Arc::new(roots)), names))
}
