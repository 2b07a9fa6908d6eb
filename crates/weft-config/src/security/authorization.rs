//! AuthorizationPolicy: who may do what to a workload. Enforced by the
//! proxies' RBAC filters; peer identities come from mesh mTLS, request
//! principals and claims from tokens RequestAuthentication verified.

use serde::{Deserialize, Serialize};

use crate::selectors::{check_targets, PolicyTargetReference, WorkloadSelector};
use crate::validate::Report;

type Strings = Vec<String>;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// ALLOW (default), DENY, AUDIT, CUSTOM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<From>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<To>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct From {
    #[serde(default)]
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct To {
    #[serde(default)]
    pub operation: Operation,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Source {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_trust_domains: Strings,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Operation {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Strings,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Condition {
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Strings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Strings,
}

pub const ACTIONS: &[&str] = &["ALLOW", "DENY", "AUDIT", "CUSTOM"];

/// Why a principal can never match a peer's identity, when it cannot:
/// identities read `<trust domain>/ns/<namespace>/sa/<account>`.
fn principal_shape(p: &str) -> Option<String> {
    if p.starts_with("spiffe://") {
        return Some(format!(
            "{p:?} never matches: write principals without spiffe:// ({:?})",
            p.trim_start_matches("spiffe://")
        ));
    }
    if p.starts_with("ns/") || p.starts_with("/ns/") {
        return Some(format!(
            "{p:?} has no trust domain and never matches: write it as \"cluster.local/{}\" (or your mesh's trust domain)",
            p.trim_start_matches('/')
        ));
    }
    None
}

pub(crate) fn check(r: &mut Report, ap: &AuthorizationPolicy) {
    check_targets(
        r,
        ap.selector.as_ref(),
        ap.target_ref.as_ref(),
        &ap.target_refs,
    );
    let action = ap.action.as_deref().unwrap_or("ALLOW");
    if !ACTIONS.contains(&action) {
        r.error(
            "spec.action",
            format!(
                "Unsupported value: {action:?}: use one of {}",
                ACTIONS.join(", ")
            ),
        );
    }
    if action == "CUSTOM" && ap.provider.is_none() {
        r.error("spec.provider", "a CUSTOM action needs a provider");
    }
    if action != "CUSTOM" && ap.provider.is_some() {
        r.error(
            "spec.provider",
            "a provider may only be set with the CUSTOM action",
        );
    }
    for (i, rule) in ap.rules.iter().enumerate() {
        for (j, from) in rule.from.iter().enumerate() {
            let s = &from.source;
            for (field, list) in [
                ("principals", &s.principals),
                ("notPrincipals", &s.not_principals),
            ] {
                for (k, p) in list.iter().enumerate() {
                    if let Some(why) = principal_shape(p) {
                        r.warn(
                            format!("spec.rules[{i}].from[{j}].source.{field}[{k}]"),
                            why,
                        );
                    }
                }
            }
            let accounts = !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty();
            let others = !s.namespaces.is_empty()
                || !s.not_namespaces.is_empty()
                || !s.principals.is_empty()
                || !s.not_principals.is_empty();
            if accounts && others {
                r.error(
                    format!("spec.rules[{i}].from[{j}].source"),
                    "Cannot set serviceAccounts with namespaces or principals: serviceAccounts already name both",
                );
            }
        }
        for (j, when) in rule.when.iter().enumerate() {
            if when.key.is_empty() {
                r.error(
                    format!("spec.rules[{i}].when[{j}].key"),
                    "a condition needs a key",
                );
            }
            if when.values.is_empty() && when.not_values.is_empty() {
                r.error(
                    format!("spec.rules[{i}].when[{j}]"),
                    "a condition needs values or notValues",
                );
            }
        }
    }
}
