//! CUSTOM AuthorizationPolicies: external authorization, as istiod
//! writes it for an `envoyExtAuthzHttp` provider of the mesh config. The
//! policies' rules become the *shadow* rules of an RBAC filter, which
//! only marks a request they match (dynamic metadata
//! `istio_ext_authz_shadow_effective_policy_id`); the ext_authz filter
//! after it asks the provider about marked requests only. Both go before
//! the DENY and ALLOW filters (Istio's CUSTOM → DENY → ALLOW order).
//!
//! istiod asks one provider per workload: the first CUSTOM policy's
//! (oldest first). A policy naming another provider, or one that is
//! missing or of a kind Weft does not speak (gRPC), is not dropped: its
//! rules deny (fail closed), said in problems (`authz.rs`).

use envoy_types::pb::envoy::config::core::v3::{http_uri, HeaderValue, HttpUri};
use envoy_types::pb::envoy::config::rbac::v3::{rbac, Policy, Rbac as Rules};
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
    ext_authz::Services, AuthorizationRequest, AuthorizationResponse, ExtAuthz, HttpService,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpFilter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    metadata_matcher, string_matcher::MatchPattern, value_matcher, ListStringMatcher,
    MetadataMatcher, StringMatcher, ValueMatcher,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::util::pack_any;
use weft_config::mesh_config::{ExtAuthzGrpc, ExtAuthzHttp};

const EXT_AUTHZ: &str = "envoy.filters.http.ext_authz";
const SHADOW_PREFIX: &str = "istio_ext_authz_";
const POLICY_PREFIX: &str = "istio-ext-authz-";

/// An authorization service a CUSTOM policy can name.
#[derive(Debug, Clone)]
pub(crate) enum Provider {
    Http(ExtAuthzHttp),
    Grpc(ExtAuthzGrpc),
}

/// The provider a CUSTOM policy names, when Weft can ask it.
pub(crate) fn http_provider(inputs: &crate::Inputs, name: &str) -> Result<Provider, String> {
    let mesh = inputs.mesh();
    let provider = mesh.extension_provider(name).ok_or_else(|| {
        format!("provider {name:?} is not in the mesh config's extensionProviders")
    })?;
    match (
        &provider.envoy_ext_authz_http,
        &provider.envoy_ext_authz_grpc,
    ) {
        (Some(http), _) => Ok(Provider::Http(http.clone())),
        (None, Some(grpc)) => Ok(Provider::Grpc(grpc.clone())),
        (None, None) => Err(format!(
            "provider {name:?} is neither envoyExtAuthzHttp nor envoyExtAuthzGrpc"
        )),
    }
}

/// The CUSTOM policies selecting `proxy`, oldest first.
fn custom_policies<'a>(
    inputs: &crate::Inputs<'a>,
    proxy: &weft_registry::Workload,
) -> Vec<&'a weft_config::Resource> {
    let mut out: Vec<&weft_config::Resource> = inputs
        .config
        .iter()
        .filter(|r| {
            r.as_authorization_policy().is_some_and(|ap| {
                ap.action.as_deref() == Some("CUSTOM")
                    && crate::attach::Targets::authorization(r.namespace(), ap).attach(proxy)
            })
        })
        .collect();
    out.sort_by(|a, b| a.creation_order().cmp(&b.creation_order()));
    out
}

fn provider_name(r: &weft_config::Resource) -> String {
    let ap = r.as_authorization_policy().expect("an AuthorizationPolicy");
    ap.provider
        .as_ref()
        .map(|p| p.name.clone())
        .unwrap_or_default()
}

/// The provider `proxy` asks: the oldest CUSTOM policy's, when Weft can
/// ask it.
pub(crate) fn chosen(inputs: &crate::Inputs, proxy: &weft_registry::Workload) -> Option<String> {
    let first = custom_policies(inputs, proxy).into_iter().next()?;
    let name = provider_name(first);
    http_provider(inputs, &name).ok().map(|_| name)
}

/// The CUSTOM policies of the chosen provider, as its filters.
pub(crate) fn custom_filters(
    inputs: &crate::Inputs,
    proxy: &weft_registry::Workload,
) -> Vec<HttpFilter> {
    let Some(name) = chosen(inputs, proxy) else {
        return Vec::new();
    };
    let Ok(provider) = http_provider(inputs, &name) else {
        return Vec::new();
    };
    let mut rules = Vec::new();
    let td = crate::mtls::trust_domain(inputs.config);
    for r in custom_policies(inputs, proxy) {
        if provider_name(r) != name {
            continue; // denied by the DENY filter instead (authz.rs)
        }
        let ap = r.as_authorization_policy().expect("an AuthorizationPolicy");
        for (i, rule) in ap.rules.iter().enumerate() {
            let id = format!("ns[{}]-policy[{}]-rule[{i}]", r.namespace(), r.meta.name);
            rules.push((id, crate::authz::policy(rule, &td)));
        }
    }
    if rules.is_empty() {
        return Vec::new();
    }
    filters(&provider, rules)
}

