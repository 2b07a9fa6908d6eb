//! Access log lines in the spirit of Envoy's default format, one per request
//! or TCP connection, on standard output.
//!
//! Lines are buffered and written once a second (or when 64 KiB gather), as
//! Envoy's file access log is: a write(2) per request would cost more than
//! the rest of the request path.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::Request;

use crate::error::Flags;
use crate::http::Connection;
use crate::stats::record::{Observed, Recorder};

/// One request's log line, written when the record is dropped: normally
/// after `finish`, but also when the request's future is dropped midway
/// (the client went away), which Envoy logs with status 0 and flag DC.
pub(crate) struct Record {
    pub entry: Entry,
    started: std::time::Instant,
    finished: bool,
    /// Istio's metrics, on a chain that records them.
    recorder: Option<Recorder>,
}

impl Record {
    pub fn new(entry: Entry, recorder: Option<Recorder>) -> Record {
        Record {
            entry,
            started: std::time::Instant::now(),
            finished: false,
            recorder,
        }
    }

    pub fn finish(&mut self, status: http::StatusCode) {
        self.entry.status = status.as_u16();
        self.finished = true;
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if !self.finished {
            self.entry.status = 0;
            self.entry.flags.insert(Flags::DOWNSTREAM_TERMINATION);
        }
        self.entry.duration = self.started.elapsed();
        if let (Some(r), Some(o)) = (&self.recorder, &self.entry.observed) {
            r.http(&self.entry, o);
        }
        write(&self.entry);
    }
}

#[derive(Debug, Default)]
pub(crate) struct Entry {
    pub start: Option<SystemTime>,
    pub method: String,
    pub path: String,
    pub protocol: &'static str,
    pub status: u16,
    /// Envoy's response flags (`-` when none).
    pub flags: Flags,
    pub duration: Duration,
    pub request_id: String,
    pub authority: String,
    pub upstream: Option<SocketAddr>,
    pub cluster: Arc<str>,
    pub route: Arc<str>,
    pub downstream: Option<SocketAddr>,
    pub listener: String,
    /// The SNI of a connection the proxy terminated TLS on.
    pub server_name: Option<String>,
    /// The client's SPIFFE id, when it came over mesh mTLS (Envoy's
    /// `%DOWNSTREAM_PEER_URI_SAN%`).
    pub peer_principal: Option<String>,
    /// The AUDIT policy (RBAC LOG) the request matched.
    pub audit: Option<String>,
    /// Why the proxy answered itself (Envoy's response code details, e.g.
    /// `rbac_access_denied_matched_policy[...]`).
    pub detail: Option<String>,
    /// What the metrics need beyond the line, on a chain that records.
    pub observed: Option<Observed>,
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
            request_id,
            // HTTP/2 carries it in the URI.
            authority: match crate::router::authority(req) {
                "" => "-".to_string(),
                a => a.to_string(),
            },
            downstream: Some(conn.peer),
            listener: conn.listener.clone(),
            server_name: conn.tls.as_ref().and_then(|t| t.server_name.clone()),
            peer_principal: conn.tls.as_ref().and_then(|t| t.peer_principal.clone()),
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

/// One buffer per worker thread, so writers never contend; the flusher
/// visits every shard once a second. Lines from different threads may
/// interleave out of order in the file, as with Envoy's per-worker buffers.
type Shard = Arc<Mutex<Vec<u8>>>;
static SHARDS: Mutex<Vec<Shard>> = Mutex::new(Vec::new());
const FLUSH_AT: usize = 64 * 1024;

thread_local! {
    static SHARD: Shard = {
        let shard = Shard::default();
        lock(&SHARDS).push(shard.clone());
        shard
    };
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn write(e: &Entry) {
    let full = SHARD.with(|shard| {
        let mut buf = lock(shard);
        format_line(&mut buf, e);
        (buf.len() >= FLUSH_AT).then(|| std::mem::take(&mut *buf))
    });
    if let Some(bytes) = full {
        let _ = std::io::stdout().lock().write_all(&bytes);
    }
}

/// Writes out whatever every thread has buffered.
pub(crate) fn flush() {
    let shards = lock(&SHARDS).clone();
    let mut out = std::io::stdout().lock();
    for shard in shards {
        let bytes = std::mem::take(&mut *lock(&shard));
        let _ = out.write_all(&bytes);
    }
    let _ = out.flush();
}

/// Flushes once a second, for as long as the proxy runs.
pub(crate) async fn flush_every_second() {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        flush();
    }
}

/// An optional address, or `-`.
struct Addr(Option<SocketAddr>);

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// Appends one line to `buf`, formatting straight into it.
fn format_line(buf: &mut Vec<u8>, e: &Entry) {
    let ts = weft_xds::clock::Rfc3339::millis(e.start.unwrap_or_else(SystemTime::now));
    let (upstream, downstream) = (Addr(e.upstream), Addr(e.downstream));
    let millis = e.duration.as_millis();
    let _ = if e.method.is_empty() {
        write!(
            buf,
            "[{ts}] \"- - -\" 0 {} {millis} \"{upstream}\" {} {downstream} {}",
            e.flags,
            or_dash(&e.cluster),
            e.listener,
        )
    } else {
        write!(
            buf,
            "[{ts}] \"{} {} {}\" {} {} {millis} \"{}\" \"{}\" \"{upstream}\" {} {} {downstream} {}",
            e.method,
            e.path,
            e.protocol,
            e.status,
            e.flags,
            e.request_id,
            e.authority,
            or_dash(&e.cluster),
            or_dash(&e.route),
            e.listener,
        )
    };
    if let Some(sni) = &e.server_name {
        let _ = write!(buf, " sni={sni:?}");
    }
    if let Some(p) = &e.peer_principal {
        let _ = write!(buf, " peer={p:?}");
    }
    if let Some(a) = &e.audit {
        let _ = write!(buf, " audit={a:?}");
    }
    if let Some(d) = &e.detail {
        let _ = write!(buf, " detail={d:?}");
    }
    buf.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_envoys_default_order() {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        let e = Entry {
            start: Some(at),
            method: "GET".into(),
            path: "/ratings/0".into(),
            protocol: "HTTP/1.1",
            status: 503,
            flags: Flags::CONNECT_FAILURE,
            duration: Duration::from_millis(7),
            request_id: "r1".into(),
            authority: "ratings:9080".into(),
            downstream: Some("198.18.0.5:4000".parse().unwrap()),
            listener: "virtualInbound".into(),
            ..Default::default()
        };
        let mut buf = Vec::new();
        format_line(&mut buf, &e);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "[2025-11-24T16:00:00.123Z] \"GET /ratings/0 HTTP/1.1\" 503 UF 7 \"r1\" \"ratings:9080\" \"-\" - - 198.18.0.5:4000 virtualInbound\n"
        );
    }
}
