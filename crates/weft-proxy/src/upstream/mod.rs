//! Connections to upstream endpoints, pooled per worker thread: HTTP/1.1
//! here (one request at a time per connection, Weft's own lean client in
//! `h1.rs`), HTTP/2 in `h2.rs`.
//!
//! Checkout and checkin touch only the current thread's idle list, so the
//! request path takes no lock. An HTTP/1.1 connection has no task of its
//! own: the request's task writes the request and reads the response head,
//! the response body is read by whoever polls it, and the connection goes
//! back to the list when that body's last byte is read. This is the pool
//! that circuit breaking (connection and pending-request limits) counts
//! in; hyper-util's pool exposes no such accounting.

use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

use crate::router::body::UpBody;

pub(crate) mod balancer;
mod breaker;
mod h1;
mod h1_body;
mod h2;
pub(crate) mod outlier;
mod stream;
pub use breaker::{Breaker, Limits};
pub(crate) use h1::{recycle as recycle_headers, BoxError};
pub use h2::Http2;
pub use outlier::Outliers;
pub(crate) use stream::{ConnInfo, UpStream};

/// Everything needed to reach one upstream endpoint, built from its
/// cluster. HTTP and TCP connect through the same `connect`, so every
/// cluster setting reaches the socket; the HTTP pool is keyed on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Peer {
    pub addr: SocketAddr,
    /// Source address (`upstream_bind_config`).
    pub bind_source: Option<IpAddr>,
    pub connect_timeout: Duration,
    /// A pooled connection idle this long is closed.
    pub idle_timeout: Duration,
    /// A connection this old takes no new request (Envoy's
    /// `max_connection_duration`).
    pub max_connection_duration: Option<Duration>,
    /// TCP keepalive on upstream sockets.
    pub keepalive: Option<Keepalive>,
    /// HTTP/2 to this peer (h2c) rather than HTTP/1.1.
    pub http2: Option<Http2>,
    /// TLS to this peer (the cluster's transport socket).
    pub tls: Option<Arc<crate::compile::UpstreamTls>>,
}

/// TCP keepalive settings; a part left out is the system's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Keepalive {
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
    pub probes: Option<u32>,
}

/// How often a request waiting for a connection looks again, besides
/// being woken when one closes or returns to the pool.
const PENDING_RECHECK: Duration = Duration::from_millis(5);

/// How often each worker closes its idle connections that the upstream
/// closed or that outlived the idle timeout (no task watches them).
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// A pooled HTTP/1.1 connection and how many requests it has carried
/// (boxed wherever it goes: it moves with each request and its body).
struct Pooled {
    codec: h1::Codec,
    /// Who the upstream proved to be (mesh mTLS), and the local end.
    info: ConnInfo,
    served: u32,
    opened: Instant,
    idle_since: Instant,
    /// Counts the connection as open until it is dropped (closed).
    open: OpenSlot,
}

impl Pooled {
    fn too_old(&self, peer: &Peer, now: Instant) -> bool {
        peer.max_connection_duration
            .is_some_and(|max| now.duration_since(self.opened) >= max)
    }

    /// Whether an idle connection may take a request now.
    fn fresh(&mut self, peer: &Peer, now: Instant) -> bool {
        now.duration_since(self.idle_since) < peer.idle_timeout
            && !self.too_old(peer, now)
            && self.codec.usable()
    }
}

/// One open connection in this thread's and the cluster's counts.
struct OpenSlot {
    peer: Peer,
    breaker: Arc<Breaker>,
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        // Idle connections are dropped with the thread's pool too, when
        // the count may be gone already.
        let _ = OPEN.try_with(|o| {
            let mut open = o.borrow_mut();
            if let Some(n) = open.get_mut(&self.peer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(&self.peer);
                }
            }
        });
        self.breaker.connection_closed();
    }
}

