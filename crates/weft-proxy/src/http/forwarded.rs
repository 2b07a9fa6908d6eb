//! Who the client is, as Envoy's connection manager decides it: the
//! trusted client address, `x-forwarded-for`, `x-forwarded-proto`, and
//! which `x-envoy-*` headers a request may bring in.
//!
//! With `use_remote_address` (istiod sets it on gateways) the proxy is the
//! edge: the client is its peer, or the address `xff_num_trusted_hops`
//! proxies in front of it wrote into `x-forwarded-for` (Istio's
//! `gatewayTopology.numTrustedProxies`); the peer is appended to
//! `x-forwarded-for`, and an external request gets
//! `x-envoy-external-address`. Without it (sidecars) the client is the
//! last address in `x-forwarded-for`, skipping the trusted hops, and the
//! headers are left as they came. The client's address is what
//! `remoteIpBlocks`, `%DOWNSTREAM_REMOTE_ADDRESS%` and source-IP hashing
//! read; `ipBlocks` and `%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%` read the peer.
//!
//! A request is internal only when its client address is in
//! `internal_address_config` (Envoy ≥ 1.33 has no internal addresses by
//! default, and istiod configures none without mesh networks); any other
//! request loses the `x-envoy-*` headers that steer the proxy (retries,
//! timeouts, forced tracing), and at the edge the ones that describe a
//! caller inside the mesh.

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use crate::filters::rbac::Cidr;

// Named once: a `&str` key is parsed on every lookup.
const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
const INTERNAL: HeaderName = HeaderName::from_static("x-envoy-internal");
const EXTERNAL_ADDRESS: HeaderName = HeaderName::from_static("x-envoy-external-address");

/// Headers only an internal request may bring (Envoy's
/// `cleanInternalHeaders`).
const INTERNAL_ONLY: [HeaderName; 15] = [
    INTERNAL,
    HeaderName::from_static("x-envoy-retriable-status-codes"),
    HeaderName::from_static("x-envoy-retriable-header-names"),
    HeaderName::from_static("x-envoy-retry-on"),
    HeaderName::from_static("x-envoy-retry-grpc-on"),
    HeaderName::from_static("x-envoy-max-retries"),
    HeaderName::from_static("x-envoy-upstream-alt-stat-name"),
    HeaderName::from_static("x-envoy-upstream-rq-timeout-ms"),
    HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms"),
    HeaderName::from_static("x-envoy-upstream-rq-timeout-alt-response"),
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms"),
    HeaderName::from_static("x-envoy-force-trace"),
    HeaderName::from_static("x-envoy-ip-tags"),
    HeaderName::from_static("x-envoy-original-url"),
    HeaderName::from_static("x-envoy-hedge-on-per-try-timeout"),
];

/// Headers that describe a caller inside the mesh, dropped at the edge.
const EDGE_ONLY: [HeaderName; 3] = [
    HeaderName::from_static("x-envoy-decorator-operation"),
    HeaderName::from_static("x-envoy-downstream-service-cluster"),
    HeaderName::from_static("x-envoy-downstream-service-node"),
];

#[derive(Debug, Default, Serialize)]
pub struct Forwarding {
    use_remote_address: bool,
    trusted_hops: u32,
    skip_append: bool,
    #[serde(skip)]
    internal: Vec<Cidr>,
    /// At the edge a client's `x-request-id` is replaced unless this says
    /// keep it.
    preserve_request_id: bool,
    /// `generate_request_id` (default on).
    generate_request_id: bool,
}

/// What the connection manager made of one request's client.
pub(crate) struct Client {
    /// The trusted client address (Envoy's downstream remote address).
    pub remote: SocketAddr,
    /// What becomes of the request's `x-request-id`.
    pub request_id: RequestId,
}

/// Envoy's request-id rule: generated when missing (`generate_request_id`,
/// on by default), and at the edge replaced whatever the client sent
/// unless `preserve_external_request_id`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RequestId {
    Keep,
    Ensure,
    Replace,
}

