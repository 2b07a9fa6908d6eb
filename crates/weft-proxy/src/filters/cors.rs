//! `envoy.filters.http.cors`: answers CORS preflights for routes with a
//! CORS policy, and adds the `access-control-*` headers to responses to
//! allowed origins. A route without a policy passes untouched.
//!
//! A preflight is an OPTIONS request with `Origin` and
//! `Access-Control-Request-Method`. From an allowed origin it is answered
//! here, 200 with the policy's headers; from another origin it goes
//! upstream, or (Envoy's `forward_not_matching_preflights: false`, Istio's
//! `unmatchedPreflights: IGNORE`) is answered 200 with no CORS headers.

use bytes::Bytes;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use http::header::{HeaderValue, ORIGIN};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use crate::compile::{string_match, ValueMatch};
use crate::http::Body;

pub const NAME: &str = "envoy.filters.http.cors";

#[derive(Debug, Clone, Serialize)]
pub struct CorsCfg {
    pub origins: Vec<ValueMatch>,
    #[serde(skip)]
    allow_methods: Option<HeaderValue>,
    #[serde(skip)]
    allow_headers: Option<HeaderValue>,
    #[serde(skip)]
    expose_headers: Option<HeaderValue>,
    #[serde(skip)]
    max_age: Option<HeaderValue>,
    pub allow_credentials: bool,
    pub forward_unmatched_preflights: bool,
}

pub(crate) fn compile(p: &CorsPolicy) -> Result<CorsCfg, String> {
    if p.filter_enabled.is_some() || p.shadow_enabled.is_some() {
        return Err(
            "cors: filter_enabled and shadow_enabled (runtime fractions) are not supported".into(),
        );
    }
    let value = |s: &str| -> Result<Option<HeaderValue>, String> {
        if s.is_empty() {
            return Ok(None);
        }
        HeaderValue::from_str(s)
            .map(Some)
            .map_err(|_| format!("cors: {s:?} is not a valid header value"))
    };
    Ok(CorsCfg {
        origins: p
            .allow_origin_string_match
            .iter()
            .map(string_match)
            .collect::<Result<_, _>>()?,
        allow_methods: value(&p.allow_methods)?,
        allow_headers: value(&p.allow_headers)?,
        expose_headers: value(&p.expose_headers)?,
        max_age: value(&p.max_age)?,
        allow_credentials: p.allow_credentials.is_some_and(|b| b.value),
        forward_unmatched_preflights: p.forward_not_matching_preflights.is_none_or(|b| b.value),
    })
}

/// What the request phase decided.
pub(crate) enum Cors {
    /// Not a CORS request, or not for this route: nothing to add.
    Pass,
    /// An allowed origin: echo it on the response.
    Allowed(HeaderValue),
    /// A preflight the filter answers itself.
    Reply(Response<Body>),
}

pub(crate) fn on_request<B>(cfg: &CorsCfg, req: &Request<B>) -> Cors {
    let Some(origin) = req.headers().get(ORIGIN) else {
        return Cors::Pass;
    };
    let allowed = origin
        .to_str()
        .is_ok_and(|o| cfg.origins.iter().any(|m| m.matches(o)));
    let preflight = req.method() == Method::OPTIONS
        && req.headers().contains_key("access-control-request-method");
    match (preflight, allowed) {
        (true, true) => Cors::Reply(preflight_reply(cfg, origin)),
        (true, false) if !cfg.forward_unmatched_preflights => Cors::Reply(empty(StatusCode::OK)),
        (false, true) => Cors::Allowed(origin.clone()),
        _ => Cors::Pass,
    }
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r
}

fn preflight_reply(cfg: &CorsCfg, origin: &HeaderValue) -> Response<Body> {
    let mut r = empty(StatusCode::OK);
    let h = r.headers_mut();
    h.insert("access-control-allow-origin", origin.clone());
    let pairs = [
        ("access-control-allow-methods", &cfg.allow_methods),
        ("access-control-allow-headers", &cfg.allow_headers),
        ("access-control-max-age", &cfg.max_age),
    ];
    for (name, value) in pairs {
        if let Some(v) = value {
            h.insert(name, v.clone());
        }
    }
    if cfg.allow_credentials {
        h.insert(
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        );
    }
    r
}

/// The response phase for an allowed origin.
pub(crate) fn on_response(cfg: &CorsCfg, origin: HeaderValue, resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.insert("access-control-allow-origin", origin);
    if let Some(v) = &cfg.expose_headers {
        h.insert("access-control-expose-headers", v.clone());
    }
    if cfg.allow_credentials {
        h.insert(
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        );
    }
}
