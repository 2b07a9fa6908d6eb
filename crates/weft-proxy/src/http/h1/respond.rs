//! The lean server's responses: the head and as much of the body as is
//! ready go out in one write; a body still arriving is flushed as it
//! comes. Framing is chosen here, as hyper's server chose it: the body's
//! exact length when known, else a declared `Content-Length`, else
//! chunked; no body for HEAD, 1xx, 204 and 304.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::response::Parts;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::http::Body;

/// Body chunks larger than this are written as they are, not copied.
const COPY_LIMIT: usize = 16 * 1024;
/// What is gathered goes out at this size even if more of the body is
/// ready (a body already in the upstream's socket would otherwise be
/// gathered whole).
const FLUSH_AT: usize = 64 * 1024;
/// A write buffer grown past this is not kept for the next response.
const KEEP_OUT: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Nothing follows the head.
    None,
    Length(u64),
    Chunked,
}

/// A map this large is not kept for the next request.
const SPARE_LIMIT: usize = 64;

/// Writes `resp` to the client; whether the connection may carry another
/// request after it. The response's header map, emptied, is left in
/// `spare` for the next request's head.
pub(super) async fn respond<S>(
    io: &mut S,
    out: &mut Vec<u8>,
    spare: &mut HeaderMap,
    resp: Response<Body>,
    to_head: bool,
    keep_alive: bool,
) -> io::Result<bool>
where
    S: AsyncWrite + Unpin,
{
    let (mut parts, mut body) = resp.into_parts();
    out.clear();
    let (framing, keep_alive) = encode_head(out, &parts, &body, to_head, keep_alive);
    if parts.headers.capacity() <= SPARE_LIMIT {
        parts.headers.clear();
        *spare = parts.headers;
    }
    let mut sent = 0u64;
    if framing != Framing::None {
        loop {
            let frame = match next_frame(&mut body, io, out).await? {
                None => break,
                Some(Ok(frame)) => frame,
                // The upstream failed mid-body: the client sees the
                // response cut short, as from hyper.
                Some(Err(e)) => return Err(io::Error::other(e)),
            };
            let Ok(data) = frame.into_data() else {
                // Trailers are not sent over HTTP/1.1.
                continue;
            };
            sent += data.len() as u64;
            if matches!(framing, Framing::Length(n) if sent > n) {
                return Err(io::Error::other("response body longer than its length"));
            }
            put_data(io, out, data, framing == Framing::Chunked).await?;
        }
        match framing {
            Framing::Length(n) if sent != n => {
                return Err(io::Error::other("response body shorter than its length"))
            }
            Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
            _ => {}
        }
    }
    // The body ends (its record is written) before the client has it all.
    drop(body);
    flush(io, out).await?;
    if out.capacity() > KEEP_OUT {
        *out = Vec::new();
    }
    Ok(keep_alive)
}

/// The next frame of `body`; what is written so far goes out first if
/// the frame is not ready yet.
async fn next_frame<S: AsyncWrite + Unpin>(
    body: &mut Body,
    io: &mut S,
    out: &mut Vec<u8>,
) -> io::Result<Option<Result<Frame<Bytes>, crate::upstream::BoxError>>> {
    let mut next = pin!(body.frame());
    let polled = next
        .as_mut()
        .poll(&mut Context::from_waker(std::task::Waker::noop()));
    if let Poll::Ready(frame) = polled {
        return Ok(frame);
    }
    flush(io, out).await?;
    Ok(next.await)
}

async fn put_data<S: AsyncWrite + Unpin>(
    io: &mut S,
    out: &mut Vec<u8>,
    data: Bytes,
    chunked: bool,
) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    if chunked {
        crate::text::push_hex(out, data.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    if data.len() > COPY_LIMIT {
        flush(io, out).await?;
        io.write_all(&data).await?;
    } else {
        out.extend_from_slice(&data);
    }
    if chunked {
        out.extend_from_slice(b"\r\n");
    }
    if out.len() >= FLUSH_AT {
        flush(io, out).await?;
    }
    Ok(())
}

async fn flush<S: AsyncWrite + Unpin>(io: &mut S, out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        io.write_all(out).await?;
        out.clear();
    }
    io.flush().await
}

