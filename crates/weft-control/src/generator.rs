//! Connects the ADS server to translation: node id → workload → resources.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use weft_xds::{types, Generated, Generator};

use crate::State;

pub(crate) struct MeshGenerator {
    pub state: Arc<State>,
    /// The translation problems last logged per node: each push recomputes
    /// them, and only a change is worth a log line.
    pub reported: Mutex<HashMap<String, Vec<String>>>,
}

impl MeshGenerator {
    pub fn new(state: Arc<State>) -> Self {
        MeshGenerator {
            state,
            reported: Mutex::default(),
        }
    }

    /// Logs the problems `node` did not have at its last push, and says
    /// when it has none left.
    fn report(&self, node: &str, problems: Vec<String>) {
        let mut reported = self.reported.lock().expect("reported lock");
        let before = reported.get(node).cloned().unwrap_or_default();
        if before == problems {
            return;
        }
        for problem in problems.iter().filter(|p| !before.contains(p)) {
            tracing::warn!(node, "{problem}");
        }
        if problems.is_empty() {
            tracing::info!(node, "no translation problems left");
            reported.remove(node);
        } else {
            reported.insert(node.to_string(), problems);
        }
    }
}

impl Generator for MeshGenerator {
    fn generate(&self, node: &Node) -> Result<Generated, String> {
        let registry = self.state.registry.read().expect("registry lock").clone();
        let config = self.state.store.read().expect("store lock").resources();
        let workload = registry
            .workload_by_node_id(&node.id)
            .ok_or_else(|| format!("node {:?} matches no workload in the registry", node.id))?;
        // Kubernetes Ingresses stand for a Gateway and VirtualServices, as
        // istiod makes them; what cannot be served is a gateway's problem.
        let (made, ingress_problems) = weft_translate::ingress::generated(&config, &registry);
        let config = if made.is_empty() {
            config
        } else {
            std::sync::Arc::new(config.iter().cloned().chain(made).collect())
        };
        // The ServiceEntries this proxy's namespace sees are services too.
        let registry = registry.with_entries(&config, &workload.namespace);
        let jwks = self.state.jwks.read().expect("JWKS lock").clone();
        let inputs = weft_translate::Inputs::new(&config, &registry).with_jwks(&jwks);
        // Istio tells a proxyless gRPC client by its node metadata.
        let out = if weft_xds::node_generator(node) == Some("grpc") {
            weft_translate::translate_proxyless(&inputs, workload)
        } else {
            weft_translate::translate(&inputs, workload)
        };
        let mut problems = out.problems;
        if workload.proxy == weft_registry::ProxyKind::Gateway {
            problems.extend(ingress_problems);
        }
        self.report(&node.id, problems);
        let mut g = Generated::default();
        g.by_type
            .insert(types::CLUSTER, named(out.clusters, |c| &c.name));
        g.by_type
            .insert(types::ENDPOINT, named(out.endpoints, |e| &e.cluster_name));
        g.by_type
            .insert(types::LISTENER, named(out.listeners, |l| &l.name));
        g.by_type
            .insert(types::ROUTE, named(out.routes, |r| &r.name));
        g.by_type
            .insert(types::SECRET, named(out.secrets, |s| &s.name));
        if !out.names.is_empty() {
            g.by_type
                .insert(types::NAME_TABLE, vec![name_table(out.names)]);
        }
        Ok(g)
    }
}

fn named<M: prost::Message + prost::Name>(
    items: Vec<M>,
    name: impl Fn(&M) -> &String,
) -> Vec<(String, Any)> {
    items
        .into_iter()
        .map(|m| (name(&m).clone(), pack_any(m)))
        .collect()
}

/// The sidecar's name table as Istio's NDS carries it (one resource).
fn name_table(names: std::collections::BTreeMap<String, Vec<std::net::IpAddr>>) -> (String, Any) {
    let table = names
        .into_iter()
        .map(|(host, ips)| {
            let info = weft_xds::nds::NameInfo {
                ips: ips.iter().map(|ip| ip.to_string()).collect(),
                ..Default::default()
            };
            (host, info)
        })
        .collect();
    let any = pack_any(weft_xds::nds::NameTable { table });
    (String::new(), any)
}
