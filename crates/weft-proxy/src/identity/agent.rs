//! Gets and renews the workload certificate: a fresh key and CSR each
//! time, sent to the mesh CA with the pod's token (read again each time,
//! so a rotated token file is picked up). A new certificate is asked for
//! at half the life of the current one; when the CA cannot be reached the
//! proxy keeps serving with what it holds, retries with backoff, and says
//! loudly when that is about to expire.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use weft_xds::ca::{create_certificate, IstioCertificateRequest};

use super::Identity;

/// Where and how to ask for certificates.
#[derive(Debug, Clone)]
pub struct CaClient {
    /// `http://host:port` of the CA (the control plane's xDS port).
    pub address: String,
    /// The pod token file (`weft up` writes one per pod).
    pub token_file: Option<PathBuf>,
    /// Lifetime to ask for; None: the CA's default.
    pub ttl: Option<Duration>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub(crate) async fn run(identity: Arc<Identity>, ca: CaClient) {
    let channel = match weft_xds::ca::channel(&ca.address) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no workload certificate: the CA address is wrong");
            return;
        }
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = match renew(&identity, &ca, channel.clone()).await {
            Ok(next) => {
                backoff = Duration::from_secs(1);
                next
            }
            Err(e) => {
                warn_expiry(&identity, &e);
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// One round: a certificate installed, and how long until the next.
async fn renew(
    identity: &Identity,
    ca: &CaClient,
    channel: weft_xds::ca::Channel,
) -> Result<Duration, String> {
    let token = match &ca.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("token file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let request = weft_ca::workload::request(None).map_err(|e| e.to_string())?;
    let asked = IstioCertificateRequest {
        csr: request.csr_pem,
        validity_duration: ca.ttl.map_or(0, |t| t.as_secs() as i64),
    };
    let received = now();
    let reply = create_certificate(channel, token.as_deref().map(str::trim), asked)
        .await
        .map_err(|s| format!("CA {}: {}: {}", ca.address, s.code(), s.message()))?;
    let Some((roots, chain)) = reply.cert_chain.split_last() else {
        return Err("the CA answered with no certificate".into());
    };
    if chain.is_empty() {
        return Err("the CA answered with roots only".into());
    }
    identity
        .install(&chain.concat(), &request.key_pem, roots)
        .map_err(|e| format!("certificate from the CA: {e}"))?;
    let cert = identity.current().expect("just installed");
    let leaf = &cert.chain[0];
    tracing::info!(
        id = leaf.uris.first().map(String::as_str).unwrap_or(""),
        serial = %leaf.serial,
        expires = %weft_xds::clock::Rfc3339::seconds(UNIX_EPOCH + Duration::from_secs(leaf.not_after.max(0) as u64)),
        "workload certificate installed"
    );
    // Half of what is left from when it was asked for: the start of its
    // validity is set back for clock skew, and must not make a short-lived
    // certificate due at once.
    let left = leaf.not_after - received;
    Ok(Duration::from_secs((left / 2).max(1) as u64))
}

/// Logs a failed renewal; loudly once the certificate held is past 80%
/// of its life or gone.
fn warn_expiry(identity: &Identity, error: &str) {
    let Some(cert) = identity.current() else {
        tracing::warn!(%error, "no workload certificate yet; retrying");
        return;
    };
    let leaf = &cert.chain[0];
    let life = (leaf.not_after - leaf.not_before).max(1);
    let left = leaf.not_after - now();
    if left <= 0 {
        tracing::error!(%error, "the workload certificate has EXPIRED and cannot be renewed; mTLS handshakes fail");
    } else if left * 5 < life {
        tracing::error!(%error, seconds_left = left, "the workload certificate expires soon and cannot be renewed");
    } else {
        tracing::warn!(%error, seconds_left = left, "certificate renewal failed; retrying");
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
