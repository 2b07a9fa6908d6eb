//! The HTTP filter chain: the HttpConnectionManager's `http_filters`,
//! compiled into a list of a concrete enum, one small module per filter.
//!
//! A request runs each filter's request phase in order up to the router,
//! which must come last; the response comes back through the chain in
//! reverse. Per-route configuration (`typed_per_filter_config`) is compiled
//! into the route itself, so the request path never looks it up by name. A
//! filter the chain does not name costs nothing; one Weft does not know is
//! a NACK.
//!
//! `envoy.filters.http.jwt_authn` and `envoy.filters.http.rbac` come
//! before fault (Istio's authn/authz phases); the claims of a token the
//! JWT filter verified are what RBAC's JWT conditions read. Where the
//! later filters go: `istio.stats` just before the router, Lua and Wasm
//! where the list puts them.

pub(crate) mod cors;
pub(crate) mod ext_authz;
mod ext_authz_grpc;
pub(crate) mod fault;
pub(crate) mod jwt;
pub(crate) mod rbac;

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpFilter as HttpFilterProto,
};
use serde::Serialize;

use crate::compile::unpack;
use crate::error::{Flags, ProxyError};

pub const ROUTER: &str = "envoy.filters.http.router";

#[derive(Debug, Clone, Serialize)]
pub enum HttpFilter {
    /// RequestAuthentication: a token that does not verify is 401.
    Jwt(std::sync::Arc<jwt::JwtCfg>),
    /// CUSTOM authorization: an external service decides.
    ExtAuthz(std::sync::Arc<ext_authz::ExtAuthzCfg>),
    /// Authorization (AuthorizationPolicy): the request is let on or 403.
    Rbac(std::sync::Arc<rbac::RbacCfg>),
    /// The filter's own fault config, used by routes that set none.
    Fault(Option<fault::FaultCfg>),
    /// CORS: routes carry their policies; a route with none passes.
    Cors,
}

/// The filters before the router, in order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FilterChain {
    pub filters: Vec<HttpFilter>,
    /// `istio.stats` is in the list (with its config): requests are
    /// recorded in Istio's metrics once they end.
    #[serde(skip)]
    pub stats: Option<envoy_types::pb::google::protobuf::Any>,
}

/// What one route overrides in the filters (`typed_per_filter_config`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteFilters {
    pub fault: Option<fault::FaultCfg>,
    pub cors: Option<cors::CorsCfg>,
}

pub(crate) fn compile_chain(list: &[HttpFilterProto]) -> Result<FilterChain, String> {
    let Some((last, rest)) = list.split_last() else {
        return Err("http_filters is empty; the router must be the last filter".into());
    };
    if filter_kind(last)? != Kind::Router {
        return Err(format!(
            "the last HTTP filter must be {ROUTER}, not {:?}",
            last.name
        ));
    }
    let mut filters = Vec::new();
    let mut stats = None;
    for f in rest {
        let compiled = match filter_kind(f)? {
            Kind::Router => return Err(format!("{ROUTER} must be the last HTTP filter")),
            Kind::Stats => {
                stats = Some(match &f.config_type {
                    Some(http_filter::ConfigType::TypedConfig(any)) => any.clone(),
                    _ => Default::default(),
                });
                continue;
            }
            Kind::Fault => {
                let own = match &f.config_type {
                    Some(http_filter::ConfigType::TypedConfig(any)) => {
                        let proto = unpack(any)?;
                        let cfg = fault::compile(&proto)?;
                        (cfg.delay.is_some() || cfg.abort.is_some()).then_some(cfg)
                    }
                    _ => None,
                };
                HttpFilter::Fault(own)
            }
            Kind::Cors => HttpFilter::Cors,
            Kind::ExtAuthz => {
                let Some(http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                    return Err(format!("{} needs its config", ext_authz::NAME));
                };
                HttpFilter::ExtAuthz(std::sync::Arc::new(ext_authz::compile(&unpack(any)?)?))
            }
            Kind::Jwt => {
                let Some(http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                    return Err(format!("{} needs its config", jwt::NAME));
                };
                HttpFilter::Jwt(std::sync::Arc::new(jwt::compile(&unpack(any)?)?))
            }
            Kind::Rbac => {
                let Some(http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                    return Err(format!("{} needs its config", rbac::NAME));
                };
                HttpFilter::Rbac(std::sync::Arc::new(rbac::compile(&unpack(any)?)?))
            }
        };
        filters.push(compiled);
    }
    Ok(FilterChain { filters, stats })
}

