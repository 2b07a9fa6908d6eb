//! Envoy's external authorization filter (`envoy.filters.http.ext_authz`)
//! with an HTTP service, as istiod writes it for CUSTOM policies: for a
//! request the shadow RBAC rules marked, the proxy asks the service with
//! the request's method, path (after `path_prefix`) and allowed headers,
//! and no body. 200 lets the request on, with the service's allowed
//! headers added; any other answer is sent to the client as the service
//! gave it (flag UAEX); no answer is `status_on_error` (403), unless
//! `failure_mode_allow`.

use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::http_uri::HttpUpstreamType;
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
    ext_authz::Services, ExtAuthz,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{value_matcher::MatchPattern, ListStringMatcher};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde::Serialize;

use crate::compile::{string_match, Compiled, ValueMatch};

pub const NAME: &str = "envoy.filters.http.ext_authz";

#[derive(Debug, Serialize)]
pub struct ExtAuthzCfg {
    /// A gRPC service (`envoy.service.auth.v3.Authorization/Check`), else HTTP.
    pub(super) grpc: bool,
    pub(super) cluster: String,
    pub(super) authority: String,
    timeout: Duration,
    path_prefix: String,
    /// Request headers sent to the service (besides Envoy's defaults:
    /// host, method, path, content-length, authorization).
    allowed_headers: Vec<ValueMatch>,
    headers_to_add: Vec<(String, String)>,
    /// Service response headers copied onto the request when allowed.
    upstream_headers: Vec<ValueMatch>,
    /// Service response headers passed to the client when denied (none
    /// listed: all of them), and when allowed.
    client_headers: Vec<ValueMatch>,
    client_headers_on_success: Vec<ValueMatch>,
    failure_mode_allow: bool,
    status_on_error: u16,
    /// Only requests whose RBAC metadata `key` matches are checked.
    enabled_by: Option<(String, ValueMatch)>,
}

fn list(l: &Option<ListStringMatcher>) -> Result<Vec<ValueMatch>, String> {
    l.iter()
        .flat_map(|l| &l.patterns)
        .map(string_match)
        .collect()
}

pub(crate) fn compile(cfg: &ExtAuthz) -> Result<ExtAuthzCfg, String> {
    let http = match &cfg.services {
        Some(Services::HttpService(h)) => h,
        Some(Services::GrpcService(g)) => return super::ext_authz_grpc::compile(cfg, g),
        None => return Err("no authorization service".into()),
    };
    let uri = http
        .server_uri
        .as_ref()
        .ok_or("http_service needs server_uri")?;
    let Some(HttpUpstreamType::Cluster(cluster)) = &uri.http_upstream_type else {
        return Err("server_uri needs a cluster".into());
    };
    let authority = uri
        .uri
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.to_string()))
        .ok_or_else(|| format!("server_uri {:?} is not a URL", uri.uri))?;
    let request = http.authorization_request.clone().unwrap_or_default();
    let response = http.authorization_response.clone().unwrap_or_default();
    #[allow(deprecated)]
    let mut allowed_headers = list(&request.allowed_headers)?;
    allowed_headers.extend(list(&cfg.allowed_headers)?);
    let enabled_by = enabled_by(cfg)?;
    Ok(ExtAuthzCfg {
        grpc: false,
        cluster: cluster.clone(),
        authority,
        timeout: uri
            .timeout
            .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_millis(200)),
        path_prefix: http.path_prefix.clone(),
        allowed_headers,
        headers_to_add: request
            .headers_to_add
            .iter()
            .map(|h| (h.key.to_ascii_lowercase(), h.value.clone()))
            .collect(),
        upstream_headers: list(&response.allowed_upstream_headers)?,
        client_headers: list(&response.allowed_client_headers)?,
        client_headers_on_success: list(&response.allowed_client_headers_on_success)?,
        failure_mode_allow: cfg.failure_mode_allow,
        status_on_error: status_on_error(cfg),
        enabled_by,
    })
}

pub(super) fn status_on_error(cfg: &ExtAuthz) -> u16 {
    cfg.status_on_error
        .as_ref()
        .map(|s| s.code as u16)
        .filter(|c| *c >= 200)
        .unwrap_or(403)
}

/// The part of the config both kinds of service share.
pub(super) fn shared(
    cfg: &ExtAuthz,
    grpc: bool,
    cluster: String,
    authority: String,
    timeout: Duration,
) -> Result<ExtAuthzCfg, String> {
    Ok(ExtAuthzCfg {
        grpc,
        cluster,
        authority,
        timeout,
        path_prefix: String::new(),
        allowed_headers: list(&cfg.allowed_headers)?,
        headers_to_add: Vec::new(),
        upstream_headers: Vec::new(),
        client_headers: Vec::new(),
        client_headers_on_success: Vec::new(),
        failure_mode_allow: cfg.failure_mode_allow,
        status_on_error: status_on_error(cfg),
        enabled_by: enabled_by(cfg)?,
    })
}

