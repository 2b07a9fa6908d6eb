//! The ADS server (state of the world). One task per proxy stream: it sends
//! each subscribed type when the proxy asks, resends a type only when its
//! content changed, and records every ACK and NACK on the status board.
//!
//! A client subscribes to a whole type (Envoy and Weft's proxy ask for
//! every listener and cluster) or to resources by name (gRPC asks for each
//! listener, route table, cluster and endpoint set it needs, and validates
//! everything it is sent), so each response holds what was asked for.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::status::StatusBoard;
use crate::types::{short_name, PUSH_ORDER};

/// All resources for one proxy, by type URL, each with its name (for the
/// debug view of what was sent).
#[derive(Debug, Clone, Default)]
pub struct Generated {
    pub by_type: BTreeMap<&'static str, Vec<(String, Any)>>,
}

/// Computes what a proxy should run. Called on connect and on every push.
pub trait Generator: Send + Sync + 'static {
    fn generate(&self, node: &Node) -> Result<Generated, String>;
}

pub struct AdsServer<G> {
    generator: Arc<G>,
    /// Bumped by the control plane whenever config or registry changed.
    pushes: watch::Receiver<u64>,
    board: StatusBoard,
}

impl<G: Generator> AdsServer<G> {
    pub fn new(generator: Arc<G>, pushes: watch::Receiver<u64>, board: StatusBoard) -> Self {
        AdsServer {
            generator,
            pushes,
            board,
        }
    }

    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<G: Generator> AggregatedDiscoveryService for AdsServer<G> {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let stream = ProxyStream {
            generator: self.generator.clone(),
            board: self.board.clone(),
            tx,
            node: None,
            current: None,
            sent: HashMap::new(),
            subscriptions: HashMap::new(),
            nonce: 0,
        };
        tokio::spawn(stream.run(request.into_inner(), self.pushes.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented(
            "Weft serves state-of-the-world ADS only; delta xDS is not implemented",
        ))
    }
}

/// What was last sent for one type on one stream.
struct Sent {
    version: String,
    nonce: String,
    hash: u64,
    /// The subscription the response answered.
    for_subscription: Subscription,
}

/// What a client wants of one type.
#[derive(Debug, Clone, PartialEq, Default)]
enum Subscription {
    /// Every resource of the type: a first request that names none, or
    /// one that names `*`.
    #[default]
    Wildcard,
    Names(BTreeSet<String>),
}

impl Subscription {
    /// The subscription after a request naming `names`, given the one
    /// before it (none for the first request of a type).
    fn after(before: Option<&Subscription>, names: &[String]) -> Subscription {
        if names.iter().any(|n| n == "*") {
            return Subscription::Wildcard;
        }
        match before {
            // An empty list keeps a wildcard; after names it unsubscribes all.
            Some(Subscription::Wildcard) | None if names.is_empty() => Subscription::Wildcard,
            _ => Subscription::Names(names.iter().cloned().collect()),
        }
    }

    fn wants(&self, name: &str) -> bool {
        match self {
            Subscription::Wildcard => true,
            Subscription::Names(names) => names.contains(name),
        }
    }
}

struct ProxyStream<G> {
    generator: Arc<G>,
    board: StatusBoard,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    node: Option<(Node, u64)>,
    current: Option<Generated>,
    sent: HashMap<String, Sent>,
    subscriptions: HashMap<String, Subscription>,
    nonce: u64,
}

impl<G: Generator> ProxyStream<G> {
    async fn run(
        mut self,
        mut requests: Streaming<DiscoveryRequest>,
        mut pushes: watch::Receiver<u64>,
    ) {
        loop {
            tokio::select! {
                msg = requests.message() => match msg {
                    Ok(Some(req)) => {
                        // Only read: marking the generation seen here
                        // would swallow a push that arrived with this
                        // request, and the proxy would never get it.
                        let generation = *pushes.borrow();
                        if self.on_request(req, generation).await.is_err() { break }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "xds stream ended");
                        break;
                    }
                },
                changed = pushes.changed() => {
                    if changed.is_err() { break }
                    let generation = *pushes.borrow_and_update();
                    if self.on_push(generation).await.is_err() { break }
                }
            }
        }
        if let Some((node, _)) = &self.node {
            crate::metrics::metrics().stream_closed();
            tracing::info!(node = %node.id, "proxy disconnected");
            self.board.update(&node.id, |s| {
                s.streams = s.streams.saturating_sub(1);
                s.connected = s.streams > 0;
            });
        }
    }

    fn node_id(&self) -> String {
        self.node
            .as_ref()
            .map(|(n, _)| n.id.clone())
            .unwrap_or_default()
    }

    async fn on_request(&mut self, req: DiscoveryRequest, generation: u64) -> Result<(), ()> {
        if self.node.is_none() {
            let Some(node) = req.node.clone() else {
                let _ = self
                    .tx
                    .send(Err(Status::invalid_argument(
                        "the first request must carry a node",
                    )))
                    .await;
                return Err(());
            };
            tracing::info!(node = %node.id, "proxy connected");
            crate::metrics::metrics().stream_opened();
            self.board.update(&node.id, |s| {
                if s.streams == 0 {
                    s.types.clear();
                }
                s.streams += 1;
                s.connected = true;
                s.generator = crate::node_generator(&node).map(str::to_string);
            });
            self.node = Some((node, generation));
            self.regenerate(generation);
        }
        let kind = short_name(&req.type_url);
        if kind == "unknown" {
            tracing::warn!(type_url = %req.type_url, "ignoring a request for an unknown type");
            return Ok(());
        }
        let node_id = self.node_id();
        let subscription =
            Subscription::after(self.subscriptions.get(&req.type_url), &req.resource_names);
        self.subscriptions
            .insert(req.type_url.clone(), subscription.clone());
        let last = self
            .sent
            .get(&req.type_url)
            .map(|s| (s.nonce.clone(), s.for_subscription != subscription));
        match (req.response_nonce.as_str(), last) {
            // A first request (or a re-subscription): send what we have.
            ("", _) | (_, None) => self.send(&req.type_url, true).await?,
            // An answer to our latest response that also changes what the
            // client wants: the resources it now names.
            (nonce, Some((last, true))) if nonce == last => {
                self.record_answer(&node_id, kind, &req);
                self.send(&req.type_url, true).await?
            }
            // An answer to our latest response: ACK or NACK.
            (nonce, Some((last, false))) if nonce == last => {
                self.record_answer(&node_id, kind, &req)
            }
            // An answer to an older response: superseded, ignore (per the
            // xDS protocol). A subscription it changes is answered once the
            // latest response is.
            _ => {}
        }
        Ok(())
    }

