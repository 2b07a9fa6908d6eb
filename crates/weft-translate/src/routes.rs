//! VirtualService HTTP routes → Envoy routes.

use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, route, route_action, route_match, weighted_cluster, HeaderMatcher, Route,
    RouteAction, RouteMatch, WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, RegexMatcher, StringMatcher};
use envoy_types::pb::google::protobuf::UInt32Value;
use weft_config::networking::common::MatchForm;
use weft_config::networking::{
    Destination, HttpMatchRequest, HttpRoute, StringMatch, VirtualService,
};
use weft_registry::Registry;

use crate::clusters::cluster_name;

/// Where a VirtualService sits, needed to resolve its short host names.
pub(crate) struct Scope<'a> {
    pub registry: &'a Registry,
    pub namespace: &'a str,
    /// The port the request arrived for, used when a destination names no
    /// port and its service has several.
    pub port: u16,
}

/// One Envoy route per (HTTP route × match), in order, as Istio does: the
/// matches of one HTTP route are alternatives.
pub(crate) fn virtual_service_routes(vs: &VirtualService, scope: &Scope) -> Vec<Route> {
    let mut out = Vec::new();
    for (i, http) in vs.http.iter().enumerate() {
        let Some(action) = route_action(http, scope) else {
            continue;
        };
        let name = http.name.clone().unwrap_or_else(|| format!("route-{i}"));
        if http.matches.is_empty() {
            out.push(route(&name, catch_all(), action));
            continue;
        }
        for m in &http.matches {
            out.push(route(&name, route_match(m), action.clone()));
        }
    }
    out
}

pub(crate) fn route_to_cluster(name: &str, cluster: &str) -> Route {
    let action = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    };
    route(name, catch_all(), action)
}

fn route(name: &str, matcher: RouteMatch, action: RouteAction) -> Route {
    Route {
        name: name.into(),
        r#match: Some(matcher),
        action: Some(route::Action::Route(action)),
        ..Default::default()
    }
}

fn catch_all() -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
        ..Default::default()
    }
}

fn route_match(m: &HttpMatchRequest) -> RouteMatch {
    let path = match m.uri.as_ref().and_then(StringMatch::form) {
        Some(MatchForm::Exact(p)) => route_match::PathSpecifier::Path(p.into()),
        Some(MatchForm::Prefix(p)) => route_match::PathSpecifier::Prefix(p.into()),
        Some(MatchForm::Regex(r)) => route_match::PathSpecifier::SafeRegex(regex(r)),
        None => route_match::PathSpecifier::Prefix("/".into()),
    };
    let headers = m
        .headers
        .iter()
        .filter_map(|(name, sm)| {
            Some(HeaderMatcher {
                name: name.clone(),
                header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                    string_matcher_of(sm)?,
                )),
                ..Default::default()
            })
        })
        .collect();
    RouteMatch {
        path_specifier: Some(path),
        headers,
        ..Default::default()
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

fn route_action(http: &HttpRoute, scope: &Scope) -> Option<RouteAction> {
    let specifier = match http.route.as_slice() {
        [] => return None,
        [only] => {
            route_action::ClusterSpecifier::Cluster(destination_cluster(&only.destination, scope))
        }
        many => route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many
                .iter()
                .map(|d| weighted_cluster::ClusterWeight {
                    name: destination_cluster(&d.destination, scope),
                    weight: Some(UInt32Value {
                        value: u32::try_from(d.weight.unwrap_or(0)).unwrap_or(0),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    };
    Some(RouteAction {
        cluster_specifier: Some(specifier),
        ..Default::default()
    })
}

/// The outbound cluster a destination names. The port is the destination's,
/// else the service's only port, else the port the request came in on.
fn destination_cluster(d: &Destination, scope: &Scope) -> String {
    let fqdn = scope.registry.qualify(&d.host, scope.namespace);
    let service = scope.registry.service(&d.host, scope.namespace);
    let port = match (&d.port, service) {
        (Some(p), _) => u16::try_from(p.number).unwrap_or(0),
        (None, Some(s)) if s.ports.len() == 1 => s.ports[0].port,
        _ => scope.port,
    };
    cluster_name("outbound", port, d.subset.as_deref().unwrap_or(""), &fqdn)
}
