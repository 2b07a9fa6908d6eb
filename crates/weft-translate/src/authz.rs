//! AuthorizationPolicy → Envoy's RBAC HTTP filters, as istiod builds them:
//! the policies that select a proxy (its namespace's, and the root
//! namespace's, each without a selector or with one that picks the
//! workload) become one DENY filter and one ALLOW filter, in that order,
//! at the front of every HTTP connection manager the proxy serves
//! inbound (a sidecar's `virtualInbound`, every gateway listener).
//! CUSTOM policies go to their provider (`ext_authz.rs`), in front of
//! both; those Weft cannot ask deny (fail closed, reported). AUDIT
//! policies are an RBAC filter with action LOG, in front: they change
//! nothing but mark what they match (in the access log).
//! TCP chains of the same listeners get network RBAC filters, with
//! istiod's TCP rules (HTTP-only ALLOW rules never match; DENY rules drop
//! their HTTP conditions).
//!
//! Each rule is one Envoy policy (`ns[NS]-policy[NAME]-rule[I]`): any of
//! its `from` sources (principals, AND of their fields) and any of its
//! `to` operations (permissions), with every `when` condition ANDed into
//! both sides where it belongs. Identities (principals, namespaces) come
//! from the peer's mTLS certificate (a plaintext peer has none, so such
//! conditions do not match it, as in Istio); request principals and
//! `request.auth.*` from the JWT the JWT filter verified.

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, Listener};
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, rbac, Permission, Policy, Principal, Rbac as Rules,
};
use envoy_types::pb::envoy::config::route::v3::{header_matcher, HeaderMatcher};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpFilter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    metadata_matcher, string_matcher, value_matcher, ListMatcher, MetadataMatcher, PathMatcher,
    RegexMatcher, StringMatcher, ValueMatcher,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;
use weft_config::security::authorization::{Condition, Operation, Rule, Source};
use weft_registry::Workload;

use crate::attach::Targets;
use crate::Inputs;

pub(crate) const RBAC: &str = "envoy.filters.http.rbac";
const NETWORK_RBAC: &str = "envoy.filters.network.rbac";
const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";

/// Puts the proxy's RBAC filters at the front of the HTTP connection
/// managers of `listeners`, and network RBAC filters in front of their TCP
/// proxies; problems with policies go to `problems`.
pub(crate) fn apply_to(
    inputs: &Inputs,
    proxy: &Workload,
    listeners: &mut [&mut Listener],
    problems: &mut Vec<String>,
) {
    let http = rules(inputs, proxy, false, problems);
    let custom = crate::ext_authz::custom_filters(inputs, proxy);
    if http.is_empty() && custom.is_empty() {
        return;
    }
    let tcp = rules(inputs, proxy, true, &mut Vec::new());
    let http_filters: Vec<HttpFilter> = custom
        .into_iter()
        .chain(http.into_iter().map(|rules| HttpFilter {
            name: RBAC.into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(Rbac {
                rules: Some(rules),
                ..Default::default()
            }))),
            ..Default::default()
        }))
        .collect();
    let tcp_filters: Vec<Filter> = tcp
        .into_iter()
        .map(|rules| Filter {
            name: NETWORK_RBAC.into(),
            config_type: Some(filter::ConfigType::TypedConfig(pack_any(NetworkRbac {
                rules: Some(rules),
                stat_prefix: "tcp.".into(),
                ..Default::default()
            }))),
        })
        .collect();
    for chain in listeners
        .iter_mut()
        .flat_map(|l| l.filter_chains.iter_mut())
    {
        let is_tcp = chain.filters.iter().any(|f| {
            matches!(&f.config_type, Some(filter::ConfigType::TypedConfig(any)) if any.type_url.ends_with(".TcpProxy"))
        });
        if is_tcp {
            let mut all = tcp_filters.clone();
            all.append(&mut chain.filters);
            chain.filters = all;
            continue;
        }
        crate::envoy::prepend_http_filters(chain, &http_filters);
    }
}

