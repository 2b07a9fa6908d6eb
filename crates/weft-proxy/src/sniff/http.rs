//! `http_inspector`: an HTTP/1.x request line or the HTTP/2 preface.

use super::Verdict;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Envoy gives up on a first line longer than this.
pub(super) const MAX_LINE: usize = 8192;

/// The protocol the first bytes show: `Done(None)` when they are not HTTP.
pub(super) fn classify(data: &[u8]) -> Verdict<Option<&'static str>> {
    if PREFACE.starts_with(&data[..data.len().min(PREFACE.len())]) {
        return if data.len() >= PREFACE.len() {
            Verdict::Done(Some("h2c"))
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
            Verdict::Done(None)
        };
    };
    let line = &data[..end];
    let mut parts = line.split(|b| *b == b' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let method_ok = method.is_some_and(|m| !m.is_empty() && m.iter().all(u8::is_ascii_uppercase));
    Verdict::Done(match (method_ok, target, version, parts.next()) {
        (true, Some(t), Some(b"HTTP/1.1"), None) if !t.is_empty() => Some("http/1.1"),
        (true, Some(t), Some(b"HTTP/1.0"), None) if !t.is_empty() => Some("http/1.0"),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::classify;
    use crate::sniff::Verdict;

    #[test]
    fn first_bytes() {
        let p = |s: &[u8]| classify(s);
        assert_eq!(
            p(b"GET / HTTP/1.1\r\nhost: a\r\n"),
            Verdict::Done(Some("http/1.1"))
        );
        assert_eq!(p(b"POST /x HTTP/1.0\r\n"), Verdict::Done(Some("http/1.0")));
        assert_eq!(
            p(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Verdict::Done(Some("h2c"))
        );
        assert_eq!(p(b"PRI * HTTP"), Verdict::NeedMore);
        assert_eq!(p(b"GET /long"), Verdict::NeedMore);
        assert_eq!(
            p(b"GET / HTTP/1.1\r"),
            Verdict::NeedMore,
            "cut between CR and LF"
        );
        assert_eq!(p(b"\x16\x03\x01\x02\x00"), Verdict::Done(None), "TLS");
        assert_eq!(p(b"hello world\r\n"), Verdict::Done(None));
        assert_eq!(p(b"*1\r\n$4\r\nPING\r\n"), Verdict::Done(None), "redis");
    }
}
