//! The CA end to end on files: self-signed and plugged-in roots, signing,
//! and what openssl makes of the result.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{inspect, workload, Authority, SpiffeId};

fn id() -> SpiffeId {
    SpiffeId {
        trust_domain: "cluster.local".into(),
        namespace: "foo".into(),
        service_account: "httpbin".into(),
    }
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-ca-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `openssl verify` of `leaf` (with `untrusted` between) against `roots`.
fn openssl_verify(dir: &Path, roots: &str, untrusted: &[String], leaf: &str) -> String {
    std::fs::write(dir.join("v-roots.pem"), roots).unwrap();
    std::fs::write(dir.join("v-leaf.pem"), leaf).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-CAfile"]).arg(dir.join("v-roots.pem"));
    if !untrusted.is_empty() {
        std::fs::write(dir.join("v-chain.pem"), untrusted.concat()).unwrap();
        cmd.arg("-untrusted").arg(dir.join("v-chain.pem"));
    }
    let out = cmd
        .arg(dir.join("v-leaf.pem"))
        .output()
        .expect("openssl must be installed (apt install openssl)");
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn a_self_signed_root_is_made_once_and_signs_spiffe_certificates() {
    let dir = tmp("self");
    let ca = Authority::load_or_create(&dir, "cluster.local").unwrap();
    assert!(!ca.plugged_in);
    let again = Authority::load_or_create(&dir, "cluster.local").unwrap();
    assert_eq!(ca.roots(), again.roots(), "a restart keeps the root");
    let req = workload::request(None).unwrap();
    let issued = ca
        .sign(&req.csr_pem, &id(), Some(Duration::from_secs(3600)))
        .unwrap();
    assert_eq!(issued.chain.len(), 2, "leaf and root: {:?}", issued.chain);
    let leaf = &inspect::chain(&issued.chain[0]).unwrap()[0];
    assert_eq!(leaf.uris, ["spiffe://cluster.local/ns/foo/sa/httpbin"]);
    assert!(!leaf.is_ca);
    let life = leaf.not_after - leaf.not_before;
    assert!((3600..=3700).contains(&life), "lifetime {life}s");
    let verdict = openssl_verify(&dir, &issued.chain[1], &[], &issued.chain[0]);
    assert!(verdict.contains(": OK"), "{verdict}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lifetimes_are_capped_and_a_forged_csr_is_refused() {
    let dir = tmp("cap");
    let mut ca = Authority::load_or_create(&dir, "cluster.local").unwrap();
    ca.max_ttl = Duration::from_secs(600);
    let req = workload::request(None).unwrap();
    let issued = ca
        .sign(&req.csr_pem, &id(), Some(Duration::from_secs(86400)))
        .unwrap();
    let leaf = &inspect::chain(&issued.chain[0]).unwrap()[0];
    assert!(leaf.not_after - leaf.not_before <= 660);
    // One changed byte in the CSR's signature.
    let mut der = x509_parser::pem::parse_x509_pem(req.csr_pem.as_bytes())
        .unwrap()
        .1
        .contents;
    let n = der.len();
    der[n - 3] ^= 0x55;
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der);
    let forged =
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n");
    let err = ca.sign(&forged, &id(), None).unwrap_err().to_string();
    assert!(err.contains("certificate signing request"), "{err}");
    assert!(ca.sign("not a csr", &id(), None).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Istio's plugged-in layout with an intermediate: the chain sent is the
/// leaf, the intermediate, then the root; openssl accepts it.
#[test]
fn a_plugged_in_intermediate_ca_signs_with_its_chain() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = tmp("plugged");
    std::fs::create_dir_all(&dir).unwrap();
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::default();
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root_cert = root.self_signed(&root_key).unwrap();
    let int_key = KeyPair::generate().unwrap();
    let mut int = CertificateParams::default();
    int.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    int.distinguished_name = rcgen::DistinguishedName::new();
    int.distinguished_name
        .push(rcgen::DnType::CommonName, "Intermediate CA");
    let int_cert = int
        .signed_by(&int_key, &Issuer::from_params(&root, &root_key))
        .unwrap();
    std::fs::write(dir.join("ca-cert.pem"), int_cert.pem()).unwrap();
    std::fs::write(dir.join("ca-key.pem"), int_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("root-cert.pem"), root_cert.pem()).unwrap();
    std::fs::write(
        dir.join("cert-chain.pem"),
        int_cert.pem() + &root_cert.pem(),
    )
    .unwrap();
    let ca = Authority::load_or_create(&dir, "cluster.local").unwrap();
    assert!(ca.plugged_in);
    let req = workload::request(None).unwrap();
    let issued = ca.sign(&req.csr_pem, &id(), None).unwrap();
    assert_eq!(issued.chain.len(), 3);
    assert_eq!(
        inspect::chain(&issued.chain[1]).unwrap()[0].subject,
        "CN=Intermediate CA"
    );
    let verdict = openssl_verify(
        &dir,
        &issued.chain[2],
        &issued.chain[1..2],
        &issued.chain[0],
    );
    assert!(verdict.contains(": OK"), "{verdict}");

    // A key that is not the certificate's is refused, naming the file.
    std::fs::write(
        dir.join("ca-key.pem"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let err = Authority::load_or_create(&dir, "cluster.local")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("ca-key.pem") && err.contains("does not belong"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
