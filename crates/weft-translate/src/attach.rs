//! Which workload-scoped policies attach to a proxy: istiod's
//! `ShouldAttachPolicy`, one rule for AuthorizationPolicy,
//! RequestAuthentication and Telemetry.
//!
//! A policy names its workloads by `selector` or by `targetRef(s)`.
//! Targets are Gateway API objects: a Kubernetes `Gateway` (the proxy
//! carries `gateway.networking.k8s.io/gateway-name`), or a Service or
//! GatewayClass for ambient waypoints, which Weft does not run. So on a
//! sidecar or an Istio gateway (no such label) a policy with targets is
//! ignored altogether — not applied namespace-wide — exactly as istiod
//! ignores it; on a Gateway API gateway the targets decide, and a policy
//! without them falls back to its selector (istiod's default
//! `ENABLE_SELECTOR_BASED_K8S_GATEWAY_POLICY`).

use std::collections::BTreeMap;

use weft_config::mesh_config::ROOT_NAMESPACE;
use weft_config::security::{AuthorizationPolicy, RequestAuthentication};
use weft_config::selectors::PolicyTargetReference;
use weft_config::telemetry::Telemetry;
use weft_registry::Workload;

/// The label Istio puts on the pods of a Gateway API gateway.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// How a policy names the workloads it applies to.
pub struct Targets<'a> {
    /// The policy's own namespace.
    pub namespace: &'a str,
    pub selector: Option<&'a BTreeMap<String, String>>,
    pub target_ref: Option<&'a PolicyTargetReference>,
    pub target_refs: &'a [PolicyTargetReference],
}

impl<'a> Targets<'a> {
    pub fn authorization(namespace: &'a str, p: &'a AuthorizationPolicy) -> Self {
        Targets {
            namespace,
            selector: p.selector.as_ref().map(|s| &s.match_labels),
            target_ref: p.target_ref.as_ref(),
            target_refs: &p.target_refs,
        }
    }

    pub fn request_authentication(namespace: &'a str, p: &'a RequestAuthentication) -> Self {
        Targets {
            namespace,
            selector: p.selector.as_ref().map(|s| &s.match_labels),
            target_ref: p.target_ref.as_ref(),
            target_refs: &p.target_refs,
        }
    }

    pub fn telemetry(namespace: &'a str, p: &'a Telemetry) -> Self {
        Targets {
            namespace,
            selector: p.selector.as_ref().map(|s| &s.match_labels),
            target_ref: p.target_ref.as_ref(),
            target_refs: &p.target_refs,
        }
    }

    fn refs(&self) -> impl Iterator<Item = &PolicyTargetReference> {
        // istiod reads `targetRefs`, and `targetRef` only without them.
        let single = self.target_ref.filter(|_| self.target_refs.is_empty());
        self.target_refs.iter().chain(single)
    }

    fn has_refs(&self) -> bool {
        self.refs().next().is_some()
    }

    /// A policy for its whole namespace: no labels to match, no targets.
    pub fn namespace_wide(&self) -> bool {
        self.selector.is_none_or(BTreeMap::is_empty) && !self.has_refs()
    }

    fn selects(&self, proxy: &Workload) -> bool {
        self.selector
            .is_none_or(|s| s.iter().all(|(k, v)| proxy.labels.get(k) == Some(v)))
    }

    /// Whether the policy applies to `proxy`: in the proxy's namespace or
    /// the root one, and chosen by its selector or its targets.
    pub fn attach(&self, proxy: &Workload) -> bool {
        let in_scope = self.namespace == proxy.namespace || self.namespace == ROOT_NAMESPACE;
        if !in_scope {
            return false;
        }
        let Some(gateway) = proxy.labels.get(GATEWAY_NAME_LABEL) else {
            return !self.has_refs() && self.selects(proxy);
        };
        if !self.has_refs() {
            return self.selects(proxy);
        }
        // Targets attach only within the gateway's own namespace.
        self.namespace == proxy.namespace
            && self.refs().any(|t| {
                canonical_group(&t.group) == GATEWAY_API_GROUP
                    && t.kind == "Gateway"
                    && &t.name == gateway
                    && t.namespace
                        .as_deref()
                        .is_none_or(|ns| ns == proxy.namespace)
            })
    }
}

/// istiod's `CanonicalGroup`: the core group is spelled `core` or empty.
fn canonical_group(group: &str) -> &str {
    if group.is_empty() {
        "core"
    } else {
        group
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_registry::ProxyKind;

    fn workload(ns: &str, labels: &[(&str, &str)]) -> Workload {
        let mut w = crate::tests::workload("w", "198.18.0.10", labels, ProxyKind::Sidecar);
        w.namespace = ns.into();
        w
    }

    fn gateway_ref(name: &str) -> PolicyTargetReference {
        PolicyTargetReference {
            group: GATEWAY_API_GROUP.into(),
            kind: "Gateway".into(),
            name: name.into(),
            namespace: None,
        }
    }

    #[test]
    fn targets_are_ignored_on_sidecars_and_istio_gateways() {
        let sidecar = workload("default", &[("app", "reviews")]);
        let refs = [gateway_ref("bookinfo-gateway")];
        let targeted = Targets {
            namespace: "default",
            selector: None,
            target_ref: None,
            target_refs: &refs,
        };
        assert!(!targeted.attach(&sidecar), "not namespace-wide");
        assert!(!targeted.namespace_wide());
        let single = Targets {
            target_ref: refs.first(),
            target_refs: &[],
            ..targeted
        };
        assert!(!single.attach(&sidecar));
        let wide = Targets {
            namespace: "istio-system",
            selector: None,
            target_ref: None,
            target_refs: &[],
        };
        assert!(wide.attach(&sidecar) && wide.namespace_wide());
        let elsewhere = Targets {
            namespace: "foo",
            ..wide
        };
        assert!(!elsewhere.attach(&sidecar));
    }

    #[test]
    fn a_gateway_api_gateway_takes_its_targets_then_selectors() {
        let gw = workload(
            "default",
            &[(GATEWAY_NAME_LABEL, "bookinfo-gateway"), ("app", "gw")],
        );
        let mine = [gateway_ref("bookinfo-gateway")];
        let other = [gateway_ref("other")];
        let service = [PolicyTargetReference {
            group: String::new(),
            kind: "Service".into(),
            name: "bookinfo-gateway".into(),
            namespace: None,
        }];
        let t = |namespace, refs| Targets {
            namespace,
            selector: None,
            target_ref: None,
            target_refs: refs,
        };
        assert!(t("default", &mine).attach(&gw));
        assert!(!t("default", &other).attach(&gw));
        assert!(
            !t("default", &service).attach(&gw),
            "Services are waypoints'"
        );
        assert!(
            !t("istio-system", &mine).attach(&gw),
            "targets attach in their own namespace only"
        );
        let labels = BTreeMap::from([("app".to_string(), "gw".to_string())]);
        let selected = Targets {
            selector: Some(&labels),
            ..t("default", &[])
        };
        assert!(selected.attach(&gw));
    }
}
