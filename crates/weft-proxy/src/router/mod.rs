//! `envoy.filters.http.router`: the route a request takes, the request it
//! becomes upstream (rewrites, header mutations), and the tries that send
//! it: endpoint choice, per-try and route timeouts, retries with back-off.

pub(crate) mod body;
pub(crate) mod hash;
mod mirror;
pub(crate) mod retry;
pub(crate) mod upgrade;

use std::net::SocketAddr;

use http::header::{HeaderValue, HOST};
use http::request::Parts;
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::access_log::Entry;
use crate::compile::{
    ClusterCfg, Compiled, Forward, PathRewrite, RequestView, RouteCfg, RouteRef, WeightedTarget,
};
use crate::error::{Flags, ProxyError};
use crate::http::{strip_hop_by_hop, Body, Connection};
use crate::upstream::outlier::Result5xx;
use crate::upstream::{self, UpstreamError};
use body::Replay;
use retry::{Outcome, RetryPolicy};

/// Virtual host by authority, then the first route that matches (NR when
/// none does).
/// The route for a request: None when its virtual host requires TLS and
/// the request came in plaintext (the caller redirects it to https).
pub(crate) fn find_route<'a, B>(
    req: &Request<B>,
    routes: &'a RouteRef,
    snapshot: &'a Compiled,
    tls: bool,
) -> Result<Option<&'a RouteCfg>, ProxyError> {
    let table = match routes {
        RouteRef::Inline(t) => Some(t),
        RouteRef::Rds(name) => snapshot.routes.get(name),
    };
    let table = table.ok_or(ProxyError::NoRoute)?;
    let host = authority(req);
    let vhost = table.virtual_host(host).ok_or(ProxyError::NoRoute)?;
    if vhost.require_tls && !tls {
        return Ok(None);
    }
    let view = RequestView {
        method: req.method().as_str(),
        authority: host,
        scheme: req.uri().scheme_str().unwrap_or("http"),
        path: req.uri().path(),
        query: req.uri().query(),
        headers: req.headers(),
    };
    vhost
        .routes
        .iter()
        .find(|r| r.matches(&view))
        .map(Some)
        .ok_or(ProxyError::NoRoute)
}

pub(crate) fn authority<B>(req: &Request<B>) -> &str {
    req.headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// The route's cluster (a weighted draw among several) and its weighted
/// target, noted in the access-log entry; NC when this proxy lacks it.
fn pick_cluster<'a>(
    fwd: &'a Forward,
    snapshot: &'a Compiled,
    entry: &mut Entry,
) -> Result<(&'a ClusterCfg, Option<&'a WeightedTarget>), ProxyError> {
    let (cluster_name, target) = fwd.clusters.pick(|total| fastrand::u32(..total));
    entry.cluster = cluster_name.clone();
    let cluster = snapshot
        .clusters
        .get(&**cluster_name)
        .ok_or(ProxyError::NoCluster)?;
    Ok((cluster, target))
}

/// Sends the request upstream as the route says, within its timeout, with
/// its retries; the response comes back with hop-by-hop headers removed
/// and the chosen weighted cluster's response mutations applied.
const UPSTREAM_SERVICE_TIME: http::HeaderName =
    http::HeaderName::from_static("x-envoy-upstream-service-time");

