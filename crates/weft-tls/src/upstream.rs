//! Server certificates, checked by a proxy that originates TLS to an
//! upstream (DestinationRule `tls`), as Envoy checks them:
//! - trusted CAs given: the chain must lead to one of them, and the
//!   certificate must be valid for one of the expected names (the
//!   DestinationRule's `subjectAltNames`, else the SNI sent);
//! - no CAs (`insecureSkipVerify`, or none configured): any certificate is
//!   taken, as Envoy does without a validation context; the handshake's
//!   signature is still checked with the certificate's key.

use std::sync::Arc;

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{Error, RootCertStore};

/// A verifier of upstream certificates: by `roots` when given (valid for
/// one of `names`, or for the SNI when `names` is empty), else none.
pub fn server_verifier(
    roots: Option<Arc<RootCertStore>>,
    names: Vec<String>,
) -> Result<Arc<dyn ServerCertVerifier>, String> {
    let provider = Arc::new(crate::provider());
    let webpki = match roots {
        Some(roots) => Some(
            WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let names = names
        .into_iter()
        .map(|n| ServerName::try_from(n.clone()).map_err(|_| format!("{n:?} is not a DNS name")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Upstream {
        webpki,
        names,
        algorithms: provider.signature_verification_algorithms,
    }))
}

#[derive(Debug)]
struct Upstream {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    names: Vec<ServerName<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Upstream {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        if self.names.is_empty() {
            return webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        }
        let mut last = Error::General("no subject alt name to check".into());
        for name in &self.names {
            match webpki.verify_server_cert(end_entity, intermediates, name, ocsp, now) {
                Ok(ok) => return Ok(ok),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    crate::handshake_signatures!(algorithms);
}
