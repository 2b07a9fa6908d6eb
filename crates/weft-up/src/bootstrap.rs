//! The xDS bootstrap of a proxyless gRPC pod, in the shape Istio's
//! `grpc-agent` writes it: the control plane's address, the node id a
//! sidecar of that pod would have, and `GENERATOR: grpc` in the node
//! metadata, which is how the control plane knows to send gRPC's flavour
//! of xDS. The app finds it through `GRPC_XDS_BOOTSTRAP`.

use std::path::{Path, PathBuf};

use serde_json::json;
use weft_registry::Workload;

use crate::plan::Plan;

/// The variable gRPC libraries read the bootstrap's path from.
pub const BOOTSTRAP_ENV: &str = "GRPC_XDS_BOOTSTRAP";

/// Istio's node metadata for a pod's proxy, as pilot-agent writes it
/// from the pod: what the proxy's metrics label its side with and what it
/// tells its peers in the metadata exchange.
pub fn node_metadata(workload: &Workload) -> serde_json::Value {
    json!({
        "NAME": workload.name,
        "NAMESPACE": workload.namespace,
        "WORKLOAD_NAME": workload.workload_name(),
        "LABELS": workload.labels,
        "SERVICE_ACCOUNT": workload.service_account,
        "INSTANCE_IPS": workload.ip.to_string(),
        "CLUSTER_ID": weft_registry::CLUSTER_ID,
        "MESH_ID": "cluster.local",
    })
}

pub fn grpc_bootstrap(plan: &Plan, workload: &Workload) -> serde_json::Value {
    let mut metadata = node_metadata(workload);
    metadata["GENERATOR"] = "grpc".into();
    let mut node = json!({
        "id": workload.node_id(),
        "metadata": metadata,
    });
    if let Some(locality) = &workload.locality {
        let mut parts = locality.splitn(3, '/');
        node["locality"] = json!({
            "region": parts.next().unwrap_or(""),
            "zone": parts.next().unwrap_or(""),
            "sub_zone": parts.next().unwrap_or(""),
        });
    }
    json!({
        "xds_servers": [{
            "server_uri": plan.addresses.xds.to_string(),
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }],
        "node": node,
    })
}

/// Where a pod's bootstrap lives under the mesh's state directory.
pub fn path(dir: &Path, workload: &Workload) -> PathBuf {
    dir.join("bootstrap").join(format!(
        "{}.{}.grpc.json",
        workload.name, workload.namespace
    ))
}

/// Writes the pod's bootstrap and returns its path.
pub fn write(plan: &Plan, workload: &Workload, dir: &Path) -> anyhow::Result<PathBuf> {
    let path = path(dir, workload);
    std::fs::create_dir_all(path.parent().expect("joined"))?;
    let text = serde_json::to_vec_pretty(&grpc_bootstrap(plan, workload))?;
    std::fs::write(&path, text)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_registry::{MeshSpec, ProxyKind};

    #[test]
    fn a_grpc_agent_pod_gets_a_bootstrap_and_no_sidecar() {
        let spec = MeshSpec::from_yaml(
            "workloads:\n- name: client\n  annotations: {inject.istio.io/templates: grpc-agent}\n  command: [sleep, infinity]\n",
        )
        .unwrap();
        let plan = Plan::new("t", 7, 18080, &spec).unwrap();
        let w = &plan.registry.workloads[0];
        assert_eq!(w.proxy, ProxyKind::Proxyless);
        let b = grpc_bootstrap(&plan, w);
        assert_eq!(b["xds_servers"][0]["server_uri"], "198.18.7.1:15010");
        assert_eq!(
            b["node"]["id"],
            "sidecar~198.18.7.10~client.default~default.svc.cluster.local"
        );
        assert_eq!(b["node"]["metadata"]["GENERATOR"], "grpc");
    }
}
