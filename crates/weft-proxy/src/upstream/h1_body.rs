//! An HTTP/1.1 response body read straight off its pooled connection by
//! whoever polls it, as its framing says (a length, chunks, or the
//! connection's end). The connection goes back to its pool the moment the
//! body's last byte is read, not when the body is dropped, so a response
//! the downstream has fully received frees its connection even if the
//! body value lives on a little.

use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use hyper::body::{Frame, SizeHint};
use std::future::Future;

use tokio::io::AsyncReadExt;

use super::h1::{BoxError, Codec, Error, Framing, READ_SIZE};
use super::Pooled;

/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Envoy's default `max_response_headers_kb`, for trailers too.
const MAX_TRAILERS: usize = 60 * 1024;

pub(crate) struct Body {
    /// None once the body has ended (the connection released or closed).
    conn: Option<Box<Pooled>>,
    /// The connection's peer identity and local address, for the log and
    /// metrics (kept here, not in the response's extensions, whose map
    /// cost two allocations per response).
    info: super::ConnInfo,
    state: State,
    /// The connection may carry another request after this body.
    reusable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    Close,
    Done,
}

/// What the bytes read so far give.
enum Step {
    Frame(Frame<Bytes>),
    End,
    NeedMore,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body").field("state", &self.state).finish()
    }
}

impl Body {
    pub(super) fn info(&self) -> &super::ConnInfo {
        &self.info
    }

    pub(super) fn new(conn: Box<Pooled>, framing: Framing, reusable: bool) -> Body {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        let mut body = Body {
            info: conn.info.clone(),
            conn: Some(conn),
            state,
            reusable,
        };
        if state == State::Done {
            body.end();
        }
        body
    }

    /// The body is read: its connection goes back to the pool if it may.
    fn end(&mut self) {
        self.state = State::Done;
        if let Some(conn) = self.conn.take() {
            if self.reusable {
                super::release(conn);
            }
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(Box::new(e))))
    }
}

