//! Envoy's `http_inspector` listener filter: looks at a connection's
//! first bytes, without consuming them, and names its protocol — `h2c`
//! for the HTTP/2 preface, `http/1.1` or `http/1.0` for a request line —
//! so a filter chain can be matched on it (Istio's protocol sniffing for
//! ports that declare no protocol). Anything else is not HTTP. Like
//! Istio's default (no protocol detection timeout), a client that sends
//! nothing is waited for.

use std::time::Duration;

use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Envoy gives up on a first line longer than this.
const MAX_LINE: usize = 8192;

/// What the first bytes say so far.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Protocol(Option<&'static str>),
    NeedMore,
}

fn classify(data: &[u8]) -> Verdict {
    if PREFACE.starts_with(&data[..data.len().min(PREFACE.len())]) {
        return if data.len() >= PREFACE.len() {
            Verdict::Protocol(Some("h2c"))
        } else {
            Verdict::NeedMore
        };
    }
    let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
        // The method must be a token; a byte that cannot be in a request
        // line settles it early.
        let last = data.len() - 1;
        let plausible = data
            .iter()
            .enumerate()
            .all(|(i, b)| b.is_ascii_graphic() || *b == b' ' || (*b == b'\r' && i == last));
        return if plausible && data.len() < MAX_LINE {
            Verdict::NeedMore
        } else {
            Verdict::Protocol(None)
        };
    };
    let line = &data[..end];
    let mut parts = line.split(|b| *b == b' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let method_ok = method.is_some_and(|m| !m.is_empty() && m.iter().all(u8::is_ascii_uppercase));
    Verdict::Protocol(match (method_ok, target, version, parts.next()) {
        (true, Some(t), Some(b"HTTP/1.1"), None) if !t.is_empty() => Some("http/1.1"),
        (true, Some(t), Some(b"HTTP/1.0"), None) if !t.is_empty() => Some("http/1.0"),
        _ => None,
    })
}

/// The protocol of the connection's first bytes, peeked.
pub(crate) async fn http_protocol(sock: &TcpStream) -> Option<&'static str> {
    let mut buf = vec![0u8; MAX_LINE];
    let (mut seen, mut stalled) = (0, 0u64);
    loop {
        let n = sock.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if let Verdict::Protocol(p) = classify(&buf[..n]) {
            return p;
        }
        // More of the first line is on its way; peek returns at once
        // while nothing new has come, so wait between looks, longer the
        // longer the client stalls.
        if n == seen {
            stalled = (stalled * 2).clamp(1, 100);
            tokio::time::sleep(Duration::from_millis(stalled)).await;
        } else {
            stalled = 0;
        }
        seen = n;
    }
}

#[cfg(test)]
mod tests {
    use super::{classify, Verdict};

    #[test]
    fn first_bytes() {
        let p = |s: &[u8]| classify(s);
        assert_eq!(
            p(b"GET / HTTP/1.1\r\nhost: a\r\n"),
            Verdict::Protocol(Some("http/1.1"))
        );
        assert_eq!(
            p(b"POST /x HTTP/1.0\r\n"),
            Verdict::Protocol(Some("http/1.0"))
        );
        assert_eq!(
            p(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Verdict::Protocol(Some("h2c"))
        );
        assert_eq!(p(b"PRI * HTTP"), Verdict::NeedMore);
        assert_eq!(p(b"GET /long"), Verdict::NeedMore);
        assert_eq!(
            p(b"GET / HTTP/1.1\r"),
            Verdict::NeedMore,
            "cut between CR and LF"
        );
        assert_eq!(p(b"\x16\x03\x01\x02\x00"), Verdict::Protocol(None), "TLS");
        assert_eq!(p(b"hello world\r\n"), Verdict::Protocol(None));
        assert_eq!(p(b"*1\r\n$4\r\nPING\r\n"), Verdict::Protocol(None), "redis");
    }
}
