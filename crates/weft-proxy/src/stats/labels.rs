//! The label sets of Istio's metrics, in Istio's order (the order Istio's
//! own tests list them in `shared/conformance/istio/metrics`).

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};

use super::{Peer, Reporter, ServiceMeta};
use crate::error::Flags;

/// Who talked to whom, for which service: the labels every standard
/// metric shares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Parties {
    pub reporter: Reporter,
    pub source: Arc<Peer>,
    pub source_principal: Arc<str>,
    pub destination: Arc<Peer>,
    pub destination_principal: Arc<str>,
    pub service: Arc<ServiceMeta>,
}

impl Parties {
    fn pairs(&self) -> [(&'static str, &str); 20] {
        let (s, d, svc) = (&self.source, &self.destination, &self.service);
        [
            ("reporter", self.reporter.as_str()),
            ("source_workload", &s.workload),
            ("source_canonical_service", &s.canonical_service),
            ("source_canonical_revision", &s.canonical_revision),
            ("source_workload_namespace", &s.namespace),
            ("source_principal", &self.source_principal),
            ("source_app", &s.app),
            ("source_version", &s.version),
            ("source_cluster", &s.cluster),
            ("destination_workload", &d.workload),
            ("destination_workload_namespace", &d.namespace),
            ("destination_principal", &self.destination_principal),
            ("destination_app", &d.app),
            ("destination_version", &d.version),
            ("destination_service", &svc.host),
            ("destination_canonical_service", &d.canonical_service),
            ("destination_canonical_revision", &d.canonical_revision),
            ("destination_service_name", &svc.name),
            ("destination_service_namespace", &svc.namespace),
            ("destination_cluster", &d.cluster),
        ]
    }
}

fn encode_all<'a>(
    mut encoder: LabelSetEncoder,
    pairs: impl IntoIterator<Item = (&'static str, &'a str)>,
) -> Result<(), std::fmt::Error> {
    for pair in pairs {
        pair.encode(encoder.encode_label())?;
    }
    Ok(())
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

impl EncodeLabelSet for HttpLabels {
    fn encode(&self, encoder: LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let code = self.response_code.to_string();
        let grpc = self.grpc_status.map(|s| s.to_string()).unwrap_or_default();
        let flags = self.flags.to_string();
        let tail = [
            ("request_protocol", self.protocol),
            ("response_code", code.as_str()),
            ("grpc_response_status", grpc.as_str()),
            ("response_flags", flags.as_str()),
            ("connection_security_policy", self.security),
        ];
        encode_all(encoder, self.parties.pairs().into_iter().chain(tail))
    }
}

/// `istio_request_messages_total` and `istio_response_messages_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct MessageLabels(Parties);

impl MessageLabels {
    pub fn of(l: &HttpLabels) -> MessageLabels {
        MessageLabels(l.parties.clone())
    }
}

impl EncodeLabelSet for MessageLabels {
    fn encode(&self, encoder: LabelSetEncoder) -> Result<(), std::fmt::Error> {
        encode_all(encoder, self.0.pairs())
    }
}

/// The TCP metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TcpLabels {
    pub parties: Parties,
    pub flags: Flags,
    pub security: &'static str,
}

impl EncodeLabelSet for TcpLabels {
    fn encode(&self, encoder: LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let flags = self.flags.to_string();
        let tail = [
            ("request_protocol", "tcp"),
            ("response_flags", flags.as_str()),
            ("connection_security_policy", self.security),
        ];
        encode_all(encoder, self.parties.pairs().into_iter().chain(tail))
    }
}
