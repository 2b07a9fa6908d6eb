//! The HTTP connection manager: one request's lifecycle, start to end, on
//! the config snapshot it started with.
//!
//! accept → codec (hyper) → route → filters' request phases in order →
//! the route's action (router upstream, redirect or direct response) →
//! response mutations → access log (written even if the client leaves).

mod body;
pub(crate) mod forwarded;
mod h1;
mod headers;
mod idle;
pub(crate) mod local_reply;
pub(crate) mod once;
mod refused;
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

use crate::access_log::{capture, Entry, Record};
use crate::compile::{Action, Compiled, RouteRef};
use crate::error::ProxyError;
use crate::filters::{FilterChain, Next};
use crate::router;
use crate::stats::config::StatsCfg;
use crate::stats::record::{grpc_status, header_bytes, Counted, Observed, Recorder};
use crate::stats::Reporter;
use crate::Shared;

pub(crate) use body::ReqBody;
pub(crate) use headers::{remove_all, strip_hop_by_hop};
pub(crate) use idle::StreamIdle;
pub(crate) use local_reply::{is_grpc, GRPC_STATUS};

/// Envoy's default `max_request_headers_kb` (60 KiB).
const MAX_REQUEST_HEAD: usize = 60 * 1024;

pub(crate) type Body = BoxBody<Bytes, crate::upstream::BoxError>;

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
    /// Who the client is, and the forwarding headers.
    pub forwarding: Arc<forwarded::Forwarding>,
    /// Istio's metrics and metadata exchange: reporter, overrides.
    pub stats: Option<Arc<crate::stats::config::StatsCfg>>,
    /// The connection manager's access logs.
    pub logs: Option<Arc<crate::access_log::Logs>>,
    /// The connection manager's tracer.
    pub trace: Option<Arc<crate::trace::TraceCfg>>,
    /// How long the client may stay quiet.
    pub timeouts: crate::compile::HttpTimeouts,
    /// The config snapshot the chain was taken from.
    pub generation: u64,
}

impl Chain {
    /// The HTTP side of a chain's action; None for a TCP chain.
    pub(crate) fn of(action: &crate::compile::ChainAction, generation: u64) -> Option<Chain> {
        match action {
            crate::compile::ChainAction::Http {
                routes,
                filters,
                upgrades,
                xfcc,
                forwarding,
                stats,
                logs,
                trace,
                timeouts,
                ..
            } => Some(Chain {
                routes: routes.clone(),
                filters: filters.clone(),
                upgrades: upgrades.clone(),
                xfcc: *xfcc,
                forwarding: forwarding.clone(),
                stats: stats.clone(),
                logs: logs.clone(),
                trace: trace.clone(),
                timeouts: *timeouts,
                generation,
            }),
            crate::compile::ChainAction::Tcp { .. } => None,
        }
    }

    /// This connection's chain in a newer snapshot: a kept-alive
    /// connection follows config changes (an AuthorizationPolicy applied
    /// now holds for its next request, as Envoy's drain of changed chains
    /// makes it). None when the chain is gone or no longer HTTP.
    fn current(snapshot: &Compiled, conn: &Connection) -> Option<Chain> {
        let listener = snapshot.listener_named(&conn.listener)?;
        let chain = listener.chain_for(conn.destination.port(), &conn.seen)?;
        Chain::of(&chain.action, snapshot.generation)
    }
}

/// Serves an HTTP connection: the lean HTTP/1.1 server first, hyper for
/// HTTP/2 and whatever the lean server leaves to it.
pub(crate) async fn serve<S>(sock: S, conn: Connection, chain: Chain, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Shared by the connection's requests: one count each, not one per
    // field of the chain.
    h1::serve(sock, Arc::new(conn), Arc::new(chain), shared).await
}

