//! Client certificates for MUTUAL servers. Version 3 certificates go to
//! rustls's webpki verifier unchanged. A version 1 certificate (what
//! Istio's task makes with `openssl x509 -req`) is accepted when a trusted
//! CA signed it directly and it is within its validity, which is what
//! Envoy checks of it; its handshake signature is checked with its key.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme};

use crate::x509::Certificate;

/// A verifier for client certificates issued by `roots`; with `optional`,
/// clients without a certificate are let in too (OPTIONAL_MUTUAL).
pub fn client_verifier(
    roots: Arc<RootCertStore>,
    optional: bool,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let provider = Arc::new(crate::provider());
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
    if optional {
        builder = builder.allow_unauthenticated();
    }
    let webpki = builder.build().map_err(|e| e.to_string())?;
    Ok(Arc::new(Verifier {
        webpki,
        roots,
        algorithms: provider.signature_verification_algorithms,
    }))
}

#[derive(Debug)]
struct Verifier {
    webpki: Arc<dyn ClientCertVerifier>,
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

fn v1<'a>(cert: &'a CertificateDer<'_>) -> Option<Certificate<'a>> {
    Certificate::parse(cert).ok().filter(|c| c.version == 1)
}

fn bad(reason: &str) -> Error {
    Error::General(format!("client certificate: {reason}"))
}

impl Verifier {
    /// Checks `signature` over `message` with the key (`algorithm`, `key`)
    /// by any algorithm in `candidates` that fits the key and `signed_with`.
    fn verify(
        candidates: &[&'static dyn rustls::pki_types::SignatureVerificationAlgorithm],
        key: (&[u8], &[u8]),
        signed_with: Option<&[u8]>,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        candidates.iter().any(|alg| {
            alg.public_key_alg_id().as_ref() == key.0
                && signed_with.is_none_or(|s| alg.signature_alg_id().as_ref() == s)
                && alg.verify_signature(key.1, message, signature).is_ok()
        })
    }

    fn verify_v1(&self, cert: &Certificate, now: UnixTime) -> Result<ClientCertVerified, Error> {
        let secs = now.as_secs() as i64;
        if secs < cert.not_before || secs > cert.not_after {
            return Err(bad("expired or not yet valid"));
        }
        let signed = self.roots.roots.iter().any(|anchor| {
            if anchor.subject.as_ref() != cert.issuer {
                return false;
            }
            let Ok(key) = crate::x509::anchor_key(anchor.subject_public_key_info.as_ref()) else {
                return false;
            };
            Self::verify(
                self.algorithms.all,
                key,
                Some(cert.signature_algorithm),
                cert.tbs,
                cert.signature,
            )
        });
        if signed {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(bad("not signed by a trusted CA"))
        }
    }

    /// A handshake signature: by the certificate's key for v1, else as
    /// `webpki` checks it.
    fn signed(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
        webpki: impl FnOnce() -> Result<HandshakeSignatureValid, Error>,
    ) -> Result<HandshakeSignatureValid, Error> {
        match v1(cert) {
            Some(c) => self.handshake_signature(&c, message, dss),
            None => webpki(),
        }
    }

    fn handshake_signature(
        &self,
        cert: &Certificate,
        message: &[u8],
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let candidates = self
            .algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map(|(_, algs)| *algs)
            .ok_or_else(|| bad("unsupported signature scheme"))?;
        let key = (cert.key_algorithm, cert.public_key);
        if Self::verify(candidates, key, None, message, dss.signature()) {
            Ok(HandshakeSignatureValid::assertion())
        } else {
            Err(bad("bad handshake signature"))
        }
    }
}

impl ClientCertVerifier for Verifier {
    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        match v1(end_entity) {
            Some(cert) => self.verify_v1(&cert, now),
            None => self
                .webpki
                .verify_client_cert(end_entity, intermediates, now),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signed(message, cert, dss, || {
            self.webpki.verify_tls12_signature(message, cert, dss)
        })
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signed(message, cert, dss, || {
            self.webpki.verify_tls13_signature(message, cert, dss)
        })
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
