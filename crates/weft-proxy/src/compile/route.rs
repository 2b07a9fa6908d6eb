//! Route tables: virtual hosts by domain, routes in order.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::route::v3::{
    redirect_action, route, route_action, DirectResponseAction, RedirectAction, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost,
};
use http::{HeaderValue, StatusCode};
use regex::Regex;
use serde::Serialize;

use super::headers::{compile_header_ops, HeaderOps};
use super::matcher::{
    compile_header, compile_path, compile_query, HeaderMatch, PathMatch, QueryMatch, RequestView,
};
use super::{share, PerMillion};
use crate::filters::{compile_route_filters, RouteFilters};
use crate::router::hash::HashRule;
use crate::router::retry::{self, RetryPolicy};

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
    exact: rustc_hash::FxHashMap<String, usize>,
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
    /// Plaintext requests get a 301 to https (`require_tls`, Istio's
    /// `httpsRedirect`).
    pub require_tls: bool,
    pub routes: Vec<RouteCfg>,
}

#[derive(Debug, Serialize)]
pub struct RouteCfg {
    pub name: Arc<str>,
    pub path: PathMatch,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
    pub action: Action,
    /// Per-route filter config (`typed_per_filter_config`), compiled.
    pub filters: RouteFilters,
    /// The route's own mutations, then its virtual host's.
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    /// The span name (`decorator.operation`).
    pub operation: Option<Arc<str>>,
}

#[derive(Debug, Serialize)]
pub enum Action {
    Forward(Box<Forward>),
    Redirect(Box<Redirect>),
    Direct {
        #[serde(serialize_with = "status_code")]
        status: StatusCode,
        #[serde(serialize_with = "lossy")]
        body: Bytes,
    },
}

/// Where a request goes upstream, and how (Envoy's `RouteAction`).
#[derive(Debug, Serialize)]
pub struct Forward {
    pub clusters: Clusters,
    /// None: no timeout (Istio's default, `0s`); Envoy's default when the
    /// field is absent is 15 s.
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub rewrite: Option<PathRewrite>,
    #[serde(serialize_with = "opt_value")]
    pub host_rewrite: Option<HeaderValue>,
    /// Clusters that get a fire-and-forget copy of a share of requests.
    pub mirrors: Vec<Mirror>,
    /// The key consistent-hash balancers place the request by.
    pub hash_policy: Vec<HashRule>,
    /// How a gRPC request's `grpc-timeout` sets its deadline, when the
    /// route says.
    pub grpc_timeout: Option<GrpcTimeout>,
}

/// A gRPC request's deadline from its `grpc-timeout` header, capped at
/// `max` (None: no cap), in one of Envoy's two styles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum GrpcTimeout {
    /// `max_grpc_timeout` (istiod's outbound routes): the deadline replaces
    /// the route timeout; with no header it is `max` (none: no deadline);
    /// expiry is the router's 504, UT.
    Router { max: Option<Duration> },
    /// `max_stream_duration` with `grpc_timeout_header_max` (istiod's
    /// inbound routes): the header's deadline bounds the whole stream;
    /// expiry is DEADLINE_EXCEEDED, DT.
    Stream { max: Option<Duration> },
}

impl Forward {
    /// The deadline of one request: gRPC's from its header where the route
    /// asks for that, else the route timeout; and whether its expiry is a
    /// stream-duration timeout (DT) rather than the router's (UT).
    pub fn deadline(&self, grpc: Option<&http::HeaderMap>) -> (Option<Duration>, bool) {
        let header = grpc
            .and_then(|h| h.get("grpc-timeout"))
            .and_then(parse_grpc_timeout);
        let capped = |max: Option<Duration>| match (header, max) {
            (Some(h), Some(m)) => Some(h.min(m)),
            (h, m) => h.or(m),
        };
        match self.grpc_timeout {
            Some(GrpcTimeout::Router { max }) if grpc.is_some() => (capped(max), false),
            Some(GrpcTimeout::Stream { max }) => (header.and_then(|_| capped(max)), true),
            _ => (self.timeout, false),
        }
    }
}

/// gRPC's `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(v: &HeaderValue) -> Option<Duration> {
    let text = v.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[derive(Debug, Serialize)]
pub struct Mirror {
    pub cluster: Arc<str>,
    pub share: PerMillion,
}

#[derive(Debug, Serialize)]
pub enum Clusters {
    One(Arc<str>),
    /// Clusters with their cumulative weight bounds, for one random draw.
    Weighted {
        clusters: Vec<WeightedTarget>,
        total: u32,
    },
}

