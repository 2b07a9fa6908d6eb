//! Responses the proxy writes itself: Envoy's local replies for errors,
//! direct responses and redirects.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, HOST, LOCATION};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::Body;
use crate::access_log::Entry;
use crate::compile::{Redirect, RouteCfg};
use crate::error::ProxyError;

/// gRPC's status, read on every response where metrics or retries look.
pub(crate) const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

fn reply(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body).map_err(|e| match e {}).boxed());
    *resp.status_mut() = status;
    resp
}

/// Envoy's local reply for a failed request; records its flag and detail.
/// A gRPC client gets it the gRPC way (see `grpc`).
pub(crate) fn error(e: &ProxyError, entry: &mut Entry, grpc: bool) -> Response<Body> {
    entry.flags.insert(e.flag());
    entry.code_details = e.details();
    entry.transport_failure = e.transport_failure();
    if grpc {
        return grpc_reply(e.status(), e.grpc_status(), e.body());
    }
    let mut resp = reply(e.status(), Bytes::from_static(e.body().as_bytes()));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// Whether Envoy treats a request with these headers as gRPC:
/// content-type `application/grpc` or `application/grpc+…`.
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v == "application/grpc" || v.as_bytes().starts_with(b"application/grpc+"))
}

/// A local reply to a gRPC request, as Envoy writes it: HTTP 200 with
/// only headers (trailers-only), `grpc-status` the explicit status or the
/// HTTP status mapped, `grpc-message` the body percent-encoded.
fn grpc_reply(status: StatusCode, explicit: Option<u32>, message: &str) -> Response<Body> {
    let mut resp = reply(StatusCode::OK, Bytes::new());
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    let code = explicit.unwrap_or_else(|| grpc_status_of(status));
    headers.insert(GRPC_STATUS, HeaderValue::from(code));
    if !message.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
            headers.insert("grpc-message", v);
        }
    }
    resp
}

/// Envoy's HTTP → gRPC status table.
fn grpc_status_of(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

/// gRPC's `grpc-message` encoding: bytes outside printable ASCII, and
/// `%`, become `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// For a request on a connection whose listener or chain the config no
/// longer has: 503, and the connection is closed.
pub(crate) fn gone() -> Response<Body> {
    let mut resp = direct(
        StatusCode::SERVICE_UNAVAILABLE,
        Bytes::from_static(b"listener removed"),
    );
    resp.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// For a request whose headers pass Envoy's `max_request_headers_kb`
/// (60 KiB by default): 431, and the connection is closed.
pub(crate) fn headers_too_large() -> Response<Body> {
    let mut resp = direct(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, Bytes::new());
    resp.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

pub(crate) fn direct(status: StatusCode, body: Bytes) -> Response<Body> {
    let has_body = !body.is_empty();
    let mut resp = reply(status, body);
    if has_body {
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    resp
}

/// A redirect: each part of the request's URL that the route names is
/// swapped, the rest kept. A new host drops the old port; a new scheme
/// drops a port that was only the old scheme's default.
/// Envoy's answer on a virtual host that requires TLS: 301 to the same
/// URL with scheme https (port 80 dropped).
pub(crate) fn https_redirect<B>(req: &Request<B>) -> Response<Body> {
    let to_https = Redirect {
        scheme: Some("https".into()),
        host: None,
        port: None,
        path: None,
        prefix: None,
        code: StatusCode::MOVED_PERMANENTLY,
        strip_query: false,
    };
    redirect(&to_https, None, req)
}

pub(crate) fn redirect<B>(
    r: &Redirect,
    route: Option<&RouteCfg>,
    req: &Request<B>,
) -> Response<Body> {
    let location = location(r, route, req);
    let mut resp = reply(r.code, Bytes::new());
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

fn location<B>(r: &Redirect, route: Option<&RouteCfg>, req: &Request<B>) -> String {
    let old_scheme = req.uri().scheme_str().unwrap_or("http");
    let scheme = r.scheme.as_deref().unwrap_or(old_scheme);
    let authority = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    let (old_host, old_port) = split_port(authority);
    let host = r.host.as_deref().unwrap_or(old_host);
    let port = match (r.port, &r.host) {
        (Some(p), _) => Some(p.to_string()),
        (None, Some(_)) => None,
        (None, None) => old_port
            .filter(|p| scheme == old_scheme || *p != default_port(old_scheme))
            .map(str::to_string),
    };
    let path = req.uri().path();
    let query = req.uri().query().filter(|_| !r.strip_query);
    let new_path = match (&r.path, &r.prefix) {
        (Some(p), _) if p.contains('?') => {
            return format!("{scheme}://{}{p}", with_port(host, port))
        }
        (Some(p), _) => p.clone(),
        (None, Some(prefix)) => format!(
            "{prefix}{}",
            &path[route.map_or(0, |r| r.rewritten_len(path))..]
        ),
        (None, None) => path.to_string(),
    };
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{scheme}://{}{new_path}{query}", with_port(host, port))
}

fn with_port(host: &str, port: Option<String>) -> String {
    match port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// `host:port` into its parts; an IPv6 literal keeps its brackets.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    match authority.rsplit_once(':') {
        Some((h, p))
            if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') =>
        {
            (h, Some(p))
        }
        _ => (authority, None),
    }
}

fn default_port(scheme: &str) -> &'static str {
    if scheme == "https" {
        "443"
    } else {
        "80"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_replies() {
        assert_eq!(grpc_status_of(StatusCode::SERVICE_UNAVAILABLE), 14);
        assert_eq!(grpc_status_of(StatusCode::GATEWAY_TIMEOUT), 14);
        assert_eq!(grpc_status_of(StatusCode::NOT_FOUND), 12);
        assert_eq!(grpc_status_of(StatusCode::IM_A_TEAPOT), 2);
        assert_eq!(percent_encode("no healthy upstream"), "no healthy upstream");
        assert_eq!(percent_encode("100% ~é\n"), "100%25 %7E%C3%A9%0A");
    }

    #[test]
    fn authority_ports() {
        assert_eq!(split_port("a:8080"), ("a", Some("8080")));
        assert_eq!(split_port("a"), ("a", None));
        assert_eq!(split_port("[::1]:80"), ("[::1]", Some("80")));
        assert_eq!(split_port("[::1]"), ("[::1]", None));
    }
}
