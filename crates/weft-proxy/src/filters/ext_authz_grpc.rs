//! The ext_authz filter with a gRPC service (`envoyExtAuthzGrpc`): the
//! proxy sends Envoy's `CheckRequest` (the request's method, path, host,
//! headers; the peer's address and SPIFFE id) to
//! `envoy.service.auth.v3.Authorization/Check` on the service's cluster,
//! over HTTP/2, and acts on the `CheckResponse`: status OK lets the
//! request on with the headers the service adds, anything else answers
//! with the service's denied response (403 unless it says otherwise).

use std::collections::HashMap;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, GrpcService, SocketAddress,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::ExtAuthz;
use envoy_types::pb::envoy::service::auth::v3::{
    attribute_context, check_response::HttpResponse, AttributeContext, CheckRequest, CheckResponse,
};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use prost::Message;

use super::ext_authz::{shared, Decision, ExtAuthzCfg};
use crate::compile::Compiled;

const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

pub(super) fn compile(cfg: &ExtAuthz, g: &GrpcService) -> Result<ExtAuthzCfg, String> {
    use envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier;
    let Some(TargetSpecifier::EnvoyGrpc(target)) = &g.target_specifier else {
        return Err("grpc_service: only envoy_grpc (a cluster) is supported".into());
    };
    let authority = if target.authority.is_empty() {
        target.cluster_name.clone()
    } else {
        target.authority.clone()
    };
    let timeout = g
        .timeout
        .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_millis(200));
    shared(cfg, true, target.cluster_name.clone(), authority, timeout)
}

fn socket(addr: std::net::SocketAddr) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..Default::default()
        })),
    })
}

/// Envoy's CheckRequest for a request on `conn`.
fn check_request<B>(req: &Request<B>, conn: &crate::http::Connection) -> CheckRequest {
    let mut headers: HashMap<String, String> = HashMap::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).to_string();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let principal = conn
        .tls
        .as_ref()
        .and_then(|t| t.peer_principal.clone())
        .unwrap_or_default();
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(attribute_context::Peer {
                address: socket(conn.peer),
                principal,
                ..Default::default()
            }),
            destination: Some(attribute_context::Peer {
                address: socket(conn.destination),
                ..Default::default()
            }),
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    id: headers.get("x-request-id").cloned().unwrap_or_default(),
                    method: req.method().to_string(),
                    path: req
                        .uri()
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_string(),
                    host: crate::router::authority(req).to_string(),
                    scheme: if conn.tls.is_some() { "https" } else { "http" }.into(),
                    protocol: format!("{:?}", req.version()),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

impl ExtAuthzCfg {
    pub(super) async fn ask_grpc<B>(
        &self,
        req: &Request<B>,
        conn: &crate::http::Connection,
        snapshot: &Compiled,
    ) -> Result<CheckResponse, String> {
        let cluster = snapshot
            .clusters
            .get(&self.cluster)
            .ok_or_else(|| format!("cluster {} not found", self.cluster))?;
        let addr = cluster
            .pick(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), None)
            .ok_or("no healthy endpoint")?;
        let message = check_request(req, conn).encode_to_vec();
        let mut frame = BytesMut::with_capacity(5 + message.len());
        frame.put_u8(0);
        frame.put_u32(message.len() as u32);
        frame.put_slice(&message);
        let call = Request::post(CHECK)
            .header(http::header::HOST, &self.authority)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(crate::router::body::UpBody::Full(
                http_body_util::Full::new(frame.freeze()),
            ))
            .map_err(|e| e.to_string())?;
        // gRPC is HTTP/2: the cluster of a gRPC port speaks it.
        let peer = cluster.peer(addr, true);
        if peer.http2.is_none() {
            return Err(format!(
                "cluster {} does not speak HTTP/2 (gRPC)",
                self.cluster
            ));
        }
        let (call, body) = call.into_parts();
        let resp = crate::upstream::send(&peer, &cluster.breaker, &call, body)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.map_err(|e| e.to_string())?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let status = grpc_status(&parts.headers).or_else(|| grpc_status(&trailers));
        if status != Some(0) {
            return Err(format!(
                "the authorization service answered grpc-status {status:?}"
            ));
        }
        let bytes = collected.to_bytes();
        let body = bytes.get(5..).ok_or("an empty gRPC answer")?;
        CheckResponse::decode(body).map_err(|e| format!("not a CheckResponse: {e}"))
    }

    pub(super) fn decide_grpc<B>(&self, req: &mut Request<B>, answer: CheckResponse) -> Decision {
        let ok = answer.status.as_ref().is_none_or(|s| s.code == 0);
        let to_map = |list: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption]| {
            let mut out = HeaderMap::new();
            for h in list.iter().filter_map(|o| o.header.as_ref()) {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(h.key.as_bytes()),
                    HeaderValue::from_str(&h.value),
                ) {
                    out.append(n, v);
                }
            }
            out
        };
        match (ok, answer.http_response) {
            (true, Some(HttpResponse::OkResponse(r))) => {
                for name in &r.headers_to_remove {
                    req.headers_mut().remove(name.as_str());
                }
                for (name, value) in to_map(&r.headers) {
                    if let Some(name) = name {
                        req.headers_mut().insert(name, value);
                    }
                }
                Decision::Allow(to_map(&r.response_headers_to_add))
            }
            (true, _) => Decision::Allow(HeaderMap::new()),
            (false, denied) => {
                let (status, headers, body) = match denied {
                    Some(HttpResponse::DeniedResponse(d)) => (
                        d.status.map_or(403, |s| s.code as u16),
                        to_map(&d.headers),
                        d.body,
                    ),
                    _ => (403, HeaderMap::new(), String::new()),
                };
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
                let mut reply = crate::http::local_reply::direct(status, Bytes::from(body));
                reply.headers_mut().extend(headers);
                Decision::Deny(reply, "ext_authz_denied")
            }
        }
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers
        .get(crate::http::GRPC_STATUS)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
