//! Headers the proxy itself owns: hop-by-hop headers never cross it, and
//! every request carries an `x-request-id`.

use http::header::{HeaderName, HeaderValue, CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::Request;

use super::forwarded::RequestId;

/// Named once: a `&str` key is parsed on every lookup.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Named once, as constants: removing by `&str` parses and hashes the name
/// each time, which was 7% of a request's instructions (callgrind).
const HOP_BY_HOP: [HeaderName; 7] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TRANSFER_ENCODING,
    UPGRADE,
    TE,
    TRAILER,
];

/// Connection-scoped headers must not cross the proxy (RFC 9110 §7.6.1),
/// including the ones the Connection header itself names.
pub(crate) fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let present = present(headers, &HOP_BY_HOP);
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // Most name only `keep-alive`, hop-by-hop already: matched as text,
        // not made a name (~250 instructions).
        let mut named: Vec<HeaderName> = Vec::new();
        let tokens = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        for token in tokens.map(str::trim) {
            if token.eq_ignore_ascii_case("keep-alive") {
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(token.as_bytes()) {
                if !HOP_BY_HOP.contains(&n) {
                    named.push(n);
                }
            }
        }
        for n in named {
            headers.remove(n);
        }
    }
    // `te: trailers` is the one TE HTTP/2 allows, and gRPC needs it to
    // reach the server.
    let trailers = headers
        .get(TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    remove_listed(headers, &HOP_BY_HOP, present);
    if trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// Removes whichever of `names` `headers` holds. One pass over the map's
/// few names finds them: removing an absent name still hashes it and
/// probes the table, several times the cost of comparing it (callgrind).
pub(crate) fn remove_all(headers: &mut http::HeaderMap, names: &[HeaderName]) {
    let found = present(headers, names);
    remove_listed(headers, names, found);
}

/// Which of `names` (at most 32) `headers` holds, as a bit per name.
fn present(headers: &http::HeaderMap, names: &[HeaderName]) -> u32 {
    debug_assert!(names.len() <= 32);
    headers
        .keys()
        .filter_map(|k| names.iter().position(|n| n == k))
        .fold(0, |bits, i| bits | 1 << i)
}

fn remove_listed(headers: &mut http::HeaderMap, names: &[HeaderName], mut bits: u32) {
    while bits != 0 {
        headers.remove(&names[bits.trailing_zeros() as usize]);
        bits &= bits - 1;
    }
}

/// The request's x-request-id as the connection manager's rule says:
/// its own (empty when it has none and none is generated), or a new
/// version-4 UUID when it has none or the edge replaces it.
pub(crate) fn request_id<B>(req: &mut Request<B>, rule: RequestId) -> String {
    let own = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok());
    match (own, rule) {
        (Some(id), RequestId::Keep | RequestId::Ensure) => return id.to_string(),
        (None, RequestId::Keep) => return String::new(),
        _ => {}
    }
    let id = uuid_v4(fastrand::u128(..));
    let text = std::str::from_utf8(&id).expect("hex digits").to_string();
    if let Ok(v) = HeaderValue::from_bytes(&id) {
        req.headers_mut().insert(REQUEST_ID, v);
    }
    text
}

/// The textual form of a random UUID (RFC 9562 version 4, variant 10).
fn uuid_v4(random: u128) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = (random & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    // Byte by byte, two digits each: shifting the u128 for every digit
    // cost twice the instructions (callgrind).
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in bits.to_be_bytes().into_iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_version_4_uuids() {
        let id = super::uuid_v4(u128::MAX);
        assert_eq!(&id, b"ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = super::uuid_v4(0);
        assert_eq!(&id, b"00000000-0000-4000-8000-000000000000");
        let id = super::uuid_v4(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(&id, b"01234567-89ab-4def-8123-456789abcdef");
    }

    fn map(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (n.parse().unwrap(), http::HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_stripped() {
        let mut h = map(&[
            ("host", "a"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("trailer", "x-sum"),
            ("te", "gzip"),
            ("x-kept", "1"),
        ]);
        super::strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host", "x-kept"]);
        // gRPC's `te: trailers` goes through, as HTTP/2 allows.
        let mut h = map(&[("te", "trailers"), ("content-type", "application/grpc")]);
        super::strip_hop_by_hop(&mut h);
        assert_eq!(h["te"], "trailers");
        // Nothing to strip: the map is left as it was.
        let mut h = map(&[("host", "a"), ("accept", "*/*")]);
        super::strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        // Only `connection: close` (its own name): that alone goes.
        let mut h = map(&[("connection", "close"), ("x-kept", "1")]);
        super::strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn remove_all_takes_every_value_of_the_names_present() {
        let mut h = map(&[("x-a", "1"), ("x-b", "2"), ("x-c", "3")]);
        h.append("x-a", http::HeaderValue::from_static("again"));
        let names = [
            http::HeaderName::from_static("x-a"),
            http::HeaderName::from_static("x-absent"),
            http::HeaderName::from_static("x-c"),
        ];
        super::remove_all(&mut h, &names);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-b"]);
        assert_eq!(h.len(), 1, "both values of x-a are gone");
    }
}