/// The shadow RBAC filter and the ext_authz filter for one provider and
/// the rules of the CUSTOM policies that name it (`(name, policy)`).
fn filters(provider: &Provider, rules: Vec<(String, Policy)>) -> Vec<HttpFilter> {
    let shadow = Rbac {
        shadow_rules: Some(Rules {
            action: rbac::Action::Allow as i32,
            policies: rules
                .into_iter()
                .map(|(name, p)| (format!("{POLICY_PREFIX}{name}"), p))
                .collect(),
            ..Default::default()
        }),
        shadow_rules_stat_prefix: SHADOW_PREFIX.into(),
        ..Default::default()
    };
    vec![
        filter(crate::authz::RBAC, pack_any(shadow)),
        filter(
            EXT_AUTHZ,
            pack_any(match provider {
                Provider::Http(p) => ext_authz(p),
                Provider::Grpc(p) => ext_authz_grpc(p),
            }),
        ),
    ]
}

fn filter(name: &str, any: envoy_types::pb::google::protobuf::Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any)),
        ..Default::default()
    }
}

fn exact_list(names: &[String]) -> Option<ListStringMatcher> {
    (!names.is_empty()).then(|| ListStringMatcher {
        patterns: names
            .iter()
            .map(|n| StringMatcher {
                match_pattern: Some(MatchPattern::Exact(n.to_ascii_lowercase())),
                ignore_case: true,
            })
            .collect(),
    })
}

/// What both kinds of provider set alike: the status on error (403),
/// failing open or closed, and istiod's marker of the requests to check.
fn base(status: &Option<String>, fail_open: Option<bool>) -> ExtAuthz {
    ExtAuthz {
        failure_mode_allow: fail_open.unwrap_or(false),
        status_on_error: Some(HttpStatus {
            code: status
                .as_deref()
                .and_then(|s| s.parse().ok())
                .unwrap_or(403),
        }),
        transport_api_version: 2, // V3
        filter_enabled_metadata: Some(enabled_by_shadow_rules()),
        ..Default::default()
    }
}

/// A provider's timeout (istiod's default: 600 s).
fn timeout(t: &Option<String>) -> envoy_types::pb::google::protobuf::Duration {
    let t = t
        .as_deref()
        .and_then(weft_config::networking::common::parse_duration)
        .unwrap_or(std::time::Duration::from_secs(600));
    crate::policies::duration(t)
}

/// istiod's marker: the shadow rules matched a CUSTOM policy.
fn enabled_by_shadow_rules() -> MetadataMatcher {
    MetadataMatcher {
        filter: crate::authz::RBAC.into(),
        path: vec![metadata_matcher::PathSegment {
            segment: Some(metadata_matcher::path_segment::Segment::Key(format!(
                "{SHADOW_PREFIX}shadow_effective_policy_id"
            ))),
        }],
        value: Some(ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::StringMatch(StringMatcher {
                match_pattern: Some(MatchPattern::Prefix(POLICY_PREFIX.into())),
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

/// `namespace/host` names the host in that namespace; the host is what counts.
fn host_of(service: &str) -> &str {
    service.rsplit('/').next().unwrap_or(service)
}

fn ext_authz_grpc(p: &ExtAuthzGrpc) -> ExtAuthz {
    use envoy_types::pb::envoy::config::core::v3::{grpc_service, GrpcService};
    let host = host_of(&p.service);
    let port = weft_config::mesh_config::port_number(&p.port).unwrap_or(9000);
    ExtAuthz {
        services: Some(Services::GrpcService(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: crate::clusters::cluster_name("outbound", port, "", host),
                    authority: host.to_string(),
                    ..Default::default()
                },
            )),
            timeout: Some(timeout(&p.timeout)),
            ..Default::default()
        })),
        ..base(&p.status_on_error, p.fail_open)
    }
}

fn ext_authz(p: &ExtAuthzHttp) -> ExtAuthz {
    let host = host_of(&p.service);
    let port = p.port_number().unwrap_or(80);
    ExtAuthz {
        services: Some(Services::HttpService(HttpService {
            server_uri: Some(HttpUri {
                uri: format!("http://{host}"),
                timeout: Some(timeout(&p.timeout)),
                http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(
                    crate::clusters::cluster_name("outbound", port, "", host),
                )),
            }),
            path_prefix: p.path_prefix.clone().unwrap_or_default(),
            authorization_request: Some(AuthorizationRequest {
                headers_to_add: p
                    .include_additional_headers_in_check
                    .iter()
                    .map(|(k, v)| HeaderValue {
                        key: k.clone(),
                        value: v.clone(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            authorization_response: Some(AuthorizationResponse {
                allowed_upstream_headers: exact_list(&p.headers_to_upstream_on_allow),
                allowed_client_headers: exact_list(&p.headers_to_downstream_on_deny),
                allowed_client_headers_on_success: exact_list(&p.headers_to_downstream_on_allow),
                ..Default::default()
            }),
            ..Default::default()
        })),
        allowed_headers: exact_list(&p.include_request_headers_in_check),
        ..base(&p.status_on_error, p.fail_open)
    }
}
