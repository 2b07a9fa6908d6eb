//! Envoy's RBAC filters (`envoy.filters.http.rbac`, and the network one
//! for TCP), which istiod writes for AuthorizationPolicy: a policy matches a request when one of
//! its permissions (what is asked: method, authority, path, destination,
//! server name) and one of its principals (who asks: peer identity,
//! addresses, headers, JWT claims) match. ALLOW lets through only what
//! some policy matches; DENY stops what some policy matches; LOG only
//! reports. A stopped request gets 403 `RBAC: access denied`; a stopped
//! TCP connection is closed.
//!
//! The peer identity comes from the client's certificate (mesh mTLS), JWT
//! claims from the JWT filter (dynamic metadata `envoy.filters.http.jwt_authn`,
//! key `payload`); a request without them matches no principal that
//! needs them, as in Istio.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, rbac, Permission, Principal,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
use envoy_types::pb::envoy::r#type::matcher::v3::path_matcher;
use serde::Serialize;

use crate::compile::{string_match, HeaderMatch, RequestView, ValueMatch};

pub const NAME: &str = "envoy.filters.http.rbac";

#[derive(Debug, Serialize)]
pub struct RbacCfg {
    pub action: Action,
    /// (name, policy); None: the filter has no rules and passes all.
    pub policies: Option<Vec<(String, Policy)>>,
    /// Shadow rules: only recorded, never enforced. The name of the
    /// policy they match goes into the request's metadata under
    /// `<prefix>shadow_effective_policy_id` (Istio marks the requests
    /// CUSTOM policies send to external authorization this way).
    pub shadow: Option<Box<(String, RbacCfg)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Action {
    Allow,
    Deny,
    Log,
}

#[derive(Debug, Serialize)]
pub struct Policy {
    permissions: Vec<Perm>,
    principals: Vec<Who>,
}

#[derive(Debug, Serialize)]
enum Perm {
    Any,
    And(Vec<Perm>),
    Or(Vec<Perm>),
    Not(Box<Perm>),
    Header(HeaderMatch),
    UrlPath(ValueMatch),
    DestinationIp(Cidr),
    DestinationPort(u16),
    ServerName(ValueMatch),
}

#[derive(Debug, Serialize)]
enum Who {
    Any,
    And(Vec<Who>),
    Or(Vec<Who>),
    Not(Box<Who>),
    /// The peer's certificate identity (its URI SAN), when it has one.
    Authenticated(Option<ValueMatch>),
    DirectRemoteIp(Cidr),
    RemoteIp(Cidr),
    Header(HeaderMatch),
    /// Dynamic metadata: a verified JWT's claims.
    Metadata(MetaMatch),
}

/// A claim of the verified JWT (`path` under the payload) and what its
/// value must be; `invert` negates the whole match.
#[derive(Debug, Serialize)]
struct MetaMatch {
    path: Vec<String>,
    value: MetaValue,
    invert: bool,
}

#[derive(Debug, Serialize)]
enum MetaValue {
    /// A string value that matches.
    String(ValueMatch),
    /// A list with an element that matches.
    OneOf(ValueMatch),
    /// The value is there.
    Present,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Cidr {
    ip: IpAddr,
    len: u8,
}

impl Cidr {
    pub(crate) fn compile(c: &CidrRange) -> Result<Cidr, String> {
        let ip: IpAddr = c
            .address_prefix
            .parse()
            .map_err(|_| format!("{:?} is not an IP address", c.address_prefix))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = c.prefix_len.map_or(max, |l| l.value);
        if len > max {
            return Err(format!("prefix length {len} is too long"));
        }
        Ok(Cidr { ip, len: len as u8 })
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        fn bits(ip: IpAddr) -> (u128, u32) {
            match ip {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        }
        let ip = match (self.ip, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => ip,
        };
        let ((net, width), (addr, other)) = (bits(self.ip), bits(ip));
        if width != other {
            return false;
        }
        let shift = width - u32::from(self.len);
        self.len == 0 || (net >> shift) == (addr >> shift)
    }
}

pub(crate) fn compile(r: &Rbac) -> Result<RbacCfg, String> {
    let mut cfg = compile_rules(r.rules.as_ref())?;
    if let Some(shadow) = &r.shadow_rules {
        let key = format!("{}shadow_effective_policy_id", r.shadow_rules_stat_prefix);
        cfg.shadow = Some(Box::new((key, compile_rules(Some(shadow))?)));
    }
    Ok(cfg)
}

/// The network filter's (`envoy.filters.network.rbac`) rules, for TCP.
pub(crate) fn compile_network(
    r: &envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac,
) -> Result<RbacCfg, String> {
    compile_rules(r.rules.as_ref())
}

fn compile_rules(
    rules: Option<&envoy_types::pb::envoy::config::rbac::v3::Rbac>,
) -> Result<RbacCfg, String> {
    let Some(rules) = rules else {
        return Ok(RbacCfg {
            action: Action::Allow,
            policies: None,
            shadow: None,
        });
    };
    let action = match rbac::Action::try_from(rules.action) {
        Ok(rbac::Action::Allow) => Action::Allow,
        Ok(rbac::Action::Deny) => Action::Deny,
        Ok(rbac::Action::Log) => Action::Log,
        _ => return Err(format!("RBAC action {} is not supported", rules.action)),
    };
    let mut policies = Vec::new();
    for (name, p) in &rules.policies {
        if p.condition.is_some() || p.checked_condition.is_some() {
            return Err(format!(
                "RBAC policy {name:?}: CEL conditions are not supported"
            ));
        }
        let compiled = Policy {
            permissions: p.permissions.iter().map(perm).collect::<Result<_, _>>()?,
            principals: p.principals.iter().map(who).collect::<Result<_, _>>()?,
        };
        policies.push((name.clone(), compiled));
    }
    policies.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(RbacCfg {
        action,
        policies: Some(policies),
        shadow: None,
    })
}

fn perm(p: &Permission) -> Result<Perm, String> {
    use permission::Rule as R;
    Ok(match &p.rule {
        Some(R::Any(true)) => Perm::Any,
        Some(R::AndRules(s)) => Perm::And(s.rules.iter().map(perm).collect::<Result<_, _>>()?),
        Some(R::OrRules(s)) => Perm::Or(s.rules.iter().map(perm).collect::<Result<_, _>>()?),
        Some(R::NotRule(n)) => Perm::Not(Box::new(perm(n)?)),
        Some(R::Header(h)) => Perm::Header(crate::compile::compile_header(h)?),
        Some(R::UrlPath(m)) => match &m.rule {
            Some(path_matcher::Rule::Path(sm)) => Perm::UrlPath(string_match(sm)?),
            None => return Err("url_path needs a path matcher".into()),
        },
        Some(R::DestinationIp(c)) => Perm::DestinationIp(Cidr::compile(c)?),
        Some(R::DestinationPort(port)) => Perm::DestinationPort(
            u16::try_from(*port).map_err(|_| format!("destination_port {port} is out of range"))?,
        ),
        Some(R::RequestedServerName(sm)) => Perm::ServerName(string_match(sm)?),
        _ => return Err("an RBAC permission of this kind is not supported".into()),
    })
}

#[allow(deprecated)] // `metadata`: what istiod writes
fn who(p: &Principal) -> Result<Who, String> {
    use principal::Identifier as I;
    Ok(match &p.identifier {
        Some(I::Any(true)) => Who::Any,
        Some(I::AndIds(s)) => Who::And(s.ids.iter().map(who).collect::<Result<_, _>>()?),
        Some(I::OrIds(s)) => Who::Or(s.ids.iter().map(who).collect::<Result<_, _>>()?),
        Some(I::NotId(n)) => Who::Not(Box::new(who(n)?)),
        Some(I::Authenticated(a)) => {
            Who::Authenticated(a.principal_name.as_ref().map(string_match).transpose()?)
        }
        Some(I::DirectRemoteIp(c)) | Some(I::SourceIp(c)) => Who::DirectRemoteIp(Cidr::compile(c)?),
        Some(I::RemoteIp(c)) => Who::RemoteIp(Cidr::compile(c)?),
        Some(I::Header(h)) => Who::Header(crate::compile::compile_header(h)?),
        Some(I::Metadata(m)) => Who::Metadata(meta_match(m)?),
        Some(I::SourcedMetadata(s)) => Who::Metadata(meta_match(
            s.metadata_matcher
                .as_ref()
                .ok_or("sourced_metadata needs a metadata_matcher")?,
        )?),
        _ => return Err("an RBAC principal of this kind is not supported".into()),
    })
}

/// Metadata matchers over the JWT filter's payload, as istiod writes
/// them for `requestPrincipals` and `request.auth.*`.
fn meta_match(
    m: &envoy_types::pb::envoy::r#type::matcher::v3::MetadataMatcher,
) -> Result<MetaMatch, String> {
    use envoy_types::pb::envoy::r#type::matcher::v3::{
        list_matcher, metadata_matcher::path_segment::Segment, value_matcher::MatchPattern as V,
    };
    if m.filter != crate::filters::jwt::NAME {
        return Err(format!(
            "RBAC metadata of filter {:?} is not supported (only {})",
            m.filter,
            crate::filters::jwt::NAME
        ));
    }
    let mut path: Vec<String> = m
        .path
        .iter()
        .map(|s| match &s.segment {
            Some(Segment::Key(k)) => Ok(k.clone()),
            None => Err("an empty metadata path segment".to_string()),
        })
        .collect::<Result<_, _>>()?;
    if path.first().map(String::as_str) != Some("payload") {
        return Err("RBAC metadata paths start at the JWT payload (`payload`)".into());
    }
    path.remove(0);
    let string =
        |v: &envoy_types::pb::envoy::r#type::matcher::v3::ValueMatcher| match &v.match_pattern {
            Some(V::StringMatch(sm)) => string_match(sm),
            _ => Err("only string values are matched in JWT claims".to_string()),
        };
    let value = match m.value.as_ref().and_then(|v| v.match_pattern.as_ref()) {
        Some(V::StringMatch(sm)) => MetaValue::String(string_match(sm)?),
        Some(V::PresentMatch(true)) => MetaValue::Present,
        Some(V::ListMatch(l)) => match &l.match_pattern {
            Some(list_matcher::MatchPattern::OneOf(v)) => MetaValue::OneOf(string(v)?),
            None => return Err("a list matcher needs one_of".into()),
        },
        _ => return Err("a metadata value matcher of this kind is not supported".into()),
    };
    Ok(MetaMatch {
        path,
        value,
        invert: m.invert,
    })
}

impl MetaMatch {
    fn matches(&self, claims: Option<&serde_json::Value>) -> bool {
        let found = claims.and_then(|c| self.path.iter().try_fold(c, |v, k| v.get(k)));
        let hit = match (&self.value, found) {
            (_, None) => false,
            (MetaValue::Present, Some(_)) => true,
            (MetaValue::String(m), Some(v)) => v.as_str().is_some_and(|s| m.matches(s)),
            (MetaValue::OneOf(m), Some(v)) => v
                .as_array()
                .is_some_and(|l| l.iter().filter_map(|e| e.as_str()).any(|s| m.matches(s))),
        };
        hit != self.invert
    }
}

/// What one request (or, for TCP, one connection) offers the policies.
pub(crate) struct Subject<'a> {
    /// None for a TCP connection: HTTP conditions do not match it.
    pub request: Option<RequestView<'a>>,
    /// The connection's peer (`direct_remote_ip`, Istio's `ipBlocks`).
    pub peer: IpAddr,
    /// The client as the connection manager trusts it (`remote_ip`,
    /// Istio's `remoteIpBlocks`): the peer, or from `x-forwarded-for`.
    pub remote: IpAddr,
    pub destination: std::net::SocketAddr,
    pub server_name: Option<&'a str>,
    /// The peer's identity from its certificate (mTLS).
    pub principal: Option<&'a str>,
    /// The claims of the request's verified JWT.
    pub claims: Option<&'a serde_json::Value>,
}

