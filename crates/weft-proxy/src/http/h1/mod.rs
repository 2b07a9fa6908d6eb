//! The lean HTTP/1.1 server: the downstream side of the common request
//! (keep-alive, no body or a small declared one) without hyper's
//! dispatcher between the socket and the request path. The connection's
//! task reads a head, handles the request, and writes the response itself;
//! callgrind put hyper's server at 11.6k of a plain route's 37.7k
//! instructions per request (issue 11). Any other request — an upgrade,
//! `Expect`, a streamed upload, HTTP/1.0, HTTP/2's preface, a head hyper
//! would refuse — hands the connection to hyper from that request on, the
//! bytes already read included, so those answers are hyper's as before.

mod head;
mod respond;
mod rewind;

use std::sync::Arc;

use bytes::BytesMut;
use http::{HeaderMap, Method};
use http_body_util::Full;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::body::ReqBody;
use super::{Chain, Connection};
use crate::Shared;
use head::Parsed;

/// The buffer's size when it is (re)allocated.
const READ_SIZE: usize = 16 * 1024;
/// A read gets at least this much room: the buffer is reallocated only
/// when less is left (asking for `READ_SIZE` every time reallocated it
/// per request, the taken heads still holding the old one).
const MIN_READ: usize = 2048;
/// Bytes of pipelined requests read ahead while one is handled.
const READ_AHEAD: usize = 64 * 1024;

/// The answer to a head refused whole, as hyper words its own 400s.
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// What comes next on the connection (see `head::Parsed` for its size).
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(head::Head),
    /// hyper serves the rest.
    Hyper,
    /// The client closed (or broke) the connection.
    Closed,
    /// A head refused whole: 400, then the close.
    Refused,
}

pub(super) async fn serve<S>(
    mut io: S,
    conn: Arc<Connection>,
    chain: Arc<Chain>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let mut out = Vec::new();
    let mut spare = HeaderMap::new();
    loop {
        let head = match next_head(&mut io, &mut buf, &mut spare).await {
            Next::Request(head) => head,
            Next::Hyper => {
                let io = rewind::Rewind::new(buf.freeze(), io);
                return super::serve_hyper(io, conn, chain, shared).await;
            }
            Next::Closed => return,
            Next::Refused => {
                let _ = io.write_all(BAD_REQUEST).await;
                let _ = io.shutdown().await;
                return;
            }
        };
        if !read_body(&mut io, &mut buf, head.body).await {
            return;
        }
        let body = ReqBody::Whole(Full::new(buf.split_to(head.body).freeze()));
        let req = head.req.map(|()| body);
        let to_head = req.method() == Method::HEAD;
        let handling = std::pin::pin!(super::handle(req, &conn, &chain, &shared));
        // A client that leaves while its request is handled ends the
        // request (logged `DC`), as hyper's server did.
        let response = tokio::select! {
            biased;
            r = handling => r,
            () = client_gone(&mut io, &mut buf) => return,
        };
        match respond::respond(
            &mut io,
            &mut out,
            &mut spare,
            response,
            to_head,
            !head.close,
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => {
                let _ = io.shutdown().await;
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "downstream connection ended with an error");
                return;
            }
        }
    }
}

async fn next_head<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    spare: &mut HeaderMap,
) -> Next {
    loop {
        if !buf.is_empty() {
            match head::take(buf, spare) {
                Parsed::Request(head) => return Next::Request(head),
                Parsed::Other => return Next::Hyper,
                Parsed::Refused => return Next::Refused,
                Parsed::Partial => {}
            }
        }
        room(buf);
        match io.read_buf(buf).await {
            Ok(0) | Err(_) => return Next::Closed,
            Ok(_) => {}
        }
    }
}

fn room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < MIN_READ {
        buf.reserve(READ_SIZE);
    }
}

/// Reads until the declared body is in the buffer; false if the client
/// left first.
async fn read_body<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut, len: usize) -> bool {
    while buf.len() < len {
        buf.reserve(len - buf.len());
        if !matches!(io.read_buf(buf).await, Ok(n) if n > 0) {
            return false;
        }
    }
    true
}

/// Resolves when the client closes or breaks the connection; what it
/// pipelines meanwhile is kept, up to `READ_AHEAD`.
async fn client_gone<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut) {
    while buf.len() < READ_AHEAD {
        room(buf);
        if !matches!(io.read_buf(buf).await, Ok(n) if n > 0) {
            return;
        }
    }
    std::future::pending().await
}
