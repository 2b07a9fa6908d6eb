//! The HTTP path: route lookup on the snapshot the request started with,
//! cluster and endpoint choice, forwarding on pooled upstream connections,
//! Envoy-style local replies and response flags.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, HOST};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::access_log::{self, Entry};
use crate::compile::{Compiled, RequestView, RouteRef};
use crate::upstream::{self, UpstreamError};
use crate::Shared;

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// What the request path knows about its downstream connection.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    pub peer: SocketAddr,
    /// Original destination (the service VIP or pod address the app dialled).
    pub destination: SocketAddr,
    pub listener: String,
}

pub(crate) async fn serve(
    sock: TcpStream,
    conn: Connection,
    routes: RouteRef,
    shared: Arc<Shared>,
) {
    let conn = Arc::new(conn);
    let service = service_fn(move |req| {
        let (conn, routes, shared) = (conn.clone(), routes.clone(), shared.clone());
        async move { Ok::<_, Infallible>(handle(req, &conn, &routes, &shared).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder.serve_connection(TokioIo::new(sock), service).await {
        tracing::debug!(error = %e, "downstream connection ended with an error");
    }
}

/// One request, start to end, on one config snapshot.
async fn handle(
    mut req: Request<Incoming>,
    conn: &Connection,
    routes: &RouteRef,
    shared: &Shared,
) -> Response<Body> {
    let start = Instant::now();
    let snapshot = shared.config.load_full();
    let request_id = ensure_request_id(&mut req);
    let mut entry = Entry::for_request(&req, conn, request_id);
    let response = match route(&req, routes, &snapshot) {
        Err((status, flag)) => local_reply(status, flag, &mut entry),
        Ok((route_name, cluster_name)) => {
            entry.route = route_name;
            entry.cluster = cluster_name.clone();
            forward(req, conn, &cluster_name, &snapshot, &mut entry).await
        }
    };
    entry.status = response.status().as_u16();
    entry.duration = start.elapsed();
    access_log::write(&entry);
    response
}

type Flagged = (StatusCode, &'static str);

/// Virtual host by authority, then the first route that matches; returns
/// (route name, cluster name) or the local reply and its response flag.
fn route(
    req: &Request<Incoming>,
    routes: &RouteRef,
    snapshot: &Compiled,
) -> Result<(Arc<str>, Arc<str>), Flagged> {
    let table = match routes {
        RouteRef::Inline(t) => Some(t),
        RouteRef::Rds(name) => snapshot.routes.get(name),
    };
    let table = table.ok_or((StatusCode::NOT_FOUND, "NR"))?;
    let host = authority(req);
    let vhost = table
        .virtual_host(host)
        .ok_or((StatusCode::NOT_FOUND, "NR"))?;
    let view = RequestView {
        method: req.method().as_str(),
        authority: host,
        scheme: req.uri().scheme_str().unwrap_or("http"),
        path: req.uri().path(),
        query: req.uri().query(),
        headers: req.headers(),
    };
    let route = vhost
        .routes
        .iter()
        .find(|r| r.matches(&view))
        .ok_or((StatusCode::NOT_FOUND, "NR"))?;
    let cluster = route
        .action
        .pick(|total| fastrand::u32(..total))
        .ok_or((StatusCode::SERVICE_UNAVAILABLE, "NC"))?;
    Ok((route.name.clone(), cluster.clone()))
}

fn authority(req: &Request<Incoming>) -> &str {
    req.headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
}

async fn forward(
    mut req: Request<Incoming>,
    conn: &Connection,
    cluster_name: &str,
    snapshot: &Compiled,
    entry: &mut Entry,
) -> Response<Body> {
    let Some(cluster) = snapshot.clusters.get(cluster_name) else {
        return local_reply(StatusCode::SERVICE_UNAVAILABLE, "NC", entry);
    };
    let Some(endpoint) = cluster.pick(conn.destination) else {
        return local_reply(StatusCode::SERVICE_UNAVAILABLE, "UH", entry);
    };
    entry.upstream = Some(endpoint);
    // HTTP/2 requests carry the authority in the URI, HTTP/1.1 needs Host.
    if !req.headers().contains_key(HOST) {
        if let Some(v) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(HOST, v);
        }
    }
    // Upstream requests are written in origin form (`/path?query`).
    let origin_form = req
        .uri()
        .path_and_query()
        .cloned()
        .map(Uri::from)
        .unwrap_or_else(|| Uri::from_static("/"));
    *req.uri_mut() = origin_form;
    *req.version_mut() = http::Version::HTTP_11;
    strip_hop_by_hop(req.headers_mut());
    match upstream::send(endpoint, req).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(UpstreamError::Connect(e)) => {
            entry.detail = Some(e.to_string());
            local_reply_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "UF",
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                entry,
            )
        }
        Err(UpstreamError::Request(e)) => {
            entry.detail = Some(e.to_string());
            local_reply_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "UC",
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                entry,
            )
        }
    }
}

fn local_reply(status: StatusCode, flag: &'static str, entry: &mut Entry) -> Response<Body> {
    let body = match flag {
        "UH" => "no healthy upstream",
        _ => "",
    };
    local_reply_body(status, flag, body, entry)
}

fn local_reply_body(
    status: StatusCode,
    flag: &'static str,
    body: &str,
    entry: &mut Entry,
) -> Response<Body> {
    entry.flags = flag;
    let mut resp = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|e| match e {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    resp
}

const HOP_BY_HOP: [&str; 6] = [
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
];

/// Connection-scoped headers must not cross the proxy (RFC 9110 §7.6.1),
/// including the ones the Connection header itself names.
fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    headers.remove(CONNECTION);
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
}

/// Envoy gives every request an x-request-id (a version-4 UUID) when it has none.
fn ensure_request_id(req: &mut Request<Incoming>) -> String {
    if let Some(id) = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
    {
        return id.to_string();
    }
    let id = uuid_v4(fastrand::u128(..));
    let text = std::str::from_utf8(&id).expect("hex digits").to_string();
    if let Ok(v) = HeaderValue::from_bytes(&id) {
        req.headers_mut().insert("x-request-id", v);
    }
    text
}

/// The textual form of a random UUID (RFC 9562 version 4, variant 10).
fn uuid_v4(random: u128) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = (random & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let mut out = [b'-'; 36];
    let mut nibble = 32;
    for (i, slot) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        nibble -= 1;
        *slot = HEX[((bits >> (nibble * 4)) & 0xf) as usize];
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_version_4_uuids() {
        let id = super::uuid_v4(u128::MAX);
        assert_eq!(&id, b"ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = super::uuid_v4(0);
        assert_eq!(&id, b"00000000-0000-4000-8000-000000000000");
        let id = super::uuid_v4(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(&id, b"01234567-89ab-4def-8123-456789abcdef");
    }
}
