//! Connects the ADS server to translation: node id → workload → resources.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::util::pack_any;
use weft_xds::{types, Generated, Generator};

use crate::State;

pub(crate) struct MeshGenerator {
    pub state: Arc<State>,
}

impl Generator for MeshGenerator {
    fn generate(&self, node: &Node) -> Result<Generated, String> {
        let registry = self.state.registry.read().expect("registry lock").clone();
        let config = self.state.store.read().expect("store lock").resources();
        let workload = registry
            .workload_by_node_id(&node.id)
            .ok_or_else(|| format!("node {:?} matches no workload in the registry", node.id))?;
        let inputs = weft_translate::Inputs {
            config: &config,
            registry: &registry,
        };
        let out = weft_translate::translate(&inputs, workload);
        let mut g = Generated::default();
        g.by_type.insert(
            types::CLUSTER,
            out.clusters.into_iter().map(pack_any).collect(),
        );
        g.by_type.insert(
            types::ENDPOINT,
            out.endpoints.into_iter().map(pack_any).collect(),
        );
        g.by_type.insert(
            types::LISTENER,
            out.listeners.into_iter().map(pack_any).collect(),
        );
        g.by_type
            .insert(types::ROUTE, out.routes.into_iter().map(pack_any).collect());
        Ok(g)
    }
}