#[derive(Debug, Serialize)]
pub struct WeightedTarget {
    pub name: Arc<str>,
    pub bound: u32,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

#[derive(Debug, Serialize)]
pub enum PathRewrite {
    /// Replaces the matched prefix (or the whole path, for other matches).
    Prefix(String),
    Regex(#[serde(with = "super::matcher::regex_text")] Regex, String),
}

#[derive(Debug, Serialize)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub prefix: Option<String>,
    #[serde(serialize_with = "status_code")]
    pub code: StatusCode,
    pub strip_query: bool,
}

fn status_code<S: serde::Serializer>(c: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(c.as_u16())
}

fn lossy<S: serde::Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

fn opt_value<S: serde::Serializer>(v: &Option<HeaderValue>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_some(&String::from_utf8_lossy(v.as_bytes())),
        None => s.serialize_none(),
    }
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

impl Clusters {
    /// The cluster for one request; `draw` is uniform in `0..total`.
    pub fn pick(&self, draw: impl FnOnce(u32) -> u32) -> (&Arc<str>, Option<&WeightedTarget>) {
        match self {
            Clusters::One(c) => (c, None),
            Clusters::Weighted { clusters, total } => {
                let x = draw(*total);
                let t = clusters
                    .iter()
                    .find(|t| x < t.bound)
                    .unwrap_or(&clusters[clusters.len() - 1]);
                (&t.name, Some(t))
            }
        }
    }
}

impl RouteCfg {
    /// The length of the path prefix a prefix rewrite replaces: the matched
    /// prefix for prefix matches, the whole path otherwise (as Envoy does).
    pub fn rewritten_len(&self, path: &str) -> usize {
        match &self.path {
            PathMatch::Prefix(p) | PathMatch::PrefixIgnoreCase(p) | PathMatch::Segments(p, _) => {
                p.len().min(path.len())
            }
            _ => path.len(),
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
    if !vh.virtual_clusters.is_empty()
        || vh.retry_policy.is_some()
        || !vh.typed_per_filter_config.is_empty()
    {
        return Err("virtual_clusters, retry_policy and typed_per_filter_config on virtual hosts are not supported".into());
    }
    let vh_request = compile_header_ops(&vh.request_headers_to_add, &vh.request_headers_to_remove)?;
    let vh_response =
        compile_header_ops(&vh.response_headers_to_add, &vh.response_headers_to_remove)?;
    let routes = vh
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut route =
                compile_route(r).map_err(|e| format!("routes[{i}] {:?}: {e}", r.name))?;
            // Resolved once here: the route's mutations, then the host's.
            route.request_headers = std::mem::take(&mut route.request_headers).then(&vh_request);
            route.response_headers = std::mem::take(&mut route.response_headers).then(&vh_response);
            Ok(route)
        })
        .collect::<Result<_, String>>()?;
    Ok(VirtualHostCfg {
        name: vh.name.clone(),
        domains: vh.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        // EXTERNAL_ONLY and ALL alike: every client of a gateway is external.
        require_tls: vh.require_tls != 0,
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
        Some(route::Action::Route(a)) => Action::Forward(Box::new(compile_forward(a)?)),
        Some(route::Action::Redirect(a)) => Action::Redirect(Box::new(compile_redirect(a)?)),
        Some(route::Action::DirectResponse(d)) => compile_direct(d)?,
        _ => return Err("route action is not supported".into()),
    };
    Ok(RouteCfg {
        name: r.name.as_str().into(),
        path: compile_path(m)?,
        headers,
        query,
        action,
        filters: compile_route_filters(&r.typed_per_filter_config)?,
        request_headers: compile_header_ops(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
        )?,
        response_headers: compile_header_ops(
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
        )?,
        operation: r
            .decorator
            .as_ref()
            .filter(|d| !d.operation.is_empty())
            .map(|d| d.operation.as_str().into()),
    })
}

#[allow(deprecated)] // `max_grpc_timeout`, which istiod still writes.
fn compile_forward(a: &RouteAction) -> Result<Forward, String> {
    let supported = RouteAction {
        cluster_specifier: a.cluster_specifier.clone(),
        timeout: a.timeout,
        retry_policy: a.retry_policy.clone(),
        prefix_rewrite: a.prefix_rewrite.clone(),
        regex_rewrite: a.regex_rewrite.clone(),
        host_rewrite_specifier: a.host_rewrite_specifier.clone(),
        max_stream_duration: a.max_stream_duration,
        max_grpc_timeout: a.max_grpc_timeout,
        request_mirror_policies: a.request_mirror_policies.clone(),
        hash_policy: a.hash_policy.clone(),
        ..Default::default()
    };
    if *a != supported {
        return Err("route actions support cluster, weighted_clusters, timeout, retry_policy, prefix_rewrite, regex_rewrite, host_rewrite_literal, request_mirror_policies, hash_policy, max_stream_duration and max_grpc_timeout only (rate limits and the rest are not implemented yet)".into());
    }
    if !a.prefix_rewrite.is_empty() && a.regex_rewrite.is_some() {
        return Err("set only one of prefix_rewrite and regex_rewrite".into());
    }
    let rewrite = match &a.regex_rewrite {
        Some(rr) => {
            let pattern = rr.pattern.as_ref().ok_or("regex_rewrite needs a pattern")?;
            let re = Regex::new(&pattern.regex)
                .map_err(|e| format!("regex_rewrite {:?}: {e}", pattern.regex))?;
            Some(PathRewrite::Regex(re, envoy_substitution(&rr.substitution)))
        }
        None if !a.prefix_rewrite.is_empty() => Some(PathRewrite::Prefix(a.prefix_rewrite.clone())),
        None => None,
    };
    let host_rewrite = match &a.host_rewrite_specifier {
        None => None,
        Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(h)) => Some(
            HeaderValue::from_str(h)
                .map_err(|_| format!("host_rewrite_literal {h:?} is not a valid host"))?,
        ),
        Some(_) => return Err("only host_rewrite_literal is supported".into()),
    };
    let (timeout, grpc_timeout) = timeouts(a)?;
    Ok(Forward {
        clusters: compile_clusters(&a.cluster_specifier)?,
        timeout,
        retry: a.retry_policy.as_ref().map(retry::compile).transpose()?,
        rewrite,
        host_rewrite,
        mirrors: a
            .request_mirror_policies
            .iter()
            .map(compile_mirror)
            .collect::<Result<_, _>>()?,
        hash_policy: crate::router::hash::compile(&a.hash_policy)?,
        grpc_timeout,
    })
}

/// The route timeout (Envoy's default 15 s when absent; `0s`: none) and
/// the gRPC deadline rule. With `max_stream_duration` on the route
/// (Envoy's "new timeouts") the route timeout does not apply; a non-zero
/// `max_stream_duration` itself is not supported yet.
#[allow(deprecated)] // `max_grpc_timeout`, which istiod still writes.
fn timeouts(a: &RouteAction) -> Result<(Option<Duration>, Option<GrpcTimeout>), String> {
    use super::nonzero;
    if let Some(m) = &a.max_stream_duration {
        if nonzero(m.max_stream_duration.as_ref())?.is_some() {
            return Err("a non-zero max_stream_duration is not supported yet".into());
        }
        let grpc = match &m.grpc_timeout_header_max {
            Some(max) => Some(GrpcTimeout::Stream {
                max: nonzero(Some(max))?,
            }),
            None => None,
        };
        return Ok((None, grpc));
    }
    let timeout = match &a.timeout {
        None => Some(Duration::from_secs(15)),
        Some(d) => nonzero(Some(d))?,
    };
    let grpc = match &a.max_grpc_timeout {
        Some(max) => Some(GrpcTimeout::Router {
            max: nonzero(Some(max))?,
        }),
        None => None,
    };
    Ok((timeout, grpc))
}

fn compile_mirror(m: &route_action::RequestMirrorPolicy) -> Result<Mirror, String> {
    if m.cluster.is_empty() || !m.cluster_header.is_empty() {
        return Err(
            "request_mirror_policies need a cluster (cluster_header is not supported)".into(),
        );
    }
    // No runtime_fraction mirrors every request, as in Envoy.
    let share = match m.runtime_fraction.as_ref() {
        None => PerMillion::ALL,
        Some(f) => share(f.default_value.as_ref())?,
    };
    Ok(Mirror {
        cluster: m.cluster.as_str().into(),
        share,
    })
}

/// Envoy's substitutions name groups as `\1`; the regex crate as `${1}`.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    out.push(d);
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn compile_clusters(spec: &Option<route_action::ClusterSpecifier>) -> Result<Clusters, String> {
    match spec {
        Some(route_action::ClusterSpecifier::Cluster(c)) => Ok(Clusters::One(c.as_str().into())),
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
            let targets = w.clusters.iter().map(|c| {
                if !c.cluster_header.is_empty() || c.metadata_match.is_some() {
                    return Err(format!("weighted cluster {:?}: cluster_header and metadata_match are not supported", c.name));
                }
                Ok((
                    c.name.as_str(),
                    c.weight.map(|w| w.value).unwrap_or(0),
                    compile_header_ops(&c.request_headers_to_add, &c.request_headers_to_remove)?,
                    compile_header_ops(&c.response_headers_to_add, &c.response_headers_to_remove)?,
                ))
            });
            weighted(targets)
        }
        _ => Err("only cluster and weighted_clusters are supported".into()),
    }
}