/// The AUDIT rules, the DENY rules, then the ALLOW rules, of the policies selecting
/// `proxy` (none when no policy does). For TCP, as istiod does it: an
/// ALLOW rule that needs HTTP never matches (it is left out), a DENY
/// rule loses its HTTP conditions (it denies more, never less).
fn rules(inputs: &Inputs, proxy: &Workload, tcp: bool, problems: &mut Vec<String>) -> Vec<Rules> {
    let mut deny = Rules {
        action: rbac::Action::Deny as i32,
        ..Default::default()
    };
    let mut allow = Rules {
        action: rbac::Action::Allow as i32,
        ..Default::default()
    };
    let mut audit = Rules {
        action: rbac::Action::Log as i32,
        ..Default::default()
    };
    let (mut any_deny, mut any_allow, mut any_audit) = (false, false, false);
    let chosen = crate::ext_authz::chosen(inputs, proxy);
    let td = crate::mtls::trust_domain(inputs.config);
    for r in inputs.config {
        let Some(ap) = r.as_authorization_policy() else {
            continue;
        };
        if !Targets::authorization(r.namespace(), ap).attach(proxy) {
            continue;
        }
        let who = format!("AuthorizationPolicy {}/{}", r.namespace(), r.meta.name);
        let (into, denying) = match ap.action.as_deref().unwrap_or("ALLOW") {
            "ALLOW" => {
                any_allow = true;
                (&mut allow, false)
            }
            "DENY" => {
                any_deny = true;
                (&mut deny, true)
            }
            "CUSTOM" => {
                let name = ap
                    .provider
                    .as_ref()
                    .map(|p| p.name.clone())
                    .unwrap_or_default();
                let asked = chosen.as_deref() == Some(name.as_str());
                match crate::ext_authz::http_provider(inputs, &name) {
                    // Asked by the ext_authz filter (HTTP); TCP cannot ask.
                    Ok(_) if asked && !tcp => continue,
                    Ok(_) if asked => problems.push(format!(
                        "{who}: CUSTOM on TCP traffic is not supported yet; its rules deny TCP"
                    )),
                    Ok(_) => problems.push(format!(
                        "{who}: provider {name:?} is not the one this workload asks ({:?}; one per workload, as in Istio); its rules deny",
                        chosen.as_deref().unwrap_or("")
                    )),
                    Err(e) => problems.push(format!("{who}: {e}; its rules deny")),
                }
                any_deny = true;
                (&mut deny, true)
            }
            // AUDIT only marks what it matches (the access log says so).
            "AUDIT" => {
                any_audit = true;
                (&mut audit, false)
            }
            _ => continue,
        };
        for (i, rule) in ap.rules.iter().enumerate() {
            let rule = match (tcp, needs_http(rule)) {
                (true, true) if !denying => continue,
                (true, true) => without_http(rule),
                _ => rule.clone(),
            };
            let name = format!("ns[{}]-policy[{}]-rule[{i}]", r.namespace(), r.meta.name);
            into.policies.insert(name, policy(&rule, &td));
        }
    }
    let mut out = Vec::new();
    if any_audit {
        out.push(audit);
    }
    if any_deny {
        out.push(deny);
    }
    if any_allow {
        out.push(allow);
    }
    out
}

fn is_http_key(key: &str) -> bool {
    key.starts_with("request.")
}

/// Whether a rule asks about HTTP (hosts, methods, paths, request
/// principals, request headers or claims).
fn needs_http(rule: &Rule) -> bool {
    rule.to.iter().any(|t| {
        let o = &t.operation;
        [
            &o.hosts,
            &o.not_hosts,
            &o.methods,
            &o.not_methods,
            &o.paths,
            &o.not_paths,
        ]
        .iter()
        .any(|v| !v.is_empty())
    }) || rule.from.iter().any(|f| {
        !f.source.request_principals.is_empty() || !f.source.not_request_principals.is_empty()
    }) || rule.when.iter().any(|c| is_http_key(&c.key))
}

