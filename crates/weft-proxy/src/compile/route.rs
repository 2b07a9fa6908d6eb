//! Route tables: virtual hosts by domain, routes in order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, Route, RouteConfiguration, RouteMatch, VirtualHost,
};
use serde::Serialize;

use super::matcher::{
    compile_header, compile_path, compile_query, HeaderMatch, PathMatch, QueryMatch, RequestView,
};

#[derive(Debug, Serialize)]
pub struct RouteTable {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHostCfg>,
    /// Envoy's domain precedence, precomputed: a sidecar's table holds a
    /// virtual host per service, so the lookup must not scan them all.
    #[serde(skip)]
    index: DomainIndex,
}

/// Indexes into `virtual_hosts`.
#[derive(Debug, Default)]
struct DomainIndex {
    exact: HashMap<String, usize>,
    /// `*.suffix` domains (stored without the `*`), longest first.
    suffixes: Vec<(String, usize)>,
    /// `prefix.*` domains (stored without the `*`), longest first.
    prefixes: Vec<(String, usize)>,
    any: Option<usize>,
}

impl DomainIndex {
    /// The first virtual host to claim a domain keeps it, as in Envoy
    /// (which rejects duplicates outright; the control plane never sends them).
    fn new(virtual_hosts: &[VirtualHostCfg]) -> DomainIndex {
        let mut index = DomainIndex::default();
        for (i, vh) in virtual_hosts.iter().enumerate() {
            for d in &vh.domains {
                if d == "*" {
                    index.any.get_or_insert(i);
                } else if let Some(suffix) = d.strip_prefix('*') {
                    index.suffixes.push((suffix.to_string(), i));
                } else if let Some(prefix) = d.strip_suffix('*') {
                    index.prefixes.push((prefix.to_string(), i));
                } else {
                    index.exact.entry(d.clone()).or_insert(i);
                }
            }
        }
        // Stable sorts: among equal lengths the earlier virtual host wins.
        index
            .suffixes
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        index
            .prefixes
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        index
    }
}

#[derive(Debug, Serialize)]
pub struct VirtualHostCfg {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<RouteCfg>,
}

#[derive(Debug, Serialize)]
pub struct RouteCfg {
    pub name: Arc<str>,
    pub path: PathMatch,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
    pub action: Action,
}

#[derive(Debug, Serialize)]
pub enum Action {
    Cluster(Arc<str>),
    /// Clusters with their cumulative weight bounds, for one random draw.
    Weighted {
        clusters: Vec<(Arc<str>, u32)>,
        total: u32,
    },
}

impl RouteTable {
    pub fn new(name: String, virtual_hosts: Vec<VirtualHostCfg>) -> RouteTable {
        let index = DomainIndex::new(&virtual_hosts);
        RouteTable {
            name,
            virtual_hosts,
            index,
        }
    }

    /// Envoy's virtual host selection: exact domain, then the longest
    /// `*.suffix`, then the longest `prefix.*`, then `*`.
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHostCfg> {
        let host: Cow<str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        let ix = &self.index;
        let found = ix
            .exact
            .get(host.as_ref())
            .copied()
            .or_else(|| {
                ix.suffixes
                    .iter()
                    .find(|(s, _)| host.ends_with(s.as_str()))
                    .map(|(_, i)| *i)
            })
            .or_else(|| {
                ix.prefixes
                    .iter()
                    .find(|(p, _)| host.starts_with(p.as_str()))
                    .map(|(_, i)| *i)
            })
            .or(ix.any)?;
        self.virtual_hosts.get(found)
    }
}

impl RouteCfg {
    pub fn matches(&self, req: &RequestView) -> bool {
        self.path.matches(req.path)
            && self.headers.iter().all(|h| h.matches(req))
            && self.query.iter().all(|q| q.matches(req.query))
    }
}

impl Action {
    /// The cluster for one request; `draw` is uniform in `0..total`.
    pub fn pick(&self, draw: impl FnOnce(u32) -> u32) -> Option<&Arc<str>> {
        match self {
            Action::Cluster(c) => Some(c),
            Action::Weighted { clusters, total } => {
                let x = draw(*total);
                clusters
                    .iter()
                    .find(|(_, bound)| x < *bound)
                    .or(clusters.last())
                    .map(|(c, _)| c)
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
    Ok(RouteTable::new(rc.name.clone(), virtual_hosts))
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
    let supported = RouteMatch {
        path_specifier: m.path_specifier.clone(),
        case_sensitive: m.case_sensitive,
        headers: m.headers.clone(),
        query_parameters: m.query_parameters.clone(),
        ..Default::default()
    };
    if *m != supported {
        return Err("route matches support path, case_sensitive, headers and query_parameters only (not runtime_fraction, cookies, grpc, tls_context or metadata)".into());
    }
    let headers = m
        .headers
        .iter()
        .map(compile_header)
        .collect::<Result<_, _>>()?;
    let query = m
        .query_parameters
        .iter()
        .map(compile_query)
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
        name: r.name.as_str().into(),
        path: compile_path(m)?,
        headers,
        query,
        action,
    })
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
        Some(route_action::ClusterSpecifier::Cluster(c)) => Ok(Action::Cluster(c.as_str().into())),
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
            let mut total = 0u32;
            let mut clusters = Vec::new();
            for c in &w.clusters {
                total += c.weight.map(|w| w.value).unwrap_or(0);
                clusters.push((c.name.as_str().into(), total));
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
        let t = RouteTable::new(
            "80".into(),
            vec![
                vh("any", &["*"]),
                vh("suffix", &["*.example.com"]),
                vh("longer-suffix", &["*.b.example.com"]),
                vh("prefix", &["a.*"]),
                vh("exact", &["a.example.com"]),
            ],
        );
        let name = |host: &str| t.virtual_host(host).map(|v| v.name.as_str());
        assert_eq!(name("a.example.com"), Some("exact"));
        assert_eq!(name("A.Example.com"), Some("exact"), "domains ignore case");
        assert_eq!(name("c.example.com"), Some("suffix"));
        assert_eq!(name("c.b.example.com"), Some("longer-suffix"));
        assert_eq!(name("a.example.org"), Some("prefix"));
        assert_eq!(name("other"), Some("any"));
        let no_default = RouteTable::new("80".into(), vec![vh("exact", &["a"])]);
        assert!(no_default.virtual_host("b").is_none());
    }

    #[test]
    fn weighted_pick_follows_bounds() {
        let a = Action::Weighted {
            clusters: vec![("v1".into(), 80), ("v2".into(), 100)],
            total: 100,
        };
        let pick = |x: u32| a.pick(|_| x).map(|c| c.to_string());
        assert_eq!(pick(0).as_deref(), Some("v1"));
        assert_eq!(pick(79).as_deref(), Some("v1"));
        assert_eq!(pick(80).as_deref(), Some("v2"));
        assert_eq!(pick(99).as_deref(), Some("v2"));
    }
}