fn enabled_by(cfg: &ExtAuthz) -> Result<Option<(String, ValueMatch)>, String> {
    Ok(match &cfg.filter_enabled_metadata {
        None => None,
        Some(m) => {
            let key = match m.path.as_slice() {
                [one] => match &one.segment {
                    Some(envoy_types::pb::envoy::r#type::matcher::v3::metadata_matcher::path_segment::Segment::Key(k)) => k.clone(),
                    None => return Err("filter_enabled_metadata: empty path".into()),
                },
                _ => return Err("filter_enabled_metadata: one path key is supported".into()),
            };
            let Some(MatchPattern::StringMatch(sm)) =
                m.value.as_ref().and_then(|v| v.match_pattern.as_ref())
            else {
                return Err("filter_enabled_metadata: a string matcher is supported".into());
            };
            Some((key, string_match(sm)?))
        }
    })
}

/// What the service decided.
pub(crate) enum Decision {
    /// Go on; these headers go to the client with the response.
    Allow(HeaderMap),
    /// The reply to send instead, and the access log's detail.
    Deny(Response<crate::http::Body>, &'static str),
}

const DEFAULT_HEADERS: [&str; 4] = ["host", "authorization", "content-length", "method"];

impl ExtAuthzCfg {
    /// Whether this request is to be checked (its RBAC metadata says so).
    pub(crate) fn wanted(&self, metadata: &[(String, String)]) -> bool {
        match &self.enabled_by {
            None => true,
            Some((key, m)) => metadata.iter().any(|(k, v)| k == key && m.matches(v)),
        }
    }

    pub(crate) async fn check<B>(
        &self,
        req: &mut Request<B>,
        conn: &crate::http::Connection,
        snapshot: &Compiled,
    ) -> Decision {
        if self.grpc {
            let asked =
                tokio::time::timeout(self.timeout, self.ask_grpc(req, conn, snapshot)).await;
            return match asked {
                Ok(Ok(answer)) => self.decide_grpc(req, answer),
                Ok(Err(e)) => self.on_error(&e),
                Err(_) => self.on_error("the authorization service timed out"),
            };
        }
        let asked = tokio::time::timeout(self.timeout, self.ask(req, snapshot)).await;
        match asked {
            Ok(Ok(resp)) => self.decide(req, resp),
            Ok(Err(e)) => self.on_error(&e),
            Err(_) => self.on_error("the authorization service timed out"),
        }
    }

    pub(super) fn on_error(&self, why: &str) -> Decision {
        tracing::warn!(cluster = %self.cluster, error = why, "external authorization failed");
        if self.failure_mode_allow {
            return Decision::Allow(HeaderMap::new());
        }
        let status = StatusCode::from_u16(self.status_on_error).unwrap_or(StatusCode::FORBIDDEN);
        Decision::Deny(
            crate::http::local_reply::direct(status, Bytes::new()),
            "ext_authz_error",
        )
    }

    async fn ask<B>(
        &self,
        req: &Request<B>,
        snapshot: &Compiled,
    ) -> Result<(http::response::Parts, Bytes), String> {
        let cluster = snapshot
            .clusters
            .get(&self.cluster)
            .ok_or_else(|| format!("cluster {} not found", self.cluster))?;
        let addr = cluster
            .pick(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), None)
            .ok_or("no healthy endpoint")?;
        let path = format!(
            "{}{}",
            self.path_prefix,
            req.uri().path_and_query().map_or("/", |p| p.as_str())
        );
        let mut check = Request::builder()
            .method(req.method().clone())
            .uri(path)
            .body(crate::router::body::UpBody::Full(
                http_body_util::Full::new(Bytes::new()),
            ))
            .map_err(|e| e.to_string())?;
        let headers = check.headers_mut();
        for (name, value) in req.headers() {
            let n = name.as_str();
            if DEFAULT_HEADERS.contains(&n) || self.allowed_headers.iter().any(|m| m.matches(n)) {
                headers.append(name.clone(), value.clone());
            }
        }
        if !headers.contains_key(http::header::HOST) {
            if let Ok(v) = HeaderValue::from_str(crate::router::authority(req)) {
                headers.insert(http::header::HOST, v);
            }
        }
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        for (k, v) in &self.headers_to_add {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.insert(n, v);
            }
        }
        let peer = cluster.peer(addr, false);
        let (check, body) = check.into_parts();
        let resp = crate::upstream::send(&peer, &cluster.breaker, &check, body)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((parts, body))
    }

    fn decide<B>(
        &self,
        req: &mut Request<B>,
        (parts, body): (http::response::Parts, Bytes),
    ) -> Decision {
        let pick = |list: &[ValueMatch], all: bool| {
            let mut out = HeaderMap::new();
            for (name, value) in &parts.headers {
                let n = name.as_str();
                let hop = matches!(
                    n,
                    "content-length" | "transfer-encoding" | "connection" | "date" | "server"
                );
                if !hop && ((all && list.is_empty()) || list.iter().any(|m| m.matches(n))) {
                    out.append(name.clone(), value.clone());
                }
            }
            out
        };
        if parts.status == StatusCode::OK {
            for (name, value) in pick(&self.upstream_headers, false) {
                if let Some(name) = name {
                    req.headers_mut().insert(name, value);
                }
            }
            return Decision::Allow(pick(&self.client_headers_on_success, false));
        }
        let mut reply = crate::http::local_reply::direct(parts.status, body);
        for (name, value) in pick(&self.client_headers, true) {
            if let Some(name) = name {
                reply.headers_mut().insert(name, value);
            }
        }
        Decision::Deny(reply, "ext_authz_denied")
    }
}
