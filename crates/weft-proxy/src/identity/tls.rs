//! rustls pieces that read the workload's current certificate at each
//! handshake: its key for either side, client certificates checked
//! against its trust bundle, and mesh peers' server certificates checked
//! against the bundle and the SPIFFE ids the cluster expects.

use std::sync::Arc;

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DistinguishedName, Error, SignatureScheme};

use super::Identity;

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("spiffe_id", &self.spiffe_id())
            .finish()
    }
}

fn no_certificate() -> Error {
    Error::General("the workload has no certificate from the mesh CA yet".into())
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    weft_tls::provider().signature_verification_algorithms
}

/// The workload's key and chain, for the server and the client side.
#[derive(Debug)]
pub(crate) struct WorkloadKey(pub Arc<Identity>);

impl rustls::server::ResolvesServerCert for WorkloadKey {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|c| c.key.clone())
    }
}

impl rustls::client::ResolvesClientCert for WorkloadKey {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|c| c.key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Client certificates, checked against the current trust bundle; a
/// client must send one.
#[derive(Debug)]
pub(crate) struct MeshClients {
    pub identity: Arc<Identity>,
    pub algorithms: WebPkiSupportedAlgorithms,
}

impl MeshClients {
    pub fn new(identity: Arc<Identity>) -> MeshClients {
        MeshClients {
            identity,
            algorithms: algorithms(),
        }
    }
}

impl ClientCertVerifier for MeshClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let current = self.identity.current().ok_or_else(no_certificate)?;
        current
            .clients
            .verify_client_cert(end_entity, intermediates, now)
    }

    weft_tls::handshake_signatures!(algorithms);
}

/// A mesh peer's server certificate: chained to the current trust bundle,
/// and carrying one of `sans` as a URI SAN when any are given (Istio's
/// `match_typed_subject_alt_names` of the service's accounts). The SNI
/// (`outbound_.PORT_._.HOST`) names a route, not the peer, so it is not
/// checked against the certificate, as in Envoy.
#[derive(Debug)]
pub(crate) struct MeshServers {
    pub identity: Arc<Identity>,
    pub sans: Vec<String>,
    pub algorithms: WebPkiSupportedAlgorithms,
}

impl MeshServers {
    pub fn new(identity: Arc<Identity>, sans: Vec<String>) -> MeshServers {
        MeshServers {
            identity,
            sans,
            algorithms: algorithms(),
        }
    }
}

impl ServerCertVerifier for MeshServers {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let current = self.identity.current().ok_or_else(no_certificate)?;
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &current.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if !self.sans.is_empty() {
            let uris = weft_ca::inspect::uri_sans(end_entity);
            if !uris.iter().any(|u| self.sans.contains(u)) {
                tracing::debug!(presented = ?uris, expected = ?self.sans, "peer identity not expected");
                return Err(Error::InvalidCertificate(CertificateError::NotValidForName));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    weft_tls::handshake_signatures!(algorithms);
}

/// What a client's certificate says, for RBAC (its SPIFFE id) and for
/// `x-forwarded-client-cert`.
#[derive(Debug)]
pub(crate) struct PeerCert {
    /// The first SPIFFE URI SAN.
    pub principal: Option<String>,
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub subject: String,
    /// SHA-256 of the certificate, hex.
    pub hash: String,
}

/// The client's leaf certificate, read once per connection.
pub(crate) fn peer_cert(certs: Option<&[CertificateDer<'_>]>) -> Option<PeerCert> {
    let leaf = certs?.first()?;
    let info = weft_ca::inspect::info(leaf).ok()?;
    Some(PeerCert {
        principal: info
            .uris
            .iter()
            .find(|u| u.starts_with("spiffe://"))
            .cloned(),
        hash: weft_ca::inspect::sha256_hex(leaf),
        uris: info.uris,
        dns: info.dns_names,
        subject: info.subject,
    })
}
