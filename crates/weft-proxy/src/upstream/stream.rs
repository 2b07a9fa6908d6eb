//! A connection to an upstream host: plain TCP, or TLS over it when the
//! cluster originates TLS. One type, so HTTP/1.1, HTTP/2 and TCP proxying
//! take either.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub(crate) enum UpStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// What a response's upstream connection was, set on each response of
/// that connection: the SPIFFE id the upstream proved in its TLS handshake
/// (the metrics' `destination_principal`) and the proxy's own end
/// (`%UPSTREAM_LOCAL_ADDRESS%`).
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnInfo {
    pub principal: Option<std::sync::Arc<str>>,
    pub local: Option<std::net::SocketAddr>,
}

impl UpStream {
    /// The peer's SPIFFE id (over TLS with a certificate that names one)
    /// and the connection's local address.
    pub(crate) fn info(&self) -> ConnInfo {
        ConnInfo {
            principal: self.peer_principal(),
            local: self.local_addr(),
        }
    }

    fn peer_principal(&self) -> Option<std::sync::Arc<str>> {
        let UpStream::Tls(s) = self else {
            return None;
        };
        let cert = crate::identity::tls::peer_cert(s.get_ref().1.peer_certificates())?;
        Some(cert.principal?.into())
    }

    /// The proxy's own end of the connection.
    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            UpStream::Plain(s) => s.local_addr().ok(),
            UpStream::Tls(s) => s.get_ref().0.local_addr().ok(),
        }
    }
}

impl std::fmt::Debug for UpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpStream::Plain(s) => f.debug_tuple("Plain").field(s).finish(),
            UpStream::Tls(s) => f.debug_tuple("Tls").field(s.get_ref().0).finish(),
        }
    }
}

impl AsyncRead for UpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpStream::Plain(s) => s.is_write_vectored(),
            UpStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
