//! Access logs as Envoy writes them: one entry per request or TCP
//! connection, filled as the request goes, and written when it ends by the
//! loggers its chain's config names (`config`), in their format
//! (`format`), to their files (`sink`). A chain without an `access_log`
//! logs nothing, as in Envoy (istiod adds one when the mesh config's
//! `accessLogFile` or the Telemetry API asks for it).

mod cel;
pub(crate) mod config;
mod format;
pub(crate) mod sink;

pub(crate) use config::Logs;
pub(crate) use sink::{flush, start_flusher};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderValue;

use http::Request;

use crate::error::Flags;
use crate::http::Connection;
use crate::stats::record::{BodySeen, Observed, Recorder};

/// One request's log line, written when the record is dropped: normally
/// after `finish`, but also when the request's future is dropped midway
/// (the client went away), which Envoy logs with status 0 and flag DC.
pub(crate) struct Record {
    pub entry: Entry,
    started: std::time::Instant,
    finished: bool,
    /// Istio's metrics, on a chain that records them.
    recorder: Option<Recorder>,
    /// The chain's loggers, when it has any.
    logs: Option<Arc<Logs>>,
    /// Where a failure is noted for the dashboard.
    recent: Arc<crate::recent::Recent>,
}

impl Record {
    pub fn new(
        entry: Entry,
        recorder: Option<Recorder>,
        logs: Option<Arc<Logs>>,
        recent: Arc<crate::recent::Recent>,
    ) -> Record {
        Record {
            entry,
            started: std::time::Instant::now(),
            finished: false,
            recorder,
            logs,
            recent,
        }
    }

    /// The response's status, and the response headers the loggers read.
    pub fn finish(&mut self, response: &http::HeaderMap, status: http::StatusCode) {
        self.entry.status = status.as_u16();
        self.finished = true;
        if let Some(logs) = &self.logs {
            self.entry.response_headers = capture(&logs.wanted.response, response);
        }
    }

    /// Whether anything reads the record when the response ends.
    pub fn wanted(&self) -> bool {
        self.recorder.is_some() || self.logs.is_some() || self.entry.trace.is_some()
    }
}

