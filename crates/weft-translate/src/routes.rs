//! VirtualService HTTP routes → Envoy routes.

use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, query_parameter_matcher, route, route_action, route_match, weighted_cluster,
    HeaderMatcher, QueryParameterMatcher, Route, RouteAction, RouteMatch, WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, RegexMatcher, StringMatcher};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use weft_config::networking::common::MatchForm;
use weft_config::networking::{
    Destination, HttpMatchRequest, HttpRoute, HttpRouteDestination, StringMatch, VirtualService,
};
use weft_config::Resource;
use weft_registry::{Registry, Workload};

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;

use crate::clusters::cluster_name;
use crate::policies;

/// Where a VirtualService sits and which proxy its routes are for.
pub(crate) struct Scope<'a> {
    pub registry: &'a Registry,
    /// Every resource, for the DestinationRules of a route's destinations.
    pub config: &'a [weft_config::Resource],
    /// The VirtualService's namespace, to resolve its short host names.
    pub namespace: &'a str,
    /// The port the request arrived for, used when a destination names no
    /// port and its service has several.
    pub port: u16,
    /// The ports a match's `port` may name: the service port for a
    /// sidecar, the ports of the Gateway servers behind this listener.
    pub match_ports: Vec<u32>,
    /// Conditions on the source (`sourceLabels`, `sourceNamespace`) are
    /// decided per proxy when its config is built, as Istio does.
    pub proxy: &'a Workload,
    pub context: Context<'a>,
}

impl<'a> Scope<'a> {
    /// A sidecar's view of a service `port`, for a VirtualService in
    /// `namespace`.
    pub(crate) fn sidecar(
        inputs: &crate::Inputs<'a>,
        proxy: &'a Workload,
        namespace: &'a str,
        port: u16,
    ) -> Self {
        Scope {
            registry: inputs.registry,
            config: inputs.config,
            namespace,
            port,
            match_ports: vec![u32::from(port)],
            proxy,
            context: Context::Mesh,
        }
    }
}

/// What a match's `gateways` list is compared with.
pub(crate) enum Context<'a> {
    /// A sidecar: the reserved gateway name `mesh`.
    Mesh,
    /// A gateway proxy: the Gateway resources this listener serves.
    Gateways(Vec<&'a Resource>),
}

/// One Envoy route per (HTTP route × match), in order, as Istio does: the
/// matches of one HTTP route are alternatives.
pub(crate) fn virtual_service_routes(vs: &VirtualService, scope: &Scope) -> Vec<Route> {
    let mut out = Vec::new();
    for (i, http) in vs.http.iter().enumerate() {
        let name = http.name.clone().unwrap_or_else(|| format!("route-{i}"));
        if http.delegate.is_some() {
            out.extend(delegated_routes(http, scope));
            continue;
        }
        let Some(template) = http_route(&name, http, scope) else {
            continue;
        };
        if http.matches.is_empty() {
            out.push(Route {
                r#match: Some(catch_all()),
                ..template
            });
            continue;
        }
        // A route whose matches all concern other proxies is no route here
        // (not a catch-all).
        for m in http.matches.iter().filter(|m| applies_here(m, scope)) {
            out.push(Route {
                r#match: Some(route_match(m, vs.ingress_paths)),
                ..template.clone()
            });
        }
    }
    out
}

/// The routes of the delegate a root route names, in its place, each under
/// the root's matches; the delegate's short names resolve in its own
/// namespace. One level only: a delegate's own delegates are ignored (the
/// config crate rejects them).
fn delegated_routes(root: &HttpRoute, scope: &Scope) -> Vec<Route> {
    let Some((delegate, ns)) = crate::delegate::find(scope.config, root, scope.namespace) else {
        return Vec::new();
    };
    let inner = Scope {
        namespace: ns,
        match_ports: scope.match_ports.clone(),
        context: match &scope.context {
            Context::Mesh => Context::Mesh,
            Context::Gateways(g) => Context::Gateways(g.clone()),
        },
        ..*scope
    };
    let mut out = Vec::new();
    for (i, http) in delegate
        .http
        .iter()
        .filter(|h| h.delegate.is_none())
        .enumerate()
    {
        let Some(matches) = crate::delegate::merged_matches(&root.matches, &http.matches) else {
            continue;
        };
        let merged = HttpRoute {
            matches,
            ..http.clone()
        };
        let one = VirtualService {
            http: vec![HttpRoute {
                name: merged
                    .name
                    .clone()
                    .or_else(|| Some(format!("delegate-{i}"))),
                ..merged
            }],
            ..Default::default()
        };
        // The root's gateways decide where a merged match applies.
        out.extend(virtual_service_routes(&one, &inner));
    }
    out
}

