//! HTTP/2 (h2c) connections to upstream endpoints, multiplexed: as in
//! Envoy's HTTP/2 pool, a worker thread keeps one connection per peer and
//! puts every request on it as a stream, so the cluster's `max_requests`
//! (Istio's `http2MaxRequests`) is what limits concurrency. With
//! `max_concurrent_streams` (Istio's `maxConcurrentStreams`) a connection
//! carries at most that many streams, and the next goes on another one,
//! opened within the cluster's connection limit or, past it, waited for as
//! a pending request. A stream counts until its answer's head arrives,
//! as the cluster's active requests do.
//! A connection that closed (or went away) is replaced on the next
//! request; one past `max_requests_per_connection`, its maximum age or the
//! idle timeout takes no new stream and closes when its streams are done.

use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::header::HOST;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;

use super::{connect, Breaker, Peer, UpstreamError, PENDING_RECHECK};
use crate::router::body::UpBody;

/// About every this many checkins, lists of closed connections are swept, so
/// endpoints that left the config do not keep entries forever.
const SWEEP_EVERY: u32 = 1024;

/// HTTP/2 settings of a cluster (`http2_protocol_options`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Http2 {
    pub initial_stream_window: Option<u32>,
    pub initial_connection_window: Option<u32>,
    /// PING every this often; no answer within `keepalive_timeout` closes.
    pub keepalive_interval: Option<std::time::Duration>,
    pub keepalive_timeout: Option<std::time::Duration>,
    /// Streams one connection carries at once; none means no limit.
    pub max_concurrent_streams: Option<u32>,
}

/// Where a connection is: still connecting (requests may already count
/// on it, as Envoy counts a connecting client's capacity, so a burst opens
/// one connection, not one each), ready, or failed to connect.
#[derive(Clone)]
enum State {
    Connecting,
    Ready(SendRequest<UpBody>, super::ConnInfo),
    /// Why, for every request that waited on it.
    Failed(std::io::ErrorKind, String),
}

struct Conn {
    state: watch::Receiver<State>,
    /// Streams started on it and not yet answered.
    streams: Arc<AtomicU32>,
    served: u32,
    opened: Instant,
    /// When the last stream started; a connection unused for the
    /// cluster's idle timeout is let go.
    last_used: Instant,
}

impl Conn {
    /// Closed, or failed to connect.
    fn gone(&self) -> bool {
        match &*self.state.borrow() {
            State::Connecting => false,
            State::Ready(sender, _) => sender.is_closed(),
            State::Failed(..) => true,
        }
    }

    /// Takes no new stream. A connecting one always does, so a request
    /// that starts a connection always gets a stream on it.
    fn spent(&self, peer: &Peer, breaker: &Breaker) -> bool {
        if matches!(*self.state.borrow(), State::Connecting) {
            return false;
        }
        self.gone()
            || self.last_used.elapsed() >= peer.idle_timeout
            || breaker
                .limits
                .max_requests_per_connection
                .is_some_and(|max| self.served >= max)
            || peer
                .max_connection_duration
                .is_some_and(|max| self.opened.elapsed() >= max)
    }
}

/// A stream's place on its connection, given back when dropped; requests
/// waiting for room then look again.
struct Stream {
    streams: Arc<AtomicU32>,
    breaker: Arc<Breaker>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.streams.fetch_sub(1, Ordering::AcqRel);
        self.breaker.wake_pending();
    }
}

thread_local! {
    static CONNS: RefCell<FxHashMap<Peer, Vec<Conn>>> = RefCell::default();
}

/// Where this thread's pool puts a request.
enum Checkout {
    Stream(watch::Receiver<State>, Stream),
    /// No connection has room; `first` when there is none at all.
    Full {
        first: bool,
    },
}

/// Sends `req` (origin-form URI, Host set) as a stream on this thread's
/// connection to `peer` that has room, opening one when none has.
pub(crate) async fn send(
    peer: &Peer,
    h2: &Http2,
    breaker: &Arc<Breaker>,
    req: Request<UpBody>,
) -> Result<Response<Incoming>, UpstreamError> {
    let mut req = to_h2(req);
    let mut pending = None;
    loop {
        let first = match checkout(peer, h2, breaker) {
            Checkout::Stream(state, _stream) => {
                let (mut sender, info) = ready(state, breaker).await?;
                // A connection that went away before taking the stream
                // hands the request back unsent; it goes on another. A
                // failure after that is a reset, never retried as a
                // connect failure.
                match sender.try_send_request(req).await {
                    Ok(mut resp) => {
                        resp.extensions_mut().insert(info);
                        return Ok(resp);
                    }
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => req = unsent,
                        None => return Err(UpstreamError::fresh(e.into_error())),
                    },
                }
                continue;
            }
            Checkout::Full { first } => first,
        };
        // Like Envoy's, a worker's pool may always open its first
        // connection to a host; more count against the connection limit.
        if breaker.open_connection(first) {
            start(peer, h2, breaker);
            continue;
        }
        if pending.is_none() {
            pending = Some(breaker.pending().ok_or(UpstreamError::Overflow)?);
        }
        let freed = breaker.freed.notified();
        let _ = tokio::time::timeout(PENDING_RECHECK, freed).await;
    }
}

