//! Numbers, addresses and timestamps written straight into a byte buffer,
//! for the per-request text the proxy writes (access-log lines, the
//! edge's forwarding headers). `fmt`'s generic machinery (padding, width,
//! a `dyn Write` per call) showed in the profiles of the request path.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

/// `n` in decimal.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `n` in lowercase hexadecimal (an HTTP/1.1 chunk's size).
pub(crate) fn push_hex(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// An address as `Display` writes it.
pub(crate) fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            // Into a stack buffer, extended once: a push per digit and dot
            // cost 300 instructions an address.
            let mut text = [0u8; 15];
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    text[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    text[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                text[len] = b'0' + octet % 10;
                len += 1;
            }
            out.extend_from_slice(&text[..len]);
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// `ip:port`, `[ip6]:port`, as `Display` writes a socket address.
pub(crate) fn push_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(_) => push_ip(out, addr.ip()),
        SocketAddr::V6(a) if a.scope_id() != 0 || a.flowinfo() != 0 => {
            use std::io::Write;
            let _ = write!(out, "{addr}");
            return;
        }
        SocketAddr::V6(_) => {
            out.push(b'[');
            push_ip(out, addr.ip());
            out.push(b']');
        }
    }
    out.push(b':');
    push_u64(out, u64::from(addr.port()));
}

/// One thread's text for the last second it formatted.
type SecondText = RefCell<(u64, Vec<u8>)>;

thread_local! {
    /// RFC 3339 up to the seconds (`2026-11-27T23:59:59`): log lines come
    /// many to a second.
    static RFC3339_SECOND: SecondText = const { RefCell::new((u64::MAX, Vec::new())) };
    /// The IMF-fixdate of HTTP's `date` header: responses, likewise.
    static HTTP_DATE: SecondText = const { RefCell::new((u64::MAX, Vec::new())) };
}

/// Appends `cache`'s text for `second`, rendered by `render` only when the
/// second is new to this thread.
fn push_per_second(
    cache: &'static std::thread::LocalKey<SecondText>,
    out: &mut Vec<u8>,
    second: u64,
    render: impl FnOnce() -> String,
) {
    cache.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            cached.1.clear();
            cached.1.extend_from_slice(render().as_bytes());
            cached.0 = second;
        }
        out.extend_from_slice(&cached.1);
    });
}

/// `Sat, 28 Nov 2026 10:29:32 GMT` (HTTP's `date`), computed once per
/// second per thread.
pub(crate) fn push_http_date(out: &mut Vec<u8>, at: SystemTime) {
    let second = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    push_per_second(&HTTP_DATE, out, second, || httpdate::fmt_http_date(at));
}

/// `2026-11-27T23:59:59.123Z` (RFC 3339, milliseconds, UTC), the calendar
/// part computed once per second per thread.
pub(crate) fn push_rfc3339_millis(out: &mut Vec<u8>, at: SystemTime) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    push_per_second(&RFC3339_SECOND, out, since.as_secs(), || {
        let text = weft_xds::clock::Rfc3339::seconds(at).to_string();
        text.trim_end_matches('Z').to_string()
    });
    let millis = since.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn written_as_display_writes_them() {
        for n in [0, 7, 10, 99, 100, 65535, u64::MAX] {
            assert_eq!(text(|o| push_u64(o, n)), n.to_string());
            assert_eq!(text(|o| push_hex(o, n)), format!("{n:x}"));
        }
        for a in [
            "0.0.0.0:0",
            "10.9.100.255:15001",
            "[::1]:80",
            "[fd00::1:2]:9080",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(text(|o| push_addr(o, a)), a.to_string());
            assert_eq!(text(|o| push_ip(o, a.ip())), a.ip().to_string());
        }
    }

    #[test]
    fn http_dates_follow_the_second() {
        let at = UNIX_EPOCH + Duration::from_secs(1_795_823_999);
        for t in [
            at,
            at + Duration::from_millis(999),
            at + Duration::from_secs(1),
        ] {
            assert_eq!(text(|o| push_http_date(o, t)), httpdate::fmt_http_date(t));
        }
    }

    #[test]
    fn timestamps_match_the_clocks_format_across_seconds() {
        let base = UNIX_EPOCH + Duration::from_secs(1_795_823_999);
        for ms in [0, 7, 999, 1000, 1001, 61_050] {
            let at = base + Duration::from_millis(ms);
            let want = weft_xds::clock::Rfc3339::millis(at).to_string();
            assert_eq!(text(|o| push_rfc3339_millis(o, at)), want);
        }
    }
}