/// Which catch-all route `route_to_cluster` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DefaultRoute {
    /// A service's default outbound route: Istio's default retries.
    Outbound,
    /// The outbound catch-all to the passthrough cluster.
    Passthrough,
    /// The inbound route to the app: a gRPC call's `grpc-timeout` bounds
    /// its stream.
    Inbound,
}

/// A catch-all route to one cluster, as istiod writes them: no timeout
/// (`0s`); gRPC deadlines from `grpc-timeout`, uncapped (outbound through
/// `max_grpc_timeout`, inbound through `max_stream_duration`).
#[allow(deprecated)] // `max_grpc_timeout`, which istiod still writes.
pub(crate) fn route_to_cluster(name: &str, cluster: &str, kind: DefaultRoute) -> Route {
    let zero = policies::timeout(None);
    let action = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
        timeout: Some(zero),
        retry_policy: (kind == DefaultRoute::Outbound).then(policies::default_retry),
        max_grpc_timeout: (kind != DefaultRoute::Inbound).then_some(zero),
        max_stream_duration: (kind == DefaultRoute::Inbound).then_some(
            route_action::MaxStreamDuration {
                max_stream_duration: Some(zero),
                grpc_timeout_header_max: Some(zero),
                ..Default::default()
            },
        ),
        ..Default::default()
    };
    Route {
        name: name.into(),
        r#match: Some(catch_all()),
        action: Some(route::Action::Route(action)),
        ..Default::default()
    }
}

/// Everything of an Envoy route but its match: the action (forward,
/// redirect or direct response), header mutations and the fault filter's
/// per-route config. None when the route has nowhere to go.
fn http_route(name: &str, http: &HttpRoute, scope: &Scope) -> Option<Route> {
    let action = if let Some(r) = &http.redirect {
        route::Action::Redirect(policies::redirect(r, scope.port))
    } else if let Some(d) = &http.direct_response {
        route::Action::DirectResponse(policies::direct_response(d))
    } else {
        route::Action::Route(route_action(http, scope)?)
    };
    let headers = http.headers.as_ref();
    let mut request = policies::header_mutations(headers.and_then(|h| h.request.as_ref()));
    let mut response = policies::header_mutations(headers.and_then(|h| h.response.as_ref()));
    // One destination's headers join the route's; several destinations
    // keep theirs on their weighted clusters (see `route_action`).
    if let [only] = http.route.as_slice() {
        let dh = only.headers.as_ref();
        let dreq = policies::header_mutations(dh.and_then(|h| h.request.as_ref()));
        let dresp = policies::header_mutations(dh.and_then(|h| h.response.as_ref()));
        request.add.extend(dreq.add);
        request.remove.extend(dreq.remove);
        response.add.extend(dresp.add);
        response.remove.extend(dresp.remove);
    }
    Some(Route {
        name: name.into(),
        action: Some(action),
        request_headers_to_add: request.add,
        request_headers_to_remove: request.remove,
        response_headers_to_add: response.add,
        response_headers_to_remove: response.remove,
        typed_per_filter_config: filter_configs(http),
        ..Default::default()
    })
}

pub(crate) fn catch_all() -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
        ..Default::default()
    }
}

/// The parts of a match that depend on where the route is installed.
fn applies_here(m: &HttpMatchRequest, scope: &Scope) -> bool {
    source_fits(
        m.port,
        &m.source_labels,
        m.source_namespace.as_ref(),
        &m.gateways,
        scope,
    )
}

/// Conditions on where a request comes from and arrives (HTTP and TCP
/// matches share them): the port, the proxy's labels and namespace, and
/// the gateways (or `mesh`) the route is installed on.
pub(crate) fn source_fits(
    port: Option<u32>,
    source_labels: &std::collections::BTreeMap<String, String>,
    source_namespace: Option<&String>,
    gateways: &[String],
    scope: &Scope,
) -> bool {
    let proxy = scope.proxy;
    port.is_none_or(|p| scope.match_ports.contains(&p))
        && source_labels
            .iter()
            .all(|(k, v)| proxy.labels.get(k) == Some(v))
        && source_namespace.is_none_or(|ns| *ns == proxy.namespace)
        && (gateways.is_empty()
            || gateways.iter().any(|g| match &scope.context {
                Context::Mesh => g == "mesh",
                Context::Gateways(gws) => gws
                    .iter()
                    .any(|gw| crate::gateway::names_gateway(g, scope.namespace, gw)),
            }))
}