fn without_http(rule: &Rule) -> Rule {
    let mut r = rule.clone();
    for t in &mut r.to {
        let o = &mut t.operation;
        for v in [
            &mut o.hosts,
            &mut o.not_hosts,
            &mut o.methods,
            &mut o.not_methods,
            &mut o.paths,
            &mut o.not_paths,
        ] {
            v.clear();
        }
    }
    for f in &mut r.from {
        f.source.request_principals.clear();
        f.source.not_request_principals.clear();
    }
    r.when.retain(|c| !is_http_key(&c.key));
    r
}

/// One rule as an Envoy policy; `td` is the mesh's trust domain (for
/// `serviceAccounts`).
pub(crate) fn policy(rule: &Rule, td: &str) -> Policy {
    let (who, what): (Vec<&Condition>, Vec<&Condition>) =
        rule.when.iter().partition(|c| is_principal_key(&c.key));
    let mut principals: Vec<Principal> = if rule.from.is_empty() {
        vec![any_principal()]
    } else {
        rule.from.iter().map(|f| source(&f.source, td)).collect()
    };
    let mut permissions: Vec<Permission> = if rule.to.is_empty() {
        vec![any_permission()]
    } else {
        rule.to.iter().map(|t| operation(&t.operation)).collect()
    };
    if !who.is_empty() {
        let extra: Vec<Principal> = who.iter().map(|c| principal_condition(c)).collect();
        principals = principals
            .into_iter()
            .map(|p| and_ids(std::iter::once(p).chain(extra.iter().cloned()).collect()))
            .collect();
    }
    if !what.is_empty() {
        let extra: Vec<Permission> = what.iter().map(|c| permission_condition(c)).collect();
        permissions = permissions
            .into_iter()
            .map(|p| and_rules(std::iter::once(p).chain(extra.iter().cloned()).collect()))
            .collect();
    }
    Policy {
        permissions,
        principals,
        ..Default::default()
    }
}

// --- sources (principals) ---

fn source(s: &Source, td: &str) -> Principal {
    let mut all = Vec::new();
    let mut field = |values: &[String], not: &[String], one: &dyn Fn(&str) -> Principal| {
        if !values.is_empty() {
            all.push(or_ids(values.iter().map(|v| one(v)).collect()));
        }
        if !not.is_empty() {
            all.push(not_id(or_ids(not.iter().map(|v| one(v)).collect())));
        }
    };
    field(&s.principals, &s.not_principals, &|v| authenticated(v));
    field(&s.namespaces, &s.not_namespaces, &|v| namespace(v));
    field(&s.service_accounts, &s.not_service_accounts, &|v| {
        let (ns, sa) = v.split_once('/').unwrap_or(("default", v));
        authenticated(&format!("{td}/ns/{ns}/sa/{sa}"))
    });
    field(&s.ip_blocks, &s.not_ip_blocks, &|v| {
        id(principal::Identifier::DirectRemoteIp(cidr(v)))
    });
    field(&s.remote_ip_blocks, &s.not_remote_ip_blocks, &|v| {
        id(principal::Identifier::RemoteIp(cidr(v)))
    });
    field(&s.request_principals, &s.not_request_principals, &|v| {
        jwt_claim("request.auth.principal", v)
    });
    field(&s.trust_domains, &s.not_trust_domains, &|v| {
        authenticated(&format!("{v}/*"))
    });
    and_ids(all)
}

/// A peer identity as Istio writes it: `td/ns/x/sa/y` (with `*` at
/// either end, or alone for any identity).
fn authenticated(v: &str) -> Principal {
    let name = match v {
        "*" => string(MatchPattern::SafeRegex(regex(".+"))),
        v => star_match(&format!("spiffe://{v}"), v),
    };
    id(principal::Identifier::Authenticated(
        principal::Authenticated {
            principal_name: Some(name),
        },
    ))
}

fn namespace(ns: &str) -> Principal {
    let name = match ns {
        "*" => string(MatchPattern::SafeRegex(regex(".+"))),
        ns => string(MatchPattern::SafeRegex(regex(&format!(
            ".*/ns/{}/.*",
            regex_escape(ns)
        )))),
    };
    id(principal::Identifier::Authenticated(
        principal::Authenticated {
            principal_name: Some(name),
        },
    ))
}

