//! Just enough DER to read a certificate's signed part, names, validity
//! and public key (RFC 5280 §4.1), for versions 1 and 3 alike.

const SEQUENCE: u8 = 0x30;
const VERSION_TAG: u8 = 0xa0;

/// One parsed certificate, borrowing its DER.
#[derive(Debug)]
pub struct Certificate<'a> {
    /// The whole `tbsCertificate` (what the issuer signed).
    pub tbs: &'a [u8],
    /// Contents of the outer `signatureAlgorithm` AlgorithmIdentifier.
    pub signature_algorithm: &'a [u8],
    /// The signature bits.
    pub signature: &'a [u8],
    /// Contents of the issuer and subject Names.
    pub issuer: &'a [u8],
    pub subject: &'a [u8],
    pub not_before: i64,
    pub not_after: i64,
    /// The whole SubjectPublicKeyInfo, and its parts.
    pub spki_der: &'a [u8],
    pub key_algorithm: &'a [u8],
    pub public_key: &'a [u8],
    /// 1 or 3 (as written: 0 or 2 in DER).
    pub version: u8,
}

/// One DER element: its tag, the whole element, its contents, and what
/// follows it.
struct Tlv<'a> {
    tag: u8,
    whole: &'a [u8],
    content: &'a [u8],
    rest: &'a [u8],
}

fn tlv(input: &[u8]) -> Result<Tlv<'_>, String> {
    let short = || "truncated DER".to_string();
    let tag = *input.first().ok_or_else(short)?;
    let first = *input.get(1).ok_or_else(short)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err("unsupported DER length".into());
        }
        let bytes = input.get(2..2 + n).ok_or_else(short)?;
        (
            bytes.iter().fold(0usize, |a, b| a << 8 | usize::from(*b)),
            2 + n,
        )
    };
    let end = header.checked_add(len).ok_or_else(short)?;
    let whole = input.get(..end).ok_or_else(short)?;
    Ok(Tlv {
        tag,
        whole,
        content: &whole[header..],
        rest: &input[end..],
    })
}

fn expect<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<Tlv<'a>, String> {
    let t = tlv(input)?;
    if t.tag != tag {
        return Err(format!("{what}: unexpected DER tag {:#x}", t.tag));
    }
    Ok(t)
}

/// The algorithm and key bits of a trust anchor's SubjectPublicKeyInfo
/// contents (webpki keeps them without the outer SEQUENCE).
pub(crate) fn anchor_key(spki_contents: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let algorithm = expect(spki_contents, SEQUENCE, "algorithm")?;
    let bits = expect(algorithm.rest, 0x03, "subjectPublicKey")?.content;
    Ok((algorithm.content, bits.get(1..).ok_or("empty public key")?))
}

impl<'a> Certificate<'a> {
    pub fn parse(der: &'a [u8]) -> Result<Certificate<'a>, String> {
        let cert = expect(der, SEQUENCE, "certificate")?.content;
        let tbs = expect(cert, SEQUENCE, "tbsCertificate")?;
        let signature_algorithm = expect(tbs.rest, SEQUENCE, "signatureAlgorithm")?;
        let bits = expect(signature_algorithm.rest, 0x03, "signatureValue")?.content;
        let mut body = tbs.content;
        let mut version = 1;
        if body.first() == Some(&VERSION_TAG) {
            let v = expect(body, VERSION_TAG, "version")?;
            let n = expect(v.content, 0x02, "version")?.content;
            version = n.first().map_or(1, |n| n + 1);
            body = v.rest;
        }
        let serial = expect(body, 0x02, "serialNumber")?;
        let signature = expect(serial.rest, SEQUENCE, "signature")?;
        let issuer = expect(signature.rest, SEQUENCE, "issuer")?;
        let validity = expect(issuer.rest, SEQUENCE, "validity")?;
        let subject = expect(validity.rest, SEQUENCE, "subject")?;
        let spki = expect(subject.rest, SEQUENCE, "subjectPublicKeyInfo")?;
        let (key_algorithm, public_key) = anchor_key(spki.content)?;
        let (not_before, rest) = time(validity.content)?;
        let (not_after, _) = time(rest)?;
        Ok(Certificate {
            tbs: tbs.whole,
            signature_algorithm: signature_algorithm.content,
            signature: bits.get(1..).ok_or("empty signature")?,
            issuer: issuer.content,
            subject: subject.content,
            not_before,
            not_after,
            spki_der: spki.whole,
            key_algorithm,
            public_key,
            version,
        })
    }
}

/// A UTCTime or GeneralizedTime (`…Z`), in seconds since the epoch.
fn time(input: &[u8]) -> Result<(i64, &[u8]), String> {
    let Tlv {
        tag, content, rest, ..
    } = tlv(input)?;
    let text = std::str::from_utf8(content).map_err(|_| "time is not ASCII")?;
    let digits = text.strip_suffix('Z').ok_or("time is not in UTC")?;
    let full = match (tag, digits.len()) {
        // RFC 5280: two-digit years 50-99 are 19xx.
        (0x17, 12) => {
            let yy: i64 = digits[..2].parse().map_err(|_| "bad year")?;
            format!("{}{}", if yy >= 50 { 19 } else { 20 }, digits)
        }
        (0x18, 14) => digits.to_string(),
        _ => return Err(format!("unsupported time {text:?}")),
    };
    let n = |r: std::ops::Range<usize>| -> Result<i64, String> {
        full[r].parse().map_err(|_| format!("bad time {text:?}"))
    };
    let days = days_from_civil(n(0..4)?, n(4..6)?, n(6..8)?);
    Ok((
        days * 86400 + n(8..10)? * 3600 + n(10..12)? * 60 + n(12..14)?,
        rest,
    ))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        let utc = [
            0x17, 13, b'2', b'6', b'1', b'1', b'2', b'7', b'1', b'0', b'0', b'0', b'0', b'0', b'Z',
        ];
        assert_eq!(time(&utc).unwrap().0, 1_795_773_600);
    }
}
