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

use std::time::{Duration, Instant};

use super::body::ReqBody;
use super::idle::IdleTimer;
use super::refused::{self, Refusal};
use super::{Chain, Connection};
use crate::compile::HttpTimeouts;
use crate::drain::Watch;
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

/// Answers `refusal` and closes.
async fn refuse<S: AsyncWrite + Unpin>(io: &mut S, refusal: Refusal) {
    let _ = io.write_all(refusal.answer()).await;
    let _ = io.shutdown().await;
}

/// What comes next on the connection (see `head::Parsed` for its size).
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(head::Head),
    /// hyper serves the rest.
    Hyper,
    /// The client closed (or broke) the connection.
    Closed,
    /// A head refused whole (400), or one the client stopped sending
    /// (408): the answer, then the close.
    Refused(Refusal),
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
    let mut idle = Idle {
        timer: IdleTimer::new(chain.timeouts.idle),
        drain: Watch::new(&shared.drain),
    };
    // While a request waits for its response.
    let mut stall = IdleTimer::new(chain.timeouts.stream_idle);
    loop {
        let waiting = next_head(&mut io, &mut buf, &mut spare, &chain.timeouts, &mut idle);
        let head = match waiting.await {
            Next::Request(head) => head,
            Next::Hyper => {
                let io = rewind::Rewind::new(buf.freeze(), io);
                drop(idle);
                return super::serve_hyper(io, conn, chain, shared).await;
            }
            Next::Closed => return,
            Next::Refused(refusal) => {
                refused::log(refusal, refusal.body_len(), None, &conn, &chain, &shared);
                return refuse(&mut io, refusal).await;
            }
        };
        match read_body(&mut io, &mut buf, head.body, chain.timeouts.stream_idle).await {
            Some(true) => {}
            Some(false) => return,
            None => {
                let idle = Refusal::StreamIdle;
                refused::log(
                    idle,
                    idle.body_len(),
                    Some(head.req),
                    &conn,
                    &chain,
                    &shared,
                );
                return refuse(&mut io, idle).await;
            }
        }
        let body = ReqBody::Whole(Full::new(buf.split_to(head.body).freeze()));
        let req = head.req.map(|()| body);
        let to_head = req.method() == Method::HEAD;
        let handling = super::handle(req, &conn, &chain, &shared, Some(&mut stall));
        let handling = std::pin::pin!(handling);
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
            !head.close && !shared.drain.is_draining(),
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

/// What ends a connection between its requests.
struct Idle<'a> {
    /// The connection manager's idle timeout.
    timer: IdleTimer,
    drain: Watch<'a>,
}

async fn next_head<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    spare: &mut HeaderMap,
    timeouts: &HttpTimeouts,
    idle: &mut Idle<'_>,
) -> Next {
    // When the head's first byte came: the headers timeout runs from it.
    let mut begun = (!buf.is_empty()).then(Instant::now);
    loop {
        if !buf.is_empty() {
            match head::take(buf, spare) {
                Parsed::Request(head) => return Next::Request(head),
                Parsed::Other => return Next::Hyper,
                Parsed::Refused => return Next::Refused(Refusal::Framing),
                Parsed::Partial => {}
            }
        }
        room(buf);
        // Between requests the connection's idle timeout holds; within
        // a head, the stream's and the headers'.
        let read = match begun {
            None => {
                let since = tokio::time::Instant::now();
                tokio::select! {
                    biased;
                    read = io.read_buf(buf) => read,
                    () = idle.timer.expired(since) => return Next::Closed,
                    // An idle connection closes as the drain begins.
                    () = idle.drain.begun() => return Next::Closed,
                }
            }
            Some(at) => {
                let (limit, answer) = head_limit(timeouts, at);
                match within(limit, io.read_buf(buf)).await {
                    Some(read) => read,
                    None => return answer.map_or(Next::Closed, Next::Refused),
                }
            }
        };
        if !matches!(read, Ok(n) if n > 0) {
            return Next::Closed;
        }
        begun.get_or_insert_with(Instant::now);
    }
}

/// How long a started head may wait for its next bytes, and the answer
/// when it has waited that long.
fn head_limit(t: &HttpTimeouts, begun: Instant) -> (Option<Duration>, Option<Refusal>) {
    let headers = t.headers.map(|d| d.saturating_sub(begun.elapsed()));
    match (t.stream_idle, headers) {
        (Some(idle), Some(left)) if left < idle => (Some(left), Some(Refusal::HeaderTimeout)),
        (Some(idle), _) => (Some(idle), Some(Refusal::StreamIdle)),
        (None, Some(left)) => (Some(left), Some(Refusal::HeaderTimeout)),
        (None, None) => (None, None),
    }
}

/// `read` within `limit`; None when the time ran out first.
async fn within<F: std::future::Future>(limit: Option<Duration>, read: F) -> Option<F::Output> {
    match limit {
        None => Some(read.await),
        Some(limit) => tokio::time::timeout(limit, read).await.ok(),
    }
}

fn room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < MIN_READ {
        buf.reserve(READ_SIZE);
    }
}

/// Reads until the declared body is in the buffer: false if the client
/// left first, None if it sent nothing for `idle`.
async fn read_body<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    len: usize,
    idle: Option<Duration>,
) -> Option<bool> {
    while buf.len() < len {
        buf.reserve(len - buf.len());
        match within(idle, io.read_buf(buf)).await? {
            Ok(n) if n > 0 => {}
            _ => return Some(false),
        }
    }
    Some(true)
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
