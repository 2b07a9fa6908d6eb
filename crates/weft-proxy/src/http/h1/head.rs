//! The lean server's request heads: parsed once by httparse (the parser
//! hyper uses), the fields' values sharing the head's bytes. Only the
//! common request is taken here — HTTP/1.1, origin-form, no body or a
//! small declared one, no upgrade, no `Expect`, no transfer coding; any
//! other head, malformed ones included, is left in the buffer for hyper,
//! so its answers (400, 431, 100-continue, upgrades, chunked uploads) stay
//! exactly what they were.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

/// Envoy's default `max_headers_count`.
const MAX_HEADERS: usize = 100;
/// A head still incomplete at this size goes to hyper, whose limit (and
/// 431) applies from there.
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Room for the fields the request path adds (the forwarding headers, the
/// request id, the metadata exchange), so that the map does not grow
/// while the request is handled (two grows were 5% of a request).
const ADDED: usize = 8;
/// Declared bodies up to this size are read whole before the request is
/// handled (the router buffers bodies this small for replay anyway).
pub(super) const WHOLE_BODY: u64 = 64 * 1024;

/// What the buffer's front holds. Moved once per request; boxing the
/// head would be an allocation per request.
#[allow(clippy::large_enum_variant)]
pub(super) enum Parsed {
    /// A request the lean server takes, its head consumed.
    Request(Head),
    /// Not a whole head yet.
    Partial,
    /// A request (or bytes) for hyper; nothing consumed.
    Other,
    /// A request refused whole (400), the connection closed after it.
    Refused,
}

pub(super) struct Head {
    pub req: Request<()>,
    /// The declared body's length.
    pub body: usize,
    /// The client asked for the connection to close after this exchange.
    pub close: bool,
}

/// Why a head is not taken (yet).
enum Miss {
    Partial,
    Other,
    Refused,
}

/// Where a field's name and value lie in the head: name start and end,
/// value start and end.
type Span = [u32; 4];

/// What one parse of a whole head found besides its fields.
struct Scanned {
    len: usize,
    method: [u32; 2],
    target: [u32; 2],
    count: usize,
    body: usize,
    close: bool,
}

/// Takes a request head off the front of `buf` if the lean server serves
/// it, its fields in `spare` (an emptied map of an earlier exchange, as
/// hyper reuses one: a new map's allocation was 3% of a request). A sync
/// function: the field places stay on its stack, never in the
/// connection's future.
pub(super) fn take(buf: &mut BytesMut, spare: &mut HeaderMap) -> Parsed {
    let mut spans = [[0; 4]; MAX_HEADERS];
    let scanned = match scan(buf, &mut spans) {
        Ok(s) => s,
        Err(Miss::Partial) => return Parsed::Partial,
        Err(Miss::Other) => return Parsed::Other,
        Err(Miss::Refused) => return Parsed::Refused,
    };
    let head = buf.split_to(scanned.len).freeze();
    match request(&head, &scanned, &spans[..scanned.count], spare) {
        Some(req) => Parsed::Request(Head {
            req,
            body: scanned.body,
            close: scanned.close,
        }),
        None => {
            // Rare (a target or field `http` refuses): the head goes back
            // in front for hyper, which answers it as before.
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            Parsed::Other
        }
    }
}

/// Parses the head at the start of `buf`; `Err` says what to do instead.
fn scan(buf: &[u8], spans: &mut [Span; MAX_HEADERS]) -> Result<Scanned, Miss> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Err(Miss::Partial),
        _ => return Err(Miss::Other),
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Err(Miss::Other);
    };
    if !target.starts_with('/') || method == "CONNECT" {
        return Err(Miss::Other);
    }
    let at = |part: &[u8]| (part.as_ptr() as usize - buf.as_ptr() as usize) as u32;
    let (mut body, mut close, mut lengths, mut coded) = (0, false, 0, false);
    for (span, field) in spans.iter_mut().zip(req.headers.iter()) {
        let name = field.name.as_bytes();
        match name.len() {
            2 if name.eq_ignore_ascii_case(b"te") => return Err(Miss::Other),
            6 if name.eq_ignore_ascii_case(b"expect") => return Err(Miss::Other),
            7 if name.eq_ignore_ascii_case(b"upgrade") => return Err(Miss::Other),
            10 if name.eq_ignore_ascii_case(b"connection") => close |= says_close(field.value),
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                lengths += 1;
                body = length(field.value).unwrap_or(usize::MAX);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => coded = true,
            _ => {}
        }
        let (n, v) = (at(name), at(field.value));
        *span = [n, n + name.len() as u32, v, v + field.value.len() as u32];
    }
    // Both framings: refused, as Envoy does (`allow_chunked_length` off),
    // so no reading of the body can differ from the upstream's.
    if coded && lengths > 0 {
        return Err(Miss::Refused);
    }
    if coded || lengths > 1 || body == usize::MAX {
        return Err(Miss::Other);
    }
    Ok(Scanned {
        len,
        method: [
            at(method.as_bytes()),
            at(method.as_bytes()) + method.len() as u32,
        ],
        target: [
            at(target.as_bytes()),
            at(target.as_bytes()) + target.len() as u32,
        ],
        count: req.headers.len(),
        body,
        close,
    })
}

