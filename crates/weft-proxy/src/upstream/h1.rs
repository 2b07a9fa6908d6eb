//! A lean HTTP/1.1 client for the pooled upstream connections. The task
//! that handles a request writes it and reads the response head itself;
//! the response body is read by whoever polls it (the downstream
//! connection's task). hyper's client puts a connection task and two
//! channels between the request and the socket, and issue 11's profile
//! found that handoff the largest structural cost of the request path.
//!
//! Parsing is httparse's, the parser hyper itself uses, and framing
//! follows RFC 9112 §6.3 strictly: a response with Transfer-Encoding is
//! read by it (and its connection closed after, when Content-Length came
//! too), Content-Length values must agree, a response without either is
//! read to the connection's end, and responses to HEAD, 1xx, 204 and 304
//! have no body.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::pin;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use hyper::body::Body as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::stream::UpStream;
use crate::router::body::UpBody;

/// Envoy's default `max_response_headers_kb`.
const MAX_HEAD: usize = 60 * 1024;
/// Envoy's default `max_headers_count`.
const MAX_HEADERS: usize = 100;
/// Fields the response path may add (`x-envoy-upstream-service-time`, the
/// metadata exchange, a route's response headers) without the map growing.
const ADDED: usize = 6;
/// Body chunks larger than this are written as they are, not copied.
const COPY_LIMIT: usize = 16 * 1024;
/// How much a read asks for at least.
pub(super) const READ_SIZE: usize = 16 * 1024;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum Error {
    /// The connection failed before any byte of a response came back.
    Io(io::Error),
    /// The connection failed after an interim (1xx) response.
    Broken(io::Error),
    /// The upstream closed the connection before a whole response head.
    Closed { got_bytes: bool },
    /// The response (head or body framing) broke HTTP/1.1.
    Protocol(&'static str),
    /// Reading the request body from the client failed.
    RequestBody(hyper::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) | Error::Broken(e) => write!(f, "upstream connection: {e}"),
            Error::Closed { .. } => f.write_str("upstream closed the connection before a response"),
            Error::Protocol(what) => write!(f, "upstream response: {what}"),
            Error::RequestBody(e) => write!(f, "request body: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl Error {
    /// Whether the request surely never reached the upstream's application:
    /// the connection was gone before any byte of a response came back.
    pub(crate) fn before_response(&self) -> bool {
        match self {
            Error::Io(_) => true,
            Error::Closed { got_bytes } => !got_bytes,
            Error::Broken(_) | Error::Protocol(_) | Error::RequestBody(_) => false,
        }
    }
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Read to the connection's end.
    Close,
}

/// A response head and what follows it.
pub(crate) struct Head {
    pub parts: http::response::Parts,
    pub framing: Framing,
    /// The connection may carry another request once the body is read.
    pub keep_alive: bool,
}

/// One HTTP/1.1 connection's codec: the socket, bytes read and not yet
/// consumed, and the buffer requests are written from.
pub(crate) struct Codec {
    pub(super) io: UpStream,
    pub(super) buf: BytesMut,
    out: Vec<u8>,
}

impl Codec {
    pub fn new(io: UpStream) -> Codec {
        Codec {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
        }
    }

    /// Whether an idle connection can still be used: the upstream has not
    /// closed it nor sent anything unasked. Costs no syscall unless the
    /// socket became readable since it was last read.
    pub fn usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        if let UpStream::Plain(tcp) = &self.io {
            if tcp.poll_read_ready(&mut cx).is_pending() {
                return true;
            }
        }
        self.buf.reserve(READ_SIZE);
        let read = pin!(self.io.read_buf(&mut self.buf));
        // Pending: nothing to read, the connection is open (a TLS stream
        // may have consumed a session ticket on the way).
        matches!(read.poll(&mut cx), Poll::Pending)
    }

    /// Sends the request of `parts` and `body`, and reads the response
    /// head (skipping interim 1xx responses).
    pub async fn exchange(
        &mut self,
        parts: &http::request::Parts,
        body: UpBody,
    ) -> Result<Head, Error> {
        let failed = match self.write_request(parts, body).await {
            Ok(()) => None,
            Err(e @ (Error::RequestBody(_) | Error::Protocol(_))) => return Err(e),
            Err(e) => Some(e),
        };
        let mut interim = false;
        loop {
            let head = match self.read_head(&parts.method).await {
                // An upstream that answered (early, a 413 say) and closed
                // while the request was still being written: its answer,
                // if it came whole, goes back, on a connection not kept.
                Ok(mut head) => {
                    head.keep_alive &= failed.is_none();
                    head
                }
                Err(e) => {
                    return Err(match (failed, e) {
                        (Some(first), _) => first,
                        // A response had begun (1xx): the upstream saw the
                        // request.
                        (None, Error::Io(e)) if interim => Error::Broken(e),
                        (None, Error::Closed { .. }) if interim => {
                            Error::Closed { got_bytes: true }
                        }
                        (None, e) => e,
                    });
                }
            };
            match head.parts.status.as_u16() {
                101 => return Err(Error::Protocol("101 to a request that asked no upgrade")),
                100..=199 => interim = true,
                _ => return Ok(head),
            }
        }
    }

    async fn write_request(
        &mut self,
        parts: &http::request::Parts,
        mut body: UpBody,
    ) -> Result<(), Error> {
        let length = body.size_hint().exact();
        let chunked = length.is_none();
        self.out.clear();
        encode_head(&mut self.out, parts, length);
        let mut sent = 0u64;
        while !body.is_end_stream() {
            let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx));
            let frame = match frame.await {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Err(Error::RequestBody(e)),
            };
            // Trailers are not sent upstream over HTTP/1.1 (as hyper's
            // client did without a `Trailer` header, which is hop-by-hop).
            let Ok(data) = frame.into_data() else {
                continue;
            };
            sent += data.len() as u64;
            // A body must be what its head says: more would be a second
            // request on the connection.
            if length.is_some_and(|n| sent > n) {
                return Err(Error::Protocol("request body longer than its length"));
            }
            self.put_data(data, chunked).await?;
            if !body.is_end_stream() {
                // Streamed: what has come goes now.
                self.flush_out().await?;
            }
        }
        if length.is_some_and(|n| sent != n) {
            return Err(Error::Protocol("request body shorter than its length"));
        }
        if chunked {
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
        self.flush_out().await
    }

    async fn put_data(&mut self, data: Bytes, chunked: bool) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        if chunked {
            crate::text::push_hex(&mut self.out, data.len() as u64);
            self.out.extend_from_slice(b"\r\n");
        }
        if data.len() > COPY_LIMIT {
            self.flush_out().await?;
            self.io.write_all(&data).await?;
        } else {
            self.out.extend_from_slice(&data);
        }
        if chunked {
            self.out.extend_from_slice(b"\r\n");
        }
        Ok(())
    }

    async fn flush_out(&mut self) -> Result<(), Error> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.out.clear();
        }
        self.io.flush().await?;
        Ok(())
    }

    async fn read_head(&mut self, method: &Method) -> Result<Head, Error> {
        loop {
            if let Some(head) = take_head(&mut self.buf, method)? {
                return Ok(head);
            }
            self.buf.reserve(READ_SIZE);
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(Error::Closed {
                    got_bytes: !self.buf.is_empty(),
                });
            }
        }
    }
}