/// Weighted clusters (HTTP routes' and tcp_proxy's) as cumulative bounds
/// for one draw; the weights must add up to more than 0.
pub(crate) fn weighted<'a>(
    targets: impl Iterator<Item = Result<(&'a str, u32, HeaderOps, HeaderOps), String>>,
) -> Result<Clusters, String> {
    let mut total = 0u32;
    let mut clusters = Vec::new();
    for t in targets {
        let (name, weight, request_headers, response_headers) = t?;
        total = total
            .checked_add(weight)
            .ok_or("weighted clusters: weights overflow")?;
        clusters.push(WeightedTarget {
            name: name.into(),
            bound: total,
            request_headers,
            response_headers,
        });
    }
    if total == 0 {
        return Err("weighted clusters: weights add up to 0".into());
    }
    Ok(Clusters::Weighted { clusters, total })
}

fn compile_redirect(a: &RedirectAction) -> Result<Redirect, String> {
    use redirect_action::{
        PathRewriteSpecifier as P, RedirectResponseCode as C, SchemeRewriteSpecifier as S,
    };
    let code = match C::try_from(a.response_code) {
        Ok(C::MovedPermanently) => StatusCode::MOVED_PERMANENTLY,
        Ok(C::Found) => StatusCode::FOUND,
        Ok(C::SeeOther) => StatusCode::SEE_OTHER,
        Ok(C::TemporaryRedirect) => StatusCode::TEMPORARY_REDIRECT,
        Ok(C::PermanentRedirect) => StatusCode::PERMANENT_REDIRECT,
        Err(_) => {
            return Err(format!(
                "unknown redirect response_code {}",
                a.response_code
            ))
        }
    };
    let scheme = match &a.scheme_rewrite_specifier {
        None => None,
        Some(S::HttpsRedirect(true)) => Some("https".to_string()),
        Some(S::HttpsRedirect(false)) => None,
        Some(S::SchemeRedirect(s)) => Some(s.to_ascii_lowercase()),
    };
    let (path, prefix) = match &a.path_rewrite_specifier {
        None => (None, None),
        Some(P::PathRedirect(p)) => (Some(p.clone()), None),
        Some(P::PrefixRewrite(p)) => (None, Some(p.clone())),
        Some(_) => return Err("redirects support path_redirect and prefix_rewrite only".into()),
    };
    Ok(Redirect {
        scheme,
        host: Some(a.host_redirect.clone()).filter(|h| !h.is_empty()),
        port: match a.port_redirect {
            0 => None,
            p => Some(u16::try_from(p).map_err(|_| format!("port_redirect {p} out of range"))?),
        },
        path,
        prefix,
        code,
        strip_query: a.strip_query,
    })
}