pub(crate) async fn forward(
    req: Request<crate::http::ReqBody>,
    route: &RouteCfg,
    fwd: &Forward,
    conn: &Connection,
    snapshot: &Compiled,
    entry: &mut Entry,
) -> Result<Response<Body>, ProxyError> {
    let (cluster, target) = pick_cluster(fwd, snapshot, entry)?;
    // The route named its first cluster's service; a weighted draw may
    // have picked another.
    if let (Some(seen), Some(_)) = (&mut entry.observed, target) {
        seen.service = cluster.service_for(&entry.authority);
    }
    let (mut parts, body) = req.into_parts();
    // The body is counted as it is read, if there is one.
    use hyper::body::Body as _;
    let grpc = crate::http::is_grpc(&parts.headers).then_some(&parts.headers);
    let seen = (!body.is_end_stream()).then(|| {
        let counted = entry.observed.as_ref().is_some_and(|o| o.grpc);
        std::sync::Arc::new(crate::stats::record::BodySeen::new(counted))
    });
    entry.request_body = seen.clone();
    let (deadline, stream_deadline) = fwd.deadline(grpc);
    let (hash, set_cookie) = hash::hash(&fwd.hash_policy, &parts, entry.client(conn).ip());
    upstream_request(&mut parts, route, fwd, target);
    let body = body::Downstream { body, seen };
    let body = Replay::new(body, &parts.headers).await.map_err(|e| {
        tracing::debug!(error = %e, "reading the request body failed");
        ProxyError::DownstreamBody
    })?;
    for m in fwd.mirrors.iter().filter(|m| m.share.hit()) {
        mirror::spawn(&parts, &body, &m.cluster, snapshot);
    }
    let sent = Instant::now();
    let tries = Tries {
        parts,
        body,
        cluster,
        policy: fwd.retry.as_ref(),
        destination: conn.destination,
        hash,
        deadline: deadline.map(|t| sent + t),
        stream_deadline,
    };
    let resp = tries.run(entry).await?;
    entry.code_details = "via_upstream";
    let hop = upstream::conn_info(&resp).cloned().unwrap_or_default();
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // Envoy's upstream service time: request sent to response headers.
    let took = sent.elapsed().as_millis() as u64;
    parts.headers.insert(UPSTREAM_SERVICE_TIME, millis(took));
    answered(entry, cluster, &hop, &mut parts.headers);
    if let Some(t) = target {
        t.response_headers.apply(&mut parts.headers);
    }
    if let Some(cookie) = set_cookie {
        parts.headers.append(http::header::SET_COOKIE, cookie);
    }
    Ok(Response::from_parts(parts, body::DownBody(body).boxed()))
}

/// A count of milliseconds as a header value: the usual small ones
/// shared, made once (a value made per response cost an allocation).
fn millis(ms: u64) -> HeaderValue {
    static SMALL: std::sync::LazyLock<Vec<HeaderValue>> =
        std::sync::LazyLock::new(|| (0..100u64).map(HeaderValue::from).collect());
    match SMALL.get(ms as usize) {
        Some(v) => v.clone(),
        None => HeaderValue::from(ms),
    }
}

/// The downstream request made into the upstream one: path and host
/// rewrites, the route's and the weighted cluster's header mutations,
/// origin-form URI, HTTP/1.1, no hop-by-hop headers.
fn upstream_request(
    parts: &mut Parts,
    route: &RouteCfg,
    fwd: &Forward,
    target: Option<&WeightedTarget>,
) {
    // HTTP/2 requests carry the authority in the URI, HTTP/1.1 needs Host.
    if !parts.headers.contains_key(HOST) {
        if let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(HOST, v);
        }
    }
    let path = rewritten_path(&parts.uri, route, fwd.rewrite.as_ref());
    if path.is_some() {
        if let Some(original) = parts
            .uri
            .path_and_query()
            .and_then(|p| HeaderValue::from_str(p.as_str()).ok())
        {
            parts.headers.insert("x-envoy-original-path", original);
        }
    }
    let origin_form = match path {
        Some(p) => Uri::try_from(p).ok(),
        None => parts.uri.path_and_query().cloned().map(Uri::from),
    };
    parts.uri = origin_form.unwrap_or_else(|| Uri::from_static("/"));
    // The version stays the downstream's: the upstream pool sets its own,
    // and a cluster that follows the client's protocol reads it.
    if let Some(host) = &fwd.host_rewrite {
        parts.headers.insert(HOST, host.clone());
    }
    strip_hop_by_hop(&mut parts.headers);
    route.request_headers.apply(&mut parts.headers);
    if let Some(t) = target {
        t.request_headers.apply(&mut parts.headers);
    }
}

/// The path (and query) after the route's rewrite, or None when unchanged.
fn rewritten_path(uri: &Uri, route: &RouteCfg, rewrite: Option<&PathRewrite>) -> Option<String> {
    let path = uri.path();
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    match rewrite? {
        PathRewrite::Prefix(prefix) => {
            let rest = &path[route.rewritten_len(path)..];
            Some(format!("{prefix}{rest}{query}"))
        }
        PathRewrite::Regex(re, substitution) => Some(format!(
            "{}{query}",
            re.replace_all(path, substitution.as_str())
        )),
    }
}

/// One request's tries at its upstream.
struct Tries<'a> {
    parts: Parts,
    body: Replay,
    cluster: &'a ClusterCfg,
    policy: Option<&'a RetryPolicy>,
    destination: SocketAddr,
    /// The request's hash, for consistent balancers.
    hash: Option<u64>,
    /// The route's deadline: its timeout, counted from when the request
    /// was read. Each try waits on one timer, the earlier of this and its
    /// per-try deadline (a timer of the route's own around all the tries
    /// cost ~1100 instructions a request, callgrind).
    deadline: Option<Instant>,
    /// The deadline is the stream's (gRPC's), not the route's.
    stream_deadline: bool,
}

