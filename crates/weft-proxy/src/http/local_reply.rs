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

fn reply(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body).map_err(|e| match e {}).boxed());
    *resp.status_mut() = status;
    resp
}

/// Envoy's local reply for a failed request; records its flag and detail.
pub(crate) fn error(e: &ProxyError, entry: &mut Entry) -> Response<Body> {
    entry.flags.insert(e.flag());
    entry.detail = e.detail();
    let mut resp = reply(e.status(), Bytes::from_static(e.body().as_bytes()));
    let headers = resp.headers_mut();
    if let ProxyError::GrpcFaultAbort(code) = e {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from(*code));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("fault filter abort"),
        );
    } else {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
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
pub(crate) fn redirect<B>(r: &Redirect, route: &RouteCfg, req: &Request<B>) -> Response<Body> {
    let location = location(r, route, req);
    let mut resp = reply(r.code, Bytes::new());
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

fn location<B>(r: &Redirect, route: &RouteCfg, req: &Request<B>) -> String {
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
        (None, Some(prefix)) => format!("{prefix}{}", &path[route.rewritten_len(path)..]),
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
    fn authority_ports() {
        assert_eq!(split_port("a:8080"), ("a", Some("8080")));
        assert_eq!(split_port("a"), ("a", None));
        assert_eq!(split_port("[::1]:80"), ("[::1]", Some("80")));
        assert_eq!(split_port("[::1]"), ("[::1]", None));
    }
}
