//! The HTTP connection manager: one request's lifecycle, start to end, on
//! the config snapshot it started with.
//!
//! accept → codec (hyper) → route → filters' request phases in order →
//! the route's action (router upstream, redirect or direct response) →
//! response mutations → access log (written even if the client leaves).

mod headers;
pub(crate) mod local_reply;
pub(crate) mod xfcc;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::access_log::{Entry, Record};
use crate::compile::{Action, Compiled, RouteRef};
use crate::error::ProxyError;
use crate::filters::{FilterChain, Next};
use crate::router;
use crate::Shared;

pub(crate) use headers::strip_hop_by_hop;
pub(crate) use local_reply::is_grpc;

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// What the request path knows about its downstream connection.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    pub peer: SocketAddr,
    /// The proxy's own end of the connection.
    pub local: SocketAddr,
    /// Original destination (the service VIP or pod address the app dialled).
    pub destination: SocketAddr,
    pub listener: String,
    /// Set when the proxy terminated TLS on this connection.
    pub tls: Option<crate::tls::TlsInfo>,
    /// What the first bytes said (the filter chain was chosen by it).
    pub seen: crate::sniff::Detected,
}

/// The HTTP side of one filter chain: where its routes come from and which
/// filters run before the router.
#[derive(Clone)]
pub(crate) struct Chain {
    pub routes: RouteRef,
    pub filters: Arc<FilterChain>,
    /// Upgrade types let through (`websocket`).
    pub upgrades: Arc<[String]>,
    /// What becomes of `x-forwarded-client-cert`.
    pub xfcc: xfcc::Xfcc,
    /// The config snapshot the chain was taken from.
    pub generation: u64,
}

impl Chain {
    /// This connection's chain in a newer snapshot: a kept-alive
    /// connection follows config changes (an AuthorizationPolicy applied
    /// now holds for its next request, as Envoy's drain of changed chains
    /// makes it). None when the chain is gone or no longer HTTP.
    fn current(snapshot: &Compiled, conn: &Connection) -> Option<Chain> {
        let listener = snapshot.listener_named(&conn.listener)?;
        match &listener
            .chain_for(conn.destination.port(), &conn.seen)?
            .action
        {
            crate::compile::ChainAction::Http {
                routes,
                filters,
                upgrades,
                xfcc,
                ..
            } => Some(Chain {
                routes: routes.clone(),
                filters: filters.clone(),
                upgrades: upgrades.clone(),
                xfcc: *xfcc,
                generation: snapshot.generation,
            }),
            _ => None,
        }
    }
}

pub(crate) async fn serve<S>(sock: S, conn: Connection, chain: Chain, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let service = service_fn(move |req| {
        let (conn, chain, shared) = (conn.clone(), chain.clone(), shared.clone());
        async move { Ok::<_, Infallible>(handle(req, &conn, &chain, &shared).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let serving = builder.serve_connection_with_upgrades(TokioIo::new(sock), service);
    if let Err(e) = serving.await {
        tracing::debug!(error = %e, "downstream connection ended with an error");
    }
}

/// One request, start to end, on one config snapshot.
async fn handle(
    mut req: Request<Incoming>,
    conn: &Connection,
    chain: &Chain,
    shared: &Shared,
) -> Response<Body> {
    let snapshot = shared.config.load_full();
    let fresh;
    let chain = if snapshot.generation == chain.generation {
        chain
    } else {
        match Chain::current(&snapshot, conn) {
            Some(c) => {
                fresh = c;
                &fresh
            }
            None => return local_reply::gone(),
        }
    };
    let request_id = headers::ensure_request_id(&mut req);
    headers::ensure_forwarded_proto(&mut req, conn.tls.is_some());
    if chain.xfcc.action != xfcc::Action::AlwaysForwardOnly {
        let own = shared.identity.spiffe_id();
        chain.xfcc.apply(&mut req, conn, own.as_deref());
    }
    let mut record = Record::new(Entry::for_request(&req, conn, request_id));
    let grpc = is_grpc(req.headers());
    let response = match process(req, conn, chain, &snapshot, &mut record.entry).await {
        Ok(r) => r,
        Err(e) => local_reply::error(&e, &mut record.entry, grpc),
    };
    record.finish(response.status());
    response
}

async fn process(
    mut req: Request<Incoming>,
    conn: &Connection,
    chain: &Chain,
    snapshot: &Compiled,
    entry: &mut Entry,
) -> Result<Response<Body>, ProxyError> {
    let route = match router::find_route(&req, &chain.routes, snapshot, conn.tls.is_some()) {
        Ok(Some(route)) => route,
        Ok(None) => return Ok(local_reply::https_redirect(&req)),
        Err(no_route) => {
            // The filters run before the router finds nothing, as in
            // Envoy: a policy's 401 or 403 comes before a 404.
            let none = crate::filters::RouteFilters::default();
            let next = chain
                .filters
                .on_request(&none, &mut req, conn, snapshot, entry);
            if let Next::Reply(r) = next.await? {
                return Ok(r);
            }
            return Err(no_route);
        }
    };
    entry.route = route.name.clone();
    let next = chain
        .filters
        .on_request(&route.filters, &mut req, conn, snapshot, entry);
    let verdict = match next.await? {
        Next::Continue(v) => v,
        Next::Reply(r) => return Ok(r),
    };
    let mut response = match &route.action {
        Action::Direct { status, body } => local_reply::direct(*status, body.clone()),
        Action::Redirect(r) => local_reply::redirect(r, Some(route), &req),
        Action::Forward(fwd) => match upgrade_of(&req, &chain.upgrades) {
            Some(_) => router::upgrade::forward(req, route, fwd, conn, snapshot, entry).await?,
            None => router::forward(req, route, fwd, conn, snapshot, entry).await?,
        },
    };
    chain
        .filters
        .on_response(&route.filters, verdict, &mut response);
    route.response_headers.apply(response.headers_mut());
    Ok(response)
}

/// The upgrade an HTTP/1.1 request asks for (`Connection: upgrade` and an
/// `Upgrade` token), when the connection manager lets that type through.
fn upgrade_of<'a, B>(req: &'a Request<B>, allowed: &[String]) -> Option<&'a str> {
    use http::header::{CONNECTION, UPGRADE};
    let asks = req
        .headers()
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let kind = req.headers().get(UPGRADE)?.to_str().ok()?;
    (asks && allowed.iter().any(|a| a.eq_ignore_ascii_case(kind.trim()))).then_some(kind)
}
