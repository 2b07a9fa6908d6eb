//! HTTP/1.1 upgrades (WebSocket): the request goes to one endpoint on a
//! connection of its own with its `Upgrade` and `Connection` headers kept;
//! when the upstream answers 101, both sides are switched and bytes are
//! copied between them until either closes. Other answers go back as
//! ordinary responses. Upgrades are not retried or mirrored, as in Envoy.

use http::header::{HeaderValue, CONNECTION, UPGRADE};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use super::{upstream_request, ProxyError};
use crate::access_log::Entry;
use crate::compile::{Compiled, Forward, RouteCfg};
use crate::http::{strip_hop_by_hop, Body, Connection};
use crate::upstream;
use crate::upstream::outlier::Result5xx;

pub(crate) async fn forward(
    mut req: Request<crate::http::ReqBody>,
    route: &RouteCfg,
    fwd: &Forward,
    conn: &Connection,
    snapshot: &Compiled,
    entry: &mut Entry,
) -> Result<Response<Body>, ProxyError> {
    let (cluster, target) = super::pick_cluster(fwd, snapshot, entry)?;
    let downstream = hyper::upgrade::on(&mut req);
    let (mut parts, body) = req.into_parts();
    let kept = parts.headers.get(UPGRADE).cloned();
    upstream_request(&mut parts, route, fwd, target);
    keep_upgrade(&mut parts.headers, kept);
    let addr = cluster
        .pick(conn.destination, None)
        .ok_or(ProxyError::NoHealthyUpstream)?;
    // The metrics' view of the endpoint and the metadata exchange, as for
    // any request: a WebSocket's series name both workloads.
    super::toward(entry, cluster, addr, &mut parts.headers);
    let body = super::body::Downstream { body, seen: None };
    let req = Request::from_parts(parts, super::body::UpBody::Stream(body));
    let peer = cluster.peer(addr, false);
    let send = upstream::send_upgrade(&peer, &cluster.breaker, req);
    let mut resp = match fwd.timeout {
        Some(t) => tokio::time::timeout(t, send)
            .await
            .map_err(|_| ProxyError::UpstreamTimeout)?,
        None => send.await,
    }
    .map_err(|e| {
        cluster.report(addr, Result5xx::LocalFailure);
        super::finish(Err(super::TryError::Upstream(e))).unwrap_err()
    })?;
    cluster.report(
        addr,
        super::health(&super::Outcome::Response(resp.status(), resp.headers())),
    );
    let hop: upstream::ConnInfo = resp.extensions().get().cloned().unwrap_or_default();
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        super::answered(entry, cluster, &hop, &mut parts.headers);
        return Ok(Response::from_parts(
            parts,
            body.map_err(Into::into).boxed(),
        ));
    }
    let upstream_side = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (Ok(down), Ok(up)) = tokio::join!(downstream, upstream_side) else {
            tracing::debug!("an upgrade did not complete on both sides");
            return;
        };
        let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    });
    let (mut parts, body) = resp.into_parts();
    let kept = parts.headers.get(UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    keep_upgrade(&mut parts.headers, kept);
    super::answered(entry, cluster, &hop, &mut parts.headers);
    Ok(Response::from_parts(
        parts,
        body.map_err(Into::into).boxed(),
    ))
}

/// Puts back the `Upgrade` header (and `Connection: upgrade`) that
/// hop-by-hop stripping removed.
fn keep_upgrade(headers: &mut http::HeaderMap, upgrade: Option<HeaderValue>) {
    if let Some(u) = upgrade {
        headers.insert(UPGRADE, u);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}
