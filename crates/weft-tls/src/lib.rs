//! TLS material as Istio users bring it: PEM certificates and keys made
//! with the openssl commands of Istio's tasks. Those commands make X.509
//! version 1 certificates (`openssl x509 -req` without extensions), which
//! Envoy accepts and webpki does not; this crate reads them itself where
//! it must (the key-to-certificate check, client certificates signed
//! straight by a trusted CA) and leaves everything else to rustls.
//!
//! *Invariant:* one crypto provider (ring), no I/O.

mod upstream;
mod verifier;
pub mod x509;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

pub use upstream::server_verifier;
pub use verifier::client_verifier;

/// The handshake-signature half of a rustls certificate verifier (client
/// or server side), checked with the provider's algorithms held in the
/// verifier's field `$algorithms` (`WebPkiSupportedAlgorithms`). Every
/// verifier of Weft that checks certificates its own way checks
/// handshake signatures the same way; this writes that part once.
#[macro_export]
macro_rules! handshake_signatures {
    ($algorithms:ident) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.$algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.$algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.$algorithms.supported_schemes()
        }
    };
}

/// The crypto provider every TLS context of Weft uses.
pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Every certificate in a PEM text; none is an error.
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

/// A certificate chain (leaf first) and the private key of its leaf, ready
/// to serve. A key that belongs to another certificate is an error.
pub fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let chain = certificates(chain_pem).map_err(|e| format!("certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("private key: {e}"))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("private key: {e}"))?;
    let leaf = x509::Certificate::parse(&chain[0]).map_err(|e| format!("certificate: {e}"))?;
    if let Some(spki) = signing.public_key() {
        if spki.as_ref() != leaf.spki_der {
            return Err("the private key does not belong to the certificate".into());
        }
    }
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}