thread_local! {
    // Boxed: a connection moves between this list and a request's body.
    #[allow(clippy::vec_box)]
    static IDLE: RefCell<FxHashMap<Peer, Vec<Box<Pooled>>>> = RefCell::default();
    /// Open connections per peer on this thread: Envoy lets every worker's
    /// pool open one connection whatever the circuit breaker says, so a
    /// worker is never starved by connections other workers hold.
    static OPEN: RefCell<FxHashMap<Peer, u32>> = RefCell::default();
    static SWEEPER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Why a request did not get a response, in the terms Envoy's response
/// flags need: no connection at all (UF), a connection that failed (UC),
/// or a circuit breaker's limit (UO).
#[derive(Debug)]
pub(crate) enum UpstreamError {
    Connect(std::io::Error),
    /// `reused`: the connection had served requests before, so a failure
    /// before any response most likely means the upstream closed it idle.
    Request {
        error: BoxError,
        reused: bool,
    },
    /// The response broke HTTP/1.1 (UPE, 502).
    Protocol(BoxError),
    /// The client's request body failed while it was being sent (DC):
    /// nothing the upstream did.
    DownstreamBody,
    Overflow,
}

impl UpstreamError {
    /// A request that failed on a connection opened for it (never a
    /// stale pooled one), so it is not retried as a connect failure.
    pub(crate) fn fresh(error: impl Into<BoxError>) -> UpstreamError {
        UpstreamError::Request {
            error: error.into(),
            reused: false,
        }
    }
}

/// An upstream response's body: off a pooled HTTP/1.1 connection, or
/// hyper's (HTTP/2).
#[derive(Debug)]
pub(crate) enum RespBody {
    H1(h1_body::Body),
    Hyper(Incoming),
}

/// The connection a response came on: its peer's identity and local
/// address (an HTTP/1.1 body keeps them; hyper's responses carry them as
/// an extension).
pub(crate) fn conn_info(resp: &Response<RespBody>) -> Option<&ConnInfo> {
    match resp.body() {
        RespBody::H1(body) => Some(body.info()),
        RespBody::Hyper(_) => resp.extensions().get(),
    }
}

impl hyper::body::Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RespBody::H1(b) => Pin::new(b).poll_frame(cx),
            RespBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::H1(b) => b.is_end_stream(),
            RespBody::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::H1(b) => b.size_hint(),
            RespBody::Hyper(b) => b.size_hint(),
        }
    }
}

/// Sends the request of `parts` and `body` (origin-form URI, Host set) to
/// `peer` on a pooled connection, a new one, or, when the cluster's
/// connection limit is reached, the first one freed (as a pending request,
/// itself limited). HTTP/1.1 writes the request from `parts` as they are,
/// so a try costs no copy of the headers.
pub(crate) async fn send(
    peer: &Peer,
    breaker: &Arc<Breaker>,
    parts: &http::request::Parts,
    body: UpBody,
) -> Result<Response<RespBody>, UpstreamError> {
    let _active = breaker.request().ok_or(UpstreamError::Overflow)?;
    match &peer.http2 {
        Some(h2) => {
            // Boxed: the HTTP/2 pool's future is the larger one, and every
            // HTTP/1.1 request's future would be sized by it.
            let req = request(parts, body);
            let sent = Box::pin(h2::send(peer, h2, breaker, req)).await?;
            Ok(sent.map(RespBody::Hyper))
        }
        None => send_http1(peer, breaker, parts, body).await,
    }
}

/// A new request with the method, URI, version and headers of `parts`.
pub(crate) fn request(parts: &http::request::Parts, body: UpBody) -> Request<UpBody> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

