//! RequestAuthentication: which JWTs a workload accepts.

use serde::{Deserialize, Serialize};

use crate::networking::common::parse_duration;
use crate::selectors::{check_targets, PolicyTargetReference, WorkloadSelector};
use crate::validate::Report;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestAuthentication {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(
        default,
        deserialize_with = "jwt_rules",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub jwt_rules: Vec<JwtRule>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtRule {
    #[serde(default)]
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The deprecated snake_case spelling Istio still accepts.
    #[serde(default, rename = "jwks_uri", skip_serializing_if = "Option::is_none")]
    pub jwks_uri_legacy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    #[serde(
        default,
        deserialize_with = "claims_to_headers",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_original_token: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
    /// OPTIONAL (default) or REQUIRED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtHeader {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimToHeader {
    #[serde(default)]
    pub header: String,
    #[serde(default)]
    pub claim: String,
}

pub(crate) fn check(r: &mut Report, ra: &RequestAuthentication) {
    check_targets(
        r,
        ra.selector.as_ref(),
        ra.target_ref.as_ref(),
        &ra.target_refs,
    );
    for (i, rule) in ra.jwt_rules.iter().enumerate() {
        jwt_rule(r, &format!("spec.jwtRules[{i}]"), rule);
    }
}

fn non_empty(r: &mut Report, at: &str, items: &[String]) {
    for (i, s) in items.iter().enumerate() {
        if s.is_empty() {
            r.error(
                format!("{at}[{i}]"),
                format!("{at}[{i}] in body should be at least 1 chars long"),
            );
        }
    }
}

fn jwt_rule(r: &mut Report, at: &str, rule: &JwtRule) {
    if rule.issuer.is_empty() {
        r.error(
            format!("{at}.issuer"),
            "issuer must be set: the iss claim a token must carry",
        );
    }
    if rule.timeout.is_some() {
        r.warn(
            format!("{at}.timeout"),
            "accepted but not enforced by this version of Weft (the control plane gives a JWKS fetch 5 s)",
        );
    }
    non_empty(r, &format!("{at}.audiences"), &rule.audiences);
    non_empty(r, &format!("{at}.fromParams"), &rule.from_params);
    non_empty(r, &format!("{at}.fromCookies"), &rule.from_cookies);
    non_empty(
        r,
        &format!("{at}.spaceDelimitedClaims"),
        &rule.space_delimited_claims,
    );
    for uri in [&rule.jwks_uri, &rule.jwks_uri_legacy]
        .into_iter()
        .flatten()
    {
        if !has_http_scheme(uri) {
            r.error(
                format!("{at}.jwksUri"),
                format!("url must have scheme http:// or https://: {uri:?}"),
            );
        }
    }
    for (i, h) in rule.from_headers.iter().enumerate() {
        if h.name.is_empty() {
            r.error(
                format!("{at}.fromHeaders[{i}].name"),
                "in body should be at least 1 chars long",
            );
        }
    }
    for (i, c) in rule.output_claim_to_headers.iter().enumerate() {
        let here = format!("{at}.outputClaimToHeaders[{i}]");
        if c.claim.is_empty() {
            r.error(
                format!("{here}.claim"),
                "claim in body should be at least 1 chars long",
            );
        }
        if c.header.is_empty() {
            r.error(
                format!("{here}.header"),
                "header in body should be at least 1 chars long",
            );
        } else if !c
            .header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            r.error(
                format!("{here}.header"),
                format!(
                    "header in body should match ^[-_A-Za-z0-9]+$: {:?}",
                    c.header
                ),
            );
        }
    }
    if let Some(t) = &rule.timeout {
        if parse_duration(t).is_none_or(|d| d < std::time::Duration::from_millis(1)) {
            r.error(
                format!("{at}.timeout"),
                format!("must be a valid duration greater than 1ms: {t:?}"),
            );
        }
    }
    if let Some(p) = &rule.presence {
        if !["OPTIONAL", "REQUIRED"].contains(&p.as_str()) {
            r.error(
                format!("{at}.presence"),
                format!("Unsupported value: {p:?}: use OPTIONAL or REQUIRED"),
            );
        }
    }
}

fn has_http_scheme(uri: &str) -> bool {
    let lower = uri.to_ascii_lowercase();
    ["http://", "https://"]
        .iter()
        .any(|s| lower.starts_with(s) && lower.len() > s.len())
}

fn jwt_rules<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<JwtRule>, D::Error> {
    crate::selectors::objects(d, "jwtRules")
}

fn claims_to_headers<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<ClaimToHeader>, D::Error> {
    crate::selectors::objects(d, "outputClaimToHeaders")
}
