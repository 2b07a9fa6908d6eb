//! Request mirroring (Envoy's `request_mirror_policies`, Istio's `mirror`):
//! a copy of the request goes to another cluster, fire and forget. The
//! copy's host gets Envoy's `-shadow` suffix; its response is dropped; it
//! never delays or fails the main request. Only a body that was buffered
//! for replay can be copied: a request whose body streams is not mirrored.

use http::header::{HeaderValue, HOST};
use http::request::Parts;

use super::body::Replay;
use crate::compile::Compiled;
use crate::upstream;

pub(super) fn spawn(parts: &Parts, body: &Replay, cluster: &str, snapshot: &Compiled) {
    let Replay::Buffered(bytes) = body else {
        return;
    };
    let Some(cluster) = snapshot.clusters.get(cluster) else {
        tracing::debug!(cluster, "mirror cluster not found");
        return;
    };
    let Some(addr) = cluster.pick(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), None) else {
        return;
    };
    let mut req = upstream::request(
        parts,
        super::body::UpBody::Full(http_body_util::Full::new(bytes.clone())),
    );
    if let Some(host) = req.headers().get(HOST).and_then(|h| h.to_str().ok()) {
        if let Ok(v) = HeaderValue::from_str(&shadow_host(host)) {
            req.headers_mut().insert(HOST, v);
        }
    }
    let peer = cluster.peer(addr, parts.version == http::Version::HTTP_2);
    let breaker = cluster.breaker.clone();
    tokio::spawn(async move {
        let (parts, body) = req.into_parts();
        match upstream::send(&peer, &breaker, &parts, body).await {
            // Read the body to its end so the connection can be reused.
            Ok(resp) => drop(http_body_util::BodyExt::collect(resp.into_body()).await),
            Err(e) => tracing::debug!(upstream = %peer.addr, error = ?e, "mirror failed"),
        }
    });
}

/// `reviews:9080` → `reviews-shadow:9080`, as Envoy names shadow hosts.
fn shadow_host(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !name.contains(':') =>
        {
            format!("{name}-shadow:{port}")
        }
        _ => format!("{host}-shadow"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shadow_hosts() {
        assert_eq!(super::shadow_host("reviews:9080"), "reviews-shadow:9080");
        assert_eq!(super::shadow_host("httpbin"), "httpbin-shadow");
    }
}