async fn send_http1(
    peer: &Peer,
    breaker: &Arc<Breaker>,
    parts: &http::request::Parts,
    body: UpBody,
) -> Result<Response<RespBody>, UpstreamError> {
    let mut pending = None;
    let (mut conn, reused) = loop {
        if let Some(c) = checkout(peer) {
            break (c, true);
        }
        // Boxed: connecting (a TLS handshake's state above all) is rare
        // and would otherwise size every request's future.
        if let Some(c) = Box::pin(open(peer, breaker)).await? {
            break (c, false);
        }
        if pending.is_none() {
            pending = Some(breaker.pending().ok_or(UpstreamError::Overflow)?);
        }
        let freed = breaker.freed.notified();
        let _ = tokio::time::timeout(PENDING_RECHECK, freed).await;
    };
    drop(pending);
    let head = match conn.codec.exchange(parts, body).await {
        Ok(head) => head,
        Err(e @ h1::Error::Protocol(_)) => return Err(UpstreamError::Protocol(Box::new(e))),
        Err(h1::Error::RequestBody(e)) => {
            tracing::debug!(error = %e, "reading the request body failed");
            return Err(UpstreamError::DownstreamBody);
        }
        Err(e) => {
            // A connection that had served requests and failed before any
            // response was most likely closed idle by the upstream.
            let reused = reused && e.before_response();
            return Err(UpstreamError::Request {
                error: Box::new(e),
                reused,
            });
        }
    };
    conn.served += 1;
    let spent = breaker
        .limits
        .max_requests_per_connection
        .is_some_and(|max| conn.served >= max)
        || conn.too_old(peer, Instant::now());
    // A spent connection closes once its response is read, which frees
    // its slot.
    let body = h1_body::Body::new(conn, head.framing, head.keep_alive && !spent);
    Ok(Response::from_parts(head.parts, RespBody::H1(body)))
}

/// A connection whose response has been read whole goes back to its pool,
/// and a request waiting for one is woken.
fn release(conn: Box<Pooled>) {
    let breaker = conn.open.breaker.clone();
    checkin(conn);
    breaker.wake_pending();
}

/// An upgrade request (WebSocket) on a new HTTP/1.1 connection of its own,
/// which becomes the upgraded stream if the upstream answers 101; it
/// counts against the connection limit until then.
pub(crate) async fn send_upgrade(
    peer: &Peer,
    breaker: &Arc<Breaker>,
    mut req: Request<UpBody>,
) -> Result<Response<Incoming>, UpstreamError> {
    let _active = breaker.request().ok_or(UpstreamError::Overflow)?;
    if !breaker.open_connection(false) {
        return Err(UpstreamError::Overflow);
    }
    let (mut sender, conn, info) = match handshake(peer).await {
        Ok(pair) => pair,
        Err(e) => {
            breaker.connection_closed();
            return Err(e);
        }
    };
    let (endpoint, closed) = (peer.addr, breaker.clone());
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%endpoint, error = %e, "upstream upgrade connection ended with an error");
        }
        closed.connection_closed();
    });
    *req.version_mut() = http::Version::HTTP_11;
    let mut resp = sender
        .send_request(req)
        .await
        .map_err(UpstreamError::fresh)?;
    resp.extensions_mut().insert(info);
    Ok(resp)
}

/// A ready connection to `peer`; closed and long-idle ones are dropped on
/// the way.
fn checkout(peer: &Peer) -> Option<Box<Pooled>> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(peer)?;
        let now = Instant::now();
        while let Some(mut conn) = list.pop() {
            if conn.fresh(peer, now) {
                return Some(conn);
            }
        }
        None
    })
}

fn checkin(mut conn: Box<Pooled>) {
    conn.idle_since = Instant::now();
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        match idle.get_mut(&conn.open.peer) {
            Some(list) => list.push(conn),
            None => {
                idle.insert(conn.open.peer.clone(), vec![conn]);
            }
        }
    });
    // The first checkin on a worker starts its sweeper (a body dropped
    // outside a runtime, at shutdown, starts none).
    if !SWEEPER.get() {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            SWEEPER.set(true);
            runtime.spawn(sweep());
        }
    }
}