pub(crate) fn compile(hcm: &HttpConnectionManager) -> Result<Forwarding, String> {
    if !hcm.original_ip_detection_extensions.is_empty() {
        return Err("original_ip_detection_extensions are not supported".into());
    }
    let internal = match &hcm.internal_address_config {
        Some(c) => c
            .cidr_ranges
            .iter()
            .map(Cidr::compile)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("internal_address_config: {e}"))?,
        None => Vec::new(),
    };
    Ok(Forwarding {
        use_remote_address: hcm.use_remote_address.is_some_and(|b| b.value),
        trusted_hops: hcm.xff_num_trusted_hops,
        skip_append: hcm.skip_xff_append,
        internal,
        preserve_request_id: hcm.preserve_external_request_id,
        generate_request_id: hcm.generate_request_id.is_none_or(|b| b.value),
    })
}

impl Forwarding {
    /// Decides the request's client and edits its forwarding headers.
    /// `peer` and `local` are the connection's two ends; `tls` says the
    /// proxy terminated TLS on it.
    pub(crate) fn apply(
        &self,
        headers: &mut HeaderMap,
        peer: SocketAddr,
        local: SocketAddr,
        tls: bool,
    ) -> Client {
        let scheme = HeaderValue::from_static(if tls { "https" } else { "http" });
        let (remote, single) = if self.use_remote_address {
            let single = !headers.contains_key(&XFF);
            let trusted = self
                .trusted_hops
                .checked_sub(1)
                .and_then(|skip| from_xff(headers, skip).0);
            if !self.skip_append {
                // Envoy writes its own address for a client on loopback.
                let hop = if peer.ip().is_loopback() { local } else { peer };
                append_xff(headers, hop.ip());
            }
            if self.trusted_hops == 0 || !headers.contains_key(&XFP) {
                headers.insert(XFP, scheme);
            }
            (trusted, single)
        } else {
            if !headers.contains_key(&XFP) {
                headers.insert(XFP, scheme);
            }
            from_xff(headers, self.trusted_hops)
        };
        // At the edge the peer stands in for a client XFF did not name
        // before the internal check; elsewhere only XFF can make it.
        let judged = match self.use_remote_address {
            true => Some(remote.unwrap_or(peer.ip())),
            false => remote,
        };
        let internal = single && judged.is_some_and(|ip| self.is_internal(ip));
        let remote = remote.map_or(peer, |ip| SocketAddr::new(ip, 0));
        let edge = !internal && self.use_remote_address;
        if internal {
            headers.insert(INTERNAL, HeaderValue::from_static("true"));
        } else {
            clean_internal(headers, edge);
        }
        if edge {
            headers.insert(EXTERNAL_ADDRESS, ip_value(remote.ip()));
        }
        let request_id = match (self.generate_request_id, edge && !self.preserve_request_id) {
            (false, _) => RequestId::Keep,
            (true, false) => RequestId::Ensure,
            (true, true) => RequestId::Replace,
        };
        Client { remote, request_id }
    }

    fn is_internal(&self, ip: IpAddr) -> bool {
        self.internal.iter().any(|c| c.contains(ip))
    }
}

/// The whole `x-forwarded-for` list: repeated lines are one list, joined
/// with commas, as Envoy joins them (a proxy that adds its own line must
/// not let the client's line speak for it).
fn xff_list(headers: &HeaderMap) -> Option<std::borrow::Cow<'_, str>> {
    let mut lines = headers.get_all(&XFF).iter().filter_map(|v| v.to_str().ok());
    let first = lines.next()?;
    match lines.next() {
        None => Some(first.into()),
        Some(second) => {
            let mut all = format!("{first},{second}");
            for more in lines {
                all.push(',');
                all.push_str(more);
            }
            Some(all.into())
        }
    }
}

