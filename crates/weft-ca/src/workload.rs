//! The workload's side: a fresh key and a CSR for it, as Istio's agent
//! makes them (ECDSA P-256). The key never leaves the proxy.

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

use crate::{crypto, CaError};

pub struct Request {
    pub csr_pem: String,
    pub key_pem: String,
}

/// A key and a CSR naming `uri` (the id the workload expects; the CA puts
/// in the one it proved, whatever the CSR says).
pub fn request(uri: Option<&str>) -> Result<Request, CaError> {
    let key = KeyPair::generate().map_err(crypto)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(uri) = uri {
        params.subject_alt_names = vec![SanType::URI(uri.try_into().map_err(crypto)?)];
    }
    let csr = params.serialize_request(&key).map_err(crypto)?;
    Ok(Request {
        csr_pem: csr.pem().map_err(crypto)?,
        key_pem: key.serialize_pem(),
    })
}