/// Closes this thread's idle connections that can no longer be used, every
/// `SWEEP_INTERVAL`, so an upstream's close does not linger half-open and
/// endpoints that left the config do not keep entries.
async fn sweep() {
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        let now = Instant::now();
        IDLE.with(|idle| {
            idle.borrow_mut().retain(|peer, list| {
                list.retain_mut(|c| c.fresh(peer, now));
                !list.is_empty()
            })
        });
    }
}

/// A TCP connection to `peer`, within its connect timeout, from its bind
/// source; Nagle off, as Envoy sets it; then the TLS handshake when the
/// cluster originates TLS (within the same timeout). `http` says whether
/// the connection carries HTTP (for mesh mTLS's ALPN).
pub(crate) async fn connect(peer: &Peer, http: bool) -> std::io::Result<UpStream> {
    let Some(tls) = &peer.tls else {
        return connect_tcp(peer).await.map(UpStream::Plain);
    };
    if let Some(missing) = &tls.missing {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            missing.clone(),
        ));
    }
    let deadline = tokio::time::Instant::now() + peer.connect_timeout;
    let tcp = connect_tcp(peer).await?;
    let purpose = http.then_some(peer.http2.is_some());
    let connector = tokio_rustls::TlsConnector::from(tls.config_for(purpose));
    // Without an SNI, the peer's address stands for it (rustls sends none).
    let name = tls
        .sni
        .clone()
        .unwrap_or_else(|| rustls::pki_types::ServerName::IpAddress(peer.addr.ip().into()));
    let handshake = connector.connect(name, tcp);
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(stream)) => Ok(UpStream::Tls(Box::new(stream))),
        Ok(Err(e)) => Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            format!("TLS handshake with {}: {e}", peer.addr),
        )),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("TLS handshake with {} timed out", peer.addr),
        )),
    }
}

async fn connect_tcp(peer: &Peer) -> std::io::Result<TcpStream> {
    let dial = async {
        let socket = if peer.addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(source) = peer.bind_source {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        socket.connect(peer.addr).await
    };
    let stream = tokio::time::timeout(peer.connect_timeout, dial)
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "connect to {} timed out after {:?}",
                    peer.addr, peer.connect_timeout
                ),
            )
        })??;
    stream.set_nodelay(true)?;
    if let Some(k) = peer.keepalive {
        let mut params = socket2::TcpKeepalive::new();
        if let Some(t) = k.time {
            params = params.with_time(t);
        }
        if let Some(i) = k.interval {
            params = params.with_interval(i);
        }
        if let Some(n) = k.probes {
            params = params.with_retries(n);
        }
        socket2::SockRef::from(&stream).set_tcp_keepalive(&params)?;
    }
    Ok(stream)
}

/// A new connection, if the cluster's connection limit allows one (or
/// this thread has none to the peer yet); None when the request must wait.
async fn open(peer: &Peer, breaker: &Arc<Breaker>) -> Result<Option<Box<Pooled>>, UpstreamError> {
    let first_here = OPEN.with(|o| o.borrow().get(peer).copied().unwrap_or(0) == 0);
    if !breaker.open_connection(first_here) {
        return Ok(None);
    }
    OPEN.with(|o| *o.borrow_mut().entry(peer.clone()).or_default() += 1);
    // Counted from here: dropped on a failed connect, or with the
    // connection when it closes.
    let open = OpenSlot {
        peer: peer.clone(),
        breaker: breaker.clone(),
    };
    let stream = connect(peer, true).await.map_err(UpstreamError::Connect)?;
    let now = Instant::now();
    Ok(Some(Box::new(Pooled {
        info: stream.info(),
        codec: h1::Codec::new(stream),
        served: 0,
        opened: now,
        idle_since: now,
        open,
    })))
}

type Connection = hyper::client::conn::http1::Connection<TokioIo<UpStream>, UpBody>;

