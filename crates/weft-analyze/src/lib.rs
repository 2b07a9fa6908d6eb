//! `weft analyze`: cross-resource checks over Istio config and the registry,
//! with Istio's message codes (IST0101, …) where the meaning is the same, so
//! a user can look a code up in Istio's documentation.
//!
//! Pure: config and registry in, messages out. It knows nothing of files,
//! the network or the proxy.

mod conflicts;
mod naming;
mod references;

use std::fmt;

use serde::Serialize;
use weft_config::{Origin, Resource};
use weft_registry::Registry;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "info" => Some(Level::Info),
            "warning" | "warn" => Some(Level::Warning),
            "error" => Some(Level::Error),
            _ => None,
        }
    }
}

/// One finding: the code and name Istio uses, the resource and where it was
/// written, what is wrong and, where it helps, how to fix it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub level: Level,
    pub code: &'static str,
    pub name: &'static str,
    /// `Kind namespace/name`, or the service's name for registry findings.
    pub resource: String,
    pub origin: Option<Origin>,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} [{}] ({})", self.level, self.code, self.resource)?;
        if let Some(o) = &self.origin {
            write!(f, " {o}")?;
        }
        write!(f, " {}", self.text)?;
        if let Some(fix) = &self.fix {
            write!(f, " Fix: {fix}")?;
        }
        Ok(())
    }
}

/// What the checks read.
pub struct Input<'a> {
    pub config: &'a [Resource],
    pub registry: &'a Registry,
}

impl Input<'_> {
    fn of_kind(&self, kind: weft_config::Kind) -> impl Iterator<Item = &Resource> {
        self.config.iter().filter(move |r| r.kind == kind)
    }
}

/// Collects messages; each check pushes through it.
#[derive(Default)]
pub(crate) struct Findings {
    messages: Vec<Message>,
}

impl Findings {
    fn push(
        &mut self,
        level: Level,
        code: (&'static str, &'static str),
        r: &Resource,
        text: String,
        fix: Option<&str>,
    ) {
        let resource = format!("{} {}/{}", r.kind, r.namespace(), r.meta.name);
        self.add(level, code, resource, Some(r.origin.clone()), text, fix);
    }

    /// A finding about the registry (a Service), which has no file position.
    fn push_registry(
        &mut self,
        level: Level,
        code: (&'static str, &'static str),
        resource: String,
        text: String,
        fix: Option<&str>,
    ) {
        self.add(level, code, resource, None, text, fix);
    }

    fn add(
        &mut self,
        level: Level,
        (code, name): (&'static str, &'static str),
        resource: String,
        origin: Option<Origin>,
        text: String,
        fix: Option<&str>,
    ) {
        self.messages.push(Message {
            level,
            code,
            name,
            resource,
            origin,
            text,
            fix: fix.map(str::to_string),
        });
    }
}

pub(crate) const REFERENCED_RESOURCE_NOT_FOUND: (&str, &str) =
    ("IST0101", "ReferencedResourceNotFound");
pub(crate) const INVALID_GATEWAY_CREDENTIAL: (&str, &str) = ("IST0161", "InvalidGatewayCredential");
pub(crate) const DESTINATION_PORT_SELECTOR_REQUIRED: (&str, &str) =
    ("IST0112", "VirtualServiceDestinationPortSelectorRequired");
pub(crate) const GATEWAY_PORT_NOT_ON_WORKLOAD: (&str, &str) =
    ("IST0104", "GatewayPortNotOnWorkload");
pub(crate) const UNKNOWN_ANNOTATION: (&str, &str) = ("IST0108", "UnknownAnnotation");
pub(crate) const CONFLICTING_MESH_GATEWAY_VS_HOSTS: (&str, &str) =
    ("IST0109", "ConflictingMeshGatewayVirtualServiceHosts");
pub(crate) const CONFLICTING_SIDECAR_SELECTORS: (&str, &str) =
    ("IST0110", "ConflictingSidecarWorkloadSelectors");
pub(crate) const MULTIPLE_SIDECARS_WITHOUT_SELECTOR: (&str, &str) =
    ("IST0111", "MultipleSidecarsWithoutWorkloadSelectors");
pub(crate) const MTLS_POLICY_CONFLICT: (&str, &str) = ("IST0113", "MTLSPolicyConflict");
pub(crate) const PORT_NAME_NOT_UNDER_CONVENTION: (&str, &str) =
    ("IST0118", "PortNameIsNotUnderNamingConvention");
pub(crate) const NO_MATCHING_WORKLOADS: (&str, &str) = ("IST0127", "NoMatchingWorkloadsFound");
pub(crate) const DEPRECATED_ANNOTATION: (&str, &str) = ("IST0135", "DeprecatedAnnotation");
pub(crate) const VS_UNREACHABLE_RULE: (&str, &str) = ("IST0130", "VirtualServiceUnreachableRule");
pub(crate) const CONFLICTING_GATEWAYS: (&str, &str) = ("IST0145", "ConflictingGateways");
pub(crate) const VS_INEFFECTIVE_MATCH: (&str, &str) = ("IST0131", "VirtualServiceIneffectiveMatch");
pub(crate) const INEFFECTIVE_POLICY: (&str, &str) = ("IST0167", "IneffectivePolicy");
pub(crate) const SUBSET_SELECTS_NO_PODS: (&str, &str) =
    ("IST0173", "DestinationRuleSubsetNotSelectPods");

/// Runs every check; messages are sorted most severe first, then by resource.
pub fn analyze(input: &Input) -> Vec<Message> {
    let mut f = Findings::default();
    references::check(input, &mut f);
    conflicts::check(input, &mut f);
    naming::check(input, &mut f);
    let mut out = f.messages;
    out.retain(|m| !suppressed(input, m));
    out.sort_by(|a, b| {
        b.level
            .cmp(&a.level)
            .then_with(|| a.resource.cmp(&b.resource))
            .then_with(|| a.text.cmp(&b.text))
    });
    out
}

/// The annotation `galley.istio.io/analyze-suppress: IST0101,IST0118` (or
/// `*`) on a resource silences those codes for it, as in Istio.
fn suppressed(input: &Input, m: &Message) -> bool {
    input.config.iter().any(|r| {
        format!("{} {}/{}", r.kind, r.namespace(), r.meta.name) == m.resource
            && r.meta
                .annotations
                .get("galley.istio.io/analyze-suppress")
                .is_some_and(|codes| {
                    codes
                        .split(',')
                        .any(|c| c.trim() == "*" || c.trim() == m.code)
                })
    })
}

#[cfg(test)]
mod tests;
