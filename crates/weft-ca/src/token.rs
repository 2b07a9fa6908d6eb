//! Pod tokens: how a workload of the local mesh proves its namespace,
//! service account and pod to the CA, as a Kubernetes pod proves them with
//! its projected service-account token. `weft up` mints one per pod with
//! the mesh's token key; the CA checks it with the same key. A token is
//! `weft1.<namespace/account/pod, base64url>.<HMAC-SHA256, base64url>`.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::hmac;

use crate::CaError;

const PREFIX: &str = "weft1";

/// Who a token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodClaim {
    pub namespace: String,
    pub service_account: String,
    pub pod: String,
}

pub struct TokenKey(hmac::Key);

impl TokenKey {
    /// The key in `path`, made (32 random bytes, mode 0600) when absent.
    pub fn load_or_create(path: &Path) -> Result<TokenKey, CaError> {
        let err = |e: std::io::Error| CaError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() >= 32 => return Ok(TokenKey::new(&bytes)),
            Ok(_) => {
                return Err(CaError::Token(format!(
                    "{}: a token key has at least 32 bytes",
                    path.display()
                )))
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
            Err(_) => {}
        }
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| CaError::Crypto("no randomness".into()))?;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| f.write_all(&bytes))
            .map_err(err)?;
        Ok(TokenKey::new(&bytes))
    }

    pub fn new(secret: &[u8]) -> TokenKey {
        TokenKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    pub fn mint(&self, claim: &PodClaim) -> String {
        let payload = format!(
            "{}/{}/{}",
            claim.namespace, claim.service_account, claim.pod
        );
        let tag = hmac::sign(&self.0, payload.as_bytes());
        format!(
            "{PREFIX}.{}.{}",
            B64.encode(payload),
            B64.encode(tag.as_ref())
        )
    }

    /// The claim of a token this key made; anything else is an error that
    /// says why (never which part of the MAC was wrong).
    pub fn verify(&self, token: &str) -> Result<PodClaim, CaError> {
        let bad = |why: &str| CaError::Token(why.to_string());
        let mut parts = token.trim().split('.');
        let (Some(PREFIX), Some(payload), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not a Weft pod token"));
        };
        let payload = B64
            .decode(payload)
            .map_err(|_| bad("not a Weft pod token"))?;
        let tag = B64.decode(tag).map_err(|_| bad("not a Weft pod token"))?;
        hmac::verify(&self.0, &payload, &tag)
            .map_err(|_| bad("signature does not verify (made with another mesh's key?)"))?;
        let text = String::from_utf8(payload).map_err(|_| bad("payload is not UTF-8"))?;
        let fields: Vec<&str> = text.split('/').collect();
        match fields.as_slice() {
            [ns, sa, pod] if !ns.is_empty() && !sa.is_empty() => Ok(PodClaim {
                namespace: ns.to_string(),
                service_account: sa.to_string(),
                pod: pod.to_string(),
            }),
            _ => Err(bad("payload is not namespace/account/pod")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_with_their_key_and_unchanged() {
        let key = TokenKey::new(&[7u8; 32]);
        let claim = PodClaim {
            namespace: "default".into(),
            service_account: "sleep".into(),
            pod: "sleep-1".into(),
        };
        let token = key.mint(&claim);
        assert_eq!(key.verify(&token).unwrap(), claim);
        assert!(TokenKey::new(&[8u8; 32]).verify(&token).is_err());
        let forged = token.replacen(
            &B64.encode("default/sleep/sleep-1"),
            &B64.encode("default/admin/sleep-1"),
            1,
        );
        assert!(key.verify(&forged).is_err());
        assert!(key.verify("Bearer nonsense").is_err());
    }
}