async fn handshake(
    peer: &Peer,
) -> Result<(SendRequest<UpBody>, Connection, ConnInfo), UpstreamError> {
    let stream = connect(peer, true).await.map_err(UpstreamError::Connect)?;
    let info = stream.info();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::fresh)?;
    Ok((sender, conn, info))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A plain HTTP/1.1 peer with short test timeouts.
    fn test_peer(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            bind_source: None,
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            max_connection_duration: None,
            keepalive: None,
            http2: None,
            tls: None,
        }
    }

    /// An upstream that counts its connections and answers every request on
    /// them; with `close_after_one`, it closes each connection after one
    /// response (keep-alive in its headers), as a server whose idle timeout fired.
    async fn upstream(close_after_one: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(reply).await.is_err() || close_after_one {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    /// A front server that forwards every request with `send`, so the
    /// request bodies are hyper's own `Incoming`, as in the proxy's
    /// hyper server.
    async fn front(upstream: SocketAddr) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let peer = test_peer(upstream);
                    let req = req.map(|body| {
                        let body = crate::http::ReqBody::Hyper(body);
                        UpBody::Stream(crate::router::body::Downstream { body, seen: None })
                    });
                    let breaker = Arc::new(Breaker::default());
                    let (parts, body) = req.into_parts();
                    let status = match send(&peer, &breaker, &parts, body).await {
                        Ok(resp) => resp.status(),
                        Err(_) => http::StatusCode::BAD_GATEWAY,
                    };
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = status;
                    Ok::<_, Infallible>(r)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc),
                );
            }
        });
        addr
    }

    async fn get(front: SocketAddr) -> http::StatusCode {
        let s = TcpStream::connect(front).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get("/")
            .header("host", "upstream")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        status
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_connection_serves_request_after_request() {
        let (up, accepted) = upstream(false).await;
        let front = front(up).await;
        for i in 0..10 {
            assert_eq!(get(front).await, http::StatusCode::OK, "request {i}");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the pooled connection is reused"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connections_the_upstream_closed_are_not_reused() {
        let (up, accepted) = upstream(true).await;
        let front = front(up).await;
        for i in 0..5 {
            assert_eq!(get(front).await, http::StatusCode::OK, "request {i}");
            // Time for the close to reach the connection's task. (A request
            // sent into a close already in flight fails with UC, as in Envoy.)
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    /// A GET sent with `send`, its response read to the end.
    async fn get_through_pool(peer: &Peer, breaker: &Arc<Breaker>) {
        let req = Request::get("/")
            .header("host", "upstream")
            .body(UpBody::Full(Full::new(Bytes::new())))
            .unwrap();
        let (parts, body) = req.into_parts();
        let resp = send(peer, breaker, &parts, body).await.unwrap();
        let _ = resp.into_body().collect().await;
    }

    /// No task watches an idle connection: the worker's sweep closes one
    /// the upstream closed, rather than the next checkout finding it.
    #[tokio::test(flavor = "current_thread")]
    async fn idle_connections_the_upstream_closed_are_swept() {
        let (up, _) = upstream(true).await;
        let peer = test_peer(up);
        let breaker = Arc::new(Breaker::default());
        get_through_pool(&peer, &breaker).await;
        let open = || OPEN.with(|o| o.borrow().get(&peer).copied().unwrap_or(0));
        assert_eq!(open(), 1, "pooled while idle");
        tokio::time::sleep(SWEEP_INTERVAL + Duration::from_millis(500)).await;
        assert_eq!(open(), 0, "closed by the sweep");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_connection_is_a_connect_error() {
        let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let peer = test_peer(addr);
        let err = handshake(&peer).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Connect(_)), "{err:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connections_older_than_max_connection_duration_are_retired() {
        let (up, accepted) = upstream(false).await;
        let peer = Peer {
            max_connection_duration: Some(Duration::from_millis(50)),
            keepalive: Some(Keepalive {
                time: Some(Duration::from_secs(60)),
                interval: None,
                probes: Some(3),
            }),
            ..test_peer(up)
        };
        let breaker = Arc::new(Breaker::default());
        for _ in 0..2 {
            get_through_pool(&peer, &breaker).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the old connection was not reused"
        );
    }
}