/// The address `skip` entries from the end of `x-forwarded-for` (None when
/// the list is shorter or that entry is not an address), and whether the
/// list holds exactly one address (Envoy's `getLastAddressFromXFF`).
fn from_xff(headers: &HeaderMap, skip: u32) -> (Option<IpAddr>, bool) {
    let Some(list) = xff_list(headers) else {
        return (None, false);
    };
    let entries: Vec<&str> = list.split(',').map(str::trim).collect();
    let at = entries
        .len()
        .checked_sub(1 + skip as usize)
        .and_then(|i| entries[i].parse().ok());
    (at, entries.len() == 1)
}

/// Appends `ip` to the list, written back as one line.
fn append_xff(headers: &mut HeaderMap, ip: IpAddr) {
    let value = match xff_list(headers).filter(|l| !l.trim().is_empty()) {
        None => ip_value(ip),
        Some(list) => {
            let mut value = list.as_bytes().to_vec();
            value.push(b',');
            crate::text::push_ip(&mut value, ip);
            match HeaderValue::from_bytes(&value) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
    };
    headers.insert(XFF, value);
}

/// The address as a header value, in one allocation: a vector with room
/// to spare becomes `Bytes` through a second one (its shared header);
/// the first growth of an empty one fits an address's text exactly.
fn ip_value(ip: IpAddr) -> HeaderValue {
    let mut value = Vec::new();
    crate::text::push_ip(&mut value, ip);
    let value = match value.len() == value.capacity() {
        true => bytes::Bytes::from(value),
        false => bytes::Bytes::copy_from_slice(&value),
    };
    HeaderValue::from_maybe_shared(value).expect("an address is a header value")
}

/// Takes off what only an internal request (or, at the edge, only a
/// caller inside the mesh) may say; a request without `x-envoy-*`
/// headers, the common case, costs one pass over its names.
fn clean_internal(headers: &mut HeaderMap, edge: bool) {
    if !headers.keys().any(|k| k.as_str().starts_with("x-envoy-")) {
        return;
    }
    // `x-envoy-external-address` stays: the edge wrote it for the
    // services behind.
    super::remove_all(headers, &INTERNAL_ONLY);
    if edge {
        super::remove_all(headers, &EDGE_ONLY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XFF: &str = "x-forwarded-for";
    const XFP: &str = "x-forwarded-proto";
    const INTERNAL: &str = "x-envoy-internal";
    const EXTERNAL_ADDRESS: &str = "x-envoy-external-address";

    fn gateway(hops: u32) -> Forwarding {
        Forwarding {
            use_remote_address: true,
            trusted_hops: hops,
            generate_request_id: true,
            ..Default::default()
        }
    }

    fn sidecar() -> Forwarding {
        Forwarding {
            generate_request_id: true,
            ..Default::default()
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    const PEER: &str = "198.18.0.1:50000";
    const LOCAL: &str = "198.18.0.9:8080";

    fn apply(f: &Forwarding, h: &mut HeaderMap) -> Client {
        f.apply(h, PEER.parse().unwrap(), LOCAL.parse().unwrap(), false)
    }

    /// Istio's "Configuring Gateway Network Topology" example: two trusted
    /// proxies, so the client is the second address from the right.
    #[test]
    fn a_gateway_trusts_num_trusted_proxies_hops_and_appends_its_peer() {
        let mut h = headers(&[
            (XFF, "56.5.6.7, 72.9.5.6, 98.1.2.3"),
            (XFP, "https"),
            ("x-envoy-retry-on", "5xx"),
            ("x-envoy-decorator-operation", "forged"),
        ]);
        let c = apply(&gateway(2), &mut h);
        assert_eq!(c.remote, "72.9.5.6:0".parse().unwrap());
        assert_eq!(c.request_id, RequestId::Replace);
        assert_eq!(h[XFF], "56.5.6.7, 72.9.5.6, 98.1.2.3,198.18.0.1");
        assert_eq!(h[EXTERNAL_ADDRESS], "72.9.5.6");
        assert_eq!(h[XFP], "https", "a trusted hop's scheme stands");
        assert!(!h.contains_key("x-envoy-retry-on"));
        assert!(!h.contains_key("x-envoy-decorator-operation"));
    }

    /// A trusted proxy that adds a line of its own: the lines are one
    /// list, so the client's line cannot pose as the proxy's.
    #[test]
    fn repeated_lines_are_one_list() {
        let mut h = headers(&[(XFF, "5.6.7.8")]);
        h.append(XFF, HeaderValue::from_static("203.0.113.9"));
        let c = apply(&gateway(1), &mut h);
        assert_eq!(c.remote, "203.0.113.9:0".parse().unwrap());
        assert_eq!(h.get_all(XFF).iter().count(), 1);
        assert_eq!(h[XFF], "5.6.7.8,203.0.113.9,198.18.0.1");
    }

    #[test]
    fn with_no_trusted_hops_the_gateway_client_is_its_peer() {
        let mut h = headers(&[(XFF, "6.6.6.6"), (XFP, "https")]);
        let c = apply(&gateway(0), &mut h);
        assert_eq!(c.remote, PEER.parse().unwrap());
        assert_eq!(h[XFF], "6.6.6.6,198.18.0.1");
        assert_eq!(h[EXTERNAL_ADDRESS], "198.18.0.1");
        assert_eq!(h[XFP], "http", "an untrusted client's scheme is replaced");
        let mut short = headers(&[(XFF, "6.6.6.6")]);
        let c = apply(&gateway(3), &mut short);
        assert_eq!(c.remote, PEER.parse().unwrap(), "too few hops: the peer");
    }

    #[test]
    fn a_sidecar_reads_the_last_address_and_changes_nothing() {
        let mut h = headers(&[(XFF, "203.0.113.7,198.18.0.1"), (XFP, "https")]);
        let c = apply(&sidecar(), &mut h);
        assert_eq!(c.remote, "198.18.0.1:0".parse().unwrap());
        assert_eq!(c.request_id, RequestId::Ensure);
        assert_eq!(h[XFF], "203.0.113.7,198.18.0.1");
        assert_eq!(h[XFP], "https");
        assert!(!h.contains_key(EXTERNAL_ADDRESS));
        let mut none = HeaderMap::new();
        assert_eq!(apply(&sidecar(), &mut none).remote, PEER.parse().unwrap());
        assert_eq!(none[XFP], "http");
    }

    #[test]
    fn only_a_single_internal_address_makes_a_request_internal() {
        let mut f = sidecar();
        f.internal = vec![
            Cidr::compile(&envoy_types::pb::envoy::config::core::v3::CidrRange {
                address_prefix: "10.0.0.0".into(),
                prefix_len: Some(envoy_types::pb::google::protobuf::UInt32Value { value: 8 }),
            })
            .unwrap(),
        ];
        let mut h = headers(&[(XFF, "10.1.2.3"), ("x-envoy-retry-on", "5xx")]);
        apply(&f, &mut h);
        assert_eq!(h[INTERNAL], "true");
        assert_eq!(h["x-envoy-retry-on"], "5xx");
        // At the edge, a caller inside that names no client is internal.
        let mut edge = gateway(0);
        edge.internal = f.internal.clone();
        let mut inside = headers(&[("x-envoy-decorator-operation", "kept")]);
        let peer = "10.0.0.5:40000".parse().unwrap();
        let c = edge.apply(&mut inside, peer, LOCAL.parse().unwrap(), false);
        assert_eq!(c.request_id, RequestId::Ensure, "not the edge");
        assert_eq!(inside[INTERNAL], "true");
        assert!(!inside.contains_key(EXTERNAL_ADDRESS));
        let mut two = headers(&[(XFF, "10.1.2.4,10.1.2.3"), ("x-envoy-retry-on", "5xx")]);
        apply(&f, &mut two);
        assert!(!two.contains_key(INTERNAL));
        assert!(!two.contains_key("x-envoy-retry-on"));
    }
}