    fn record_answer(&self, node_id: &str, kind: &str, req: &DiscoveryRequest) {
        self.board.update(node_id, |s| {
            let t = s.types.entry(kind.to_string()).or_default();
            match &req.error_detail {
                Some(e) => {
                    crate::metrics::metrics().rejected(kind);
                    tracing::warn!(node = %node_id, type = kind, version = %t.sent_version, reason = %e.message, "NACK");
                    t.nack = Some(e.message.clone());
                    t.nacked_version = Some(t.sent_version.clone());
                }
                None => {
                    t.acked_version = req.version_info.clone();
                    if t.acked_version == t.sent_version {
                        t.nack = None;
                        t.nacked_version = None;
                    }
                }
            }
        });
    }

    async fn on_push(&mut self, generation: u64) -> Result<(), ()> {
        if self.node.is_none() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.regenerate(generation);
        // Every type the client asked for: one it was never sent (its
        // config could not be generated when it asked) goes now.
        for type_url in PUSH_ORDER {
            if self.subscriptions.contains_key(type_url) {
                self.send(type_url, false).await?;
            }
        }
        crate::metrics::metrics().converged(started.elapsed());
        Ok(())
    }

    fn regenerate(&mut self, generation: u64) {
        let Some((node, g)) = self.node.as_mut() else {
            return;
        };
        *g = generation;
        match self.generator.generate(node) {
            Ok(generated) => self.current = Some(generated),
            Err(e) => {
                tracing::warn!(node = %node.id, error = %e, "cannot generate config for proxy");
                self.board.update(&node.id, |s| {
                    s.types.entry("CDS".into()).or_default().nack =
                        Some(format!("control plane: {e}"));
                });
            }
        }
    }

    /// Sends one type unless its content is what the proxy already has.
    async fn send(&mut self, type_url: &str, force: bool) -> Result<(), ()> {
        let Some(current) = &self.current else {
            return Ok(());
        };
        let subscription = self
            .subscriptions
            .get(type_url)
            .cloned()
            .unwrap_or_default();
        let named: Vec<(String, Any)> = current
            .by_type
            .get(type_url)
            .map(|all| {
                all.iter()
                    .filter(|(n, _)| subscription.wants(n))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let names: Vec<String> = named.iter().map(|(n, _)| n.clone()).collect();
        let resources: Vec<Any> = named.into_iter().map(|(_, a)| a).collect();
        let hash = content_hash(&resources);
        if !force
            && self
                .sent
                .get(type_url)
                .is_some_and(|s| s.hash == hash && s.for_subscription == subscription)
        {
            return Ok(());
        }
        let generation = self.node.as_ref().map(|(_, g)| *g).unwrap_or_default();
        self.nonce += 1;
        let sent = Sent {
            version: format!("{generation}-{hash:016x}"),
            nonce: self.nonce.to_string(),
            hash,
            for_subscription: subscription,
        };
        let count = resources.len();
        let bytes = resources.iter().map(|r| r.value.len()).sum();
        let response = DiscoveryResponse {
            version_info: sent.version.clone(),
            resources,
            type_url: type_url.to_string(),
            nonce: sent.nonce.clone(),
            ..Default::default()
        };
        let node_id = self.node_id();
        self.board.update(&node_id, |s| {
            let t = s.types.entry(short_name(type_url).to_string()).or_default();
            t.sent_version = sent.version.clone();
            t.sent_nonce = sent.nonce.clone();
            t.resources = count;
            t.bytes = bytes;
            t.names = names;
        });
        self.sent.insert(type_url.to_string(), sent);
        crate::metrics::metrics().pushed(short_name(type_url));
        self.tx.send(Ok(response)).await.map_err(|_| ())
    }
}

fn content_hash(resources: &[Any]) -> u64 {
    let mut h = DefaultHasher::new();
    for r in resources {
        r.type_url.hash(&mut h);
        r.value.hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::Subscription;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn subscriptions_follow_the_xds_rules_for_names() {
        // Envoy's first request names nothing: everything.
        let w = Subscription::after(None, &[]);
        assert_eq!(w, Subscription::Wildcard);
        assert_eq!(Subscription::after(Some(&w), &[]), Subscription::Wildcard);
        assert!(w.wants("anything"));
        // gRPC names what it needs, and later drops it.
        let named = Subscription::after(None, &names(&["a:80"]));
        assert!(named.wants("a:80") && !named.wants("b:80"));
        let none = Subscription::after(Some(&named), &[]);
        assert!(
            !none.wants("a:80"),
            "an empty list after names unsubscribes"
        );
        assert_eq!(
            Subscription::after(Some(&named), &names(&["*", "a:80"])),
            Subscription::Wildcard
        );
    }
}