async fn serve_hyper<S>(sock: S, conn: Arc<Connection>, chain: Arc<Chain>, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let stream_idle = chain.timeouts.stream_idle;
    let (c, ch, sh) = (conn.clone(), chain.clone(), shared.clone());
    let streams = idle::Streams::new();
    let counted = streams.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let (conn, chain, shared) = (c.clone(), ch.clone(), sh.clone());
        let open = counted.open();
        let req = req.map(ReqBody::Hyper);
        // Boxed: hyper moves the future it is given (into each HTTP/2
        // stream's task, among others), and the request's future is
        // kilobytes: unboxed, those copies were 5k instructions of an h2c
        // request (callgrind).
        Box::pin(async move {
            let response = handle(req, &conn, &chain, &shared, None).await;
            Ok::<_, Infallible>(response.map(|body| Body::new(idle::Counting::new(body, open))))
        })
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Envoy's `max_request_headers_kb` default: a longer head is 431.
    // hyper's head timer runs from when it waits for a head, idle time
    // included: an HTTP/1 connection hyper serves closes after the stream
    // idle timeout without a whole head, whether stalled or idle (hyper's
    // own default, once it has a timer, would be 30 s).
    builder
        .http1()
        .max_buf_size(2 * MAX_REQUEST_HEAD)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(stream_idle);
    let serving = builder.serve_connection_with_upgrades(TokioIo::new(sock), service);
    let mut serving = std::pin::pin!(serving);
    // The connection manager's idle timeout: with no stream for that long,
    // GOAWAY (HTTP/2) or the close, as Envoy; the same when the proxy
    // begins to drain, its streams left to finish.
    let mut drain = crate::drain::Watch::new(&shared.drain);
    let mut draining = false;
    let ended = loop {
        let due = chain.timeouts.idle.map(|limit| {
            let since = streams.idle_since();
            since.unwrap_or_else(tokio::time::Instant::now) + limit
        });
        tokio::select! {
            biased;
            ended = serving.as_mut() => break ended,
            () = idle::until(due) => {
                let limit = chain.timeouts.idle.unwrap_or_default();
                if streams
                    .idle_since()
                    .is_some_and(|at| at + limit <= tokio::time::Instant::now())
                {
                    serving.as_mut().graceful_shutdown();
                    break serving.await;
                }
            }
            () = drain.begun(), if !draining => {
                draining = true;
                serving.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "downstream connection ended with an error");
        // hyper answered a head it could not read itself.
        if let Some(refusal) = refused::by_hyper(&*e) {
            refused::log(refusal, 0, None, &conn, &chain, &shared);
        }
    }
}

/// One request, start to end, on one config snapshot. `stall` is the
/// connection's timer for the stream idle timeout, where it keeps one.
async fn handle(
    mut req: Request<ReqBody>,
    conn: &Connection,
    chain: &Chain,
    shared: &Shared,
    stall: Option<&mut idle::IdleTimer>,
) -> Response<Body> {
    // hyper's own limit is on its read buffer and only checked while a
    // head is incomplete; the headers' size is Envoy's measure.
    let head_bytes = header_bytes(req.headers());
    if head_bytes > MAX_REQUEST_HEAD as u64 {
        refused::log(
            refused::Refusal::HeadersTooLarge,
            0,
            None,
            conn,
            chain,
            shared,
        );
        return local_reply::headers_too_large();
    }
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
    let (mut record, grpc) = begin(&mut req, head_bytes, conn, chain, shared);
    // Envoy's stream idle timeout also bounds the wait for the response
    // (with Istio's routes, which set no timeout, it is the only bound): a
    // request the client has sent whole gets 504 `stream timeout` (SI);
    // one still streaming in, counted from its last data, 408 while it is
    // unfinished.
    let upload = match chain.timeouts.stream_idle {
        Some(_) => req.body_mut().watch(),
        None => None,
    };
    // Pinned where it is made: moving the request's future into the
    // timeout's copied it (+730 instructions per request, callgrind).
    let outcome = {
        let processing = std::pin::pin!(process(req, conn, chain, &snapshot, &mut record.entry));
        match (chain.timeouts.stream_idle, &upload) {
            (Some(limit), None) => idle::within(limit, stall, processing).await,
            // Boxed: a streamed upload is rare, and its timer's state
            // would size every request's future.
            (Some(limit), Some(upload)) => {
                Box::pin(idle::while_uploading(limit, upload, processing)).await
            }
            (None, _) => processing.await,
        }
    };
    let mut response = match outcome {
        Ok(r) => r,
        Err(e) => local_reply::error(&e, &mut record.entry, grpc),
    };
    record.finish(response.headers(), response.status());
    // And between the response body's data, which then ends, cut short
    // (in the same box as the record, not one of its own).
    let body_idle = chain
        .timeouts
        .stream_idle
        .filter(|_| !hyper::body::Body::is_end_stream(response.body()));
    if !record.wanted() {
        return match body_idle {
            Some(limit) => response.map(|body| Body::new(idle::IdleBody::new(body, limit, upload))),
            None => response,
        };
    }
    if let Some(seen) = &mut record.entry.observed {
        // The server's side answers the client's exchange with its own.
        let server = chain.stats.as_ref().map(|c| c.reporter) == Some(Reporter::Destination);
        if server && seen.peer.is_some() {
            crate::stats::peer::put(response.headers_mut(), &shared.stats.own);
        }
        seen.response_bytes = header_bytes(response.headers());
        seen.grpc_status = seen.grpc_status.or(grpc_status(response.headers()));
    }
    // The record is written when the response body ends.
    match body_idle {
        Some(limit) => {
            let body = |body| idle::IdleBody::new(body, limit, upload);
            response.map(|b| Body::new(Counted::new(body(b), record)))
        }
        None => response.map(|body| Body::new(Counted::new(body, record))),
    }
}

/// The request's arrival: the forwarding headers, its id and trace, and
/// the record its access log and metrics are written from. A function of
/// its own, not part of `handle`'s future, so the entry is held once in
/// that future (inside the record), not twice.
fn begin(
    req: &mut Request<ReqBody>,
    head_bytes: u64,
    conn: &Connection,
    chain: &Chain,
    shared: &Shared,
) -> (Record, bool) {
    let client =
        chain
            .forwarding
            .apply(req.headers_mut(), conn.peer, conn.local, conn.tls.is_some());
    let mut request_id = headers::request_id(req, client.request_id);
    let trace = chain.trace.as_ref().map(|cfg| {
        crate::trace::Active::start(
            cfg,
            &shared.tracer,
            req,
            &mut request_id,
            conn.tls.is_some(),
        )
    });
    let own = (chain.xfcc.action != xfcc::Action::AlwaysForwardOnly || chain.stats.is_some())
        .then(|| shared.identity.spiffe_id())
        .flatten();
    if chain.xfcc.action != xfcc::Action::AlwaysForwardOnly {
        chain.xfcc.apply(req, conn, own.as_deref());
    }
    let grpc = is_grpc(req.headers());
    if chain.stats.is_none() {
        // No exchange here: another's metadata goes no further.
        crate::stats::peer::strip(req.headers_mut());
    }
    let mut entry = Entry::for_request(req, conn, request_id);
    if client.remote != conn.peer {
        entry.downstream = Some(client.remote);
        entry.downstream_direct = Some(conn.peer);
    }
    if let Some(logs) = &chain.logs {
        entry.request_headers = capture(&logs.wanted.request, req.headers());
    }
    let recorder = chain.stats.as_ref().map(|cfg| {
        let mut seen = observe(req, head_bytes, cfg, grpc);
        if cfg.reporter == Reporter::Source {
            seen.exchange = Some(shared.stats.own.clone());
        }
        seen.destination_port = conn.destination.port();
        entry.observed = Some(seen);
        Recorder {
            stats: shared.stats.clone(),
            cfg: cfg.clone(),
            own_principal: own,
        }
    });
    entry.trace = trace.map(Box::new);
    let record = Record::new(entry, recorder, chain.logs.clone(), shared.recent.clone());
    (record, grpc)
}

/// What the metrics learn of a request as it arrives; on the server's
/// side, the client's exchange headers are taken off (the app never sees
/// them).
fn observe<B>(req: &mut Request<B>, head_bytes: u64, cfg: &StatsCfg, grpc: bool) -> Observed {
    let peer = match cfg.reporter {
        Reporter::Destination => crate::stats::peer::take(req.headers_mut()),
        Reporter::Source => None,
    };
    let headers = cfg
        .headers()
        .filter_map(|h| {
            Some((
                h.to_string(),
                req.headers().get(h)?.to_str().ok()?.to_string(),
            ))
        })
        .collect();
    Observed {
        peer,
        grpc,
        request_bytes: head_bytes,
        headers,
        ..Default::default()
    }
}

async fn process(
    mut req: Request<ReqBody>,
    conn: &Connection,
    chain: &Chain,
    snapshot: &Compiled,
    entry: &mut Entry,
) -> Result<Response<Body>, ProxyError> {
    let route = match router::find_route(&req, &chain.routes, snapshot, conn.tls.is_some()) {
        Ok(Some(route)) => route,
        Ok(None) => {
            entry.code_details = "direct_response";
            return Ok(local_reply::https_redirect(&req));
        }
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
    if let Some(t) = &mut entry.trace {
        t.route(route.operation.as_deref(), &mut req);
    }
    if let Action::Forward(fwd) = &route.action {
        // The route's cluster and service, so that a request a filter
        // answers (a fault, a denial) is logged and labelled with them, as
        // Envoy's route entry names its cluster before the router runs.
        let (first, _) = fwd.clusters.pick(|_| 0);
        entry.cluster = first.clone();
        if let Some(seen) = &mut entry.observed {
            let cluster = snapshot.clusters.get(&**first);
            seen.service = cluster.and_then(|c| c.service_for(&entry.authority));
        }
    }
    let next = chain
        .filters
        .on_request(&route.filters, &mut req, conn, snapshot, entry);
    let verdict = match next.await? {
        Next::Continue(v) => v,
        Next::Reply(r) => return Ok(r),
    };
    let mut response = match &route.action {
        Action::Direct { status, body } => {
            entry.code_details = "direct_response";
            local_reply::direct(*status, body.clone())
        }
        Action::Redirect(r) => {
            entry.code_details = "direct_response";
            local_reply::redirect(r, Some(route), &req)
        }
        Action::Forward(fwd) => match upgrade_of(&req, &chain.upgrades) {
            // Boxed: rare, and its future would size every request's.
            Some(_) => {
                Box::pin(router::upgrade::forward(
                    req, route, fwd, conn, snapshot, entry,
                ))
                .await?
            }
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
    // Most requests have no `Upgrade`: that one lookup decides.
    let kind = req.headers().get(UPGRADE)?.to_str().ok()?;
    let asks = req
        .headers()
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    (asks && allowed.iter().any(|a| a.eq_ignore_ascii_case(kind.trim()))).then_some(kind)
}
