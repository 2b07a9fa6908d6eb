//! The label sets of Istio's metrics, in Istio's order (the order Istio's
//! own tests list them in `shared/conformance/istio/metrics`), and the
//! customized sets the Telemetry API's tag overrides make of them.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};

use super::config::Tweak;
use super::{Peer, Reporter, ServiceMeta};
use crate::error::Flags;

/// A standard label set: its (name, value) pairs, in order.
pub(crate) trait Labels {
    fn each(&self, f: &mut dyn FnMut(&'static str, &str));
}

/// Who talked to whom, for which service: the labels every standard
/// metric shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parties {
    pub reporter: Reporter,
    pub source: Arc<Peer>,
    pub source_principal: Arc<str>,
    pub destination: Arc<Peer>,
    pub destination_principal: Arc<str>,
    pub service: Arc<ServiceMeta>,
}

/// Hashes the few labels that tell most label sets apart (both workloads
/// and the service's host), not all twenty: every request hashes its
/// label set to find its series, and the principals and the peers' other
/// labels were a thousand bytes of it (~600 instructions, callgrind).
/// Equal sets still hash alike, as `Eq` compares every label.
impl std::hash::Hash for Parties {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.reporter.hash(state);
        for peer in [&self.source, &self.destination] {
            peer.workload.hash(state);
            peer.namespace.hash(state);
        }
        self.service.host.hash(state);
    }
}

impl Labels for Parties {
    fn each(&self, f: &mut dyn FnMut(&'static str, &str)) {
        let (s, d, svc) = (&self.source, &self.destination, &self.service);
        f("reporter", self.reporter.as_str());
        f("source_workload", &s.workload);
        f("source_canonical_service", &s.canonical_service);
        f("source_canonical_revision", &s.canonical_revision);
        f("source_workload_namespace", &s.namespace);
        f("source_principal", &self.source_principal);
        f("source_app", &s.app);
        f("source_version", &s.version);
        f("source_cluster", &s.cluster);
        f("destination_workload", &d.workload);
        f("destination_workload_namespace", &d.namespace);
        f("destination_principal", &self.destination_principal);
        f("destination_app", &d.app);
        f("destination_version", &d.version);
        f("destination_service", &svc.host);
        f("destination_canonical_service", &d.canonical_service);
        f("destination_canonical_revision", &d.canonical_revision);
        f("destination_service_name", &svc.name);
        f("destination_service_namespace", &svc.namespace);
        f("destination_cluster", &d.cluster);
    }
}

/// `istio_requests_total` and the request histograms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct HttpLabels {
    pub parties: Parties,
    /// `http` or `grpc`.
    pub protocol: &'static str,
    pub response_code: u16,
    /// gRPC's status, for gRPC requests.
    pub grpc_status: Option<u32>,
    pub flags: Flags,
    /// `mutual_tls` or `none` on the server side; `unknown` on the client.
    pub security: &'static str,
}

impl Labels for HttpLabels {
    fn each(&self, f: &mut dyn FnMut(&'static str, &str)) {
        self.parties.each(f);
        f("request_protocol", self.protocol);
        f("response_code", &self.response_code.to_string());
        let grpc = self.grpc_status.map(|s| s.to_string()).unwrap_or_default();
        f("grpc_response_status", &grpc);
        f("response_flags", &self.flags.to_string());
        f("connection_security_policy", self.security);
    }
}

/// The TCP metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TcpLabels {
    pub parties: Parties,
    pub flags: Flags,
    pub security: &'static str,
}

impl Labels for TcpLabels {
    fn each(&self, f: &mut dyn FnMut(&'static str, &str)) {
        self.parties.each(f);
        f("request_protocol", "tcp");
        f("response_flags", &self.flags.to_string());
        f("connection_security_policy", self.security);
    }
}

/// A metric's labels: the standard set, or a set the Telemetry API
/// customized (tags removed, tags added), which is built per request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key<L> {
    Std(L),
    Custom(Box<[(Arc<str>, String)]>),
}

impl<L: Labels + Clone> Key<L> {
    /// The key for `labels` under `tweak` (None: the metric is dropped);
    /// `value` evaluates an added tag.
    pub fn of(
        labels: &L,
        tweak: Option<&Tweak>,
        value: &dyn Fn(&super::config::Expr) -> String,
    ) -> Option<Key<L>> {
        let Some(t) = tweak else {
            return Some(Key::Std(labels.clone()));
        };
        if t.drop {
            return None;
        }
        let mut pairs: Vec<(Arc<str>, String)> = Vec::new();
        labels.each(&mut |k, v| {
            let replaced = t.extra.iter().any(|(tag, _)| &**tag == k);
            if !replaced && !t.removed.iter().any(|r| r == k) {
                pairs.push((k.into(), v.to_string()));
            }
        });
        for (tag, expr) in &t.extra {
            if !t.removed.iter().any(|r| **r == **tag) {
                pairs.push((tag.clone(), value(expr)));
            }
        }
        Some(Key::Custom(pairs.into()))
    }
}

/// A label value as the text format needs it: backslash, double quote
/// and newline escaped (`prometheus-client` writes values as given, and
/// values here come from peers and requests).
fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    let mut out = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.into()
}

impl<L: Labels> EncodeLabelSet for Key<L> {
    fn encode(&self, mut encoder: LabelSetEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Key::Std(labels) => {
                let mut result = Ok(());
                labels.each(&mut |k, v| {
                    if result.is_ok() {
                        result = (k, &*escape(v)).encode(encoder.encode_label());
                    }
                });
                result
            }
            Key::Custom(pairs) => {
                for (k, v) in pairs.iter() {
                    (&**k, &*escape(v)).encode(encoder.encode_label())?;
                }
                Ok(())
            }
        }
    }
}

/// Whether a tag name is a valid Prometheus label name Weft may add
/// (`le` is the histograms' own; `__` names are Prometheus's).
pub(crate) fn valid_tag(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name != "le"
        && !name.starts_with("__")
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_are_escaped_and_tag_names_checked() {
        assert_eq!(super::escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(super::escape("plain"), "plain");
        assert!(super::valid_tag("request_host"));
        for bad in ["", "le", "__x", "request-host", "1x"] {
            assert!(!super::valid_tag(bad), "{bad}");
        }
    }
}