impl Drop for Body {
    /// A body dropped unread (a retried 5xx, a client gone) closes its
    /// connection, unless what is left of it has already arrived: then it
    /// is skipped and the connection kept.
    fn drop(&mut self) {
        let Some(conn) = self.conn.as_mut().filter(|_| self.reusable) else {
            return;
        };
        loop {
            match step(&mut self.state, &mut conn.codec.buf) {
                Ok(Step::Frame(_)) if self.state != State::Done => {}
                Ok(Step::Frame(_) | Step::End) => return self.end(),
                Ok(Step::NeedMore) | Err(_) => return,
            }
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match step(&mut this.state, &mut conn.codec.buf) {
                Ok(Step::Frame(frame)) => {
                    if this.state == State::Done {
                        this.end();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(Step::End) => {
                    this.end();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(e) => return this.fail(e),
            }
            match ready!(fill(&mut conn.codec, cx)) {
                Ok(0) if this.state == State::Close => {
                    this.reusable = false;
                    this.end();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Error::Protocol("body cut short")),
                Ok(_) => {}
                Err(e) => return this.fail(Error::Io(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

fn fill(codec: &mut Codec, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
    codec.buf.reserve(READ_SIZE);
    pin!(codec.io.read_buf(&mut codec.buf)).poll(cx)
}

/// Decodes what `buf` holds in `state`, up to the next frame.
fn step(state: &mut State, buf: &mut BytesMut) -> Result<Step, Error> {
    loop {
        match *state {
            State::Done => return Ok(Step::End),
            State::Length(0) => return Ok(Step::End),
            State::Length(n) | State::ChunkData(n) if !buf.is_empty() => {
                let take = n.min(buf.len() as u64);
                let data = buf.split_to(take as usize).freeze();
                *state = match (*state, n - take) {
                    (State::Length(_), 0) => State::Done,
                    (State::Length(_), left) => State::Length(left),
                    (_, 0) => State::ChunkEnd,
                    (_, left) => State::ChunkData(left),
                };
                return Ok(Step::Frame(Frame::data(data)));
            }
            State::Close if !buf.is_empty() => {
                return Ok(Step::Frame(Frame::data(buf.split().freeze())));
            }
            State::Length(_) | State::ChunkData(_) | State::Close => return Ok(Step::NeedMore),
            State::ChunkSize => match chunk_size(buf)? {
                None => return Ok(Step::NeedMore),
                Some(0) => *state = State::Trailers,
                Some(n) => *state = State::ChunkData(n),
            },
            State::ChunkEnd => {
                if buf.len() < 2 {
                    return Ok(Step::NeedMore);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(Error::Protocol("chunk not followed by CRLF"));
                }
                buf.advance(2);
                *state = State::ChunkSize;
            }
            State::Trailers => {
                let Some(trailers) = trailers(buf)? else {
                    return Ok(Step::NeedMore);
                };
                *state = State::Done;
                if trailers.is_empty() {
                    return Ok(Step::End);
                }
                return Ok(Step::Frame(Frame::trailers(trailers)));
            }
        }
    }
}

/// A chunk-size line (`1a;ext=v\r\n`), consumed; None until it is whole.
fn chunk_size(buf: &mut BytesMut) -> Result<Option<u64>, Error> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_CHUNK_LINE {
            return Err(Error::Protocol("chunk-size line too long"));
        }
        return Ok(None);
    };
    let line = buf[..end]
        .strip_suffix(b"\r")
        .ok_or(Error::Protocol("chunk-size line not ended by CRLF"))?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    let rest_ok = rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .is_none_or(|i| rest[i] == b';');
    if digits == 0 || digits > 16 || !rest_ok {
        return Err(Error::Protocol("invalid chunk size"));
    }
    let size = std::str::from_utf8(&line[..digits])
        .ok()
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or(Error::Protocol("invalid chunk size"))?;
    buf.advance(end + 1);
    Ok(Some(size))
}

/// The trailer section after the last chunk, up to its empty line,
/// consumed; None until it is whole.
fn trailers(buf: &mut BytesMut) -> Result<Option<HeaderMap>, Error> {
    let mut fields = [httparse::EMPTY_HEADER; 100];
    let (len, fields) = match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(done)) => done,
        Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILERS => {
            return Err(Error::Protocol("trailers over 60 KiB"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Error::Protocol("malformed trailers")),
    };
    let mut map = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes());
        let value = HeaderValue::from_bytes(field.value);
        match (name, value) {
            (Ok(n), Ok(v)) => {
                map.append(n, v);
            }
            _ => return Err(Error::Protocol("invalid trailer field")),
        }
    }
    buf.advance(len);
    Ok(Some(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `piece` bytes: the data, the
    /// trailers, and whether the end was reached.
    fn decode(
        start: State,
        wire: &[u8],
        piece: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>, bool), Error> {
        let mut state = start;
        let mut buf = BytesMut::new();
        let (mut data, mut trailers) = (Vec::new(), None);
        let mut fed = 0;
        loop {
            match step(&mut state, &mut buf)? {
                Step::Frame(f) => match f.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(f) => trailers = f.into_trailers().ok(),
                },
                Step::End => return Ok((data, trailers, true)),
                Step::NeedMore if fed == wire.len() => return Ok((data, trailers, false)),
                Step::NeedMore => {
                    let next = (fed + piece).min(wire.len());
                    buf.extend_from_slice(&wire[fed..next]);
                    fed = next;
                }
            }
            if state == State::Done {
                return Ok((data, trailers, true));
            }
        }
    }

    #[test]
    fn chunks_in_any_pieces() {
        let wire =
            b"5\r\nhello\r\n6;name=\"v\"\r\n world\r\n0\r\nx-trailer: t\r\ngrpc-status: 0\r\n\r\n";
        for piece in [1, 2, 3, 7, wire.len()] {
            let (data, trailers, ended) = decode(State::ChunkSize, wire, piece).unwrap();
            assert_eq!(data, b"hello world", "pieces of {piece}");
            let trailers = trailers.expect("trailers");
            assert_eq!(trailers["x-trailer"], "t");
            assert_eq!(trailers["grpc-status"], "0");
            assert!(ended);
        }
        let (data, trailers, ended) =
            decode(State::ChunkSize, b"3\r\nabc\r\n0\r\n\r\n", 1).unwrap();
        assert_eq!(
            (data.as_slice(), trailers.is_none(), ended),
            (&b"abc"[..], true, true)
        );
    }

    #[test]
    fn broken_chunks_are_refused() {
        for wire in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5 x\r\nhello\r\n",
            b"11111111111111111\r\n",
            b"-5\r\n",
        ] {
            assert!(
                decode(State::ChunkSize, wire, wire.len()).is_err(),
                "{:?} refused",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn a_length_ends_the_body_exactly() {
        let (data, _, ended) = decode(State::Length(5), b"hello", 2).unwrap();
        assert_eq!((data.as_slice(), ended), (&b"hello"[..], true));
        let (data, _, ended) = decode(State::Length(5), b"hel", 2).unwrap();
        assert_eq!((data.as_slice(), ended), (&b"hel"[..], false));
    }
}