fn compile_direct(d: &DirectResponseAction) -> Result<Action, String> {
    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
    let status = u16::try_from(d.status)
        .ok()
        .filter(|s| (200..600).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| format!("direct_response status {} is not in 200..599", d.status))?;
    let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
        None => Bytes::new(),
        Some(Specifier::InlineString(s)) => Bytes::from(s.clone()),
        Some(Specifier::InlineBytes(b)) => Bytes::from(b.clone()),
        Some(_) => return Err("direct_response body must be inline_string or inline_bytes".into()),
    };
    Ok(Action::Direct { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vh(name: &str, domains: &[&str]) -> VirtualHostCfg {
        VirtualHostCfg {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            require_tls: false,
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
        let target = |name: &str, bound| WeightedTarget {
            name: name.into(),
            bound,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
        };
        let a = Clusters::Weighted {
            clusters: vec![target("v1", 80), target("v2", 100)],
            total: 100,
        };
        let pick = |x: u32| a.pick(|_| x).0.to_string();
        assert_eq!(pick(0), "v1");
        assert_eq!(pick(79), "v1");
        assert_eq!(pick(80), "v2");
        assert_eq!(pick(99), "v2");
    }

    #[test]
    fn envoy_substitutions_become_regex_crate_ones() {
        assert_eq!(envoy_substitution("/v2/\\1/x\\12"), "/v2/${1}/x${12}");
        assert_eq!(envoy_substitution("$cost"), "$$cost");
    }
}
