//! Istio's sample external authorizer (`samples/extauthz`), both ways it
//! serves: HTTP (the filter asks with the request's method, path and
//! headers) and gRPC (Envoy's `envoy.service.auth.v3.Authorization/Check`,
//! on the HTTP port + 1000, as the sample's 8000 and 9000). A request
//! carrying `x-ext-authz: allow` is allowed; any other is denied with 403
//! and the sample's message. Either answer carries
//! `x-ext-authz-check-result`.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::auth::v3::{
    check_response::HttpResponse, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc::Status;

pub const DENIED: &str =
    "denied by ext_authz for not found header `x-ext-authz: allow` in the request";

/// The sample's decision on a request's headers.
pub fn allowed(header: Option<&str>) -> bool {
    header == Some("allow")
}

fn result(value: &str) -> Vec<HeaderValueOption> {
    vec![HeaderValueOption {
        header: Some(HeaderValue {
            key: "x-ext-authz-check-result".into(),
            value: value.into(),
            ..Default::default()
        }),
        ..Default::default()
    }]
}

fn check(req: CheckRequest) -> CheckResponse {
    let header = req
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .and_then(|h| h.headers.get("x-ext-authz"))
        .map(String::as_str);
    if allowed(header) {
        CheckResponse {
            status: Some(Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: result("allowed"),
                ..Default::default()
            })),
            ..Default::default()
        }
    } else {
        CheckResponse {
            status: Some(Status {
                code: 7, // PERMISSION_DENIED
                ..Default::default()
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus { code: 403 }),
                headers: result("denied"),
                body: DENIED.into(),
            })),
            ..Default::default()
        }
    }
}

/// Serves the gRPC check on `listen`.
pub async fn serve_grpc(listen: SocketAddr, workload: String) -> anyhow::Result<()> {
    crate::boutique::grpc::serve(listen, &workload, |req| async move {
        match req.uri().path() {
            "/envoy.service.auth.v3.Authorization/Check" => {
                crate::boutique::grpc::unary(req, |r: CheckRequest| async move { Ok(check(r)) })
                    .await
            }
            other => crate::boutique::grpc::unimplemented(other),
        }
    })
    .await
}
