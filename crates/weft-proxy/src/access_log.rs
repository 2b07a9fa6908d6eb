//! Access log lines in the spirit of Envoy's default format, one per request
//! or TCP connection, on standard output.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::Request;

use crate::http::Connection;

#[derive(Debug, Default)]
pub(crate) struct Entry {
    pub start: Option<SystemTime>,
    pub method: String,
    pub path: String,
    pub protocol: &'static str,
    pub status: u16,
    /// Envoy's response flags (`-` when none).
    pub flags: &'static str,
    pub duration: Duration,
    pub request_id: String,
    pub authority: String,
    pub upstream: Option<SocketAddr>,
    pub cluster: String,
    pub route: String,
    pub downstream: Option<SocketAddr>,
    pub listener: String,
    pub detail: Option<String>,
}

impl Entry {
    pub fn for_request<B>(req: &Request<B>, conn: &Connection, request_id: String) -> Entry {
        Entry {
            start: Some(SystemTime::now()),
            method: req.method().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            protocol: match req.version() {
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            flags: "-",
            request_id,
            authority: req
                .headers()
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string(),
            downstream: Some(conn.peer),
            listener: conn.listener.clone(),
            ..Default::default()
        }
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

pub(crate) fn write(e: &Entry) {
    let ts = rfc3339(e.start.unwrap_or_else(SystemTime::now));
    let upstream = e
        .upstream
        .map(|a| a.to_string())
        .unwrap_or_else(|| "-".into());
    let downstream = e
        .downstream
        .map(|a| a.to_string())
        .unwrap_or_else(|| "-".into());
    let line =
        if e.method.is_empty() {
            format!(
                "[{ts}] \"- - -\" 0 {} {} \"{upstream}\" {} {downstream} {}\n",
                e.flags,
                e.duration.as_millis(),
                or_dash(&e.cluster),
                e.listener,
            )
        } else {
            format!(
            "[{ts}] \"{} {} {}\" {} {} {} \"{}\" \"{}\" \"{upstream}\" {} {} {downstream} {}{}\n",
            e.method,
            e.path,
            e.protocol,
            e.status,
            e.flags,
            e.duration.as_millis(),
            e.request_id,
            e.authority,
            or_dash(&e.cluster),
            or_dash(&e.route),
            e.listener,
            e.detail.as_ref().map(|d| format!(" detail={d:?}")).unwrap_or_default(),
        )
        };
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

/// UTC timestamp with milliseconds, computed without a date crate
/// (days-to-civil conversion from Howard Hinnant's algorithm).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_000_000_123);
        assert_eq!(super::rfc3339(t), "2025-11-24T16:00:00.123Z");
    }
}