/// The connection's sender once it is ready, or why it never will be.
/// Waiting for a connection to connect is being a pending request, as in
/// Envoy, limited by the cluster's `max_pending_requests`.
async fn ready(
    mut state: watch::Receiver<State>,
    breaker: &Breaker,
) -> Result<(SendRequest<UpBody>, super::ConnInfo), UpstreamError> {
    let failed = |kind, why: &str| UpstreamError::Connect(std::io::Error::new(kind, why));
    let connecting = matches!(*state.borrow(), State::Connecting);
    let _pending = match connecting {
        true => Some(breaker.pending().ok_or(UpstreamError::Overflow)?),
        false => None,
    };
    let state = state
        .wait_for(|s| !matches!(s, State::Connecting))
        .await
        .map_err(|_| failed(std::io::ErrorKind::Other, "connection attempt abandoned"))?
        .clone();
    match state {
        State::Ready(sender, info) => Ok((sender, info)),
        State::Failed(kind, why) => Err(failed(kind, &why)),
        State::Connecting => unreachable!("waited for another state"),
    }
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

/// A stream on this thread's first live connection to `peer` with room
/// (ready or still connecting); closed and spent connections are dropped
/// (they finish their streams on their own).
fn checkout(peer: &Peer, h2: &Http2, breaker: &Arc<Breaker>) -> Checkout {
    CONNS.with(|conns| {
        let mut conns = conns.borrow_mut();
        let Some(list) = conns.get_mut(peer) else {
            return Checkout::Full { first: true };
        };
        list.retain(|c| !c.spent(peer, breaker));
        let max = h2.max_concurrent_streams.unwrap_or(u32::MAX);
        let Some(conn) = list
            .iter_mut()
            .find(|c| c.streams.load(Ordering::Acquire) < max)
        else {
            return Checkout::Full {
                first: list.is_empty(),
            };
        };
        conn.served += 1;
        conn.last_used = Instant::now();
        conn.streams.fetch_add(1, Ordering::AcqRel);
        let stream = Stream {
            streams: conn.streams.clone(),
            breaker: breaker.clone(),
        };
        Checkout::Stream(conn.state.clone(), stream)
    })
}

/// Adds a connecting connection to this thread's pool (already counted
/// against the connection limit, given back when it closes) and connects
/// it in a task of its own, so a request that gives up does not abandon
/// the others waiting on it.
fn start(peer: &Peer, h2: &Http2, breaker: &Arc<Breaker>) {
    let (tx, state) = watch::channel(State::Connecting);
    CONNS.with(|conns| {
        let mut conns = conns.borrow_mut();
        // Now and then, drop what closed, so peers that left the config
        // do not keep entries.
        if fastrand::u32(..SWEEP_EVERY) == 0 {
            conns.retain(|_, list| {
                list.retain(|c| !c.gone());
                !list.is_empty()
            });
        }
        conns.entry(peer.clone()).or_default().push(Conn {
            state,
            streams: Arc::new(AtomicU32::new(0)),
            served: 0,
            opened: Instant::now(),
            last_used: Instant::now(),
        });
    });
    let (peer, h2, breaker) = (peer.clone(), *h2, breaker.clone());
    tokio::spawn(async move {
        let conn = match handshake(&peer, &h2).await {
            Ok((sender, conn, info)) => {
                // The sender lives on in the channel only while the pool
                // (or a request) holds a receiver: once they let go, the
                // connection closes after its last stream.
                let _ = tx.send(State::Ready(sender, info));
                drop(tx);
                conn
            }
            Err(e) => {
                let _ = tx.send(State::Failed(e.kind(), e.to_string()));
                breaker.connection_closed();
                return;
            }
        };
        if let Err(e) = conn.await {
            tracing::debug!(endpoint = %peer.addr, error = %e, "upstream HTTP/2 connection ended with an error");
        }
        breaker.connection_closed();
    });
}

/// TCP connect and the HTTP/2 handshake with the cluster's settings.
async fn handshake(
    peer: &Peer,
    h2: &Http2,
) -> std::io::Result<(
    SendRequest<UpBody>,
    hyper::client::conn::http2::Connection<TokioIo<super::UpStream>, UpBody, TokioExecutor>,
    super::ConnInfo,
)> {
    let stream = connect(peer, true).await?;
    let info = stream.info();
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
    builder
        .handshake(TokioIo::new(stream))
        .await
        .map(|(sender, conn)| (sender, conn, info))
        .map_err(|e| std::io::Error::other(format!("HTTP/2 handshake: {e}")))
}
