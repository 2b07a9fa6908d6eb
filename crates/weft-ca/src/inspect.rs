//! What a PEM certificate chain says, for people and for checks: serial,
//! validity, SPIFFE ids, whether it is a CA.

use base64::Engine;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

#[derive(Debug, Clone)]
pub struct CertInfo {
    /// The certificate alone, as canonical PEM.
    pub pem: String,
    /// Hex, as openssl and istioctl print it.
    pub serial: String,
    pub subject: String,
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// URI subject alt names (SPIFFE ids).
    pub uris: Vec<String>,
    pub dns_names: Vec<String>,
    pub is_ca: bool,
    /// The SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
}

/// Each certificate of a PEM text, re-encoded on its own.
pub fn pems(text: &str) -> Vec<String> {
    x509_parser::pem::Pem::iter_from_buffer(text.as_bytes())
        .filter_map(Result::ok)
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| to_pem(&p.contents))
        .collect()
}

/// Every certificate of a PEM text, parsed; none, or one that does not
/// parse, is an error.
pub fn chain(text: &str) -> Result<Vec<CertInfo>, String> {
    let mut out = Vec::new();
    for (i, pem) in x509_parser::pem::Pem::iter_from_buffer(text.as_bytes()).enumerate() {
        let pem = pem.map_err(|e| format!("not PEM: {e}"))?;
        if pem.label != "CERTIFICATE" {
            continue;
        }
        out.push(info(&pem.contents).map_err(|e| format!("certificate {}: {e}", i + 1))?);
    }
    if out.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(out)
}

/// One DER certificate.
pub fn info(der: &[u8]) -> Result<CertInfo, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let mut uris = Vec::new();
    let mut dns_names = Vec::new();
    let mut is_ca = false;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::URI(u) => uris.push(u.to_string()),
                        GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                        _ => {}
                    }
                }
            }
            ParsedExtension::BasicConstraints(bc) => is_ca = bc.ca,
            _ => {}
        }
    }
    Ok(CertInfo {
        pem: to_pem(der),
        serial: cert.raw_serial_as_string().replace(':', ""),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        uris,
        dns_names,
        is_ca,
        spki_der: cert.public_key().raw.to_vec(),
    })
}

/// The URI SANs of a DER certificate (a peer's SPIFFE id); empty when it
/// has none or does not parse.
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    info(der).map(|i| i.uris).unwrap_or_default()
}

/// The SHA-256 of a DER certificate, lower-case hex (Envoy's XFCC `Hash`).
pub fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