/// `prefix*`, `*suffix`, `*`, or exact, of `full` (the value with what
/// Istio puts before it) where `v` is the value as written.
fn star_match(full: &str, v: &str) -> StringMatcher {
    if v == "*" {
        string(MatchPattern::SafeRegex(regex(".+")))
    } else if let Some(suffix) = v.strip_prefix('*') {
        string(MatchPattern::Suffix(suffix.into()))
    } else if v.ends_with('*') {
        string(MatchPattern::Prefix(full[..full.len() - 1].into()))
    } else {
        string(MatchPattern::Exact(full.into()))
    }
}

// --- operations (permissions) ---

fn operation(o: &Operation) -> Permission {
    let mut all = Vec::new();
    let mut field = |values: &[String], not: &[String], one: &dyn Fn(&str) -> Permission| {
        if !values.is_empty() {
            all.push(or_rules(values.iter().map(|v| one(v)).collect()));
        }
        if !not.is_empty() {
            all.push(not_rule(or_rules(not.iter().map(|v| one(v)).collect())));
        }
    };
    field(&o.hosts, &o.not_hosts, &host);
    field(&o.methods, &o.not_methods, &|v| {
        rule(permission::Rule::Header(header(":method", exact(v))))
    });
    field(&o.paths, &o.not_paths, &path);
    field(&o.ports, &o.not_ports, &port);
    and_rules(all)
}

/// A host as Istio matches `:authority`: case-insensitive, `*` at either
/// end a wildcard.
fn host(v: &str) -> Permission {
    let pattern = if v == "*" {
        MatchPattern::SafeRegex(regex(".+"))
    } else if let Some(suffix) = v.strip_prefix('*') {
        MatchPattern::Suffix(suffix.into())
    } else if let Some(prefix) = v.strip_suffix('*') {
        MatchPattern::Prefix(prefix.into())
    } else {
        MatchPattern::Exact(v.into())
    };
    let mut m = string(pattern);
    m.ignore_case = true;
    rule(permission::Rule::Header(header(":authority", m)))
}

