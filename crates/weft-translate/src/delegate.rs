//! Delegate VirtualServices, as Istio merges them: a root route with
//! `delegate` is replaced, in place, by the delegate's routes, each match
//! being the root's match and the delegate's together. A pair that
//! contradicts itself (the delegate's path outside the root's prefix, two
//! different methods, one header with two values) yields no route, as in
//! Istio; so does a delegate that does not exist.

use weft_config::networking::common::MatchForm;
use weft_config::networking::{HttpMatchRequest, HttpRoute, StringMatch, VirtualService};
use weft_config::Resource;

/// The delegate VirtualService a route names, with its namespace.
pub(crate) fn find<'a>(
    config: &'a [Resource],
    route: &HttpRoute,
    root_namespace: &str,
) -> Option<(&'a VirtualService, &'a str)> {
    let d = route.delegate.as_ref()?;
    let ns = d.namespace.as_deref().unwrap_or(root_namespace);
    config
        .iter()
        .filter(|r| r.meta.name == d.name && r.namespace() == ns)
        .find_map(|r| Some((r.as_virtual_service()?, r.namespace())))
}

/// The matches of a delegate route under its root route: every pair that
/// agrees, merged. An empty list means "match everything".
pub(crate) fn merged_matches(
    root: &[HttpMatchRequest],
    delegate: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    match (root.is_empty(), delegate.is_empty()) {
        (true, _) => Some(delegate.to_vec()),
        (false, true) => Some(root.to_vec()),
        (false, false) => {
            let merged: Vec<_> = root
                .iter()
                .flat_map(|r| delegate.iter().filter_map(move |d| merge(r, d)))
                .collect();
            (!merged.is_empty()).then_some(merged)
        }
    }
}

fn merge(root: &HttpMatchRequest, d: &HttpMatchRequest) -> Option<HttpMatchRequest> {
    let mut m = d.clone();
    m.uri = uri(root.uri.as_ref(), d.uri.as_ref())?;
    m.scheme = same(&root.scheme, &d.scheme)?;
    m.method = same(&root.method, &d.method)?;
    m.authority = same(&root.authority, &d.authority)?;
    for (map, root_map) in [
        (&mut m.headers, &root.headers),
        (&mut m.query_params, &root.query_params),
        (&mut m.without_headers, &root.without_headers),
    ] {
        for (k, v) in root_map {
            match map.get(k) {
                Some(theirs) if theirs != v => return None,
                _ => drop(map.insert(k.clone(), v.clone())),
            }
        }
    }
    // Where the request comes from is the root's to say.
    m.port = root.port.or(d.port);
    if m.source_labels.is_empty() {
        m.source_labels = root.source_labels.clone();
    }
    if m.gateways.is_empty() {
        m.gateways = root.gateways.clone();
    }
    m.source_namespace = root.source_namespace.clone().or(m.source_namespace);
    m.ignore_uri_case = root.ignore_uri_case.or(d.ignore_uri_case);
    Some(m)
}

/// Both set: they must be equal. One set: that one.
fn same(a: &Option<StringMatch>, b: &Option<StringMatch>) -> Option<Option<StringMatch>> {
    match (a, b) {
        (Some(x), Some(y)) if x != y => None,
        (Some(x), _) => Some(Some(x.clone())),
        (None, y) => Some(y.clone()),
    }
}

/// The delegate's path must lie within the root's prefix (or equal the
/// root's exact path); a root regex cannot be narrowed.
fn uri(root: Option<&StringMatch>, d: Option<&StringMatch>) -> Option<Option<StringMatch>> {
    let (Some(r), Some(dm)) = (root, d) else {
        return Some(root.or(d).cloned());
    };
    let inside = match (r.form()?, dm.form()?) {
        (MatchForm::Prefix(p), MatchForm::Prefix(q) | MatchForm::Exact(q)) => q.starts_with(p),
        (MatchForm::Exact(p), MatchForm::Exact(q)) => p == q,
        _ => false,
    };
    inside.then(|| Some(dm.clone()))
}
