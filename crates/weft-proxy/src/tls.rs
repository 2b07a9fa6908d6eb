//! Terminating TLS on a downstream connection whose filter chain has a
//! TLS transport socket. The chain was chosen by the ClientHello's SNI
//! (`sniff`), so the handshake uses that chain's one server config.

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::compile::DownstreamTls;
use crate::sniff::Detected;

/// Closes after a failed handshake so that the client reads the alert:
/// our side is shut first, then what the client already sent (a TLS 1.3
/// client sends its request right after its Finished) is read and
/// dropped for a moment. Closing with unread data would send a reset,
/// and the client would see that instead of the alert, as Envoy's delayed
/// close avoids too.
async fn linger(mut sock: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = sock.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(sock.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
}

/// What the request path may want of a TLS connection.
#[derive(Debug, Clone)]
pub(crate) struct TlsInfo {
    /// The SNI the client asked for (the access log's server name).
    pub server_name: Option<String>,
    /// The client certificate's SPIFFE id (mesh mTLS), for RBAC.
    pub peer_principal: Option<String>,
    /// The client certificate, when one was presented.
    pub peer: Option<std::sync::Arc<crate::identity::tls::PeerCert>>,
}

/// The handshake; None when it failed (the client got rustls's alert) or
/// cannot be made (logged once per connection).
pub(crate) async fn accept(
    sock: TcpStream,
    tls: &DownstreamTls,
    seen: &Detected,
    listener: &str,
) -> Option<(TlsStream<TcpStream>, TlsInfo)> {
    let Some(config) = tls.server_for(&seen.protocols) else {
        tracing::warn!(%listener, sni = ?seen.server_name, problem = tls.problem.as_deref().unwrap_or(""), "TLS chain cannot handshake; closing");
        return None;
    };
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(sock);
    let stream = match accept.into_fallible().await {
        Ok(s) => s,
        Err((e, sock)) => {
            tracing::debug!(%listener, sni = ?seen.server_name, error = %e, "TLS handshake failed");
            linger(sock).await;
            return None;
        }
    };
    let (_, session) = stream.get_ref();
    let info = TlsInfo {
        server_name: session.server_name().map(str::to_string),
        peer_principal: None,
        peer: crate::identity::tls::peer_cert(session.peer_certificates()).map(std::sync::Arc::new),
    };
    let info = TlsInfo {
        peer_principal: info.peer.as_ref().and_then(|p| p.principal.clone()),
        ..info
    };
    Some((stream, info))
}
