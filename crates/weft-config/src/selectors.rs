//! Workload selectors and policy target references, shared by many kinds,
//! with the checks Istio's CRD schema and webhook apply to them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::validate::Report;

/// `selector: {matchLabels: {…}}`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    /// Keys must be non-empty; neither keys nor values may hold wildcards.
    pub(crate) fn check(&self, r: &mut Report, at: &str) {
        labels(r, &format!("{at}.matchLabels"), &self.match_labels);
    }

    pub fn selects(&self, workload: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| workload.get(k) == Some(v))
    }
}

pub(crate) fn labels(r: &mut Report, at: &str, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        if k.is_empty() {
            r.error(at, "label key must not be empty");
        } else if k.contains('*') {
            r.error(
                format!("{at}.{k}"),
                "wildcard not allowed in label key match",
            );
        }
        if v.contains('*') {
            r.error(
                format!("{at}.{k}"),
                "wildcard not allowed in label value match",
            );
        }
    }
}

/// `targetRef` / `targetRefs`: a policy attached to a Gateway API object.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyTargetReference {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl PolicyTargetReference {
    pub(crate) fn check(&self, r: &mut Report, at: &str, own_namespace: &str) {
        let group_ok = self
            .group
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !group_ok || self.group.starts_with(['.', '-']) {
            r.error(
                format!("{at}.group"),
                format!(
                    "{:?} is not an API group: lower-case DNS name or empty",
                    self.group
                ),
            );
        }
        let kind_ok = self
            .kind
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && self
                .kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !kind_ok {
            r.error(
                format!("{at}.kind"),
                format!("{:?} is not a kind name", self.kind),
            );
        }
        if self.name.is_empty() {
            r.error(
                format!("{at}.name"),
                "Required value: the name of the target",
            );
        }
        if self
            .namespace
            .as_deref()
            .is_some_and(|ns| ns != own_namespace)
        {
            r.error(
                format!("{at}.namespace"),
                "cross namespace referencing is not currently supported",
            );
        }
    }
}

/// The rule shared by every policy kind: a selector, a targetRef and
/// targetRefs are alternatives.
pub(crate) fn check_targets(
    r: &mut Report,
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    let own_namespace = r.namespace();
    let set = usize::from(selector.is_some())
        + usize::from(target_ref.is_some())
        + usize::from(!target_refs.is_empty());
    if set > 1 {
        r.error("spec", "only one of targetRefs or selector can be set (targetRef, targetRefs and selector are alternatives)");
    }
    if let Some(s) = selector {
        s.check(r, "spec.selector");
    }
    if let Some(t) = target_ref {
        t.check(r, "spec.targetRef", &own_namespace);
    }
    for (i, t) in target_refs.iter().enumerate() {
        t.check(r, &format!("spec.targetRefs[{i}]"), &own_namespace);
    }
}

pub(crate) fn port_in_range(r: &mut Report, at: &str, port: i64) {
    if !(1..=65535).contains(&port) {
        r.error(at, format!("port must be between 1-65535, got {port}"));
    }
}

/// For lists of objects: a `- ~` item is an error (Kubernetes' schema says
/// "must be of type object"), not an object with every field defaulted.
/// `field` names the list in the message, since serde's path stops at the
/// enclosing object.
pub(crate) fn objects<'de, D, T>(d: D, field: &str) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let items: Vec<Option<T>> = Vec::deserialize(d)?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            item.ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{field}[{i}] in body must be of type object, not null"
                ))
            })
        })
        .collect()
}
