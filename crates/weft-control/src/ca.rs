//! The control plane as the mesh's CA: Istio's certificate service on the
//! xDS port. A caller proves its pod with a token (`weft_ca::token`); the
//! certificate names the token's namespace and service account in the
//! trust domain. The CA's files are looked at again when they change, so
//! a root rotation (a new `root-cert.pem` holding old and new roots, then
//! a new signing CA) reaches every workload at its next renewal, without
//! a restart.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tonic::Status;
use weft_ca::token::TokenKey;
use weft_ca::{Authority, SpiffeId};
use weft_xds::ca::{IstioCertificateRequest, IstioCertificateResponse, Signer};

#[derive(Debug, Clone)]
pub struct CaOptions {
    /// The CA's files (Istio's plugged-in layout); a self-signed root is
    /// made here when there are none.
    pub dir: PathBuf,
    /// The key pod tokens are checked with.
    pub token_key: PathBuf,
    pub trust_domain: String,
    /// Lifetime of a certificate whose request names none (Istio's
    /// DEFAULT_WORKLOAD_CERT_TTL).
    pub default_ttl: Duration,
    /// The longest a request may have (MAX_WORKLOAD_CERT_TTL).
    pub max_ttl: Duration,
}

pub(crate) struct MeshCa {
    options: CaOptions,
    tokens: TokenKey,
    current: Mutex<(Arc<Authority>, Vec<Option<SystemTime>>)>,
}

const FILES: [&str; 4] = [
    "ca-cert.pem",
    "ca-key.pem",
    "root-cert.pem",
    "cert-chain.pem",
];

impl MeshCa {
    pub fn open(options: CaOptions) -> anyhow::Result<MeshCa> {
        let authority = Arc::new(load(&options)?);
        let tokens = TokenKey::load_or_create(&options.token_key)?;
        tracing::info!(
            dir = %options.dir.display(),
            plugged_in = authority.plugged_in,
            trust_domain = %options.trust_domain,
            "certificate authority ready"
        );
        let stamps = stamps(&options);
        Ok(MeshCa {
            options,
            tokens,
            current: Mutex::new((authority, stamps)),
        })
    }

    /// The authority, read again if its files changed since; files that
    /// do not load leave the last good one in place (logged).
    fn authority(&self) -> Arc<Authority> {
        let mut current = self.current.lock().expect("CA lock");
        let now = stamps(&self.options);
        if now != current.1 {
            // Stamps move on only with a good load: files caught half
            // written are read again at the next request.
            match load(&self.options) {
                Ok(a) => {
                    tracing::info!(dir = %self.options.dir.display(), "CA files changed; reloaded");
                    current.0 = Arc::new(a);
                    current.1 = now;
                }
                Err(e) => {
                    tracing::error!(error = %e, "CA files changed and do not load; still signing with the previous CA")
                }
            }
        }
        current.0.clone()
    }
}

fn load(options: &CaOptions) -> anyhow::Result<Authority> {
    let mut a = Authority::load_or_create(&options.dir, &options.trust_domain)?;
    a.default_ttl = options.default_ttl;
    a.max_ttl = options.max_ttl;
    Ok(a)
}

fn stamps(options: &CaOptions) -> Vec<Option<SystemTime>> {
    FILES
        .iter()
        .map(|f| {
            std::fs::metadata(options.dir.join(f))
                .and_then(|m| m.modified())
                .ok()
        })
        .collect()
}

impl Signer for MeshCa {
    fn create(
        &self,
        token: Option<&str>,
        request: IstioCertificateRequest,
    ) -> Result<IstioCertificateResponse, Status> {
        let counts = weft_xds::metrics::metrics();
        counts.csr_count.fetch_add(1, Ordering::Relaxed);
        let refused = |n: &std::sync::atomic::AtomicU64| {
            n.fetch_add(1, Ordering::Relaxed);
        };
        let token = token.ok_or_else(|| {
            refused(&counts.authentication_failures);
            Status::unauthenticated(
                "no bearer token: a workload proves its identity with its pod token",
            )
        })?;
        let claim = self.tokens.verify(token).map_err(|e| {
            refused(&counts.authentication_failures);
            tracing::warn!(error = %e, "certificate request refused");
            Status::unauthenticated(e.to_string())
        })?;
        let id = SpiffeId {
            trust_domain: self.options.trust_domain.clone(),
            namespace: claim.namespace,
            service_account: claim.service_account,
        };
        let ttl = u64::try_from(request.validity_duration)
            .ok()
            .map(Duration::from_secs);
        let issued = self.authority().sign(&request.csr, &id, ttl).map_err(|e| {
            refused(&counts.csr_parsing_errors);
            tracing::warn!(pod = %claim.pod, error = %e, "certificate request refused");
            Status::invalid_argument(e.to_string())
        })?;
        counts.issued.fetch_add(1, Ordering::Relaxed);
        tracing::info!(pod = %claim.pod, id = %id.uri(), "certificate issued");
        Ok(IstioCertificateResponse {
            cert_chain: issued.chain,
        })
    }
}