/// The request conditions of a match, in Envoy's terms: `method`,
/// `authority` and `scheme` are the pseudo-headers `:method`, `:authority`
/// and `:scheme`; `withoutHeaders` are inverted header matchers.
/// `ingress_paths`: a prefix other than `/` matches whole path segments
/// (`path_separated_prefix`), as istiod writes an Ingress's `Prefix` path.
fn route_match(m: &HttpMatchRequest, ingress_paths: bool) -> RouteMatch {
    let path = match m.uri.as_ref().and_then(StringMatch::form) {
        Some(MatchForm::Exact(p)) => route_match::PathSpecifier::Path(p.into()),
        Some(MatchForm::Prefix(p)) if ingress_paths && p != "/" => {
            route_match::PathSpecifier::PathSeparatedPrefix(p.strip_suffix('/').unwrap_or(p).into())
        }
        Some(MatchForm::Prefix(p)) => route_match::PathSpecifier::Prefix(p.into()),
        Some(MatchForm::Regex(r)) => route_match::PathSpecifier::SafeRegex(regex(r)),
        None => route_match::PathSpecifier::Prefix("/".into()),
    };
    let pseudo = [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ];
    let mut headers: Vec<HeaderMatcher> = pseudo
        .into_iter()
        .filter_map(|(name, sm)| Some(header_matcher(name, sm.as_ref()?, false)))
        .collect();
    headers.extend(
        m.headers
            .iter()
            .map(|(name, sm)| header_matcher(name, sm, false)),
    );
    headers.extend(
        m.without_headers
            .iter()
            .map(|(name, sm)| header_matcher(name, sm, true)),
    );
    let query_parameters = m
        .query_params
        .iter()
        .map(|(name, sm)| QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(match string_matcher_of(sm) {
                Some(s) => query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(s),
                None => query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true),
            }),
        })
        .collect();
    RouteMatch {
        path_specifier: Some(path),
        headers,
        query_parameters,
        case_sensitive: (m.ignore_uri_case == Some(true)).then_some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// A string match, or presence when the match is empty (`{}`), as in Istio.
/// Inverted (`withoutHeaders`), a request without the header matches: only
/// a header that is there and matches excludes the request.
fn header_matcher(name: &str, sm: &StringMatch, invert: bool) -> HeaderMatcher {
    let (specifier, is_string) = match string_matcher_of(sm) {
        Some(s) => (header_matcher::HeaderMatchSpecifier::StringMatch(s), true),
        None => (
            header_matcher::HeaderMatchSpecifier::PresentMatch(true),
            false,
        ),
    };
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(specifier),
        invert_match: invert,
        treat_missing_header_as_empty: invert && is_string,
    }
}

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.into(),
        ..Default::default()
    }
}

fn string_matcher_of(sm: &StringMatch) -> Option<StringMatcher> {
    let pattern = match sm.form()? {
        MatchForm::Exact(v) => string_matcher::MatchPattern::Exact(v.into()),
        MatchForm::Prefix(v) => string_matcher::MatchPattern::Prefix(v.into()),
        MatchForm::Regex(v) => string_matcher::MatchPattern::SafeRegex(regex(v)),
    };
    Some(StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    })
}

/// The per-route configs of the fault and CORS filters.
fn filter_configs(
    http: &HttpRoute,
) -> std::collections::HashMap<String, envoy_types::pb::google::protobuf::Any> {
    let mut out = http.fault.as_ref().map(policies::fault).unwrap_or_default();
    if let Some(c) = &http.cors_policy {
        out.insert(crate::envoy::CORS.to_string(), cors_policy(c));
    }
    out
}

/// `corsPolicy` as istiod writes it (the deprecated `allowOrigin` list is
/// exact origins).
fn cors_policy(
    c: &weft_config::networking::http_policies::CorsPolicy,
) -> envoy_types::pb::google::protobuf::Any {
    use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
    let exact = c.allow_origin.iter().map(|o| StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(o.clone())),
        ..Default::default()
    });
    let policy = CorsPolicy {
        allow_origin_string_match: c
            .allow_origins
            .iter()
            .filter_map(string_matcher_of)
            .chain(exact)
            .collect(),
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .as_ref()
            .and_then(|d| d.parse())
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(|value| BoolValue { value }),
        forward_not_matching_preflights: Some(BoolValue {
            value: c.unmatched_preflights.as_deref() != Some("IGNORE"),
        }),
        ..Default::default()
    };
    envoy_types::util::pack_any(policy)
}

