//! The mesh's certificate authority (the istiod role Istio calls Citadel)
//! and the workload's side of it:
//! - `authority`: the signing CA, self-signed on first start and kept on
//!   disk, or plugged in from files in Istio's layout;
//! - `token`: the per-pod tokens a workload proves who it is with before it
//!   gets a certificate (the local mesh's stand-in for a Kubernetes
//!   service-account token);
//! - `workload`: a workload's key and CSR;
//! - `inspect`: what a PEM chain says (serial, validity, SPIFFE id), for
//!   `weft proxy-config secret`.
//!
//! *Invariants:* the CA never takes a name from a CSR, only its key: the
//! SPIFFE id comes from the verified token. No I/O besides the CA's own
//! directory; one crypto library (ring, as rustls uses).

pub mod authority;
pub mod inspect;
pub mod token;
pub mod workload;

pub use authority::{Authority, Issued};
pub use inspect::CertInfo;

/// A workload identity: `spiffe://<trust domain>/ns/<namespace>/sa/<account>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl SpiffeId {
    pub fn uri(&self) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }

    /// Reads `spiffe://td/ns/x/sa/y`.
    pub fn parse(uri: &str) -> Option<SpiffeId> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let (td, ns_kw, ns, sa_kw, sa) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if parts.next().is_some() || ns_kw != "ns" || sa_kw != "sa" {
            return None;
        }
        if [td, ns, sa].iter().any(|p| p.is_empty()) {
            return None;
        }
        Some(SpiffeId {
            trust_domain: td.into(),
            namespace: ns.into(),
            service_account: sa.into(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("certificate signing request: {0}")]
    Csr(String),
    #[error("token: {0}")]
    Token(String),
    #[error("{0}")]
    Crypto(String),
}

pub(crate) fn crypto(e: impl std::fmt::Display) -> CaError {
    CaError::Crypto(e.to_string())
}

#[cfg(test)]
mod spiffe_tests {
    use super::*;

    #[test]
    fn spiffe_ids_round_trip_and_reject_other_shapes() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/sleep").unwrap();
        assert_eq!(id.namespace, "default");
        assert_eq!(id.uri(), "spiffe://cluster.local/ns/default/sa/sleep");
        for bad in [
            "spiffe://cluster.local/ns/default",
            "https://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://td/ns/a/sa/b/c",
        ] {
            assert!(SpiffeId::parse(bad).is_none(), "{bad}");
        }
    }
}

#[cfg(test)]
mod tests;
