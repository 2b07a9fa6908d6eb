//! HTTP/1.1 connections to upstream endpoints, pooled per worker thread.
//!
//! Checkout and checkin touch only the current thread's idle list, so the
//! request path takes no lock. A connection goes back to the list as soon as
//! the response head arrives; it is handed out again only once hyper says it
//! is ready, that is after the response body has been read to the end. This
//! is the pool that circuit breaking (connection and pending-request limits)
//! will count in; hyper-util's pool exposes no such accounting.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

use crate::router::body::UpBody;

/// Everything needed to reach one upstream endpoint, built from its
/// cluster. HTTP and TCP connect through the same `connect`, so every
/// cluster setting reaches the socket; the HTTP pool is keyed on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Peer {
    pub addr: SocketAddr,
    /// Source address (`upstream_bind_config`).
    pub bind_source: Option<IpAddr>,
    pub connect_timeout: Duration,
}

/// Envoy's default idle timeout for upstream HTTP connections.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

type Sender = SendRequest<UpBody>;

thread_local! {
    static IDLE: RefCell<HashMap<Peer, Vec<(Sender, Instant)>>> = RefCell::new(HashMap::new());
}

/// Why a request did not get a response, in the terms Envoy's response
/// flags need: no connection at all (UF), or a connection that failed (UC).
#[derive(Debug)]
pub(crate) enum UpstreamError {
    Connect(std::io::Error),
    /// `reused`: the connection had served requests before, so a failure
    /// before any response most likely means the upstream closed it idle.
    Request {
        error: hyper::Error,
        reused: bool,
    },
}

/// Sends `req` (origin-form URI, Host set) to `peer` on a pooled
/// connection, or a new one. A pooled connection that the upstream closed
/// meanwhile hands the request back unsent, and the next one is tried.
pub(crate) async fn send(
    peer: &Peer,
    mut req: Request<UpBody>,
) -> Result<Response<Incoming>, UpstreamError> {
    loop {
        let (mut sender, reused) = match checkout(peer) {
            Some(s) => (s, true),
            None => (handshake(peer).await?, false),
        };
        match sender.try_send_request(req).await {
            Ok(resp) => {
                checkin(peer, sender);
                return Ok(resp);
            }
            Err(mut e) => match e.take_message() {
                Some(unsent) if reused => req = unsent,
                _ => {
                    return Err(UpstreamError::Request {
                        error: e.into_error(),
                        reused,
                    })
                }
            },
        }
    }
}

/// A ready connection to `peer`; closed and long-idle ones are dropped on
/// the way.
fn checkout(peer: &Peer) -> Option<Sender> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(peer)?;
        let now = Instant::now();
        list.retain(|(s, since)| !s.is_closed() && now.duration_since(*since) < IDLE_TIMEOUT);
        let ready = list.iter().position(|(s, _)| s.is_ready())?;
        Some(list.swap_remove(ready).0)
    })
}

/// About every this many checkins, lists of closed connections are swept, so
/// endpoints that left the config do not keep entries forever.
const SWEEP_EVERY: u32 = 1024;

fn checkin(peer: &Peer, sender: Sender) {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        idle.entry(*peer)
            .or_default()
            .push((sender, Instant::now()));
        if fastrand::u32(..SWEEP_EVERY) == 0 {
            idle.retain(|_, list| {
                list.retain(|(s, _)| !s.is_closed());
                !list.is_empty()
            });
        }
    });
}

/// A TCP connection to `peer`, within its connect timeout, from its bind
/// source; Nagle off, as Envoy sets it.
pub(crate) async fn connect(peer: &Peer) -> std::io::Result<TcpStream> {
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
    Ok(stream)
}

async fn handshake(peer: &Peer) -> Result<Sender, UpstreamError> {
    let stream = connect(peer).await.map_err(UpstreamError::Connect)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| UpstreamError::Request {
            error,
            reused: false,
        })?;
    let endpoint = peer.addr;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%endpoint, error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
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
    /// request bodies are hyper's own `Incoming`, as in the proxy.
    async fn front(upstream: SocketAddr) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let peer = Peer {
                        addr: upstream,
                        bind_source: None,
                        connect_timeout: Duration::from_secs(1),
                    };
                    let req = req.map(http_body_util::Either::Left);
                    let status = match send(&peer, req).await {
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

    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_connection_is_a_connect_error() {
        let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let peer = Peer {
            addr,
            bind_source: None,
            connect_timeout: Duration::from_secs(1),
        };
        let err = handshake(&peer).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Connect(_)), "{err:?}");
    }
}