/// The status line and fields; the framing chosen, and whether the
/// connection stays open.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &Parts,
    body: &Body,
    to_head: bool,
    mut keep_alive: bool,
) -> (Framing, bool) {
    let status = parts.status;
    let headers = &parts.headers;
    let bodiless = status.is_informational() || status == StatusCode::NO_CONTENT;
    let exact = body.size_hint().exact();
    let declared = || {
        let value = headers.get(CONTENT_LENGTH)?.to_str().ok()?;
        value.parse::<u64>().ok()
    };
    // What the head says of the body, and how the body is sent.
    let (length, framing) = if bodiless {
        (None, Framing::None)
    } else if to_head || status == StatusCode::NOT_MODIFIED {
        // The length the body would have, as the upstream declared it.
        let length = if headers.contains_key(CONTENT_LENGTH) {
            None
        } else {
            exact.filter(|&n| n > 0)
        };
        (length, Framing::None)
    } else if let Some(n) = exact {
        (Some(n), Framing::Length(n))
    } else if let Some(n) = declared() {
        (Some(n), Framing::Length(n))
    } else {
        (None, Framing::Chunked)
    };
    keep_alive &= !headers
        .get_all(CONNECTION)
        .iter()
        .any(|v| super::head::says_close(v.as_bytes()));
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let ours = length.is_some() || bodiless;
    for (name, value) in headers {
        if name == TRANSFER_ENCODING || (ours && name == CONTENT_LENGTH) {
            continue;
        }
        push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(n) = length {
        out.extend_from_slice(b"content-length: ");
        crate::text::push_u64(out, n);
        out.extend_from_slice(b"\r\n");
    }
    if framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !keep_alive && !headers.contains_key(CONNECTION) {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !headers.contains_key(DATE) {
        out.extend_from_slice(b"date: ");
        crate::text::push_http_date(out, SystemTime::now());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, keep_alive)
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, Full};

    fn body_of(data: Option<&'static str>) -> Body {
        match data {
            Some(d) => {
                Body::new(Full::new(Bytes::from_static(d.as_bytes())).map_err(|e| match e {}))
            }
            None => Body::new(Empty::new().map_err(|e| match e {})),
        }
    }

    /// A body of unknown length, in these pieces.
    struct Pieces(std::collections::VecDeque<&'static str>);

    impl hyper::body::Body for Pieces {
        type Data = Bytes;
        type Error = crate::upstream::BoxError;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            let next = self.get_mut().0.pop_front();
            Poll::Ready(next.map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes())))))
        }
    }

    fn unsized_body(pieces: &[&'static str]) -> Body {
        Body::new(Pieces(pieces.iter().copied().collect()))
    }

    async fn wire(resp: Response<Body>, to_head: bool, keep_alive: bool) -> (String, bool) {
        let (mut out, mut sent) = (Vec::new(), Vec::new());
        let kept = respond(
            &mut sent,
            &mut out,
            &mut HeaderMap::new(),
            resp,
            to_head,
            keep_alive,
        )
        .await
        .unwrap();
        let text = String::from_utf8(sent).unwrap();
        // The date varies; its presence is checked once.
        assert!(text.contains("\r\ndate: "), "{text}");
        let text = text
            .split("\r\n")
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\r\n");
        (text, kept)
    }

    fn response(status: u16, headers: &[(&str, &str)], body: Body) -> Response<Body> {
        let mut r = Response::builder().status(status);
        for (n, v) in headers {
            r = r.header(*n, *v);
        }
        r.body(body).unwrap()
    }

    #[tokio::test]
    async fn framing_as_hyper_chose_it() {
        let ok = wire(
            response(200, &[("x-a", "1")], body_of(Some("hello"))),
            false,
            true,
        )
        .await;
        assert_eq!(
            ok.0,
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\n\r\nhello"
        );
        assert!(ok.1);
        let empty = wire(response(200, &[], body_of(None)), false, true).await;
        assert_eq!(empty.0, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        let chunked = wire(
            response(
                200,
                &[("transfer-encoding", "chunked")],
                unsized_body(&["ab", "", "cde"]),
            ),
            false,
            true,
        )
        .await;
        assert_eq!(
            chunked.0,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
        );
        let declared = wire(
            response(200, &[("content-length", "3")], unsized_body(&["ab", "c"])),
            false,
            true,
        )
        .await;
        assert_eq!(
            declared.0,
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc"
        );
    }

    #[tokio::test]
    async fn bodiless_answers_keep_the_declared_length() {
        let head = wire(
            response(200, &[("content-length", "42")], body_of(None)),
            true,
            true,
        )
        .await;
        assert_eq!(head.0, "HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n");
        let local = wire(response(503, &[], body_of(Some("busy"))), true, true).await;
        assert_eq!(
            local.0,
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\n"
        );
        let none = wire(
            response(204, &[("content-length", "0")], body_of(None)),
            false,
            true,
        )
        .await;
        assert_eq!(none.0, "HTTP/1.1 204 No Content\r\n\r\n");
    }

    #[tokio::test]
    async fn closing_is_said_and_heard() {
        let asked = wire(response(200, &[], body_of(None)), false, false).await;
        assert_eq!(
            asked.0,
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        assert!(!asked.1);
        let told = wire(
            response(200, &[("connection", "close")], body_of(None)),
            false,
            true,
        )
        .await;
        assert_eq!(
            told.0,
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
        );
        assert!(!told.1);
    }

    #[tokio::test]
    async fn a_body_unlike_its_length_fails_the_connection() {
        let (mut out, mut sent) = (Vec::new(), Vec::new());
        let short = response(200, &[("content-length", "9")], unsized_body(&["ab"]));
        assert!(respond(
            &mut sent,
            &mut out,
            &mut HeaderMap::new(),
            short,
            false,
            true
        )
        .await
        .is_err());
    }
}