fn path(v: &str) -> Permission {
    let m = if v == "*" {
        string(MatchPattern::SafeRegex(regex(".*")))
    } else if let Some(suffix) = v.strip_prefix('*') {
        string(MatchPattern::Suffix(suffix.into()))
    } else if let Some(prefix) = v.strip_suffix('*') {
        string(MatchPattern::Prefix(prefix.into()))
    } else {
        exact(v)
    };
    rule(permission::Rule::UrlPath(PathMatcher {
        rule: Some(envoy_types::pb::envoy::r#type::matcher::v3::path_matcher::Rule::Path(m)),
    }))
}

fn port(v: &str) -> Permission {
    match v.parse::<u32>() {
        Ok(p) => rule(permission::Rule::DestinationPort(p)),
        // Validation refuses these; never match rather than every port.
        Err(_) => not_rule(any_permission()),
    }
}

// --- `when` conditions ---

/// Keys about who is asking (principals side); the rest are about what
/// is asked (permissions side), as istiod sorts them.
fn is_principal_key(key: &str) -> bool {
    key.starts_with("source.")
        || key.starts_with("remote.")
        || key.starts_with("request.auth.")
        || key.starts_with("request.headers[")
}

fn principal_condition(c: &Condition) -> Principal {
    let one = |v: &str| -> Principal {
        let key = c.key.as_str();
        if let Some(name) = key
            .strip_prefix("request.headers[")
            .and_then(|k| k.strip_suffix(']'))
        {
            return id(principal::Identifier::Header(header(name, star_value(v))));
        }
        match key {
            "source.ip" => id(principal::Identifier::DirectRemoteIp(cidr(v))),
            "remote.ip" => id(principal::Identifier::RemoteIp(cidr(v))),
            "source.namespace" => namespace(v),
            "source.principal" => authenticated(v),
            other => jwt_claim(other, v),
        }
    };
    condition(c, one, or_ids, not_id, and_ids)
}

fn permission_condition(c: &Condition) -> Permission {
    let one = |v: &str| -> Permission {
        match c.key.as_str() {
            "destination.ip" => rule(permission::Rule::DestinationIp(cidr(v))),
            "destination.port" => port(v),
            "connection.sni" => rule(permission::Rule::RequestedServerName(star_value(v))),
            // A key Weft cannot evaluate never matches.
            _ => not_rule(any_permission()),
        }
    };
    condition(c, one, or_rules, not_rule, and_rules)
}

/// `values` (any) and `notValues` (none) of one condition.
fn condition<T>(
    c: &Condition,
    one: impl Fn(&str) -> T,
    or: fn(Vec<T>) -> T,
    not: fn(T) -> T,
    and: fn(Vec<T>) -> T,
) -> T {
    let mut all = Vec::new();
    if !c.values.is_empty() {
        all.push(or(c.values.iter().map(|v| one(v)).collect()));
    }
    if !c.not_values.is_empty() {
        all.push(not(or(c.not_values.iter().map(|v| one(v)).collect())));
    }
    and(all)
}

/// A condition on the verified JWT (`request.auth.*`), as istiod writes
/// it: metadata of the JWT filter, under its `payload`. The principal is
/// `iss/sub` (split at the last `/`), both parts matched; a claim matches
/// as a string or as an element of a list.
fn jwt_claim(key: &str, v: &str) -> Principal {
    match key {
        "request.auth.principal" => request_principal(v),
        "request.auth.audiences" => claim(&["aud"], v),
        "request.auth.presenter" => claim(&["azp"], v),
        other => match claim_path(other) {
            Some(path) => {
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                claim(&path, v)
            }
            // Validation refuses other keys; never match rather than all.
            None => not_id(any_principal()),
        },
    }
}

/// `request.auth.claims[a][b]` → ["a", "b"].
fn claim_path(key: &str) -> Option<Vec<String>> {
    let rest = key.strip_prefix("request.auth.claims")?;
    let parts: Vec<String> = rest
        .strip_prefix('[')?
        .strip_suffix(']')?
        .split("][")
        .map(String::from)
        .collect();
    (!parts.iter().any(String::is_empty)).then_some(parts)
}

fn request_principal(v: &str) -> Principal {
    if v == "*" {
        return and_ids(vec![
            metadata(&["iss"], star_value("*"), false),
            metadata(&["sub"], star_value("*"), false),
        ]);
    }
    match v.rsplit_once('/') {
        Some((iss, sub)) => and_ids(vec![
            metadata(&["iss"], star_value(iss), false),
            metadata(&["sub"], star_value(sub), false),
        ]),
        None => metadata(&["iss"], star_value(v), false),
    }
}

/// A claim equal to `v`, or a list claim holding it.
fn claim(path: &[&str], v: &str) -> Principal {
    or_ids(vec![
        metadata(path, star_value(v), true),
        metadata(path, star_value(v), false),
    ])
}

/// (`metadata` is what istiod writes; Envoy deprecated it for
/// `sourced_metadata`.)
#[allow(deprecated)]
fn metadata(path: &[&str], value: StringMatcher, in_list: bool) -> Principal {
    let string = ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::StringMatch(value)),
    };
    let value = if in_list {
        ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(ListMatcher {
                match_pattern: Some(
                    envoy_types::pb::envoy::r#type::matcher::v3::list_matcher::MatchPattern::OneOf(
                        Box::new(string),
                    ),
                ),
            }))),
        }
    } else {
        string
    };
    let segments = std::iter::once("payload").chain(path.iter().copied());
    id(principal::Identifier::Metadata(MetadataMatcher {
        filter: JWT_FILTER.into(),
        path: segments
            .map(|k| metadata_matcher::PathSegment {
                segment: Some(metadata_matcher::path_segment::Segment::Key(k.into())),
            })
            .collect(),
        value: Some(value),
        ..Default::default()
    }))
}

