//! The workload's identity (the Istio agent's role, in process): a key
//! made here, a certificate from the mesh CA (`agent`), renewed at half
//! its life, and the TLS pieces that read the current one at each
//! handshake (`tls`). Envoy config names these as Istio's SDS secrets
//! `default` (certificate and key) and `ROOTCA` (the trust bundle); the
//! compiler resolves those names here, not from xDS, so a renewal reaches
//! the next handshake without recompiling anything, and open connections
//! go on with the certificate they started with.

pub(crate) mod agent;
pub(crate) mod resume;
pub(crate) mod tls;

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use serde::Serialize;

/// Istio's SDS name for the workload certificate.
pub const DEFAULT: &str = "default";
/// Istio's SDS name for the mesh's trust bundle.
pub const ROOTCA: &str = "ROOTCA";

/// One proxy's identity; empty until the CA first answers.
#[derive(Default)]
pub struct Identity {
    current: ArcSwapOption<WorkloadCert>,
}

/// A certificate in use, with what handshakes need of it made once.
pub struct WorkloadCert {
    /// Distinct for every certificate installed: TLS sessions made under
    /// one are not resumed under another (`resume`).
    pub generation: u64,
    pub key: Arc<CertifiedKey>,
    pub roots: Arc<RootCertStore>,
    /// Checks client certificates against `roots` (a client must send one).
    pub clients: Arc<dyn ClientCertVerifier>,
    /// The chain (leaf first) and the trust bundle, as PEM, and what they say.
    pub chain_pem: String,
    pub roots_pem: String,
    pub chain: Vec<weft_ca::CertInfo>,
    pub trusted: Vec<weft_ca::CertInfo>,
    /// The leaf's SPIFFE id, shared by every request that names it.
    principal: Option<Arc<str>>,
}

impl Identity {
    pub fn current(&self) -> Option<Arc<WorkloadCert>> {
        self.current.load_full()
    }

    /// Takes a chain (leaf first), its key and a trust bundle; refused
    /// whole when the key is not the leaf's or the bundle has no CA.
    pub fn install(&self, chain_pem: &str, key_pem: &str, roots_pem: &str) -> Result<(), String> {
        let cert = WorkloadCert::new(chain_pem, key_pem, roots_pem)?;
        cert.check(self.current().as_deref())?;
        self.current.store(Some(Arc::new(cert)));
        Ok(())
    }

    /// The SPIFFE id of the current certificate.
    pub fn spiffe_id(&self) -> Option<Arc<str>> {
        self.current.load().as_ref()?.principal.clone()
    }
}

impl WorkloadCert {
    /// A new certificate must chain to its own trust bundle. A bundle
    /// that keeps none of the roots trusted so far is taken (a proxy that
    /// missed a rotation's overlap must still recover) but said loudly:
    /// roots rotate by overlapping, and a CA the proxy never trusted
    /// looks just like this.
    fn check(&self, before: Option<&WorkloadCert>) -> Result<(), String> {
        let leaf = self.key.cert.first().ok_or("no certificate")?;
        let parsed =
            rustls::server::ParsedCertificate::try_from(leaf).map_err(|e| e.to_string())?;
        let now = rustls::pki_types::UnixTime::now();
        let algorithms = weft_tls::provider().signature_verification_algorithms;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            &self.key.cert[1..],
            now,
            algorithms.all,
        )
        .map_err(|e| {
            format!("the certificate does not chain to the trust bundle it came with: {e}")
        })?;
        if let Some(before) = before {
            let kept = self
                .trusted
                .iter()
                .any(|r| before.trusted.iter().any(|b| b.pem == r.pem));
            if !kept {
                tracing::error!(
                    "the CA's new trust bundle keeps none of the roots trusted so far (no overlap): taken, but check the CA"
                );
            }
        }
        Ok(())
    }

    fn new(chain_pem: &str, key_pem: &str, roots_pem: &str) -> Result<WorkloadCert, String> {
        let key = weft_tls::certified_key(chain_pem.as_bytes(), key_pem.as_bytes())?;
        let roots = Arc::new(
            crate::compile::secret_roots(roots_pem.as_bytes())
                .map_err(|e| format!("trust bundle: {e}"))?,
        );
        let clients = weft_tls::client_verifier(roots.clone(), false)?;
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let chain = weft_ca::inspect::chain(chain_pem)?;
        Ok(WorkloadCert {
            generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            key,
            roots,
            clients,
            principal: chain
                .first()
                .and_then(|leaf| leaf.uris.first())
                .map(|u| u.as_str().into()),
            chain,
            trusted: weft_ca::inspect::chain(roots_pem)?,
            chain_pem: chain_pem.to_string(),
            roots_pem: roots_pem.to_string(),
        })
    }
}

/// What `/certs` on the admin port shows (Envoy's `/certs`, and what
/// `weft proxy-config secret` prints).
#[derive(Debug, Serialize)]
pub(crate) struct SecretView {
    pub name: &'static str,
    pub kind: &'static str,
    pub certificates: Vec<CertView>,
    /// The PEM text, for `openssl verify`.
    pub pem: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct CertView {
    pub serial_number: String,
    pub subject: String,
    pub issuer: String,
    pub subject_alt_names: Vec<String>,
    pub valid_from: i64,
    pub expiration_time: i64,
    pub is_ca: bool,
}

impl Identity {
    pub(crate) fn view(&self) -> Vec<SecretView> {
        let Some(cert) = self.current() else {
            return Vec::new();
        };
        let views = |certs: &[weft_ca::CertInfo]| {
            certs
                .iter()
                .map(|c| CertView {
                    serial_number: c.serial.clone(),
                    subject: c.subject.clone(),
                    issuer: c.issuer.clone(),
                    subject_alt_names: c.uris.iter().chain(&c.dns_names).cloned().collect(),
                    valid_from: c.not_before,
                    expiration_time: c.not_after,
                    is_ca: c.is_ca,
                })
                .collect()
        };
        vec![
            SecretView {
                name: DEFAULT,
                kind: "Cert Chain",
                certificates: views(&cert.chain),
                pem: cert.chain_pem.clone(),
            },
            SecretView {
                name: ROOTCA,
                kind: "CA",
                certificates: views(&cert.trusted),
                pem: cert.roots_pem.clone(),
            },
        ]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    /// A (chain, key, roots) triple from a CA made for the test.
    pub fn issued() -> (String, String, String) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("weft-identity-{}-{n}", std::process::id()));
        let ca = weft_ca::Authority::load_or_create(&dir, "cluster.local").unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let req = weft_ca::workload::request(None).unwrap();
        let id = weft_ca::SpiffeId {
            trust_domain: "cluster.local".into(),
            namespace: "default".into(),
            service_account: "test".into(),
        };
        let mut chain = ca.sign(&req.csr_pem, &id, None).unwrap().chain;
        let roots = chain.pop().unwrap();
        (chain.concat(), req.key_pem, roots)
    }
}
