//! RequestAuthentication → Envoy's JWT filter, as istiod writes it: the
//! rules of every policy that selects the proxy (its namespace's and the
//! root namespace's), sorted by issuer, become providers `origins-<i>`;
//! one requirement for every path lets a request through with a token one
//! provider verifies, or with none at all (an AuthorizationPolicy decides
//! whether that is enough). The filter goes in front of RBAC in every
//! connection manager the proxy serves inbound (sidecar) or at all
//! (gateway).
//!
//! JWKS are inlined: a rule's `jwks`, else what the control plane fetched
//! from its `jwksUri` (istiod's default). A JWKS not fetched yet is an
//! empty one, so every token fails, never passes (istiod's fail-closed
//! `PublicOnlyJwks`).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{route_match, RouteMatch};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    jwt_provider::{JwksSourceSpecifier, NormalizePayload},
    jwt_requirement::RequiresType,
    requirement_rule::RequirementType,
    JwtAuthentication, JwtClaimToHeader, JwtHeader, JwtProvider, JwtRequirement,
    JwtRequirementAndList, JwtRequirementOrList, RequirementRule,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpFilter,
};
use envoy_types::pb::google::protobuf::Empty;
use envoy_types::util::pack_any;
use weft_config::security::JwtRule;
use weft_registry::Workload;

use crate::Inputs;

/// JWKS text by `jwksUri`, as the control plane last fetched them.
pub type Jwks = BTreeMap<String, String>;

const NAME: &str = "envoy.filters.http.jwt_authn";
/// What a JWKS that could not be fetched is replaced with.
const NO_KEYS: &str = r#"{"keys":[]}"#;

pub(crate) fn apply_to(
    inputs: &Inputs,
    proxy: &Workload,
    listeners: &mut [&mut Listener],
    problems: &mut Vec<String>,
) {
    let mut rules: Vec<&JwtRule> = Vec::new();
    for r in inputs.config {
        let Some(ra) = r.as_request_authentication() else {
            continue;
        };
        if !crate::attach::Targets::request_authentication(r.namespace(), ra).attach(proxy) {
            continue;
        }
        rules.extend(&ra.jwt_rules);
    }
    if rules.is_empty() {
        return;
    }
    let filter = filter(rules, inputs.jwks, problems);
    for chain in listeners
        .iter_mut()
        .flat_map(|l| l.filter_chains.iter_mut())
    {
        crate::envoy::prepend_http_filters(chain, std::slice::from_ref(&filter));
    }
}

/// The JWT filter for `rules` (sorted by issuer here, as istiod does).
pub fn filter(mut rules: Vec<&JwtRule>, jwks: &Jwks, problems: &mut Vec<String>) -> HttpFilter {
    rules.sort_by(|a, b| a.issuer.cmp(&b.issuer));
    let providers = rules
        .iter()
        .enumerate()
        .map(|(i, rule)| (format!("origins-{i}"), provider(rule, jwks, problems)))
        .collect();
    HttpFilter {
        name: NAME.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            JwtAuthentication {
                providers,
                rules: vec![RequirementRule {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                        ..Default::default()
                    }),
                    requirement_type: Some(RequirementType::Requires(requirement(rules.len()))),
                }],
                bypass_cors_preflight: true,
                ..Default::default()
            },
        ))),
        ..Default::default()
    }
}

fn provider(rule: &JwtRule, fetched: &Jwks, problems: &mut Vec<String>) -> JwtProvider {
    let uri = rule.jwks_uri.as_ref().or(rule.jwks_uri_legacy.as_ref());
    let jwks = match (&rule.jwks, uri) {
        (Some(inline), _) => inline.clone(),
        (None, Some(uri)) => fetched.get(uri).cloned().unwrap_or_else(|| {
            problems.push(format!(
                "jwksUri {uri} (issuer {:?}) is not fetched yet: its tokens are refused until it is",
                rule.issuer
            ));
            NO_KEYS.into()
        }),
        (None, None) => {
            problems.push(format!(
                "issuer {:?} has neither jwks nor jwksUri: its tokens are refused",
                rule.issuer
            ));
            NO_KEYS.into()
        }
    };
    let mut space_delimited = vec!["permission".to_string(), "scope".to_string()];
    space_delimited.extend(rule.space_delimited_claims.iter().cloned());
    JwtProvider {
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        forward: rule.forward_original_token.unwrap_or(false),
        forward_payload_header: rule.output_payload_to_header.clone().unwrap_or_default(),
        claim_to_headers: rule
            .output_claim_to_headers
            .iter()
            .map(|c| JwtClaimToHeader {
                header_name: c.header.clone(),
                claim_name: c.claim.clone(),
                ..Default::default()
            })
            .collect(),
        from_headers: rule
            .from_headers
            .iter()
            .map(|h| JwtHeader {
                name: h.name.clone(),
                value_prefix: h.prefix.clone().unwrap_or_default(),
            })
            .collect(),
        from_params: rule.from_params.clone(),
        from_cookies: rule.from_cookies.clone(),
        payload_in_metadata: "payload".into(),
        normalize_payload_in_metadata: Some(NormalizePayload {
            space_delimited_claims: space_delimited,
        }),
        jwks_source_specifier: Some(JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(data_source::Specifier::InlineString(jwks)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// One provider or none (`origins-0` or allow missing); for several,
/// istiod's "any provider, or all of them missing".
fn requirement(providers: usize) -> JwtRequirement {
    let named = |i: usize| JwtRequirement {
        requires_type: Some(RequiresType::ProviderName(format!("origins-{i}"))),
    };
    let missing = || JwtRequirement {
        requires_type: Some(RequiresType::AllowMissing(Empty {})),
    };
    let any = |requirements| JwtRequirement {
        requires_type: Some(RequiresType::RequiresAny(JwtRequirementOrList {
            requirements,
        })),
    };
    if providers == 1 {
        return any(vec![named(0), missing()]);
    }
    let mut list: Vec<JwtRequirement> = (0..providers).map(named).collect();
    list.push(JwtRequirement {
        requires_type: Some(RequiresType::RequiresAll(JwtRequirementAndList {
            requirements: (0..providers)
                .map(|i| any(vec![named(i), missing()]))
                .collect(),
        })),
    });
    any(list)
}
