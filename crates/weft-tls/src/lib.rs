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

/// The crypto provider every TLS context of Weft uses: ring's, its
/// suites in BoringSSL's order (Envoy's): AES-128-GCM with SHA-256 first.
/// rustls puts AES-256-GCM with SHA-384 first, which costs every mesh
/// handshake its key schedule in SHA-384 — no CPU has instructions for
/// it, where SHA-256 has them — and every record four more AES rounds.
pub fn provider() -> CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(suite_rank);
    p
}

/// TLS 1.3 before 1.2; within each, AES-128-GCM, AES-256-GCM, then
/// ChaCha20-Poly1305 (a stable sort keeps ECDSA before RSA).
fn suite_rank(suite: &rustls::SupportedCipherSuite) -> (bool, u8) {
    use rustls::CipherSuite as C;
    let tls12 = matches!(suite, rustls::SupportedCipherSuite::Tls12(_));
    let rank = match suite.suite() {
        C::TLS13_AES_128_GCM_SHA256
        | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        C::TLS13_AES_256_GCM_SHA384
        | C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    };
    (tls12, rank)
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

#[cfg(test)]
mod suite_order {
    use rustls::CipherSuite as C;

    #[test]
    fn aes_128_gcm_comes_first_in_each_version() {
        let order: Vec<C> = super::provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            order[..4],
            [
                C::TLS13_AES_128_GCM_SHA256,
                C::TLS13_AES_256_GCM_SHA384,
                C::TLS13_CHACHA20_POLY1305_SHA256,
                C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ]
        );
    }
}