#[allow(deprecated)] // `max_grpc_timeout`, which istiod still writes.
fn route_action(http: &HttpRoute, scope: &Scope) -> Option<RouteAction> {
    let specifier = match http.route.as_slice() {
        [] => return None,
        [only] => {
            route_action::ClusterSpecifier::Cluster(destination_cluster(&only.destination, scope))
        }
        many => route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many.iter().map(|d| weighted(d, scope)).collect(),
            ..Default::default()
        }),
    };
    let rewrite = http.rewrite.as_ref();
    Some(RouteAction {
        cluster_specifier: Some(specifier),
        timeout: Some(policies::timeout(http.timeout.as_ref())),
        // istiod bounds a gRPC call's own deadline by the same timeout.
        max_grpc_timeout: Some(policies::timeout(http.timeout.as_ref())),
        retry_policy: policies::retry(http.retries.as_ref()),
        prefix_rewrite: rewrite.and_then(|r| r.uri.clone()).unwrap_or_default(),
        regex_rewrite: rewrite
            .and_then(|r| r.uri_regex_rewrite.as_ref())
            .map(|r| policies::regex_rewrite(&r.pattern, &r.rewrite)),
        host_rewrite_specifier: rewrite
            .and_then(|r| r.authority.clone())
            .map(route_action::HostRewriteSpecifier::HostRewriteLiteral),
        request_mirror_policies: mirrors(http, scope),
        hash_policy: crate::hashing::route_hash_policy(
            http.route.iter().map(|d| &d.destination),
            scope,
        ),
        ..Default::default()
    })
}

/// `mirror` (with `mirrorPercentage`, or the deprecated `mirrorPercent`)
/// and `mirrors`, each 100% unless said; a 0% mirror is left out, as
/// istiod leaves it.
fn mirrors(http: &HttpRoute, scope: &Scope) -> Vec<route_action::RequestMirrorPolicy> {
    let legacy = http
        .mirror_percent
        .map(f64::from)
        .or(http.mirror_percent_snake.map(f64::from));
    let single = http.mirror.as_ref().map(|d| {
        let pct = http.mirror_percentage.as_ref().map(|p| p.value).or(legacy);
        (d, pct)
    });
    let listed = http
        .mirrors
        .iter()
        .flatten()
        .map(|m| (&m.destination, m.percentage.as_ref().map(|p| p.value)));
    single
        .into_iter()
        .chain(listed)
        .filter(|(_, pct)| pct.is_none_or(|p| p > 0.0))
        .map(|(d, pct)| route_action::RequestMirrorPolicy {
            cluster: destination_cluster(d, scope),
            runtime_fraction: Some(RuntimeFractionalPercent {
                default_value: Some(policies::percent_of(pct.unwrap_or(100.0))),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

fn weighted(d: &HttpRouteDestination, scope: &Scope) -> weighted_cluster::ClusterWeight {
    let dh = d.headers.as_ref();
    let request = policies::header_mutations(dh.and_then(|h| h.request.as_ref()));
    let response = policies::header_mutations(dh.and_then(|h| h.response.as_ref()));
    weighted_cluster::ClusterWeight {
        name: destination_cluster(&d.destination, scope),
        weight: Some(UInt32Value {
            value: u32::try_from(d.weight.unwrap_or(0)).unwrap_or(0),
        }),
        request_headers_to_add: request.add,
        request_headers_to_remove: request.remove,
        response_headers_to_add: response.add,
        response_headers_to_remove: response.remove,
        ..Default::default()
    }
}

/// The outbound cluster a destination names. The port is the destination's,
/// else the service's only port, else the port the request came in on.
pub(crate) fn destination_cluster(d: &Destination, scope: &Scope) -> String {
    let fqdn = scope.registry.qualify(&d.host, scope.namespace);
    let port = destination_port(d, scope);
    cluster_name("outbound", port, d.subset.as_deref().unwrap_or(""), &fqdn)
}

/// The service port a destination reaches: its own, the service's only
/// one, or the port the request came in on.
pub(crate) fn destination_port(d: &Destination, scope: &Scope) -> u16 {
    let service = scope.registry.service(&d.host, scope.namespace);
    match (&d.port, service) {
        (Some(p), _) => u16::try_from(p.number).unwrap_or(0),
        (None, Some(s)) if s.ports.len() == 1 => s.ports[0].port,
        _ => scope.port,
    }
}