fn star_value(v: &str) -> StringMatcher {
    if v == "*" {
        string(MatchPattern::SafeRegex(regex(".+")))
    } else if let Some(suffix) = v.strip_prefix('*') {
        string(MatchPattern::Suffix(suffix.into()))
    } else if let Some(prefix) = v.strip_suffix('*') {
        string(MatchPattern::Prefix(prefix.into()))
    } else {
        exact(v)
    }
}

// --- building blocks ---

use string_matcher::MatchPattern;

fn string(p: MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ..Default::default()
    }
}

fn exact(v: &str) -> StringMatcher {
    string(MatchPattern::Exact(v.into()))
}

fn header(name: &str, m: StringMatcher) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(m)),
        ..Default::default()
    }
}

fn cidr(v: &str) -> CidrRange {
    let (ip, len) = match v.split_once('/') {
        Some((ip, len)) => (ip, len.parse().ok()),
        None => (v, None),
    };
    let full = if ip.contains(':') { 128 } else { 32 };
    CidrRange {
        address_prefix: ip.into(),
        prefix_len: Some(UInt32Value {
            value: len.unwrap_or(full),
        }),
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn id(i: principal::Identifier) -> Principal {
    Principal {
        identifier: Some(i),
    }
}

/// A network RBAC filter that closes every connection, as policy `name`
/// (plaintext on a STRICT mTLS port).
pub(crate) fn deny_connections(name: &str) -> Filter {
    let rules = Rules {
        action: rbac::Action::Deny as i32,
        policies: [(
            name.to_string(),
            Policy {
                permissions: vec![any_permission()],
                principals: vec![any_principal()],
                ..Default::default()
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    Filter {
        name: NETWORK_RBAC.into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(NetworkRbac {
            rules: Some(rules),
            stat_prefix: "tcp.".into(),
            ..Default::default()
        }))),
    }
}

fn any_principal() -> Principal {
    id(principal::Identifier::Any(true))
}

fn or_ids(ids: Vec<Principal>) -> Principal {
    id(principal::Identifier::OrIds(principal::Set { ids }))
}

fn and_ids(ids: Vec<Principal>) -> Principal {
    if ids.is_empty() {
        return any_principal();
    }
    id(principal::Identifier::AndIds(principal::Set { ids }))
}

fn not_id(p: Principal) -> Principal {
    id(principal::Identifier::NotId(Box::new(p)))
}

fn rule(r: permission::Rule) -> Permission {
    Permission { rule: Some(r) }
}

fn any_permission() -> Permission {
    rule(permission::Rule::Any(true))
}

fn or_rules(rules: Vec<Permission>) -> Permission {
    rule(permission::Rule::OrRules(permission::Set { rules }))
}

fn and_rules(rules: Vec<Permission>) -> Permission {
    if rules.is_empty() {
        return any_permission();
    }
    rule(permission::Rule::AndRules(permission::Set { rules }))
}

fn not_rule(p: Permission) -> Permission {
    rule(permission::Rule::NotRule(Box::new(p)))
}

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    use prost::Message;

    use super::*;
    use crate::tests::translated_with;
    use crate::ProxyResources;

    /// The HTTP filter names of every connection manager of a listener.
    fn filters(out: &ProxyResources, listener: &str) -> Vec<Vec<String>> {
        let l = out.listeners.iter().find(|l| l.name == listener).unwrap();
        l.filter_chains
            .iter()
            .flat_map(|c| &c.filters)
            .filter_map(|f| match &f.config_type {
                Some(ConfigType::TypedConfig(any)) if any.type_url.ends_with("Manager") => {
                    let hcm = HttpConnectionManager::decode(any.value.as_slice()).ok()?;
                    Some(hcm.http_filters.iter().map(|h| h.name.clone()).collect())
                }
                _ => None,
            })
            .collect()
    }

    fn rules(out: &ProxyResources, listener: &str, index: usize) -> Rules {
        let l = out.listeners.iter().find(|l| l.name == listener).unwrap();
        for f in l.filter_chains.iter().flat_map(|c| &c.filters) {
            let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
                continue;
            };
            let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
                continue;
            };
            if let Some(http_filter::ConfigType::TypedConfig(rbac)) =
                &hcm.http_filters[index].config_type
            {
                return Rbac::decode(rbac.value.as_slice()).unwrap().rules.unwrap();
            }
        }
        panic!("no RBAC filter")
    }

    const POLICIES: &str = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: default}
spec:
  selector: {matchLabels: {version: v1}}
  rules:
  - from: [{source: {principals: ['cluster.local/ns/default/sa/curl'], notIpBlocks: ['198.18.0.0/16']}}]
    to: [{operation: {methods: [GET], paths: ['/headers*']}}]
    when: [{key: 'request.headers[x-token]', values: [admin]}, {key: destination.port, values: ['9080']}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all-post, namespace: istio-system}
spec:
  action: DENY
  rules: [{to: [{operation: {methods: [POST]}}]}]
";

    #[test]
    fn policies_become_deny_then_allow_filters_on_inbound_only() {
        let v1 = translated_with(POLICIES, 0);
        assert!(v1.problems.is_empty(), "{:?}", v1.problems);
        for chain in filters(&v1, "virtualInbound") {
            assert_eq!(&chain[..2], [RBAC, RBAC], "{chain:?}");
        }
        assert!(
            filters(&v1, "0.0.0.0_9080")
                .iter()
                .all(|c| !c.contains(&RBAC.to_string())),
            "outbound is not authorized"
        );
        let deny = rules(&v1, "virtualInbound", 0);
        assert_eq!(deny.action, rbac::Action::Deny as i32);
        assert!(deny
            .policies
            .contains_key("ns[istio-system]-policy[deny-all-post]-rule[0]"));
        let allow = rules(&v1, "virtualInbound", 1);
        let p = &allow.policies["ns[default]-policy[allow-get]-rule[0]"];
        let text = format!("{p:?}");
        for part in [
            "spiffe://cluster.local/ns/default/sa/curl",
            "NotId",
            "198.18.0.0",
            ":method",
            "Prefix(\"/headers\")",
            "x-token",
            "DestinationPort(9080)",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        // reviews-v2 is not selected by allow-get: only the mesh-wide DENY.
        let v2 = translated_with(POLICIES, 1);
        assert_eq!(
            filters(&v2, "virtualInbound")[0][..2],
            [RBAC.to_string(), "envoy.filters.http.fault".to_string()]
        );
    }

    #[test]
    fn tcp_chains_get_network_rbac_with_istios_tcp_rules() {
        let v1 = translated_with(POLICIES, 0);
        let inbound = v1
            .listeners
            .iter()
            .find(|l| l.name == "virtualInbound")
            .unwrap();
        let passthrough = inbound
            .filter_chains
            .iter()
            .find(|c| c.name == "InboundPassthroughCluster")
            .unwrap();
        let network: Vec<NetworkRbac> = passthrough
            .filters
            .iter()
            .filter_map(|f| match &f.config_type {
                Some(ConfigType::TypedConfig(any))
                    if any.type_url.ends_with(".network.rbac.v3.RBAC") =>
                {
                    NetworkRbac::decode(any.value.as_slice()).ok()
                }
                _ => None,
            })
            .collect();
        assert_eq!(network.len(), 2, "DENY and ALLOW in front of tcp_proxy");
        let deny = network[0].rules.as_ref().unwrap();
        let text = format!("{deny:?}");
        assert!(
            !text.contains(":method"),
            "DENY drops its HTTP conditions: {text}"
        );
        let allow = network[1].rules.as_ref().unwrap();
        assert!(
            allow.policies.is_empty(),
            "an HTTP-only ALLOW rule never matches TCP"
        );
    }

    #[test]
    fn an_empty_policy_allows_nothing_and_gateways_are_authorized_too() {
        let config = format!(
            "{}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-nothing, namespace: istio-system}}\nspec: {{}}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: ext, namespace: istio-system}}\nspec:\n  action: CUSTOM\n  provider: {{name: opa}}\n  rules: [{{}}]\n",
            crate::tests::CONFIG
        );
        let gw = translated_with(&config, 2);
        let allow = rules(&gw, "0.0.0.0_8080", 1);
        assert_eq!(allow.action, rbac::Action::Allow as i32);
        assert!(allow.policies.is_empty(), "allow nothing");
        let deny = rules(&gw, "0.0.0.0_8080", 0);
        assert_eq!(
            deny.policies.len(),
            1,
            "CUSTOM without its provider fails closed"
        );
        assert!(
            gw.problems
                .iter()
                .any(|p| p.contains("\"opa\"") && p.contains("deny")),
            "{:?}",
            gw.problems
        );
    }

    #[test]
    fn a_target_ref_policy_binds_only_the_gateway_api_gateway_it_names() {
        let config = format!(
            "{}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-nothing, namespace: default}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]\n",
            crate::tests::CONFIG
        );
        let loaded = weft_config::load_str(&config, "t.yaml");
        let mut registry = crate::tests::registry();
        let has_rbac = |registry: &weft_registry::Registry, proxy: usize| {
            let inputs = crate::Inputs::new(&loaded.resources, registry);
            let out = crate::translate(&inputs, &registry.workloads[proxy]);
            out.listeners
                .iter()
                .flat_map(|l| filters(&out, &l.name))
                .any(|c| c.contains(&RBAC.to_string()))
        };
        assert!(!has_rbac(&registry, 0), "a sidecar ignores it");
        assert!(!has_rbac(&registry, 2), "so does an Istio gateway");
        registry.workloads[2]
            .labels
            .insert(crate::attach::GATEWAY_NAME_LABEL.into(), "gw".into());
        assert!(has_rbac(&registry, 2), "the gateway it names takes it");
    }

    #[test]
    fn audit_policies_only_log_and_come_first() {
        let config = format!(
            "{}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: audit, namespace: default}}\nspec:\n  action: AUDIT\n  rules: [{{to: [{{operation: {{methods: [GET]}}}}]}}]\n",
            crate::tests::CONFIG
        );
        let out = translated_with(&config, 0);
        let first = rules(&out, "virtualInbound", 0);
        assert_eq!(first.action, rbac::Action::Log as i32);
        assert!(first
            .policies
            .contains_key("ns[default]-policy[audit]-rule[0]"));
    }

    #[test]
    fn custom_policies_ask_their_provider_first() {
        let mesh = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |-\n    extensionProviders:\n    - name: ext\n      envoyExtAuthzHttp: {service: ext-authz.default.svc.cluster.local, port: \"8000\", includeRequestHeadersInCheck: [x-ext-authz]}\n";
        let config = format!(
            "{}---\n{mesh}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: ext, namespace: default}}\nspec:\n  action: CUSTOM\n  provider: {{name: ext}}\n  rules: [{{to: [{{operation: {{paths: [/headers]}}}}]}}]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: deny-post, namespace: default}}\nspec:\n  action: DENY\n  rules: [{{to: [{{operation: {{methods: [POST]}}}}]}}]\n",
            crate::tests::CONFIG
        );
        let out = translated_with(&config, 0);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let names = &filters(&out, "virtualInbound")[0];
        assert_eq!(
            &names[..3],
            [
                "envoy.filters.http.rbac",
                "envoy.filters.http.ext_authz",
                "envoy.filters.http.rbac"
            ],
            "shadow RBAC, ext_authz, then DENY: {names:?}"
        );
        // A second provider is not asked: its policy's rules deny.
        let second = config.replace("    - name: ext\n", "    - name: ext2\n      envoyExtAuthzHttp: {service: other.default.svc.cluster.local, port: 80}\n    - name: ext\n")
            + "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: other, namespace: default}\nspec:\n  action: CUSTOM\n  provider: {name: ext2}\n  rules: [{}]\n";
        let out = translated_with(&second, 0);
        assert!(
            out.problems
                .iter()
                .any(|p| p.contains("\"ext2\"") && p.contains("deny")),
            "{:?}",
            out.problems
        );
        let deny = rules(&out, "virtualInbound", 2);
        assert!(
            deny.policies.keys().any(|k| k.contains("policy[other]")),
            "{deny:?}"
        );
    }
}
