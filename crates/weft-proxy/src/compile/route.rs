//! Route tables: virtual hosts by domain, routes in order.

use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, route, route_action, route_match, HeaderMatcher, Route, RouteConfiguration,
    VirtualHost,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
use regex::Regex;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct RouteTable {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHostCfg>,
}

#[derive(Debug, Serialize)]
pub struct VirtualHostCfg {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<RouteCfg>,
}

#[derive(Debug, Serialize)]
pub struct RouteCfg {
    pub name: String,
    pub path: PathMatch,
    pub headers: Vec<HeaderMatch>,
    pub action: Action,
}

#[derive(Debug, Serialize)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(#[serde(with = "regex_text")] Regex),
}

#[derive(Debug, Serialize)]
pub struct HeaderMatch {
    pub name: String,
    pub value: ValueMatch,
}

#[derive(Debug, Serialize)]
pub enum ValueMatch {
    Exact(String),
    Prefix(String),
    Regex(#[serde(with = "regex_text")] Regex),
    Present,
}

#[derive(Debug, Serialize)]
pub enum Action {
    Cluster(String),
    /// Clusters with their cumulative weight bounds, for one random draw.
    Weighted {
        clusters: Vec<(String, u32)>,
        total: u32,
    },
}

mod regex_text {
    pub fn serialize<S: serde::Serializer>(r: &regex::Regex, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(r.as_str())
    }
}

impl RouteTable {
    /// Envoy's virtual host selection: exact domain, then the longest
    /// `*.suffix`, then the longest `prefix.*`, then `*`.
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHostCfg> {
        let host = host.to_ascii_lowercase();
        let mut best: Option<(u8, usize, &VirtualHostCfg)> = None;
        for vh in &self.virtual_hosts {
            for d in &vh.domains {
                let rank = if *d == host {
                    Some((3, d.len()))
                } else if d == "*" {
                    Some((0, 0))
                } else if let Some(suffix) = d.strip_prefix('*') {
                    host.ends_with(suffix).then_some((2, d.len()))
                } else if let Some(prefix) = d.strip_suffix('*') {
                    host.starts_with(prefix).then_some((1, d.len()))
                } else {
                    None
                };
                if let Some((class, len)) = rank {
                    if best.is_none_or(|(bc, bl, _)| (class, len) > (bc, bl)) {
                        best = Some((class, len, vh));
                    }
                }
            }
        }
        best.map(|(_, _, vh)| vh)
    }
}

impl RouteCfg {
    pub fn matches(&self, path: &str, headers: &http::HeaderMap) -> bool {
        let path_ok = match &self.path {
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Exact(p) => path == p,
            PathMatch::Regex(r) => r.is_match(path),
        };
        path_ok
            && self.headers.iter().all(|h| {
                let value = headers.get(&h.name).and_then(|v| v.to_str().ok());
                match (&h.value, value) {
                    (_, None) => false,
                    (ValueMatch::Present, Some(_)) => true,
                    (ValueMatch::Exact(e), Some(v)) => v == e,
                    (ValueMatch::Prefix(p), Some(v)) => v.starts_with(p.as_str()),
                    (ValueMatch::Regex(r), Some(v)) => r.is_match(v),
                }
            })
    }
}

impl Action {
    /// The cluster for one request; `draw` is uniform in `0..total`.
    pub fn pick(&self, draw: impl FnOnce(u32) -> u32) -> &str {
        match self {
            Action::Cluster(c) => c,
            Action::Weighted { clusters, total } => {
                let x = draw(*total);
                clusters
                    .iter()
                    .find(|(_, bound)| x < *bound)
                    .or(clusters.last())
                    .map(|(c, _)| c.as_str())
                    .unwrap_or("")
            }
        }
    }
}

pub(crate) fn compile_route_table(rc: &RouteConfiguration) -> Result<RouteTable, String> {
    let virtual_hosts = rc
        .virtual_hosts
        .iter()
        .map(|vh| compile_virtual_host(vh).map_err(|e| format!("virtual host {:?}: {e}", vh.name)))
        .collect::<Result<_, _>>()?;
    Ok(RouteTable {
        name: rc.name.clone(),
        virtual_hosts,
    })
}

fn compile_virtual_host(vh: &VirtualHost) -> Result<VirtualHostCfg, String> {
    if vh.require_tls != 0 || !vh.virtual_clusters.is_empty() || vh.retry_policy.is_some() {
        return Err("require_tls, virtual_clusters and retry_policy are not supported".into());
    }
    let routes = vh
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| compile_route(r).map_err(|e| format!("routes[{i}] {:?}: {e}", r.name)))
        .collect::<Result<_, _>>()?;
    Ok(VirtualHostCfg {
        name: vh.name.clone(),
        domains: vh.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        routes,
    })
}

