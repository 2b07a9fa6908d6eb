//! Envoy's inspecting listener filters: they look at a connection's first
//! bytes without consuming them, so a filter chain can be matched on what
//! the client speaks. `tls_inspector` reads a TLS ClientHello (SNI and
//! ALPN, transport `tls`); `http_inspector` tells an HTTP/1.x request line
//! or the HTTP/2 preface (`http/1.1`, `http/1.0`, `h2c`) from anything
//! else. Like Istio's default (no protocol detection timeout), a client
//! that sends nothing is waited for.

mod http;
mod tls;

use std::time::Duration;

use tokio::net::TcpStream;

/// What the inspectors learnt of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Detected {
    /// The ClientHello's SNI.
    pub server_name: Option<String>,
    /// True when the connection starts with a TLS ClientHello.
    pub tls: bool,
    /// ALPN offered in the ClientHello, or the sniffed HTTP protocol.
    pub protocols: Vec<String>,
}

impl Detected {
    /// Envoy's `transport_protocol` for filter chain matching.
    pub fn transport(&self) -> &'static str {
        if self.tls {
            "tls"
        } else {
            "raw_buffer"
        }
    }
}

/// What the first bytes say so far.
#[derive(Debug, PartialEq, Eq)]
enum Verdict<T> {
    Done(T),
    NeedMore,
}

/// Runs the inspectors a listener has on a connection's first bytes.
pub(crate) async fn inspect(sock: &TcpStream, tls: bool, http: bool) -> Detected {
    if !tls && !http {
        return Detected::default();
    }
    let max = if tls { tls::MAX_HELLO } else { http::MAX_LINE };
    let found = peek_until(sock, max, |data| {
        if tls && data[0] == tls::HANDSHAKE {
            return match tls::client_hello(data) {
                Verdict::Done(hello) => Verdict::Done(hello.unwrap_or_default()),
                Verdict::NeedMore => Verdict::NeedMore,
            };
        }
        if !http {
            return Verdict::Done(Detected::default());
        }
        match http::classify(data) {
            Verdict::Done(p) => Verdict::Done(Detected {
                protocols: p.map(String::from).into_iter().collect(),
                ..Default::default()
            }),
            Verdict::NeedMore => Verdict::NeedMore,
        }
    })
    .await;
    found.unwrap_or_default()
}

/// Peeks at the connection until `judge` decides (or the client closes, or
/// `max` bytes are buffered without a decision).
async fn peek_until<T>(
    sock: &TcpStream,
    max: usize,
    judge: impl Fn(&[u8]) -> Verdict<T>,
) -> Option<T> {
    // Most first flights fit in 2 KiB; the buffer grows only for the
    // ones that do not, so a connection does not pay for the largest.
    let mut buf = vec![0u8; max.min(2048)];
    let (mut seen, mut stalled) = (0, 0u64);
    loop {
        let n = sock.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if let Verdict::Done(v) = judge(&buf[..n]) {
            return Some(v);
        }
        if n == buf.len() {
            if n == max {
                return None;
            }
            buf.resize((n * 2).min(max), 0);
            continue;
        }
        // More is on its way; peek returns at once while nothing new has
        // come, so wait between looks, longer the longer the client stalls.
        if n == seen {
            stalled = (stalled * 2).clamp(1, 100);
            tokio::time::sleep(Duration::from_millis(stalled)).await;
        } else {
            stalled = 0;
        }
        seen = n;
    }
}