/// Room for a response's header fields, left uninitialised until parsed
/// (a sync function's stack: it never sits in a future's state).
type Fields<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

/// Parses the response head at the start of `buf` into `resp`: its length
/// once it is whole.
fn parse<'h, 'b>(
    buf: &'b [u8],
    resp: &mut httparse::Response<'h, 'b>,
    fields: &'h mut Fields<'b>,
) -> Result<Option<usize>, Error> {
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(resp, buf, fields) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            Err(Error::Protocol("response headers over 60 KiB"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            Err(Error::Protocol("more than 100 response headers"))
        }
        Err(_) => Err(Error::Protocol("malformed response head")),
    }
}

/// Where a field's name and value lie in the head: name start and end,
/// value start and end.
type Span = [u32; 4];

/// What one parse of a whole response head found besides its fields.
struct Scanned {
    len: usize,
    code: u16,
    version: Option<u8>,
    count: usize,
}

/// Takes the response head off the front of `buf` once it is whole. It is
/// parsed once: the fields' places are kept, so that the values share the
/// head's bytes once it is split off (parsing twice was 4% of a request's
/// instructions, callgrind). A sync function: the spans stay on its stack,
/// never in a future's state.
fn take_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut spans = [[0; 4]; MAX_HEADERS];
    let Some(scanned) = scan(buf, &mut spans)? else {
        return Ok(None);
    };
    let head = buf.split_to(scanned.len).freeze();
    head_of(&head, &scanned, &spans[..scanned.count], method).map(Some)
}