#[derive(PartialEq)]
enum Kind {
    ExtAuthz,
    Jwt,
    Rbac,
    Fault,
    Cors,
    Stats,
    Router,
}

/// A filter is known by its name or by its config's type URL, as in Envoy.
fn filter_kind(f: &HttpFilterProto) -> Result<Kind, String> {
    let type_url = match &f.config_type {
        Some(http_filter::ConfigType::TypedConfig(any)) => any.type_url.as_str(),
        _ => "",
    };
    let by = |name: &str, ty: &str| f.name == name || type_url.ends_with(ty);
    if by(rbac::NAME, ".rbac.v3.RBAC") {
        Ok(Kind::Rbac)
    } else if by(jwt::NAME, ".jwt_authn.v3.JwtAuthentication") {
        Ok(Kind::Jwt)
    } else if by(ext_authz::NAME, ".ext_authz.v3.ExtAuthz") {
        Ok(Kind::ExtAuthz)
    } else if by(fault::NAME, ".fault.v3.HTTPFault") {
        Ok(Kind::Fault)
    } else if by(cors::NAME, ".cors.v3.Cors") {
        Ok(Kind::Cors)
    } else if f.name == crate::stats::NAME || type_url.ends_with(crate::stats::PLUGIN_CONFIG) {
        Ok(Kind::Stats)
    } else if by(ROUTER, ".router.v3.Router") {
        Ok(Kind::Router)
    } else if f.is_optional {
        Err(format!(
            "HTTP filter {:?} is not supported (is_optional is honoured only for known filters)",
            f.name
        ))
    } else {
        Err(format!("HTTP filter {:?} is not supported", f.name))
    }
}

/// Compiles a route's `typed_per_filter_config`: fault may be overridden;
/// any other filter's per-route config is refused.
pub(crate) fn compile_route_filters(
    per_filter: &std::collections::HashMap<String, envoy_types::pb::google::protobuf::Any>,
) -> Result<RouteFilters, String> {
    let mut out = RouteFilters::default();
    for (name, any) in per_filter {
        if name == fault::NAME || any.type_url.ends_with(".fault.v3.HTTPFault") {
            out.fault = Some(fault::compile(&unpack(any)?)?);
        } else if name == cors::NAME || any.type_url.ends_with(".cors.v3.CorsPolicy") {
            out.cors = Some(cors::compile(&unpack(any)?)?);
        } else {
            return Err(format!(
                "typed_per_filter_config for {name:?} is not supported"
            ));
        }
    }
    Ok(out)
}

/// What the request phases leave for the response phases.
#[derive(Default)]
pub(crate) struct Verdict {
    /// CORS: the allowed origin to echo on the response.
    cors_origin: Option<http::HeaderValue>,
    /// Headers an authorization service wants on the response.
    extra_headers: http::HeaderMap,
}

/// The request phases either let the request go on (with what the
/// response phases will need) or answer it themselves.
pub(crate) enum Next {
    Continue(Verdict),
    Reply(http::Response<crate::http::Body>),
}

