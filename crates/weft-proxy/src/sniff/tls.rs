//! `tls_inspector`: the SNI and ALPN of a TLS ClientHello (RFC 8446 §4.1.2,
//! RFC 6066 §3, RFC 7301), read from the records as they arrive. The
//! handshake message may span several records.

use super::{Detected, Verdict};

/// The TLS record type of a handshake.
pub(super) const HANDSHAKE: u8 = 22;
/// Envoy's tls_inspector reads at most this much of a ClientHello.
pub(super) const MAX_HELLO: usize = 64 * 1024;

const CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;

/// `Done(None)`: the bytes are not a ClientHello (or a malformed one).
pub(super) fn client_hello(data: &[u8]) -> Verdict<Option<Detected>> {
    let mut message = Vec::new();
    let mut rest = data;
    loop {
        if rest.len() < 5 {
            return Verdict::NeedMore;
        }
        let (kind, len) = (rest[0], usize::from(u16::from_be_bytes([rest[3], rest[4]])));
        if kind != HANDSHAKE || rest[1] != 3 {
            return Verdict::Done(None);
        }
        let Some(fragment) = rest.get(5..5 + len) else {
            return Verdict::NeedMore;
        };
        message.extend_from_slice(fragment);
        rest = &rest[5 + len..];
        if message.len() < 4 {
            continue;
        }
        if message[0] != CLIENT_HELLO {
            return Verdict::Done(None);
        }
        let body_len = usize::from_be_bytes([0, 0, 0, 0, 0, message[1], message[2], message[3]]);
        if message.len() >= 4 + body_len {
            return Verdict::Done(parse_hello(&message[4..4 + body_len]));
        }
    }
}

/// A cursor over length-prefixed TLS structures; every read checks bounds.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a one- or two-byte length.
    fn vec8(&mut self) -> Option<Reader<'a>> {
        let n = usize::from(self.u8()?);
        Some(Reader(self.take(n)?))
    }
    fn vec16(&mut self) -> Option<Reader<'a>> {
        let n = usize::from(self.u16()?);
        Some(Reader(self.take(n)?))
    }
}

fn parse_hello(body: &[u8]) -> Option<Detected> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    let mut found = Detected {
        tls: true,
        ..Default::default()
    };
    if r.0.is_empty() {
        return Some(found); // no extensions at all
    }
    let mut extensions = r.vec16()?;
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let mut data = extensions.vec16()?;
        match kind {
            EXT_SERVER_NAME => found.server_name = server_name(&mut data),
            EXT_ALPN => {
                let mut list = data.vec16()?;
                while !list.0.is_empty() {
                    let name = list.vec8()?.0;
                    found
                        .protocols
                        .push(String::from_utf8_lossy(name).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(found)
}

/// The host_name entry of a server_name extension, lower-cased as Envoy
/// matches it.
fn server_name(data: &mut Reader) -> Option<String> {
    let mut list = data.vec16()?;
    while !list.0.is_empty() {
        let kind = list.u8()?;
        let name = list.vec16()?.0;
        if kind == 0 {
            return std::str::from_utf8(name).ok().map(str::to_ascii_lowercase);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello with the given extensions, in one record or
    /// split over records of `record_size` bytes.
    fn hello(sni: Option<&str>, alpn: &[&str], record_size: usize) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(name) = sni {
            let entry_len = 3 + name.len();
            ext.extend_from_slice(&EXT_SERVER_NAME.to_be_bytes());
            ext.extend_from_slice(&((entry_len + 2) as u16).to_be_bytes());
            ext.extend_from_slice(&(entry_len as u16).to_be_bytes());
            ext.push(0);
            ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
            ext.extend_from_slice(name.as_bytes());
        }
        if !alpn.is_empty() {
            let list: Vec<u8> = alpn
                .iter()
                .flat_map(|p| std::iter::once(p.len() as u8).chain(p.bytes()))
                .collect();
            ext.extend_from_slice(&EXT_ALPN.to_be_bytes());
            ext.extend_from_slice(&((list.len() + 2) as u16).to_be_bytes());
            ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
            ext.extend_from_slice(&list);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut message = vec![CLIENT_HELLO, 0];
        message.extend_from_slice(&(body.len() as u16).to_be_bytes());
        message.extend_from_slice(&body);
        message
            .chunks(record_size)
            .flat_map(|chunk| {
                let mut rec = vec![HANDSHAKE, 3, 1];
                rec.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
                rec.extend_from_slice(chunk);
                rec
            })
            .collect()
    }

    #[test]
    fn sni_and_alpn_are_read_from_one_or_several_records() {
        for size in [1000, 16] {
            let bytes = hello(Some("Bookinfo.com"), &["h2", "http/1.1"], size);
            let Verdict::Done(Some(d)) = client_hello(&bytes) else {
                panic!("record size {size}: no hello");
            };
            assert_eq!(d.server_name.as_deref(), Some("bookinfo.com"));
            assert_eq!(d.protocols, ["h2", "http/1.1"]);
            assert!(d.tls);
            // Every prefix asks for more.
            for cut in 0..bytes.len() {
                assert_eq!(
                    client_hello(&bytes[..cut]),
                    Verdict::NeedMore,
                    "cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn other_bytes_are_not_a_hello() {
        let bare = hello(None, &[], 1000);
        let Verdict::Done(Some(d)) = client_hello(&bare) else {
            panic!()
        };
        assert_eq!((d.server_name, d.protocols.len()), (None, 0));
        assert_eq!(client_hello(b"GET / HTTP/1.1\r\n"), Verdict::Done(None));
        // An alert record, and a handshake that is not a ClientHello.
        assert_eq!(client_hello(&[21, 3, 3, 0, 2, 2, 40]), Verdict::Done(None));
        assert_eq!(
            client_hello(&[22, 3, 3, 0, 4, 2, 0, 0, 0]),
            Verdict::Done(None)
        );
        // A length that runs past its vector.
        let mut broken = hello(Some("a.com"), &[], 1000);
        let last = broken.len() - 1;
        broken.truncate(last);
        broken[4] -= 1;
        broken[8] -= 1;
        assert_eq!(client_hello(&broken), Verdict::Done(None));
    }
}
