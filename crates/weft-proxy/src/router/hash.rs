//! A route's hash policy (Envoy's `hash_policy`, Istio's `consistentHash`):
//! the key that consistent balancers place a request by. Policies are
//! tried in order and their hashes combined; a `terminal` one that yields
//! a hash ends the list. A cookie policy with a TTL makes up the cookie
//! when the request has none, and the response sets it, as Envoy does.

use std::net::IpAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::route_action::{hash_policy, HashPolicy};
use http::header::{HeaderName, HeaderValue, COOKIE};
use http::request::Parts;
use serde::Serialize;

use crate::compile::duration;
use crate::upstream::balancer::hash_of;

#[derive(Debug, Clone, Serialize)]
pub struct HashRule {
    pub key: HashKey,
    pub terminal: bool,
}

#[derive(Debug, Clone, Serialize)]
pub enum HashKey {
    Header(#[serde(serialize_with = "name")] HeaderName),
    Cookie {
        name: String,
        /// With a TTL, a missing cookie is generated and set.
        ttl: Option<Duration>,
        path: String,
    },
    SourceIp,
    QueryParameter(String),
}

fn name<S: serde::Serializer>(n: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(n.as_str())
}

pub(crate) fn compile(list: &[HashPolicy]) -> Result<Vec<HashRule>, String> {
    list.iter()
        .map(|p| {
            use hash_policy::PolicySpecifier as P;
            let key = match &p.policy_specifier {
                Some(P::Header(h)) if h.regex_rewrite.is_none() => HashKey::Header(
                    HeaderName::from_bytes(h.header_name.as_bytes())
                        .map_err(|_| format!("hash_policy header {:?} is not a header name", h.header_name))?,
                ),
                Some(P::Cookie(c)) if c.attributes.is_empty() => HashKey::Cookie {
                    name: c.name.clone(),
                    ttl: c.ttl.as_ref().map(duration).transpose()?,
                    path: c.path.clone(),
                },
                Some(P::ConnectionProperties(c)) if c.source_ip => HashKey::SourceIp,
                Some(P::QueryParameter(q)) => HashKey::QueryParameter(q.name.clone()),
                _ => return Err("hash_policy supports header, cookie (name, ttl, path), source_ip and query_parameter only".into()),
            };
            Ok(HashRule {
                key,
                terminal: p.terminal,
            })
        })
        .collect()
}

/// The request's hash, and the `Set-Cookie` value when a cookie was made up.
pub(crate) fn hash(
    rules: &[HashRule],
    parts: &Parts,
    source: IpAddr,
) -> (Option<u64>, Option<HeaderValue>) {
    let mut combined: Option<u64> = None;
    let mut set_cookie = None;
    for rule in rules {
        let h = match &rule.key {
            HashKey::Header(n) => {
                let values: Vec<&[u8]> = parts
                    .headers
                    .get_all(n)
                    .iter()
                    .map(HeaderValue::as_bytes)
                    .collect();
                (!values.is_empty()).then(|| hash_of(values))
            }
            HashKey::Cookie { name, ttl, path } => match cookie(&parts.headers, name) {
                Some(v) => Some(hash_of(v)),
                None => ttl.map(|ttl| {
                    let value = format!("{:016x}", fastrand::u64(..));
                    let attrs = if path.is_empty() {
                        String::new()
                    } else {
                        format!("; Path={path}")
                    };
                    set_cookie = HeaderValue::from_str(&format!(
                        "{name}=\"{value}\"; Max-Age={}{attrs}; HttpOnly",
                        ttl.as_secs()
                    ))
                    .ok();
                    hash_of(format!("\"{value}\"").as_str())
                }),
            },
            HashKey::SourceIp => Some(hash_of(source)),
            HashKey::QueryParameter(q) => parts.uri.query().and_then(|query| {
                query
                    .split('&')
                    .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                    .find(|(k, _)| k == q)
                    .map(|(_, v)| hash_of(v))
            }),
        };
        if let Some(h) = h {
            combined = Some(combined.map_or(h, |c| c.rotate_left(1) ^ h));
            if rule.terminal {
                break;
            }
        }
    }
    (combined, set_cookie)
}

fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