/// A Content-Length the lean server reads whole: plain digits, small.
fn length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 6 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    (n <= WHOLE_BODY).then_some(n as usize)
}

pub(super) fn says_close(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// The request `scan` found, its target and values sharing `head`.
fn request(
    head: &Bytes,
    scanned: &Scanned,
    spans: &[Span],
    spare: &mut HeaderMap,
) -> Option<Request<()>> {
    let part = |[from, to]: [u32; 2]| head.slice(from as usize..to as usize);
    let method = Method::from_bytes(&part(scanned.method)).ok()?;
    let uri = Uri::from_maybe_shared(part(scanned.target)).ok()?;
    let mut headers = std::mem::take(spare);
    headers.reserve(spans.len() + ADDED);
    for &[name, name_end, value, value_end] in spans {
        let field = HeaderName::from_bytes(&head[name as usize..name_end as usize])
            .ok()
            .zip(HeaderValue::from_maybe_shared(part([value, value_end])).ok());
        let Some((name, value)) = field else {
            headers.clear();
            *spare = headers;
            return None;
        };
        headers.append(name, value);
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Some(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take_str(raw: &str) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(raw.as_bytes());
        (take(&mut buf, &mut HeaderMap::new()), buf)
    }

    #[test]
    fn the_common_request_is_taken_with_what_follows_left() {
        let (parsed, rest) = take_str(
            "POST /a?b=c HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 3\r\nConnection: keep-alive, Close\r\n\r\nabcGET",
        );
        let Parsed::Request(head) = parsed else {
            panic!("taken")
        };
        assert_eq!(head.req.method(), Method::POST);
        assert_eq!(head.req.uri().path_and_query().unwrap().as_str(), "/a?b=c");
        assert_eq!(head.req.headers()["host"], "h");
        let all: Vec<_> = head.req.headers().get_all("x-a").iter().collect();
        assert_eq!(all, ["1", "2"]);
        assert_eq!((head.body, head.close), (3, true));
        assert_eq!(&rest[..], b"abcGET");
    }

    #[test]
    fn incomplete_heads_wait() {
        let (parsed, rest) = take_str("GET / HTTP/1.1\r\nHost: h\r\n");
        assert!(matches!(parsed, Parsed::Partial));
        assert_eq!(rest.len(), 25);
    }

    #[test]
    fn everything_else_is_left_whole_for_hyper() {
        for raw in [
            "GET / HTTP/1.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET http://h/ HTTP/1.1\r\nhost: h\r\n\r\n",
            "CONNECT h:443 HTTP/1.1\r\nhost: h:443\r\n\r\n",
            "GET / HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\nab",
            "POST / HTTP/1.1\r\ncontent-length: +1\r\n\r\na",
            "POST / HTTP/1.1\r\ncontent-length: 65537\r\n\r\n",
            "GET / HTTP/1.1\r\nte: trailers\r\n\r\n",
            "GET / HTTP/1.1\r\nx-a: 1\r\n b\r\n\r\n",
            "GET /a\0 HTTP/1.1\r\n\r\n",
            // httparse takes it, `http`'s Uri does not: given back whole.
            "GET /a`b HTTP/1.1\r\nhost: h\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        ] {
            let (parsed, rest) = take_str(raw);
            assert!(matches!(parsed, Parsed::Other), "{raw:?} left to hyper");
            assert_eq!(&rest[..], raw.as_bytes(), "{raw:?} untouched");
        }
    }

    #[test]
    fn both_framings_are_refused() {
        for raw in [
            "POST / HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n0\r\n\r\n",
        ] {
            let (parsed, _) = take_str(raw);
            assert!(matches!(parsed, Parsed::Refused), "{raw:?} refused");
        }
    }
}
