//! The signing CA. Its files follow Istio's plugged-in CA layout, so a CA
//! made for Istio (its `samples/certs` or the `cacerts` secret's files)
//! plugs in unchanged:
//! - `ca-cert.pem`, `ca-key.pem`: the certificate that signs, and its key;
//! - `root-cert.pem`: the roots workloads trust (several during a root
//!   rotation: old and new are both trusted while they overlap);
//! - `cert-chain.pem` (optional): the chain from `ca-cert.pem` towards the
//!   root, sent after each leaf.
//!
//! A directory without them gets a self-signed root on first start, kept
//! there, so that a restart keeps the mesh's trust (Istio's
//! `istio-ca-secret`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::{crypto, CaError, SpiffeId};

/// Istio's default workload certificate lifetime.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Istio's longest (`MAX_WORKLOAD_CERT_TTL`).
pub const MAX_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// How far back a certificate's validity starts: a proxy whose clock is a
/// little behind the CA's still takes it.
const BACKDATE: Duration = Duration::from_secs(60);
/// A self-signed root's lifetime (Istio: 10 years).
const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// Certificates sent between the leaf and the roots.
    chain: Vec<String>,
    /// The trust bundle (`root-cert.pem`), as one PEM text.
    roots: String,
    pub trust_domain: String,
    /// Where it was read from, and whether it was plugged in.
    pub source: PathBuf,
    pub plugged_in: bool,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

/// A signed workload certificate, as Istio's certificate service answers:
/// the leaf, then the chain, then the trust bundle (last).
#[derive(Debug, Clone)]
pub struct Issued {
    pub chain: Vec<String>,
}

impl Authority {
    /// Reads the CA in `dir`, or makes a self-signed root there for
    /// `trust_domain` when the directory has none.
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<Authority, CaError> {
        let (cert, key) = (dir.join("ca-cert.pem"), dir.join("ca-key.pem"));
        if !cert.exists() && !key.exists() {
            create_root(dir, trust_domain)?;
            return Self::load(dir, trust_domain, false);
        }
        // A self-signed CA is its own, only root.
        let plugged = read(&dir.join("root-cert.pem"))? != read(&cert)?;
        Self::load(dir, trust_domain, plugged)
    }

    fn load(dir: &Path, trust_domain: &str, plugged_in: bool) -> Result<Authority, CaError> {
        let cert_path = dir.join("ca-cert.pem");
        let key_path = dir.join("ca-key.pem");
        let cert = read(&cert_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(file(&key_path))?;
        let info = crate::inspect::chain(&cert).map_err(|e| file(&cert_path)(e))?;
        let leaf = info
            .first()
            .ok_or_else(|| file(&cert_path)("no certificate"))?;
        if !leaf.is_ca {
            return Err(file(&cert_path)(
                "not a CA certificate (basicConstraints CA:TRUE)",
            ));
        }
        if leaf.spki_der != rcgen::PublicKeyData::subject_public_key_info(&key) {
            return Err(file(&key_path)("this key does not belong to ca-cert.pem"));
        }
        let issuer = Issuer::from_ca_cert_pem(&cert, key).map_err(file(&cert_path))?;
        let roots_path = dir.join("root-cert.pem");
        let roots = read(&roots_path)?;
        let root_certs = crate::inspect::chain(&roots).map_err(|e| file(&roots_path)(e))?;
        // What goes between leaf and roots: `cert-chain.pem`, else the
        // signing certificate itself, less whatever is a root already.
        let chain_text = std::fs::read_to_string(dir.join("cert-chain.pem")).unwrap_or(cert);
        let chain = crate::inspect::pems(&chain_text)
            .into_iter()
            .filter(|pem| !root_certs.iter().any(|r| r.pem == *pem))
            .collect();
        Ok(Authority {
            issuer,
            chain,
            roots,
            trust_domain: trust_domain.to_string(),
            source: dir.to_path_buf(),
            plugged_in,
            default_ttl: DEFAULT_TTL,
            max_ttl: MAX_TTL,
        })
    }

    /// The trust bundle workloads check peers against.
    pub fn roots(&self) -> &str {
        &self.roots
    }

    /// Signs the key of `csr_pem` (whose signature proves the caller holds
    /// it) for `id`, valid for `ttl` (the default when None, never more
    /// than the maximum). Names in the CSR are ignored: the id is what the
    /// caller proved.
    pub fn sign(
        &self,
        csr_pem: &str,
        id: &SpiffeId,
        ttl: Option<Duration>,
    ) -> Result<Issued, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::Csr(e.to_string()))?;
        let ttl = ttl
            .filter(|t| !t.is_zero())
            .unwrap_or(self.default_ttl)
            .min(self.max_ttl);
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.not_before = now - BACKDATE;
        params.not_after = now + ttl;
        params.serial_number = Some(serial()?);
        let uri = id.uri().try_into().map_err(crypto)?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let leaf = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(crypto)?;
        let mut chain = vec![leaf.pem()];
        chain.extend(self.chain.iter().cloned());
        chain.push(self.roots.clone());
        Ok(Issued { chain })
    }
}

fn create_root(dir: &Path, trust_domain: &str) -> Result<(), CaError> {
    std::fs::create_dir_all(dir).map_err(file(dir))?;
    let key = KeyPair::generate().map_err(crypto)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + ROOT_TTL;
    params.serial_number = Some(serial()?);
    let root = params.self_signed(&key).map_err(crypto)?;
    write(&dir.join("ca-key.pem"), &key.serialize_pem(), 0o600)?;
    write(&dir.join("ca-cert.pem"), &root.pem(), 0o644)?;
    write(&dir.join("root-cert.pem"), &root.pem(), 0o644)
}

/// A random positive 128-bit serial number.
fn serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| CaError::Crypto("no randomness".into()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(file(path))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(file(path))?;
    f.write_all(text.as_bytes()).map_err(file(path))
}

fn file<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> CaError + '_ {
    move |e| CaError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}
