//! Gateway credentials. A server's `credentialName` names a Kubernetes
//! Secret in the gateway workload's namespace, in any of Istio's layouts
//! (`tls.crt`/`tls.key`, or `cert`/`key`; trusted CAs in `ca.crt` or
//! `cacert`, in the same Secret or in `<name>-cacert`). They reach the
//! gateway as SDS secrets named as istiod names them
//! (`kubernetes://<name>`, `kubernetes://<name>-cacert`). A Secret that is
//! missing or does not hold a usable certificate and matching key is an
//! error here, so the server using it can be left out.

use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, Secret, TlsCertificate,
};
use weft_config::Resource;

pub const SDS_PREFIX: &str = "kubernetes://";
pub const CA_SUFFIX: &str = "-cacert";

fn find<'a>(config: &'a [Resource], ns: &str, name: &str) -> Option<&'a weft_config::kube::Secret> {
    // By kind first: a Gateway or ConfigMap of the same name is not it.
    config
        .iter()
        .filter(|r| r.namespace() == ns && r.meta.name == name)
        .find_map(Resource::as_secret)
}

/// The first of `keys` the Secret holds, decoded.
fn first_of(secret: &weft_config::kube::Secret, keys: &[&str]) -> Option<Result<Vec<u8>, String>> {
    keys.iter().find_map(|k| secret.value(k))
}

fn found_keys(secret: &weft_config::kube::Secret) -> String {
    let keys: Vec<&str> = secret.keys().map(String::as_str).collect();
    keys.join(", ")
}

/// The certificate chain and key of `ns/name`, checked: both parse as PEM
/// and the key belongs to the leaf certificate.
pub fn certificate(config: &[Resource], ns: &str, name: &str) -> Result<Secret, String> {
    let s = find(config, ns, name).ok_or_else(|| format!("Secret {ns}/{name} not found"))?;
    let (chain, key) = match (
        first_of(s, &["tls.crt", "cert"]),
        first_of(s, &["tls.key", "key"]),
    ) {
        (Some(c), Some(k)) => (c?, k?),
        _ => {
            return Err(format!(
                "Secret {ns}/{name} has neither tls.crt and tls.key nor cert and key (it has: {})",
                found_keys(s)
            ))
        }
    };
    check_pair(&chain, &key).map_err(|e| format!("Secret {ns}/{name}: {e}"))?;
    Ok(Secret {
        name: format!("{SDS_PREFIX}{name}"),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(chain)),
            private_key: Some(inline(key)),
            ..Default::default()
        })),
    })
}

/// The CAs that client certificates are checked against for MUTUAL
/// servers: the `<name>-cacert` Secret if there is one, else `ca.crt` (or
/// `cacert`) in `<name>` itself, as istiod looks them up.
pub fn trusted_ca(config: &[Resource], ns: &str, name: &str) -> Result<Secret, String> {
    let (holder, s) = match find(config, ns, &format!("{name}{CA_SUFFIX}")) {
        Some(s) => (format!("{name}{CA_SUFFIX}"), s),
        None => (
            name.to_string(),
            find(config, ns, name).ok_or_else(|| format!("Secret {ns}/{name} not found"))?,
        ),
    };
    let Some(ca) = first_of(s, &["ca.crt", "cacert"]) else {
        return Err(format!(
            "MUTUAL needs CA certificates: neither Secret {ns}/{name}{CA_SUFFIX} nor ca.crt/cacert in Secret {ns}/{holder} (it has: {})",
            found_keys(s)
        ));
    };
    let ca = ca?;
    weft_tls::certificates(&ca).map_err(|e| format!("Secret {ns}/{holder} CA: {e}"))?;
    Ok(Secret {
        name: format!("{SDS_PREFIX}{name}{CA_SUFFIX}"),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(inline(ca)),
                ..Default::default()
            },
        )),
    })
}

fn inline(bytes: Vec<u8>) -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineBytes(bytes)),
        ..Default::default()
    }
}

/// A certificate chain and a private key that belongs to its leaf.
pub fn check_pair(chain: &[u8], key: &[u8]) -> Result<(), String> {
    weft_tls::certified_key(chain, key).map(drop)
}
