//! A cluster's `UpstreamTlsContext` (DestinationRule `tls` SIMPLE or
//! MUTUAL, as istiod writes it) → a rustls client config: the SNI to send,
//! the CAs and names the upstream's certificate is checked against, and a
//! client certificate for MUTUAL. Certificates come inline or from files
//! (Istio's `caCertificates`, `clientCertificate`, `privateKey` are paths).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::TransportSocket;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, CommonTlsContext, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use super::secret::bytes;
use crate::identity::tls::{MeshServers, WorkloadKey};
use crate::identity::{DEFAULT, ROOTCA};

/// How to speak TLS to a cluster's hosts.
#[derive(Debug)]
pub struct UpstreamTls {
    /// None: no SNI is sent (the peer's address names it for the checks).
    pub sni: Option<ServerName<'static>>,
    pub config: Arc<ClientConfig>,
    /// Mesh mTLS only: the configs for HTTP/1.1 and HTTP/2 connections,
    /// whose ALPN (`istio-http/1.1`, `istio-h2`) tells the server's
    /// sidecar what the stream carries, as Istio's ALPN filter does; TCP
    /// connections offer the context's own (`istio-peer-exchange`, `istio`).
    http: Option<[Arc<ClientConfig>; 2]>,
    /// Why no connection can be made yet (an SDS secret that has not
    /// arrived): each connect fails with it until the secret comes.
    pub missing: Option<String>,
    /// Tells configs apart without comparing them (connection pools are
    /// keyed by it): a hash of the context and of the files it read.
    fingerprint: u64,
}

impl UpstreamTls {
    /// Mesh mTLS (Istio's `ISTIO_MUTUAL`, the workload certificate).
    pub(crate) fn is_mesh(&self) -> bool {
        self.http.is_some()
    }

    /// The client config for a connection: `http` is None for TCP, else
    /// whether it speaks HTTP/2.
    pub(crate) fn config_for(&self, http: Option<bool>) -> Arc<ClientConfig> {
        match (&self.http, http) {
            (Some([h1, h2]), Some(is_h2)) => if is_h2 { h2 } else { h1 }.clone(),
            _ => self.config.clone(),
        }
    }
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
/// Contexts naming the workload's certificate are kept per identity (one
/// process can run several proxies in tests).
static IN_USE: std::sync::Mutex<InUse> = std::sync::Mutex::new(Vec::new());

type InUse = Vec<((Vec<u8>, usize, u64), std::sync::Weak<UpstreamTls>)>;

/// The upstream TLS a transport socket asks for (None: plaintext, no
/// socket or `raw_buffer`).
pub(crate) fn compile_upstream_tls(
    socket: Option<&TransportSocket>,
    secrets: &super::Secrets,
) -> Result<Option<Arc<UpstreamTls>>, String> {
    let identity = secrets.workload;
    let Some(socket) = socket else {
        return Ok(None);
    };
    if socket.name == "envoy.transport_sockets.raw_buffer" {
        return Ok(None);
    }
    let key = (
        prost::Message::encode_to_vec(socket),
        Arc::as_ptr(identity) as usize,
        secrets.fingerprint,
    );
    let mut in_use = IN_USE.lock().expect("upstream TLS cache");
    in_use.retain(|(_, tls)| tls.strong_count() > 0);
    if let Some(tls) = in_use
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, t)| t.upgrade())
    {
        return Ok(Some(tls));
    }
    let tls = Arc::new(compile_socket(socket, secrets)?);
    in_use.push((key, Arc::downgrade(&tls)));
    Ok(Some(tls))
}