/// Parses the head at the start of `buf`, its fields' places into `spans`.
fn scan(buf: &[u8], spans: &mut [Span; MAX_HEADERS]) -> Result<Option<Scanned>, Error> {
    let mut fields: Fields<'_> = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let Some(len) = parse(buf, &mut resp, &mut fields)? else {
        return Ok(None);
    };
    // httparse's slices point into `buf`; MAX_HEAD keeps them in u32.
    let at = |part: &[u8]| (part.as_ptr() as usize - buf.as_ptr() as usize) as u32;
    for (span, field) in spans.iter_mut().zip(resp.headers.iter()) {
        let (name, value) = (at(field.name.as_bytes()), at(field.value));
        *span = [
            name,
            name + field.name.len() as u32,
            value,
            value + field.value.len() as u32,
        ];
    }
    Ok(Some(Scanned {
        len,
        code: resp.code.unwrap_or(0),
        version: resp.version,
        count: resp.headers.len(),
    }))
}

/// The request line, the headers, and the framing Weft chose: the body's
/// length when known, chunked otherwise. The client's own framing headers
/// are not forwarded (hop-by-hop, or restated here).
fn encode_head(out: &mut Vec<u8>, parts: &http::request::Parts, length: Option<u64>) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut declared = false;
    for (name, value) in &parts.headers {
        if name == TRANSFER_ENCODING {
            continue;
        }
        if name == CONTENT_LENGTH {
            declared = true;
            continue;
        }
        push_field(out, name, value);
    }
    match length {
        // A request without a body and without a declared length has none
        // (RFC 9112 §6.3); methods that expect one say zero.
        Some(0) if !declared && !expects_body(&parts.method) => {}
        Some(n) => {
            out.extend_from_slice(b"content-length: ");
            crate::text::push_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

fn expects_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

fn push_field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// Header maps of finished requests, emptied, for the next response
    /// heads read on this worker: a request's map is dropped when its
    /// response arrives, and a fresh map per response (1.7 KB, past the
    /// allocator's small-size cache) cost ~900 instructions to make and
    /// free (callgrind).
    static SPARE: std::cell::RefCell<Vec<HeaderMap>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// At most this many maps are kept per worker, each of at most
/// `SPARE_ENTRIES` entries' room (a request with many headers is not kept).
const SPARES: usize = 16;
const SPARE_ENTRIES: usize = 64;

/// Keeps a finished request's header map for a later response.
pub(crate) fn recycle(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > SPARE_ENTRIES {
        return;
    }
    map.clear();
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARES {
            spare.push(map);
        }
    });
}

/// An empty map with room for `n` entries, kept or new.
fn map_for(n: usize) -> HeaderMap {
    match SPARE.with(|spare| spare.borrow_mut().pop()) {
        Some(mut map) => {
            map.reserve(n);
            map
        }
        None => HeaderMap::with_capacity(n),
    }
}

/// The response head in `head`, as `scan` found it, its header values
/// sharing its bytes.
fn head_of(
    head: &Bytes,
    scanned: &Scanned,
    spans: &[Span],
    method: &Method,
) -> Result<Head, Error> {
    let status =
        StatusCode::from_u16(scanned.code).map_err(|_| Error::Protocol("invalid status code"))?;
    let version = match scanned.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Room for what the response path adds; the map then serves as the
    // next request's on a lean HTTP/1.1 downstream (`http::h1`).
    let mut headers = map_for(scanned.count + ADDED);
    for &[name, name_end, value, value_end] in spans {
        let name = HeaderName::from_bytes(&head[name as usize..name_end as usize])
            .map_err(|_| Error::Protocol("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value as usize..value_end as usize))
            .map_err(|_| Error::Protocol("invalid header value"))?;
        headers.append(name, value);
    }
    let (framing, keep_alive) = framing(method, status, version, &mut headers)?;
    let mut response = http::Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Head {
        parts: response.into_parts().0,
        framing,
        keep_alive,
    })
}

/// How the body is delimited, and whether the connection stays open.
fn framing(
    method: &Method,
    status: StatusCode,
    version: Version,
    headers: &mut HeaderMap,
) -> Result<(Framing, bool), Error> {
    let mut keep_alive = keeps_alive(version, headers);
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, keep_alive));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(Error::Protocol("transfer-encoding in an HTTP/1.0 response"));
        }
        // Both framings: Transfer-Encoding wins, the length is dropped and
        // the connection not reused (RFC 9112 §6.3).
        if headers.remove(CONTENT_LENGTH).is_some() {
            keep_alive = false;
        }
        return Ok(if last_coding_is_chunked(headers) {
            (Framing::Chunked, keep_alive)
        } else {
            (Framing::Close, false)
        });
    }
    match content_length(headers)? {
        Some(0) => Ok((Framing::Empty, keep_alive)),
        Some(n) => Ok((Framing::Length(n), keep_alive)),
        None => Ok((Framing::Close, false)),
    }
}

fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &str| {
        headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match version {
        Version::HTTP_10 => has("keep-alive"),
        _ => !has("close"),
    }
}

fn last_coding_is_chunked(headers: &HeaderMap) -> bool {
    let last = headers.get_all(TRANSFER_ENCODING).iter().next_back();
    last.and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
}

/// The declared length: every value (lines and comma-separated items)
/// must be the same number of digits.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let text = value
            .to_str()
            .map_err(|_| Error::Protocol("invalid content-length"))?;
        for item in text.split(',') {
            let item = item.trim();
            let valid =
                !item.is_empty() && item.len() <= 19 && item.bytes().all(|b| b.is_ascii_digit());
            let n: u64 = match valid.then(|| item.parse().ok()).flatten() {
                Some(n) => n,
                None => return Err(Error::Protocol("invalid content-length")),
            };
            if length.is_some_and(|l| l != n) {
                return Err(Error::Protocol("conflicting content-length values"));
            }
            length = Some(n);
        }
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(method: Method, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut req = Request::builder().method(method).uri(uri);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        req.body(()).unwrap().into_parts().0
    }

    fn head(method: Method, uri: &str, headers: &[(&str, &str)], length: Option<u64>) -> String {
        let mut out = Vec::new();
        encode_head(&mut out, &parts(method, uri, headers), length);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn requests_say_their_framing_once() {
        assert_eq!(
            head(Method::GET, "/a?b=c", &[("host", "h")], Some(0)),
            "GET /a?b=c HTTP/1.1\r\nhost: h\r\n\r\n"
        );
        assert_eq!(
            head(Method::POST, "/", &[("content-length", "0")], Some(0)),
            "POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(
            head(Method::PUT, "/", &[], Some(0)),
            "PUT / HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
        );
        // The client's own framing headers are not repeated.
        assert_eq!(
            head(
                Method::POST,
                "/",
                &[("transfer-encoding", "chunked"), ("content-length", "9")],
                Some(3)
            ),
            "POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\n"
        );
        assert_eq!(
            head(Method::POST, "/", &[], None),
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    fn parse(raw: &str, method: Method) -> Result<Head, Error> {
        let mut raw = BytesMut::from(raw.as_bytes());
        take_head(&mut raw, &method)?.ok_or(Error::Protocol("incomplete response head"))
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cases: &[(&str, Method, Framing, bool)] = &[
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                Method::GET,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\ncontent-length: 5\r\n\r\n",
                Method::GET,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
                Method::GET,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                Method::HEAD,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
                Method::GET,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\n\r\n",
                Method::GET,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                Method::GET,
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
                Method::GET,
                Framing::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
                Method::GET,
                Framing::Close,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\n\r\n",
                Method::GET,
                Framing::Close,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
                Method::GET,
                Framing::Length(1),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n",
                Method::GET,
                Framing::Length(1),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 1\r\n\r\n",
                Method::GET,
                Framing::Length(1),
                true,
            ),
        ];
        for (raw, method, framing, keep_alive) in cases {
            let head = parse(raw, method.clone()).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
            assert_eq!(
                (head.framing, head.keep_alive),
                (*framing, *keep_alive),
                "{raw:?}"
            );
        }
        let both = parse(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
            Method::GET,
        )
        .unwrap();
        assert!(
            !both.parts.headers.contains_key(CONTENT_LENGTH),
            "the length is dropped"
        );
    }

    #[test]
    fn ambiguous_lengths_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw, Method::GET), Err(Error::Protocol(_))),
                "{raw:?} refused"
            );
        }
    }

    #[test]
    fn header_values_share_the_head() {
        let head = parse(
            "HTTP/1.1 503 Service Unavailable\r\nServer: up\r\nX-A: 1\r\nx-a: 2\r\ncontent-length: 0\r\n\r\n",
            Method::GET,
        )
        .unwrap();
        assert_eq!(head.parts.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(head.parts.headers["server"], "up");
        let all: Vec<_> = head.parts.headers.get_all("x-a").iter().collect();
        assert_eq!(all, ["1", "2"]);
    }
}