impl Perm {
    fn matches(&self, s: &Subject) -> bool {
        match self {
            Perm::Any => true,
            Perm::And(all) => all.iter().all(|p| p.matches(s)),
            Perm::Or(any) => any.iter().any(|p| p.matches(s)),
            Perm::Not(p) => !p.matches(s),
            Perm::Header(h) => s.request.as_ref().is_some_and(|r| h.matches(r)),
            Perm::UrlPath(m) => s.request.as_ref().is_some_and(|r| m.matches(r.path)),
            Perm::DestinationIp(c) => c.contains(s.destination.ip()),
            Perm::DestinationPort(p) => s.destination.port() == *p,
            Perm::ServerName(m) => m.matches(s.server_name.unwrap_or("")),
        }
    }
}

impl Who {
    fn matches(&self, s: &Subject) -> bool {
        match self {
            Who::Any => true,
            Who::And(all) => all.iter().all(|w| w.matches(s)),
            Who::Or(any) => any.iter().any(|w| w.matches(s)),
            Who::Not(w) => !w.matches(s),
            Who::Authenticated(name) => match (s.principal, name) {
                (Some(_), None) => true,
                (Some(p), Some(m)) => m.matches(p),
                (None, _) => false,
            },
            Who::DirectRemoteIp(c) => c.contains(s.peer),
            Who::RemoteIp(c) => c.contains(s.remote),
            Who::Header(h) => s.request.as_ref().is_some_and(|r| h.matches(r)),
            Who::Metadata(m) => m.matches(s.claims),
        }
    }
}