fn compile_socket(
    socket: &TransportSocket,
    secrets: &super::Secrets,
) -> Result<UpstreamTls, String> {
    let identity = secrets.workload;
    let (ctx, any) = super::transport_config::<UpstreamTlsContext>(socket)?;
    let mut seen = std::collections::hash_map::DefaultHasher::new();
    any.value.hash(&mut seen);
    let common = ctx.common_tls_context.clone().unwrap_or_default();
    let named = by_sds(&common, secrets)?;
    let mesh = match &named {
        Sds::Mesh(sans) => Some(sans.clone()),
        _ => None,
    };
    let verifier = match &named {
        Sds::Mesh(sans) => Arc::new(MeshServers::new(identity.clone(), sans.clone())),
        Sds::Secrets {
            roots: Some(roots),
            sans,
            ..
        } => weft_tls::server_verifier(Some(roots.clone()), sans.clone())?,
        // Nothing is sent while a secret is missing (`missing`).
        Sds::Secrets {
            missing: Some(_), ..
        } => weft_tls::server_verifier(None, Vec::new())?,
        _ => {
            let (roots, names) = validation(&common.validation_context_type, &mut seen)?;
            weft_tls::server_verifier(roots, names)?
        }
    };
    let builder = ClientConfig::builder_with_provider(Arc::new(weft_tls::provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match common.tls_certificates.first() {
        None if mesh.is_some() => {
            builder.with_client_cert_resolver(Arc::new(WorkloadKey(identity.clone())))
        }
        None => match &named {
            Sds::Secrets {
                cert: Some(key), ..
            } => builder.with_client_cert_resolver(Arc::new(FixedClient(key.clone()))),
            _ => builder.with_no_client_auth(),
        },
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
    if mesh.is_some() {
        // Mesh peers resume sessions only while a full handshake would
        // still pass (`identity::resume`); other TLS keeps rustls's cache.
        config.resumption = rustls::client::Resumption::store(Arc::new(
            crate::identity::resume::ClientSessions::new(identity.clone()),
        ));
    }
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
    let http = mesh.map(|_| {
        ["istio-http/1.1", "istio-h2"].map(|alpn| {
            let mut c = config.clone();
            c.alpn_protocols = vec![alpn.as_bytes().to_vec()];
            Arc::new(c)
        })
    });
    secrets.fingerprint.hash(&mut seen);
    Ok(UpstreamTls {
        sni,
        config: Arc::new(config),
        http,
        missing: match named {
            Sds::Secrets { missing, .. } => missing,
            _ => None,
        },
        fingerprint: seen.finish(),
    })
}

/// What a context names by SDS.
enum Sds {
    /// Nothing: certificates inline or from files.
    None,
    /// The workload's own (`default`, `ROOTCA`): mesh mTLS, the peer one
    /// of these SPIFFE ids (none: any the roots vouch for).
    Mesh(Vec<String>),
    /// Secrets from xDS (a gateway's `credentialName`): its client
    /// certificate and the CAs the upstream is checked against, with the
    /// names it must have; what has not arrived yet.
    Secrets {
        cert: Option<Arc<rustls::sign::CertifiedKey>>,
        roots: Option<Arc<rustls::RootCertStore>>,
        sans: Vec<String>,
        missing: Option<String>,
    },
}

fn by_sds(common: &CommonTlsContext, secrets: &super::Secrets) -> Result<Sds, String> {
    use super::secret::SecretCfg;
    let names: Vec<&str> = common
        .tls_certificate_sds_secret_configs
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let validation = match &common.validation_context_type {
        Some(ValidationContextType::CombinedValidationContext(c)) => Some(c),
        _ => None,
    };
    let root = validation
        .and_then(|c| c.validation_context_sds_secret_config.as_ref())
        .map(|c| c.name.as_str());
    let sans = exact_sans(validation.and_then(|c| c.default_validation_context.as_ref()))?;
    match (names.as_slice(), root) {
        ([], None) => return Ok(Sds::None),
        ([DEFAULT], Some(ROOTCA)) => return Ok(Sds::Mesh(sans)),
        (names, root) if names.len() > 1 || names.contains(&DEFAULT) || root == Some(ROOTCA) => {
            return Err(format!(
                "upstream SDS secrets {names:?} / {root:?}: the workload's own go together (default, ROOTCA); others one certificate and one CA secret"
            ))
        }
        _ => {}
    }
    let mut missing = None;
    let cert = match names.first() {
        None => None,
        Some(name) => match secrets.sds.get(*name).map(|s| &**s) {
            Some(SecretCfg::Certificate { key, .. }) => Some(key.clone()),
            Some(_) => return Err(format!("secret {name:?} holds no certificate")),
            None => {
                missing = Some(format!("secret {name:?} has not arrived"));
                None
            }
        },
    };
    let roots = match root {
        None => None,
        Some(name) => match secrets.sds.get(name).map(|s| &**s) {
            Some(SecretCfg::Trust { roots, .. }) => Some(roots.clone()),
            Some(_) => return Err(format!("secret {name:?} holds no CA certificates")),
            None => {
                missing = Some(format!("secret {name:?} has not arrived"));
                None
            }
        },
    };
    Ok(Sds::Secrets {
        cert,
        roots,
        sans,
        missing,
    })
}

fn exact_sans(
    ctx: Option<&envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::CertificateValidationContext>,
) -> Result<Vec<String>, String> {
    let mut sans = Vec::new();
    for m in ctx
        .map(|d| d.match_typed_subject_alt_names.as_slice())
        .unwrap_or_default()
    {
        match m.matcher.as_ref().and_then(|m| m.match_pattern.as_ref()) {
            Some(MatchPattern::Exact(name)) => sans.push(name.clone()),
            _ => return Err("subject alt names are matched exactly only".into()),
        }
    }
    Ok(sans)
}

/// A client certificate from an xDS secret.
#[derive(Debug)]
struct FixedClient(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedClient {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
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