/// The values of `names` in `headers`, in order.
pub(crate) fn capture(
    names: &[http::HeaderName],
    headers: &http::HeaderMap,
) -> Vec<Option<HeaderValue>> {
    names.iter().map(|n| headers.get(n).cloned()).collect()
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
        if let Some(logs) = &self.logs {
            logs.write(&self.entry);
        }
        self.recent.note(&self.entry);
        if let Some(t) = self.entry.trace.take() {
            t.finish(&self.entry);
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Entry {
    pub start: Option<SystemTime>,
    /// None on a TCP connection's entry. Shared with the request, not
    /// copied (no allocation per request).
    pub method: Option<http::Method>,
    /// The path and query, sharing the request head's bytes.
    pub path: Option<http::uri::PathAndQuery>,
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
    /// The client: the peer, or who `x-forwarded-for` says it is (Envoy's
    /// downstream remote address).
    pub downstream: Option<SocketAddr>,
    /// The peer, when the client is someone else.
    pub downstream_direct: Option<SocketAddr>,
    /// The SNI of a connection the proxy terminated TLS on.
    pub server_name: Option<String>,
    /// The client's SPIFFE id, when it came over mesh mTLS (Envoy's
    /// `%DOWNSTREAM_PEER_URI_SAN%`).
    pub peer_principal: Option<String>,
    /// The AUDIT policy (RBAC LOG) the request matched.
    pub audit: Option<String>,
    /// Why the proxy answered itself, when it says more than a fixed
    /// reason (`rbac_access_denied_matched_policy[...]`); on TCP, Envoy's
    /// connection termination details.
    pub detail: Option<String>,
    /// Envoy's response code details where they are fixed: `via_upstream`,
    /// `route_not_found`, …
    pub code_details: &'static str,
    /// Why the upstream connection failed (Envoy's transport failure reason).
    pub transport_failure: Option<String>,
    /// The address the client dialled (the original destination).
    pub downstream_local: Option<SocketAddr>,
    /// The proxy's own end of the upstream connection.
    pub upstream_local: Option<SocketAddr>,
    /// Request headers the loggers read, as `Logs::wanted` lists them.
    pub request_headers: Vec<Option<HeaderValue>>,
    /// Response headers the loggers read.
    pub response_headers: Vec<Option<HeaderValue>>,
    /// The request body as read from downstream (once, whatever the
    /// retries), shared with the body that reads it; None for no body.
    pub request_body: Option<Arc<BodySeen>>,
    /// Response body bytes sent to the client (TCP: bytes to the client).
    pub bytes_sent: u64,
    /// TCP: bytes from the client.
    pub tcp_received: u64,
    /// The request's span, when its connection manager traces.
    pub trace: Option<Box<crate::trace::Active>>,
    /// What the metrics need beyond the line, on a chain that records.
    pub observed: Option<Observed>,
}

impl Entry {
    pub fn for_request<B>(req: &Request<B>, conn: &Connection, request_id: String) -> Entry {
        Entry {
            start: Some(SystemTime::now()),
            method: Some(req.method().clone()),
            path: req.uri().path_and_query().cloned(),
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
            downstream_local: Some(conn.destination),
            server_name: conn.tls.as_ref().and_then(|t| t.server_name.clone()),
            peer_principal: conn.tls.as_ref().and_then(|t| t.peer_principal.clone()),
            ..Default::default()
        }
    }

    /// The request's method; empty on a TCP connection's entry.
    pub fn method(&self) -> &str {
        self.method.as_ref().map_or("", http::Method::as_str)
    }

    /// The request's path and query; empty on a TCP connection's entry.
    pub fn path(&self) -> &str {
        self.path.as_ref().map_or("", |p| p.as_str())
    }

    /// The path without its query.
    pub fn url_path(&self) -> &str {
        self.path.as_ref().map_or("", |p| p.path())
    }

    /// Whether the entry is an HTTP request's (not a TCP connection's);
    /// a head refused before it was a request has no method.
    pub fn is_http(&self) -> bool {
        !self.protocol.is_empty()
    }

    /// The client's address: the peer unless `x-forwarded-for` named
    /// another.
    pub fn client(&self, conn: &Connection) -> SocketAddr {
        self.downstream.unwrap_or(conn.peer)
    }

    /// Envoy's `%RESPONSE_CODE_DETAILS%`.
    pub fn details(&self) -> Option<&str> {
        self.detail
            .as_deref()
            .or((!self.code_details.is_empty()).then_some(self.code_details))
    }

    /// Envoy's `%BYTES_RECEIVED%`: the request body (TCP: from the client).
    pub fn bytes_received(&self) -> u64 {
        self.tcp_received + self.request_body.as_ref().map_or(0, |b| b.totals().0)
    }
}

/// This machine's name (Envoy's `%HOSTNAME%`), read once.
pub(crate) fn hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::format::{parse_text, Format, Wanted};
    use super::*;

    /// Istio's default text format (istiod's `EnvoyTextLogFormat`).
    const ISTIO: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

    fn entry(wanted: &Wanted) -> Entry {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        let mut req = http::HeaderMap::new();
        req.insert("user-agent", HeaderValue::from_static("curl/8.14"));
        Entry {
            start: Some(at),
            method: Some(http::Method::GET),
            path: Some(http::uri::PathAndQuery::from_static("/ratings/0")),
            protocol: "HTTP/1.1",
            status: 503,
            flags: Flags::CONNECT_FAILURE,
            code_details: "upstream_reset_before_response_started{connection_failure}",
            duration: Duration::from_millis(7),
            request_id: "r1".into(),
            authority: "ratings:9080".into(),
            upstream: Some("198.18.0.12:9080".parse().unwrap()),
            cluster: "outbound|9080||ratings.default.svc.cluster.local".into(),
            route: "default".into(),
            downstream: Some("198.18.0.5:4000".parse().unwrap()),
            downstream_local: Some("10.96.0.7:9080".parse().unwrap()),
            bytes_sent: 91,
            request_headers: capture(&wanted.request, &req),
            ..Default::default()
        }
    }

    #[test]
    fn istios_default_text_format() {
        let mut wanted = Wanted::default();
        let format = Format::Text(parse_text(ISTIO, &mut wanted).unwrap());
        let mut buf = Vec::new();
        format.render(&mut buf, &entry(&wanted));
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "[2025-11-24T16:00:00.123Z] \"GET /ratings/0 HTTP/1.1\" 503 UF upstream_reset_before_response_started{connection_failure} - \"-\" 0 91 7 - \"-\" \"curl/8.14\" \"r1\" \"ratings:9080\" \"198.18.0.12:9080\" outbound|9080||ratings.default.svc.cluster.local - 10.96.0.7:9080 198.18.0.5:4000 - default\n"
        );
    }

    #[test]
    fn json_keeps_numbers_and_nulls() {
        let mut wanted = Wanted::default();
        let mut field = |k: &str, v: &str| {
            (
                k.to_string(),
                format::JsonValue::Pieces(parse_text(v, &mut wanted).unwrap()),
            )
        };
        let fields = vec![
            field("response_code", "%RESPONSE_CODE%"),
            field("user_agent", "%REQ(USER-AGENT)%"),
            field("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
            field("both", "%RESPONSE_CODE% %RESPONSE_FLAGS%"),
        ];
        let mut buf = Vec::new();
        Format::Json(fields).render(&mut buf, &entry(&wanted));
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "{\"response_code\":503,\"user_agent\":\"curl/8.14\",\"x_forwarded_for\":null,\"both\":\"503 UF\"}\n"
        );
    }
}
