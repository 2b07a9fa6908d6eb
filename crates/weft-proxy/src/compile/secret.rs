//! SDS secrets: a certificate chain with its key, or the CA certificates a
//! peer's chain is checked against. Each is parsed and checked once, when
//! it arrives; a secret whose key does not belong to its certificate is
//! rejected there (the NACK names it), so a handshake never finds one.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
use rustls::sign::CertifiedKey;
use serde::Serialize;

/// Where a context's SDS names are looked up: secrets from xDS, and the
/// workload's own (`default`, `ROOTCA`).
pub(crate) struct Secrets<'a> {
    pub sds: &'a std::collections::HashMap<String, Arc<SecretCfg>>,
    pub workload: &'a Arc<crate::identity::Identity>,
    /// What the xDS secrets hold, hashed: contexts that name them are
    /// built again only when it changes.
    pub fingerprint: u64,
}

/// A hash of every secret's name and content.
pub(crate) fn fingerprint(sds: &std::collections::HashMap<String, Arc<SecretCfg>>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut names: Vec<&String> = sds.keys().collect();
    names.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for name in names {
        name.hash(&mut h);
        match &*sds[name] {
            SecretCfg::Certificate { key, .. } => {
                key.cert.iter().for_each(|c| c.as_ref().hash(&mut h))
            }
            SecretCfg::Trust { roots, .. } => roots.roots.iter().for_each(|r| {
                r.subject.as_ref().hash(&mut h);
                r.subject_public_key_info.as_ref().hash(&mut h);
            }),
        }
    }
    h.finish()
}

#[derive(Debug, Serialize)]
pub enum SecretCfg {
    Certificate {
        /// Certificates in the chain, leaf first (for the config dump).
        certificates: usize,
        #[serde(skip)]
        key: Arc<CertifiedKey>,
    },
    Trust {
        /// Number of trusted CA certificates.
        authorities: usize,
        #[serde(skip)]
        roots: Arc<rustls::RootCertStore>,
    },
}

pub(crate) fn compile_secret(s: &Secret) -> Result<SecretCfg, String> {
    match &s.r#type {
        Some(secret::Type::TlsCertificate(c)) => {
            if c.private_key_provider.is_some() || c.password.is_some() {
                return Err("private key providers and key passwords are not supported".into());
            }
            let chain = bytes(&c.certificate_chain, "certificate_chain")?;
            let key = bytes(&c.private_key, "private_key")?;
            let certified = weft_tls::certified_key(&chain, &key)?;
            Ok(SecretCfg::Certificate {
                certificates: certified.cert.len(),
                key: certified,
            })
        }
        Some(secret::Type::ValidationContext(v)) => {
            let roots = roots(&bytes(&v.trusted_ca, "trusted_ca")?)
                .map_err(|e| format!("trusted_ca: {e}"))?;
            Ok(SecretCfg::Trust {
                authorities: roots.len(),
                roots: Arc::new(roots),
            })
        }
        _ => Err("only tls_certificate and validation_context secrets are supported".into()),
    }
}

/// The bytes of a data source: inline, or a file read now.
pub(crate) fn bytes(source: &Option<DataSource>, field: &str) -> Result<Vec<u8>, String> {
    match source.as_ref().and_then(|s| s.specifier.as_ref()) {
        Some(Specifier::InlineBytes(b)) => Ok(b.clone()),
        Some(Specifier::InlineString(s)) => Ok(s.as_bytes().to_vec()),
        Some(Specifier::Filename(f)) => {
            std::fs::read(f).map_err(|e| format!("{field}: cannot read {f}: {e}"))
        }
        _ => Err(format!("{field} is missing")),
    }
}

/// The CAs of a PEM bundle. A system bundle can hold certificates webpki
/// cannot take as anchors: those are skipped (and logged), so one odd
/// entry does not void the rest; a bundle with no usable CA is an error.
pub(crate) fn roots(pem: &[u8]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for (i, ca) in weft_tls::certificates(pem)?.into_iter().enumerate() {
        if let Err(e) = roots.add(ca) {
            tracing::debug!(index = i, error = %e, "CA certificate skipped");
        }
    }
    if roots.is_empty() {
        return Err("no usable CA certificate".into());
    }
    Ok(roots)
}
