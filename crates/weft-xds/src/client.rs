//! The ADS client a proxy runs: subscribe to every type, hand each response
//! to the proxy, answer ACK or NACK, and reconnect with backoff when the
//! control plane goes away (the proxy keeps serving its last good config).

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::types::{short_name, PUSH_ORDER};

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http://host:port` of the control plane's xDS port.
    pub address: String,
    pub node: Node,
}

/// The proxy side of an update: accept all of it or reject all of it.
pub trait Applier: Send + 'static {
    fn apply(&mut self, type_url: &str, version: &str, resources: &[Any]) -> Result<(), String>;

    /// What happened to the connection to the control plane (for the
    /// proxy's `xds-grpc` stats).
    fn session(&mut self, _event: SessionEvent) {}
}

/// The control-plane connection's life, as Envoy counts it for its
/// `xds-grpc` cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// The stream is open.
    Connected,
    /// No connection or no stream.
    ConnectFailed,
    /// An open stream ended.
    Closed,
}

/// Runs forever: one ADS session after another.
pub async fn run_client<A: Applier>(config: ClientConfig, mut applier: A) {
    const FIRST: Duration = Duration::from_millis(100);
    let mut backoff = FIRST;
    loop {
        let mut answered = false;
        match session(&config, &mut applier, &mut answered).await {
            Ok(()) => {
                tracing::warn!(address = %config.address, "control plane closed the xDS stream")
            }
            Err(e) => tracing::warn!(address = %config.address, error = %e, "xDS session failed"),
        }
        // A stream that worked before it broke starts the back-off over:
        // only a control plane that keeps failing is retried more slowly.
        if answered {
            backoff = FIRST;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One ADS stream until it ends; `answered` is set once a response came.
async fn session<A: Applier>(
    config: &ClientConfig,
    applier: &mut A,
    answered: &mut bool,
) -> Result<(), String> {
    let connected = AggregatedDiscoveryServiceClient::connect(config.address.clone()).await;
    let mut client = match connected {
        Ok(c) => c.max_decoding_message_size(64 << 20),
        Err(e) => {
            applier.session(SessionEvent::ConnectFailed);
            return Err(format!("connect: {e}"));
        }
    };
    let (tx, rx) = mpsc::channel(16);
    for type_url in PUSH_ORDER {
        let _ = tx
            .send(DiscoveryRequest {
                node: Some(config.node.clone()),
                type_url: type_url.to_string(),
                ..Default::default()
            })
            .await;
    }
    let opened = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await;
    let mut responses = match opened {
        Ok(r) => r.into_inner(),
        Err(e) => {
            applier.session(SessionEvent::ConnectFailed);
            return Err(format!("open stream: {e}"));
        }
    };
    tracing::info!(address = %config.address, "xDS stream open");
    applier.session(SessionEvent::Connected);
    let outcome = exchange(config, applier, answered, &mut responses, &tx).await;
    applier.session(SessionEvent::Closed);
    outcome
}

/// Applies responses and answers each with an ACK or NACK until the
/// stream ends.
async fn exchange<A: Applier>(
    config: &ClientConfig,
    applier: &mut A,
    answered: &mut bool,
    responses: &mut tonic::Streaming<DiscoveryResponse>,
    tx: &mpsc::Sender<DiscoveryRequest>,
) -> Result<(), String> {
    let mut accepted: HashMap<String, String> = HashMap::new();
    while let Some(response) = responses.message().await.map_err(|e| e.to_string())? {
        *answered = true;
        let kind = short_name(&response.type_url);
        let outcome = applier.apply(
            &response.type_url,
            &response.version_info,
            &response.resources,
        );
        let error_detail = match outcome {
            Ok(()) => {
                tracing::info!(type = kind, version = %response.version_info, resources = response.resources.len(), "applied");
                accepted.insert(response.type_url.clone(), response.version_info.clone());
                None
            }
            Err(reason) => {
                tracing::warn!(type = kind, version = %response.version_info, %reason, "rejected (NACK)");
                Some(RpcStatus {
                    code: 3, // INVALID_ARGUMENT, as Envoy reports rejected config
                    message: reason,
                    details: Vec::new(),
                })
            }
        };
        let ack = DiscoveryRequest {
            node: Some(config.node.clone()),
            version_info: accepted
                .get(&response.type_url)
                .cloned()
                .unwrap_or_default(),
            type_url: response.type_url,
            response_nonce: response.nonce,
            error_detail,
            ..Default::default()
        };
        if tx.send(ack).await.is_err() {
            break;
        }
    }
    Ok(())
}