impl RbacCfg {
    /// The shadow rules' metadata for a request: (key, matched policy).
    pub(crate) fn shadow_effective(&self, s: &Subject) -> Option<(&str, String)> {
        let (key, rules) = self.shadow.as_deref()?;
        let matched = rules.policies.as_ref()?.iter().find(|(_, p)| {
            p.permissions.iter().any(|x| x.matches(s)) && p.principals.iter().any(|w| w.matches(s))
        })?;
        Some((key.as_str(), matched.0.clone()))
    }

    /// For a LOG (Istio's AUDIT) filter: the first policy that matches.
    pub(crate) fn logs(&self, s: &Subject) -> Option<String> {
        if self.action != Action::Log {
            return None;
        }
        let policies = self.policies.as_ref()?;
        policies
            .iter()
            .find(|(_, p)| {
                p.permissions.iter().any(|x| x.matches(s))
                    && p.principals.iter().any(|w| w.matches(s))
            })
            .map(|(name, _)| name.clone())
    }

    /// The policy that decides against the request, when one does: for
    /// DENY the first that matches, for ALLOW none matching (`""`).
    pub(crate) fn denies(&self, s: &Subject) -> Option<String> {
        let policies = self.policies.as_ref()?;
        let matching = policies
            .iter()
            .find(|(_, p)| {
                p.permissions.iter().any(|x| x.matches(s))
                    && p.principals.iter().any(|w| w.matches(s))
            })
            .map(|(name, _)| name.clone());
        match (self.action, matching) {
            (Action::Deny, Some(name)) => Some(name),
            (Action::Allow, None) => Some(String::new()),
            _ => None,
        }
    }
}