impl FilterChain {
    /// Runs every request phase, in order, for one request on `route`.
    pub(crate) async fn on_request<B>(
        &self,
        route: &RouteFilters,
        req: &mut http::Request<B>,
        conn: &crate::http::Connection,
        snapshot: &crate::Compiled,
        log: &mut crate::access_log::Entry,
    ) -> Result<Next, ProxyError> {
        let mut verdict = Verdict::default();
        let mut claims = None;
        // Dynamic metadata the RBAC filters leave (shadow rules' matches).
        let mut metadata: Vec<(String, String)> = Vec::new();
        for f in &self.filters {
            match f {
                HttpFilter::Jwt(cfg) => match cfg.on_request(req) {
                    Ok(verified) => claims = verified.or(claims),
                    Err(refused) => {
                        let (reason, reply) = *refused;
                        log.detail = Some(format!("jwt_authn_access_denied{{{reason}}}"));
                        return Ok(Next::Reply(reply));
                    }
                },
                HttpFilter::ExtAuthz(cfg) => {
                    if cfg.wanted(&metadata) {
                        // Boxed: the call's future (a whole upstream
                        // exchange) would otherwise sit in every request's.
                        match Box::pin(cfg.check(req, conn, snapshot)).await {
                            ext_authz::Decision::Allow(headers) => {
                                verdict.extra_headers.extend(headers)
                            }
                            ext_authz::Decision::Deny(reply, detail) => {
                                log.detail = Some(detail.into());
                                log.flags.insert(Flags::EXT_AUTHZ_DENIED);
                                return Ok(Next::Reply(reply));
                            }
                        }
                    }
                }
                HttpFilter::Rbac(cfg) => {
                    let remote = log.client(conn).ip();
                    let who = subject(req, conn, claims.as_deref(), remote);
                    if let Some((key, policy)) = cfg.shadow_effective(&who) {
                        metadata.push((key.to_string(), policy));
                    }
                    if let Some(policy) = cfg.logs(&who) {
                        log.audit = Some(policy);
                    }
                    if let Some(policy) = cfg.denies(&who) {
                        tracing::debug!(policy, "RBAC: access denied");
                        let matched = if policy.is_empty() { "none" } else { &policy };
                        log.detail = Some(format!("rbac_access_denied_matched_policy[{matched}]"));
                        log.flags.insert(Flags::RBAC_DENIED);
                        return Ok(Next::Reply(crate::http::local_reply::direct(
                            http::StatusCode::FORBIDDEN,
                            bytes::Bytes::from_static(b"RBAC: access denied"),
                        )));
                    }
                }
                HttpFilter::Fault(own) => {
                    if let Some(cfg) = route.fault.as_ref().or(own.as_ref()) {
                        fault::on_request(cfg, &mut log.flags).await?;
                    }
                }
                HttpFilter::Cors => {
                    if let Some(cfg) = &route.cors {
                        match cors::on_request(cfg, req) {
                            cors::Cors::Pass => {}
                            cors::Cors::Allowed(origin) => verdict.cors_origin = Some(origin),
                            cors::Cors::Reply(r) => return Ok(Next::Reply(r)),
                        }
                    }
                }
            }
        }
        Ok(Next::Continue(verdict))
    }

    /// Runs the response phases, in reverse order.
    pub(crate) fn on_response(
        &self,
        route: &RouteFilters,
        verdict: Verdict,
        resp: &mut http::Response<crate::http::Body>,
    ) {
        for (name, value) in verdict.extra_headers.iter() {
            resp.headers_mut().insert(name, value.clone());
        }
        for f in self.filters.iter().rev() {
            match f {
                HttpFilter::Cors => {
                    if let (Some(cfg), Some(origin)) = (&route.cors, verdict.cors_origin.clone()) {
                        cors::on_response(cfg, origin, resp);
                    }
                }
                HttpFilter::Fault(_)
                | HttpFilter::Rbac(_)
                | HttpFilter::Jwt(_)
                | HttpFilter::ExtAuthz(_) => {}
            }
        }
    }
}

/// What RBAC reads of a request and its connection.
fn subject<'a, B>(
    req: &'a http::Request<B>,
    conn: &'a crate::http::Connection,
    claims: Option<&'a serde_json::Value>,
    remote: std::net::IpAddr,
) -> rbac::Subject<'a> {
    rbac::Subject {
        request: Some(crate::compile::RequestView {
            method: req.method().as_str(),
            authority: crate::router::authority(req),
            scheme: req.uri().scheme_str().unwrap_or("http"),
            path: req.uri().path(),
            query: req.uri().query(),
            headers: req.headers(),
        }),
        peer: conn.peer.ip(),
        remote,
        destination: conn.destination,
        server_name: conn.tls.as_ref().and_then(|t| t.server_name.as_deref()),
        principal: conn.tls.as_ref().and_then(|t| t.peer_principal.as_deref()),
        claims,
    }
}

/// What network RBAC reads of a TCP connection.
pub(crate) fn tcp_subject(conn: &crate::http::Connection) -> rbac::Subject<'_> {
    rbac::Subject {
        request: None,
        peer: conn.peer.ip(),
        remote: conn.peer.ip(),
        destination: conn.destination,
        server_name: conn
            .tls
            .as_ref()
            .and_then(|t| t.server_name.as_deref())
            .or(conn.seen.server_name.as_deref()),
        principal: conn.tls.as_ref().and_then(|t| t.peer_principal.as_deref()),
        claims: None,
    }
}