impl Drop for Tries<'_> {
    fn drop(&mut self) {
        // The request's header map serves a later response's head.
        upstream::recycle_headers(std::mem::take(&mut self.parts.headers));
    }
}

/// How one try failed.
pub(super) enum TryError {
    Upstream(UpstreamError),
    PerTryTimeout,
    /// The route's (or the stream's) deadline passed: no more tries.
    Expired,
}

impl Tries<'_> {
    async fn run(mut self, entry: &mut Entry) -> Result<Response<upstream::RespBody>, ProxyError> {
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut retries = 0u32;
        // The retry in flight holds its slot until the next decision.
        let mut _retry_slot = None;
        loop {
            let addr = self.pick(&tried).ok_or(ProxyError::NoHealthyUpstream)?;
            toward(entry, self.cluster, addr, &mut self.parts.headers);
            let result = match self.try_once(addr).await {
                Err(TryError::Expired) => return Err(self.expired()),
                result => result,
            };
            let outcome = match &result {
                Ok(resp) => Outcome::Response(resp.status(), resp.headers()),
                Err(TryError::PerTryTimeout) => Outcome::PerTryTimeout,
                Err(TryError::Upstream(UpstreamError::Connect(_))) => Outcome::ConnectFailure,
                // A kept-alive connection that fails before any response
                // was most likely closed idle by the upstream, the request
                // never processed: retried as a connect failure — if its
                // method is idempotent (RFC 9112 §9.3.1), for the upstream
                // may as well have processed it and died; a POST's failure
                // is a reset, retried only where the policy says so.
                Err(TryError::Upstream(UpstreamError::Request { reused: true, .. }))
                    if self.parts.method.is_idempotent() =>
                {
                    Outcome::ConnectFailure
                }
                Err(TryError::Upstream(
                    UpstreamError::Request { .. } | UpstreamError::Protocol(_),
                )) => Outcome::Reset,
                // Envoy does not retry a circuit breaker's overflow, nor
                // blame the host for a client's failed body.
                Err(TryError::Upstream(
                    UpstreamError::Overflow | UpstreamError::DownstreamBody,
                ))
                | Err(TryError::Expired) => return finish(result),
            };
            self.cluster.report(addr, health(&outcome));
            let Some(policy) = self.policy.filter(|p| p.retries(&outcome)) else {
                return finish(result);
            };
            if retries >= policy.num_retries || !self.body.replayable() {
                entry.flags.insert(Flags::RETRY_LIMIT_EXCEEDED);
                return finish(result);
            }
            // Concurrent retries are a circuit breaker's resource too; over
            // the limit the retry is not made.
            match self.cluster.breaker.retry() {
                Some(slot) => _retry_slot = Some(slot),
                None => return finish(result),
            }
            drop(result);
            retries += 1;
            tried.push(addr);
            let back_off = policy.back_off(retries, |ceiling| fastrand::u64(..ceiling));
            let until = Instant::now() + back_off;
            if let Some(deadline) = self.deadline.filter(|d| *d <= until) {
                tokio::time::sleep_until(deadline).await;
                return Err(self.expired());
            }
            tokio::time::sleep_until(until).await;
        }
    }

    fn expired(&self) -> ProxyError {
        if self.stream_deadline {
            ProxyError::StreamTimeout
        } else {
            ProxyError::UpstreamTimeout
        }
    }

    /// An endpoint: with the previous-priorities plugin, outside the
    /// levels already tried; with the previous-hosts predicate, one not
    /// tried yet if a few draws find one. Istio sets both for
    /// `retryRemoteLocalities`.
    fn pick(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let retry = self.policy.filter(|_| !tried.is_empty());
        let leave_levels = retry.is_some_and(|p| p.previous_priorities);
        let avoid_hosts = retry.filter(|p| p.previous_hosts);
        let draws = avoid_hosts.map_or(1, |p| p.host_selection_attempts.max(1));
        let mut addr = None;
        for _ in 0..draws {
            addr = if leave_levels {
                self.cluster
                    .pick_leaving(self.destination, self.hash, tried)
            } else {
                self.cluster.pick(self.destination, self.hash)
            };
            if avoid_hosts.is_none() || addr.is_none_or(|a| !tried.contains(&a)) {
                break;
            }
        }
        addr
    }

    async fn try_once(
        &mut self,
        addr: SocketAddr,
    ) -> Result<Response<upstream::RespBody>, TryError> {
        let body = self
            .body
            .next()
            .expect("a try is only made with a body to send");
        let peer = self
            .cluster
            .peer(addr, self.parts.version == http::Version::HTTP_2);
        let _active = self.cluster.track(addr);
        let send = upstream::send(&peer, &self.cluster.breaker, &self.parts, body);
        let per_try = self
            .policy
            .and_then(|p| p.per_try_timeout)
            .map(|t| Instant::now() + t);
        // One timer: whichever deadline comes first.
        let (at, expiry) = match (per_try, self.deadline) {
            (Some(t), Some(d)) if d <= t => (Some(d), TryError::Expired),
            (Some(t), _) => (Some(t), TryError::PerTryTimeout),
            (None, d) => (d, TryError::Expired),
        };
        match at {
            Some(at) => match tokio::time::timeout_at(at, send).await {
                Ok(r) => r.map_err(TryError::Upstream),
                Err(_) => Err(expiry),
            },
            None => send.await.map_err(TryError::Upstream),
        }
    }
}

