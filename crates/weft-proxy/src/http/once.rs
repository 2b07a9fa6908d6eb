//! One request on a fresh HTTP/1.1 connection, for the proxy's own side
//! calls (spans to a collector, an app's metrics page): not the data path,
//! so no pool.

use std::net::SocketAddr;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// Connects to `addr`, sends `req`, and returns the response head (its
/// body still streaming on the connection's own task).
pub(crate) async fn send<B>(addr: SocketAddr, req: Request<B>) -> anyhow::Result<Response<Incoming>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender.send_request(req).await?)
}
