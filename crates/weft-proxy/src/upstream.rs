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
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Sender = SendRequest<Incoming>;

thread_local! {
    static IDLE: RefCell<HashMap<SocketAddr, Vec<Sender>>> = RefCell::new(HashMap::new());
}

/// Why a request did not get a response, in the terms Envoy's response
/// flags need: no connection at all (UF), or a connection that failed (UC).
#[derive(Debug)]
pub(crate) enum UpstreamError {
    Connect(std::io::Error),
    Request(hyper::Error),
}

/// Sends `req` (origin-form URI, Host set) to `endpoint` on a pooled
/// connection, or a new one. A pooled connection that the upstream closed
/// meanwhile hands the request back unsent, and the next one is tried.
pub(crate) async fn send(
    endpoint: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Incoming>, UpstreamError> {
    loop {
        let (mut sender, pooled) = match checkout(endpoint) {
            Some(s) => (s, true),
            None => (connect(endpoint).await?, false),
        };
        match sender.try_send_request(req).await {
            Ok(resp) => {
                checkin(endpoint, sender);
                return Ok(resp);
            }
            Err(mut e) => match e.take_message() {
                Some(unsent) if pooled => req = unsent,
                _ => return Err(UpstreamError::Request(e.into_error())),
            },
        }
    }
}

/// A ready connection to `endpoint`; closed ones are dropped on the way.
fn checkout(endpoint: SocketAddr) -> Option<Sender> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(&endpoint)?;
        list.retain(|s| !s.is_closed());
        let ready = list.iter().position(|s| s.is_ready())?;
        Some(list.swap_remove(ready))
    })
}

/// About every this many checkins, lists of closed connections are swept, so
/// endpoints that left the config do not keep entries forever.
const SWEEP_EVERY: u32 = 1024;

fn checkin(endpoint: SocketAddr, sender: Sender) {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        idle.entry(endpoint).or_default().push(sender);
        if fastrand::u32(..SWEEP_EVERY) == 0 {
            idle.retain(|_, list| {
                list.retain(|s| !s.is_closed());
                !list.is_empty()
            });
        }
    });
}

async fn connect(endpoint: SocketAddr) -> Result<Sender, UpstreamError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint))
        .await
        .map_err(|_| {
            UpstreamError::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connect to {endpoint} timed out after {CONNECT_TIMEOUT:?}"),
            ))
        })?
        .map_err(UpstreamError::Connect)?;
    stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Request)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%endpoint, error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}
