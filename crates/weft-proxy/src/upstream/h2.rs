//! HTTP/2 (h2c) connections to upstream endpoints, one multiplexed
//! connection per peer per worker thread, as Envoy's HTTP/2 pool keeps
//! one per worker: every request is a stream on it, so the cluster's
//! `max_requests` (Istio's `http2MaxRequests`) is what limits concurrency.
//! A connection that closed (or went away) is replaced on the next
//! request; one past `max_requests_per_connection`, its maximum age or the
//! idle timeout takes no new stream and closes when its streams are done.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use http::header::HOST;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::{connect, Breaker, Peer, UpstreamError};
use crate::router::body::UpBody;

/// HTTP/2 settings of a cluster (`http2_protocol_options`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Http2 {
    pub initial_stream_window: Option<u32>,
    pub initial_connection_window: Option<u32>,
    /// PING every this often; no answer within `keepalive_timeout` closes.
    pub keepalive_interval: Option<std::time::Duration>,
    pub keepalive_timeout: Option<std::time::Duration>,
}

struct Conn {
    sender: SendRequest<UpBody>,
    served: u32,
    opened: Instant,
    /// When the last stream started; a connection unused for the
    /// cluster's idle timeout is let go.
    last_used: Instant,
}

thread_local! {
    static CONNS: RefCell<HashMap<Peer, Conn>> = RefCell::new(HashMap::new());
}

/// Sends `req` (origin-form URI, Host set) as a stream on this thread's
/// connection to `peer`, opening one when there is none.
pub(crate) async fn send(
    peer: &Peer,
    h2: &Http2,
    breaker: &Arc<Breaker>,
    req: Request<UpBody>,
) -> Result<Response<Incoming>, UpstreamError> {
    let mut req = to_h2(req);
    if let Some(mut sender) = checkout(peer, breaker) {
        // A connection that went away before taking the stream hands the
        // request back unsent; it goes on a new connection. A failure
        // after that is a reset, never retried as a connect failure.
        match sender.try_send_request(req).await {
            Ok(resp) => return Ok(resp),
            Err(mut e) => match e.take_message() {
                Some(unsent) => req = unsent,
                None => return Err(UpstreamError::fresh(e.into_error())),
            },
        }
    }
    let mut sender = open(peer, h2, breaker).await?;
    sender.send_request(req).await.map_err(UpstreamError::fresh)
}

/// HTTP/2 carries the authority and scheme as pseudo-headers, which hyper
/// takes from an absolute URI; Host gives way to `:authority`.
fn to_h2(mut req: Request<UpBody>) -> Request<UpBody> {
    let authority = req.headers_mut().remove(HOST);
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    if let Some(a) = authority.as_ref().and_then(|a| a.to_str().ok()) {
        if let Ok(uri) = Uri::builder()
            .scheme("http")
            .authority(a)
            .path_and_query(path)
            .build()
        {
            *req.uri_mut() = uri;
        }
    }
    *req.version_mut() = http::Version::HTTP_2;
    req
}

/// This thread's live connection to `peer`, counting the stream; a closed
/// or spent one is dropped (it finishes its streams on its own).
fn checkout(peer: &Peer, breaker: &Breaker) -> Option<SendRequest<UpBody>> {
    CONNS.with(|conns| {
        let mut conns = conns.borrow_mut();
        let conn = conns.get_mut(peer)?;
        let spent = conn.sender.is_closed()
            || conn.last_used.elapsed() >= peer.idle_timeout
            || breaker
                .limits
                .max_requests_per_connection
                .is_some_and(|max| conn.served >= max)
            || peer
                .max_connection_duration
                .is_some_and(|max| conn.opened.elapsed() >= max);
        if spent {
            conns.remove(peer);
            return None;
        }
        conn.served += 1;
        conn.last_used = Instant::now();
        Some(conn.sender.clone())
    })
}

/// A new connection, whatever the connection limit says: like Envoy's, a
/// worker's pool may always open its first connection to a host, and an
/// HTTP/2 pool needs no second one.
async fn open(
    peer: &Peer,
    h2: &Http2,
    breaker: &Arc<Breaker>,
) -> Result<SendRequest<UpBody>, UpstreamError> {
    breaker.open_connection(true);
    let stream = match connect(peer).await {
        Ok(s) => s,
        Err(e) => {
            breaker.connection_closed();
            return Err(UpstreamError::Connect(e));
        }
    };
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .initial_stream_window_size(h2.initial_stream_window)
        .initial_connection_window_size(h2.initial_connection_window);
    if let Some(interval) = h2.keepalive_interval {
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(interval)
            .keep_alive_while_idle(true);
        if let Some(t) = h2.keepalive_timeout {
            builder.keep_alive_timeout(t);
        }
    }
    let (sender, conn) = match builder.handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(error) => {
            breaker.connection_closed();
            return Err(UpstreamError::fresh(error));
        }
    };
    let (endpoint, breaker) = (peer.addr, breaker.clone());
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%endpoint, error = %e, "upstream HTTP/2 connection ended with an error");
        }
        breaker.connection_closed();
    });
    CONNS.with(|conns| {
        let mut conns = conns.borrow_mut();
        // Now and then, drop what closed, so peers that left the config
        // do not keep entries.
        if fastrand::u32(..super::SWEEP_EVERY) == 0 {
            conns.retain(|_, c| !c.sender.is_closed());
        }
        conns.insert(
            *peer,
            Conn {
                sender: sender.clone(),
                served: 1,
                opened: Instant::now(),
                last_used: Instant::now(),
            },
        )
    });
    Ok(sender)
}