/// The client's side of the metadata exchange: its own headers go to an
/// endpoint with a sidecar (which takes them off), never elsewhere.
fn exchange(
    seen: &crate::stats::record::Observed,
    cluster: &ClusterCfg,
    addr: SocketAddr,
    headers: &mut http::HeaderMap,
) {
    match &seen.exchange {
        Some(own) if cluster.in_mesh(addr) => crate::stats::peer::put(headers, own),
        _ => crate::stats::peer::strip(headers),
    }
}

/// A request (a try, an upgrade) going to `addr`: what the log and the
/// metrics learn of the endpoint, and the exchange headers it is sent.
fn toward(
    entry: &mut Entry,
    cluster: &ClusterCfg,
    addr: SocketAddr,
    headers: &mut http::HeaderMap,
) {
    entry.upstream = Some(addr);
    if let Some(seen) = &mut entry.observed {
        seen.upstream_mtls = cluster.mesh_mtls(addr);
        seen.endpoint = cluster.endpoints.workloads.get(&addr).cloned();
        exchange(seen, cluster, addr, headers);
    }
}

/// The upstream's answer: what the log and the metrics learn of its
/// connection, and its side of the exchange, taken off the headers. Only
/// a server with a sidecar answers the exchange; anything else's headers
/// of that name are dropped.
fn answered(
    entry: &mut Entry,
    cluster: &ClusterCfg,
    hop: &upstream::ConnInfo,
    headers: &mut http::HeaderMap,
) {
    entry.upstream_local = hop.local;
    let mesh_peer = entry.upstream.is_some_and(|a| cluster.in_mesh(a));
    let Some(seen) = &mut entry.observed else {
        return crate::stats::peer::strip(headers);
    };
    seen.upstream_principal = hop.principal.clone();
    match seen.exchange {
        Some(_) if mesh_peer => seen.peer = crate::stats::peer::take(headers),
        _ => crate::stats::peer::strip(headers),
    }
}

/// What outlier detection makes of a try's outcome.
fn health(outcome: &Outcome) -> Result5xx {
    match outcome {
        Outcome::Response(status, _) if status.is_server_error() => Result5xx::ServerError {
            gateway: matches!(status.as_u16(), 502..=504),
        },
        Outcome::Response(..) => Result5xx::Success,
        Outcome::ConnectFailure | Outcome::Reset | Outcome::PerTryTimeout => {
            Result5xx::LocalFailure
        }
    }
}

pub(super) fn finish(
    result: Result<Response<upstream::RespBody>, TryError>,
) -> Result<Response<upstream::RespBody>, ProxyError> {
    result.map_err(|e| match e {
        TryError::PerTryTimeout | TryError::Expired => ProxyError::UpstreamTimeout,
        TryError::Upstream(UpstreamError::Connect(e)) => ProxyError::ConnectFailure(e),
        TryError::Upstream(UpstreamError::Request { error, .. }) => {
            ProxyError::ConnectionTermination(error)
        }
        TryError::Upstream(UpstreamError::Protocol(error)) => ProxyError::UpstreamProtocol(error),
        TryError::Upstream(UpstreamError::DownstreamBody) => ProxyError::DownstreamBody,
        TryError::Upstream(UpstreamError::Overflow) => ProxyError::Overflow,
    })
}