fn compile_route(r: &Route) -> Result<RouteCfg, String> {
    let m = r.r#match.as_ref().ok_or("a route needs a match")?;
    if m.case_sensitive.as_ref().is_some_and(|b| !b.value)
        || !m.query_parameters.is_empty()
        || m.grpc.is_some()
    {
        return Err(
            "case-insensitive, query-parameter and gRPC route matches are not supported".into(),
        );
    }
    let path = match &m.path_specifier {
        Some(route_match::PathSpecifier::Prefix(p)) => PathMatch::Prefix(p.clone()),
        Some(route_match::PathSpecifier::Path(p)) => PathMatch::Exact(p.clone()),
        Some(route_match::PathSpecifier::SafeRegex(r)) => PathMatch::Regex(full_regex(&r.regex)?),
        _ => return Err("path match must be prefix, path or safe_regex".into()),
    };
    let headers = m
        .headers
        .iter()
        .map(compile_header)
        .collect::<Result<_, _>>()?;
    let action = match &r.action {
        Some(route::Action::Route(a)) => compile_action(a)?,
        Some(route::Action::Redirect(_)) => {
            return Err("redirect routes are not supported yet".into())
        }
        Some(route::Action::DirectResponse(_)) => {
            return Err("direct_response routes are not supported yet".into())
        }
        _ => return Err("route action is not supported".into()),
    };
    Ok(RouteCfg {
        name: r.name.clone(),
        path,
        headers,
        action,
    })
}

fn compile_header(h: &HeaderMatcher) -> Result<HeaderMatch, String> {
    if h.invert_match {
        return Err(format!(
            "header {:?}: invert_match is not supported",
            h.name
        ));
    }
    let value = match &h.header_match_specifier {
        Some(header_matcher::HeaderMatchSpecifier::StringMatch(sm)) => string_match(sm)?,
        Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true)) => ValueMatch::Present,
        _ => {
            return Err(format!(
                "header {:?}: only string_match and present_match are supported",
                h.name
            ))
        }
    };
    Ok(HeaderMatch {
        name: h.name.to_ascii_lowercase(),
        value,
    })
}

fn string_match(sm: &StringMatcher) -> Result<ValueMatch, String> {
    if sm.ignore_case {
        return Err("ignore_case is not supported".into());
    }
    Ok(match &sm.match_pattern {
        Some(string_matcher::MatchPattern::Exact(v)) => ValueMatch::Exact(v.clone()),
        Some(string_matcher::MatchPattern::Prefix(v)) => ValueMatch::Prefix(v.clone()),
        Some(string_matcher::MatchPattern::SafeRegex(r)) => {
            ValueMatch::Regex(full_regex(&r.regex)?)
        }
        _ => return Err("only exact, prefix and safe_regex string matches are supported".into()),
    })
}

/// Envoy's safe_regex must match the whole value.
fn full_regex(r: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{r})$")).map_err(|e| format!("regex {r:?}: {e}"))
}

fn compile_action(
    a: &envoy_types::pb::envoy::config::route::v3::RouteAction,
) -> Result<Action, String> {
    let plain = envoy_types::pb::envoy::config::route::v3::RouteAction {
        cluster_specifier: a.cluster_specifier.clone(),
        ..Default::default()
    };
    if *a != plain {
        return Err("route actions support cluster and weighted_clusters only (timeouts, retries, rewrites, mirrors are not implemented yet)".into());
    }
    match &a.cluster_specifier {
        Some(route_action::ClusterSpecifier::Cluster(c)) => Ok(Action::Cluster(c.clone())),
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
            let mut total = 0u32;
            let mut clusters = Vec::new();
            for c in &w.clusters {
                total += c.weight.map(|w| w.value).unwrap_or(0);
                clusters.push((c.name.clone(), total));
            }
            if total == 0 {
                return Err("weighted_clusters: weights add up to 0".into());
            }
            Ok(Action::Weighted { clusters, total })
        }
        _ => Err("only cluster and weighted_clusters are supported".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vh(name: &str, domains: &[&str]) -> VirtualHostCfg {
        VirtualHostCfg {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes: vec![],
        }
    }

    #[test]
    fn virtual_host_precedence() {
        let t = RouteTable {
            name: "80".into(),
            virtual_hosts: vec![
                vh("any", &["*"]),
                vh("suffix", &["*.example.com"]),
                vh("exact", &["a.example.com"]),
            ],
        };
        assert_eq!(t.virtual_host("a.example.com").unwrap().name, "exact");
        assert_eq!(t.virtual_host("B.example.com").unwrap().name, "suffix");
        assert_eq!(t.virtual_host("other").unwrap().name, "any");
    }

    #[test]
    fn weighted_pick_follows_bounds() {
        let a = Action::Weighted {
            clusters: vec![("v1".into(), 80), ("v2".into(), 100)],
            total: 100,
        };
        assert_eq!(a.pick(|_| 0), "v1");
        assert_eq!(a.pick(|_| 79), "v1");
        assert_eq!(a.pick(|_| 80), "v2");
        assert_eq!(a.pick(|_| 99), "v2");
    }

    #[test]
    fn header_and_regex_matching() {
        let r = RouteCfg {
            name: "r".into(),
            path: PathMatch::Regex(full_regex("/api/v[0-9]+").unwrap()),
            headers: vec![HeaderMatch {
                name: "end-user".into(),
                value: ValueMatch::Exact("jason".into()),
            }],
            action: Action::Cluster("c".into()),
        };
        let mut h = http::HeaderMap::new();
        assert!(!r.matches("/api/v1", &h));
        h.insert("end-user", "jason".parse().unwrap());
        assert!(r.matches("/api/v1", &h));
        assert!(
            !r.matches("/api/v1/x", &h),
            "safe_regex matches the whole path"
        );
    }
}
